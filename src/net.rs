//! A shard's network side: its io_uring with the sockets of its network
//! links, frames staged toward them, and comm frames as TCP records.
//!
//! Sends are staged here first and handed to the ring after each pass: a
//! handler that replies runs while the ring is busy handing out received
//! records, and staging also turns many small frames to one peer into one
//! send.

use std::collections::VecDeque;

use comm_uring::{ConnId, Framing, FramingError, SendError, Uring, UringConfig};

use crate::lanes::RxLanes;
use crate::reliable::{Reliable, ReliableConfig};
use crate::{Error, FrameHeader, UdpMode, HEADER_LEN};

/// Each comm frame is one TCP record: header, then its inline payload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameFraming {
    /// Largest payload accepted.
    pub max: u32,
}

impl Framing for FrameFraming {
    fn header_len(&self) -> usize {
        HEADER_LEN
    }

    fn record_len(&self, header: &[u8]) -> Result<usize, FramingError> {
        FrameHeader::decode(header, self.max)
            .map(|h| HEADER_LEN + h.inline_len())
            .map_err(|_| FramingError::BadHeader("not a comm frame"))
    }
}

/// How much more than the usual backlog a handler's sends may queue.
const SPILL_FACTOR: usize = 16;

/// Which link, peer shard and lane a socket serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Route {
    pub session: u16,
    pub peer_shard: u16,
    /// Which of the shard pair's TCP connections (0 for all other kinds).
    pub lane: u8,
}

/// Drops the already-sent front of a staging buffer once it is most of the
/// buffer, shifting the ranges of what is still queued: a queue that never
/// quite empties must not grow without bound.
pub(crate) fn compact<I>(
    items: &mut VecDeque<I>,
    bytes: &mut Vec<u8>,
    mut range: impl FnMut(&mut I) -> Option<&mut std::ops::Range<usize>>,
) {
    if items.is_empty() {
        bytes.clear();
        return;
    }
    let first = items
        .iter_mut()
        .find_map(|i| range(i).map(|r| r.start))
        .unwrap_or(bytes.len());
    if first < bytes.len() / 2 {
        return;
    }
    bytes.drain(..first);
    for item in items.iter_mut() {
        if let Some(r) = range(item) {
            *r = r.start - first..r.end - first;
        }
    }
}

/// Something staged toward a connection, in order.
enum Staged {
    Bytes {
        conn: ConnId,
        range: std::ops::Range<usize>,
    },
    /// A pool buffer sent in place; `token` names it in `SendDone`. The
    /// first `skip` bytes of `head` already went out (written at once).
    ZeroCopy {
        conn: ConnId,
        head: [u8; HEADER_LEN],
        skip: usize,
        ptr: *const u8,
        len: usize,
        token: u64,
    },
}

/// How a UDP link's socket is set up: its mode and, for reliable ones, the
/// first sequence numbers both sides agreed on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UdpSetup {
    pub mode: UdpMode,
    pub initial_seq: u32,
    pub peer_initial_seq: u32,
}

/// The protocol state of one UDP socket.
enum UdpState {
    Datagram,
    Reliable(Box<Reliable>),
}

/// A socket's second descriptor, for writes at once.
struct Direct {
    conn: ConnId,
    fd: std::os::fd::OwnedFd,
    /// The pass in which a small frame last went onto this stream at once,
    /// with no large one after it (0: none). The small frames that follow
    /// it in that pass are staged, so that a burst of them leaves as one
    /// send at the end of the pass (a system call each cut a stream of
    /// 8-byte messages from 15 M/s to 0.36 M/s); the first of a pass, the
    /// answer a round trip waits for, does not wait.
    pass: u64,
}

impl Direct {
    /// Writes what the socket takes of `parts` now; 0 when it is full or
    /// failed (the ring meets the error on its next send or receive).
    fn write(&self, parts: &[&[u8]]) -> usize {
        use std::os::fd::AsFd;
        comm_uring::send_now(self.fd.as_fd(), parts).unwrap_or(0)
    }
}

/// Bytes toward `conn` in `backlog` (by connection slot).
fn queued_in(backlog: &[(Option<ConnId>, usize)], conn: ConnId) -> usize {
    match backlog.get(conn.slot()) {
        Some((Some(id), queued)) if *id == conn => *queued,
        _ => 0,
    }
}

/// Frames at least this large are written to an idle stream at once even
/// after another frame of the same pass was: one call per frame is cheap
/// next to their copy.
const DIRECT_ALWAYS: usize = 16 * 1024;

/// `NetOut::pass_now` in a pass that has not read the clock yet.
const NOT_READ: u64 = u64::MAX;
/// `NetOut::pass_now` outside a pass: every use reads the clock.
const NO_PASS: u64 = u64::MAX - 1;

