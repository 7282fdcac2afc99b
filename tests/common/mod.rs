//! Helpers shared by the integration tests: unique names, child processes
//! that re-run the test binary in a given role, and checksummed messages.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// This process's segments of engine `engine` still in `/dev/shm` (a test
/// that shut its engines down expects none).
pub fn shm_leftovers(engine: &str) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&format!("comm-{engine}-")))
        .collect()
}

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

/// The command `spawn_role` runs, started through `wrapper`: a program and
/// its arguments that ends by executing the arguments appended to it, such
/// as `ip netns exec NS` or `unshare ... sh -c '...; exec "$0" "$@"'`. An
/// empty `wrapper` runs the test binary directly. Stdio is left to the
/// caller.
pub fn role_command_under(wrapper: &[&str], role_test: &str, env: &[(&str, &str)]) -> Command {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(exe);
            cmd
        }
        None => Command::new(exe),
    };
    cmd.args([
        role_test,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ROLE_ENV, role_test);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// A child process that is killed and reaped when the guard goes away
/// (also when a test panics), unless it has exited already.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// Waits at most `limit` for the child to exit; `None` if it still runs.
    pub fn wait_timeout(&mut self, limit: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            match self.0.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Ok(None) => return None,
                Err(e) => panic!("waiting for child {}: {e}", self.0.id()),
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// The lines a child writes to one of its pipes, read on a helper thread so
/// that a silent or hung child cannot block the test forever.
pub struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
    /// Every line received so far, for diagnostics.
    pub seen: Vec<String>,
}

impl Lines {
    /// Starts reading `pipe` (a child's stdout or stderr).
    pub fn new(pipe: impl std::io::Read + Send + 'static) -> Lines {
        use std::io::BufRead;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// What follows `prefix` in the first line (from now on) holding it.
    /// Panics, showing what was read, if none comes within `limit` or the
    /// pipe closes first.
    pub fn expect(&mut self, prefix: &str, limit: std::time::Duration) -> String {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    // The test harness prints "test NAME ... " before the
                    // role's first line, without a newline.
                    if let Some(at) = line.find(prefix) {
                        return line[at + prefix.len()..].trim().to_owned();
                    }
                }
                Err(e) => panic!(
                    "no line with {prefix:?} ({e:?}); the child wrote: {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// Every line until the pipe closes (or `limit` passes), including those
    /// read before.
    pub fn all(&mut self, limit: std::time::Duration) -> Vec<String> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => return self.seen.clone(),
            }
        }
    }
}
