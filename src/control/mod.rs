//! The control plane: the listener thread that answers peers, and the
//! connection set-up that application threads run when they `connect`. Never
//! on the data path: it only builds links and hands them to shards.

mod custom_link;
mod linking;
mod net_link;
mod shm_link;
mod wake;
mod wire;

pub(crate) use linking::Linking;
pub(crate) use net_link::NetPending;
pub(crate) use wake::Wake;

use std::io;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::engine::EngineShared;
use crate::link::PairLayout;
use crate::{select_transports, Addr, Error, PeerId, ProtocolError, TransportKind};
use linking::Outgoing;
use wire::{Hello, Message, Offer, RejectReason};

/// How long the listener side waits for a peer's next control message.
const PEER_IDLE: Duration = Duration::from_secs(2);
/// Largest shard count a peer may announce (a link holds 2 x ours x theirs
/// rings of 512 KiB each).
const MAX_PEER_SHARDS: u16 = 64;
/// Bytes per doorbell in a bells segment.
const BELL_STRIDE: usize = 128;
/// How often the control thread checks that same-node peers still run.
const LIVENESS_EVERY: Duration = Duration::from_millis(100);

/// Custom transports share one code; their offers carry the name.
const CUSTOM_CODE: u8 = 200;

fn kind_code(k: TransportKind) -> u8 {
    match k {
        TransportKind::Shm => 0,
        TransportKind::Verbs => 1,
        TransportKind::Tcp => 2,
        TransportKind::Udp => 3,
        TransportKind::Custom(_) => CUSTOM_CODE,
    }
}

/// The transport an offer names, as this engine knows it (a custom one only
/// if registered here too).
fn kind_of(shared: &EngineShared, offer: &Offer) -> Option<TransportKind> {
    if offer.kind == CUSTOM_CODE {
        let name = offer.param("name")?;
        return custom_link::find(shared, name).map(|t| TransportKind::Custom(t.name()));
    }
    TransportKind::ALL
        .into_iter()
        .find(|&k| kind_code(k) == offer.kind)
}

/// What this engine can run, as its configuration allows.
fn offered(shared: &EngineShared) -> Vec<TransportKind> {
    [TransportKind::Shm, TransportKind::Tcp, TransportKind::Udp]
        .into_iter()
        .chain(
            shared
                .customs
                .iter()
                .map(|(t, _)| TransportKind::Custom(t.name())),
        )
        .filter(|&k| shared.transports.allows(k))
        .collect()
}

/// Our offers as the handshake carries them (custom ones with their
/// name and listening address).
fn offers(shared: &EngineShared) -> Vec<Offer> {
    offered(shared)
        .into_iter()
        .map(|k| Offer {
            kind: kind_code(k),
            params: match k {
                TransportKind::Custom(name) => {
                    let addr = shared
                        .customs
                        .iter()
                        .find(|(t, _)| t.name() == name)
                        .map_or(String::new(), |(_, a)| a.clone());
                    vec![("name".into(), name.into()), ("addr".into(), addr)]
                }
                _ => Vec::new(),
            },
        })
        .collect()
}

fn hello(shared: &EngineShared) -> Message {
    Message::Hello(Hello {
        engine: shared.name.clone(),
        instance: shared.instance,
        node: shared.node.as_str().to_owned(),
        pid: std::process::id(),
        shards: shared.shards() as u16,
        offers: offers(shared),
    })
}

fn protocol(what: u8) -> Error {
    Error::Protocol(ProtocolError::ControlMessage(what))
}

