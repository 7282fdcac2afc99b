//! The ring's memory on the heap for the loom model checker, which cannot
//! place its atomics in raw shared memory. The futex is modelled by a mutex
//! and condition variable with the kernel's semantics: the value check and the
//! sleep are atomic with respect to wake.

use std::time::Duration;

use loom::cell::UnsafeCell;
use loom::sync::{Condvar, Mutex};

use super::layout::RingControl;
use super::slot::SEQ_LEN;
use super::RingConfig;
use crate::sync::{AtomicU64, Ordering, Wait};

struct Slot {
    seq: AtomicU64,
    body: UnsafeCell<Box<[u8]>>,
}

pub(crate) struct RingMem {
    control: RingControl,
    slots: Box<[Slot]>,
    futex_lock: Mutex<()>,
    futex_cv: Condvar,
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
            control: RingControl::new(g),
            slots,
            futex_lock: Mutex::new(()),
            futex_cv: Condvar::new(),
        }
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

    pub(crate) fn wait(&self, expected: u32, _timeout: Option<Duration>) -> Wait {
        let guard = self.futex_lock.lock().expect("futex model lock");
        if self.control.doorbell.sleeping.load(Ordering::SeqCst) != expected {
            return Wait::Woken;
        }
        drop(self.futex_cv.wait(guard).expect("futex model wait"));
        Wait::Woken
    }

    pub(crate) fn wake(&self) {
        let _guard = self.futex_lock.lock().expect("futex model lock");
        self.futex_cv.notify_all();
    }
}
