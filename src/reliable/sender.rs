//! The sending half: fragmentation, the send window, loss detection and the
//! retransmission timer.
//!
//! Messages are copied into a [`ByteRing`] and cut into fragment records
//! (`frags`, one per datagram, front = oldest unacknowledged). A record is
//! dropped, and its bytes freed, once the cumulative ack passes it. Both the
//! ring and the record queue grow to the largest backlog seen and are then
//! reused, so steady-state sending does not allocate.
//!
//! Loss is detected two ways. Fast: a datagram is lost once `reorder`
//! datagrams *transmitted after it* are known to have arrived (cumulatively
//! or selectively acked); this is RACK (RFC 8985) with a packet count
//! instead of a time as the reordering window, and it also catches a lost
//! retransmission, which duplicate-ack counting cannot. `reorder` starts at
//! 3 (the duplicate-ack threshold of RFC 5681) and grows, as Linux's does,
//! whenever a datagram sent once turns out to have arrived after later ones:
//! on a reordering path, spurious retransmissions stop after the first few.
//! Only datagrams within an ack's reach (its cumulative point plus the
//! 64-wide bitmap) are judged: past it, one that arrived and one that was
//! lost look the same, and calling them lost would resend a window's worth
//! of datagrams that already arrived.
//! Slow: the retransmission timeout (RFC 6298) resends the oldest hole and
//! backs off; `max_retries` timeouts in a row without progress declare the
//! peer lost.
//!
//! In between, the tail-loss probe (RFC 8985, section 7): a loss among the
//! last datagrams of a burst, or of the only one in flight (every request
//! of a request-response exchange), has no later datagrams whose acks would
//! reveal it, and would wait for the timeout, whose floor is milliseconds.
//! Two smoothed round trips after the last transmission or ack with nothing
//! heard (plus the peer's ack delay when fewer than `ack_every` datagrams
//! are in flight, since their ack may wait that long), the last datagram
//! not acknowledged goes again, flagged so that the peer acks it at once:
//! the ack either shows it arrived or reports the hole. One probe per
//! episode (an ack that brings news starts a new one), none while known
//! losses are being resent or after a timeout; the probe neither backs off
//! nor counts as a timeout, and the timeout restarts behind it so that it
//! cannot fire before the probe's ack is back (RFC 8985, 7.3).

use std::collections::VecDeque;

use super::config::{nanos, ReliableConfig};
use super::congestion::Congestion;
use super::error::{DatagramError, Error};
use super::header::{AckInfo, Header, FIRST, HEADER_LEN, LAST, PROBE};
use super::ring::ByteRing;
use super::rto::RttEstimator;
use super::seq::Seq;
use super::stats::Stats;

/// Datagrams sent later that must have arrived before an unacknowledged one
/// counts as lost, until reordering is observed: the duplicate-ack threshold
/// of RFC 5681.
const INITIAL_REORDER: u64 = 3;

/// Sequence numbers one acknowledgement can report beyond its cumulative
/// point: the selective-ack bitmap's width.
const SACK_BITS: u32 = 64;

/// Shortest tail-loss probe time: below this a probe would mostly chase
/// acks that are merely on their way (RFC 8985 allows no less than the
/// clock granularity; loopback round trips are a few microseconds).
const PROBE_FLOOR_NS: u64 = 10_000;

/// One datagram's worth of a queued message.
#[derive(Debug, Clone, Copy)]
struct Frag {
    /// Stream offset of the payload in the ring.
    off: u64,
    /// When it was last transmitted.
    sent_at: u64,
    /// Transmission serial of its last transmission (see `Sender::serial`).
    serial: u64,
    /// Transmission serial of its first transmission.
    first_serial: u64,
    len: u16,
    flags: u8,
    transmissions: u16,
    /// Selectively acknowledged: it arrived, only the cumulative ack lags.
    sacked: bool,
    /// Judged lost and waiting to be sent again.
    lost: bool,
    /// Resent after a retransmission timeout or as a tail-loss probe: its
    /// acknowledgement says nothing about reordering.
    timed_out: bool,
    /// Its next transmission is a tail-loss probe.
    probe: bool,
    /// The loss episode (`Undo::episode`) that judged it lost; 0: none.
    suspect_of: u32,
}

/// A loss episode whose congestion cut may yet prove needless: once every
/// datagram it judged lost turns out to have arrived by an earlier
/// transmission (the original came late, or the retransmission's ack came
/// back too soon to be its own), the path only reordered, and the cut is
/// undone. A retransmission that was needed, or a timeout, ends that hope.
#[derive(Debug, Clone, Copy)]
struct Undo {
    episode: u32,
    /// Loss judgments of the episode not yet shown false. A datagram judged
    /// lost twice (its retransmission lost too) counts twice and is
    /// acknowledged once, so its episode is never undone: rightly.
    pending: u32,
}

/// What an expired retransmission timer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timeout {
    Alive,
    PeerLost,
}

