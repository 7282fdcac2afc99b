//! Two engines in two real processes: 64 endpoints a side, messages of random
//! sizes from 1 byte to 4 MiB, each verified byte for byte, in order, exactly
//! once; then both engines shut down and leave nothing in /dev/shm.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use comm::{Buf, Endpoint, Engine, Error, PeerId};
use common::{is_role, spawn_role};

const ENDPOINTS: usize = 64;
const PER_ENDPOINT: u64 = 40;
const ENGINE_ENV: &str = "COMM_TEST_ENGINE";

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Size of message `seq` of endpoint `ep`: mostly small, some medium, a few
/// up to 4 MiB.
fn size_of(ep: usize, seq: u64) -> usize {
    let r = mix((ep as u64) << 32 | seq);
    match r % 100 {
        0..=69 => 1 + (r >> 8) as usize % 448,
        70..=94 => 1 + (r >> 8) as usize % (64 << 10),
        _ => 1 + (r >> 8) as usize % (4 << 20),
    }
}

/// Byte content of message `seq` of endpoint `ep`, 8 bytes at a time.
fn fill(ep: usize, seq: u64, buf: &mut [u8]) {
    let seed = mix(!((ep as u64) << 40 | seq));
    for (i, chunk) in buf.chunks_mut(8).enumerate() {
        let w = mix(seed ^ i as u64).to_le_bytes();
        chunk.copy_from_slice(&w[..chunk.len()]);
    }
}

fn verify(ep: usize, seq: u64, data: &[u8]) {
    assert_eq!(
        data.len(),
        size_of(ep, seq),
        "endpoint {ep}: message {seq} has the wrong size (lost or reordered)"
    );
    let mut expected = vec![0u8; data.len()];
    fill(ep, seq, &mut expected);
    assert!(expected == data, "endpoint {ep}: message {seq} is corrupt");
}

fn alloc_when_free(ep: &Endpoint, len: usize) -> Option<Buf> {
    match ep.alloc(len) {
        Ok(buf) => Some(buf),
        Err(Error::NoBuffers { .. }) => None,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn sixty_four_endpoints_a_side_exchange_verified_messages_across_processes() {
    let engine_name = format!("mp{}", std::process::id());
    let engine = Engine::builder(&engine_name)
        .cores(&[0, 1])
        .start()
        .unwrap();
    let mut child = spawn_role(
        "role_receiver",
        &[(ENGINE_ENV, &engine_name)],
        Stdio::piped(),
    );
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening ") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child exited early");
    }
    let child_addr = line.trim().rsplit("listening ").next().unwrap().to_owned();

    let eps: Vec<Endpoint> = (0..ENDPOINTS)
        .map(|i| engine.endpoint(&format!("p{i}")).unwrap())
        .collect();
    let peers: Vec<PeerId> = eps
        .iter()
        .enumerate()
        .map(|(i, ep)| {
            ep.connect(&format!("comm://{child_addr}/c{i}").parse().unwrap())
                .unwrap()
        })
        .collect();
    let mut next = vec![0u64; ENDPOINTS];
    let mut pending: Vec<Option<Buf>> = (0..ENDPOINTS).map(|_| None).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while next.iter().any(|&n| n < PER_ENDPOINT) {
        assert!(Instant::now() < deadline, "sending stalled: {next:?}");
        assert!(child.try_wait().unwrap().is_none(), "receiver died");
        for i in 0..ENDPOINTS {
            if next[i] == PER_ENDPOINT {
                continue;
            }
            let buf = match pending[i].take() {
                Some(buf) => buf,
                None => {
                    let Some(mut buf) = alloc_when_free(&eps[i], size_of(i, next[i])) else {
                        continue;
                    };
                    fill(i, next[i], &mut buf);
                    buf
                }
            };
            match eps[i].send(peers[i], buf) {
                Ok(()) => next[i] += 1,
                Err(Error::WouldBlock(buf)) => pending[i] = Some(buf),
                Err(e) => panic!("{e}"),
            }
        }
    }
    // Each receiving endpoint confirms with the number it verified.
    for (i, ep) in eps.iter().enumerate() {
        let msg = ep.recv_timeout(Duration::from_secs(60)).unwrap();
        assert_eq!(msg.data(), PER_ENDPOINT.to_le_bytes(), "endpoint {i}");
    }
    assert!(child.wait().unwrap().success(), "receiver failed");
    drop(out);
    let sent = ENDPOINTS as u64 * PER_ENDPOINT;
    // Counters are published by the progress threads right after each pass.
    let deadline = Instant::now() + Duration::from_secs(10);
    while engine.stats().total_sent() < sent && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let stats = engine.stats();
    assert_eq!(stats.total_sent(), sent);
    assert_eq!(
        stats.links.len(),
        1,
        "one link to the peer engine, shared by all endpoints"
    );
    drop(eps);
    engine.shutdown().unwrap();
    let left: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&format!("comm-{engine_name}-")))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
#[ignore = "child process role of sixty_four_endpoints_a_side_exchange_verified_messages_across_processes"]
fn role_receiver() {
    if !is_role("role_receiver") {
        return;
    }
    let name = std::env::var(ENGINE_ENV).unwrap();
    let engine = Engine::builder(&name).cores(&[0, 1]).start().unwrap();
    let eps: Vec<Endpoint> = (0..ENDPOINTS)
        .map(|i| engine.endpoint(&format!("c{i}")).unwrap())
        .collect();
    println!("listening {}", engine.listen_addr());
    let mut seen = vec![0u64; ENDPOINTS];
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.iter().any(|&n| n < PER_ENDPOINT) {
        assert!(Instant::now() < deadline, "receiving stalled: {seen:?}");
        let mut idle = true;
        for (i, ep) in eps.iter().enumerate() {
            while let Some(msg) = ep.try_recv() {
                idle = false;
                assert!(
                    seen[i] < PER_ENDPOINT,
                    "endpoint {i}: a message too many (duplicate)"
                );
                verify(i, seen[i], msg.data());
                seen[i] += 1;
                if seen[i] == PER_ENDPOINT {
                    let mut done = ep.alloc(8).unwrap();
                    done.copy_from_slice(&seen[i].to_le_bytes());
                    ep.send(msg.peer(), done).unwrap();
                }
            }
        }
        if idle {
            std::thread::yield_now();
        }
    }
    // Nothing more may arrive.
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        eps.iter().all(|ep| ep.try_recv().is_none()),
        "duplicates arrived"
    );
    drop(eps);
    engine.shutdown().unwrap();
}
