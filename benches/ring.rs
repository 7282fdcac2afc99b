//! One-way latency of an 8-byte ping-pong between two threads pinned to cores
//! 0 and 1, measured in one run for: comm-shm's ring (in a real `/dev/shm`
//! segment), `rtrb`, and a bare cache line bounced between the cores (the
//! physical floor, as `../shared/anchors/pingpong_floor.c` measures it).
//! Each figure is half the round trip.
//!
//! `cargo bench --bench ring`

// criterion_group! generates undocumented public functions.
#![allow(missing_docs)]

use std::hint::spin_loop;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use comm::shm::{Consumer, PopError, Producer, PushError, Ring, RingConfig, Segment};
use criterion::{criterion_group, criterion_main, Criterion};
use crossbeam_utils::CachePadded;

const STOP: u64 = u64::MAX;

fn pin(core: usize) {
    // On a machine with fewer cores the threads simply float.
    let _ = core_affinity::set_for_current(core_affinity::CoreId { id: core });
}

/// Runs `echo` on core 1 while `bench` measures on core 0.
fn with_echo<E, B>(echo: E, bench: B)
where
    E: FnOnce() + Send + 'static,
    B: FnOnce(),
{
    let echo = thread::spawn(move || {
        pin(1);
        echo();
    });
    pin(0);
    bench();
    echo.join().expect("echo thread");
}

fn one_way(start: Instant) -> Duration {
    start.elapsed() / 2
}

fn floor(c: &mut Criterion) {
    let lines = Arc::new((
        CachePadded::new(AtomicU64::new(0)),
        CachePadded::new(AtomicU64::new(0)),
    ));
    let echo_lines = Arc::clone(&lines);
    with_echo(
        move || {
            let (ping, pong) = &*echo_lines;
            let mut last = 0;
            loop {
                let v = ping.load(Ordering::Acquire);
                if v == last {
                    spin_loop();
                    continue;
                }
                if v == STOP {
                    return;
                }
                pong.store(v, Ordering::Release);
                last = v;
            }
        },
        || {
            let (ping, pong) = &*lines;
            let mut n = 0u64;
            c.bench_function("pingpong_8B/cache_line_floor", |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        n += 1;
                        ping.store(n, Ordering::Release);
                        while pong.load(Ordering::Acquire) != n {
                            spin_loop();
                        }
                    }
                    one_way(start)
                })
            });
            ping.store(STOP, Ordering::Release);
        },
    );
}

fn pop_spin(rx: &mut Consumer) -> u64 {
    loop {
        match rx.pop_with(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))) {
            Ok(v) => return v,
            Err(PopError::Empty) => spin_loop(),
            Err(e) => panic!("{e}"),
        }
    }
}

fn push_spin(tx: &mut Producer, v: u64) {
    while let Err(e) = tx.push(&v.to_le_bytes()) {
        assert_eq!(e, PushError::Full);
        spin_loop();
    }
}

fn comm_ring(c: &mut Criterion) {
    let cfg = RingConfig::new(256, 64).expect("ring config");
    let second = cfg.region_len().next_multiple_of(128);
    let name = format!("comm-bench-ring-{}", std::process::id());
    let seg = Arc::new(Segment::create(&name, second + cfg.region_len()).expect("segment"));
    let (ab, ba) = (
        Ring::create(&seg, 0, cfg).expect("ring"),
        Ring::create(&seg, second, cfg).expect("ring"),
    );
    seg.mark_ready();
    let (mut ping_tx, mut ping_rx) = (ab.producer().expect("role"), ab.consumer().expect("role"));
    let (mut pong_tx, mut pong_rx) = (ba.producer().expect("role"), ba.consumer().expect("role"));
    with_echo(
        move || loop {
            let v = pop_spin(&mut ping_rx);
            if v == STOP {
                return;
            }
            push_spin(&mut pong_tx, v);
        },
        || {
            let mut n = 0u64;
            c.bench_function("pingpong_8B/comm_shm_ring", |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        n += 1;
                        push_spin(&mut ping_tx, n);
                        let v = pop_spin(&mut pong_rx);
                        debug_assert_eq!(v, n);
                    }
                    one_way(start)
                })
            });
            push_spin(&mut ping_tx, STOP);
        },
    );
}

fn rtrb_ring(c: &mut Criterion) {
    let (mut ping_tx, mut ping_rx) = rtrb::RingBuffer::<u64>::new(256);
    let (mut pong_tx, mut pong_rx) = rtrb::RingBuffer::<u64>::new(256);
    fn pop(rx: &mut rtrb::Consumer<u64>) -> u64 {
        loop {
            if let Ok(v) = rx.pop() {
                return v;
            }
            spin_loop();
        }
    }
    fn push(tx: &mut rtrb::Producer<u64>, v: u64) {
        while tx.push(v).is_err() {
            spin_loop();
        }
    }
    with_echo(
        move || loop {
            let v = pop(&mut ping_rx);
            if v == STOP {
                return;
            }
            push(&mut pong_tx, v);
        },
        || {
            let mut n = 0u64;
            c.bench_function("pingpong_8B/rtrb", |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        n += 1;
                        push(&mut ping_tx, n);
                        let v = pop(&mut pong_rx);
                        debug_assert_eq!(v, n);
                    }
                    one_way(start)
                })
            });
            push(&mut ping_tx, STOP);
        },
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = floor, comm_ring, rtrb_ring
}
criterion_main!(benches);