/// Frames waiting to be handed to the ring.
pub(crate) struct NetOut {
    staging: Vec<u8>,
    items: VecDeque<Staged>,
    /// Per connection (by slot): bytes staged here plus those the ring still
    /// held at the last flush, so that a slow peer pushes back.
    backlog: Vec<(Option<ConnId>, usize)>,
    limit: usize,
    /// By connection slot, for UDP sockets.
    udp: Vec<Option<(ConnId, UdpState)>>,
    /// A frame assembled for a reliable association, one datagram going out.
    scratch: Vec<u8>,
    dgram: Vec<u8>,
    /// Nanoseconds for the reliable associations' timers count from here.
    clock: std::time::Instant,
    /// This pass's reading of the clock: [`NOT_READ`] until first needed,
    /// [`NO_PASS`] outside a pass of the shard's loop. A pass of the shard lasts microseconds, far below the timers' scale
    /// (an ack delay of a millisecond, a retransmission timeout of five),
    /// and reading the clock costs some 25 ns under KVM: one read per pass
    /// instead of one per use (receive, transmit, timer check) took 30 to
    /// 45 ns off the 64-byte one-way p50 of reliable UDP (two sets of 6 and
    /// 8 alternating runs).
    pass_now: std::cell::Cell<u64>,
    /// Datagrams wait in the ring's queue (it sends one at a time per
    /// socket and moves on only when flushed).
    udp_queued: bool,
    /// Connections whose queue in the ring was full during a flush (kept
    /// between flushes for its memory).
    blocked: Vec<ConnId>,
    /// By connection slot, a second descriptor of each socket, to write
    /// frames at once while nothing waits for that socket (here or in the
    /// ring): the kernel copies them from the caller's memory during the
    /// call, with no staging copies and no wait for the end of the pass.
    /// Dropped when the ring closes the socket (the ring's `shutdown` ends
    /// a TCP stream for both descriptors).
    direct: Vec<Option<Direct>>,
    /// Passes of the shard begun, to write small frames to a stream at once
    /// only once per pass (see [`Direct::pass`]).
    pass: u64,
}

impl NetOut {
    pub(crate) fn new(limit: usize) -> Self {
        NetOut {
            staging: Vec::new(),
            items: VecDeque::new(),
            backlog: Vec::new(),
            limit,
            udp: Vec::new(),
            scratch: Vec::new(),
            dgram: Vec::new(),
            clock: std::time::Instant::now(),
            pass_now: std::cell::Cell::new(NO_PASS),
            udp_queued: false,
            blocked: Vec::new(),
            direct: Vec::new(),
            // 0 marks "no small frame yet" in `Direct::pass`.
            pass: 1,
        }
    }

    /// Lets frames toward `conn` be written at once through `fd`, a second
    /// descriptor of its socket.
    pub(crate) fn add_direct(&mut self, conn: ConnId, fd: std::os::fd::OwnedFd) {
        let i = conn.slot();
        if self.direct.len() <= i {
            self.direct.resize_with(i + 1, || None);
        }
        self.direct[i] = Some(Direct { conn, fd, pass: 0 });
    }

    /// Forgets what belongs to `conn`, which the ring closed or is closing:
    /// its UDP protocol state or its second descriptor. Returns the final
    /// figures of its reliable association, if it ran one.
    pub(crate) fn forget(&mut self, conn: ConnId) -> Option<crate::reliable::Stats> {
        let last = self.reliable_stats_of(conn);
        self.remove_udp(conn);
        if let Some(slot) = self.direct.get_mut(conn.slot()) {
            if slot.as_ref().is_some_and(|d| d.conn == conn) {
                *slot = None;
            }
        }
        last
    }

    /// The figures of `conn`'s reliable association, if it runs one.
    fn reliable_stats_of(&self, conn: ConnId) -> Option<crate::reliable::Stats> {
        match self.udp.get(conn.slot()) {
            Some(Some((c, UdpState::Reliable(r)))) if *c == conn => Some(r.stats()),
            _ => None,
        }
    }

    /// Calls `f` with the figures of every reliable association.
    pub(crate) fn each_reliable_stats(&self, mut f: impl FnMut(ConnId, &crate::reliable::Stats)) {
        for (conn, state) in self.udp.iter().flatten() {
            if let UdpState::Reliable(r) = state {
                f(*conn, &r.stats());
            }
        }
    }

    /// Bytes toward `conn` staged here or held by the ring at the last count.
    fn queued(&self, conn: ConnId) -> usize {
        queued_in(&self.backlog, conn)
    }

    /// Whether a frame toward `conn` would be written at once: a socket
    /// with nothing waiting for it.
    pub(crate) fn writes_now(&self, conn: ConnId) -> bool {
        self.queued(conn) == 0
            && matches!(self.direct.get(conn.slot()), Some(Some(d)) if d.conn == conn)
    }

    /// Writes what the socket of `conn` takes of `parts` now, if nothing
    /// waits for it; returns the bytes written. A small frame to a stream
    /// (`batch`) goes at once only if none did in this pass. Errors are left
    /// to the ring, which meets them on its next send or receive and
    /// reports the close.
    fn write_now(&mut self, conn: ConnId, parts: &[&[u8]], batch: bool) -> usize {
        if !self.writes_now(conn) {
            return 0;
        }
        let pass = self.pass;
        let Some(Some(d)) = self.direct.get_mut(conn.slot()) else {
            return 0;
        };
        if batch {
            if d.pass == pass {
                return 0;
            }
            d.pass = pass;
        } else {
            // A large frame in between: the next small one goes at once
            // too (a lane announcement before each large message).
            d.pass = 0;
        }
        d.write(parts)
    }

