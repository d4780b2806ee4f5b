//! The agent: accepts local-socket connections and serves the protocol against one [`Graph`].
//!
//! Each connection is its own task; whatever goes wrong on it (bad frame, unknown request, a peer
//! that vanishes) is logged and ends that connection only. Blocking requests are served by the
//! graph's own async waits, raced against the client's side of the socket: if the client goes away
//! mid-wait the wait future is dropped, which frees its waiter and leaves the unit as it was. Nothing
//! polls: a blocked `start` is answered the moment the graph wakes it.
//!
//! When a client's departure and its wait's completion are both ready, the departure wins: a `start`
//! whose client's hang-up has already arrived never marks the unit started.
//!
//! On shutdown the agent stops accepting, tells every blocked client `shutting_down`, closes idle
//! connections (between requests or still in the handshake), waits briefly for requests in flight to
//! finish, and removes its socket file. This module must not interpret names or
//! states beyond mapping graph answers to responses.

use crate::frame::{read_message, write_message, FrameError};
use crate::protocol::{
    EventInfo, Hello, HelloReply, PingInfo, Request, Response, UnitInfo, Welcome, PROTOCOL_VERSION,
};
use crate::socket::{self, SocketError};
use interprocess::local_socket::{tokio::Listener, tokio::Stream, traits::tokio::Listener as _};
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use unitsync_core::{Graph, StartOutcome, UnitName, UnitSnapshot, UnitState, WaitOutcome};

/// How long a new connection may take to say hello.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown waits for open connections to finish their last frame.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The agent's version, as reported by `ping` and the handshake.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A bound agent, ready to serve.
pub struct Agent {
    listener: Listener,
    path: PathBuf,
    graph: Graph,
    started: Instant,
    origin_unix_ms: u64,
}

struct Shared {
    graph: Graph,
    /// Units started on behalf of each owner (`start --owner`), for `abandon`. Touched only by
    /// requests that name an owner; the graph's hot paths never see it.
    owners: Mutex<HashMap<String, Vec<UnitName>>>,
    started: Instant,
    /// Unix milliseconds of the graph's origin, to turn graph durations into wall-clock times.
    origin_unix_ms: u64,
    stopping: watch::Receiver<bool>,
}

impl Agent {
    /// Binds `path` (see `socket::listen` for the rules) to serve `graph`.
    pub async fn bind(path: &Path, graph: Graph) -> Result<Self, SocketError> {
        let listener = socket::listen(path).await?;
        let since_origin = graph.origin().elapsed();
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        Ok(Self {
            listener,
            path: path.to_owned(),
            graph,
            started: Instant::now(),
            origin_unix_ms: now_ms.saturating_sub(since_origin.as_millis() as u64),
        })
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
            owners: Mutex::new(HashMap::new()),
            started: self.started,
            origin_unix_ms: self.origin_unix_ms,
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
                    }
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        // Out of descriptors and similar: back off briefly instead of spinning.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        tracing::info!("agent stopping");
        let _ = stop.send(true);
        let drain = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
            connections.abort_all();
        }
        drop(self.listener); // removes the socket file (reclaim_name)
    }
}

/// What a request handler wants done with the connection afterwards.
enum Next {
    Continue,
    Close,
}

