//! `unitsync agent`: logging set-up, the descriptor limit, the multi-threaded runtime and how many
//! worker threads it has, signal handling, and the agent's life from bind to clean shutdown.
//! Binding, restoring the state file and serving are `unitsync_ipc::Agent`'s: this module must not
//! touch the graph, the journal or the protocol.

use crate::failure::{code, CliError};
use std::path::Path;
use unitsync_ipc::{Agent, AgentOptions};

/// Sends `tracing` output to stderr, filtered by `UNITSYNC_LOG`, else `RUST_LOG`, else `info`.
pub fn init_logging() {
    let filter = std::env::var("UNITSYNC_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_owned());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Registers for Ctrl-C (SIGINT) and SIGTERM *now*, and returns a future that resolves when one
/// arrives. Registering before the agent announces its socket matters: a signal sent the moment
/// "listening on" appears must stop the agent cleanly (removing its socket), not kill it by the
/// default action.
pub fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        let mut interrupt = tokio::signal::windows::ctrl_c()?;
        Ok(async move {
            let _ = interrupt.recv().await;
        })
    }
}

/// How many worker threads serve connections unless told: half the CPUs, at least one.
///
/// Every client of the agent is a process on the same machine (the socket is local), and sending a
/// request and reading its answer costs the client about three quarters of the CPU the agent
/// spends serving it; so the agent takes half the CPUs and leaves the rest to the scripts. More
/// workers compete with the scripts, and tokio wakes an idle worker whenever two requests become
/// ready together, mostly to find nothing left to steal. On 2 CPUs one worker instead of two
/// served 1.25–1.3× the requests per second with the journal, 1.1–1.3× without, and released
/// 10,000 blocked clients in 44 ms instead of 48–56; a single wake-up across CPUs got 1–7 µs
/// slower in the median (benches/README.md, "How many worker threads").
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |cpus| (cpus.get() / 2).max(1))
}

/// Runs the agent on `socket` with `threads` worker threads until Ctrl-C / SIGTERM.
pub fn run(socket: &Path, options: AgentOptions, threads: usize) -> Result<(), CliError> {
    init_logging();
    match unitsync_ipc::socket::raise_descriptor_limit() {
        Ok(limit) => tracing::debug!(?limit, "descriptor limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the descriptor limit"),
    }
    unitsync_ipc::memory::configure_allocator();
    tracing::debug!(threads, "worker threads");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(CliError::no_runtime)?;
    runtime.block_on(async {
        let stop = stop_signal().map_err(|error| CliError::Other {
            code: code::REFUSED,
            message: format!("cannot install the signal handlers: {error}"),
        })?;
        let agent = Agent::start(socket, options).await?;
        eprintln!("unitsync agent listening on {}", socket.display());
        agent.serve_until(stop).await;
        Ok(())
    })
}
