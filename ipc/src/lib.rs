//! `unitsync-ipc`: how the `unitsync` CLI and its agent talk over a local socket.
//!
//! - [`protocol`]: the message types and version (the readable spec of the wire);
//! - [`frame`]: length-prefixed frames with a size limit;
//! - [`socket`]: endpoint paths, directory and file permissions, peer-uid checks, stale sockets;
//! - [`journal`]: the state file's format, reading it back, and the writer that appends every event;
//! - [`state`]: where the state file lives, who may own it, its lock, and restoring a graph from it;
//! - [`server`]: the agent, serving one `unitsync_core::Graph` to many connections, acknowledging
//!   changes once they are journaled;
//! - [`memory`]: when the agent gives freed memory back to the system;
//! - [`client`]: a handshaken connection for the CLI, and [`client::Resumable`], a blocking request
//!   that survives an agent restart.
//!
//! The crate knows nothing of terminals or argument parsing (that is the CLI's), and keeps no graph
//! logic of its own (that is `unitsync-core`'s).

#![warn(missing_docs)]

pub mod client;
pub mod error;
pub mod frame;
pub mod journal;
pub mod memory;
pub mod protocol;
pub mod server;
pub mod socket;
pub mod state;
pub mod stream;

pub use client::Client;
pub use error::IpcError;
pub use server::{Agent, AgentOptions};
