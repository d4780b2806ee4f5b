//! Load: one real agent process (journaling, as in production) and this test process talking to it
//! over real sockets with `unitsync_ipc::Client`, in three phases:
//!
//! 1. 1,000 concurrent clients issue mixed requests (`want`/`start`/`complete` along their own
//!    chains, `ready`, `status`, `ping`, now and then `list`, and reconnecting) for a bounded time
//!    (5 s by default; `UNITSYNC_LOAD_SECS=30` for the 30 s soak). Every answer must be the expected
//!    one; the only refusals allowed are the expected ones (starting a unit that already started).
//! 2. 10,000 clients block in `start` on units that wait for one gate; one `complete` releases
//!    them, and every one must answer `started` (no lost wake-up).
//! 3. Afterwards `ping` reports no parked waiter, and the agent's resident memory (VmRSS) is back
//!    near its baseline, taken once the graph had its final size: under 2 × baseline + 8 MiB.
//!
//! The figures (requests per second, answers by kind, wake-up time, RSS before/after) are printed.
//! The agent needs more than 10,000 descriptors: it raises its own soft limit to the hard one (here
//! 20,000), and so does this test process.

#![cfg(target_os = "linux")] // VmRSS from /proc, and fd limits as on the CI machines

mod common;

use common::{env_number, rss_kib, Agent, Rng};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use unitsync_ipc::protocol::Request;
use unitsync_ipc::protocol::Response;
use unitsync_ipc::Client;

const CLIENTS: usize = 1_000;
const CHAIN: usize = 12;
const WAITERS: usize = 10_000;

/// Answers by kind, and everything that was not expected.
#[derive(Default)]
struct Tally {
    answers: Mutex<BTreeMap<&'static str, u64>>,
    unexpected: Mutex<Vec<String>>,
    requests: AtomicU64,
}

impl Tally {
    fn count(&self, kind: &'static str) {
        *self.answers.lock().unwrap().entry(kind).or_default() += 1;
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    fn unexpected(&self, what: String) {
        let mut all = self.unexpected.lock().unwrap();
        if all.len() < 20 {
            all.push(what);
        }
    }
}

fn chain_unit(client: usize, step: usize) -> String {
    format!("l{client}_{step}")
}

/// Sends `request` and returns its final answer (skipping `blocked` progress frames).
async fn call(client: &mut Client, request: &Request) -> Result<Response, String> {
    client.send(request).await.map_err(|e| e.to_string())?;
    loop {
        match client.recv().await.map_err(|e| e.to_string())? {
            Response::Blocked { .. } => continue,
            answer => return Ok(answer),
        }
    }
}

/// One of the 1,000 clients of phase 1.
async fn mixed_client(socket: PathBuf, id: usize, until: Instant, seed: u64, tally: Arc<Tally>) {
    let mut rng = Rng::new(seed ^ (id as u64).wrapping_mul(0x9E37_79B9));
    let Ok(mut client) = Client::connect(&socket).await else {
        tally.unexpected(format!("client {id}: cannot connect"));
        return;
    };
    // Where this client is along its chain: step s, phase 0 want, 1 start, 2 complete.
    let (mut step, mut phase) = (0usize, 0u8);
    let claim = format!("load#{id}");
    while Instant::now() < until {
        let roll = rng.below(1000);
        let (request, expected): (Request, &[&str]) = match roll {
            0..=399 if step < CHAIN => {
                let unit = chain_unit(id, step);
                let request = match phase {
                    0 if step > 0 => Request::Want {
                        unit: unit.clone(),
                        dependencies: vec![chain_unit(id, step - 1)],
                    },
                    0 | 1 => Request::Start {
                        unit,
                        timeout_ms: Some(30_000),
                        claim: Some(claim.clone()),
                    },
                    _ => Request::Complete { unit },
                };
                let expected: &[&str] = match request {
                    Request::Want { .. } => &["wanted"],
                    Request::Start { .. } => &["started"],
                    _ => &["completed"],
                };
                (phase, step) = match (phase, step) {
                    (0, 0) | (1, _) => (2, step),
                    (0, _) => (1, step),
                    _ => (0, step + 1),
                };
                (request, expected)
            }
            // The chain is done: starting a finished unit is the expected refusal.
            0..=399 => (
                Request::Start {
                    unit: chain_unit(id, rng.below(CHAIN as u64) as usize),
                    timeout_ms: Some(30_000),
                    claim: Some(format!("other#{id}")),
                },
                &["refused"],
            ),
            400..=599 => (
                Request::Ready {
                    unit: chain_unit(id, rng.below(CHAIN as u64) as usize),
                },
                &["ready"],
            ),
            600..=799 => (
                Request::Status {
                    unit: chain_unit(id, rng.below(CHAIN as u64) as usize),
                },
                &["status"],
            ),
            800..=989 => (Request::Ping, &["pong"]),
            990 => {
                // Reconnect: connection churn.
                match Client::connect(&socket).await {
                    Ok(fresh) => {
                        client = fresh;
                        tally.count("reconnected");
                    }
                    Err(error) => tally.unexpected(format!("client {id}: reconnect: {error}")),
                }
                continue;
            }
            // `list` answers with the whole graph: rare, or it would be the whole load.
            991 if rng.below(40) == 0 => (Request::List, &["list"]),
            _ => (Request::Ping, &["pong"]),
        };
        match call(&mut client, &request).await {
            Ok(answer) => {
                let kind = kind(&answer);
                tally.count(kind);
                if !expected.contains(&kind) {
                    tally.unexpected(format!("client {id}: {request:?} answered {answer:?}"));
                }
            }
            Err(error) => {
                tally.unexpected(format!("client {id}: {request:?} failed: {error}"));
                return;
            }
        }
    }
}

fn kind(answer: &Response) -> &'static str {
    match answer {
        Response::Pong { .. } => "pong",
        Response::Wanted { .. } => "wanted",
        Response::Started => "started",
        Response::Completed => "completed",
        Response::Ready { .. } => "ready",
        Response::Status { .. } => "status",
        Response::List { .. } => "list",
        Response::Refused { .. } => "refused",
        Response::Error { .. } => "error",
        _ => "other",
    }
}

