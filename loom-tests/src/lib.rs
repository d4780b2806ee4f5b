//! Loom models of `unitsync-core`: exhaustive (up to a preemption bound) explorations of the races
//! between graph operations on different threads.
//!
//! Under `cfg(loom)` the core swaps its atomics, `Mutex`, `Arc` and per-unit `Notify` for loom ones
//! (`core/src/sync.rs`) and its `dashmap` unit table, `crossbeam-epoch` edge lists and seqlock event
//! slots for `Mutex` stand-ins with the same contracts, so loom explores every interleaving of the
//! *graph logic* itself: the status-word CASes, edge sealing, unmet counting, failure propagation and
//! the enable-check-sleep pattern of the async waiters. Each model builds a tiny graph, races two (at
//! most three) threads over it, and then checks the end state and the event log. Async waits are
//! driven by `loom::future::block_on`; a lost wake-up leaves every thread blocked, which loom reports
//! as a deadlock. Deadlines are always `None`, so no `tokio::time` is involved.
//!
//! Run them (a release build; each model prints its explored interleavings and wall time):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p unitsync-loom-tests \
//!     -- --test-threads=1 --nocapture
//! ```
//!
//! Without `--cfg loom` the test files compile to nothing and only these helpers build.
//!
//! The models and what each proves (per-model interleavings and wall times are in each file's `//!`
//! doc; the whole suite explores about 108,000 interleavings in about 7 s at bound 2, and still
//! passes at bounds 3 and 4):
//! - `tests/complete_vs_want.rs` — `complete(dep)` racing `want(u, dep)` + `try_start(u)`: the edge
//!   is accounted for exactly once (by the completer's seal walk if the push came first, by `want`
//!   otherwise), so `u` is ready exactly when its dependencies completed, never before and never
//!   stuck, and its start is numbered after every completion.
//! - `tests/waiter_vs_complete.rs` — an async waiter (`start`, `wait_ready`, `wait_for`) enabling
//!   its notification and checking its condition, racing the completion(s), registration or start
//!   that release it: the waiter always finishes (no lost wake-up), with one dependency, with two
//!   dependencies completed by two threads, and with a dependency nobody registered yet; a blocked
//!   `start` never starts before its dependencies completed; a finished waiter is no longer counted
//!   in `parked_waiters`. A unit's notification is allocated by its first waiter, so every one of
//!   these also races that installation against the notifier (and one model races two first
//!   waiters installing it at once); without the waiters' no-op read-modify-write on the status
//!   words they read, every waiter model deadlocks. One model documents a fixed core bug (a blocked
//!   `start` could report an empty unmet list).
//! - `tests/fail_vs_start.rs` — `fail` racing `try_start`, `complete` and `start`/`wait_ready`
//!   waiters on a chain: exactly one of fail/complete wins a unit, a direct `fail` still fails a
//!   started unit, propagation never fails a started or finished unit and always reaches every
//!   not-started transitive dependent (in order, each once), no unit starts after one of its
//!   dependencies failed, and a waiter blocked on a dependency that fails always wakes with the root
//!   cause named.
//! - `tests/fail_vs_want.rs` — `fail` racing `want` (onto the failing unit, onto a unit in the
//!   propagating chain, and before a dependent starts) and two failures racing to the same
//!   dependent: the wanting unit always ends failed with the root cause named, never stuck pending
//!   (a `start` waiter on it returns the failure), a started unit is never failed by propagation, and
//!   every unit fails exactly once, its dependents naming the same cause.
//! - `tests/register_vs_want.rs` — a new name's unit created without the structure lock: `register`
//!   racing `want` of the same new name, and two `want`s of it: one unit, registered exactly once
//!   (one event, one caller told so), every edge counted.
//!
//! Most models also assert on the event log (see [`events`]): each unit's `Started`, `Completed` and
//! `Failed` events appear at most once, and a caused event is numbered after its cause.

use unitsync_core::{Event, EventKind, Failure, Graph, StartAttempt, UnitName, UnitState};

/// Runs `model` under loom, with preemption bound `LOOM_MAX_PREEMPTIONS` or 2 if that is unset, and
/// prints how many interleavings it explored and how long that took.
#[cfg(loom)]
pub fn check<F>(model: F)
where
    F: Fn() + Sync + Send + 'static,
{
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(2);
    }
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&runs);
    let started = std::time::Instant::now();
    builder.check(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        model()
    });
    eprintln!(
        "explored {} interleavings (preemption bound {:?}) in {:.2?}",
        runs.load(Ordering::Relaxed),
        builder.preemption_bound,
        started.elapsed()
    );
}

