//! Every way a command can end unsuccessfully, with its exit code (SPEC §3) and the one message the
//! user reads. This is the only place errors are rendered and exit codes chosen.

use unitsync_core::{Failure, GraphError};
use unitsync_ipc::IpcError;

/// SPEC §3 exit codes.
pub mod code {
    /// Refused: bad state, bad name, cycle; or `ready` said no.
    pub const REFUSED: i32 = 1;
    /// A dependency (or the waited-for unit) failed.
    pub const DEPENDENCY_FAILED: i32 = 3;
    /// Timed out.
    pub const TIMED_OUT: i32 = 4;
    /// Agent unreachable or protocol mismatch.
    pub const UNREACHABLE: i32 = 5;
}

/// How a command failed.
#[derive(Debug)]
pub enum CliError {
    /// Talking to the agent failed.
    Ipc(IpcError),
    /// The graph refused the request.
    Refused(GraphError),
    /// `ready`: not ready (no message).
    NotReady,
    /// `wait`: the unit failed.
    UnitFailed { unit: String, failure: Failure },
    /// A deadline passed; the message says what was still unmet.
    TimedOut(String),
    /// Anything else that stops the command, with its exit code.
    Other { code: i32, message: String },
    /// Exit with this code and print nothing (a child's exit code, for `exec`).
    Exit(i32),
}

impl From<IpcError> for CliError {
    fn from(error: IpcError) -> Self {
        Self::Ipc(error)
    }
}

impl CliError {
    /// The async runtime could not be built (no threads, no epoll instance, no descriptors left).
    pub fn no_runtime(error: std::io::Error) -> Self {
        CliError::Other {
            code: code::REFUSED,
            message: format!("cannot start the async runtime: {error}"),
        }
    }

    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            // The agent's own start-up: it cannot use its socket or its state file.
            Self::Ipc(IpcError::Socket(_) | IpcError::State(_)) => code::REFUSED,
            Self::Ipc(_) => code::UNREACHABLE,
            Self::Refused(GraphError::DependencyFailed { .. }) => code::DEPENDENCY_FAILED,
            Self::Refused(_) | Self::NotReady => code::REFUSED,
            Self::UnitFailed { .. } => code::DEPENDENCY_FAILED,
            Self::TimedOut(_) => code::TIMED_OUT,
            Self::Other { code, .. } => *code,
            Self::Exit(code) => *code,
        }
    }

    /// The line to print on stderr, if any.
    pub fn message(&self) -> Option<String> {
        match self {
            Self::Ipc(error) => Some(error.to_string()),
            Self::Refused(error) => Some(error.to_string()),
            Self::NotReady | Self::Exit(_) => None,
            Self::UnitFailed { unit, failure } => Some(match &failure.cause {
                Some(cause) => format!(
                    "`{unit}` failed: {} ({cause}: {})",
                    failure.reason,
                    failure.cause_reason.as_deref().unwrap_or("no reason given")
                ),
                None => format!("`{unit}` failed: {}", failure.reason),
            }),
            Self::TimedOut(message) => Some(message.clone()),
            Self::Other { message, .. } => Some(message.clone()),
        }
    }
}
