//! No descriptor outlives its ring: sockets closed by the peer, by us, or
//! still open at drop, with sends and receives in flight. Alone in its test
//! binary so that no other test opens descriptors meanwhile.

mod common;

use std::io::Write;
use std::net::UdpSocket;
use std::time::Duration;

use comm_uring::{Event, LenPrefix, Uring, UringConfig};
use common::{fd_count, tcp_pair, HangGuard};

fn busy_ring_then_drop() {
    let mut ring = Uring::new(UringConfig::default(), LenPrefix).unwrap();
    let mut peers = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..4 {
        let (a, b) = tcp_pair();
        conns.push(ring.add_stream(a).unwrap());
        peers.push(b);
    }
    // Two ends of one pair both in the ring, with data in flight at drop.
    let (c, d) = tcp_pair();
    let c = ring.add_stream(c).unwrap();
    let _d = ring.add_stream(d).unwrap();
    let big = vec![3u8; 8 << 20];
    ring.send(c, &[&LenPrefix::header(1 << 20), &big[..1 << 20]])
        .unwrap();
    // SAFETY: `big` outlives the ring (declared before it).
    unsafe { ring.send_zc(c, &LenPrefix::header(2 << 20), big.as_ptr(), 2 << 20, 1) }.unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = udp.local_addr().unwrap();
    let u = ring.add_datagram(udp).unwrap();
    ring.send_to(u, to, &[b"self"]).unwrap();

    // One peer closes, one record arrives, we close another.
    peers[0].write_all(&LenPrefix::header(0)).unwrap();
    drop(peers.remove(1));
    ring.close(conns[2]);
    let (mut records, mut closed) = (0, 0);
    let guard = HangGuard::new("fd leak setup");
    while records < 1 || closed < 1 {
        guard.check();
        ring.flush().unwrap();
        ring.poll(|ev| match ev {
            Event::Record { .. } => records += 1,
            Event::Closed { error: None, .. } => closed += 1,
            _ => {}
        });
        ring.park(None, Duration::from_millis(1)).unwrap();
    }
    drop(ring);
    drop(big);
}

#[test]
fn dropping_a_busy_ring_leaves_no_descriptor_behind() {
    // Warm up whatever the process opens once (e.g. the allocator's files).
    busy_ring_then_drop();
    let before = fd_count();
    for _ in 0..5 {
        busy_ring_then_drop();
    }
    assert_eq!(fd_count(), before);
}
