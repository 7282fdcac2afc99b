//! Behaviour of the ring within one process (the cross-process tests are in
//! the workspace's `tests/`).
// These use real segments, which the loom build does not provide.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use comm_shm::{Park, PopError, PushError, Ring, RingConfig, Segment, ShmError};

fn segment(payload: usize) -> Arc<Segment> {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "comm-test-ring-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    Arc::new(Segment::create(&name, payload).expect("create segment"))
}

fn ring(capacity: u32, slot: u32) -> (Arc<Segment>, Ring) {
    let cfg = RingConfig::new(capacity, slot).unwrap();
    let seg = segment(cfg.region_len());
    let ring = Ring::create(&seg, 0, cfg).unwrap();
    seg.mark_ready();
    (seg, ring)
}

#[test]
fn messages_arrive_in_order_through_many_wrap_arounds() {
    let (_seg, ring) = ring(4, 64);
    let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
    for i in 0u64..1000 {
        tx.push(&i.to_le_bytes()).unwrap();
        let got = rx
            .pop_with(|b| u64::from_le_bytes(b.try_into().unwrap()))
            .unwrap();
        assert_eq!(got, i);
    }
}

#[test]
fn a_full_ring_refuses_until_the_consumer_frees_a_slot() {
    let (_seg, ring) = ring(4, 64);
    let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
    assert_eq!(rx.pop_with(|_| ()), Err(PopError::Empty));
    for i in 0u8..4 {
        tx.push(&[i]).unwrap();
    }
    assert_eq!(tx.push(&[9]), Err(PushError::WouldBlock));
    assert_eq!(tx.free_slots(), 0);
    assert_eq!(rx.pop_with(|b| b[0]).unwrap(), 0);
    tx.push(&[4]).unwrap();
    for want in 1u8..5 {
        assert_eq!(rx.pop_with(|b| b[0]).unwrap(), want);
    }
    assert_eq!(rx.pop_with(|_| ()), Err(PopError::Empty));
}

#[test]
fn payloads_from_empty_to_the_slot_limit_round_trip_and_larger_ones_are_refused() {
    let (_seg, ring) = ring(8, 128);
    let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
    let max = tx.max_payload();
    assert_eq!(max, 112);
    for len in [0, 1, 7, 8, 63, max] {
        let msg: Vec<u8> = (0..len).map(|i| i as u8).collect();
        tx.push(&msg).unwrap();
        assert_eq!(rx.pop_with(|b| b.to_vec()).unwrap(), msg);
    }
    assert_eq!(
        tx.push(&vec![0; max + 1]),
        Err(PushError::TooLarge { len: max + 1, max })
    );
    assert_eq!(
        tx.push_with(|_| max + 1),
        Err(PushError::TooLarge { len: max + 1, max })
    );
    assert_eq!(rx.pop_with(|_| ()), Err(PopError::Empty));
}

#[test]
fn batches_push_what_fits_and_pop_in_order() {
    let (_seg, ring) = ring(8, 64);
    let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
    let msgs: Vec<[u8; 2]> = (0u8..12).map(|i| [i, i]).collect();
    assert_eq!(tx.push_batch(&msgs).unwrap(), 8);
    assert_eq!(tx.push_batch(&msgs[8..]).unwrap(), 0);
    let mut seen = Vec::new();
    assert_eq!(rx.pop_batch(5, |b| seen.push(b[0])).unwrap(), 5);
    assert_eq!(tx.push_batch(&msgs[8..]).unwrap(), 4);
    assert_eq!(rx.pop_batch(100, |b| seen.push(b[0])).unwrap(), 7);
    assert_eq!(seen, (0u8..12).collect::<Vec<_>>());
    let too_big = [vec![0u8; 1], vec![0u8; 100]];
    assert!(matches!(
        tx.push_batch(&too_big),
        Err(PushError::TooLarge { .. })
    ));
    assert_eq!(
        rx.pop_batch(100, |_| ()).unwrap(),
        0,
        "nothing of a refused batch is pushed"
    );
}

#[test]
fn each_role_can_be_held_once() {
    let (seg, ring) = ring(4, 64);
    let tx = ring.producer().unwrap();
    let rx = ring.consumer().unwrap();
    let other = Ring::open(&seg, 0).unwrap();
    assert!(matches!(
        other.producer(),
        Err(ShmError::AlreadyClaimed { role: "producer" })
    ));
    assert!(matches!(
        other.consumer(),
        Err(ShmError::AlreadyClaimed { role: "consumer" })
    ));
    drop((tx, rx));
    assert!(other.producer().is_ok());
}

