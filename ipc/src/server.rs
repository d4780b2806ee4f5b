//! The agent: accepts local-socket connections and serves the protocol against one [`Graph`].
//!
//! Each connection is its own task; whatever goes wrong on it (bad frame, unknown request, a peer
//! that vanishes) is logged and ends that connection only. A connection reads only through its
//! [`FrameReader`] (one `read` normally brings a whole request) and writes each answer as one frame:
//! with one `write_all`, or, for an answer that waited for the journal, with one non-blocking write
//! by whoever wrote the journal (see "Durability"). Blocking requests are served by the graph's own async waits, raced against
//! the client's side of the socket ([`FrameReader::peer_activity`]): if the client goes away
//! mid-wait the wait future is dropped, which frees its waiter and leaves the unit as it was.
//! Nothing polls: a blocked `start` is answered the moment the graph wakes it. The answers whose
//! size grows with the graph (`list`, `graph`) are built and encoded on tokio's blocking pool, so
//! that the worker threads go on serving everyone else meanwhile (`unitsync agent` runs one worker
//! on 2 CPUs).
//!
//! When a client's departure and its wait's completion are both ready, the departure wins: a `start`
//! whose client's hang-up has already arrived never marks the unit started.
//!
//! **Durability.** An agent started with a state file ([`Agent::start`]) journals every graph event
//! (see `journal`). Every request that can change the graph — `want`, `start` (a claimed retry
//! included), `complete`, `fail`, `abandon` — is answered only once the journal holds every event
//! numbered up to what the graph had handed out when the request finished (its *commit point*,
//! `next_event_seq - 1`), whatever the answer: an acknowledged change is on disk, and so is
//! whatever state a refusal was based on. A `wait` that reached its state waits the same way, and
//! `watch` sends an event only once it is written, so nobody acts on, or numbers from, an event a
//! crash could take back. If the journal has failed, these requests get `unsaved` instead, never a
//! false success. Read-only requests (`ping`, `ready`, `status`, `list`, `graph`) never wait.
//!
//! Such an answer is not waited for by the connection's task: it is handed to the journal as an
//! acknowledgment (`JournalHandle::commit`), and whoever writes the batch that covers its commit
//! point — often this very task, leading the write — sends it, without blocking, right after the
//! write returns (see `Link`). Concurrent requests share one write (and with `--sync` one
//! `fdatasync`), and no task is woken just to send an answer. Answers on one connection stay in
//! request order: the connection writes nothing else until its last answer is out.
//!
//! A crash must also never keep *half* of a change: a `want` is several events (registration, one
//! per edge), a `fail` or `abandon` one per unit failed. The journal writes each batch as one frame,
//! kept whole or lost whole, and ends batches only where no change is half-recorded, so it is
//! enough that each multi-event request (`want`, `complete`, `fail`, `abandon`) runs its graph
//! operation inside one journal change (`JournalHandle::change`, a guard on the serving thread). A
//! `start` that registers a new unit makes two events outside a change, but a crash between them
//! leaves a state the graph could have been in (registered, not started), and the starter is told
//! nothing before both are saved. Nothing takes a lock across requests: concurrent changes run in
//! parallel, and the journal waits for the ones in progress before it writes past them.
//!
//! On shutdown the agent stops accepting, tells every blocked client `shutting_down`, closes idle
//! connections (between requests or still in the handshake), waits briefly for requests in flight to
//! finish, waits until the journal holds every event, and removes its socket file. This module must
//! not interpret names or states beyond mapping graph answers to responses.

use crate::error::IpcError;
use crate::frame::{encode, write_message, FrameError, FrameReader};
use crate::journal::{unix_now_ms, Acknowledgment, ChangeGuard, JournalHandle, Lead};
use crate::memory::Trimmer;
use crate::protocol::{
    claim_owner, EventInfo, Hello, HelloReply, PingInfo, Request, Response, UnitInfo, Welcome,
    MAX_FRAME_BYTES, MAX_RESPONSE_BYTES, PROTOCOL_VERSION,
};
use crate::socket::{self, SocketError};
use crate::state::{self, StateLock, StateOptions};
use crate::stream::LocalStream;
use interprocess::local_socket::{tokio::Listener, tokio::Stream, traits::tokio::Listener as _};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;
use unitsync_core::{Graph, StartOutcome, UnitSnapshot, UnitState, WaitOutcome};

