//! The one error type of the graph. Each variant's message is the sentence a user should read: it
//! names the unit, the rule or state involved, and what to do instead. Front ends render it once and
//! map it to an exit code by variant; they never rephrase it.

use crate::name::{NameRule, UnitName};
use crate::state::UnitState;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The operation that was refused, so the message can say what to do instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Adding dependencies.
    Want,
    /// Starting.
    Start,
    /// Completing.
    Complete,
    /// Failing.
    Fail,
}

/// Why the graph refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum GraphError {
    /// A name broke a naming rule.
    #[error("invalid unit name {name:?}: {rule}")]
    InvalidName {
        /// The refused name, as given.
        name: String,
        /// The rule it broke.
        rule: NameRule,
    },
    /// `want a a`.
    #[error("`{unit}` cannot depend on itself")]
    SelfDependency {
        /// The unit.
        unit: UnitName,
    },
    /// The edge would close a cycle; `path` starts and ends with the same unit.
    #[error("cycle: {}", CyclePath(path))]
    Cycle {
        /// `a, b, c, a` for `a -> b -> c -> a`.
        path: Vec<UnitName>,
    },
    /// The name was never mentioned by any script.
    #[error("no such unit: `{unit}`")]
    NoSuchUnit {
        /// The name asked for.
        unit: UnitName,
    },
    /// The unit's current state does not allow the operation.
    #[error("{}", WrongStateMessage { unit, operation: *operation, state: *state })]
    WrongState {
        /// The unit.
        unit: UnitName,
        /// What was asked.
        operation: Operation,
        /// The state it is in.
        state: UnitState,
    },
    /// The unit failed because a dependency failed, so it can never start.
    #[error("`{unit}` cannot start: dependency `{dependency}` failed: {reason}")]
    DependencyFailed {
        /// The unit that was asked to start.
        unit: UnitName,
        /// The dependency whose own failure caused it.
        dependency: UnitName,
        /// The reason that dependency gave.
        reason: String,
    },
    /// More unmet dependencies than a status word can count.
    #[error("`{unit}` would wait for more than {limit} dependencies at once")]
    TooManyDependencies {
        /// The unit.
        unit: UnitName,
        /// The limit.
        limit: u32,
    },
}

struct CyclePath<'a>(&'a [UnitName]);

impl fmt::Display for CyclePath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" -> ")?;
            }
            write!(f, "{name}")?;
        }
        Ok(())
    }
}

struct WrongStateMessage<'a> {
    unit: &'a UnitName,
    operation: Operation,
    state: UnitState,
}

impl fmt::Display for WrongStateMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            unit,
            operation,
            state,
        } = self;
        match (operation, state) {
            (Operation::Want, _) => write!(
                f,
                "cannot add dependencies to `{unit}`: it is already {state}, so its ordering can no longer hold"
            ),
            (Operation::Start, UnitState::Started) => write!(
                f,
                "`{unit}` is already started; complete it (or fail it) when its work is done"
            ),
            (Operation::Start, UnitState::Completed) => {
                write!(f, "`{unit}` already completed; a unit runs once")
            }
            (Operation::Start, _) => write!(
                f,
                "`{unit}` is {state}; a finished unit cannot start again"
            ),
            (Operation::Complete, UnitState::Pending | UnitState::Unknown) => write!(
                f,
                "`{unit}` is {state}, not started; start it first"
            ),
            (Operation::Complete, _) => write!(
                f,
                "`{unit}` is already {state}; only a started unit can complete"
            ),
            (Operation::Fail, _) => write!(
                f,
                "`{unit}` is already {state}; a finished unit cannot fail; its outcome is final (use a new unit name to redo the work)"
            ),
        }
    }
}

impl GraphError {
    pub(crate) fn invalid_name(name: &str, rule: NameRule) -> Self {
        Self::InvalidName {
            name: name.to_owned(),
            rule,
        }
    }
}

/// Checks a name without allocating, turning a broken rule into a [`GraphError`].
pub(crate) fn check_name(name: &str) -> Result<(), GraphError> {
    UnitName::check(name).map_err(|rule| GraphError::invalid_name(name, rule))
}
