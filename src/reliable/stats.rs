//! Counters of one association.

/// What one association has done so far; read it with
/// [`Reliable::stats`](super::Reliable::stats).
///
/// ```
/// use comm::reliable::{Reliable, ReliableConfig};
/// let mut r = Reliable::new(ReliableConfig::default())?;
/// r.send(b"hi")?;
/// let mut wire = [0; 1472];
/// r.poll_transmit(0, &mut wire);
/// let s = r.stats();
/// assert_eq!((s.messages_sent, s.datagrams_sent, s.retransmits), (1, 1, 0));
/// # Ok::<(), comm::reliable::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Messages accepted by `send`.
    pub messages_sent: u64,
    /// Messages handed out by `poll_message`.
    pub messages_received: u64,
    /// Datagrams produced by `poll_transmit`, of every kind.
    pub datagrams_sent: u64,
    /// Datagrams that passed validation in `on_datagram`.
    pub datagrams_received: u64,
    /// Data datagrams sent again (after a timeout or a selective-ack hole).
    pub retransmits: u64,
    /// Retransmissions found needless afterwards: the original arrived (the
    /// path reorders or delays more than the loss detection allowed for).
    pub spurious_retransmits: u64,
    /// Retransmission timeouts that fired with data in flight.
    pub timeouts: u64,
    /// Window probes sent while the peer's receive window was closed.
    pub probes_sent: u64,
    /// Tail-loss probes: the last datagram in flight sent again, two round
    /// trips after nothing was heard, instead of waiting for the timeout.
    pub tail_probes: u64,
    /// Ack-only datagrams sent (acks riding on data are not counted).
    pub acks_sent: u64,
    /// Data datagrams dropped because they had arrived before.
    pub duplicates: u64,
    /// Data datagrams that arrived ahead of a gap and were buffered.
    pub out_of_order: u64,
    /// Data datagrams dropped because they lay beyond the receive window.
    pub out_of_window: u64,
    /// Datagrams refused by `on_datagram` with an error.
    pub rejected: u64,
    /// Smoothed round-trip time in nanoseconds; 0 until measured.
    pub srtt_ns: u64,
    /// Retransmission timeout in nanoseconds, backoff included.
    pub rto_ns: u64,
    /// Datagrams the congestion window lets be in flight now.
    pub cwnd: u64,
    /// Times the congestion window was cut (a loss episode or a timeout).
    pub window_cuts: u64,
    /// Cuts undone: every datagram judged lost had arrived after all (the
    /// path reordered), so the window went back to what it was.
    pub window_undos: u64,
}