async fn serve_connection(stream: Stream, shared: Arc<Shared>) {
    if let Err(reason) = socket::peer_allowed(&stream) {
        tracing::warn!(%reason, "refusing connection");
        let reply = HelloReply::Refused {
            message: reason,
            protocol: PROTOCOL_VERSION,
        };
        let _ = write_message(&mut &stream, &reply).await;
        return;
    }
    let mut reader = &stream;
    let mut writer = &stream;
    let mut stopping = shared.stopping.clone();
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_message(&mut reader));
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
                let _ = write_message(&mut writer, &reply).await;
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
        let _ = write_message(&mut writer, &reply).await;
        return;
    }
    let welcome = HelloReply::Welcome(Welcome {
        protocol: PROTOCOL_VERSION,
        agent_version: AGENT_VERSION.to_owned(),
        pid: std::process::id(),
    });
    if write_message(&mut writer, &welcome).await.is_err() {
        return;
    }
    loop {
        // Between requests the connection is idle: end it as soon as the agent stops, so shutdown
        // never waits for a client that keeps a connection open without using it.
        let read = tokio::select! {
            read = read_message(&mut reader) => read,
            () = stopped(&mut stopping) => return,
        };
        let request: Request = match read {
            Ok(request) => request,
            Err(FrameError::Closed) => return,
            Err(FrameError::Malformed(error)) => {
                tracing::debug!(%error, "malformed request");
                let reply = Response::Error {
                    message: format!("malformed or unknown request: {error}"),
                };
                if write_message(&mut writer, &reply).await.is_err() {
                    return;
                }
                continue;
            }
            Err(error @ FrameError::TooLarge(_)) => {
                tracing::debug!(%error, "oversized frame; closing");
                let _ = write_message(
                    &mut writer,
                    &Response::Error {
                        message: error.to_string(),
                    },
                )
                .await;
                return;
            }
            Err(error) => {
                tracing::debug!(%error, "connection failed");
                return;
            }
        };
        tracing::trace!(?request, "request");
        match handle(request, &stream, &shared).await {
            Ok(Next::Continue) => {}
            Ok(Next::Close) | Err(_) => return,
        }
    }
}

async fn handle(request: Request, stream: &Stream, shared: &Shared) -> Result<Next, FrameError> {
    let graph = &shared.graph;
    let mut writer = stream;
    let reply = match request {
        Request::Ping => Response::Pong {
            agent: PingInfo {
                agent_version: AGENT_VERSION.to_owned(),
                protocol: PROTOCOL_VERSION,
                uptime_ms: shared.started.elapsed().as_millis() as u64,
                units: graph.len(),
                pid: std::process::id(),
                waiters: graph.parked_waiters(),
            },
        },
        Request::Want { unit, dependencies } => match graph.want(&unit, &dependencies) {
            Ok(outcome) => Response::Wanted {
                registered: outcome.registered,
                added: outcome.added,
            },
            Err(error) => Response::Refused { error },
        },
        Request::Start {
            unit,
            timeout_ms,
            owner,
        } => return serve_start(stream, shared, &unit, timeout_ms, owner).await,
        Request::Abandon { owner, reason } => {
            let owned = shared
                .owners
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&owner)
                .unwrap_or_default();
            let failed = owned
                .into_iter()
                .filter(|unit| graph.state(unit.as_str()) == Some(UnitState::Started))
                .filter(|unit| graph.fail(unit.as_str(), &reason).is_ok())
                .collect();
            Response::Abandoned { failed }
        }
        Request::Complete { unit } => match graph.complete(&unit) {
            Ok(()) => Response::Completed,
            Err(error) => Response::Refused { error },
        },
        Request::Fail { unit, reason } => {
            let reason = reason.unwrap_or_else(|| "failed".to_owned());
            match graph.fail(&unit, &reason) {
                Ok(outcome) => Response::Failed {
                    propagated: outcome.propagated,
                },
                Err(error) => Response::Refused { error },
            }
        }
        Request::Ready { unit } => match graph.is_ready(&unit) {
            Ok(ready) => Response::Ready { ready },
            Err(error) => Response::Refused { error },
        },
        Request::Wait {
            unit,
            until,
            timeout_ms,
        } => {
            let deadline = deadline_after(timeout_ms);
            let wait = graph.wait_for(&unit, until, deadline);
            match until_closed(stream, shared, wait).await? {
                Some(Ok(WaitOutcome::Reached(state))) => Response::Reached { state },
                Some(Ok(WaitOutcome::Failed(failure))) => Response::UnitFailed { failure },
                Some(Ok(WaitOutcome::TimedOut(state))) => Response::TimedOut {
                    state,
                    unmet: Vec::new(),
                },
                Some(Err(error)) => Response::Refused { error },
                None => return Ok(Next::Close),
            }
        }
        Request::Status { unit } => match graph.snapshot(&unit) {
            Ok(snapshot) => Response::Status {
                unit: unit_info(&snapshot, shared.origin_unix_ms),
            },
            Err(error) => Response::Refused { error },
        },
        Request::List => Response::List {
            units: graph
                .list()
                .iter()
                .map(|s| unit_info(s, shared.origin_unix_ms))
                .collect(),
        },
        Request::Graph { format } => Response::Graph {
            text: graph.export(format),
        },
        Request::Watch { from_seq } => return serve_watch(stream, shared, from_seq).await,
    };
    write_message(&mut writer, &reply).await?;
    Ok(Next::Continue)
}

