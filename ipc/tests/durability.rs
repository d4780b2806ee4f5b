//! What a crash would leave, sampled thousands of times: an agent with a state file serves a
//! concurrent workload of multi-event changes (`want` with up to 16 edges, `fail` propagating along
//! chains, `start`/`complete`), while a thread copies the journal file as fast as it can. Each copy
//! is exactly what a `kill -9` at that instant would leave on disk (a copy taken in the middle of a
//! write is a torn tail). Every copy must replay into a graph, and in that graph every change is
//! whole: a unit has all the edges its one `want` asked for or none, and no unit that has not
//! started waits for a failed dependency (a failure's propagation is all there or not at all).
//! This is the agent's change rule (`server`: each multi-event operation inside one journal change)
//! and the journal's batches ending only at safe cuts, each one whole frame, checked end to end
//! without having to time a real kill. 2 s by default; `UNITSYNC_DURABILITY_SECS=60` for a soak
//! run. (With the change tracking switched off — every record a change of its own — a 2 s run
//! caught a half change in 5 of 6 runs.)

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use unitsync_core::{EventKind, Graph, UnitState};
use unitsync_ipc::journal::{decode, encode_header};
use unitsync_ipc::protocol::{Request, Response};
use unitsync_ipc::state::StateOptions;
use unitsync_ipc::{Agent, AgentOptions, Client};

const WORKERS: usize = 4;
const EDGES: usize = 16;

/// What each unit's one `want` asked for, recorded before the request is sent.
type Wanted = Arc<Mutex<HashMap<String, BTreeSet<String>>>>;

async fn call(client: &mut Client, request: Request) -> Response {
    client.send(&request).await.unwrap();
    loop {
        match client.recv().await.unwrap() {
            Response::Blocked { .. } => continue,
            answer => return answer,
        }
    }
}

/// Chain `w<worker>_<i>`: each unit wants up to 16 earlier ones; five steps behind, a unit is
/// started and completed, or (one in five) failed while its dependents are still pending.
async fn worker(socket: PathBuf, worker: usize, until: Instant, wanted: Wanted) -> usize {
    let mut client = Client::connect(&socket).await.unwrap();
    let unit = |i: usize| format!("w{worker}_{i}");
    let mut changes = 0;
    let mut i = 0;
    while Instant::now() < until {
        let deps: Vec<String> = (1..=EDGES.min(i)).map(|back| unit(i - back)).collect();
        if !deps.is_empty() {
            wanted
                .lock()
                .unwrap()
                .insert(unit(i), deps.iter().cloned().collect());
            let answer = call(
                &mut client,
                Request::Want {
                    unit: unit(i),
                    dependencies: deps,
                },
            )
            .await;
            assert!(matches!(answer, Response::Wanted { .. }), "{answer:?}");
            changes += 1;
        }
        if i >= 5 {
            let behind = unit(i - 5);
            if i % 5 == 0 {
                let answer = call(
                    &mut client,
                    Request::Fail {
                        unit: behind,
                        reason: Some("injected".to_owned()),
                    },
                )
                .await;
                assert!(
                    matches!(answer, Response::Failed { .. } | Response::Refused { .. }),
                    "{answer:?}"
                );
            } else {
                let start = Request::Start {
                    unit: behind.clone(),
                    timeout_ms: Some(0),
                    claim: Some(format!("w{worker}#{i}")),
                };
                if matches!(call(&mut client, start).await, Response::Started) {
                    let answer = call(&mut client, Request::Complete { unit: behind }).await;
                    assert!(matches!(answer, Response::Completed), "{answer:?}");
                }
            }
            changes += 1;
        }
        i += 1;
    }
    changes
}

/// The graph a journal describes, rebuilt incrementally from the frames appended since the last
/// copy (a journal only grows, so each copy extends the one before it).
#[derive(Default)]
struct Model {
    /// Bytes of whole frames already applied (after the header).
    applied: usize,
    states: HashMap<String, UnitState>,
    edges: HashMap<String, BTreeSet<String>>,
    records: usize,
}

impl Model {
    fn state(&self, unit: &str) -> UnitState {
        self.states.get(unit).copied().unwrap_or(UnitState::Unknown)
    }

