//! The reliable datagram protocol between two associations over a simulated
//! network that drops, duplicates, reorders and delays datagrams, on a
//! simulated clock: every message arrives exactly once, in order and
//! byte-identical; a silent peer is declared dead after the configured
//! retries; sequence numbers wrap; garbage never panics. At the end, bulk
//! and small-message throughput through a model of the engine's UDP
//! transport, also on simulated time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use comm::reliable::{DatagramError, Error, Reliable, ReliableConfig, Stats, HEADER_LEN};
use proptest::prelude::*;

thread_local! {
    /// Allocations made by this thread: tests run on their own threads, so
    /// each sees only its own.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// The system allocator, counting allocations per thread.
struct CountingAlloc;

fn count_allocation() {
    // try_with: the slot may be gone while the thread exits.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is passed unchanged to the system allocator, which
// upholds GlobalAlloc's contract; the counter neither allocates nor panics.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        // SAFETY: the caller's guarantees for `layout` are passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc`/`realloc` above, i.e. from System.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_allocation();
        // SAFETY: as for `dealloc`, and the caller's guarantees for
        // `new_size` are passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

const US: u64 = 1_000;
const MS: u64 = 1_000_000;

/// xorshift64*: tiny, seeded, plenty for driving a simulated network.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng((seed ^ 0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    fn per_mille(&mut self, p: u32) -> bool {
        self.below(1000) < u64::from(p)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// What the network does to each datagram.
#[derive(Debug, Clone, Copy)]
struct Network {
    /// Drop probability, per mille.
    loss: u32,
    /// Duplication probability, per mille.
    dup: u32,
    /// Fixed one-way delay, ns.
    delay: u64,
    /// Extra random delay up to this, ns: datagrams sent close together
    /// overtake each other.
    jitter: u64,
}

const CLEAN: Network = Network {
    loss: 0,
    dup: 0,
    delay: 50 * US,
    jitter: 0,
};

/// A datagram on the wire: arrival time, a tie-breaker, destination, bytes.
type InFlight = (u64, u64, usize, Vec<u8>);

/// Datagrams in flight, ordered by arrival time.
struct Wire {
    net: Network,
    rng: Rng,
    queue: BinaryHeap<Reverse<InFlight>>,
    id: u64,
}

impl Wire {
    fn new(net: Network, seed: u64) -> Self {
        Wire {
            net,
            rng: Rng::new(seed),
            queue: BinaryHeap::new(),
            id: 0,
        }
    }

    fn send(&mut self, now: u64, to: usize, bytes: &[u8]) {
        if self.rng.per_mille(self.net.loss) {
            return;
        }
        let copies = if self.rng.per_mille(self.net.dup) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at = now + self.net.delay + self.rng.below(self.net.jitter + 1);
            self.id += 1;
            self.queue.push(Reverse((at, self.id, to, bytes.to_vec())));
        }
    }

    fn next_at(&self) -> Option<u64> {
        self.queue.peek().map(|Reverse((at, ..))| *at)
    }

    fn pop_due(&mut self, now: u64) -> Option<(usize, Vec<u8>)> {
        if self.next_at()? > now {
            return None;
        }
        self.queue
            .pop()
            .map(|Reverse((_, _, to, bytes))| (to, bytes))
    }
}

/// Settings tuned for the simulated clock: fast timers, many retries (at
/// 40% loss each way a retransmission round fails 64% of the time), and no
/// limit on the datagrams one round of `poll_transmit` hands out, so that
/// the datagram-level tests can drain a side in one loop (the property test
/// draws `burst` instead, the link tests at the end use the default).
fn test_cfg() -> ReliableConfig {
    ReliableConfig {
        mtu: 1472,
        window: 64,
        max_message: 4 << 20,
        send_buffer: 4 << 20,
        ack_delay: Duration::from_micros(200),
        initial_rto: Duration::from_millis(5),
        min_rto: Duration::from_millis(1),
        max_rto: Duration::from_millis(100),
        max_retries: 60,
        burst: u32::MAX,
        ..ReliableConfig::default()
    }
}

/// Two associations, messages to exchange, and a network between them.
struct Scenario {
    /// `cfgs[1]` is derived from `cfgs[0]` with the sequence numbers swapped.
    cfg: ReliableConfig,
    /// `msgs[i]`: what side `i` sends.
    msgs: [Vec<Vec<u8>>; 2],
    net: Network,
    seed: u64,
    /// Chance, per mille, that an application reads at a given step.
    read: u32,
    /// No reading at all before this time.
    read_from: u64,
}

fn peer_cfg(cfg: &ReliableConfig) -> ReliableConfig {
    ReliableConfig {
        initial_seq: cfg.peer_initial_seq,
        peer_initial_seq: cfg.initial_seq,
        ..*cfg
    }
}

fn messages(sizes: &[usize], seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    sizes
        .iter()
        .map(|&n| {
            let mut m = vec![0; n];
            rng.fill(&mut m);
            m
        })
        .collect()
}

/// Takes every finished message from `end`, checking each against the next
/// expected one. Returns how many it took.
fn read(end: &mut Reliable, expected: &[Vec<u8>], got: &mut usize, side: usize) -> usize {
    let mut n = 0;
    loop {
        let idx = *got;
        let want = expected.get(idx);
        let same = end.poll_message(|m| match want {
            Some(w) => m == &w[..],
            None => false,
        });
        match same {
            None => return n,
            Some(true) => {
                *got += 1;
                n += 1;
            }
            Some(false) => panic!(
                "side {side}: message {idx} wrong or unexpected (expected {:?} bytes)",
                want.map(Vec::len)
            ),
        }
    }
}

/// Runs a scenario until every message has arrived and both sides are
/// quiet (all acknowledged, no timer pending, nothing on the wire); panics
/// on a wrong message or on a stall. Returns both sides' counters.
fn simulate(sc: &Scenario) -> [Stats; 2] {
    let mut ends = [
        Reliable::new(sc.cfg).expect("config"),
        Reliable::new(peer_cfg(&sc.cfg)).expect("config"),
    ];
    let mut wire = Wire::new(sc.net, sc.seed);
    let mut reader = Rng::new(sc.seed.wrapping_add(1));
    let mut queued = [0usize; 2];
    let mut got = [0usize; 2];
    let mut buf = vec![0u8; sc.cfg.mtu];
    let mut now = 0u64;
    let datagrams: usize = sc
        .msgs
        .iter()
        .flatten()
        .map(|m| m.len() / (sc.cfg.mtu - HEADER_LEN) + 1)
        .sum();
    let max_steps = 200_000 + 200 * datagrams;
    for step in 0.. {
        assert!(
            step < max_steps,
            "stalled at {now} ns: queued {queued:?}, got {got:?}, {:?}",
            ends
        );
        for i in 0..2 {
            while let Some(m) = sc.msgs[i].get(queued[i]) {
                match ends[i].send(m) {
                    Ok(()) => queued[i] += 1,
                    Err(Error::WindowFull) => break,
                    Err(e) => panic!("side {i}: send: {e}"),
                }
            }
            while let Some(n) = ends[i].poll_transmit(now, &mut buf) {
                wire.send(now, 1 - i, &buf[..n]);
            }
        }
        while let Some((to, bytes)) = wire.pop_due(now) {
            ends[to]
                .on_datagram(&bytes, now)
                .expect("a well-formed datagram");
        }
        let may_read = now >= sc.read_from;
        for i in 0..2 {
            if may_read && reader.per_mille(sc.read) {
                read(&mut ends[i], &sc.msgs[1 - i], &mut got[i], i);
            }
        }
        let done = got[0] == sc.msgs[1].len() && got[1] == sc.msgs[0].len();
        let next = [
            wire.next_at(),
            ends[0].next_timeout(),
            ends[1].next_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        match next {
            Some(t) => now = now.max(t),
            None if done => {
                assert!(queued[0] == sc.msgs[0].len() && queued[1] == sc.msgs[1].len());
                assert!(ends[0].all_acked() && ends[1].all_acked());
                break;
            }
            None => {
                // Nothing scheduled: only the applications can move.
                let n: usize = (0..2)
                    .map(|i| read(&mut ends[i], &sc.msgs[1 - i], &mut got[i], i))
                    .sum();
                let can_send = (0..2).any(|i| queued[i] < sc.msgs[i].len());
                assert!(
                    n > 0 || can_send,
                    "deadlock at {now} ns: queued {queued:?}, got {got:?}, {ends:?}"
                );
            }
        }
    }
    for (i, end) in ends.iter().enumerate() {
        assert!(!end.is_dead(), "side {i} died: {end:?}");
        assert_eq!(end.stats().messages_received, sc.msgs[1 - i].len() as u64);
    }
    [ends[0].stats(), ends[1].stats()]
}

/// A message size drawn from a class: tiny, around a multiple of the
/// payload, a few datagrams, or large.
fn size_of_class(class: u8, a: u32, payload: usize) -> usize {
    let a = a as usize;
    match class % 4 {
        0 => a % 65,
        1 => ((a % 4) + 1) * payload + (a / 4) % 3 - 1,
        2 => a % (8 * payload),
        _ => a % (3 << 20),
    }
}

fn sizes_within(classes: &[(u8, u32)], payload: usize, budget: usize) -> Vec<usize> {
    let mut total = 0;
    let mut out = Vec::new();
    for &(c, a) in classes {
        let n = size_of_class(c, a, payload).min(budget - total);
        total += n;
        out.push(n);
    }
    out
}

fn mtu_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![
        1 => Just(HEADER_LEN + 1),
        3 => (HEADER_LEN + 8)..600usize,
        4 => Just(1472usize),
        2 => Just(9000usize),
    ]
}

fn seq_strategy() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), (u32::MAX - 300)..=u32::MAX, any::<u32>()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn every_message_arrives_once_in_order_and_intact(
        loss in prop_oneof![Just(0u32), 0u32..400],
        dup in prop_oneof![Just(0u32), 0u32..300],
        jitter_us in prop_oneof![Just(0u64), 0u64..50, 0u64..2000],
        mtu in mtu_strategy(),
        window_log in 0u32..11,
        ack_every in 1u32..5,
        burst in prop_oneof![Just(1u32), 1u32..8, Just(u32::MAX)],
        seqs in (seq_strategy(), seq_strategy()),
        read in prop_oneof![Just(1000u32), 20u32..1000],
        classes in prop::collection::vec((any::<u8>(), any::<u32>()), 0..30),
        back in prop::collection::vec((any::<u8>(), any::<u32>()), 0..10),
        seed in any::<u64>(),
    ) {
        let payload = mtu - HEADER_LEN;
        // Bounded in datagrams, to stay fast at tiny mtus.
        let budget = (payload * 1500).min(2 << 20);
        let cfg = ReliableConfig {
            mtu,
            window: 1 << window_log,
            ack_every,
            burst,
            initial_seq: seqs.0,
            peer_initial_seq: seqs.1,
            ..test_cfg()
        };
        let sc = Scenario {
            cfg,
            msgs: [
                messages(&sizes_within(&classes, payload, budget), seed),
                messages(&sizes_within(&back, payload, budget / 4), !seed),
            ],
            net: Network { loss, dup, delay: 20 * US, jitter: jitter_us * US },
            seed,
            read,
            read_from: 0,
        };
        let stats = simulate(&sc);
        if loss == 0 && dup == 0 && jitter_us == 0 {
            // A clean, order-keeping network: nothing is sent twice.
            for s in stats {
                prop_assert_eq!((s.retransmits, s.duplicates, s.out_of_order), (0, 0, 0));
            }
        }
    }

    #[test]
    fn garbage_datagrams_are_refused_without_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let (a, b) = busy_pair();
        for mut end in [Reliable::new(test_cfg()).unwrap(), a, b] {
            let r = end.on_datagram(&bytes, 5 * MS);
            if let Err(e) = r {
                prop_assert_eq!(end.is_dead(), e.is_fatal());
            }
            exercise(&mut end, 5 * MS);
        }
    }

    #[test]
    fn well_formed_headers_with_wild_fields_never_panic(
        kind in 0u8..4,
        flags in any::<u8>(),
        wnd in any::<u16>(),
        seq_off in prop_oneof![0u32..80, any::<u32>()],
        ack_off in prop_oneof![0u32..80, any::<u32>()],
        sack in any::<u64>(),
        payload_len in 0usize..100,
        announced in prop_oneof![Just(None), any::<u16>().prop_map(Some)],
    ) {
        let (mut a, mut b) = busy_pair();
        let payload = vec![0xa5; payload_len];
        let mut d = vec![0u8; HEADER_LEN + payload_len];
        d[0] = 1;
        d[1] = kind;
        d[2] = flags;
        d[4..6].copy_from_slice(&announced.unwrap_or(payload_len as u16).to_le_bytes());
        d[6..8].copy_from_slice(&wnd.to_le_bytes());
        d[8..12].copy_from_slice(&seq_off.wrapping_add(SEQ_B).to_le_bytes());
        d[12..16].copy_from_slice(&ack_off.wrapping_add(SEQ_A).to_le_bytes());
        d[16..24].copy_from_slice(&sack.to_le_bytes());
        d[HEADER_LEN..].copy_from_slice(&payload);
        for end in [&mut a, &mut b] {
            for _ in 0..3 {
                if let Err(e) = end.on_datagram(&d, 6 * MS) {
                    prop_assert_eq!(end.is_dead(), e.is_fatal());
                }
                exercise(end, 6 * MS);
            }
        }
    }
}

