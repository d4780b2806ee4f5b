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

    struct Args {
        workload: String,
        scale: f64,
        units: usize,
        dhat_out: PathBuf,
        agent_pid_file: Option<PathBuf>,
        start_when: Option<PathBuf>,
    }

    const USAGE: &str = "usage: stress <graph|agent|memory> [--scale F] [--units N] \
                     [--dhat-out PATH] [--agent-pid-file PATH] [--start-when PATH]";

    fn parse_args() -> Result<Args, String> {
        let mut args = Args {
            workload: String::new(),
            scale: 1.0,
            units: 100_000,
            dhat_out: PathBuf::from("dhat-heap.json"),
            agent_pid_file: None,
            start_when: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
            match arg.as_str() {
                "--scale" => {
                    args.scale = value("--scale")?
                        .parse()
                        .map_err(|e| format!("--scale: {e}"))?;
                }
                "--units" => {
                    args.units = value("--units")?
                        .parse()
                        .map_err(|e| format!("--units: {e}"))?;
                }
                "--dhat-out" => args.dhat_out = value("--dhat-out")?.into(),
                "--agent-pid-file" => args.agent_pid_file = Some(value("--agent-pid-file")?.into()),
                "--start-when" => args.start_when = Some(value("--start-when")?.into()),
                "-h" | "--help" => return Err(USAGE.to_owned()),
                name if !name.starts_with('-') && args.workload.is_empty() => {
                    args.workload = name.to_owned();
                }
                other => return Err(format!("unexpected argument {other}\n{USAGE}")),
            }
        }
        if !matches!(args.workload.as_str(), "graph" | "agent" | "memory") {
            return Err(USAGE.to_owned());
        }
        if args.scale <= 0.0 || args.units == 0 {
            return Err("--scale and --units must be positive".to_owned());
        }
        Ok(args)
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
        let units = args.units as f64;
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
        let graph = stress::memory(args.units);
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
        let args = match parse_args() {
            Ok(args) => args,
            Err(message) => {
                eprintln!("{message}");
                return ExitCode::from(2);
            }
        };
        let result = match args.workload.as_str() {
            "graph" => {
                print_phases(&stress::graph(args.scale));
                Ok(())
            }
            "agent" => run_agent(&args),
            _ => run_memory(&args),
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
