//! A shard: the state one progress thread owns, and its loop. Nothing here is
//! shared with other shards; everything arrives through rings or commands.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use comm_shm::{Consumer, Doorbell, Producer, PushError, Segment};
use comm_uring::Event;

use crate::custom::{CustomOut, Customs};
use crate::endpoint::{Loan, Msg, Submit};
use crate::engine::{bell_at, EngineShared};
use crate::fd_table::{FileId, InProcessTable, PrivateFds};
use crate::inbox_quota::InboxQuota;
use crate::lanes::{self, RxLanes, TxLanes};
use crate::link::inline_max;
use crate::net::{Kept, Net, NetOut, Route, Routes};
use crate::session::LinkCounters;
use crate::stats::Tally;
use crate::ReliableLinkStats;
use crate::{Buf, BufPool, Error, FrameHeader, FrameKind, PeerId, HEADER_LEN};

thread_local! {
    /// The instance id of the engine whose progress loop runs on this thread
    /// (0: none), so that blocking calls made from a handler can refuse.
    static PROGRESS_OF: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Whether this thread is a progress thread of engine instance `instance`.
pub(crate) fn on_progress_thread_of(instance: u64) -> bool {
    PROGRESS_OF.with(|p| p.get() == instance)
}

/// How long an idle shard spins, then yields, before it parks. Network round
/// trips take microseconds, so the spin is measured in time, not polls.
const SPIN_FOR: Duration = Duration::from_micros(100);
/// Quiet for longer than this, the spin yields the core at each look at the
/// clock: a thread that shares the core (on a machine with fewer cores than
/// busy threads, an application thread that this or another engine just
/// handed a message) then runs within microseconds, not after the whole
/// spin. A yield with nobody waiting returns at once.
const SHARE_AFTER: Duration = Duration::from_micros(10);
const YIELD_UNTIL: Duration = Duration::from_millis(1);
/// What an idle progress thread does at a look at the clock, by how long
/// it has been quiet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idle {
    /// Poll again at once.
    Spin,
    /// Poll on, but yield the core once first (see `SHARE_AFTER`).
    Share,
    /// Yield the core before every look at the clock.
    Yield,
    /// Sleep until woken.
    Park,
}

impl Idle {
    fn after(quiet: Duration) -> Idle {
        if quiet < SHARE_AFTER {
            Idle::Spin
        } else if quiet < SPIN_FOR {
            Idle::Share
        } else if quiet < YIELD_UNTIL {
            Idle::Yield
        } else {
            Idle::Park
        }
    }
}

/// Empty polls between two looks at the clock while spinning.
const CLOCK_EVERY: u32 = 64;
/// Busy passes between two publications of the reliable-UDP figures (they
/// are also published whenever the shard looks at the clock while idle).
const RELIABLE_EVERY: u32 = 4096;
/// Longest park; a parked shard is woken by any producer long before this.
const PARK: Duration = Duration::from_millis(200);
/// Park limit while a message waits for room in a peer's ring.
const STALLED_PARK: Duration = Duration::from_micros(100);
/// How long a stopping shard keeps sending what it had already accepted.
const STOP_GRACE: Duration = Duration::from_millis(200);
/// Messages taken from one ring or submit queue per pass (fairness).
const BATCH: usize = 64;

/// A handler registered with `Engine::serve`.
pub(crate) type Handler = Box<dyn FnMut(&mut Ctx<'_>, &Msg) -> Result<(), Error> + Send>;

/// Where an endpoint's messages go.
pub(crate) enum Inbox {
    /// Run on this thread. Dropped in the process's descriptor table: it
    /// may own descriptors of it (see `fd_table`).
    Handler(InProcessTable<Handler>),
    /// Queued for an application thread.
    Handle {
        submits: rtrb::Consumer<Submit>,
        inbox: rtrb::Producer<Msg>,
        /// The pool buffers the messages in `inbox` hold.
        quota: InboxQuota,
        bell: Arc<Doorbell>,
    },
}

pub(crate) struct LocalEndpoint {
    id: u32,
    /// The application dropped its handle: send what it submitted, deliver
    /// nothing more, then remove it.
    closing: bool,
    inbox: Inbox,
    /// A submitted message whose ring was full; sent before anything newer.
    stalled: Option<Submit>,
    /// The application thread must be woken after this pass.
    wake: bool,
}

impl LocalEndpoint {
    pub(crate) fn new(id: u32, inbox: Inbox) -> Self {
        LocalEndpoint {
            id,
            closing: false,
            inbox,
            stalled: None,
            wake: false,
        }
    }
}

/// One shard's share of a link to a peer engine.
pub(crate) struct LinkHalf {
    pub session: u16,
    /// Toward each peer shard.
    pub tx: Vec<Producer>,
    /// From each peer shard.
    pub rx: Vec<Consumer>,
    /// The peer's shard doorbells.
    pub peer_bells: Arc<Segment>,
    /// The peer's shard pools, where its descriptors point.
    pub peer_pools: Vec<Arc<Segment>>,
    /// This shard's share of the link's counters.
    pub counters: Arc<LinkCounters>,
}

/// A network socket serving one (local shard, peer shard) pair of a link.
pub(crate) enum NetSocket {
    Tcp(std::net::TcpStream),
    Udp(std::net::UdpSocket),
}

impl NetSocket {
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        match self {
            NetSocket::Tcp(s) => s.as_fd(),
            NetSocket::Udp(s) => s.as_fd(),
        }
    }

    fn into_fd(self) -> std::os::fd::OwnedFd {
        match self {
            NetSocket::Tcp(s) => s.into(),
            NetSocket::Udp(s) => s.into(),
        }
    }

    /// A socket of the same kind over `fd`.
    fn of_kind(&self, fd: std::os::fd::OwnedFd) -> NetSocket {
        match self {
            NetSocket::Tcp(_) => NetSocket::Tcp(fd.into()),
            NetSocket::Udp(_) => NetSocket::Udp(fd.into()),
        }
    }
}

/// A socket of the process's descriptor table on its way to a shard. Let
/// go of unused, it is closed by a thread of that table (see `fd_table`).
pub(crate) struct Handover {
    conn: Option<NetConn>,
    file: FileId,
}

impl Handover {
    /// Fails on a thread outside the process's table, whose socket numbers
    /// a shard could not find.
    pub(crate) fn new(conn: NetConn) -> std::io::Result<Handover> {
        if !crate::fd_table::in_process_table() {
            return Err(std::io::Error::other(
                "a socket made outside the process's descriptor table",
            ));
        }
        let file = FileId::of(&conn.socket.fd())?;
        Ok(Handover {
            conn: Some(conn),
            file,
        })
    }

    /// The connection, its socket in the calling thread's table: copied in
    /// when that table is private (the original is then dropped by a
    /// thread of the process's table).
    fn take(mut self, fds: Option<&PrivateFds>) -> std::io::Result<NetConn> {
        let Some(fds) = fds else {
            return Ok(self.conn.take().expect("taken once"));
        };
        use std::os::fd::AsRawFd;
        let conn = self.conn.as_ref().expect("taken once");
        let mine = fds.import(conn.socket.fd().as_raw_fd(), self.file)?;
        let mut conn = self.conn.take().expect("taken once");
        let new = conn.socket.of_kind(mine);
        let original = std::mem::replace(&mut conn.socket, new);
        crate::fd_table::release(original.into_fd());
        Ok(conn)
    }
}

impl Drop for Handover {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            crate::fd_table::release(c.socket.into_fd());
        }
    }
}

/// One shard's connection of a network link, toward one peer shard.
pub(crate) struct NetConn {
    pub session: u16,
    pub peer_shard: u16,
    /// Which of the shard pair's `lanes` connections this is (TCP).
    pub lane: u8,
    pub lanes: u8,
    pub socket: NetSocket,
    /// This shard's share of the link's counters.
    pub counters: Arc<LinkCounters>,
    /// For UDP sockets: the protocol to run.
    pub udp: Option<crate::net::UdpSetup>,
}

pub(crate) enum Command {
    AddEndpoint(LocalEndpoint),
    RemoveEndpoint(u32),
    AddLink(LinkHalf, mpsc::Sender<()>),
    /// The link is lost: forget its rings and take back what it borrowed.
    /// A ring from a live peer ends with its `Close`; from a dead one, when
    /// it is empty.
    DropLink {
        session: u16,
        peer_gone: bool,
    },
    /// A network link's socket toward one peer shard.
    AddConn(Handover, mpsc::Sender<()>),
    /// A custom transport's connection toward one peer shard.
    AddCustom(CustomConn, mpsc::Sender<()>),
}

/// One shard's connection of a custom link, toward one peer shard.
pub(crate) struct CustomConn {
    pub session: u16,
    pub peer_shard: u16,
    pub conn: Box<dyn crate::Connection>,
    /// This shard's share of the link's counters.
    pub counters: Arc<LinkCounters>,
}

