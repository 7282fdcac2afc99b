//! The transport conformance suite: the same tests run over every transport
//! (shared memory, TCP, reliable UDP): ordering, sizes from 0 bytes to
//! 16 MiB, backpressure with `WouldBlock`, peer loss, and shutdown while
//! sending. Each test forces its transport with `Transports::only`. The
//! suite also runs over a transport the application brings: the
//! Unix-domain-socket transport of `examples/uds_transport.rs`, and over
//! TCP and UDP once more with progress threads that have descriptor tables
//! of their own (`EngineBuilder::private_fd_table`).

#[allow(dead_code)]
#[path = "../examples/uds_transport.rs"]
mod uds;

use std::time::{Duration, Instant};

use comm::{
    Buf, Endpoint, Engine, Error, PeerId, PoolConfig, SizeClass, TransportKind, Transports,
};

const BIG: usize = 16 << 20;

fn pool() -> PoolConfig {
    PoolConfig::new(vec![
        SizeClass {
            size: 256,
            count: 1024,
        },
        SizeClass {
            size: 64 << 10,
            count: 64,
        },
        SizeClass {
            size: 1 << 20,
            count: 8,
        },
        SizeClass {
            size: BIG,
            count: 3,
        },
    ])
    .unwrap()
}

thread_local! {
    /// Whether this test's engines give their progress threads descriptor
    /// tables of their own (`EngineBuilder::private_fd_table`).
    static PRIVATE_FDS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn engine(name: &str, core: usize, kind: TransportKind) -> Engine {
    let private = PRIVATE_FDS.with(std::cell::Cell::get);
    let builder = Engine::builder(name);
    // Custom transports and private tables do not go together.
    let builder = if private {
        builder
    } else {
        builder.transport(std::sync::Arc::new(uds::UdsTransport::new()))
    };
    builder
        .private_fd_table(private)
        .cores(&[core])
        .transports(Transports::only([kind]))
        .pool(pool())
        .start()
        .unwrap()
}

/// Two engines of one domain, a receiving endpoint and a connected sender.
struct Pair {
    rx_engine: Engine,
    tx_engine: Engine,
    rx: Endpoint,
    tx: Endpoint,
    to_rx: PeerId,
}

fn pair(tag: &str, kind: TransportKind) -> Pair {
    let name = format!("conf-{tag}-{}-{}", kind, std::process::id());
    let rx_engine = engine(&name, 1, kind);
    let tx_engine = engine(&name, 0, kind);
    let rx = rx_engine.endpoint("rx").unwrap();
    let tx = tx_engine.endpoint("tx").unwrap();
    let to_rx = tx.connect(&rx.addr()).unwrap();
    assert_eq!(tx.transport(to_rx).unwrap(), kind);
    Pair {
        rx_engine,
        tx_engine,
        rx,
        tx,
        to_rx,
    }
}

/// Reads `n` messages and checks that they are 0..n, in order.
fn read_in_order(rx: &Endpoint, n: u64) {
    for seq in 0..n {
        let msg = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("message {seq} of {n} lost: {e}"));
        check(seq, msg.data());
    }
}

impl Pair {
    fn close(self) {
        drop((self.rx, self.tx));
        self.tx_engine.shutdown().unwrap();
        self.rx_engine.shutdown().unwrap();
    }
}

fn fill(seq: u64, buf: &mut [u8]) {
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in buf.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
}

fn check(seq: u64, data: &[u8]) {
    let mut want = vec![0u8; data.len()];
    fill(seq, &mut want);
    assert!(want == data, "message {seq}: {} bytes differ", data.len());
}

/// Sends, retrying while the engine pushes back or the pool is empty.
fn send_retrying(ep: &Endpoint, peer: PeerId, mut buf: Buf, deadline: Instant) {
    loop {
        match ep.send(peer, buf) {
            Ok(()) => return,
            Err(Error::WouldBlock(b)) => buf = b,
            Err(e) => panic!("send: {e}"),
        }
        assert!(Instant::now() < deadline, "send stalled");
        std::thread::yield_now();
    }
}

