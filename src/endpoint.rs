//! Endpoints as seen from application threads, and received messages.

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use comm_shm::{Doorbell, Park};

use crate::engine::EngineShared;
use crate::{Addr, Buf, BufPool, Error, PeerId, TransportKind};

/// How long `connect` waits by default; `connect_timeout` takes another.
///
/// ```no_run
/// # fn main() -> Result<(), comm::Error> {
/// let engine = comm::Engine::start(&[0])?;
/// let ep = engine.endpoint("client")?;
/// let addr = "comm://127.0.0.1:7000/store".parse()?;
/// // The same as `ep.connect(&addr)`:
/// let peer = ep.connect_timeout(&addr, comm::DEFAULT_CONNECT_TIMEOUT)?;
/// # let _ = peer;
/// # Ok(())
/// # }
/// ```
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Empty polls a waiting `recv` spins before it yields. Short spins matter
/// when application and progress threads share cores.
const RECV_SPINS: u32 = 256;
/// How long a waiting `recv` yields before it parks (as long as a shard
/// yields before it parks): a conversation keeps its thread awake, an idle
/// thread sleeps soon. A time, not a count: on a core whose progress thread
/// spins, one yield can last a whole time slice, and 4,096 of them kept idle
/// application threads preempting the progress threads for seconds.
const RECV_YIELD_FOR: Duration = Duration::from_millis(1);

/// A message handed to the progress thread by an application thread.
pub(crate) struct Submit {
    pub peer: PeerId,
    pub buf: Buf,
}

/// A received message: who sent it and its bytes.
///
/// Small messages from [`Endpoint::recv`] own a pool buffer; large ones are
/// read in place in the sender's shared pool (zero copy) and handed back to
/// the sender when the `Msg` drops, so drop it when done. In a handler (see
/// [`Engine::serve`](crate::Engine::serve)) every message is read in place,
/// valid during the call.
///
/// ```no_run
/// # fn f(ep: &comm::Endpoint) -> Result<(), comm::Error> {
/// let msg = ep.recv()?;
/// println!("{} bytes from {}", msg.data().len(), msg.peer());
/// # Ok(()) }
/// ```
pub struct Msg {
    peer: PeerId,
    data: MsgData,
}

enum MsgData {
    Owned(Buf),
    Borrowed {
        ptr: *const u8,
        len: usize,
    },
    /// In place in a peer's pool, handed back when the `Msg` drops.
    Lent {
        ptr: *const u8,
        len: usize,
        loan: Loan,
    },
}

/// What a message read in place owes its sender.
pub(crate) struct Loan {
    pub shared: Arc<EngineShared>,
    pub shard: usize,
    pub back: PeerId,
    pub release: crate::FrameHeader,
    /// Keeps the peer's pool mapped while the bytes are in use.
    pub _pool: Arc<comm_shm::Segment>,
}

impl Loan {
    /// Queues the `Release` of the peer's buffer (kept out of line: the
    /// common `Msg` drop is a single check).
    #[cold]
    fn give_back(&self) {
        self.shared.give_back(self.shard, self.back, self.release);
    }
}

// SAFETY: an owned `Msg` holds a `Buf` (Send + Sync). A borrowed one is only
// created on a progress thread for the duration of a handler call and handed
// out by reference; its bytes are not written while it exists.
unsafe impl Send for Msg {}
// SAFETY: see the Send impl; `&Msg` only gives read access.
unsafe impl Sync for Msg {}

impl Msg {
    pub(crate) fn owned(peer: PeerId, buf: Buf) -> Self {
        Msg {
            peer,
            data: MsgData::Owned(buf),
        }
    }

    /// # Safety
    /// `bytes` lie in the mapping `loan` keeps alive, and the peer does not
    /// touch them until the loan's release is sent (when the `Msg` drops).
    pub(crate) unsafe fn lent(peer: PeerId, bytes: &[u8], loan: Loan) -> Self {
        Msg {
            peer,
            data: MsgData::Lent {
                ptr: bytes.as_ptr(),
                len: bytes.len(),
                loan,
            },
        }
    }