pub(crate) struct Sender {
    ring: ByteRing,
    frags: VecDeque<Frag>,
    /// Cap on `frags`, so many empty messages cannot grow it without bound.
    max_frags: usize,
    max_payload: usize,
    max_message: usize,
    window: u32,
    /// Sequence number of `frags[0]`: the oldest unacknowledged datagram.
    una: Seq,
    /// `frags[..sent]` have been transmitted at least once.
    sent: usize,
    /// The peer accepts sequence numbers before this (its receive window).
    peer_edge: Seq,
    /// Whether `peer_edge` comes from the peer rather than our guess.
    peer_heard: bool,
    /// Transmissions so far, retransmissions included: a clock that orders
    /// transmissions even when sequence numbers do not (a retransmission of
    /// an old sequence number is a *new* transmission).
    serial: u64,
    /// Highest serial known to have arrived.
    delivered_serial: u64,
    /// Loss threshold in transmissions (see the module docs).
    reorder: u64,
    /// Ceiling of `reorder`: half the window, and half of what one ack can
    /// report past a hole; beyond that, fast retransmit would rarely fire
    /// at all and timeouts would do the work.
    max_reorder: u64,
    /// The furthest sequence number an acknowledgement could report (its
    /// cumulative point plus the bitmap): nothing at or past it is known
    /// to be missing, so nothing there is judged lost.
    sack_reach: Seq,
    /// How many records are marked `lost`.
    lost: usize,
    /// How many records in flight are marked `sacked`.
    sacked: usize,
    cc: Congestion,
    /// The episode whose cut may still be undone.
    undo: Option<Undo>,
    /// Loss episodes begun (numbers them, skipping 0).
    episodes: u32,
    rtt: RttEstimator,
    rto_deadline: Option<u64>,
    /// When the tail-loss probe goes, if one is armed.
    pto_deadline: Option<u64>,
    /// A probe went in this episode: no other until an ack makes progress.
    probed: bool,
    /// The peer's longest ack delay, added to the probe time of a flight
    /// the peer may ack late (fewer than `ack_every` datagrams). Both
    /// sides run the same settings, as for the retransmission timeout.
    ack_delay: u64,
    ack_every: u32,
    /// Timeouts in a row without progress.
    retries: u32,
    max_retries: u32,
    probe_due: bool,
}

impl Sender {
    pub(crate) fn new(cfg: &ReliableConfig) -> Self {
        let max_payload = cfg.max_payload();
        let window = cfg.window as usize;
        let una = Seq::new(cfg.initial_seq);
        Sender {
            ring: ByteRing::new(window.saturating_mul(max_payload), cfg.send_buffer),
            frags: VecDeque::with_capacity(window),
            max_frags: cfg.send_buffer.div_ceil(max_payload) + window,
            max_payload,
            max_message: cfg.max_message,
            window: cfg.window,
            una,
            sent: 0,
            // Until the peer speaks, assume its window matches ours.
            peer_edge: una.plus(cfg.window),
            peer_heard: false,
            serial: 0,
            delivered_serial: 0,
            reorder: INITIAL_REORDER,
            max_reorder: INITIAL_REORDER.max(u64::from((cfg.window / 2).min(SACK_BITS / 2))),
            sack_reach: una.plus(SACK_BITS + 1),
            lost: 0,
            sacked: 0,
            cc: Congestion::new(cfg.initial_window, cfg.window),
            undo: None,
            episodes: 0,
            rtt: RttEstimator::new(
                nanos(cfg.initial_rto),
                nanos(cfg.min_rto),
                nanos(cfg.max_rto),
                nanos(cfg.ack_delay),
            ),
            rto_deadline: None,
            pto_deadline: None,
            probed: false,
            ack_delay: nanos(cfg.ack_delay),
            ack_every: cfg.ack_every,
            retries: 0,
            max_retries: cfg.max_retries,
            probe_due: false,
        }
    }

    /// Copies `msg` in and cuts it into fragments, or refuses it whole.
    pub(crate) fn queue(&mut self, msg: &[u8]) -> Result<(), Error> {
        if msg.len() > self.max_message {
            return Err(Error::TooLarge {
                len: msg.len(),
                max: self.max_message,
            });
        }
        // An empty message still takes one datagram.
        let count = msg.len().div_ceil(self.max_payload).max(1);
        if self.frags.len() + count > self.max_frags || !self.ring.fits(msg.len()) {
            return Err(Error::WindowFull);
        }
        let off = self.ring.push(msg);
        for i in 0..count {
            let start = i * self.max_payload;
            let len = (msg.len() - start).min(self.max_payload);
            let mut flags = 0;
            if i == 0 {
                flags |= FIRST;
            }
            if i + 1 == count {
                flags |= LAST;
            }
            self.frags.push_back(Frag {
                off: off + start as u64,
                sent_at: 0,
                serial: 0,
                first_serial: 0,
                // max_payload <= u16::MAX (checked by the config).
                len: len as u16,
                flags,
                transmissions: 0,
                sacked: false,
                lost: false,
                timed_out: false,
                probe: false,
                suspect_of: 0,
            });
        }
        Ok(())
    }

    fn can_send_new(&self) -> bool {
        self.sent < self.frags.len()
            && (self.sent as u32) < self.window
            && self.in_flight() < self.cc.window() as usize
            && self.una.plus(self.sent as u32).before(self.peer_edge)
    }

    /// How many datagrams from `una` on an ack can report (its cumulative
    /// point and its bitmap): past them, arrived and missing look the same.
    fn reach(&self) -> usize {
        usize::try_from(self.sack_reach.since(self.una)).unwrap_or(0)
    }

    /// Datagrams that may still be on the way: sent, neither known to
    /// have arrived nor judged lost (RFC 6675's pipe).
    fn in_flight(&self) -> usize {
        self.sent - self.sacked - self.lost
    }

    /// Whether `transmit` has something to send right now.
    pub(crate) fn has_work(&self) -> bool {
        self.lost > 0 || self.probe_due || self.can_send_new()
    }

