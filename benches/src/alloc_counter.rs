//! Heap accounting for W4: a `#[global_allocator]` wrapper around the system allocator that keeps a
//! running count of live bytes while counting is switched on.
//!
//! A binary opts in with `#[global_allocator] static A: CountingAlloc = CountingAlloc;` (the `report`
//! binary does; criterion bench binaries do not, and [`installed`] tells which case applies). Counting
//! is off by default so that the other workloads, which run in the same process, pay one relaxed load
//! per allocation and never contend on the counter. While it is on, every allocation adds its size
//! and every free subtracts it, so a block allocated before [`measure_live`] and freed inside it
//! lowers the figure: measure first thing, on a quiet process. This module allocates nothing itself and
//! must not change what the system allocator returns.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);

/// The counting allocator. Install it in a binary with `#[global_allocator]`.
pub struct CountingAlloc;

#[inline]
fn count(delta: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE.fetch_add(delta, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged and only adds
// bookkeeping on the side, so `System`'s guarantees carry over unchanged.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            count(layout.size() as isize);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's contract.
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's contract.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            count(layout.size() as isize);
        }
        ptr
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        new
    }
}

/// Live bytes counted so far (only meaningful while counting, and relative to an earlier reading).
pub fn live_bytes() -> isize {
    LIVE.load(Ordering::SeqCst)
}

/// Whether this process's global allocator is [`CountingAlloc`].
pub fn installed() -> bool {
    COUNTING.store(true, Ordering::SeqCst);
    let before = live_bytes();
    let probe = std::hint::black_box(Box::new([0u8; 64]));
    let after = live_bytes();
    drop(probe);
    COUNTING.store(false, Ordering::SeqCst);
    after - before >= 64
}

/// What [`measure_live`] saw.
#[derive(Debug, Clone, Copy)]
pub struct LiveBytes {
    /// Bytes live after `build` returned (its result still alive), minus before.
    pub retained: isize,
    /// Bytes live after the result was dropped, minus before: about 0 unless something leaked or a
    /// block allocated before the measurement was freed during it.
    pub after_drop: isize,
}

/// Runs `build` with counting on and reports the heap bytes its result keeps alive. `settle` runs on
/// the result before the second reading (e.g. to let deferred frees happen).
pub fn measure_live<T>(build: impl FnOnce() -> T, settle: impl FnOnce(&T)) -> LiveBytes {
    COUNTING.store(true, Ordering::SeqCst);
    let before = live_bytes();
    let built = build();
    settle(&built);
    let retained = live_bytes() - before;
    drop(built);
    let after_drop = live_bytes() - before;
    COUNTING.store(false, Ordering::SeqCst);
    LiveBytes {
        retained,
        after_drop,
    }
}
