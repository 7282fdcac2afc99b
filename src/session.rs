//! The table of links to peer engine instances ("sessions"): what the control
//! plane records about each, and which are lost. A session's index is part of
//! every `PeerId` reached through it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use comm_shm::ProcessWatch;
use crossbeam_utils::CachePadded;

use crate::fd_table::InProcessTable;
use crate::stats::{ShardCounters, Tally};
use crate::{Error, LinkStats, ReliableLinkStats, TransportKind};

/// Sessions an engine can hold (the index is 16 bits of a `PeerId`).
const MAX_SESSIONS: usize = u16::MAX as usize;

/// One shard's share of a link's counters (written by that shard only).
pub(crate) type LinkCounters = CachePadded<ShardCounters>;

/// A link to a peer engine instance, as the control plane records it.
pub(crate) struct Session {
    pub peer_engine: String,
    pub peer_instance: u64,
    pub transport: TransportKind,
    pub rings: usize,
    /// Per local shard, its share of the link's counters.
    pub counters: Vec<Arc<LinkCounters>>,
    /// The peer process, for same-node peers (checked every 100 ms).
    pub owner: Option<InProcessTable<ProcessWatch>>,
    /// Every shard has its half: `connect` may hand out peers on it.
    pub ready: bool,
    pub lost: bool,
}

impl Session {
    /// Counters for a new link on an engine of `shards` shards.
    pub(crate) fn counters_for(shards: usize) -> Vec<Arc<LinkCounters>> {
        (0..shards).map(|_| Arc::default()).collect()
    }
}

/// All sessions, and a lock-free "lost" bit per session for the send path.
pub(crate) struct Sessions {
    table: Mutex<Vec<Session>>,
    lost: Box<[AtomicU64]>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sessions {
    pub(crate) fn new() -> Self {
        Sessions {
            table: Mutex::new(Vec::new()),
            lost: (0..MAX_SESSIONS.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    /// The newest live link to `instance`.
    pub(crate) fn live_for(&self, instance: u64) -> Option<u16> {
        lock(&self.table)
            .iter()
            .rposition(|s| s.peer_instance == instance && s.ready && !s.lost)
            .map(|i| i as u16)
    }

    pub(crate) fn add(&self, s: Session) -> Result<u16, Error> {
        let mut table = lock(&self.table);
        if table.len() >= MAX_SESSIONS {
            return Err(Error::Config("too many peer engines"));
        }
        table.push(s);
        Ok((table.len() - 1) as u16)
    }

    /// Every shard has its half of the link now.
    pub(crate) fn mark_ready(&self, session: u16) {
        if let Some(s) = lock(&self.table).get_mut(usize::from(session)) {
            s.ready = true;
        }
    }

    /// Whether the link is gone. One load: this is on the send path.
    #[inline]
    pub(crate) fn is_lost(&self, session: u16) -> bool {
        let s = usize::from(session);
        self.lost[s / 64].load(Ordering::Acquire) & (1 << (s % 64)) != 0
    }

    /// Marks a link lost; true if it was live until now.
    pub(crate) fn mark_lost(&self, session: u16) -> bool {
        let mut table = lock(&self.table);
        let Some(entry) = table.get_mut(usize::from(session)) else {
            return false;
        };
        if std::mem::replace(&mut entry.lost, true) {
            return false;
        }
        let s = usize::from(session);
        self.lost[s / 64].fetch_or(1 << (s % 64), Ordering::AcqRel);
        true
    }

    pub(crate) fn transport_of(&self, session: u16) -> Option<TransportKind> {
        lock(&self.table)
            .get(usize::from(session))
            .filter(|s| !s.lost)
            .map(|s| s.transport)
    }

    /// Live links whose peer process has exited.
    pub(crate) fn orphaned(&self) -> Vec<u16> {
        lock(&self.table)
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.lost && s.owner.as_ref().is_some_and(|o| !o.is_alive()))
            .map(|(i, _)| i as u16)
            .collect()
    }

    pub(crate) fn stats(&self) -> Vec<LinkStats> {
        lock(&self.table)
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let mut t = Tally::default();
                let mut reliable = ReliableLinkStats::default();
                for c in &l.counters {
                    c.add_to(&mut t);
                    c.add_reliable_to(&mut reliable);
                }
                LinkStats {
                    session: i as u16,
                    peer_engine: l.peer_engine.clone(),
                    peer_instance: l.peer_instance,
                    transport: l.transport,
                    rings: l.rings,
                    lost: l.lost,
                    sent_msgs: t.sent_msgs,
                    sent_bytes: t.sent_bytes,
                    recv_msgs: t.recv_msgs,
                    recv_bytes: t.recv_bytes,
                    drops: t.drops,
                    errors: t.errors,
                    lane_switches: t.lane_switches,
                    reliable,
                }
            })
            .collect()
    }
}
