//! The engine: configuration, start, shutdown, and the state its threads share.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use comm_shm::{Doorbell, Nudge, Segment};
use crossbeam_queue::ArrayQueue;

use crate::endpoint::{Endpoint, Msg, Submit};
use crate::fd_table::InProcessTable;
use crate::inbox_quota::InboxQuota;
use crate::session::{Session, Sessions};
use crate::shard::{Command, Ctx, Handler, Inbox, LocalEndpoint, Shard};
use crate::stats::{ShardCounters, Stats};
use crate::{
    Addr, BufPool, EnvConfig, Error, FrameHeader, NodeId, PeerId, PoolConfig, Transport,
    TransportKind, Transports, UdpMode,
};

/// Depth of each endpoint's submit and receive rings.
const ENDPOINT_RING: usize = 1024;
/// Buffers application threads may hand back per shard between two passes.
const RETURNS: usize = 8192;
/// Bytes per shard doorbell in the bells segment (one cache-padded line).
const BELL_STRIDE: usize = 128;

/// State shared by the engine handle, its progress threads, its control
/// thread and its endpoints.
pub(crate) struct EngineShared {
    pub name: String,
    pub instance: u64,
    pub node: NodeId,
    pub listen: SocketAddr,
    pub transports: Transports,
    /// Custom transports, with the address each listens on.
    pub customs: InProcessTable<Vec<(Arc<dyn Transport>, String)>>,
    pub udp_mode: UdpMode,
    pub cores: Vec<usize>,
    pub stop: AtomicBool,
    /// Ends the control thread's sleep when the engine stops.
    pub(crate) control_wake: crate::control::Wake,
    pub bells: Arc<Segment>,
    commands: Vec<Mutex<mpsc::Sender<Command>>>,
    pub(crate) pending: Vec<AtomicUsize>,
    /// Per shard: peer buffers that application threads are done reading,
    /// to be handed back with a `Release` frame.
    pub(crate) returns: Vec<ArrayQueue<(PeerId, FrameHeader)>>,
    /// Per shard: raised after an application thread submits a message or
    /// returns a buffer, so idle polls need not look at every endpoint.
    pub(crate) nudges: Vec<Nudge>,
    pools: Vec<BufPool>,
    /// Per pool class, the buffers one endpoint's inbox may hold.
    pub(crate) inbox_limits: Vec<u32>,
    pub(crate) counters: Vec<ShardCounters>,
    endpoints: Mutex<HashMap<String, (u32, usize)>>,
    endpoint_bells: Mutex<Vec<Weak<Doorbell>>>,
    next_endpoint: AtomicU32,
    next_shard: AtomicUsize,
    pub(crate) sessions: Sessions,
    /// Serialises link set-up initiated by this engine.
    pub(crate) connecting: Mutex<()>,
    /// Link set-ups under way, by peer instance (one link per pair).
    pub(crate) linking: crate::control::Linking,
    /// Network links whose data connections are still attaching.
    pub(crate) net_pending: crate::control::NetPending,
    pub(crate) control_rejects: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the engine down with poisoned locks.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl EngineShared {
    pub(crate) fn shards(&self) -> usize {
        self.commands.len()
    }

    pub(crate) fn pool(&self, shard: usize) -> &BufPool {
        &self.pools[shard]
    }

    /// The doorbell shard `shard` parks on (in the bells segment, so peers in
    /// other processes can ring it too).
    pub(crate) fn bell(&self, shard: usize) -> &Doorbell {
        bell_at(&self.bells, shard)
    }

    /// Tells shard `shard` that an application thread handed it work (a
    /// submitted message, a returned buffer) and wakes it if it sleeps.
    pub(crate) fn nudge(&self, shard: usize) {
        self.nudges[shard].raise();
        self.bell(shard).ring();
    }

    /// Sends a command to a shard and wakes it.
    pub(crate) fn command(&self, shard: usize, cmd: Command) -> Result<(), Error> {
        self.pending[shard].fetch_add(1, Ordering::AcqRel);
        let sent = lock(&self.commands[shard]).send(cmd);
        self.bell(shard).ring();
        sent.map_err(|_| Error::Closed)
    }

    /// Queues the release of a peer's buffer read in place by an application
    /// thread; the shard sends it on its next pass.
    pub(crate) fn give_back(&self, shard: usize, back: PeerId, release: FrameHeader) {
        if self.stop.load(Ordering::Acquire) {
            // Nobody will send it any more; the peer's buffer goes with its link.
            return;
        }
        let mut item = (back, release);
        // The shard drains this queue every pass; a full queue only waits.
        while let Err(again) = self.returns[shard].push(item) {
            item = again;
            self.nudge(shard);
            std::thread::yield_now();
        }
        self.nudge(shard);
    }

    pub(crate) fn lookup(&self, name: &str) -> Option<(u32, usize)> {
        lock(&self.endpoints).get(name).copied()
    }

    pub(crate) fn session_for(&self, instance: u64) -> Option<u16> {
        self.sessions.live_for(instance)
    }

    pub(crate) fn add_session(&self, s: Session) -> Result<u16, Error> {
        self.sessions.add(s)
    }

    pub(crate) fn transport_of(&self, peer: PeerId) -> Result<TransportKind, Error> {
        self.sessions
            .transport_of(peer.session())
            .ok_or(Error::PeerLost(peer))
    }

    /// Gives up a link: marks it lost (sends to its peers fail from now on)
    /// and tells every shard to drop its half. `peer_gone`: the peer process
    /// is dead, so whatever its rings hold now is all they will ever hold.
    pub(crate) fn lose_session(&self, session: u16, why: &str, peer_gone: bool) {
        if !self.sessions.mark_lost(session) {
            return;
        }
        tracing::warn!(session, "link lost: {why}");
        for shard in 0..self.shards() {
            // During shutdown the shard may be gone already: nothing to drop.
            let _ = self.command(shard, Command::DropLink { session, peer_gone });
        }
    }

    /// Loses every link whose peer process has exited.
    pub(crate) fn check_peers(&self) {
        for s in self.sessions.orphaned() {
            self.lose_session(s, "the peer process exited", true);
        }
    }

    pub(crate) fn forget_endpoint(&self, name: &str, id: u32, shard: usize) {
        lock(&self.endpoints).remove(name);
        // During shutdown the shard may be gone already; nothing to remove then.
        let _ = self.command(shard, Command::RemoveEndpoint(id));
    }

    fn register(&self, name: &str) -> Result<(u32, usize), Error> {
        crate::addr::validate_endpoint_name(name)?;
        if self.stop.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let mut endpoints = lock(&self.endpoints);
        if endpoints.contains_key(name) {
            return Err(Error::DuplicateEndpoint {
                name: name.to_owned(),
            });
        }
        let id = self.next_endpoint.fetch_add(1, Ordering::Relaxed);
        let shard = self.next_shard.fetch_add(1, Ordering::Relaxed) % self.shards();
        endpoints.insert(name.to_owned(), (id, shard));
        Ok((id, shard))
    }
}

/// Name of the segment holding an engine instance's shard doorbells.
pub(crate) fn bells_name(engine: &str, instance: u64) -> String {
    format!("comm-{engine}-{instance:016x}-bells")
}

/// Name of the link segment an initiator instance builds toward an acceptor.
pub(crate) fn pair_name(engine: &str, initiator: u64, acceptor: u64) -> String {
    format!("comm-{engine}-{initiator:016x}-{acceptor:016x}")
}

/// Name of the shared segment holding shard `shard`'s buffer pool.
pub(crate) fn pool_name(engine: &str, instance: u64, shard: usize) -> String {
    format!("comm-{engine}-{instance:016x}-pool{shard}")
}

pub(crate) fn bell_at(seg: &Segment, shard: usize) -> &Doorbell {
    assert!(
        (shard + 1) * BELL_STRIDE <= seg.payload_len(),
        "shard index out of range"
    );
    // SAFETY: in bounds (checked), 128-byte aligned within a 128-aligned
    // payload, and the bells segment holds nothing but doorbells.
    unsafe { Doorbell::from_ptr(seg.payload_ptr().as_ptr().add(shard * BELL_STRIDE)) }
}

/// Configures and starts an [`Engine`]. Settings not given here come from the
/// environment (`COMM_CORES`, `COMM_LISTEN`, `COMM_TRANSPORTS`), read once at
/// start; the builder wins.
///
/// ```no_run
/// let engine = comm::Engine::builder("kv")
///     .cores(&[0, 1])
///     .listen("127.0.0.1:0".parse()?)
///     .transports(comm::Transports::Auto)
///     .start()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct EngineBuilder {
    name: String,
    cores: Option<Vec<usize>>,
    listen: Option<SocketAddr>,
    transports: Option<Transports>,
    pool: PoolConfig,
    udp_mode: UdpMode,
    node: Option<NodeId>,
    customs: crate::custom::Registered,
    private_fds: bool,
}

