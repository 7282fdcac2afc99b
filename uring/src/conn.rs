//! Connections: the sockets a ring drives, their ids, and the table that
//! owns their per-socket state.

use std::os::fd::OwnedFd;

use crate::datagram::Msgs;
use crate::send_queue::SendQueue;

/// Identifies one socket added to a [`Uring`](crate::Uring).
///
/// Ids carry a generation: once a connection is fully retired its id never
/// matches again, even after the slot is reused, so a stale id gets
/// [`SendError::Closed`](crate::SendError::Closed) instead of reaching a
/// stranger.
///
/// ```
/// # fn f(id: comm_uring::ConnId) {
/// let raw: u32 = id.as_u32(); // e.g. for logs or a compact map key
/// # let _ = raw;
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u32);

/// Low bits: slot index; high bits: generation.
const INDEX_BITS: u32 = 20;
const INDEX_MASK: u32 = (1 << INDEX_BITS) - 1;
/// Most connections one ring can hold at once.
pub(crate) const MAX_CONNS: usize = 1 << INDEX_BITS;

impl ConnId {
    fn new(index: usize, gen: u32) -> ConnId {
        ConnId((index as u32 & INDEX_MASK) | (gen << INDEX_BITS))
    }

    pub(crate) fn from_raw(raw: u32) -> ConnId {
        ConnId(raw)
    }

    pub(crate) fn index(self) -> usize {
        (self.0 & INDEX_MASK) as usize
    }

    fn gen(self) -> u32 {
        self.0 >> INDEX_BITS
    }

    /// The connection's place in the ring's table: small and dense, so it
    /// can index per-connection arrays, and reused by a later connection
    /// once this one is closed (keep the whole id beside it to tell them
    /// apart).
    ///
    /// ```
    /// # fn f(a: comm_uring::ConnId) {
    /// assert!(a.slot() <= a.as_u32() as usize);
    /// # }
    /// ```
    pub fn slot(self) -> usize {
        self.index()
    }

    /// The id as a plain number, unique among the ring's live connections.
    ///
    /// ```
    /// # fn f(a: comm_uring::ConnId, b: comm_uring::ConnId) {
    /// assert_eq!(a == b, a.as_u32() == b.as_u32());
    /// # }
    /// ```
    pub fn as_u32(self) -> u32 {
        self.0
    }
}

/// TCP stream or UDP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Stream,
    Datagram,
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Not in use; the slot waits in the free list.
    Free,
    /// Sending and receiving.
    Open,
    /// Torn down: waiting for its operations and zero-copy notifications
    /// to finish before the socket is closed and the slot reused.
    Closing,
}

/// Everything a ring keeps per socket, except the reassembly buffer (which
/// lives apart so that records can be lent out of it while sends are queued).
#[derive(Debug)]
pub(crate) struct Slot {
    gen: u32,
    pub(crate) state: State,
    pub(crate) kind: Kind,
    pub(crate) fd: Option<OwnedFd>,
    /// A multishot receive is in flight.
    pub(crate) recv_armed: bool,
    /// Its cancellation was asked for (busy polling took over, or a pause).
    pub(crate) recv_cancelling: bool,
    /// Reading is paused (see `Uring::pause_receive`).
    pub(crate) paused: bool,
    /// Data came lately: while busy polling, read by plain receives.
    pub(crate) hot: bool,
    /// Plain receives in a row that found nothing (cooling down).
    pub(crate) empty_reads: u32,
    pub(crate) tx: SendQueue,
    /// Zero-copy segments not yet reported as done.
    pub(crate) zc_pending: u32,
    /// Listed in [`Conns::dirty`], waiting for `flush`.
    dirty: bool,
    /// A cancellation of its operations has been submitted.
    pub(crate) cancelled: bool,
    /// Close with a reset (unsent data was thrown away).
    pub(crate) abortive: bool,
    /// Datagram sockets only.
    pub(crate) msgs: Option<Box<Msgs>>,
    /// The peer is on this host: traffic crosses the loopback device, which
    /// copies zero-copy pages anyway (after pinning them), so in-place sends
    /// go out as plain copies.
    pub(crate) local: bool,
}

impl Slot {
    fn empty() -> Slot {
        Slot {
            gen: 0,
            state: State::Free,
            kind: Kind::Stream,
            fd: None,
            recv_armed: false,
            recv_cancelling: false,
            paused: false,
            hot: false,
            empty_reads: 0,
            tx: SendQueue::default(),
            zc_pending: 0,
            local: false,
            dirty: false,
            cancelled: false,
            abortive: false,
            msgs: None,
        }
    }

