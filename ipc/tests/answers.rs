//! Answers sent by the journal's acknowledgment keep request order, and a full socket buffer loses
//! nothing. An agent with a state journal does not answer a request that changes the graph (`want`,
//! `start`, `complete`, `fail`, `abandon`, a `wait` that reached its state) from the connection's
//! own task: it hands the answer to the journal, and whichever task writes the batch holding the
//! request's events sends it, without blocking; what does not fit in the socket's buffer is written
//! by a task that acknowledgment starts. Meanwhile the connection's task reads on, and must write
//! nothing until that answer is out. So the order of a connection's answers rests on that
//! hand-over, not on one task writing them in turn, and a client that sends many requests before it
//! reads any answer is exactly the one that can catch a mistake: its answers pile up, the agent's
//! socket buffer fills, and the rest of an answer is written by another task while the connection's
//! task already has the next request in hand.
//!
//! These tests drive a real agent on a real socket, with a client that speaks the wire protocol by
//! hand and writes long runs of requests without reading: several MiB of answers, far more than a
//! socket buffer holds, including single answers larger than one. Every answer is checked, in
//! order: the right kind, for the right request, with the right contents (a lost, duplicated, torn
//! or reordered answer fails). Read-only answers (`ping`, `ready`, `status`, an `error`) written
//! right behind a journaled one never overtake it, also with `--sync` (batches written on tokio's
//! blocking pool) and with two such clients sharing the journal's batches (so one connection's
//! task or a blocking thread sends the other's answers). Each journaled answer arrives only once
//! its events are in the file, and at the end the file replays into exactly the graph the agent
//! serves.
#![cfg(unix)]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Debug;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use unitsync_core::{
    Event, EventKind, Graph, GraphError, Operation, UnitName, UnitState, WaitTarget,
};
use unitsync_ipc::frame::{encode, read_frame_blocking};
use unitsync_ipc::journal::{decode, encode_header};
use unitsync_ipc::protocol::{
    Hello, HelloReply, Request, Response, MAX_FRAME_BYTES, MAX_RESPONSE_BYTES, PROTOCOL_VERSION,
};
use unitsync_ipc::state::StateOptions;
use unitsync_ipc::{Agent, AgentOptions};

