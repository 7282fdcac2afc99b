use crate::{Buf, PeerId, TransportKind};

/// Every error comm returns. Each variant says what happened and what to do.
///
/// ```
/// use comm::{Error, PeerId};
/// let e = Error::PeerLost(PeerId::new(4));
/// assert!(e.to_string().contains("peer#4"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The ring toward the peer is full. The buffer comes back untouched:
    /// let the engine make progress (receive, or wait a little) and send it again.
    #[error("would block: the send ring is full; the buffer is returned, retry after the peer catches up")]
    WouldBlock(Buf),
    /// The ring toward the peer is full; a handler should retry on a later call
    /// rather than wait on the thread that drains rings.
    #[error("the ring toward the peer is full; retry later")]
    Full,
    /// The peer refused the connection for the reason given.
    #[error("the peer refused: {reason}")]
    Refused {
        /// The peer's explanation.
        reason: String,
    },
    /// The peer's engine stopped or its link failed; messages in flight to it
    /// may be lost. Reconnect to reach it again.
    #[error("{0} is lost: its engine stopped or the link failed; reconnect to reach it again")]
    PeerLost(PeerId),
    /// The peer belongs to another engine (domain); endpoints of different
    /// engines never talk. Connect to an endpoint of the same engine name.
    #[error("engine mismatch: this engine is {ours:?} but the peer's is {theirs:?}")]
    EngineMismatch {
        /// This engine's name.
        ours: String,
        /// The peer engine's name.
        theirs: String,
    },
    /// No transport satisfies both sides: widen the allowed transports on one side.
    #[error("no common transport: wanted {wanted:?}, the peer offers {available:?}")]
    NoTransport {
        /// What this side allows.
        wanted: Vec<TransportKind>,
        /// What the peer offers.
        available: Vec<TransportKind>,
    },
    /// An endpoint of that name exists already in this engine; pick another.
    #[error("an endpoint named {name:?} exists already")]
    DuplicateEndpoint {
        /// The name.
        name: String,
    },
    /// The engine has shut down; nothing more can be sent or received.
    #[error("the engine is shut down")]
    Closed,
    /// No endpoint of that name exists at the address; check the name or
    /// create the endpoint first.
    #[error("no endpoint at {addr}")]
    UnknownEndpoint {
        /// The address that was asked for.
        addr: String,
    },
    /// The operation did not complete in time; retry or raise the timeout.
    #[error("timed out")]
    Timeout,
    /// An address or transport name could not be parsed; fix the string.
    #[error("bad address {addr:?}: {reason}")]
    BadAddress {
        /// The offending text.
        addr: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The peer broke the protocol; the link to it was closed.
    #[error("protocol violation: {0}; the link was closed")]
    Protocol(#[from] ProtocolError),
    /// No free buffer of at least the requested size; release buffers (let
    /// sends complete, drop received messages) or configure a larger pool.
    #[error("no free buffer of {requested} bytes (largest class: {largest} bytes)")]
    NoBuffers {
        /// Bytes asked for.
        requested: usize,
        /// Largest buffer the pool has.
        largest: usize,
    },
    /// A message or buffer length exceeds what the buffer or link can hold:
    /// send it in parts or use a larger buffer.
    #[error("{len} bytes exceed the limit of {max}")]
    TooLarge {
        /// Bytes asked for.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The configuration is inconsistent; fix the named setting.
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    /// Shared-memory setup failed.
    #[error(transparent)]
    Shm(#[from] comm_shm::ShmError),
    /// An operating-system call failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// How a peer broke the wire protocol.
///
/// ```
/// use comm::{FrameHeader, ProtocolError};
/// let err = FrameHeader::decode(&[0u8; 4], 1024).unwrap_err();
/// assert_eq!(err, ProtocolError::Short { have: 4, need: 32 });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// Fewer bytes than a frame header or than the header announces.
    #[error("frame too short: {have} bytes, need {need}")]
    Short {
        /// Bytes available.
        have: usize,
        /// Bytes required.
        need: usize,
    },
    /// A frame of another wire version.
    #[error("frame version {found} is not supported (this build speaks {expected})")]
    Version {
        /// Version found.
        found: u8,
        /// Version spoken here.
        expected: u8,
    },
    /// An unknown frame kind.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// Flag bits this version does not define.
    #[error("unknown frame flags {0:#06x}")]
    UnknownFlags(u16),
    /// A payload longer than the link allows.
    #[error("frame payload of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// Announced length.
        len: u32,
        /// Allowed maximum.
        max: u32,
    },
    /// A control message of another protocol version.
    #[error("control protocol version {found} is not supported (this build speaks {expected})")]
    ControlVersion {
        /// Version found.
        found: u16,
        /// Version spoken here.
        expected: u16,
    },
    /// An unknown control message or field value.
    #[error("unknown control message or value {0}")]
    ControlMessage(u8),
    /// A control message longer than allowed.
    #[error("control message of {len} bytes exceeds the limit of {max}")]
    ControlTooLong {
        /// Announced length.
        len: usize,
        /// Allowed maximum.
        max: usize,
    },
    /// Bytes left over after a control message.
    #[error("{0} unexpected bytes after a control message")]
    ControlTrailing(usize),
    /// A control string that is not UTF-8.
    #[error("control message text is not UTF-8")]
    ControlText,
    /// A control frame that must not carry a payload announced one.
    #[error("{kind:?} frames carry no payload, but {len} bytes were announced")]
    UnexpectedPayload {
        /// The frame kind.
        kind: crate::FrameKind,
        /// Announced length.
        len: u32,
    },
}