/// The control thread: accepts peers and serves each on a short-lived worker
/// thread (so a slow peer cannot stall the others), until the engine stops.
pub(crate) fn serve(listener: TcpListener, shared: Arc<EngineShared>) {
    if let Err(e) = listener.set_nonblocking(true) {
        tracing::error!("control listener unusable: {e}");
        return;
    }
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    let mut checked = Instant::now();
    let mut arrivals = custom_link::Arrivals::default();
    while !shared.stop.load(Ordering::Acquire) {
        if checked.elapsed() >= LIVENESS_EVERY {
            shared.check_peers();
            net_link::expire(&shared);
            // What threads with descriptor tables of their own let go of.
            crate::fd_table::drop_deferred();
            checked = Instant::now();
        }
        if !shared.customs.is_empty() {
            custom_link::accept_step(&shared, &mut arrivals);
        }
        match listener.accept() {
            Ok((stream, from)) => {
                let s = Arc::clone(&shared);
                let spawned = std::thread::Builder::new()
                    .name("comm-control-peer".into())
                    .spawn(move || {
                        if let Err(e) = answer(stream, &s) {
                            tracing::debug!(%from, "control connection ended: {e}");
                        }
                    });
                match spawned {
                    Ok(h) => workers.push(h),
                    Err(e) => tracing::warn!("cannot serve a control connection: {e}"),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Custom transports' listeners are polled; otherwise sleep
                // until a peer knocks, the next liveness check, or the stop.
                let nap = if shared.customs.is_empty() {
                    LIVENESS_EVERY.saturating_sub(checked.elapsed())
                } else {
                    Duration::from_millis(5)
                };
                shared.control_wake.sleep(&listener, nap);
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        // Finished handshakes are joined in place: the loop allocates
        // nothing while a long handshake is still running.
        let mut i = 0;
        while i < workers.len() {
            if workers[i].is_finished() {
                let _ = workers.swap_remove(i).join();
            } else {
                i += 1;
            }
        }
    }
    for h in workers {
        let _ = h.join();
    }
}

/// Serves one peer's control connection.
fn answer(mut stream: TcpStream, shared: &EngineShared) -> Result<(), Error> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(PEER_IDLE))?;
    stream.set_write_timeout(Some(PEER_IDLE))?;
    let theirs = match Message::recv(&mut stream) {
        Ok(Message::Hello(h)) => h,
        Ok(Message::Attach {
            instance,
            token,
            from_shard,
            to_shard,
            port,
            lane,
        }) => {
            let pair = (from_shard, to_shard);
            return net_link::attach(shared, stream, instance, token, pair, port, lane);
        }
        Ok(_) => {
            shared.control_rejects.fetch_add(1, Ordering::Relaxed);
            return Err(protocol(0));
        }
        Err(e) => {
            shared.control_rejects.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
    };
    if theirs.engine != shared.name {
        shared.control_rejects.fetch_add(1, Ordering::Relaxed);
        let err = Error::EngineMismatch {
            ours: shared.name.clone(),
            theirs: theirs.engine.clone(),
        };
        tracing::warn!("refused a peer: {err}");
        Message::Reject {
            reason: RejectReason::EngineMismatch,
            detail: shared.name.clone(),
        }
        .send(&mut stream)?;
        return Err(err);
    }
    hello(shared).send(&mut stream)?;
    while !shared.stop.load(Ordering::Acquire) {
        let msg = match Message::recv(&mut stream) {
            Ok(m) => m,
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let reply = match msg {
            Message::Resolve { endpoint } => match shared.lookup(&endpoint) {
                Some((id, shard)) => Message::Resolved {
                    id,
                    shard: shard as u16,
                },
                None => Message::NotFound { endpoint },
            },
            Message::LinkSetup(offer) => {
                // A link we built toward the peer may have been attached on
                // its side while it was starting its own: it finds ours.
                let ours_exists = shared.session_for(theirs.instance).is_some();
                if !ours_exists
                    && shared
                        .linking
                        .begin_incoming(theirs.instance, shared.instance)
                {
                    let accepted = accept_link(shared, &theirs, &offer);
                    // A network link stays "incoming" until its data
                    // connections have attached (or its set-up expired).
                    let pending = accepted.is_ok()
                        && matches!(
                            kind_of(shared, &offer),
                            Some(
                                TransportKind::Tcp | TransportKind::Udp | TransportKind::Custom(_)
                            )
                        );
                    if !pending {
                        shared.linking.end_incoming(theirs.instance);
                    }
                    match accepted {
                        Ok(reply) => Message::LinkReady(reply),
                        Err(e) => Message::Reject {
                            reason: RejectReason::NoTransport,
                            detail: e.to_string(),
                        },
                    }
                } else {
                    Message::Reject {
                        reason: RejectReason::CrossConnect,
                        detail: "a link toward you is being set up".into(),
                    }
                }
            }
            _ => return Err(protocol(1)),
        };
        reply.send(&mut stream)?;
    }
    Ok(())
}

/// The acceptor side of `LinkSetup`: checks that we may run the offered
/// transport, then sets the link up.
fn accept_link(shared: &EngineShared, theirs: &Hello, offer: &Offer) -> Result<Offer, Error> {
    let kind = kind_of(shared, offer).ok_or_else(|| protocol(13))?;
    if !offered(shared).contains(&kind) {
        return Err(Error::NoTransport {
            wanted: vec![kind],
            available: offered(shared),
        });
    }
    match kind {
        TransportKind::Shm => shm_link::accept(shared, theirs, offer),
        TransportKind::Tcp | TransportKind::Udp | TransportKind::Custom(_) => {
            net_link::accept(shared, theirs, kind, offer)
        }
        TransportKind::Verbs => Err(Error::Refused {
            reason: "verbs is not built into this engine".into(),
        }),
    }
}

/// The shard counts of a link: `a` initiator shards, `b` acceptor shards.
fn peer_layout(
    shared: &EngineShared,
    theirs: &Hello,
    initiator: bool,
) -> Result<PairLayout, Error> {
    if theirs.shards == 0 || theirs.shards > MAX_PEER_SHARDS {
        return Err(protocol(3));
    }
    let (ours, peer) = (shared.shards(), usize::from(theirs.shards));
    Ok(if initiator {
        PairLayout { a: ours, b: peer }
    } else {
        PairLayout { a: peer, b: ours }
    })
}

fn remaining(deadline: Instant) -> Result<Duration, Error> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(Error::Timeout),
    }
}

fn timed(e: Error) -> Error {
    match e {
        Error::Io(io)
            if matches!(
                io.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Error::Timeout
        }
        other => other,
    }
}

/// Connects to the endpoint at `addr` on behalf of a local endpoint: control
/// handshake, link set-up if this is the first contact with that engine
/// instance, then name resolution.
pub(crate) fn connect(
    shared: &EngineShared,
    addr: &Addr,
    timeout: Duration,
) -> Result<PeerId, Error> {
    if shared.stop.load(Ordering::Acquire) {
        return Err(Error::Closed);
    }
    if !crate::fd_table::in_process_table() {
        return Err(Error::Config(
            "connect from a thread outside the process's descriptor table (a progress thread with a private table, or a thread it started)",
        ));
    }
    if crate::shard::on_progress_thread_of(shared.instance) {
        // Link set-up needs every shard of this engine, this one included.
        return Err(Error::Config(
            "connect blocks: call it from an application thread, not from a handler",
        ));
    }
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&addr.control(), remaining(deadline)?)
        .map_err(|e| timed(e.into()))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(remaining(deadline)?))?;
    stream.set_write_timeout(Some(remaining(deadline)?))?;
    hello(shared).send(&mut stream)?;
    let theirs = match Message::recv(&mut stream).map_err(timed)? {
        Message::Hello(h) => h,
        Message::Reject {
            reason: RejectReason::EngineMismatch,
            detail,
        } => {
            return Err(Error::EngineMismatch {
                ours: shared.name.clone(),
                theirs: detail,
            })
        }
        Message::Reject { detail, .. } => return Err(Error::Refused { reason: detail }),
        _ => return Err(protocol(5)),
    };
    if theirs.engine != shared.name {
        return Err(Error::EngineMismatch {
            ours: shared.name.clone(),
            theirs: theirs.engine,
        });
    }
    let session = match shared.session_for(theirs.instance) {
        Some(s) => s,
        None => establish(shared, &mut stream, &theirs, deadline).map_err(timed)?,
    };
    Message::Resolve {
        endpoint: addr.endpoint().to_owned(),
    }
    .send(&mut stream)?;
    match Message::recv(&mut stream).map_err(timed)? {
        Message::Resolved { id, shard } if shard < theirs.shards => {
            Ok(PeerId::pack(session, shard, id))
        }
        Message::NotFound { .. } => Err(Error::UnknownEndpoint {
            addr: addr.to_string(),
        }),
        _ => Err(protocol(6)),
    }
}

