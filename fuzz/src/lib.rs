//! The entry points unitsync's fuzzing drives, shared by the `cargo fuzz` targets
//! (`fuzz/fuzz_targets/*.rs`) and by the quick proptest run of the normal test suite
//! (`ipc/tests/fuzz_entry_points.rs` compiles this file as a module, so CI checks the same code and
//! replays the committed corpus through it). Each public function takes arbitrary bytes, feeds them
//! to one input-facing part of unitsync, and panics only when that part misbehaves:
//! - [`frame_decoder`]: the agent's side of a connection: frames read with `frame::read_frame` /
//!   `read_message` from a scripted in-memory reader (short reads, `Pending`), checked against a
//!   reference parser, with the largest allocation measured; the first frame decoded as a `Hello`,
//!   the rest as `Request`s, as the agent does;
//! - [`request_parser`]: one JSON document as every wire type, each that parses re-encoded and
//!   decoded again (equal), and a parsed `Request` applied to a small graph as the agent would;
//! - [`journal_replay`]: a journal file through `journal::decode` and `GraphBuilder::restore`, checked
//!   against an independent model of the replay rules and, when it restores, against the graph
//!   invariants (and driven to a fixpoint to see that its unmet counts are right); the same bytes
//!   with their checksums fixed up go through again, so mutated payloads reach the replay;
//! - [`journal_ops`] (structured): bytes read as an operation sequence on a live graph, whose
//!   journal must decode and restore to the same graph at every prefix, then is damaged and replayed.
//!
//! Nothing here may depend on libFuzzer. The allocation measurement needs [`CountingAllocator`]
//! installed as the binary's global allocator; without it the bound is not checked.

use serde::{de::DeserializeOwned, Serialize};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, ReadBuf};
use unitsync_core::{
    Event, EventKind, EventSink, Failure, Graph, GraphError, GraphFormat, Operation, RestoreError,
    RestoreProblem, StartAttempt, UnitName, UnitSnapshot, UnitState, MAX_UNMET,
};
use unitsync_ipc::frame::{self, FrameError};
use unitsync_ipc::journal::{self, Decoded, JournalRecord, MAX_RECORD_BYTES};
use unitsync_ipc::protocol::{claim_owner, Hello, HelloReply, Request, Response, MAX_FRAME_BYTES};

/// Every target, by the name of its corpus directory.
pub const TARGETS: [&str; 4] = [
    "frame_decoder",
    "request_parser",
    "journal_replay",
    "journal_ops",
];

/// Runs `target` (one of [`TARGETS`]) on `data`. Panics for an unknown target.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "frame_decoder" => frame_decoder(data),
        "request_parser" => request_parser(data),
        "journal_replay" => journal_replay(data),
        "journal_ops" => journal_ops(data),
        other => panic!("no fuzz target named {other}"),
    }
}

// ---- allocation measurement ----

/// A global allocator that forwards to [`System`] and, while [`measure_allocations`] runs on the
/// current thread, records the largest single allocation and the total allocated. Install it with
/// `#[global_allocator]` in the binary that runs the checks.
pub struct CountingAllocator;

static INSTALLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static TOTAL: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation(size: usize) {
    INSTALLED.store(true, Ordering::Relaxed);
    let _ = ARMED.try_with(|armed| {
        if armed.get() {
            LARGEST.with(|largest| largest.set(largest.get().max(size)));
            TOTAL.with(|total| total.set(total.get().saturating_add(size)));
        }
    });
}

// SAFETY: every call is forwarded unchanged to `System`; the bookkeeping touches only
// const-initialised thread-locals without destructors, which never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation(new_size);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// What [`measure_allocations`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocations {
    /// The largest single allocation (or reallocation's new size), in bytes.
    pub largest: usize,
    /// Every allocation's size added up, in bytes.
    pub total: usize,
}

/// Runs `f` and reports its allocations on this thread; `None` if [`CountingAllocator`] is not the
/// global allocator.
pub fn measure_allocations<T>(f: impl FnOnce() -> T) -> (T, Option<Allocations>) {
    // Make sure the flag is set if the allocator is installed at all.
    drop(Box::new(0u8));
    LARGEST.with(|c| c.set(0));
    TOTAL.with(|c| c.set(0));
    ARMED.with(|c| c.set(true));
    let value = f();
    ARMED.with(|c| c.set(false));
    let seen = Allocations {
        largest: LARGEST.with(Cell::get),
        total: TOTAL.with(Cell::get),
    };
    (value, INSTALLED.load(Ordering::Relaxed).then_some(seen))
}

// ---- a minimal executor and a scripted reader ----

/// Polls `future` to completion with a waker that does nothing: enough for futures whose only
/// source of `Pending` is [`ScriptedReader`], which wakes itself first. Panics after `max_polls`.
fn block_on<F: Future>(future: F, max_polls: usize) -> F::Output {
    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    let waker = Waker::from(Arc::new(Noop));
    let mut context = Context::from_waker(&waker);
    let mut future = pin!(future);
    for _ in 0..max_polls.max(1) {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
    }
    panic!("a read made no progress in {max_polls} polls");
}

/// An in-memory stream that hands out at most `max_chunk` bytes per read and answers `Pending`
/// (after waking its task) on every `pending_every`-th read: how a socket delivers a frame in pieces.
struct ScriptedReader<'a> {
    data: &'a [u8],
    position: usize,
    max_chunk: usize,
    pending_every: u32,
    /// Reads since the last `Pending`.
    since_pending: u32,
}

impl<'a> ScriptedReader<'a> {
    /// The schedule byte: low 5 bits the chunk size (0: unlimited), the next 2 how often a read is
    /// `Pending` (never, every 2nd, 3rd or 5th).
    fn new(data: &'a [u8], schedule: u8) -> Self {
        Self {
            data,
            position: 0,
            max_chunk: match schedule & 0x1f {
                0 => usize::MAX,
                chunk => usize::from(chunk),
            },
            pending_every: [0, 2, 3, 5][usize::from((schedule >> 5) & 0x3)],
            since_pending: 0,
        }
    }

    /// Enough polls for any read of this stream.
    fn max_polls(&self) -> usize {
        self.data.len() * 2 + 16
    }
}

impl AsyncRead for ScriptedReader<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pending_every != 0 {
            this.since_pending += 1;
            if this.since_pending == this.pending_every {
                this.since_pending = 0;
                context.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        let rest = &this.data[this.position..];
        let n = rest.len().min(buf.remaining()).min(this.max_chunk);
        buf.put_slice(&rest[..n]);
        this.position += n;
        Poll::Ready(Ok(()))
    }
}

// ---- frame_decoder ----

/// What the documented frame format says the stream holds next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExpectedFrame<'a> {
    Payload(&'a [u8]),
    /// The stream ends cleanly between frames.
    Closed,
    /// The length field is over the limit.
    TooLarge(usize),
    /// The stream ends inside a frame.
    Cut,
}

/// The frames of `stream` by the format (a 4-byte big-endian length, then the payload), up to and
/// including the first non-payload outcome.
fn expected_frames(stream: &[u8]) -> Vec<ExpectedFrame<'_>> {
    let mut frames = Vec::new();
    let mut rest = stream;
    loop {
        if rest.is_empty() {
            frames.push(ExpectedFrame::Closed);
            return frames;
        }
        let Some((header, body)) = rest.split_first_chunk::<4>() else {
            frames.push(ExpectedFrame::Cut);
            return frames;
        };
        let length = u32::from_be_bytes(*header) as usize;
        if length > MAX_FRAME_BYTES {
            frames.push(ExpectedFrame::TooLarge(length));
            return frames;
        }
        let Some(payload) = body.get(..length) else {
            frames.push(ExpectedFrame::Cut);
            return frames;
        };
        frames.push(ExpectedFrame::Payload(payload));
        rest = &body[length..];
    }
}

