//! The dependency graph: every operation of SPEC §2–§3 on units, with no I/O.
//!
//! # Concurrency design
//! - **Units** live in the unit table, a `dashmap` keyed by the units themselves (see `table`), which
//!   owns them until the graph is dropped. Each operation on a name looks it up once, holding one of
//!   the map's shard read locks for that probe only (two atomic read-modify-writes on the shard's
//!   lock word: after the clock, the largest cost of a `start`, `complete` or readiness check); a
//!   name's unit is created exactly once, under the shard's write lock, held only for that
//!   insertion (so a new name costs a second probe). Inside the crate a unit is a plain `&Unit`
//!   borrowed from the graph, and edges and event records point to units directly: no reference
//!   counting on any path (see `unit`).
//! - **Status** (state, unmet-dependency count, last event number) is one `AtomicU64` per unit
//!   (see `state`). Every status change is a single CAS on that word: that CAS is the operation's
//!   *linearization point*. `start` succeeds only by CAS-ing `(pending, unmet = 0)` to `started`, so the
//!   readiness check and the transition are one step, and nothing can slip between them.
//! - **Edges** are two lock-free append-only lists per unit, on `crossbeam-epoch` (see `edges`):
//!   each push or walk pins the thread once (`want` holds one pin across all its list operations).
//!   A unit that completes or fails *seals* its dependents list and walks the edges pushed before
//!   the seal; an edge pushed after the seal is still linked (snapshots and the cycle check see every
//!   edge) but is accounted for by its inserter. Exactly one of them does.
//! - **Readiness** is `unmet == 0`. `want` raises the count (CAS, only while pending) *before* it
//!   publishes the edge, so a finisher can never decrement below zero; completing a unit decrements each
//!   direct dependent once (`fetch_sub`) and touches nothing else.
//! - **Failure** propagates along sealed dependents lists to every unit that has not started.
//! - **Registration** of a new name takes no graph-wide lock: the table creates the unit, with its
//!   place in the topological order taken from an atomic counter (registered units count up, units
//!   first seen as a dependency count down; see `topo`). A new unit has no edges, so any fresh order
//!   agrees with every edge it has.
//! - **Edge insertion** (`want`) is serialised by one short *structure lock*, which also guards the
//!   topological order used for the cycle check (see `topo`). Under it `want` only checks, counts
//!   and links; it publishes its events and wakes waiters after releasing it. Status changes,
//!   readiness queries, registration and wake-ups never take it.
//! - **Waiters** park on their unit's notification, allocated by the first waiter (see
//!   `sync::LazyNotify`): a unit nobody waits on pays one atomic load per notification. It is
//!   signalled after every change of the unit's status (its own transitions, its unmet count
//!   dropping, edges added to it) and of any of its dependencies' states, always *after* the
//!   read-modify-write of the status word concerned; a waiter enables its `Notified`, then does a
//!   no-op read-modify-write on each status word it is about to read (see `waiting`). Every write to
//!   a status word being a read-modify-write, one of the two sees the other: that is why no wake-up
//!   is lost, and it holds with acquire/release alone.
//! - **Start claims.** A start may carry an opaque *claim* naming its starter
//!   ([`Graph::start_claimed`]). A claimed start holds the unit's records mutex (see `unit`) across its
//!   `pending → started` CAS and stores the claim before unlocking; unclaimed starts never take it. So
//!   a reader that saw `started` and then locks finds the claim of the start that won: it saw the CAS,
//!   which the winner made while holding the lock, so its own lock comes after the winner's unlock (a
//!   lock taken earlier would be ordered before that CAS, and the reader could not have seen it). A
//!   claimed start that loses the CAS writes nothing. This is the same argument as for the failure
//!   record, which the failing thread writes under the same lock. The claim is what makes a retried
//!   start idempotent: the same claim on a started unit answers `Started` again, with no new event.
//! - **Events** are published after the change they describe (and after the records lock is
//!   released): an event record names the units it is about, and a reader rebuilds the claim or the
//!   failure from the unit's records, which are final by then (see `events`).
//! - **Journaling.** A graph built with an [`EventSink`] hands it every event and tombstone from the
//!   publishing thread (see `events`); a graph without one pays a `None` check. A graph can be rebuilt
//!   from a journal's events with [`GraphBuilder::restore`] (see `restore`), which applies each event
//!   to the state directly, with its original number and timestamp, before the graph is shared.
//! - **Timestamps** of a transition are read (once) after loading the status word it changes and
//!   before its CAS, and the transition's event carries the same instant. A `want` reads one instant,
//!   before it takes the structure lock, for its registration and all its edges: a registration
//!   follows no earlier stamp, so only "before the CAS" matters there. So `registered ≤ started ≤
//!   finished` holds for the stored values even when different threads make the changes (a snapshot
//!   taken during a transition may see the new state a moment before its timestamp). Reading the
//!   clock (`Instant::now`, about 20 ns) is the largest single cost of a start or a completion.
//!
//! # Invariants
//! 1. `unmet(u)` = number of `u`'s dependency edges whose dependency has not completed, *plus* the
//!    edges a `want` in progress has counted (at its CAS) but not yet settled: not yet linked, or
//!    linked after the dependency completed and sealed, until that `want` decrements for it.
//! 2. A unit is `started` only if its word had `unmet == 0` at the CAS, so every dependency was
//!    completed at that instant.
//! 3. A unit whose dependency failed is failed before it can start: the failed dependency never
//!    completes, so the dependent's `unmet` stays above zero until propagation reaches it.
//! 4. The topological order agrees with every edge whenever the structure lock is free, and no two
//!    units share an order.
//! 5. Event numbers of one unit increase with its real order of changes (see `events`).
//! 6. A unit's start claim is set at most once, by the start whose CAS made it `started`, before any
//!    reader that saw `started` can lock the records mutex; it is never changed afterwards.
//! 7. A name has at most one unit, and a unit, once created, lives (at the same address) as long as
//!    the graph.
//!
//! # Linearization points
//! `register`/promotion, `start`, `complete` and `fail`: the CAS on the unit's status word (for a new
//! name, the table insertion of a unit already registered). `want`: its CAS counting the new edges
//! (after which nothing can fail); a `want` on a name nobody mentioned first creates the unit as
//! `unknown`, which is indistinguishable from someone having waited for it just before. A retried
//! claimed start that finds its own claim: the status load that saw `started` (the claim is read
//! under the records lock). Restoring is not concurrent with anything: the graph is shared only once
//! it is rebuilt.

