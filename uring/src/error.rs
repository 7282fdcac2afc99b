//! The errors of this crate: why a send was refused and why a record header
//! was rejected.

/// Why [`Uring::send`](crate::Uring::send) and its siblings refused a message.
///
/// Nothing was queued when one of these comes back; the caller still owns
/// whatever it passed.
///
/// ```
/// use comm_uring::SendError;
/// let e = SendError::Full;
/// assert_eq!(e.to_string(), "send queue full: poll and flush, then retry");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The connection's staged-but-unsent bytes would exceed
    /// [`UringConfig::send_queue_limit`](crate::UringConfig::send_queue_limit):
    /// the peer reads slower than we write. Keep polling and flushing, then
    /// retry; nothing was queued.
    #[error("send queue full: poll and flush, then retry")]
    Full,
    /// The connection is closed, closing, or the id is stale: stop sending to it.
    #[error("connection closed")]
    Closed,
    /// The operation does not fit the socket kind: `send_to` on a TCP stream,
    /// or `send_zc` on a UDP socket.
    #[error("operation not supported on this kind of connection")]
    Unsupported,
    /// The message is larger than one operation can carry: 4 GiB on a
    /// stream; 65,507 bytes in an IPv4 datagram, 65,527 in an IPv6 one.
    #[error("message too large")]
    TooLarge,
}

/// Why a record header was rejected by a [`Framing`](crate::Framing).
///
/// The stream that carried it is closed with this error wrapped in an
/// [`std::io::Error`] of kind [`InvalidData`](std::io::ErrorKind::InvalidData).
///
/// ```
/// use comm_uring::FramingError;
/// let e = FramingError::TooLong { len: 100, max: 10 };
/// assert_eq!(e.to_string(), "record of 100 bytes exceeds the limit of 10");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FramingError {
    /// The header is malformed (bad magic, unknown version, ...).
    #[error("bad record header: {0}")]
    BadHeader(&'static str),
    /// The header announces a record longer than the configured maximum.
    #[error("record of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// The announced length, header included.
        len: usize,
        /// The limit, [`UringConfig::max_record`](crate::UringConfig::max_record).
        max: usize,
    },
    /// The header announces a record shorter than the header itself.
    #[error("record of {len} bytes is shorter than its {header_len} byte header")]
    TooShort {
        /// The announced length.
        len: usize,
        /// The framing's header length.
        header_len: usize,
    },
}

impl From<FramingError> for std::io::Error {
    fn from(e: FramingError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}
