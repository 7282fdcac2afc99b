//! TCP streams through the ring: ordered, exactly-once records of every
//! size, split across receive buffers, in both directions at once.

mod common;

use std::time::Duration;

use comm_uring::{Event, LenPrefix, SendError, Uring, UringConfig};
use common::{check_record, pool, record_head, tcp_pair, HangGuard, Rng};

const POOL: usize = 4 << 20 | 64 << 10;

/// How `exchange` reads its stream.
#[derive(Clone, Copy)]
enum Reads {
    /// Armed multishot receives only.
    Armed,
    /// Busy polling, except while parked.
    Busy,
    /// Switching between the two every few passes, so that receives are
    /// cancelled and armed again while data streams in.
    Switching,
}

/// Sends `n` records with random sizes while receiving `n` from the peer,
/// checking order and every byte. Every 10,000th record is 4 MiB.
fn exchange(stream: std::net::TcpStream, n: u64, seed: u64, reads: Reads) {
    let cfg = UringConfig {
        recv_buf_len: 16 * 1024,
        recv_bufs: 64,
        max_record: 5 << 20,
        send_queue_limit: 1 << 20,
        ..UringConfig::default()
    };
    let mut ring = Uring::new(cfg, LenPrefix).unwrap();
    let conn = ring.add_stream(stream).unwrap();
    let pool = pool(POOL, 7);
    let mut sizes = Rng::new(seed);
    let (mut sent, mut received) = (0u64, 0u64);
    let mut pending: Option<(usize, usize)> = None;
    let guard = HangGuard::new("tcp exchange");
    let mut pass = 0u64;
    let mut plain = 0u64;
    while received < n || sent < n || ring.queued_bytes(conn) > 0 {
        guard.check();
        pass += 1;
        match reads {
            Reads::Armed => {}
            Reads::Busy => ring.set_busy_poll(true),
            Reads::Switching => ring.set_busy_poll(pass % 7 < 3),
        }
        while sent < n {
            let (off, len) = *pending.get_or_insert_with(|| {
                let len = if sent % 10_000 == 9_999 {
                    4 << 20
                } else {
                    // Log-uniform in 0..64 KiB: mostly small, some large.
                    let bits = sizes.below(17);
                    sizes.below(1 << bits) as usize
                };
                (sizes.below((POOL - len) as u64) as usize, len)
            });
            let head = record_head(sent, off, len);
            match ring.send(conn, &[&head, &pool[off..off + len]]) {
                Ok(()) => {
                    sent += 1;
                    pending = None;
                }
                Err(SendError::Full) => break,
                Err(e) => panic!("send: {e}"),
            }
        }
        ring.flush().unwrap();
        let polled = ring.is_polled(conn);
        let events = ring.poll(|ev| match ev {
            Event::Record { bytes, .. } => {
                assert_eq!(check_record(bytes, &pool), received, "out of order");
                received += 1;
                plain += u64::from(polled);
            }
            // The peer may finish and close while our last send's
            // completion is still to be reaped; it got everything by then.
            Event::Closed { error: None, .. } => {
                assert_eq!(received, n, "closed early");
                assert_eq!(sent, n, "closed early");
            }
            other => panic!("unexpected {other:?}"),
        });
        // Busy: spin, as a progress loop does (a park ends busy polling).
        if events == 0 && !matches!(reads, Reads::Busy) {
            ring.park(None, Duration::from_millis(1)).unwrap();
        }
    }
    // Most records come by plain reads when the peer keeps the stream busy;
    // on a loaded 2-core machine fewer do (a descheduled peer lets the socket
    // cool down), so the bar only proves the plain path is taken at all.
    if matches!(reads, Reads::Busy) {
        assert!(
            plain > n / 10,
            "only {plain} of {n} records came by plain reads"
        );
    }
}

#[test]
fn records_of_every_size_arrive_in_order_exactly_once_both_ways() {
    let (a, b) = tcp_pair();
    let n = 100_000;
    let peer = std::thread::spawn(move || exchange(b, n, 2, Reads::Armed));
    exchange(a, n, 1, Reads::Armed);
    peer.join().unwrap();
}

#[test]
fn busy_polled_streams_keep_every_record_in_order() {
    let (a, b) = tcp_pair();
    let n = 30_000;
    let peer = std::thread::spawn(move || exchange(b, n, 4, Reads::Busy));
    exchange(a, n, 3, Reads::Armed);
    peer.join().unwrap();
}