    /// Writes the next data datagram into `out`: a retransmission if one is
    /// due, else a new fragment the windows allow.
    pub(crate) fn transmit(
        &mut self,
        now: u64,
        ack: AckInfo,
        out: &mut [u8],
        stats: &mut Stats,
    ) -> Option<usize> {
        let retransmit = if self.lost > 0 {
            self.frags.iter().take(self.sent).position(|f| f.lost)
        } else {
            None
        };
        let idx = match retransmit {
            Some(i) => i,
            None if self.can_send_new() => self.sent,
            None => return None,
        };
        let f = &mut self.frags[idx];
        let n = HEADER_LEN + usize::from(f.len);
        let out = out.get_mut(..n)?;
        let flags = if std::mem::take(&mut f.probe) {
            stats.tail_probes += 1;
            f.flags | PROBE
        } else {
            f.flags
        };
        Header::data(self.una.plus(idx as u32), flags, f.len, ack).write(out);
        self.ring.copy_out(f.off, &mut out[HEADER_LEN..]);
        self.serial += 1;
        f.serial = self.serial;
        if f.transmissions == 0 {
            f.first_serial = self.serial;
        }
        f.sent_at = now;
        f.transmissions = f.transmissions.saturating_add(1);
        if retransmit.is_some() {
            f.lost = false;
            self.lost -= 1;
            stats.retransmits += 1;
        } else {
            self.sent += 1;
        }
        if self.rto_deadline.is_none() {
            self.rto_deadline = Some(now.saturating_add(self.rtt.rto()));
        }
        self.arm_probe(now);
        Some(n)
    }

    /// Arms the tail-loss probe for the datagrams in flight, counting from
    /// `now` (the last transmission or the last ack). Not before a round
    /// trip was measured, not twice in an episode, not during a recovery
    /// (losses known and being resent), not when the retransmission timeout
    /// comes first anyway, and not while datagrams in flight lie past what
    /// an ack can report: the last of them may well have arrived
    /// unreported, and resending it would be waste.
    fn arm_probe(&mut self, now: u64) {
        self.pto_deadline = None;
        let (Some(srtt), Some(rto)) = (self.rtt.srtt(), self.rto_deadline) else {
            return;
        };
        let reach = self.reach();
        if self.probed || self.lost > 0 || self.sent == 0 || self.sent > reach {
            return;
        }
        let mut pto = srtt.saturating_mul(2).max(PROBE_FLOOR_NS);
        if (self.sent as u64) < u64::from(self.ack_every) {
            pto = pto.saturating_add(self.ack_delay);
        }
        let at = now.saturating_add(pto);
        if at < rto {
            self.pto_deadline = Some(at);
        }
    }

    /// Sends the last datagram in flight again as a probe (see the module
    /// docs). Its ack either covers it or shows the hole before it; the
    /// retransmission timeout restarts, so that it does not fire before
    /// that ack can be back (RFC 8985, 7.3).
    fn on_probe_timeout(&mut self, now: u64) {
        self.pto_deadline = None;
        self.probed = true;
        let Some(idx) = self.frags.iter().take(self.sent).rposition(|f| !f.sacked) else {
            return;
        };
        let restart = now.saturating_add(self.rtt.rto());
        self.rto_deadline = Some(self.rto_deadline.map_or(restart, |d| d.max(restart)));
        let f = &mut self.frags[idx];
        f.probe = true;
        f.timed_out = true;
        if self.undo.is_some_and(|u| u.episode == f.suspect_of) {
            // Its ack could then answer the probe or the retransmission
            // before it: no longer evidence that the loss was false.
            self.undo = None;
        }
        if !f.lost {
            f.lost = true;
            self.lost += 1;
        }
    }

    /// Whether a window probe is due; clears it.
    pub(crate) fn take_probe(&mut self) -> bool {
        std::mem::take(&mut self.probe_due)
    }

    /// Applies the acknowledgement a datagram carries. Refuses, changing
    /// nothing, an ack of sequence numbers never sent.
    pub(crate) fn on_ack(
        &mut self,
        ack: AckInfo,
        now: u64,
        stats: &mut Stats,
    ) -> Result<(), DatagramError> {
        let sent_end = self.una.plus(self.sent as u32);
        if sent_end.before(ack.cum) {
            return Err(DatagramError::AckOutOfRange);
        }
        if ack.sack != 0 {
            let highest = ack.cum.plus(64 - ack.sack.leading_zeros());
            if !highest.before(sent_end) {
                return Err(DatagramError::AckOutOfRange);
            }
        }

        let was_probing = self.sent == 0;
        let delivered_before = self.delivered_serial;
        let mut progress = false;
        // The newly acked datagram transmitted last: most likely the one
        // that drew this ack, so the only round-trip sample taken, and only
        // if it was transmitted once (Karn's rule). An older datagram whose
        // own ack was lost would measure that loss, not the path.
        let mut newest: Option<Frag> = None;

        let mut arrived = 0u32;
        let acked = ack.cum.since(self.una);
        if acked > 0 {
            for _ in 0..acked {
                let Some(f) = self.frags.pop_front() else {
                    break;
                };
                if f.lost {
                    self.lost -= 1;
                }
                if f.sacked {
                    self.sacked -= 1;
                } else {
                    arrived += 1;
                    self.delivered(&f, delivered_before, now, &mut newest, stats);
                }
                self.ring.release_to(f.off + u64::from(f.len));
            }
            self.una = ack.cum;
            self.sent -= acked as usize;
            progress = true;
            // RFC 6298 5.3: new data acknowledged, restart the timer.
            self.rto_deadline = None;
        }

        let mut bits = ack.sack;
        while bits != 0 {
            let i = bits.trailing_zeros();
            bits &= bits - 1;
            let Ok(idx) = usize::try_from(ack.cum.plus(1 + i).since(self.una)) else {
                continue; // already cumulatively acked
            };
            let f = self.frags[idx];
            if !f.sacked {
                arrived += 1;
                self.delivered(&f, delivered_before, now, &mut newest, stats);
                self.sacked += 1;
                let f = &mut self.frags[idx];
                f.sacked = true;
                if f.lost {
                    f.lost = false;
                    self.lost -= 1;
                }
                progress = true;
            }
        }

        // Acks can arrive out of order: keep the furthest reach and edge
        // seen. The receiver's edge never moves back; the first ack
        // replaces our guess, in case the peer's window is smaller than ours.
        let reach = ack.cum.plus(SACK_BITS + 1);
        if self.sack_reach.before(reach) {
            self.sack_reach = reach;
        }
        let edge = ack.cum.plus(u32::from(ack.wnd));
        if !self.peer_heard || self.peer_edge.before(edge) {
            self.peer_edge = edge;
            self.peer_heard = true;
        }
        if let Some(f) = newest.filter(|f| f.transmissions == 1) {
            self.rtt.on_sample(now.saturating_sub(f.sent_at));
        }
        if arrived > 0 {
            self.cc.on_delivered(arrived, self.una);
        }
        if progress {
            self.detect_losses(now);
            self.retries = 0;
            self.probed = false;
            self.rtt.reset_backoff();
        } else if was_probing {
            // The peer is alive, its window still closed: keep probing, at
            // the backed-off pace (like TCP's persist timer).
            self.retries = 0;
        }
        self.rearm(now);
        if progress {
            self.arm_probe(now);
        }
        Ok(())
    }

