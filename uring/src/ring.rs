//! The per-shard ring: sockets go in, records, datagrams and send
//! completions come out.

use std::collections::VecDeque;
use std::io;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::buf_ring::BufRing;
use crate::config::UringConfig;
use crate::conn::{ConnId, Conns, Kind, State};
use crate::datagram::{self, Msgs, Received, DGRAM_BUF_LEN};
use crate::error::SendError;
use crate::event::Event;
use crate::fixed_buf::FixedBufs;
use crate::framing::Framing;
use crate::notif::Notifs;
use crate::outbox::Outbox;
use crate::reassembler::Reassembler;
use crate::send_queue::Next;
use crate::sys;
use crate::user_data::{decode, encode, Op};

/// Buffer group of the TCP receive buffers.
const STREAM_GROUP: u16 = 0;
/// Buffer group of the UDP receive buffers.
const DGRAM_GROUP: u16 = 1;
/// Largest single send; the rest of a segment follows in further sends.
const MAX_SEND: usize = 1 << 30;

/// Plain receives per busy-polled stream and `poll`, so that one flooding
/// stream cannot starve the others.
const BUSY_READS: usize = 4;

/// Empty plain reads in a row after which a hot socket cools down and gets
/// its armed receive back (some hundreds of microseconds of polling).
const COOL_AFTER: u32 = 512;

/// A busy-polled stream reads the rest of a record straight into place once
/// this much of it is missing; below that, through the receive buffer.
const DIRECT_READ: usize = 16 << 10;
/// The most one such read takes. Each receive call lets the kernel send the
/// peer a window update as it returns; a call that drains a megabyte holds
/// those back while it copies, and the sender waits. Measured with 1 MiB
/// messages on loopback (10 alternating runs): 6.8 GB/s in calls of up to
/// the whole record, 8.4 GB/s at 128 KiB, 7.5 at 64 KiB, 7.7 at 256 KiB.
const DIRECT_READ_MAX: usize = 128 << 10;
/// Completions copied out of the CQ at a time.
const CQE_BATCH: usize = 64;
/// How long `drop` waits for the kernel to finish with our memory.
const DROP_WAIT: Duration = Duration::from_secs(2);
/// How long `drop` lets peers acknowledge zero-copy data before it resets
/// their connections to get the pages back.
const DROP_GRACE: Duration = Duration::from_millis(250);

/// "Registration failed" is logged once per process, not once per ring.
static FIXED_BUF_WARNED: AtomicBool = AtomicBool::new(false);
/// So is "zero-copy sends fall back to copying".
static PIN_WARNED: AtomicBool = AtomicBool::new(false);

/// One io_uring instance driving the TCP streams and UDP sockets of one
/// shard, from one thread, without blocking.
///
/// The loop that owns it calls [`poll`](Uring::poll) to reap completions
/// (records, datagrams, finished zero-copy sends, closes),
/// [`send`](Uring::send) and friends to queue data, [`flush`](Uring::flush)
/// to hand everything queued to the kernel, and [`park`](Uring::park) when
/// idle. TCP streams receive through a multishot receive into a shared ring
/// of provided buffers and are cut into records with `F`; UDP sockets
/// receive through a multishot `recvmsg`.
///
/// A `Uring` is neither `Send` nor `Sync`: it is created on the thread that
/// uses it (the kernel is told there is a single submitter, which lets it
/// run completion work only when that thread asks for it).
///
/// ```compile_fail
/// fn needs_send<T: Send>() {}
/// needs_send::<comm_uring::Uring<comm_uring::LenPrefix>>();
/// ```
///
/// ```
/// use std::net::{TcpListener, TcpStream};
/// use comm_uring::{Event, LenPrefix, Uring, UringConfig};
///
/// let listener = TcpListener::bind("127.0.0.1:0")?;
/// let client = TcpStream::connect(listener.local_addr()?)?;
/// let (server, _) = listener.accept()?;
///
/// let mut ring = Uring::new(UringConfig::default(), LenPrefix)?;
/// let a = ring.add_stream(client)?;
/// let b = ring.add_stream(server)?;
/// ring.send(a, &[&LenPrefix::header(5), b"hello"])?;
/// let mut got = None;
/// while got.is_none() {
///     ring.flush()?;
///     ring.poll(|ev| {
///         if let Event::Record { conn, bytes } = ev {
///             assert_eq!(conn, b);
///             got = Some(bytes[4..].to_vec());
///         }
///     });
/// }
/// assert_eq!(got.as_deref(), Some(&b"hello"[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Uring<F: Framing> {
    ring: IoUring,
    framing: F,
    cfg: UringConfig,
    /// Dropped by hand: leaked instead when the kernel may still write.
    bufs: ManuallyDrop<BufRing>,
    dgram_bufs: Option<BufRing>,
    conns: Conns,
    /// Reassembly state per connection slot, apart from `conns` so that a
    /// record can be lent out of it while the callback queues sends.
    rx: Vec<Reassembler>,
    notifs: Notifs,
    fixed: FixedBufs,
    /// Zero-copy buffers released, to report from `poll`.
    done: VecDeque<(ConnId, u64)>,
    /// The dirty list being worked through by `flush`.
    flushing: Vec<usize>,
    /// Busy-polled streams that sent one segment in this sweep of `flush`
    /// and have more: they go again, after the others had their turn.
    again: Vec<usize>,
    /// Completions copied out of the CQ, and the next one to handle.
    cqes: Vec<cqueue::Entry>,
    cqe_next: usize,
    /// The armed futex wait: the word's address and the wait's sequence.
    futex: Option<(usize, u32)>,
    futex_seq: u32,
    /// Whether the kernel has futex waits (6.7 and later).
    futex_supported: bool,
    /// The kernel refused to pin unregistered pages for a zero-copy send
    /// (RLIMIT_MEMLOCK): such sends copy from now on.
    zc_pin_refused: bool,
    /// Streams are read by plain non-blocking receives from `poll` instead
    /// of armed multishot receives (see `set_busy_poll`).
    busy: bool,
    /// Where those receives land; as long as one TCP receive buffer.
    busy_buf: Vec<u8>,
    /// Ties the ring to its thread (see the type's docs).
    _thread: PhantomData<*mut ()>,
}

/// The ring's [`Outbox`], built from its fields so that other fields (the
/// reassemblers, the receive buffer) can stay borrowed beside it.
macro_rules! outbox_of {
    ($ring:ident) => {
        Outbox {
            conns: &mut $ring.conns,
            notifs: &mut $ring.notifs,
            fixed: &$ring.fixed,
            done: &mut $ring.done,
            limit: $ring.cfg.send_queue_limit,
        }
    };
}

/// What a receive completion leads to.
enum Outcome {
    Continue,
    Eof,
    Fail(io::Error),
}

