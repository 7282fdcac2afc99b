//! Helpers shared by the integration tests: socket pairs, deterministic
//! record contents, a hang guard.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use comm_uring::LenPrefix;

/// A connected pair of TCP streams on loopback.
pub fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (b, _) = listener.accept().unwrap();
    (a, b)
}

/// xorshift64*: a fixed sequence of pseudo-random numbers per seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Pseudo-random bytes that record bodies are cut from; both sides build
/// the same pool from the same seed, so a receiver checks every byte.
pub fn pool(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&rng.next().to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Bytes of a test record before its body: length prefix, sequence number,
/// offset of the body in the pool.
pub const META: usize = 4 + 8 + 4;

/// The header and metadata of record `seq` whose body is `pool[off..off + len]`.
pub fn record_head(seq: u64, off: usize, len: usize) -> [u8; META] {
    let mut h = [0u8; META];
    h[..4].copy_from_slice(&LenPrefix::header(len + META - 4));
    h[4..12].copy_from_slice(&seq.to_le_bytes());
    h[12..16].copy_from_slice(&(off as u32).to_le_bytes());
    h
}

/// Checks a received record against the pool; returns its sequence number.
pub fn check_record(rec: &[u8], pool: &[u8]) -> u64 {
    assert!(
        rec.len() >= META,
        "record of {} bytes is too short",
        rec.len()
    );
    let seq = u64::from_le_bytes(rec[4..12].try_into().unwrap());
    let off = u32::from_le_bytes(rec[12..16].try_into().unwrap()) as usize;
    let body = &rec[META..];
    assert!(
        body == &pool[off..off + body.len()],
        "record {seq}: body of {} bytes at offset {off} differs",
        body.len()
    );
    seq
}

/// Panics when a test runs far longer than it ever should (a hang, not a
/// performance check).
pub struct HangGuard(Instant, &'static str);

impl HangGuard {
    pub fn new(what: &'static str) -> HangGuard {
        HangGuard(Instant::now(), what)
    }

    pub fn check(&self) {
        assert!(
            self.0.elapsed() < Duration::from_secs(120),
            "{} hangs",
            self.1
        );
    }
}

/// Open file descriptors of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}