/// A watchdog, not a synchronisation: a read that waits this long means an answer never came (the
/// tests take about a second).
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// An agent with a state journal, served on a 2-worker runtime in a background thread; stopped (and
/// its journal flushed) when dropped.
struct Running {
    socket: PathBuf,
    journal: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    fn start(dir: &Path, sync: bool) -> Self {
        let socket = dir.join("run").join("agent.sock");
        let journal = dir.join("run").join("agent.sock.journal");
        let options = AgentOptions {
            event_capacity: 1024,
            state: Some(StateOptions {
                path: journal.clone(),
                fresh: false,
                sync,
            }),
        };
        let (ready, bound) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let path = socket.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let agent = Agent::start(&path, options).await.unwrap();
                ready.send(()).unwrap();
                agent
                    .serve_until(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        bound.recv().expect("the agent did not start");
        Self {
            socket,
            journal,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A handshaken connection, spoken by hand: frames in, frames out, nothing in between.
struct Connection {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    /// Bytes of answer frames read so far (headers included).
    answer_bytes: usize,
}

impl Connection {
    fn open(socket: &Path) -> Self {
        let stream = UnixStream::connect(socket).unwrap();
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            client: "answers test".to_owned(),
        };
        (&stream)
            .write_all(&encode(&hello, MAX_FRAME_BYTES).unwrap())
            .unwrap();
        let mut reader = BufReader::with_capacity(64 << 10, stream.try_clone().unwrap());
        let payload = read_frame_blocking(&mut reader, MAX_RESPONSE_BYTES).unwrap();
        match serde_json::from_slice(&payload).unwrap() {
            HelloReply::Welcome(welcome) => assert_eq!(welcome.protocol, PROTOCOL_VERSION),
            refused => panic!("not welcomed: {refused:?}"),
        }
        Self {
            stream,
            reader,
            answer_bytes: 0,
        }
    }

    /// Writes `requests` back to back, in one write.
    fn send(&self, requests: &[Request]) {
        (&self.stream).write_all(&frames(requests)).unwrap();
    }

    fn recv(&mut self) -> Response {
        let payload = read_frame_blocking(&mut self.reader, MAX_RESPONSE_BYTES)
            .unwrap_or_else(|error| panic!("no answer: {error}"));
        self.answer_bytes += 4 + payload.len();
        serde_json::from_slice(&payload).unwrap()
    }

    fn call(&mut self, request: &Request) -> Response {
        self.send(std::slice::from_ref(request));
        self.recv()
    }
}

fn frames(requests: &[Request]) -> Vec<u8> {
    requests
        .iter()
        .flat_map(|request| encode(request, MAX_FRAME_BYTES).unwrap())
        .collect()
}

fn name(name: &str) -> UnitName {
    UnitName::new(name).unwrap()
}

fn names<S: AsRef<str>>(list: &[S]) -> Vec<UnitName> {
    list.iter().map(|n| name(n.as_ref())).collect()
}

/// `value`'s debug form, cut short (some answers list thousands of long names).
fn brief(value: &dyn Debug) -> String {
    let text = format!("{value:?}");
    match text.char_indices().nth(400) {
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], text.len()),
        None => text,
    }
}

/// What the answer to one request must be.
#[derive(Debug)]
enum Expect {
    /// Exactly this.
    Is(Response),
    /// `failed`, propagated to exactly these units (in the order the graph reached them).
    FailedAll(BTreeSet<String>),
    /// `pong`, from an agent that knows at least this many units.
    PongWithAtLeast(usize),
    /// `status` of `unit`, failed because `cause` failed.
    StatusFailedBy { unit: String, cause: String },
    /// `error`, for a request the agent cannot read.
    Malformed,
}

impl Expect {
    fn matches(&self, got: &Response) -> bool {
        match (self, got) {
            (Expect::Is(expected), got) => expected == got,
            (Expect::FailedAll(expected), Response::Failed { propagated }) => {
                propagated.len() == expected.len()
                    && propagated.iter().all(|n| expected.contains(n.as_str()))
            }
            (Expect::PongWithAtLeast(units), Response::Pong { agent }) => agent.units >= *units,
            (Expect::StatusFailedBy { unit, cause }, Response::Status { unit: info }) => {
                info.name.as_str() == unit
                    && info.state == UnitState::Failed
                    && info
                        .failure
                        .as_ref()
                        .and_then(|f| f.cause.as_ref())
                        .is_some_and(|c| c.as_str() == cause)
            }
            (Expect::Malformed, Response::Error { message }) => {
                message.starts_with("malformed or unknown request")
            }
            _ => false,
        }
    }
}

/// A run of requests, as the bytes to write, and what each must be answered, in order.
#[derive(Default)]
struct Script {
    frames: Vec<u8>,
    /// Per request: what it was, for messages.
    requests: Vec<String>,
    expected: Vec<Expect>,
    /// Per request, the events its answer promises are in the journal.
    facts: Vec<Vec<Fact>>,
}

impl Script {
    fn push(&mut self, request: Request, expect: Expect) {
        self.push_saved(request, expect, Vec::new());
    }

    /// Adds a request whose answer must wait until `facts` are in the journal.
    fn push_saved(&mut self, request: Request, expect: Expect, facts: Vec<Fact>) {
        self.frames
            .extend(encode(&request, MAX_FRAME_BYTES).unwrap());
        self.requests.push(brief(&request));
        self.expected.push(expect);
        self.facts.push(facts);
    }

    /// Adds a frame that is no request.
    fn push_unreadable(&mut self, payload: &serde_json::Value) {
        self.frames
            .extend(encode(payload, MAX_FRAME_BYTES).unwrap());
        self.requests.push(payload.to_string());
        self.expected.push(Expect::Malformed);
        self.facts.push(Vec::new());
    }

    /// Reads one answer per request and checks each against its expectation, in order, and that
    /// the events each answer rests on were in the journal when it arrived. `what` names the
    /// script in messages.
    fn check_answers(&self, what: &str, connection: &mut Connection, journal: &mut JournalView) {
        for (index, expected) in self.expected.iter().enumerate() {
            let got = connection.recv();
            assert!(
                expected.matches(&got),
                "{what}, answer {index} of {}, to {}: expected {}, got {}",
                self.expected.len(),
                self.requests[index],
                brief(expected),
                brief(&got)
            );
            for fact in &self.facts[index] {
                assert!(
                    journal.holds(fact),
                    "{what}, answer {index} ({}) arrived before its event {} was in the journal",
                    brief(&got),
                    brief(fact)
                );
            }
        }
    }
}

/// An event a journaled answer rests on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Fact {
    Registered(String),
    Edge(String, String),
    Started(String),
    Completed(String),
    Failed(String),
}