#[test]
fn a_reattached_consumer_continues_where_the_last_one_stopped() {
    let (_seg, ring) = ring(4, 64);
    let mut tx = ring.producer().unwrap();
    tx.push(b"a").unwrap();
    tx.push(b"b").unwrap();
    let mut rx = ring.consumer().unwrap();
    assert_eq!(rx.pop_with(|b| b.to_vec()).unwrap(), b"a");
    drop(rx);
    let mut rx = ring.consumer().unwrap();
    assert_eq!(rx.pop_with(|b| b.to_vec()).unwrap(), b"b");
}

#[test]
fn a_corrupt_length_poisons_the_consumer_instead_of_reading_out_of_bounds() {
    let (seg, ring) = ring(4, 64);
    let (mut tx, mut rx) = (ring.producer().unwrap(), ring.consumer().unwrap());
    tx.push(b"ok").unwrap();
    // Scribble a huge length into slot 0's length field, as a buggy peer could.
    let slot0 = ring_slots(&seg);
    // SAFETY: test-only write into our own mapping, inside slot 0's body.
    unsafe { slot0.add(8).cast::<u32>().write_unaligned(1 << 30) };
    let err = rx.pop_with(|_| ()).unwrap_err();
    assert!(matches!(
        err,
        PopError::Corrupt {
            len: 0x4000_0000,
            max: 48
        }
    ));
    tx.push(b"later").unwrap();
    assert_eq!(rx.pop_with(|_| ()), Err(err), "the consumer stays poisoned");
}

/// Start of the slot array of a ring at payload offset 0.
fn ring_slots(seg: &Segment) -> *mut u8 {
    let control = RingConfig::new(4, 64).unwrap().region_len() - 4 * 64;
    // SAFETY: the ring's region starts at payload offset 0 and spans control + slots.
    unsafe { seg.payload_ptr().as_ptr().add(control) }
}

#[test]
fn rings_at_bad_offsets_or_outside_the_segment_are_refused() {
    let cfg = RingConfig::new(4, 64).unwrap();
    let seg = segment(cfg.region_len());
    assert!(matches!(
        Ring::create(&seg, 64, cfg),
        Err(ShmError::Layout(_))
    ));
    let past = seg.payload_len().next_multiple_of(128);
    assert!(matches!(
        Ring::create(&seg, past, cfg),
        Err(ShmError::OutOfBounds { .. })
    ));
    // Nothing was initialised at offset 0, so its geometry is garbage (zeros).
    assert!(matches!(Ring::open(&seg, 0), Err(ShmError::BadMagic)));
    seg.mark_ready();
    assert!(matches!(
        Ring::create(&seg, 0, cfg),
        Err(ShmError::Layout(_))
    ));
}

#[test]
fn park_times_out_on_an_empty_ring() {
    let (_seg, ring) = ring(4, 64);
    let mut rx = ring.consumer().unwrap();
    assert_eq!(rx.park(Some(Duration::from_millis(5))), Park::TimedOut);
}

#[test]
fn a_push_wakes_a_parked_consumer() {
    let (_seg, ring) = ring(4, 64);
    let mut rx = ring.consumer().unwrap();
    let mut tx = ring.producer().unwrap();
    let sleeper = thread::spawn(move || {
        // Generous bound only so a broken wake cannot hang the test suite.
        let outcome = loop {
            match rx.park(Some(Duration::from_secs(30))) {
                Park::Woken => continue,
                other => break other,
            }
        };
        (outcome, rx.pop_with(|b| b.to_vec()).unwrap())
    });
    thread::sleep(Duration::from_millis(20));
    tx.push(b"wake").unwrap();
    let (outcome, msg) = sleeper.join().unwrap();
    assert_eq!(outcome, Park::Ready);
    assert_eq!(msg, b"wake");
}

#[test]
fn an_explicit_wake_is_never_lost_even_before_the_consumer_parks() {
    let (_seg, ring) = ring(4, 64);
    let mut rx = ring.consumer().unwrap();
    ring.wake_consumer();
    assert_eq!(rx.park(None), Park::Woken);
    let waker = ring.clone();
    let t = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        waker.wake_consumer();
    });
    assert_eq!(rx.park(Some(Duration::from_secs(30))), Park::Woken);
    t.join().unwrap();
}