/// How frames reach a link's peer shards.
enum Wire {
    /// A ring per peer shard, and its doorbells to ring after pushing.
    Shm {
        tx: Vec<Producer>,
        peer_bells: Arc<Segment>,
        dirty: Vec<bool>,
        /// Frames waiting in `Outbound::spilled` per peer shard: while any
        /// wait, newer frames queue behind them.
        spilled: Vec<u32>,
    },
    /// The sockets (lanes) of each peer shard, filled in as they attach.
    Net {
        conns: Vec<TxLanes<comm_uring::ConnId>>,
    },
    /// A custom transport's connection per peer shard (index in `Customs`).
    Custom { conns: Vec<Option<usize>> },
}

struct TxLink {
    wire: Wire,
    /// What went over this link through this shard, published on `counters`.
    tally: Tally,
    counters: Arc<LinkCounters>,
    /// Listed in `Outbound::touched` (tally changed since last published).
    touched: bool,
    /// Reliable-UDP figures of this shard's associations of the link:
    /// those of associations already gone, the sum being built by
    /// `publish_reliable`, and the sum last published.
    reliable_gone: ReliableLinkStats,
    reliable_now: ReliableLinkStats,
    reliable_shown: ReliableLinkStats,
}

impl TxLink {
    fn new(wire: Wire, counters: Arc<LinkCounters>) -> Self {
        TxLink {
            wire,
            tally: Tally::default(),
            counters,
            touched: false,
            reliable_gone: ReliableLinkStats::default(),
            reliable_now: ReliableLinkStats::default(),
            reliable_shown: ReliableLinkStats::default(),
        }
    }
}

struct RxRing {
    session: u16,
    peer_shard: u16,
    rx: Consumer,
    peer_pool: Arc<Segment>,
    /// The link is lost: deliver what is left, then forget the ring.
    closing: bool,
    /// Nothing more will be read: removed after this pass.
    done: bool,
}

/// What a handler can do while it runs on the progress thread.
///
/// ```no_run
/// # let engine = comm::Engine::builder("doc").cores(&[0]).start()?;
/// engine.serve("upper", |ctx, msg| {
///     let upper = msg.data().to_ascii_uppercase();
///     ctx.reply(msg, &upper)
/// })?;
/// # Ok::<(), comm::Error>(())
/// ```
pub struct Ctx<'a> {
    me: u32,
    out: &'a mut Outbound,
}

/// What sending needs: the links, our pool, and the buffers lent to peers.
struct Outbound {
    links: Vec<Option<TxLink>>,
    pool: BufPool,
    /// Our buffers that peers read in place, by pool slot, until released,
    /// with the (session, peer shard) they were lent to: only that peer may
    /// hand a buffer back.
    lent: Vec<Option<(Buf, u16, u16)>>,
    /// Releases that found their ring full; sent before anything else.
    releases: Vec<(PeerId, FrameHeader)>,
    /// Something was pushed toward a peer, or queued for an application
    /// thread, since the last `ring_bells`.
    bells_due: bool,
    tally: Tally,
    /// Sessions whose link tally changed since it was last published.
    touched: Vec<u16>,
    /// Messages received from one link in a row, not yet in its tally:
    /// (session, messages, bytes).
    rx_run: (u16, u64, u64),
    /// Per pool class, the buffers one endpoint's inbox may hold.
    inbox_limits: Vec<u32>,
    /// Frames waiting for the network ring.
    net: NetOut,
    /// Our buffers the kernel sends in place, by pool slot, until SendDone.
    on_wire: Vec<Option<Buf>>,
    /// Frames handlers sent while the ring toward the peer was full, oldest
    /// first; sent before anything newer to the same ring.
    spilled: Spilled,
    /// Frames waiting for custom transports' connections.
    custom: CustomOut,
}

/// Frames waiting for room in a ring: a handler cannot wait, and a frame it
/// sent must not be lost.
#[derive(Default)]
struct Spilled {
    frames: std::collections::VecDeque<(u16, u16, std::ops::Range<usize>)>,
    bytes: Vec<u8>,
    /// Rings found full during one retry.
    blocked: Vec<(u16, u16)>,
}

/// Bytes of spilled frames a shard keeps before handler sends fail with
/// `Error::Full`.
const SPILL_LIMIT: usize = 64 << 20;

/// Network sends smaller than this are copied; larger ones go zero-copy.
const ZERO_COPY_MIN: usize = 16 * 1024;
/// Per network connection, bytes that may wait to be sent before `send`
/// pushes back.
const NET_BACKLOG: usize = 4 << 20;

impl Ctx<'_> {
    /// Sends `data` back to the sender of `msg`, copying it straight into the
    /// ring toward it.
    ///
    /// ```no_run
    /// # let engine = comm::Engine::builder("doc").cores(&[0]).start()?;
    /// engine.serve("echo", |ctx, msg| ctx.reply(msg, msg.data()))?;
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn reply(&mut self, msg: &Msg, data: &[u8]) -> Result<(), Error> {
        self.send(msg.peer(), data)
    }

    /// Sends `data` to `peer`. Never waits and never loses the message: when
    /// the way to the peer is full, it waits in the shard, in order, and goes
    /// out as soon as there is room. Fails with [`Error::Full`] only when the
    /// shard already holds 64 MiB of such messages (a peer that stopped
    /// reading).
    ///
    /// ```no_run
    /// # let engine = comm::Engine::builder("doc").cores(&[0]).start()?;
    /// engine.serve("fanout", |ctx, msg| {
    ///     ctx.send(msg.peer(), b"ack")?;
    ///     ctx.send(msg.peer(), msg.data())
    /// })?;
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn send(&mut self, peer: PeerId, data: &[u8]) -> Result<(), Error> {
        // A large message over TCP that has to wait: one copy into a pool
        // buffer that the kernel then reads in place beats two through
        // staging memory. One that need not wait goes straight from `data`.
        if data.len() >= ZERO_COPY_MIN
            && self.out.is_stream(peer)
            && !self.out.stream_writes_now(peer)
        {
            if let Ok(mut buf) = self.out.pool.alloc(data.len()) {
                buf.copy_from_slice(data);
                return self
                    .out
                    .send_buf(self.me, peer, buf, true)
                    .map_err(|(e, _)| e);
            }
        }
        // Over a network or a custom link the bytes are copied once anyway.
        if data.len() <= inline_max() || self.out.is_copying(peer) {
            let header = FrameHeader::new(
                FrameKind::Data,
                self.me,
                peer.endpoint(),
                0,
                data.len() as u32,
            );
            return self.out.frame(peer, header, data, true);
        }
        let mut buf = self.out.pool.alloc(data.len())?;
        buf.copy_from_slice(data);
        self.out.lend(self.me, peer, buf, true).map_err(|(e, _)| e)
    }
}

impl Ctx<'_> {
    /// A buffer from this shard's pool, e.g. to fill and [`Ctx::send_buf`].
    ///
    /// ```no_run
    /// # let engine = comm::Engine::builder("doc").cores(&[0]).start()?;
    /// // Answer with a fresh buffer of the same size, without copying the request.
    /// engine.serve("pong", |ctx, msg| {
    ///     let buf = ctx.alloc(msg.data().len())?;
    ///     ctx.send_buf(msg.peer(), buf)
    /// })?;
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn alloc(&mut self, len: usize) -> Result<Buf, Error> {
        self.out.pool.alloc(len)
    }

    /// Sends a pool buffer to `peer` without copying it when it is large (the
    /// peer reads it in place). Like [`Ctx::send`], it never waits and never
    /// loses the message; [`Error::Full`] means the shard holds too much for
    /// peers that do not read.
    ///
    /// ```no_run
    /// # let engine = comm::Engine::builder("doc").cores(&[0]).start()?;
    /// engine.serve("hello", |ctx, msg| {
    ///     let mut buf = ctx.alloc(5)?;
    ///     buf.copy_from_slice(b"hello");
    ///     ctx.send_buf(msg.peer(), buf)
    /// })?;
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn send_buf(&mut self, peer: PeerId, buf: Buf) -> Result<(), Error> {
        self.out
            .send_buf(self.me, peer, buf, true)
            .map_err(|(e, _)| e)
    }
}

/// Puts `value` in slot `i`, growing the vector as needed.
fn set_slot<T: Clone>(slots: &mut Vec<Option<T>>, i: usize, value: T) {
    if slots.len() <= i {
        slots.resize(i + 1, None);
    }
    slots[i] = Some(value);
}

impl Outbound {
    /// The link of `session`, made with `wire` when its first connection
    /// arrives (network and custom links attach one connection at a time).
    fn link_for(&mut self, session: u16, counters: Arc<LinkCounters>, wire: Wire) -> &mut TxLink {
        let s = usize::from(session);
        if self.links.len() <= s {
            self.links.resize_with(s + 1, || None);
        }
        self.links[s].get_or_insert_with(|| TxLink::new(wire, counters))
    }

    /// The tally of the link of `session`, marked for publishing.
    #[inline]
    fn link_tally(&mut self, session: u16) -> Option<&mut Tally> {
        let link = self.links.get_mut(usize::from(session))?.as_mut()?;
        if !std::mem::replace(&mut link.touched, true) {
            self.touched.push(session);
        }
        Some(&mut link.tally)
    }