    /// Applies what `copy` holds beyond what was applied, and checks that every change is whole.
    fn check(&mut self, copy: &[u8], wanted: &Wanted) {
        let header = encode_header();
        if copy.len() < header.len() + self.applied {
            return; // caught before the compaction rewrote the file
        }
        let tail = [&header[..], &copy[header.len() + self.applied..]].concat();
        let decoded = decode(&tail);
        let mut touched = BTreeSet::new();
        for record in &decoded.records {
            let unit = record.kind.unit().to_string();
            touched.insert(unit.clone());
            match &record.kind {
                EventKind::Registered { .. } => {
                    self.states.insert(unit, UnitState::Pending);
                }
                EventKind::DependencyAdded { dependency, .. } => {
                    self.edges
                        .entry(unit)
                        .or_default()
                        .insert(dependency.to_string());
                }
                EventKind::Started { .. } => {
                    self.states.insert(unit, UnitState::Started);
                }
                EventKind::Completed { .. } => {
                    self.states.insert(unit, UnitState::Completed);
                }
                EventKind::Failed { .. } => {
                    self.states.insert(unit, UnitState::Failed);
                }
            }
        }
        self.records += decoded.records.len();
        self.applied += decoded.valid_len.saturating_sub(header.len());
        let wanted = wanted.lock().unwrap();
        for unit in &touched {
            if let Some(have) = self.edges.get(unit) {
                let asked = wanted
                    .get(unit)
                    .unwrap_or_else(|| panic!("edges of {unit} nobody asked for"));
                assert_eq!(have, asked, "half a want of {unit} in the journal");
            }
        }
        for (unit, dependencies) in &self.edges {
            if matches!(self.state(unit), UnitState::Pending | UnitState::Unknown) {
                for dependency in dependencies {
                    assert_ne!(
                        self.state(dependency),
                        UnitState::Failed,
                        "{unit} waits for failed {dependency}: half a failure's propagation in \
                         the journal"
                    );
                }
            }
        }
    }
}

/// The whole journal replays into a graph (the agent's own restore checks every event).
fn replays(bytes: &[u8]) -> usize {
    let decoded = decode(bytes);
    assert!(decoded.problem.is_none(), "{:?}", decoded.problem);
    let origin = decoded.records.first().map_or(0, |r| r.unix_ms);
    let events: Vec<_> = decoded
        .records
        .iter()
        .map(|record| unitsync_core::Event {
            seq: record.seq,
            at: Duration::from_millis(record.unix_ms - origin),
            kind: record.kind.clone(),
        })
        .collect();
    let count = events.len();
    Graph::builder()
        .restore(events)
        .unwrap_or_else(|error| panic!("the journal does not replay: {error}"));
    count
}

fn copier(path: &Path, done: &AtomicBool, wanted: &Wanted, copies: &AtomicUsize) -> Model {
    let mut model = Model::default();
    while !done.load(Ordering::Relaxed) {
        if let Ok(bytes) = std::fs::read(path) {
            model.check(&bytes, wanted);
            copies.fetch_add(1, Ordering::Relaxed);
        }
    }
    model
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_copy_of_a_busy_journal_holds_only_whole_changes() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run").join("agent.sock");
    let state = dir.path().join("run").join("agent.sock.journal");
    let agent = Agent::start(
        &socket,
        AgentOptions {
            event_capacity: 4096,
            state: Some(StateOptions {
                path: state.clone(),
                fresh: false,
                sync: false,
            }),
        },
    )
    .await
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(agent.serve_until(async {
        let _ = stopped.await;
    }));

    let wanted: Wanted = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let copies = Arc::new(AtomicUsize::new(0));
    let copying = {
        let (state, done, wanted, copies) = (
            state.clone(),
            Arc::clone(&done),
            Arc::clone(&wanted),
            Arc::clone(&copies),
        );
        std::thread::spawn(move || copier(&state, &done, &wanted, &copies))
    };
    let secs = std::env::var("UNITSYNC_DURABILITY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let until = Instant::now() + Duration::from_secs(secs);
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| tokio::spawn(worker(socket.clone(), w, until, Arc::clone(&wanted))))
        .collect();
    let mut changes = 0;
    for worker in workers {
        changes += worker.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let mut model = copying.join().unwrap();
    let _ = stop.send(());
    serving.await.unwrap();
    // The final, cleanly flushed journal is whole too, and replays.
    let bytes = std::fs::read(&state).unwrap();
    let seen = model.records;
    model.check(&bytes, &wanted);
    let records = replays(&bytes);
    assert_eq!(model.records, records);
    eprintln!(
        "{changes} changes; {} copies of the journal checked while it grew to {seen} of its \
         {records} records",
        copies.load(Ordering::Relaxed)
    );
    assert!(
        copies.load(Ordering::Relaxed) > 100,
        "too few copies to mean anything"
    );
}