    /// Notes that `f` arrived; `delivered_before` is what earlier acks had
    /// shown to have arrived.
    fn delivered(
        &mut self,
        f: &Frag,
        delivered_before: u64,
        now: u64,
        newest: &mut Option<Frag>,
        stats: &mut Stats,
    ) {
        self.delivered_serial = self.delivered_serial.max(f.serial);
        if newest.is_none_or(|n| n.serial < f.serial) {
            *newest = Some(*f);
        }
        let spurious = f.transmissions > 1
            && self
                .rtt
                .min_rtt()
                .is_some_and(|m| now.saturating_sub(f.sent_at) < m / 2);
        self.settle_suspect(f, f.transmissions == 1 || spurious);
        let late_original = if f.transmissions == 1 {
            true
        } else {
            // Acked sooner after the retransmission than half the shortest
            // round trip: the original arrived after all (Eifel detection,
            // RFC 3522, with the minimum round trip instead of timestamps;
            // half of it, because an idle path can be quicker than any
            // round trip measured under load).
            stats.spurious_retransmits += u64::from(spurious);
            // An original that outlived a retransmission timeout says how
            // slow the path was, not how deeply it reorders.
            spurious && !f.timed_out
        };
        // The original arrived after transmissions this much later that
        // earlier acks had already reported: the path reorders this deeply.
        if late_original {
            if let Some(depth) = delivered_before.checked_sub(f.first_serial) {
                if depth >= self.reorder {
                    self.reorder = (depth + 1).min(self.max_reorder);
                }
            }
        }
    }

    /// Marks as lost every datagram in flight that was transmitted at least
    /// `reorder` transmissions before one known to have arrived, among those
    /// acks can report (past the reach of the bitmap, arrived and missing
    /// look the same).
    fn detect_losses(&mut self, now: u64) {
        let (in_flight, lost_before) = (self.in_flight(), self.lost);
        // A loss outside an episode begins one (and cuts); inside, it joins
        // the episode, if that may still be undone.
        let begins = !self.cc.in_recovery();
        let episode = if begins {
            self.episodes.wrapping_add(1).max(1)
        } else {
            self.undo.map_or(0, |u| u.episode)
        };
        self.mark_losses(now, episode);
        let newly = (self.lost - lost_before) as u32;
        if newly == 0 {
            return;
        }
        if begins {
            let sent_end = self.una.plus(self.sent as u32);
            self.cc.on_loss(in_flight as u32, sent_end);
            self.episodes = episode;
            self.undo = Some(Undo {
                episode,
                pending: newly,
            });
        } else if let Some(u) = &mut self.undo {
            u.pending += newly;
        }
    }

    /// `f`, just acknowledged, was judged lost in the episode that may be
    /// undone: `early` says it arrived by an earlier transmission than the
    /// one it was judged by (the loss was false). The last false loss of
    /// the episode undoes its cut; a true one keeps it.
    fn settle_suspect(&mut self, f: &Frag, early: bool) {
        let Some(u) = &mut self.undo else {
            return;
        };
        if f.suspect_of != u.episode {
            return;
        }
        if !early {
            self.undo = None;
            return;
        }
        u.pending -= 1;
        if u.pending == 0 {
            self.undo = None;
            self.cc.undo();
        }
    }

    fn mark_losses(&mut self, now: u64, episode: u32) {
        let delivered = self.delivered_serial;
        let reorder = self.reorder;
        // A retransmission is not judged before a round trip has passed:
        // the transmissions after it are often other retransmissions, sent
        // in the same instant and as likely to be reordered.
        let settle = self.rtt.srtt().unwrap_or(0);
        let reach = self.reach();
        for f in self.frags.iter_mut().take(self.sent.min(reach)) {
            if f.sacked || f.lost {
                continue;
            }
            if f.transmissions > 1 && now.saturating_sub(f.sent_at) < settle {
                continue;
            }
            if f.serial + reorder <= delivered {
                f.lost = true;
                f.suspect_of = episode;
                self.lost += 1;
            } else if f.transmissions == 1 {
                // First transmissions go out in sequence order and every
                // retransmission later than its original, so everything
                // after a first transmission was transmitted later still:
                // nothing further can qualify. This keeps the scan O(1)
                // while nothing is lost.
                break;
            }
        }
    }

