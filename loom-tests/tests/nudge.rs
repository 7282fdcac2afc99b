//! Model checks of `comm_shm::Nudge`: however raises and takes interleave, a
//! consumer that drains after each successful `take` never misses work that a
//! producer published before raising.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p loom-tests --release`
#![cfg(loom)]

use comm_shm::Nudge;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

/// Two producers each publish one item (a Relaxed store: only the nudge
/// orders it) and raise; the consumer takes and drains concurrently. Once all
/// have finished, every item was seen by a drain or the flag is still up.
#[test]
fn no_published_work_hides_behind_a_lowered_flag() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let nudge = Arc::new(Nudge::new());
        let items = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let producers: Vec<_> = (0..2)
            .map(|i| {
                let (nudge, items) = (Arc::clone(&nudge), Arc::clone(&items));
                thread::spawn(move || {
                    items[i].store(1, Ordering::Relaxed);
                    nudge.raise();
                })
            })
            .collect();
        let mut seen = [false; 2];
        for _ in 0..2 {
            if nudge.take() {
                for (i, item) in items.iter().enumerate() {
                    seen[i] |= item.load(Ordering::Relaxed) == 1;
                }
            }
        }
        for p in producers {
            p.join().unwrap();
        }
        if !nudge.is_raised() {
            assert_eq!(seen, [true, true], "work hidden behind a lowered flag");
        }
    });
}