use crate::edges::{self, EdgeList, Prepared, Sealed};
use crate::error::{check_name, GraphError, Operation};
use crate::events::{Event, EventLog, EventSink, Record, Subscription};
use crate::name::UnitName;
use crate::restore::RestoreError;
use crate::state::{StatusWord, UnitState, MAX_UNMET, ONE_UNMET};
use crate::sync::{lock, Arc, AtomicI64, AtomicUsize, Mutex, MutexGuard, Ordering, Padded};
use crate::table::UnitTable;
use crate::topo;
use crate::unit::{Failure, Stamp, Unit, UnitRef};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// How many events a subscriber may fall behind before it is told it lagged.
pub const DEFAULT_EVENT_CAPACITY: usize = 4096;

/// The unit dependency graph. Cheap to clone: clones share the same graph.
#[derive(Clone)]
pub struct Graph {
    pub(crate) inner: Arc<Inner>,
}

/// The graph's shared state. The fields that threads write often (the structure lock, the order
/// counters, the waiter count, and the event counter inside `events`) each sit on cache lines of
/// their own, apart from what every operation reads (the table's hasher and shard array, the origin).
pub(crate) struct Inner {
    pub(crate) units: UnitTable,
    /// The right to add edges, and the topological order (see `topo`).
    structure: Padded<Mutex<()>>,
    /// Where new units go in the topological order.
    next_order: Padded<NextOrder>,
    pub(crate) events: EventLog,
    /// Where every event also goes (a journal), if anywhere.
    sink: Option<std::sync::Arc<dyn EventSink>>,
    origin: Instant,
    /// Wait futures currently asleep (see [`Graph::parked_waiters`]).
    pub(crate) parked_waiters: Padded<AtomicUsize>,
}

/// The next topological orders for new units (see `topo`).
struct NextOrder {
    /// For a registered unit: grows up.
    registered: AtomicI64,
    /// For a unit first seen as a dependency: grows down.
    unknown: AtomicI64,
}

/// The state of one dependency of a unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DependencyStatus {
    /// The dependency.
    pub name: UnitName,
    /// The state it must reach (always `completed`).
    pub required: UnitState,
    /// Its state now.
    pub current: UnitState,
    /// Whether `current` satisfies `required`.
    pub satisfied: bool,
}

/// Everything known about one unit at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitSnapshot {
    /// The unit.
    pub name: UnitName,
    /// Its state.
    pub state: UnitState,
    /// Whether every dependency is completed.
    pub ready: bool,
    /// Its dependencies, in the order they were added.
    pub dependencies: Vec<DependencyStatus>,
    /// The units that depend on it, in the order they were added.
    pub dependents: Vec<UnitName>,
    /// When it was registered, from the graph's creation.
    pub registered_at: Option<Duration>,
    /// When it started.
    pub started_at: Option<Duration>,
    /// When it completed or failed.
    pub finished_at: Option<Duration>,
    /// Why it failed.
    pub failure: Option<Failure>,
    /// The claim it was started with ([`Graph::start_claimed`]), if it was started with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
}

/// What `want` changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WantOutcome {
    /// The unit was new (or only known as a dependency) and is now registered.
    pub registered: bool,
    /// The dependencies that were new edges (repeated edges are left out).
    pub added: Vec<UnitName>,
}

/// What `try_start` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAttempt {
    /// The unit was ready and is now started.
    Started,
    /// The unit is pending; these dependencies are not completed yet. The list can be empty for
    /// an instant while the last dependency completes (its state changes just before the unit's
    /// unmet count drops); the unit becomes ready right after.
    Blocked {
        /// The unmet dependencies and their states.
        unmet: Vec<DependencyStatus>,
    },
}

/// What `fail` changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailOutcome {
    /// Units failed because they (transitively) depend on the failed one, in the order reached.
    pub propagated: Vec<UnitName>,
}

