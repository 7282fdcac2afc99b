//! In steady state, taking buffers from the pool and giving them back never
//! touches the heap: a counting global allocator proves it. Counts are per
//! thread, so the test harness's own threads do not disturb the figure.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use comm::{BufPool, PoolConfig};

struct Counting;

thread_local! {
    // Const-initialised: reading it never allocates (which would recurse).
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: during thread teardown the slot may be gone; such frees and
    // allocations are not ours to count.
    let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
}

fn allocs() -> usize {
    ALLOCS.with(Cell::get)
}

// SAFETY: forwards to the system allocator unchanged, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn alloc_and_release_in_steady_state_never_allocate() {
    let pool = BufPool::new(PoolConfig::default()).unwrap();
    let sizes = [1usize, 64, 256, 257, 4096, 60_000, 1 << 20, 3 << 20];
    let mut held = Vec::with_capacity(64);
    // Warm up: first use of every code path.
    for &s in &sizes {
        held.push(pool.alloc(s).unwrap());
    }
    held.clear();

    let before = allocs();
    for round in 0..10_000usize {
        let s = sizes[round % sizes.len()];
        let mut buf = pool.alloc(s).unwrap();
        buf[0] = round as u8;
        held.push(buf);
        if held.len() == 32 {
            held.clear();
        }
    }
    held.clear();
    let after = allocs();
    assert_eq!(after - before, 0, "heap allocations in steady state");
    assert_eq!(pool.free_buffers(), 1024 + 256 + 64 + 8 + 4);
}
