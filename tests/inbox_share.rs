//! An endpoint that stops reading holds at most its share of the receiving
//! shard's pool (`PoolConfig::with_inbox_share`): the shard's other
//! endpoints can still allocate, and once the endpoint reads, every message
//! arrives, in order, over shared memory and over TCP alike.

mod common;

use common::shm_leftovers;

use std::time::{Duration, Instant};

use comm::{Engine, Error, PoolConfig, SizeClass, TransportKind, Transports};

/// Buffers in the receiving shard's only class; the inbox may hold half.
const BUFFERS: usize = 64;
const MESSAGES: u64 = 200;

fn engine(name: &str, core: usize, kind: TransportKind, pool: PoolConfig) -> Engine {
    Engine::builder(name)
        .cores(&[core])
        .transports(Transports::only([kind]))
        .pool(pool)
        .start()
        .unwrap()
}

/// The receiving engine's count of delivered messages once it has stopped
/// moving for a while (its progress thread publishes a moment after).
fn settled_deliveries(engine: &Engine) -> u64 {
    let mut last = (u64::MAX, Instant::now());
    loop {
        let now = engine.stats().total_received();
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_millis(300) {
            return now;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn a_silent_endpoint_leaves_the_pool_to_the_others(kind: TransportKind) {
    let name = format!("share-{kind}-{}", std::process::id());
    let small = PoolConfig::new([SizeClass {
        size: 256,
        count: BUFFERS,
    }])
    .unwrap();
    let rx_engine = engine(&name, 1, kind, small.clone());
    let tx_engine = engine(&name, 0, kind, PoolConfig::default());
    let silent = rx_engine.endpoint("silent").unwrap();
    let other = rx_engine.endpoint("other").unwrap();
    let tx = tx_engine.endpoint("tx").unwrap();
    let to_silent = tx.connect(&silent.addr()).unwrap();
    assert_eq!(tx.transport(to_silent).unwrap(), kind);

    let sender = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        for seq in 0..MESSAGES {
            let mut buf = tx.alloc(100).unwrap();
            buf[..8].copy_from_slice(&seq.to_le_bytes());
            let mut next = buf;
            loop {
                match tx.send(to_silent, next) {
                    Ok(()) => break,
                    Err(Error::WouldBlock(back)) => {
                        assert!(Instant::now() < deadline, "stuck at {seq}");
                        next = back;
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    Err(e) => panic!("send {seq}: {e}"),
                }
            }
        }
        tx
    });

    // Nobody reads: the inbox takes its share and no more.
    let share = (small.inbox_share() as usize * BUFFERS / 100) as u64;
    assert_eq!(settled_deliveries(&rx_engine), share);
    let spare = other
        .alloc(100)
        .expect("the other endpoint still finds a buffer");
    drop(spare);

    // Reading lets the rest through, in order, exactly once.
    for seq in 0..MESSAGES {
        let msg = silent
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("message {seq}: {e}"));
        assert_eq!(msg.data()[..8], seq.to_le_bytes(), "message {seq}");
    }
    let tx = sender.join().unwrap();
    assert!(silent.try_recv().is_none(), "a message too many");
    drop((tx, silent, other));
    tx_engine.shutdown().unwrap();
    rx_engine.shutdown().unwrap();
    assert_eq!(shm_leftovers(&name), Vec::<String>::new());
}

#[test]
fn over_shm_a_silent_endpoint_leaves_the_pool_to_the_others() {
    a_silent_endpoint_leaves_the_pool_to_the_others(TransportKind::Shm);
}

#[test]
fn over_tcp_a_silent_endpoint_leaves_the_pool_to_the_others() {
    a_silent_endpoint_leaves_the_pool_to_the_others(TransportKind::Tcp);
}