/// Builds a [`Graph`] with chosen settings, or rebuilds one from a journal
/// ([`restore`](Self::restore)). Start with [`Graph::builder`].
#[derive(Clone)]
pub struct GraphBuilder {
    event_capacity: usize,
    sink: Option<std::sync::Arc<dyn EventSink>>,
    origin: Option<Instant>,
}

impl std::fmt::Debug for GraphBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphBuilder")
            .field("event_capacity", &self.event_capacity)
            .field("sink", &self.sink.is_some())
            .field("origin", &self.origin)
            .finish()
    }
}

impl GraphBuilder {
    /// How many events subscribers may fall behind before they lag (default
    /// [`DEFAULT_EVENT_CAPACITY`]; at least 1).
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// Hands every event (and tombstone) to `sink` as it is published; see [`EventSink`].
    pub fn sink(mut self, sink: std::sync::Arc<dyn EventSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// The instant every duration in snapshots and events is measured from (default: when the
    /// graph is built). A restored graph needs the instant its journal's durations are measured from.
    pub fn origin(mut self, origin: Instant) -> Self {
        self.origin = Some(origin);
        self
    }

    /// An empty graph.
    pub fn build(self) -> Graph {
        Graph {
            inner: Arc::new(Inner {
                units: UnitTable::new(),
                structure: Padded(Mutex::new(())),
                next_order: Padded(NextOrder {
                    registered: AtomicI64::new(0),
                    unknown: AtomicI64::new(-1),
                }),
                events: EventLog::new(self.event_capacity),
                sink: self.sink,
                origin: self.origin.unwrap_or_else(Instant::now),
                parked_waiters: Padded(AtomicUsize::new(0)),
            }),
        }
    }

    /// Rebuilds a graph from a journal's events, in order, keeping their sequence numbers and
    /// timestamps (`Event::at`, measured from this builder's [`origin`](Self::origin)).
    ///
    /// Each event is applied to the state directly, without propagation (every propagated failure is
    /// its own `Failed` event in a journal) and without calling the sink (the events are journaled
    /// already; later events go to the sink as usual). Every event is checked against the state it
    /// meets; the first that does not fit (see [`RestoreError`]) stops the restore, so a caller never
    /// serves a graph that differs from the one that wrote the journal. Afterwards the event ring holds
    /// the last `event_capacity` restored events under their numbers (so `subscribe_from` a restored
    /// number replays from there) and [`Graph::next_event_seq`] is one past the last.
    ///
    /// Names that were only waited for (`wait_for` on a name nobody mentioned) leave no event, so a
    /// restored graph does not know them until someone mentions them again.
    ///
    /// The restored graph is exactly the journaled one. A journal cut inside a failure's propagation
    /// can leave dependents pending on a failed unit; call [`Graph::finish_interrupted_failures`]
    /// once the graph is ready to journal again.
    pub fn restore(self, events: impl IntoIterator<Item = Event>) -> Result<Graph, RestoreError> {
        let graph = self.build();
        crate::restore::replay(&graph, events)?;
        Ok(graph)
    }
}

impl Default for Graph {
    fn default() -> Self {
        Self::new()
    }
}

impl Graph {
    /// An empty graph with the default event buffer.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// An empty graph whose subscribers may fall `capacity` events behind before they lag.
    pub fn with_event_capacity(capacity: usize) -> Self {
        Self::builder().event_capacity(capacity).build()
    }

    /// A builder for a graph with a sink, a chosen origin or event capacity, or restored from a
    /// journal.
    pub fn builder() -> GraphBuilder {
        GraphBuilder {
            event_capacity: DEFAULT_EVENT_CAPACITY,
            sink: None,
            origin: None,
        }
    }

    /// The instant all durations in snapshots and events are measured from.
    pub fn origin(&self) -> Instant {
        self.inner.origin
    }

    /// How many names the graph knows (registered and unknown).
    pub fn len(&self) -> usize {
        self.inner.units.len()
    }

    /// Whether the graph knows no name.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Registers `unit` as pending if it is new or only known as a dependency.
    /// Returns whether it was registered by this call.
    pub fn register(&self, unit: &str) -> Result<bool, GraphError> {
        check_name(unit)?;
        Ok(self.ensure_registered(unit).1)
    }

