//! The ring's memory on the heap for the loom model checker, which cannot
//! place its atomics in raw shared memory.

use loom::cell::UnsafeCell;

use super::layout::RingControl;
use super::slot::SEQ_LEN;
use super::RingConfig;
use crate::sync::AtomicU64;

struct Slot {
    seq: AtomicU64,
    body: UnsafeCell<Box<[u8]>>,
}

pub(crate) struct RingMem {
    geometry: super::RingGeometry,
    control: RingControl,
    slots: Box<[Slot]>,
}

// SAFETY: slot bodies are accessed only under the ring protocol, which gives
// each body one accessor at a time; proving that is what the loom model is for
// (loom's UnsafeCell reports any concurrent access).
unsafe impl Send for RingMem {}
// SAFETY: see the Send impl.
unsafe impl Sync for RingMem {}

impl RingMem {
    pub(crate) fn new(cfg: RingConfig) -> Self {
        let g = cfg.geometry();
        let slots = (0..g.capacity)
            .map(|_| Slot {
                seq: AtomicU64::new(0),
                body: UnsafeCell::new(vec![0u8; g.slot_size as usize - SEQ_LEN].into_boxed_slice()),
            })
            .collect();
        RingMem {
            geometry: g,
            control: RingControl::new(g),
            slots,
        }
    }

    pub(crate) fn geometry(&self) -> super::RingGeometry {
        self.geometry
    }

    pub(crate) fn control(&self) -> &RingControl {
        &self.control
    }

    pub(crate) fn seq(&self, idx: usize) -> &AtomicU64 {
        &self.slots[idx].seq
    }

    /// # Safety
    /// As for the shared-memory ring: the caller holds the slot under the protocol.
    pub(crate) unsafe fn body<R>(&self, idx: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        // SAFETY: loom checks the caller's claim of exclusive access.
        self.slots[idx].body.with(|p| f(unsafe { &*p }))
    }

    /// # Safety
    /// As for the shared-memory ring: the caller holds the slot under the protocol.
    pub(crate) unsafe fn body_mut<R>(&self, idx: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        // SAFETY: loom checks the caller's claim of exclusive access.
        self.slots[idx].body.with_mut(|p| f(unsafe { &mut *p }))
    }
}
