//! Tracking of zero-copy sends until the kernel's notifications say that the
//! caller's memory is no longer referenced.

use crate::conn::ConnId;

/// One zero-copy segment's state.
#[derive(Debug, Clone, Copy)]
struct Slot {
    conn: ConnId,
    token: u64,
    /// Submitted SendZc operations whose notification has not arrived yet.
    refs: u32,
    /// No further SendZc will be submitted for this segment: it was fully
    /// sent, or dropped because its connection went away.
    finished: bool,
}

/// The zero-copy segments of all connections, indexed by a slot number that
/// travels in the SQE's user data.
///
/// A segment may need several SendZc operations (partial sends); each posts
/// its own notification. The caller's buffer is free only when the segment
/// is finished and every notification has arrived.
#[derive(Debug, Default)]
pub(crate) struct Notifs {
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
}

/// Slot numbers travel in 24 bits of the user data.
const MAX_SLOTS: usize = 1 << 24;

impl Notifs {
    /// Reserves a slot for a new segment; `None` when all are taken.
    pub(crate) fn alloc(&mut self, conn: ConnId, token: u64) -> Option<u32> {
        let slot = Slot {
            conn,
            token,
            refs: 0,
            finished: false,
        };
        if let Some(i) = self.free.pop() {
            self.slots[i as usize] = Some(slot);
            return Some(i);
        }
        if self.slots.len() >= MAX_SLOTS {
            return None;
        }
        self.slots.push(Some(slot));
        u32::try_from(self.slots.len() - 1).ok()
    }

    /// Counts one more SendZc submitted for slot `i`.
    pub(crate) fn issued(&mut self, i: u32) {
        if let Some(Some(s)) = self.slots.get_mut(i as usize) {
            s.refs += 1;
        }
    }

    /// Marks slot `i` as finished; returns its owner and token if the
    /// buffer is free now.
    pub(crate) fn finish(&mut self, i: u32) -> Option<(ConnId, u64)> {
        let s = self.slots.get_mut(i as usize)?.as_mut()?;
        s.finished = true;
        self.release_if_done(i)
    }

    /// Counts one notification (or one SendZc that will post none) for
    /// slot `i`; returns its owner and token if the buffer is free now.
    pub(crate) fn notified(&mut self, i: u32) -> Option<(ConnId, u64)> {
        let s = self.slots.get_mut(i as usize)?.as_mut()?;
        s.refs = s.refs.saturating_sub(1);
        self.release_if_done(i)
    }

    fn release_if_done(&mut self, i: u32) -> Option<(ConnId, u64)> {
        let entry = self.slots.get_mut(i as usize)?;
        match *entry {
            Some(s) if s.finished && s.refs == 0 => {
                *entry = None;
                self.free.push(i);
                Some((s.conn, s.token))
            }
            _ => None,
        }
    }
}