    /// Nanoseconds since `clock`: within a pass, as read once in it.
    fn now(&self) -> u64 {
        let cached = self.pass_now.get();
        if cached < NO_PASS {
            return cached;
        }
        let now = self.clock.elapsed().as_nanos() as u64;
        if cached == NOT_READ {
            self.pass_now.set(now);
        }
        now
    }

    /// A pass of the shard's loop begins: the first use of the clock in it
    /// reads it, the others reuse that reading.
    pub(crate) fn begin_pass(&mut self) {
        self.pass_now.set(NOT_READ);
        self.pass += 1;
    }

    /// The pass ends: from now on every use reads the clock again.
    pub(crate) fn end_pass(&self) {
        self.pass_now.set(NO_PASS);
    }

    /// Starts the protocol of a UDP socket.
    pub(crate) fn add_udp(
        &mut self,
        conn: ConnId,
        setup: UdpSetup,
        max_message: usize,
    ) -> Result<(), Error> {
        let state = match setup.mode {
            UdpMode::Datagram => UdpState::Datagram,
            UdpMode::Reliable => {
                let cfg = ReliableConfig {
                    initial_seq: setup.initial_seq,
                    peer_initial_seq: setup.peer_initial_seq,
                    max_message: HEADER_LEN + max_message,
                    send_buffer: (HEADER_LEN + max_message)
                        .max(ReliableConfig::default().send_buffer),
                    ..ReliableConfig::default()
                };
                let r = Reliable::new(cfg)
                    .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
                self.dgram.resize(cfg.mtu, 0);
                UdpState::Reliable(Box::new(r))
            }
        };
        let i = conn.slot();
        if self.udp.len() <= i {
            self.udp.resize_with(i + 1, || None);
        }
        self.udp[i] = Some((conn, state));
        Ok(())
    }

    /// Forgets a UDP socket's protocol state.
    pub(crate) fn remove_udp(&mut self, conn: ConnId) {
        if let Some(slot) = self.udp.get_mut(conn.slot()) {
            if slot.as_ref().is_some_and(|(c, _)| *c == conn) {
                *slot = None;
            }
        }
    }

    /// Whether `conn` is a TCP stream (not a UDP socket).
    pub(crate) fn is_stream(&self, conn: ConnId) -> bool {
        !matches!(self.udp.get(conn.slot()), Some(Some((c, _))) if *c == conn)
    }

    /// Whether `conn` runs the reliable protocol.
    pub(crate) fn is_reliable(&self, conn: ConnId) -> bool {
        matches!(
            self.udp.get(conn.slot()),
            Some(Some((c, UdpState::Reliable(_)))) if *c == conn
        )
    }

    /// Feeds a datagram to `conn`'s reliable association. `Err`: the
    /// association is broken beyond repair (the link must go).
    pub(crate) fn on_datagram(&mut self, conn: ConnId, bytes: &[u8]) -> Result<(), ()> {
        let now = self.now();
        if let Some(Some((c, UdpState::Reliable(r)))) = self.udp.get_mut(conn.slot()) {
            if *c != conn {
                return Ok(());
            }
            if let Err(e) = r.on_datagram(bytes, now) {
                if e.is_fatal() {
                    return Err(());
                }
            }
        }
        Ok(())
    }

    /// Copies the next whole message of `conn`'s reliable association into
    /// `into`; false when there is none.
    pub(crate) fn next_message(&mut self, conn: ConnId, into: &mut Vec<u8>) -> bool {
        let Some(Some((c, UdpState::Reliable(r)))) = self.udp.get_mut(conn.slot()) else {
            return false;
        };
        if *c != conn {
            return false;
        }
        r.poll_message(|m| {
            into.clear();
            into.extend_from_slice(m);
        })
        .is_some()
    }

    /// Slots of `reliable_at`.
    pub(crate) fn udp_slots(&self) -> usize {
        self.udp.len()
    }

    /// The reliable UDP socket in slot `i`, if any.
    pub(crate) fn reliable_at(&self, i: usize) -> Option<ConnId> {
        match self.udp.get(i) {
            Some(Some((c, UdpState::Reliable(_)))) => Some(*c),
            _ => None,
        }
    }

    /// How long until a reliable association needs the shard again (an ack
    /// or retransmission due), if any does.
    pub(crate) fn next_timer(&self) -> Option<std::time::Duration> {
        // Datagram mode has no timers: spare the clock read on every pass.
        if !self
            .udp
            .iter()
            .flatten()
            .any(|(_, s)| matches!(s, UdpState::Reliable(_)))
        {
            return None;
        }
        let now = self.now();
        self.udp
            .iter()
            .flatten()
            .filter_map(|(_, s)| match s {
                UdpState::Reliable(r) => r.next_timeout(),
                UdpState::Datagram => None,
            })
            .min()
            .map(|t| std::time::Duration::from_nanos(t.saturating_sub(now)))
    }

