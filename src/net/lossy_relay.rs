//! Reliable UDP through a real lossy relay: two UDP sockets on one ring,
//! each connected to a relay thread that drops, duplicates, reorders and
//! delays the datagrams between them. The shard's own code carries the
//! messages (`NetOut` staging and timers, the ring, `on_datagram`,
//! `next_message`); every message must arrive exactly once, in order,
//! byte-identical, both ways at once.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use comm_uring::{Event, Uring, UringConfig};

use super::{FrameFraming, NetOut, UdpSetup};
use crate::UdpMode;

/// What the relay did, so that the test knows it was really lossy.
#[derive(Default)]
struct Mischief {
    forwarded: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// Forwards what arrives on `from` to `to` (sent from `via`, the address
/// the receiver is connected to), misbehaving on the way: 10 % dropped,
/// 10 % sent twice, 20 % held back until a later datagram has gone.
fn forward(
    from: &UdpSocket,
    via: &UdpSocket,
    to: SocketAddr,
    rng: &mut Rng,
    held: &mut Vec<Vec<u8>>,
    m: &Mischief,
) {
    let mut buf = [0u8; 65_536];
    while let Ok(n) = from.recv(&mut buf) {
        let d = &buf[..n];
        match rng.below(10) {
            0 => {
                m.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            1 => {
                let _ = via.send_to(d, to);
                m.duplicated.fetch_add(1, Ordering::Relaxed);
            }
            2 | 3 => {
                held.push(d.to_vec());
                m.reordered.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            _ => {}
        }
        let _ = via.send_to(d, to);
        m.forwarded.fetch_add(1, Ordering::Relaxed);
        // What was held back goes after a newer datagram, now and then.
        if !held.is_empty() && rng.below(2) == 0 {
            for late in held.drain(..) {
                let _ = via.send_to(&late, to);
            }
        }
    }
}

/// Runs the relay until `stop`: `r1` faces `a`, `r2` faces `b`.
fn relay(
    r1: UdpSocket,
    r2: UdpSocket,
    a: SocketAddr,
    b: SocketAddr,
    stop: Arc<AtomicBool>,
    m: Arc<Mischief>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        r1.set_nonblocking(true).unwrap();
        r2.set_nonblocking(true).unwrap();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut held_ab, mut held_ba) = (Vec::new(), Vec::new());
        while !stop.load(Ordering::Relaxed) {
            forward(&r1, &r2, b, &mut rng, &mut held_ab, &m);
            forward(&r2, &r1, a, &mut rng, &mut held_ba, &m);
            std::thread::sleep(Duration::from_micros(50));
        }
    })
}

/// Message `seq`: its number, then bytes derived from it; sizes from 0 to
/// several datagrams (fragmented and put back together).
fn message(seq: u64) -> Vec<u8> {
    let len = [0usize, 1, 100, 1400, 3000, 9000][(seq % 6) as usize];
    let mut m = seq.to_le_bytes().to_vec();
    m.extend((0..len).map(|i| (seq as usize).wrapping_mul(31).wrapping_add(i) as u8));
    m
}

#[test]
fn reliable_udp_through_a_lossy_relay_delivers_exactly_once_in_order() {
    let bind = || UdpSocket::bind("127.0.0.1:0").unwrap();
    let (sa, sb, r1, r2) = (bind(), bind(), bind(), bind());
    let (addr_a, addr_b) = (sa.local_addr().unwrap(), sb.local_addr().unwrap());
    sa.connect(r1.local_addr().unwrap()).unwrap();
    sb.connect(r2.local_addr().unwrap()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mischief = Arc::new(Mischief::default());
    let relay = relay(
        r1,
        r2,
        addr_a,
        addr_b,
        Arc::clone(&stop),
        Arc::clone(&mischief),
    );

    let max = 1 << 16;
    let mut ring = Uring::new(UringConfig::default(), FrameFraming { max }).unwrap();
    let a = ring.add_datagram(sa).unwrap();
    let b = ring.add_datagram(sb).unwrap();
    let mut out = NetOut::new(1 << 20);
    let setup = |initial_seq, peer_initial_seq| UdpSetup {
        mode: UdpMode::Reliable,
        initial_seq,
        peer_initial_seq,
    };
    out.add_udp(a, setup(7, 0xffff_fff0), max as usize).unwrap();
    out.add_udp(b, setup(0xffff_fff0, 7), max as usize).unwrap();

    let n = 1_500u64;
    let (mut sent, mut got) = ([0u64; 2], [0u64; 2]);
    let ends = [(a, b), (b, a)];
    let mut scratch = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while got != [n, n] {
        assert!(
            Instant::now() < deadline,
            "stuck at {got:?} of {n} (sent {sent:?})"
        );
        for (i, &(from, _)) in ends.iter().enumerate() {
            while sent[i] < n {
                let m = message(sent[i]);
                if out.frame(from, &m[..8], &m[8..], false).is_err() {
                    break; // window full: later
                }
                sent[i] += 1;
            }
        }
        out.flush(&mut ring, |_| {}, |c| panic!("{c:?} declared dead"));
        ring.flush().unwrap();
        ring.poll(|ev| match ev {
            Event::Datagram { conn, bytes, .. } => out.on_datagram(conn, bytes).unwrap(),
            other => panic!("unexpected {other:?}"),
        });
        for (i, &(_, to)) in ends.iter().enumerate() {
            while out.next_message(to, &mut scratch) {
                assert_eq!(scratch, message(got[i]), "message {} of side {i}", got[i]);
                got[i] += 1;
            }
        }
        std::thread::sleep(Duration::from_micros(20));
    }
    stop.store(true, Ordering::Relaxed);
    relay.join().unwrap();
    let m = &*mischief;
    let (fw, dr, du, re) = (
        m.forwarded.load(Ordering::Relaxed),
        m.dropped.load(Ordering::Relaxed),
        m.duplicated.load(Ordering::Relaxed),
        m.reordered.load(Ordering::Relaxed),
    );
    assert!(
        dr > 50 && du > 50 && re > 50,
        "the relay was not lossy: {fw} forwarded, {dr} dropped, {du} duplicated, {re} reordered"
    );
    // The associations' figures, as the engine's link stats sum them, show
    // the repairs; a forgotten association hands over its last figures.
    let mut seen = Vec::new();
    out.each_reliable_stats(|conn, s| seen.push((conn, *s)));
    assert_eq!(seen.len(), 2);
    let repairs: u64 = seen.iter().map(|(_, s)| s.retransmits).sum();
    let duplicates: u64 = seen.iter().map(|(_, s)| s.duplicates).sum();
    assert!(
        repairs > 0 && duplicates > 0 && seen.iter().all(|(_, s)| s.srtt_ns > 0),
        "figures after {dr} drops and {du} duplicates: {seen:?}"
    );
    let of_a = seen
        .iter()
        .find(|(c, _)| *c == a)
        .map(|(_, s)| s.retransmits);
    assert_eq!(out.forget(a).map(|s| s.retransmits), of_a);
    assert!(out.forget(a).is_none(), "forgotten twice");
}
