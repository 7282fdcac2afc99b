//! Queueing outgoing data: the part of the ring that may be used while
//! received records are being handed out.

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::conn::{ConnId, Conns, Kind, Slot, State};
use crate::error::SendError;
use crate::fixed_buf::FixedBufs;
use crate::notif::Notifs;
use crate::sys::MAX_DATAGRAM;

/// Queues sends on a ring's connections; what `flush` will submit.
///
/// [`Uring`](crate::Uring) has the same methods; an `Outbox` is what
/// [`Uring::poll_with`](crate::Uring::poll_with) lends to its callback, so
/// that a handler can reply while the record it replies to is still
/// borrowed from a receive buffer.
///
/// ```
/// use comm_uring::{Event, LenPrefix, Uring, UringConfig};
/// let mut ring = Uring::new(UringConfig::default(), LenPrefix)?;
/// // An echo server: every record goes straight back where it came from.
/// ring.poll_with(|out, ev| {
///     if let Event::Record { conn, bytes } = ev {
///         let _ = out.send(conn, &[bytes]);
///     }
/// });
/// ring.flush()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Outbox<'a> {
    pub(crate) conns: &'a mut Conns,
    pub(crate) notifs: &'a mut Notifs,
    pub(crate) fixed: &'a FixedBufs,
    pub(crate) done: &'a mut VecDeque<(ConnId, u64)>,
    pub(crate) limit: usize,
}

