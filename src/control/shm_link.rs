//! Set-up of shared-memory links: the initiator builds one pair segment
//! holding a ring per (its shard, their shard) in each direction; the
//! acceptor maps it; both map each other's doorbells and buffer pools.

use std::net::TcpStream;
use std::sync::{mpsc, Arc};
use std::time::Instant;

use comm_shm::Segment;

use super::wire::{Hello, Message, Offer};
use super::{kind_code, link_reply, peer_layout, protocol, remaining, BELL_STRIDE, PEER_IDLE};
use crate::engine::{bells_name, pair_name, pool_name, EngineShared};
use crate::fd_table::InProcessTable;
use crate::link::PairLayout;
use crate::session::{LinkCounters, Session};
use crate::shard::{Command, LinkHalf};
use crate::{Error, TransportKind};

/// The listener side: attach to the initiator's pair segment.
pub(super) fn accept(shared: &EngineShared, theirs: &Hello, offer: &Offer) -> Result<Offer, Error> {
    if theirs.node != shared.node.as_str() || !shared.transports.allows(TransportKind::Shm) {
        return Err(Error::NoTransport {
            wanted: shared.transports.candidates(),
            available: vec![TransportKind::Shm],
        });
    }
    let layout = peer_layout(shared, theirs, false)?;
    // Names are derived from the peer's identity, never taken from it, so a
    // peer cannot point us at someone else's segments.
    let segment = pair_name(&shared.name, theirs.instance, shared.instance);
    let bells = bells_name(&theirs.engine, theirs.instance);
    if offer.param("segment") != Some(segment.as_str())
        || offer.param("bells") != Some(bells.as_str())
    {
        return Err(protocol(2));
    }
    let seg = open_owned(&segment, theirs)?;
    // Both sides have it mapped from here on; the name is no longer needed.
    seg.unlink()?;
    let link = Link {
        theirs,
        layout,
        seg: &seg,
        bells: &bells,
        initiator: false,
    };
    link.attach(shared, Instant::now() + PEER_IDLE)?;
    Ok(Offer {
        kind: kind_code(TransportKind::Shm),
        params: vec![("bells".into(), shared.bells.name().to_owned())],
    })
}

/// Opens a segment the peer says it created, checking that it did.
fn open_owned(name: &str, theirs: &Hello) -> Result<Arc<Segment>, Error> {
    let seg = Segment::open(name)?;
    if seg.header().owner_pid != theirs.pid {
        return Err(Error::Refused {
            reason: format!("segment {name} does not belong to the peer process"),
        });
    }
    Ok(Arc::new(seg))
}

/// Opens a peer's doorbell segment, checking it holds `shards` doorbells.
fn open_bells(name: &str, theirs: &Hello, shards: usize) -> Result<Arc<Segment>, Error> {
    let bells = open_owned(name, theirs)?;
    if bells.payload_len() < shards * BELL_STRIDE {
        return Err(protocol(4));
    }
    Ok(bells)
}

/// Opens the buffer pools of a peer's `shards` shards (read in place).
fn open_pools(theirs: &Hello, shards: usize) -> Result<Vec<Arc<Segment>>, Error> {
    (0..shards)
        .map(|i| open_owned(&pool_name(&theirs.engine, theirs.instance, i), theirs))
        .collect()
}

/// What every local shard needs to take its half of a shm link.
struct Halves<'a> {
    session: u16,
    layout: PairLayout,
    seg: &'a Arc<Segment>,
    peer_bells: &'a Arc<Segment>,
    peer_pools: &'a [Arc<Segment>],
    counters: &'a [Arc<LinkCounters>],
    initiator: bool,
}

/// Hands each local shard its rings of the link and waits until all have them.
fn install(shared: &EngineShared, h: Halves<'_>, deadline: Instant) -> Result<(), Error> {
    let (ack_tx, ack_rx) = mpsc::channel();
    for shard in 0..shared.shards() {
        let (tx, rx) = h.layout.attach(h.seg, h.initiator, shard)?;
        let half = LinkHalf {
            session: h.session,
            tx,
            rx,
            peer_bells: Arc::clone(h.peer_bells),
            peer_pools: h.peer_pools.to_vec(),
            counters: Arc::clone(&h.counters[shard]),
        };
        shared.command(shard, Command::AddLink(half, ack_tx.clone()))?;
    }
    for _ in 0..shared.shards() {
        ack_rx
            .recv_timeout(remaining(deadline)?)
            .map_err(|_| Error::Timeout)?;
    }
    Ok(())
}

/// The initiator side: build the pair segment, let the peer attach to it,
/// attach ourselves.
pub(super) fn build(
    shared: &EngineShared,
    stream: &mut TcpStream,
    theirs: &Hello,
    deadline: Instant,
) -> Result<u16, Error> {
    let layout = peer_layout(shared, theirs, true)?;
    let name = format!(
        "comm-{}-{:016x}-{:016x}",
        shared.name, shared.instance, theirs.instance
    );
    let seg = layout.create(&name)?;
    Message::LinkSetup(Offer {
        kind: kind_code(TransportKind::Shm),
        params: vec![
            ("segment".into(), name),
            ("bells".into(), shared.bells.name().to_owned()),
        ],
    })
    .send(stream)?;
    let reply = link_reply(stream)?;
    let bells = reply.param("bells").ok_or_else(|| protocol(8))?;
    let link = Link {
        theirs,
        layout,
        seg: &seg,
        bells,
        initiator: true,
    };
    link.attach(shared, deadline)
}

/// A link both sides have agreed on, ready to be attached on this side.
struct Link<'a> {
    theirs: &'a Hello,
    layout: PairLayout,
    seg: &'a Arc<Segment>,
    /// The name of the peer's doorbell segment.
    bells: &'a str,
    initiator: bool,
}

impl Link<'_> {
    /// Maps the peer's doorbells and pools, records the session and hands
    /// every local shard its rings. Returns the session.
    fn attach(&self, shared: &EngineShared, deadline: Instant) -> Result<u16, Error> {
        let peer_shards = if self.initiator {
            self.layout.b
        } else {
            self.layout.a
        };
        let peer_bells = open_bells(self.bells, self.theirs, peer_shards)?;
        let peer_pools = open_pools(self.theirs, peer_shards)?;
        let counters = Session::counters_for(shared.shards());
        let session = shared.add_session(Session {
            peer_engine: self.theirs.engine.clone(),
            peer_instance: self.theirs.instance,
            transport: TransportKind::Shm,
            rings: self.layout.a * self.layout.b,
            counters: counters.clone(),
            owner: Some(InProcessTable::new(peer_bells.header().watch_owner())),
            ready: false,
            lost: false,
        })?;
        let halves = Halves {
            session,
            layout: self.layout,
            seg: self.seg,
            peer_bells: &peer_bells,
            peer_pools: &peer_pools,
            counters: &counters,
            initiator: self.initiator,
        };
        if let Err(e) = install(shared, halves, deadline) {
            // Shards that took their half drop it again; nobody uses it.
            shared.lose_session(session, "its set-up failed", false);
            return Err(e);
        }
        shared.sessions.mark_ready(session);
        Ok(session)
    }
}