    /// Handles an expired timer: the tail-loss probe's, unless the
    /// retransmission timeout is due too.
    pub(crate) fn on_timeout(&mut self, now: u64, stats: &mut Stats) -> Timeout {
        if self.pto_deadline.is_some_and(|p| p <= now) && self.rto_deadline.is_none_or(|r| r > now)
        {
            self.on_probe_timeout(now);
            return Timeout::Alive;
        }
        self.rto_deadline = None;
        self.pto_deadline = None;
        // What the timeout resends is not probed again in this episode.
        self.probed = true;
        let probing = self.sent == 0 && !self.frags.is_empty() && !self.can_send_new();
        if self.sent == 0 && !probing {
            return Timeout::Alive;
        }
        self.retries = self.retries.saturating_add(1);
        if self.retries > self.max_retries {
            return Timeout::PeerLost;
        }
        self.rtt.back_off();
        if probing {
            self.probe_due = true;
        } else {
            stats.timeouts += 1;
            self.cc.on_timeout(self.in_flight() as u32);
            self.undo = None;
            // The oldest hole; if everything in flight was selectively acked
            // the cumulative ack was lost, and resending the oldest draws a
            // fresh one.
            let idx = self
                .frags
                .iter()
                .take(self.sent)
                .position(|f| !f.sacked)
                .unwrap_or(0);
            let f = &mut self.frags[idx];
            f.timed_out = true;
            if !f.lost {
                f.lost = true;
                self.lost += 1;
            }
        }
        self.rto_deadline = Some(now.saturating_add(self.rtt.rto()));
        Timeout::Alive
    }

    /// Arms the timer while data is in flight or a closed peer window holds
    /// queued data back (then it paces window probes), disarms it otherwise.
    pub(crate) fn rearm(&mut self, now: u64) {
        let needed = self.sent > 0 || (!self.frags.is_empty() && !self.can_send_new());
        if !needed {
            self.rto_deadline = None;
            self.pto_deadline = None;
            self.probed = false;
            self.probe_due = false;
            self.retries = 0;
        } else if self.rto_deadline.is_none() {
            self.rto_deadline = Some(now.saturating_add(self.rtt.rto()));
        }
    }

    pub(crate) fn deadline(&self) -> Option<u64> {
        match (self.rto_deadline, self.pto_deadline) {
            (Some(r), Some(p)) => Some(r.min(p)),
            (r, p) => r.or(p),
        }
    }

    pub(crate) fn all_acked(&self) -> bool {
        self.frags.is_empty()
    }

