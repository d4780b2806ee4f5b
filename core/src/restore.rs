//! Rebuilding a graph from a journal: every event applied directly to the state it describes, with
//! its original sequence number and timestamp, and checked against that state first.
//!
//! A journal holds every event a graph published, so replaying it needs no propagation (each
//! propagated failure is its own `Failed` event) and must not publish to the sink (the events are in
//! the journal already). Replay runs on a graph nobody else holds yet, so it overwrites status words
//! without CAS and takes the structure lock only to reuse the normal insertion and topological-order
//! code: a unit gets the same edge lists and timestamps as in the graph that wrote the journal, and a
//! valid topological order (the same one, unless registrations raced in the live graph). An event that does not fit the state it meets (starting a unit that is not ready, an
//! edge that would close a cycle, a number not above the last, ...) is a [`RestoreError`]: the caller
//! refuses to serve rather than serve a graph that differs from the journaled one. This module must
//! not be reachable from any operation on a shared graph.

use crate::error::Operation;
use crate::events::{Event, EventKind, Record};
use crate::graph::Graph;
use crate::name::UnitName;
use crate::state::{StatusWord, UnitState, MAX_SEQ, MAX_UNMET, ONE_UNMET};
use crate::sync::Ordering;
use crate::topo;
use crate::unit::{Failure, Stamp, Unit, UnitRef};
use std::collections::VecDeque;
use std::fmt;

/// A journal event that cannot be replayed onto the graph rebuilt so far.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("journal event {seq} does not fit the state rebuilt from the events before it: {problem}")]
pub struct RestoreError {
    /// The event's sequence number.
    pub seq: u64,
    /// What is wrong with it.
    pub problem: RestoreProblem,
}

/// Why a journal event cannot be replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreProblem {
    /// Its number is not greater than the previous event's.
    SeqNotIncreasing {
        /// The previous event's number.
        previous: u64,
    },
    /// Its number is beyond what a graph can count to (2^40 - 1).
    SeqTooLarge,
    /// It names a unit no earlier event registered or depended on.
    NoSuchUnit {
        /// The unit.
        unit: UnitName,
    },
    /// `Registered` for a unit that is already registered.
    AlreadyRegistered {
        /// The unit.
        unit: UnitName,
        /// Its state.
        state: UnitState,
    },
    /// A dependency, start, completion or failure of a unit in a state that does not allow it.
    WrongState {
        /// The unit.
        unit: UnitName,
        /// What the event did.
        operation: Operation,
        /// The unit's state at that point.
        state: UnitState,
    },
    /// A unit depending on itself.
    SelfDependency {
        /// The unit.
        unit: UnitName,
    },
    /// The same edge twice.
    DuplicateEdge {
        /// The waiting unit.
        unit: UnitName,
        /// Its dependency.
        dependency: UnitName,
    },
    /// An edge that closes a cycle; `path` starts and ends with the same unit.
    Cycle {
        /// `a, b, c, a` for `a -> b -> c -> a`.
        path: Vec<UnitName>,
    },
    /// More unmet dependencies than a unit can count.
    TooManyDependencies {
        /// The unit.
        unit: UnitName,
    },
    /// `Started` for a pending unit with dependencies that have not completed.
    NotReady {
        /// The unit.
        unit: UnitName,
        /// How many of its dependencies had not completed.
        unmet: u32,
    },
    /// A propagated `Failed` whose cause has not failed.
    CauseNotFailed {
        /// The unit.
        unit: UnitName,
        /// The cause it names.
        cause: UnitName,
    },
}

