//! Model checks of `comm_shm::HotSet` in front of a free list, as the buffer
//! pool uses it: with several indices moving through the set's slots at
//! once, a buffer has one owner at a time (loom reports two as a data race
//! on its bytes), what its last owner wrote is what the next one reads, and
//! no index is lost or handed out twice.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p loom-tests --release`
#![cfg(loom)]

use comm_shm::HotSet;
use loom::cell::UnsafeCell;
use loom::sync::{Arc, Mutex};
use loom::thread;

const BUFFERS: usize = 3;

/// The pool's two places for a free index: the hot set first, the free
/// list (a lock-free queue in the pool, a mutex here) when the set is full.
struct Pool {
    hot: HotSet,
    list: Mutex<Vec<u32>>,
    /// Each buffer's bytes: how many owners have used it.
    uses: [UnsafeCell<u32>; BUFFERS],
}

// SAFETY: the bytes of buffer `i` are touched only by the owner of index
// `i`, which the model checks; the rest is atomics and a mutex.
unsafe impl Sync for Pool {}

impl Pool {
    fn new(free: Vec<u32>) -> Pool {
        Pool {
            hot: HotSet::new(),
            list: Mutex::new(free),
            uses: std::array::from_fn(|_| UnsafeCell::new(0)),
        }
    }

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

    /// Every free index, wherever it sits.
    fn all_free(&self) -> Vec<u32> {
        let mut free = self.list.lock().unwrap().clone();
        while let Some(i) = self.hot.take() {
            free.push(i);
        }
        free.sort_unstable();
        free
    }
}

/// Buffers 0 and 1 start owned by two threads that free them while a third
/// allocates, uses and frees twice: the set holds several indices at once.
#[test]
fn several_indices_keep_one_owner_each_and_none_is_lost() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(|| {
        let pool = Arc::new(Pool::new(vec![2]));
        let freers: Vec<_> = (0..2u32)
            .map(|i| {
                let pool = Arc::clone(&pool);
                thread::spawn(move || {
                    pool.use_buffer(i);
                    pool.release(i);
                })
            })
            .collect();
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
        for t in freers {
            t.join().unwrap();
        }
        user.join().unwrap();
        assert_eq!(
            pool.all_free(),
            [0, 1, 2],
            "an index was lost or duplicated"
        );
    });
}

/// Two threads race to take from a set holding two indices while a third
/// puts one back: no index goes to two owners, and each taker sees what
/// the buffer's last owner wrote.
#[test]
fn racing_takers_get_distinct_indices_with_their_bytes() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(|| {
        let pool = Arc::new(Pool::new(Vec::new()));
        for i in 0..2 {
            pool.use_buffer(i);
            pool.release(i);
        }
        pool.use_buffer(2);
        let putter = {
            let pool = Arc::clone(&pool);
            thread::spawn(move || pool.release(2))
        };
        let takers: Vec<_> = (0..2)
            .map(|_| {
                let pool = Arc::clone(&pool);
                thread::spawn(move || pool.alloc().map(|i| (i, pool.use_buffer(i))))
            })
            .collect();
        putter.join().unwrap();
        let mut got: Vec<_> = takers
            .into_iter()
            .filter_map(|t| t.join().unwrap())
            .collect();
        for &(_, uses) in &got {
            assert_eq!(uses, 2, "a taker missed the last owner's write");
        }
        got.sort_unstable();
        assert!(
            got.windows(2).all(|w| w[0].0 != w[1].0),
            "two owners of one index: {got:?}"
        );
        let mut all: Vec<u32> = got.iter().map(|&(i, _)| i).collect();
        all.extend(pool.all_free());
        all.sort_unstable();
        assert_eq!(all, [0, 1, 2], "an index was lost or duplicated");
    });
}