    /// Makes `unit` wait for every one of `dependencies` (SPEC §3 `want`): all edges or none.
    ///
    /// Registers `unit` if new; dependencies may be names nobody registered yet (they become
    /// `unknown`); a repeated edge is a no-op. Refused, with the graph unchanged, for an invalid name,
    /// a self-dependency, an edge that would close a cycle, or a unit that already started or finished.
    pub fn want<S: AsRef<str>>(
        &self,
        unit: &str,
        dependencies: &[S],
    ) -> Result<WantOutcome, GraphError> {
        check_name(unit)?;
        // Every name is checked (and duplicates dropped) before anything changes.
        let mut edges: Vec<Edge<'_, '_>> = Vec::with_capacity(dependencies.len());
        let mut distinct: Option<std::collections::HashSet<&str>> = None;
        for dependency in dependencies {
            let dependency = dependency.as_ref();
            check_name(dependency)?;
            if dependency == unit {
                return Err(GraphError::SelfDependency {
                    unit: UnitName::from_valid(unit),
                });
            }
            // Short lists (the usual case) are deduplicated by a scan, long ones by a set.
            let new = match &mut distinct {
                Some(seen) => seen.insert(dependency),
                None if edges.len() < 16 => edges.iter().all(|edge| edge.name != dependency),
                None => {
                    let mut seen: std::collections::HashSet<&str> =
                        edges.iter().map(|edge| edge.name).collect();
                    let new = seen.insert(dependency);
                    distinct = Some(seen);
                    new
                }
            };
            if new {
                edges.push(Edge {
                    name: dependency,
                    target: None,
                    nodes: None,
                    skip: false,
                });
            }
        }
        if edges.len() > MAX_UNMET as usize && self.inner.units.get(unit).is_none() {
            return Err(too_many(&UnitName::from_valid(unit)));
        }

        // Outside the structure lock: find (or create) the unit and the dependencies that exist,
        // allocate the edges' list nodes, and read the clock. A name nobody mentioned has no edge, so
        // nothing below can refuse it (but a race): it is created as unknown, with a registered
        // unit's place in the order (after everything registered so far, so the usual edges agree
        // with the order), and registered by the CAS below. The timestamp may be read before the
        // word is loaded: the registration it stamps has no earlier stamp to follow, and a start
        // reads its own clock only after seeing this CAS.
        let unit = self.ensure_known_as_registered(unit);
        for edge in &mut edges {
            edge.resolve(unit, self.inner.units.get(edge.name));
        }
        let at = self.now();
        // One epoch pin for every list walk and push below (each of which pins again, nested, which
        // is a counter increment): taken before the structure lock so the lock holder does not pay
        // for it.
        let _pin = edges::pin();

        let structure = lock(&self.inner.structure);
        let state = unit.state();
        if !matches!(state, UnitState::Unknown | UnitState::Pending) {
            return Err(wrong_state(unit, Operation::Want, state));
        }
        for edge in &mut edges {
            if edge.target.is_none() {
                // Absent a moment ago; if it exists now it may have edges: check it like the rest.
                edge.resolve(unit, self.inner.units.get(edge.name));
            }
            if let Some(target) = edge.target {
                if unit.depends_on(target) {
                    edge.skip = true;
                    continue;
                }
                if let Some(path) = topo::find_cycle(unit, target) {
                    return Err(GraphError::Cycle { path });
                }
            }
        }
        edges.retain(|edge| !edge.skip);
        let edge_count = u32::try_from(edges.len()).unwrap_or(u32::MAX);

        // Linearization point: count the new edges as unmet in the unit's word, only while it is
        // still unknown/pending. After this CAS nothing can fail, so the change is all-or-nothing.
        let (first_seq, registered) = loop {
            let word = unit.word();
            let state = word.state();
            if !matches!(state, UnitState::Unknown | UnitState::Pending) {
                return Err(wrong_state(unit, Operation::Want, state));
            }
            if u64::from(word.unmet()) + u64::from(edge_count) > u64::from(MAX_UNMET) {
                return Err(too_many(&unit.name));
            }
            let registering = state == UnitState::Unknown;
            let count = u64::from(edge_count) + u64::from(registering);
            if count == 0 {
                return Ok(WantOutcome {
                    registered: false,
                    added: Vec::new(),
                });
            }
            let first = self.inner.events.reserve(count);
            let last = first + count - 1;
            let next = word
                .with_more_unmet(edge_count, last)
                .with_state(UnitState::Pending, last);
            match unit.transition(word, next) {
                Ok(()) => {
                    if registering {
                        unit.stamp(Stamp::Registered, at);
                    }
                    break (first, registering);
                }
                Err(_) => self.tombstones(first, count),
            }
        };

        let mut failed_dependencies = Vec::new();
        for edge in &mut edges {
            // Still absent: no edge can reach it while we hold the lock, so it closes no cycle.
            let target = match edge.target {
                Some(target) => target,
                None => {
                    let target = self.ensure_known(edge.name);
                    edge.resolve(unit, Some(target));
                    target
                }
            };
            let (ours, theirs) = edge.nodes.take().expect("edge nodes prepared");
            topo::restore_order(unit, target);
            // Our own dependencies list is never sealed.
            let _ = unit.dependencies.push_prepared(ours);
            if let Err(Sealed) = target.dependents.push_prepared(theirs) {
                // The dependency finished (and walked its dependents) before our edge landed: we
                // account for the edge ourselves.
                match target.state() {
                    UnitState::Completed => satisfy(unit),
                    _ => failed_dependencies.push(target),
                }
            }
        }
        drop(structure);

        let mut seq = first_seq;
        if registered {
            self.publish(seq, at, Record::Registered(unit));
            seq += 1;
        }
        let mut added = Vec::with_capacity(edges.len());
        for edge in &edges {
            let target = edge.target.expect("edge resolved");
            self.publish(seq, at, Record::DependencyAdded(unit, target));
            seq += 1;
            added.push(target.name.clone());
        }
        unit.notify();
        if registered {
            self.notify_dependents(unit);
        }
        for dependency in failed_dependencies {
            let (cause, cause_reason) = root_cause(dependency);
            if self
                .fail_unit(unit, propagated_failure(&cause, &cause_reason), false)
                .is_ok()
            {
                self.propagate(unit, &cause, &cause_reason);
            }
        }
        Ok(WantOutcome { registered, added })
    }

