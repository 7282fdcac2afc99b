//! How streams end: orderly close, reset, truncation, bad framing, and our
//! own close; never a hang or a panic.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::time::Duration;

use comm_uring::{ConnId, Event, LenPrefix, SendError, Uring, UringConfig};
use common::{tcp_pair, HangGuard};

/// Polls until `conn` is reported closed; returns the records before it and
/// the close error.
fn until_closed(
    ring: &mut Uring<LenPrefix>,
    conn: ConnId,
) -> (Vec<Vec<u8>>, Option<std::io::Error>) {
    let mut records = Vec::new();
    let mut closed = None;
    let guard = HangGuard::new("waiting for Closed");
    while closed.is_none() {
        guard.check();
        ring.flush().unwrap();
        ring.poll(|ev| match ev {
            Event::Record { conn: c, bytes } if c == conn => records.push(bytes.to_vec()),
            Event::Closed { conn: c, error } if c == conn => closed = Some(error),
            other => panic!("unexpected {other:?}"),
        });
        ring.park(None, Duration::from_millis(5)).unwrap();
    }
    (records, closed.unwrap())
}

fn set_linger_zero(s: &std::net::TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a live linger struct of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

#[test]
fn orderly_peer_close_reports_none_after_the_last_record() {
    let (mut peer, ours) = tcp_pair();
    let mut ring = Uring::new(UringConfig::default(), LenPrefix).unwrap();
    let conn = ring.add_stream(ours).unwrap();
    peer.write_all(&LenPrefix::header(2)).unwrap();
    peer.write_all(b"hi").unwrap();
    drop(peer);
    let (records, error) = until_closed(&mut ring, conn);
    assert_eq!(records, [b"\x06\0\0\0hi".to_vec()]);
    assert!(error.is_none(), "{error:?}");
    assert_eq!(ring.send(conn, &[b"x"]), Err(SendError::Closed));
}

#[test]
fn peer_reset_reports_an_error() {
    let (peer, ours) = tcp_pair();
    let mut ring = Uring::new(UringConfig::default(), LenPrefix).unwrap();
    let conn = ring.add_stream(ours).unwrap();
    ring.flush().unwrap();
    set_linger_zero(&peer);
    drop(peer);
    let (records, error) = until_closed(&mut ring, conn);
    assert!(records.is_empty());
    let error = error.expect("a reset is an error");
    assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}");
}

#[test]
fn reset_while_sending_reports_an_error_and_releases_zero_copy_buffers() {
    let (peer, ours) = tcp_pair();
    let mut ring = Uring::new(UringConfig::default(), LenPrefix).unwrap();
    let conn = ring.add_stream(ours).unwrap();
    let body = vec![5u8; 1 << 20];
    // SAFETY: `body` outlives the ring (declared before it is dropped,
    // and every SendDone is awaited below).
    unsafe {
        ring.send_zc(
            conn,
            &LenPrefix::header(body.len()),
            body.as_ptr(),
            body.len(),
            9,
        )
        .unwrap()
    };
    ring.send(conn, &[&[0u8; 100_000]]).unwrap();
    ring.flush().unwrap();
    set_linger_zero(&peer);
    drop(peer);
    let mut closed = false;
    let mut done = 0;
    let guard = HangGuard::new("reset while sending");
    while !closed || done == 0 {
        guard.check();
        ring.flush().unwrap();
        ring.poll(|ev| match ev {
            Event::Closed { error, .. } => {
                assert!(error.is_some());
                closed = true;
            }
            Event::SendDone { token, .. } => {
                assert_eq!(token, 9);
                done += 1;
            }
            other => panic!("unexpected {other:?}"),
        });
        ring.park(None, Duration::from_millis(5)).unwrap();
    }
    assert_eq!(done, 1);
}

#[test]
fn end_of_stream_inside_a_record_is_an_error() {
    let (mut peer, ours) = tcp_pair();
    let mut ring = Uring::new(UringConfig::default(), LenPrefix).unwrap();
    let conn = ring.add_stream(ours).unwrap();
    peer.write_all(&LenPrefix::header(10)).unwrap();
    peer.write_all(b"short").unwrap();
    drop(peer);
    let (records, error) = until_closed(&mut ring, conn);
    assert!(records.is_empty());
    assert_eq!(error.unwrap().kind(), ErrorKind::UnexpectedEof);
}

#[test]
fn bad_framing_closes_with_invalid_data() {
    for garbage in [&[1u8, 0, 0, 0][..], &[0xff, 0xff, 0xff, 0x7f, 1, 2]] {
        let (mut peer, ours) = tcp_pair();
        let cfg = UringConfig {
            max_record: 1 << 20,
            ..UringConfig::default()
        };
        let mut ring = Uring::new(cfg, LenPrefix).unwrap();
        let conn = ring.add_stream(ours).unwrap();
        peer.write_all(&LenPrefix::header(1)).unwrap();
        peer.write_all(b"k").unwrap();
        peer.write_all(garbage).unwrap();
        let (records, error) = until_closed(&mut ring, conn);
        assert_eq!(records.len(), 1);
        assert_eq!(error.unwrap().kind(), ErrorKind::InvalidData);
        // The ring closed its end: the peer sees the stream end.
        peer.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut buf = [0u8; 16];
        let n = peer.read(&mut buf);
        assert!(matches!(n, Ok(0)) || n.is_err(), "{n:?}");
    }
}