    /// Whether it still has operations that the kernel may complete.
    pub(crate) fn ops_in_flight(&self) -> bool {
        self.recv_armed || self.tx.in_flight()
    }
}

/// The connections of one ring: a slab of slots with generation-checked ids
/// and a list of the ones with work for the next `flush`.
#[derive(Debug, Default)]
pub(crate) struct Conns {
    slots: Vec<Slot>,
    free: Vec<usize>,
    dirty: Vec<usize>,
}

impl Conns {
    /// Takes a slot for a new socket; `None` when the table is full.
    pub(crate) fn insert(
        &mut self,
        kind: Kind,
        fd: OwnedFd,
        msgs: Option<Box<Msgs>>,
    ) -> Option<ConnId> {
        let index = match self.free.pop() {
            Some(i) => i,
            None if self.slots.len() < MAX_CONNS => {
                self.slots.push(Slot::empty());
                self.slots.len() - 1
            }
            None => return None,
        };
        let slot = &mut self.slots[index];
        slot.state = State::Open;
        slot.kind = kind;
        slot.fd = Some(fd);
        slot.recv_armed = false;
        slot.recv_cancelling = false;
        slot.paused = false;
        slot.hot = false;
        slot.empty_reads = 0;
        slot.zc_pending = 0;
        slot.cancelled = false;
        slot.abortive = false;
        slot.msgs = msgs;
        slot.local = false;
        let id = ConnId::new(index, slot.gen);
        self.mark_dirty(id);
        Some(id)
    }

    /// How many slots exist (live or free); indexes are below this.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The live (open or closing) connection `id`, if the id is current.
    pub(crate) fn get(&self, id: ConnId) -> Option<&Slot> {
        self.slots
            .get(id.index())
            .filter(|s| s.gen == id.gen() && s.state != State::Free)
    }

    /// Mutable form of [`Conns::get`].
    pub(crate) fn get_mut(&mut self, id: ConnId) -> Option<&mut Slot> {
        self.slots
            .get_mut(id.index())
            .filter(|s| s.gen == id.gen() && s.state != State::Free)
    }

    /// The current id of the slot at `index`, if it is live.
    pub(crate) fn id_at(&self, index: usize) -> Option<ConnId> {
        let s = self.slots.get(index)?;
        (s.state != State::Free).then(|| ConnId::new(index, s.gen))
    }

    /// Queues `id` for the next `flush` (once).
    pub(crate) fn mark_dirty(&mut self, id: ConnId) {
        if let Some(s) = self.slots.get_mut(id.index()) {
            if !s.dirty {
                s.dirty = true;
                self.dirty.push(id.index());
            }
        }
    }

    /// Whether any connection waits for `flush`.
    pub(crate) fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Moves the dirty list into `into` (whose old contents are dropped,
    /// its allocation kept), so that connections can be marked again while
    /// the caller works through it.
    pub(crate) fn take_dirty(&mut self, into: &mut Vec<usize>) {
        into.clear();
        std::mem::swap(into, &mut self.dirty);
        for &i in into.iter() {
            if let Some(s) = self.slots.get_mut(i) {
                s.dirty = false;
            }
        }
    }

    /// Frees the slot of `id` for reuse under a new generation. The socket
    /// is closed here if it was not before.
    pub(crate) fn retire(&mut self, id: ConnId) {
        let index = id.index();
        if let Some(s) = self.get_mut(id) {
            s.state = State::Free;
            s.fd = None;
            s.msgs = None;
            s.tx.shrink();
            s.gen = (s.gen + 1) & ((1 << (32 - INDEX_BITS)) - 1);
            self.free.push(index);
        }
    }

    /// Ids of every live connection.
    pub(crate) fn live(&self) -> impl Iterator<Item = ConnId> + '_ {
        (0..self.slots.len()).filter_map(|i| self.id_at(i))
    }

    /// Whether any connection is still live.
    pub(crate) fn any_live(&self) -> bool {
        self.slots.iter().any(|s| s.state != State::Free)
    }

    /// Every slot, for teardown when the ring is dropped.
    pub(crate) fn slots_mut(&mut self) -> &mut [Slot] {
        &mut self.slots
    }
}
