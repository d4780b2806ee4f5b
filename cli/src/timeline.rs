//! The timeline of a workspace: per unit, how long it waited, how long it ran and how it ended, and
//! the *critical chain* — the path of units that determined the total time, like
//! `systemd-analyze critical-chain`.
//!
//! The chain is found backwards from the unit that finished last: each link's predecessor is the
//! dependency that finished last among its dependencies (the one it was really waiting for), until a
//! unit with no finished dependency. Everything is computed from the agent's per-unit timestamps
//! (`list`), so `unitsync run` and `unitsync timeline` show the same thing. This module is pure: it
//! computes and formats, and never talks to the agent or reads a clock.

use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write as _;
use unitsync_core::UnitState;
use unitsync_ipc::protocol::UnitInfo;

/// How a unit ended (or did not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Completed.
    Completed,
    /// Failed, itself or through a dependency.
    Failed,
    /// Started and never finished.
    Unfinished,
    /// Registered and never started.
    NotStarted,
    /// Only depended on: no script registered it.
    NeverRegistered,
}

impl Outcome {
    fn of(state: UnitState) -> Self {
        match state {
            UnitState::Completed => Self::Completed,
            UnitState::Failed => Self::Failed,
            UnitState::Started => Self::Unfinished,
            UnitState::Pending => Self::NotStarted,
            UnitState::Unknown => Self::NeverRegistered,
        }
    }

    /// Whether this outcome makes a run unsuccessful.
    pub fn is_problem(self) -> bool {
        self != Self::Completed
    }

    fn label(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Unfinished => "left unfinished",
            Self::NotStarted => "never started",
            Self::NeverRegistered => "never registered",
        }
    }
}

/// One unit's line of the timeline. Times are milliseconds from the timeline's origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitLine {
    /// The unit.
    pub unit: String,
    /// How it ended.
    pub outcome: Outcome,
    /// When it was registered.
    pub registered_ms: Option<u64>,
    /// When it started.
    pub started_ms: Option<u64>,
    /// When it completed or failed.
    pub finished_ms: Option<u64>,
    /// From registration until it started (or, if it never started, until it finished or now).
    pub waited_ms: Option<u64>,
    /// From start until it finished (or now, if it is still running).
    pub ran_ms: Option<u64>,
    /// Why it failed.
    pub failure: Option<String>,
}

/// One link of the critical chain, latest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainLink {
    /// The unit.
    pub unit: String,
    /// When it started, from the origin.
    pub started_ms: u64,
    /// How long it waited before starting.
    pub waited_ms: u64,
    /// How long it ran (until now, if it is still running).
    pub ran_ms: u64,
}

/// The whole timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Timeline {
    /// Unix milliseconds that every other time is measured from.
    pub origin_unix_ms: u64,
    /// From the origin until the last unit finished (or now, if one is still running).
    pub total_ms: u64,
    /// Every unit, in the order they started (never-started ones last, by name).
    pub units: Vec<UnitLine>,
    /// The units that determined the total time, the last one first.
    pub critical_chain: Vec<ChainLink>,
}

impl Timeline {
    /// Builds the timeline of `units`, measured from `origin_unix_ms` (`None`: the earliest
    /// registration), with `now_unix_ms` standing in for the end of anything still running.
    pub fn build(units: &[UnitInfo], origin_unix_ms: Option<u64>, now_unix_ms: u64) -> Self {
        let origin = origin_unix_ms
            .or_else(|| units.iter().filter_map(|u| u.registered_at_ms).min())
            .unwrap_or(now_unix_ms);
        let since = |ms: u64| ms.saturating_sub(origin);
        let now = since(now_unix_ms);

        let mut lines: Vec<UnitLine> = units
            .iter()
            .map(|info| {
                let registered = info.registered_at_ms.map(since);
                let started = info.started_at_ms.map(since);
                let finished = info.finished_at_ms.map(since);
                let waited =
                    registered.map(|from| started.or(finished).unwrap_or(now).saturating_sub(from));
                let ran = started.map(|from| finished.unwrap_or(now).saturating_sub(from));
                UnitLine {
                    unit: info.name.to_string(),
                    outcome: Outcome::of(info.state),
                    registered_ms: registered,
                    started_ms: started,
                    finished_ms: finished,
                    waited_ms: waited,
                    ran_ms: ran,
                    failure: info.failure.as_ref().map(|f| f.reason.clone()),
                }
            })
            .collect();
        lines.sort_by(|a, b| {
            let key = |l: &UnitLine| (l.started_ms.is_none(), l.started_ms, l.unit.clone());
            key(a).cmp(&key(b))
        });

        let end_of = |line: &UnitLine| line.finished_ms.or(line.started_ms.map(|_| now));
        let total_ms = lines.iter().filter_map(end_of).max().unwrap_or(0);
        let critical_chain = critical_chain(units, &lines, now);
        Self {
            origin_unix_ms: origin,
            total_ms,
            units: lines,
            critical_chain,
        }
    }

