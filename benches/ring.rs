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

/// One side of a ping-pong: sends a value, spins until one arrives.
trait Side: Send + 'static {
    fn send(&mut self, v: u64);
    fn recv(&mut self) -> u64;
}

fn pin(core: usize) {
    // On a machine with fewer cores the threads simply float.
    let _ = core_affinity::set_for_current(core_affinity::CoreId { id: core });
}

/// Measures `main` (core 0) bouncing values off `echo` (core 1).
fn ping_pong(c: &mut Criterion, name: &str, mut main: impl Side, mut echo: impl Side) {
    let echo = thread::spawn(move || {
        pin(1);
        loop {
            let v = echo.recv();
            if v == STOP {
                return;
            }
            echo.send(v);
        }
    });
    pin(0);
    let mut n = 0u64;
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                n += 1;
                main.send(n);
                let v = main.recv();
                debug_assert_eq!(v, n);
            }
            start.elapsed() / 2
        })
    });
    main.send(STOP);
    echo.join().expect("echo thread");
}

/// Two cache lines: one written by each side.
struct Lines {
    out: Arc<CachePadded<AtomicU64>>,
    inn: Arc<CachePadded<AtomicU64>>,
    last: u64,
}

impl Side for Lines {
    fn send(&mut self, v: u64) {
        self.out.store(v, Ordering::Release);
    }
    fn recv(&mut self) -> u64 {
        loop {
            let v = self.inn.load(Ordering::Acquire);
            if v != self.last {
                self.last = v;
                return v;
            }
            spin_loop();
        }
    }
}

fn floor(c: &mut Criterion) {
    let a = Arc::new(CachePadded::new(AtomicU64::new(0)));
    let b = Arc::new(CachePadded::new(AtomicU64::new(0)));
    let main = Lines {
        out: Arc::clone(&a),
        inn: Arc::clone(&b),
        last: 0,
    };
    let echo = Lines {
        out: b,
        inn: a,
        last: 0,
    };
    ping_pong(c, "pingpong_8B/cache_line_floor", main, echo);
}

struct ShmSide(Producer, Consumer);

impl Side for ShmSide {
    fn send(&mut self, v: u64) {
        while let Err(e) = self.0.push(&v.to_le_bytes()) {
            assert_eq!(e, PushError::WouldBlock);
            spin_loop();
        }
    }
    fn recv(&mut self) -> u64 {
        loop {
            match self
                .1
                .pop_with(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            {
                Ok(v) => return v,
                Err(PopError::Empty) => spin_loop(),
                Err(e) => panic!("{e}"),
            }
        }
    }
}

fn comm_ring(c: &mut Criterion) {
    let cfg = RingConfig::new(256, 64).expect("ring config");
    let second = cfg.region_len().next_multiple_of(128);
    let name = format!("comm-bench-ring-{}", std::process::id());
    let seg = Arc::new(Segment::create(&name, second + cfg.region_len()).expect("segment"));
    let ab = Ring::create(&seg, 0, cfg).expect("ring");
    let ba = Ring::create(&seg, second, cfg).expect("ring");
    seg.mark_ready();
    let main = ShmSide(ab.producer().expect("role"), ba.consumer().expect("role"));
    let echo = ShmSide(ba.producer().expect("role"), ab.consumer().expect("role"));
    ping_pong(c, "pingpong_8B/comm_shm_ring", main, echo);
}

struct RtrbSide(rtrb::Producer<u64>, rtrb::Consumer<u64>);

impl Side for RtrbSide {
    fn send(&mut self, v: u64) {
        while self.0.push(v).is_err() {
            spin_loop();
        }
    }
    fn recv(&mut self) -> u64 {
        loop {
            if let Ok(v) = self.1.pop() {
                return v;
            }
            spin_loop();
        }
    }
}

fn rtrb_ring(c: &mut Criterion) {
    let (ab_tx, ab_rx) = rtrb::RingBuffer::<u64>::new(256);
    let (ba_tx, ba_rx) = rtrb::RingBuffer::<u64>::new(256);
    ping_pong(
        c,
        "pingpong_8B/rtrb",
        RtrbSide(ab_tx, ba_rx),
        RtrbSide(ba_tx, ab_rx),
    );
}

criterion_group! {
    name = benches;
    // No charts: the workspace builds plotters without system fonts
    // (comm-perf finds one at run time), and criterion's charts need one.
    config = Criterion::default()
        .without_plots()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = floor, comm_ring, rtrb_ring
}
criterion_main!(benches);