impl fmt::Display for RestoreProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SeqNotIncreasing { previous } => {
                write!(
                    f,
                    "its number is not greater than the previous event's ({previous})"
                )
            }
            Self::SeqTooLarge => write!(
                f,
                "its number is {MAX_SEQ} or more, beyond what a graph counts"
            ),
            Self::NoSuchUnit { unit } => write!(f, "no earlier event mentions `{unit}`"),
            Self::AlreadyRegistered { unit, state } => {
                write!(f, "`{unit}` is registered again while {state}")
            }
            Self::WrongState {
                unit,
                operation,
                state,
            } => {
                let what = match operation {
                    Operation::Want => "add a dependency to",
                    Operation::Start => "start",
                    Operation::Complete => "complete",
                    Operation::Fail => "fail",
                };
                write!(f, "it would {what} `{unit}`, which is {state}")
            }
            Self::SelfDependency { unit } => write!(f, "`{unit}` would depend on itself"),
            Self::DuplicateEdge { unit, dependency } => {
                write!(f, "`{unit}` already depends on `{dependency}`")
            }
            Self::Cycle { path } => {
                f.write_str("the edge closes a cycle: ")?;
                for (i, name) in path.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" -> ")?;
                    }
                    write!(f, "{name}")?;
                }
                Ok(())
            }
            Self::TooManyDependencies { unit } => write!(
                f,
                "`{unit}` would wait for more than {MAX_UNMET} dependencies at once"
            ),
            Self::NotReady { unit, unmet } => write!(
                f,
                "it starts `{unit}` while {unmet} of its dependencies have not completed"
            ),
            Self::CauseNotFailed { unit, cause } => write!(
                f,
                "`{unit}` fails because `{cause}` failed, but `{cause}` has not failed"
            ),
        }
    }
}

/// Applies `events` to the empty, not yet shared `graph`, then fills its event ring.
pub(crate) fn replay(
    graph: &Graph,
    events: impl IntoIterator<Item = Event>,
) -> Result<(), RestoreError> {
    let structure = graph.structure();
    let capacity = graph.inner.events.capacity();
    let mut window: VecDeque<Event> = VecDeque::new();
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
        apply(graph, &event).map_err(refuse)?;
        last = event.seq;
        if window.len() == capacity {
            window.pop_front();
        }
        window.push_back(event);
    }
    drop(structure);
    // Every unit a windowed event names exists now, and its claim and failure are the ones the
    // event carried (set once, by that very event): the ring's records rebuild the same events.
    let units = &graph.inner.units;
    let unit = |name: &UnitName| units.get(name.as_str()).expect("restored unit");
    let records = window.iter().map(|event| {
        let record = match &event.kind {
            EventKind::Registered { unit: name } => Record::Registered(unit(name)),
            EventKind::DependencyAdded {
                unit: name,
                dependency,
            } => Record::DependencyAdded(unit(name), unit(dependency)),
            EventKind::Started { unit: name, .. } => Record::Started(unit(name)),
            EventKind::Completed { unit: name } => Record::Completed(unit(name)),
            EventKind::Failed { unit: name, .. } => Record::Failed(unit(name)),
        };
        (event.seq, event.at, record)
    });
    graph.inner.events.resume(last + 1, records);
    Ok(())
}

