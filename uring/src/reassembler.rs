//! Cutting a stream that arrives in arbitrary chunks back into whole records.

use crate::error::FramingError;
use crate::framing::Framing;

/// Cuts a byte stream arriving in arbitrary chunks into whole records.
///
/// A record that lies entirely inside one chunk is handed out in place,
/// without a copy. Only a record that spans chunks is copied, into a buffer
/// owned by the reassembler; that buffer grows to the largest such record
/// seen (at most `max_record`) and is then reused, so a steady stream
/// allocates nothing.
///
/// ```
/// use comm_uring::{LenPrefix, Reassembler};
///
/// let mut stream = Vec::new();
/// for body in [&b"ab"[..], b"", b"cdef"] {
///     stream.extend_from_slice(&LenPrefix::header(body.len()));
///     stream.extend_from_slice(body);
/// }
/// let mut r = Reassembler::new();
/// let mut got = Vec::new();
/// for chunk in stream.chunks(3) {
///     r.feed(&LenPrefix, 1 << 20, chunk, |rec| got.push(rec[4..].to_vec()))?;
/// }
/// assert_eq!(got, [&b"ab"[..], b"", b"cdef"]);
/// assert_eq!(r.pending(), 0);
/// # Ok::<(), comm_uring::FramingError>(())
/// ```
#[derive(Debug, Default)]
pub struct Reassembler {
    /// The start of a record that the chunks so far did not complete.
    partial: Vec<u8>,
    /// That record's full length once its header is complete, 0 before.
    need: usize,
}

impl Reassembler {
    /// An empty reassembler; allocates nothing until a record spans chunks.
    ///
    /// ```
    /// assert_eq!(comm_uring::Reassembler::new().pending(), 0);
    /// ```
    pub const fn new() -> Self {
        Reassembler {
            partial: Vec::new(),
            need: 0,
        }
    }

    /// Consumes `chunk`, calling `emit` with every record it completes, in
    /// stream order, each exactly once.
    ///
    /// On a bad header (per `framing`, shorter than the header, or longer
    /// than `max_record`) it stops and returns the error; the stream cannot
    /// be resynchronised, so the caller should drop it. The reassembler is
    /// then empty again.
    ///
    /// ```
    /// use comm_uring::{FramingError, LenPrefix, Reassembler};
    /// let mut r = Reassembler::new();
    /// let err = r.feed(&LenPrefix, 16, &[200, 0, 0, 0], |_| {}).unwrap_err();
    /// assert_eq!(err, FramingError::TooLong { len: 200, max: 16 });
    /// ```
    pub fn feed<F: Framing + ?Sized>(
        &mut self,
        framing: &F,
        max_record: usize,
        chunk: &[u8],
        emit: impl FnMut(&[u8]),
    ) -> Result<(), FramingError> {
        let result = self.feed_inner(framing, max_record, chunk, emit);
        if result.is_err() {
            self.reset();
        }
        result
    }

    fn feed_inner<F: Framing + ?Sized>(
        &mut self,
        framing: &F,
        max_record: usize,
        chunk: &[u8],
        mut emit: impl FnMut(&[u8]),
    ) -> Result<(), FramingError> {
        let header_len = framing.header_len();
        if header_len == 0 {
            return Err(FramingError::BadHeader("framing has an empty header"));
        }
        let mut rest = chunk;

        if !self.partial.is_empty() {
            if self.partial.len() < header_len {
                let take = (header_len - self.partial.len()).min(rest.len());
                self.partial.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if self.partial.len() < header_len {
                    return Ok(());
                }
                self.need = checked_len(framing, &self.partial[..header_len], max_record)?;
                self.partial.reserve(self.need - self.partial.len());
            }
            let take = (self.need - self.partial.len()).min(rest.len());
            self.partial.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.partial.len() < self.need {
                return Ok(());
            }
            emit(&self.partial);
            self.partial.clear();
            self.need = 0;
        }

        while !rest.is_empty() {
            if rest.len() < header_len {
                self.partial.extend_from_slice(rest);
                break;
            }
            let len = checked_len(framing, &rest[..header_len], max_record)?;
            if let Some((record, tail)) = rest.split_at_checked(len) {
                emit(record);
                rest = tail;
            } else {
                // Reserve the whole record at once so that it is copied
                // into place without reallocations as the rest arrives.
                self.partial.reserve(len);
                self.partial.extend_from_slice(rest);
                self.need = len;
                break;
            }
        }
        Ok(())
    }

    /// Bytes still missing from a record whose header has arrived; 0 when
    /// no record body is awaited.
    pub(crate) fn missing(&self) -> usize {
        self.need.saturating_sub(self.partial.len())
    }

    /// Lets `read` put the next bytes of the awaited record straight into
    /// place (no chunk in between), then emits the record if they complete
    /// it. `read` gets room for the [`missing`](Self::missing) bytes, but
    /// at most `max`; returns what it read and how much room it had.
    ///
    /// # Safety
    /// `read(ptr, len)` must write only within `[ptr, ptr + len)` and
    /// return how many bytes from `ptr` on it initialised.
    pub(crate) unsafe fn fill(
        &mut self,
        max: usize,
        read: impl FnOnce(*mut u8, usize) -> std::io::Result<usize>,
        emit: impl FnOnce(&[u8]),
    ) -> std::io::Result<(usize, usize)> {
        let room = self.missing().min(max);
        self.partial.reserve(room);
        let spare = self.partial.spare_capacity_mut();
        let n = read(spare.as_mut_ptr().cast(), room)?.min(room);
        // SAFETY: `read` initialised the first `n` bytes of the spare
        // capacity (at least `room` long after the reserve).
        unsafe { self.partial.set_len(self.partial.len() + n) };
        if self.need > 0 && self.partial.len() == self.need {
            emit(&self.partial);
            self.partial.clear();
            self.need = 0;
        }
        Ok((n, room))
    }

    /// How many bytes of an incomplete record are held.
    ///
    /// ```
    /// use comm_uring::{LenPrefix, Reassembler};
    /// let mut r = Reassembler::new();
    /// r.feed(&LenPrefix, 64, &[8, 0, 0, 0, 1], |_| unreachable!())?;
    /// assert_eq!(r.pending(), 5);
    /// # Ok::<(), comm_uring::FramingError>(())
    /// ```
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    /// Forgets any incomplete record, keeping the buffer's capacity.
    ///
    /// ```
    /// use comm_uring::{LenPrefix, Reassembler};
    /// let mut r = Reassembler::new();
    /// r.feed(&LenPrefix, 64, &[8, 0], |_| {})?;
    /// r.reset();
    /// assert_eq!(r.pending(), 0);
    /// # Ok::<(), comm_uring::FramingError>(())
    /// ```
    pub fn reset(&mut self) {
        self.partial.clear();
        self.need = 0;
    }
}

/// The record length announced by `header`, checked against the limits that
/// keep the reassembler from looping or allocating without bound.
fn checked_len<F: Framing + ?Sized>(
    framing: &F,
    header: &[u8],
    max_record: usize,
) -> Result<usize, FramingError> {
    let header_len = header.len();
    let len = framing.record_len(header)?;
    if len < header_len {
        return Err(FramingError::TooShort { len, header_len });
    }
    if len > max_record {
        return Err(FramingError::TooLong {
            len,
            max: max_record,
        });
    }
    Ok(len)
}
