//! Link set-ups under way, per peer engine instance and direction, so that
//! two engines that connect to each other at the same moment build one link
//! between them, not two.
//!
//! Rule: a set-up arriving from a peer we are ourselves setting up a link
//! with is refused when our instance id is the lower one; the peer then waits
//! for our link to arrive. An outgoing set-up waits while an incoming one
//! from the same peer is being attached.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::Error;

#[derive(Default, Clone, Copy)]
struct UnderWay {
    outgoing: bool,
    incoming: bool,
}

#[derive(Default)]
pub(crate) struct Linking {
    table: Mutex<HashMap<u64, UnderWay>>,
    settled: Condvar,
}

/// What an outgoing set-up may do.
pub(crate) enum Outgoing {
    Go,
    /// An incoming set-up from that peer is being attached; look again after.
    Wait,
}

impl Linking {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, UnderWay>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks an outgoing set-up toward `peer`, unless one from it is under way.
    pub(crate) fn begin_outgoing(&self, peer: u64) -> Outgoing {
        let mut table = self.lock();
        let entry = table.entry(peer).or_default();
        if entry.incoming {
            return Outgoing::Wait;
        }
        entry.outgoing = true;
        Outgoing::Go
    }

    /// Marks an incoming set-up from `peer`; refused (cross-connect) when we
    /// are setting one up toward it and our instance id is the lower.
    pub(crate) fn begin_incoming(&self, peer: u64, ours: u64) -> bool {
        let mut table = self.lock();
        let entry = table.entry(peer).or_default();
        if entry.outgoing && ours < peer {
            return false;
        }
        entry.incoming = true;
        true
    }

    pub(crate) fn end_outgoing(&self, peer: u64) {
        self.end(peer, |e| e.outgoing = false);
    }

    pub(crate) fn end_incoming(&self, peer: u64) {
        self.end(peer, |e| e.incoming = false);
    }

    fn end(&self, peer: u64, clear: impl FnOnce(&mut UnderWay)) {
        let mut table = self.lock();
        if let Some(e) = table.get_mut(&peer) {
            clear(e);
            if !e.outgoing && !e.incoming {
                table.remove(&peer);
            }
        }
        drop(table);
        self.settled.notify_all();
    }

    /// Waits until no incoming set-up from `peer` is under way.
    pub(crate) fn wait_incoming(&self, peer: u64, deadline: Instant) -> Result<(), Error> {
        let mut table = self.lock();
        while table.get(&peer).is_some_and(|e| e.incoming) {
            let left = deadline
                .checked_duration_since(Instant::now())
                .ok_or(Error::Timeout)?;
            table = self
                .settled
                .wait_timeout(table, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ok(())
    }

    /// Waits until something changes (a set-up ends) or `deadline` passes.
    pub(crate) fn wait_change(&self, deadline: Instant) -> Result<(), Error> {
        let table = self.lock();
        let left = deadline
            .checked_duration_since(Instant::now())
            .ok_or(Error::Timeout)?;
        let _ = self
            .settled
            .wait_timeout(table, left.min(std::time::Duration::from_millis(10)))
            .unwrap_or_else(|e| e.into_inner());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lower_instance_refuses_a_crossing_set_up() {
        let l = Linking::default();
        assert!(matches!(l.begin_outgoing(9), Outgoing::Go));
        assert!(!l.begin_incoming(9, 3), "we are 3 < 9 and set up our own");
        assert!(l.begin_incoming(2, 3), "no outgoing toward 2");
    }

    #[test]
    fn the_higher_instance_accepts_a_crossing_set_up() {
        let l = Linking::default();
        assert!(matches!(l.begin_outgoing(1), Outgoing::Go));
        assert!(l.begin_incoming(1, 5));
    }

    #[test]
    fn an_outgoing_set_up_waits_for_an_incoming_one() {
        let l = Linking::default();
        assert!(l.begin_incoming(4, 1));
        assert!(matches!(l.begin_outgoing(4), Outgoing::Wait));
        l.end_incoming(4);
        l.wait_incoming(4, Instant::now()).unwrap();
        assert!(matches!(l.begin_outgoing(4), Outgoing::Go));
    }
}