impl Outbox<'_> {
    /// Queues one record, the concatenation of `parts`, copied into the
    /// connection's staging memory; submitted by the next `flush`.
    ///
    /// On a UDP socket this sends one datagram to the connected peer.
    /// Returns [`SendError::Full`] when the queue is over the configured
    /// limit (nothing is queued; retry after polling and flushing) and
    /// [`SendError::Closed`] for a closed or unknown id.
    ///
    /// ```no_run
    /// # use comm_uring::{LenPrefix, Uring, UringConfig};
    /// # let mut ring = Uring::new(UringConfig::default(), LenPrefix)?;
    /// # let conn = ring.add_stream(std::net::TcpStream::connect("127.0.0.1:7000")?)?;
    /// let body = b"hello";
    /// ring.outbox().send(conn, &[&LenPrefix::header(body.len()), body])?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send(&mut self, conn: ConnId, parts: &[&[u8]]) -> Result<(), SendError> {
        let limit = self.limit;
        let slot = open_slot(self.conns, conn)?;
        let len = total_len(parts);
        if slot.kind == Kind::Datagram {
            if len > MAX_DATAGRAM {
                return Err(SendError::TooLarge);
            }
        } else if len == 0 {
            return Ok(());
        } else if u32::try_from(len).is_err() {
            return Err(SendError::TooLarge);
        }
        check_room(slot.tx.queued(), len, limit)?;
        let merge = slot.kind == Kind::Stream;
        slot.tx.push_copy(parts, None, merge);
        self.conns.mark_dirty(conn);
        Ok(())
    }

    /// Queues `head` (copied) followed by `len` bytes at `data` sent
    /// zero-copy, in order with the connection's other sends. When `data`
    /// lies inside a region given to
    /// [`Uring::register_region`](crate::Uring::register_region) that
    /// registered, the send uses the fixed buffer.
    /// [`Event::SendDone`](crate::Event::SendDone) with `token` reports
    /// when the bytes may be reused, exactly once, even if the connection
    /// closes first.
    ///
    /// # Safety
    ///
    /// `[data, data + len)` must stay valid and unmodified until `SendDone`
    /// with `token` is reported (or the ring is dropped).
    ///
    /// ```no_run
    /// # use comm_uring::{LenPrefix, Uring, UringConfig};
    /// # let mut ring = Uring::new(UringConfig::default(), LenPrefix)?;
    /// # let conn = ring.add_stream(std::net::TcpStream::connect("127.0.0.1:7000")?)?;
    /// let body: &'static [u8] = &[7; 1 << 20];
    /// // SAFETY: a static is valid and unmodified forever.
    /// unsafe { ring.outbox().send_zc(conn, &LenPrefix::header(body.len()), body.as_ptr(), body.len(), 1)? };
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
        let limit = self.limit;
        let fixed = self.fixed.lookup(data, len);
        let slot = open_slot(self.conns, conn)?;
        if slot.kind != Kind::Stream {
            return Err(SendError::Unsupported);
        }
        let total = head.len().checked_add(len).ok_or(SendError::TooLarge)?;
        if u32::try_from(total).is_err() {
            return Err(SendError::TooLarge);
        }
        check_room(slot.tx.queued(), total, limit)?;
        let zc = self.notifs.alloc(conn, token).ok_or(SendError::Full)?;
        slot.tx.push_copy(&[head], None, true);
        slot.zc_pending += 1;
        if len == 0 {
            // Nothing for the kernel to hold: the buffer is free at once.
            if let Some(d) = self.notifs.finish(zc) {
                slot.zc_pending -= 1;
                self.done.push_back(d);
            }
        } else {
            slot.tx.push_zc(data, len, fixed, zc);
        }
        self.conns.mark_dirty(conn);
        Ok(())
    }

    /// Queues one datagram, the concatenation of `parts`, to `to` on a UDP
    /// socket.
    ///
    /// ```
    /// # use comm_uring::{LenPrefix, Uring, UringConfig};
    /// # let mut ring = Uring::new(UringConfig::default(), LenPrefix)?;
    /// let sock = ring.add_datagram(std::net::UdpSocket::bind("127.0.0.1:0")?)?;
    /// ring.outbox().send_to(sock, "127.0.0.1:7001".parse()?, &[b"ping"])?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_to(
        &mut self,
        conn: ConnId,
        to: SocketAddr,
        parts: &[&[u8]],
    ) -> Result<(), SendError> {
        let limit = self.limit;
        let slot = open_slot(self.conns, conn)?;
        if slot.kind != Kind::Datagram {
            return Err(SendError::Unsupported);
        }
        let len = total_len(parts);
        // IPv4 carries 20 bytes less: its length field covers its header.
        let max = if to.is_ipv4() {
            MAX_DATAGRAM - 20
        } else {
            MAX_DATAGRAM
        };
        if len > max {
            return Err(SendError::TooLarge);
        }
        check_room(slot.tx.queued(), len, limit)?;
        slot.tx.push_copy(parts, Some(to), false);
        self.conns.mark_dirty(conn);
        Ok(())
    }

    /// Bytes queued on `conn` and not yet accepted by the kernel (0 for an
    /// unknown id).
    ///
    /// ```no_run
    /// # use comm_uring::{LenPrefix, Uring, UringConfig};
    /// # let mut ring = Uring::new(UringConfig::default(), LenPrefix)?;
    /// # let conn = ring.add_stream(std::net::TcpStream::connect("127.0.0.1:7000")?)?;
    /// while ring.queued_bytes(conn) > 0 {
    ///     ring.flush()?;
    ///     ring.poll(|_| {});
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn queued_bytes(&self, conn: ConnId) -> usize {
        self.conns.get(conn).map_or(0, |s| s.tx.queued())
    }

    /// Stops reading `conn`, as [`Uring::pause_receive`](crate::Uring::pause_receive)
    /// with `true` does, from inside a `poll_with` callback: the poll reads
    /// nothing more of it by plain receives, and the next `flush` cancels
    /// its armed receive. Records of a read already made still arrive.
    /// [`Uring::pause_receive`](crate::Uring::pause_receive) with `false`
    /// reads it again. Unknown ids are ignored.
    ///
    /// ```no_run
    /// # use comm_uring::{Event, LenPrefix, Uring, UringConfig};
    /// # let mut ring = Uring::new(UringConfig::default(), LenPrefix)?;
    /// # let conn = ring.add_stream(std::net::TcpStream::connect("127.0.0.1:7000")?)?;
    /// // Take one record at a time from `conn`.
    /// ring.poll_with(|out, ev| {
    ///     if let Event::Record { conn, .. } = ev {
    ///         out.pause_receive(conn);
    ///     }
    /// });
    /// ring.pause_receive(conn, false);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pause_receive(&mut self, conn: ConnId) {
        let Some(slot) = self.conns.get_mut(conn) else {
            return;
        };
        if slot.state == State::Open && !slot.paused {
            slot.paused = true;
            // The flush cancels an armed receive of a paused connection.
            self.conns.mark_dirty(conn);
        }
    }
}

fn open_slot(conns: &mut Conns, conn: ConnId) -> Result<&mut Slot, SendError> {
    conns
        .get_mut(conn)
        .filter(|s| s.state == State::Open)
        .ok_or(SendError::Closed)
}

fn total_len(parts: &[&[u8]]) -> usize {
    parts.iter().map(|p| p.len()).sum()
}

/// Backpressure: refuse once the queue would pass the limit, but always
/// accept into an empty queue so that a record larger than the limit can
/// still be sent.
fn check_room(queued: usize, len: usize, limit: usize) -> Result<(), SendError> {
    if queued > 0 && queued.saturating_add(len) > limit {
        Err(SendError::Full)
    } else {
        Ok(())
    }
}
