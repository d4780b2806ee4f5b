//! One unit's shared record: its name, its packed status word, its two edge lists, its notification,
//! its timestamps, and who started it and why it failed. Units are created by the unit table (see
//! `table`), which owns them until the graph is dropped, and then only ever changed through atomics
//! (status, timestamps), lock-free list pushes (edges), or the per-unit *records* mutex (the start
//! claim and the failure record; taken only by a claimed start, a failure, and readers of those two).
//! The transition rules live in `graph`; this module owns the record's layout and its small accessors
//! and must not decide any transition.
//!
//! Units are never freed while their graph lives (the table frees them all at once when it is
//! dropped), so everything inside the crate refers to a unit by a plain `&Unit` borrowed from the
//! graph, and edge lists hold [`UnitRef`] pointers: no reference counting on any path.

use crate::edges::EdgeList;
use crate::name::UnitName;
use crate::state::{StatusWord, UnitState};
use crate::sync::{lock, AtomicI64, AtomicU64, LazyNotify, Mutex, MutexGuard, Notify, Ordering};
use serde::{Deserialize, Serialize};
use std::ptr::NonNull;
use std::time::Duration;

/// Why a unit failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// What the unit's own `fail` said, or `dependency X failed`.
    pub reason: String,
    /// For a failure propagated from a dependency: the unit whose own failure started it.
    pub cause: Option<UnitName>,
    /// For a propagated failure: the reason that unit gave.
    pub cause_reason: Option<String>,
}

pub(crate) struct Unit {
    pub(crate) name: UnitName,
    pub(crate) status: AtomicU64,
    /// Position in the graph's topological order (dependencies before dependents). Set when the unit
    /// is created (before anyone else can see it) and afterwards read and written only under the
    /// structure lock; an atomic only so that `Unit` stays `Sync` without `unsafe`.
    order: AtomicI64,
    /// Units this one depends on.
    pub(crate) dependencies: EdgeList<UnitRef>,
    /// Units that depend on this one; sealed when this unit completes or fails.
    pub(crate) dependents: EdgeList<UnitRef>,
    /// Woken on every change of this unit's status, of its unmet count, and of any dependency's
    /// state. Allocated by the first waiter (see `sync::LazyNotify` and `sync_waiter` for why no
    /// wake-up is lost).
    changed: LazyNotify,
    /// Nanoseconds since the graph's origin, plus one; 0 means "not yet".
    registered_at: AtomicU64,
    started_at: AtomicU64,
    finished_at: AtomicU64,
    /// Allocated by the first claimed start or failure; `None` for most units.
    records: Mutex<Option<Box<Records>>>,
}

/// What a unit keeps besides its status word, written only by the thread that wins the transition
/// concerned, *while holding the records mutex across that transition's CAS* (see `graph`: whoever
/// sees the new state and then locks finds the record).
#[derive(Default)]
pub(crate) struct Records {
    /// The claim a start was made with (`Graph::start_claimed`); set at most once, by the start that
    /// won. `None` for a unit started without a claim (or not started).
    pub(crate) started_by: Option<Box<str>>,
    /// Why the unit failed; set once, by the failure that won.
    pub(crate) failure: Option<Failure>,
}

/// The records mutex, locked.
pub(crate) struct RecordsGuard<'a>(MutexGuard<'a, Option<Box<Records>>>);

impl RecordsGuard<'_> {
    pub(crate) fn started_by(&self) -> Option<&str> {
        self.0.as_ref().and_then(|r| r.started_by.as_deref())
    }

    pub(crate) fn failure(&self) -> Option<&Failure> {
        self.0.as_ref().and_then(|r| r.failure.as_ref())
    }

    pub(crate) fn set_started_by(&mut self, claim: Option<&str>) {
        if let Some(claim) = claim {
            self.0.get_or_insert_with(Default::default).started_by = Some(Box::from(claim));
        }
    }

    pub(crate) fn set_failure(&mut self, failure: Failure) {
        self.0.get_or_insert_with(Default::default).failure = Some(failure);
    }
}

/// Which timestamp to stamp.
#[derive(Clone, Copy)]
pub(crate) enum Stamp {
    Registered,
    Started,
    Finished,
}

/// A pointer to a unit, as edge lists and event slots hold it.
///
/// Every unit of a graph is owned by the graph's unit table and freed only when that table is
/// dropped, all units at once; an edge only ever links two units of the same graph. So a `UnitRef`
/// taken from a unit of a graph is valid for as long as any unit of that graph is borrowed, which is
/// what [`get`](Self::get) asks for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct UnitRef(NonNull<Unit>);

// SAFETY: a `UnitRef` is a shared pointer to a `Unit`, which is `Sync`; whoever dereferences it
// proves the unit is alive (see `get`).
unsafe impl Send for UnitRef {}
// SAFETY: as for `Send`.
unsafe impl Sync for UnitRef {}

impl UnitRef {
    pub(crate) fn new(unit: &Unit) -> Self {
        Self(NonNull::from(unit))
    }

    /// The unit, borrowed for as long as `anchor`, a unit of the same graph, is.
    pub(crate) fn get(self, anchor: &Unit) -> &Unit {
        let _ = anchor;
        // SAFETY: see the type's docs: `anchor` is borrowed from the graph's unit table for 'a, so
        // the table, and with it every unit of the graph, this one included, lives for 'a.
        unsafe { self.0.as_ref() }
    }

    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn as_ptr(self) -> *const Unit {
        self.0.as_ptr()
    }

    pub(crate) fn is(self, unit: &Unit) -> bool {
        std::ptr::eq(self.0.as_ptr(), unit)
    }
}

