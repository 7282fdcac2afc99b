//! Model checks of `comm_shm::HotSlot` in front of a free list, as the
//! buffer pool uses it: however puts and takes interleave, a buffer has one
//! owner at a time (loom reports two as a data race on its bytes), what its
//! last owner wrote is what the next one reads, and no index is lost or
//! handed out twice.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p loom-tests --release`
#![cfg(loom)]

mod common;

use comm_shm::HotSlot;
use common::Pool;
use loom::sync::Arc;
use loom::thread;

/// Buffer 0 starts owned by one thread, buffer 1 free. One thread frees
/// buffer 0 while another allocates and frees twice.
#[test]
fn a_buffer_has_one_owner_and_no_index_is_lost() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let pool = Arc::new(Pool::<_, 2>::new(HotSlot::new(), vec![1]));
        let freer = {
            let pool = Arc::clone(&pool);
            thread::spawn(move || {
                pool.use_buffer(0);
                pool.release(0);
            })
        };
        let user = {
            let pool = Arc::clone(&pool);
            thread::spawn(move || pool.cycle(2))
        };
        freer.join().unwrap();
        user.join().unwrap();
        assert_eq!(pool.all_free(), [0, 1], "an index was lost or duplicated");
    });
}

/// Two threads race to take the one index the slot holds: exactly one gets
/// it, and it sees what the thread that put it there wrote.
#[test]
fn one_taker_wins_and_sees_the_last_owner_s_bytes() {
    loom::model(|| {
        let pool = Arc::new(Pool::<_, 2>::new(HotSlot::new(), Vec::new()));
        pool.use_buffer(0);
        let got = common::race(&pool, 0, |p| p.hot.take().map(|i| p.use_buffer(i)));
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