const SEQ_A: u32 = u32::MAX - 20;
const SEQ_B: u32 = 7;

/// Two associations mid-transfer both ways, with data in flight, buffered
/// out of order, and acks outstanding.
fn busy_pair() -> (Reliable, Reliable) {
    let cfg = ReliableConfig {
        window: 16,
        max_message: 64 << 10,
        send_buffer: 64 << 10,
        initial_seq: SEQ_A,
        peer_initial_seq: SEQ_B,
        ..test_cfg()
    };
    let mut a = Reliable::new(cfg).unwrap();
    let mut b = Reliable::new(peer_cfg(&cfg)).unwrap();
    a.send(&[1; 10_000]).unwrap();
    a.send(b"small").unwrap();
    b.send(&[2; 3_000]).unwrap();
    let mut buf = [0u8; 1472];
    let mut k = 0;
    while let Some(n) = a.poll_transmit(MS, &mut buf) {
        // Lose every third datagram so b holds some out of order.
        if k % 3 != 1 {
            b.on_datagram(&buf[..n], 2 * MS).unwrap();
        }
        k += 1;
    }
    while let Some(n) = b.poll_transmit(2 * MS, &mut buf) {
        if k % 2 == 0 {
            a.on_datagram(&buf[..n], 3 * MS).unwrap();
        }
        k += 1;
    }
    (a, b)
}

