//! Counters published by the progress threads and read by `Engine::stats`.
//! Each counter has one writer (its shard), which updates it with a plain
//! store: no read-modify-write on the data path.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::TransportKind;

/// One shard's counters (or one shard's share of a link's), written only by
/// its progress thread.
#[derive(Default)]
pub(crate) struct ShardCounters {
    sent_msgs: AtomicU64,
    sent_bytes: AtomicU64,
    recv_msgs: AtomicU64,
    recv_bytes: AtomicU64,
    drops: AtomicU64,
    errors: AtomicU64,
    lane_switches: AtomicU64,
    reliable: ReliableCounters,
}

/// The reliable-UDP share of `ShardCounters`, published apart from the
/// rest (rarely, and only by shards with reliable associations).
#[derive(Default)]
struct ReliableCounters {
    retransmits: AtomicU64,
    spurious_retransmits: AtomicU64,
    timeouts: AtomicU64,
    tail_probes: AtomicU64,
    duplicates: AtomicU64,
    window_cuts: AtomicU64,
    window_undos: AtomicU64,
    srtt_ns: AtomicU64,
}

/// A shard's local tallies, published to its `ShardCounters` once per loop.
#[derive(Default, Clone, Copy)]
pub(crate) struct Tally {
    pub sent_msgs: u64,
    pub sent_bytes: u64,
    pub recv_msgs: u64,
    pub recv_bytes: u64,
    pub drops: u64,
    pub errors: u64,
    pub lane_switches: u64,
}

impl ShardCounters {
    pub(crate) fn publish(&self, t: &Tally) {
        self.sent_msgs.store(t.sent_msgs, Ordering::Relaxed);
        self.sent_bytes.store(t.sent_bytes, Ordering::Relaxed);
        self.recv_msgs.store(t.recv_msgs, Ordering::Relaxed);
        self.recv_bytes.store(t.recv_bytes, Ordering::Relaxed);
        self.drops.store(t.drops, Ordering::Relaxed);
        self.errors.store(t.errors, Ordering::Relaxed);
        self.lane_switches.store(t.lane_switches, Ordering::Relaxed);
    }

    /// Publishes this shard's share of a link's reliable-UDP figures.
    pub(crate) fn publish_reliable(&self, r: &ReliableLinkStats) {
        let c = &self.reliable;
        c.retransmits.store(r.retransmits, Ordering::Relaxed);
        c.spurious_retransmits
            .store(r.spurious_retransmits, Ordering::Relaxed);
        c.timeouts.store(r.timeouts, Ordering::Relaxed);
        c.tail_probes.store(r.tail_probes, Ordering::Relaxed);
        c.duplicates.store(r.duplicates, Ordering::Relaxed);
        c.window_cuts.store(r.window_cuts, Ordering::Relaxed);
        c.window_undos.store(r.window_undos, Ordering::Relaxed);
        c.srtt_ns.store(r.srtt_ns, Ordering::Relaxed);
    }

    /// Adds this shard's reliable-UDP share to `r` (the round trip is the
    /// largest of the shares: the slowest path of the link).
    pub(crate) fn add_reliable_to(&self, r: &mut ReliableLinkStats) {
        let c = &self.reliable;
        r.add(&ReliableLinkStats {
            retransmits: c.retransmits.load(Ordering::Relaxed),
            spurious_retransmits: c.spurious_retransmits.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
            tail_probes: c.tail_probes.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            window_cuts: c.window_cuts.load(Ordering::Relaxed),
            window_undos: c.window_undos.load(Ordering::Relaxed),
            srtt_ns: c.srtt_ns.load(Ordering::Relaxed),
        });
    }

