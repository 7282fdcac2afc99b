//! Model checks of `comm_shm::HotSlot` in front of a free list, as the
//! buffer pool uses it: however puts and takes interleave, a buffer has one
//! owner at a time (loom reports two as a data race on its bytes), what its
//! last owner wrote is what the next one reads, and no index is lost or
//! handed out twice.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p loom-tests --release`
#![cfg(loom)]

use comm_shm::HotSlot;
use loom::cell::UnsafeCell;
use loom::sync::{Arc, Mutex};
use loom::thread;

/// The pool's two places for a free index: the hot slot first, the free
/// list (a lock-free queue in the pool, a mutex here) when it is taken.
struct Pool {
    hot: HotSlot,
    list: Mutex<Vec<u32>>,
    /// Each buffer's bytes: how many owners have used it.
    uses: [UnsafeCell<u32>; 2],
}

// SAFETY: the bytes of buffer `i` are touched only by the owner of index
// `i`, which the model checks; the rest is atomics and a mutex.
unsafe impl Sync for Pool {}

impl Pool {
    fn release(&self, index: u32) {
        if !self.hot.put(index) {
            self.list.lock().unwrap().push(index);
        }
    }

    fn alloc(&self) -> Option<u32> {
        self.hot.take().or_else(|| self.list.lock().unwrap().pop())
    }

    /// Uses buffer `index` as its owner: reads what the last owner left
    /// and leaves one more.
    fn use_buffer(&self, index: u32) -> u32 {
        self.uses[index as usize].with_mut(|p| {
            // SAFETY: the caller owns `index` (it allocated it and has not
            // released it), so nobody else touches these bytes now.
            unsafe {
                *p += 1;
                *p
            }
        })
    }
}

/// Buffer 0 starts owned by one thread, buffer 1 free. One thread frees
/// buffer 0 while another allocates and frees twice.
#[test]
fn a_buffer_has_one_owner_and_no_index_is_lost() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let pool = Arc::new(Pool {
            hot: HotSlot::new(),
            list: Mutex::new(vec![1]),
            uses: [UnsafeCell::new(0), UnsafeCell::new(0)],
        });
        let freer = {
            let pool = Arc::clone(&pool);
            thread::spawn(move || {
                pool.use_buffer(0);
                pool.release(0);
            })
        };
        let user = {
            let pool = Arc::clone(&pool);
            thread::spawn(move || {
                for _ in 0..2 {
                    if let Some(i) = pool.alloc() {
                        pool.use_buffer(i);
                        pool.release(i);
                    }
                }
            })
        };
        freer.join().unwrap();
        user.join().unwrap();
        let mut free = pool.list.lock().unwrap().clone();
        free.extend(pool.hot.take());
        free.sort_unstable();
        assert_eq!(free, [0, 1], "an index was lost or duplicated");
    });
}

/// Two threads race to take the one index the slot holds: exactly one gets
/// it, and it sees what the thread that put it there wrote.
#[test]
fn one_taker_wins_and_sees_the_last_owner_s_bytes() {
    loom::model(|| {
        let pool = Arc::new(Pool {
            hot: HotSlot::new(),
            list: Mutex::new(Vec::new()),
            uses: [UnsafeCell::new(0), UnsafeCell::new(0)],
        });
        pool.use_buffer(0);
        let putter = {
            let pool = Arc::clone(&pool);
            thread::spawn(move || pool.release(0))
        };
        let takers: Vec<_> = (0..2)
            .map(|_| {
                let pool = Arc::clone(&pool);
                thread::spawn(move || pool.hot.take().map(|i| pool.use_buffer(i)))
            })
            .collect();
        putter.join().unwrap();
        let got: Vec<_> = takers
            .into_iter()
            .filter_map(|t| t.join().unwrap())
            .collect();
        match got.as_slice() {
            [] => assert_eq!(pool.hot.take(), Some(0), "the index vanished"),
            [uses] => {
                assert_eq!(*uses, 2, "the taker missed the last owner's write");
                assert_eq!(pool.hot.take(), None);
            }
            _ => panic!("two owners of one index: {got:?}"),
        }
    });
}