/// What the journal file holds so far, read as it grows (it is only appended to while the agent
/// runs; a frame being written is torn and read on the next refresh).
struct JournalView {
    file: File,
    bytes: Vec<u8>,
    /// Bytes after the header whose records are in `facts`.
    applied: usize,
    facts: HashSet<Fact>,
}

impl JournalView {
    fn open(path: &Path) -> Self {
        Self {
            file: File::open(path).unwrap(),
            bytes: Vec::new(),
            applied: 0,
            facts: HashSet::new(),
        }
    }

    /// Whether the file holds `fact` now.
    fn holds(&mut self, fact: &Fact) -> bool {
        if !self.facts.contains(fact) {
            self.refresh();
        }
        self.facts.contains(fact)
    }

    fn refresh(&mut self) {
        self.file.read_to_end(&mut self.bytes).unwrap();
        let header = encode_header();
        assert!(
            self.bytes.starts_with(&header),
            "the journal lost its header"
        );
        let tail = [&header[..], &self.bytes[header.len() + self.applied..]].concat();
        let decoded = decode(&tail);
        for record in decoded.records {
            let unit = record.kind.unit().to_string();
            let fact = match record.kind {
                EventKind::Registered { .. } => Fact::Registered(unit),
                EventKind::DependencyAdded { dependency, .. } => {
                    Fact::Edge(unit, dependency.to_string())
                }
                EventKind::Started { .. } => Fact::Started(unit),
                EventKind::Completed { .. } => Fact::Completed(unit),
                EventKind::Failed { .. } => Fact::Failed(unit),
            };
            self.facts.insert(fact);
        }
        self.applied += decoded.valid_len.saturating_sub(header.len());
    }
}

/// The graph the journal file replays into (the agent's own restore checks every event).
fn replay(path: &Path) -> Graph {
    let bytes = std::fs::read(path).unwrap();
    let decoded = decode(&bytes);
    assert!(decoded.problem.is_none(), "{:?}", decoded.problem);
    assert_eq!(decoded.valid_len, bytes.len());
    let origin = decoded.records.first().map_or(0, |r| r.unix_ms);
    let events = decoded.records.into_iter().map(|record| Event {
        seq: record.seq,
        at: Duration::from_millis(record.unix_ms - origin),
        kind: record.kind,
    });
    Graph::builder()
        .restore(events)
        .unwrap_or_else(|error| panic!("the journal does not replay: {error}"))
}

/// Units of the chain. Every name is 252 bytes, so a `want` of three of them is answered in about
/// 800 bytes, and a cycle through the whole chain in about 760 KB.
const CHAIN: usize = 3000;
/// Leaves the chain's units also want (two each), never registered.
const SIDES: usize = 8;
/// Units started before the run, to be completed or abandoned in it.
const STARTED: usize = 30;

fn chain(i: usize) -> String {
    format!("chain-{i:05}-{}", "x".repeat(240))
}

fn side(j: usize) -> String {
    format!("side-{j}-{}", "y".repeat(240))
}

fn started(j: usize) -> String {
    format!("started-{j:02}")
}

fn failed(j: usize) -> String {
    format!("failed-{j:02}")
}

/// What `chain(i)` wants: the next unit of the chain, and two leaves.
fn chain_dependencies(i: usize) -> Vec<String> {
    vec![chain(i + 1), side(i % SIDES), side((i + 1) % SIDES)]
}

/// Polls `done` (no sleeping: it yields) until it holds; gives up after [`READ_TIMEOUT`].
#[cfg(target_os = "linux")]
fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + READ_TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting until {what}");
        std::thread::yield_now();
    }
}

/// A socket queue's length in bytes: `FIONREAD`, what the agent wrote that this side has not read;
/// `TIOCOUTQ` (`SIOCOUTQ`), what this side wrote that the agent has not read.
#[cfg(target_os = "linux")]
fn queued(stream: &UnixStream, which: libc::Ioctl) -> usize {
    use std::os::fd::AsRawFd;
    let mut bytes: libc::c_int = 0;
    // SAFETY: both requests write one `int` through the pointer, which points at `bytes`; the
    // descriptor is open for as long as `stream` is borrowed.
    let done = unsafe { libc::ioctl(stream.as_raw_fd(), which, &mut bytes) };
    assert_eq!(done, 0, "ioctl: {}", std::io::Error::last_os_error());
    usize::try_from(bytes).unwrap()
}