    /// Counts a message received over the link of `session`.
    #[inline]
    fn count_recv(&mut self, session: u16, len: usize) {
        self.tally.recv_msgs += 1;
        self.tally.recv_bytes += len as u64;
        // Consecutive messages of one link add up before touching its tally.
        if self.rx_run.0 != session && self.rx_run.1 > 0 {
            self.settle_rx_run();
        }
        self.rx_run.0 = session;
        self.rx_run.1 += 1;
        self.rx_run.2 += len as u64;
    }

    /// Adds the received counts of the current run to their link's tally.
    fn settle_rx_run(&mut self) {
        let (session, msgs, bytes) = std::mem::take(&mut self.rx_run);
        if let Some(t) = self.link_tally(session) {
            t.recv_msgs += msgs;
            t.recv_bytes += bytes;
        }
    }

    /// Publishes the shard's tally and those of the links it touched.
    fn publish(&mut self, shard: &crate::stats::ShardCounters) {
        if self.rx_run.1 > 0 {
            self.settle_rx_run();
        }
        shard.publish(&self.tally);
        for s in self.touched.drain(..) {
            if let Some(link) = self.links.get_mut(usize::from(s)).and_then(Option::as_mut) {
                link.touched = false;
                link.counters.publish(&link.tally);
            }
        }
    }

