//! W5 and W6 against a real agent over a real local socket, through `unitsync_ipc::Client` (the same
//! client the CLI uses): `ping` round trips, the wake-up of one blocked `start`, and the wake-up of
//! K blocked `start`s at once; the throughput of many connections changing the graph (`churn`);
//! how long one large answer holds up another connection (`ping_beside_list`); plus idle
//! handshaken connections for the agent's per-connection memory.
//!
//! Clients run on a current-thread tokio runtime, so the client side of every figure uses one core
//! and the agent keeps its own threads. Unit names carry a caller-chosen prefix so that runs against
//! the same agent never collide. This module drives the protocol; it must not start agents (that is
//! `process`) and must not reach into the agent's graph.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio::sync::{Notify, Semaphore};
use unitsync_ipc::protocol::{Request, Response};
use unitsync_ipc::Client;

/// Errors of this module: anything unexpected ends the measurement.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// A current-thread runtime with I/O and timers, for the client side.
pub fn client_runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn unexpected(what: &str, response: Response) -> Error {
    format!("expected {what}, got {response:?}").into()
}

async fn expect(client: &mut Client, request: Request, what: &str) -> Result<Response, Error> {
    let response = client.request(&request).await?;
    let ok = matches!(
        (&request, &response),
        (Request::Ping, Response::Pong { .. })
            | (Request::Want { .. }, Response::Wanted { .. })
            | (Request::Start { .. }, Response::Started)
            | (Request::Complete { .. }, Response::Completed)
    );
    if ok {
        Ok(response)
    } else {
        Err(unexpected(what, response))
    }
}

fn want(unit: &str, dependency: &str) -> Request {
    Request::Want {
        unit: unit.to_owned(),
        dependencies: vec![dependency.to_owned()],
    }
}

fn start(unit: &str) -> Request {
    Request::Start {
        unit: unit.to_owned(),
        timeout_ms: None,
        claim: None,
    }
}

fn complete(unit: &str) -> Request {
    Request::Complete {
        unit: unit.to_owned(),
    }
}

/// A connected client with its runtime, for W5 ping round trips in interleaved blocks.
pub struct PingClient {
    runtime: Runtime,
    client: Client,
}

impl PingClient {
    /// Connects (and handshakes) to the agent at `path`.
    pub fn connect(path: &Path) -> Result<Self, Error> {
        let runtime = client_runtime();
        let client = runtime.block_on(Client::connect(path))?;
        Ok(Self { runtime, client })
    }

    /// `count` timed `ping` round trips.
    pub fn round_trips(&mut self, count: usize) -> Result<Vec<Duration>, Error> {
        let client = &mut self.client;
        self.runtime.block_on(async {
            let mut times = Vec::with_capacity(count);
            for _ in 0..count {
                let begin = Instant::now();
                expect(client, Request::Ping, "pong").await?;
                times.push(begin.elapsed());
            }
            Ok(times)
        })
    }
}

/// W6, K = 1: per round, a client blocks in `start {prefix}r{i}_s` (which wants `{prefix}r{i}_root`,
/// started by a second client); times from sending `complete root` until the blocked client has its
/// `started` answer. `warmup` extra rounds come first and are not returned.
pub fn wake_one(
    path: &Path,
    prefix: &str,
    warmup: usize,
    rounds: usize,
) -> Result<Vec<Duration>, Error> {
    client_runtime().block_on(async {
        let mut control = Client::connect(path).await?;
        let mut waiter = Client::connect(path).await?;
        let mut times = Vec::with_capacity(rounds);
        for round in 0..warmup + rounds {
            let root = format!("{prefix}r{round}_root");
            let unit = format!("{prefix}r{round}_s");
            expect(&mut control, want(&unit, &root), "wanted").await?;
            expect(&mut control, start(&root), "started (root)").await?;
            waiter.send(&start(&unit)).await?;
            match waiter.recv().await? {
                Response::Blocked { .. } => {}
                other => return Err(unexpected("blocked", other)),
            }
            let begin = Instant::now();
            control.send(&complete(&root)).await?;
            match waiter.recv().await? {
                Response::Started => {}
                other => return Err(unexpected("started", other)),
            }
            let elapsed = begin.elapsed();
            match control.recv().await? {
                Response::Completed => {}
                other => return Err(unexpected("completed", other)),
            }
            if round >= warmup {
                times.push(elapsed);
            }
        }
        Ok(times)
    })
}

