//! A flag that producers raise after publishing work and a busy-polling
//! consumer takes before draining it, so that an idle poll reads one cached
//! word instead of every source.
//!
//! Producers raise with a read-modify-write: an RMW continues the release
//! sequence of earlier raises by other producers, so a consumer whose `take`
//! reads the latest raise also sees what every earlier raiser published.
//! A plain store would break that chain and could hide a producer's work
//! behind another's raise. Model-checked in `loom-tests/`.

use crossbeam_utils::CachePadded;

use crate::sync::{AtomicBool, Ordering};

/// A "there is new work" flag between many producers and one consumer.
///
/// ```
/// use comm_shm::Nudge;
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// let work = AtomicU64::new(0);
/// let nudge = Nudge::new();
/// // Producer: publish, then raise.
/// work.store(7, Ordering::Relaxed);
/// nudge.raise();
/// // Consumer: take, then drain everything published so far.
/// if nudge.take() {
///     assert_eq!(work.load(Ordering::Relaxed), 7);
/// }
/// ```
#[derive(Debug)]
pub struct Nudge {
    raised: CachePadded<AtomicBool>,
}

impl Default for Nudge {
    fn default() -> Self {
        Self::new()
    }
}

impl Nudge {
    /// A lowered flag.
    ///
    /// ```
    /// assert!(!comm_shm::Nudge::new().take());
    /// ```
    pub fn new() -> Self {
        Nudge {
            raised: CachePadded::new(AtomicBool::new(false)),
        }
    }

    /// Says that work was published before this call.
    ///
    /// ```
    /// let nudge = comm_shm::Nudge::new();
    /// nudge.raise();
    /// assert!(nudge.take());
    /// ```
    #[inline]
    pub fn raise(&self) {
        self.raised.swap(true, Ordering::AcqRel);
    }

    /// Lowers the flag and says whether it was raised. When it was, all work
    /// published before any raise so far is visible to the caller, which must
    /// then drain every source (a raise after this call shows next time).
    ///
    /// ```
    /// let nudge = comm_shm::Nudge::new();
    /// nudge.raise();
    /// nudge.raise();
    /// assert!(nudge.take());
    /// assert!(!nudge.take());
    /// ```
    #[inline]
    pub fn take(&self) -> bool {
        // The plain load keeps an idle poll from writing the line.
        self.raised.load(Ordering::Relaxed) && self.raised.swap(false, Ordering::AcqRel)
    }

    /// Whether the flag is raised, without lowering it (for a consumer that
    /// checks for work before it parks).
    ///
    /// ```
    /// let nudge = comm_shm::Nudge::new();
    /// assert!(!nudge.is_raised());
    /// nudge.raise();
    /// assert!(nudge.is_raised());
    /// ```
    #[inline]
    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }
}