/// Drives every other entry point once, as a transport loop would.
fn exercise(end: &mut Reliable, now: u64) {
    let mut buf = [0u8; 1472];
    let mut n = 0;
    while end.poll_transmit(now, &mut buf).is_some() {
        n += 1;
        assert!(n < 10_000, "poll_transmit never ends");
    }
    while end.poll_message(|m| m.len()).is_some() {}
    if let Some(t) = end.next_timeout() {
        end.poll_transmit(t.max(now), &mut buf);
    }
    let _ = end.stats();
}

#[test]
fn a_few_mib_message_crosses_a_lossy_network_both_ways() {
    let big = 3 << 20;
    let sc = Scenario {
        cfg: ReliableConfig {
            window: 256,
            ..test_cfg()
        },
        msgs: [
            messages(&[big, 0, 1, big / 2], 1),
            messages(&[big - 1, 1448], 2),
        ],
        net: Network {
            loss: 200,
            dup: 50,
            delay: 30 * US,
            jitter: 100 * US,
        },
        seed: 11,
        read: 1000,
        read_from: 0,
    };
    let stats = simulate(&sc);
    assert!(stats[0].retransmits > 0 && stats[1].retransmits > 0);
    assert!(stats[1].out_of_order > 0 && stats[1].duplicates > 0);
}

#[test]
fn sequence_numbers_wrap_around() {
    let sizes: Vec<usize> = (0..300).map(|i| (i * 397) % 5000).collect();
    let sc = Scenario {
        cfg: ReliableConfig {
            mtu: 200,
            window: 32,
            initial_seq: u32::MAX - 40,
            peer_initial_seq: u32::MAX - 3,
            ..test_cfg()
        },
        msgs: [messages(&sizes, 3), messages(&sizes[..100], 4)],
        net: Network {
            loss: 150,
            dup: 100,
            delay: 20 * US,
            jitter: 300 * US,
        },
        seed: 5,
        read: 1000,
        read_from: 0,
    };
    let stats = simulate(&sc);
    // Both directions used far more sequence numbers than were left before
    // the wrap (41 and 4).
    for s in stats {
        assert!(
            s.datagrams_sent - s.acks_sent - s.probes_sent > 1000,
            "{s:?}"
        );
    }
}