/// Opens `count` handshaken connections to `path`, at most `parallel` connecting at once (so the
/// listen backlog never overflows).
pub async fn connect_many(
    path: &Path,
    count: usize,
    parallel: usize,
) -> Result<Vec<Client>, Error> {
    let permits = Arc::new(Semaphore::new(parallel.max(1)));
    let mut pending = Vec::with_capacity(count);
    for _ in 0..count {
        let permit = Arc::clone(&permits).acquire_owned().await?;
        let path = path.to_owned();
        pending.push(tokio::spawn(async move {
            let client = Client::connect(&path).await;
            drop(permit);
            client
        }));
    }
    let mut clients = Vec::with_capacity(count);
    for task in pending {
        clients.push(task.await??);
    }
    Ok(clients)
}

/// W6, K = `k`: `k` connections, opened once; per round each blocks in `start` on its own unit that
/// wants the round's `root` (already started), and once every one has received its first `blocked`
/// frame, `complete root` is sent. Returns, per round, the time from sending it until the last
/// client has its `started` answer.
pub fn wake_many(
    path: &Path,
    prefix: &str,
    k: usize,
    rounds: usize,
) -> Result<Vec<Duration>, Error> {
    client_runtime().block_on(async {
        let mut control = Client::connect(path).await?;
        let mut clients = connect_many(path, k, 64).await?;
        let mut times = Vec::with_capacity(rounds);
        for round in 0..rounds {
            let root = format!("{prefix}r{round}_root");
            expect(&mut control, start(&root), "started (root)").await?;
            let blocked = Arc::new(AtomicUsize::new(0));
            let all_blocked = Arc::new(Notify::new());
            let mut waiters = Vec::with_capacity(k);
            for (i, mut client) in clients.drain(..).enumerate() {
                let unit = format!("{prefix}r{round}_k{i}");
                let root = root.clone();
                let blocked = Arc::clone(&blocked);
                let all_blocked = Arc::clone(&all_blocked);
                waiters.push(tokio::spawn(async move {
                    expect(&mut client, want(&unit, &root), "wanted").await?;
                    client.send(&start(&unit)).await?;
                    match client.recv().await? {
                        Response::Blocked { .. } => {}
                        other => return Err(unexpected("blocked", other)),
                    }
                    if blocked.fetch_add(1, Ordering::SeqCst) + 1 == k {
                        all_blocked.notify_one();
                    }
                    match client.recv().await? {
                        Response::Started => Ok::<_, Error>((client, Instant::now())),
                        other => Err(unexpected("started", other)),
                    }
                }));
            }
            all_blocked.notified().await;
            let begin = Instant::now();
            expect(&mut control, complete(&root), "completed").await?;
            let mut last = begin;
            for waiter in waiters {
                let (client, woke) = waiter.await??;
                last = last.max(woke);
                clients.push(client);
            }
            times.push(last - begin);
        }
        Ok(times)
    })
}

/// Throughput over the socket: `connections` clients, each on its own connection and its own chain
/// of `units` units `{prefix}c{c}_{j}` (unit j wants unit j-1; unit 0 wants `{prefix}gate`, started
/// and completed first), doing per unit `want`, `start` (ready at once) and `complete` in order:
/// every request changes the graph, so with a journal every one waits for its write. Connections
/// are opened untimed; returns the requests answered (3 per unit) and the time from the first
/// request until the last connection's last answer.
pub fn churn(
    path: &Path,
    prefix: &str,
    connections: usize,
    units: usize,
) -> Result<(usize, Duration), Error> {
    client_runtime().block_on(async {
        let mut control = Client::connect(path).await?;
        let gate = format!("{prefix}gate");
        expect(&mut control, start(&gate), "started (gate)").await?;
        expect(&mut control, complete(&gate), "completed (gate)").await?;
        let clients = connect_many(path, connections, 64).await?;
        let (release, go) = tokio::sync::watch::channel(false);
        let mut workers = Vec::with_capacity(connections);
        for (c, mut client) in clients.into_iter().enumerate() {
            let names: Vec<String> = (0..units).map(|j| format!("{prefix}c{c}_{j}")).collect();
            let gate = gate.clone();
            let mut go = go.clone();
            workers.push(tokio::spawn(async move {
                go.wait_for(|&go| go).await?;
                for (j, unit) in names.iter().enumerate() {
                    let dependency = if j == 0 { &gate } else { &names[j - 1] };
                    expect(&mut client, want(unit, dependency), "wanted").await?;
                    expect(&mut client, start(unit), "started").await?;
                    expect(&mut client, complete(unit), "completed").await?;
                }
                Ok::<_, Error>(())
            }));
        }
        let begin = Instant::now();
        release.send_replace(true);
        for worker in workers {
            worker.await??;
        }
        Ok((3 * connections * units, begin.elapsed()))
    })
}

