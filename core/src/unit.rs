//! One unit's shared record: its name, its packed status word, its two edge lists, its notification,
//! its timestamps, and who started it and why it failed. Units are created under the structure lock
//! and then only ever changed through atomics (status, timestamps), lock-free list pushes (edges), or
//! the per-unit *records* mutex (the start claim and the failure record; taken only by a claimed
//! start, a failure, and readers of those two). The transition rules live in `graph`; this module owns
//! the record's layout and its small accessors and must not decide any transition.

use crate::edges::EdgeList;
use crate::name::UnitName;
use crate::state::{StatusWord, UnitState};
use crate::sync::{lock, Arc, AtomicI64, AtomicU64, Mutex, Notify, Ordering};
use serde::{Deserialize, Serialize};
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
    /// Position in the graph's topological order (dependencies before dependents). Read and written
    /// only under the structure lock; an atomic only so that `Unit` stays `Sync` without `unsafe`.
    pub(crate) order: AtomicI64,
    /// Units this one depends on.
    pub(crate) dependencies: EdgeList<Arc<Unit>>,
    /// Units that depend on this one; sealed when this unit completes or fails.
    pub(crate) dependents: EdgeList<Arc<Unit>>,
    /// Woken on every change of this unit's status, of its unmet count reaching zero, and of any
    /// dependency's state.
    pub(crate) changed: Notify,
    /// Nanoseconds since the graph's origin, plus one; 0 means "not yet".
    registered_at: AtomicU64,
    started_at: AtomicU64,
    finished_at: AtomicU64,
    records: Mutex<Records>,
}

/// What a unit keeps besides its status word, written only by the thread that wins the transition
/// concerned, *while holding this mutex across that transition's CAS* (see `graph`: whoever sees the
/// new state and then locks finds the record).
#[derive(Default)]
pub(crate) struct Records {
    /// The claim a start was made with (`Graph::start_claimed`); set at most once, by the start that
    /// won. `None` for a unit started without a claim (or not started).
    pub(crate) started_by: Option<std::sync::Arc<str>>,
    /// Why the unit failed; set once, by the failure that won.
    pub(crate) failure: Option<Box<Failure>>,
}

/// Which timestamp to stamp.
#[derive(Clone, Copy)]
pub(crate) enum Stamp {
    Registered,
    Started,
    Finished,
}

impl Unit {
    pub(crate) fn new(name: UnitName, word: StatusWord, order: i64) -> Self {
        Self {
            name,
            status: AtomicU64::new(word.0),
            order: AtomicI64::new(order),
            dependencies: EdgeList::new(),
            dependents: EdgeList::new(),
            changed: Notify::new(),
            registered_at: AtomicU64::new(0),
            started_at: AtomicU64::new(0),
            finished_at: AtomicU64::new(0),
            records: Mutex::new(Records::default()),
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

    pub(crate) fn stamp(&self, which: Stamp, since_origin: Duration) {
        let nanos = u64::try_from(since_origin.as_nanos()).unwrap_or(u64::MAX - 1) + 1;
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
    pub(crate) fn records(&self) -> crate::sync::MutexGuard<'_, Records> {
        lock(&self.records)
    }

    pub(crate) fn failure(&self) -> Option<Failure> {
        self.records().failure.as_deref().cloned()
    }

    pub(crate) fn started_by(&self) -> Option<std::sync::Arc<str>> {
        self.records().started_by.clone()
    }

    /// Replaces the status word without a CAS. Only for `restore`, while the graph is not shared yet.
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