/// The initiator side of link set-up: choose the transport, build the pair
/// segment, let the peer attach, attach ourselves.
fn establish(
    shared: &EngineShared,
    stream: &mut TcpStream,
    theirs: &Hello,
    deadline: Instant,
) -> Result<u16, Error> {
    let _one_at_a_time = shared.connecting.lock().unwrap_or_else(|e| e.into_inner());
    let peer = theirs.instance;
    loop {
        if let Some(s) = shared.session_for(peer) {
            return Ok(s);
        }
        match shared.linking.begin_outgoing(peer) {
            Outgoing::Go => break,
            Outgoing::Wait => shared.linking.wait_incoming(peer, deadline)?,
        }
    }
    let built = build_link(shared, stream, theirs, deadline);
    shared.linking.end_outgoing(peer);
    match built {
        Err(Error::Refused { reason }) if reason == CROSSED => {
            // The peer builds the link toward us; our listener attaches it.
            loop {
                if let Some(s) = shared.session_for(peer) {
                    return Ok(s);
                }
                shared.linking.wait_change(deadline)?;
            }
        }
        other => other,
    }
}

/// Marks a refusal because both sides were setting up a link at once.
const CROSSED: &str = "crossed set-up";

/// Sends our link offers in order of preference until the peer accepts
/// one, falling back to the next transport when a set-up fails.
fn build_link(
    shared: &EngineShared,
    stream: &mut TcpStream,
    theirs: &Hello,
    deadline: Instant,
) -> Result<u16, Error> {
    let their_kinds: Vec<TransportKind> = theirs
        .offers
        .iter()
        .filter_map(|o| kind_of(shared, o))
        .collect();
    let same_node = theirs.node == shared.node.as_str();
    let ours = offered(shared);
    let chosen = select_transports(&shared.transports, &ours, &their_kinds, same_node)?;
    let mut failed = None;
    for kind in chosen {
        let tried = match kind {
            TransportKind::Shm => shm_link::build(shared, stream, theirs, deadline),
            TransportKind::Tcp | TransportKind::Udp => {
                net_link::build(shared, stream, theirs, kind, deadline)
            }
            TransportKind::Custom(_) => custom_link::build(shared, stream, theirs, kind, deadline),
            TransportKind::Verbs => continue,
        };
        match tried {
            Ok(session) => {
                if failed.is_some() {
                    tracing::info!(
                        peer = theirs.instance,
                        "link up over {kind} after falling back"
                    );
                }
                return Ok(session);
            }
            Err(e) if crossed(&e) || remaining(deadline).is_err() => return Err(e),
            Err(e) => {
                tracing::warn!(
                    peer = theirs.instance,
                    "{kind} link set-up failed ({e}); falling back to the next transport"
                );
                failed = Some(e);
            }
        }
    }
    Err(failed.unwrap_or(Error::NoTransport {
        wanted: offered(shared),
        available: their_kinds,
    }))
}

/// Whether a set-up was refused because the peer builds the link toward us.
fn crossed(e: &Error) -> bool {
    matches!(e, Error::Refused { reason } if reason == CROSSED)
}

/// Reads the peer's answer to a `LinkSetup`.
fn link_reply(stream: &mut TcpStream) -> Result<Offer, Error> {
    match Message::recv(stream)? {
        Message::LinkReady(o) => Ok(o),
        Message::Reject {
            reason: RejectReason::CrossConnect,
            ..
        } => Err(Error::Refused {
            reason: CROSSED.into(),
        }),
        Message::Reject { detail, .. } => Err(Error::Refused { reason: detail }),
        _ => Err(protocol(7)),
    }
}
