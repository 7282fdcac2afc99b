//! Set-up of network links (TCP, UDP). The acceptor registers the session and
//! answers `LinkReady` with a secret token; the initiator then opens one data
//! connection per (its shard, their shard) pair to the acceptor's control
//! port, each introduced by an `Attach` carrying the token. For TCP those
//! connections are the link's sockets for the shard pair, [`TCP_LANES`] of
//! them (lanes, see `crate::lanes`); for UDP the one connection only
//! exchanges the two sockets' ports. Both sides hand the sockets to shards.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::wire::{Hello, Message, Offer, RejectReason};
use super::{kind_code, link_reply, peer_layout, protocol, remaining, PEER_IDLE};
use crate::engine::EngineShared;
use crate::link::PairLayout;
use crate::net::UdpSetup;
use crate::session::{LinkCounters, Session};
use crate::shard::{Command, Handover, NetConn, NetSocket};
use crate::{Error, TransportKind, UdpMode};

/// How long an acceptor waits for all data connections of a link.
const ATTACH_WITHIN: Duration = Duration::from_secs(10);

/// TCP connections (lanes) per shard pair of a TCP link. Large messages
/// take turns on them: one stream's window, send buffer and socket lock
/// stop being the limit of a bulk transfer (1 MiB messages over loopback:
/// 4.6 GB/s on one connection, 8.1-8.3 GB/s on two, in a C model of the
/// scheme; UCX reaches its figure the same way, over two interfaces).
pub(crate) const TCP_LANES: u8 = 2;
/// Most lanes an acceptor agrees to.
const MAX_LANES: u8 = 8;

/// A network link the acceptor agreed to, waiting for its data connections.
struct Pending {
    session: u16,
    peer_instance: u64,
    kind: TransportKind,
    layout: PairLayout,
    counters: Vec<Arc<LinkCounters>>,
    udp_mode: UdpMode,
    /// Connections per shard pair.
    lanes: u8,
    attached: usize,
    deadline: Instant,
}

/// Network links under set-up on the acceptor side, by token.
#[derive(Default)]
pub(crate) struct NetPending(Mutex<HashMap<u64, Pending>>);

impl NetPending {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Pending>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An unguessable token (the kernel's random source).
pub(super) fn token() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into our buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        // Never seen on Linux; still unique, just not secret.
        return std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
    }
    u64::from_le_bytes(bytes)
}

pub(super) fn net_session(
    shared: &EngineShared,
    theirs: &Hello,
    kind: TransportKind,
    layout: PairLayout,
) -> Result<(u16, Vec<Arc<LinkCounters>>), Error> {
    let counters = Session::counters_for(shared.shards());
    let session = shared.add_session(Session {
        peer_engine: theirs.engine.clone(),
        peer_instance: theirs.instance,
        transport: kind,
        rings: layout.a * layout.b,
        counters: counters.clone(),
        // A network peer's loss shows on its sockets.
        owner: None,
        ready: false,
        lost: false,
    })?;
    Ok((session, counters))
}

/// The acceptor side of `LinkSetup`: registers the link and its token. The
/// link is ready once every data connection has attached.
pub(super) fn accept(
    shared: &EngineShared,
    theirs: &Hello,
    kind: TransportKind,
    offer: &Offer,
) -> Result<Offer, Error> {
    let layout = peer_layout(shared, theirs, false)?;
    // The initiator chooses the UDP mode.
    let udp_mode = match offer.param("mode") {
        None => UdpMode::default(),
        Some(m) => UdpMode::from_name(m).ok_or_else(|| protocol(14))?,
    };
    // The initiator chooses the lanes of a TCP link too.
    let lanes = match (kind, offer.param("lanes")) {
        (TransportKind::Tcp, Some(n)) => n
            .parse::<u8>()
            .ok()
            .filter(|n| (1..=MAX_LANES).contains(n))
            .ok_or_else(|| protocol(20))?,
        _ => 1,
    };
    let (session, counters) = net_session(shared, theirs, kind, layout)?;
    let token = token();
    shared.net_pending.lock().insert(
        token,
        Pending {
            session,
            peer_instance: theirs.instance,
            kind,
            layout,
            counters,
            udp_mode,
            lanes,
            attached: 0,
            deadline: Instant::now() + ATTACH_WITHIN,
        },
    );
    Ok(Offer {
        kind: kind_code(kind),
        params: vec![("token".into(), format!("{token:016x}"))],
    })
}