/// How long a new connection may take to say hello.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Room each connection's [`FrameReader`] keeps for requests: several typical requests (tens to a
/// few hundred bytes each) in one read, small enough for 10,000 connections. A longer request, up to
/// `MAX_FRAME_BYTES`, gets room for itself while it is read.
const REQUEST_BUFFER_BYTES: usize = 1024;

/// How long shutdown waits for open connections to finish their last frame.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// How long shutdown waits for the journal to be written through.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// The agent's version, as reported by `ping` and the handshake.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// How [`Agent::start`] sets the agent up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentOptions {
    /// How many events a slow `watch` may fall behind before it lags.
    pub event_capacity: usize,
    /// Where the state is journaled; `None` keeps it in memory only.
    pub state: Option<StateOptions>,
}

/// The journal of an agent with a state file.
struct Journal {
    handle: JournalHandle,
    /// Held for as long as the agent may write the file.
    _lock: StateLock,
}

/// A bound agent, ready to serve.
pub struct Agent {
    listener: Listener,
    path: PathBuf,
    graph: Graph,
    started: Instant,
    origin_unix_ms: u64,
    journal: Option<Journal>,
}

struct Shared {
    graph: Graph,
    started: Instant,
    /// This process's id, read once (`getpid` is a system call every time).
    pid: u32,
    /// Unix milliseconds of the graph's origin, to turn graph durations into wall-clock times.
    origin_unix_ms: u64,
    /// Where changes must be before they are acknowledged, if anywhere.
    journal: Option<JournalHandle>,
    /// Gives memory back after crowds and large answers.
    trimmer: Trimmer,
    /// Turns to build a large answer (see [`build_large`]).
    large_answers: Semaphore,
    stopping: watch::Receiver<bool>,
}

/// How many large answers (see [`build_large`]) are built at once; the others wait their turn
/// without holding a thread, as they queued on the one worker before.
const LARGE_ANSWERS_AT_ONCE: usize = 2;

impl Agent {
    /// Binds `path` (see `socket::listen` for the rules) to serve `graph`, keeping no state file
    /// (for an agent whose graph lives as long as its process, such as `unitsync run`'s).
    pub async fn bind(path: &Path, graph: Graph) -> Result<Self, SocketError> {
        let listener = socket::listen(path).await?;
        let since_origin = graph.origin().elapsed().as_millis() as u64;
        let origin_unix_ms = unix_now_ms().saturating_sub(since_origin);
        Ok(Self::serving(listener, path, graph, origin_unix_ms, None))
    }

    /// Binds `path` and sets up the graph as `options` say: restored from its state file (see
    /// `state`), or empty. The socket is bound first, so a second agent on a live socket refuses
    /// before it touches the state file; a state file that cannot be used unbinds it again (the
    /// socket file is removed) and is the error.
    pub async fn start(path: &Path, options: AgentOptions) -> Result<Self, IpcError> {
        let listener = socket::listen(path).await?;
        let builder = Graph::builder().event_capacity(options.event_capacity);
        let agent = match &options.state {
            None => Self::serving(listener, path, builder.build(), unix_now_ms(), None),
            Some(state) => {
                let restored = state::open(state, builder)?;
                let journal = Journal {
                    handle: restored.journal,
                    _lock: restored.lock,
                };
                Self::serving(
                    listener,
                    path,
                    restored.graph,
                    restored.origin_unix_ms,
                    Some(journal),
                )
            }
        };
        Ok(agent)
    }

    fn serving(
        listener: Listener,
        path: &Path,
        graph: Graph,
        origin_unix_ms: u64,
        journal: Option<Journal>,
    ) -> Self {
        Self {
            listener,
            path: path.to_owned(),
            graph,
            started: Instant::now(),
            origin_unix_ms,
            journal,
        }
    }

