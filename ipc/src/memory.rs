//! Giving memory back: the agent's memory should fall back near its baseline once a crowd of clients
//! has gone (SPEC §4 "never the agent": a burst of 10,000 blocked `start`s must not leave the agent
//! ten times its size for the rest of its life).
//!
//! Every connection costs a few KiB while it lives (its task, its frames); a `list` of a big graph
//! allocates megabytes for a moment. Rust frees all of it, but glibc's allocator keeps freed memory
//! in its arenas instead of returning it to the kernel, so the resident size stays at its high-water
//! mark. Two remedies, measured with the load test (`cli/tests/load.rs`, see docs/reliability.md):
//!
//! - [`configure_allocator`] (called once by the agent at start) fixes glibc's mmap threshold at
//!   [`MMAP_THRESHOLD`]: a block that large (the buffers of a big answer) is mapped on its own and
//!   unmapped when freed. By default glibc raises the threshold after the first such free, and from
//!   then on serves big blocks from the arenas, where they fragment and stay resident.
//! - [`Trimmer`] asks glibc to hand back what is free (`malloc_trim(0)`, which releases free
//!   pages from every arena) at two moments: when the number of open connections has fallen to a
//!   sixteenth of its peak since the last trim (and that peak was at least [`CROWD`]), and after an
//!   answer of more than [`LARGE_ANSWER`] bytes, at most once a second.
//!
//! Elsewhere (musl, macOS, Windows) both are no-ops. This module owns the policy only; it knows
//! nothing of the protocol.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// Blocks at least this large get a mapping of their own (glibc, see the module docs).
pub const MMAP_THRESHOLD: usize = 128 << 10;

/// Sets the allocator up for a long-lived agent (see the module docs): glibc's mmap threshold is
/// fixed at [`MMAP_THRESHOLD`], unless `MALLOC_MMAP_THRESHOLD_` already chose one. Elsewhere a no-op.
pub fn configure_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some() {
            return;
        }
        let threshold = libc::c_int::try_from(MMAP_THRESHOLD).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only changes glibc's tuning parameters; it has no memory-safety
        // preconditions and is called before the agent starts any thread.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, threshold);
        }
    }
}

/// Connections that count as a crowd worth trimming after.
pub const CROWD: usize = 256;

/// An answer this large (bytes) is followed by a trim (rate-limited).
pub const LARGE_ANSWER: usize = 4 << 20;

/// Decides when to give free memory back (see the module docs). Shared by the agent's tasks.
#[derive(Debug, Default)]
pub struct Trimmer {
    /// The most connections open at once since the last trim.
    peak: AtomicUsize,
    /// Milliseconds since [`epoch`] of the last trim after a large answer.
    last_large: AtomicU64,
}

impl Trimmer {
    /// A connection opened; `open` are open now.
    pub fn opened(&self, open: usize) {
        self.peak.fetch_max(open, Ordering::Relaxed);
    }

    /// A connection closed; `open` are still open.
    pub fn closed(&self, open: usize) {
        let peak = self.peak.load(Ordering::Relaxed);
        if peak >= CROWD
            && open <= (peak / 16).max(16)
            && self
                .peak
                .compare_exchange(peak, open, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            release_in_background(peak, open);
        }
    }

    /// An answer of `bytes` was sent.
    pub fn answered(&self, bytes: usize) {
        if bytes <= LARGE_ANSWER {
            return;
        }
        let now = u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_large.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= 1000)
            && self
                .last_large
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            release_in_background(0, 0);
        }
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Trims on a blocking thread (it walks every arena), if there is a runtime; else right here.
fn release_in_background(peak: usize, open: usize) {
    let trim = move || {
        let released = release_free_memory();
        tracing::debug!(peak, open, released, "gave free memory back to the system");
    };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn_blocking(trim);
        }
        Err(_) => trim(),
    }
}

/// Asks the allocator to return free memory to the system; whether it released any.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks glibc's own arenas under their locks; it has no
        // preconditions and is safe to call from any thread at any time.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
