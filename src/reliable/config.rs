//! Settings of one association.

use std::time::Duration;

use super::error::Error;
use super::header::HEADER_LEN;

/// Largest window: the receiver advertises its free slots in 16 bits, and
/// wrapping comparisons need every window far below 2^31.
pub(crate) const MAX_WINDOW: u32 = 1 << 15;

/// Settings of one [`Reliable`](super::Reliable) association.
///
/// Both sides must agree on `mtu`, `window` and the initial sequence numbers
/// (each side's `initial_seq` is the other's `peer_initial_seq`); the
/// connection handshake is the place to exchange them. Random initial
/// numbers make stray datagrams of an earlier association fall outside the
/// window.
///
/// Memory: the receiver allocates `window × (mtu − HEADER_LEN)` bytes of
/// reorder slots up front; the sender's buffer grows on demand up to
/// `send_buffer` bytes and is then reused.
///
/// ```
/// use comm::reliable::ReliableConfig;
/// use std::time::Duration;
///
/// let cfg = ReliableConfig { window: 64, ack_delay: Duration::from_micros(200), ..Default::default() };
/// assert!(cfg.validate().is_ok());
/// // Windows are powers of two.
/// assert!(ReliableConfig { window: 100, ..cfg }.validate().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReliableConfig {
    /// Largest datagram in bytes, header included; from `HEADER_LEN + 1` to
    /// `HEADER_LEN + 65535`. The default, 1472, is an Ethernet frame less
    /// the IPv4 and UDP headers (use 1452 over IPv6).
    pub mtu: usize,
    /// Datagrams in flight unacknowledged (sending) and reorder slots
    /// (receiving): a power of two from 1 to 32768.
    ///
    /// The congestion window opens up to it on a clean path (see
    /// [`initial_window`](Self::initial_window)), so it should not exceed what the peer's receive
    /// path holds while its loop is busy or descheduled: on Linux the socket
    /// buffer (`rmem_default`, 208 KiB, at about 2.3 KiB per full datagram)
    /// plus the transport's receive buffers (the engine's io_uring has 32),
    /// some 120 datagrams. A larger window only lets that path drop
    /// datagrams whenever the receiver falls behind; and past 64, one ack
    /// can no longer report every datagram in flight (the selective-ack
    /// bitmap is 64 wide), so a burst of drops ahead of later arrivals waits
    /// for the retransmission timeout. Throughput needs `window × (mtu −
    /// HEADER_LEN)` bytes per round trip: 64 datagrams carry 93 KB, 3.7 GB/s
    /// over a 25 µs loopback round trip and 0.9 GB/s over 100 µs, more than
    /// one sending loop puts on the wire. The receiver allocates that much
    /// up front.
    pub window: u32,
    /// Largest message in bytes, on both sides.
    pub max_message: usize,
    /// Bytes of queued and unacknowledged messages the sender keeps; at least
    /// `max_message`. [`Error::WindowFull`] when a message does not fit.
    pub send_buffer: usize,
    /// Sequence number of this side's first datagram.
    pub initial_seq: u32,
    /// Sequence number of the peer's first datagram.
    pub peer_initial_seq: u32,
    /// Longest an acknowledgement waits for data to ride on; also added to
    /// the retransmission timeout, since the peer's acks may wait that long.
    pub ack_delay: Duration,
    /// An ack goes out at once after this many in-order data datagrams.
    pub ack_every: u32,
    /// Retransmission timeout before the first round-trip measurement.
    pub initial_rto: Duration,
    /// Floor of the retransmission timeout.
    pub min_rto: Duration,
    /// Ceiling of the retransmission timeout, backed off included.
    pub max_rto: Duration,
    /// Timeouts in a row without progress that are retransmitted; the next
    /// one declares the peer lost.
    pub max_retries: u32,
    /// Data datagrams (new or resent) that one round of
    /// [`poll_transmit`](super::Reliable::poll_transmit) calls hands out at
    /// most; a round ends when it returns `None`, and if more is ready then,
    /// [`next_timeout`](super::Reliable::next_timeout) is already due, so
    /// the next pass of the caller's loop takes the next burst. This paces
    /// the sender at the caller's loop: the transport's send queue never
    /// holds more than a burst, and the peer's receive queue sees a stream
    /// instead of a whole window at once.
    ///
    /// 1 (the default) suits a transport that puts one datagram on the wire
    /// per pass: the engine's io_uring keeps one send in flight per socket
    /// and submits the next only when its loop flushes, which it does on a
    /// pass with work or a due timer. Handed a whole window at once, it
    /// would send one datagram per ack and the acks would stop coming. A
    /// transport that sends whole batches per pass can take more; `u32::MAX`
    /// hands out everything the window allows. At least 1.
    pub burst: u32,
    /// Datagrams in flight before the first ack: where the congestion
    /// window starts (10, as RFC 6928 for TCP). It opens from there by one
    /// datagram per datagram acknowledged, up to `window`, and a loss
    /// halves it (see the module docs). At least 1; `window` or more starts
    /// at the full flow-control window.
    pub initial_window: u32,
}