    /// The graph this agent serves.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves connections until `shutdown` resolves, then stops as described in the module docs.
    pub async fn serve_until(self, shutdown: impl Future<Output = ()>) {
        let (stop, stopping) = watch::channel(false);
        let shared = Arc::new(Shared {
            graph: self.graph.clone(),
            started: self.started,
            pid: std::process::id(),
            origin_unix_ms: self.origin_unix_ms,
            journal: self.journal.as_ref().map(|j| j.handle.clone()),
            trimmer: Trimmer::default(),
            large_answers: Semaphore::new(LARGE_ANSWERS_AT_ONCE),
            stopping,
        });
        let mut connections = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        tracing::info!(path = %self.path.display(), "agent listening");
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(stream) => {
                        connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                        shared.trimmer.opened(connections.len());
                    }
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        // Out of descriptors and similar: back off briefly instead of spinning.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {
                    shared.trimmer.closed(connections.len());
                }
            }
        }
        tracing::info!("agent stopping");
        let _ = stop.send(true);
        let drain = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
            connections.abort_all();
        }
        if let Some(journal) = &self.journal {
            let last = commit_point(&shared);
            match tokio::time::timeout(FLUSH_TIMEOUT, journal.handle.wait_written(last)).await {
                Ok(Ok(())) => tracing::info!(last_event = last, "journal flushed"),
                Ok(Err(error)) => tracing::error!(%error, "journal not flushed"),
                Err(_) => tracing::error!(
                    last_event = last,
                    written = journal.handle.written(),
                    "journal not flushed within {}s; the changes after `written` are lost",
                    FLUSH_TIMEOUT.as_secs()
                ),
            }
        }
        drop(self.journal); // releases the state file's lock
        drop(self.listener); // removes the socket file (reclaim_name)
    }
}

/// Writes one response, never over [`MAX_RESPONSE_BYTES`]: an answer that would be longer is
/// replaced by an `error` saying so (the connection stays usable). Returns the bytes written.
async fn send(stream: &LocalStream, response: &Response) -> Result<usize, FrameError> {
    let frame = encode_answer(response)?;
    write_all(stream, &frame).await?;
    Ok(frame.len())
}

/// The frame of `response`, or of an `error` saying it is over [`MAX_RESPONSE_BYTES`].
fn encode_answer(response: &Response) -> Result<Vec<u8>, FrameError> {
    match encode(response, MAX_RESPONSE_BYTES) {
        Err(FrameError::TooLarge { length, limit }) => {
            tracing::warn!(length, limit, "an answer over the frame limit was not sent");
            let refusal = Response::Error {
                message: format!("the answer would be {length} bytes, over the limit of {limit}"),
            };
            encode(&refusal, MAX_RESPONSE_BYTES)
        }
        other => other,
    }
}

async fn write_all(stream: &LocalStream, bytes: &[u8]) -> std::io::Result<()> {
    let mut writer = stream;
    writer.write_all(bytes).await?;
    writer.flush().await
}

/// Writes as much of `bytes` as `stream` takes without blocking (on any thread, in a runtime or
/// not); returns how much that was (less than all on a full socket buffer, or on an error, which
/// the write of the rest then meets).
fn write_without_blocking(stream: &LocalStream, bytes: &[u8]) -> usize {
    let mut done = 0;
    while done < bytes.len() {
        match stream.try_write(&bytes[done..]) {
            Ok(n) if n > 0 => done += n,
            _ => break,
        }
    }
    done
}

/// Writes the answer to a hello.
async fn send_hello(stream: &LocalStream, reply: &HelloReply) -> Result<(), FrameError> {
    write_message(&mut &*stream, reply, MAX_RESPONSE_BYTES).await
}

/// The commit point covering everything that happened so far: every number the graph handed out
/// (the journal writes it once no change is half-recorded below it).
fn commit_point(shared: &Shared) -> u64 {
    shared.graph.next_event_seq().saturating_sub(1)
}

/// How a request's answer goes out.
enum Answering {
    /// Now, by the connection (no journal).
    Now(Response),
    /// Now, by the connection: an answer whose size grows with the graph (`list`, `graph`),
    /// built and encoded on tokio's blocking pool (see [`build_large`]).
    Built(Result<Vec<u8>, FrameError>),
    /// By the journal's acknowledgment, once what the answer rests on is saved; after this
    /// connection writes the batch, if it leads.
    Saved(Option<Lead>),
}

/// Arranges for `reply` to be sent once the journal holds every event up to the commit point read
/// now (see the module docs); `unsaved` instead if the journal fails. `change`, the journal change
/// the request's graph operation ran in (if any), ends here. Without a journal, `reply` goes out
/// at once. Synchronous, so that no guard is held across an `.await`.
fn answer_when_saved(
    connection: &Connection,
    shared: &Shared,
    received: Instant,
    change: Option<ChangeGuard<'_>>,
    reply: Response,
) -> Answering {
    let Some(journal) = &shared.journal else {
        return Answering::Now(reply);
    };
    let point = commit_point(shared);
    let link = connection.get_ref();
    link.awaiting(point);
    let acknowledge = link.acknowledgment(reply);
    Answering::Saved(match change {
        Some(change) => change.commit(point, received, acknowledge),
        None => journal.commit(point, received, acknowledge),
    })
}

