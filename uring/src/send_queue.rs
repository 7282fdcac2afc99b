//! A connection's outgoing bytes, in order: copied records staged in our own
//! memory, interleaved with zero-copy segments that point at the caller's.

use std::collections::VecDeque;
use std::net::SocketAddr;

/// One contiguous piece of outgoing data.
#[derive(Debug, Clone, Copy)]
enum Seg {
    /// `len` bytes at `start` in staging buffer `buf`; for a datagram socket
    /// one whole datagram, with its destination (`None`: the connected peer).
    Copy {
        buf: usize,
        start: usize,
        len: usize,
        to: Option<SocketAddr>,
    },
    /// `len` bytes of the caller's memory, sent zero-copy; `fixed` is the
    /// registered-buffer index covering them, `slot` the notification slot.
    /// `copy`: the kernel refused to pin the pages, send them copying.
    Zc {
        ptr: *const u8,
        len: usize,
        fixed: Option<u16>,
        slot: u32,
        copy: bool,
    },
}

/// What to submit next for a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Next {
    /// Send `len` copied bytes at `ptr` (to `to`, for a datagram).
    Copy {
        ptr: *const u8,
        len: usize,
        to: Option<SocketAddr>,
    },
    /// Send `len` caller bytes at `ptr`, zero-copy unless `copy`.
    Zc {
        ptr: *const u8,
        len: usize,
        fixed: Option<u16>,
        slot: u32,
        copy: bool,
    },
}

/// The outgoing queue of one connection.
///
/// Copied bytes go into one of two staging buffers. The kernel reads a
/// staging buffer while a send from it is in flight, so that buffer must not
/// move or grow: the first send from the buffer being filled "freezes" it and
/// new bytes go to the other one, which by then holds only sent data (it was
/// frozen earlier, and everything in it precedes the frozen buffer's bytes in
/// stream order). Both buffers grow to the high-water mark once and are then
/// reused, as is the segment deque.
#[derive(Debug, Default)]
pub(crate) struct SendQueue {
    bufs: [Vec<u8>; 2],
    /// The buffer that new copied bytes are appended to.
    fill: usize,
    segs: VecDeque<Seg>,
    /// Bytes of the front segment already sent.
    sent: usize,
    /// Unsent bytes over all segments.
    queued: usize,
    /// Whether a send of the front segment is in flight.
    in_flight: bool,
}