impl EngineBuilder {
    /// One progress thread per listed core, each pinned to its core.
    ///
    /// ```
    /// let b = comm::Engine::builder("kv").cores(&[0]);
    /// ```
    pub fn cores(mut self, cores: &[usize]) -> Self {
        self.cores = Some(cores.to_vec());
        self
    }

    /// The control address (default `127.0.0.1:0`: loopback, any free port).
    ///
    /// ```
    /// let b = comm::Engine::builder("kv").listen("127.0.0.1:7000".parse().unwrap());
    /// ```
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self
    }

    /// Which transports this engine may use.
    ///
    /// ```
    /// use comm::{Engine, TransportKind, Transports};
    /// let b = Engine::builder("kv").transports(Transports::only([TransportKind::Shm]));
    /// ```
    pub fn transports(mut self, transports: Transports) -> Self {
        self.transports = Some(transports);
        self
    }

    /// The node identity that decides which peers are "on the same node"
    /// (shared memory); default `COMM_NODE_ID`, else machine-id + boot id.
    ///
    /// ```
    /// let b = comm::Engine::builder("kv").node_id(comm::NodeId::new("rack1-host7"));
    /// ```
    pub fn node_id(mut self, node: NodeId) -> Self {
        self.node = Some(node);
        self
    }

    /// Registers a transport the application brings (see [`Transport`]).
    /// It is used only for peers that registered one of the same name, and
    /// only when asked for: `Transports::only([TransportKind::Custom(name)])`.
    ///
    /// ```no_run
    /// # use std::{io, sync::Arc};
    /// # use comm::{Connection, Transport, TransportKind, Transports};
    /// # struct Uds;
    /// # impl Transport for Uds {
    /// #     fn name(&self) -> &'static str { "uds" }
    /// #     fn listen(&self) -> io::Result<String> { Ok(String::new()) }
    /// #     fn connect(&self, _: &str) -> io::Result<Box<dyn Connection>> { Err(io::ErrorKind::Unsupported.into()) }
    /// #     fn accept(&self) -> io::Result<Option<Box<dyn Connection>>> { Ok(None) }
    /// # }
    /// let engine = comm::Engine::builder("kv")
    ///     .transport(Arc::new(Uds))
    ///     .transports(Transports::only([TransportKind::Custom("uds")]))
    ///     .start()?;
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn transport(mut self, t: Arc<dyn Transport>) -> Self {
        self.customs.0.push(t);
        self
    }

    /// How UDP links this engine sets up carry messages (default
    /// [`UdpMode::Reliable`]).
    ///
    /// ```
    /// let b = comm::Engine::builder("kv").udp_mode(comm::UdpMode::Datagram);
    /// ```
    pub fn udp_mode(mut self, mode: UdpMode) -> Self {
        self.udp_mode = mode;
        self
    }

    /// Gives each progress thread a descriptor table of its own (default
    /// off). Socket calls on a thread that shares the process's table take
    /// and drop a reference on the file each time; alone in its table the
    /// thread skips that (50-80 ns a TCP hop in a C model on loopback,
    /// 1-2 % of comm's TCP and UDP latency, within the noise of single
    /// runs).
    ///
    /// What comes with it, for code running on a progress thread (your
    /// handlers) and threads it starts, which share its table:
    /// - descriptors opened elsewhere in the process are not valid there:
    ///   their numbers find nothing (`EBADF`) or another file. That takes
    ///   in a `File` of the main thread, a tracing writer that writes to a
    ///   file from the calling thread (comm logs from progress threads
    ///   too: use standard error or a writer with a thread of its own),
    ///   and descriptors other libraries keep for the whole process (an
    ///   async runtime's epoll). Standard input, output and error are the
    ///   ones open when the engine started;
    /// - descriptors opened there are valid only there;
    /// - `connect` and `Engine` start fail there with [`Error::Config`]
    ///   (a link's sockets must be made in the process's table);
    /// - a handler, once its endpoint is gone, and comm's own values
    ///   dropped there (an `Engine`, an `Endpoint`, the last reference to
    ///   an engine's state) are dropped, or have their descriptors closed,
    ///   later by a thread of the process's table: a control thread of any
    ///   engine (every 100 ms) or [`Engine::shutdown`]. Other values a
    ///   handler drops while it runs are dropped there, at once.
    ///
    /// The engine's own sockets are copied into the thread's table at high
    /// numbers (from 4096, or half the descriptor limit), where a stray
    /// number from the process's table most likely finds nothing; its
    /// io_uring descriptor is not moved (reads and writes on it fail).
    /// Custom transports cannot be used with it: [`start`](Self::start)
    /// fails with [`Error::Config`]. Where the kernel cannot do it (before
    /// Linux 5.9, without `kcmp`, or with `pidfd_getfd` or `kcmp` forbidden
    /// by a seccomp filter, as container defaults may) the threads keep the
    /// process's table and a warning is logged. The main thread must stay
    /// alive and in the process's table: threads compare their table with
    /// its.
    ///
    /// ```
    /// let b = comm::Engine::builder("kv").private_fd_table(true);
    /// ```
    pub fn private_fd_table(mut self, on: bool) -> Self {
        self.private_fds = on;
        self
    }

    /// The buffer pool each shard gets.
    ///
    /// ```
    /// let b = comm::Engine::builder("kv").pool(comm::PoolConfig::default());
    /// ```
    pub fn pool(mut self, pool: PoolConfig) -> Self {
        self.pool = pool;
        self
    }

    /// Starts the progress threads and the control thread.
    ///
    /// ```no_run
    /// let engine = comm::Engine::builder("kv").cores(&[0]).start()?;
    /// engine.shutdown()?;
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn start(self) -> Result<Engine, Error> {
        let env = EnvConfig::from_env()?;
        Engine::launch(self, env)
    }
}