/// Runs `operation`, a graph change that may publish several events, inside one journal change
/// (see the module docs), and arranges its answer as [`answer_when_saved`] does.
fn change_and_answer(
    connection: &Connection,
    shared: &Shared,
    received: Instant,
    operation: impl FnOnce(&Graph) -> Response,
) -> Answering {
    let change = shared.journal.as_ref().map(JournalHandle::change);
    let reply = operation(&shared.graph);
    answer_when_saved(connection, shared, received, change, reply)
}

/// Builds and encodes an answer whose size grows with the graph on tokio's blocking pool, so that
/// the worker threads go on serving meanwhile: with one worker (the agent's default on 2 CPUs) a
/// 20,000-unit `list` built in place held every other connection up for up to 30 ms
/// (benches/README.md, "How many worker threads"). The graph is read as on a worker, under no
/// lock of the server's. At most [`LARGE_ANSWERS_AT_ONCE`] are built at a time, so that a burst of
/// `list`s neither fills the blocking pool (which the journal's synced writes use too) nor holds a
/// copy of the graph per request.
async fn build_large(
    shared: &Shared,
    build: impl FnOnce(&Graph, u64) -> Response + Send + 'static,
) -> Answering {
    // The semaphore is never closed.
    let Ok(_turn) = shared.large_answers.acquire().await else {
        return Answering::Built(Err(FrameError::Closed));
    };
    let graph = shared.graph.clone();
    let origin_unix_ms = shared.origin_unix_ms;
    let built =
        tokio::task::spawn_blocking(move || encode_answer(&build(&graph, origin_unix_ms))).await;
    Answering::Built(match built {
        Ok(frame) => frame,
        Err(failed) if failed.is_panic() => std::panic::resume_unwind(failed.into_panic()),
        // The runtime is shutting down: the connection is about to go too.
        Err(_) => Err(FrameError::Closed),
    })
}

/// Sends the answer as [`answer_when_saved`] or [`build_large`] arranged it (after a large one,
/// lets the trimmer give the memory back).
async fn answer(
    connection: &Connection,
    shared: &Shared,
    answering: Answering,
) -> Result<(), FrameError> {
    match answering {
        Answering::Now(reply) => {
            send(connection.get_ref(), &reply).await?;
        }
        Answering::Built(frame) => {
            let frame = frame?;
            write_all(connection.get_ref(), &frame).await?;
            let sent = frame.len();
            drop(frame);
            shared.trimmer.answered(sent);
        }
        Answering::Saved(Some(lead)) => {
            lead.write().await;
        }
        Answering::Saved(None) => {}
    }
    Ok(())
}

/// What a request handler wants done with the connection afterwards.
enum Next {
    Continue,
    Close,
}