    /// Adds these counters to `t` (summing a link's shares across shards).
    pub(crate) fn add_to(&self, t: &mut Tally) {
        t.sent_msgs += self.sent_msgs.load(Ordering::Relaxed);
        t.sent_bytes += self.sent_bytes.load(Ordering::Relaxed);
        t.recv_msgs += self.recv_msgs.load(Ordering::Relaxed);
        t.recv_bytes += self.recv_bytes.load(Ordering::Relaxed);
        t.drops += self.drops.load(Ordering::Relaxed);
        t.errors += self.errors.load(Ordering::Relaxed);
        t.lane_switches += self.lane_switches.load(Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, shard: usize, core: usize) -> ShardStats {
        ShardStats {
            shard,
            core,
            sent_msgs: self.sent_msgs.load(Ordering::Relaxed),
            sent_bytes: self.sent_bytes.load(Ordering::Relaxed),
            recv_msgs: self.recv_msgs.load(Ordering::Relaxed),
            recv_bytes: self.recv_bytes.load(Ordering::Relaxed),
            drops: self.drops.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// Counters of one shard (progress thread).
///
/// ```
/// let s = comm::ShardStats::default();
/// assert_eq!(s.sent_msgs + s.recv_msgs, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Shard index.
    pub shard: usize,
    /// Core the shard's thread is pinned to.
    pub core: usize,
    /// Messages sent.
    pub sent_msgs: u64,
    /// Payload bytes sent.
    pub sent_bytes: u64,
    /// Messages received.
    pub recv_msgs: u64,
    /// Payload bytes received.
    pub recv_bytes: u64,
    /// Messages dropped (addressed to an unknown endpoint).
    pub drops: u64,
    /// Errors (malformed frames, failed deliveries).
    pub errors: u64,
}

/// How a link's reliable UDP protocol fares: what it had to repair. All
/// zero on links of other transports (and on datagram-mode UDP).
///
/// ```
/// use comm::ReliableLinkStats;
/// let mut a = ReliableLinkStats { retransmits: 2, srtt_ns: 40_000, ..Default::default() };
/// a.add(&ReliableLinkStats { retransmits: 1, srtt_ns: 90_000, ..Default::default() });
/// assert_eq!((a.retransmits, a.srtt_ns), (3, 90_000));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReliableLinkStats {
    /// Data datagrams sent again (after a timeout, a selective-ack hole or
    /// as a tail-loss probe).
    pub retransmits: u64,
    /// Retransmissions found needless afterwards (the original arrived).
    pub spurious_retransmits: u64,
    /// Retransmission timeouts that fired with data in flight.
    pub timeouts: u64,
    /// Tail-loss probes: the last datagram in flight sent again two round
    /// trips after nothing was heard, instead of waiting for a timeout.
    pub tail_probes: u64,
    /// Data datagrams received twice and dropped.
    pub duplicates: u64,
    /// Times a congestion window was cut (a loss episode or a timeout).
    pub window_cuts: u64,
    /// Cuts undone because the losses behind them proved false (the path
    /// reordered datagrams).
    pub window_undos: u64,
    /// Smoothed round-trip time in nanoseconds, the largest of the link's
    /// live associations (as last published); 0 until measured.
    pub srtt_ns: u64,
}

impl ReliableLinkStats {
    /// Adds `other`'s counters to these; the round trip becomes the larger
    /// of the two.
    ///
    /// ```
    /// let mut total = comm::ReliableLinkStats::default();
    /// total.add(&comm::ReliableLinkStats { timeouts: 1, ..Default::default() });
    /// assert_eq!(total.timeouts, 1);
    /// ```
    pub fn add(&mut self, other: &ReliableLinkStats) {
        self.retransmits += other.retransmits;
        self.spurious_retransmits += other.spurious_retransmits;
        self.timeouts += other.timeouts;
        self.tail_probes += other.tail_probes;
        self.duplicates += other.duplicates;
        self.window_cuts += other.window_cuts;
        self.window_undos += other.window_undos;
        self.srtt_ns = self.srtt_ns.max(other.srtt_ns);
    }
}

impl From<&crate::reliable::Stats> for ReliableLinkStats {
    fn from(s: &crate::reliable::Stats) -> Self {
        ReliableLinkStats {
            retransmits: s.retransmits,
            spurious_retransmits: s.spurious_retransmits,
            timeouts: s.timeouts,
            tail_probes: s.tail_probes,
            duplicates: s.duplicates,
            window_cuts: s.window_cuts,
            window_undos: s.window_undos,
            srtt_ns: s.srtt_ns,
        }
    }
}

/// One link: the connection between this engine and a peer engine instance.
///
/// ```
/// use comm::{LinkStats, TransportKind};
/// let l = LinkStats {
///     session: 0,
///     peer_engine: "kv".into(),
///     peer_instance: 1,
///     transport: TransportKind::Shm,
///     rings: 4,
///     lost: false,
///     sent_msgs: 0,
///     sent_bytes: 0,
///     recv_msgs: 0,
///     recv_bytes: 0,
///     drops: 0,
///     errors: 0,
///     lane_switches: 0,
///     reliable: Default::default(),
/// };
/// assert_eq!(l.transport, TransportKind::Shm);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStats {
    /// Session index (part of every `PeerId` reached through the link).
    pub session: u16,
    /// The peer engine's name.
    pub peer_engine: String,
    /// The peer engine instance.
    pub peer_instance: u64,
    /// The transport the link runs on.
    pub transport: TransportKind,
    /// Rings (shard-to-shard channels) in each direction.
    pub rings: usize,
    /// The link is gone: the peer shut down, died, or its set-up failed.
    /// Sends to its peers fail with [`Error::PeerLost`](crate::Error::PeerLost).
    pub lost: bool,
    /// Messages sent over the link.
    pub sent_msgs: u64,
    /// Payload bytes sent over the link.
    pub sent_bytes: u64,
    /// Messages received over the link.
    pub recv_msgs: u64,
    /// Payload bytes received over the link.
    pub recv_bytes: u64,
    /// Messages from the link dropped (addressed to an unknown endpoint).
    pub drops: u64,
    /// Errors on the link (malformed frames, failed deliveries).
    pub errors: u64,
    /// How often this side moved its sending to another of a shard pair's
    /// TCP connections (lanes): once per large message over TCP, 0 on
    /// other transports.
    pub lane_switches: u64,
    /// What the reliable UDP protocol repaired on this link (zero on other
    /// transports).
    pub reliable: ReliableLinkStats,
}

/// A snapshot of an engine's counters.
///
/// ```
/// let s = comm::Stats::default();
/// assert_eq!(s.total_sent(), 0);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Per shard.
    pub shards: Vec<ShardStats>,
    /// Per link.
    pub links: Vec<LinkStats>,
    /// Control connections refused (another engine name, bad handshakes).
    pub control_rejects: u64,
}

impl Stats {
    /// Messages sent by all shards.
    ///
    /// ```
    /// assert_eq!(comm::Stats::default().total_sent(), 0);
    /// ```
    pub fn total_sent(&self) -> u64 {
        self.shards.iter().map(|s| s.sent_msgs).sum()
    }

    /// Messages received by all shards.
    ///
    /// ```
    /// assert_eq!(comm::Stats::default().total_received(), 0);
    /// ```
    pub fn total_received(&self) -> u64 {
        self.shards.iter().map(|s| s.recv_msgs).sum()
    }
}