/// Gives up acceptor-side set-ups whose connections did not all arrive.
pub(crate) fn expire(shared: &EngineShared) {
    let now = Instant::now();
    let expired: Vec<Pending> = {
        let mut table = shared.net_pending.lock();
        let tokens: Vec<u64> = table
            .iter()
            .filter(|(_, p)| p.deadline < now)
            .map(|(t, _)| *t)
            .collect();
        tokens.iter().filter_map(|t| table.remove(t)).collect()
    };
    for p in expired {
        shared.lose_session(p.session, "its data connections did not all arrive", false);
        shared.linking.end_incoming(p.peer_instance);
    }
}

/// The first sequence numbers of the reliable association of shard pair
/// `(from, to)` of a link, as (initiator's, acceptor's): both sides derive
/// them from the link's token, so stray datagrams of another link are likely
/// to fall outside the window.
fn initial_seqs(token: u64, from: u16, to: u16) -> (u32, u32) {
    let mix = |salt: u64| {
        let mut x = token ^ (u64::from(from) << 32 | u64::from(to) << 16 | salt);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (x ^ (x >> 31)) as u32
    };
    (mix(1), mix(2))
}

/// Binds a UDP socket on the address a control connection runs over.
fn udp_beside(stream: &TcpStream) -> Result<UdpSocket, Error> {
    let local = stream.local_addr()?;
    Ok(UdpSocket::bind(SocketAddr::new(local.ip(), 0))?)
}

/// Hands a socket to a shard and waits until it took it.
fn hand_over(
    shared: &EngineShared,
    shard: usize,
    conn: NetConn,
    deadline: Instant,
) -> Result<(), Error> {
    let (ack_tx, ack_rx) = mpsc::channel();
    let sent = shared.command(shard, Command::AddConn(Handover::new(conn)?, ack_tx));
    let taken = sent.and_then(|()| {
        ack_rx
            .recv_timeout(remaining(deadline)?)
            .map_err(|_| Error::Timeout)
    });
    // A shard with a table of its own copied the socket and let go of
    // ours: close it now, or the connection outlives the shard's copy.
    crate::fd_table::close_released();
    taken
}

/// The acceptor side of an `Attach`: the connection (TCP) or the port
/// exchange (UDP) for one shard pair of a pending link.
pub(super) fn attach(
    shared: &EngineShared,
    mut stream: TcpStream,
    instance: u64,
    token: u64,
    (from_shard, to_shard): (u16, u16),
    port: u16,
    lane: u8,
) -> Result<(), Error> {
    let found = claim(shared, token, instance, (from_shard, to_shard), lane);
    let Some(Claim {
        session,
        peer,
        kind,
        udp_mode,
        lanes,
        counters,
    }) = found
    else {
        Message::Reject {
            reason: RejectReason::Unsupported,
            detail: "no such link set-up".into(),
        }
        .send(&mut stream)?;
        return Err(protocol(9));
    };
    let (socket, our_port) = match kind {
        TransportKind::Udp => {
            let udp = udp_beside(&stream)?;
            udp.connect(SocketAddr::new(stream.peer_addr()?.ip(), port))?;
            let our_port = udp.local_addr()?.port();
            (NetSocket::Udp(udp), our_port)
        }
        _ => {
            let data = stream.try_clone()?;
            data.set_read_timeout(None)?;
            data.set_write_timeout(None)?;
            (NetSocket::Tcp(data), 0)
        }
    };
    Message::Attached { port: our_port }.send(&mut stream)?;
    let (theirs_seq, ours_seq) = initial_seqs(token, from_shard, to_shard);
    let conn = NetConn {
        session,
        peer_shard: from_shard,
        lane,
        lanes,
        socket,
        counters,
        udp: (kind == TransportKind::Udp).then_some(UdpSetup {
            mode: udp_mode,
            initial_seq: ours_seq,
            peer_initial_seq: theirs_seq,
        }),
    };
    hand_over(
        shared,
        usize::from(to_shard),
        conn,
        Instant::now() + PEER_IDLE,
    )?;
    attached(shared, token, session, peer);
    Ok(())
}

/// What an acceptor knows of a pending link, for one arriving connection.
pub(super) struct Claim {
    pub(super) session: u16,
    pub(super) peer: u64,
    pub(super) kind: TransportKind,
    pub(super) udp_mode: UdpMode,
    pub(super) lanes: u8,
    pub(super) counters: Arc<LinkCounters>,
}

