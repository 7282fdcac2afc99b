//! Helpers shared by the integration tests: unique names, child processes
//! that re-run the test binary in a given role, and checksummed messages.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Environment variable naming the role a re-executed test binary plays.
pub const ROLE_ENV: &str = "COMM_TEST_ROLE";

/// A `/dev/shm` name no other test (or test process) uses.
pub fn unique_name(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "comm-test-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs this test binary again as a separate process that executes only the
/// (ignored) test `role_test`, with `env` set. The role test returns at once
/// unless `ROLE_ENV` is set, so a plain `--ignored` run does nothing.
pub fn spawn_role(role_test: &str, env: &[(&str, &str)], stdout: Stdio) -> Child {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args([
        role_test,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ROLE_ENV, role_test)
    .stdout(stdout)
    .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn child process")
}

/// Whether this process was started by `spawn_role` for `role_test`.
pub fn is_role(role_test: &str) -> bool {
    std::env::var(ROLE_ENV).is_ok_and(|r| r == role_test)
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// Writes message `seq` of a deterministic stream into `out` (`min`..=`out.len()`
/// bytes, at least 16): sequence number, checksum, then pseudo-random bytes.
/// Returns the length used.
pub fn write_message(seq: u64, salt: u64, out: &mut [u8], min: usize) -> usize {
    let min = min.max(16);
    let span = (out.len() - min + 1) as u64;
    let len = min + (splitmix(seq ^ salt) % span) as usize;
    let mut state = splitmix(seq.wrapping_mul(31) ^ salt);
    for chunk in out[16..len].chunks_mut(8) {
        state = splitmix(state);
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    let sum = fnv1a(&out[16..len]);
    out[..8].copy_from_slice(&seq.to_le_bytes());
    out[8..16].copy_from_slice(&sum.to_le_bytes());
    len
}

/// Checks a message produced by `write_message`: its sequence number must be
/// `expected` and its checksum must match. Panics with a description otherwise.
pub fn check_message(bytes: &[u8], expected: u64) {
    assert!(
        bytes.len() >= 16,
        "message {expected} is {} bytes",
        bytes.len()
    );
    let seq = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    assert_eq!(seq, expected, "out of order or lost message");
    let sum = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
    assert_eq!(
        sum,
        fnv1a(&bytes[16..]),
        "checksum mismatch in message {seq}"
    );
}
