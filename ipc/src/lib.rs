//! `unitsync-ipc`: how the `unitsync` CLI and its agent talk over a local socket.
//!
//! - [`protocol`]: the message types and version (the readable spec of the wire);
//! - [`frame`]: length-prefixed frames with a size limit;
//! - [`socket`]: endpoint paths, directory and file permissions, peer-uid checks, stale sockets;
//! - [`server`]: the agent, serving one `unitsync_core::Graph` to many connections;
//! - [`client`]: a handshaken connection for the CLI.
//!
//! The crate knows nothing of terminals or argument parsing (that is the CLI's), and keeps no graph
//! logic of its own (that is `unitsync-core`'s).

#![warn(missing_docs)]

pub mod client;
pub mod error;
pub mod frame;
pub mod journal;
pub mod protocol;
pub mod server;
pub mod socket;

pub use client::Client;
pub use error::IpcError;
pub use server::Agent;
