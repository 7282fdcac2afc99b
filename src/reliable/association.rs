//! [`Reliable`]: one association, the sender and receiver halves joined by
//! the acknowledgements that ride on every datagram.

use super::config::ReliableConfig;
use super::error::{DatagramError, Error};
use super::header::{self, Body, Header, HEADER_LEN};
use super::receiver::Receiver;
use super::sender::{Sender, Timeout};
use super::stats::Stats;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    PeerLost,
    Broken,
}

/// One reliable, ordered association with one peer, as a sans-IO state
/// machine: it never touches a socket or reads a clock. Times are `u64`
/// nanoseconds on any monotonic clock the caller likes (the same one for
/// every call).
///
/// The caller's loop:
/// - [`send`](Self::send) queues messages;
/// - [`poll_transmit`](Self::poll_transmit) until `None` after every other
///   call, putting each datagram on the wire;
/// - [`on_datagram`](Self::on_datagram) for each datagram that arrives;
/// - [`poll_message`](Self::poll_message) until `None` for what arrived;
/// - [`next_timeout`](Self::next_timeout): call `poll_transmit` again at
///   that time even if nothing else happens. While more data is ready than
///   one round of `poll_transmit` hands out
///   ([`burst`](ReliableConfig::burst)), that time is now: the next pass of
///   the loop takes the next datagram.
///
/// ```
/// use comm::reliable::{Reliable, ReliableConfig};
///
/// let mut a = Reliable::new(ReliableConfig::default())?;
/// let mut b = Reliable::new(ReliableConfig::default())?;
/// a.send(&vec![7u8; 5000])?; // four datagrams
/// let mut wire = [0u8; 1472];
/// // One per round by default: a loop pass each.
/// while a.next_timeout().is_some_and(|t| t <= 0) {
///     while let Some(n) = a.poll_transmit(0, &mut wire) {
///         b.on_datagram(&wire[..n], 1_000)?;
///     }
/// }
/// assert_eq!(b.poll_message(|m| m.len()), Some(5000));
/// // b owes a an ack: it goes out at once here (every second datagram).
/// let n = b.poll_transmit(1_000, &mut wire).unwrap();
/// a.on_datagram(&wire[..n], 2_000)?;
/// assert!(a.all_acked());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Reliable {
    tx: Sender,
    rx: Receiver,
    stats: Stats,
    state: State,
    mtu: usize,
    max_payload: usize,
    /// Latest time seen, for calls that take none.
    now: u64,
    /// Data datagrams one round of `poll_transmit` hands out at most.
    burst: u32,
    /// Data datagrams handed out in the current round.
    round: u32,
}

impl Reliable {
    /// A new association; allocates the receive window (`window × (mtu −
    /// HEADER_LEN)` bytes) and the first send buffer.
    ///
    /// ```
    /// use comm::reliable::{Error, Reliable, ReliableConfig};
    /// assert!(Reliable::new(ReliableConfig::default()).is_ok());
    /// let bad = ReliableConfig { window: 3, ..Default::default() };
    /// assert!(matches!(Reliable::new(bad), Err(Error::Config(_))));
    /// ```
    pub fn new(cfg: ReliableConfig) -> Result<Self, Error> {
        cfg.validate()?;
        Ok(Reliable {
            tx: Sender::new(&cfg),
            rx: Receiver::new(&cfg),
            stats: Stats::default(),
            state: State::Open,
            mtu: cfg.mtu,
            max_payload: cfg.max_payload(),
            now: 0,
            burst: cfg.burst,
            round: 0,
        })
    }

    /// Queues a message of up to `max_message` bytes (empty ones too),
    /// copying it into the send buffer. On [`Error::WindowFull`] nothing was
    /// queued: keep the message and retry once acks have come in.
    ///
    /// ```
    /// use comm::reliable::{Error, Reliable, ReliableConfig};
    /// let cfg = ReliableConfig { max_message: 4, send_buffer: 6, ..Default::default() };
    /// let mut r = Reliable::new(cfg)?;
    /// r.send(b"abcd")?;
    /// assert_eq!(r.send(b"efgh"), Err(Error::WindowFull));
    /// r.send(b"ef")?;
    /// # Ok::<(), Error>(())
    /// ```
    pub fn send(&mut self, msg: &[u8]) -> Result<(), Error> {
        if self.state != State::Open {
            return Err(Error::Dead);
        }
        self.tx.queue(msg)?;
        self.stats.messages_sent += 1;
        Ok(())
    }