#[test]
fn our_close_ends_the_peers_stream_and_kills_the_id() {
    let (mut peer, ours) = tcp_pair();
    let mut ring = Uring::new(UringConfig::default(), LenPrefix).unwrap();
    let conn = ring.add_stream(ours).unwrap();
    ring.send(conn, &[&LenPrefix::header(1), b"z"]).unwrap();
    let guard = HangGuard::new("drain before close");
    while ring.queued_bytes(conn) > 0 {
        guard.check();
        ring.flush().unwrap();
        ring.poll(|ev| panic!("unexpected {ev:?}"));
    }
    ring.close(conn);
    assert_eq!(ring.send(conn, &[b"x"]), Err(SendError::Closed));
    ring.close(conn);
    // The socket goes away once its receive is cancelled.
    peer.set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let mut got = Vec::new();
    let guard = HangGuard::new("peer sees end of stream");
    loop {
        guard.check();
        ring.flush().unwrap();
        ring.poll(|ev| panic!("unexpected {ev:?}"));
        let mut buf = [0u8; 64];
        match peer.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(got, b"\x05\0\0\0z");
    // A new connection may reuse the slot but never the id.
    let (_p2, o2) = tcp_pair();
    let conn2 = ring.add_stream(o2).unwrap();
    assert_ne!(conn, conn2);
    assert_eq!(ring.send(conn, &[b"x"]), Err(SendError::Closed));
}

#[test]
fn closing_with_queued_zero_copy_sends_still_reports_each_once() {
    let (_peer, ours) = tcp_pair();
    let mut ring = Uring::new(UringConfig::default(), LenPrefix).unwrap();
    let conn = ring.add_stream(ours).unwrap();
    let body = vec![1u8; 4 << 20];
    for token in 0..4u64 {
        // SAFETY: `body` lives until after every SendDone below.
        unsafe {
            ring.send_zc(
                conn,
                &LenPrefix::header(512 << 10),
                body.as_ptr(),
                512 << 10,
                token,
            )
            .unwrap()
        };
    }
    ring.flush().unwrap();
    ring.close(conn);
    let mut done = Vec::new();
    let guard = HangGuard::new("SendDone after close");
    while done.len() < 4 {
        guard.check();
        ring.flush().unwrap();
        ring.poll(|ev| match ev {
            Event::SendDone { conn: c, token } => {
                assert_eq!(c, conn);
                done.push(token);
            }
            other => panic!("unexpected {other:?}"),
        });
        ring.park(None, Duration::from_millis(5)).unwrap();
    }
    done.sort();
    assert_eq!(done, [0, 1, 2, 3]);
    for _ in 0..10 {
        ring.flush().unwrap();
        ring.poll(|ev| panic!("unexpected {ev:?}"));
    }
}

#[test]
fn dropping_the_ring_with_a_stalled_peer_returns() {
    let (_peer, ours) = tcp_pair();
    let mut ring = Uring::new(UringConfig::default(), LenPrefix).unwrap();
    let conn = ring.add_stream(ours).unwrap();
    let body = vec![2u8; 256 << 10];
    let guard = HangGuard::new("stalling");
    let mut token = 0;
    loop {
        guard.check();
        // SAFETY: `body` outlives the ring (declared before it).
        match unsafe {
            ring.send_zc(
                conn,
                &LenPrefix::header(body.len()),
                body.as_ptr(),
                body.len(),
                token,
            )
        } {
            Ok(()) => token += 1,
            Err(SendError::Full) => break,
            Err(e) => panic!("{e}"),
        }
        ring.flush().unwrap();
        ring.poll(|_| {});
    }
    // Some sends were accepted by the socket but never acknowledged, others
    // are still queued: drop must neither hang nor free pages in use.
    drop(ring);
}

#[test]
fn dropping_the_ring_with_unacknowledged_zero_copy_data_returns() {
    let (_peer, ours) = tcp_pair();
    let mut ring = Uring::new(UringConfig::default(), LenPrefix).unwrap();
    let conn = ring.add_stream(ours).unwrap();
    let body = vec![2u8; 64 << 10];
    // More than the peer's initial window: the socket accepts it all, the
    // peer (which never reads) acknowledges only part of it.
    for token in 0..8 {
        // SAFETY: `body` outlives the ring (declared before it).
        unsafe {
            ring.send_zc(
                conn,
                &LenPrefix::header(body.len()),
                body.as_ptr(),
                body.len(),
                token,
            )
        }
        .unwrap();
    }
    let mut done = 0;
    let guard = HangGuard::new("queue drains into the socket");
    while ring.queued_bytes(conn) > 0 {
        guard.check();
        ring.flush().unwrap();
        ring.poll(|ev| match ev {
            Event::SendDone { .. } => done += 1,
            other => panic!("unexpected {other:?}"),
        });
        ring.park(None, Duration::from_millis(1)).unwrap();
    }
    assert!(
        done < 8,
        "the peer acknowledged everything; nothing is tested"
    );
    drop(ring);
}