    /// Pushes one frame (header plus inline bytes) toward `peer`.
    /// With `spill`, a frame that finds its ring full waits in `spilled`
    /// instead of failing (what handlers send).
    fn frame(
        &mut self,
        peer: PeerId,
        header: FrameHeader,
        inline: &[u8],
        spill: bool,
    ) -> Result<(), Error> {
        let Some(link) = self
            .links
            .get_mut(usize::from(peer.session()))
            .and_then(Option::as_mut)
        else {
            return Err(Error::PeerLost(peer));
        };
        let shard = usize::from(peer.shard());
        let pushed = match &mut link.wire {
            Wire::Shm {
                tx, dirty, spilled, ..
            } => {
                let Some(producer) = tx.get_mut(shard) else {
                    return Err(Error::PeerLost(peer));
                };
                let pushed = if spilled[shard] > 0 {
                    // Behind frames already waiting for this ring.
                    Err(PushError::WouldBlock)
                } else {
                    push_frame(producer, &header, inline)
                };
                match pushed {
                    Ok(_) => {
                        dirty[shard] = true;
                        Ok(())
                    }
                    Err(PushError::WouldBlock) if spill => {
                        let s = &mut self.spilled;
                        if s.bytes.len() + HEADER_LEN + inline.len() > SPILL_LIMIT {
                            Err(Error::Full)
                        } else {
                            let start = s.bytes.len();
                            s.bytes.extend_from_slice(header.as_bytes());
                            s.bytes.extend_from_slice(inline);
                            s.frames.push_back((
                                peer.session(),
                                peer.shard(),
                                start..s.bytes.len(),
                            ));
                            spilled[shard] += 1;
                            Ok(())
                        }
                    }
                    Err(PushError::WouldBlock) => Err(Error::Full),
                    Err(PushError::TooLarge { len, max }) => Err(Error::TooLarge { len, max }),
                }
            }
            Wire::Net { conns } => match conns.get_mut(shard) {
                Some(lanes) => {
                    match lane_for(lanes, &mut self.net, &header, spill, &mut link.tally) {
                        Ok(Some(conn)) => self.net.frame(conn, header.as_bytes(), inline, spill),
                        Ok(None) => Err(Error::PeerLost(peer)),
                        Err(e) => Err(e),
                    }
                }
                None => Err(Error::PeerLost(peer)),
            },
            Wire::Custom { conns } => match conns.get(shard).copied().flatten() {
                Some(conn) => self.custom.frame(conn, header.as_bytes(), inline, spill),
                None => Err(Error::PeerLost(peer)),
            },
        };
        match pushed {
            Ok(()) => {
                self.bells_due = true;
                if matches!(header.kind(), Some(FrameKind::Data | FrameKind::Descriptor)) {
                    self.tally.sent_msgs += 1;
                    self.tally.sent_bytes += u64::from(header.len());
                    link.tally.sent_msgs += 1;
                    link.tally.sent_bytes += u64::from(header.len());
                    if !std::mem::replace(&mut link.touched, true) {
                        self.touched.push(peer.session());
                    }
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Sends spilled frames whose rings have room again, oldest first; a
    /// ring still full keeps its frames (and their order) for next time.
    fn retry_spilled(&mut self) {
        let Outbound { links, spilled, .. } = self;
        spilled.blocked.clear();
        for _ in 0..spilled.frames.len() {
            let Some((session, shard, range)) = spilled.frames.pop_front() else {
                break;
            };
            let ring = (session, shard);
            let link = links.get_mut(usize::from(session)).and_then(Option::as_mut);
            let Some(TxLink {
                wire:
                    Wire::Shm {
                        tx,
                        dirty,
                        spilled: waiting,
                        ..
                    },
                ..
            }) = link
            else {
                continue; // the link is gone, and its frames with it
            };
            let s = usize::from(shard);
            if spilled.blocked.contains(&ring) {
                spilled.frames.push_back((session, shard, range));
                continue;
            }
            let bytes = &spilled.bytes[range.clone()];
            let pushed = tx[s].push_with(|area| {
                area[..bytes.len()].copy_from_slice(bytes);
                bytes.len()
            });
            if pushed.is_ok() {
                waiting[s] -= 1;
                dirty[s] = true;
                self.bells_due = true;
            } else {
                spilled.blocked.push(ring);
                spilled.frames.push_back((session, shard, range));
            }
        }
        crate::net::compact(&mut spilled.frames, &mut spilled.bytes, |(_, _, r)| Some(r));
    }

    /// Whether frames toward `peer` are copied onto a socket or connection
    /// (any link but shared memory, where large messages are lent in place).
    fn is_copying(&self, peer: PeerId) -> bool {
        matches!(
            self.links.get(usize::from(peer.session())),
            Some(Some(TxLink {
                wire: Wire::Net { .. } | Wire::Custom { .. },
                ..
            }))
        )
    }

    /// Whether a frame toward `peer` goes onto its TCP stream at once,
    /// whichever of the shard pair's lanes it takes: nothing waits for any.
    fn stream_writes_now(&self, peer: PeerId) -> bool {
        match self.links.get(usize::from(peer.session())) {
            Some(Some(TxLink {
                wire: Wire::Net { conns },
                ..
            })) => conns
                .get(usize::from(peer.shard()))
                .is_some_and(|lanes| lanes.all(|c| self.net.writes_now(c))),
            _ => false,
        }
    }

    /// Whether `peer` is reached over a TCP stream.
    fn is_stream(&self, peer: PeerId) -> bool {
        self.net_conn(peer).is_some_and(|c| self.net.is_stream(c))
    }

    /// The socket toward `peer`, for a network link.
    fn net_conn(&self, peer: PeerId) -> Option<comm_uring::ConnId> {
        match self.links.get(usize::from(peer.session())) {
            Some(Some(TxLink {
                wire: Wire::Net { conns },
                ..
            })) => conns.get(usize::from(peer.shard()))?.current(),
            _ => None,
        }
    }

    /// Forgets network connection `conn` of `route`'s link, which closed;
    /// `true` if it was the lane this shard sends on now.
    fn lane_closed(&mut self, route: Route, conn: comm_uring::ConnId) -> bool {
        match self.links.get_mut(usize::from(route.session)) {
            Some(Some(TxLink {
                wire: Wire::Net { conns },
                ..
            })) => conns
                .get_mut(usize::from(route.peer_shard))
                .is_some_and(|lanes| lanes.detach(conn)),
            _ => false,
        }
    }

    /// Sends a large pool buffer over a network link in place; it waits in
    /// `on_wire` until the kernel is done with it.
    fn send_on_wire(
        &mut self,
        me: u32,
        peer: PeerId,
        buf: Buf,
        spill: bool,
    ) -> Result<(), (Error, Option<Buf>)> {
        let header = FrameHeader::new(FrameKind::Data, me, peer.endpoint(), 0, buf.len() as u32);
        let lanes = match self.links.get_mut(usize::from(peer.session())) {
            Some(Some(TxLink {
                wire: Wire::Net { conns },
                tally,
                ..
            })) => conns.get_mut(usize::from(peer.shard())).map(|l| (l, tally)),
            _ => None,
        };
        let chosen = lanes.map(|(l, tally)| lane_for(l, &mut self.net, &header, spill, tally));
        let conn = match chosen {
            Some(Ok(Some(conn))) => conn,
            Some(Err(e @ Error::Full)) => return Err((e, Some(buf))),
            Some(Err(e)) => return Err((e, None)),
            Some(Ok(None)) | None => return Err((Error::PeerLost(peer), None)),
        };
        let slot = self.pool.slot_of(&buf);
        // SAFETY: the buffer lives through the call; unless the kernel took
        // all of it then, it is parked in `on_wire[slot]` below and leaves
        // it only on SendDone(slot), so its bytes stay put while read.
        let staged = unsafe {
            self.net.zero_copy(
                conn,
                header.as_bytes(),
                buf.as_ptr(),
                buf.len(),
                slot as u64,
                spill,
            )
        };
        match staged {
            Ok(written) => {
                if written {
                    // The kernel took it all during the call: free again.
                    drop(buf);
                } else {
                    self.on_wire[slot] = Some(buf);
                }
                self.bells_due = true;
                self.tally.sent_msgs += 1;
                self.tally.sent_bytes += u64::from(header.len());
                if let Some(t) = self.link_tally(peer.session()) {
                    t.sent_msgs += 1;
                    t.sent_bytes += u64::from(header.len());
                }
                Ok(())
            }
            Err(e) => Err((e, Some(buf))),
        }
    }

    /// Sends `buf` inline if it fits a slot, else as a descriptor into our
    /// pool: the peer reads it in place and the buffer waits in `lent` until
    /// the peer's `Release`. On a full ring the buffer comes back.
    fn send_buf(
        &mut self,
        me: u32,
        peer: PeerId,
        buf: Buf,
        spill: bool,
    ) -> Result<(), (Error, Option<Buf>)> {
        if buf.len() <= inline_max() {
            let header =
                FrameHeader::new(FrameKind::Data, me, peer.endpoint(), 0, buf.len() as u32);
            return match self.frame(peer, header, &buf, spill) {
                Ok(()) => Ok(()),
                Err(Error::Full) => Err((Error::Full, Some(buf))),
                Err(e) => Err((e, None)),
            };
        }
        if self.is_copying(peer) {
            let conn = self.net_conn(peer);
            if buf.len() >= ZERO_COPY_MIN
                && self.pool.owns(&buf)
                && conn.is_some_and(|c| self.net.is_stream(c))
            {
                return self.send_on_wire(me, peer, buf, spill);
            }
            let header =
                FrameHeader::new(FrameKind::Data, me, peer.endpoint(), 0, buf.len() as u32);
            return match self.frame(peer, header, &buf, spill) {
                Ok(()) => Ok(()),
                Err(Error::Full) => Err((Error::Full, Some(buf))),
                Err(e) => Err((e, None)),
            };
        }
        let buf = if self.pool.owns(&buf) {
            buf
        } else {
            // From another shard's pool: the peer could not find it. Copy once.
            let Ok(mut own) = self.pool.alloc(buf.len()) else {
                return Err((Error::Full, Some(buf)));
            };
            own.copy_from_slice(&buf);
            own
        };
        self.lend(me, peer, buf, spill)
    }

    fn lend(
        &mut self,
        me: u32,
        peer: PeerId,
        buf: Buf,
        spill: bool,
    ) -> Result<(), (Error, Option<Buf>)> {
        let header = FrameHeader::new(
            FrameKind::Descriptor,
            me,
            peer.endpoint(),
            0,
            buf.len() as u32,
        )
        .with_aux(buf.region_offset() as u64);
        match self.frame(peer, header, &[], spill) {
            Ok(()) => {
                let slot = self.pool.slot_of(&buf);
                self.lent[slot] = Some((buf, peer.session(), peer.shard()));
                Ok(())
            }
            Err(Error::Full) => Err((Error::Full, Some(buf))),
            Err(e) => Err((e, None)),
        }
    }
}

/// The connection a frame with `header` goes on: the current lane, after
/// moving on to the next one for a large message (announced by a `Lane`
/// frame on the lane left). `None`: the lane is not attached.
fn lane_for(
    lanes: &mut TxLanes<comm_uring::ConnId>,
    net: &mut NetOut,
    header: &FrameHeader,
    spill: bool,
    tally: &mut Tally,
) -> Result<Option<comm_uring::ConnId>, Error> {
    let Some(conn) = lanes.current() else {
        return Ok(None);
    };
    let len = HEADER_LEN + header.len() as usize;
    let Some(next) = lanes.next_for(header, |to| net.has_room(to, len, spill)) else {
        return Ok(Some(conn));
    };
    net.frame(conn, lanes::announcement(next).as_bytes(), &[], spill)?;
    lanes.switch(next);
    tally.lane_switches += 1;
    Ok(lanes.current())
}

/// Pushes one frame (header, then inline bytes) into a ring.
#[inline(always)]
fn push_frame(
    producer: &mut Producer,
    header: &FrameHeader,
    inline: &[u8],
) -> Result<usize, PushError> {
    producer.push_with(|area| {
        area[..HEADER_LEN].copy_from_slice(header.as_bytes());
        area[HEADER_LEN..HEADER_LEN + inline.len()].copy_from_slice(inline);
        HEADER_LEN + inline.len()
    })
}

/// `len` bytes at `offset` of a peer's pool segment, if they lie inside it.
fn peer_bytes(pool: &Segment, offset: u64, len: usize) -> Option<&[u8]> {
    let offset = usize::try_from(offset).ok()?;
    if offset.checked_add(len)? > pool.payload_len() {
        return None;
    }
    // SAFETY: in bounds of the mapping, which `pool` keeps alive. The peer does
    // not reuse the buffer until we release it, after this borrow ends.
    Some(unsafe { std::slice::from_raw_parts(pool.payload_ptr().as_ptr().add(offset), len) })
}

/// What became of the message at the head of a ring.
enum Step {
    Done,
    Stall,
    Corrupt,
    /// The peer shard said goodbye: nothing follows on this ring.
    Closed,
}

pub(crate) struct Shard {
    index: usize,
    shared: Arc<EngineShared>,
    commands: mpsc::Receiver<Command>,
    endpoints: Vec<LocalEndpoint>,
    /// Endpoint id -> position in `endpoints` + 1 (0: not here).
    by_id: Vec<u32>,
    rings: Vec<RxRing>,
    out: Outbound,
    /// Endpoints waiting to be removed.
    closing: usize,
    /// The last pass left application work behind (a stalled submit, a full
    /// batch), so the next one looks again without a nudge.
    app_backlog: bool,
    /// The network side, made when the first network link arrives.
    net: Option<Net>,
    /// Connections of custom transports.
    customs: Customs,
    /// This thread's own descriptor table, when it has one.
    fds: Option<PrivateFds>,
}

impl Shard {
    pub(crate) fn new(
        index: usize,
        shared: Arc<EngineShared>,
        commands: mpsc::Receiver<Command>,
        fds: Option<PrivateFds>,
    ) -> Self {
        let pool = shared.pool(index).clone();
        let lent = (0..pool.slot_count()).map(|_| None).collect();
        let on_wire = (0..pool.slot_count()).map(|_| None).collect();
        let inbox_limits = shared.inbox_limits.clone();
        Shard {
            index,
            shared,
            commands,
            endpoints: Vec::new(),
            by_id: Vec::new(),
            rings: Vec::new(),
            out: Outbound {
                links: Vec::new(),
                pool,
                inbox_limits,
                lent,
                releases: Vec::with_capacity(1024),
                bells_due: false,
                tally: Tally::default(),
                touched: Vec::with_capacity(64),
                rx_run: (0, 0, 0),
                net: NetOut::new(NET_BACKLOG),
                on_wire,
                spilled: Spilled::default(),
                custom: CustomOut::new(NET_BACKLOG),
            },
            closing: 0,
            app_backlog: false,
            net: None,
            customs: Customs::default(),
            fds,
        }
    }

    /// The progress loop: poll everything; when idle, spin, then yield, then park.
    pub(crate) fn run(mut self) {
        PROGRESS_OF.with(|p| p.set(self.shared.instance));
        let mut idle = 0u32;
        let mut busy = 0u32;
        let mut idle_since = None;
        while !self.shared.stop.load(Ordering::Acquire) {
            if self.poll() > 0 {
                idle = 0;
                idle_since = None;
                self.out.publish(&self.shared.counters[self.index]);
                busy = busy.wrapping_add(1);
                if busy % RELIABLE_EVERY == 0 {
                    self.publish_reliable();
                }
                continue;
            }
            idle = idle.wrapping_add(1);
            // No PAUSE while spinning: it costs tens of nanoseconds on recent
            // cores, all of it added to a message that lands meanwhile, and a
            // progress thread owns its core.
            if idle % CLOCK_EVERY != 0 {
                continue;
            }
            self.publish_reliable();
            let quiet = idle_since
                .get_or_insert_with(std::time::Instant::now)
                .elapsed();
            match Idle::after(quiet) {
                Idle::Spin => {}
                Idle::Share => std::thread::yield_now(),
                Idle::Yield => {
                    std::thread::yield_now();
                    // Look at the clock again after the next empty poll.
                    idle = CLOCK_EVERY - 1;
                }
                Idle::Park => self.park(),
            }
        }
        self.flush_on_stop();
        self.say_goodbye();
        self.drain_net_on_stop();
        self.out.publish(&self.shared.counters[self.index]);
        self.publish_reliable();
    }

    /// Publishes the reliable-UDP figures of this shard's links when they
    /// changed. They are sums over the associations, so this runs now and
    /// then (see `RELIABLE_EVERY`), not after every busy pass.
    fn publish_reliable(&mut self) {
        let Some(net) = &self.net else {
            return;
        };
        let Outbound {
            links, net: out, ..
        } = &mut self.out;
        if out.udp_slots() == 0 {
            return;
        }
        for link in links.iter_mut().flatten() {
            link.reliable_now = link.reliable_gone;
        }
        out.each_reliable_stats(|conn, stats| {
            let session = net.routes.get(conn).map(|r| usize::from(r.session));
            if let Some(Some(link)) = session.and_then(|s| links.get_mut(s)) {
                link.reliable_now.add(&ReliableLinkStats::from(stats));
            }
        });
        for link in links.iter_mut().flatten() {
            if link.reliable_now != link.reliable_shown {
                link.counters.publish_reliable(&link.reliable_now);
                link.reliable_shown = link.reliable_now;
            }
        }
    }

    /// Sleeps until a producer rings, a socket has something, or a timer
    /// is due.
    fn park(&mut self) {
        // Nobody rings us when a full ring drains, so while anything
        // waits for ring space the park is short.
        let limit = if self.is_stalled() {
            STALLED_PARK
        } else {
            PARK
        };
        let shared = Arc::clone(&self.shared);
        let bell = shared.bell(self.index);
        match self.net.take() {
            None => {
                bell.park(Some(limit), || self.has_work());
            }
            Some(mut net) => {
                // Sleep on the doorbell and the sockets at once, no
                // longer than a reliable association's next timer.
                let limit = self.out.net.next_timer().map_or(limit, |t| t.min(limit));
                bell.park_via(
                    || self.has_work(),
                    |word, sleeping| {
                        if let Err(e) = net.uring.park(Some((word, sleeping)), limit) {
                            tracing::warn!("io_uring wait failed: {e}");
                        }
                        false
                    },
                );
                net.spin();
                self.net = Some(net);
            }
        }
    }

    /// Gives the network ring a moment to put what is queued (the goodbyes
    /// included) on the wire before its sockets close.
    fn drain_net_on_stop(&mut self) {
        let deadline = std::time::Instant::now() + STOP_GRACE;
        while self.net.is_some() && std::time::Instant::now() < deadline {
            self.drain_net();
            self.flush_net();
            if self.out.net.backlog() == 0 && self.out.net.all_acked() {
                return;
            }
            std::thread::yield_now();
        }
    }

    /// Tells every peer shard that this one stops, so that peers give up
    /// their links at once instead of filling rings nobody drains.
    fn say_goodbye(&mut self) {
        for s in 0..self.out.links.len() {
            self.goodbye(s as u16);
        }
        self.ring_bells();
        self.flush_net();
    }

    /// Sends a `Close` to every peer shard of the link of `session`.
    fn goodbye(&mut self, session: u16) {
        let close = FrameHeader::new(FrameKind::Close, 0, 0, 0, 0);
        let peers = self
            .out
            .links
            .get(usize::from(session))
            .and_then(Option::as_ref)
            .map_or(0, |l| match &l.wire {
                Wire::Shm { tx, .. } => tx.len(),
                Wire::Net { conns } => conns.len(),
                Wire::Custom { conns } => conns.len(),
            });
        for shard in 0..peers {
            let to = PeerId::pack(session, shard as u16, 0);
            // Best effort: a peer whose ring stays full is not draining it
            // and learns of the loss from its liveness check instead.
            // Spilled: the goodbye goes after everything sent before it.
            let _ = self.out.frame(to, close, &[], true);
        }
    }

    /// On shutdown, sends what application threads had already handed over
    /// as far as the peers' rings take it, within a short grace.
    fn flush_on_stop(&mut self) {
        let deadline = std::time::Instant::now() + STOP_GRACE;
        while std::time::Instant::now() < deadline {
            let work = self.drain_submits();
            self.ring_bells();
            self.flush_net();
            let pending = self.endpoints.iter().any(|e| {
                e.stalled.is_some()
                    || matches!(&e.inbox, Inbox::Handle { submits, .. } if !submits.is_empty())
            });
            if !pending {
                return;
            }
            if work == 0 {
                std::thread::yield_now();
            }
        }
    }

    /// Whether something waits for room in a ring toward a peer.
    fn is_stalled(&self) -> bool {
        !self.out.releases.is_empty()
            || !self.out.spilled.frames.is_empty()
            || !self.out.net.is_empty()
            || !self.out.custom.is_empty()
            || !self.customs.deferred.is_empty()
            || self.net.as_ref().is_some_and(|n| !n.deferred.is_empty())
            || self.endpoints.iter().any(|e| e.stalled.is_some())
    }

    fn poll(&mut self) -> usize {
        self.out.net.begin_pass();
        let work = self.poll_once();
        self.out.net.end_pass();
        work
    }

    fn poll_once(&mut self) -> usize {
        let mut work = self.drain_rings();
        if self.net.is_some() {
            work += self.drain_net();
        }
        if !self.customs.conns.is_empty() {
            work += self.drain_custom();
        }
        // What application threads handed over is looked at only when they
        // nudged us: an idle pass then costs one read of a cached word.
        if self.shared.nudges[self.index].take() || self.app_backlog {
            work += self.drain_returns() + self.drain_submits();
        }
        work += self.drain_commands();
        if work > 0 && self.closing > 0 {
            self.reap_endpoints();
        }
        if work > 0 {
            self.ring_bells();
        }
        // The network side also has work of its own: frames a full socket
        // held back, and the reliable UDP timers (acks, retransmissions).
        if let Some(net) = &self.net {
            if work > 0
                || !self.out.net.is_empty()
                || self.out.net.timer_due()
                || net.uring.needs_flush()
            {
                self.flush_net();
            }
        }
        if !self.out.custom.is_empty() {
            self.flush_custom();
        }
        work
    }

    fn has_work(&self) -> bool {
        self.shared.pending[self.index].load(Ordering::Acquire) > 0
            || self.shared.nudges[self.index].is_raised()
            || !self.shared.returns[self.index].is_empty()
            || self.shared.stop.load(Ordering::Acquire)
            || self.rings.iter().any(|r| r.rx.is_ready())
            || self.endpoints.iter().any(|e| match &e.inbox {
                Inbox::Handle { submits, .. } => !submits.is_empty(),
                Inbox::Handler(_) => false,
            })
    }

    fn drain_commands(&mut self) -> usize {
        if self.shared.pending[self.index].load(Ordering::Acquire) == 0 {
            return 0;
        }
        let mut n = 0;
        while let Ok(cmd) = self.commands.try_recv() {
            self.shared.pending[self.index].fetch_sub(1, Ordering::AcqRel);
            n += 1;
            match cmd {
                Command::AddEndpoint(ep) => {
                    let id = ep.id as usize;
                    if self.by_id.len() <= id {
                        self.by_id.resize(id + 1, 0);
                    }
                    self.endpoints.push(ep);
                    self.by_id[id] = self.endpoints.len() as u32;
                }
                Command::RemoveEndpoint(id) => {
                    if let Some(ep) = self.endpoint_mut(id) {
                        ep.closing = true;
                        self.closing += 1;
                    }
                }
                Command::AddLink(half, ack) => {
                    let s = usize::from(half.session);
                    if self.out.links.len() <= s {
                        self.out.links.resize_with(s + 1, || None);
                    }
                    for (p, (rx, peer_pool)) in half.rx.into_iter().zip(half.peer_pools).enumerate()
                    {
                        self.rings.push(RxRing {
                            session: half.session,
                            peer_shard: p as u16,
                            rx,
                            peer_pool,
                            closing: false,
                            done: false,
                        });
                    }
                    let peers = half.tx.len();
                    let wire = Wire::Shm {
                        tx: half.tx,
                        peer_bells: half.peer_bells,
                        dirty: vec![false; peers],
                        spilled: vec![0; peers],
                    };
                    self.out.links[s] = Some(TxLink::new(wire, half.counters));
                    let _ = ack.send(());
                }
                Command::DropLink { session, peer_gone } => self.drop_link(session, peer_gone),
                Command::AddCustom(c, ack) => {
                    self.add_custom(c);
                    let _ = ack.send(());
                }
                Command::AddConn(handover, ack) => {
                    let added = handover
                        .take(self.fds.as_ref())
                        .and_then(|conn| self.add_conn(conn));
                    if let Err(e) = added {
                        // The set-up sees the ack go missing and fails.
                        tracing::error!("cannot take a network connection: {e}");
                    } else {
                        let _ = ack.send(());
                    }
                }
            }
        }
        n
    }

    /// Takes one connection of a custom link.
    fn add_custom(&mut self, c: CustomConn) {
        let route = Route {
            session: c.session,
            peer_shard: c.peer_shard,
            lane: 0,
        };
        let index = self.customs.add(route, c.conn);
        let empty = Wire::Custom { conns: Vec::new() };
        if let Wire::Custom { conns } = &mut self.out.link_for(c.session, c.counters, empty).wire {
            set_slot(conns, usize::from(c.peer_shard), index);
        }
    }

    /// Delivers what custom connections received, in order per connection.
    fn drain_custom(&mut self) -> usize {
        let Shard {
            index,
            shared,
            endpoints,
            by_id,
            out,
            customs,
            ..
        } = self;
        let loans = LoanMaker {
            shared,
            shard: *index,
        };
        let mut losses: Vec<(u16, &'static str)> = Vec::new();
        let mut n = 0;
        let Customs { conns, deferred } = customs;
        while let Some((slot, bytes)) = deferred.front() {
            let route = match conns.get(*slot).and_then(Option::as_ref) {
                Some((route, _)) => *route,
                None => {
                    deferred.pop_front();
                    continue;
                }
            };
            let from = PeerId::pack(route.session, route.peer_shard, 0);
            let step = deliver(bytes, from, None, endpoints, by_id, out, &loans);
            if settle(step, route.session, &mut losses) {
                break;
            }
            deferred.pop_front();
            n += 1;
        }
        for (slot, entry) in conns.iter_mut().enumerate() {
            let Some((route, conn)) = entry else {
                continue;
            };
            // A connection with frames kept back is not read until they
            // are taken: its transport then holds the sender back, instead
            // of frames piling up here.
            if deferred.iter().any(|d| d.0 == slot) {
                continue;
            }
            let route = *route;
            let from = PeerId::pack(route.session, route.peer_shard, 0);
            let got = conn.recv(&mut |frame| {
                if deferred.iter().any(|d| d.0 == slot) {
                    deferred.push_back((slot, frame.to_vec()));
                    return;
                }
                let step = deliver(frame, from, None, endpoints, by_id, out, &loans);
                if settle(step, route.session, &mut losses) {
                    deferred.push_back((slot, frame.to_vec()));
                }
            });
            match got {
                Ok(k) => n += k,
                Err(e) => {
                    tracing::debug!(session = route.session, "custom connection ended: {e}");
                    *entry = None;
                    losses.push((route.session, "its connection failed"));
                }
            }
        }
        for (session, why) in losses {
            shared.lose_session(session, why, false);
        }
        n
    }

    /// Hands staged frames to custom connections.
    fn flush_custom(&mut self) {
        let mut failed = None;
        self.out
            .custom
            .flush(&mut self.customs, |session| failed = Some(session));
        if let Some(session) = failed {
            self.shared
                .lose_session(session, "its connection failed", false);
        }
    }

    /// Takes one socket of a network link.
    fn add_conn(&mut self, c: NetConn) -> std::io::Result<()> {
        if self.net.is_none() {
            self.net = Some(Net::new(self.out.pool.max_len())?);
        }
        let net = self.net.as_mut().expect("made above");
        let route = Route {
            session: c.session,
            peer_shard: c.peer_shard,
            lane: c.lane,
        };
        // A second descriptor lets frames be written at once while nothing
        // waits for the socket (see `NetOut::frame`).
        let direct = crate::fd_table::duplicate(c.socket.fd())?;
        let conn = net.add(c.socket, route)?;
        self.out.net.add_direct(conn, direct);
        net.spin();
        let read_now = net
            .rx_lanes
            .attach(c.session, c.peer_shard, c.lane, c.lanes, conn);
        if !read_now {
            // Not read until the peer announces a move to it.
            net.uring.pause_receive(conn, true);
            net.paused.push(conn);
        }
        if let Some(setup) = c.udp {
            if let Err(e) = self.out.net.add_udp(conn, setup, self.out.pool.max_len()) {
                net.uring.close(conn);
                // Nothing went over it yet: no figures to keep.
                let _ = self.out.net.forget(conn);
                return Err(std::io::Error::other(e.to_string()));
            }
        }
        let empty = Wire::Net { conns: Vec::new() };
        if let Wire::Net { conns } = &mut self.out.link_for(c.session, c.counters, empty).wire {
            let shard = usize::from(c.peer_shard);
            if conns.len() <= shard {
                conns.resize_with(shard + 1, TxLanes::default);
            }
            conns[shard].attach(c.lane, c.lanes, conn);
        }
        Ok(())
    }

    /// Forgets a lost link: its rings, what it owed us and what we owed it.
    fn drop_link(&mut self, session: u16, peer_gone: bool) {
        // Tell the peer shards, so that a loss seen on one side is seen on
        // both (a no-op when the link is gone or the peer sent the goodbye).
        self.goodbye(session);
        self.ring_bells();
        self.flush_net();
        self.out.publish(&self.shared.counters[self.index]);
        self.publish_reliable();
        // What the peer sent before the loss is still delivered. A live peer
        // ends each ring with a `Close` of its own (it may still be flushing).
        if peer_gone {
            for r in self.rings.iter_mut().filter(|r| r.session == session) {
                r.closing = true;
            }
        }
        if let Some(link) = self.out.links.get_mut(usize::from(session)) {
            *link = None;
        }
        if let Some(net) = &mut self.net {
            // Buffers being sent in place come home with their SendDone.
            let out = &mut self.out.net;
            // The link's figures were published above, for the last time.
            net.close_session(session, |conn| {
                let _ = out.forget(conn);
            });
        }
        self.customs.close_session(session);
        // Buffers the peer was reading in place come home: it is gone.
        for lent in &mut self.out.lent {
            if lent.as_ref().is_some_and(|(_, s, _)| *s == session) {
                *lent = None;
            }
        }
        self.out
            .releases
            .retain(|(back, _)| back.session() != session);
    }

    fn endpoint_mut(&mut self, id: u32) -> Option<&mut LocalEndpoint> {
        let pos = self.by_id.get(id as usize).copied().filter(|&p| p > 0)?;
        self.endpoints.get_mut(pos as usize - 1)
    }

    /// Removes closing endpoints once everything they submitted is sent.
    fn reap_endpoints(&mut self) {
        let done: Option<u32> = self.endpoints.iter().find_map(|e| {
            let drained = match &e.inbox {
                Inbox::Handle { submits, .. } => submits.is_empty() && e.stalled.is_none(),
                Inbox::Handler(_) => true,
            };
            (e.closing && drained).then_some(e.id)
        });
        if let Some(id) = done {
            self.remove_endpoint(id);
            self.closing -= 1;
        }
    }

    fn remove_endpoint(&mut self, id: u32) {
        let Some(pos) = self.by_id.get(id as usize).copied().filter(|&p| p > 0) else {
            return;
        };
        self.endpoints.swap_remove(pos as usize - 1);
        self.by_id[id as usize] = 0;
        if let Some(moved) = self.endpoints.get(pos as usize - 1) {
            self.by_id[moved.id as usize] = pos;
        }
    }

    /// Sends what application threads submitted, oldest first.
    fn drain_submits(&mut self) -> usize {
        let Shard {
            endpoints,
            out,
            app_backlog,
            ..
        } = self;
        let mut n = 0;
        *app_backlog = false;
        for ep in endpoints.iter_mut() {
            let Inbox::Handle { submits, .. } = &mut ep.inbox else {
                continue;
            };
            for i in 0..=BATCH {
                if i == BATCH {
                    // More may wait; the next pass goes on (fairness).
                    *app_backlog = true;
                    break;
                }
                let Some(s) = ep.stalled.take().or_else(|| submits.pop().ok()) else {
                    break;
                };
                match out.send_buf(ep.id, s.peer, s.buf, false) {
                    Ok(()) => n += 1,
                    Err((Error::Full, Some(buf))) => {
                        ep.stalled = Some(Submit { peer: s.peer, buf });
                        *app_backlog = true;
                        break;
                    }
                    // Accepted by `send` but undeliverable (peer gone): counted.
                    Err(_) => {
                        out.tally.errors += 1;
                        n += 1;
                    }
                }
            }
        }
        n
    }

    /// Hands peers back the buffers application threads finished reading.
    fn drain_returns(&mut self) -> usize {
        let out = &mut self.out;
        let returns = &self.shared.returns[self.index];
        let mut n = 0;
        // `is_empty` first: an empty `pop` costs a SeqCst fence.
        while let Some((back, release)) = (!returns.is_empty()).then(|| returns.pop()).flatten() {
            n += 1;
            if matches!(out.frame(back, release, &[], false), Err(Error::Full)) {
                // Retried first thing every pass until it goes out.
                out.releases.push((back, release));
            }
        }
        n
    }

    /// Delivers what arrived on network sockets, in order per socket: first
    /// what was kept back, then what the ring completed since.
    fn drain_net(&mut self) -> usize {
        let Shard {
            index,
            shared,
            endpoints,
            by_id,
            out,
            net,
            ..
        } = self;
        let Some(Net {
            uring,
            routes,
            deferred,
            paused,
            rx_scratch,
            rx_lanes,
            left_lanes,
        }) = net
        else {
            return 0;
        };
        let loans = LoanMaker {
            shared,
            shard: *index,
        };
        // Rare events are collected (allocating only when they happen) and
        // acted on once the ring is no longer borrowed.
        let mut losses: Vec<(u16, &'static str)> = Vec::new();
        let mut closed = Vec::new();
        let mut n = 0;
        let mut t = Taker {
            rx_lanes,
            left_lanes,
            endpoints,
            by_id,
            out,
            loans: &loans,
            losses: &mut losses,
        };
        if !deferred.is_empty() {
            n += t.drain_deferred(deferred, routes);
        }
        pause_lanes_left(uring, paused, t.left_lanes);
        n += uring.poll_with(|ring_out, ev| match ev {
            Event::Record { conn, bytes } => {
                let Some(route) = routes.get(conn) else {
                    return;
                };
                // Behind a kept-back record, everything from its socket
                // waits; so does what a lane not read now still delivered.
                if !t
                    .rx_lanes
                    .is_current(route.session, route.peer_shard, route.lane)
                    || deferred.holds(conn)
                    || t.take(bytes, route)
                {
                    deferred.keep(conn, bytes);
                }
                // A lane just left is read no further in this poll: what
                // follows on it belongs after the other lane's frames.
                for &left in t.left_lanes.iter() {
                    ring_out.pause_receive(left);
                }
            }
            Event::SendDone { token, .. } => {
                if let Some(b) = t.out.on_wire.get_mut(token as usize) {
                    *b = None;
                }
            }
            Event::Closed { conn, error } => closed.push((conn, error)),
            Event::Datagram { conn, bytes, .. } => {
                let Some(route) = routes.get(conn) else {
                    return;
                };
                if t.out.net.is_reliable(conn) {
                    // Messages are pulled below, once the ring is free.
                    if t.out.net.on_datagram(conn, bytes).is_err() {
                        t.losses.push((route.session, "a broken reliable stream"));
                    }
                    return;
                }
                // Datagram mode: one frame per datagram, and a datagram that
                // cannot be taken now is dropped like the network would.
                let from = PeerId::pack(route.session, route.peer_shard, 0);
                match deliver(bytes, from, None, t.endpoints, t.by_id, t.out, t.loans) {
                    Step::Done => {}
                    Step::Stall => t.out.tally.drops += 1,
                    Step::Closed => t.losses.push((route.session, "the peer engine shut down")),
                    Step::Corrupt => t.out.tally.errors += 1,
                }
            }
        });
        // A pass that brought nothing (the common case while spinning) has
        // nothing to settle below: no message can have become whole, no
        // record was kept back or let go, no lane moved, nothing closed.
        if n == 0 && left_lanes.is_empty() && closed.is_empty() && losses.is_empty() {
            return 0;
        }
        pause_lanes_left(uring, paused, left_lanes);
        // Whole messages of reliable UDP associations, in order, until one
        // cannot be taken (it waits with the kept-back records; the rest stay
        // in the association, whose window then closes on the sender).
        for i in 0..out.net.udp_slots() {
            let Some(conn) = out.net.reliable_at(i) else {
                continue;
            };
            let Some(route) = routes.get(conn) else {
                continue;
            };
            if deferred.holds(conn) {
                continue;
            }
            let from = PeerId::pack(route.session, route.peer_shard, 0);
            while out.net.next_message(conn, rx_scratch) {
                n += 1;
                let step = deliver(rx_scratch, from, None, endpoints, by_id, out, &loans);
                if settle(step, route.session, &mut losses) {
                    deferred.keep(conn, rx_scratch);
                    break;
                }
            }
        }
        // A stream with records kept back is not read on: TCP then holds
        // its sender back, instead of records piling up here.
        for conn in deferred.conns() {
            if !paused.contains(&conn) && out.net.is_stream(conn) {
                uring.pause_receive(conn, true);
                paused.push(conn);
            }
        }
        // Read again once nothing of it waits here, unless it is a lane the
        // peer does not send on now.
        paused.retain(|&c| {
            let waiting = deferred.holds(c);
            let idle_lane = routes
                .get(c)
                .is_some_and(|r| !rx_lanes.is_current(r.session, r.peer_shard, r.lane));
            if !waiting && !idle_lane {
                uring.pause_receive(c, false);
            }
            waiting || idle_lane
        });
        for (conn, error) in closed.drain(..) {
            let last = out.net.forget(conn);
            if let Some(route) = routes.forget(conn) {
                if let (Some(last), Some(Some(link))) =
                    (last, out.links.get_mut(usize::from(route.session)))
                {
                    // Its counts stay in the link's; its round trip does not
                    // (the link's is that of its live associations).
                    let gone = ReliableLinkStats {
                        srtt_ns: 0,
                        ..ReliableLinkStats::from(&last)
                    };
                    link.reliable_gone.add(&gone);
                }
                // A lane neither side uses now: the link goes on (see
                // `RxLanes::end`).
                if !out.lane_closed(route, conn)
                    && !rx_lanes.end(route.session, route.peer_shard, route.lane)
                {
                    continue;
                }
                tracing::debug!(
                    session = route.session,
                    "network connection closed: {error:?}"
                );
                losses.push((route.session, "its connection closed"));
            }
        }
        for (session, why) in losses {
            out.tally.errors += u64::from(why == MALFORMED);
            shared.lose_session(session, why, false);
        }
        n
    }

    /// Delivers what arrived on every ring, in order per ring.
    fn drain_rings(&mut self) -> usize {
        let Shard {
            index,
            shared,
            endpoints,
            by_id,
            rings,
            out,
            ..
        } = self;
        // Buffers owed to peers go home first (no allocation: the vector and
        // its capacity are moved out and back).
        if !out.spilled.frames.is_empty() {
            out.retry_spilled();
        }
        if !out.releases.is_empty() {
            let mut pending = std::mem::take(&mut out.releases);
            pending.retain(|&(back, release)| {
                matches!(out.frame(back, release, &[], false), Err(Error::Full))
            });
            out.releases = pending;
        }
        let loans = LoanMaker {
            shared,
            shard: *index,
        };
        let mut n = 0;
        let mut finished = false;
        let mut closed = None;
        for ring in rings.iter_mut() {
            let RxRing {
                session,
                peer_shard,
                rx,
                peer_pool,
                closing,
                done,
            } = ring;
            let from = PeerId::pack(*session, *peer_shard, 0);
            for _ in 0..BATCH {
                let step = rx.peek_with(|bytes| {
                    deliver(bytes, from, Some(peer_pool), endpoints, by_id, out, &loans)
                });
                match step {
                    Ok(Step::Done) => {
                        rx.advance();
                        n += 1;
                    }
                    Ok(Step::Stall) => break,
                    Err(comm_shm::PopError::Empty) => {
                        *done = *closing;
                        finished |= *done;
                        break;
                    }
                    Ok(Step::Closed) => {
                        rx.advance();
                        n += 1;
                        closed = Some(*session);
                        (*done, finished) = (true, true);
                        break;
                    }
                    Ok(Step::Corrupt) | Err(comm_shm::PopError::Corrupt { .. }) => {
                        // A peer that writes garbage loses this ring; nothing
                        // is read past it.
                        tracing::warn!(
                            session = *session,
                            peer_shard = *peer_shard,
                            "closed a ring after a malformed frame"
                        );
                        out.tally.errors += 1;
                        if let Some(t) = out.link_tally(*session) {
                            t.errors += 1;
                        }
                        (*done, finished) = (true, true);
                        break;
                    }
                }
            }
        }
        if let Some(session) = closed {
            // Every shard drops its half when the command arrives (its other
            // rings of the link are drained first).
            self.shared
                .lose_session(session, "the peer engine shut down", false);
        }
        if finished {
            self.rings.retain(|r| !r.done);
        }
        n
    }

    /// Hands staged network frames to the ring and submits.
    fn flush_net(&mut self) {
        let Some(net) = &mut self.net else {
            return;
        };
        let on_wire = &mut self.out.on_wire;
        let mut dead = None;
        self.out.net.flush(
            &mut net.uring,
            |token| on_wire[token as usize] = None,
            |conn| dead = net.routes.get(conn),
        );
        if let Some(route) = dead {
            self.shared
                .lose_session(route.session, "the peer stopped acknowledging", false);
        }
        if let Err(e) = net.uring.flush() {
            tracing::warn!("io_uring submit failed: {e}");
        }
        self.out.net.settle_backlog(&net.uring);
    }

    /// Wakes whoever this pass gave work: peer shards and application threads.
    fn ring_bells(&mut self) {
        if !std::mem::take(&mut self.out.bells_due) {
            return;
        }
        for link in self.out.links.iter_mut().flatten() {
            let Wire::Shm {
                peer_bells, dirty, ..
            } = &mut link.wire
            else {
                continue;
            };
            for (shard, dirty) in dirty.iter_mut().enumerate() {
                if std::mem::take(dirty) {
                    bell_at(peer_bells, shard).ring();
                }
            }
        }
        for ep in &mut self.endpoints {
            if std::mem::take(&mut ep.wake) {
                if let Inbox::Handle { bell, .. } = &ep.inbox {
                    bell.ring();
                }
            }
        }
    }
}

/// Handles one frame from the ring of `from` (its session and shard): hands a
/// message to its endpoint or takes back a buffer we lent. Checks every
/// resource it needs before any side effect, so a `Stall` can be retried.
#[allow(clippy::too_many_arguments)]
fn deliver(
    bytes: &[u8],
    from: PeerId,
    peer_pool: Option<&Arc<Segment>>,
    endpoints: &mut [LocalEndpoint],
    by_id: &[u32],
    out: &mut Outbound,
    loans: &LoanMaker<'_>,
) -> Step {
    let Ok((header, inline)) = FrameHeader::decode_frame(bytes, u32::MAX) else {
        return Step::Corrupt;
    };
    let payload = match header.kind() {
        Some(FrameKind::Data) => inline,
        Some(FrameKind::Descriptor) => {
            // Only shared-memory peers can point into their pool.
            let Some(p) =
                peer_pool.and_then(|pool| peer_bytes(pool, header.aux(), header.len() as usize))
            else {
                return Step::Corrupt;
            };
            p
        }
        Some(FrameKind::Release) => {
            let Some(slot) = out.pool.slot_at(header.aux(), u64::from(header.len())) else {
                return Step::Corrupt;
            };
            return match &out.lent[slot] {
                Some((_, session, shard))
                    if (*session, *shard) == (from.session(), from.shard()) =>
                {
                    out.lent[slot] = None;
                    Step::Done
                }
                // Not lent, or lent to someone else: a lying peer.
                _ => Step::Corrupt,
            };
        }
        Some(FrameKind::Close) => return Step::Closed,
        _ => return Step::Done,
    };
    let peer = PeerId::pack(from.session(), from.shard(), header.src());
    let slot = by_id.get(header.dst() as usize).copied().unwrap_or(0);
    match slot
        .checked_sub(1)
        .and_then(|i| endpoints.get_mut(i as usize))
    {
        None => {
            out.tally.drops += 1;
            if let Some(t) = out.link_tally(from.session()) {
                t.drops += 1;
            }
        }
        Some(ep) => match &mut ep.inbox {
            Inbox::Handler(handler) => {
                // SAFETY: the payload stays in place, unmodified, until the
                // frame is released after this call; the Msg lives only for it.
                let msg = unsafe { Msg::borrowed(peer, payload) };
                let mut ctx = Ctx { me: ep.id, out };
                // A panicking handler must not take the whole shard down.
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    (**handler)(&mut ctx, &msg)
                }));
                match ran {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => out.tally.errors += 1,
                    Err(_) => {
                        out.tally.errors += 1;
                        tracing::error!(
                            endpoint = ep.id,
                            "a handler panicked; the message is dropped"
                        );
                    }
                }
            }
            Inbox::Handle { inbox, quota, .. } => {
                let free = inbox.slots();
                if free == 0 {
                    return Step::Stall;
                }
                quota.settle(inbox.buffer().capacity() - free);
                let (msg, class) = if let (Some(FrameKind::Descriptor), Some(peer_pool)) =
                    (header.kind(), peer_pool)
                {
                    // Zero copy: the application reads the sender's buffer in
                    // place; the Release goes out when it drops the Msg.
                    let loan = loans.make(from, &header, peer_pool);
                    // SAFETY: the bytes lie in `peer_pool`, which the loan keeps
                    // mapped, and the sender leaves them alone until released.
                    (unsafe { Msg::lent(peer, payload, loan) }, None)
                } else {
                    let Ok(mut buf) = out.pool.alloc(payload.len()) else {
                        return Step::Stall;
                    };
                    let class = buf.position().0;
                    if !quota.admits(class, &out.inbox_limits) {
                        // Its share is taken: the message waits where it is
                        // until the application reads (the buffer goes back).
                        return Step::Stall;
                    }
                    buf.copy_from_slice(payload);
                    (Msg::owned(peer, buf), Some(class))
                };
                if let Err(rtrb::PushError::Full(msg)) = inbox.push(msg) {
                    // Cannot happen (slots checked); the loan, if any, goes home.
                    drop(msg);
                    return Step::Stall;
                }
                quota.push(class);
                ep.wake = true;
                out.bells_due = true;
                out.count_recv(from.session(), payload.len());
                return Step::Done;
            }
        },
    }
    out.count_recv(from.session(), payload.len());
    if header.kind() == Some(FrameKind::Descriptor) {
        let release = FrameHeader::new(
            FrameKind::Release,
            header.dst(),
            header.src(),
            0,
            header.len(),
        )
        .with_aux(header.aux());
        let back = PeerId::pack(from.session(), from.shard(), header.src());
        match out.frame(back, release, &[], false) {
            Ok(()) => {}
            // Retried first thing next pass: the buffer must go home.
            Err(Error::Full) => out.releases.push((back, release)),
            Err(_) => out.tally.errors += 1,
        }
    }
    Step::Done
}

/// What takes records of network connections within one `drain_net`.
struct Taker<'a, 'b> {
    rx_lanes: &'a mut RxLanes<comm_uring::ConnId>,
    left_lanes: &'a mut Vec<comm_uring::ConnId>,
    endpoints: &'a mut [LocalEndpoint],
    by_id: &'a [u32],
    out: &'a mut Outbound,
    loans: &'a LoanMaker<'b>,
    losses: &'a mut Vec<(u16, &'static str)>,
}

impl Taker<'_, '_> {
    /// Takes one record read on the lane `route` names, which is the lane
    /// read now: follows a `Lane` frame, delivers anything else. `true`:
    /// the endpoint cannot take it yet, so it (and what follows from its
    /// connection) must wait.
    fn take(&mut self, bytes: &[u8], route: Route) -> bool {
        if let Some(lane) = lanes::announced(bytes) {
            match self.rx_lanes.follow(route.session, route.peer_shard, lane) {
                Ok(left) => self.left_lanes.extend(left),
                Err(lanes::LaneError::NoSuchLane) => self.losses.push((route.session, MALFORMED)),
                Err(lanes::LaneError::Ended) => {
                    self.losses.push((route.session, "its connection closed"));
                }
            }
            return false;
        }
        let from = PeerId::pack(route.session, route.peer_shard, 0);
        let step = deliver(
            bytes,
            from,
            None,
            self.endpoints,
            self.by_id,
            self.out,
            self.loans,
        );
        settle(step, route.session, self.losses)
    }

    /// Delivers kept-back records, oldest first per connection. A
    /// connection whose oldest record cannot go yet (its endpoint is full,
    /// or it is a lane not read now) keeps the rest of its records behind
    /// it; the other connections' records go on. Runs again while records
    /// went, since a `Lane` frame can make a waiting lane the one to read.
    fn drain_deferred(&mut self, deferred: &mut Kept, routes: &Routes) -> usize {
        let mut n = 0;
        let mut blocked = std::mem::take(&mut deferred.blocked);
        loop {
            blocked.clear();
            let before = n;
            let mut i = 0;
            while let Some(d) = deferred.get(i) {
                let conn = d.conn;
                let Some(route) = routes.get(conn) else {
                    deferred.remove(i);
                    continue;
                };
                let waits = blocked.contains(&conn)
                    || !self
                        .rx_lanes
                        .is_current(route.session, route.peer_shard, route.lane)
                    || self.take(&d.bytes, route);
                if waits {
                    blocked.push(conn);
                    i += 1;
                } else {
                    deferred.remove(i);
                    n += 1;
                }
            }
            if n == before || deferred.is_empty() {
                deferred.blocked = blocked;
                return n;
            }
        }
    }
}

/// Stops reading the lanes a `Lane` frame left (until one names them again).
fn pause_lanes_left(
    uring: &mut comm_uring::Uring<crate::net::FrameFraming>,
    paused: &mut Vec<comm_uring::ConnId>,
    left: &mut Vec<comm_uring::ConnId>,
) {
    for conn in left.drain(..) {
        if !paused.contains(&conn) {
            uring.pause_receive(conn, true);
            paused.push(conn);
        }
    }
}

/// Why a link is given up after a frame that does not decode.
const MALFORMED: &str = "a malformed frame";

/// What a frame's delivery means for its link; `true`: the endpoint could
/// not take it yet, so it (and what follows from its connection) must wait.
fn settle(step: Step, session: u16, losses: &mut Vec<(u16, &'static str)>) -> bool {
    match step {
        Step::Done => false,
        Step::Stall => true,
        Step::Closed => {
            losses.push((session, "the peer engine shut down"));
            false
        }
        Step::Corrupt => {
            losses.push((session, MALFORMED));
            false
        }
    }
}

/// Builds the loans of messages that application threads read in place.
struct LoanMaker<'a> {
    shared: &'a Arc<EngineShared>,
    shard: usize,
}

impl LoanMaker<'_> {
    fn make(&self, from: PeerId, header: &FrameHeader, pool: &Arc<Segment>) -> Loan {
        Loan {
            shared: Arc::clone(self.shared),
            shard: self.shard,
            back: PeerId::pack(from.session(), from.shard(), header.src()),
            release: FrameHeader::new(
                FrameKind::Release,
                header.dst(),
                header.src(),
                0,
                header.len(),
            )
            .with_aux(header.aux()),
            _pool: Arc::clone(pool),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spin while a reply may be on its way, then share the core, yield it,
    /// and at last sleep. Sharing starts well past a loopback round trip
    /// (a few microseconds), so ping-pongs never pay a yield.
    #[test]
    fn an_idle_shard_spins_then_shares_then_yields_then_parks() {
        let us = Duration::from_micros;
        assert_eq!(Idle::after(us(0)), Idle::Spin);
        assert_eq!(Idle::after(us(9)), Idle::Spin);
        assert_eq!(Idle::after(us(10)), Idle::Share);
        assert_eq!(Idle::after(us(99)), Idle::Share);
        assert_eq!(Idle::after(us(100)), Idle::Yield);
        assert_eq!(Idle::after(us(999)), Idle::Yield);
        assert_eq!(Idle::after(us(1000)), Idle::Park);
    }
}
