//! Registered ("fixed") buffers: memory that the kernel pins once so that
//! zero-copy sends from it skip the per-send page pinning.

use std::io;

use io_uring::Submitter;

/// Slots in the sparse fixed-buffer table; one per registered piece.
const TABLE_SLOTS: u32 = 64;

/// The kernel caps a single fixed buffer at 1 GiB; larger regions are
/// registered as several consecutive pieces.
const MAX_PIECE: usize = 1 << 30;

/// One registered piece: `[start, end)` under fixed-buffer `index`.
#[derive(Debug, Clone, Copy)]
struct Piece {
    start: usize,
    end: usize,
    index: u16,
}

/// The fixed-buffer table of one ring.
#[derive(Debug, Default)]
pub(crate) struct FixedBufs {
    pieces: Vec<Piece>,
    /// Whether the sparse table exists; created on first registration.
    table: Option<bool>,
}

impl FixedBufs {
    /// Registers `[ptr, ptr + len)`. On failure the pieces registered so
    /// far stay registered and sends from the rest go unregistered.
    ///
    /// # Safety
    ///
    /// The memory must stay valid until the ring is destroyed.
    pub(crate) unsafe fn register(
        &mut self,
        submitter: &Submitter<'_>,
        ptr: *mut u8,
        len: usize,
    ) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let table = *self
            .table
            .get_or_insert_with(|| submitter.register_buffers_sparse(TABLE_SLOTS).is_ok());
        if !table {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "sparse fixed-buffer tables are not supported by this kernel",
            ));
        }
        if self.pieces.len() + len.div_ceil(MAX_PIECE) > TABLE_SLOTS as usize {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "fixed-buffer table is full",
            ));
        }
        let mut off = 0;
        while off < len {
            let n = (len - off).min(MAX_PIECE);
            let iov = libc::iovec {
                iov_base: ptr.wrapping_add(off).cast(),
                iov_len: n,
            };
            let index = self.pieces.len();
            // One piece per call: a multi-entry update that fails half way
            // reports success for the entries it did register.
            // SAFETY: the caller keeps the memory valid while the ring
            // lives; the iovec only describes it and is read during the call.
            unsafe { submitter.register_buffers_update(index as u32, &[iov], None)? };
            let start = iov.iov_base as usize;
            self.pieces.push(Piece {
                start,
                end: start + n,
                index: index as u16,
            });
            off += n;
        }
        Ok(())
    }

    /// The fixed-buffer index whose piece contains all of `[ptr, ptr + len)`.
    pub(crate) fn lookup(&self, ptr: *const u8, len: usize) -> Option<u16> {
        let start = ptr as usize;
        let end = start.checked_add(len)?;
        self.pieces
            .iter()
            .find(|p| p.start <= start && end <= p.end)
            .map(|p| p.index)
    }
}
