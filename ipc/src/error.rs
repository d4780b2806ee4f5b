//! The client side's one error type. Each variant says what the user should know and, for an
//! unreachable agent, how to start one; the CLI maps variants to exit codes in one place.

use crate::frame::FrameError;
use crate::socket::SocketError;
use std::path::PathBuf;

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
    /// The endpoint could not be set up (agent side).
    #[error(transparent)]
    Socket(#[from] SocketError),
}
