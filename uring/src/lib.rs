//! comm-uring: one io_uring per shard, driving TCP streams and UDP sockets
//! from a busy-polling loop without blocking.
//!
//! A [`Uring`] owns its sockets. TCP streams receive through a multishot
//! receive into a ring of provided buffers and are cut into whole records by
//! a caller-supplied [`Framing`]; records inside one buffer are lent in
//! place, others are reassembled once. Sends are copied into per-connection
//! staging memory, or sent zero-copy (`SendZc`, from registered buffers when
//! possible) with a [`Event::SendDone`] once the kernel lets go of the
//! memory. UDP sockets use multishot `recvmsg` and `sendmsg`. Everything is
//! sized when a ring or connection is created; steady-state traffic
//! allocates nothing.
//!
//! This crate knows nothing of engines or endpoints; `comm` composes it.
//!
//! # How it works
//!
//! - **Sends**: at most one send per connection is in flight, so stream
//!   order holds and a partial send simply continues from where it stopped.
//!   Copied records accumulate in one of two staging buffers while the other
//!   is being sent, so one send carries everything queued since the last.
//!   A zero-copy segment is its own `SendZc` (with the fixed-buffer index
//!   when the bytes lie in a registered region), between the copied bytes
//!   around it.
//! - **Zero-copy completion**: each segment has a slot counting its `SendZc`
//!   operations whose notification is still due; `SendDone` is reported once
//!   the segment is fully sent (or dropped by a close) and that count is 0.
//!   If the kernel will not pin unregistered pages (`ENOMEM`, i.e.
//!   `RLIMIT_MEMLOCK`), such segments are sent by copy instead.
//! - **Receives**: one multishot receive per socket draws from a shared ring
//!   of provided buffers; each buffer goes back to the ring right after the
//!   callback has seen its records, and the ring tail is published once per
//!   batch of completions. A receive that ends (no `F_MORE`, `ENOBUFS`) is
//!   re-armed by the next `flush`.
//! - **Busy polling** ([`Uring::set_busy_poll`]): for a loop that spins
//!   anyway, a socket on which data arrives turns hot; its armed receive is
//!   cancelled and `poll` reads it with plain non-blocking receives (after
//!   the receive's last completion, so bytes stay in order), until a few
//!   hundred empty reads cool it down to an armed receive again. Sends then
//!   go straight to the socket while it takes them. On loopback this saves
//!   about a microsecond per message. `park` arms every receive first.
//! - **Pausing** ([`Uring::pause_receive`]): a socket the owner cannot keep
//!   up with is not read at all, so TCP's flow control holds its sender
//!   back.
//! - **Completions** run only when the owning thread enters the kernel
//!   (single issuer, deferred task work): `poll` enters only when the kernel
//!   flags pending work, `flush` only when there is something to submit.
//! - **Park** is one `io_uring_enter` waiting for one completion with a
//!   timeout, with a `FUTEX_WAIT` operation on the doorbell word armed
//!   beside the socket operations.
//!
//! ```
//! use std::net::{TcpListener, TcpStream};
//! use std::time::Duration;
//! use comm_uring::{Event, LenPrefix, Uring, UringConfig};
//!
//! let listener = TcpListener::bind("127.0.0.1:0")?;
//! let mut ring = Uring::new(UringConfig::default(), LenPrefix)?;
//! let conn = ring.add_stream(TcpStream::connect(listener.local_addr()?)?)?;
//! ring.send(conn, &[&LenPrefix::header(3), b"abc"])?;
//! loop {
//!     ring.flush()?;
//!     let n = ring.poll(|ev| match ev {
//!         Event::Record { bytes, .. } => println!("{} byte record", bytes.len()),
//!         Event::Closed { error, .. } => println!("closed: {error:?}"),
//!         _ => {}
//!     });
//!     if n == 0 {
//!         ring.park(None, Duration::from_millis(1))?;
//!     }
//! #   break;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(not(target_os = "linux"))]
compile_error!("comm-uring needs Linux (io_uring)");

mod buf_ring;
mod config;
mod conn;
mod datagram;
mod direct;
mod error;
mod event;
mod fixed_buf;
mod framing;
mod notif;
mod outbox;
mod reassembler;
mod ring;
mod send_queue;
mod sys;
mod user_data;

pub use config::UringConfig;
pub use conn::ConnId;
pub use direct::send_now;
pub use error::{FramingError, SendError};
pub use event::Event;
pub use framing::{Framing, LenPrefix};
pub use outbox::Outbox;
pub use reassembler::Reassembler;
pub use ring::Uring;
