//! In steady state no heap allocation happens per message, on the handler
//! path or the handle path, inline or as descriptors: a counting global
//! allocator over the whole process (no test harness threads) proves it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use comm::{Endpoint, Engine, PeerId};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn exchange(ep: &Endpoint, peer: PeerId, rounds: usize) {
    for round in 0..rounds {
        let len = [8, 300, 4096, 65_536][round % 4];
        let mut buf = ep.alloc(len).expect("buffer");
        buf[0] = round as u8;
        ep.send(peer, buf).expect("send");
        let reply = ep.recv_timeout(Duration::from_secs(10)).expect("reply");
        assert_eq!(reply.data().len(), len);
        assert_eq!(reply.data()[0], round as u8);
    }
}

fn main() {
    let name = format!("noalloc{}", std::process::id());
    let server = Engine::builder(&name).cores(&[1]).start().unwrap();
    let echo = server
        .serve("echo", |ctx, msg| ctx.reply(msg, msg.data()))
        .unwrap();
    let mirror = server.endpoint("mirror").unwrap();
    let client = Engine::builder(&name).cores(&[0]).start().unwrap();
    let ep = client.endpoint("client").unwrap();
    let to_handler = ep.connect(&echo).unwrap();
    let to_handle = ep.connect(&mirror.addr()).unwrap();

    let mirror_thread = std::thread::spawn(move || {
        // Echo through an application thread: the handle path on both sides.
        while let Ok(msg) = mirror.recv() {
            // Small messages arrive in a pool buffer of ours and large ones in
            // place in the sender's pool: answer with a copy either way.
            let mut buf = mirror.alloc(msg.data().len()).expect("buffer");
            buf.copy_from_slice(msg.data());
            let peer = msg.peer();
            drop(msg);
            mirror.send(peer, buf).expect("mirror send");
        }
    });

    // Warm up: first use of every path, page faults, lazily sized tables.
    exchange(&ep, to_handler, 400);
    exchange(&ep, to_handle, 400);

    let before = ALLOCS.load(Ordering::Relaxed);
    exchange(&ep, to_handler, 2_000);
    exchange(&ep, to_handle, 2_000);
    let during = ALLOCS.load(Ordering::Relaxed) - before;

    drop(ep);
    client.shutdown().unwrap();
    server.shutdown().unwrap();
    mirror_thread.join().unwrap();
    assert_eq!(
        during, 0,
        "{during} heap allocations while exchanging 8,000 messages"
    );
    println!("engine_no_alloc: 1 passed, 0 failed");
}