async fn serve_connection(stream: Stream, shared: Arc<Shared>) {
    let allowed = socket::peer_allowed(&stream);
    let stream = match LocalStream::new(stream) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::warn!(%error, "cannot watch a new connection; closing it");
            return;
        }
    };
    if let Err(reason) = allowed {
        tracing::warn!(%reason, "refusing connection");
        let reply = HelloReply::Refused {
            message: reason,
            protocol: PROTOCOL_VERSION,
        };
        let _ = send_hello(&stream, &reply).await;
        return;
    }
    // Every read of this connection goes through its buffer; answers are written through
    // `reader.get_ref()`.
    let mut reader =
        FrameReader::with_capacity(Link::new(stream), MAX_FRAME_BYTES, REQUEST_BUFFER_BYTES);
    let mut stopping = shared.stopping.clone();
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.read_message::<Hello>());
    let hello: Hello = tokio::select! {
        read = handshake => match read {
            Ok(Ok(hello)) => hello,
            Ok(Err(FrameError::Closed)) => return,
            Ok(Err(error)) => {
                tracing::debug!(%error, "bad handshake");
                let reply = HelloReply::Refused {
                    message: format!("expected a hello frame: {error}"),
                    protocol: PROTOCOL_VERSION,
                };
                let _ = send_hello(reader.get_ref(), &reply).await;
                return;
            }
            Err(_) => {
                tracing::debug!("client said nothing; closing");
                return;
            }
        },
        () = stopped(&mut stopping) => return,
    };
    if hello.protocol != PROTOCOL_VERSION {
        let reply = HelloReply::Refused {
            message: format!(
                "protocol mismatch: the agent speaks version {PROTOCOL_VERSION}, the client {} ({})",
                hello.protocol, hello.client
            ),
            protocol: PROTOCOL_VERSION,
        };
        let _ = send_hello(reader.get_ref(), &reply).await;
        return;
    }
    let welcome = HelloReply::Welcome(Welcome {
        protocol: PROTOCOL_VERSION,
        agent_version: AGENT_VERSION.to_owned(),
        pid: shared.pid,
    });
    if send_hello(reader.get_ref(), &welcome).await.is_err() {
        return;
    }
    // Between requests the connection is idle: end it as soon as the agent stops, so shutdown
    // never waits for a client that keeps a connection open without using it. One future for the
    // connection's life (not one per request), since it only ever resolves once.
    let mut stop = std::pin::pin!(stopped(&mut stopping));
    let link = reader.get_ref().clone();
    loop {
        let read = match &shared.journal {
            // The last answer waits for the journal, whose acknowledgment sends it; this task
            // waits for it only before it answers anything else (a client that sends before it
            // reads), or stops.
            Some(journal) if link.is_awaiting() => tokio::select! {
                biased;
                () = &mut stop => {
                    link.settle(journal).await;
                    return;
                }
                read = reader.read_message() => {
                    link.settle(journal).await;
                    read
                }
            },
            _ => tokio::select! {
                biased;
                () = &mut stop => return,
                read = reader.read_message() => read,
            },
        };
        let request: Request = match read {
            Ok(request) => request,
            Err(FrameError::Closed) => return,
            Err(FrameError::Malformed(error)) => {
                tracing::debug!(%error, "malformed request");
                let reply = Response::Error {
                    message: format!("malformed or unknown request: {error}"),
                };
                if send(reader.get_ref(), &reply).await.is_err() {
                    return;
                }
                continue;
            }
            Err(error @ FrameError::TooLarge { .. }) => {
                tracing::debug!(%error, "oversized frame; closing");
                let reply = Response::Error {
                    message: error.to_string(),
                };
                let _ = send(reader.get_ref(), &reply).await;
                return;
            }
            Err(error) => {
                tracing::debug!(%error, "connection failed");
                return;
            }
        };
        tracing::trace!(?request, "request");
        match handle(request, Instant::now(), &mut reader, &shared).await {
            Ok(Next::Continue) => {}
            Ok(Next::Close) | Err(_) => return,
        }
    }
}

/// A connection's reading side; its stream is written through `get_ref()`.
type Connection = FrameReader<Link>;

/// A connection's stream, shared with the journal acknowledgment that may send its last answer.
///
/// An answer that must wait for the journal (see the module docs) is not waited for by the
/// connection's task: the journal's acknowledgment writes it, on the thread that wrote the batch,
/// without blocking (whatever does not fit in the socket's buffer is written by a task it starts).
/// Until it is out the connection writes nothing else, so answers keep their order.
#[derive(Clone)]
struct Link(Arc<LinkShared>);

struct LinkShared {
    stream: LocalStream,
    answer: Mutex<Outstanding>,
    /// Whether `answer` may be anything but [`AnswerState::Sent`]: set by the connection's task
    /// before it hands an answer to the journal, cleared once the answer is out.
    awaiting: AtomicBool,
    /// Signalled (one permit) when the answer is out and the connection's task waits for it.
    settled: Notify,
    /// Where the rest of an answer too large for the socket's buffer is written.
    runtime: tokio::runtime::Handle,
}

/// The connection's last answer, while the journal has not let it go.
struct Outstanding {
    state: AnswerState,
    /// Whether the connection's task waits for the acknowledgment to finish.
    waited: bool,
}

enum AnswerState {
    /// Out (or there was none): the connection may write.
    Sent,
    /// Waiting for the journal to hold every event up to this number.
    Saving(u64),
    /// Being written by the acknowledgment (or the task it started for the rest).
    Sending,
}

impl Link {
    fn new(stream: LocalStream) -> Self {
        Self(Arc::new(LinkShared {
            stream,
            answer: Mutex::new(Outstanding {
                state: AnswerState::Sent,
                waited: false,
            }),
            awaiting: AtomicBool::new(false),
            settled: Notify::new(),
            runtime: tokio::runtime::Handle::current(),
        }))
    }

