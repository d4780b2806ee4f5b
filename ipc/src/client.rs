//! The client: connect, handshake, send requests, read responses (including the interim frames of
//! blocking requests). It never interprets answers beyond the handshake and protocol-level errors;
//! the CLI decides what each response means for the user. Answers are read through one buffered
//! [`FrameReader`] per connection; each request is written as one frame with one `write_all`.
//! [`BlockingClient`] (Unix) is the same connection without an async runtime, for the one-shot
//! commands of the CLI, whose start-up it keeps short.
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
#[cfg(unix)]
use crate::frame::{encode, read_frame_blocking};
use crate::frame::{write_message, FrameError, FrameReader};
use crate::protocol::{
    Hello, HelloReply, Request, Response, Welcome, MAX_FRAME_BYTES, MAX_RESPONSE_BYTES,
    PROTOCOL_VERSION,
};
use crate::server::HANDSHAKE_TIMEOUT;
use crate::stream::LocalStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The first pause before reconnecting after an outage.
pub const RECONNECT_FIRST_PAUSE: Duration = Duration::from_millis(25);

/// The longest pause between reconnection attempts.
pub const RECONNECT_MAX_PAUSE: Duration = Duration::from_secs(1);

/// Room the client's [`FrameReader`] keeps for answers: a few typical answers or `watch` events
/// per read; a longer answer gets room for itself while it is read.
const RESPONSE_BUFFER_BYTES: usize = 4096;

/// What this client says about itself when it connects.
fn hello() -> Hello {
    Hello {
        protocol: PROTOCOL_VERSION,
        client: format!("unitsync {}", env!("CARGO_PKG_VERSION")),
    }
}

/// The connection to the agent at `path` failed for `source`.
fn connection_lost(path: &Path, source: FrameError) -> IpcError {
    IpcError::Connection {
        path: path.to_owned(),
        source,
    }
}

/// A handshaken connection to an agent.
pub struct Client {
    /// Reads answers; requests are written through `reader.get_ref()`.
    reader: FrameReader<LocalStream>,
    path: PathBuf,
    welcome: Welcome,
}

