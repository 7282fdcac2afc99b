//! Two real processes talk through rings in one shared segment: a million
//! checksummed messages of mixed sizes each way, and park/wake across processes.

mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use comm::shm::{Consumer, Park, PopError, Producer, PushError, Ring, RingConfig, Segment};
use common::{check_message, is_role, spawn_role, unique_name, write_message};

const MESSAGES: u64 = 1_000_000;
const SEGMENT_ENV: &str = "COMM_TEST_SEGMENT";
const PARENT_SALT: u64 = 0x1111;
const CHILD_SALT: u64 = 0x2222;

fn config() -> RingConfig {
    RingConfig::new(1024, 256).unwrap()
}

/// Offsets of the parent-to-child and child-to-parent rings.
fn offsets() -> (usize, usize) {
    (0, config().region_len().next_multiple_of(128))
}

/// Creates the segment with both rings, ready for the child to open.
fn create_segment(tag: &str) -> Arc<Segment> {
    let (down, up) = offsets();
    let seg = Arc::new(Segment::create(&unique_name(tag), up + config().region_len()).unwrap());
    Ring::create(&seg, down, config()).unwrap();
    Ring::create(&seg, up, config()).unwrap();
    seg.mark_ready();
    seg
}

/// Opens the segment named by `SEGMENT_ENV` (in a child) and attaches to its
/// rings the other way round from the parent.
fn child_side() -> (Arc<Segment>, Producer, Consumer) {
    let seg = Arc::new(Segment::open(&std::env::var(SEGMENT_ENV).unwrap()).unwrap());
    let (down, up) = offsets();
    let rx = Ring::open(&seg, down).unwrap().consumer().unwrap();
    let tx = Ring::open(&seg, up).unwrap().producer().unwrap();
    (seg, tx, rx)
}

/// Creates the segment (tagged `tag`) and attaches as the parent.
fn parent_side(tag: &str) -> (Arc<Segment>, Producer, Consumer) {
    let seg = create_segment(tag);
    let (down, up) = offsets();
    let tx = Ring::open(&seg, down).unwrap().producer().unwrap();
    let rx = Ring::open(&seg, up).unwrap().consumer().unwrap();
    (seg, tx, rx)
}

/// Sends `MESSAGES` (salted with `salt`) and receives as many (salted with
/// `peer_salt`), interleaved, parking briefly when neither makes progress.
/// `peer_alive` is asked now and then, so a dead peer fails the test instead of hanging it.
fn exchange(
    tx: &mut Producer,
    rx: &mut Consumer,
    salt: u64,
    peer_salt: u64,
    mut peer_alive: impl FnMut() -> bool,
) {
    let (mut sent, mut received) = (0u64, 0u64);
    let mut idle_rounds = 0u32;
    while sent < MESSAGES || received < MESSAGES {
        let mut progress = false;
        while sent < MESSAGES {
            match tx.push_with(|area| write_message(sent, salt, area, 16)) {
                Ok(_) => {
                    sent += 1;
                    progress = true;
                }
                Err(PushError::WouldBlock) => break,
                Err(e) => panic!("push: {e}"),
            }
            if sent % 64 == 0 {
                break;
            }
        }
        let before = received;
        match rx.pop_batch(64, |bytes| {
            check_message(bytes, received);
            let mut regenerated = vec![0u8; bytes.len()];
            let len = write_message(received, peer_salt, &mut regenerated, bytes.len());
            assert_eq!(len, bytes.len(), "message {received} has the wrong length");
            received += 1;
        }) {
            Ok(_) | Err(PopError::Empty) => {}
            Err(e) => panic!("pop: {e}"),
        }
        progress |= received > before;
        if progress {
            idle_rounds = 0;
        } else {
            idle_rounds += 1;
            if idle_rounds % 1024 == 0 {
                assert!(
                    peer_alive(),
                    "peer process died after {sent} sent, {received} received"
                );
                rx.park(Some(Duration::from_millis(1)));
            }
        }
    }
}

#[test]
fn two_processes_exchange_a_million_checksummed_messages_each_way() {
    let (seg, mut tx, mut rx) = parent_side("exchange");
    let mut child = spawn_role("role_exchange", &[(SEGMENT_ENV, seg.name())], Stdio::null());
    exchange(&mut tx, &mut rx, PARENT_SALT, CHILD_SALT, || {
        child.try_wait().expect("poll child").is_none()
    });
    assert!(child.wait().unwrap().success(), "child failed");
    assert_eq!(
        rx.pop_with(|_| ()),
        Err(PopError::Empty),
        "no extra messages"
    );
    let path = seg.path().to_owned();
    drop((tx, rx));
    drop(seg);
    assert!(!path.exists(), "{} left behind", path.display());
}

#[test]
#[ignore = "child process role of two_processes_exchange_a_million_checksummed_messages_each_way"]
fn role_exchange() {
    if !is_role("role_exchange") {
        return;
    }
    let (_seg, mut tx, mut rx) = child_side();
    let parent = std::os::unix::process::parent_id();
    exchange(&mut tx, &mut rx, CHILD_SALT, PARENT_SALT, || {
        std::os::unix::process::parent_id() == parent
    });
}

const ROUNDS: u64 = 200;

#[test]
fn a_parked_consumer_in_another_process_is_woken_by_every_push() {
    let (seg, mut tx, mut rx) = parent_side("park");
    let mut child = spawn_role("role_park", &[(SEGMENT_ENV, seg.name())], Stdio::null());
    for round in 0..ROUNDS {
        // Vary the moment of the push relative to the child's parking.
        std::thread::sleep(Duration::from_micros((round * 37) % 500));
        tx.push(&round.to_le_bytes()).unwrap();
        loop {
            match rx.park(Some(Duration::from_secs(30))) {
                Park::Ready => break,
                Park::Woken => continue,
                Park::TimedOut => panic!("no answer to round {round}"),
            }
        }
        let echoed = rx
            .pop_with(|b| u64::from_le_bytes(b.try_into().unwrap()))
            .unwrap();
        assert_eq!(echoed, round);
    }
    assert!(child.wait().unwrap().success(), "child failed");
}

#[test]
#[ignore = "child process role of a_parked_consumer_in_another_process_is_woken_by_every_push"]
fn role_park() {
    if !is_role("role_park") {
        return;
    }
    let (_seg, mut tx, mut rx) = child_side();
    for round in 0..ROUNDS {
        // Always park: a lost wake-up shows up as a timeout here.
        let outcome = loop {
            match rx.park(Some(Duration::from_secs(30))) {
                Park::Woken => continue,
                other => break other,
            }
        };
        assert_eq!(outcome, Park::Ready, "round {round}: wake-up lost");
        let got = rx
            .pop_with(|b| u64::from_le_bytes(b.try_into().unwrap()))
            .unwrap();
        assert_eq!(got, round);
        tx.push(&got.to_le_bytes()).unwrap();
    }
}