impl Default for ReliableConfig {
    /// Defaults for a data-centre network: 1472-byte datagrams, 64 in
    /// flight (see [`window`](Self::window)), one handed out per round of
    /// `poll_transmit` (see [`burst`](Self::burst)), 16 MiB messages, acks
    /// within 1 ms, timeouts from 5 ms to 1 s, and the peer declared lost
    /// after 12 fruitless retransmissions (about 10 s with no round trip
    /// measured).
    ///
    /// ```
    /// let cfg = comm::reliable::ReliableConfig::default();
    /// assert_eq!((cfg.mtu, cfg.window, cfg.max_message), (1472, 64, 16 << 20));
    /// assert_eq!(cfg.burst, 1);
    /// ```
    fn default() -> Self {
        ReliableConfig {
            mtu: 1472,
            window: 64,
            max_message: 16 << 20,
            send_buffer: 16 << 20,
            initial_seq: 0,
            peer_initial_seq: 0,
            ack_delay: Duration::from_millis(1),
            ack_every: 2,
            initial_rto: Duration::from_millis(50),
            min_rto: Duration::from_millis(5),
            max_rto: Duration::from_secs(1),
            max_retries: 12,
            burst: 1,
            initial_window: 10,
        }
    }
}

impl ReliableConfig {
    /// Checks that the settings are consistent; [`Reliable::new`](super::Reliable::new)
    /// does the same.
    ///
    /// ```
    /// use comm::reliable::{Error, ReliableConfig};
    /// let cfg = ReliableConfig { mtu: 10, ..Default::default() };
    /// assert!(matches!(cfg.validate(), Err(Error::Config(_))));
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        if self.mtu <= HEADER_LEN || self.mtu > HEADER_LEN + usize::from(u16::MAX) {
            return Err(Error::Config(
                "mtu must exceed the header and carry at most 65535 payload bytes",
            ));
        }
        if !self.window.is_power_of_two() || self.window > MAX_WINDOW {
            return Err(Error::Config("window must be a power of two up to 32768"));
        }
        if self.send_buffer < self.max_message.max(1) {
            return Err(Error::Config(
                "send_buffer must hold at least one max_message (and one byte)",
            ));
        }
        if self.burst == 0 {
            return Err(Error::Config("burst must be at least 1"));
        }
        if self.initial_window == 0 {
            return Err(Error::Config("initial_window must be at least 1"));
        }
        if self.ack_every == 0 {
            return Err(Error::Config("ack_every must be at least 1"));
        }
        if self.min_rto.is_zero() || self.min_rto > self.max_rto {
            return Err(Error::Config(
                "min_rto must be positive and at most max_rto",
            ));
        }
        if self.initial_rto < self.min_rto || self.initial_rto > self.max_rto {
            return Err(Error::Config(
                "initial_rto must lie within min_rto..=max_rto",
            ));
        }
        Ok(())
    }

    /// Payload bytes one datagram carries.
    pub(crate) fn max_payload(&self) -> usize {
        self.mtu - HEADER_LEN
    }
}

/// Nanoseconds of `d`, saturating: time is carried as `u64` nanoseconds.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid() {
        ReliableConfig::default().validate().unwrap();
    }

    #[test]
    fn inconsistent_settings_are_refused() {
        let ok = ReliableConfig::default();
        let bad = [
            ReliableConfig {
                mtu: HEADER_LEN,
                ..ok
            },
            ReliableConfig {
                mtu: HEADER_LEN + 65536,
                ..ok
            },
            ReliableConfig { window: 0, ..ok },
            ReliableConfig {
                window: 1 << 16,
                ..ok
            },
            ReliableConfig {
                send_buffer: ok.max_message - 1,
                ..ok
            },
            ReliableConfig { ack_every: 0, ..ok },
            ReliableConfig { burst: 0, ..ok },
            ReliableConfig {
                min_rto: Duration::ZERO,
                ..ok
            },
            ReliableConfig {
                initial_rto: Duration::from_secs(5),
                ..ok
            },
        ];
        for cfg in bad {
            assert!(cfg.validate().is_err(), "{cfg:?}");
        }
        let edges = [
            ReliableConfig {
                mtu: HEADER_LEN + 1,
                ..ok
            },
            ReliableConfig {
                mtu: HEADER_LEN + 65535,
                ..ok
            },
            ReliableConfig { window: 1, ..ok },
            ReliableConfig {
                window: MAX_WINDOW,
                ..ok
            },
        ];
        for cfg in edges {
            cfg.validate().unwrap();
        }
    }
}