    fn outstanding(&self) -> MutexGuard<'_, Outstanding> {
        self.0.answer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the last answer may not be out yet.
    fn is_awaiting(&self) -> bool {
        self.0.awaiting.load(Ordering::Acquire)
    }

    /// Notes that the next answer waits for the journal to hold `point`.
    fn awaiting(&self, point: u64) {
        let mut outstanding = self.outstanding();
        outstanding.state = AnswerState::Saving(point);
        outstanding.waited = false;
        self.0.awaiting.store(true, Ordering::Release);
    }

    /// Marks the answer out (with `outstanding`'s lock held).
    fn sent(&self, outstanding: &mut Outstanding) {
        outstanding.state = AnswerState::Sent;
        self.0.awaiting.store(false, Ordering::Release);
    }

    /// What the journal runs once the answer's commit point is written: sends `reply` (or
    /// `unsaved`, if the journal failed) without blocking, handing back what does not fit.
    fn acknowledgment(&self, reply: Response) -> Acknowledgment {
        let link = self.clone();
        Box::new(move |saved| {
            let reply = match saved {
                Ok(()) => reply,
                Err(error) => Response::Unsaved {
                    message: error.to_string(),
                },
            };
            let frame = encode_answer(&reply).unwrap_or_else(|error| {
                tracing::error!(%error, "cannot encode an answer");
                let refusal = Response::Error {
                    message: format!("the agent could not encode its answer: {error}"),
                };
                encode_answer(&refusal).unwrap_or_default()
            });
            {
                let mut outstanding = link.outstanding();
                if !matches!(outstanding.state, AnswerState::Saving(_)) {
                    return;
                }
                outstanding.state = AnswerState::Sending;
            }
            let written = write_without_blocking(&link.0.stream, &frame);
            if written == frame.len() {
                link.finished();
            } else {
                let runtime = link.0.runtime.clone();
                drop(runtime.spawn(async move {
                    if let Err(error) = write_all(&link.0.stream, &frame[written..]).await {
                        // The connection's task meets the closed socket when it reads.
                        tracing::debug!(%error, "could not send an answer");
                    }
                    link.finished();
                }));
            }
        })
    }

    /// Marks the answer out, and wakes the connection's task if it waits for that.
    fn finished(&self) {
        let waited = {
            let mut outstanding = self.outstanding();
            self.sent(&mut outstanding);
            outstanding.waited
        };
        if waited {
            self.0.settled.notify_one();
        }
    }

    /// Waits until the last answer is out: writes the journal's batch if nobody else does, then
    /// waits for the acknowledgment.
    async fn settle(&self, journal: &JournalHandle) {
        let mut saved = false;
        loop {
            let settled = self.0.settled.notified();
            let step = {
                let mut outstanding = self.outstanding();
                match outstanding.state {
                    AnswerState::Sent => return,
                    AnswerState::Saving(point) if !saved => Settle::Save(point),
                    AnswerState::Saving(_) | AnswerState::Sending => {
                        outstanding.waited = true;
                        Settle::Wait
                    }
                }
            };
            match step {
                // Writes the batch, or waits for whoever does; the acknowledgment runs then.
                Settle::Save(point) => {
                    let _ = journal.wait_written(point).await;
                    saved = true;
                }
                // The acknowledgment is running (or about to): it signals when it is done.
                Settle::Wait => settled.await,
            }
        }
    }
}

/// What [`Link::settle`] does next.
enum Settle {
    Save(u64),
    Wait,
}

impl std::ops::Deref for Link {
    type Target = LocalStream;
    fn deref(&self) -> &LocalStream {
        &self.0.stream
    }
}

impl tokio::io::AsyncRead for Link {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut &self.0.stream).poll_read(context, buffer)
    }
}