/// Arbitrary bytes as a connection to the agent: `data[0]` is the reader's schedule (see
/// [`ScriptedReader::new`]), the rest the byte stream.
///
/// Checks that `read_frame` yields exactly the frames the format says, refuses an oversized length
/// before reading on, reports a cut as an I/O error and a clean end as `Closed`, and never makes an
/// allocation over [`MAX_FRAME_BYTES`]; then that `read_message` driven as the agent drives it (a
/// `Hello`, then `Request`s until the connection is unusable) decodes each frame as `serde_json`
/// does, and that each decoded message re-encodes to a frame that reads back equal.
pub fn frame_decoder(data: &[u8]) {
    let (schedule, stream) = match data.split_first() {
        Some((schedule, stream)) => (*schedule, stream),
        None => (0, data),
    };
    let expected = expected_frames(stream);

    // Pass 1: the framing alone.
    let mut reader = ScriptedReader::new(stream, schedule);
    let max_polls = reader.max_polls();
    for (index, frame) in expected.iter().enumerate() {
        let before = reader.position;
        let (result, allocations) = measure_allocations(|| {
            block_on(frame::read_frame(&mut reader, MAX_FRAME_BYTES), max_polls)
        });
        if let Some(allocations) = allocations {
            assert!(
                allocations.largest <= MAX_FRAME_BYTES,
                "frame {index}: read_frame made a {}-byte allocation, over the {MAX_FRAME_BYTES}-byte \
                 limit",
                allocations.largest
            );
            assert!(
                allocations.total <= MAX_FRAME_BYTES + 4096,
                "frame {index}: read_frame allocated {} bytes in all",
                allocations.total
            );
        }
        match (frame, result) {
            (ExpectedFrame::Payload(payload), Ok(read)) => {
                assert_eq!(&read[..], *payload, "frame {index}");
                assert_eq!(reader.position - before, 4 + payload.len(), "frame {index}");
            }
            (ExpectedFrame::Closed, Err(FrameError::Closed)) => {}
            (
                ExpectedFrame::TooLarge(length),
                Err(FrameError::TooLarge {
                    length: reported,
                    limit,
                }),
            ) => {
                assert_eq!(
                    (*length, limit),
                    (reported, MAX_FRAME_BYTES),
                    "frame {index}"
                );
                // Refused on the header: not one payload byte was consumed.
                assert_eq!(reader.position - before, 4, "frame {index}");
            }
            (ExpectedFrame::Cut, Err(FrameError::Io(error))) => {
                assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof, "frame {index}");
                assert_eq!(reader.position, stream.len(), "frame {index}");
            }
            (frame, result) => {
                panic!("frame {index}: expected {frame:?}, read_frame gave {result:?}")
            }
        }
    }

    // Pass 2: as the agent reads a connection.
    let mut reader = ScriptedReader::new(stream, schedule);
    for (index, frame) in expected.iter().enumerate() {
        let go_on = if index == 0 {
            read_like_the_agent::<Hello>(&mut reader, max_polls, frame, index)
                .is_some_and(|decoded| decoded)
        } else {
            read_like_the_agent::<Request>(&mut reader, max_polls, frame, index).is_some()
        };
        if !go_on {
            break;
        }
    }
}

/// Reads one `T` with `read_message` and checks it against the expected frame. `Some(true)`: a
/// message; `Some(false)`: a malformed payload (the agent answers and reads on, past the handshake);
/// `None`: the connection is over.
fn read_like_the_agent<T>(
    reader: &mut ScriptedReader<'_>,
    max_polls: usize,
    frame: &ExpectedFrame<'_>,
    index: usize,
) -> Option<bool>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let result = block_on(
        frame::read_message::<_, T>(reader, MAX_FRAME_BYTES),
        max_polls,
    );
    match (frame, result) {
        (ExpectedFrame::Payload(payload), Ok(message)) => {
            let direct: T = serde_json::from_slice(payload).unwrap_or_else(|error| {
                panic!("frame {index}: read_message decoded what serde_json refuses: {error}")
            });
            assert_eq!(message, direct, "frame {index}");
            frame_round_trip(&message);
            Some(true)
        }
        (ExpectedFrame::Payload(payload), Err(FrameError::Malformed(_))) => {
            assert!(
                serde_json::from_slice::<T>(payload).is_err(),
                "frame {index}: read_message refused what serde_json decodes"
            );
            Some(false)
        }
        (ExpectedFrame::Closed, Err(FrameError::Closed))
        | (ExpectedFrame::TooLarge(_), Err(FrameError::TooLarge { .. }))
        | (ExpectedFrame::Cut, Err(FrameError::Io(_))) => None,
        (frame, result) => {
            panic!("frame {index}: expected {frame:?}, read_message gave {result:?}")
        }
    }
}

/// `message` encoded as a frame reads back equal (or is refused as too large, when it is).
fn frame_round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(message: &T) {
    match frame::encode(message, MAX_FRAME_BYTES) {
        Ok(bytes) => {
            let (header, payload) = bytes
                .split_first_chunk::<4>()
                .expect("a frame has a header");
            assert_eq!(u32::from_be_bytes(*header) as usize, payload.len());
            assert!(payload.len() <= MAX_FRAME_BYTES);
            let mut reader: &[u8] = &bytes;
            let back: T = block_on(frame::read_message(&mut reader, MAX_FRAME_BYTES), 4)
                .unwrap_or_else(|error| panic!("an encoded frame does not read back: {error}"));
            assert_eq!(&back, message);
            assert!(reader.is_empty());
        }
        Err(FrameError::TooLarge { length, limit }) => {
            assert!(length > limit && limit == MAX_FRAME_BYTES)
        }
        Err(error) => panic!("a decoded message does not encode: {error}"),
    }
}

// ---- request_parser ----

/// `value` encodes, decodes back equal, and encodes to the same bytes again.
fn json_round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) {
    let bytes = serde_json::to_vec(value).expect("a decoded message encodes");
    let back: T = serde_json::from_slice(&bytes).unwrap_or_else(|error| {
        panic!(
            "a re-encoded message does not decode: {error}\n{}",
            String::from_utf8_lossy(&bytes)
        )
    });
    assert_eq!(&back, value, "{}", String::from_utf8_lossy(&bytes));
    let again = serde_json::to_vec(&back).expect("encodes");
    assert_eq!(again, bytes, "the encoding is not deterministic");
}

fn round_trip_if_it_parses<T: Serialize + DeserializeOwned + PartialEq + Debug>(
    data: &[u8],
) -> Option<T> {
    let value = serde_json::from_slice::<T>(data).ok()?;
    json_round_trip(&value);
    Some(value)
}

/// Arbitrary bytes as one JSON payload: decoded as a `Request` (the agent's parser) and, for the
/// client side, as `Hello`, `HelloReply` and `Response`; each that parses must round-trip. A parsed
/// request is then applied to a small graph as the agent would (the non-blocking part of each
/// request), the graph must stay consistent, and the response built from the outcome must
/// round-trip too.
pub fn request_parser(data: &[u8]) {
    if let Some(request) = round_trip_if_it_parses::<Request>(data) {
        apply_request(&request);
    }
    round_trip_if_it_parses::<Hello>(data);
    round_trip_if_it_parses::<HelloReply>(data);
    round_trip_if_it_parses::<Response>(data);
}