impl Client {
    /// Connects to the agent at `path` and performs the version handshake.
    pub async fn connect(path: &Path) -> Result<Self, IpcError> {
        let stream = LocalStream::connect(path)
            .await
            .map_err(|source| IpcError::Unreachable {
                path: path.to_owned(),
                source,
            })?;
        let mut client = Self {
            reader: FrameReader::with_capacity(stream, MAX_RESPONSE_BYTES, RESPONSE_BUFFER_BYTES),
            path: path.to_owned(),
            welcome: Welcome {
                protocol: 0,
                agent_version: String::new(),
                pid: 0,
            },
        };
        let hello = hello();
        let handshake = async {
            // An agent that refuses this peer outright (another user) answers and closes without
            // reading the hello, so the write can fail while its reason is waiting to be read.
            let sent = client.write(&hello).await;
            match (sent, client.reader.read_message::<HelloReply>().await) {
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
        let response: Response = self
            .reader
            .read_message()
            .await
            .map_err(|source| self.lost(source))?;
        protocol_answer(response, &self.path)
    }

    /// Sends `request` and reads its (single) response.
    pub async fn request(&mut self, request: &Request) -> Result<Response, IpcError> {
        self.send(request).await?;
        self.recv().await
    }

    async fn write<T: serde::Serialize>(&mut self, message: &T) -> Result<(), IpcError> {
        write_message(&mut self.reader.get_ref(), message, MAX_FRAME_BYTES)
            .await
            .map_err(|source| self.lost(source))
    }

    fn lost(&self, source: FrameError) -> IpcError {
        connection_lost(&self.path, source)
    }
}

/// Maps the protocol-level answers (`error`, `shutting_down`, `unsaved`) to errors, as
/// [`Client::recv`] and [`BlockingClient::request`] do.
fn protocol_answer(response: Response, path: &Path) -> Result<Response, IpcError> {
    match response {
        Response::Error { message } => Err(IpcError::BadRequest(message)),
        Response::ShuttingDown => Err(IpcError::ShuttingDown(path.to_owned())),
        Response::Unsaved { message } => Err(IpcError::Unsaved(message)),
        response => Ok(response),
    }
}

/// A handshaken connection for a command that sends one request and reads one answer, without an
/// async runtime (Unix only): a blocking `UnixStream`, the same handshake, frame limits, errors and
/// handshake timeout as [`Client`], and none of a runtime's set-up (an epoll instance, an eventfd,
/// the signal driver's socket pair). Not for blocking requests (`start`, `wait`, `watch`), which
/// need [`Resumable`].
#[cfg(unix)]
pub struct BlockingClient {
    stream: std::os::unix::net::UnixStream,
    path: PathBuf,
    welcome: Welcome,
}

#[cfg(unix)]
impl BlockingClient {
    /// Connects to the agent at `path` and performs the version handshake (within
    /// [`HANDSHAKE_TIMEOUT`], like [`Client::connect`]).
    pub fn connect(path: &Path) -> Result<Self, IpcError> {
        Self::open(path, None)
    }

    /// Connects, sends `request` and returns its answer: one command's whole conversation. The
    /// request goes out in the same write as the hello (the agent reads it only after welcoming
    /// this client, and drops it unread if it refuses), so the exchange costs one round trip
    /// instead of two.
    pub fn ask(path: &Path, request: &Request) -> Result<Response, IpcError> {
        let client = Self::open(path, Some(request))?;
        client.read_answer()
    }

    /// [`connect`](Self::connect), with `pipelined` (if any) written right behind the hello.
    fn open(path: &Path, pipelined: Option<&Request>) -> Result<Self, IpcError> {
        use std::io::Write;
        let stream = std::os::unix::net::UnixStream::connect(path).map_err(|source| {
            IpcError::Unreachable {
                path: path.to_owned(),
                source,
            }
        })?;
        let lost = |source: FrameError| connection_lost(path, source);
        let no_answer = || IpcError::NoAnswer {
            path: path.to_owned(),
            waited: HANDSHAKE_TIMEOUT,
        };
        let timed_out = |error: &std::io::Error| {
            matches!(
                error.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            )
        };
        stream
            .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
            .map_err(|error| lost(error.into()))?;
        let mut frame = encode(&hello(), MAX_FRAME_BYTES).map_err(lost)?;
        if let Some(request) = pipelined {
            frame.extend_from_slice(&encode(request, MAX_FRAME_BYTES).map_err(lost)?);
        }
        // As in `Client::connect`: an agent that refuses this peer answers and closes without
        // reading the hello, so a failed write still lets its reason be read.
        let sent = (&stream).write_all(&frame);
        let reply = match read_frame_blocking(&mut &stream, MAX_RESPONSE_BYTES) {
            Ok(payload) => serde_json::from_slice::<HelloReply>(&payload)
                .map_err(|error| lost(error.into()))?,
            Err(FrameError::Io(error)) if timed_out(&error) => return Err(no_answer()),
            Err(source) => {
                return Err(match sent {
                    Err(error) => lost(error.into()),
                    Ok(()) => lost(source),
                })
            }
        };
        stream
            .set_read_timeout(None)
            .map_err(|error| lost(error.into()))?;
        match reply {
            HelloReply::Welcome(welcome) => Ok(Self {
                stream,
                path: path.to_owned(),
                welcome,
            }),
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

    /// Sends `request` and reads its answer; protocol-level answers become errors, as in
    /// [`Client::recv`].
    pub fn request(&mut self, request: &Request) -> Result<Response, IpcError> {
        use std::io::Write;
        let lost = |source: FrameError| connection_lost(&self.path, source);
        let frame = encode(request, MAX_FRAME_BYTES).map_err(lost)?;
        (&self.stream)
            .write_all(&frame)
            .map_err(|error| lost(error.into()))?;
        self.read_answer()
    }

    /// Reads the answer to the request sent last.
    fn read_answer(&self) -> Result<Response, IpcError> {
        let lost = |source: FrameError| connection_lost(&self.path, source);
        let payload = read_frame_blocking(&mut &self.stream, MAX_RESPONSE_BYTES).map_err(lost)?;
        let response = serde_json::from_slice(&payload).map_err(|error| lost(error.into()))?;
        protocol_answer(response, &self.path)
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