fn alloc_retrying(ep: &Endpoint, len: usize, deadline: Instant) -> Buf {
    loop {
        match ep.alloc(len) {
            Ok(b) => return b,
            Err(Error::NoBuffers { .. }) => {
                assert!(Instant::now() < deadline, "no buffer came back");
                std::thread::yield_now();
            }
            Err(e) => panic!("alloc: {e}"),
        }
    }
}

/// Sends `sizes` in order from another thread while this one receives and
/// checks them.
fn exchange(p: Pair, sizes: Vec<usize>) -> Pair {
    let deadline = Instant::now() + Duration::from_secs(120);
    let Pair {
        rx_engine,
        tx_engine,
        rx,
        tx,
        to_rx,
    } = p;
    let n = sizes.len();
    let expect = sizes.clone();
    // An endpoint is used by one thread at a time: the sender moves there.
    let sender = std::thread::spawn(move || {
        for (seq, &len) in sizes.iter().enumerate() {
            let mut buf = alloc_retrying(&tx, len, deadline);
            fill(seq as u64, &mut buf);
            send_retrying(&tx, to_rx, buf, deadline);
        }
        tx
    });
    for (seq, &len) in expect.iter().enumerate().take(n) {
        let msg = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("message {seq} of {n} lost: {e}"));
        assert_eq!(msg.data().len(), len, "message {seq}");
        check(seq as u64, msg.data());
    }
    let tx = sender.join().unwrap();
    assert!(rx.try_recv().is_none(), "a message too many");
    Pair {
        rx_engine,
        tx_engine,
        rx,
        tx,
        to_rx,
    }
}

fn ordering(kind: TransportKind) {
    let p = pair("order", kind);
    let sizes: Vec<usize> = (0..20_000).map(|i| 1 + (i * 7919) % 300).collect();
    exchange(p, sizes).close();
}

fn sizes(kind: TransportKind) {
    let p = pair("sizes", kind);
    let sizes = vec![
        0,
        1,
        7,
        64,
        255,
        448,
        449,
        1000,
        4096,
        65_536,
        100_000,
        1 << 20,
        3 << 20,
        BIG,
    ];
    exchange(p, sizes).close();
}

fn backpressure(kind: TransportKind) {
    let p = pair("bp", kind);
    let deadline = Instant::now() + Duration::from_secs(60);
    // Nobody reads: sends must eventually push back, returning the buffer.
    let mut sent = 0u64;
    let returned = loop {
        assert!(Instant::now() < deadline, "no push-back after {sent} sends");
        let Ok(mut buf) = p.tx.alloc(200) else {
            break None; // the pool ran dry first: also a push-back
        };
        fill(sent, &mut buf);
        match p.tx.send(p.to_rx, buf) {
            Ok(()) => sent += 1,
            Err(Error::WouldBlock(buf)) => break Some(buf),
            Err(e) => panic!("send: {e}"),
        }
    };
    if let Some(buf) = returned {
        assert_eq!(buf.len(), 200, "the buffer comes back whole");
    }
    // Now read everything: nothing was lost.
    read_in_order(&p.rx, sent);
    p.close();
}

fn peer_loss(kind: TransportKind) {
    let p = pair("loss", kind);
    let mut buf = p.tx.alloc(8).unwrap();
    fill(0, &mut buf);
    p.tx.send(p.to_rx, buf).unwrap();
    check(
        0,
        p.rx.recv_timeout(Duration::from_secs(10)).unwrap().data(),
    );
    let Pair {
        rx_engine,
        tx_engine,
        rx,
        tx,
        to_rx,
    } = p;
    drop(rx);
    rx_engine.shutdown().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "the lost peer was never noticed");
        let Ok(buf) = tx.alloc(8) else {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        };
        match tx.send(to_rx, buf) {
            Err(Error::PeerLost(peer)) => {
                assert_eq!(peer, to_rx);
                break;
            }
            Ok(()) | Err(Error::WouldBlock(_)) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("send: {e}"),
        }
    }
    drop(tx);
    tx_engine.shutdown().unwrap();
}