impl<F: Framing> Uring<F> {
    /// Creates the ring and maps and registers its TCP receive buffers.
    ///
    /// Fails if io_uring is unavailable or the configuration is unusable
    /// (zero entries, a buffer count that is not a power of two, a framing
    /// with an empty header).
    ///
    /// ```
    /// use comm_uring::{LenPrefix, Uring, UringConfig};
    /// let ring = Uring::new(UringConfig::default(), LenPrefix)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new(cfg: UringConfig, framing: F) -> io::Result<Uring<F>> {
        if framing.header_len() == 0 || cfg.entries == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "need at least one SQ entry and a non-empty record header",
            ));
        }
        let ring = build_ring(cfg.entries)?;
        // Futex waits need 6.7; without them `park` sleeps on the timeout
        // and completions only.
        let mut probe = io_uring::Probe::new();
        let futex_supported = ring.submitter().register_probe(&mut probe).is_ok()
            && probe.is_supported(opcode::FutexWait::CODE);
        let bufs = BufRing::new(
            &ring.submitter(),
            STREAM_GROUP,
            cfg.recv_bufs,
            cfg.recv_buf_len,
        )?;
        Ok(Uring {
            ring,
            framing,
            cfg,
            bufs: ManuallyDrop::new(bufs),
            dgram_bufs: None,
            conns: Conns::default(),
            rx: Vec::new(),
            notifs: Notifs::default(),
            fixed: FixedBufs::default(),
            done: VecDeque::new(),
            flushing: Vec::new(),
            again: Vec::new(),
            cqes: Vec::with_capacity(CQE_BATCH),
            cqe_next: 0,
            futex: None,
            futex_seq: 0,
            futex_supported,
            zc_pin_refused: false,
            busy: false,
            busy_buf: Vec::new(),
            _thread: PhantomData,
        })
    }

    /// The configuration the ring was created with.
    ///
    /// ```
    /// # use comm_uring::{LenPrefix, Uring, UringConfig};
    /// let ring = Uring::new(UringConfig::default(), LenPrefix)?;
    /// assert_eq!(ring.config().entries, 256);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn config(&self) -> &UringConfig {
        &self.cfg
    }

    /// Registers `[ptr, ptr + len)` as fixed buffers, so that zero-copy
    /// sends from it skip pinning pages on every send.
    ///
    /// Returns `false` when the kernel refuses (typically `RLIMIT_MEMLOCK`
    /// for users without `CAP_IPC_LOCK`, or a full table of 64 pieces of
    /// at most 1 GiB); this is logged once per process and is not an error:
    /// sends from the region still work, unregistered.
    ///
    /// # Safety
    ///
    /// The memory must stay valid (mapped) as long as this `Uring` lives.
    ///
    /// ```
    /// # use comm_uring::{LenPrefix, Uring, UringConfig};
    /// let mut ring = Uring::new(UringConfig::default(), LenPrefix)?;
    /// let pool: &'static mut [u8] = Box::leak(vec![0u8; 1 << 20].into_boxed_slice());
    /// // SAFETY: leaked memory stays valid for the rest of the process.
    /// let fixed = unsafe { ring.register_region(pool.as_mut_ptr(), pool.len()) };
    /// # let _ = fixed;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub unsafe fn register_region(&mut self, ptr: *mut u8, len: usize) -> bool {
        // SAFETY: the caller keeps the memory valid while the ring lives.
        match unsafe { self.fixed.register(&self.ring.submitter(), ptr, len) } {
            Ok(()) => true,
            Err(e) => {
                if !FIXED_BUF_WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        error = %e,
                        len,
                        "io_uring refused to register send buffers (RLIMIT_MEMLOCK?); \
                         sending from unregistered memory instead"
                    );
                }
                false
            }
        }
    }

    /// Adds a TCP stream: sets `TCP_NODELAY` and arms a multishot receive
    /// into the provided buffers (submitted by the next `flush` or `park`).
    /// The ring owns the socket from now on and closes it.
    ///
    /// ```no_run
    /// # use comm_uring::{LenPrefix, Uring, UringConfig};
    /// let mut ring = Uring::new(UringConfig::default(), LenPrefix)?;
    /// let conn = ring.add_stream(std::net::TcpStream::connect("127.0.0.1:7000")?)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn add_stream(&mut self, stream: TcpStream) -> io::Result<ConnId> {
        stream.set_nodelay(true)?;
        let local = !self.cfg.zero_copy_to_local_peers && is_local(&stream);
        let id = self
            .conns
            .insert(Kind::Stream, stream.into(), None)
            .ok_or_else(table_full)?;
        if let Some(slot) = self.conns.get_mut(id) {
            slot.local = local;
        }
        self.grow_rx();
        self.rx[id.index()].reset();
        Ok(id)
    }

    /// Adds a UDP socket and arms a multishot `recvmsg` on it. The first
    /// UDP socket maps the datagram receive buffers.
    ///
    /// ```
    /// # use comm_uring::{LenPrefix, Uring, UringConfig};
    /// let mut ring = Uring::new(UringConfig::default(), LenPrefix)?;
    /// let sock = ring.add_datagram(std::net::UdpSocket::bind("127.0.0.1:0")?)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn add_datagram(&mut self, socket: UdpSocket) -> io::Result<ConnId> {
        if self.dgram_bufs.is_none() {
            self.dgram_bufs = Some(BufRing::new(
                &self.ring.submitter(),
                DGRAM_GROUP,
                self.cfg.dgram_bufs,
                DGRAM_BUF_LEN,
            )?);
        }
        let id = self
            .conns
            .insert(Kind::Datagram, socket.into(), Some(Msgs::new()))
            .ok_or_else(table_full)?;
        self.grow_rx();
        Ok(id)
    }

    /// The sending half of the ring, the same thing
    /// [`poll_with`](Uring::poll_with) lends its callback.
    ///
    /// ```no_run
    /// # use comm_uring::{LenPrefix, Uring, UringConfig};
    /// # let mut ring = Uring::new(UringConfig::default(), LenPrefix)?;
    /// # let conn = ring.add_stream(std::net::TcpStream::connect("127.0.0.1:7000")?)?;
    /// let mut out = ring.outbox();
    /// out.send(conn, &[&LenPrefix::header(1), b"a"])?;
    /// out.send(conn, &[&LenPrefix::header(1), b"b"])?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn outbox(&mut self) -> Outbox<'_> {
        outbox_of!(self)
    }

    /// Queues one record (the concatenation of `parts`), copied; see
    /// [`Outbox::send`].
    ///
    /// ```no_run
    /// # use comm_uring::{LenPrefix, SendError, Uring, UringConfig};
    /// # let mut ring = Uring::new(UringConfig::default(), LenPrefix)?;
    /// # let conn = ring.add_stream(std::net::TcpStream::connect("127.0.0.1:7000")?)?;
    /// match ring.send(conn, &[&LenPrefix::header(2), b"hi"]) {
    ///     Ok(()) => {}
    ///     Err(SendError::Full) => { /* poll, flush, retry later */ }
    ///     Err(e) => return Err(e.into()),
    /// }
    /// ring.flush()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send(&mut self, conn: ConnId, parts: &[&[u8]]) -> Result<(), SendError> {
        self.outbox().send(conn, parts)
    }

    /// Queues `head` (copied) and `len` bytes at `data` (zero-copy); see
    /// [`Outbox::send_zc`].
    ///
    /// # Safety
    ///
    /// `[data, data + len)` must stay valid and unmodified until
    /// [`Event::SendDone`] with `token` is reported (or the ring is dropped).
    ///
    /// ```no_run
    /// # use comm_uring::{LenPrefix, Uring, UringConfig};
    /// # let mut ring = Uring::new(UringConfig::default(), LenPrefix)?;
    /// # let conn = ring.add_stream(std::net::TcpStream::connect("127.0.0.1:7000")?)?;
    /// static BODY: [u8; 4096] = [1; 4096];
    /// // SAFETY: a static outlives every send.
    /// unsafe { ring.send_zc(conn, &LenPrefix::header(BODY.len()), BODY.as_ptr(), BODY.len(), 42)? };
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub unsafe fn send_zc(
        &mut self,
        conn: ConnId,
        head: &[u8],
        data: *const u8,
        len: usize,
        token: u64,
    ) -> Result<(), SendError> {
        // SAFETY: forwarded from the caller.
        unsafe { self.outbox().send_zc(conn, head, data, len, token) }
    }

    /// Queues one datagram to `to`; see [`Outbox::send_to`].
    ///
    /// ```
    /// # use comm_uring::{LenPrefix, Uring, UringConfig};
    /// # let mut ring = Uring::new(UringConfig::default(), LenPrefix)?;
    /// let sock = ring.add_datagram(std::net::UdpSocket::bind("127.0.0.1:0")?)?;
    /// ring.send_to(sock, "127.0.0.1:9".parse()?, &[b"x"])?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_to(
        &mut self,
        conn: ConnId,
        to: SocketAddr,
        parts: &[&[u8]],
    ) -> Result<(), SendError> {
        self.outbox().send_to(conn, to, parts)
    }

    /// Bytes queued on `conn` and not yet accepted by the kernel.
    ///
    /// ```no_run
    /// # use comm_uring::{LenPrefix, Uring, UringConfig};
    /// # let mut ring = Uring::new(UringConfig::default(), LenPrefix)?;
    /// # let conn = ring.add_stream(std::net::TcpStream::connect("127.0.0.1:7000")?)?;
    /// assert_eq!(ring.queued_bytes(conn), 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn queued_bytes(&self, conn: ConnId) -> usize {
        self.conns.get(conn).map_or(0, |s| s.tx.queued())
    }

    /// Switches busy polling on or off.
    ///
    /// Off (the default), every socket has a multishot receive armed in the
    /// kernel, and arriving data shows up as completions. On, for a thread
    /// that polls in a loop anyway, a socket on which data just arrived turns
    /// *hot*: its armed receive is cancelled and [`poll`](Uring::poll) reads
    /// it with plain non-blocking receives, and sends go straight to the
    /// socket while it takes them. On loopback that is about a microsecond
    /// quicker per message: the kernel's wake-up, task-work and re-poll steps
    /// of an armed receive drop out. A hot socket costs one system call per
    /// `poll`, so after a few hundred empty reads in a row it cools down and
    /// its receive is armed again; idle sockets cost nothing. Order is kept:
    /// plain reads of a socket start only after its cancelled receive's last
    /// completion. [`park`](Uring::park) switches busy polling off, since a
    /// sleeping thread needs the kernel to wake it.
    ///
    /// ```
    /// # use comm_uring::{LenPrefix, Uring, UringConfig};
    /// # let mut ring = Uring::new(UringConfig::default(), LenPrefix)?;
    /// ring.set_busy_poll(true);
    /// ring.poll(|_ev| { /* records arrive here as before */ });
    /// assert!(ring.is_busy_polling());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_busy_poll(&mut self, on: bool) {
        if self.busy == on {
            return;
        }
        self.busy = on;
        if on {
            // Sockets turn hot one by one, as data arrives.
            return;
        }
        for index in 0..self.conns.capacity() {
            let Some(id) = self.conns.id_at(index) else {
                continue;
            };
            let Some(slot) = self.conns.get_mut(id) else {
                continue;
            };
            if slot.state != State::Open {
                continue;
            }
            slot.hot = false;
            slot.empty_reads = 0;
            // Arms its receive again at the next flush.
            self.conns.mark_dirty(id);
        }
    }

    /// Stops reading `conn` (`true`) or reads it again (`false`). While
    /// paused, what the peer sends stays in the kernel, whose flow control
    /// then holds the peer back: an owner that cannot take more records
    /// pauses instead of keeping them aside without bound. Records already
    /// received (by a receive that was armed) still arrive after the
    /// pause, in order. Unknown ids are ignored.
    ///
    /// ```no_run
    /// # use comm_uring::{LenPrefix, Uring, UringConfig};
    /// # let mut ring = Uring::new(UringConfig::default(), LenPrefix)?;
    /// # let conn = ring.add_stream(std::net::TcpStream::connect("127.0.0.1:7000")?)?;
    /// ring.pause_receive(conn, true);
    /// // ... the consumer catches up ...
    /// ring.pause_receive(conn, false);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn pause_receive(&mut self, conn: ConnId, paused: bool) {
        let Some(slot) = self.conns.get_mut(conn) else {
            return;
        };
        if slot.state != State::Open || slot.paused == paused {
            return;
        }
        slot.paused = paused;
        if paused {
            self.cancel_recv(conn);
        } else {
            self.conns.mark_dirty(conn);
        }
    }

    /// Asks the kernel to end `id`'s armed multishot receive, if any; its
    /// last completion clears `recv_armed`.
    fn cancel_recv(&mut self, id: ConnId) {
        let stream_group = u32::from(self.bufs.bgid());
        let Some(slot) = self.conns.get_mut(id) else {
            return;
        };
        if !slot.recv_armed || slot.recv_cancelling {
            return;
        }
        let group = match slot.kind {
            Kind::Stream => stream_group,
            Kind::Datagram => u32::from(DGRAM_GROUP),
        };
        let target = types::CancelBuilder::user_data(encode(Op::Recv, id.as_u32(), group));
        let entry =
            opcode::AsyncCancel2::new(target)
                .build()
                .user_data(encode(Op::Cancel, id.as_u32(), 0));
        // SAFETY: a cancellation points at no memory.
        if unsafe { push(&mut self.ring, &entry) } {
            slot.recv_cancelling = true;
        } else {
            // The SQ is full: the next `flush` tries again.
            self.conns.mark_dirty(id);
        }
    }

    /// Whether a [`flush`](Uring::flush) has work: sends queued, receives
    /// to arm, or (busy polling) a full socket to try again.
    ///
    /// ```
    /// # use comm_uring::{LenPrefix, Uring, UringConfig};
    /// let ring = Uring::new(UringConfig::default(), LenPrefix)?;
    /// assert!(!ring.needs_flush());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn needs_flush(&self) -> bool {
        self.conns.has_dirty()
    }

    /// How many TCP streams are open.
    ///
    /// ```
    /// # use comm_uring::{LenPrefix, Uring, UringConfig};
    /// let ring = Uring::new(UringConfig::default(), LenPrefix)?;
    /// assert_eq!(ring.streams(), 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn streams(&self) -> usize {
        self.conns
            .live()
            .filter(|&id| {
                self.conns
                    .get(id)
                    .is_some_and(|s| s.kind == Kind::Stream && s.state == State::Open)
            })
            .count()
    }

    /// Whether `conn` is read by plain receives now: busy polling is on,
    /// data came on it lately and its armed receive has ended (see
    /// [`set_busy_poll`](Uring::set_busy_poll)).
    ///
    /// ```
    /// # use comm_uring::{LenPrefix, Uring, UringConfig};
    /// let mut ring = Uring::new(UringConfig::default(), LenPrefix)?;
    /// let sock = ring.add_datagram(std::net::UdpSocket::bind("127.0.0.1:0")?)?;
    /// assert!(!ring.is_polled(sock)); // nothing came yet
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_polled(&self, conn: ConnId) -> bool {
        self.busy
            && self
                .conns
                .get(conn)
                .is_some_and(|s| s.state == State::Open && s.hot && !s.recv_armed && !s.paused)
    }

    /// Whether busy polling is on; see
    /// [`set_busy_poll`](Uring::set_busy_poll).
    ///
    /// ```
    /// # use comm_uring::{LenPrefix, Uring, UringConfig};
    /// let ring = Uring::new(UringConfig::default(), LenPrefix)?;
    /// assert!(!ring.is_busy_polling());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_busy_polling(&self) -> bool {
        self.busy
    }

    /// Pushes submissions for everything queued (sends, receives to arm or
    /// re-arm, cancellations) and submits them without waiting.
    ///
    /// While [busy polling](Uring::set_busy_poll), stream bytes are written
    /// straight to the sockets, in turns of one queued segment per stream,
    /// so that data queued alternately on several streams leaves in the
    /// order it was queued.
    ///
    /// ```
    /// # use comm_uring::{LenPrefix, Uring, UringConfig};
    /// # let mut ring = Uring::new(UringConfig::default(), LenPrefix)?;
    /// loop {
    ///     ring.poll(|_ev| { /* ... */ });
    ///     ring.flush()?;
    /// #   break;
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn flush(&mut self) -> io::Result<()> {
        let mut list = std::mem::take(&mut self.flushing);
        self.conns.take_dirty(&mut list);
        // Sweeps: a busy-polled stream writes one segment per sweep, so that
        // streams written in turn (the lanes of a link, or many peers) get
        // their bytes out in the order they were queued, not one stream's
        // whole backlog before the next one's first message.
        while !list.is_empty() {
            for &index in &list {
                if let Some(id) = self.conns.id_at(index) {
                    if !self.submit_conn(id) {
                        // The SQ is full and the kernel took nothing: next time.
                        self.conns.mark_dirty(id);
                    }
                }
            }
            list.clear();
            std::mem::swap(&mut list, &mut self.again);
        }
        self.flushing = list;
        // An idle busy-polling loop flushes constantly: enter the kernel only
        // when there is something to submit.
        if self.ring.submission().is_empty() {
            return Ok(());
        }
        submit(&self.ring)
    }

    /// Reaps completions without blocking, calling `f` once per event, and
    /// returns the number of events.
    ///
    /// Records are reassembled (a record inside one receive buffer is lent
    /// in place; one spanning buffers is copied once), the receive buffers
    /// go back to the kernel after `f` returns, and follow-up work (the rest
    /// of a partial send, the next queued send, re-arming a receive that
    /// ended) is queued for the next [`flush`](Uring::flush).
    ///
    /// ```
    /// # use comm_uring::{Event, LenPrefix, Uring, UringConfig};
    /// # let mut ring = Uring::new(UringConfig::default(), LenPrefix)?;
    /// let mut records = 0;
    /// ring.poll(|ev| if let Event::Record { .. } = ev { records += 1 });
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn poll(&mut self, mut f: impl FnMut(Event<'_>)) -> usize {
        self.poll_with(|_, ev| f(ev))
    }

    /// Like [`poll`](Uring::poll), but also lends `f` the ring's
    /// [`Outbox`], so that a handler can queue replies while the record it
    /// answers still points into a receive buffer.
    ///
    /// ```
    /// # use comm_uring::{Event, LenPrefix, Uring, UringConfig};
    /// # let mut ring = Uring::new(UringConfig::default(), LenPrefix)?;
    /// ring.poll_with(|out, ev| {
    ///     if let Event::Record { conn, bytes } = ev {
    ///         let _ = out.send(conn, &[bytes]); // echo
    ///     }
    /// });
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn poll_with(&mut self, mut f: impl FnMut(&mut Outbox<'_>, Event<'_>)) -> usize {
        let mut events = 0;
        // Bounded, so that a flood of completions cannot keep the caller
        // from flushing.
        let budget = 2 * self.ring.params().cq_entries() as usize;
        let mut seen = 0;
        while seen < budget {
            // Completions left over from a batch whose callback panicked
            // are handled first: losing them would leave operations that
            // look in flight forever.
            if self.cqe_next >= self.cqes.len() {
                if self.ring.completion().is_empty() {
                    let pending = {
                        let sq = self.ring.submission();
                        sq.taskrun() || sq.cq_overflow()
                    };
                    if !pending {
                        break;
                    }
                    // Runs the deferred completion work (and flushes an
                    // overflowed CQ) without waiting for anything.
                    let _ = self.ring.submit();
                }
                self.cqes.clear();
                self.cqe_next = 0;
                self.cqes.extend(self.ring.completion().take(CQE_BATCH));
                if self.cqes.is_empty() {
                    break;
                }
                seen += self.cqes.len();
            }
            while let Some(cqe) = self.cqes.get(self.cqe_next).cloned() {
                self.cqe_next += 1;
                events += self.handle(&cqe, &mut f);
            }
            self.bufs.publish();
            if let Some(d) = &mut self.dgram_bufs {
                d.publish();
            }
        }
        events += self.busy_receive(&mut f);
        while let Some((conn, token)) = self.done.pop_front() {
            events += 1;
            f(&mut self.outbox(), Event::SendDone { conn, token });
        }
        events
    }

    /// Reads busy-polled streams (those with no receive armed) with plain
    /// non-blocking receives, and reassembles what came.
    fn busy_receive(&mut self, f: &mut impl FnMut(&mut Outbox<'_>, Event<'_>)) -> usize {
        // Completions not handled yet hold older bytes of the same streams.
        if !self.busy || self.cqe_next < self.cqes.len() || !self.ring.completion().is_empty() {
            return 0;
        }
        if self.busy_buf.is_empty() {
            self.busy_buf = vec![0; self.cfg.recv_buf_len as usize];
        }
        let mut events = 0;
        for index in 0..self.conns.capacity() {
            let Some(id) = self.conns.id_at(index) else {
                continue;
            };
            let (fd, kind) = match self.conns.get(id) {
                Some(s) if s.state == State::Open && s.hot && !s.recv_armed && !s.paused => {
                    match &s.fd {
                        Some(fd) => (fd.as_raw_fd(), s.kind),
                        None => continue,
                    }
                }
                _ => continue,
            };
            let got = match kind {
                Kind::Datagram => self.busy_receive_datagrams(id, fd, f),
                Kind::Stream => self.busy_receive_stream(id, fd, f),
            };
            events += got;
            let Some(slot) = self.conns.get_mut(id) else {
                continue;
            };
            if got > 0 {
                slot.empty_reads = 0;
                continue;
            }
            slot.empty_reads += 1;
            if slot.empty_reads >= COOL_AFTER {
                // Quiet: back to an armed receive, free while nothing comes.
                slot.hot = false;
                slot.empty_reads = 0;
                self.conns.mark_dirty(id);
            }
        }
        events
    }

    /// Reads what a busy-polled stream holds, a few reads at most. The rest
    /// of a large record is read straight into the reassembler.
    fn busy_receive_stream(
        &mut self,
        id: ConnId,
        fd: std::os::fd::RawFd,
        f: &mut impl FnMut(&mut Outbox<'_>, Event<'_>),
    ) -> usize {
        let mut events = 0;
        let mut outcome = Outcome::Continue;
        for _ in 0..BUSY_READS {
            if self.conns.get(id).is_none_or(|s| s.paused) {
                // The callback paused it (`Outbox::pause_receive`).
                break;
            }
            let mut out = outbox_of!(self);
            let rx = &mut self.rx[id.index()];
            let direct = rx.missing() >= DIRECT_READ;
            let read = if direct {
                // SAFETY: recv writes at most `len` bytes at `ptr` and
                // returns how many it wrote.
                unsafe {
                    rx.fill(
                        DIRECT_READ_MAX,
                        |ptr, len| sys::recv_raw_nowait(fd, ptr, len),
                        |bytes| {
                            events += 1;
                            f(&mut out, Event::Record { conn: id, bytes });
                        },
                    )
                }
            } else {
                sys::recv_nowait(fd, &mut self.busy_buf).map(|n| (n, self.busy_buf.len()))
            };
            let (n, room) = match read {
                Ok((0, _)) => {
                    outcome = Outcome::Eof;
                    break;
                }
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    outcome = Outcome::Fail(e);
                    break;
                }
            };
            if !direct {
                let fed = rx.feed(
                    &self.framing,
                    self.cfg.max_record,
                    &self.busy_buf[..n],
                    |bytes| {
                        events += 1;
                        f(&mut out, Event::Record { conn: id, bytes });
                    },
                );
                if let Err(e) = fed {
                    outcome = Outcome::Fail(e.into());
                    break;
                }
            }
            if n < room {
                // Most likely drained: spare the call that would say so.
                break;
            }
        }
        events
            + match outcome {
                Outcome::Continue => 0,
                Outcome::Eof => self.end_of_stream(id, f),
                Outcome::Fail(e) => self.fail(id, Some(e), f),
            }
    }

    /// Reads one datagram of a busy-polled UDP socket, if one is there.
    ///
    /// One, not a batch: the caller answers a datagram only after `poll`
    /// returns, and a second read, almost always empty, would hold that
    /// answer back by a whole system call (about 0.15 us a hop on loopback).
    /// A queue of datagrams is still read at one per pass, each pass a
    /// single call, as a batch of reads would cost.
    fn busy_receive_datagrams(
        &mut self,
        id: ConnId,
        fd: std::os::fd::RawFd,
        f: &mut impl FnMut(&mut Outbox<'_>, Event<'_>),
    ) -> usize {
        if self.busy_buf.len() < sys::MAX_DATAGRAM {
            self.busy_buf.resize(sys::MAX_DATAGRAM, 0);
        }
        let (n, from) = match sys::recv_from_nowait(fd, &mut self.busy_buf) {
            Ok((n, Some(from), false)) => (n, from),
            // Cut short or from an odd family: dropped, as an armed receive
            // would drop it.
            Ok(_) => return 0,
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(0);
                if errno == libc::EAGAIN
                    || errno == libc::EINTR
                    || recv_retryable(errno, Kind::Datagram)
                {
                    return 0;
                }
                return self.fail(id, Some(e), f);
            }
        };
        let mut out = outbox_of!(self);
        f(
            &mut out,
            Event::Datagram {
                conn: id,
                from,
                bytes: &self.busy_buf[..n],
            },
        );
        1
    }

    /// The peer ended the stream: an error if it ended inside a record.
    fn end_of_stream(
        &mut self,
        id: ConnId,
        f: &mut impl FnMut(&mut Outbox<'_>, Event<'_>),
    ) -> usize {
        let partial = self.rx.get(id.index()).is_some_and(|r| r.pending() > 0);
        let error = partial
            .then(|| io::Error::new(io::ErrorKind::UnexpectedEof, "stream ended inside a record"));
        self.fail(id, error, f)
    }

    /// Flushes, then sleeps until a completion arrives, `futex` (a word and
    /// the value it holds while there is nothing to do) is woken, or
    /// `timeout` passes. Returns at once if completions or events are
    /// pending or the word no longer holds the value.
    ///
    /// The futex wait is an io_uring operation, so one thread sleeps on its
    /// sockets and its shared-memory doorbell at once. The wait is a shared
    /// (not process-private) 32-bit futex wait: wake it with a plain
    /// `FUTEX_WAKE` from any process that maps the word. It stays armed
    /// across calls with the same word; a wake that arrives while the
    /// thread is busy makes the next `park` return at once. Kernels older
    /// than 6.7 have no futex waits: there `park` wakes only on completions
    /// and the timeout. Busy polling is switched off first (see
    /// [`set_busy_poll`](Uring::set_busy_poll)).
    ///
    /// ```
    /// # use std::sync::atomic::AtomicU32;
    /// # use std::time::Duration;
    /// # use comm_uring::{LenPrefix, Uring, UringConfig};
    /// # let mut ring = Uring::new(UringConfig::default(), LenPrefix)?;
    /// let doorbell = AtomicU32::new(0);
    /// ring.park(Some((&doorbell, 0)), Duration::from_millis(10))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn park(&mut self, futex: Option<(&AtomicU32, u32)>, timeout: Duration) -> io::Result<()> {
        self.set_busy_poll(false);
        self.flush()?;
        if self.needs_flush() {
            // The SQ had no room for everything (a receive not armed yet):
            // sleeping now could miss data. The caller comes back.
            return Ok(());
        }
        let leftovers = self.cqe_next < self.cqes.len();
        if leftovers || !self.ring.completion().is_empty() || !self.done.is_empty() {
            return Ok(());
        }
        if let Some((word, expected)) = futex {
            if word.load(Ordering::Acquire) != expected {
                return Ok(());
            }
            self.arm_futex(word, expected);
        }
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e) if transient(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Closes `conn`: cancels its operations, drops what it had queued, and
    /// closes the socket (with a reset if queued data was thrown away).
    /// No further events are reported for it, except `SendDone` for each
    /// of its zero-copy sends, which still comes before the id could be
    /// reused. Unknown or already closed ids are ignored.
    ///
    /// ```no_run
    /// # use comm_uring::{LenPrefix, Uring, UringConfig};
    /// # let mut ring = Uring::new(UringConfig::default(), LenPrefix)?;
    /// # let conn = ring.add_stream(std::net::TcpStream::connect("127.0.0.1:7000")?)?;
    /// ring.close(conn);
    /// assert!(ring.send(conn, &[b"x"]).is_err());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn close(&mut self, conn: ConnId) {
        if self.conns.get(conn).is_some_and(|s| s.state == State::Open) {
            self.teardown(conn);
            self.close_step(conn);
        }
    }

    fn grow_rx(&mut self) {
        let n = self.conns.capacity();
        if self.rx.len() < n {
            self.rx.resize_with(n, Reassembler::new);
        }
    }

    /// Pushes what `id` needs submitted; `false` if the SQ had no room.
    fn submit_conn(&mut self, id: ConnId) -> bool {
        let Some(slot) = self.conns.get_mut(id) else {
            return true;
        };
        if slot.state == State::Closing {
            self.close_step(id);
            return true;
        }
        let Some(fd) = slot.fd.as_ref().map(|fd| types::Fd(fd.as_raw_fd())) else {
            return true;
        };
        let polled = self.busy && slot.hot;
        if slot.recv_armed && (slot.paused || polled) && !slot.recv_cancelling {
            // A cancellation the SQ had no room for earlier.
            self.cancel_recv(id);
        }
        let Some(slot) = self.conns.get_mut(id) else {
            return true;
        };
        if slot.recv_armed && (slot.paused || polled) && !slot.recv_cancelling {
            return false;
        }
        if !slot.recv_armed && !polled && !slot.paused {
            let (entry, group) = match (slot.kind, &slot.msgs, &self.dgram_bufs) {
                (Kind::Stream, _, _) => (
                    opcode::RecvMulti::new(fd, self.bufs.bgid()).build(),
                    self.bufs.bgid(),
                ),
                (Kind::Datagram, Some(msgs), Some(bufs)) => (
                    opcode::RecvMsgMulti::new(fd, msgs.recv_hdr(), bufs.bgid()).build(),
                    bufs.bgid(),
                ),
                // Not reachable: datagram slots get both when added.
                (Kind::Datagram, _, _) => return true,
            };
            let entry = entry.user_data(encode(Op::Recv, id.as_u32(), u32::from(group)));
            // SAFETY: the receive writes only into provided buffers, which
            // stay mapped until every receive has ended (drop waits for
            // that, or leaks them). The recvmsg template is boxed in the
            // slot, and a slot is retired only once no receive is armed.
            if !unsafe { push(&mut self.ring, &entry) } {
                return false;
            }
            slot.recv_armed = true;
        }
        let Some(mut next) = slot.tx.start(MAX_SEND) else {
            return true;
        };
        // Busy polling: stream bytes go straight to the socket while it
        // takes them (one system call, no submission and completion); what
        // it does not take goes the usual way, still in order behind them.
        if self.busy && slot.kind == Kind::Datagram {
            while let Next::Copy { ptr, len, to } = next {
                // SAFETY: the datagram's bytes sit in a frozen staging buffer.
                let sent = unsafe {
                    match to {
                        Some(to) => sys::send_to_nowait(fd.0, ptr, len, &to),
                        // The connected peer.
                        None => sys::send_nowait(fd.0, ptr, len),
                    }
                };
                match sent {
                    Ok(_) => {
                        slot.tx.complete(len, true);
                    }
                    // Full, or an error the submitted send will handle.
                    Err(_) => break,
                }
                match slot.tx.start(MAX_SEND) {
                    Some(more) => next = more,
                    None => return true,
                }
            }
        }
        if self.busy && slot.kind == Kind::Stream {
            let plain = match next {
                Next::Copy { ptr, len, .. } => Some((ptr, len)),
                Next::Zc {
                    ptr,
                    len,
                    copy,
                    fixed,
                    ..
                } if copy || slot.local || (fixed.is_none() && self.zc_pin_refused) => {
                    Some((ptr, len))
                }
                Next::Zc { .. } => None,
            };
            if let Some((ptr, len)) = plain {
                // SAFETY: as for a submitted send: a frozen staging buffer,
                // or memory the caller of `send_zc` keeps until `SendDone`.
                match unsafe { sys::send_nowait(fd.0, ptr, len) } {
                    Ok(n) if n > 0 || len == 0 => {
                        if let Some(d) = slot
                            .tx
                            .complete(n, false)
                            .and_then(|z| self.notifs.finish(z))
                        {
                            self.done.push_back(d);
                            slot.zc_pending = slot.zc_pending.saturating_sub(1);
                        }
                        if slot.tx.queued() > 0 {
                            // One segment per sweep: the rest in the next.
                            self.again.push(id.index());
                        }
                        return true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // Full: try again on the next flush rather than arm
                        // a send that needs the kernel's wake-up to finish.
                        slot.tx.abort_in_flight();
                        self.conns.mark_dirty(id);
                        return true;
                    }
                    // An error the submitted send below will report.
                    _ => {}
                }
            }
        }
        let nosignal = libc::MSG_NOSIGNAL;
        // Pages the kernel would not pin (RLIMIT_MEMLOCK) go out copied.
        let zc_as_copy = match next {
            Next::Zc { copy, fixed, .. } => {
                copy || slot.local || (fixed.is_none() && self.zc_pin_refused)
            }
            Next::Copy { .. } => false,
        };
        let entry_is_zc = matches!(next, Next::Zc { .. }) && !zc_as_copy;
        let entry = match (next, slot.kind, &mut slot.msgs) {
            (Next::Copy { ptr, len, to }, Kind::Datagram, Some(msgs)) => {
                let hdr = msgs.prepare_send(ptr, len, to);
                opcode::SendMsg::new(fd, hdr)
                    .flags(nosignal as u32)
                    .build()
                    .user_data(encode(Op::Send, id.as_u32(), 0))
            }
            (Next::Copy { ptr, len, .. }, _, _) => opcode::Send::new(fd, ptr, len as u32)
                .flags(nosignal | libc::MSG_WAITALL)
                .build()
                .user_data(encode(Op::Send, id.as_u32(), 0)),
            (Next::Zc { ptr, len, .. }, _, _) if zc_as_copy => {
                opcode::Send::new(fd, ptr, len as u32)
                    .flags(nosignal | libc::MSG_WAITALL)
                    .build()
                    .user_data(encode(Op::Send, id.as_u32(), 0))
            }
            (
                Next::Zc {
                    ptr,
                    len,
                    fixed,
                    slot: zc,
                    ..
                },
                _,
                _,
            ) => opcode::SendZc::new(fd, ptr, len as u32)
                .buf_index(fixed)
                .flags(nosignal | libc::MSG_WAITALL)
                .build()
                .user_data(encode(Op::SendZc, id.as_u32(), zc)),
        };
        // SAFETY: a copied send reads a staging buffer that is frozen (never
        // written or grown) until this send completes, and the send header
        // of a datagram is boxed in the slot and rewritten only for the next
        // send, which waits for this one. A zero-copy send reads memory the
        // caller of `send_zc` keeps valid until `SendDone`, which is only
        // reported after the kernel's notification.
        if !unsafe { push(&mut self.ring, &entry) } {
            slot.tx.abort_in_flight();
            return false;
        }
        if let Next::Zc { slot: zc, .. } = next {
            if entry_is_zc {
                self.notifs.issued(zc);
            }
        }
        true
    }

    fn handle(
        &mut self,
        cqe: &cqueue::Entry,
        f: &mut impl FnMut(&mut Outbox<'_>, Event<'_>),
    ) -> usize {
        let (res, flags) = (cqe.result(), cqe.flags());
        match decode(cqe.user_data()) {
            Some((Op::Recv, raw, group)) => {
                self.on_recv(ConnId::from_raw(raw), group as u16, res, flags, f)
            }
            Some((Op::Send, raw, _)) => self.on_send(ConnId::from_raw(raw), res, None, f),
            Some((Op::SendZc, raw, zc)) => {
                if cqueue::notif(flags) {
                    self.on_notif(zc);
                    0
                } else {
                    if !cqueue::more(flags) {
                        // No notification will follow this send.
                        self.on_notif(zc);
                    }
                    self.on_send(ConnId::from_raw(raw), res, Some(zc), f)
                }
            }
            Some((Op::Futex, _, seq)) => {
                if self.futex.is_some_and(|(_, s)| s == seq) {
                    self.futex = None;
                }
                if res == -libc::EINVAL || res == -libc::EOPNOTSUPP {
                    // Re-arming would fail at once on every park: a busy
                    // loop. Sleep on completions and the timeout instead.
                    self.futex_supported = false;
                }
                0
            }
            Some((Op::Cancel, ..)) | None => 0,
        }
    }

    fn on_recv(
        &mut self,
        id: ConnId,
        group: u16,
        res: i32,
        flags: u32,
        f: &mut impl FnMut(&mut Outbox<'_>, Event<'_>),
    ) -> usize {
        let more = cqueue::more(flags);
        let bid = cqueue::buffer_select(flags);
        let mut heated = false;
        let (open, kind) = match self.conns.get_mut(id) {
            Some(slot) => {
                if !more {
                    slot.recv_armed = false;
                    slot.recv_cancelling = false;
                }
                // Data on a busy-polling ring: read this socket plainly
                // from now on (once this receive has ended).
                if self.busy && res > 0 && !slot.paused && !slot.hot {
                    slot.hot = true;
                    slot.empty_reads = 0;
                    heated = true;
                }
                (slot.state == State::Open, slot.kind)
            }
            None => (false, Kind::Stream),
        };
        let mut events = 0;
        let mut outcome = Outcome::Continue;
        if open {
            if res > 0 {
                let bufs = if group == DGRAM_GROUP {
                    self.dgram_bufs.as_ref()
                } else {
                    Some(&*self.bufs)
                };
                let data = bid.zip(bufs).and_then(|(b, r)| r.get(b, res as usize));
                let mut out = outbox_of!(self);
                match (data, kind) {
                    (None, _) => {
                        outcome = Outcome::Fail(io::Error::other(
                            "receive completion without a valid buffer",
                        ))
                    }
                    (Some(data), Kind::Stream) => {
                        let fed = self.rx[id.index()].feed(
                            &self.framing,
                            self.cfg.max_record,
                            data,
                            |bytes| {
                                events += 1;
                                f(&mut out, Event::Record { conn: id, bytes });
                            },
                        );
                        if let Err(e) = fed {
                            outcome = Outcome::Fail(e.into());
                        }
                    }
                    (Some(data), Kind::Datagram) => {
                        // Truncated or unparsable datagrams are dropped, as
                        // the network might have dropped them.
                        if let Received::Datagram { from, bytes } = datagram::parse(data) {
                            events += 1;
                            f(
                                &mut out,
                                Event::Datagram {
                                    conn: id,
                                    from,
                                    bytes,
                                },
                            );
                        }
                    }
                }
            } else if res == 0 {
                if kind == Kind::Stream {
                    outcome = Outcome::Eof;
                }
            } else if !recv_retryable(-res, kind) {
                outcome = Outcome::Fail(io::Error::from_raw_os_error(-res));
            }
        }
        // Only now, after the callback, may the kernel reuse the buffer.
        if let Some(bid) = bid {
            if group == DGRAM_GROUP {
                if let Some(d) = &mut self.dgram_bufs {
                    d.recycle(bid);
                }
            } else {
                self.bufs.recycle(bid);
            }
        }
        match outcome {
            Outcome::Eof => events += self.end_of_stream(id, f),
            Outcome::Fail(e) => events += self.fail(id, Some(e), f),
            Outcome::Continue if open => {
                if !more {
                    // Multishot receive ended (ENOBUFS, ...): re-arm.
                    self.conns.mark_dirty(id);
                } else if heated {
                    self.cancel_recv(id);
                }
            }
            Outcome::Continue => self.closing_progress(id),
        }
        events
    }

    fn on_send(
        &mut self,
        id: ConnId,
        res: i32,
        zc: Option<u32>,
        f: &mut impl FnMut(&mut Outbox<'_>, Event<'_>),
    ) -> usize {
        let Some(slot) = self.conns.get_mut(id) else {
            return 0;
        };
        let mut finished = None;
        let mut failure = None;
        match slot.state {
            State::Free => return 0,
            State::Closing => {
                // Whatever happened, this segment is over.
                finished = slot.tx.complete(usize::MAX, true);
            }
            State::Open if res >= 0 => {
                finished = slot.tx.complete(res as usize, slot.kind == Kind::Datagram);
            }
            State::Open => {
                let errno = -res;
                if matches!(errno, libc::EINTR | libc::EAGAIN | libc::ECANCELED) {
                    slot.tx.abort_in_flight();
                } else if errno == libc::ENOMEM && zc.is_some() {
                    // The pages could not be pinned: RLIMIT_MEMLOCK counts
                    // them for users without CAP_IPC_LOCK. Copy instead.
                    slot.tx.abort_in_flight();
                    slot.tx.copy_front();
                    self.zc_pin_refused = true;
                    if !PIN_WARNED.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "io_uring could not pin pages for a zero-copy send \
                             (RLIMIT_MEMLOCK?); sending unregistered memory by copy instead"
                        );
                    }
                } else if slot.kind == Kind::Datagram {
                    // A datagram that cannot be sent is dropped, like one
                    // lost on the way; the socket stays usable.
                    finished = slot.tx.complete(0, true);
                } else {
                    slot.tx.abort_in_flight();
                    failure = Some(io::Error::from_raw_os_error(errno));
                }
            }
        }
        let state = slot.state;
        debug_assert!(zc.is_none() || finished.is_none() || finished == zc);
        if let Some(d) = finished.and_then(|s| self.notifs.finish(s)) {
            self.zc_released(d);
        }
        match (state, failure) {
            (_, Some(e)) => self.fail(id, Some(e), f),
            (State::Open, None) => {
                self.conns.mark_dirty(id);
                0
            }
            _ => {
                self.closing_progress(id);
                0
            }
        }
    }

    fn on_notif(&mut self, zc: u32) {
        if let Some(d) = self.notifs.notified(zc) {
            self.zc_released(d);
        }
    }

    /// A zero-copy buffer is free: report it, and let its connection
    /// retire if that was the last thing it waited for.
    fn zc_released(&mut self, (conn, token): (ConnId, u64)) {
        self.done.push_back((conn, token));
        if let Some(slot) = self.conns.get_mut(conn) {
            slot.zc_pending = slot.zc_pending.saturating_sub(1);
        }
        self.close_step(conn);
    }

    /// Reports `id` closed (once) and tears it down.
    fn fail(
        &mut self,
        id: ConnId,
        error: Option<io::Error>,
        f: &mut impl FnMut(&mut Outbox<'_>, Event<'_>),
    ) -> usize {
        if !self.conns.get(id).is_some_and(|s| s.state == State::Open) {
            return 0;
        }
        self.teardown(id);
        f(&mut self.outbox(), Event::Closed { conn: id, error });
        self.close_step(id);
        1
    }

    /// Moves an open connection to `Closing`: drops its queued data (the
    /// zero-copy parts are released), forgets any partial record.
    fn teardown(&mut self, id: ConnId) {
        let Some(slot) = self.conns.get_mut(id) else {
            return;
        };
        if slot.state != State::Open {
            return;
        }
        slot.state = State::Closing;
        slot.cancelled = false;
        // Unsent data is thrown away, so the peer must not take the close
        // for an orderly end of stream.
        slot.abortive |= slot.tx.queued() > 0;
        let (notifs, done) = (&mut self.notifs, &mut self.done);
        let zc_pending = &mut slot.zc_pending;
        slot.tx.discard(|zc| {
            if let Some(d) = notifs.finish(zc) {
                *zc_pending = zc_pending.saturating_sub(1);
                done.push_back(d);
            }
        });
        if !slot.abortive {
            if let Some(fd) = &slot.fd {
                sys::shutdown(fd.as_raw_fd());
            }
        }
        if let Some(rx) = self.rx.get_mut(id.index()) {
            rx.reset();
        }
    }

    /// A completion arrived for a closing connection: if operations remain,
    /// cancel again (one might have been issued after the last cancel saw
    /// nothing), then advance the close.
    fn closing_progress(&mut self, id: ConnId) {
        if let Some(slot) = self.conns.get_mut(id) {
            if slot.state == State::Closing {
                slot.cancelled = false;
            }
        }
        self.close_step(id);
    }

    /// Advances a closing connection: cancel its operations; once none is
    /// left, close the socket; once its zero-copy buffers are all released
    /// too, retire the id.
    fn close_step(&mut self, id: ConnId) {
        let Some(slot) = self.conns.get_mut(id) else {
            return;
        };
        if slot.state != State::Closing {
            return;
        }
        if slot.ops_in_flight() {
            if !slot.cancelled {
                if let Some(fd) = &slot.fd {
                    let target = types::CancelBuilder::fd(types::Fd(fd.as_raw_fd())).all();
                    let entry = opcode::AsyncCancel2::new(target).build().user_data(encode(
                        Op::Cancel,
                        id.as_u32(),
                        0,
                    ));
                    // SAFETY: a cancellation points at no memory.
                    if unsafe { push(&mut self.ring, &entry) } {
                        slot.cancelled = true;
                    } else {
                        self.conns.mark_dirty(id);
                    }
                }
            }
            return;
        }
        if slot.zc_pending > 0 && !slot.abortive {
            // Sent data still waits for the peer's acknowledgement; keep the
            // socket (already shut down) so that `drop` can still reset it.
            return;
        }
        if let Some(fd) = slot.fd.take() {
            if slot.abortive {
                // Best effort: without it the close is merely orderly. The
                // reset also frees at once the zero-copy pages the socket
                // still holds, so their notifications come.
                let _ = sys::set_linger_zero(fd.as_raw_fd());
            }
            drop(fd);
        }
        if slot.zc_pending == 0 {
            self.conns.retire(id);
        }
    }

    /// Arms (or keeps armed) the futex wait on `word`.
    fn arm_futex(&mut self, word: &AtomicU32, expected: u32) {
        if !self.futex_supported {
            return;
        }
        let addr = word.as_ptr() as usize;
        if self.futex.is_some_and(|(a, _)| a == addr) {
            // Still armed on this word; any wake since would have completed it.
            return;
        }
        if let Some((_, seq)) = self.futex.take() {
            let cancel = opcode::AsyncCancel::new(encode(Op::Futex, 0, seq))
                .build()
                .user_data(encode(Op::Cancel, 0, 0));
            // SAFETY: a cancellation points at no memory.
            unsafe { push(&mut self.ring, &cancel) };
        }
        self.futex_seq = (self.futex_seq + 1) & 0x00ff_ffff;
        let seq = self.futex_seq;
        let wait = opcode::FutexWait::new(
            word.as_ptr(),
            u64::from(expected),
            sys::FUTEX_MATCH_ANY,
            sys::FUTEX2_SHARED_U32,
        )
        .build()
        .user_data(encode(Op::Futex, 0, seq));
        // SAFETY: the kernel reads the word only while arming the wait,
        // which happens in the submit that follows within this `park` call,
        // while `word` is borrowed. After that it keeps the address only as
        // a key to match wakes against and never dereferences it.
        if unsafe { push(&mut self.ring, &wait) } {
            self.futex = Some((addr, seq));
        }
    }
}