#[test]
fn a_client_that_sends_everything_before_reading_gets_every_answer_in_order() {
    let began = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let agent = Running::start(dir.path(), false);
    let mut connection = Connection::open(&agent.socket);
    let mut journal = JournalView::open(&agent.journal);

    // Units to complete, and to abandon, during the run: started one request at a time (a `start`
    // is a blocking request, which a client must not talk through).
    for j in 0..STARTED {
        let owner = if j % 2 == 0 { "keeper" } else { "leaver" };
        let start = Request::Start {
            unit: started(j),
            timeout_ms: None,
            claim: Some(format!("{owner}#1")),
        };
        assert_eq!(connection.call(&start), Response::Started);
    }

    // 1. The run, written in one go by another thread while this one reads: a chain of `want`s
    // (about 2.4 MB of answers), with completions, refusals and failures in between; an `abandon`;
    // and last a `start` (the only place a blocking request may be: nothing follows it). Every
    // answer must be the one for its request, in order, and arrive only once the events it reports
    // are in the journal. The agent's socket buffer fills here only when this reader falls behind
    // (now and then, as the threads are scheduled); step 2 makes sure it does.
    let mut run = Script::default();
    for i in 0..CHAIN {
        let dependencies = chain_dependencies(i);
        let mut facts = vec![Fact::Registered(chain(i))];
        facts.extend(dependencies.iter().map(|d| Fact::Edge(chain(i), d.clone())));
        let added = names(&dependencies);
        run.push_saved(
            Request::Want {
                unit: chain(i),
                dependencies,
            },
            Expect::Is(Response::Wanted {
                registered: true,
                added,
            }),
            facts,
        );
        if i % 100 == 50 {
            let j = i / 100;
            if j % 2 == 0 {
                let complete = Request::Complete { unit: started(j) };
                run.push_saved(
                    complete.clone(),
                    Expect::Is(Response::Completed),
                    vec![Fact::Completed(started(j))],
                );
                run.push(
                    complete,
                    Expect::Is(Response::Refused {
                        error: GraphError::WrongState {
                            unit: name(&started(j)),
                            operation: Operation::Complete,
                            state: UnitState::Completed,
                        },
                    }),
                );
            } else {
                run.push_saved(
                    Request::Fail {
                        unit: failed(j),
                        reason: Some("on purpose".to_owned()),
                    },
                    Expect::Is(Response::Failed {
                        propagated: Vec::new(),
                    }),
                    vec![Fact::Failed(failed(j))],
                );
            }
        }
    }
    let leavers: Vec<String> = (1..STARTED).step_by(2).map(started).collect();
    run.push_saved(
        Request::Abandon {
            owner: "leaver".to_owned(),
            reason: "the leaver exited".to_owned(),
        },
        Expect::Is(Response::Abandoned {
            failed: names(&leavers),
        }),
        leavers.iter().cloned().map(Fact::Failed).collect(),
    );
    run.push_saved(
        Request::Start {
            unit: "finisher".to_owned(),
            timeout_ms: None,
            claim: Some("tester#1".to_owned()),
        },
        Expect::Is(Response::Started),
        vec![Fact::Started("finisher".to_owned())],
    );
    let bytes = run.frames.clone();
    let request_bytes = bytes.len();
    let mut out = connection.stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || out.write_all(&bytes));
    let before = connection.answer_bytes;
    run.check_answers("the run", &mut connection, &mut journal);
    let run_answer_bytes = connection.answer_bytes - before;
    writer.join().unwrap().unwrap();

    // 2. One answer far larger than the socket buffer, with the client provably not reading while
    // the agent sends it: a `want` closing a cycle through the whole chain is refused with the
    // cycle (no event, so the acknowledgment runs at once, in the connection's task), then a `ping`
    // in a write of its own. Once the agent has read the ping, its task is past the refusal's
    // non-blocking write; what that write could not place is still unsent, left to the task it
    // started, and must arrive whole and before the pong.
    let units = CHAIN + 1 + SIDES + STARTED + STARTED / 2 + 1;
    let end = chain(CHAIN);
    let mut path = vec![name(&end)];
    path.extend((0..CHAIN).map(|i| name(&chain(i))));
    path.push(name(&end));
    let refusal = Response::Refused {
        error: GraphError::Cycle { path },
    };
    let refusal_bytes = encode(&refusal, MAX_RESPONSE_BYTES).unwrap().len();
    let cycle = Request::Want {
        unit: end.clone(),
        dependencies: vec![chain(0)],
    };
    connection.send(&[cycle]);
    #[cfg(target_os = "linux")]
    {
        let stream = &connection.stream;
        until("the agent read the cycle", || {
            queued(stream, libc::TIOCOUTQ) == 0
        });
        connection.send(&[Request::Ping]);
        until("the agent read the ping", || {
            queued(stream, libc::TIOCOUTQ) == 0
        });
        let arrived = queued(stream, libc::FIONREAD);
        assert!(
            arrived > 0 && arrived < refusal_bytes,
            "{arrived} of the refusal's {refusal_bytes} bytes had arrived when the agent read the \
             next request: expected part of it (the rest left to a spawned task); a socket buffer \
             this large needs a larger answer"
        );
    }
    #[cfg(not(target_os = "linux"))]
    connection.send(&[Request::Ping]);
    assert_eq!(connection.recv(), refusal);
    match connection.recv() {
        Response::Pong { agent } => {
            assert_eq!(agent.units, units)
        }
        other => panic!("expected pong, got {}", brief(&other)),
    }

    // 3. A `wait` that reached its state is journaled too. Then, in one write: a `fail` answered
    // with the whole chain (about 760 KB; its batch is large, so it is written, and acknowledged,
    // on a blocking thread), read-only requests and a change behind it.
    let wait = Request::Wait {
        unit: "finisher".to_owned(),
        until: WaitTarget::Started,
        timeout_ms: Some(10_000),
    };
    assert_eq!(
        connection.call(&wait),
        Response::Reached {
            state: UnitState::Started
        }
    );
    let mut last = Script::default();
    last.push_saved(
        Request::Fail {
            unit: end.clone(),
            reason: Some("the end of the chain broke".to_owned()),
        },
        Expect::FailedAll((0..CHAIN).map(chain).collect()),
        vec![Fact::Failed(end.clone()), Fact::Failed(chain(0))],
    );
    last.push(
        Request::Ready { unit: chain(0) },
        Expect::Is(Response::Ready { ready: false }),
    );
    last.push_saved(
        Request::Complete {
            unit: "finisher".to_owned(),
        },
        Expect::Is(Response::Completed),
        vec![Fact::Completed("finisher".to_owned())],
    );
    last.push(Request::Ping, Expect::PongWithAtLeast(units));
    (&connection.stream).write_all(&last.frames).unwrap();
    last.check_answers("the last write", &mut connection, &mut journal);

    // Every unit is where the run left it.
    let Response::List { units: listed } = connection.call(&Request::List) else {
        panic!("expected list");
    };
    let mut expected: BTreeMap<String, UnitState> = BTreeMap::new();
    for i in 0..=CHAIN {
        expected.insert(chain(i), UnitState::Failed);
    }
    for j in 0..SIDES {
        expected.insert(side(j), UnitState::Unknown);
    }
    for j in 0..STARTED {
        if j % 2 == 0 {
            expected.insert(started(j), UnitState::Completed);
        } else {
            expected.insert(started(j), UnitState::Failed);
            expected.insert(failed(j), UnitState::Failed);
        }
    }
    expected.insert("finisher".to_owned(), UnitState::Completed);
    assert_eq!(expected.len(), units);
    let states: BTreeMap<String, UnitState> = listed
        .iter()
        .map(|u| (u.name.to_string(), u.state))
        .collect();
    assert_eq!(states, expected);
    for (i, unit) in listed.iter().take(CHAIN).enumerate() {
        assert_eq!(unit.name.as_str(), chain(i));
        let dependencies: Vec<String> = unit
            .dependencies
            .iter()
            .map(|d| d.name.to_string())
            .collect();
        assert_eq!(dependencies, chain_dependencies(i));
        let cause = unit.failure.as_ref().and_then(|f| f.cause.as_ref());
        assert_eq!(cause.map(UnitName::as_str), Some(end.as_str()));
    }

    // With nothing in flight now, the file replays into exactly the graph the agent serves.
    let replayed: Vec<(String, UnitState, Vec<String>)> = replay(&agent.journal)
        .list()
        .iter()
        .map(|u| {
            let dependencies = u.dependencies.iter().map(|d| d.name.to_string()).collect();
            (u.name.to_string(), u.state, dependencies)
        })
        .collect();
    let served: Vec<(String, UnitState, Vec<String>)> = listed
        .iter()
        .map(|u| {
            let dependencies = u.dependencies.iter().map(|d| d.name.to_string()).collect();
            (u.name.to_string(), u.state, dependencies)
        })
        .collect();
    assert!(
        replayed == served,
        "the journal does not replay into the served graph"
    );

    drop(connection);
    drop(agent);
    eprintln!(
        "{} requests ({request_bytes} bytes) written before reading, {run_answer_bytes} bytes of \
         answers to them; a {refusal_bytes}-byte refusal; {:.2?}",
        run.requests.len(),
        began.elapsed()
    );
}