    /// Whether a reliable association's timer has expired.
    pub(crate) fn timer_due(&self) -> bool {
        !self.udp.is_empty() && (self.udp_queued || self.next_timer().is_some_and(|t| t.is_zero()))
    }

    /// Whether every reliable association has its data acknowledged.
    pub(crate) fn all_acked(&self) -> bool {
        self.udp.iter().flatten().all(|(_, s)| match s {
            UdpState::Reliable(r) => r.all_acked() || r.is_dead(),
            UdpState::Datagram => true,
        })
    }

    /// Whether `conn` takes `len` more bytes now: `spill` (handlers, which
    /// cannot wait) allows up to `SPILL_FACTOR` times the usual backlog, and
    /// one frame always fits an empty queue, however large.
    pub(crate) fn has_room(&self, conn: ConnId, len: usize, spill: bool) -> bool {
        let limit = if spill {
            self.limit * SPILL_FACTOR
        } else {
            self.limit
        };
        // A new connection in a reused slot starts with nothing queued.
        let queued = self.queued(conn);
        queued == 0 || queued + len <= limit
    }

    /// Counts `len` more bytes toward `conn`, if it has room for them.
    fn charge(&mut self, conn: ConnId, len: usize, spill: bool) -> Result<(), Error> {
        if !self.has_room(conn, len, spill) {
            return Err(Error::Full);
        }
        let i = conn.slot();
        if self.backlog.len() <= i {
            self.backlog.resize(i + 1, (None, 0));
        }
        let (id, queued) = &mut self.backlog[i];
        if *id != Some(conn) {
            *queued = 0;
        }
        *id = Some(conn);
        *queued += len;
        Ok(())
    }

    /// Sends one frame (header and inline bytes): at once as far as a
    /// stream with nothing waiting takes it, the rest staged, copied.
    pub(crate) fn frame(
        &mut self,
        conn: ConnId,
        head: &[u8],
        inline: &[u8],
        spill: bool,
    ) -> Result<(), Error> {
        match self.udp.get_mut(conn.slot()) {
            Some(Some((c, UdpState::Reliable(r)))) if *c == conn => {
                self.scratch.clear();
                self.scratch.extend_from_slice(head);
                self.scratch.extend_from_slice(inline);
                r.send(&self.scratch).map_err(|e| match e {
                    crate::reliable::Error::WindowFull => Error::Full,
                    crate::reliable::Error::TooLarge { len, max } => Error::TooLarge { len, max },
                    other => Error::Io(std::io::Error::other(other.to_string())),
                })?;
                self.transmit_now(conn);
                return Ok(());
            }
            Some(Some((c, UdpState::Datagram))) if *c == conn => {
                let len = head.len() + inline.len();
                if len > UdpMode::MAX_DATAGRAM {
                    return Err(Error::TooLarge {
                        len: inline.len(),
                        max: UdpMode::MAX_DATAGRAM - head.len(),
                    });
                }
                if self.write_now(conn, &[head, inline], false) == len {
                    return Ok(());
                }
                return self.stage_datagram(conn, &[head, inline], spill);
            }
            _ => {}
        }
        let batch = head.len() + inline.len() < DIRECT_ALWAYS;
        let written = self.write_now(conn, &[head, inline], batch);
        let (head, inline) = if written < head.len() {
            (&head[written..], inline)
        } else {
            (&[][..], &inline[written - head.len()..])
        };
        if head.is_empty() && inline.is_empty() {
            return Ok(());
        }
        self.charge(conn, head.len() + inline.len(), spill)?;
        let start = self.staging.len();
        self.staging.extend_from_slice(head);
        self.staging.extend_from_slice(inline);
        let end = self.staging.len();
        // Consecutive frames to one connection become one send.
        if let Some(Staged::Bytes { conn: c, range }) = self.items.back_mut() {
            if *c == conn && range.end == start {
                range.end = end;
                return Ok(());
            }
        }
        self.items.push_back(Staged::Bytes {
            conn,
            range: start..end,
        });
        Ok(())
    }

