//! What [`Uring::poll`](crate::Uring::poll) reports.

use std::net::SocketAddr;

use crate::conn::ConnId;

/// One thing that happened on a connection, reported by
/// [`Uring::poll`](crate::Uring::poll).
///
/// Borrowed bytes are valid only during the callback: they point into a
/// receive buffer that goes back to the kernel when the callback returns.
///
/// ```
/// use comm_uring::{Event, LenPrefix, Uring, UringConfig};
/// let mut ring = Uring::new(UringConfig::default(), LenPrefix)?;
/// ring.poll(|ev| match ev {
///     Event::Record { conn, bytes } => println!("{conn:?}: {} bytes", bytes.len()),
///     Event::Datagram { from, bytes, .. } => println!("{from}: {} bytes", bytes.len()),
///     Event::SendDone { token, .. } => println!("buffer {token} is ours again"),
///     Event::Closed { conn, error } => println!("{conn:?} closed: {error:?}"),
/// });
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub enum Event<'a> {
    /// One whole record (header included) from a TCP stream; records of a
    /// stream arrive in order, each exactly once.
    Record {
        /// The stream.
        conn: ConnId,
        /// The record.
        bytes: &'a [u8],
    },
    /// One datagram received on a UDP socket.
    Datagram {
        /// The socket.
        conn: ConnId,
        /// Who sent it.
        from: SocketAddr,
        /// Its payload.
        bytes: &'a [u8],
    },
    /// The memory of the zero-copy send queued with this `token` is no
    /// longer referenced by the kernel and may be reused. Reported after
    /// the kernel's notification, not merely after the send completed;
    /// also reported, exactly once, for sends dropped by a close.
    SendDone {
        /// The connection it was queued on.
        conn: ConnId,
        /// The token passed to `send_zc`.
        token: u64,
    },
    /// The connection is gone: the peer closed it (`None`) or it failed
    /// (reset, socket error, bad framing, end of stream inside a record).
    /// Its id is dead from now on; only `SendDone` events may still follow.
    Closed {
        /// The connection.
        conn: ConnId,
        /// Why, unless it was an orderly close by the peer.
        error: Option<std::io::Error>,
    },
}