    /// # Safety
    /// `bytes` stays valid and unmodified for as long as the `Msg` lives, and
    /// the `Msg` is only lent out by reference.
    pub(crate) unsafe fn borrowed(peer: PeerId, bytes: &[u8]) -> Self {
        Msg {
            peer,
            data: MsgData::Borrowed {
                ptr: bytes.as_ptr(),
                len: bytes.len(),
            },
        }
    }

    /// The sending endpoint; reply to it with [`Endpoint::send`] or `Ctx::reply`.
    ///
    /// ```no_run
    /// # fn f(ep: &comm::Endpoint) -> Result<(), comm::Error> {
    /// let msg = ep.recv()?;
    /// let back = ep.alloc(2)?;
    /// ep.send(msg.peer(), back)?;
    /// # Ok(()) }
    /// ```
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// The payload.
    ///
    /// ```no_run
    /// # fn f(ep: &comm::Endpoint) -> Result<(), comm::Error> {
    /// let msg = ep.recv()?;
    /// assert!(msg.data().len() <= 1 << 30);
    /// # Ok(()) }
    /// ```
    pub fn data(&self) -> &[u8] {
        match &self.data {
            MsgData::Owned(buf) => buf,
            // SAFETY: per `Msg::borrowed`'s and `Msg::lent`'s contracts, valid
            // and unmodified while `self` lives.
            MsgData::Borrowed { ptr, len } | MsgData::Lent { ptr, len, .. } => unsafe {
                std::slice::from_raw_parts(*ptr, *len)
            },
        }
    }

    /// Takes the payload's buffer, when the message owns one (messages from
    /// [`Endpoint::recv`] do), e.g. to send it on without copying.
    ///
    /// ```no_run
    /// # fn f(ep: &comm::Endpoint, next: comm::PeerId) -> Result<(), comm::Error> {
    /// if let Some(buf) = ep.recv()?.into_buf() {
    ///     ep.send(next, buf)?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn into_buf(mut self) -> Option<Buf> {
        match std::mem::replace(
            &mut self.data,
            MsgData::Borrowed {
                ptr: std::ptr::null(),
                len: 0,
            },
        ) {
            MsgData::Owned(buf) => Some(buf),
            other => {
                self.data = other;
                None
            }
        }
    }
}

impl Drop for Msg {
    #[inline]
    fn drop(&mut self) {
        if let MsgData::Lent { loan, .. } = &self.data {
            loan.give_back();
        }
    }
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Msg")
            .field("peer", &self.peer)
            .field("len", &self.data().len())
            .finish()
    }
}

/// A named, addressable mailbox, used from an application thread.
///
/// Create it with [`Engine::endpoint`](crate::Engine::endpoint) before any
/// connection exists; [`Endpoint::connect`] to peers by address, then
/// [`Endpoint::send`] pool buffers and [`Endpoint::recv`] messages. An
/// `Endpoint` may move between threads but is used by one at a time.
///
/// ```no_run
/// let engine = comm::Engine::builder("doc").cores(&[0]).start()?;
/// let ep = engine.endpoint("client")?;
/// let peer = ep.connect(&"comm://127.0.0.1:7000/echo".parse()?)?;
/// let mut buf = ep.alloc(5)?;
/// buf.copy_from_slice(b"hello");
/// ep.send(peer, buf)?;
/// let reply = ep.recv()?;
/// # Ok::<(), comm::Error>(())
/// ```
pub struct Endpoint {
    shared: Arc<EngineShared>,
    id: u32,
    shard: usize,
    name: String,
    pool: BufPool,
    submit: RefCell<rtrb::Producer<Submit>>,
    inbox: RefCell<rtrb::Consumer<Msg>>,
    bell: Arc<Doorbell>,
}