/// Answers one request, received at `received`.
async fn handle(
    request: Request,
    received: Instant,
    connection: &mut Connection,
    shared: &Shared,
) -> Result<Next, FrameError> {
    let graph = &shared.graph;
    let answering = match request {
        Request::Ping => Answering::Now(Response::Pong {
            agent: PingInfo {
                agent_version: AGENT_VERSION.to_owned(),
                protocol: PROTOCOL_VERSION,
                uptime_ms: shared.started.elapsed().as_millis() as u64,
                units: graph.len(),
                pid: shared.pid,
                waiters: graph.parked_waiters(),
            },
        }),
        Request::Want { unit, dependencies } => {
            change_and_answer(connection, shared, received, |graph| {
                match graph.want(&unit, &dependencies) {
                    Ok(outcome) => Response::Wanted {
                        registered: outcome.registered,
                        added: outcome.added,
                    },
                    Err(error) => Response::Refused { error },
                }
            })
        }
        Request::Start {
            unit,
            timeout_ms,
            claim,
        } => {
            let start = Start {
                unit: &unit,
                timeout_ms,
                claim: claim.as_deref(),
                received,
            };
            return serve_start(connection, shared, start).await;
        }
        Request::Abandon { owner, reason } => {
            change_and_answer(connection, shared, received, |graph| Response::Abandoned {
                failed: graph.fail_started_by(|claim| claim_owner(claim) == owner, &reason),
            })
        }
        Request::Complete { unit } => change_and_answer(connection, shared, received, |graph| {
            match graph.complete(&unit) {
                Ok(()) => Response::Completed,
                Err(error) => Response::Refused { error },
            }
        }),
        Request::Fail { unit, reason } => {
            let reason = reason.unwrap_or_else(|| "failed".to_owned());
            change_and_answer(connection, shared, received, |graph| {
                match graph.fail(&unit, &reason) {
                    Ok(outcome) => Response::Failed {
                        propagated: outcome.propagated,
                    },
                    Err(error) => Response::Refused { error },
                }
            })
        }
        Request::Ready { unit } => Answering::Now(match graph.is_ready(&unit) {
            Ok(ready) => Response::Ready { ready },
            Err(error) => Response::Refused { error },
        }),
        Request::Wait {
            unit,
            until,
            timeout_ms,
        } => {
            let deadline = deadline_after(timeout_ms);
            let wait = graph.wait_for(&unit, until, deadline);
            match until_closed(connection, shared, wait).await? {
                Some(Ok(WaitOutcome::Reached(state))) => {
                    let reply = Response::Reached { state };
                    answer_when_saved(connection, shared, received, None, reply)
                }
                Some(Ok(WaitOutcome::Failed(failure))) => {
                    let reply = Response::UnitFailed { failure };
                    answer_when_saved(connection, shared, received, None, reply)
                }
                Some(Ok(WaitOutcome::TimedOut(state))) => Answering::Now(Response::TimedOut {
                    state,
                    unmet: Vec::new(),
                }),
                Some(Err(error)) => Answering::Now(Response::Refused { error }),
                None => return Ok(Next::Close),
            }
        }
        Request::Status { unit } => Answering::Now(match graph.snapshot(&unit) {
            Ok(snapshot) => Response::Status {
                unit: unit_info(&snapshot, shared.origin_unix_ms),
            },
            Err(error) => Response::Refused { error },
        }),
        Request::List => {
            build_large(shared, |graph, origin_unix_ms| Response::List {
                units: graph
                    .list()
                    .iter()
                    .map(|s| unit_info(s, origin_unix_ms))
                    .collect(),
            })
            .await
        }
        Request::Graph { format } => {
            build_large(shared, move |graph, _| Response::Graph {
                text: graph.export(format),
            })
            .await
        }
        Request::Watch { from_seq } => return serve_watch(connection, shared, from_seq).await,
    };
    answer(connection, shared, answering).await?;
    Ok(Next::Continue)
}

/// Resolves once the agent starts stopping.
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// The deadline `timeout_ms` from now; none for a timeout too long to represent (it never comes).
fn deadline_after(timeout_ms: Option<u64>) -> Option<Instant> {
    timeout_ms.and_then(|ms| Instant::now().checked_add(Duration::from_millis(ms)))
}

/// Runs `work` while watching the client: returns `None` if the client hung up (or broke protocol
/// by talking during a wait) or the agent is stopping (after telling the client), else the result.
async fn until_closed<F: Future>(
    connection: &mut Connection,
    shared: &Shared,
    work: F,
) -> Result<Option<F::Output>, FrameError> {
    let mut stopping = shared.stopping.clone();
    let mut work = std::pin::pin!(work);
    tokio::select! {
        // The client's side first: a client that already left must not have its wait completed
        // (for `start`, that would start a unit nobody runs).
        biased;
        _ = connection.peer_activity() => {
            tracing::debug!("client left while waiting; its waiter is freed");
            Ok(None)
        }
        output = &mut work => Ok(Some(output)),
        () = stopped(&mut stopping) => {
            send(connection.get_ref(), &Response::ShuttingDown).await?;
            Ok(None)
        }
    }
}