#[test]
fn a_silent_peer_is_declared_dead_after_the_configured_retries() {
    let cfg = ReliableConfig {
        max_retries: 7,
        ..test_cfg()
    };
    let mut ends = [
        Reliable::new(cfg).unwrap(),
        Reliable::new(peer_cfg(&cfg)).unwrap(),
    ];
    let mut wire = Wire::new(
        Network {
            loss: 1000,
            ..CLEAN
        },
        9,
    );
    ends[0].send(&[9; 5000]).unwrap();
    ends[1].send(b"reply").unwrap();
    let mut buf = [0u8; 1472];
    let mut now = 0;
    let mut transmitted = [0u64; 2];
    while !(ends[0].is_dead() && ends[1].is_dead()) {
        for (i, end) in ends.iter_mut().enumerate() {
            while let Some(n) = end.poll_transmit(now, &mut buf) {
                transmitted[i] += 1;
                wire.send(now, 1 - i, &buf[..n]);
            }
        }
        assert!(wire.next_at().is_none());
        now = ends
            .iter()
            .filter_map(Reliable::next_timeout)
            .min()
            .unwrap_or(now);
        assert!(now < 60 * 1000 * MS, "never declared dead");
    }
    let s = ends[0].stats();
    assert_eq!(s.retransmits, 7);
    assert_eq!(s.timeouts, 7);
    assert_eq!(transmitted[0], 4 + 7);
    assert_eq!(ends[1].stats().retransmits, 7);
    for end in &mut ends {
        assert_eq!(end.send(b"more"), Err(Error::Dead));
        assert_eq!(end.next_timeout(), None);
        assert_eq!(end.poll_transmit(now + 1_000 * MS, &mut buf), None);
    }
}

#[test]
fn a_receiver_that_stops_reading_holds_the_sender_back_without_killing_it() {
    let cfg = ReliableConfig {
        window: 8,
        max_retries: 3,
        ..test_cfg()
    };
    let sc = Scenario {
        cfg,
        msgs: [messages(&[1000; 200], 6), Vec::new()],
        net: CLEAN,
        seed: 7,
        read: 1000,
        // Far beyond max_retries backed-off timeouts: only answered
        // probes keep the sender alive meanwhile.
        read_from: 10_000 * MS,
    };
    let stats = simulate(&sc);
    assert!(stats[0].probes_sent > 3, "{:?}", stats[0]);
    assert_eq!(stats[1].out_of_window, 0);
}

#[test]
fn one_loss_retransmits_one_datagram() {
    let cfg = ReliableConfig {
        window: 16,
        ..test_cfg()
    };
    let mut a = Reliable::new(cfg).unwrap();
    let mut b = Reliable::new(peer_cfg(&cfg)).unwrap();
    let mut buf = [0u8; 1472];
    for i in 0..10u8 {
        a.send(&[i; 100]).unwrap();
    }
    let mut sent = Vec::new();
    while let Some(n) = a.poll_transmit(0, &mut buf) {
        sent.push(buf[..n].to_vec());
    }
    assert_eq!(sent.len(), 10);
    for (i, d) in sent.iter().enumerate() {
        if i != 1 {
            b.on_datagram(d, 100 * US).unwrap();
        }
    }
    assert_eq!(b.poll_message(|m| m[0]), Some(0));
    assert_eq!(b.poll_message(|m| m[0]), None);
    let n = b
        .poll_transmit(100 * US, &mut buf)
        .expect("an immediate ack");
    assert_eq!(n, HEADER_LEN);
    a.on_datagram(&buf[..n], 200 * US).unwrap();
    // The selective ack names the one hole: exactly it is resent, at once.
    let n = a
        .poll_transmit(200 * US, &mut buf)
        .expect("the retransmission");
    assert_eq!(buf[..n], sent[1][..]);
    assert_eq!(a.poll_transmit(200 * US, &mut buf), None);
    b.on_datagram(&sent[1], 300 * US).unwrap();
    for i in 1..10 {
        assert_eq!(b.poll_message(|m| m[0]), Some(i));
    }
    let s = a.stats();
    assert_eq!((s.retransmits, s.timeouts), (1, 0));
    assert_eq!(b.stats().out_of_order, 8);
}

#[test]
fn a_round_hands_out_one_burst_and_the_next_is_due_at_once() {
    let cfg = ReliableConfig {
        burst: 3,
        ..test_cfg()
    };
    let mut a = Reliable::new(cfg).unwrap();
    a.send(&[5; 10_000]).unwrap(); // seven datagrams
    let mut buf = [0u8; 1472];
    let mut rounds = Vec::new();
    let mut now = 0;
    while a.next_timeout().is_some_and(|t| t <= now) {
        let mut n = 0;
        while a.poll_transmit(now, &mut buf).is_some() {
            n += 1;
        }
        rounds.push(n);
        now += US;
    }
    assert_eq!(rounds, [3, 3, 1]);
    // All in flight: only the retransmission timer is left.
    assert_eq!(a.next_timeout(), Some(5 * MS));
}

#[test]
fn a_lone_datagram_is_acked_within_the_ack_delay() {
    let cfg = test_cfg();
    let mut a = Reliable::new(cfg).unwrap();
    let mut b = Reliable::new(peer_cfg(&cfg)).unwrap();
    let mut buf = [0u8; 1472];
    a.send(b"one").unwrap();
    let n = a.poll_transmit(0, &mut buf).unwrap();
    b.on_datagram(&buf[..n], 1_000).unwrap();
    assert_eq!(b.poll_transmit(1_000, &mut buf), None, "the ack waits");
    let due = b.next_timeout().expect("an ack deadline");
    assert_eq!(due, 1_000 + 200 * US);
    assert_eq!(b.poll_transmit(due - 1, &mut buf), None);
    let n = b.poll_transmit(due, &mut buf).expect("the ack");
    assert_eq!(n, HEADER_LEN);
    assert_eq!(b.next_timeout(), None);
    a.on_datagram(&buf[..n], due + 50 * US).unwrap();
    assert!(a.all_acked());
    assert_eq!(a.next_timeout(), None);
}

