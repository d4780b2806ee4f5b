//! `stress`: runs one stress workload of `unitsync_benches::stress` for a profiler to watch
//! (`profiles/run.sh` records it with `perf` and, built with `--features dhat-heap`, with dhat).
//!
//! ```text
//! stress graph  [--scale F]                      in-process W1 + W2 + W3, about 5 s at scale 1
//! stress agent  [--scale F] [--agent-pid-file P] [--start-when P]
//!                                                a `unitsync agent` child driven over its socket
//! stress memory [--units N] [--dhat-out P]       W4's graph (100,000 units, 3 edges each)
//! ```
//!
//! `agent` starts the `unitsync` binary found next to this executable (build it with
//! `cargo build --release -p unitsync`) on a socket in a private temporary directory, writes the
//! agent's pid to `--agent-pid-file` if given, waits for the file `--start-when` to exist if given
//! (so that a profiler can attach to the agent first: `perf record -p PID`), drives it, and stops
//! it. With the `dhat-heap` feature the global allocator is `dhat::Alloc` and the heap profile is
//! written when the workload ends (for `memory`, while the graph is still alive, so dhat's "at
//! t-end" view is the graph itself) to `--dhat-out`
//! (default `dhat-heap.json`). Phase summaries go to stdout, progress to stderr.
//!
//! Unix only (the workloads share the socket client code); elsewhere it says so and exits.

use std::process::ExitCode;

#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[cfg(unix)]
fn main() -> ExitCode {
    workloads::main()
}

#[cfg(not(unix))]
fn main() -> ExitCode {
    eprintln!("stress: the workloads need Unix domain sockets; run them on Linux or macOS");
    ExitCode::from(2)
}

/// The workloads and their argument parsing.
#[cfg(unix)]
mod workloads {
    use std::path::PathBuf;
    use std::process::ExitCode;
    use std::time::{Duration, Instant};
    use unitsync_benches::process::{self, SocketChild};
    use unitsync_benches::stress::{self, AgentLoad, Phase};

    /// Which workload `stress` runs.
    #[derive(Clone, Copy, clap::ValueEnum)]
    enum Workload {
        /// The in-process graph: W1 fan-out with async waiters, W2 chain, W3 mixed
        Graph,
        /// A `unitsync agent` process under churning and blocked clients
        Agent,
        /// W4's graph, kept alive for a heap profile
        Memory,
    }