/// A `start` request.
struct Start<'a> {
    unit: &'a str,
    timeout_ms: Option<u64>,
    claim: Option<&'a str>,
    received: Instant,
}

async fn serve_start(
    connection: &mut Connection,
    shared: &Shared,
    request: Start<'_>,
) -> Result<Next, FrameError> {
    let Start {
        unit,
        timeout_ms,
        claim,
        received,
    } = request;
    // Only the latest unmet list matters (a few hundred bytes per waiter, where a queue would hold a
    // block of slots: it adds up over 10,000 blocked starts).
    let (progress, mut updates) = watch::channel(None);
    let start = shared
        .graph
        .start_claimed(unit, claim, deadline_after(timeout_ms), move |unmet| {
            progress.send_replace(Some(unmet.to_vec()));
        });
    let mut start = std::pin::pin!(start);
    let mut stopping = shared.stopping.clone();
    let outcome = loop {
        tokio::select! {
            // The client's side first: a client that already left must not have its unit started.
            biased;
            _ = connection.peer_activity() => {
                tracing::debug!(unit, "client left while waiting to start; its waiter is freed");
                return Ok(Next::Close);
            }
            outcome = &mut start => break outcome,
            Ok(()) = updates.changed() => {
                let unmet = updates.borrow_and_update().clone();
                if let Some(unmet) = unmet {
                    send(connection.get_ref(), &Response::Blocked { unmet }).await?;
                }
            }
            () = stopped(&mut stopping) => {
                send(connection.get_ref(), &Response::ShuttingDown).await?;
                return Ok(Next::Close);
            }
        }
    };
    let reply = match outcome {
        Ok(StartOutcome::Started) => Response::Started,
        Ok(StartOutcome::TimedOut { unmet }) => Response::TimedOut {
            state: UnitState::Pending,
            unmet,
        },
        Err(error) => Response::Refused { error },
    };
    // Every answer may rest on a change (its own start, the failure it reports, or a timed-out
    // start's registration of a new unit), which must be saved before anyone acts on it.
    let answering = answer_when_saved(connection, shared, received, None, reply);
    answer(connection, shared, answering).await?;
    Ok(Next::Continue)
}

async fn serve_watch(
    connection: &mut Connection,
    shared: &Shared,
    from_seq: Option<u64>,
) -> Result<Next, FrameError> {
    let mut events = match from_seq {
        Some(seq) => shared.graph.subscribe_from(seq),
        None => shared.graph.subscribe(),
    };
    let mut stopping = shared.stopping.clone();
    loop {
        let reply = tokio::select! {
            biased;
            received = events.recv() => match received {
                Ok(event) => match written(shared, event.seq).await {
                    Ok(()) => Response::Event {
                        event: EventInfo {
                            seq: event.seq,
                            at_ms: shared.origin_unix_ms + event.at.as_millis() as u64,
                            kind: event.kind,
                        },
                    },
                    Err(unsaved) => unsaved,
                },
                Err(lagged) => Response::Lagged { missed: lagged.0 },
            },
            _ = connection.peer_activity() => return Ok(Next::Close),
            () = stopped(&mut stopping) => Response::ShuttingDown,
        };
        let last = matches!(reply, Response::ShuttingDown | Response::Unsaved { .. });
        send(connection.get_ref(), &reply).await?;
        if last {
            return Ok(Next::Close);
        }
    }
}

/// Waits until event `seq` is in the journal (at once without one); `unsaved` if it never will be.
async fn written(shared: &Shared, seq: u64) -> Result<(), Response> {
    match &shared.journal {
        None => Ok(()),
        Some(journal) => journal
            .wait_covered(seq)
            .await
            .map_err(|error| Response::Unsaved {
                message: error.to_string(),
            }),
    }
}

fn unit_info(snapshot: &UnitSnapshot, origin_unix_ms: u64) -> UnitInfo {
    let wall = |d: Option<Duration>| d.map(|d| origin_unix_ms + d.as_millis() as u64);
    UnitInfo {
        name: snapshot.name.clone(),
        state: snapshot.state,
        ready: snapshot.ready,
        dependencies: snapshot.dependencies.clone(),
        dependents: snapshot.dependents.clone(),
        registered_at_ms: wall(snapshot.registered_at),
        started_at_ms: wall(snapshot.started_at),
        finished_at_ms: wall(snapshot.finished_at),
        failure: snapshot.failure.clone(),
    }
}
