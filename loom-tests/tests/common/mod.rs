//! The pool's free-index path as the hot-slot and hot-set models drive it:
//! the hot place first, the free list (a lock-free queue in the pool, a
//! mutex here) when it is full, and each buffer's bytes as a loom cell, so
//! that two owners of one buffer show up as a data race.

#![allow(dead_code)]

use comm_shm::{HotSet, HotSlot};
use loom::cell::UnsafeCell;
use loom::sync::{Arc, Mutex};
use loom::thread;

/// What the pool puts in front of its free list.
pub trait Hot {
    fn put(&self, index: u32) -> bool;
    fn take(&self) -> Option<u32>;
}

impl Hot for HotSlot {
    fn put(&self, index: u32) -> bool {
        HotSlot::put(self, index)
    }
    fn take(&self) -> Option<u32> {
        HotSlot::take(self)
    }
}

impl Hot for HotSet {
    fn put(&self, index: u32) -> bool {
        HotSet::put(self, index)
    }
    fn take(&self) -> Option<u32> {
        HotSet::take(self)
    }
}

/// `N` buffers, the indices in `free` on the list at first.
pub struct Pool<H, const N: usize> {
    pub hot: H,
    pub list: Mutex<Vec<u32>>,
    /// Each buffer's bytes: how many owners have used it.
    uses: [UnsafeCell<u32>; N],
}

// SAFETY: the bytes of buffer `i` are touched only by the owner of index
// `i`, which the models check; the rest is atomics and a mutex.
unsafe impl<H: Sync, const N: usize> Sync for Pool<H, N> {}

impl<H: Hot, const N: usize> Pool<H, N> {
    pub fn new(hot: H, free: Vec<u32>) -> Self {
        Pool {
            hot,
            list: Mutex::new(free),
            uses: std::array::from_fn(|_| UnsafeCell::new(0)),
        }
    }

    pub fn release(&self, index: u32) {
        if !self.hot.put(index) {
            self.list.lock().unwrap().push(index);
        }
    }

    pub fn alloc(&self) -> Option<u32> {
        self.hot.take().or_else(|| self.list.lock().unwrap().pop())
    }

    /// Uses buffer `index` as its owner: reads what the last owner left
    /// and leaves one more.
    pub fn use_buffer(&self, index: u32) -> u32 {
        self.uses[index as usize].with_mut(|p| {
            // SAFETY: the caller owns `index` (it allocated it and has not
            // released it), so nobody else touches these bytes now.
            unsafe {
                *p += 1;
                *p
            }
        })
    }

    /// Allocates, uses and frees a buffer `times` times (when one is free).
    pub fn cycle(&self, times: usize) {
        for _ in 0..times {
            if let Some(i) = self.alloc() {
                self.use_buffer(i);
                self.release(i);
            }
        }
    }

    /// Every free index, wherever it sits, sorted.
    pub fn all_free(&self) -> Vec<u32> {
        let mut free = self.list.lock().unwrap().clone();
        while let Some(i) = self.hot.take() {
            free.push(i);
        }
        free.sort_unstable();
        free
    }
}

/// One thread releases `index` while two others each run `take`; returns
/// what the takers got.
pub fn race<H, const N: usize, T>(
    pool: &Arc<Pool<H, N>>,
    index: u32,
    take: fn(&Pool<H, N>) -> Option<T>,
) -> Vec<T>
where
    H: Hot + Send + Sync + 'static,
    T: Send + 'static,
{
    let putter = {
        let pool = Arc::clone(pool);
        thread::spawn(move || pool.release(index))
    };
    let takers: Vec<_> = (0..2)
        .map(|_| {
            let pool = Arc::clone(pool);
            thread::spawn(move || take(&pool))
        })
        .collect();
    putter.join().unwrap();
    takers
        .into_iter()
        .filter_map(|t| t.join().unwrap())
        .collect()
}