fn apply(graph: &Graph, event: &Event) -> Result<(), RestoreProblem> {
    let (seq, at) = (event.seq, event.at);
    match &event.kind {
        EventKind::Registered { unit } => match graph.inner.units.get(unit.as_str()) {
            None => {
                let word = StatusWord::new(UnitState::Pending, seq);
                graph.create_restored(unit, word, Some(at));
            }
            Some(record) => {
                let word = record.word();
                if word.state() != UnitState::Unknown {
                    return Err(RestoreProblem::AlreadyRegistered {
                        unit: unit.clone(),
                        state: word.state(),
                    });
                }
                record.overwrite_word(word.with_state(UnitState::Pending, seq));
                record.stamp(Stamp::Registered, at);
            }
        },
        EventKind::DependencyAdded { unit, dependency } => {
            let record = expect_state(graph, unit, Operation::Want, |s| s == UnitState::Pending)?;
            if dependency == unit {
                return Err(RestoreProblem::SelfDependency { unit: unit.clone() });
            }
            let target = match graph.inner.units.get(dependency.as_str()) {
                Some(target) => {
                    if record.depends_on(target) {
                        return Err(RestoreProblem::DuplicateEdge {
                            unit: unit.clone(),
                            dependency: dependency.clone(),
                        });
                    }
                    if let Some(path) = topo::find_cycle(record, target) {
                        return Err(RestoreProblem::Cycle { path });
                    }
                    target
                }
                None => {
                    graph.create_restored(dependency, StatusWord::new(UnitState::Unknown, 0), None)
                }
            };
            let word = record.word();
            // As in `want`: an edge counts as unmet unless its dependency completed already; a
            // dependency that completes later lowers the count when it seals (below).
            let next = if target.state() == UnitState::Completed {
                word.with_state(UnitState::Pending, seq)
            } else if word.unmet() >= MAX_UNMET {
                return Err(RestoreProblem::TooManyDependencies { unit: unit.clone() });
            } else {
                word.with_more_unmet(1, seq)
            };
            topo::restore_order(record, target);
            // A finished dependency's list is sealed; the edge is linked all the same.
            let _ = record.dependencies.push(UnitRef::new(target));
            let _ = target.dependents.push(UnitRef::new(record));
            record.overwrite_word(next);
        }
        EventKind::Started { unit, by } => {
            let record = expect_state(graph, unit, Operation::Start, |s| s == UnitState::Pending)?;
            let word = record.word();
            if !word.ready() {
                return Err(RestoreProblem::NotReady {
                    unit: unit.clone(),
                    unmet: word.unmet(),
                });
            }
            record.records().set_started_by(by.as_deref());
            record.overwrite_word(word.with_state(UnitState::Started, seq));
            record.stamp(Stamp::Started, at);
        }
        EventKind::Completed { unit } => {
            let record = expect_state(graph, unit, Operation::Complete, |s| {
                s == UnitState::Started
            })?;
            record.overwrite_word(record.word().with_state(UnitState::Completed, seq));
            record.stamp(Stamp::Finished, at);
            // Every edge pushed before this seal was counted as unmet (its dependency had not
            // completed), so each decrement has a count to take.
            record.seal_dependents(|dependent: &Unit| {
                dependent.status.fetch_sub(ONE_UNMET, Ordering::SeqCst);
            });
        }
        EventKind::Failed {
            unit,
            reason,
            cause,
        } => {
            // A unit's own failure may end a started unit; a propagated one never does.
            let record = expect_state(graph, unit, Operation::Fail, |s| match s {
                UnitState::Unknown | UnitState::Pending => true,
                UnitState::Started => cause.is_none(),
                UnitState::Completed | UnitState::Failed => false,
            })?;
            let cause_reason = match cause {
                None => None,
                Some(cause) => {
                    let failed = graph
                        .inner
                        .units
                        .get(cause.as_str())
                        .filter(|c| c.state() == UnitState::Failed)
                        .and_then(|c| c.failure());
                    match failed {
                        Some(failure) => Some(failure.reason),
                        None => {
                            return Err(RestoreProblem::CauseNotFailed {
                                unit: unit.clone(),
                                cause: cause.clone(),
                            })
                        }
                    }
                }
            };
            record.records().set_failure(Failure {
                reason: reason.clone(),
                cause: cause.clone(),
                cause_reason,
            });
            record.overwrite_word(record.word().with_state(UnitState::Failed, seq));
            record.stamp(Stamp::Finished, at);
            // Sealed like a live failure, so a later edge onto it takes the "finished" path.
            record.seal_dependents(|_| {});
        }
    }
    Ok(())
}

/// The unit named `name`, if its state passes `allowed`.
fn expect_state<'g>(
    graph: &'g Graph,
    name: &UnitName,
    operation: Operation,
    allowed: impl Fn(UnitState) -> bool,
) -> Result<&'g Unit, RestoreProblem> {
    let unit = graph
        .inner
        .units
        .get(name.as_str())
        .ok_or_else(|| RestoreProblem::NoSuchUnit { unit: name.clone() })?;
    let state = unit.state();
    if allowed(state) {
        Ok(unit)
    } else {
        Err(RestoreProblem::WrongState {
            unit: name.clone(),
            operation,
            state,
        })
    }
}