/// `count` idle handshaken connections, held open until dropped.
pub struct IdleConnections {
    clients: Vec<Client>,
    runtime: Runtime,
}

impl IdleConnections {
    /// Opens them.
    pub fn open(path: &Path, count: usize) -> Result<Self, Error> {
        let runtime = client_runtime();
        let clients = runtime.block_on(connect_many(path, count, 64))?;
        Ok(Self { clients, runtime })
    }

    /// How many are open.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

impl Drop for IdleConnections {
    fn drop(&mut self) {
        // Close the streams inside the runtime they were registered with.
        let _guard = self.runtime.enter();
        self.clients.clear();
    }
}

/// What [`ping_beside_list`] measured in one round.
#[derive(Debug, Clone, Copy)]
pub struct PingBesideList {
    /// From sending `list` until its whole answer was read.
    pub list: Duration,
    /// The slowest `ping` round trip on another connection meanwhile.
    pub worst_during: Duration,
    /// The slowest `ping` round trip over as long again with nothing else asked.
    pub worst_quiet: Duration,
}

/// How long one large answer holds up the agent's other connections: registers `units` units
/// `{prefix}u{i}` (each wanting `{prefix}root`; untimed), then, per round, a client on its own
/// thread and connection pings in a loop while this thread asks for the whole `list`; then the
/// pinger runs as long again with nothing else asked, as the baseline.
pub fn ping_beside_list(
    path: &Path,
    prefix: &str,
    units: usize,
    rounds: usize,
) -> Result<Vec<PingBesideList>, Error> {
    let runtime = client_runtime();
    runtime.block_on(async {
        let clients = connect_many(path, 8, 8).await?;
        let mut tasks = Vec::new();
        for (c, mut client) in clients.into_iter().enumerate() {
            let names: Vec<String> = (c..units)
                .step_by(8)
                .map(|i| format!("{prefix}u{i}"))
                .collect();
            let root = format!("{prefix}root");
            tasks.push(tokio::spawn(async move {
                for name in &names {
                    expect(&mut client, want(name, &root), "wanted").await?;
                }
                Ok::<_, Error>(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        Ok::<_, Error>(())
    })?;
    let mut lister = runtime.block_on(Client::connect(path))?;
    let mut results = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let pinger = Pinger::start(path)?;
        let begin = Instant::now();
        match runtime.block_on(lister.request(&Request::List))? {
            Response::List { units: listed } if listed.len() >= units => {}
            other => return Err(unexpected("the whole list", other)),
        }
        let list = begin.elapsed();
        let worst_during = pinger.stop()?;
        let pinger = Pinger::start(path)?;
        std::thread::sleep(list);
        let worst_quiet = pinger.stop()?;
        results.push(PingBesideList {
            list,
            worst_during,
            worst_quiet,
        });
    }
    Ok(results)
}

/// A thread pinging the agent on its own connection until stopped (or dropped); keeps the slowest
/// round trip.
struct Pinger {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<Duration, Error>>>,
}

impl Pinger {
    /// Starts it and returns once it has a connection and its first round trip is done.
    fn start(path: &Path) -> Result<Self, Error> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready, started) = std::sync::mpsc::channel();
        let thread = {
            let stop = Arc::clone(&stop);
            let path = path.to_owned();
            std::thread::spawn(move || {
                let mut client = PingClient::connect(&path)?;
                client.round_trips(1)?;
                let _ = ready.send(());
                let mut worst = Duration::ZERO;
                while !stop.load(Ordering::Acquire) {
                    worst = client
                        .round_trips(1)?
                        .into_iter()
                        .fold(worst, Duration::max);
                }
                Ok(worst)
            })
        };
        if started.recv().is_err() {
            // It ended before its first round trip: its error says why.
            return Err(thread
                .join()
                .map_err(|_| "the pinger panicked")?
                .err()
                .unwrap_or_else(|| "the pinger stopped".into()));
        }
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops it; the slowest round trip it saw.
    fn stop(mut self) -> Result<Duration, Error> {
        self.stop.store(true, Ordering::Release);
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| "the pinger panicked")?,
            None => Err("the pinger was already stopped".into()),
        }
    }
}

impl Drop for Pinger {
    /// Stops the thread when a measurement ends early with an error.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
