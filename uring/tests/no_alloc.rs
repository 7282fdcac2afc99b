//! Steady-state traffic allocates nothing: after a warm-up that lets every
//! queue and buffer reach its high-water mark, the same traffic again
//! (copied records, straddling records, echoes queued from inside `poll`,
//! zero-copy sends, datagrams) makes no allocation on the ring's thread.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicUsize, Ordering};

use comm_uring::{Event, LenPrefix, Uring, UringConfig};
use common::{tcp_pair, HangGuard};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards every call unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SIZES: [usize; 6] = [0, 10, 1000, 20_000, 70_000, 150_000];

#[test]
fn steady_state_traffic_allocates_nothing() {
    let (a, b) = tcp_pair();
    let cfg = UringConfig {
        recv_buf_len: 64 << 10,
        recv_bufs: 16,
        dgram_bufs: 4,
        ..UringConfig::default()
    };
    let mut ring = Uring::new(cfg, LenPrefix).unwrap();
    let client = ring.add_stream(a).unwrap();
    let server = ring.add_stream(b).unwrap();
    let ua = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ub = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to_b = ub.local_addr().unwrap();
    let ua = ring.add_datagram(ua).unwrap();
    let _ub = ring.add_datagram(ub).unwrap();
    let body = vec![9u8; 200_000];
    let zc_body = vec![7u8; 300_000];

    let round = |ring: &mut Uring<LenPrefix>| {
        for &len in &SIZES {
            ring.send(client, &[&LenPrefix::header(len), &body[..len]])
                .unwrap();
        }
        // SAFETY: `zc_body` outlives the ring and is never written.
        unsafe {
            ring.send_zc(
                client,
                &LenPrefix::header(zc_body.len()),
                zc_body.as_ptr(),
                zc_body.len(),
                5,
            )
        }
        .unwrap();
        ring.send_to(ua, to_b, &[b"ping"]).unwrap();
        let (mut echoed, mut done, mut datagrams) = (0, 0, 0);
        let guard = HangGuard::new("no-alloc round");
        while echoed < SIZES.len() + 1 || done < 1 || datagrams < 1 {
            guard.check();
            ring.flush().unwrap();
            ring.poll_with(|out, ev| match ev {
                Event::Record { conn, bytes } if conn == server => {
                    out.send(server, &[bytes]).unwrap();
                }
                Event::Record { conn, .. } if conn == client => echoed += 1,
                Event::SendDone { token: 5, .. } => done += 1,
                Event::Datagram { .. } => datagrams += 1,
                _ => panic!("unexpected event"),
            });
            ring.park(None, std::time::Duration::from_millis(1))
                .unwrap();
        }
    };

    // How much a staging buffer or segment queue holds at once depends on
    // how fast the peer reads, so rounds alone reach a high-water mark that
    // a slower round (a loaded machine) can exceed. Bursts first grow both
    // staging buffers of both connections past all that one round queues
    // (at most its own bytes: ~0.25 MB from the client, ~0.55 MB of echoes),
    // and every queue past a round's count of segments and zero-copy sends.
    let burst = vec![3u8; 1 << 20];
    for conn in [client, server] {
        for _ in 0..2 {
            ring.send(conn, &[&LenPrefix::header(burst.len()), &burst])
                .unwrap();
            for token in 100..116 {
                // SAFETY: `zc_body` outlives the ring and is never written.
                unsafe { ring.send_zc(conn, &LenPrefix::header(10), zc_body.as_ptr(), 10, token) }
                    .unwrap();
            }
            // The first send freezes the buffer just filled; the second
            // burst goes to the other one.
            ring.flush().unwrap();
        }
    }
    let (mut records, mut done) = (0, 0);
    let guard = HangGuard::new("no-alloc bursts");
    while records < 2 * 2 * 17 || done < 2 * 2 * 16 {
        guard.check();
        ring.flush().unwrap();
        ring.poll_with(|_, ev| match ev {
            Event::Record { .. } => records += 1,
            Event::SendDone { .. } => done += 1,
            _ => panic!("unexpected event"),
        });
        ring.park(None, std::time::Duration::from_millis(1))
            .unwrap();
    }
    for _ in 0..50 {
        round(&mut ring);
    }
    COUNTING.with(|c| c.set(true));
    for _ in 0..50 {
        round(&mut ring);
    }
    COUNTING.with(|c| c.set(false));
    assert_eq!(ALLOCS.load(Ordering::Relaxed), 0);
}
