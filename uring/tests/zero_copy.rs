//! Zero-copy sends: every buffer comes back through SendDone exactly once,
//! only when reusing it can no longer change what the peer receives, and
//! in order with copied sends.

mod common;

use std::time::Duration;

use comm_uring::{Event, LenPrefix, SendError, Uring, UringConfig};
use common::{check_record, pool, record_head, tcp_pair, HangGuard, Rng};

const BUFS: usize = 8;
const BUF_LEN: usize = 256 << 10;

#[test]
fn send_done_comes_once_per_buffer_and_reuse_never_corrupts_data() {
    send_done_once_and_no_corruption(UringConfig::default());
}

/// With zero-copy off toward local peers, the same buffers go out by plain
/// copying sends (loopback is local) under the same contract.
#[test]
fn local_peers_get_copying_sends_with_the_same_contract() {
    send_done_once_and_no_corruption(UringConfig {
        zero_copy_to_local_peers: false,
        ..UringConfig::default()
    });
}

fn send_done_once_and_no_corruption(cfg: UringConfig) {
    let (a, b) = tcp_pair();
    let mut ring = Uring::new(cfg, LenPrefix).unwrap();
    let tx = ring.add_stream(a).unwrap();
    let rx = ring.add_stream(b).unwrap();
    let pool = pool(4 << 20, 11);
    // Half the buffers lie in a registered region, half in plain memory.
    let mut region = vec![0u8; BUFS / 2 * BUF_LEN];
    let mut plain = vec![0u8; BUFS / 2 * BUF_LEN];
    // SAFETY: `region` outlives the ring (dropped after it, see the end).
    let registered = unsafe { ring.register_region(region.as_mut_ptr(), region.len()) };
    assert!(registered, "root may register");
    let mut bufs: Vec<*mut u8> = Vec::new();
    for i in 0..BUFS / 2 {
        bufs.push(region[i * BUF_LEN..].as_mut_ptr());
        bufs.push(plain[i * BUF_LEN..].as_mut_ptr());
    }
    let mut free: Vec<usize> = (0..BUFS).collect();
    let mut in_flight = [false; BUFS];
    let mut rng = Rng::new(5);
    let total = 2_000u64;
    let (mut sent, mut received, mut done) = (0u64, 0u64, 0u64);
    let guard = HangGuard::new("zero-copy");
    while received < total || done < sent_zc(sent) {
        guard.check();
        while sent < total {
            let len = 1 + rng.below(BUF_LEN as u64) as usize;
            let off = rng.below((pool.len() - len) as u64) as usize;
            let head = record_head(sent, off, len);
            let res = if sent % 3 == 2 {
                // Every third record is copied, between zero-copy ones.
                ring.send(tx, &[&head, &pool[off..off + len]])
            } else {
                let Some(&i) = free.last() else { break };
                // SAFETY: buffer `i` is not in flight; it lives until the end.
                let buf = unsafe { std::slice::from_raw_parts_mut(bufs[i], len) };
                buf.copy_from_slice(&pool[off..off + len]);
                // SAFETY: nobody touches buffer `i` until its SendDone.
                unsafe { ring.send_zc(tx, &head, buf.as_ptr(), len, i as u64) }.map(|()| {
                    free.pop();
                    in_flight[i] = true;
                })
            };
            match res {
                Ok(()) => sent += 1,
                Err(SendError::Full) => break,
                Err(e) => panic!("{e}"),
            }
        }
        ring.flush().unwrap();
        let n = ring.poll(|ev| match ev {
            Event::Record { conn, bytes } => {
                assert_eq!(conn, rx);
                assert_eq!(check_record(bytes, &pool), received);
                received += 1;
            }
            Event::SendDone { conn, token } => {
                assert_eq!(conn, tx);
                let i = token as usize;
                assert!(
                    std::mem::take(&mut in_flight[i]),
                    "buffer {i} returned twice"
                );
                // Scribble over it at once: the receiver must not notice.
                // SAFETY: the kernel is done with buffer `i`.
                unsafe { std::ptr::write_bytes(bufs[i], 0xAA, BUF_LEN) };
                free.push(i);
                done += 1;
            }
            other => panic!("unexpected {other:?}"),
        });
        if n == 0 {
            ring.park(None, Duration::from_millis(1)).unwrap();
        }
    }
    assert_eq!(done, sent_zc(total));
    assert!(in_flight.iter().all(|f| !f));
    drop(ring);
    drop(region);
    drop(plain);
}

/// Zero-copy sends among the first `n` records (all but every third).
fn sent_zc(n: u64) -> u64 {
    n - n / 3
}

#[test]
fn an_empty_zero_copy_body_is_done_at_once() {
    let (a, b) = tcp_pair();
    let mut ring = Uring::new(UringConfig::default(), LenPrefix).unwrap();
    let tx = ring.add_stream(a).unwrap();
    let _rx = ring.add_stream(b).unwrap();
    // SAFETY: a zero-length range is never read.
    unsafe { ring.send_zc(tx, &LenPrefix::header(0), std::ptr::null(), 0, 77) }.unwrap();
    let (mut done, mut records) = (0, 0);
    let guard = HangGuard::new("empty zero-copy");
    while done == 0 || records == 0 {
        guard.check();
        ring.flush().unwrap();
        ring.poll(|ev| match ev {
            Event::SendDone { token: 77, .. } => done += 1,
            Event::Record { bytes, .. } => {
                assert_eq!(bytes, LenPrefix::header(0));
                records += 1;
            }
            other => panic!("unexpected {other:?}"),
        });
    }
    assert_eq!(done, 1);
}