/// A communication domain: progress threads pinned to cores, a control
/// thread, buffer pools and links. Endpoints of engines with different names
/// never talk. Shut down with [`Engine::shutdown`] or by dropping it.
///
/// ```no_run
/// use comm::Engine;
/// let engine = Engine::builder("echo-demo").cores(&[0]).start()?;
/// let addr = engine.serve("echo", |ctx, msg| ctx.reply(msg, msg.data()))?;
/// println!("echo server at {addr}");
/// # Ok::<(), comm::Error>(())
/// ```
pub struct Engine {
    shared: Arc<EngineShared>,
    threads: Vec<JoinHandle<()>>,
    control: Option<JoinHandle<()>>,
}

impl Engine {
    /// An engine on `cores`, named from `COMM_ENGINE` (default `"default"`),
    /// other settings from the environment.
    ///
    /// ```no_run
    /// let engine = comm::Engine::start(&[0, 1])?;
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn start(cores: &[usize]) -> Result<Engine, Error> {
        let env = EnvConfig::from_env()?;
        let name = env.engine.clone().unwrap_or_else(|| "default".to_owned());
        Engine::launch(Engine::builder(&name).cores(cores), env)
    }

    /// A builder for an engine named `name` (the domain: only engines of the
    /// same name talk).
    ///
    /// ```
    /// let builder = comm::Engine::builder("kv");
    /// ```
    pub fn builder(name: &str) -> EngineBuilder {
        EngineBuilder {
            name: name.to_owned(),
            cores: None,
            listen: None,
            transports: None,
            pool: PoolConfig::default(),
            udp_mode: UdpMode::default(),
            node: None,
            customs: crate::custom::Registered::default(),
            private_fds: false,
        }
    }