/// Two ends with the default settings, and those settings.
fn default_pair() -> (ReliableConfig, Reliable, Reliable) {
    let cfg = ReliableConfig {
        initial_seq: SEQ_A,
        peer_initial_seq: SEQ_B,
        ..ReliableConfig::default()
    };
    let (a, b) = (Reliable::new(cfg), Reliable::new(peer_cfg(&cfg)));
    (cfg, a.unwrap(), b.unwrap())
}

/// The earlier of two ends' timers.
fn next_due(a: &Reliable, b: &Reliable) -> Option<u64> {
    [a.next_timeout(), b.next_timeout()]
        .into_iter()
        .flatten()
        .min()
}

/// Request and response, one at a time, over a 50 us path (simulated
/// clock) that loses every tenth request. Each loss is a tail loss: no
/// later datagram's ack can reveal it. The tail-loss probe resends it after
/// two round trips and the ack delay, long before the 5 ms timeout floor.
#[test]
fn lost_requests_are_recovered_by_tail_probes_not_timeouts() {
    let (cfg, mut client, mut server) = default_pair();
    let delay = 50 * US;
    let (exchanges, mut requests, mut lost) = (200u32, 0u32, 0u32);
    let mut buf = vec![0u8; cfg.mtu];
    let mut now = 0u64;
    let mut longest = 0;
    for i in 0..exchanges {
        let started = now;
        client.send(&i.to_le_bytes()).unwrap();
        let mut answered = false;
        while !answered {
            while let Some(n) = client.poll_transmit(now, &mut buf) {
                let is_data = buf[1] == 1;
                requests += u32::from(is_data);
                if is_data && requests % 10 == 0 {
                    lost += 1;
                    continue;
                }
                server.on_datagram(&buf[..n], now + delay).unwrap();
            }
            // The server answers at once; its datagrams all arrive.
            let at = now + delay;
            while let Some(m) = server.poll_message(|m| m.to_vec()) {
                server.send(&m).unwrap();
            }
            while let Some(n) = server.poll_transmit(at, &mut buf) {
                client.on_datagram(&buf[..n], at + delay).unwrap();
            }
            if let Some(m) = client.poll_message(|m| m.to_vec()) {
                assert_eq!(m, i.to_le_bytes());
                answered = true;
                now = now.max(at + delay);
            } else {
                let next = next_due(&client, &server).expect("a timer while unanswered");
                now = now.max(next).max(at + delay);
            }
        }
        longest = longest.max(now - started);
    }
    let stats = client.stats();
    assert!(lost >= 19, "{lost} lost");
    assert_eq!(stats.tail_probes, u64::from(lost), "{stats:?}");
    assert_eq!(stats.timeouts, 0, "{stats:?}");
    // Two round trips and the ack delay, then a round trip for the probe.
    let bound = 4 * 2 * delay + cfg.ack_delay.as_nanos() as u64;
    assert!(
        longest <= bound,
        "longest exchange {longest} ns, bound {bound}"
    );
}

/// One-way messages, each sent once the previous one is acknowledged, over
/// a 50 us path (simulated clock) that loses every fifth data datagram. A
/// lone datagram's ack is delayed (the peer waits for a second one or the
/// ack delay), but a probe's is not: one round trip after the probe, the
/// sender knows its message arrived.
#[test]
fn a_probe_is_acknowledged_one_round_trip_after_it_left() {
    let (cfg, mut tx, mut rx) = default_pair();
    let delay = 50 * US;
    let mut buf = vec![0u8; cfg.mtu];
    let (mut now, mut data, mut probes) = (0u64, 0u32, 0u32);
    for i in 0..100u32 {
        tx.send(&i.to_le_bytes()).unwrap();
        let mut probe_left = None;
        while !tx.all_acked() {
            while let Some(n) = tx.poll_transmit(now, &mut buf) {
                if buf[1] == 1 {
                    data += 1;
                    if buf[2] & 0b100 != 0 {
                        probes += 1;
                        probe_left = Some(now);
                    }
                    if data % 5 == 0 {
                        continue;
                    }
                }
                rx.on_datagram(&buf[..n], now + delay).unwrap();
            }
            let at = now + delay;
            while rx.poll_message(|_| ()).is_some() {}
            while let Some(n) = rx.poll_transmit(at, &mut buf) {
                tx.on_datagram(&buf[..n], at + delay).unwrap();
            }
            if tx.all_acked() {
                now = at + delay;
                break;
            }
            now = now.max(next_due(&tx, &rx).expect("a timer while unacknowledged"));
        }
        if let Some(left) = probe_left {
            assert_eq!(now - left, 2 * delay, "message {i}");
        }
    }
    assert!(probes >= 15, "{probes} probes");
    assert_eq!(tx.stats().timeouts, 0, "{:?}", tx.stats());
}

#[test]
fn window_full_keeps_the_message_for_a_later_send() {
    let cfg = ReliableConfig {
        max_message: 3000,
        send_buffer: 4000,
        ..test_cfg()
    };
    let mut a = Reliable::new(cfg).unwrap();
    let mut b = Reliable::new(peer_cfg(&cfg)).unwrap();
    let mut buf = [0u8; 1472];
    let first = messages(&[3000], 1).remove(0);
    let second = messages(&[2000], 2).remove(0);
    a.send(&first).unwrap();
    assert_eq!(a.send(&second), Err(Error::WindowFull));
    while let Some(n) = a.poll_transmit(0, &mut buf) {
        b.on_datagram(&buf[..n], 10).unwrap();
    }
    while let Some(n) = b.poll_transmit(10, &mut buf) {
        a.on_datagram(&buf[..n], 20).unwrap();
    }
    a.send(&second).unwrap();
    while let Some(n) = a.poll_transmit(20, &mut buf) {
        b.on_datagram(&buf[..n], 30).unwrap();
    }
    assert_eq!(b.poll_message(|m| m == &first[..]), Some(true));
    assert_eq!(b.poll_message(|m| m == &second[..]), Some(true));
    assert_eq!(a.stats().messages_sent, 2);
}