    /// Writes the next datagram to put on the wire into `out` and returns
    /// its length: a retransmission, new data, a window probe or an ack, in
    /// that order. `None` when nothing is due (or the association is dead),
    /// or when this round of calls has handed out
    /// [`burst`](ReliableConfig::burst) data datagrams: a `None` ends the
    /// round, and [`next_timeout`](Self::next_timeout) says when to start
    /// the next (at once if data is waiting). `out` must hold `mtu` bytes;
    /// a shorter one gets at most an ack.
    ///
    /// ```
    /// use comm::reliable::{Reliable, ReliableConfig, HEADER_LEN};
    /// let mut r = Reliable::new(ReliableConfig::default())?;
    /// let mut wire = [0u8; 1472];
    /// assert_eq!(r.poll_transmit(0, &mut wire), None);
    /// r.send(b"abc")?;
    /// assert_eq!(r.poll_transmit(0, &mut wire), Some(HEADER_LEN + 3));
    /// assert_eq!(r.poll_transmit(0, &mut wire), None);
    /// # Ok::<(), comm::reliable::Error>(())
    /// ```
    pub fn poll_transmit(&mut self, now: u64, out: &mut [u8]) -> Option<usize> {
        self.now = self.now.max(now);
        if self.state != State::Open || out.len() < HEADER_LEN {
            self.round = 0;
            return None;
        }
        if self.tx.deadline().is_some_and(|d| d <= now)
            && self.tx.on_timeout(now, &mut self.stats) == Timeout::PeerLost
        {
            tracing::debug!(
                retransmits = self.stats.retransmits,
                "reliable: peer lost after max_retries timeouts"
            );
            self.state = State::PeerLost;
            return None;
        }
        let ack = self.rx.ack_info();
        let len = out.len().min(self.mtu);
        let out = &mut out[..len];
        let data = if self.round < self.burst {
            self.tx.transmit(now, ack, out, &mut self.stats)
        } else {
            None
        };
        let n = if let Some(n) = data {
            self.round += 1;
            n
        } else if self.tx.take_probe() {
            self.stats.probes_sent += 1;
            Header::ack_only(true, ack).write(out);
            HEADER_LEN
        } else if self.rx.ack_due(now) {
            self.stats.acks_sent += 1;
            Header::ack_only(false, ack).write(out);
            HEADER_LEN
        } else {
            // The round is over; if the burst cut it short, `next_timeout`
            // is already due and the next round takes the next burst.
            self.round = 0;
            self.tx.rearm(now);
            return None;
        };
        self.rx.ack_sent();
        self.stats.datagrams_sent += 1;
        Some(n)
    }

