//! Async waiting on the graph: start-when-ready, wait-until-ready, and wait-for-a-state.
//!
//! Every wait follows the same lost-wake-up-free pattern on the unit's `Notify`: get the unit's
//! notification (installing it if this is the unit's first waiter), create the `Notified` future and
//! *enable* it (register interest), *sync* with every status word the condition reads (a no-op
//! read-modify-write, `Unit::sync_waiter`: the unit's own, and for `start` and `wait_ready` its
//! dependencies'), then check the condition, and only then sleep. Any change after the check
//! notifies the enabled future, so no change can fall between the check and the sleep; the notifier
//! finds the notification installed because its change is a read-modify-write of a word the waiter
//! synced with, and it loads the pointer afterwards (see `sync::LazyNotify` for the argument).
//! Changes that signal a unit: its own transitions, its unmet count dropping, edges added to it, and
//! any dependency's transition (so a blocked `start` can report progress).
//!
//! Dropping a wait future drops its `Notified`, which unlinks it from the unit's waiter list: a
//! cancelled or timed-out waiter leaves nothing behind. Each wait future that has to sleep holds a
//! [`ParkedWaiter`] guard from its first sleep until it ends or is dropped, so
//! [`Graph::parked_waiters`] counts the sleepers and returns to zero when they are gone (one atomic
//! add and one subtract per wait, no lock). Deadlines use `tokio::time`, so they need a tokio runtime
//! with the time driver. This module never changes the graph except through `try_start`, and never
//! polls.

use crate::error::{check_name, GraphError};
use crate::graph::{
    root_cause, start_refused_by_failure, unmet_dependencies, DependencyStatus, Graph,
};
use crate::state::UnitState;
use crate::sync::{AtomicUsize, Ordering};
use crate::unit::{Failure, Unit};
use crate::StartAttempt;
use std::future::Future;
use std::time::Instant;

/// How a blocking `start` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartOutcome {
    /// The unit is started.
    Started,
    /// The deadline passed first; these dependencies were still unmet.
    TimedOut {
        /// Unmet dependencies at the deadline.
        unmet: Vec<DependencyStatus>,
    },
}

/// How waiting for readiness ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyOutcome {
    /// Every dependency completed.
    Ready,
    /// A dependency failed, so the unit never will be ready.
    DependencyFailed {
        /// The unit whose own failure caused it.
        dependency: crate::UnitName,
        /// Its reason.
        reason: String,
    },
    /// The deadline passed first.
    TimedOut {
        /// Unmet dependencies at the deadline.
        unmet: Vec<DependencyStatus>,
    },
}

/// What `wait_for` waits until.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitTarget {
    /// Started (or already completed).
    Started,
    /// Completed.
    Completed,
}

/// How waiting for another unit ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitOutcome {
    /// The unit reached the target; its state now.
    Reached(UnitState),
    /// The unit failed.
    Failed(Failure),
    /// The deadline passed first; the unit's state then.
    TimedOut(UnitState),
}

impl Graph {
    /// Waits until `unit` is ready and starts it, atomically with the readiness check (registers it
    /// first if new). `on_blocked` is called with the unmet dependencies when the unit first has to
    /// wait and again whenever that list or any of its states changes. Readiness is checked before the
    /// deadline, so a unit that is ready starts even if `deadline` has already passed.
    pub async fn start(
        &self,
        unit: &str,
        deadline: Option<Instant>,
        on_blocked: impl FnMut(&[DependencyStatus]),
    ) -> Result<StartOutcome, GraphError> {
        self.start_claimed(unit, None, deadline, on_blocked).await
    }

    /// [`start`](Self::start), recording `claim` on the unit as
    /// [`try_start_claimed`](Self::try_start_claimed) does: the same claim on an already started unit
    /// answers `Started` at once, without a new event.
    pub async fn start_claimed(
        &self,
        unit: &str,
        claim: Option<&str>,
        deadline: Option<Instant>,
        mut on_blocked: impl FnMut(&[DependencyStatus]),
    ) -> Result<StartOutcome, GraphError> {
        check_name(unit)?;
        let (unit, _) = self.ensure_registered(unit);
        let mut last_reported: Option<Vec<DependencyStatus>> = None;
        let waiting = async {
            let mut parked = None;
            loop {
                let notified = unit.changed().notified();
                let mut notified = std::pin::pin!(notified);
                notified.as_mut().enable();
                sync_with_unit_and_dependencies(unit);
                match self.try_start_unit(unit, claim)? {
                    StartAttempt::Started => return Ok(()),
                    StartAttempt::Blocked { unmet } => {
                        // The list is built from the dependencies' states, the readiness from the
                        // unmet count, which a completing dependency lowers just after its state
                        // changes: in that instant the list is empty. The decrement is coming and
                        // will wake us (we are enabled), so there is nothing to report yet.
                        if !unmet.is_empty() && last_reported.as_ref() != Some(&unmet) {
                            on_blocked(&unmet);
                            last_reported = Some(unmet);
                        }
                    }
                }
                parked.get_or_insert_with(|| ParkedWaiter::new(self));
                notified.await;
            }
        };
        match within(deadline, waiting).await {
            Some(result) => result.map(|()| StartOutcome::Started),
            None => Ok(StartOutcome::TimedOut {
                unmet: unmet_dependencies(unit),
            }),
        }
    }