/// A graph with a unit in every state: `done` completed, `running` started (by `sh#1`), `waiting`
/// pending on `running` and `ghost` (unknown), `broken` failed, `victim` failed because of it.
fn seeded_graph() -> Graph {
    let graph = Graph::builder().event_capacity(8).build();
    graph.want("waiting", &["running", "ghost"]).unwrap();
    graph.want("victim", &["broken"]).unwrap();
    graph.try_start("done").unwrap();
    graph.complete("done").unwrap();
    graph.try_start_claimed("running", Some("sh#1")).unwrap();
    graph.fail("broken", "exit status 1").unwrap();
    graph
}

fn refused(error: GraphError) -> Response {
    Response::Refused { error }
}

fn apply_request(request: &Request) {
    let graph = seeded_graph();
    let response = match request.clone() {
        Request::Ping => None,
        Request::Want { unit, dependencies } => Some(match graph.want(&unit, &dependencies) {
            Ok(outcome) => Response::Wanted {
                registered: outcome.registered,
                added: outcome.added,
            },
            Err(error) => refused(error),
        }),
        Request::Start { unit, claim, .. } => {
            Some(match graph.try_start_claimed(&unit, claim.as_deref()) {
                Ok(StartAttempt::Started) => Response::Started,
                Ok(StartAttempt::Blocked { unmet }) => Response::Blocked { unmet },
                Err(error) => refused(error),
            })
        }
        Request::Complete { unit } => Some(match graph.complete(&unit) {
            Ok(()) => Response::Completed,
            Err(error) => refused(error),
        }),
        Request::Fail { unit, reason } => {
            let reason = reason.unwrap_or_else(|| "failed".to_owned());
            Some(match graph.fail(&unit, &reason) {
                Ok(outcome) => Response::Failed {
                    propagated: outcome.propagated,
                },
                Err(error) => refused(error),
            })
        }
        Request::Ready { unit } => Some(match graph.is_ready(&unit) {
            Ok(ready) => Response::Ready { ready },
            Err(error) => refused(error),
        }),
        Request::Wait { unit, .. } => {
            let _ = graph.state(&unit);
            None
        }
        Request::Status { unit } => {
            if let Err(error) = graph.snapshot(&unit) {
                json_round_trip(&refused(error));
            }
            None
        }
        Request::List => None,
        Request::Graph { format } => Some(Response::Graph {
            text: graph.export(format),
        }),
        Request::Watch { from_seq } => {
            let mut feed = graph.subscribe_from(from_seq.unwrap_or(1));
            for _ in 0..64 {
                match feed.try_recv() {
                    Ok(Some(_)) | Err(_) => {}
                    Ok(None) => break,
                }
            }
            None
        }
        Request::Abandon { owner, reason } => {
            let failed = graph.fail_started_by(|claim| claim_owner(claim) == owner, &reason);
            Some(Response::Abandoned { failed })
        }
    };
    if let Some(response) = response {
        json_round_trip(&response);
    }
    let units = graph.list();
    check_listing(&units, Strictness::Live);
    check_exports(&graph, &units);
}

/// Every unit and edge is one line of the DOT and Mermaid text (names cannot hold line breaks).
fn check_exports(graph: &Graph, units: &[UnitSnapshot]) {
    let edges: usize = units.iter().map(|u| u.dependencies.len()).sum();
    let dot = graph.export(GraphFormat::Dot);
    assert_eq!(dot.lines().count(), 3 + units.len() + edges + 1, "{dot}");
    let mermaid = graph.export(GraphFormat::Mermaid);
    assert_eq!(
        mermaid.lines().count(),
        1 + units.len() + edges + 5,
        "{mermaid}"
    );
}

// ---- graph invariants ----

/// How much a listing is expected to satisfy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strictness {
    /// A live graph between operations (single-threaded): everything.
    Live,
    /// A graph restored from a journal nobody vouches for: what `restore` promises (it checks each
    /// event against the state, not the times, and a torn journal can stop between a failure and
    /// the failures it propagated).
    Restored,
}

/// The invariants of one consistent listing: sorted unique names; dependencies and dependents
/// mirror each other and form no cycle; `ready` is "every dependency completed"; a started or
/// completed unit had every dependency completed; timestamps, claims and failure records match the
/// state. Live graphs also: times in order, failure causes are root causes, and a pending unit never
/// has a failed dependency.
fn check_listing(units: &[UnitSnapshot], strictness: Strictness) {
    assert!(
        units.windows(2).all(|w| w[0].name < w[1].name),
        "the listing is not sorted by unique name"
    );
    let by_name: HashMap<&str, &UnitSnapshot> =
        units.iter().map(|u| (u.name.as_str(), u)).collect();
    for unit in units {
        let name = unit.name.as_str();
        let mut seen = HashSet::new();
        for dependency in &unit.dependencies {
            assert!(
                seen.insert(dependency.name.as_str()),
                "{name}: a repeated dependency"
            );
            assert_eq!(dependency.required, UnitState::Completed);
            assert_eq!(
                dependency.satisfied,
                dependency.current == UnitState::Completed
            );
            let other = by_name
                .get(dependency.name.as_str())
                .unwrap_or_else(|| panic!("{name} depends on {} (not listed)", dependency.name));
            assert_eq!(dependency.current, other.state, "{name} -> {}", other.name);
            assert_eq!(
                other
                    .dependents
                    .iter()
                    .filter(|d| d.as_str() == name)
                    .count(),
                1,
                "{} does not list {name} as a dependent once",
                other.name
            );
        }
        let mut seen = HashSet::new();
        for dependent in &unit.dependents {
            assert!(
                seen.insert(dependent.as_str()),
                "{name}: a repeated dependent"
            );
            let other = by_name
                .get(dependent.as_str())
                .unwrap_or_else(|| panic!("{dependent} depends on {name} (not listed)"));
            assert!(
                other.dependencies.iter().any(|d| d.name.as_str() == name),
                "{dependent} is a dependent of {name} without the dependency"
            );
        }
        let all_completed = unit.dependencies.iter().all(|d| d.satisfied);
        assert_eq!(
            unit.ready, all_completed,
            "{name} ({}): `ready` disagrees with its dependencies {:?}",
            unit.state, unit.dependencies
        );
        let started = unit.started_at.is_some();
        match unit.state {
            UnitState::Unknown => {
                assert!(
                    unit.dependencies.is_empty(),
                    "{name}: unknown with dependencies"
                );
                assert_eq!(unit.registered_at, None, "{name}");
                assert!(!started && unit.finished_at.is_none(), "{name}");
            }
            UnitState::Pending => {
                assert!(
                    unit.registered_at.is_some(),
                    "{name}: pending, never registered"
                );
                assert!(!started && unit.finished_at.is_none(), "{name}");
            }
            UnitState::Started => {
                assert!(all_completed, "{name}: started with unmet dependencies");
                assert!(started && unit.finished_at.is_none(), "{name}");
            }
            UnitState::Completed => {
                assert!(all_completed, "{name}: completed with unmet dependencies");
                assert!(started && unit.finished_at.is_some(), "{name}");
            }
            UnitState::Failed => assert!(unit.finished_at.is_some(), "{name}"),
        }
        assert_eq!(
            unit.failure.is_some(),
            unit.state == UnitState::Failed,
            "{name}: a failure record that does not match the state"
        );
        if unit.started_by.is_some() {
            assert!(started, "{name}: a start claim without a start");
        }
        if let Some(Failure {
            cause: Some(cause),
            cause_reason,
            ..
        }) = &unit.failure
        {
            let other = by_name
                .get(cause.as_str())
                .unwrap_or_else(|| panic!("{name} failed because of {cause} (not listed)"));
            assert_eq!(other.state, UnitState::Failed, "{name}'s cause {cause}");
            let other_failure = other.failure.as_ref().expect("a failed unit has a record");
            assert_eq!(cause_reason.as_ref(), Some(&other_failure.reason), "{name}");
            if strictness == Strictness::Live {
                assert_eq!(
                    other_failure.cause, None,
                    "{name}'s cause is not a root cause"
                );
            }
        }
        if strictness == Strictness::Live {
            if unit.state != UnitState::Unknown {
                assert!(unit.registered_at.is_some(), "{name}: never registered");
            }
            let times = [unit.registered_at, unit.started_at, unit.finished_at];
            let times: Vec<Duration> = times.into_iter().flatten().collect();
            assert!(
                times.windows(2).all(|w| w[0] <= w[1]),
                "{name}: times out of order"
            );
            if unit.state == UnitState::Pending {
                for dependency in &unit.dependencies {
                    assert_ne!(
                        dependency.current,
                        UnitState::Failed,
                        "{name} is pending on the failed {}",
                        dependency.name
                    );
                }
            }
        }
    }
    // No cycle: Kahn's algorithm over dependencies.
    let mut unmet: HashMap<&str, usize> = units
        .iter()
        .map(|u| (u.name.as_str(), u.dependencies.len()))
        .collect();
    let mut free: Vec<&str> = unmet
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(name, _)| *name)
        .collect();
    let mut ordered = 0;
    while let Some(name) = free.pop() {
        ordered += 1;
        for dependent in &by_name[name].dependents {
            let n = unmet.get_mut(dependent.as_str()).expect("listed");
            *n -= 1;
            if *n == 0 {
                free.push(dependent.as_str());
            }
        }
    }
    assert_eq!(ordered, units.len(), "the dependencies form a cycle");
}