    /// Starts `unit` if it is ready, in one atomic step (registers it first if new).
    ///
    /// `Blocked` lists the unmet dependencies. Errors: the unit already started or finished, or it
    /// failed because a dependency failed ([`GraphError::DependencyFailed`]).
    pub fn try_start(&self, unit: &str) -> Result<StartAttempt, GraphError> {
        self.try_start_claimed(unit, None)
    }

    /// [`try_start`](Self::try_start), recording `claim` (an opaque string naming the starter, e.g.
    /// `<owner>#<invocation>`) on the unit and in its `Started` event.
    ///
    /// If the unit is already started *with the same claim*, this answers `Started` again and changes
    /// nothing (no event): a client whose connection dropped while its start was being answered can
    /// send the same start again and learn that it started. Every other already-started case is the
    /// usual error. `None` is an unclaimed start, which is never idempotent.
    pub fn try_start_claimed(
        &self,
        unit: &str,
        claim: Option<&str>,
    ) -> Result<StartAttempt, GraphError> {
        check_name(unit)?;
        let (unit, _) = self.ensure_registered(unit);
        self.try_start_unit(unit, claim)
    }

    pub(crate) fn try_start_unit(
        &self,
        unit: &Unit,
        claim: Option<&str>,
    ) -> Result<StartAttempt, GraphError> {
        // A claimed start holds the records lock across its CAS and writes the claim before letting
        // go, so whoever sees `started` and then locks finds it (module docs, "Start claims").
        let mut records = claim.map(|_| unit.records());
        loop {
            let word = unit.word();
            match word.state() {
                UnitState::Pending if word.ready() => {
                    let at = self.now();
                    let seq = self.inner.events.reserve(1);
                    match unit.transition(word, word.with_state(UnitState::Started, seq)) {
                        Ok(()) => {
                            if let Some(records) = records.as_mut() {
                                records.set_started_by(claim);
                            }
                            drop(records);
                            unit.stamp(Stamp::Started, at);
                            self.publish(seq, at, Record::Started(unit));
                            unit.notify();
                            self.notify_dependents(unit);
                            return Ok(StartAttempt::Started);
                        }
                        Err(_) => self.tombstones(seq, 1),
                    }
                }
                UnitState::Pending => {
                    return Ok(StartAttempt::Blocked {
                        unmet: unmet_dependencies(unit),
                    })
                }
                UnitState::Started
                    if records
                        .as_ref()
                        .is_some_and(|records| records.started_by() == claim) =>
                {
                    return Ok(StartAttempt::Started);
                }
                UnitState::Failed => {
                    drop(records); // `start_refused_by_failure` reads the failure record
                    return Err(start_refused_by_failure(unit));
                }
                UnitState::Unknown => {
                    // Only reachable for a unit handle taken before registration; register now.
                    self.promote(unit);
                }
                state => return Err(wrong_state(unit, Operation::Start, state)),
            }
        }
    }

    /// Marks a started unit completed and releases every dependent that became ready.
    pub fn complete(&self, unit: &str) -> Result<(), GraphError> {
        let unit = self.existing(unit)?;
        let (seq, at) = loop {
            let word = unit.word();
            let state = word.state();
            if state != UnitState::Started {
                return Err(wrong_state(unit, Operation::Complete, state));
            }
            let at = self.now();
            let seq = self.inner.events.reserve(1);
            match unit.transition(word, word.with_state(UnitState::Completed, seq)) {
                Ok(()) => break (seq, at),
                Err(_) => self.tombstones(seq, 1),
            }
        };
        unit.stamp(Stamp::Finished, at);
        self.publish(seq, at, Record::Completed(unit));
        unit.seal_dependents(satisfy);
        unit.notify();
        Ok(())
    }

    /// Fails `unit` (pending or started; registers it first if new) with `reason`, and fails every
    /// unit that depends on it, directly or transitively, and has not started, with reason
    /// `dependency <unit> failed`.
    pub fn fail(&self, unit: &str, reason: &str) -> Result<FailOutcome, GraphError> {
        check_name(unit)?;
        let (unit, _) = self.ensure_registered(unit);
        let failure = Failure {
            reason: reason.to_owned(),
            cause: None,
            cause_reason: None,
        };
        self.fail_unit(unit, failure, true)
            .map_err(|state| wrong_state(unit, Operation::Fail, state))?;
        Ok(FailOutcome {
            propagated: self.propagate(unit, &unit.name, reason),
        })
    }

    /// Fails (with propagation, like [`fail`](Self::fail)) every *started* unit whose start claim
    /// satisfies `matches`, with `reason`: how a front end fails what an exited starter left
    /// unfinished. The units are failed in name order (so the events come in a deterministic order)
    /// and returned in that order; the propagated failures are in the event stream. A unit that
    /// completes or fails meanwhile is left alone. `matches` is called without any graph lock held.
    /// Walks every unit: O(units).
    pub fn fail_started_by(&self, matches: impl Fn(&str) -> bool, reason: &str) -> Vec<UnitName> {
        let mut claimed: Vec<&Unit> = self
            .inner
            .units
            .all()
            .into_iter()
            .filter(|unit| unit.state() == UnitState::Started)
            .filter(|unit| unit.started_by().is_some_and(|claim| matches(&claim)))
            .collect();
        claimed.sort_by(|a, b| a.name.cmp(&b.name));
        let mut failed = Vec::with_capacity(claimed.len());
        for unit in claimed {
            let failure = Failure {
                reason: reason.to_owned(),
                cause: None,
                cause_reason: None,
            };
            if self.fail_unit(unit, failure, true).is_ok() {
                self.propagate(unit, &unit.name, reason);
                failed.push(unit.name.clone());
            }
        }
        failed
    }