fn shutdown_while_sending(kind: TransportKind) {
    let p = pair("stop", kind);
    let Pair {
        rx_engine,
        tx_engine,
        rx,
        tx,
        to_rx,
    } = p;
    // Sends messages numbered without gaps (a refused one is sent again)
    // until the engine says it is closed.
    let sender = std::thread::spawn(move || {
        let mut seq = 0u64;
        let give_up = Instant::now() + Duration::from_secs(60);
        while seq < 1_000_000 && Instant::now() < give_up {
            let mut buf = match tx.alloc(64) {
                Ok(b) => b,
                Err(Error::Closed) => return true,
                Err(_) => {
                    std::thread::yield_now();
                    continue;
                }
            };
            fill(seq, &mut buf);
            loop {
                match tx.send(to_rx, buf) {
                    Ok(()) => break,
                    Err(Error::WouldBlock(b)) => {
                        buf = b;
                        std::thread::yield_now();
                    }
                    Err(Error::Closed) => return true,
                    Err(e) => panic!("send: {e}"),
                }
            }
            seq += 1;
        }
        false
    });
    std::thread::sleep(Duration::from_millis(50));
    tx_engine.shutdown().unwrap();
    assert!(
        sender.join().unwrap(),
        "sends after shutdown fail with Closed"
    );
    // What arrived arrived in order, exactly once.
    let mut seq = 0;
    while let Ok(msg) = rx.recv_timeout(Duration::from_millis(500)) {
        check(seq, msg.data());
        seq += 1;
    }
    drop(rx);
    rx_engine.shutdown().unwrap();
}

macro_rules! conformance {
    ($transport:ident, $kind:expr) => {
        conformance!($transport, $kind, false);
    };
    ($transport:ident, $kind:expr, $private_fds:expr) => {
        mod $transport {
            use super::*;

            fn via() -> TransportKind {
                PRIVATE_FDS.with(|p| p.set($private_fds));
                $kind
            }

            #[test]
            fn delivers_in_order_exactly_once() {
                ordering(via());
            }

            #[test]
            fn carries_every_size_from_0_bytes_to_16_mib() {
                sizes(via());
            }

            #[test]
            fn pushes_back_with_would_block_and_loses_nothing() {
                backpressure(via());
            }

            #[test]
            fn reports_a_lost_peer() {
                peer_loss(via());
            }

            #[test]
            fn shuts_down_while_sending_without_hanging() {
                shutdown_while_sending(via());
            }
        }
    };
}

conformance!(shm, TransportKind::Shm);
conformance!(tcp, TransportKind::Tcp);
conformance!(udp, TransportKind::Udp);
conformance!(custom_uds, TransportKind::Custom("uds"));
conformance!(tcp_private_fd_table, TransportKind::Tcp, true);
conformance!(udp_private_fd_table, TransportKind::Udp, true);

/// Over TCP (and a custom transport), a receiver that reads nothing holds
/// its sender back through the transport's own flow control: the receiving
/// engine stops reading the connection rather than keeping frames aside
/// without bound. A sender retrying for two seconds gets no further than
/// the kernel's buffers allow.
#[test]
fn tcp_a_stalled_receiver_holds_the_sender_back_within_the_socket_buffers() {
    held_back(TransportKind::Tcp);
}

#[test]
fn custom_uds_a_stalled_receiver_holds_the_sender_back_within_the_socket_buffers() {
    held_back(TransportKind::Custom("uds"));
}

fn held_back(kind: TransportKind) {
    let p = pair("held", kind);
    let until = Instant::now() + Duration::from_secs(2);
    let mut sent = 0u64;
    while Instant::now() < until {
        let Ok(mut buf) = p.tx.alloc(200) else {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        };
        fill(sent, &mut buf);
        match p.tx.send(p.to_rx, buf) {
            Ok(()) => sent += 1,
            Err(Error::WouldBlock(_)) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("send: {e}"),
        }
    }
    // Socket buffers here hold a few MB: some tens of thousands of these.
    assert!(
        sent < 250_000,
        "{sent} messages got through to a stalled receiver"
    );
    read_in_order(&p.rx, sent);
    p.close();
}

/// Sizes that mix small messages with ones large enough to move to the next
/// TCP lane (256 KiB and up), in an irregular order.
fn lane_mix(n: usize) -> Vec<usize> {
    (0..n)
        .map(|i| match (i * 7 + i / 3) % 6 {
            0 => 256 << 10,
            1 => 1 + i % 300,
            2 => (1 << 20) - i,
            3 => 65_536,
            4 => 17,
            _ => (300 << 10) + i,
        })
        .collect()
}

