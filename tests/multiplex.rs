//! Multiplexing at scale: 1,000 endpoints per engine on 2 shards each, in two
//! processes, every endpoint exchanging with many peers. All endpoint pairs
//! between two engines share at most shards x shards channels per transport
//! (one link), and every message arrives, in order per peer, exactly once.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use comm::{Addr, Buf, Endpoint, Engine, Error, PeerId, TransportKind, Transports};
use common::{is_role, role_command_under};

const ENDPOINTS: usize = 1000;
/// Peers each endpoint talks to.
const PEERS: usize = 8;
/// Messages to each peer.
const EACH: u32 = 10;
const ENGINE_ENV: &str = "COMM_TEST_ENGINE";
const KIND_ENV: &str = "COMM_TEST_KIND";

fn transports(kind: &str) -> Transports {
    match kind {
        "tcp" => Transports::only([TransportKind::Tcp]),
        _ => Transports::Auto,
    }
}

/// Message `n` from endpoint `i` to its `d`th peer: who, to whom, which.
fn body(i: usize, d: usize, n: u32) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[..4].copy_from_slice(&(i as u32).to_le_bytes());
    b[4..8].copy_from_slice(&(d as u32).to_le_bytes());
    b[8..].copy_from_slice(&n.to_le_bytes());
    b
}

fn run(kind: &str, want: TransportKind) {
    let name = format!("mux{kind}{}", std::process::id());
    let engine = Engine::builder(&name)
        .cores(&[0, 1])
        .transports(transports(kind))
        .start()
        .unwrap();
    // The child serves until its standard input closes, then shuts down
    // cleanly (its segments go with it).
    let mut child = role_command_under(
        &[],
        "role_echo_endpoints",
        &[(ENGINE_ENV, &name), (KIND_ENV, kind)],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .spawn()
    .expect("spawn the child");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening ") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child exited early");
    }
    let server = line.trim().rsplit("listening ").next().unwrap().to_owned();
    let eps: Vec<Endpoint> = (0..ENDPOINTS)
        .map(|i| engine.endpoint(&format!("p{i}")).unwrap())
        .collect();
    // Endpoint i talks to the child's endpoints i*7+d*131 (mod 1000).
    let peers: Vec<Vec<PeerId>> = eps
        .iter()
        .enumerate()
        .map(|(i, ep)| {
            (0..PEERS)
                .map(|d| {
                    let addr: Addr = format!("comm://{server}/e{}", (i * 7 + d * 131) % ENDPOINTS)
                        .parse()
                        .unwrap();
                    ep.connect(&addr).unwrap()
                })
                .collect()
        })
        .collect();
    assert_eq!(eps[0].transport(peers[0][0]).unwrap(), want);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut sent = vec![0u32; ENDPOINTS * PEERS];
    let mut echoed = vec![0u32; ENDPOINTS * PEERS];
    let total = (ENDPOINTS * PEERS) as u64 * u64::from(EACH);
    let mut got = 0u64;
    let mut pending: Vec<Option<Buf>> = (0..ENDPOINTS * PEERS).map(|_| None).collect();
    while got < total {
        assert!(Instant::now() < deadline, "stalled at {got} of {total}");
        assert!(child.try_wait().unwrap().is_none(), "child died");
        for (i, ep) in eps.iter().enumerate() {
            for (d, &peer) in peers[i].iter().enumerate() {
                let k = i * PEERS + d;
                // A few in flight per pair keeps every ring busy.
                if sent[k] == EACH || sent[k] - echoed[k] >= 4 {
                    continue;
                }
                let buf = match pending[k].take() {
                    Some(b) => b,
                    None => {
                        let Ok(mut b) = ep.alloc(12) else { continue };
                        b.copy_from_slice(&body(i, d, sent[k]));
                        b
                    }
                };
                match ep.send(peer, buf) {
                    Ok(()) => sent[k] += 1,
                    Err(Error::WouldBlock(b)) => pending[k] = Some(b),
                    Err(e) => panic!("{e}"),
                }
            }
            while let Some(msg) = ep.try_recv() {
                let data = msg.data();
                assert_eq!(data.len(), 12);
                let from = u32::from_le_bytes(data[..4].try_into().unwrap()) as usize;
                let d = u32::from_le_bytes(data[4..8].try_into().unwrap()) as usize;
                let n = u32::from_le_bytes(data[8..].try_into().unwrap());
                assert_eq!(from, i, "an echo reached the wrong endpoint");
                let k = i * PEERS + d;
                assert_eq!(
                    n, echoed[k],
                    "endpoint {i} peer {d}: out of order or duplicate"
                );
                assert_eq!(msg.peer(), peers[i][d], "the echo comes from the peer");
                echoed[k] += 1;
                got += 1;
            }
        }
    }
    // Counters are published by the progress threads right after each pass.
    let counted = |s: &comm::Stats| {
        s.links
            .iter()
            .any(|l| !l.lost && l.sent_msgs >= total && l.recv_msgs >= total)
    };
    let until = Instant::now() + Duration::from_secs(10);
    while !counted(&engine.stats()) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    let stats = engine.stats();
    let live: Vec<_> = stats.links.iter().filter(|l| !l.lost).collect();
    // The child engine, plus nothing else: one link for 8,000 endpoint pairs.
    assert_eq!(live.len(), 1, "{:?}", stats.links);
    assert_eq!(live[0].transport, want);
    assert!(live[0].rings <= 2 * 2, "at most shards x shards channels");
    assert!(live[0].sent_msgs >= total && live[0].recv_msgs >= total);
    drop(eps);
    drop(child.stdin.take());
    // Its stdout stays open until it exits: the test harness reports there.
    assert!(child.wait().unwrap().success(), "the child failed");
    drop(out);
    engine.shutdown().unwrap();
}

#[test]
fn a_thousand_endpoints_a_side_share_one_shm_link() {
    run("auto", TransportKind::Shm);
}

#[test]
fn a_thousand_endpoints_a_side_share_one_tcp_link() {
    run("tcp", TransportKind::Tcp);
}

#[test]
#[ignore = "child process role of the tests above"]
fn role_echo_endpoints() {
    if !is_role("role_echo_endpoints") {
        return;
    }
    let name = std::env::var(ENGINE_ENV).unwrap();
    let kind = std::env::var(KIND_ENV).unwrap();
    let engine = Engine::builder(&name)
        .cores(&[0, 1])
        .transports(transports(&kind))
        .start()
        .unwrap();
    for e in 0..ENDPOINTS {
        engine
            .serve(&format!("e{e}"), |ctx, msg| ctx.reply(msg, msg.data()))
            .unwrap();
    }
    println!("listening {}", engine.listen_addr());
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    engine.shutdown().unwrap();
}