    /// Whether every dependency of `unit` is completed.
    pub fn is_ready(&self, unit: &str) -> Result<bool, GraphError> {
        Ok(self.existing(unit)?.word().ready())
    }

    /// The state of `unit`, or `None` if no script ever mentioned it.
    pub fn state(&self, unit: &str) -> Option<UnitState> {
        self.inner.units.get(unit).map(Unit::state)
    }

    /// Everything known about `unit`.
    pub fn snapshot(&self, unit: &str) -> Result<UnitSnapshot, GraphError> {
        Ok(snapshot_of(self.existing(unit)?))
    }

    /// Snapshots of every unit the graph knows (unknown ones included), sorted by name.
    pub fn list(&self) -> Vec<UnitSnapshot> {
        let mut all: Vec<UnitSnapshot> = self
            .inner
            .units
            .all()
            .into_iter()
            .map(snapshot_of)
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// A feed of every event from now on.
    pub fn subscribe(&self) -> Subscription {
        Subscription::new(Arc::clone(&self.inner), None)
    }

    /// A feed starting at event `seq` (if it is still buffered; otherwise the first receive lags).
    pub fn subscribe_from(&self, seq: u64) -> Subscription {
        Subscription::new(Arc::clone(&self.inner), Some(seq))
    }

    /// The number the next event will get.
    pub fn next_event_seq(&self) -> u64 {
        self.inner.events.next_seq()
    }

    /// How many wait futures ([`start`](Self::start), [`wait_ready`](Self::wait_ready),
    /// [`wait_for`](Self::wait_for)) are asleep right now, waiting for a change.
    ///
    /// A future counts from its first sleep until it returns, times out or is dropped, so the number
    /// falls back to zero once every waiter is gone: a cheap leak check for front ends (such as the
    /// agent's `ping`). Reading it costs one atomic load; each waiter that sleeps pays one atomic add
    /// and one subtract, and no lock. Subscriptions waiting in `recv` are not counted.
    pub fn parked_waiters(&self) -> usize {
        self.inner.parked_waiters.load(Ordering::Relaxed)
    }

    // ---- internals shared with `waiting` and `restore` ----

    pub(crate) fn now(&self) -> Duration {
        self.inner.origin.elapsed()
    }

    /// The unit named `unit` (checked here), or `NoSuchUnit`.
    pub(crate) fn existing(&self, unit: &str) -> Result<&Unit, GraphError> {
        check_name(unit)?;
        self.inner
            .units
            .get(unit)
            .ok_or_else(|| GraphError::NoSuchUnit {
                unit: UnitName::from_valid(unit),
            })
    }

    /// A place in the topological order for a new unit: after every registered unit, or (for a unit
    /// first seen as a dependency, which has no dependencies of its own) before every unit. Unique.
    fn next_order(&self, registered: bool) -> i64 {
        if registered {
            self.inner
                .next_order
                .registered
                .fetch_add(1, Ordering::Relaxed)
        } else {
            self.inner
                .next_order
                .unknown
                .fetch_sub(1, Ordering::Relaxed)
        }
    }

    /// The unit named `name` (a valid name), registered (pending) if it was new or unknown; and
    /// whether this call registered it.
    pub(crate) fn ensure_registered(&self, name: &str) -> (&Unit, bool) {
        // One lookup for a name that exists; for a new one, the insertion (see `table`).
        let mut created = None;
        let at = std::cell::Cell::new(Duration::ZERO);
        let (unit, _) = self.inner.units.get_or_insert_with(
            name,
            || {
                // The clock is read outside the table's lock (reading it changes nothing, so a
                // losing candidate may read it too).
                at.set(self.now());
                candidate(name)
            },
            |unit| {
                // Registered before anyone else can see it: numbered, stamped and ordered here, by
                // the one call that creates the unit.
                let at = at.get();
                let seq = self.inner.events.reserve(1);
                unit.overwrite_word(StatusWord::new(UnitState::Pending, seq));
                unit.set_order(self.next_order(true));
                unit.stamp(Stamp::Registered, at);
                created = Some((seq, at));
            },
        );
        match created {
            // Nobody can wait on a name before it exists, and a new unit has no dependents.
            Some((seq, at)) => {
                self.publish(seq, at, Record::Registered(unit));
                (unit, true)
            }
            None => (unit, self.promote(unit)),
        }
    }

    /// The unit named `name` (a valid name), created as `unknown` if no script mentioned it yet (for
    /// waiting on it, or as a dependency).
    pub(crate) fn ensure_known(&self, name: &str) -> &Unit {
        self.create(name, false)
    }

    /// The unit `want` is about to register: created as `unknown` if absent, ordered like a
    /// registered unit.
    fn ensure_known_as_registered(&self, name: &str) -> &Unit {
        self.create(name, true)
    }

    /// The unit named `name`, created as `unknown` if absent, with a registered unit's place in the
    /// order if `registered_order`.
    fn create(&self, name: &str, registered_order: bool) -> &Unit {
        self.inner
            .units
            .get_or_insert_with(
                name,
                || candidate(name),
                |unit| unit.set_order(self.next_order(registered_order)),
            )
            .0
    }

    /// Creates a unit with a given word; only for `restore`, which checked the name is absent.
    pub(crate) fn create_restored(
        &self,
        name: &UnitName,
        word: StatusWord,
        registered_at: Option<Duration>,
    ) -> &Unit {
        let (unit, _) = self.inner.units.get_or_insert_with(
            name.as_str(),
            || Unit::new(name.clone(), word),
            |unit| unit.set_order(self.next_order(word.state() != UnitState::Unknown)),
        );
        if let Some(at) = registered_at {
            unit.stamp(Stamp::Registered, at);
        }
        unit
    }

    /// Unknown → pending. Returns whether this call did it.
    fn promote(&self, unit: &Unit) -> bool {
        loop {
            let word = unit.word();
            if word.state() != UnitState::Unknown {
                return false;
            }
            let at = self.now();
            let seq = self.inner.events.reserve(1);
            if unit
                .transition(word, word.with_state(UnitState::Pending, seq))
                .is_ok()
            {
                unit.stamp(Stamp::Registered, at);
                self.publish(seq, at, Record::Registered(unit));
                unit.notify();
                self.notify_dependents(unit);
                return true;
            }
            self.tombstones(seq, 1);
        }
    }

    /// Moves `unit` to failed if it is pending (or started, when `allow_started`), recording
    /// `failure`. Returns the state that refused it otherwise.
    fn fail_unit(
        &self,
        unit: &Unit,
        failure: Failure,
        allow_started: bool,
    ) -> Result<(), UnitState> {
        // Held across the CAS so that anyone who sees `failed` and then locks finds the record.
        let mut records = unit.records();
        let (seq, at) = loop {
            let word = unit.word();
            let state = word.state();
            let allowed = matches!(state, UnitState::Pending | UnitState::Unknown)
                || (allow_started && state == UnitState::Started);
            if !allowed {
                return Err(state);
            }
            let at = self.now();
            let seq = self.inner.events.reserve(1);
            match unit.transition(word, word.with_state(UnitState::Failed, seq)) {
                Ok(()) => break (seq, at),
                Err(_) => self.tombstones(seq, 1),
            }
        };
        records.set_failure(failure);
        drop(records);
        unit.stamp(Stamp::Finished, at);
        self.publish(seq, at, Record::Failed(unit));
        unit.notify();
        Ok(())
    }

    /// Fails, with the usual propagation (new events, to the sink as usual), every unit still
    /// pending on a failed dependency, and returns them. A live graph never leaves one (a failure
    /// propagates before `fail` returns, and a `want` onto a failed unit fails the wanter), so after a
    /// complete journal this finds nothing; after a journal cut between a failure and its propagated
    /// failures (see [`GraphBuilder::restore`]) it finishes what the crash interrupted. Failures are
    /// finished in the order they happened, so a unit pending on two failed units names the first.
    pub fn finish_interrupted_failures(&self) -> Vec<UnitName> {
        let mut failed: Vec<&Unit> = self
            .inner
            .units
            .all()
            .into_iter()
            .filter(|unit| unit.state() == UnitState::Failed)
            .collect();
        failed.sort_by_key(|unit| unit.word().seq());
        let mut finished = Vec::new();
        for failed in failed {
            let (cause, cause_reason) = root_cause(failed);
            let mut dependents = Vec::new();
            failed.for_each_dependent(|d| dependents.push(d));
            for dependent in dependents {
                let failure = propagated_failure(&cause, &cause_reason);
                if self.fail_unit(dependent, failure, false).is_ok() {
                    finished.push(dependent.name.clone());
                    finished.extend(self.propagate(dependent, &cause, &cause_reason));
                }
            }
        }
        finished
    }

    /// Fails every not-yet-started unit that depends on `root` (which just failed), transitively.
    fn propagate(&self, root: &Unit, cause: &UnitName, cause_reason: &str) -> Vec<UnitName> {
        let mut failed = Vec::new();
        let mut stack = vec![root];
        while let Some(unit) = stack.pop() {
            // Dependents that want `unit` after this seal fail themselves (see `want`).
            let mut dependents = Vec::new();
            unit.seal_dependents(|d| dependents.push(d));
            for dependent in dependents.into_iter().rev() {
                let failure = propagated_failure(cause, cause_reason);
                if self.fail_unit(dependent, failure, false).is_ok() {
                    failed.push(dependent.name.clone());
                    stack.push(dependent);
                } else {
                    dependent.notify();
                }
            }
        }
        failed
    }

    /// Wakes everyone waiting on a unit that depends on `unit` (its state changed).
    fn notify_dependents(&self, unit: &Unit) {
        unit.for_each_dependent(Unit::notify);
    }

    /// The one place events leave the graph: to the sink (if any), then into the ring.
    fn publish(&self, seq: u64, at: Duration, record: Record<'_>) {
        if let Some(sink) = &self.inner.sink {
            sink.record(seq, record.event(seq, at).as_ref());
        }
        self.inner.events.publish(seq, at, record);
    }

    /// Publishes tombstones for reserved numbers that will carry no event (to the sink too).
    fn tombstones(&self, first: u64, count: u64) {
        for seq in first..first + count {
            if let Some(sink) = &self.inner.sink {
                sink.record(seq, None);
            }
            self.inner
                .events
                .publish(seq, Duration::ZERO, Record::Tombstone);
        }
    }

    /// The structure lock, for `restore` (which reuses the topological-order code).
    pub(crate) fn structure(&self) -> MutexGuard<'_, ()> {
        lock(&self.inner.structure)
    }
}

/// One dependency named in a `want`: its unit once known, and the two list nodes that will link it
/// (allocated before the structure lock is taken).
struct Edge<'n, 'g> {
    name: &'n str,
    target: Option<&'g Unit>,
    /// For the unit's dependencies list and for the target's dependents list.
    nodes: Option<(Prepared<UnitRef>, Prepared<UnitRef>)>,
    /// Already an edge: nothing to do.
    skip: bool,
}

impl<'g> Edge<'_, 'g> {
    /// Records `target` (if found) and prepares the nodes linking it to `unit`.
    fn resolve(&mut self, unit: &'g Unit, target: Option<&'g Unit>) {
        if let Some(target) = target {
            self.target = Some(target);
            self.nodes = Some((
                EdgeList::prepare(UnitRef::new(target)),
                EdgeList::prepare(UnitRef::new(unit)),
            ));
        }
    }
}

