//! The client: connect, handshake, send requests, read responses (including the interim frames of
//! blocking requests). It never interprets answers beyond the handshake and protocol-level errors;
//! the CLI decides what each response means for the user.

use crate::error::IpcError;
use crate::frame::{read_message, write_message, FrameError};
use crate::protocol::{Hello, HelloReply, Request, Response, Welcome, PROTOCOL_VERSION};
use crate::server::HANDSHAKE_TIMEOUT;
use crate::socket;
use interprocess::local_socket::tokio::Stream;
use std::path::{Path, PathBuf};

/// A handshaken connection to an agent.
pub struct Client {
    stream: Stream,
    path: PathBuf,
    welcome: Welcome,
}

impl Client {
    /// Connects to the agent at `path` and performs the version handshake.
    pub async fn connect(path: &Path) -> Result<Self, IpcError> {
        let stream = socket::connect(path)
            .await
            .map_err(|source| IpcError::Unreachable {
                path: path.to_owned(),
                source,
            })?;
        let mut client = Self {
            stream,
            path: path.to_owned(),
            welcome: Welcome {
                protocol: 0,
                agent_version: String::new(),
                pid: 0,
            },
        };
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            client: format!("unitsync {}", env!("CARGO_PKG_VERSION")),
        };
        let handshake = async {
            // An agent that refuses this peer outright (another user) answers and closes without
            // reading the hello, so the write can fail while its reason is waiting to be read.
            let sent = client.write(&hello).await;
            match (
                sent,
                read_message::<_, HelloReply>(&mut &client.stream).await,
            ) {
                (_, Ok(reply)) => Ok(reply),
                (Err(error), Err(_)) => Err(error),
                (Ok(()), Err(source)) => Err(client.lost(source)),
            }
        };
        // A process that accepts but never answers (a stopped agent, something else on the path)
        // must not hang the command forever.
        let reply = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
            .await
            .map_err(|_| IpcError::NoAnswer {
                path: path.to_owned(),
                waited: HANDSHAKE_TIMEOUT,
            })??;
        match reply {
            HelloReply::Welcome(welcome) => {
                client.welcome = welcome;
                Ok(client)
            }
            HelloReply::Refused { message, .. } => Err(IpcError::Refused {
                path: path.to_owned(),
                message,
            }),
        }
    }

    /// What the agent said about itself in the handshake.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// The socket path this client is connected to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends `request` without waiting for an answer (for streaming requests).
    pub async fn send(&mut self, request: &Request) -> Result<(), IpcError> {
        self.write(request).await
    }

    /// Reads the next response frame. Protocol-level answers (`error`, `shutting_down`) become
    /// errors; graph refusals stay responses for the caller to render.
    pub async fn recv(&mut self) -> Result<Response, IpcError> {
        let response: Response = read_message(&mut &self.stream)
            .await
            .map_err(|source| self.lost(source))?;
        match response {
            Response::Error { message } => Err(IpcError::BadRequest(message)),
            Response::ShuttingDown => Err(IpcError::ShuttingDown(self.path.clone())),
            response => Ok(response),
        }
    }

    /// Sends `request` and reads its (single) response.
    pub async fn request(&mut self, request: &Request) -> Result<Response, IpcError> {
        self.send(request).await?;
        self.recv().await
    }

    async fn write<T: serde::Serialize>(&mut self, message: &T) -> Result<(), IpcError> {
        write_message(&mut &self.stream, message)
            .await
            .map_err(|source| self.lost(source))
    }

    fn lost(&self, source: FrameError) -> IpcError {
        IpcError::Connection {
            path: self.path.clone(),
            source,
        }
    }
}
