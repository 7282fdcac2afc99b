//! Model checks of the shared-memory SPSC ring (`comm_shm::Ring`): every
//! interleaving and every weak-memory outcome loom can produce.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p loom-tests --release`
#![cfg(loom)]

use comm_shm::{Park, PopError, PushError, Ring, RingConfig};
use loom::thread;

fn ring(capacity: u32) -> Ring {
    Ring::model(RingConfig::new(capacity, 64).unwrap())
}

/// Pops one message, spinning (with loom yields) until one is there.
fn pop_spin(rx: &mut comm_shm::Consumer) -> Vec<u8> {
    loop {
        match rx.pop_with(|b| b.to_vec()) {
            Ok(m) => return m,
            Err(PopError::Empty) => thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn messages_arrive_in_order_through_wrap_around() {
    loom::model(|| {
        let ring = ring(2);
        let mut tx = ring.producer().unwrap();
        let mut rx = ring.consumer().unwrap();
        let producer = thread::spawn(move || {
            for i in 0u8..3 {
                while tx.push(&[i, i ^ 0xff]) == Err(PushError::WouldBlock) {
                    thread::yield_now();
                }
            }
        });
        for i in 0u8..3 {
            assert_eq!(pop_spin(&mut rx), [i, i ^ 0xff]);
        }
        producer.join().unwrap();
    });
}

#[test]
fn full_and_empty_boundaries_hold() {
    loom::model(|| {
        let ring = ring(2);
        let mut tx = ring.producer().unwrap();
        let mut rx = ring.consumer().unwrap();
        let producer = thread::spawn(move || {
            tx.push(&[1]).unwrap();
            tx.push(&[2]).unwrap();
            // Never more than capacity in flight: a third push fails unless the
            // consumer has released a slot, and then it succeeds.
            let third = tx.push(&[3]);
            (tx, third)
        });
        let first = pop_spin(&mut rx);
        assert_eq!(first, [1]);
        let (mut tx, third) = producer.join().unwrap();
        assert_eq!(pop_spin(&mut rx), [2]);
        match third {
            Ok(()) => assert_eq!(pop_spin(&mut rx), [3]),
            Err(e) => assert_eq!(e, PushError::WouldBlock),
        }
        assert_eq!(rx.pop_with(|_| ()), Err(PopError::Empty));
        tx.push(&[4]).unwrap();
        assert_eq!(pop_spin(&mut rx), [4]);
    });
}

#[test]
fn batch_push_and_pop_deliver_everything_in_order() {
    loom::model(|| {
        let ring = ring(2);
        let mut tx = ring.producer().unwrap();
        let mut rx = ring.consumer().unwrap();
        let producer = thread::spawn(move || {
            let msgs: [&[u8]; 3] = [b"a", b"b", b"c"];
            let mut sent = 0;
            while sent < msgs.len() {
                let n = tx.push_batch(&msgs[sent..]).unwrap();
                if n == 0 {
                    thread::yield_now();
                }
                sent += n;
            }
        });
        let mut got = Vec::new();
        while got.len() < 3 {
            let n = rx.pop_batch(8, |b| got.push(b[0])).unwrap();
            if n == 0 {
                thread::yield_now();
            }
        }
        assert_eq!(got, b"abc");
        producer.join().unwrap();
    });
}

#[test]
fn a_parked_consumer_is_always_woken_by_a_push() {
    // A lost wake-up would leave the consumer blocked forever, which loom
    // reports as a deadlock.
    loom::model(|| {
        let ring = ring(2);
        let mut tx = ring.producer().unwrap();
        let mut rx = ring.consumer().unwrap();
        let producer = thread::spawn(move || tx.push(b"x").unwrap());
        loop {
            match rx.park(None) {
                Park::Ready => break,
                Park::Woken => continue,
                Park::TimedOut => unreachable!("no timeout was given"),
            }
        }
        assert_eq!(rx.pop_with(|b| b.to_vec()).unwrap(), b"x");
        producer.join().unwrap();
    });
}

#[test]
fn an_explicit_wake_is_never_lost() {
    loom::model(|| {
        let ring = ring(2);
        let mut rx = ring.consumer().unwrap();
        let waker = ring.clone();
        let t = thread::spawn(move || waker.wake_consumer());
        assert_eq!(rx.park(None), Park::Woken);
        t.join().unwrap();
    });
}
