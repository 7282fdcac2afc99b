//! Model checks of `comm_shm::Doorbell` used on its own: one consumer waiting
//! for several producers' publications on a single futex word (how a progress
//! thread waits on many rings at once).
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p loom-tests --release`
#![cfg(loom)]

use comm_shm::{Doorbell, Park};
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;

/// Three threads explode loom's state space; a preemption bound of 3 keeps the
/// run to seconds while still covering every interleaving with up to three
/// forced context switches (enough for the two-party races modelled here).
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

#[test]
fn one_doorbell_wakes_its_consumer_for_every_producer() {
    model(|| {
        let bell = Arc::new(Doorbell::new());
        let flags = Arc::new([AtomicBool::new(false), AtomicBool::new(false)]);
        let producers: Vec<_> = (0..2)
            .map(|i| {
                let (bell, flags) = (Arc::clone(&bell), Arc::clone(&flags));
                thread::spawn(move || {
                    flags[i].store(true, Ordering::Release);
                    bell.ring();
                })
            })
            .collect();
        let all = || flags.iter().all(|f| f.load(Ordering::Acquire));
        loop {
            match bell.park(None, all) {
                Park::Ready => break,
                Park::Woken => continue,
                Park::TimedOut => unreachable!("no timeout was given"),
            }
        }
        for p in producers {
            p.join().unwrap();
        }
    });
}

#[test]
fn a_wake_racing_with_a_ring_is_not_lost() {
    model(|| {
        let bell = Arc::new(Doorbell::new());
        let stop = Arc::new(AtomicBool::new(false));
        let waker = {
            let (bell, stop) = (Arc::clone(&bell), Arc::clone(&stop));
            thread::spawn(move || {
                stop.store(true, Ordering::Release);
                bell.wake();
            })
        };
        let ringer = {
            let bell = Arc::clone(&bell);
            thread::spawn(move || bell.ring())
        };
        // The consumer's loop: stop once asked; a lost wake would block forever.
        while !stop.load(Ordering::Acquire) {
            bell.park(None, || false);
        }
        waker.join().unwrap();
        ringer.join().unwrap();
    });
}

#[test]
fn a_wake_is_reported_even_when_data_arrives_at_the_same_time() {
    // The consumer must see both the message (Ready) and the wake (Woken); a
    // wake absorbed by a Ready would leave it parked forever.
    model(|| {
        let bell = Arc::new(Doorbell::new());
        let data = Arc::new(AtomicBool::new(false));
        let pusher = {
            let (bell, data) = (Arc::clone(&bell), Arc::clone(&data));
            thread::spawn(move || {
                data.store(true, Ordering::Release);
                bell.ring();
            })
        };
        let waker = {
            let bell = Arc::clone(&bell);
            thread::spawn(move || bell.wake())
        };
        let (mut got_data, mut got_wake) = (false, false);
        while !(got_data && got_wake) {
            match bell.park(None, || data.load(Ordering::Acquire)) {
                Park::Ready => {
                    data.store(false, Ordering::Relaxed);
                    got_data = true;
                }
                Park::Woken => got_wake = true,
                Park::TimedOut => unreachable!("no timeout was given"),
            }
        }
        pusher.join().unwrap();
        waker.join().unwrap();
    });
}