#[test]
fn a_message_over_the_receivers_limit_kills_the_association() {
    let small = ReliableConfig {
        max_message: 256 << 10,
        send_buffer: 256 << 10,
        ..test_cfg()
    };
    let big = ReliableConfig {
        max_message: 1 << 20,
        send_buffer: 1 << 20,
        ..peer_cfg(&small)
    };
    let mut a = Reliable::new(big).unwrap();
    let mut b = Reliable::new(small).unwrap();
    assert_eq!(
        b.send(&vec![0; 300 << 10]),
        Err(Error::TooLarge {
            len: 300 << 10,
            max: 256 << 10
        })
    );
    a.send(&vec![0; 300 << 10]).unwrap();
    let mut buf = [0u8; 1472];
    let mut refused = None;
    'outer: for step in 0..10_000u64 {
        while let Some(n) = a.poll_transmit(step, &mut buf) {
            if let Err(e) = b.on_datagram(&buf[..n], step) {
                refused = Some(e);
                break 'outer;
            }
        }
        while let Some(n) = b.poll_transmit(step, &mut buf) {
            a.on_datagram(&buf[..n], step).unwrap();
        }
    }
    assert_eq!(
        refused,
        Some(DatagramError::MessageTooLarge { max: 256 << 10 })
    );
    assert!(b.is_dead());
    assert_eq!(b.send(b"x"), Err(Error::Dead));
}

#[test]
fn an_ack_of_data_never_sent_is_refused_and_changes_nothing() {
    let cfg = test_cfg();
    let mut a = Reliable::new(cfg).unwrap();
    let mut b = Reliable::new(peer_cfg(&cfg)).unwrap();
    let mut buf = [0u8; 1472];
    a.send(b"x").unwrap();
    a.send(b"y").unwrap();
    while let Some(n) = a.poll_transmit(0, &mut buf) {
        b.on_datagram(&buf[..n], 10).unwrap();
    }
    let n = b.poll_transmit(10, &mut buf).unwrap();
    let ack = buf[..n].to_vec();
    // To a fresh association that sent nothing, the ack is nonsense.
    let mut c = Reliable::new(cfg).unwrap();
    assert_eq!(c.on_datagram(&ack, 20), Err(DatagramError::AckOutOfRange));
    assert_eq!(c.stats().rejected, 1);
    assert!(!c.is_dead());
    a.on_datagram(&ack, 20).unwrap();
    assert!(a.all_acked());
}

#[test]
fn steady_state_traffic_allocates_nothing() {
    let cfg = test_cfg();
    let mut a = Reliable::new(cfg).unwrap();
    let mut b = Reliable::new(peer_cfg(&cfg)).unwrap();
    let msgs = messages(&[0, 1, 100, 1448, 1449, 5000, 100_000], 8);
    let mut buf = vec![0u8; cfg.mtu];
    let mut round = |a: &mut Reliable, b: &mut Reliable, now: &mut u64| {
        for m in &msgs {
            a.send(m).unwrap();
            b.send(&m[..m.len().min(3000)]).unwrap();
        }
        let (mut to_b, mut to_a) = (0, 0);
        while to_b < msgs.len() || to_a < msgs.len() || !a.all_acked() || !b.all_acked() {
            *now += 10 * US;
            while let Some(n) = a.poll_transmit(*now, &mut buf) {
                b.on_datagram(&buf[..n], *now).unwrap();
            }
            while let Some(n) = b.poll_transmit(*now, &mut buf) {
                a.on_datagram(&buf[..n], *now).unwrap();
            }
            while let Some(same) = b.poll_message(|m| m == &msgs[to_b][..]) {
                assert!(same);
                to_b += 1;
            }
            while let Some(len) = a.poll_message(|m| m.len()) {
                assert_eq!(len, msgs[to_a].len().min(3000));
                to_a += 1;
            }
            if let Some(t) = [a.next_timeout(), b.next_timeout()]
                .into_iter()
                .flatten()
                .min()
            {
                *now = (*now).max(t);
            }
        }
    };
    let mut now = 0;
    // Warm up: buffers grow to the largest backlog and message once.
    round(&mut a, &mut b, &mut now);
    round(&mut a, &mut b, &mut now);
    let before = allocations();
    for _ in 0..20 {
        round(&mut a, &mut b, &mut now);
    }
    assert_eq!(allocations() - before, 0, "allocations in steady state");
    assert_eq!(a.stats().retransmits, 0);
}

// ---------------------------------------------------------------------------
// Throughput through a model of the engine's UDP transport, on simulated
// time: deterministic, so the bounds below are safe to assert.
// ---------------------------------------------------------------------------

/// How a host's transport puts the datagrams `poll_transmit` hands it on
/// the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sends {
    /// All of them at once.
    Immediate,
    /// Like the engine's io_uring: they wait in the socket's send queue,
    /// which moves one datagram per flush (one send in flight per socket).
    /// The loop flushes on a pass that did work or found a timer due, and
    /// on every park once it has been idle for `PARK_AFTER`.
    Serial,
}

/// How long an idle engine loop spins and yields before it parks.
const PARK_AFTER: u64 = MS;
/// What one park costs (a wait in the kernel, woken by the completion of
/// the send it flushed, and the empty polls before the next park).
const PARK_CYCLE: u64 = 5 * US;

/// Loopback between two engine progress loops, each a busy loop that pays
/// simulated time per datagram. A receive path holds at most `queue`
/// datagrams that arrived but were not yet read (io_uring's provided
/// buffers plus the socket buffer) and drops the rest, as the kernel does.
#[derive(Debug, Clone, Copy)]
struct Link {
    sends: Sends,
    /// One-way delay, ns.
    delay: u64,
    /// Datagrams a receive path holds before it drops.
    queue: usize,
    /// Datagrams one pass reads at most.
    batch: usize,
    /// Random loss, per mille, besides what the receive queues drop.
    loss: u32,
    /// Extra one-way delay, uniform in 0..=jitter ns: reorders datagrams.
    jitter: u64,
    /// Time one datagram costs to send or to take in, ns.
    per_datagram: u64,
    /// Time one pass of a loop costs besides, ns.
    per_pass: u64,
    /// The receiving loop is descheduled this long (ns)...
    stall: u64,
    /// ...at the start of every period this long (0: never).
    stall_every: u64,
}