/// Starts every ready pending unit and completes every started one until nothing changes, checking
/// the listing after each round: if a restored unmet count were off, a unit would be ready with a
/// dependency unfinished, or stay blocked with all of them completed.
fn drive_to_fixpoint(graph: &Graph) {
    loop {
        let units = graph.list();
        check_listing(&units, Strictness::Restored);
        let mut changed = false;
        for unit in &units {
            let name = unit.name.as_str();
            // Fresh: an earlier step of this round may have changed it.
            let unit = graph.snapshot(name).expect("listed");
            match unit.state {
                UnitState::Pending => match graph.try_start(name) {
                    Ok(StartAttempt::Started) => {
                        assert!(unit.ready, "{name} started while not ready");
                        changed = true;
                    }
                    Ok(StartAttempt::Blocked { unmet }) => {
                        assert!(!unit.ready, "{name} blocked while ready");
                        let expected: Vec<_> = unit
                            .dependencies
                            .iter()
                            .filter(|d| !d.satisfied)
                            .cloned()
                            .collect();
                        assert_eq!(unmet, expected, "{name}");
                    }
                    Err(error) => panic!("{name}: starting a pending unit: {error}"),
                },
                UnitState::Started => {
                    graph
                        .complete(name)
                        .unwrap_or_else(|error| panic!("{name}: completing: {error}"));
                    changed = true;
                }
                _ => {}
            }
        }
        if !changed {
            return;
        }
    }
}

// ---- journal_replay ----

/// The largest number a restored event may carry (`RestoreProblem::SeqTooLarge`: 2^40 - 1 and up
/// are refused).
const MAX_SEQ: u64 = (1 << 40) - 1;

/// The event ring of restored graphs: small, so that restores of short journals wrap it.
const RING: usize = 5;

