//! UDP sockets: datagrams both ways with send_to and Datagram events,
//! including empty and maximum-size ones.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use comm_uring::{ConnId, Event, LenPrefix, SendError, Uring, UringConfig};
use common::{pool, HangGuard};

/// Waits for one datagram on `conn`; `busy`: spinning with busy polling on
/// (the socket turns hot and is read with plain receives), else parking.
/// Also says whether the datagram came by a plain read.
fn recv_one(
    ring: &mut Uring<LenPrefix>,
    conn: ConnId,
    busy: bool,
) -> ((SocketAddr, Vec<u8>), bool) {
    let mut got = None;
    let mut plain = false;
    let guard = HangGuard::new("datagram");
    while got.is_none() {
        guard.check();
        ring.set_busy_poll(busy);
        ring.flush().unwrap();
        plain = ring.is_polled(conn);
        ring.poll(|ev| match ev {
            Event::Datagram {
                conn: c,
                from,
                bytes,
            } if c == conn => {
                assert!(got.is_none(), "one datagram at a time");
                got = Some((from, bytes.to_vec()));
            }
            other => panic!("unexpected {other:?}"),
        });
        if got.is_none() && !busy {
            ring.park(None, Duration::from_millis(2)).unwrap();
        }
    }
    (got.unwrap(), plain)
}

fn ping_pong(bind: &str, busy: bool) {
    let Ok(sa) = UdpSocket::bind(bind) else {
        eprintln!("skipping: cannot bind {bind}");
        return;
    };
    let sb = UdpSocket::bind(bind).unwrap();
    let (addr_a, addr_b) = (sa.local_addr().unwrap(), sb.local_addr().unwrap());
    let max = if addr_a.is_ipv4() { 65_507 } else { 65_527 };
    let mut ring = Uring::new(UringConfig::default(), LenPrefix).unwrap();
    let a = ring.add_datagram(sa).unwrap();
    let b = ring.add_datagram(sb).unwrap();
    let pool = pool(1 << 17, 31);
    for (i, len) in [0usize, 1, 1472, 9000, max - 1, max, 3, max]
        .into_iter()
        .enumerate()
    {
        let body = &pool[i..i + len];
        ring.send_to(a, addr_b, &[&body[..len / 2], &body[len / 2..]])
            .unwrap();
        let ((from, got), plain_b) = recv_one(&mut ring, b, busy);
        assert_eq!(from, addr_a);
        assert!(got == body, "datagram {i} of {len} bytes differs");
        ring.send_to(b, from, &[&got]).unwrap();
        let ((from, back), plain_a) = recv_one(&mut ring, a, busy);
        assert_eq!(from, addr_b);
        assert!(back == body);
        // Busy: both sockets turned hot with their first datagram.
        if i > 0 {
            assert_eq!((plain_a, plain_b), (busy, busy), "datagram {i}");
        }
    }
    assert_eq!(
        ring.send_to(a, addr_b, &[&vec![0u8; max + 1]]),
        Err(SendError::TooLarge)
    );
}

#[test]
fn datagrams_go_both_ways_over_ipv4() {
    ping_pong("127.0.0.1:0", false);
}

#[test]
fn datagrams_go_both_ways_over_ipv6() {
    ping_pong("[::1]:0", false);
}

#[test]
fn busy_polled_datagrams_go_both_ways_over_ipv4() {
    ping_pong("127.0.0.1:0", true);
}

#[test]
fn busy_polled_datagrams_go_both_ways_over_ipv6() {
    ping_pong("[::1]:0", true);
}

#[test]
fn a_burst_of_datagrams_arrives_whole() {
    let sa = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sb = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr_b = sb.local_addr().unwrap();
    let mut ring = Uring::new(UringConfig::default(), LenPrefix).unwrap();
    let a = ring.add_datagram(sa).unwrap();
    let b = ring.add_datagram(sb).unwrap();
    // Small enough to fit the default socket receive buffer all at once.
    let n = 100u32;
    for i in 0..n {
        ring.send_to(a, addr_b, &[&i.to_le_bytes(), &[i as u8; 100]])
            .unwrap();
    }
    let mut seen = vec![false; n as usize];
    let mut count = 0;
    let guard = HangGuard::new("burst");
    while count < n {
        guard.check();
        ring.flush().unwrap();
        ring.poll(|ev| match ev {
            Event::Datagram { conn, bytes, .. } => {
                assert_eq!(conn, b);
                assert_eq!(bytes.len(), 104);
                let i = u32::from_le_bytes(bytes[..4].try_into().unwrap());
                assert!(bytes[4..].iter().all(|&x| x == i as u8));
                assert!(!std::mem::replace(&mut seen[i as usize], true));
                count += 1;
            }
            other => panic!("unexpected {other:?}"),
        });
        ring.park(None, Duration::from_millis(1)).unwrap();
    }
    // Streams-only operations are refused on a datagram socket.
    // SAFETY: refused before anything is read.
    let zc = unsafe { ring.send_zc(a, b"h", std::ptr::null(), 0, 1) };
    assert_eq!(zc, Err(SendError::Unsupported));
}