#[test]
fn switching_busy_polling_on_and_off_mid_stream_loses_nothing() {
    let (a, b) = tcp_pair();
    let n = 30_000;
    let peer = std::thread::spawn(move || exchange(b, n, 6, Reads::Switching));
    exchange(a, n, 5, Reads::Switching);
    peer.join().unwrap();
}

#[test]
fn records_straddling_tiny_receive_buffers_are_reassembled() {
    let (a, b) = tcp_pair();
    let cfg = UringConfig {
        recv_buf_len: 256,
        recv_bufs: 8,
        ..UringConfig::default()
    };
    let mut ring = Uring::new(cfg, LenPrefix).unwrap();
    let tx = ring.add_stream(a).unwrap();
    let rx = ring.add_stream(b).unwrap();
    let pool = pool(1 << 20, 3);
    let sizes = [
        0usize, 1, 200, 251, 252, 253, 1000, 100_000, 3, 0, 65_536, 7,
    ];
    for (seq, &len) in sizes.iter().enumerate() {
        let head = record_head(seq as u64, 100, len);
        ring.send(tx, &[&head, &pool[100..100 + len]]).unwrap();
    }
    let mut got = 0;
    let guard = HangGuard::new("tiny buffers");
    while got < sizes.len() {
        guard.check();
        ring.flush().unwrap();
        ring.poll(|ev| match ev {
            Event::Record { conn, bytes } => {
                assert_eq!(conn, rx);
                assert_eq!(check_record(bytes, &pool), got as u64);
                assert_eq!(bytes.len(), common::META + sizes[got]);
                got += 1;
            }
            other => panic!("unexpected {other:?}"),
        });
    }
}

#[test]
fn replies_can_be_queued_from_inside_poll() {
    let (a, b) = tcp_pair();
    let mut ring = Uring::new(UringConfig::default(), LenPrefix).unwrap();
    let client = ring.add_stream(a).unwrap();
    let server = ring.add_stream(b).unwrap();
    for i in 0..100u8 {
        ring.send(client, &[&LenPrefix::header(1), &[i]]).unwrap();
    }
    let mut echoed = Vec::new();
    let guard = HangGuard::new("echo");
    while echoed.len() < 100 {
        guard.check();
        ring.flush().unwrap();
        ring.poll_with(|out, ev| match ev {
            Event::Record { conn, bytes } if conn == server => out.send(server, &[bytes]).unwrap(),
            Event::Record { conn, bytes } if conn == client => echoed.push(bytes[4]),
            other => panic!("unexpected {other:?}"),
        });
    }
    assert_eq!(echoed, (0..100).collect::<Vec<u8>>());
}

/// Busy polling writes streams in turns, one queued segment each per turn:
/// sends queued alternately on two streams (as a link's lanes get them) go
/// out in the order they were queued, not one stream's backlog first.
#[test]
fn busy_flush_writes_streams_in_turns() {
    static BODY: [u8; 1000] = [5; 1000];
    let (a1, _b1) = tcp_pair();
    let (a2, _b2) = tcp_pair();
    let cfg = UringConfig {
        zero_copy_to_local_peers: false,
        ..UringConfig::default()
    };
    let mut ring = Uring::new(cfg, LenPrefix).unwrap();
    let x = ring.add_stream(a1).unwrap();
    let y = ring.add_stream(a2).unwrap();
    ring.set_busy_poll(true);
    for turn in 0..3 {
        for (conn, token) in [(x, turn), (y, 10 + turn)] {
            // SAFETY: a static outlives every send.
            unsafe { ring.send_zc(conn, &LenPrefix::header(1000), BODY.as_ptr(), 1000, token) }
                .unwrap();
        }
    }
    // One flush writes everything (the sockets take 6 KB at once); the
    // bodies are done in the order that their bytes went out.
    ring.flush().unwrap();
    let mut done = Vec::new();
    let guard = HangGuard::new("turns");
    while done.len() < 6 {
        guard.check();
        ring.poll(|ev| {
            if let Event::SendDone { token, .. } = ev {
                done.push(token);
            }
        });
    }
    assert_eq!(done, [0, 10, 1, 11, 2, 12]);
}
