//! `unitsync agent`: logging set-up, the multi-threaded runtime, signal handling, and the agent's
//! life from bind to clean shutdown. The serving itself is `unitsync_ipc::Agent`'s.

use crate::failure::{code, CliError};
use std::path::Path;
use unitsync_core::Graph;
use unitsync_ipc::Agent;

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

/// Resolves when the process is asked to stop (Ctrl-C, SIGTERM).
pub async fn stop_requested() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub fn run(socket: &Path, event_buffer: usize) -> Result<(), CliError> {
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| CliError::Other {
            code: code::REFUSED,
            message: format!("cannot start the async runtime: {error}"),
        })?;
    runtime.block_on(async {
        let graph = Graph::with_event_capacity(event_buffer);
        let agent = Agent::bind(socket, graph)
            .await
            .map_err(|error| CliError::Ipc(error.into()))?;
        eprintln!("unitsync agent listening on {}", socket.display());
        agent.serve_until(stop_requested()).await;
        Ok(())
    })
}