    pub(crate) fn fill_stats(&self, stats: &mut Stats) {
        stats.srtt_ns = self.rtt.srtt().unwrap_or(0);
        stats.rto_ns = self.rtt.rto();
        stats.cwnd = u64::from(self.cc.window());
        stats.window_cuts = self.cc.cuts();
        stats.window_undos = self.cc.undos();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ReliableConfig {
        ReliableConfig {
            mtu: HEADER_LEN + 10,
            window: 8,
            // Loss detection and timers, not congestion control (its own
            // tests below): the whole window may go at once.
            initial_window: 8,
            max_message: 100,
            send_buffer: 100,
            ..ReliableConfig::default()
        }
    }

    fn ack(cum: u32, sack: u64) -> AckInfo {
        AckInfo {
            cum: Seq::new(cum),
            sack,
            wnd: 8,
        }
    }

    /// Transmits everything the sender will, returning the sequence numbers.
    fn drain(s: &mut Sender, now: u64) -> Vec<u32> {
        let mut out = [0; 64];
        let mut stats = Stats::default();
        let mut seqs = Vec::new();
        while s.transmit(now, ack(0, 0), &mut out, &mut stats).is_some() {
            seqs.push(u32::from_le_bytes(out[8..12].try_into().unwrap()));
        }
        seqs
    }

    #[test]
    fn messages_are_cut_into_mtu_sized_fragments() {
        let mut s = Sender::new(&cfg());
        s.queue(&[7; 25]).unwrap();
        s.queue(&[]).unwrap();
        let lens: Vec<_> = s.frags.iter().map(|f| (f.len, f.flags)).collect();
        assert_eq!(lens, [(10, FIRST), (10, 0), (5, LAST), (0, FIRST | LAST)]);
    }

    #[test]
    fn a_full_buffer_refuses_the_whole_message() {
        let mut s = Sender::new(&cfg());
        s.queue(&[1; 90]).unwrap();
        assert_eq!(s.queue(&[1; 11]), Err(Error::WindowFull));
        assert_eq!(s.frags.len(), 9);
        s.queue(&[1; 10]).unwrap();
        assert_eq!(
            s.queue(&[1; 101]),
            Err(Error::TooLarge { len: 101, max: 100 })
        );
    }

    #[test]
    fn the_window_bounds_what_is_in_flight() {
        let mut s = Sender::new(&cfg());
        s.queue(&[1; 100]).unwrap();
        assert_eq!(drain(&mut s, 0), (0..8).collect::<Vec<_>>());
        s.on_ack(ack(3, 0), 10, &mut Stats::default()).unwrap();
        assert_eq!(drain(&mut s, 10), [8, 9]);
    }

    #[test]
    fn one_hole_is_retransmitted_alone_once_three_later_arrive() {
        let mut s = Sender::new(&cfg());
        s.queue(&[1; 80]).unwrap();
        assert_eq!(drain(&mut s, 0).len(), 8);
        // 1 lost; 2 and 3 arrived: not yet enough evidence.
        s.on_ack(ack(1, 0b11), 5, &mut Stats::default()).unwrap();
        assert_eq!(drain(&mut s, 5), Vec::<u32>::new());
        s.on_ack(ack(1, 0b111), 6, &mut Stats::default()).unwrap();
        assert_eq!(drain(&mut s, 6), [1]);
        assert!(s.rto_deadline.is_some());
    }

    #[test]
    fn acks_of_unsent_data_are_refused_without_effect() {
        let mut s = Sender::new(&cfg());
        s.queue(&[1; 30]).unwrap();
        drain(&mut s, 0);
        assert_eq!(
            s.on_ack(ack(4, 0), 1, &mut Stats::default()),
            Err(DatagramError::AckOutOfRange)
        );
        assert_eq!(
            s.on_ack(ack(1, 0b10), 1, &mut Stats::default()),
            Err(DatagramError::AckOutOfRange)
        );
        assert_eq!(s.frags.len(), 3);
        s.on_ack(ack(1, 0b1), 1, &mut Stats::default()).unwrap();
        assert!(s.frags[1].sacked);
    }

    /// A sender with one round trip measured (100 us) and nothing in
    /// flight, at time 100 us.
    fn measured() -> Sender {
        let mut s = Sender::new(&cfg());
        s.queue(b"x").unwrap();
        drain(&mut s, 0);
        s.on_ack(ack(1, 0), 100_000, &mut Stats::default()).unwrap();
        assert_eq!(s.rtt.srtt(), Some(100_000));
        s
    }

    /// Transmits the next datagram: its sequence number and whether it is
    /// flagged as a probe.
    fn next(s: &mut Sender, now: u64, stats: &mut Stats) -> Option<(u32, bool)> {
        let mut out = [0; 64];
        s.transmit(now, ack(0, 0), &mut out, stats)?;
        Some((
            u32::from_le_bytes(out[8..12].try_into().unwrap()),
            out[2] & PROBE != 0,
        ))
    }

    #[test]
    fn a_lone_unanswered_datagram_is_probed_long_before_the_timeout() {
        let mut s = measured();
        let mut stats = Stats::default();
        s.queue(b"y").unwrap();
        assert_eq!(next(&mut s, 200_000, &mut stats), Some((1, false)));
        let rto = s.rto_deadline.unwrap();
        // Two round trips, plus the peer's ack delay: its ack may wait.
        let pto = 200_000 + 2 * 100_000 + nanos(cfg().ack_delay);
        assert_eq!(s.deadline(), Some(pto));
        assert!(pto < rto);
        assert_eq!(s.on_timeout(pto, &mut stats), Timeout::Alive);
        assert_eq!(next(&mut s, pto, &mut stats), Some((1, true)));
        assert_eq!((stats.tail_probes, stats.timeouts), (1, 0));
        // Not backed off, restarted from the probe so that it cannot fire
        // before the probe's ack is back, and no second probe.
        assert_eq!(s.rto_deadline, Some(pto + s.rtt.rto()));
        assert!(s.rto_deadline.unwrap() > rto);
        assert_eq!(s.deadline(), s.rto_deadline);
        assert_eq!(next(&mut s, pto, &mut stats), None);
    }

    #[test]
    fn a_burst_probes_its_last_datagram_after_two_round_trips() {
        let mut s = measured();
        let mut stats = Stats::default();
        s.queue(&[1; 30]).unwrap();
        assert_eq!(drain(&mut s, 200_000), [1, 2, 3]);
        // The first arrived; the tail did not. Two in flight: the peer acks
        // them at once, so no ack delay is allowed for.
        s.on_ack(ack(2, 0), 300_000, &mut stats).unwrap();
        assert_eq!(s.deadline(), Some(300_000 + 2 * 100_000));
        s.on_timeout(500_000, &mut stats);
        assert_eq!(next(&mut s, 500_000, &mut stats), Some((3, true)));
        // Its ack shows 3 arrived and 2 did not: progress, so the next
        // probe may go, for 2, the last one not acknowledged.
        s.on_ack(ack(2, 0b1), 510_000, &mut stats).unwrap();
        assert_eq!(s.deadline(), Some(510_000 + 2 * 100_000));
        s.on_timeout(710_000, &mut stats);
        assert_eq!(next(&mut s, 710_000, &mut stats), Some((2, true)));
        assert_eq!((stats.tail_probes, stats.timeouts), (2, 0));
    }

    #[test]
    fn when_both_timers_are_due_the_timeout_wins() {
        let mut s = measured();
        let mut stats = Stats::default();
        s.queue(b"y").unwrap();
        next(&mut s, 200_000, &mut stats);
        let rto = s.rto_deadline.unwrap();
        assert!(s.pto_deadline.unwrap() < rto);
        s.on_timeout(rto, &mut stats);
        assert_eq!(next(&mut s, rto, &mut stats), Some((1, false)));
        assert_eq!((stats.tail_probes, stats.timeouts), (0, 1));
        assert_eq!(s.pto_deadline, None);
    }

    #[test]
    fn no_probe_while_known_losses_are_resent() {
        let mut s = measured();
        let mut stats = Stats::default();
        s.queue(&[1; 60]).unwrap();
        assert_eq!(drain(&mut s, 200_000).len(), 6);
        // 1 is lost (three later ones arrived) and waits to be resent.
        s.on_ack(ack(1, 0b111), 300_000, &mut stats).unwrap();
        assert_eq!(s.lost, 1);
        assert_eq!(s.pto_deadline, None);
        assert_eq!(next(&mut s, 300_000, &mut stats), Some((1, false)));
    }

    #[test]
    fn no_probe_before_a_round_trip_was_measured() {
        let mut s = Sender::new(&cfg());
        s.queue(b"x").unwrap();
        drain(&mut s, 0);
        assert_eq!(s.deadline(), s.rto_deadline);
        assert_eq!(s.pto_deadline, None);
    }

    #[test]
    fn everything_acked_disarms_the_probe() {
        let mut s = measured();
        s.queue(b"y").unwrap();
        next(&mut s, 200_000, &mut Stats::default());
        assert!(s.pto_deadline.is_some());
        s.on_ack(ack(2, 0), 250_000, &mut Stats::default()).unwrap();
        assert_eq!((s.deadline(), s.pto_deadline), (None, None));
    }

    #[test]
    fn timeouts_back_off_and_end_in_peer_lost() {
        let c = ReliableConfig {
            max_retries: 2,
            ..cfg()
        };
        let mut s = Sender::new(&c);
        let mut stats = Stats::default();
        s.queue(b"x").unwrap();
        drain(&mut s, 0);
        let first = s.deadline().unwrap();
        assert_eq!(s.on_timeout(first, &mut stats), Timeout::Alive);
        let second = s.deadline().unwrap();
        assert_eq!(second - first, 2 * first);
        assert_eq!(drain(&mut s, first), [0]);
        assert_eq!(s.on_timeout(second, &mut stats), Timeout::Alive);
        assert_eq!(
            s.on_timeout(s.deadline().unwrap(), &mut stats),
            Timeout::PeerLost
        );
        assert_eq!(stats.timeouts, 2);
    }

    #[test]
    fn a_closed_peer_window_arms_probes() {
        let mut s = Sender::new(&cfg());
        let mut stats = Stats::default();
        s.queue(&[1; 30]).unwrap();
        drain(&mut s, 0);
        s.on_ack(
            AckInfo {
                cum: Seq::new(3),
                sack: 0,
                wnd: 0,
            },
            1,
            &mut Stats::default(),
        )
        .unwrap();
        s.queue(b"more").unwrap();
        assert!(!s.has_work());
        s.rearm(1);
        let t = s.deadline().expect("probe timer");
        assert_eq!(s.on_timeout(t, &mut stats), Timeout::Alive);
        assert!(s.take_probe());
        s.on_ack(
            AckInfo {
                cum: Seq::new(3),
                sack: 0,
                wnd: 1,
            },
            t + 1,
            &mut Stats::default(),
        )
        .unwrap();
        assert_eq!(s.retries, 0);
        assert_eq!(drain(&mut s, t + 1), [3]);
    }

    #[test]
    fn only_datagrams_an_ack_can_report_on_are_judged_lost() {
        let mut s = Sender::new(&ReliableConfig {
            window: 256,
            initial_window: 256,
            max_message: 4000,
            send_buffer: 4000,
            ..cfg()
        });
        let wide = |cum| AckInfo {
            cum: Seq::new(cum),
            sack: 0,
            wnd: 256,
        };
        let mut stats = Stats::default();
        s.queue(&[1; 2000]).unwrap();
        let mut out = [0; 64];
        for _ in 0..200 {
            s.transmit(0, wide(0), &mut out, &mut stats).unwrap();
        }
        // 0..=99 were dropped, 100..=199 arrived: no ack can say so (the
        // bitmap ends 64 past the hole). The timer resends 0.
        let t = s.deadline().unwrap();
        s.on_timeout(t, &mut stats);
        assert_eq!(drain(&mut s, t), [0]);
        // Its ack reports a datagram sent after all the others: by
        // transmission order every one still unacked is lost, but only
        // 1..=65 lie within the ack's reach; 66.. may well have arrived.
        s.on_ack(wide(1), t + 10, &mut stats).unwrap();
        assert_eq!(s.lost, 65);
        assert!(s.frags.iter().take(65).all(|f| f.lost));
    }

    /// A sender of 64-datagram windows with the default initial congestion
    /// window (10).
    fn congested() -> Sender {
        Sender::new(&ReliableConfig {
            window: 64,
            initial_window: 10,
            max_message: 1000,
            send_buffer: 1000,
            ..cfg()
        })
    }

    fn wide(cum: u32, sack: u64) -> AckInfo {
        AckInfo {
            cum: Seq::new(cum),
            sack,
            wnd: 64,
        }
    }

    #[test]
    fn the_congestion_window_opens_with_the_acks() {
        let mut s = congested();
        s.queue(&[1; 1000]).unwrap();
        assert_eq!(drain(&mut s, 0).len(), 10);
        s.on_ack(wide(5, 0), 10, &mut Stats::default()).unwrap();
        // Five arrived: the window grew by five and five left it.
        assert_eq!(drain(&mut s, 10), (10..20).collect::<Vec<_>>());
        let mut stats = Stats::default();
        s.fill_stats(&mut stats);
        assert_eq!((stats.cwnd, stats.window_cuts), (15, 0));
    }

    #[test]
    fn a_loss_halves_the_congestion_window_and_a_timeout_empties_it() {
        let mut s = congested();
        let mut stats = Stats::default();
        s.queue(&[1; 1000]).unwrap();
        assert_eq!(drain(&mut s, 0).len(), 10);
        // 0 lost, 1..=3 arrived: fast retransmit, and half of the 7 still
        // in flight.
        s.on_ack(wide(0, 0b111), 10, &mut stats).unwrap();
        assert_eq!(drain(&mut s, 10), [0]);
        s.fill_stats(&mut stats);
        assert_eq!((stats.cwnd, stats.window_cuts), (3, 1));
        // The timer fires with nothing heard since: one datagram in flight.
        let t = s.rto_deadline.unwrap();
        s.on_timeout(t, &mut stats);
        s.fill_stats(&mut stats);
        assert_eq!((stats.cwnd, stats.window_cuts), (1, 2));
    }

    /// Ten datagrams in flight at a window of 10, a round trip of 1 us
    /// measured, then an ack at 1 us showing `sack` arrived (from 1 on) and
    /// the rest before them missing: those are resent at once.
    fn reordered(sack: u64, stats: &mut Stats) -> Sender {
        let mut s = congested();
        s.queue(&[1; 1000]).unwrap();
        assert_eq!(drain(&mut s, 0).len(), 10);
        s.on_ack(wide(0, sack), 1_000, stats).unwrap();
        let missing = sack.trailing_zeros() as usize + 1;
        assert_eq!(drain(&mut s, 1_000).len(), missing);
        s.fill_stats(stats);
        assert_eq!(stats.window_cuts, 1);
        s
    }

    /// An ack of all ten datagrams arrives at `at`; `stats` then shows
    /// the sender's figures.
    fn all_acked_at(s: &mut Sender, at: u64, stats: &mut Stats) {
        s.on_ack(wide(10, 0), at, stats).unwrap();
        s.fill_stats(stats);
    }

    #[test]
    fn a_cut_for_a_loss_that_proves_false_is_undone() {
        let mut stats = Stats::default();
        let mut s = reordered(0b111, &mut stats);
        // 1..=3 grew the window to 13 before 0 was judged lost and the 7 in
        // flight halved it.
        assert_eq!(stats.cwnd, 3);
        // 0's ack comes 10 ns after the retransmission: the original's.
        all_acked_at(&mut s, 1_010, &mut stats);
        assert_eq!((stats.spurious_retransmits, stats.window_undos), (1, 1));
        // Back to 13, then slow start on with the 7 acknowledged.
        assert_eq!(stats.cwnd, 20);
    }

    #[test]
    fn a_cut_for_a_loss_that_was_real_stays() {
        let mut stats = Stats::default();
        let mut s = reordered(0b111, &mut stats);
        // 0's ack comes a round trip after the retransmission: its own.
        all_acked_at(&mut s, 2_000, &mut stats);
        assert_eq!((stats.spurious_retransmits, stats.window_undos), (0, 0));
        // Congestion avoidance from 3: 7 acknowledged make two steps.
        assert_eq!(stats.cwnd, 5);
    }

    #[test]
    fn a_probe_of_a_datagram_judged_lost_keeps_its_cut() {
        let mut stats = Stats::default();
        // Ten datagrams, all there is; 0 missing while 1..=9 arrived: 0 is
        // judged lost and resent at 1 us.
        let mut s = congested();
        s.queue(&[1; 100]).unwrap();
        assert_eq!(drain(&mut s, 0).len(), 10);
        s.on_ack(wide(0, 0x1ff), 1_000, &mut stats).unwrap();
        assert_eq!(drain(&mut s, 1_000), [0]);
        // Nothing heard since: the tail-loss probe sends 0 once more.
        let t = s.pto_deadline.expect("a probe armed");
        assert_eq!(s.on_timeout(t, &mut stats), Timeout::Alive);
        assert_eq!(drain(&mut s, t), [0]);
        // An ack right after the probe may answer the retransmission: it
        // does not show the loss false.
        all_acked_at(&mut s, t + 10, &mut stats);
        assert_eq!(stats.window_undos, 0);
    }

    #[test]
    fn one_real_loss_in_an_episode_keeps_its_cut() {
        let mut stats = Stats::default();
        // 0 and 1 missing, 2..=4 arrived: both judged lost and resent.
        let mut s = reordered(0b1110, &mut stats);
        // 0's original turns up at once, 1 needed its retransmission.
        s.on_ack(wide(1, 0b1110), 1_010, &mut stats).unwrap();
        s.on_ack(wide(10, 0), 2_000, &mut stats).unwrap();
        s.fill_stats(&mut stats);
        assert_eq!((stats.spurious_retransmits, stats.window_undos), (1, 0));
        assert!(stats.cwnd < 10, "window {}", stats.cwnd);
    }

    #[test]
    fn a_timed_out_original_arriving_late_is_not_reordering() {
        let mut s = Sender::new(&ReliableConfig {
            window: 32,
            initial_window: 32,
            ..cfg()
        });
        let ack = |cum, sack| AckInfo {
            cum: Seq::new(cum),
            sack,
            wnd: 32,
        };
        let mut stats = Stats::default();
        // A first round trip: 100 ns.
        s.queue(b"x").unwrap();
        drain(&mut s, 0);
        s.on_ack(ack(1, 0), 100, &mut stats).unwrap();
        s.queue(&[1; 100]).unwrap();
        assert_eq!(drain(&mut s, 1_000).len(), 10);
        let t = s.rto_deadline.unwrap();
        s.on_timeout(t, &mut stats);
        assert_eq!(drain(&mut s, t), [1]);
        // Then the acks turn up: 2..=10 first, then the original of 1, all
        // well within a round trip of the retransmission.
        s.on_ack(ack(1, 0b1_1111_1111), t + 1, &mut stats).unwrap();
        s.on_ack(ack(11, 0), t + 2, &mut stats).unwrap();
        assert_eq!(stats.spurious_retransmits, 1);
        // The path was slow, not reordering: fast retransmit keeps its
        // threshold.
        assert_eq!(s.reorder, INITIAL_REORDER);
    }

    #[test]
    fn observed_reordering_raises_the_loss_threshold() {
        let mut s = Sender::new(&ReliableConfig {
            window: 32,
            initial_window: 32,
            ..cfg()
        });
        s.queue(&[1; 100]).unwrap();
        assert_eq!(drain(&mut s, 0).len(), 10);
        // 0 is late: 1..=5 arrive first, so 0 is judged lost...
        s.on_ack(ack(0, 0b1_1111), 1, &mut Stats::default())
            .unwrap();
        assert_eq!(s.lost, 1);
        // ...then it turns up: the path reorders by 5 transmissions.
        s.on_ack(ack(6, 0), 2, &mut Stats::default()).unwrap();
        assert_eq!((s.lost, s.reorder), (0, 6));
        // The false loss was the episode's only one: its cut is undone.
        assert_eq!((s.cc.window(), s.cc.cuts(), s.cc.undos()), (32, 1, 1));
        // 6 missing while 7..=11 arrive is no longer evidence of loss.
        s.queue(&[1; 30]).unwrap();
        assert_eq!(drain(&mut s, 3), [10, 11, 12]);
        s.on_ack(ack(6, 0b1_1111), 4, &mut Stats::default())
            .unwrap();
        assert_eq!(s.lost, 0);
        // Six later transmissions are.
        s.on_ack(ack(6, 0b11_1111), 5, &mut Stats::default())
            .unwrap();
        assert_eq!(s.lost, 1);
    }
}
