//! How many of the shard's pool buffers one endpoint's inbox holds, per
//! size class, so that an endpoint that stops reading cannot take them all
//! (see `PoolConfig::with_inbox_share`).
//!
//! The shard cannot see the application take a message out of the inbox
//! (an SPSC ring), only how many are still in it. So it keeps, in inbox
//! order, the class of every message it put there; whenever the ring holds
//! fewer, the oldest entries are the ones taken. No atomics beyond the
//! ring's own.

use std::collections::VecDeque;

/// Marks a message that holds no buffer of ours (read in place from a
/// peer's pool).
const NONE: u8 = u8::MAX;

pub(crate) struct InboxQuota {
    /// Class of each message in the inbox, oldest first (`NONE`: no buffer).
    queued: VecDeque<u8>,
    /// Buffers held per class.
    held: Vec<u32>,
}

impl InboxQuota {
    /// For an inbox of `capacity` messages and a pool of `classes` classes.
    /// Allocates now, so that delivering never does.
    pub(crate) fn new(capacity: usize, classes: usize) -> Self {
        InboxQuota {
            queued: VecDeque::with_capacity(capacity),
            held: vec![0; classes],
        }
    }

    /// Forgets what the application took: `in_inbox` messages are left.
    pub(crate) fn settle(&mut self, in_inbox: usize) {
        while self.queued.len() > in_inbox {
            let Some(class) = self.queued.pop_front() else {
                break;
            };
            if let Some(h) = self.held.get_mut(usize::from(class)) {
                *h -= 1;
            }
        }
    }

    /// Whether one more buffer of `class` stays within `limits`.
    pub(crate) fn admits(&self, class: u8, limits: &[u32]) -> bool {
        let i = usize::from(class);
        match (self.held.get(i), limits.get(i)) {
            (Some(&held), Some(&limit)) => held < limit,
            _ => true,
        }
    }

    /// A message went into the inbox, holding a buffer of `class` (`None`:
    /// no buffer of ours).
    pub(crate) fn push(&mut self, class: Option<u8>) {
        let class = class.unwrap_or(NONE);
        if let Some(h) = self.held.get_mut(usize::from(class)) {
            *h += 1;
        }
        self.queued.push_back(class);
    }

    /// Buffers of `class` held now.
    #[cfg(test)]
    fn held(&self, class: u8) -> u32 {
        self.held[usize::from(class)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_class_is_held_until_the_application_takes_its_messages() {
        let limits = [2, 1];
        let mut q = InboxQuota::new(8, 2);
        assert!(q.admits(0, &limits));
        q.push(Some(0));
        q.push(None);
        q.push(Some(0));
        assert!(!q.admits(0, &limits), "two small ones held");
        assert!(q.admits(1, &limits));
        q.push(Some(1));
        assert!(!q.admits(1, &limits));
        // The application took the first two (a small one and a loan).
        q.settle(2);
        assert_eq!((q.held(0), q.held(1)), (1, 1));
        assert!(q.admits(0, &limits));
        // It emptied the inbox.
        q.settle(0);
        assert_eq!((q.held(0), q.held(1)), (0, 0));
        // A class the limits do not know is not held back.
        assert!(q.admits(7, &limits));
    }
}