    /// Sends a frame whose payload is read in place from `ptr`: at once as
    /// far as a stream with nothing waiting takes it (`Ok(true)`: all of
    /// it, the memory is free again), the rest staged (`Ok(false)`).
    ///
    /// # Safety
    /// `[ptr, ptr + len)` is valid for the call and, unless all of it was
    /// written, stays valid and unchanged until the ring reports `SendDone`
    /// with `token`.
    pub(crate) unsafe fn zero_copy(
        &mut self,
        conn: ConnId,
        head: &[u8; HEADER_LEN],
        ptr: *const u8,
        len: usize,
        token: u64,
        spill: bool,
    ) -> Result<bool, Error> {
        // SAFETY: valid for the call, per the caller's contract.
        let data = unsafe { std::slice::from_raw_parts(ptr, len) };
        let written = self.write_now(conn, &[head, data], false);
        if written == HEADER_LEN + len {
            return Ok(true);
        }
        let skip = written.min(HEADER_LEN);
        let sent = written - skip;
        self.charge(conn, HEADER_LEN - skip + len - sent, spill)?;
        self.items.push_back(Staged::ZeroCopy {
            conn,
            head: *head,
            skip,
            ptr: ptr.wrapping_add(sent),
            len: len - sent,
            token,
        });
        Ok(false)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Puts on the wire what the reliable associations want sent now (new
    /// data, retransmissions, acks). A datagram the ring cannot take is
    /// simply lost: the protocol sends it again.
    fn transmit_reliable(
        &mut self,
        uring: &mut Uring<FrameFraming>,
        dead: &mut impl FnMut(ConnId),
    ) {
        if self.udp.is_empty() {
            return;
        }
        let now = self.now();
        self.udp_queued = false;
        for (conn, state) in self.udp.iter_mut().flatten() {
            if let UdpState::Reliable(r) = state {
                let staged = queued_in(&self.backlog, *conn);
                let direct = match self.direct.get(conn.slot()) {
                    Some(Some(d)) if d.conn == *conn && staged == 0 => Some(d),
                    _ => None,
                };
                while let Some(n) = r.poll_transmit(now, &mut self.dgram) {
                    let datagram = &self.dgram[..n];
                    // Straight to the socket while nothing waits in the ring.
                    if let Some(d) = direct.filter(|_| uring.queued_bytes(*conn) == 0) {
                        if d.write(&[datagram]) == n {
                            continue;
                        }
                    }
                    if uring.send(*conn, &[datagram]).is_err() {
                        break;
                    }
                }
                if r.is_dead() {
                    dead(*conn);
                }
            }
            self.udp_queued |= uring.queued_bytes(*conn) > 0;
        }
    }

    /// Puts what reliable `conn` has to send on the wire at once, while
    /// nothing waits for its socket; a datagram the socket does not take
    /// is staged for the ring, as the next flush would have sent it.
    fn transmit_now(&mut self, conn: ConnId) {
        if self.udp_queued || !self.writes_now(conn) {
            return;
        }
        let now = self.now();
        let (Some(Some((_, UdpState::Reliable(r)))), Some(Some(d))) =
            (self.udp.get_mut(conn.slot()), self.direct.get(conn.slot()))
        else {
            return;
        };
        let mut refused = None;
        while let Some(n) = r.poll_transmit(now, &mut self.dgram) {
            if d.write(&[&self.dgram[..n]]) != n {
                refused = Some(n);
                break;
            }
        }
        if let Some(n) = refused {
            let dgram = std::mem::take(&mut self.dgram);
            // Cannot fail: nothing was queued for `conn`.
            let _ = self.stage_datagram(conn, &[&dgram[..n]], true);
            self.dgram = dgram;
        }
    }

    /// Stages one datagram, the concatenation of `parts`, counted as backlog
    /// until the ring has sent it, so that nothing overtakes it.
    fn stage_datagram(&mut self, conn: ConnId, parts: &[&[u8]], spill: bool) -> Result<(), Error> {
        let len = parts.iter().map(|p| p.len()).sum();
        self.charge(conn, len, spill)?;
        let start = self.staging.len();
        for part in parts {
            self.staging.extend_from_slice(part);
        }
        // One datagram per item: never merged.
        self.items.push_back(Staged::Bytes {
            conn,
            range: start..self.staging.len(),
        });
        Ok(())
    }

    /// Bytes staged here or still queued in the ring, over all connections.
    pub(crate) fn backlog(&self) -> usize {
        self.backlog.iter().map(|(_, b)| b).sum()
    }

    /// Hands staged frames to the ring in order. A connection whose ring
    /// queue is full keeps the rest of its frames for the next flush; one
    /// that is closed loses them (its link is being dropped). Returns the
    /// tokens of zero-copy buffers that will never be sent, via `dropped`.
    /// The caller then flushes the ring and calls `settle_backlog`.
    pub(crate) fn flush(
        &mut self,
        uring: &mut Uring<FrameFraming>,
        mut dropped: impl FnMut(u64),
        mut dead: impl FnMut(ConnId),
    ) {
        self.transmit_reliable(uring, &mut dead);
        let mut blocked = std::mem::take(&mut self.blocked);
        blocked.clear();

        for _ in 0..self.items.len() {
            let Some(item) = self.items.pop_front() else {
                break;
            };
            let conn = match &item {
                Staged::Bytes { conn, .. } | Staged::ZeroCopy { conn, .. } => *conn,
            };
            // Order per connection: once one of its frames waits, all do.
            // (Rare: a full queue. Other connections still go out.)
            if blocked.contains(&conn) {
                self.items.push_back(item);

                continue;
            }
            let sent = match &item {
                Staged::Bytes { range, .. } => uring.send(conn, &[&self.staging[range.clone()]]),
                Staged::ZeroCopy {
                    head,
                    skip,
                    ptr,
                    len,
                    token,
                    ..
                } => {
                    // SAFETY: per `zero_copy`'s contract the bytes stay valid
                    // until SendDone(token), which the ring reports after it
                    // is done with them (also when the send is dropped).
                    unsafe { uring.send_zc(conn, &head[*skip..], *ptr, *len, *token) }
                }
            };
            match sent {
                Ok(()) => {}
                Err(SendError::Full) => {
                    blocked.push(conn);
                    self.items.push_back(item);
                }
                Err(_) => {
                    if let Staged::ZeroCopy { token, .. } = item {
                        dropped(token);
                    }
                }
            }
        }
        self.blocked = blocked;
        compact(&mut self.items, &mut self.staging, |i| match i {
            Staged::Bytes { range, .. } => Some(range),
            Staged::ZeroCopy { .. } => None,
        });
    }

    /// Recounts each connection's backlog: what the ring still holds plus
    /// what waits here. Called after the ring's own flush, which may put
    /// everything on the wire at once (busy polling sends in place) with no
    /// completion to follow: a stale count would refuse sends for good.
    pub(crate) fn settle_backlog(&mut self, uring: &Uring<FrameFraming>) {
        for (id, queued) in &mut self.backlog {
            if let (Some(conn), true) = (*id, *queued > 0) {
                *queued = uring.queued_bytes(conn);
            }
        }
        for item in &self.items {
            let (conn, len) = match item {
                Staged::Bytes { conn, range } => (conn, range.len()),
                Staged::ZeroCopy {
                    conn, len, skip, ..
                } => (conn, HEADER_LEN - skip + len),
            };
            self.backlog[conn.slot()].1 += len;
        }
    }
}

/// A record (or message) kept back because its endpoint could not take it
/// yet; everything after it from the same socket waits behind it.
pub(crate) struct Deferred {
    pub conn: ConnId,
    pub bytes: Vec<u8>,
}

/// Copies kept of at most this size are reused for later ones.
const SPARE_BYTES: usize = 1 << 20;
/// How many such copies wait for reuse.
const SPARES: usize = 16;

/// The records kept back, oldest first. Their copies are reused, so that a
/// receiver under back-pressure for a while stops allocating.
#[derive(Default)]
pub(crate) struct Kept {
    queue: VecDeque<Deferred>,
    spare: Vec<Vec<u8>>,
    /// Scratch of `Taker::drain_deferred`: streams found blocked.
    pub blocked: Vec<ConnId>,
}

impl Kept {
    /// Keeps a copy of `bytes`, read from `conn`.
    pub(crate) fn keep(&mut self, conn: ConnId, bytes: &[u8]) {
        let mut copy = self.spare.pop().unwrap_or_default();
        copy.extend_from_slice(bytes);
        self.queue.push_back(Deferred { conn, bytes: copy });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether anything read from `conn` waits here.
    pub(crate) fn holds(&self, conn: ConnId) -> bool {
        self.queue.iter().any(|d| d.conn == conn)
    }

    /// The sockets records wait for, oldest first (repeats included).
    pub(crate) fn conns(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.queue.iter().map(|d| d.conn)
    }

    pub(crate) fn get(&self, i: usize) -> Option<&Deferred> {
        self.queue.get(i)
    }

    /// Lets go of the `i`-th record, keeping its storage for a later one.
    pub(crate) fn remove(&mut self, i: usize) {
        if let Some(mut d) = self.queue.remove(i) {
            if d.bytes.capacity() <= SPARE_BYTES && self.spare.len() < SPARES {
                d.bytes.clear();
                self.spare.push(d.bytes);
            }
        }
    }
}

/// Which link each socket serves, by connection slot.
#[derive(Default)]
pub(crate) struct Routes(Vec<Option<(ConnId, Route)>>);

impl Routes {
    pub(crate) fn get(&self, conn: ConnId) -> Option<Route> {
        self.0
            .get(conn.slot())
            .copied()
            .flatten()
            .filter(|(c, _)| *c == conn)
            .map(|(_, r)| r)
    }

    fn set(&mut self, conn: ConnId, route: Route) {
        let i = conn.slot();
        if self.0.len() <= i {
            self.0.resize(i + 1, None);
        }
        self.0[i] = Some((conn, route));
    }

    /// Forgets a socket the ring reported closed.
    pub(crate) fn forget(&mut self, conn: ConnId) -> Option<Route> {
        let slot = self.0.get_mut(conn.slot())?;
        if slot.is_some_and(|(c, _)| c != conn) {
            return None;
        }
        slot.take().map(|(_, r)| r)
    }
}

/// The ring, and which link each of its sockets serves.
pub(crate) struct Net {
    pub uring: Uring<FrameFraming>,
    pub routes: Routes,
    /// Records kept back, oldest first.
    pub deferred: Kept,
    /// Streams not read while they have records kept back.
    pub paused: Vec<ConnId>,
    /// A message pulled out of a reliable UDP association.
    pub rx_scratch: Vec<u8>,
    /// The lane each shard pair is read on.
    pub rx_lanes: RxLanes<ConnId>,
    /// Lanes left during a pass, to pause once the ring is free.
    pub left_lanes: Vec<ConnId>,
}

/// Up to this many TCP streams, a spinning shard reads them with plain
/// receives (one system call each per pass) rather than armed ones.
const BUSY_POLL_STREAMS: usize = 8;

impl Net {
    /// Reads the streams by busy polling while the shard spins, if there
    /// are few enough of them; see `Uring::set_busy_poll`.
    pub(crate) fn spin(&mut self) {
        // Paused streams (lanes not read now among them) cost no reads.
        let read = self.uring.streams().saturating_sub(self.paused.len());
        let few = read <= BUSY_POLL_STREAMS;
        self.uring.set_busy_poll(few);
    }

    pub(crate) fn new(max_message: usize) -> std::io::Result<Net> {
        let cfg = UringConfig {
            max_record: HEADER_LEN + max_message,
            // Same-host TCP (forced, or a test): plain sends are faster.
            zero_copy_to_local_peers: false,
            ..UringConfig::default()
        };
        let max = u32::try_from(max_message).unwrap_or(u32::MAX);
        Ok(Net {
            uring: Uring::new(cfg, FrameFraming { max })?,
            routes: Routes::default(),
            deferred: Kept::default(),
            paused: Vec::new(),
            rx_scratch: Vec::new(),
            rx_lanes: RxLanes::default(),
            left_lanes: Vec::new(),
        })
    }

    pub(crate) fn add(
        &mut self,
        socket: crate::shard::NetSocket,
        route: Route,
    ) -> std::io::Result<ConnId> {
        let conn = match socket {
            crate::shard::NetSocket::Tcp(s) => self.uring.add_stream(s)?,
            crate::shard::NetSocket::Udp(s) => self.uring.add_datagram(s)?,
        };
        self.routes.set(conn, route);
        Ok(conn)
    }

    /// Closes every socket of `session`, telling `closed` about each.
    pub(crate) fn close_session(&mut self, session: u16, mut closed: impl FnMut(ConnId)) {
        self.rx_lanes.forget(session);
        for entry in &mut self.routes.0 {
            if let Some((conn, r)) = *entry {
                if r.session == session {
                    *entry = None;
                    self.uring.close(conn);
                    closed(conn);
                }
            }
        }
    }
}

#[cfg(test)]
mod lossy_relay;

#[cfg(test)]
mod tests {
    use super::*;
    use comm_uring::{LenPrefix, UringConfig};

    /// Records kept under back-pressure reuse the copies of records taken
    /// since (up to `SPARES` of at most `SPARE_BYTES`): no allocation once
    /// warmed up.
    #[test]
    fn kept_records_reuse_their_copies() {
        let mut ring = Uring::new(UringConfig::default(), LenPrefix).unwrap();
        let conn = ring
            .add_datagram(std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .unwrap();
        let mut kept = Kept::default();
        kept.keep(conn, &[1; 100]);
        kept.keep(conn, &[2; 50]);
        assert!(kept.holds(conn));
        let first = kept.get(0).unwrap().bytes.as_ptr();
        kept.remove(0);
        assert_eq!(kept.get(0).unwrap().bytes, [2; 50]);
        kept.keep(conn, &[3; 80]);
        let reused = kept.get(1).unwrap();
        assert_eq!(reused.bytes, [3; 80]);
        assert_eq!(reused.bytes.as_ptr(), first, "the first copy's storage");
        // A copy too large to keep around is freed instead.
        kept.keep(conn, &vec![4; SPARE_BYTES + 1]);
        kept.remove(2);
        kept.keep(conn, &[5; 10]);
        assert!(kept.get(2).unwrap().bytes.capacity() < SPARE_BYTES);
        kept.remove(0);
        kept.remove(0);
        kept.remove(0);
        assert!(kept.is_empty() && !kept.holds(conn));
    }

    /// A socket that reuses a closed one's slot has a larger id; state is
    /// kept by slot, so the tables stay as small as the ring's.
    #[test]
    fn a_reused_slot_keeps_the_udp_table_small() {
        let mut ring = Uring::new(UringConfig::default(), LenPrefix).unwrap();
        let first = ring
            .add_datagram(std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .unwrap();
        ring.close(first);
        // Let the close finish so that the slot is free again.
        for _ in 0..100 {
            ring.flush().unwrap();
            ring.poll(|_| {});
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let second = ring
            .add_datagram(std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .unwrap();
        assert_eq!(first.slot(), second.slot());
        assert_ne!(first, second);
        let mut out = NetOut::new(1 << 20);
        let setup = UdpSetup {
            mode: UdpMode::Reliable,
            initial_seq: 1,
            peer_initial_seq: 2,
        };
        out.add_udp(second, setup, 1 << 16).unwrap();
        assert!(out.udp_slots() <= second.slot() + 1);
        assert!(out.is_reliable(second));
        assert!(!out.is_reliable(first), "a stale id must not match");
        out.remove_udp(first);
        assert!(out.is_reliable(second), "a stale id must not remove");
    }
}

#[cfg(test)]
mod direct_tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    fn ring() -> Uring<FrameFraming> {
        Uring::new(UringConfig::default(), FrameFraming { max: 1 << 20 }).unwrap()
    }

    /// A ring with one stream, a `NetOut`, the stream's second descriptor
    /// (not registered yet) and the peer's end.
    fn stream() -> (
        Uring<FrameFraming>,
        ConnId,
        NetOut,
        std::os::fd::OwnedFd,
        TcpStream,
    ) {
        let (a, b) = pair();
        let mut uring = ring();
        let fd = std::os::fd::OwnedFd::from(a.try_clone().unwrap());
        let conn = uring.add_stream(a).unwrap();
        (uring, conn, NetOut::new(1 << 20), fd, b)
    }

    fn read_all(s: &mut TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    /// A frame toward a stream with nothing waiting is on the wire when
    /// `frame` returns: no flush of the ring needed.
    #[test]
    fn an_idle_stream_is_written_at_once() {
        let (_uring, conn, mut out, fd, mut b) = stream();
        out.add_direct(conn, fd);
        assert!(out.writes_now(conn));
        out.frame(conn, b"head", b"body", false).unwrap();
        assert!(out.is_empty(), "nothing staged");
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(read_all(&mut b), b"headbody");
    }

    /// Small frames to a stream in one pass: the first goes at once, the
    /// rest wait for the end of the pass and leave as one send; a large
    /// frame in between lets the next small one go at once too.
    #[test]
    fn a_burst_of_small_frames_waits_for_the_end_of_the_pass() {
        let (_uring, conn, mut out, fd, mut b) = stream();
        out.add_direct(conn, fd);
        out.begin_pass();
        let large = vec![7u8; DIRECT_ALWAYS];
        out.frame(conn, b"a", b"", false).unwrap();
        out.frame(conn, b"b", &large, false).unwrap();
        out.frame(conn, b"c", b"", false).unwrap();
        assert!(out.is_empty(), "small, large, small: all at once");
        out.frame(conn, b"d", b"", false).unwrap();
        assert!(!out.is_empty(), "a second small frame in a row waits");
        std::thread::sleep(std::time::Duration::from_millis(20));
        let got = read_all(&mut b);
        assert_eq!(got.len(), 3 + DIRECT_ALWAYS);
        assert!(got.ends_with(b"c"));
    }

    /// A frame toward an idle UDP socket (datagram mode) is one datagram on
    /// the wire when `frame` returns; so is what a reliable association
    /// sends for a new message.
    #[test]
    fn an_idle_udp_socket_is_written_at_once() {
        use std::net::UdpSocket;
        for mode in [UdpMode::Datagram, UdpMode::Reliable] {
            let a = UdpSocket::bind("127.0.0.1:0").unwrap();
            let b = UdpSocket::bind("127.0.0.1:0").unwrap();
            a.connect(b.local_addr().unwrap()).unwrap();
            b.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            let mut uring = ring();
            let fd = std::os::fd::OwnedFd::from(a.try_clone().unwrap());
            let conn = uring.add_datagram(a).unwrap();
            let mut out = NetOut::new(1 << 20);
            let setup = UdpSetup {
                mode,
                initial_seq: 1,
                peer_initial_seq: 1,
            };
            out.add_udp(conn, setup, 1 << 16).unwrap();
            out.add_direct(conn, fd);
            out.frame(conn, b"head", b"body", false).unwrap();
            assert!(out.is_empty(), "{mode:?}: nothing staged");
            let mut buf = [0u8; 256];
            let n = b.recv(&mut buf).expect("a datagram without a flush");
            assert!(buf[..n].ends_with(b"headbody"), "{mode:?}: {:?}", &buf[..n]);
        }
    }

    /// Behind a staged frame, later ones wait their turn: the stream gets
    /// them in order after the flush, none overtakes.
    #[test]
    fn a_waiting_frame_is_not_overtaken() {
        let (mut uring, conn, mut out, fd, mut b) = stream();
        // Staged: the second descriptor is not known yet.
        out.frame(conn, b"one", b"", false).unwrap();
        out.add_direct(conn, fd);
        assert!(!out.writes_now(conn));
        out.frame(conn, b"two", b"", false).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(read_all(&mut b), b"", "nothing may overtake `one`");
        out.flush(&mut uring, |_| {}, |_| {});
        uring.flush().unwrap();
        out.settle_backlog(&uring);
        let guard = std::time::Instant::now();
        let mut got = Vec::new();
        while got.len() < 6 && guard.elapsed() < std::time::Duration::from_secs(10) {
            uring.poll(|_| {});
            uring.flush().unwrap();
            got.extend(read_all(&mut b));
        }
        assert_eq!(got, b"onetwo");
        // The shard recounts after each flush.
        out.settle_backlog(&uring);
        assert!(out.writes_now(conn), "idle again once the ring sent it all");
    }
}
