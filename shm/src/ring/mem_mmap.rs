//! The ring's memory inside a shared segment.

use std::ptr::NonNull;
use std::sync::Arc;

use super::layout::{RingControl, RingGeometry, CONTROL_LEN};
use super::slot::SEQ_LEN;
use super::RingConfig;
use crate::sync::AtomicU64;
use crate::{Segment, ShmError};

/// Regions must start on a cache-padded boundary.
const REGION_ALIGN: usize = 128;

pub(crate) struct RingMem {
    // Keeps the mapping alive for as long as any handle uses the ring.
    _segment: Arc<Segment>,
    control: NonNull<RingControl>,
    slots: NonNull<u8>,
    // The validated copy: shared memory is never re-read for the shape, so a
    // peer that scribbles over the geometry cannot change it under us.
    geometry: RingGeometry,
    slot_size: usize,
    capacity: usize,
}

// SAFETY: the pointers refer into the segment's mapping, kept alive by
// `_segment`. Shared state is only accessed through atomics, and slot bodies
// only under the ring's sequence protocol (see `slot.rs`), which gives each
// body a single accessor at a time.
unsafe impl Send for RingMem {}
// SAFETY: see the Send impl.
unsafe impl Sync for RingMem {}

impl RingMem {
    pub(crate) fn create(
        seg: &Arc<Segment>,
        offset: usize,
        cfg: RingConfig,
    ) -> Result<Self, ShmError> {
        if seg.is_ready() {
            return Err(ShmError::Layout(
                "rings are created before the segment is marked ready",
            ));
        }
        let geometry = cfg.geometry();
        let base = region(seg, offset, geometry.region_len())?;
        seg.reserve(offset, geometry.region_len(), false)?;
        // SAFETY: `region` checked that `region_len` bytes from `base` lie in the
        // mapping. The segment is not ready, so no other process has opened it
        // and nobody else accesses this region yet. All-zero bytes are a valid
        // `RingControl` (atomics and integers) and an empty slot array.
        unsafe {
            base.as_ptr().write_bytes(0, geometry.region_len());
            base.cast::<RingGeometry>().as_ptr().write(geometry);
        }
        Ok(Self::at(seg, base, geometry))
    }

    pub(crate) fn open(seg: &Arc<Segment>, offset: usize) -> Result<Self, ShmError> {
        let base = region(seg, offset, CONTROL_LEN)?;
        let available = seg.payload_len() - offset;
        let mut raw = [0u8; std::mem::size_of::<RingGeometry>()];
        // SAFETY: `region` checked that CONTROL_LEN (> geometry) bytes lie in the
        // mapping; the geometry is written once before the segment became ready.
        unsafe { std::ptr::copy_nonoverlapping(base.as_ptr(), raw.as_mut_ptr(), raw.len()) };
        let geometry = RingGeometry::decode(&raw, available)?;
        seg.reserve(offset, geometry.region_len(), true)?;
        Ok(Self::at(seg, base, geometry))
    }

    fn at(seg: &Arc<Segment>, base: NonNull<u8>, g: RingGeometry) -> Self {
        RingMem {
            _segment: Arc::clone(seg),
            control: base.cast(),
            // SAFETY: the region (checked by the caller) spans CONTROL_LEN plus all slots.
            slots: unsafe { base.add(CONTROL_LEN) },
            geometry: g,
            slot_size: g.slot_size as usize,
            capacity: g.capacity as usize,
        }
    }

    pub(crate) fn geometry(&self) -> RingGeometry {
        self.geometry
    }

    pub(crate) fn control(&self) -> &RingControl {
        // SAFETY: the control block is in bounds, aligned (region offset is a
        // multiple of 128 in a page-aligned mapping) and initialised.
        unsafe { self.control.as_ref() }
    }

    pub(crate) fn seq(&self, idx: usize) -> &AtomicU64 {
        assert!(idx < self.capacity);
        // SAFETY: idx < capacity keeps the slot in the region; slots are 64-byte
        // aligned (CONTROL_LEN and slot size are multiples of 64), so the word is
        // aligned, and it is only ever accessed atomically.
        unsafe { AtomicU64::from_ptr(self.slots.as_ptr().add(idx * self.slot_size).cast()) }
    }

    /// Runs `f` on the body of slot `idx`.
    ///
    /// # Safety
    /// The caller holds the slot under the ring protocol: it is the consumer and
    /// has seen the slot published, so the producer does not write it meanwhile.
    pub(crate) unsafe fn body<R>(&self, idx: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        // SAFETY: `body_ptr` is in bounds for `slot_size - SEQ_LEN` bytes; no
        // writer per the caller's contract.
        f(unsafe { std::slice::from_raw_parts(self.body_ptr(idx), self.slot_size - SEQ_LEN) })
    }

    /// Runs `f` on the body of slot `idx`, writable.
    ///
    /// # Safety
    /// The caller holds the slot under the ring protocol: it is the producer and
    /// the consumer has released the slot, so nobody else accesses it meanwhile.
    pub(crate) unsafe fn body_mut<R>(&self, idx: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        // SAFETY: in bounds as above; exclusive per the caller's contract.
        f(unsafe { std::slice::from_raw_parts_mut(self.body_ptr(idx), self.slot_size - SEQ_LEN) })
    }

    /// Start of slot `idx`'s body (after its sequence word).
    fn body_ptr(&self, idx: usize) -> *mut u8 {
        assert!(idx < self.capacity);
        // SAFETY: idx < capacity keeps the slot inside the region.
        unsafe { self.slots.as_ptr().add(idx * self.slot_size + SEQ_LEN) }
    }
}

/// The start of a `len`-byte region at `offset` in the segment's payload.
fn region(seg: &Segment, offset: usize, len: usize) -> Result<NonNull<u8>, ShmError> {
    if offset % REGION_ALIGN != 0 {
        return Err(ShmError::Layout("ring offset must be a multiple of 128"));
    }
    let available = seg.payload_len();
    if offset.checked_add(len).is_none_or(|end| end > available) {
        return Err(ShmError::OutOfBounds {
            offset,
            len,
            available,
        });
    }
    // SAFETY: offset + len <= payload_len, so the result stays in the mapping.
    Ok(unsafe { seg.payload_ptr().add(offset) })
}
