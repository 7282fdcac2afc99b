//! A few [`HotSlot`]s in one cache line, in front of a free list: the
//! indices freed most recently are handed out first. One slot keeps a
//! one-at-a-time stream in cache; a stream with several buffers in flight
//! (a window of large sends) frees and takes them in turn, and with one slot
//! all but one of them would go through the FIFO free list, cycling through
//! every buffer of the class and reading each from memory long out of cache.
//! With a set, the buffers in flight keep coming back.
//!
//! Each slot is a [`HotSlot`], so an index sits in at most one slot and
//! whoever takes it owns it; the set adds only the order in which slots are
//! tried, lowest first, so that the same few slots (and indices) stay busy.
//! Model-checked in `loom-tests/`.

use crate::HotSlot;

/// Slots per set: sixteen 4-byte words, one cache line.
pub const HOT_SET_SLOTS: usize = 16;

/// Holds up to [`HOT_SET_SLOTS`] free indices; any thread may put or take.
///
/// ```
/// use comm_shm::HotSet;
/// let hot = HotSet::new();
/// assert!(hot.put(7));
/// assert!(hot.put(9));
/// assert_eq!(hot.len(), 2);
/// assert_eq!(hot.take(), Some(7));
/// assert_eq!(hot.take(), Some(9));
/// assert_eq!(hot.take(), None);
/// ```
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct HotSet {
    slots: [HotSlot; HOT_SET_SLOTS],
}

impl HotSet {
    /// An empty set.
    ///
    /// ```
    /// assert_eq!(comm_shm::HotSet::new().len(), 0);
    /// ```
    pub fn new() -> Self {
        HotSet {
            slots: std::array::from_fn(|_| HotSlot::new()),
        }
    }

    /// Offers a freed `index` (below `u32::MAX`) to the lowest empty slot.
    /// `false`: every slot is taken, and the caller puts the index on its
    /// free list. Release, as [`HotSlot::put`].
    ///
    /// ```
    /// let hot = comm_shm::HotSet::new();
    /// for i in 0..comm_shm::HOT_SET_SLOTS as u32 {
    ///     assert!(hot.put(i));
    /// }
    /// assert!(!hot.put(99), "full");
    /// ```
    pub fn put(&self, index: u32) -> bool {
        // Full slots are skipped with a plain load: a failed
        // compare-exchange would still take the line for writing.
        self.slots
            .iter()
            .any(|slot| !slot.is_full() && slot.put(index))
    }

    /// Takes the index of the lowest full slot, if any; the caller then owns
    /// it. Acquire, as [`HotSlot::take`].
    ///
    /// ```
    /// let hot = comm_shm::HotSet::new();
    /// hot.put(3);
    /// assert_eq!(hot.take(), Some(3));
    /// assert_eq!(hot.take(), None);
    /// ```
    pub fn take(&self) -> Option<u32> {
        self.slots.iter().find_map(HotSlot::take)
    }

    /// How many slots hold an index (a snapshot).
    ///
    /// ```
    /// let hot = comm_shm::HotSet::new();
    /// hot.put(1);
    /// assert_eq!(hot.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.is_full()).count()
    }

    /// Whether no slot holds an index (a snapshot).
    ///
    /// ```
    /// assert!(comm_shm::HotSet::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
