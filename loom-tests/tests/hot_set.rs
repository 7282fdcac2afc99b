//! Model checks of `comm_shm::HotSet` in front of a free list, as the buffer
//! pool uses it: with several indices moving through the set's slots at
//! once, a buffer has one owner at a time (loom reports two as a data race
//! on its bytes), what its last owner wrote is what the next one reads, and
//! no index is lost or handed out twice.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p loom-tests --release`
#![cfg(loom)]

mod common;

use comm_shm::HotSet;
use loom::sync::Arc;
use loom::thread;

type Pool = common::Pool<HotSet, 3>;

/// Buffers 0 and 1 start owned by two threads that free them while a third
/// allocates, uses and frees twice: the set holds several indices at once.
#[test]
fn several_indices_keep_one_owner_each_and_none_is_lost() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(|| {
        let pool = Arc::new(Pool::new(HotSet::new(), vec![2]));
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
            thread::spawn(move || pool.cycle(2))
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
        let pool = Arc::new(Pool::new(HotSet::new(), Vec::new()));
        for i in 0..2 {
            pool.use_buffer(i);
            pool.release(i);
        }
        pool.use_buffer(2);
        let mut got = common::race(&pool, 2, |p| p.alloc().map(|i| (i, p.use_buffer(i))));
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
