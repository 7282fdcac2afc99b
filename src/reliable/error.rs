//! What can go wrong: [`Error`] for the local caller, [`DatagramError`] for
//! what a peer (or the network) handed us.

/// Why a call on a [`Reliable`](super::Reliable) failed. Each variant says
/// what to do next.
///
/// ```
/// use comm::reliable::{Error, Reliable, ReliableConfig};
/// let mut r = Reliable::new(ReliableConfig { max_message: 10, send_buffer: 10, ..Default::default() })?;
/// assert_eq!(r.send(&[0; 11]), Err(Error::TooLarge { len: 11, max: 10 }));
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The send buffer cannot take the message now. Nothing was queued: keep
    /// the message and send it again after acknowledgements have arrived
    /// (after [`on_datagram`](super::Reliable::on_datagram)).
    #[error("send window full: the message was not queued; retry after acknowledgements arrive")]
    WindowFull,
    /// The message is longer than `ReliableConfig::max_message`; split it or
    /// raise the limit on both sides.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Bytes offered.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The association is over: the peer stopped acknowledging (lost after
    /// `max_retries` timeouts without progress) or broke the protocol. Open a
    /// new association to reach it again.
    #[error("the association is dead: the peer is lost or broke the protocol")]
    Dead,
    /// The configuration is inconsistent; fix the named setting.
    #[error("invalid reliable configuration: {0}")]
    Config(&'static str),
}

/// Why a received datagram was refused.
///
/// Most variants refuse only that datagram and leave the association as it
/// was (stray or corrupt packets are normal on UDP);
/// [`is_fatal`](DatagramError::is_fatal) says when the peer broke the
/// message stream and the association is now dead.
///
/// ```
/// use comm::reliable::{DatagramError, Reliable, ReliableConfig};
/// let mut r = Reliable::new(ReliableConfig::default())?;
/// let err = r.on_datagram(&[1, 2, 3], 0).unwrap_err();
/// assert_eq!(err, DatagramError::Short { have: 3 });
/// assert!(!err.is_fatal());
/// # Ok::<(), comm::reliable::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DatagramError {
    /// Fewer bytes than a header.
    #[error(
        "datagram of {have} bytes is shorter than the {} byte header",
        super::HEADER_LEN
    )]
    Short {
        /// Bytes received.
        have: usize,
    },
    /// Another protocol version.
    #[error("datagram version {0} is not supported")]
    Version(u8),
    /// An unknown datagram kind.
    #[error("unknown datagram kind {0}")]
    UnknownKind(u8),
    /// Flag bits that this kind of datagram does not define.
    #[error("flags {flags:#04x} are not defined for datagram kind {kind}")]
    UnknownFlags {
        /// The datagram kind.
        kind: u8,
        /// The flags found.
        flags: u8,
    },
    /// The reserved byte is not zero.
    #[error("reserved header byte is {0}, not 0")]
    Reserved(u8),
    /// The header announces another payload length than the datagram has.
    #[error("header announces {announced} payload bytes, the datagram has {actual}")]
    LengthMismatch {
        /// Length in the header.
        announced: usize,
        /// Payload bytes present.
        actual: usize,
    },
    /// A payload longer than this side's `mtu` allows.
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    PayloadTooLong {
        /// Payload bytes.
        len: usize,
        /// Largest payload accepted.
        max: usize,
    },
    /// The acknowledgement covers sequence numbers this side never sent.
    #[error("acknowledgement covers sequence numbers that were never sent")]
    AckOutOfRange,
    /// Fragments do not form messages (a middle fragment with no first, or a
    /// first inside a message). Fatal.
    #[error("fragments do not form messages; the association is dead")]
    BrokenMessage,
    /// The peer's fragments add up to more than `max_message` bytes. Fatal.
    #[error("incoming message exceeds the limit of {max} bytes; the association is dead")]
    MessageTooLarge {
        /// The limit.
        max: usize,
    },
}

impl DatagramError {
    /// Whether this error ended the association ([`Reliable::is_dead`](super::Reliable::is_dead)
    /// is now true); all other errors refuse one datagram and change nothing.
    ///
    /// ```
    /// use comm::reliable::DatagramError;
    /// assert!(DatagramError::BrokenMessage.is_fatal());
    /// assert!(!DatagramError::AckOutOfRange.is_fatal());
    /// ```
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            DatagramError::BrokenMessage | DatagramError::MessageTooLarge { .. }
        )
    }
}
