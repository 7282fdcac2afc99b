//! The receiving half: reorder slots, duplicate suppression, reassembly and
//! the acknowledgement policy.
//!
//! Slots are allocated once: `window` of them, each `mtu - HEADER_LEN`
//! bytes, indexed by `seq mod window` (the window is a power of two, so
//! the mapping survives the 2^32 wrap). A datagram is kept only if its
//! sequence number lies in `[deliver, deliver + window)`, so the buffer never
//! holds more than the window; anything older is a duplicate, anything
//! further a window violation, both dropped and counted.
//!
//! In-order fragments of a multi-datagram message are copied into the
//! reassembly buffer as soon as they arrive, freeing their slots, so a
//! message may be far larger than the window. That buffer grows to the
//! largest message received (never past `max_message`) and is then reused.
//! A single-datagram message is handed out straight from its slot, with no
//! copy. Until the application takes a finished message, later datagrams
//! wait in their slots, the advertised window shrinks, and the peer is
//! held back: that is the flow control.
//!
//! Acks: each data datagram sent carries one. Otherwise an ack-only
//! datagram goes out at once after `ack_every` in-order datagrams, after
//! anything unusual (out of order, a duplicate, a gap filled, a window
//! probe, a window that reopened), and at the latest `ack_delay` after the
//! first unacknowledged datagram.

use super::config::{nanos, ReliableConfig};
use super::error::DatagramError;
use super::header::{AckInfo, FIRST, LAST, PROBE};
use super::seq::Seq;
use super::stats::Stats;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    seq: Seq,
    len: u16,
    flags: u8,
    full: bool,
}

/// A finished message waiting for `take`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ready {
    Nothing,
    /// A single-datagram message, in the slot of `deliver`.
    InSlot,
    /// A multi-datagram message, in `reasm`.
    Reassembled,
}

pub(crate) struct Receiver {
    data: Vec<u8>,
    slots: Vec<Slot>,
    window: u32,
    max_payload: usize,
    max_message: usize,
    /// Next sequence number to hand to reassembly; slots hold
    /// `[deliver, deliver + window)`.
    deliver: Seq,
    /// Cumulative ack point: everything before it has arrived.
    next: Seq,
    /// Full slots after `next` (arrived ahead of a gap).
    held: u32,
    reasm: Vec<u8>,
    in_message: bool,
    ready: Ready,
    /// In-order data datagrams not yet acknowledged.
    unacked: u32,
    ack_every: u32,
    ack_delay: u64,
    ack_deadline: Option<u64>,
    /// The window edge the peer last heard of.
    advertised_edge: Seq,
}

impl Receiver {
    pub(crate) fn new(cfg: &ReliableConfig) -> Self {
        let max_payload = cfg.max_payload();
        let window = cfg.window as usize;
        let start = Seq::new(cfg.peer_initial_seq);
        Receiver {
            data: vec![0; window * max_payload],
            slots: vec![Slot::default(); window],
            window: cfg.window,
            max_payload,
            max_message: cfg.max_message,
            deliver: start,
            next: start,
            held: 0,
            reasm: Vec::new(),
            in_message: false,
            ready: Ready::Nothing,
            unacked: 0,
            ack_every: cfg.ack_every,
            ack_delay: nanos(cfg.ack_delay),
            ack_deadline: None,
            advertised_edge: start.plus(cfg.window),
        }
    }

    fn index(&self, seq: Seq) -> usize {
        (seq.get() & (self.window - 1)) as usize
    }

    fn payload(&self, i: usize) -> &[u8] {
        let at = i * self.max_payload;
        &self.data[at..at + usize::from(self.slots[i].len)]
    }

    /// Takes in one validated data datagram. An error is fatal: the peer's
    /// fragments do not form messages.
    pub(crate) fn on_data(
        &mut self,
        seq: Seq,
        flags: u8,
        payload: &[u8],
        now: u64,
        stats: &mut Stats,
    ) -> Result<(), DatagramError> {
        if seq.before(self.next) {
            // Our ack was probably lost: repeat it at once.
            stats.duplicates += 1;
            self.ack_now(now);
            return Ok(());
        }
        if seq.offset_from(self.deliver) >= self.window {
            stats.out_of_window += 1;
            self.ack_now(now);
            return Ok(());
        }
        let i = self.index(seq);
        if self.slots[i].full {
            stats.duplicates += 1;
            self.ack_now(now);
            return Ok(());
        }
        debug_assert!(payload.len() <= self.max_payload, "decode() bounds it");
        // A tail-loss probe: the sender waits for this ack to learn what
        // arrived, and delaying it would only delay the recovery.
        if flags & PROBE != 0 {
            self.ack_now(now);
        }
        let flags = flags & (FIRST | LAST);
        let at = i * self.max_payload;
        self.data[at..at + payload.len()].copy_from_slice(payload);
        self.slots[i] = Slot {
            seq,
            // decode() bounds the payload by max_payload <= u16::MAX.
            len: payload.len() as u16,
            flags,
            full: true,
        };
        if seq != self.next {
            stats.out_of_order += 1;
            self.held += 1;
            self.ack_now(now);
            return Ok(());
        }
        let filled_gap = self.held > 0;
        self.next = self.next.plus(1);
        while self.held > 0 {
            let s = self.slots[self.index(self.next)];
            if !(s.full && s.seq == self.next) {
                break;
            }
            self.next = self.next.plus(1);
            self.held -= 1;
        }
        self.unacked = self.unacked.saturating_add(1);
        if filled_gap || self.unacked >= self.ack_every {
            self.ack_now(now);
        } else if self.ack_deadline.is_none() {
            self.ack_deadline = Some(now.saturating_add(self.ack_delay));
        }
        self.pump()
    }

