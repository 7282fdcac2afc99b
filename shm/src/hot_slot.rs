//! A one-entry cache in front of a free list: the index freed last is handed
//! out first. A FIFO free list hands out the buffer that has been idle the
//! longest, whose bytes have long left the caches; a stream that allocates,
//! sends and frees one buffer after another instead keeps reusing the one it
//! just freed, still in cache. One entry, taken with a swap and filled with
//! a compare-exchange from empty, needs no tag against ABA: whoever swaps an
//! index out owns it. Model-checked in `loom-tests/`.

use crate::sync::{AtomicU32, Ordering};

/// The word of an empty slot; otherwise it holds `index + 1`.
const EMPTY: u32 = 0;

/// Holds at most one free index; any thread may put or take.
///
/// ```
/// use comm_shm::HotSlot;
/// let hot = HotSlot::new();
/// assert!(hot.put(7));
/// assert!(!hot.put(8), "full: index 8 goes to the free list instead");
/// assert_eq!(hot.take(), Some(7));
/// assert_eq!(hot.take(), None);
/// ```
#[derive(Debug)]
pub struct HotSlot {
    word: AtomicU32,
}

impl Default for HotSlot {
    fn default() -> Self {
        Self::new()
    }
}

impl HotSlot {
    /// An empty slot.
    ///
    /// ```
    /// assert!(!comm_shm::HotSlot::new().is_full());
    /// ```
    pub fn new() -> Self {
        HotSlot {
            word: AtomicU32::new(EMPTY),
        }
    }

    /// Offers a freed `index` (below `u32::MAX`). `false`: the slot is
    /// taken, and the caller puts the index on its free list. Release: what
    /// the caller did with the buffer happens before its next owner's use.
    ///
    /// ```
    /// let hot = comm_shm::HotSlot::new();
    /// assert!(hot.put(0));
    /// assert!(hot.is_full());
    /// ```
    pub fn put(&self, index: u32) -> bool {
        debug_assert!(index < u32::MAX);
        self.word
            .compare_exchange(EMPTY, index + 1, Ordering::Release, Ordering::Relaxed)
            .is_ok()
    }

    /// Takes the index, if the slot holds one; the caller then owns it.
    ///
    /// ```
    /// let hot = comm_shm::HotSlot::new();
    /// hot.put(3);
    /// assert_eq!(hot.take(), Some(3));
    /// ```
    pub fn take(&self) -> Option<u32> {
        // A plain load first: an empty slot costs no write to a shared line.
        if self.word.load(Ordering::Relaxed) == EMPTY {
            return None;
        }
        self.word.swap(EMPTY, Ordering::Acquire).checked_sub(1)
    }

    /// Whether the slot holds an index (a snapshot).
    ///
    /// ```
    /// let hot = comm_shm::HotSlot::new();
    /// assert!(!hot.is_full());
    /// ```
    pub fn is_full(&self) -> bool {
        self.word.load(Ordering::Relaxed) != EMPTY
    }
}