/// A new unit for the table to insert (see `table`): `unknown`, with no event number and a placeholder
/// order, which the insertion's `init` replaces. Building one has no side effect, so a candidate that
/// loses a race to insert the same name is simply dropped.
fn candidate(name: &str) -> Unit {
    Unit::new(
        UnitName::from_valid(name),
        StatusWord::new(UnitState::Unknown, 0),
    )
}

/// One more dependency of `unit` completed.
fn satisfy(unit: &Unit) {
    unit.status.fetch_sub(ONE_UNMET, Ordering::SeqCst);
    unit.notify();
}

fn wrong_state(unit: &Unit, operation: Operation, state: UnitState) -> GraphError {
    GraphError::WrongState {
        unit: unit.name.clone(),
        operation,
        state,
    }
}

fn too_many(name: &UnitName) -> GraphError {
    GraphError::TooManyDependencies {
        unit: name.clone(),
        limit: MAX_UNMET,
    }
}

/// The error for starting a failed unit: names the failed dependency when there is one.
pub(crate) fn start_refused_by_failure(unit: &Unit) -> GraphError {
    match unit.failure() {
        Some(Failure {
            cause: Some(dependency),
            cause_reason,
            ..
        }) => GraphError::DependencyFailed {
            unit: unit.name.clone(),
            dependency,
            reason: cause_reason.unwrap_or_default(),
        },
        _ => wrong_state(unit, Operation::Start, UnitState::Failed),
    }
}