/// Runs `work` on a new loom thread with its own handle on `graph`.
#[cfg(loom)]
pub fn spawn<T, F>(graph: &Graph, work: F) -> loom::thread::JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce(&Graph) -> T + Send + 'static,
{
    let graph = graph.clone();
    loom::thread::spawn(move || work(&graph))
}

/// Drives one wait future of `graph` (`start`, `wait_ready`, `wait_for`) to completion on this loom
/// thread. If a wake-up is lost, every thread ends up blocked and loom fails the model with a
/// deadlock. Afterwards checks that the future left no sleeper counted in
/// [`Graph::parked_waiters`] (the count must fall back to zero once every waiter is gone).
#[cfg(loom)]
pub fn block_on_waiter<F: std::future::Future>(graph: &Graph, waiter: F) -> F::Output {
    let outcome = loom::future::block_on(waiter);
    assert_eq!(
        graph.parked_waiters(),
        0,
        "a finished waiter is still counted"
    );
    outcome
}

/// The event capacity every model uses: far more sequence numbers (events and tombstones) than any
/// of these tiny models reserves, so [`events`] never sees a lag.
pub const MODEL_EVENT_CAPACITY: usize = 64;

/// A fresh graph for a model, with [`MODEL_EVENT_CAPACITY`].
pub fn model_graph() -> Graph {
    Graph::with_event_capacity(MODEL_EVENT_CAPACITY)
}

/// Registers `unit` (no dependencies) and starts it, as setup before the threads race.
pub fn start_now(graph: &Graph, unit: &str) {
    assert_eq!(graph.try_start(unit), Ok(StartAttempt::Started));
}

/// A unit name (panics on an invalid one).
pub fn name(unit: &str) -> UnitName {
    UnitName::new(unit).expect("valid unit name")
}

/// Every event the graph published, from the first; panics if any was lost (the model's event
/// capacity must exceed the number of sequence numbers it uses).
pub fn events(graph: &Graph) -> Vec<Event> {
    let mut feed = graph.subscribe_from(1);
    let mut all = Vec::new();
    while let Some(event) = feed
        .try_recv()
        .expect("event capacity too small for this model")
    {
        all.push(event);
    }
    all
}

/// The sequence number of the single event matching `wanted`, `None` if there is none; panics if
/// there are several.
pub fn seq_of(events: &[Event], wanted: impl Fn(&EventKind) -> bool) -> Option<u64> {
    let mut found = events.iter().filter(|event| wanted(&event.kind));
    let first = found.next().map(|event| event.seq);
    assert!(found.next().is_none(), "event recorded twice: {events:#?}");
    first
}

/// `unit`'s `Started` event.
pub fn started(events: &[Event], unit: &str) -> Option<u64> {
    seq_of(
        events,
        |kind| matches!(kind, EventKind::Started { unit: u, .. } if u.as_str() == unit),
    )
}

/// `unit`'s `Completed` event.
pub fn completed(events: &[Event], unit: &str) -> Option<u64> {
    seq_of(
        events,
        |kind| matches!(kind, EventKind::Completed { unit: u } if u.as_str() == unit),
    )
}

/// `unit`'s `Failed` event.
pub fn failed(events: &[Event], unit: &str) -> Option<u64> {
    seq_of(
        events,
        |kind| matches!(kind, EventKind::Failed { unit: u, .. } if u.as_str() == unit),
    )
}

/// The failure record of a unit that failed because `cause` failed with `cause_reason`.
pub fn dependency_failure(cause: &str, cause_reason: &str) -> Failure {
    Failure {
        reason: format!("dependency {cause} failed"),
        cause: Some(name(cause)),
        cause_reason: Some(cause_reason.to_owned()),
    }
}

/// The failure record of `unit` (panics if it has none).
pub fn failure_of(graph: &Graph, unit: &str) -> Failure {
    graph
        .snapshot(unit)
        .expect("unit exists")
        .failure
        .expect("unit has a failure record")
}

/// Asserts that `unit` failed because `cause` failed with `cause_reason`: its state, its failure
/// record, and a `Failed` event numbered after the cause's own.
pub fn assert_failed_by(graph: &Graph, unit: &str, cause: &str, cause_reason: &str) {
    assert_eq!(graph.state(unit), Some(UnitState::Failed), "{unit} state");
    assert_eq!(
        failure_of(graph, unit),
        dependency_failure(cause, cause_reason),
        "{unit} failure record"
    );
    let log = events(graph);
    let own = failed(&log, unit).expect("a Failed event for the unit");
    let root = failed(&log, cause).expect("a Failed event for the cause");
    assert!(
        root < own,
        "{unit} failed (#{own}) before its cause {cause} (#{root})"
    );
}