    /// Takes in one received datagram. An error refuses the datagram and,
    /// unless [`DatagramError::is_fatal`], changes nothing: garbage is
    /// refused, never panics and never makes the association allocate.
    /// Datagrams reaching a dead association are ignored.
    ///
    /// ```
    /// use comm::reliable::{DatagramError, Reliable, ReliableConfig};
    /// let mut r = Reliable::new(ReliableConfig::default())?;
    /// assert_eq!(r.on_datagram(&[0xff; 30], 0), Err(DatagramError::Version(0xff)));
    /// assert_eq!(r.stats().rejected, 1);
    /// # Ok::<(), comm::reliable::Error>(())
    /// ```
    pub fn on_datagram(&mut self, bytes: &[u8], now: u64) -> Result<(), DatagramError> {
        self.now = self.now.max(now);
        if self.state != State::Open {
            return Ok(());
        }
        let result = header::decode(bytes, self.max_payload).and_then(|d| {
            self.tx.on_ack(d.ack, now, &mut self.stats)?;
            Ok(d.body)
        });
        let body = match result {
            Ok(body) => body,
            Err(e) => {
                self.stats.rejected += 1;
                return Err(e);
            }
        };
        self.stats.datagrams_received += 1;
        match body {
            Body::Ack { probe: true } => self.rx.ack_now(now),
            Body::Ack { probe: false } => {}
            Body::Data {
                seq,
                flags,
                payload,
            } => {
                let r = self.rx.on_data(seq, flags, payload, now, &mut self.stats);
                if let Err(e) = self.check(r) {
                    self.stats.rejected += 1;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Hands the next whole message, in order, to `f` and returns what `f`
    /// returns; `None` when the next message has not fully arrived. Each
    /// message is handed out exactly once (should `f` panic, the same
    /// message comes again on the next call). The slice is valid only
    /// inside `f`: copy out what must outlive it.
    ///
    /// ```
    /// use comm::reliable::{Reliable, ReliableConfig};
    /// // Both in one round of `poll_transmit`.
    /// let cfg = ReliableConfig { burst: 2, ..Default::default() };
    /// let mut a = Reliable::new(cfg)?;
    /// let mut b = Reliable::new(cfg)?;
    /// a.send(b"one")?;
    /// a.send(b"two")?;
    /// let mut wire = [0u8; 1472];
    /// while let Some(n) = a.poll_transmit(0, &mut wire) {
    ///     b.on_datagram(&wire[..n], 0)?;
    /// }
    /// let mut got = Vec::new();
    /// while let Some(()) = b.poll_message(|m| got.push(m.to_vec())) {}
    /// assert_eq!(got, [b"one".to_vec(), b"two".to_vec()]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn poll_message<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let (r, pumped) = self.rx.take(self.now, f);
        if r.is_some() {
            self.stats.messages_received += 1;
        }
        // A fatal error here also made the association dead; there is no
        // datagram to blame, so `is_dead` is how the caller learns of it.
        let _ = self.check(pumped);
        r
    }

    /// When `poll_transmit` must be called again if nothing else happens
    /// first: a retransmission timer or a delayed ack, or now when data is
    /// ready to go (the last round stopped at [`burst`](ReliableConfig::burst),
    /// or the window has reopened). A time at or before now means at once.
    /// `None` when nothing is pending or the association is dead.
    ///
    /// ```
    /// use comm::reliable::{Reliable, ReliableConfig};
    /// let mut r = Reliable::new(ReliableConfig::default())?;
    /// assert_eq!(r.next_timeout(), None);
    /// r.send(b"x")?;
    /// let mut wire = [0u8; 1472];
    /// r.poll_transmit(1_000, &mut wire);
    /// // Retransmission timer: the initial 50 ms timeout.
    /// assert_eq!(r.next_timeout(), Some(1_000 + 50_000_000));
    /// # Ok::<(), comm::reliable::Error>(())
    /// ```
    pub fn next_timeout(&self) -> Option<u64> {
        if self.state != State::Open {
            return None;
        }
        if self.tx.has_work() {
            return Some(self.now);
        }
        match (self.tx.deadline(), self.rx.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the association is over: the peer stopped answering for
    /// `max_retries` timeouts in a row (`poll_transmit` declares it), or its
    /// datagrams broke the message stream (a fatal [`DatagramError`]).
    /// Messages that arrived whole before can still be taken.
    ///
    /// ```
    /// use comm::reliable::{Reliable, ReliableConfig};
    /// let cfg = ReliableConfig { max_retries: 0, ..Default::default() };
    /// let mut r = Reliable::new(cfg)?;
    /// r.send(b"into the void")?;
    /// let mut wire = [0u8; 1472];
    /// r.poll_transmit(0, &mut wire);
    /// let t = r.next_timeout().unwrap();
    /// assert_eq!(r.poll_transmit(t, &mut wire), None);
    /// assert!(r.is_dead());
    /// # Ok::<(), comm::reliable::Error>(())
    /// ```
    pub fn is_dead(&self) -> bool {
        self.state != State::Open
    }

    /// Whether every message sent so far has been acknowledged: nothing is
    /// queued or in flight (for an orderly close).
    ///
    /// ```
    /// let r = comm::reliable::Reliable::new(Default::default())?;
    /// assert!(r.all_acked());
    /// # Ok::<(), comm::reliable::Error>(())
    /// ```
    pub fn all_acked(&self) -> bool {
        self.tx.all_acked()
    }

    /// The counters, with the current round-trip estimate.
    ///
    /// ```
    /// let r = comm::reliable::Reliable::new(Default::default())?;
    /// assert_eq!(r.stats().retransmits, 0);
    /// # Ok::<(), comm::reliable::Error>(())
    /// ```
    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        self.tx.fill_stats(&mut s);
        s
    }

    /// Ends the association on a fatal receive error.
    fn check(&mut self, r: Result<(), DatagramError>) -> Result<(), DatagramError> {
        if let Err(e) = r {
            tracing::debug!(error = %e, "reliable: association broken by its peer");
            self.state = State::Broken;
        }
        r
    }
}

impl std::fmt::Debug for Reliable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reliable")
            .field("state", &self.state)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