    fn launch(b: EngineBuilder, env: EnvConfig) -> Result<Engine, Error> {
        crate::addr::validate_endpoint_name(&b.name)
            .map_err(|_| Error::Config("engine names are 1 to 64 characters of [A-Za-z0-9._-]"))?;
        let cores = b.cores.or(env.cores).unwrap_or_else(|| vec![0]);
        if cores.is_empty() || cores.len() > usize::from(u16::MAX) {
            return Err(Error::Config("an engine needs at least one core"));
        }
        let listen = b
            .listen
            .or(env.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let transports = b.transports.or(env.transports).unwrap_or_default();
        let node = match (b.node, env.node_id) {
            (Some(node), _) => node,
            (None, Some(id)) => NodeId::new(id),
            (None, None) => NodeId::discover(),
        };
        if !crate::fd_table::in_process_table() {
            return Err(Error::Config(
                "engines start from threads of the process's descriptor table, not from a progress thread with a private table or a thread it started",
            ));
        }
        if b.private_fds && !b.customs.0.is_empty() {
            return Err(Error::Config(
                "custom transports cannot run on progress threads with a private descriptor table",
            ));
        }
        let mut customs: Vec<(Arc<dyn Transport>, String)> = Vec::new();
        for t in b.customs.0 {
            if !crate::custom::valid_name(t.name())
                || customs.iter().any(|(c, _)| c.name() == t.name())
            {
                return Err(Error::Config(
                    "custom transport names are 1 to 32 of [a-z0-9-], unique, not a built-in name",
                ));
            }
            let addr = t.listen()?;
            customs.push((t, addr));
        }
        // Segments of engines that died on this node go first.
        let _ = Segment::reap_stale("comm-");
        let listener = TcpListener::bind(listen)?;
        let listen = advertised(listener.local_addr()?);
        // Before any segment exists: failing here leaves nothing behind.
        let control_wake = crate::control::Wake::new()?;
        let instance = new_instance_id();
        let bells = Arc::new(Segment::create(
            &bells_name(&b.name, instance),
            cores.len() * BELL_STRIDE,
        )?);
        bells.mark_ready();
        let mut receivers = Vec::new();
        let mut commands = Vec::new();
        for _ in &cores {
            let (tx, rx) = mpsc::channel();
            commands.push(Mutex::new(tx));
            receivers.push(rx);
        }
        let pools = (0..cores.len())
            .map(|i| BufPool::shared(b.pool.clone(), &pool_name(&b.name, instance, i)))
            .collect::<Result<Vec<_>, _>>()?;
        let shared = Arc::new(EngineShared {
            name: b.name,
            instance,
            node,
            listen,
            transports,
            customs: InProcessTable::new(customs),
            udp_mode: b.udp_mode,
            cores: cores.clone(),
            stop: AtomicBool::new(false),
            control_wake,
            bells,
            pending: cores.iter().map(|_| AtomicUsize::new(0)).collect(),
            returns: cores.iter().map(|_| ArrayQueue::new(RETURNS)).collect(),
            nudges: cores.iter().map(|_| Nudge::new()).collect(),
            commands,
            pools,
            inbox_limits: b.pool.inbox_limits(),
            counters: cores.iter().map(|_| ShardCounters::default()).collect(),
            endpoints: Mutex::new(HashMap::new()),
            endpoint_bells: Mutex::new(Vec::new()),
            next_endpoint: AtomicU32::new(0),
            next_shard: AtomicUsize::new(0),
            sessions: Sessions::new(),
            connecting: Mutex::new(()),
            linking: crate::control::Linking::default(),
            net_pending: crate::control::NetPending::default(),
            control_rejects: AtomicU64::new(0),
        });
        let mut engine = Engine {
            shared: Arc::clone(&shared),
            threads: Vec::new(),
            control: None,
        };
        let private_fds = b.private_fds;
        for (index, (rx, &core)) in receivers.into_iter().zip(&cores).enumerate() {
            let shared = Arc::clone(&shared);
            // The shard is built on its own thread: its io_uring stays there.
            let spawned = std::thread::Builder::new()
                .name(format!("comm-{index}"))
                .spawn(move || {
                    let _ = core_affinity::set_for_current(core_affinity::CoreId { id: core });
                    // First: the table is left with descriptors 3 and up
                    // closed, and nothing on this thread may own one yet.
                    let fds = private_fds.then(crate::fd_table::PrivateFds::enter).and_then(|r| {
                        r.map_err(|e| {
                            tracing::warn!("progress thread {index} keeps the process's descriptor table: {e}")
                        })
                        .ok()
                    });
                    Shard::new(index, shared, rx, fds).run();
                });
            match spawned {
                Ok(handle) => engine.threads.push(handle),
                Err(e) => return Err(e.into()), // Drop stops what was started.
            }
        }
        let control = Arc::clone(&shared);
        engine.control = Some(
            std::thread::Builder::new()
                .name("comm-control".into())
                .spawn(move || crate::control::serve(listener, control))?,
        );
        Ok(engine)
    }

    /// The engine (domain) name.
    ///
    /// ```no_run
    /// # let engine = comm::Engine::builder("kv").cores(&[0]).start()?;
    /// assert_eq!(engine.name(), "kv");
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The control address peers connect to.
    ///
    /// ```no_run
    /// # let engine = comm::Engine::builder("kv").cores(&[0]).start()?;
    /// assert_ne!(engine.listen_addr().port(), 0);
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn listen_addr(&self) -> SocketAddr {
        self.shared.listen
    }

    /// Creates the endpoint `name` (unique in this engine) on one of the shards.
    ///
    /// ```no_run
    /// # let engine = comm::Engine::builder("kv").cores(&[0]).start()?;
    /// let ep = engine.endpoint("store")?;
    /// assert!(engine.endpoint("store").is_err()); // names are unique
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn endpoint(&self, name: &str) -> Result<Endpoint, Error> {
        let (id, shard) = self.shared.register(name)?;
        let (submit_tx, submit_rx) = rtrb::RingBuffer::<Submit>::new(ENDPOINT_RING);
        let (inbox_tx, inbox_rx) = rtrb::RingBuffer::<Msg>::new(ENDPOINT_RING);
        let bell = Arc::new(Doorbell::new());
        lock(&self.shared.endpoint_bells).push(Arc::downgrade(&bell));
        let local = LocalEndpoint::new(
            id,
            Inbox::Handle {
                submits: submit_rx,
                inbox: inbox_tx,
                quota: InboxQuota::new(ENDPOINT_RING, self.shared.inbox_limits.len()),
                bell: Arc::clone(&bell),
            },
        );
        if let Err(e) = self.shared.command(shard, Command::AddEndpoint(local)) {
            lock(&self.shared.endpoints).remove(name);
            return Err(e);
        }
        Ok(Endpoint::new(
            Arc::clone(&self.shared),
            id,
            shard,
            name.to_owned(),
            submit_tx,
            inbox_rx,
            bell,
        ))
    }

    /// Creates the endpoint `name` whose messages are handled by `handler` on
    /// its progress thread: the fastest path (no thread hop; replies are
    /// written straight into the ring). Returns the endpoint's address.
    ///
    /// ```no_run
    /// # let engine = comm::Engine::builder("kv").cores(&[0]).start()?;
    /// let addr = engine.serve("echo", |ctx, msg| ctx.reply(msg, msg.data()))?;
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn serve<F>(&self, name: &str, handler: F) -> Result<Addr, Error>
    where
        F: FnMut(&mut Ctx<'_>, &Msg) -> Result<(), Error> + Send + 'static,
    {
        let (id, shard) = self.shared.register(name)?;
        let handler: Handler = Box::new(handler);
        let local = LocalEndpoint::new(id, Inbox::Handler(InProcessTable::new(handler)));
        if let Err(e) = self.shared.command(shard, Command::AddEndpoint(local)) {
            lock(&self.shared.endpoints).remove(name);
            return Err(e);
        }
        Addr::new(self.shared.listen, name)
    }

    /// Counters per shard and per link.
    ///
    /// ```no_run
    /// # let engine = comm::Engine::builder("kv").cores(&[0]).start()?;
    /// let stats = engine.stats();
    /// assert_eq!(stats.shards.len(), 1);
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn stats(&self) -> Stats {
        let s = &self.shared;
        Stats {
            shards: s
                .counters
                .iter()
                .enumerate()
                .map(|(i, c)| c.snapshot(i, s.cores[i]))
                .collect(),
            links: s.sessions.stats(),
            control_rejects: s.control_rejects.load(Ordering::Relaxed),
        }
    }

    /// Stops every thread, closes the listener and unlinks this engine's
    /// segments. Endpoints still alive get [`Error::Closed`] from then on.
    ///
    /// ```no_run
    /// let engine = comm::Engine::builder("kv").cores(&[0]).start()?;
    /// engine.shutdown()?;
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn shutdown(mut self) -> Result<(), Error> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), Error> {
        let s = &self.shared;
        s.stop.store(true, Ordering::Release);
        s.control_wake.wake();
        for shard in 0..s.shards() {
            s.bell(shard).wake();
        }
        for bell in lock(&s.endpoint_bells).iter().filter_map(Weak::upgrade) {
            bell.wake();
        }
        let mut panicked = false;
        // A thread cannot join itself: an engine dropped by code running on
        // one of its own threads (a value a handler owned, dropped late)
        // leaves that thread to finish on its own.
        let me = std::thread::current().id();
        let others = |t: &JoinHandle<()>| t.thread().id() != me;
        for t in self.threads.drain(..).filter(others) {
            panicked |= t.join().is_err();
        }
        if let Some(c) = self.control.take().filter(others) {
            panicked |= c.join().is_err();
        }
        crate::fd_table::drop_deferred();
        // Unlink now, not when the last Endpoint, Buf or Msg lets go of the
        // mappings (which stay valid for them).
        let _ = s.bells.unlink();
        for pool in &s.pools {
            if let Some(seg) = pool.segment() {
                let _ = seg.unlink();
            }
        }
        if panicked {
            return Err(Error::Config("a progress or control thread panicked"));
        }
        Ok(())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("name", &self.shared.name)
            .field("instance", &format_args!("{:016x}", self.shared.instance))
            .field("listen", &self.shared.listen)
            .field("cores", &self.shared.cores)
            .finish()
    }
}

/// The control address to hand to peers: the bound one, or for a wildcard
/// bind (`0.0.0.0`, `::`) the first address of an interface that is up and
/// not loopback (loopback if there is none).
fn advertised(bound: SocketAddr) -> SocketAddr {
    if !bound.ip().is_unspecified() {
        return bound;
    }
    let v4 = bound.is_ipv4();
    let ip = crate::Resources::discover()
        .interfaces
        .into_iter()
        .filter(|i| i.up && !i.loopback)
        .flat_map(|i| i.addrs)
        .find(|a| a.is_ipv4() == v4 && !a.is_loopback() && !is_link_local(a))
        .unwrap_or(if v4 {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    SocketAddr::new(ip, bound.port())
}

fn is_link_local(ip: &std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_link_local(),
        std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// A fresh id for this engine instance: unique across processes and restarts.
fn new_instance_id() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // splitmix64 finaliser: spread the bits.
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