/// The invariants of [`journal::decode`]'s answer, for any input.
fn check_decoded(bytes: &[u8], decoded: &Decoded) {
    assert!(decoded.valid_len <= bytes.len());
    assert!(decoded.records.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(decoded.records.iter().all(|r| r.seq > 0));
    match &decoded.problem {
        None => assert_eq!(decoded.valid_len, bytes.len()),
        Some(problem) => assert_eq!(problem.offset, decoded.valid_len),
    }
    if !decoded.records.is_empty() {
        assert!(decoded.valid_len > 0);
    }
    let again = journal::decode(&bytes[..decoded.valid_len]);
    assert_eq!(again.records, decoded.records);
    assert_eq!(again.problem, None);
    assert_eq!(again.valid_len, decoded.valid_len);
    // The records re-encode to a journal that decodes to them.
    if decoded.valid_len > 0 {
        let mut encoded = journal::encode_header();
        for record in &decoded.records {
            if let Err(error) = journal::encode_record(record, &mut encoded) {
                // Only a record re-encoded longer than the limit (`cause: null` added) may fail.
                assert!(error.contains("over the limit"), "{error}");
                return;
            }
        }
        let back = journal::decode(&encoded);
        assert_eq!(back.records, decoded.records);
        assert_eq!((back.problem, back.valid_len), (None, encoded.len()));
    }
}

/// The events `journal::open` would hand to `restore`: times from the first record.
fn events_of(records: &[JournalRecord]) -> Vec<Event> {
    let origin = records.first().map_or(0, |r| r.unix_ms);
    records
        .iter()
        .map(|record| Event {
            seq: record.seq,
            at: Duration::from_millis(record.unix_ms.saturating_sub(origin)),
            kind: record.kind.clone(),
        })
        .collect()
}

/// Each frame's checksum rewritten to match its payload, as far as the frames' lengths can be
/// followed; `None` if nothing changed.
fn with_fixed_checksums(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut fixed = bytes.to_vec();
    let mut offset = 0;
    while let Some(head) = fixed.get(offset..offset + 8) {
        let length = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if length > MAX_RECORD_BYTES || fixed.len() - offset - 8 < length {
            break;
        }
        let crc = crc32fast::hash(&fixed[offset + 8..offset + 8 + length]);
        fixed[offset + 4..offset + 8].copy_from_slice(&crc.to_le_bytes());
        offset += 8 + length;
    }
    (fixed != bytes).then_some(fixed)
}

/// Arbitrary bytes as a journal file: decoded (invariants of `decode`), replayed by `restore` and by
/// an independent model of its rules (same verdict; same graph, unit by unit, when it restores;
/// the graph invariants; the event ring; a drive to the fixpoint). If the frames' checksums do not
/// match their payloads, the same is done with the checksums fixed, so that a mutated payload is
/// tested as a record rather than stopped by its checksum.
pub fn journal_replay(data: &[u8]) {
    replay_bytes(data);
    if let Some(fixed) = with_fixed_checksums(data) {
        replay_bytes(&fixed);
    }
}

fn replay_bytes(bytes: &[u8]) {
    let decoded = journal::decode(bytes);
    check_decoded(bytes, &decoded);
    replay_events(&events_of(&decoded.records));
    // `GraphBuilder::restore` takes any `Duration`, not only whole milliseconds: the same events
    // with each record's number read as nanoseconds since the origin (u64::MAX included: it once
    // overflowed `Unit::stamp`; see the regression test in ipc/tests/fuzz_entry_points.rs).
    if !decoded.records.is_empty() {
        let events: Vec<Event> = decoded
            .records
            .iter()
            .map(|record| Event {
                seq: record.seq,
                at: Duration::from_nanos(record.unix_ms),
                kind: record.kind.clone(),
            })
            .collect();
        replay_events(&events);
    }
}

/// Restores `events` and checks the result against the model; returns the restored listing (taken
/// before the drive to the fixpoint) if it restored.
fn replay_events(events: &[Event]) -> Option<Vec<UnitSnapshot>> {
    let mut model = Model::default();
    let verdict = model.replay(events);
    let restored = Graph::builder()
        .event_capacity(RING)
        .restore(events.iter().cloned());
    match (verdict, restored) {
        (Ok(()), Ok(graph)) => {
            let units = graph.list();
            assert_eq!(
                units,
                model.listing(),
                "the restored graph is not the model's"
            );
            check_listing(&units, Strictness::Restored);
            check_ring(&graph, events);
            drive_to_fixpoint(&graph);
            Some(units)
        }
        (Err(expected), Err(actual)) => {
            assert_eq!(
                actual.seq, expected.seq,
                "refused at another event: {actual}"
            );
            match (&actual.problem, &expected.problem) {
                (RestoreProblem::Cycle { path }, RestoreProblem::Cycle { .. }) => {
                    let event = events
                        .iter()
                        .find(|e| e.seq == actual.seq)
                        .expect("refused");
                    model.check_cycle(path, &event.kind);
                }
                (actual, expected) => assert_eq!(actual, expected),
            }
            // The message renders (every variant's Display).
            let _ = actual.to_string();
            None
        }
        (Ok(()), Err(actual)) => panic!("restore refused what the model accepts: {actual}"),
        (Err(expected), Ok(_)) => panic!("restore accepted what the model refuses: {expected}"),
    }
}

/// A restored ring holds the last [`RING`] numbers: the events among them, in order, and the next
/// number is one past the last event.
fn check_ring(graph: &Graph, events: &[Event]) {
    let next = events.last().map_or(1, |e| e.seq + 1);
    assert_eq!(graph.next_event_seq(), next);
    let oldest = next.saturating_sub(RING as u64).max(1);
    let mut feed = graph.subscribe_from(oldest);
    let mut replayed = Vec::new();
    loop {
        match feed.try_recv() {
            Ok(Some(event)) => replayed.push(event),
            Ok(None) => break,
            Err(lagged) => panic!("a feed from the oldest kept number lagged: {lagged}"),
        }
    }
    // The ring keeps times as u64 nanoseconds: one more than 584 years after the origin comes back
    // as the largest it can hold (only a forged journal has such times).
    let kept: Vec<Event> = events
        .iter()
        .filter(|e| e.seq >= oldest)
        .map(|e| Event {
            at: Duration::from_nanos(u64::try_from(e.at.as_nanos()).unwrap_or(u64::MAX)),
            ..e.clone()
        })
        .collect();
    assert_eq!(replayed, kept);
    assert_eq!(feed.next_seq(), next);
}

/// One unit in the [`Model`].
#[derive(Debug, Clone)]
struct ModelUnit {
    state: UnitState,
    unmet: u32,
    dependencies: Vec<UnitName>,
    dependents: Vec<UnitName>,
    registered_at: Option<Duration>,
    started_at: Option<Duration>,
    finished_at: Option<Duration>,
    started_by: Option<String>,
    failure: Option<Failure>,
}

impl ModelUnit {
    fn new(state: UnitState) -> Self {
        Self {
            state,
            unmet: 0,
            dependencies: Vec::new(),
            dependents: Vec::new(),
            registered_at: None,
            started_at: None,
            finished_at: None,
            started_by: None,
            failure: None,
        }
    }
}

/// The replay rules of `GraphBuilder::restore`, as its docs and `RestoreProblem` state them, on a
/// plain map, with a depth-first search for cycles: the oracle for [`journal_replay`].
#[derive(Debug, Default)]
struct Model {
    units: BTreeMap<UnitName, ModelUnit>,
}

impl Model {
    fn replay(&mut self, events: &[Event]) -> Result<(), RestoreError> {
        let mut last = 0;
        for event in events {
            let refuse = |problem| RestoreError {
                seq: event.seq,
                problem,
            };
            if event.seq <= last {
                return Err(refuse(RestoreProblem::SeqNotIncreasing { previous: last }));
            }
            if event.seq >= MAX_SEQ {
                return Err(refuse(RestoreProblem::SeqTooLarge));
            }
            self.apply(event).map_err(refuse)?;
            last = event.seq;
        }
        Ok(())
    }

    fn expect(
        &self,
        name: &UnitName,
        operation: Operation,
        allowed: impl Fn(UnitState) -> bool,
    ) -> Result<(), RestoreProblem> {
        let unit = self
            .units
            .get(name)
            .ok_or_else(|| RestoreProblem::NoSuchUnit { unit: name.clone() })?;
        if allowed(unit.state) {
            Ok(())
        } else {
            Err(RestoreProblem::WrongState {
                unit: name.clone(),
                operation,
                state: unit.state,
            })
        }
    }

    /// Whether `from` depends on `to`, directly or not.
    fn reaches(&self, from: &UnitName, to: &UnitName) -> bool {
        let mut stack = vec![from];
        let mut seen = HashSet::new();
        while let Some(name) = stack.pop() {
            if name == to {
                return true;
            }
            if seen.insert(name) {
                stack.extend(&self.units[name].dependencies);
            }
        }
        false
    }

    fn apply(&mut self, event: &Event) -> Result<(), RestoreProblem> {
        let at = event.at;
        match &event.kind {
            EventKind::Registered { unit } => match self.units.get_mut(unit) {
                None => {
                    let mut new = ModelUnit::new(UnitState::Pending);
                    new.registered_at = Some(at);
                    self.units.insert(unit.clone(), new);
                }
                Some(existing) if existing.state == UnitState::Unknown => {
                    existing.state = UnitState::Pending;
                    existing.registered_at = Some(at);
                }
                Some(existing) => {
                    return Err(RestoreProblem::AlreadyRegistered {
                        unit: unit.clone(),
                        state: existing.state,
                    })
                }
            },
            EventKind::DependencyAdded { unit, dependency } => {
                self.expect(unit, Operation::Want, |s| s == UnitState::Pending)?;
                if dependency == unit {
                    return Err(RestoreProblem::SelfDependency { unit: unit.clone() });
                }
                let target_state = match self.units.get(dependency) {
                    Some(target) => {
                        if self.units[unit].dependencies.contains(dependency) {
                            return Err(RestoreProblem::DuplicateEdge {
                                unit: unit.clone(),
                                dependency: dependency.clone(),
                            });
                        }
                        if self.reaches(dependency, unit) {
                            return Err(RestoreProblem::Cycle { path: Vec::new() });
                        }
                        target.state
                    }
                    None => UnitState::Unknown,
                };
                let waiting = &self.units[unit];
                if target_state != UnitState::Completed && waiting.unmet >= MAX_UNMET {
                    return Err(RestoreProblem::TooManyDependencies { unit: unit.clone() });
                }
                let target = self
                    .units
                    .entry(dependency.clone())
                    .or_insert_with(|| ModelUnit::new(UnitState::Unknown));
                target.dependents.push(unit.clone());
                let waiting = self.units.get_mut(unit).expect("checked");
                waiting.dependencies.push(dependency.clone());
                if target_state != UnitState::Completed {
                    waiting.unmet += 1;
                }
            }
            EventKind::Started { unit, by } => {
                self.expect(unit, Operation::Start, |s| s == UnitState::Pending)?;
                let record = self.units.get_mut(unit).expect("checked");
                if record.unmet != 0 {
                    return Err(RestoreProblem::NotReady {
                        unit: unit.clone(),
                        unmet: record.unmet,
                    });
                }
                record.state = UnitState::Started;
                record.started_by = by.clone();
                record.started_at = Some(at);
            }
            EventKind::Completed { unit } => {
                self.expect(unit, Operation::Complete, |s| s == UnitState::Started)?;
                let record = self.units.get_mut(unit).expect("checked");
                record.state = UnitState::Completed;
                record.finished_at = Some(at);
                for dependent in record.dependents.clone() {
                    let dependent = self.units.get_mut(&dependent).expect("linked");
                    dependent.unmet = dependent
                        .unmet
                        .checked_sub(1)
                        .expect("model: an edge onto an unfinished unit was counted");
                }
            }
            EventKind::Failed {
                unit,
                reason,
                cause,
            } => {
                self.expect(unit, Operation::Fail, |s| match s {
                    UnitState::Unknown | UnitState::Pending => true,
                    UnitState::Started => cause.is_none(),
                    UnitState::Completed | UnitState::Failed => false,
                })?;
                let cause_reason = match cause {
                    None => None,
                    Some(cause) => match self.units.get(cause) {
                        Some(ModelUnit {
                            state: UnitState::Failed,
                            failure: Some(failure),
                            ..
                        }) => Some(failure.reason.clone()),
                        _ => {
                            return Err(RestoreProblem::CauseNotFailed {
                                unit: unit.clone(),
                                cause: cause.clone(),
                            })
                        }
                    },
                };
                let record = self.units.get_mut(unit).expect("checked");
                record.state = UnitState::Failed;
                record.finished_at = Some(at);
                record.failure = Some(Failure {
                    reason: reason.clone(),
                    cause: cause.clone(),
                    cause_reason,
                });
            }
        }
        Ok(())
    }

    /// `path` (from a refused edge) is a real cycle closed by the edge `kind` adds.
    fn check_cycle(&self, path: &[UnitName], kind: &EventKind) {
        let EventKind::DependencyAdded { unit, dependency } = kind else {
            panic!("a cycle refused for {kind:?}");
        };
        assert!(path.len() >= 3, "{path:?}");
        assert_eq!((&path[0], &path[1]), (unit, dependency), "{path:?}");
        assert_eq!(path.last(), Some(unit), "{path:?}");
        for pair in path[1..].windows(2) {
            assert!(
                self.units[&pair[0]].dependencies.contains(&pair[1]),
                "{path:?}: {} does not depend on {}",
                pair[0],
                pair[1]
            );
        }
    }

    /// The listing a graph in this state gives (as `Graph::list`).
    fn listing(&self) -> Vec<UnitSnapshot> {
        // Stamps keep nanoseconds in a u64: compare times only where that is exact.
        let stamp = |at: Option<Duration>| {
            at.map(|at| {
                let nanos = u64::try_from(at.as_nanos()).unwrap_or(u64::MAX - 1);
                Duration::from_nanos(nanos.min(u64::MAX - 1))
            })
        };
        self.units
            .iter()
            .map(|(name, unit)| UnitSnapshot {
                name: name.clone(),
                state: unit.state,
                ready: unit.unmet == 0,
                dependencies: unit
                    .dependencies
                    .iter()
                    .map(|d| {
                        let current = self.units[d].state;
                        unitsync_core::DependencyStatus {
                            name: d.clone(),
                            required: UnitState::Completed,
                            current,
                            satisfied: current == UnitState::Completed,
                        }
                    })
                    .collect(),
                dependents: unit.dependents.clone(),
                registered_at: stamp(unit.registered_at),
                started_at: stamp(unit.started_at),
                finished_at: stamp(unit.finished_at),
                failure: match unit.state {
                    UnitState::Failed => unit.failure.clone(),
                    _ => None,
                },
                started_by: match unit.state {
                    UnitState::Unknown | UnitState::Pending => None,
                    _ => unit.started_by.clone(),
                },
            })
            .collect()
    }
}

// ---- journal_ops (structured) ----

/// Names the operations use: mostly short valid ones (dense graphs), a few odd valid ones, two
/// invalid ones.
fn op_name(index: u8) -> String {
    match index % 12 {
        i @ 0..=6 => char::from(b'a' + i).to_string(),
        7 => "ünï cödé 💥".to_owned(),
        8 => r#"with "quotes" and \ and #35;"#.to_owned(),
        9 => "x".repeat(255),
        10 => String::new(),
        _ => "bad\nname".to_owned(),
    }
}

const CLAIMS: [&str; 3] = ["sh#1", "sh#2", "runner#7"];
const REASONS: [&str; 3] = ["exit status 1", "", "\"quoted\" \u{1F600} reason"];

/// One operation on the live graph.
#[derive(Debug, Clone)]
enum Op {
    Register(String),
    Want(String, Vec<String>),
    Start(String, Option<&'static str>),
    Complete(String),
    Fail(String, &'static str),
    Abandon(&'static str),
}

/// One way to damage the journal.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// XOR a byte of the file.
    Flip { at: usize, mask: u8 },
    /// Cut the file.
    Truncate { at: usize },
    /// Leave a record out.
    Drop { record: usize },
    /// Exchange two records.
    Swap { first: usize, second: usize },
    /// Write a record twice.
    Repeat { record: usize },
    /// Renumber a record.
    Renumber { record: usize, seq: u64 },
}

/// At most this many operations are read.
const MAX_OPS: usize = 40;

/// Reads operations until a 0xFF byte, then damages (4 bytes each). An operation is a byte (low 3
/// bits the kind, the rest an argument) followed by name bytes (none for kind 6, `abandon`): 0
/// register, 1 want (argument % 4 dependencies), 2 start, 3 start with a claim, 4 complete, 5 fail,
/// 6 abandon a claim, 7 want (argument % 8 dependencies).
fn parse_ops(data: &[u8]) -> (Vec<Op>, Vec<Damage>) {
    let mut bytes = data.iter().copied();
    let mut next = move || bytes.next();
    let mut ops = Vec::new();
    while ops.len() < MAX_OPS {
        let Some(byte) = next() else { break };
        if byte == 0xFF {
            break;
        }
        let (kind, argument) = (byte & 0x7, byte >> 3);
        if kind == 6 {
            ops.push(Op::Abandon(CLAIMS[usize::from(argument % 3)]));
            continue;
        }
        let name = op_name(next().unwrap_or(0));
        ops.push(match kind {
            0 => Op::Register(name),
            1 | 7 => {
                let count = if kind == 1 {
                    argument % 4
                } else {
                    argument % 8
                };
                let dependencies = (0..count).map(|_| op_name(next().unwrap_or(0))).collect();
                Op::Want(name, dependencies)
            }
            2 => Op::Start(name, None),
            3 => Op::Start(name, Some(CLAIMS[usize::from(argument % 3)])),
            4 => Op::Complete(name),
            _ => Op::Fail(name, REASONS[usize::from(argument % 3)]),
        });
    }
    let mut damages = Vec::new();
    while let (Some(kind), Some(a), Some(b), Some(v)) = (next(), next(), next(), next()) {
        let at = (usize::from(a) << 8) | usize::from(b);
        damages.push(match kind % 6 {
            0 => Damage::Flip { at, mask: v | 1 },
            1 => Damage::Truncate { at },
            2 => Damage::Drop { record: at },
            3 => Damage::Swap {
                first: usize::from(a),
                second: usize::from(b),
            },
            4 => Damage::Repeat { record: at },
            _ => Damage::Renumber {
                record: usize::from(a),
                seq: (u64::from(b) << (v % 48)) | u64::from(v),
            },
        });
    }
    (ops, damages)
}

fn apply_op(graph: &Graph, op: &Op) {
    // Refusals are part of the game; only panics and inconsistencies count.
    let _ = match op {
        Op::Register(name) => graph.register(name).map(drop),
        Op::Want(name, dependencies) => graph.want(name, dependencies).map(drop),
        Op::Start(name, claim) => graph.try_start_claimed(name, *claim).map(drop),
        Op::Complete(name) => graph.complete(name),
        Op::Fail(name, reason) => graph.fail(name, reason).map(drop),
        Op::Abandon(claim) => {
            graph.fail_started_by(|c| c == *claim, "abandoned");
            Ok(())
        }
    };
}

/// Collects what a graph hands its sink.
#[derive(Default)]
struct Collect(Mutex<Vec<(u64, Option<Event>)>>);

impl EventSink for Collect {
    fn record(&self, seq: u64, event: Option<&Event>) {
        self.0.lock().unwrap().push((seq, event.cloned()));
    }
}

/// Milliseconds since the Unix epoch that the structured journals start at.
const BASE_UNIX_MS: u64 = 1_700_000_000_000;

fn record_of(event: &Event) -> JournalRecord {
    JournalRecord {
        seq: event.seq,
        unix_ms: BASE_UNIX_MS + u64::try_from(event.at.as_millis()).unwrap_or(0),
        kind: event.kind.clone(),
    }
}

fn encode_journal(records: &[JournalRecord]) -> Vec<u8> {
    let mut bytes = journal::encode_header();
    for record in records {
        journal::encode_record(record, &mut bytes).expect("a record encodes");
    }
    bytes
}

fn untimed(mut units: Vec<UnitSnapshot>) -> Vec<UnitSnapshot> {
    for unit in &mut units {
        unit.registered_at = unit.registered_at.map(|_| Duration::ZERO);
        unit.started_at = unit.started_at.map(|_| Duration::ZERO);
        unit.finished_at = unit.finished_at.map(|_| Duration::ZERO);
    }
    units
}

/// Structured: bytes as operations on a live graph with a sink (see [`parse_ops`]). After each
/// operation the live listing must be consistent. The sink must have received every number once,
/// in a single-threaded run all events; their journal must decode to them; every prefix of it must
/// restore (a crash can cut a journal anywhere), and the prefix that ends after an operation must
/// restore to the listing the live graph had then (times aside). Then the damages are applied to the
/// journal (records first, then bytes) and the result goes through [`journal_replay`].
pub fn journal_ops(data: &[u8]) {
    let (ops, damages) = parse_ops(data);
    let sink = Arc::new(Collect::default());
    let graph = Graph::builder()
        .event_capacity(RING)
        .sink(Arc::clone(&sink) as Arc<dyn EventSink>)
        .build();
    let mut checkpoints = vec![(0, Vec::new())];
    for op in &ops {
        apply_op(&graph, op);
        let units = graph.list();
        check_listing(&units, Strictness::Live);
        checkpoints.push((sink.0.lock().unwrap().len(), untimed(units)));
    }
    let mut recorded = std::mem::take(&mut *sink.0.lock().unwrap());
    recorded.sort_by_key(|(seq, _)| *seq);
    let events: Vec<Event> = recorded
        .iter()
        .enumerate()
        .map(|(i, (seq, event))| {
            assert_eq!(*seq, i as u64 + 1, "the sink missed or repeated a number");
            let event = event
                .clone()
                .expect("a single-threaded graph leaves no tombstone");
            assert_eq!(event.seq, *seq);
            event
        })
        .collect();
    assert_eq!(graph.next_event_seq(), events.len() as u64 + 1);

    let records: Vec<JournalRecord> = events.iter().map(record_of).collect();
    let bytes = encode_journal(&records);
    let decoded = journal::decode(&bytes);
    assert_eq!(decoded.records, records);
    assert_eq!((decoded.problem, decoded.valid_len), (None, bytes.len()));

    let events = events_of(&records);
    let checkpoint_at: HashMap<usize, &Vec<UnitSnapshot>> =
        checkpoints.iter().map(|(n, units)| (*n, units)).collect();
    for cut in 0..=events.len() {
        let restored = replay_events(&events[..cut]).unwrap_or_else(|| {
            panic!("a prefix of {cut} events of a live journal does not restore")
        });
        if let Some(expected) = checkpoint_at.get(&cut) {
            assert_eq!(
                &untimed(restored),
                *expected,
                "the journal cut after {cut} events does not restore the live graph of that moment"
            );
        }
    }

    if damages.is_empty() {
        return;
    }
    let mut damaged = records;
    for damage in &damages {
        let n = damaged.len();
        match *damage {
            Damage::Drop { record } if n > 0 => {
                damaged.remove(record % n);
            }
            Damage::Swap { first, second } if n > 0 => damaged.swap(first % n, second % n),
            Damage::Repeat { record } if n > 0 => {
                let copy = damaged[record % n].clone();
                damaged.insert(record % n, copy);
            }
            Damage::Renumber { record, seq } if n > 0 => damaged[record % n].seq = seq,
            _ => {}
        }
    }
    let mut bytes = encode_journal(&damaged);
    for damage in &damages {
        match *damage {
            Damage::Flip { at, mask } if !bytes.is_empty() => {
                let len = bytes.len();
                bytes[at % len] ^= mask;
            }
            Damage::Truncate { at } => bytes.truncate(at % (bytes.len() + 1)),
            _ => {}
        }
    }
    journal_replay(&bytes);
}

// ---- seeds ----

/// Requests as a client sends them, one of each kind (and a few odd ones), as JSON text.
const REQUEST_SEEDS: [&str; 16] = [
    r#"{"request":"ping"}"#,
    r#"{"request":"want","unit":"claude","dependencies":["git","node"]}"#,
    r#"{"request":"want","unit":"ünï 💥","dependencies":[]}"#,
    r#"{"request":"start","unit":"git","timeout_ms":null,"claim":"sh#1"}"#,
    r#"{"request":"start","unit":"git","timeout_ms":1500}"#,
    r#"{"request":"complete","unit":"git"}"#,
    r#"{"request":"fail","unit":"node","reason":"npm exploded"}"#,
    r#"{"request":"fail","unit":"node","reason":null}"#,
    r#"{"request":"ready","unit":"claude"}"#,
    r#"{"request":"wait","unit":"git","until":"completed","timeout_ms":10}"#,
    r#"{"request":"status","unit":"waiting"}"#,
    r#"{"request":"list"}"#,
    r#"{"request":"graph","format":"dot"}"#,
    r#"{"request":"graph","format":"mermaid"}"#,
    r#"{"request":"watch","from_seq":3}"#,
    r#"{"request":"abandon","owner":"sh","reason":"the script exited with status 2"}"#,
];

/// Other wire documents: hellos, replies, responses.
const MESSAGE_SEEDS: [&str; 12] = [
    r#"{"protocol":1,"client":"unitsync 0.1.0"}"#,
    r#"{"welcome":{"protocol":1,"agent_version":"0.1.0","pid":42}}"#,
    r#"{"refused":{"message":"protocol mismatch","protocol":1}}"#,
    r#"{"response":"wanted","registered":true,"added":["git"]}"#,
    r#"{"response":"blocked","unmet":[{"name":"git","required":"completed","current":"started","satisfied":false}]}"#,
    r#"{"response":"refused","error":{"error":"cycle","path":["a","b","a"]}}"#,
    r#"{"response":"refused","error":{"error":"invalid_name","name":"","rule":"empty"}}"#,
    r#"{"response":"unit_failed","failure":{"reason":"dependency x failed","cause":"x","cause_reason":"boom"}}"#,
    r#"{"response":"event","event":{"seq":3,"at_ms":1732590000123,"event":"started","unit":"claude","by":"sh#1"}}"#,
    r#"{"response":"timed_out","state":"pending","unmet":[]}"#,
    r#"{"response":"lagged","missed":12}"#,
    r#"{"response":"error","message":"malformed or unknown request"}"#,
];

fn frame_of(payload: &[u8]) -> Vec<u8> {
    let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(payload);
    bytes
}

/// Operation scripts for [`journal_ops`] (see [`parse_ops`]): `(kind | argument << 3, names...)`.
fn op_script(ops: &[(u8, u8, &[u8])], damages: &[[u8; 4]]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (kind, argument, names) in ops {
        bytes.push(kind | (argument << 3));
        bytes.extend_from_slice(names);
    }
    if !damages.is_empty() {
        bytes.push(0xFF);
        for damage in damages {
            bytes.extend_from_slice(damage);
        }
    }
    bytes
}

/// A journal written by a live graph running `ops` (see [`parse_ops`]).
fn journal_of_ops(script: &[u8]) -> Vec<u8> {
    let (ops, _) = parse_ops(script);
    let sink = Arc::new(Collect::default());
    let graph = Graph::builder()
        .sink(Arc::clone(&sink) as Arc<dyn EventSink>)
        .build();
    for op in &ops {
        apply_op(&graph, op);
    }
    let mut recorded = std::mem::take(&mut *sink.0.lock().unwrap());
    recorded.sort_by_key(|(seq, _)| *seq);
    let records: Vec<JournalRecord> = recorded
        .iter()
        .filter_map(|(_, event)| event.as_ref().map(record_of))
        .collect();
    encode_journal(&records)
}

/// Seed inputs for every target, as `(target, name, bytes)`: real frames, requests and journals.
/// `write_seed_corpus` in `ipc/tests/fuzz_entry_points.rs` writes them to `fuzz/corpus/`.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut seeds = Vec::new();

    // Operation scripts: a chain, a diamond with a failure, claims and abandon, odd names.
    let scripts: Vec<(&str, Vec<u8>)> = vec![
        (
            "chain",
            op_script(
                &[
                    (1, 1, &[0, 1]), // want a [b]
                    (1, 1, &[1, 2]), // want b [c]
                    (2, 0, &[2]),    // start c
                    (4, 0, &[2]),    // complete c
                    (3, 0, &[1]),    // start b (sh#1)
                    (4, 0, &[1]),    // complete b
                    (2, 0, &[0]),    // start a
                ],
                &[],
            ),
        ),
        (
            "diamond-failure",
            op_script(
                &[
                    (7, 2, &[0, 1, 2]), // want a [b c]
                    (1, 1, &[1, 3]),    // want b [d]
                    (1, 1, &[2, 3]),    // want c [d]
                    (2, 0, &[3]),       // start d
                    (5, 0, &[3]),       // fail d
                    (1, 1, &[4, 3]),    // want e [d] (d failed: e fails)
                    (0, 0, &[5]),       // register f
                    (1, 1, &[5, 0]),    // want f [a]
                ],
                &[],
            ),
        ),
        (
            "claims-abandon",
            op_script(
                &[
                    (3, 0, &[0]),    // start a (sh#1)
                    (3, 1, &[1]),    // start b (sh#2)
                    (1, 1, &[2, 0]), // want c [a]
                    (1, 1, &[3, 1]), // want d [b]
                    (6, 0, &[]),     // abandon sh#1
                    (4, 0, &[1]),    // complete b
                    (2, 0, &[3]),    // start d
                    (3, 1, &[1]),    // start b again (finished)
                ],
                &[],
            ),
        ),
        (
            "odd-names-cycle",
            op_script(
                &[
                    (1, 2, &[7, 8, 9]), // want ünï [quotes, long]
                    (1, 1, &[8, 7]),    // want quotes [ünï]: a cycle, refused
                    (1, 1, &[10, 0]),   // empty name: refused
                    (1, 1, &[0, 11]),   // control character: refused
                    (1, 1, &[0, 0]),    // self-dependency: refused
                    (2, 0, &[9]),       // start long
                    (5, 1, &[9]),       // fail long with an empty reason
                ],
                &[],
            ),
        ),
    ];
    for (name, script) in &scripts {
        seeds.push(("journal_ops", name.to_string(), script.clone()));
        seeds.push(("journal_replay", name.to_string(), journal_of_ops(script)));
    }
    let mut damaged = scripts[1].1.clone();
    damaged.extend_from_slice(&[0xFF, 2, 0, 3, 0, 0, 0, 40, 7, 1, 0, 60, 0]);
    seeds.push(("journal_ops", "diamond-damaged".to_owned(), damaged));
    let mut torn = journal_of_ops(&scripts[1].1);
    torn.truncate(torn.len() - 5);
    seeds.push(("journal_replay", "torn-tail".to_owned(), torn));
    seeds.push((
        "journal_replay",
        "header-only".to_owned(),
        journal::encode_header(),
    ));
    let mut other_version = Vec::new();
    let payload = br#"{"journal":"unitsync","version":2}"#;
    other_version.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    other_version.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    other_version.extend_from_slice(payload);
    seeds.push(("journal_replay", "other-version".to_owned(), other_version));
    let registered = |seq, unix_ms, unit: &str| JournalRecord {
        seq,
        unix_ms,
        kind: EventKind::Registered {
            unit: UnitName::new(unit).expect("a valid name"),
        },
    };
    seeds.push((
        "journal_replay",
        "seq-too-large".to_owned(),
        encode_journal(&[registered(1, 0, "a"), registered(MAX_SEQ, 1, "b")]),
    ));
    seeds.push((
        "journal_replay",
        "times-far-apart".to_owned(),
        encode_journal(&[
            registered(1, 5, "a"),
            registered(2, u64::MAX, "b"),
            registered(3, 0, "c"),
        ]),
    ));

    for (i, request) in REQUEST_SEEDS.iter().enumerate() {
        seeds.push((
            "request_parser",
            format!("request-{i}"),
            request.as_bytes().to_vec(),
        ));
    }
    for (i, message) in MESSAGE_SEEDS.iter().enumerate() {
        seeds.push((
            "request_parser",
            format!("message-{i}"),
            message.as_bytes().to_vec(),
        ));
    }

    // A whole connection: hello, every request, a malformed frame, and the end.
    let mut connection = frame_of(MESSAGE_SEEDS[0].as_bytes());
    for request in REQUEST_SEEDS {
        connection.extend(frame_of(request.as_bytes()));
    }
    connection.extend(frame_of(br#"{"request":"nonsense"}"#));
    connection.extend(frame_of(REQUEST_SEEDS[0].as_bytes()));
    for (name, schedule) in [
        ("whole", 0u8),
        ("in-pieces", 0x03 | 0x20),
        ("bytewise", 0x01 | 0x60),
    ] {
        let mut data = vec![schedule];
        data.extend_from_slice(&connection);
        seeds.push(("frame_decoder", format!("connection-{name}"), data));
    }
    let mut oversized = vec![0u8];
    oversized.extend(frame_of(MESSAGE_SEEDS[0].as_bytes()));
    oversized.extend_from_slice(&((MAX_FRAME_BYTES as u32) + 1).to_be_bytes());
    oversized.extend_from_slice(b"{}");
    seeds.push(("frame_decoder", "oversized".to_owned(), oversized));
    let mut cut = vec![0x05];
    cut.extend(frame_of(MESSAGE_SEEDS[0].as_bytes()));
    cut.extend_from_slice(&[0, 0, 1, 0, b'{']);
    seeds.push(("frame_decoder", "cut-payload".to_owned(), cut));
    let mut bad_hello = vec![0u8];
    bad_hello.extend(frame_of(REQUEST_SEEDS[0].as_bytes()));
    seeds.push(("frame_decoder", "request-as-hello".to_owned(), bad_hello));
    seeds
}
