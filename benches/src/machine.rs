//! What the machine offers while the report runs: a one-line description (logical CPUs, CPU model,
//! memory, load) and how much parallel speed-up two threads actually get right now.
//!
//! The machine is shared, so "2 cores" on paper may be one core in practice while someone else
//! builds; the measured speed-up of an embarrassingly parallel loop tells the reader how to weigh the
//! W3 scaling figures. This module observes the machine, and settles what earlier jobs left in flight
//! ([`flush_pending_writes`]); it must not measure unitsync.

use std::time::{Duration, Instant};

/// `nproc`, the CPU model, total memory and the 1-minute load average, in one line.
pub fn describe() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let mem_gib = meminfo_kib("MemTotal").map_or(0.0, |kib| kib as f64 / 1024.0 / 1024.0);
    format!(
        "{cpus} logical CPUs ({model}), {mem_gib:.1} GiB RAM, load average {}",
        load_average()
    )
}

/// The 1-minute load average, as the kernel prints it.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// A fixed amount of pure CPU work (no memory traffic, no sharing).
fn spin(rounds: u64) -> u64 {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

fn timed_threads(threads: usize, rounds: u64) -> Duration {
    let begin = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| std::thread::spawn(move || std::hint::black_box(spin(rounds))))
        .collect();
    for handle in handles {
        handle.join().expect("spin thread");
    }
    begin.elapsed()
}

/// How much faster two threads finish twice the work of one, right now (2.0 = two free cores,
/// 1.0 = effectively one core). The median of `runs` paired measurements of about 20 ms each.
pub fn two_thread_speedup(runs: usize) -> f64 {
    let rounds = 20_000_000;
    let mut speedups: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let one = timed_threads(1, rounds).as_secs_f64();
            let two = timed_threads(2, rounds).as_secs_f64();
            2.0 * one / two
        })
        .collect();
    speedups.sort_by(f64::total_cmp);
    speedups[speedups.len() / 2]
}

/// Writes out every file's dirty pages (`sync(2)`) and returns the dirty kilobytes there were, so
/// that what earlier jobs wrote (a test suite, a build) is not flushed during a measurement: while
/// much is dirty the kernel throttles every process that writes a file (`balance_dirty_pages`),
/// the journaling agent among them. With 0.8–0.9 GB left dirty just before, `report --quick --only
/// tput` gave the journal 2.0× (one run) without this flush and 1.31–1.34× with it (three runs);
/// 1.12–1.16× in most runs with nothing dirty. Elsewhere than Linux a no-op (0).
pub fn flush_pending_writes() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let dirty_kib = meminfo_kib("Dirty").unwrap_or(0);
        // SAFETY: sync(2) takes no arguments, cannot fail and touches no memory of this process.
        unsafe { libc::sync() };
        dirty_kib
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// The field `name` of `/proc/meminfo`, in KiB, if there is one.
fn meminfo_kib(name: &str) -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(':')?;
        value.trim().trim_end_matches("kB").trim().parse().ok()
    })
}