    /// The units that did not complete, with how they ended.
    pub fn problems(&self) -> Vec<&UnitLine> {
        self.units
            .iter()
            .filter(|u| u.outcome.is_problem())
            .collect()
    }

    /// The aligned table and the critical chain, as printed at the end of a run.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.units.is_empty() {
            out.push_str("no units were registered\n");
            return out;
        }
        let width = self
            .units
            .iter()
            .map(|u| u.unit.chars().count())
            .max()
            .unwrap_or(4)
            .max(4);
        let _ = writeln!(
            out,
            "{:<width$}  {:>8}  {:>8}  {:>8}  RESULT",
            "UNIT", "STARTED", "WAITED", "RAN"
        );
        for line in &self.units {
            let started = line
                .started_ms
                .map(|ms| format!("+{}", seconds(ms)))
                .unwrap_or_else(|| "-".to_owned());
            let result = match &line.failure {
                Some(reason) => format!("{}: {reason}", line.outcome.label()),
                None => line.outcome.label().to_owned(),
            };
            let _ = writeln!(
                out,
                "{:<width$}  {:>8}  {:>8}  {:>8}  {result}",
                line.unit,
                started,
                opt_seconds(line.waited_ms),
                opt_seconds(line.ran_ms),
            );
        }
        if self.critical_chain.is_empty() {
            return out;
        }
        let _ = writeln!(
            out,
            "\ncritical chain ({}), last unit first:",
            seconds(self.total_ms)
        );
        let chain_width = self
            .critical_chain
            .iter()
            .map(|l| l.unit.chars().count())
            .max()
            .unwrap_or(0);
        for (depth, link) in self.critical_chain.iter().enumerate() {
            let marker = if depth == 0 { "  " } else { "  <- " };
            let pad = if depth == 0 { "   " } else { "" };
            let _ = writeln!(
                out,
                "{marker}{pad}{:<chain_width$}  started +{:<7}  waited {:<7}  ran {}",
                link.unit,
                seconds(link.started_ms),
                seconds(link.waited_ms),
                seconds(link.ran_ms),
            );
        }
        out
    }
}

/// The chain of units that determined the total time, last one first.
fn critical_chain(units: &[UnitInfo], lines: &[UnitLine], now: u64) -> Vec<ChainLink> {
    let by_name: HashMap<&str, &UnitLine> = lines.iter().map(|l| (l.unit.as_str(), l)).collect();
    let dependencies: HashMap<&str, Vec<&str>> = units
        .iter()
        .map(|u| {
            (
                u.name.as_str(),
                u.dependencies.iter().map(|d| d.name.as_str()).collect(),
            )
        })
        .collect();
    let end_of = |line: &UnitLine| line.finished_ms.unwrap_or(now);
    let Some(mut current) = lines
        .iter()
        .filter(|l| l.started_ms.is_some())
        .max_by_key(|l| (end_of(l), std::cmp::Reverse(l.unit.clone())))
    else {
        return Vec::new();
    };
    let mut chain = Vec::new();
    loop {
        let started_ms = current.started_ms.unwrap_or_default();
        chain.push(ChainLink {
            unit: current.unit.clone(),
            started_ms,
            waited_ms: current.waited_ms.unwrap_or_default(),
            ran_ms: current.ran_ms.unwrap_or_default(),
        });
        // The dependency that finished last is the one this unit was waiting for. The chain is
        // finite: each step goes to a unit that finished before the current one started.
        let gate = dependencies
            .get(current.unit.as_str())
            .into_iter()
            .flatten()
            .filter_map(|name| by_name.get(name).copied())
            .filter(|dep| dep.started_ms.is_some() && dep.finished_ms.is_some())
            .filter(|dep| dep.finished_ms.unwrap_or_default() <= started_ms)
            .max_by_key(|dep| (dep.finished_ms, std::cmp::Reverse(dep.unit.clone())));
        match gate {
            Some(dep) => current = dep,
            None => return chain,
        }
    }
}