/// Client `client`'s rounds, each written in one write: journaled changes, each with read-only
/// requests right behind it.
fn rounds(client: usize, rounds: usize) -> Vec<Script> {
    (0..rounds)
        .map(|i| {
            let unit = format!("c{client}-r{i:04}");
            let dependency = format!("c{client}-g{i:04}");
            let mut round = Script::default();
            round.push_saved(
                Request::Want {
                    unit: unit.clone(),
                    dependencies: vec![dependency.clone()],
                },
                Expect::Is(Response::Wanted {
                    registered: true,
                    added: vec![name(&dependency)],
                }),
                vec![
                    Fact::Registered(unit.clone()),
                    Fact::Edge(unit.clone(), dependency.clone()),
                ],
            );
            round.push(Request::Ping, Expect::PongWithAtLeast(2 * (i + 1)));
            round.push(
                Request::Ready { unit: unit.clone() },
                Expect::Is(Response::Ready { ready: false }),
            );
            round.push_saved(
                Request::Fail {
                    unit: dependency.clone(),
                    reason: Some(format!("round {i}")),
                },
                Expect::Is(Response::Failed {
                    propagated: vec![name(&unit)],
                }),
                vec![Fact::Failed(dependency.clone()), Fact::Failed(unit.clone())],
            );
            round.push(
                Request::Status { unit: unit.clone() },
                Expect::StatusFailedBy {
                    unit: unit.clone(),
                    cause: dependency,
                },
            );
            if i % 10 == 0 {
                round.push_unreadable(&serde_json::json!({ "request": "no_such_request" }));
            }
            round.push(
                Request::Complete { unit: unit.clone() },
                Expect::Is(Response::Refused {
                    error: GraphError::WrongState {
                        unit: name(&unit),
                        operation: Operation::Complete,
                        state: UnitState::Failed,
                    },
                }),
            );
            round
        })
        .collect()
}

