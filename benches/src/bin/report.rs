//! `report`: runs every comparison of `WORKLOADS.md` (W1–W6, plus the CLI process and agent memory
//! figures) in one process, and prints a Markdown table (workload, ours, baseline, ratio, target)
//! followed by one `summary: key=value ...` line holding every figure and ratio.
//!
//! ```text
//! cargo build --release -p unitsync           # the CLI figures need the built binary
//! cargo run --release -p unitsync-benches --bin report [-- --quick] [-- --only w1,w5]
//! ```
//!
//! The work is in `unitsync_benches::report`; this file only installs the counting allocator that
//! W4 reads. The report needs Unix domain sockets, so elsewhere it says so and exits.

#[global_allocator]
static ALLOCATOR: unitsync_benches::alloc_counter::CountingAlloc =
    unitsync_benches::alloc_counter::CountingAlloc;

#[cfg(unix)]
fn main() {
    unitsync_benches::report::main();
}

#[cfg(not(unix))]
fn main() {
    eprintln!("report: the benchmarks speak Unix domain sockets; run them on Linux or macOS");
    std::process::exit(2);
}