impl Unit {
    /// A unit with no edges and order 0 (the table's `init` gives a created unit its order).
    pub(crate) fn new(name: UnitName, word: StatusWord) -> Self {
        Self {
            name,
            status: AtomicU64::new(word.0),
            order: AtomicI64::new(0),
            dependencies: EdgeList::new(),
            dependents: EdgeList::new(),
            changed: LazyNotify::new(),
            registered_at: AtomicU64::new(0),
            started_at: AtomicU64::new(0),
            finished_at: AtomicU64::new(0),
            records: Mutex::new(None),
        }
    }

    pub(crate) fn word(&self) -> StatusWord {
        StatusWord(self.status.load(Ordering::SeqCst))
    }

    pub(crate) fn state(&self) -> UnitState {
        self.word().state()
    }

    /// Compare-and-swap of the whole status word: the linearization point of every transition.
    pub(crate) fn transition(&self, from: StatusWord, to: StatusWord) -> Result<(), StatusWord> {
        self.status
            .compare_exchange(from.0, to.0, Ordering::SeqCst, Ordering::SeqCst)
            .map(drop)
            .map_err(StatusWord)
    }

    /// The notification waiters of this unit park on (installed by the first waiter).
    pub(crate) fn changed(&self) -> &Notify {
        self.changed.get_or_install()
    }

    /// Wakes this unit's waiters, if it ever had any. Call after the change, which must be a
    /// read-modify-write of a status word (see `sync::LazyNotify`).
    pub(crate) fn notify(&self) {
        self.changed.notify_waiters();
    }

    /// A waiter's half of the no-lost-wake-up protocol (see `sync::LazyNotify`): after enabling its
    /// `Notified`, a waiter calls this on every unit whose status word its condition reads, before
    /// reading them. A read-modify-write that changes nothing (a CAS that expects the old value still
    /// succeeds), so notifiers see the waiter's installed notification.
    pub(crate) fn sync_waiter(&self) {
        self.status.fetch_add(0, Ordering::AcqRel);
    }

    pub(crate) fn stamp(&self, which: Stamp, since_origin: Duration) {
        // Stored plus one (0 means "not yet"); the largest time saturates one below the top.
        let nanos = u64::try_from(since_origin.as_nanos())
            .unwrap_or(u64::MAX)
            .min(u64::MAX - 1)
            + 1;
        self.slot(which).store(nanos, Ordering::Release);
    }

    pub(crate) fn stamped(&self, which: Stamp) -> Option<Duration> {
        match self.slot(which).load(Ordering::Acquire) {
            0 => None,
            nanos => Some(Duration::from_nanos(nanos - 1)),
        }
    }

    fn slot(&self, which: Stamp) -> &AtomicU64 {
        match which {
            Stamp::Registered => &self.registered_at,
            Stamp::Started => &self.started_at,
            Stamp::Finished => &self.finished_at,
        }
    }

    /// Locks the start claim and failure record. A failing thread, and a thread starting with a claim,
    /// holds this lock across its status CAS, so a reader that saw `failed` (or `started`) and then
    /// takes the lock always finds the record the winner wrote.
    pub(crate) fn records(&self) -> RecordsGuard<'_> {
        RecordsGuard(lock(&self.records))
    }

    pub(crate) fn failure(&self) -> Option<Failure> {
        self.records().failure().cloned()
    }

    pub(crate) fn started_by(&self) -> Option<String> {
        self.records().started_by().map(str::to_owned)
    }

    /// Calls `f` on every dependency, newest first.
    pub(crate) fn for_each_dependency<'a>(&'a self, mut f: impl FnMut(&'a Unit)) {
        self.dependencies.for_each(|d| f(d.get(self)));
    }

    /// Calls `f` on every dependent, newest first.
    pub(crate) fn for_each_dependent<'a>(&'a self, mut f: impl FnMut(&'a Unit)) {
        self.dependents.for_each(|d| f(d.get(self)));
    }

    /// Seals the dependents list and calls `f` on every dependent pushed before the seal.
    pub(crate) fn seal_dependents<'a>(&'a self, mut f: impl FnMut(&'a Unit)) {
        self.dependents.seal(|d| f(d.get(self)));
    }

    /// The dependencies, oldest first.
    pub(crate) fn dependencies(&self) -> Vec<&Unit> {
        let mut all: Vec<&Unit> = Vec::new();
        self.for_each_dependency(|d| all.push(d));
        all.reverse();
        all
    }

    /// The dependents, oldest first.
    pub(crate) fn dependents(&self) -> Vec<&Unit> {
        let mut all: Vec<&Unit> = Vec::new();
        self.for_each_dependent(|d| all.push(d));
        all.reverse();
        all
    }

    /// Whether `dependency` is a dependency of this unit already.
    pub(crate) fn depends_on(&self, dependency: &Unit) -> bool {
        self.dependencies.any(|d| d.is(dependency))
    }

    /// Replaces the status word without a CAS. Only for a unit no other thread can see: in `restore`,
    /// while the graph is not shared yet, and in the table's `init` of a unit being created.
    pub(crate) fn overwrite_word(&self, word: StatusWord) {
        self.status.store(word.0, Ordering::SeqCst);
    }

    pub(crate) fn order(&self) -> i64 {
        self.order.load(Ordering::Relaxed)
    }

    pub(crate) fn set_order(&self, order: i64) {
        self.order.store(order, Ordering::Relaxed)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// The record's size is part of W4's bytes per unit; keep an eye on it.
    #[test]
    fn unit_record_stays_small() {
        eprintln!("size_of::<Unit>() = {}", std::mem::size_of::<Unit>());
        assert!(
            std::mem::size_of::<Unit>() <= 96,
            "{}",
            std::mem::size_of::<Unit>()
        );
    }
}