/// An engine's count of lane moves once its counters show `sent` messages
/// sent (the progress thread publishes them a moment after the sends).
fn lane_switches(engine: &Engine, sent: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let links = engine.stats().links;
        let done = links.iter().map(|l| l.sent_msgs).sum::<u64>() >= sent;
        if done || Instant::now() > deadline {
            return links.iter().map(|l| l.lane_switches).sum();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Over TCP, large messages move to the link's next lane (connection) when
/// it has room, small ones stay where they are; the receiver follows, and
/// all arrive in order, exactly once.
#[test]
fn tcp_large_messages_take_turns_on_the_lanes_in_order() {
    let sizes = lane_mix(300);
    let n = sizes.len() as u64;
    let large = sizes.iter().filter(|&&s| s >= 256 << 10).count() as u64;
    let p = exchange(pair("lanes", TransportKind::Tcp), sizes);
    let moves = lane_switches(&p.tx_engine, n);
    assert!(
        (1..=large).contains(&moves),
        "{moves} lane moves for {large} large messages"
    );
    assert_eq!(
        lane_switches(&p.rx_engine, 0),
        0,
        "the receiver sent nothing"
    );
    p.close();
}

/// A receiver that reads nothing for a while keeps records back on the lane
/// it reads and leaves the other lane unread; once it reads again, every
/// message arrives in order.
#[test]
fn tcp_lanes_keep_order_behind_a_stalled_receiver() {
    let p = pair("lanes-held", TransportKind::Tcp);
    let sizes = lane_mix(200);
    let n = sizes.len();
    let expect = sizes.clone();
    let (tx, to_rx) = (p.tx, p.to_rx);
    let deadline = Instant::now() + Duration::from_secs(120);
    let sender = std::thread::spawn(move || {
        for (seq, &len) in sizes.iter().enumerate() {
            let mut buf = alloc_retrying(&tx, len, deadline);
            fill(seq as u64, &mut buf);
            send_retrying(&tx, to_rx, buf, deadline);
        }
        tx
    });
    std::thread::sleep(Duration::from_secs(1));
    for (seq, &len) in expect.iter().enumerate() {
        let msg =
            p.rx.recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("message {seq} of {n} lost: {e}"));
        assert_eq!(msg.data().len(), len, "message {seq}");
        check(seq as u64, msg.data());
    }
    let tx = sender.join().unwrap();
    assert!(p.rx.try_recv().is_none(), "a message too many");
    drop((p.rx, tx));
    p.tx_engine.shutdown().unwrap();
    p.rx_engine.shutdown().unwrap();
}

/// The link's `reliable` figures once the sender's counters show `sent`
/// messages (and, with `rtt`, a measured round trip): they are published a
/// moment after the fact.
fn reliable_figures(engine: &Engine, sent: u64, rtt: bool) -> comm::ReliableLinkStats {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let link = engine.stats().links.remove(0);
        let done = link.sent_msgs >= sent && (!rtt || link.reliable.srtt_ns > 0);
        if done || Instant::now() > deadline {
            return link.reliable;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A reliable UDP link reports its protocol's figures in `Engine::stats`
/// (here, on a loopback that loses nothing, a measured round trip; the
/// repair counts are checked through a lossy relay in `src/net`). Other
/// transports report none.
#[test]
fn reliable_udp_links_report_their_round_trip_and_repairs() {
    let sizes: Vec<usize> = (0..400).map(|i| [8, 1400, 9000, 100_000][i % 4]).collect();
    let n = sizes.len() as u64;
    let p = exchange(pair("rstats", TransportKind::Udp), sizes.clone());
    let r = reliable_figures(&p.tx_engine, n, true);
    assert!(
        r.srtt_ns > 0 && r.srtt_ns < 1_000_000_000,
        "round trip of the link: {r:?}"
    );
    p.close();
    let p = exchange(pair("rstats", TransportKind::Tcp), sizes);
    assert_eq!(
        reliable_figures(&p.tx_engine, n, false),
        comm::ReliableLinkStats::default(),
        "a TCP link has no reliable-UDP figures"
    );
    p.close();
}
