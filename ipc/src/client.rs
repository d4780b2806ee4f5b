//! The client: connect, handshake, send requests, read responses (including the interim frames of
//! blocking requests). It never interprets answers beyond the handshake and protocol-level errors;
//! the CLI decides what each response means for the user.
//!
//! [`Resumable`] is the one place where a blocking request (`start`, `wait`, `watch`) outlives its
//! agent: when the connection is lost or the agent says it is shutting down, it reconnects with
//! backoff (25 ms doubling to 1 s) until the request's deadline, and sends the request again — with
//! the time that is left, and, for `watch`, from the event after the last one seen. That is safe
//! because every blocking request is idempotent when resent: a `start` carries the same claim, so
//! one that the old agent applied (and journaled) but could not answer is answered `started` again
//! without a second start; a `wait` only reads. Only a connection that was once established
//! reconnects: a first connection that fails is an error at once (SPEC §3: exit 5 in well under a
//! second), so a mistyped socket path never hangs.

use crate::error::IpcError;
use crate::frame::{read_message, write_message, FrameError};
use crate::protocol::{
    Hello, HelloReply, Request, Response, Welcome, MAX_FRAME_BYTES, MAX_RESPONSE_BYTES,
    PROTOCOL_VERSION,
};
use crate::server::HANDSHAKE_TIMEOUT;
use crate::socket;
use interprocess::local_socket::tokio::Stream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The first pause before reconnecting after an outage.
pub const RECONNECT_FIRST_PAUSE: Duration = Duration::from_millis(25);

/// The longest pause between reconnection attempts.
pub const RECONNECT_MAX_PAUSE: Duration = Duration::from_secs(1);

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
                read_message::<_, HelloReply>(&mut &client.stream, MAX_RESPONSE_BYTES).await,
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

    /// Reads the next response frame. Protocol-level answers (`error`, `shutting_down`,
    /// `unsaved`) become errors; graph refusals stay responses for the caller to render.
    pub async fn recv(&mut self) -> Result<Response, IpcError> {
        let response: Response = read_message(&mut &self.stream, MAX_RESPONSE_BYTES)
            .await
            .map_err(|source| self.lost(source))?;
        match response {
            Response::Error { message } => Err(IpcError::BadRequest(message)),
            Response::ShuttingDown => Err(IpcError::ShuttingDown(self.path.clone())),
            Response::Unsaved { message } => Err(IpcError::Unsaved(message)),
            response => Ok(response),
        }
    }

    /// Sends `request` and reads its (single) response.
    pub async fn request(&mut self, request: &Request) -> Result<Response, IpcError> {
        self.send(request).await?;
        self.recv().await
    }

    async fn write<T: serde::Serialize>(&mut self, message: &T) -> Result<(), IpcError> {
        write_message(&mut &self.stream, message, MAX_FRAME_BYTES)
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

/// What [`Resumable::recv`] delivers.
#[derive(Debug)]
pub enum Delivery {
    /// The agent's next answer.
    Response(Response),
    /// The agent went away (this error says how); the next `recv` reconnects and resends. Delivered
    /// once per outage, so the caller can say so once.
    Lost(IpcError),
}

/// A blocking request that rides out agent restarts (see the module docs).
pub struct Resumable {
    path: PathBuf,
    client: Option<Client>,
    request: Request,
    /// The request still has to be sent on `client`.
    unsent: bool,
    deadline: Option<Instant>,
    /// When the current outage began.
    outage: Option<Instant>,
    pause: Duration,
}

impl Resumable {
    /// Prepares `request` on the connected `client`; it is sent by the first [`recv`](Self::recv).
    /// `deadline` bounds the whole request, outages included (`None`: reconnect for ever); a
    /// `timeout_ms` in the request is replaced by the time left whenever it is resent.
    pub fn new(client: Client, request: Request, deadline: Option<Instant>) -> Self {
        Self {
            path: client.path().to_owned(),
            client: Some(client),
            request,
            unsent: true,
            deadline,
            outage: None,
            pause: RECONNECT_FIRST_PAUSE,
        }
    }

    /// Replaces what is sent after a reconnection (for `watch`: resume after the last event seen).
    pub fn resend_as(&mut self, request: Request) {
        self.request = request;
    }

    /// The next answer, or [`Delivery::Lost`] when the agent goes away. After a loss, reconnects
    /// (with backoff, until the deadline) and resends before reading on. Errors that are not the
    /// agent going away end the request, as does the deadline passing during an outage
    /// ([`IpcError::GaveUp`]).
    pub async fn recv(&mut self) -> Result<Delivery, IpcError> {
        loop {
            if self.client.is_none() {
                self.reconnect().await?;
            }
            let unsent = std::mem::replace(&mut self.unsent, false);
            let Some(client) = self.client.as_mut() else {
                continue;
            };
            let result = if unsent {
                match client.send(&self.request).await {
                    Ok(()) => client.recv().await,
                    Err(error) => Err(error),
                }
            } else {
                client.recv().await
            };
            match result {
                Ok(response) => return Ok(Delivery::Response(response)),
                Err(error) if error.agent_gone() => {
                    self.client = None;
                    self.unsent = true;
                    self.outage = Some(Instant::now());
                    self.pause = RECONNECT_FIRST_PAUSE;
                    return Ok(Delivery::Lost(error));
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Connects again, pausing between attempts, until an agent answers or the deadline passes.
    async fn reconnect(&mut self) -> Result<(), IpcError> {
        let began = *self.outage.get_or_insert_with(Instant::now);
        loop {
            let now = Instant::now();
            let left = self.deadline.map(|d| d.saturating_duration_since(now));
            let pause = match left {
                Some(left) => self.pause.min(left),
                None => self.pause,
            };
            tokio::time::sleep(pause).await;
            self.pause = (self.pause * 2).min(RECONNECT_MAX_PAUSE);
            let attempt = Client::connect(&self.path);
            let left = self
                .deadline
                .map(|d| d.saturating_duration_since(Instant::now()));
            let outcome = match left {
                Some(left) => tokio::time::timeout(left, attempt)
                    .await
                    .unwrap_or_else(|_| {
                        Err(IpcError::NoAnswer {
                            path: self.path.clone(),
                            waited: left,
                        })
                    }),
                None => attempt.await,
            };
            match outcome {
                Ok(client) => {
                    tracing::debug!(path = %self.path.display(), "reconnected");
                    // The outage is over; losing this connection too is a new one.
                    self.outage = None;
                    self.request = with_time_left(&self.request, self.deadline);
                    self.client = Some(client);
                    return Ok(());
                }
                Err(error) if error.agent_gone() => {
                    if self.deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(IpcError::GaveUp {
                            path: self.path.clone(),
                            waited: began.elapsed(),
                            last: Box::new(error),
                        });
                    }
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// `request` with its `timeout_ms` set to what is left until `deadline` (unchanged without one).
fn with_time_left(request: &Request, deadline: Option<Instant>) -> Request {
    let Some(deadline) = deadline else {
        return request.clone();
    };
    let left = deadline.saturating_duration_since(Instant::now());
    let left_ms = Some(u64::try_from(left.as_millis()).unwrap_or(u64::MAX));
    let mut request = request.clone();
    match &mut request {
        Request::Start { timeout_ms, .. } | Request::Wait { timeout_ms, .. } => {
            *timeout_ms = left_ms
        }
        _ => {}
    }
    request
}
