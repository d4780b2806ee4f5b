//! The crate's one error type. Each variant says what the user should know and, for an unreachable
//! agent, how to start one; the CLI maps variants to exit codes in one place. The agent's own start-up
//! errors (socket, state file) are variants too.

use crate::frame::FrameError;
use crate::socket::SocketError;
use crate::state::StateError;
use std::path::PathBuf;
use std::time::Duration;

/// Why talking to the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    /// Nothing answers at the socket path.
    #[error("no unitsync agent is running at {path} ({source}); start one with `unitsync agent` (or set UNITSYNC_SOCKET / --socket to the agent's socket)")]
    Unreachable {
        /// The path tried.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Something accepted the connection but did not answer the handshake in time.
    #[error("the agent at {path} did not answer within {}s; it may be stopped or hung (restart it with `unitsync agent`)", waited.as_secs())]
    NoAnswer {
        /// The path.
        path: PathBuf,
        /// How long the client waited.
        waited: std::time::Duration,
    },
    /// The agent speaks another protocol version, or refused this client.
    #[error("the agent at {path} refused the connection: {message}")]
    Refused {
        /// The path.
        path: PathBuf,
        /// The agent's reason.
        message: String,
    },
    /// The agent closed the connection or sent something unreadable mid-request.
    #[error("lost the connection to the agent at {path}: {source}")]
    Connection {
        /// The path.
        path: PathBuf,
        /// What happened.
        source: FrameError,
    },
    /// The agent said the request itself was bad.
    #[error("the agent rejected the request: {0}")]
    BadRequest(String),
    /// The agent answered with something this client did not expect.
    #[error("unexpected answer from the agent: {0}")]
    Unexpected(String),
    /// The agent is shutting down.
    #[error("the agent at {0} shut down before answering; start a new agent with `unitsync agent` and run the command again")]
    ShuttingDown(PathBuf),
    /// The agent made the change but could not save it to its state file.
    #[error("the agent could not save the change: {0}")]
    Unsaved(String),
    /// A blocked request lost its agent, and no agent answered again before the deadline.
    #[error("lost the agent at {path} and it did not come back within {} ({last})", humanize(*waited))]
    GaveUp {
        /// The path.
        path: PathBuf,
        /// How long the client had left when the outage began.
        waited: Duration,
        /// The last reconnection error.
        last: Box<IpcError>,
    },
    /// The endpoint could not be set up (agent side).
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// The state file could not be used (agent side).
    #[error(transparent)]
    State(#[from] StateError),
}

impl IpcError {
    /// Whether this means the agent went away (its connection closed or was cut, it said it is
    /// shutting down, or nothing answers at its path): what a blocked request may wait out by
    /// reconnecting. Refusals (another protocol, another user), answers the agent gave and errors of
    /// the agent's own start-up are not.
    pub fn agent_gone(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::NoAnswer { .. } | Self::ShuttingDown(_) => true,
            Self::Connection { source, .. } => source.is_disconnect(),
            _ => false,
        }
    }
}

fn humanize(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{:.1}s", duration.as_secs_f64())
    }
}