    /// Waits until every dependency of `unit` is completed, without starting it.
    pub async fn wait_ready(
        &self,
        unit: &str,
        deadline: Option<Instant>,
    ) -> Result<ReadyOutcome, GraphError> {
        let unit = self.existing(unit)?;
        let waiting = async {
            let mut parked = None;
            loop {
                let notified = unit.changed().notified();
                let mut notified = std::pin::pin!(notified);
                notified.as_mut().enable();
                sync_with_unit_and_dependencies(unit);
                if let Some(outcome) = readiness(unit) {
                    return outcome;
                }
                parked.get_or_insert_with(|| ParkedWaiter::new(self));
                notified.await;
            }
        };
        Ok(within(deadline, waiting)
            .await
            .unwrap_or_else(|| ReadyOutcome::TimedOut {
                unmet: unmet_dependencies(unit),
            }))
    }

    /// Waits until `unit` reaches `target` or fails. A name nobody mentioned yet is noted as
    /// `unknown`, so a waiter may come before the script that registers it.
    pub async fn wait_for(
        &self,
        unit: &str,
        target: WaitTarget,
        deadline: Option<Instant>,
    ) -> Result<WaitOutcome, GraphError> {
        check_name(unit)?;
        let unit = self.ensure_known(unit);
        let waiting = async {
            let mut parked = None;
            loop {
                let notified = unit.changed().notified();
                let mut notified = std::pin::pin!(notified);
                notified.as_mut().enable();
                unit.sync_waiter();
                if let Some(outcome) = reached(unit, target) {
                    return outcome;
                }
                parked.get_or_insert_with(|| ParkedWaiter::new(self));
                notified.await;
            }
        };
        Ok(within(deadline, waiting)
            .await
            .unwrap_or_else(|| WaitOutcome::TimedOut(unit.state())))
    }
}

/// Counts one sleeping wait future in [`Graph::parked_waiters`] for as long as it exists.
struct ParkedWaiter<'a>(&'a AtomicUsize);

impl<'a> ParkedWaiter<'a> {
    fn new(graph: &'a Graph) -> Self {
        let count = &graph.inner.parked_waiters;
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for ParkedWaiter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The waiter's sync (module docs) for a condition on `unit`'s word and its dependencies' states.
fn sync_with_unit_and_dependencies(unit: &Unit) {
    unit.sync_waiter();
    unit.for_each_dependency(Unit::sync_waiter);
}

/// `Ready` once no dependency is unmet; `DependencyFailed` once one of them failed (so the unit never
/// will be ready), naming the unit whose own failure caused it.
fn readiness(unit: &Unit) -> Option<ReadyOutcome> {
    let word = unit.word();
    if word.ready() {
        return Some(ReadyOutcome::Ready);
    }
    if word.state() == UnitState::Failed {
        if let GraphError::DependencyFailed {
            dependency, reason, ..
        } = start_refused_by_failure(unit)
        {
            return Some(ReadyOutcome::DependencyFailed { dependency, reason });
        }
    }
    // A unit that failed by itself is not failed again when a dependency fails, and a pending unit
    // is failed a moment after its dependency: look at the dependencies themselves.
    let mut failed = None;
    unit.for_each_dependency(|dependency| {
        if dependency.state() == UnitState::Failed {
            failed = Some(dependency);
        }
    });
    failed.map(|dependency| {
        let (dependency, reason) = root_cause(dependency);
        ReadyOutcome::DependencyFailed { dependency, reason }
    })
}

fn reached(unit: &Unit, target: WaitTarget) -> Option<WaitOutcome> {
    match (unit.state(), target) {
        (UnitState::Failed, _) => Some(WaitOutcome::Failed(unit.failure().unwrap_or(Failure {
            reason: String::new(),
            cause: None,
            cause_reason: None,
        }))),
        (state @ (UnitState::Started | UnitState::Completed), WaitTarget::Started)
        | (state @ UnitState::Completed, WaitTarget::Completed) => {
            Some(WaitOutcome::Reached(state))
        }
        _ => None,
    }
}

/// Runs `future` to completion, or until `deadline`; `None` if the deadline came first.
async fn within<F: Future>(deadline: Option<Instant>, future: F) -> Option<F::Output> {
    match deadline {
        None => Some(future.await),
        Some(deadline) => tokio::time::timeout_at(deadline.into(), future).await.ok(),
    }
}
