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