const LOOPBACK: Link = Link {
    sends: Sends::Serial,
    delay: 10 * US,
    queue: 150,
    batch: 32,
    loss: 0,
    jitter: 0,
    per_datagram: US,
    per_pass: 200,
    stall: 0,
    stall_every: 0,
};

/// The engine's settings for a reliable UDP link (see `NetOut::add_udp`).
fn engine_cfg() -> ReliableConfig {
    let max = 32 + (16 << 20);
    ReliableConfig {
        initial_seq: 0x1234_5678,
        peer_initial_seq: 0x8765_4321,
        max_message: max,
        send_buffer: max,
        ..ReliableConfig::default()
    }
}

/// One end of the link: its association, its loop and its socket.
struct Host {
    end: Reliable,
    /// When its next pass starts; `None`: parked until a datagram arrives.
    next_pass: Option<u64>,
    /// When its current pass ends: no other starts before.
    busy_until: u64,
    /// Since when its loop has found nothing to do.
    idle_since: Option<u64>,
    /// Arrived, not yet read.
    rx: std::collections::VecDeque<Vec<u8>>,
    /// Handed to the transport, not yet on the wire.
    tx: std::collections::VecDeque<Vec<u8>>,
    dropped: u64,
}

impl Host {
    /// Puts what the transport holds on the wire: one datagram, or all.
    fn flush(&mut self, link: &Link, wire: &mut Wire, to: usize, t: &mut u64) -> bool {
        let mut sent = false;
        while let Some(d) = self.tx.pop_front() {
            wire.send(*t, to, &d);
            *t += link.per_datagram;
            sent = true;
            if link.sends == Sends::Serial {
                break;
            }
        }
        sent
    }
}

/// What `run_link` measured.
#[derive(Debug)]
struct LinkRun {
    /// Simulated ns until the receiver had taken the last message.
    elapsed: u64,
    stats: [Stats; 2],
    /// Datagrams the receive queues dropped, per side.
    queue_drops: [u64; 2],
}

/// Side 0 sends `msgs` to side 1 over `link`, both driven the way the
/// engine drives them: each pass reads what arrived (`on_datagram`), takes
/// every finished message (`poll_message`), and if it did anything or
/// `next_timeout` has expired, hands the transport whatever
/// `poll_transmit` gives until `None`; an idle loop sleeps until
/// `next_timeout` or an arrival. Checks every message and returns once
/// side 1 has them all and side 0 has them acknowledged.
fn run_link(cfg: ReliableConfig, link: Link, msgs: &[Vec<u8>], seed: u64) -> LinkRun {
    let mut hosts = [cfg, peer_cfg(&cfg)].map(|c| Host {
        end: Reliable::new(c).expect("config"),
        next_pass: Some(0),
        busy_until: 0,
        idle_since: None,
        rx: Default::default(),
        tx: Default::default(),
        dropped: 0,
    });
    let net = Network {
        loss: link.loss,
        dup: 0,
        delay: link.delay,
        jitter: link.jitter,
    };
    let mut wire = Wire::new(net, seed);
    let mut buf = vec![0u8; cfg.mtu];
    let (mut queued, mut got) = (0, 0);
    let mut elapsed = None;
    loop {
        let pass = (0..2)
            .filter_map(|i| hosts[i].next_pass.map(|t| (t, i)))
            .min();
        if let Some(a) = wire.next_at().filter(|&a| pass.is_none_or(|(t, _)| a <= t)) {
            let (to, bytes) = wire.pop_due(a).expect("due");
            let h = &mut hosts[to];
            if h.rx.len() >= link.queue {
                h.dropped += 1;
            } else {
                h.rx.push_back(bytes);
            }
            // A parked loop wakes up; a busy one sees it on its next pass.
            let wake = a.max(h.busy_until);
            h.next_pass = Some(h.next_pass.map_or(wake, |t| t.min(wake)));
            continue;
        }
        let (mut start, i) = pass.unwrap_or_else(|| {
            panic!(
                "deadlock: queued {queued}, got {got}, {:?}",
                hosts.each_ref().map(|h| &h.end)
            )
        });
        assert!(
            start < 60_000 * MS,
            "no progress by {start} ns: got {got} of {}, {:?}",
            msgs.len(),
            hosts.each_ref().map(|h| &h.end)
        );
        if i == 1 && link.stall_every > 0 {
            let phase = start % link.stall_every;
            if phase < link.stall {
                start += link.stall - phase;
            }
        }
        let h = &mut hosts[i];
        let mut t = start + link.per_pass;
        let mut work = 0usize;
        if i == 0 {
            while let Some(m) = msgs.get(queued) {
                match h.end.send(m) {
                    Ok(()) => queued += 1,
                    Err(Error::WindowFull) => break,
                    Err(e) => panic!("send: {e}"),
                }
                work += 1;
            }
        }
        for _ in 0..link.batch {
            let Some(d) = h.rx.pop_front() else { break };
            h.end.on_datagram(&d, t).expect("a well-formed datagram");
            t += link.per_datagram;
            work += 1;
        }
        if i == 1 {
            loop {
                let want = msgs.get(got);
                let same = h.end.poll_message(|m| want.is_some_and(|w| m == &w[..]));
                let Some(same) = same else { break };
                assert!(same, "message {got} wrong or unexpected");
                // Copied out at about 8 GB/s.
                t += link.per_datagram + want.map_or(0, |w| w.len() as u64 / 8);
                got += 1;
                work += 1;
            }
            if got == msgs.len() && elapsed.is_none() {
                elapsed = Some(t);
            }
        }
        let due = h.end.next_timeout().is_some_and(|d| d <= t);
        let mut flushed = false;
        if work > 0 || due {
            while let Some(n) = h.end.poll_transmit(t, &mut buf) {
                h.tx.push_back(buf[..n].to_vec());
            }
            flushed = h.flush(&link, &mut wire, 1 - i, &mut t);
        }
        assert!(!h.end.is_dead(), "side {i} died: {:?}", h.end);
        h.busy_until = t;
        if work > 0 {
            h.idle_since = None;
        } else {
            h.idle_since.get_or_insert(start);
        }
        let park_at = h.idle_since.map(|s| s + PARK_AFTER);
        if !flushed && !h.tx.is_empty() && park_at.is_some_and(|p| p <= t) {
            // Parking flushes the transport first; the send's completion
            // ends the park, and the loop parks again after a few polls.
            flushed = h.flush(&link, &mut wire, 1 - i, &mut t);
            t += PARK_CYCLE;
            h.busy_until = t;
        }
        h.next_pass = if work > 0 || flushed || !h.rx.is_empty() {
            Some(t)
        } else {
            // Spinning, yielding or parked: nothing changes before its
            // timer, the park (with sends waiting) or an arrival.
            let park = park_at.filter(|_| !h.tx.is_empty());
            [h.end.next_timeout(), park]
                .into_iter()
                .flatten()
                .min()
                .map(|d| d.max(t))
        };
        if elapsed.is_some() && hosts[0].end.all_acked() && hosts[0].tx.is_empty() {
            break;
        }
    }
    LinkRun {
        elapsed: elapsed.expect("done"),
        stats: [hosts[0].end.stats(), hosts[1].end.stats()],
        queue_drops: [hosts[0].dropped, hosts[1].dropped],
    }
}