impl<F: Framing> Drop for Uring<F> {
    /// Closes every socket, cancels every operation and waits (at most two
    /// seconds) for the kernel to finish with our memory. Connections whose
    /// zero-copy data is still unacknowledged after a quarter second are
    /// reset. Memory the kernel might still touch after the wait is leaked
    /// rather than freed.
    fn drop(&mut self) {
        for index in 0..self.conns.capacity() {
            if let Some(id) = self.conns.id_at(index) {
                self.teardown(id);
                self.close_step(id);
            }
        }
        if let Some((_, seq)) = self.futex {
            let cancel = opcode::AsyncCancel::new(encode(Op::Futex, 0, seq))
                .build()
                .user_data(encode(Op::Cancel, 0, 0));
            // SAFETY: a cancellation points at no memory.
            unsafe { push(&mut self.ring, &cancel) };
        }
        let start = Instant::now();
        let mut reset = false;
        while self.conns.any_live() || self.futex.is_some() {
            let waited = start.elapsed();
            if waited >= DROP_WAIT {
                break;
            }
            if !reset && waited >= DROP_GRACE {
                // Peers that do not acknowledge keep zero-copy pages
                // referenced: reset them to get the memory back.
                reset = true;
                for slot in self.conns.slots_mut() {
                    slot.abortive = true;
                }
            }
            let ts = types::Timespec::from(Duration::from_millis(10));
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            self.poll_with(|_, _| {});
            let ids: Vec<ConnId> = self.conns.live().collect();
            for id in ids {
                self.closing_progress(id);
            }
        }
        if !self.conns.any_live() && self.futex.is_none() {
            let _ = self.bufs.unregister(&self.ring.submitter());
            if let Some(d) = &self.dgram_bufs {
                let _ = d.unregister(&self.ring.submitter());
            }
            // SAFETY: `bufs` is not used again; nothing in flight refers to it.
            unsafe { ManuallyDrop::drop(&mut self.bufs) };
        } else {
            // The kernel may still write into receive buffers and read
            // staging buffers: never hand that memory back to the allocator
            // (`bufs` simply stays in its `ManuallyDrop`).
            tracing::warn!("io_uring operations still in flight at drop; leaking their buffers");

            if let Some(d) = self.dgram_bufs.take() {
                d.leak();
            }
            for slot in self.conns.slots_mut() {
                std::mem::forget(slot.tx.take_buffers());
                if let Some(msgs) = slot.msgs.take() {
                    Box::leak(msgs);
                }
            }
        }
    }
}

