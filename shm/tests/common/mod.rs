//! Helpers shared by comm-shm's integration tests.

use std::sync::atomic::{AtomicU32, Ordering};

/// A `/dev/shm` name no other test (or test process) uses.
pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "comm-test-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