/// The unit whose own failure explains `unit`'s, and its reason.
pub(crate) fn root_cause(unit: &Unit) -> (UnitName, String) {
    match unit.failure() {
        Some(Failure {
            cause: Some(cause),
            cause_reason,
            ..
        }) => (cause, cause_reason.unwrap_or_default()),
        Some(failure) => (unit.name.clone(), failure.reason),
        None => (unit.name.clone(), String::new()),
    }
}

fn propagated_failure(cause: &UnitName, cause_reason: &str) -> Failure {
    Failure {
        reason: format!("dependency {cause} failed"),
        cause: Some(cause.clone()),
        cause_reason: Some(cause_reason.to_owned()),
    }
}

fn dependency_status(dependency: &Unit) -> DependencyStatus {
    let current = dependency.state();
    DependencyStatus {
        name: dependency.name.clone(),
        required: UnitState::Completed,
        current,
        satisfied: current == UnitState::Completed,
    }
}

pub(crate) fn unmet_dependencies(unit: &Unit) -> Vec<DependencyStatus> {
    let mut unmet: Vec<DependencyStatus> = unit
        .dependencies()
        .into_iter()
        .map(dependency_status)
        .filter(|d| !d.satisfied)
        .collect();
    unmet.shrink_to_fit();
    unmet
}

fn snapshot_of(unit: &Unit) -> UnitSnapshot {
    let word = unit.word();
    let state = word.state();
    // Read after the word: a unit seen started (or later) has its claim and failure written already.
    let (started_by, failure) = match state {
        UnitState::Unknown | UnitState::Pending => (None, None),
        _ => {
            let records = unit.records();
            let failure = if state == UnitState::Failed {
                records.failure().cloned()
            } else {
                None
            };
            (records.started_by().map(str::to_owned), failure)
        }
    };
    UnitSnapshot {
        name: unit.name.clone(),
        state,
        ready: word.ready(),
        dependencies: unit
            .dependencies()
            .into_iter()
            .map(dependency_status)
            .collect(),
        dependents: unit
            .dependents()
            .into_iter()
            .map(|d| d.name.clone())
            .collect(),
        registered_at: unit.stamped(Stamp::Registered),
        started_at: unit.stamped(Stamp::Started),
        finished_at: unit.stamped(Stamp::Finished),
        failure,
        started_by,
    }
}
