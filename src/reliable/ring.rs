//! The sender's byte ring: queued and unacknowledged message bytes.
//!
//! Bytes are addressed by their offset in the stream of everything ever
//! queued (a `u64` that never wraps in practice), so fragment records stay
//! valid when the ring grows and re-lays its contents. The ring starts at
//! the size a full window needs and doubles on demand up to its limit; it
//! never shrinks, so once the largest burst has been seen, queueing
//! allocates nothing.

pub(crate) struct ByteRing {
    buf: Vec<u8>,
    /// Stream offset that maps to `buf[0]` (modulo the capacity).
    origin: u64,
    /// Oldest live byte.
    head: u64,
    /// One past the newest byte.
    tail: u64,
    max: usize,
}

impl ByteRing {
    pub(crate) fn new(initial: usize, max: usize) -> Self {
        ByteRing {
            buf: vec![0; initial.min(max)],
            origin: 0,
            head: 0,
            tail: 0,
            max,
        }
    }

    pub(crate) fn len(&self) -> usize {
        (self.tail - self.head) as usize
    }

    /// Whether `n` more bytes fit within the limit.
    pub(crate) fn fits(&self, n: usize) -> bool {
        self.len()
            .checked_add(n)
            .is_some_and(|total| total <= self.max)
    }

    fn pos(&self, off: u64) -> usize {
        ((off - self.origin) % self.buf.len() as u64) as usize
    }

    /// Appends `data` (which must [`fit`](Self::fits)) and returns its
    /// stream offset.
    pub(crate) fn push(&mut self, data: &[u8]) -> u64 {
        let off = self.tail;
        if data.is_empty() {
            return off;
        }
        let need = self.len() + data.len();
        if need > self.buf.len() {
            self.grow(need);
        }
        let at = self.pos(off);
        let first = data.len().min(self.buf.len() - at);
        self.buf[at..at + first].copy_from_slice(&data[..first]);
        self.buf[..data.len() - first].copy_from_slice(&data[first..]);
        self.tail += data.len() as u64;
        off
    }

    /// Copies the live bytes at stream offset `off` into `out`.
    pub(crate) fn copy_out(&self, off: u64, out: &mut [u8]) {
        debug_assert!(off >= self.head && off + out.len() as u64 <= self.tail);
        if out.is_empty() {
            return;
        }
        let at = self.pos(off);
        let first = out.len().min(self.buf.len() - at);
        out[..first].copy_from_slice(&self.buf[at..at + first]);
        let rest = out.len() - first;
        out[first..].copy_from_slice(&self.buf[..rest]);
    }

    /// Frees every byte before stream offset `off`.
    pub(crate) fn release_to(&mut self, off: u64) {
        self.head = off.clamp(self.head, self.tail);
        if self.head == self.tail {
            // Empty: restart at buf[0] so the next bytes are contiguous.
            self.origin = self.head;
        }
    }

    /// The one place the ring allocates: a larger buffer, live bytes moved to
    /// its start.
    fn grow(&mut self, need: usize) {
        let cap = need.max(self.buf.len() * 2).min(self.max);
        let mut bigger = vec![0; cap];
        let len = self.len();
        self.copy_out(self.head, &mut bigger[..len]);
        self.buf = bigger;
        self.origin = self.head;
    }
}

#[cfg(test)]
mod tests {
    use super::ByteRing;

    #[test]
    fn bytes_come_back_across_the_wrap() {
        let mut r = ByteRing::new(8, 8);
        let a = r.push(b"abcdef");
        r.release_to(a + 4);
        let b = r.push(b"ghijkl");
        assert!(!r.fits(1));
        let mut out = [0; 8];
        r.copy_out(a + 4, &mut out);
        assert_eq!(&out, b"efghijkl");
        let mut out = [0; 6];
        r.copy_out(b, &mut out);
        assert_eq!(&out, b"ghijkl");
    }

    #[test]
    fn growth_keeps_offsets_valid() {
        let mut r = ByteRing::new(4, 64);
        let a = r.push(b"abc");
        r.release_to(a + 2);
        let b = r.push(b"defgh");
        let c = r.push(&[b'z'; 20]);
        let mut out = [0; 6];
        r.copy_out(a + 2, &mut out);
        assert_eq!(&out, b"cdefgh");
        let mut out = [0; 20];
        r.copy_out(c, &mut out);
        assert_eq!(out, [b'z'; 20]);
        assert_eq!(b, 3);
        assert_eq!(r.len(), 26);
    }

    #[test]
    fn the_limit_is_enforced_by_fits() {
        let mut r = ByteRing::new(0, 10);
        assert!(r.fits(10));
        assert!(!r.fits(11));
        assert!(!r.fits(usize::MAX));
        r.push(&[1; 10]);
        assert!(r.fits(0));
        assert!(!r.fits(1));
        r.release_to(u64::MAX);
        assert_eq!(r.len(), 0);
        assert!(r.fits(10));
    }

    #[test]
    fn empty_pushes_allocate_nothing() {
        let mut r = ByteRing::new(0, 10);
        assert_eq!(r.push(&[]), 0);
        r.copy_out(0, &mut []);
        assert_eq!(r.len(), 0);
    }
}