/// `0.48s`, `12.30s`, `2m 05s`.
pub fn seconds(ms: u64) -> String {
    if ms < 60_000 {
        format!("{}.{:02}s", ms / 1000, (ms % 1000) / 10)
    } else {
        format!("{}m {:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

fn opt_seconds(ms: Option<u64>) -> String {
    ms.map(seconds).unwrap_or_else(|| "-".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use unitsync_core::{DependencyStatus, Failure, UnitName};

    fn name(text: &str) -> UnitName {
        UnitName::new(text).unwrap()
    }

    /// A unit registered at `registered`, started at `started`, finished at `finished` (ms).
    fn unit(
        unit: &str,
        deps: &[&str],
        state: UnitState,
        times: (u64, Option<u64>, Option<u64>),
    ) -> UnitInfo {
        UnitInfo {
            name: name(unit),
            state,
            ready: true,
            dependencies: deps
                .iter()
                .map(|d| DependencyStatus {
                    name: name(d),
                    required: UnitState::Completed,
                    current: UnitState::Completed,
                    satisfied: true,
                })
                .collect(),
            dependents: Vec::new(),
            registered_at_ms: Some(1_000 + times.0),
            started_at_ms: times.1.map(|t| 1_000 + t),
            finished_at_ms: times.2.map(|t| 1_000 + t),
            failure: (state == UnitState::Failed).then(|| Failure {
                reason: "exited with status 1".to_owned(),
                cause: None,
                cause_reason: None,
            }),
        }
    }

    /// clone → install → build → tests, with dotfiles and an agent beside them: the chain must be
    /// tests ← build ← install ← clone, skipping `lint` (it finished early) and `dotfiles`.
    #[test]
    fn critical_chain_follows_the_dependency_that_finished_last() {
        use UnitState::Completed as Done;
        let units = vec![
            unit("clone", &[], Done, (0, Some(0), Some(500))),
            unit("dotfiles", &[], Done, (0, Some(10), Some(300))),
            unit("install", &["clone"], Done, (5, Some(510), Some(1500))),
            unit("lint", &["clone"], Done, (5, Some(505), Some(700))),
            unit(
                "build",
                &["install", "lint", "dotfiles"],
                Done,
                (5, Some(1510), Some(2600)),
            ),
            unit(
                "claude",
                &["clone", "dotfiles"],
                Done,
                (5, Some(502), Some(900)),
            ),
            unit("tests", &["build"], Done, (5, Some(2605), Some(3400))),
        ];
        let timeline = Timeline::build(&units, Some(1_000), 10_000);
        let chain: Vec<&str> = timeline
            .critical_chain
            .iter()
            .map(|l| l.unit.as_str())
            .collect();
        assert_eq!(chain, ["tests", "build", "install", "clone"]);
        assert_eq!(timeline.total_ms, 3400);
        let build = &timeline.critical_chain[1];
        assert_eq!(
            (build.started_ms, build.waited_ms, build.ran_ms),
            (1510, 1505, 1090)
        );
        assert!(timeline.problems().is_empty());
        let order: Vec<&str> = timeline.units.iter().map(|u| u.unit.as_str()).collect();
        assert_eq!(
            order,
            ["clone", "dotfiles", "claude", "lint", "install", "build", "tests"]
        );
    }

    #[test]
    fn outcomes_and_problems_name_every_unit_that_did_not_complete() {
        let units = vec![
            unit("a", &[], UnitState::Completed, (0, Some(0), Some(100))),
            unit("b", &["a"], UnitState::Failed, (0, Some(100), Some(200))),
            unit("c", &["a"], UnitState::Started, (0, Some(100), None)),
            unit("d", &["b"], UnitState::Pending, (0, None, None)),
        ];
        let timeline = Timeline::build(&units, None, 1_000 + 900);
        let problems: Vec<(&str, Outcome)> = timeline
            .problems()
            .iter()
            .map(|u| (u.unit.as_str(), u.outcome))
            .collect();
        assert_eq!(
            problems,
            [
                ("b", Outcome::Failed),
                ("c", Outcome::Unfinished),
                ("d", Outcome::NotStarted)
            ]
        );
        // Still running: measured until now, and it ends the chain.
        assert_eq!(timeline.total_ms, 900);
        assert_eq!(timeline.critical_chain[0].unit, "c");
        assert_eq!(timeline.critical_chain[0].ran_ms, 800);
        let text = timeline.render();
        assert!(text.contains("failed: exited with status 1"), "{text}");
        assert!(text.contains("left unfinished"), "{text}");
        assert!(text.contains("never started"), "{text}");
    }

    #[test]
    fn empty_timeline_renders_a_sentence() {
        let timeline = Timeline::build(&[], None, 5);
        assert!(timeline.critical_chain.is_empty());
        assert_eq!(timeline.render(), "no units were registered\n");
    }

    #[test]
    fn seconds_are_fixed_width_enough_to_align() {
        assert_eq!(seconds(0), "0.00s");
        assert_eq!(seconds(480), "0.48s");
        assert_eq!(seconds(12_345), "12.34s");
        assert_eq!(seconds(125_000), "2m 05s");
    }
}
