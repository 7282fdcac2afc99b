//! `park` sleeps until a futex wake, an arriving record or the timeout.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use comm_uring::{Event, LenPrefix, Uring, UringConfig};
use common::{tcp_pair, HangGuard};

/// Far longer than any of these tests should take; reaching it means the
/// wake-up was missed.
const LONG: Duration = Duration::from_secs(30);

fn futex_wake(word: &AtomicU32) {
    // SAFETY: a live, aligned word; FUTEX_WAKE reads no memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

#[test]
fn a_futex_wake_from_another_thread_ends_the_park() {
    let mut ring = Uring::new(UringConfig::default(), LenPrefix).unwrap();
    let word = Arc::new(AtomicU32::new(0));
    for round in 0..3u32 {
        let w = Arc::clone(&word);
        let waker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            w.store(round + 1, Ordering::Release);
            futex_wake(&w);
        });
        let start = Instant::now();
        while word.load(Ordering::Acquire) == round {
            ring.park(Some((&word, round)), LONG).unwrap();
            assert!(start.elapsed() < LONG, "the wake was missed");
            ring.poll(|ev| panic!("unexpected {ev:?}"));
        }
        waker.join().unwrap();
    }
}

#[test]
fn a_word_that_already_changed_does_not_sleep() {
    let mut ring = Uring::new(UringConfig::default(), LenPrefix).unwrap();
    let word = AtomicU32::new(5);
    let start = Instant::now();
    ring.park(Some((&word, 4)), LONG).unwrap();
    assert!(start.elapsed() < LONG);
}

#[test]
fn an_arriving_record_ends_the_park() {
    let (mut peer, ours) = tcp_pair();
    let mut ring = Uring::new(UringConfig::default(), LenPrefix).unwrap();
    let conn = ring.add_stream(ours).unwrap();
    let word = AtomicU32::new(0);
    // Arm the receive before the record can arrive.
    ring.flush().unwrap();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        peer.write_all(&LenPrefix::header(3)).unwrap();
        peer.write_all(b"abc").unwrap();
        peer
    });
    let mut got = false;
    let start = Instant::now();
    let guard = HangGuard::new("record wake");
    while !got {
        guard.check();
        ring.park(Some((&word, 0)), LONG).unwrap();
        assert!(start.elapsed() < LONG, "the record did not wake the park");
        ring.poll(|ev| match ev {
            Event::Record { conn: c, bytes } => {
                assert_eq!(c, conn);
                assert_eq!(&bytes[4..], b"abc");
                got = true;
            }
            other => panic!("unexpected {other:?}"),
        });
    }
    drop(writer.join().unwrap());
}

#[test]
fn park_returns_after_the_timeout() {
    let mut ring = Uring::new(UringConfig::default(), LenPrefix).unwrap();
    let word = AtomicU32::new(0);
    ring.park(None, Duration::from_millis(20)).unwrap();
    ring.park(Some((&word, 0)), Duration::from_millis(20))
        .unwrap();
    // The futex wait stays armed; parking again on it must still time out.
    ring.park(Some((&word, 0)), Duration::from_millis(20))
        .unwrap();
    assert_eq!(ring.poll(|ev| panic!("unexpected {ev:?}")), 0);
    // Switching to another word re-arms cleanly.
    let other = AtomicU32::new(0);
    ring.park(Some((&other, 0)), Duration::from_millis(20))
        .unwrap();
    assert_eq!(ring.poll(|ev| panic!("unexpected {ev:?}")), 0);
}
