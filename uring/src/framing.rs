//! How a byte stream is cut into records: the caller's fixed-size header says
//! how long each record is.

use crate::error::FramingError;

/// Tells the stream reassembler how long a record is from its fixed-size header.
///
/// A record is its header followed by its body; `record_len` returns the
/// length of both together. It is called on untrusted bytes from the peer:
/// return an error for anything that does not make sense, never panic. The
/// reassembler additionally rejects lengths shorter than the header and
/// longer than [`UringConfig::max_record`](crate::UringConfig::max_record).
///
/// ```
/// use comm_uring::{Framing, FramingError};
///
/// /// One tag byte, then a little-endian u16 body length.
/// struct Tagged;
/// impl Framing for Tagged {
///     fn header_len(&self) -> usize { 3 }
///     fn record_len(&self, h: &[u8]) -> Result<usize, FramingError> {
///         if h[0] != 0x7e {
///             return Err(FramingError::BadHeader("tag"));
///         }
///         Ok(3 + usize::from(u16::from_le_bytes([h[1], h[2]])))
///     }
/// }
/// assert_eq!(Tagged.record_len(&[0x7e, 2, 0]), Ok(5));
/// assert!(Tagged.record_len(&[0, 2, 0]).is_err());
/// ```
pub trait Framing {
    /// The fixed number of bytes every record starts with; at least 1.
    fn header_len(&self) -> usize;

    /// The whole record's length (header included), read from the
    /// `header_len()` bytes of `header`.
    fn record_len(&self, header: &[u8]) -> Result<usize, FramingError>;
}

impl<F: Framing + ?Sized> Framing for &F {
    fn header_len(&self) -> usize {
        (**self).header_len()
    }

    fn record_len(&self, header: &[u8]) -> Result<usize, FramingError> {
        (**self).record_len(header)
    }
}

/// The simplest framing: a 4-byte little-endian length of the whole record
/// (those 4 bytes included), then the body.
///
/// ```
/// use comm_uring::{Framing, LenPrefix};
/// let rec = LenPrefix::header(5);
/// assert_eq!(rec, [9, 0, 0, 0]);
/// assert_eq!(LenPrefix.record_len(&rec), Ok(9));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LenPrefix;

impl LenPrefix {
    /// The header for a record whose body is `body_len` bytes long.
    ///
    /// Saturates at `u32::MAX`, which the reassembler then rejects as too
    /// long rather than wrapping around to a wrong length.
    ///
    /// ```
    /// assert_eq!(comm_uring::LenPrefix::header(0), [4, 0, 0, 0]);
    /// ```
    pub fn header(body_len: usize) -> [u8; 4] {
        u32::try_from(body_len.saturating_add(4))
            .unwrap_or(u32::MAX)
            .to_le_bytes()
    }
}

impl Framing for LenPrefix {
    fn header_len(&self) -> usize {
        4
    }

    fn record_len(&self, header: &[u8]) -> Result<usize, FramingError> {
        let bytes: [u8; 4] = header
            .get(..4)
            .and_then(|h| h.try_into().ok())
            .ok_or(FramingError::BadHeader("short header"))?;
        usize::try_from(u32::from_le_bytes(bytes))
            .map_err(|_| FramingError::BadHeader("length does not fit usize"))
    }
}
