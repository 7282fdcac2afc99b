//! Congestion control: how many datagrams may be in flight, as NewReno
//! (RFC 5681, RFC 6582) counts it in datagrams instead of bytes.
//!
//! The window opens by one datagram per datagram acknowledged (slow start)
//! up to `ssthresh`, then by one per window's worth (congestion avoidance),
//! never past the flow-control window. A loss found by the acks halves it
//! once per recovery episode (until everything in flight at the loss is
//! acknowledged); a retransmission timeout drops it to one datagram and
//! starts slow start again. A halving the acks later prove needless (every
//! datagram judged lost had arrived: the path reordered) is undone: the
//! sender finds that out and calls `undo` (RFC 4015's response to a
//! spurious fast retransmit). A tail-loss probe changes nothing. On an
//! uncongested path (loopback, a quiet LAN) the window reaches the
//! flow-control window within a few round trips and stays there.

use super::seq::Seq;

/// The least a loss halves the window to.
const FLOOR: u32 = 2;

#[derive(Debug, Clone)]
pub(crate) struct Congestion {
    cwnd: u32,
    ssthresh: u32,
    /// Datagrams acknowledged toward the next step of congestion avoidance.
    credit: u32,
    /// Ceiling: the flow-control window.
    max: u32,
    /// While recovering, the sequence number whose acknowledgement ends
    /// the episode (everything sent before the loss was found).
    recovery_until: Option<Seq>,
    /// Times the window was cut (losses and timeouts).
    cuts: u64,
    /// The window and threshold before the last loss's cut, until it is
    /// undone or a timeout makes it final (the sender decides whether the
    /// cut was needless; undoing later than the episode's end only raises
    /// the window to what it was before the cut).
    prior: Option<(u32, u32)>,
    /// Cuts undone.
    undos: u64,
}

impl Congestion {
    /// Starts at `initial` datagrams, never past `max`.
    pub(crate) fn new(initial: u32, max: u32) -> Self {
        Congestion {
            cwnd: initial.min(max),
            ssthresh: max,
            credit: 0,
            max,
            recovery_until: None,
            cuts: 0,
            prior: None,
            undos: 0,
        }
    }

    /// Datagrams the window allows in flight.
    pub(crate) fn window(&self) -> u32 {
        self.cwnd
    }

    /// Times the window was cut.
    pub(crate) fn cuts(&self) -> u64 {
        self.cuts
    }

    /// Cuts undone.
    pub(crate) fn undos(&self) -> u64 {
        self.undos
    }

    /// Whether a loss episode is in progress (a loss now cuts nothing).
    pub(crate) fn in_recovery(&self) -> bool {
        self.recovery_until.is_some()
    }

    /// `acked` datagrams newly known to have arrived; `una` is the new
    /// cumulative point. The window does not grow during a recovery.
    pub(crate) fn on_delivered(&mut self, acked: u32, una: Seq) {
        if let Some(end) = self.recovery_until {
            if una.before(end) {
                return;
            }
            self.recovery_until = None;
        }
        if self.cwnd < self.ssthresh {
            self.cwnd = self.cwnd.saturating_add(acked).min(self.ssthresh);
            return;
        }
        self.credit = self.credit.saturating_add(acked);
        while self.credit >= self.cwnd && self.cwnd < self.max {
            self.credit -= self.cwnd;
            self.cwnd += 1;
        }
    }

    /// The acks show a loss; `in_flight` datagrams were outstanding and
    /// `sent_end` is the first sequence number not yet sent. Halves the
    /// window, once per episode.
    pub(crate) fn on_loss(&mut self, in_flight: u32, sent_end: Seq) {
        if self.recovery_until.is_some() {
            return;
        }
        self.prior = Some((self.cwnd, self.ssthresh));
        self.cut(in_flight);
        self.cwnd = self.ssthresh;
        self.recovery_until = Some(sent_end);
    }