/// Whether the peer of `stream` is on this host (a loopback address, or
/// one of our own: Linux routes both through the loopback device).
fn is_local(stream: &TcpStream) -> bool {
    match (stream.local_addr(), stream.peer_addr()) {
        (Ok(me), Ok(peer)) => {
            let (me, peer) = (me.ip().to_canonical(), peer.ip().to_canonical());
            peer.is_loopback() || peer == me
        }
        _ => false,
    }
}

/// Builds the ring with the cheapest completion handling the kernel
/// supports: completions run only when this thread enters the kernel
/// (single issuer, deferred task work), falling back to cooperative task
/// work, then to the default.
fn build_ring(entries: u32) -> io::Result<IoUring> {
    let cq = entries.saturating_mul(8);
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_taskrun_flag()
        .setup_submit_all()
        .setup_clamp()
        .setup_cqsize(cq)
        .build(entries)
        .or_else(|_| {
            IoUring::builder()
                .setup_coop_taskrun()
                .setup_taskrun_flag()
                .setup_clamp()
                .setup_cqsize(cq)
                .build(entries)
        })
        .or_else(|_| {
            IoUring::builder()
                .setup_clamp()
                .setup_cqsize(cq)
                .build(entries)
        })
}

/// Pushes `entry`, handing the full SQ to the kernel first if needed;
/// `false` if there is still no room.
///
/// # Safety
///
/// Every pointer in `entry` must stay valid until its last completion.
unsafe fn push(ring: &mut IoUring, entry: &squeue::Entry) -> bool {
    // SAFETY: forwarded from the caller.
    if unsafe { ring.submission().push(entry) }.is_ok() {
        return true;
    }
    if ring.submit().is_err() {
        return false;
    }
    // SAFETY: as above.
    unsafe { ring.submission().push(entry) }.is_ok()
}

/// Submits without waiting; a busy kernel is not an error, the entries
/// stay queued for the next try.
fn submit(ring: &IoUring) -> io::Result<()> {
    match ring.submit() {
        Ok(_) => Ok(()),
        Err(e) if transient(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

fn transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY | libc::ETIME)
    )
}

/// Receive errors after which the receive is simply armed again.
fn recv_retryable(errno: i32, kind: Kind) -> bool {
    match errno {
        libc::ENOBUFS | libc::ECANCELED | libc::EINTR | libc::EAGAIN => true,
        // ICMP errors reported on a UDP socket concern one earlier datagram.
        libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EMSGSIZE => {
            kind == Kind::Datagram
        }
        _ => false,
    }
}

fn table_full() -> io::Error {
    io::Error::new(io::ErrorKind::OutOfMemory, "connection table is full")
}