/// `ping`'s count of parked waiters.
async fn waiters(socket: &Path) -> usize {
    let mut client = Client::connect(socket).await.expect("connect");
    match client.request(&Request::Ping).await.expect("ping") {
        Response::Pong { agent } => agent.waiters,
        other => panic!("expected pong, got {other:?}"),
    }
}

/// Polls `ping` until `count` waiters are parked (bounded).
async fn wait_for_waiters(socket: &Path, count: usize) {
    let deadline = Instant::now() + common::PATIENCE * 2;
    loop {
        let now = waiters(socket).await;
        if now == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{now} waiters parked, expected {count}"
        );
        tokio::task::yield_now().await;
    }
}

#[test]
fn a_thousand_clients_and_ten_thousand_waiters_lose_nothing_and_leak_nothing() {
    let descriptors = unitsync_ipc::socket::raise_descriptor_limit()
        .expect("raise the descriptor limit")
        .expect("a descriptor limit on Unix");
    assert!(
        descriptors as usize > WAITERS + 1_000,
        "this test needs {} descriptors; the limit is {descriptors}",
        WAITERS + 1_000
    );
    let load_secs = env_number("UNITSYNC_LOAD_SECS", 5);
    let seed = Rng::seed_from_env();
    eprintln!("load test: seed {seed}, {load_secs} s of mixed load");
    let agent = Agent::start();
    let pid = agent.proc.pid();
    let socket = agent.socket.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rss_idle = rss_kib(pid);

    runtime.block_on(async {
        // The graph in its final shape: every chain unit, and every waiter's unit and edge.
        let mut setup = Vec::new();
        for part in 0..20 {
            let socket = socket.clone();
            setup.push(tokio::spawn(async move {
                let mut client = Client::connect(&socket).await.unwrap();
                for i in (part..WAITERS).step_by(20) {
                    let request = Request::Want {
                        unit: format!("waiter{i}"),
                        dependencies: vec!["release".to_owned()],
                    };
                    assert!(matches!(
                        call(&mut client, &request).await,
                        Ok(Response::Wanted { .. })
                    ));
                }
                for id in (part..CLIENTS).step_by(20) {
                    for step in 1..CHAIN {
                        let request = Request::Want {
                            unit: chain_unit(id, step),
                            dependencies: vec![chain_unit(id, step - 1)],
                        };
                        assert!(matches!(
                            call(&mut client, &request).await,
                            Ok(Response::Wanted { .. })
                        ));
                    }
                }
            }));
        }
        for task in setup {
            task.await.unwrap();
        }
    });
    let rss_baseline = rss_kib(pid);

    // Phase 1: mixed load.
    let tally = Arc::new(Tally::default());
    let began = Instant::now();
    runtime.block_on(async {
        let until = Instant::now() + Duration::from_secs(load_secs);
        let clients: Vec<_> = (0..CLIENTS)
            .map(|id| {
                tokio::spawn(mixed_client(
                    socket.clone(),
                    id,
                    until,
                    seed,
                    Arc::clone(&tally),
                ))
            })
            .collect();
        for client in clients {
            client.await.unwrap();
        }
    });
    let load_took = began.elapsed();
    let rss_after_load = rss_kib(pid);
    let requests = tally.requests.load(Ordering::Relaxed);
    let unexpected = tally.unexpected.lock().unwrap().clone();
    assert!(unexpected.is_empty(), "unexpected answers: {unexpected:#?}");
    let answers = tally.answers.lock().unwrap().clone();
    assert_eq!(answers.get("error"), None);
    eprintln!(
        "phase 1: {CLIENTS} clients, {requests} requests in {load_took:.1?} ({:.0}/s); answers: \
         {answers:?}",
        requests as f64 / load_took.as_secs_f64()
    );

    // Phase 2: 10,000 blocked starts, one complete.
    let (connect_took, wake_took, rss_parked) = runtime.block_on(async {
        let began = Instant::now();
        let mut blocked = Vec::with_capacity(WAITERS);
        for chunk in 0..WAITERS / 500 {
            let mut opening = Vec::new();
            for i in chunk * 500..(chunk + 1) * 500 {
                let socket = socket.clone();
                opening.push(tokio::spawn(async move {
                    let mut client = Client::connect(&socket).await.expect("connect a waiter");
                    client
                        .send(&Request::Start {
                            unit: format!("waiter{i}"),
                            timeout_ms: Some(120_000),
                            claim: Some(format!("waiter#{i}")),
                        })
                        .await
                        .expect("send start");
                    match client.recv().await.expect("an answer") {
                        Response::Blocked { .. } => client,
                        other => panic!("waiter {i}: expected blocked, got {other:?}"),
                    }
                }));
            }
            for task in opening {
                blocked.push(task.await.unwrap());
            }
        }
        wait_for_waiters(&socket, WAITERS).await;
        let connect_took = began.elapsed();
        let rss_parked = rss_kib(pid);
        let answers: Vec<_> = blocked
            .into_iter()
            .enumerate()
            .map(|(i, mut client)| {
                tokio::spawn(async move {
                    loop {
                        match client.recv().await {
                            Ok(Response::Started) => return Ok(()),
                            // Progress: the gate started (it says so to every waiter).
                            Ok(Response::Blocked { .. }) => continue,
                            other => return Err(format!("waiter {i}: {other:?}")),
                        }
                    }
                })
            })
            .collect();
        let mut control = Client::connect(&socket).await.unwrap();
        assert!(matches!(
            call(
                &mut control,
                &Request::Start {
                    unit: "release".to_owned(),
                    timeout_ms: None,
                    claim: Some("load#release".to_owned()),
                }
            )
            .await,
            Ok(Response::Started)
        ));
        let released = Instant::now();
        assert!(matches!(
            call(
                &mut control,
                &Request::Complete {
                    unit: "release".to_owned()
                }
            )
            .await,
            Ok(Response::Completed)
        ));
        let mut failures = Vec::new();
        for answer in answers {
            if let Err(failure) = answer.await.unwrap() {
                failures.push(failure);
            }
        }
        let wake_took = released.elapsed();
        assert!(
            failures.is_empty(),
            "{} waiters: {:#?}",
            failures.len(),
            &failures[..failures.len().min(10)]
        );
        wait_for_waiters(&socket, 0).await;
        (connect_took, wake_took, rss_parked)
    });
    eprintln!(
        "phase 2: {WAITERS} clients blocked in start in {connect_took:.1?}; one complete released \
         every one in {wake_took:.1?}"
    );

    // Phase 3: nothing left behind. The departed connections' memory is given back as their tasks
    // end (see `unitsync_ipc::memory`), a moment after their clients hung up: poll VmRSS, bounded.
    drop(runtime);
    let limit = 2 * rss_baseline + 8 * 1024;
    let deadline = Instant::now() + common::PATIENCE;
    let mut rss_after = rss_kib(pid);
    while rss_after >= limit && Instant::now() < deadline {
        std::thread::yield_now();
        rss_after = rss_kib(pid);
    }
    eprintln!(
        "agent RSS: {rss_idle} KiB idle, {rss_baseline} KiB baseline (graph built), \
         {rss_after_load} KiB after the mixed load, {rss_parked} KiB with 10,000 waiters parked, \
         {rss_after} KiB after they went (limit {limit} KiB)"
    );
    if rss_after >= limit || std::env::var_os("UNITSYNC_SMAPS").is_some() {
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
        let mut current = String::new();
        for line in smaps.lines() {
            if line.contains('-') && !line.starts_with(|c: char| c.is_ascii_uppercase()) {
                current = line.to_owned();
            } else if let Some(rss) = line.strip_prefix("Rss:") {
                let kib: u64 = rss.trim().trim_end_matches("kB").trim().parse().unwrap();
                if kib > 512 {
                    eprintln!("{kib:>8} KiB  {current}");
                }
            }
        }
    }
    assert!(
        rss_after < limit,
        "the agent's RSS grew from {rss_baseline} KiB to {rss_after} KiB"
    );
    assert_eq!(agent.waiters(), 0);
    let units = agent.run(&["list", "--json"]).ok().json();
    let started = units["units"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["name"].as_str().unwrap().starts_with("waiter"))
        .filter(|u| u["state"] == "started")
        .count();
    assert_eq!(started, WAITERS);
}