impl SendQueue {
    /// Unsent bytes, copied and zero-copy.
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    /// Whether a send is in flight.
    pub(crate) fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// Appends the concatenation of `parts`. For streams (`merge`) it joins
    /// the previous copied segment so that one send carries many records;
    /// datagrams keep their own segment and destination.
    pub(crate) fn push_copy(&mut self, parts: &[&[u8]], to: Option<SocketAddr>, merge: bool) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len == 0 && merge {
            // Nothing to add to a stream; an empty datagram is still sent.
            return;
        }
        let fill = self.fill;
        let buf = &mut self.bufs[fill];
        let start = buf.len();
        for part in parts {
            buf.extend_from_slice(part);
        }
        self.queued += len;
        if merge {
            if let Some(Seg::Copy {
                buf: b,
                start: s,
                len: l,
                to: None,
            }) = self.segs.back_mut()
            {
                // Only the fill buffer's last segment can be extended; it is
                // never in flight because a send freezes its buffer first.
                if *b == fill && *s + *l == start {
                    *l += len;
                    return;
                }
            }
        }
        self.segs.push_back(Seg::Copy {
            buf: fill,
            start,
            len,
            to,
        });
    }

    /// Appends a zero-copy segment of the caller's memory.
    pub(crate) fn push_zc(&mut self, ptr: *const u8, len: usize, fixed: Option<u16>, slot: u32) {
        self.queued += len;
        self.segs.push_back(Seg::Zc {
            ptr,
            len,
            fixed,
            slot,
            copy: false,
        });
    }

    /// Marks the front segment in flight and says what to send, at most
    /// `max` bytes of it; `None` if a send is in flight or nothing is queued.
    pub(crate) fn start(&mut self, max: usize) -> Option<Next> {
        if self.in_flight {
            return None;
        }
        let seg = *self.segs.front()?;
        self.in_flight = true;
        Some(match seg {
            Seg::Copy {
                buf,
                start,
                len,
                to,
            } => {
                if buf == self.fill {
                    // Freeze this buffer; the other one holds only sent bytes.
                    let other = 1 - buf;
                    self.bufs[other].clear();
                    self.fill = other;
                }
                let off = start + self.sent;
                Next::Copy {
                    // The buffer is frozen from here until the segment is
                    // done, so the pointer stays valid while in flight.
                    ptr: self.bufs[buf][off..].as_ptr(),
                    len: (len - self.sent).min(max),
                    to,
                }
            }
            Seg::Zc {
                ptr,
                len,
                fixed,
                slot,
                copy,
            } => Next::Zc {
                ptr: ptr.wrapping_add(self.sent),
                len: (len - self.sent).min(max),
                fixed,
                slot,
                copy,
            },
        })
    }

    /// Records that the in-flight send wrote `n` bytes. Returns the
    /// notification slot of a zero-copy segment that is now fully sent.
    ///
    /// `whole` drops the front segment whatever `n` is: a datagram is sent
    /// whole or not at all.
    pub(crate) fn complete(&mut self, n: usize, whole: bool) -> Option<u32> {
        if !std::mem::take(&mut self.in_flight) {
            // Nothing was in flight: nothing to account for.
            return None;
        }
        let seg = *self.segs.front()?;
        let len = match seg {
            Seg::Copy { len, .. } | Seg::Zc { len, .. } => len,
        };
        let n = n.min(len - self.sent);
        if !whole && self.sent + n < len {
            self.sent += n;
            self.queued -= n;
            return None;
        }
        self.queued -= len - self.sent;
        self.sent = 0;
        self.segs.pop_front();
        match seg {
            Seg::Zc { slot, .. } => Some(slot),
            Seg::Copy { .. } => None,
        }
    }

    /// Makes the front zero-copy segment go out as a copying send from now
    /// on (the kernel would not pin its pages).
    pub(crate) fn copy_front(&mut self) {
        if let Some(Seg::Zc { copy, .. }) = self.segs.front_mut() {
            *copy = true;
        }
    }

    /// Marks the in-flight send as over without progress (cancelled or
    /// failed); the front segment stays queued.
    pub(crate) fn abort_in_flight(&mut self) {
        self.in_flight = false;
    }

    /// Drops every queued segment that is not in flight, calling `zc` with
    /// the notification slot of each dropped zero-copy segment. With nothing
    /// in flight the staging buffers are emptied too.
    pub(crate) fn discard(&mut self, mut zc: impl FnMut(u32)) {
        let keep = usize::from(self.in_flight);
        while self.segs.len() > keep {
            if let Some(Seg::Zc { slot, .. }) = self.segs.pop_back() {
                zc(slot);
            }
        }
        if keep == 0 {
            self.sent = 0;
            self.bufs[0].clear();
            self.bufs[1].clear();
            self.fill = 0;
        }
        self.queued = self
            .segs
            .front()
            .map_or(0, |s| match *s {
                Seg::Copy { len, .. } | Seg::Zc { len, .. } => len,
            })
            .saturating_sub(self.sent);
    }

    /// Releases the staging memory (for a connection slot being retired with
    /// nothing in flight) so that idle slots do not hold high-water buffers.
    pub(crate) fn shrink(&mut self) {
        debug_assert!(!self.in_flight && self.segs.is_empty());
        self.bufs = [Vec::new(), Vec::new()];
        self.fill = 0;
        self.sent = 0;
        self.queued = 0;
    }

    /// Hands the staging buffers over to be leaked, for when the kernel
    /// might still read them after the owner is gone.
    pub(crate) fn take_buffers(&mut self) -> [Vec<u8>; 2] {
        std::mem::take(&mut self.bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: Next) -> Vec<u8> {
        match n {
            // SAFETY: test-only; the pointer comes from a live staging buffer.
            Next::Copy { ptr, len, .. } => unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec(),
            Next::Zc { .. } => panic!("expected a copy"),
        }
    }

    #[test]
    fn merges_copies_and_keeps_in_flight_bytes_stable() {
        let mut q = SendQueue::default();
        q.push_copy(&[b"ab", b"c"], None, true);
        q.push_copy(&[b"de"], None, true);
        let first = q.start(usize::MAX).unwrap();
        assert_eq!(bytes(first), b"abcde");
        // Appends while in flight go to the other buffer.
        q.push_copy(&[&[7u8; 1000]], None, true);
        assert_eq!(bytes(first), b"abcde");
        assert_eq!(q.complete(2, false), None);
        assert_eq!(bytes(q.start(usize::MAX).unwrap()), b"cde");
        assert_eq!(q.complete(3, false), None);
        assert_eq!(q.queued(), 1000);
        assert_eq!(bytes(q.start(10).unwrap()), [7u8; 10]);
        q.complete(10, false);
        assert_eq!(q.queued(), 990);
    }

    #[test]
    fn zero_copy_segments_keep_their_place() {
        let data = [9u8; 4];
        let mut q = SendQueue::default();
        q.push_copy(&[b"h"], None, true);
        q.push_zc(data.as_ptr(), 4, None, 3);
        q.push_copy(&[b"t"], None, true);
        assert_eq!(bytes(q.start(usize::MAX).unwrap()), b"h");
        assert_eq!(q.complete(1, false), None);
        assert!(matches!(
            q.start(usize::MAX),
            Some(Next::Zc {
                len: 4,
                slot: 3,
                ..
            })
        ));
        assert_eq!(q.complete(1, false), None);
        assert!(matches!(q.start(usize::MAX), Some(Next::Zc { len: 3, .. })));
        assert_eq!(q.complete(3, false), Some(3));
        assert_eq!(bytes(q.start(usize::MAX).unwrap()), b"t");
        assert_eq!(q.complete(1, false), None);
        assert_eq!(q.queued(), 0);
    }

    #[test]
    fn discard_keeps_the_in_flight_segment() {
        let mut q = SendQueue::default();
        q.push_copy(&[b"abc"], None, true);
        let _ = q.start(usize::MAX);
        q.push_zc(std::ptr::null(), 8, None, 1);
        let mut dropped = Vec::new();
        q.discard(|s| dropped.push(s));
        assert_eq!(dropped, [1]);
        assert_eq!(q.queued(), 3);
        assert_eq!(q.complete(3, false), None);
        assert!(q.start(usize::MAX).is_none());
    }
}
