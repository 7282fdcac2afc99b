//! A reliable, ordered message protocol over datagrams, as a sans-IO state
//! machine ([`Reliable`](crate::reliable::Reliable)) for the UDP transport to drive.
//!
//! It owns no socket and reads no clock: the transport hands it received
//! datagrams and the time, and asks it for datagrams to send. Every message
//! is delivered exactly once, in order, whatever the network does to the
//! datagrams (drop, duplicate, reorder, delay), or the association is
//! declared dead.
//!
//! ```
//! use comm::reliable::{Reliable, ReliableConfig};
//!
//! let mut a = Reliable::new(ReliableConfig::default())?;
//! let mut b = Reliable::new(ReliableConfig::default())?;
//! a.send(b"ping")?;
//! let mut wire = [0u8; 1472];
//! let n = a.poll_transmit(0, &mut wire).expect("a datagram");
//! b.on_datagram(&wire[..n], 10_000)?; // over UDP in real life
//! assert_eq!(b.poll_message(|m| m == b"ping"), Some(true));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Wire format
//!
//! Every datagram starts with a 24-byte header ([`HEADER_LEN`](crate::reliable::HEADER_LEN)), fields
//! little-endian, followed by `len` payload bytes:
//!
//! | offset | size | field | meaning |
//! |---|---|---|---|
//! | 0 | 1 | `version` | 2 (1 had no probe flag on data) |
//! | 1 | 1 | `kind` | 1 = data (a message fragment), 2 = ack only |
//! | 2 | 1 | `flags` | data: bit 0 first fragment, bit 1 last fragment, bit 2 tail-loss probe; ack: bit 2 window probe (a probe of either kind is acked at once) |
//! | 3 | 1 | `reserved` | 0 |
//! | 4 | 2 | `len` | payload bytes; must equal the datagram's remaining length (0 for acks) |
//! | 6 | 2 | `wnd` | receive window: the sender of this datagram accepts sequence numbers below `ack + wnd` |
//! | 8 | 4 | `seq` | data: the fragment's sequence number (one per datagram, wrapping); ack: 0 |
//! | 12 | 4 | `ack` | cumulative ack: every sequence number before it has arrived |
//! | 16 | 8 | `sack` | selective ack: bit i set means `ack + 1 + i` has arrived too |
//!
//! Every datagram, data included, carries the sender's current ack. A
//! message of `n` bytes travels as `max(1, ceil(n / (mtu − 24)))` data
//! datagrams with consecutive sequence numbers, the first flagged *first*,
//! the last *last* (one datagram has both); all but the last are full.
//!
//! # Algorithms
//!
//! - **Window**: at most `window` datagrams in flight, and none at or past
//!   the peer's advertised edge (`ack + wnd`); the receiver keeps exactly
//!   `window` reorder slots and drops (and counts) whatever falls outside.
//!   It is sized below what the peer's socket holds (64 by default; see
//!   [`ReliableConfig::window`](crate::reliable::ReliableConfig::window)).
//! - **Congestion**: NewReno in datagrams (RFC 5681, 6582, with RFC
//!   6675's pipe: sent, neither selectively acked nor judged lost). The
//!   congestion window starts at `initial_window` (10), grows by one per
//!   datagram acked up to the slow-start threshold and by one per window
//!   after it, never past `window`; a loss found by the acks halves it once
//!   per recovery episode, a retransmission timeout drops it to one. New
//!   datagrams wait for it; retransmissions and probes do not.
//! - **Pacing**: one round of `poll_transmit` calls (until `None`) hands
//!   out at most `burst` data datagrams (1 by default), and `next_timeout`
//!   is due at once while more are ready, so the sender goes at the pace of
//!   the caller's loop instead of handing its transport a whole window.
//! - **Acks**: cumulative plus a 64-datagram selective bitmap, on every
//!   datagram; ack-only datagrams at once after `ack_every` in-order data
//!   datagrams or anything out of order, otherwise within `ack_delay`.
//! - **Loss**: a datagram is resent once `reorder` datagrams transmitted
//!   after it are acknowledged (fast retransmit, RACK-style with a packet
//!   count, so one loss resends one datagram and a lost retransmission is
//!   caught too), or when the retransmission timeout fires (RFC 6298
//!   estimator plus the peer's ack delay, exponential backoff between
//!   `min_rto` and `max_rto`), or, at the tail of a burst, by a tail-loss
//!   probe (RFC 8985): two smoothed round trips (plus the ack delay for a
//!   flight shorter than `ack_every`) without an ack resend the last
//!   datagram not acknowledged, flagged to be acked at once. Only datagrams
//!   an ack can report on (up to
//!   64 past its cumulative point) are judged: further ones may have
//!   arrived unreported. `reorder` starts at 3 and grows to the
//!   reordering the path shows (an original that arrives late, or a fast
//!   retransmission acked sooner than half the shortest round trip,
//!   Eifel-style), up to half the window and at most 32.
//! - **Round trip**: sampled from the most recently transmitted datagram an
//!   ack newly covers, and only if it was transmitted once (Karn).
//! - **Peer loss**: `max_retries` timeouts in a row without progress, then
//!   the association is dead. A closed receive window is probed on the same
//!   (backed-off) timer; an answered probe counts as the peer being alive.
//!
//! # Memory
//!
//! Allocated by [`Reliable::new`](crate::reliable::Reliable::new): the
//! receiver's `window × (mtu − 24)` reorder slots and the sender's first
//! buffer (the same size). Grown on demand and then reused, never shrunk:
//! the send byte ring (up to `send_buffer`), the send fragment queue (up to
//! `send_buffer / (mtu − 24) + window` records) and the reassembly buffer
//! (up to `max_message`, for messages of more than one datagram). Once they
//! have reached the largest backlog and message seen, nothing is allocated
//! per message, and nothing a peer sends makes them grow past those limits.

mod association;
mod config;
mod congestion;
mod error;
mod header;
mod receiver;
mod ring;
mod rto;
mod sender;
mod seq;
mod stats;

pub use association::Reliable;
pub use config::ReliableConfig;
pub use error::{DatagramError, Error};
pub use header::HEADER_LEN;
pub use stats::Stats;