/// Runs one transfer, prints what it measured (`--nocapture` shows it) and
/// checks it took at most `bound` ns of simulated time.
fn transfer(what: &str, link: Link, sizes: &[usize], bound: u64) -> LinkRun {
    let msgs = messages(sizes, 21);
    let run = run_link(engine_cfg(), link, &msgs, 31);
    let bytes: usize = sizes.iter().sum();
    let secs = run.elapsed as f64 / 1e9;
    eprintln!(
        "{what}: {:.2} ms simulated, {:.0} MB/s; queue drops {:?}; \
         sender: {} datagrams, {} resent, {} timeouts, {} window cuts, {} undone; \
         receiver: {} duplicates",
        secs * 1e3,
        bytes as f64 / secs / 1e6,
        run.queue_drops,
        run.stats[0].datagrams_sent,
        run.stats[0].retransmits,
        run.stats[0].timeouts,
        run.stats[0].window_cuts,
        run.stats[0].window_undos,
        run.stats[1].duplicates,
    );
    assert!(
        run.elapsed <= bound,
        "{what}: {} ms of simulated time, more than {} ms: {run:?}",
        run.elapsed / MS,
        bound / MS
    );
    run
}

#[test]
fn bulk_transfer_through_the_engine_transport_keeps_up() {
    for sends in [Sends::Serial, Sends::Immediate] {
        let link = Link { sends, ..LOOPBACK };
        let tag = format!("{sends:?}");
        transfer(&format!("{tag}: 8 MiB"), link, &[8 << 20], 200 * MS);
        transfer(&format!("{tag}: 16 MiB"), link, &[16 << 20], 400 * MS);
        let lossy = Link { loss: 10, ..link };
        transfer(
            &format!("{tag}: 8 MiB, 1% loss"),
            lossy,
            &[8 << 20],
            2000 * MS,
        );
        // Datagrams overtaking each other by up to 10 datagrams' time: false
        // losses, whose window cuts are undone.
        let reordering = Link {
            jitter: 10 * US,
            ..link
        };
        let run = transfer(
            &format!("{tag}: 8 MiB, reordering"),
            reordering,
            &[8 << 20],
            400 * MS,
        );
        assert!(
            run.stats[0].window_undos > 0,
            "{tag}: no cut undone: {:?}",
            run.stats[0]
        );
        let slow_peer = Link {
            stall: 300 * US,
            stall_every: 5 * MS,
            ..link
        };
        transfer(
            &format!("{tag}: 8 MiB, receiver stalls"),
            slow_peer,
            &[8 << 20],
            400 * MS,
        );
    }
}

#[test]
fn a_window_beyond_the_receive_queue_costs_little() {
    // Windows past what the receiving socket holds: whenever the receiver
    // falls behind (each small message costs it a copy), its socket drops,
    // often far past what one ack can report. Those losses must be
    // repaired without resending what arrived.
    let sizes: Vec<usize> = (0..10_000).map(|i| 16 + (i * 37) % 200).collect();
    for window in [256, 1024] {
        let msgs = messages(&sizes, 23);
        let cfg = ReliableConfig {
            window,
            ..engine_cfg()
        };
        let run = run_link(cfg, LOOPBACK, &msgs, 33);
        assert!(run.queue_drops[1] > 0, "{run:?}");
        assert_eq!(run.stats[1].duplicates, 0, "{run:?}");
        assert!(run.elapsed < 100 * MS, "window {window}: {run:?}");
    }
}

#[test]
fn small_messages_through_the_engine_transport_keep_up() {
    let sizes: Vec<usize> = (0..10_000).map(|i| 16 + (i * 37) % 200).collect();
    for sends in [Sends::Serial, Sends::Immediate] {
        let link = Link { sends, ..LOOPBACK };
        let tag = format!("{sends:?}");
        transfer(&format!("{tag}: 10,000 small"), link, &sizes, 200 * MS);
        let lossy = Link { loss: 10, ..link };
        transfer(
            &format!("{tag}: 10,000 small, 1% loss"),
            lossy,
            &sizes,
            2000 * MS,
        );
    }
}
