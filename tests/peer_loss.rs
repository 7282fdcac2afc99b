//! What happens when a peer goes away: a killed peer process and a peer
//! engine that shuts down both turn sends into `Error::PeerLost` (no hang),
//! the link shows up lost in `stats()`, and nothing is left in /dev/shm.
//! Also: link set-up races (two engines connecting to each other at once
//! build one link) and `connect` from a handler refusing instead of
//! deadlocking.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use comm::{Addr, Endpoint, Engine, Error, PeerId};
use common::{is_role, shm_leftovers, spawn_role};

const ENGINE_ENV: &str = "COMM_TEST_ENGINE";

fn engine(name: &str, core: usize) -> Engine {
    Engine::builder(name).cores(&[core]).start().unwrap()
}

fn ping(ep: &Endpoint, peer: PeerId) {
    let mut buf = ep.alloc(4).unwrap();
    buf.copy_from_slice(b"ping");
    ep.send(peer, buf).unwrap();
    let reply = ep.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(reply.data(), b"ping");
}

/// Sends until the engine reports the peer lost; panics after `limit`.
fn send_until_lost(ep: &Endpoint, peer: PeerId, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        assert!(Instant::now() < deadline, "the lost peer was never noticed");
        let Ok(buf) = ep.alloc(8) else {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        };
        match ep.send(peer, buf) {
            Err(Error::PeerLost(p)) => {
                assert_eq!(p, peer);
                return;
            }
            Ok(()) | Err(Error::WouldBlock(_)) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
}

#[test]
fn a_killed_peer_process_is_noticed_and_its_link_dropped() {
    let name = format!("kill{}", std::process::id());
    let local = engine(&name, 0);
    let mut child = spawn_role("role_echo_server", &[(ENGINE_ENV, &name)], Stdio::piped());
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening ") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child exited early");
    }
    let addr: Addr = line
        .trim()
        .rsplit("listening ")
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let ep = local.endpoint("client").unwrap();
    let peer = ep.connect(&addr).unwrap();
    ping(&ep, peer);
    child.kill().unwrap();
    child.wait().unwrap();
    send_until_lost(&ep, peer, Duration::from_secs(10));
    assert!(matches!(ep.transport(peer), Err(Error::PeerLost(_))));
    let stats = local.stats();
    assert_eq!(stats.links.len(), 1);
    assert!(stats.links[0].lost, "{stats:?}");
    assert!(stats.links[0].sent_msgs >= 1 && stats.links[0].recv_msgs >= 1);
    drop(ep);
    local.shutdown().unwrap();
    // Our segments are gone; the killed child's are reaped by the next
    // engine that starts on this node.
    assert_eq!(shm_leftovers(&name), Vec::<String>::new());
}

#[test]
#[ignore = "child process role of a_killed_peer_process_is_noticed_and_its_link_dropped"]
fn role_echo_server() {
    if !is_role("role_echo_server") {
        return;
    }
    let name = std::env::var(ENGINE_ENV).unwrap();
    let engine = engine(&name, 1);
    let addr = engine
        .serve("echo", |ctx, msg| ctx.reply(msg, msg.data()))
        .unwrap();
    println!("listening {addr}");
    // Runs until killed.
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_peer_engine_that_shuts_down_is_lost_at_once() {
    let name = format!("bye{}", std::process::id());
    let server = engine(&name, 1);
    let addr = server
        .serve("echo", |ctx, msg| ctx.reply(msg, msg.data()))
        .unwrap();
    let client = engine(&name, 0);
    let ep = client.endpoint("client").unwrap();
    let peer = ep.connect(&addr).unwrap();
    for _ in 0..10 {
        ping(&ep, peer);
    }
    // Same process, so no liveness check can see it: the goodbye frames do.
    server.shutdown().unwrap();
    send_until_lost(&ep, peer, Duration::from_secs(10));
    let link = &client.stats().links[0];
    assert!(link.lost);
    assert_eq!((link.sent_msgs, link.recv_msgs), (10, 10));
    assert_eq!((link.sent_bytes, link.recv_bytes), (40, 40));
    drop(ep);
    client.shutdown().unwrap();
    assert_eq!(shm_leftovers(&name), Vec::<String>::new());
}

#[test]
fn engines_connecting_to_each_other_at_once_build_one_link() {
    for round in 0..10 {
        let name = format!("cross{}x{round}", std::process::id());
        let a = engine(&name, 0);
        let b = engine(&name, 1);
        let ea = a.endpoint("a").unwrap();
        let eb = b.endpoint("b").unwrap();
        let (addr_a, addr_b) = (ea.addr(), eb.addr());
        let ta = std::thread::spawn(move || {
            let p = ea.connect(&addr_b).unwrap();
            (ea, p)
        });
        let tb = std::thread::spawn(move || {
            let p = eb.connect(&addr_a).unwrap();
            (eb, p)
        });
        let ((ea, pa), (eb, pb)) = (ta.join().unwrap(), tb.join().unwrap());
        let live = |e: &Engine| e.stats().links.iter().filter(|l| !l.lost).count();
        assert_eq!((live(&a), live(&b)), (1, 1), "round {round}");
        // And the one link works both ways.
        let mut buf = ea.alloc(1).unwrap();
        buf[0] = 7;
        ea.send(pa, buf).unwrap();
        assert_eq!(
            eb.recv_timeout(Duration::from_secs(10)).unwrap().data(),
            [7]
        );
        let mut buf = eb.alloc(1).unwrap();
        buf[0] = 8;
        eb.send(pb, buf).unwrap();
        assert_eq!(
            ea.recv_timeout(Duration::from_secs(10)).unwrap().data(),
            [8]
        );
        drop((ea, eb));
        a.shutdown().unwrap();
        b.shutdown().unwrap();
        assert_eq!(shm_leftovers(&name), Vec::<String>::new());
    }
}

#[test]
fn connect_from_a_handler_is_refused_not_deadlocked() {
    let name = format!("hconn{}", std::process::id());
    let a = engine(&name, 0);
    let b = engine(&name, 1);
    let target = b.serve("target", |_, _| Ok(())).unwrap();
    let ep = a.endpoint("inner").unwrap();
    let (tx, rx) = mpsc::channel();
    let addr = a
        .serve("trigger", move |_, _| {
            let _ = tx.send(ep.connect(&target).map(|_| ()));
            Ok(())
        })
        .unwrap();
    let kick = a.endpoint("kick").unwrap();
    let me = kick.connect(&addr).unwrap();
    kick.send(me, kick.alloc(0).unwrap()).unwrap();
    let got = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("no deadlock");
    assert!(matches!(got, Err(Error::Config(_))), "{got:?}");
    drop(kick);
    a.shutdown().unwrap();
    b.shutdown().unwrap();
}