/// Rounds per client.
const ROUNDS: usize = 300;

#[test]
fn answers_wait_for_the_journal_and_read_only_answers_stay_behind_them() {
    let began = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    // With `sync`, every batch is written and synced on tokio's blocking pool, and its
    // acknowledgments run there: the slowest path, behind which a ping answer would be quickest to
    // slip ahead.
    let agent = Running::start(dir.path(), true);
    let answers: usize = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..2)
            .map(|client| {
                let (socket, journal) = (&agent.socket, &agent.journal);
                scope.spawn(move || {
                    let mut connection = Connection::open(socket);
                    let rounds = rounds(client, ROUNDS);
                    let writes: Vec<Vec<u8>> = rounds.iter().map(|r| r.frames.clone()).collect();
                    let mut out = connection.stream.try_clone().unwrap();
                    let writer = std::thread::spawn(move || {
                        writes.iter().try_for_each(|write| out.write_all(write))
                    });
                    let mut view = JournalView::open(journal);
                    let mut answers = 0;
                    for (i, round) in rounds.iter().enumerate() {
                        let what = format!("client {client}, round {i}");
                        round.check_answers(&what, &mut connection, &mut view);
                        answers += round.expected.len();
                    }
                    writer.join().unwrap().unwrap();
                    answers
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).sum()
    });
    drop(agent);
    eprintln!(
        "2 clients, {ROUNDS} rounds each: {answers} answers in order; {:.2?}",
        began.elapsed()
    );
}