/// Looks up the pending link a connection claims to belong to: its token,
/// the initiator's instance, a shard pair inside the link and one of its
/// lanes.
pub(super) fn claim(
    shared: &EngineShared,
    token: u64,
    instance: u64,
    (from_shard, to_shard): (u16, u16),
    lane: u8,
) -> Option<Claim> {
    shared.net_pending.lock().get(&token).and_then(|p| {
        let counters = p.counters.get(usize::from(to_shard))?;
        let fits = usize::from(from_shard) < p.layout.a && lane < p.lanes;
        (p.peer_instance == instance && fits).then(|| Claim {
            session: p.session,
            peer: p.peer_instance,
            kind: p.kind,
            udp_mode: p.udp_mode,
            lanes: p.lanes,
            counters: Arc::clone(counters),
        })
    })
}

/// Counts one attached connection; the last one makes the link ready.
pub(super) fn attached(shared: &EngineShared, token: u64, session: u16, peer: u64) {
    let complete = {
        let mut table = shared.net_pending.lock();
        let done = table.get_mut(&token).is_some_and(|p| {
            p.attached += 1;
            p.attached == p.layout.a * p.layout.b * usize::from(p.lanes)
        });
        if done {
            table.remove(&token);
        }
        done
    };
    if complete {
        shared.sessions.mark_ready(session);
        shared.linking.end_incoming(peer);
    }
}

/// The initiator side: offers `kind`, then attaches one data connection per
/// shard pair and hands each to its shard.
pub(super) fn build(
    shared: &EngineShared,
    stream: &mut TcpStream,
    theirs: &Hello,
    kind: TransportKind,
    deadline: Instant,
) -> Result<u16, Error> {
    let layout = peer_layout(shared, theirs, true)?;
    let lanes = if kind == TransportKind::Tcp {
        TCP_LANES
    } else {
        1
    };
    let params = match kind {
        TransportKind::Udp => vec![("mode".into(), shared.udp_mode.name().into())],
        TransportKind::Tcp => vec![("lanes".into(), lanes.to_string())],
        _ => Vec::new(),
    };
    Message::LinkSetup(Offer {
        kind: kind_code(kind),
        params,
    })
    .send(stream)?;
    let reply = link_reply(stream)?;
    let token = reply
        .param("token")
        .and_then(|t| u64::from_str_radix(t, 16).ok())
        .ok_or_else(|| protocol(11))?;
    let (session, counters) = net_session(shared, theirs, kind, layout)?;
    let mut pairs = (0..layout.a).flat_map(|i| (0..layout.b).map(move |j| (i, j)));
    let attached = pairs.try_for_each(|(i, j)| {
        (0..lanes).try_for_each(|lane| {
            let to = stream.peer_addr()?;
            let conn = dial(shared, to, kind, token, (i, j), lane, deadline)?;
            let (ours_seq, theirs_seq) = initial_seqs(token, i as u16, j as u16);
            let conn = NetConn {
                session,
                peer_shard: j as u16,
                lane,
                lanes,
                socket: conn,
                counters: Arc::clone(&counters[i]),
                udp: (kind == TransportKind::Udp).then_some(UdpSetup {
                    mode: shared.udp_mode,
                    initial_seq: ours_seq,
                    peer_initial_seq: theirs_seq,
                }),
            };
            hand_over(shared, i, conn, deadline)
        })
    });
    if let Err(e) = attached {
        shared.lose_session(session, "its set-up failed", false);
        return Err(e);
    }
    shared.sessions.mark_ready(session);
    Ok(session)
}

/// Opens data connection `lane` for shard pair `(ours, theirs)` of a link.
fn dial(
    shared: &EngineShared,
    control: SocketAddr,
    kind: TransportKind,
    token: u64,
    (ours, theirs): (usize, usize),
    lane: u8,
    deadline: Instant,
) -> Result<NetSocket, Error> {
    let mut stream = TcpStream::connect_timeout(&control, remaining(deadline)?)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(remaining(deadline)?))?;
    stream.set_write_timeout(Some(remaining(deadline)?))?;
    let udp = match kind {
        TransportKind::Udp => Some(udp_beside(&stream)?),
        _ => None,
    };
    let port = match &udp {
        Some(u) => u.local_addr()?.port(),
        None => 0,
    };
    Message::Attach {
        instance: shared.instance,
        token,
        from_shard: ours as u16,
        to_shard: theirs as u16,
        port,
        lane,
    }
    .send(&mut stream)?;
    let their_port = match Message::recv(&mut stream)? {
        Message::Attached { port } => port,
        Message::Reject { detail, .. } => return Err(Error::Refused { reason: detail }),
        _ => return Err(protocol(12)),
    };
    Ok(match udp {
        Some(udp) => {
            udp.connect(SocketAddr::new(control.ip(), their_port))?;
            NetSocket::Udp(udp)
        }
        None => {
            stream.set_read_timeout(None)?;
            stream.set_write_timeout(None)?;
            NetSocket::Tcp(stream)
        }
    })
}
