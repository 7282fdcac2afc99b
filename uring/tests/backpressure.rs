//! A peer that stops reading makes `send` say Full; once it reads again,
//! everything arrives, in order, nothing lost.

mod common;

use std::io::{ErrorKind, Read};
use std::time::Duration;

use comm_uring::{Event, LenPrefix, SendError, Uring, UringConfig};
use common::{check_record, pool, record_head, tcp_pair, HangGuard};

#[test]
fn a_stalled_peer_makes_send_full_and_nothing_is_lost_after_it_resumes() {
    let (ours, mut peer) = tcp_pair();
    let cfg = UringConfig {
        send_queue_limit: 256 << 10,
        ..UringConfig::default()
    };
    let mut ring = Uring::new(cfg, LenPrefix).unwrap();
    let conn = ring.add_stream(ours).unwrap();
    let pool = pool(1 << 20, 21);
    let len = 60_000;

    // Phase 1: the peer reads nothing. Socket buffers absorb a few MB, then
    // the queue fills up.
    let mut sent = 0u64;
    let guard = HangGuard::new("filling up");
    loop {
        guard.check();
        let off = (sent as usize * 4099) % (pool.len() - len);
        match ring.send(conn, &[&record_head(sent, off, len), &pool[off..off + len]]) {
            Ok(()) => sent += 1,
            Err(SendError::Full) => break,
            Err(e) => panic!("{e}"),
        }
        ring.flush().unwrap();
        ring.poll(|ev| panic!("unexpected {ev:?}"));
        assert!(sent < 100_000, "send never said Full");
    }
    assert!(ring.queued_bytes(conn) > 0);
    assert!(ring.queued_bytes(conn) <= 256 << 10);

    // Phase 2: the peer drains; we keep sending the same amount again.
    let total = sent * 2;
    peer.set_nonblocking(true).unwrap();
    let mut stream = Vec::new();
    let mut received = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    let guard = HangGuard::new("draining");
    while received < total {
        guard.check();
        while sent < total {
            let off = (sent as usize * 4099) % (pool.len() - len);
            match ring.send(conn, &[&record_head(sent, off, len), &pool[off..off + len]]) {
                Ok(()) => sent += 1,
                Err(SendError::Full) => break,
                Err(e) => panic!("{e}"),
            }
        }
        ring.flush().unwrap();
        ring.poll(|ev| panic!("unexpected {ev:?}"));
        match peer.read(&mut buf) {
            Ok(0) => panic!("stream ended early"),
            Ok(n) => stream.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                ring.park(None, Duration::from_millis(1)).unwrap()
            }
            Err(e) => panic!("{e}"),
        }
        let rec_len = common::META + len;
        while stream.len() >= rec_len {
            assert_eq!(check_record(&stream[..rec_len], &pool), received);
            received += 1;
            stream.drain(..rec_len);
        }
    }
    assert!(stream.is_empty());
    assert_eq!(ring.queued_bytes(conn), 0);
}

/// A paused stream is not read, so its sender is held back by TCP itself;
/// once resumed, every record arrives in order. Armed (`busy` false) and
/// busy-polled reads alike.
fn pausing_holds_the_sender_back(busy: bool) {
    let (a, b) = tcp_pair();
    let cfg = UringConfig {
        send_queue_limit: 256 << 10,
        ..UringConfig::default()
    };
    let mut ring = Uring::new(cfg, LenPrefix).unwrap();
    let tx = ring.add_stream(a).unwrap();
    let rx = ring.add_stream(b).unwrap();
    let pool = pool(1 << 20, 23);
    let len = 16 << 10;
    let (mut sent, mut received) = (0u64, 0u64);
    let send_one = |ring: &mut Uring<LenPrefix>, sent: &mut u64| {
        let off = (*sent as usize * 4099) % (pool.len() - len);
        let r = ring.send(tx, &[&record_head(*sent, off, len), &pool[off..off + len]]);
        match r {
            Ok(()) => *sent += 1,
            Err(SendError::Full) => {}
            Err(e) => panic!("{e}"),
        }
        r.is_ok()
    };
    let take = |ev: Event<'_>, received: &mut u64| match ev {
        Event::Record { conn, bytes } => {
            assert_eq!(conn, rx);
            assert_eq!(check_record(bytes, &pool), *received, "out of order");
            *received += 1;
        }
        other => panic!("unexpected {other:?}"),
    };
    let guard = HangGuard::new("pause");
    // Some traffic first, so that the receive is armed when pausing.
    ring.set_busy_poll(busy);
    while received < 10 {
        guard.check();
        if sent < 10 {
            send_one(&mut ring, &mut sent);
        }
        ring.flush().unwrap();
        ring.poll(|ev| take(ev, &mut received));
    }
    ring.pause_receive(rx, true);
    let mut full_passes = 0;
    while full_passes < 300 {
        guard.check();
        if send_one(&mut ring, &mut sent) {
            full_passes = 0;
        } else {
            full_passes += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
        ring.flush().unwrap();
        ring.poll(|ev| take(ev, &mut received));
        assert!(sent < 20_000, "the sender was never held back");
    }
    assert_eq!(received, 10, "a paused stream was read");
    ring.pause_receive(rx, false);
    while received < sent || ring.queued_bytes(tx) > 0 {
        guard.check();
        ring.flush().unwrap();
        if ring.poll(|ev| take(ev, &mut received)) == 0 && !busy {
            ring.park(None, Duration::from_millis(1)).unwrap();
        }
        ring.set_busy_poll(busy);
    }
    assert_eq!(received, sent);
}

#[test]
fn a_paused_stream_holds_its_sender_back() {
    pausing_holds_the_sender_back(false);
}

#[test]
fn a_paused_busy_polled_stream_holds_its_sender_back() {
    pausing_holds_the_sender_back(true);
}