    /// The last loss episode's losses proved false: back to the window and
    /// threshold from before its cut (or further on, if the window has
    /// grown past them since), and the episode is over.
    pub(crate) fn undo(&mut self) {
        if let Some((cwnd, ssthresh)) = self.prior.take() {
            self.cwnd = self.cwnd.max(cwnd);
            self.ssthresh = self.ssthresh.max(ssthresh);
            self.recovery_until = None;
            self.undos += 1;
        }
    }

    /// The retransmission timer expired with data in flight: one datagram,
    /// then slow start.
    pub(crate) fn on_timeout(&mut self, in_flight: u32) {
        // A timeout is not undone: the episode's losses are now real ones.
        self.prior = None;
        self.cut(in_flight);
        self.cwnd = 1;
        self.recovery_until = None;
    }

    fn cut(&mut self, in_flight: u32) {
        // Never past `max`, so that slow start cannot overshoot it either.
        self.ssthresh = (in_flight / 2).max(FLOOR).min(self.max);
        self.credit = 0;
        self.cuts += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(n: u32) -> Seq {
        Seq::new(n)
    }

    #[test]
    fn slow_start_doubles_each_round_trip_up_to_the_flow_window() {
        let mut c = Congestion::new(10, 64);
        assert_eq!(c.window(), 10);
        c.on_delivered(10, seq(10));
        assert_eq!(c.window(), 20);
        c.on_delivered(20, seq(30));
        assert_eq!(c.window(), 40);
        c.on_delivered(40, seq(70));
        assert_eq!(c.window(), 64);
        assert_eq!(Congestion::new(10, 4).window(), 4);
    }

    #[test]
    fn a_loss_halves_the_window_once_per_episode() {
        let mut c = Congestion::new(10, 64);
        c.on_delivered(30, seq(30));
        assert_eq!(c.window(), 40);
        c.on_loss(40, seq(70));
        assert_eq!(c.window(), 20);
        // More losses of the same flight, and acks during the recovery,
        // change nothing.
        c.on_loss(38, seq(72));
        c.on_delivered(5, seq(50));
        assert_eq!(c.window(), 20);
        assert_eq!(c.cuts(), 1);
        // The episode ends once the flight is acknowledged; then one
        // datagram more per window's worth.
        c.on_delivered(20, seq(70));
        assert_eq!(c.window(), 21);
        c.on_loss(21, seq(91));
        assert_eq!((c.window(), c.cuts()), (10, 2));
    }

    #[test]
    fn congestion_avoidance_grows_by_one_per_window() {
        let mut c = Congestion::new(10, 64);
        c.on_loss(20, seq(20));
        // Ends the episode: 20 acknowledged at a window of 10 make one step,
        // with 10 toward the next.
        c.on_delivered(20, seq(20));
        assert_eq!(c.window(), 11);
        c.on_delivered(1, seq(21));
        assert_eq!(c.window(), 12);
        c.on_delivered(11, seq(32));
        assert_eq!(c.window(), 12);
        c.on_delivered(1, seq(33));
        assert_eq!(c.window(), 13);
    }

    #[test]
    fn an_undone_cut_gives_the_window_back_once() {
        let mut c = Congestion::new(10, 64);
        c.on_delivered(30, seq(30));
        c.on_loss(40, seq(70));
        assert!(c.in_recovery());
        c.undo();
        assert_eq!((c.window(), c.cuts(), c.undos()), (40, 1, 1));
        assert!(!c.in_recovery(), "the episode ends with the undo");
        // Slow start goes on to the old threshold (the flow window).
        c.on_delivered(24, seq(94));
        assert_eq!(c.window(), 64);
        // Nothing left to undo; a timeout's cut is never undone.
        c.undo();
        c.on_timeout(64);
        c.undo();
        assert_eq!((c.window(), c.undos()), (1, 1));
    }

    #[test]
    fn a_timeout_restarts_from_one_datagram() {
        let mut c = Congestion::new(10, 64);
        c.on_delivered(30, seq(30));
        c.on_timeout(40);
        assert_eq!(c.window(), 1);
        c.on_delivered(1, seq(31));
        assert_eq!(c.window(), 2);
        c.on_delivered(30, seq(61));
        // Slow start stops at half the flight the timeout found.
        assert_eq!(c.window(), 20);
    }
}