    /// Moves in-order fragments into reassembly until a message is finished
    /// or the next fragment has not arrived.
    fn pump(&mut self) -> Result<(), DatagramError> {
        while self.ready == Ready::Nothing && self.deliver != self.next {
            let i = self.index(self.deliver);
            let Slot { len, flags, .. } = self.slots[i];
            let len = usize::from(len);
            if self.in_message == (flags & FIRST != 0) {
                return Err(DatagramError::BrokenMessage);
            }
            let max = self.max_message;
            if self.reasm.len() + len > max {
                return Err(DatagramError::MessageTooLarge { max });
            }
            if !self.in_message && flags & LAST != 0 {
                self.ready = Ready::InSlot;
                break;
            }
            let at = i * self.max_payload;
            self.reasm.extend_from_slice(&self.data[at..at + len]);
            self.slots[i].full = false;
            self.deliver = self.deliver.plus(1);
            self.in_message = flags & LAST == 0;
            if !self.in_message {
                self.ready = Ready::Reassembled;
            }
        }
        Ok(())
    }

    /// Hands the next finished message to `f`, if there is one. The error,
    /// fatal, comes from fragments behind it that do not form a message.
    pub(crate) fn take<R>(
        &mut self,
        now: u64,
        f: impl FnOnce(&[u8]) -> R,
    ) -> (Option<R>, Result<(), DatagramError>) {
        let r = match self.ready {
            Ready::Nothing => return (None, Ok(())),
            Ready::InSlot => {
                let i = self.index(self.deliver);
                let r = f(self.payload(i));
                self.slots[i].full = false;
                self.deliver = self.deliver.plus(1);
                r
            }
            Ready::Reassembled => {
                let r = f(&self.reasm);
                self.reasm.clear();
                r
            }
        };
        self.ready = Ready::Nothing;
        let pumped = self.pump();
        // Tell a held-back peer when half the window has reopened, so it
        // need not wait for its probe timer.
        let edge = self.deliver.plus(self.window);
        if edge.since(self.advertised_edge) >= (self.window / 2).max(1) as i32 {
            self.ack_now(now);
        }
        (Some(r), pumped)
    }

    /// Asks for an ack to go out with the next `poll_transmit`.
    pub(crate) fn ack_now(&mut self, now: u64) {
        self.ack_deadline = Some(self.ack_deadline.map_or(now, |d| d.min(now)));
    }

    pub(crate) fn ack_due(&self, now: u64) -> bool {
        self.ack_deadline.is_some_and(|d| d <= now)
    }

    pub(crate) fn deadline(&self) -> Option<u64> {
        self.ack_deadline
    }

    /// The acknowledgement to put on the next datagram.
    pub(crate) fn ack_info(&self) -> AckInfo {
        let mut sack = 0u64;
        if self.held > 0 {
            for bit in 0..64 {
                let s = self.next.plus(1 + bit);
                if s.offset_from(self.deliver) >= self.window {
                    break;
                }
                let slot = self.slots[self.index(s)];
                if slot.full && slot.seq == s {
                    sack |= 1 << bit;
                }
            }
        }
        let edge = self.deliver.plus(self.window);
        AckInfo {
            cum: self.next,
            sack,
            // At most the window, which is at most 2^15.
            wnd: edge.offset_from(self.next) as u16,
        }
    }