impl Endpoint {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        shared: Arc<EngineShared>,
        id: u32,
        shard: usize,
        name: String,
        submit: rtrb::Producer<Submit>,
        inbox: rtrb::Consumer<Msg>,
        bell: Arc<Doorbell>,
    ) -> Self {
        let pool = shared.pool(shard).clone();
        Endpoint {
            shared,
            id,
            shard,
            name,
            pool,
            submit: RefCell::new(submit),
            inbox: RefCell::new(inbox),
            bell,
        }
    }

    /// The endpoint's name.
    ///
    /// ```no_run
    /// # let engine = comm::Engine::builder("doc").cores(&[0]).start()?;
    /// assert_eq!(engine.endpoint("store")?.name(), "store");
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address peers connect to: `comm://host:port/name`.
    ///
    /// ```no_run
    /// # let engine = comm::Engine::builder("doc").cores(&[0]).start()?;
    /// let ep = engine.endpoint("store")?;
    /// assert!(ep.addr().to_string().ends_with("/store"));
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn addr(&self) -> Addr {
        Addr::new(self.shared.listen, &self.name).expect("endpoint names are validated")
    }

    /// Connects to the endpoint at `addr`, blocking until the link is ready
    /// (at most [`DEFAULT_CONNECT_TIMEOUT`]). Returns the id to send to.
    ///
    /// ```no_run
    /// # let engine = comm::Engine::builder("doc").cores(&[0]).start()?;
    /// # let ep = engine.endpoint("a")?;
    /// let peer = ep.connect(&"comm://127.0.0.1:7000/b".parse()?)?;
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn connect(&self, addr: &Addr) -> Result<PeerId, Error> {
        self.connect_timeout(addr, DEFAULT_CONNECT_TIMEOUT)
    }

    /// [`Endpoint::connect`] with an explicit limit; fails with
    /// [`Error::Timeout`] when it passes.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # let engine = comm::Engine::builder("doc").cores(&[0]).start()?;
    /// # let ep = engine.endpoint("a")?;
    /// let peer = ep.connect_timeout(&"comm://127.0.0.1:7000/b".parse()?, Duration::from_secs(1))?;
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn connect_timeout(&self, addr: &Addr, timeout: Duration) -> Result<PeerId, Error> {
        crate::control::connect(&self.shared, addr, timeout)
    }

    /// The transport that carries traffic to `peer`.
    ///
    /// ```no_run
    /// # let engine = comm::Engine::builder("doc").cores(&[0]).start()?;
    /// # let ep = engine.endpoint("a")?;
    /// # let peer = ep.connect(&"comm://127.0.0.1:7000/b".parse()?)?;
    /// assert_eq!(ep.transport(peer)?, comm::TransportKind::Shm);
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn transport(&self, peer: PeerId) -> Result<TransportKind, Error> {
        self.shared.transport_of(peer)
    }

    /// A buffer of `len` bytes from this endpoint's shard pool.
    ///
    /// ```no_run
    /// # let engine = comm::Engine::builder("doc").cores(&[0]).start()?;
    /// # let ep = engine.endpoint("a")?;
    /// let buf = ep.alloc(64)?;
    /// assert_eq!(buf.len(), 64);
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn alloc(&self, len: usize) -> Result<Buf, Error> {
        self.pool.alloc(len)
    }

    /// Hands `buf` to the engine for `peer`. Never blocks: when the submit
    /// ring is full it returns [`Error::WouldBlock`] with the buffer.
    /// Messages larger than [`Endpoint::max_message`] are refused with
    /// [`Error::TooLarge`]; a peer whose engine shut down or whose process
    /// exited gives [`Error::PeerLost`] (messages accepted just before the
    /// loss was noticed are counted in `stats()` as errors, not delivered).
    ///
    /// ```no_run
    /// # fn f(ep: &comm::Endpoint, peer: comm::PeerId) -> Result<(), comm::Error> {
    /// let mut buf = ep.alloc(3)?;
    /// buf.copy_from_slice(b"abc");
    /// match ep.send(peer, buf) {
    ///     Err(comm::Error::WouldBlock(buf)) => drop(buf), // or retry later
    ///     other => other?,
    /// }
    /// # Ok(()) }
    /// ```
    pub fn send(&self, peer: PeerId, buf: Buf) -> Result<(), Error> {
        if self.shared.stop.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if self.shared.sessions.is_lost(peer.session()) {
            return Err(Error::PeerLost(peer));
        }
        if buf.len() > self.max_message() {
            return Err(Error::TooLarge {
                len: buf.len(),
                max: self.max_message(),
            });
        }
        let pushed = self.submit.borrow_mut().push(Submit { peer, buf });
        match pushed {
            Ok(()) => {
                self.shared.nudge(self.shard);
                Ok(())
            }
            Err(rtrb::PushError::Full(s)) => Err(Error::WouldBlock(s.buf)),
        }
    }

    /// Largest message this endpoint can send.
    ///
    /// ```no_run
    /// # let engine = comm::Engine::builder("doc").cores(&[0]).start()?;
    /// assert!(engine.endpoint("a")?.max_message() >= 256);
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn max_message(&self) -> usize {
        self.pool.max_len()
    }

    /// The next message if one is waiting.
    ///
    /// ```no_run
    /// # fn f(ep: &comm::Endpoint) {
    /// while let Some(msg) = ep.try_recv() {
    ///     println!("{:?}", msg);
    /// }
    /// # }
    /// ```
    pub fn try_recv(&self) -> Option<Msg> {
        self.inbox.borrow_mut().pop().ok()
    }

    /// Waits for the next message (spinning briefly, then parking). Fails with
    /// [`Error::Closed`] once the engine shuts down.
    ///
    /// ```no_run
    /// # fn f(ep: &comm::Endpoint) -> Result<(), comm::Error> {
    /// let msg = ep.recv()?;
    /// # Ok(()) }
    /// ```
    pub fn recv(&self) -> Result<Msg, Error> {
        self.wait(None)
    }

    /// Like [`Endpoint::recv`], failing with [`Error::Timeout`] after `timeout`.
    ///
    /// ```no_run
    /// # fn f(ep: &comm::Endpoint) {
    /// match ep.recv_timeout(std::time::Duration::from_millis(10)) {
    ///     Ok(msg) => println!("{msg:?}"),
    ///     Err(comm::Error::Timeout) => println!("nothing yet"),
    ///     Err(e) => println!("{e}"),
    /// }
    /// # }
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Msg, Error> {
        self.wait(Some(Instant::now() + timeout))
    }

    fn wait(&self, deadline: Option<Instant>) -> Result<Msg, Error> {
        let mut spins = 0u32;
        let mut yielding_since = None;
        loop {
            if let Some(msg) = self.try_recv() {
                return Ok(msg);
            }
            if self.shared.stop.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            let left = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Err(Error::Timeout),
                },
                None => None,
            };
            spins += 1;
            if spins < RECV_SPINS {
                std::hint::spin_loop();
                continue;
            }
            if yielding_since.get_or_insert_with(Instant::now).elapsed() < RECV_YIELD_FOR {
                std::thread::yield_now();
                continue;
            }
            spins = 0;
            yielding_since = None;
            let inbox = &self.inbox;
            let stop = &self.shared.stop;
            let ready = || !inbox.borrow().is_empty() || stop.load(Ordering::Acquire);
            if self.bell.park(left, ready) == Park::TimedOut && deadline.is_some() {
                if let Some(msg) = self.try_recv() {
                    return Ok(msg);
                }
                return Err(Error::Timeout);
            }
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.shared.forget_endpoint(&self.name, self.id, self.shard);
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("id", &self.id)
            .field("shard", &self.shard)
            .finish()
    }
}
