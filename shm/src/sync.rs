//! The atomics of the lock-free structures go through here so that, under
//! `cfg(loom)`, the model checker sees every access.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Why a futex wait returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Woken, the word no longer held the expected value, or a signal arrived.
    Woken,
    /// The timeout elapsed.
    TimedOut,
}