    /// Records that the current ack went out.
    pub(crate) fn ack_sent(&mut self) {
        self.unacked = 0;
        self.ack_deadline = None;
        self.advertised_edge = self.deliver.plus(self.window);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reliable::header::HEADER_LEN;

    fn rx() -> Receiver {
        Receiver::new(&ReliableConfig {
            mtu: HEADER_LEN + 4,
            window: 8,
            max_message: 10,
            send_buffer: 10,
            peer_initial_seq: u32::MAX - 1,
            ack_every: 2,
            ..ReliableConfig::default()
        })
    }

    fn seq(offset: u32) -> Seq {
        Seq::new(u32::MAX - 1).plus(offset)
    }

    fn take(r: &mut Receiver) -> Option<Vec<u8>> {
        let (m, res) = r.take(0, |m| m.to_vec());
        res.unwrap();
        m
    }

    #[test]
    fn out_of_order_fragments_are_reassembled_across_the_wrap() {
        let mut r = rx();
        let mut st = Stats::default();
        r.on_data(seq(2), LAST, b"ij", 0, &mut st).unwrap();
        r.on_data(seq(1), 0, b"efgh", 0, &mut st).unwrap();
        assert_eq!(take(&mut r), None);
        assert_eq!(r.ack_info().sack, 0b11);
        r.on_data(seq(0), FIRST, b"abcd", 0, &mut st).unwrap();
        assert_eq!(take(&mut r).as_deref(), Some(&b"abcdefghij"[..]));
        assert_eq!(take(&mut r), None);
        assert_eq!(st.out_of_order, 2);
        assert_eq!(r.ack_info().cum, seq(3));
        assert_eq!(r.ack_info().wnd, 8);
    }

    #[test]
    fn duplicates_and_datagrams_beyond_the_window_are_dropped() {
        let mut r = rx();
        let mut st = Stats::default();
        r.on_data(seq(0), FIRST | LAST, b"a", 0, &mut st).unwrap();
        r.on_data(seq(0), FIRST | LAST, b"a", 0, &mut st).unwrap();
        r.on_data(seq(3), FIRST | LAST, b"d", 0, &mut st).unwrap();
        r.on_data(seq(3), FIRST | LAST, b"d", 0, &mut st).unwrap();
        // seq(0) is still in its slot, so the window ends at seq(8).
        r.on_data(seq(8), FIRST | LAST, b"x", 0, &mut st).unwrap();
        assert_eq!((st.duplicates, st.out_of_window), (2, 1));
        assert_eq!(take(&mut r).as_deref(), Some(&b"a"[..]));
        r.on_data(seq(0), FIRST | LAST, b"a", 0, &mut st).unwrap();
        assert_eq!(st.duplicates, 3);
        assert_eq!(take(&mut r), None);
    }

    #[test]
    fn an_unread_message_shrinks_the_window() {
        let mut r = rx();
        let mut st = Stats::default();
        for i in 0..8 {
            r.on_data(seq(i), FIRST | LAST, &[i as u8], 0, &mut st)
                .unwrap();
        }
        assert_eq!(r.ack_info().wnd, 0);
        r.ack_sent();
        for i in 0..4 {
            assert_eq!(take(&mut r), Some(vec![i as u8]));
        }
        assert_eq!(r.ack_info().wnd, 4);
        // Half the window reopened: a window update is due.
        assert!(r.ack_due(0));
    }

    #[test]
    fn acks_are_delayed_until_the_second_datagram() {
        let mut r = rx();
        let mut st = Stats::default();
        r.on_data(seq(0), FIRST, b"abcd", 100, &mut st).unwrap();
        assert!(!r.ack_due(100));
        assert_eq!(r.deadline(), Some(100 + 1_000_000));
        r.on_data(seq(1), 0, b"efgh", 200, &mut st).unwrap();
        assert!(r.ack_due(200));
        r.ack_sent();
        assert_eq!(r.deadline(), None);
    }

    /// A tail-loss probe is acked at once, and its flag is not taken for a
    /// fragment flag: the message still comes out whole.
    #[test]
    fn a_probe_is_acked_at_once() {
        let mut r = rx();
        let mut st = Stats::default();
        r.on_data(seq(0), FIRST | LAST | PROBE, b"ab", 100, &mut st)
            .unwrap();
        assert!(r.ack_due(100));
        assert_eq!(take(&mut r), Some(b"ab".to_vec()));
    }

    #[test]
    fn broken_fragment_order_is_fatal() {
        let mut r = rx();
        let mut st = Stats::default();
        assert_eq!(
            r.on_data(seq(0), 0, b"ab", 0, &mut st),
            Err(DatagramError::BrokenMessage)
        );
        let mut r = rx();
        r.on_data(seq(0), FIRST, b"abcd", 0, &mut st).unwrap();
        assert_eq!(
            r.on_data(seq(1), FIRST, b"ab", 0, &mut st),
            Err(DatagramError::BrokenMessage)
        );
    }

    #[test]
    fn messages_over_the_limit_are_fatal() {
        let mut r = rx();
        let mut st = Stats::default();
        r.on_data(seq(0), FIRST, b"abcd", 0, &mut st).unwrap();
        r.on_data(seq(1), 0, b"efgh", 0, &mut st).unwrap();
        assert_eq!(
            r.on_data(seq(2), LAST, b"ijk", 0, &mut st),
            Err(DatagramError::MessageTooLarge { max: 10 })
        );
    }
}