/// Resolves once the agent starts stopping.
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}

fn deadline_after(timeout_ms: Option<u64>) -> Option<Instant> {
    timeout_ms.map(|ms| Instant::now() + Duration::from_millis(ms))
}

/// Runs `work` while watching the client: returns `None` if the client hung up (or broke protocol
/// by talking during a wait) or the agent is stopping (after telling the client), else the result.
async fn until_closed<F: Future>(
    stream: &Stream,
    shared: &Shared,
    work: F,
) -> Result<Option<F::Output>, FrameError> {
    let mut reader = stream;
    let mut stopping = shared.stopping.clone();
    let mut probe = [0u8; 1];
    let mut work = std::pin::pin!(work);
    tokio::select! {
        // The client's side first: a client that already left must not have its wait completed
        // (for `start`, that would start a unit nobody runs).
        biased;
        _ = reader.read(&mut probe) => {
            tracing::debug!("client left while waiting; its waiter is freed");
            Ok(None)
        }
        output = &mut work => Ok(Some(output)),
        () = stopped(&mut stopping) => {
            let mut writer = stream;
            write_message(&mut writer, &Response::ShuttingDown).await?;
            Ok(None)
        }
    }
}

async fn serve_start(
    stream: &Stream,
    shared: &Shared,
    unit: &str,
    timeout_ms: Option<u64>,
    owner: Option<String>,
) -> Result<Next, FrameError> {
    let (progress, mut updates) = mpsc::unbounded_channel();
    let start = shared
        .graph
        .start(unit, deadline_after(timeout_ms), move |unmet| {
            let _ = progress.send(unmet.to_vec());
        });
    let mut start = std::pin::pin!(start);
    let mut reader = stream;
    let mut writer = stream;
    let mut stopping = shared.stopping.clone();
    let mut probe = [0u8; 1];
    let outcome = loop {
        tokio::select! {
            // The client's side first: a client that already left must not have its unit started.
            biased;
            _ = reader.read(&mut probe) => {
                tracing::debug!(unit, "client left while waiting to start; its waiter is freed");
                return Ok(Next::Close);
            }
            outcome = &mut start => break outcome,
            Some(unmet) = updates.recv() => {
                write_message(&mut writer, &Response::Blocked { unmet }).await?;
            }
            () = stopped(&mut stopping) => {
                write_message(&mut writer, &Response::ShuttingDown).await?;
                return Ok(Next::Close);
            }
        }
    };
    let reply = match outcome {
        Ok(StartOutcome::Started) => {
            if let (Some(owner), Ok(name)) = (owner, UnitName::new(unit)) {
                shared
                    .owners
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .entry(owner)
                    .or_default()
                    .push(name);
            }
            Response::Started
        }
        Ok(StartOutcome::TimedOut { unmet }) => Response::TimedOut {
            state: UnitState::Pending,
            unmet,
        },
        Err(error) => Response::Refused { error },
    };
    write_message(&mut writer, &reply).await?;
    Ok(Next::Continue)
}

async fn serve_watch(
    stream: &Stream,
    shared: &Shared,
    from_seq: Option<u64>,
) -> Result<Next, FrameError> {
    let mut events = match from_seq {
        Some(seq) => shared.graph.subscribe_from(seq),
        None => shared.graph.subscribe(),
    };
    let mut reader = stream;
    let mut writer = stream;
    let mut stopping = shared.stopping.clone();
    let mut probe = [0u8; 1];
    loop {
        let reply = tokio::select! {
            biased;
            received = events.recv() => match received {
                Ok(event) => Response::Event {
                    event: EventInfo {
                        seq: event.seq,
                        at_ms: shared.origin_unix_ms + event.at.as_millis() as u64,
                        kind: event.kind,
                    },
                },
                Err(lagged) => Response::Lagged { missed: lagged.0 },
            },
            _ = reader.read(&mut probe) => return Ok(Next::Close),
            () = stopped(&mut stopping) => Response::ShuttingDown,
        };
        let last = matches!(reply, Response::ShuttingDown);
        write_message(&mut writer, &reply).await?;
        if last {
            return Ok(Next::Close);
        }
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
