//! A provided-buffer ring: receive buffers that the kernel picks from as data
//! arrives, so that a multishot receive needs no buffer of its own.

use std::io;
use std::mem;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::Submitter;

use crate::sys::{Mmap, RawBuf};

/// One buffer group: `entries` buffers of `buf_len` bytes each, and the ring
/// through which they are handed to the kernel.
///
/// The kernel takes buffers from the ring's head; we put them back at the
/// tail once the data they carried has been consumed. A buffer id handed out
/// in a completion is ours until [`BufRing::recycle`] returns it.
#[derive(Debug)]
pub(crate) struct BufRing {
    ring: Mmap,
    bufs: Mmap,
    entries: u16,
    buf_len: u32,
    /// Our copy of the tail; published to the kernel by [`BufRing::publish`].
    tail: u16,
    bgid: u16,
}

impl BufRing {
    /// Maps the ring and the buffers, fills the ring with every buffer and
    /// registers it as group `bgid`.
    ///
    /// `entries` must be a power of two no larger than 32768.
    pub(crate) fn new(
        submitter: &Submitter<'_>,
        bgid: u16,
        entries: u16,
        buf_len: u32,
    ) -> io::Result<BufRing> {
        if !entries.is_power_of_two() || entries > 32768 || buf_len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer ring needs a power-of-two count (at most 32768) of non-empty buffers",
            ));
        }
        let ring = Mmap::anon(usize::from(entries) * mem::size_of::<RawBuf>())?;
        let total = usize::from(entries)
            .checked_mul(buf_len as usize)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "buffers too large"))?;
        let bufs = Mmap::anon(total)?;
        let mut this = BufRing {
            ring,
            bufs,
            entries,
            buf_len,
            tail: 0,
            bgid,
        };
        for bid in 0..entries {
            this.recycle(bid);
        }
        this.publish();
        // SAFETY: the ring mapping is page aligned, holds `entries` slots and
        // lives in `self` until `unregister` or the ring's destruction (the
        // owner unregisters, or leaks the mapping, before dropping it).
        unsafe {
            submitter.register_buf_ring_with_flags(this.ring.as_ptr() as u64, entries, bgid, 0)?;
        }
        Ok(this)
    }

    /// The group id that SQEs name to receive into these buffers.
    pub(crate) fn bgid(&self) -> u16 {
        self.bgid
    }

    /// The first `len` bytes of buffer `bid`, which a completion has just
    /// handed to us; `None` if the kernel's numbers are out of range.
    pub(crate) fn get(&self, bid: u16, len: usize) -> Option<&[u8]> {
        if bid >= self.entries || len > self.buf_len as usize {
            return None;
        }
        // SAFETY: the range lies inside the buffer mapping (checked above).
        // Buffer `bid` was handed to us by a completion and is not in the
        // ring, so the kernel does not write it until `recycle`, which needs
        // `&mut self` and so cannot happen while this borrow lives.
        unsafe {
            let start = self
                .bufs
                .as_ptr()
                .add(usize::from(bid) * self.buf_len as usize);
            Some(std::slice::from_raw_parts(start, len))
        }
    }

    /// Puts buffer `bid` back at the tail; the kernel sees it after
    /// [`BufRing::publish`].
    pub(crate) fn recycle(&mut self, bid: u16) {
        if bid >= self.entries {
            return;
        }
        let slot = usize::from(self.tail & (self.entries - 1));
        let addr = self.bufs.as_ptr() as u64 + u64::from(bid) * u64::from(self.buf_len);
        // SAFETY: `slot` < entries, so the slot lies inside the ring mapping.
        // The kernel only reads slots between its head and the published
        // tail; this one is past the published tail. Fields are written one
        // by one through raw pointers so that slot 0's `resv` (the tail the
        // kernel reads) is never covered by a reference.
        unsafe {
            let entry = self.ring.as_ptr().cast::<RawBuf>().add(slot);
            std::ptr::addr_of_mut!((*entry).addr).write(addr);
            std::ptr::addr_of_mut!((*entry).len).write(self.buf_len);
            std::ptr::addr_of_mut!((*entry).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every recycled buffer visible to the kernel.
    pub(crate) fn publish(&mut self) {
        // SAFETY: slot 0's `resv` is the ring tail; it is 2-byte aligned
        // (offset 14 in a page-aligned mapping) and only ever accessed
        // atomically, by us and by the kernel.
        let tail = unsafe {
            let entry = self.ring.as_ptr().cast::<RawBuf>();
            AtomicU16::from_ptr(std::ptr::addr_of_mut!((*entry).resv))
        };
        // Release: the slot contents written in `recycle` must be visible
        // before the kernel sees the new tail.
        tail.store(self.tail, Ordering::Release);
    }

    /// Tells the kernel to forget the ring; after this the memory is ours.
    pub(crate) fn unregister(&self, submitter: &Submitter<'_>) -> io::Result<()> {
        submitter.unregister_buf_ring(self.bgid)
    }

    /// Abandons the memory, for when the kernel might still write into it.
    pub(crate) fn leak(self) {
        self.ring.leak();
        self.bufs.leak();
    }
}