    /// Fixed-count stress workloads for profiling (see profiles/README.md).
    #[derive(clap::Parser)]
    #[command(
        name = "stress",
        after_help = "Example: perf record -g -- target/release/stress graph --scale 0.5"
    )]
    struct Args {
        /// The workload to run
        #[arg(value_enum)]
        workload: Workload,
        /// Multiplies every count of the workload
        #[arg(long, default_value_t = 1.0, value_parser = positive_scale)]
        scale: f64,
        /// Units of `memory`'s graph
        #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..))]
        units: u32,
        /// Where `memory` writes its dhat profile (with the `dhat-heap` feature)
        #[arg(long, default_value = "dhat-heap.json", value_name = "PATH")]
        dhat_out: PathBuf,
        /// `agent`: write the agent's pid here once it listens
        #[arg(long, value_name = "PATH")]
        agent_pid_file: Option<PathBuf>,
        /// `agent`: start the load only once this file exists
        #[arg(long, value_name = "PATH")]
        start_when: Option<PathBuf>,
    }

    fn positive_scale(text: &str) -> Result<f64, String> {
        match text.parse::<f64>() {
            Ok(scale) if scale.is_finite() && scale > 0.0 => Ok(scale),
            Ok(_) => Err("must be a positive number".to_owned()),
            Err(error) => Err(error.to_string()),
        }
    }

    fn print_phases(phases: &[Phase]) {
        for phase in phases {
            println!("{phase}");
        }
    }

    fn run_agent(args: &Args) -> Result<(), String> {
        let binary = process::unitsync_binary()?;
        let fd_limit = process::raise_fd_limit();
        let load = AgentLoad::at_scale(args.scale);
        if fd_limit < load.blocked_connections as u64 + 256 {
            return Err(format!(
                "the open-file limit is {fd_limit}; the agent workload needs {} connections",
                load.blocked_connections
            ));
        }
        let agent = SocketChild::unitsync_agent(&binary)
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        eprintln!(
            "stress: agent pid {} on {}",
            agent.pid(),
            agent.socket().display()
        );
        if let Some(path) = &args.agent_pid_file {
            std::fs::write(path, format!("{}\n", agent.pid()))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        if let Some(path) = &args.start_when {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !path.exists() {
                if Instant::now() > deadline {
                    return Err(format!("{} did not appear within 60 s", path.display()));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let phases = stress::agent(agent.socket(), "s_", load)
            .map_err(|e| format!("agent workload: {e}"))?;
        print_phases(&phases);
        match agent.rss_kib() {
            Ok(kib) => println!("agent_rss_after: {kib} KiB"),
            Err(e) => eprintln!("stress: cannot read the agent's RSS: {e}"),
        }
        Ok(())
    }

    /// Bytes glibc's malloc has handed out and not had back (chunk headers and rounding included), on
    /// every arena and in mmapped blocks; `None` where that cannot be asked.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn malloc_in_use() -> Option<u64> {
        // SAFETY: mallinfo2 only reads the allocator's statistics and returns them by value.
        let info = unsafe { libc::mallinfo2() };
        Some((info.uordblks + info.hblkhd) as u64)
    }

    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    fn malloc_in_use() -> Option<u64> {
        None
    }

    fn run_memory(args: &Args) -> Result<(), String> {
        let units = f64::from(args.units);
        #[cfg(feature = "dhat-heap")]
        let profiler = dhat::Profiler::builder()
            .file_name(&args.dhat_out)
            .trim_backtraces(Some(24))
            .build();
        #[cfg(feature = "dhat-heap")]
        let before = dhat::HeapStats::get().curr_bytes;
        #[cfg(not(feature = "dhat-heap"))]
        let _ = &args.dhat_out;
        let malloc_before = malloc_in_use();
        let begin = Instant::now();
        let graph = stress::memory(args.units as usize);
        let elapsed = begin.elapsed();
        let malloc_after = malloc_in_use();
        println!(
            "w4_memory: {} units with 3 edges each built in {:.3} s",
            graph.len(),
            elapsed.as_secs_f64()
        );
        if let (false, Some(before), Some(after)) =
            (cfg!(feature = "dhat-heap"), malloc_before, malloc_after)
        {
            let grown = after.saturating_sub(before);
            println!(
            "w4_malloc: {grown} B in use by glibc malloc after the build ({:.1} B/unit: requested \
             sizes plus chunk headers and rounding)",
            grown as f64 / units
        );
        }
        #[cfg(feature = "dhat-heap")]
        {
            let stats = dhat::HeapStats::get();
            let retained = stats.curr_bytes.saturating_sub(before);
            println!(
            "w4_heap: {retained} B requested and live after the build ({:.1} B/unit, {:.2} blocks/unit); \
             {} B allocated in total ({} blocks); peak {} B live",
            retained as f64 / units,
            stats.curr_blocks as f64 / units,
            stats.total_bytes,
            stats.total_blocks,
            stats.max_bytes,
        );
            // Written now, while the graph is alive: dhat's "t-end" is the graph.
            drop(profiler);
        }
        drop(graph);
        Ok(())
    }

    pub(crate) fn main() -> ExitCode {
        let args = <Args as clap::Parser>::parse();
        let result = match args.workload {
            Workload::Graph => {
                print_phases(&stress::graph(args.scale));
                Ok(())
            }
            Workload::Agent => run_agent(&args),
            Workload::Memory => run_memory(&args),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("stress: {message}");
                ExitCode::FAILURE
            }
        }
    }
}
