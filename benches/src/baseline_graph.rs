//! The baseline every in-process figure is compared with: the same unit semantics as
//! `unitsync_core::Graph`, built the plain way the Go competitor describes ("mutex and map").
//!
//! - One `HashMap<String, Node>` behind one `RwLock`; edges are stored as names in both directions.
//! - A unit is ready when every dependency's state is `completed`, looked up at the time of the check.
//! - Every new edge `unit -> dep` is checked for a cycle by a depth-first walk from `dep` through
//!   dependencies, looking for `unit` (so building a chain of N costs O(N²)).
//! - Waiters block on one `Condvar` (with a `Mutex`-guarded waiter count, so writers skip the wake-up
//!   syscall when nobody waits); every change wakes every waiter, which re-checks its own condition.
//! - The "Go CLI" variant waits by polling readiness at a fixed interval ([`RwLockGraph::wait_ready_polling`]).
//!
//! It is a fair, reasonably written baseline, not a straw man: it validates names with the same rule,
//! refuses cycles, self-edges and wrong states, and propagates failures. It must not share any code
//! with `unitsync-core` beyond the name rule, and must not be tuned against the workloads.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::time::Duration;

/// A unit's state (the same five states as SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Only depended on.
    Unknown,
    /// Registered, not started.
    Pending,
    /// Started.
    Started,
    /// Completed (final).
    Completed,
    /// Failed (final).
    Failed,
}

/// Why the baseline refused something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaselineError {
    /// A name broke the naming rule.
    InvalidName(String),
    /// `want a a`.
    SelfDependency(String),
    /// The edge would close this cycle (first and last names equal).
    Cycle(Vec<String>),
    /// The name was never mentioned.
    NoSuchUnit(String),
    /// The unit's state does not allow the operation.
    WrongState(String, State),
    /// The unit failed because a dependency failed.
    DependencyFailed(String),
}

/// How a wait for readiness ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Every dependency completed.
    Ready,
    /// The unit failed (itself or through a dependency): it will never be ready.
    Failed,
}

#[derive(Debug)]
struct Node {
    state: State,
    deps: Vec<String>,
    dependents: Vec<String>,
    failure: Option<String>,
}

impl Node {
    fn new(state: State) -> Self {
        Self {
            state,
            deps: Vec::new(),
            dependents: Vec::new(),
            failure: None,
        }
    }
}

#[derive(Default)]
struct Waiters {
    parked: usize,
}

struct Shared {
    units: RwLock<HashMap<String, Node>>,
    waiters: Mutex<Waiters>,
    changed: Condvar,
}

/// The `HashMap` + `RwLock` + `Condvar` baseline graph. Cheap to clone: clones share one graph.
#[derive(Clone)]
pub struct RwLockGraph {
    shared: Arc<Shared>,
}

impl Default for RwLockGraph {
    fn default() -> Self {
        Self::new()
    }
}

fn relock<T>(result: Result<T, PoisonError<T>>) -> T {
    result.unwrap_or_else(PoisonError::into_inner)
}

fn valid(name: &str) -> Result<(), BaselineError> {
    unitsync_core::UnitName::check(name).map_err(|_| BaselineError::InvalidName(name.to_owned()))
}

impl RwLockGraph {
    /// An empty graph.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                units: RwLock::new(HashMap::new()),
                waiters: Mutex::new(Waiters::default()),
                changed: Condvar::new(),
            }),
        }
    }

    /// How many names the graph knows.
    pub fn len(&self) -> usize {
        relock(self.shared.units.read()).len()
    }

    /// Whether the graph knows no name.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wakes every parked waiter (they re-check their own condition).
    fn changed(&self) {
        let waiters = relock(self.shared.waiters.lock());
        if waiters.parked > 0 {
            self.shared.changed.notify_all();
        }
    }

    /// Registers `unit` (pending) if new or unknown; returns whether this call registered it.
    pub fn register(&self, unit: &str) -> Result<bool, BaselineError> {
        valid(unit)?;
        let registered = {
            let mut units = relock(self.shared.units.write());
            match units.get_mut(unit) {
                Some(node) if node.state == State::Unknown => {
                    node.state = State::Pending;
                    true
                }
                Some(_) => false,
                None => {
                    units.insert(unit.to_owned(), Node::new(State::Pending));
                    true
                }
            }
        };
        if registered {
            self.changed();
        }
        Ok(registered)
    }

    /// Adds edges `unit -> dep` for every dep, all or nothing, each checked for a cycle by a DFS.
    pub fn want(&self, unit: &str, deps: &[&str]) -> Result<(), BaselineError> {
        self.want_inner(unit, deps, true)
    }

    /// [`want`](Self::want) without the cycle check, for the memory workload only (W4): at 100,000
    /// units with 3 random edges each the DFS would run for hours, and it allocates only transient
    /// memory, so skipping it changes no retained byte.
    pub fn want_unchecked(&self, unit: &str, deps: &[&str]) -> Result<(), BaselineError> {
        self.want_inner(unit, deps, false)
    }

    fn want_inner(&self, unit: &str, deps: &[&str], check: bool) -> Result<(), BaselineError> {
        valid(unit)?;
        for dep in deps {
            valid(dep)?;
            if dep == &unit {
                return Err(BaselineError::SelfDependency(unit.to_owned()));
            }
        }
        {
            let mut units = relock(self.shared.units.write());
            let mut new_deps: Vec<&str> = Vec::with_capacity(deps.len());
            if let Some(node) = units.get(unit) {
                if !matches!(node.state, State::Unknown | State::Pending) {
                    return Err(BaselineError::WrongState(unit.to_owned(), node.state));
                }
            }
            for &dep in deps {
                let exists = units
                    .get(unit)
                    .is_some_and(|node| node.deps.iter().any(|d| d == dep));
                if exists || new_deps.contains(&dep) {
                    continue;
                }
                if check {
                    if let Some(path) = find_cycle(&units, unit, dep) {
                        return Err(BaselineError::Cycle(path));
                    }
                }
                new_deps.push(dep);
            }
            let mut failed_dep = false;
            for &dep in &new_deps {
                let node = units
                    .entry(dep.to_owned())
                    .or_insert_with(|| Node::new(State::Unknown));
                node.dependents.push(unit.to_owned());
                failed_dep |= node.state == State::Failed;
            }
            let node = units
                .entry(unit.to_owned())
                .or_insert_with(|| Node::new(State::Pending));
            node.state = State::Pending;
            node.deps.extend(new_deps.iter().map(|d| (*d).to_owned()));
            if failed_dep {
                fail_locked(&mut units, unit, "a dependency failed", false);
            }
        }
        self.changed();
        Ok(())
    }

    /// Starts `unit` if every dependency completed (registers it first if new); `Ok(false)` if not.
    pub fn try_start(&self, unit: &str) -> Result<bool, BaselineError> {
        valid(unit)?;
        let started = {
            let mut units = relock(self.shared.units.write());
            let state = units.get(unit).map(|node| node.state);
            match state {
                None => {
                    units.insert(unit.to_owned(), Node::new(State::Started));
                    Ok(true)
                }
                Some(State::Unknown | State::Pending) => {
                    let ready = ready_locked(&units, unit);
                    let node = units.get_mut(unit).expect("present");
                    node.state = if ready {
                        State::Started
                    } else {
                        State::Pending
                    };
                    Ok(ready)
                }
                Some(State::Failed) => Err(BaselineError::DependencyFailed(unit.to_owned())),
                Some(state) => Err(BaselineError::WrongState(unit.to_owned(), state)),
            }
        };
        if let Ok(true) = started {
            self.changed();
        }
        started
    }

    /// Started → completed.
    pub fn complete(&self, unit: &str) -> Result<(), BaselineError> {
        valid(unit)?;
        {
            let mut units = relock(self.shared.units.write());
            let node = units
                .get_mut(unit)
                .ok_or_else(|| BaselineError::NoSuchUnit(unit.to_owned()))?;
            if node.state != State::Started {
                return Err(BaselineError::WrongState(unit.to_owned(), node.state));
            }
            node.state = State::Completed;
        }
        self.changed();
        Ok(())
    }

    /// Fails `unit` and every dependent that has not started, transitively.
    pub fn fail(&self, unit: &str, reason: &str) -> Result<Vec<String>, BaselineError> {
        valid(unit)?;
        let propagated = {
            let mut units = relock(self.shared.units.write());
            let node = units
                .entry(unit.to_owned())
                .or_insert_with(|| Node::new(State::Pending));
            if node.state.is_final() {
                return Err(BaselineError::WrongState(unit.to_owned(), node.state));
            }
            fail_locked(&mut units, unit, reason, true)
        };
        self.changed();
        Ok(propagated)
    }

    /// Whether every dependency of `unit` completed.
    pub fn is_ready(&self, unit: &str) -> Result<bool, BaselineError> {
        let units = relock(self.shared.units.read());
        if !units.contains_key(unit) {
            return Err(BaselineError::NoSuchUnit(unit.to_owned()));
        }
        Ok(ready_locked(&units, unit))
    }

    /// The state of `unit`, if mentioned.
    pub fn state(&self, unit: &str) -> Option<State> {
        relock(self.shared.units.read())
            .get(unit)
            .map(|node| node.state)
    }

    fn readiness(&self, unit: &str) -> Result<Option<Readiness>, BaselineError> {
        let units = relock(self.shared.units.read());
        let node = units
            .get(unit)
            .ok_or_else(|| BaselineError::NoSuchUnit(unit.to_owned()))?;
        if node.state == State::Failed {
            return Ok(Some(Readiness::Failed));
        }
        Ok(ready_locked(&units, unit).then_some(Readiness::Ready))
    }

    /// Blocks the calling thread until `unit` is ready (or failed), woken by the `Condvar`.
    pub fn wait_ready(&self, unit: &str) -> Result<Readiness, BaselineError> {
        let mut waiters = relock(self.shared.waiters.lock());
        loop {
            // Checked while holding the waiter lock: a writer's change either came before this
            // check, or its `changed()` must take the lock after we sleep, and so wakes us.
            if let Some(outcome) = self.readiness(unit)? {
                return Ok(outcome);
            }
            waiters.parked += 1;
            waiters = relock(self.shared.changed.wait(waiters));
            waiters.parked -= 1;
        }
    }

    /// Blocks until `unit` is ready (or failed) by checking every `interval`, as the Go CLI does.
    pub fn wait_ready_polling(
        &self,
        unit: &str,
        interval: Duration,
    ) -> Result<Readiness, BaselineError> {
        loop {
            if let Some(outcome) = self.readiness(unit)? {
                return Ok(outcome);
            }
            std::thread::sleep(interval);
        }
    }

    /// How many threads are parked in [`wait_ready`](Self::wait_ready) now.
    pub fn parked(&self) -> usize {
        relock(self.shared.waiters.lock()).parked
    }
}

impl State {
    fn is_final(self) -> bool {
        matches!(self, State::Completed | State::Failed)
    }
}

fn ready_locked(units: &HashMap<String, Node>, unit: &str) -> bool {
    units[unit]
        .deps
        .iter()
        .all(|dep| units.get(dep).is_some_and(|d| d.state == State::Completed))
}

/// The cycle `unit -> dep -> ... -> unit`, if `unit` is reachable from `dep` through dependencies.
fn find_cycle(units: &HashMap<String, Node>, unit: &str, dep: &str) -> Option<Vec<String>> {
    let mut parent: HashMap<&str, &str> = HashMap::new();
    let mut seen: HashSet<&str> = HashSet::from([dep]);
    let mut stack: Vec<&str> = vec![dep];
    while let Some(current) = stack.pop() {
        let Some(node) = units.get(current) else {
            continue;
        };
        for next in &node.deps {
            if !seen.insert(next.as_str()) {
                continue;
            }
            parent.insert(next.as_str(), current);
            if next == unit {
                let mut path = vec![unit.to_owned()];
                let mut at = next.as_str();
                let mut chain = vec![at.to_owned()];
                while let Some(&previous) = parent.get(at) {
                    chain.push(previous.to_owned());
                    at = previous;
                }
                chain.reverse(); // dep ... unit
                path.extend(chain);
                return Some(path);
            }
            stack.push(next.as_str());
        }
    }
    None
}

/// Fails `unit` (if allowed) and its not-yet-started dependents; returns the dependents failed.
fn fail_locked(
    units: &mut HashMap<String, Node>,
    unit: &str,
    reason: &str,
    allow_started: bool,
) -> Vec<String> {
    let mut propagated = Vec::new();
    {
        let node = units.get_mut(unit).expect("present");
        if node.state.is_final() || (!allow_started && node.state == State::Started) {
            return propagated;
        }
        node.state = State::Failed;
        node.failure = Some(reason.to_owned());
    }
    let mut stack = vec![unit.to_owned()];
    while let Some(current) = stack.pop() {
        let dependents = units[&current].dependents.clone();
        for dependent in dependents {
            let node = units.get_mut(&dependent).expect("edges name known units");
            if matches!(node.state, State::Unknown | State::Pending) {
                node.state = State::Failed;
                node.failure = Some(format!("dependency {unit} failed"));
                propagated.push(dependent.clone());
                stack.push(dependent);
            }
        }
    }
    propagated
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_semantics_as_the_graph() {
        let g = RwLockGraph::new();
        g.want("claude", &["git"]).unwrap();
        assert_eq!(g.state("git"), Some(State::Unknown));
        assert!(!g.try_start("claude").unwrap());
        assert!(g.try_start("git").unwrap());
        assert_eq!(g.state("git"), Some(State::Started));
        assert!(!g.is_ready("claude").unwrap());
        g.complete("git").unwrap();
        assert!(g.is_ready("claude").unwrap());
        assert!(g.try_start("claude").unwrap());
        assert!(g.try_start("claude").is_err());
        assert_eq!(
            g.want("a", &["a"]),
            Err(BaselineError::SelfDependency("a".into()))
        );
    }

    #[test]
    fn cycles_are_refused_with_their_path() {
        let g = RwLockGraph::new();
        g.want("a", &["b"]).unwrap();
        g.want("b", &["c"]).unwrap();
        let error = g.want("c", &["a"]).unwrap_err();
        assert_eq!(
            error,
            BaselineError::Cycle(vec!["c".into(), "a".into(), "b".into(), "c".into()])
        );
        assert_eq!(g.state("c"), Some(State::Unknown));
    }

    #[test]
    fn failure_propagates_to_pending_dependents() {
        let g = RwLockGraph::new();
        g.want("b", &["a"]).unwrap();
        g.want("c", &["b"]).unwrap();
        assert_eq!(g.fail("a", "boom").unwrap(), vec!["b", "c"]);
        assert_eq!(g.state("c"), Some(State::Failed));
        assert!(g.try_start("c").is_err());
    }

    #[test]
    fn condvar_waiter_is_woken() {
        let g = RwLockGraph::new();
        g.want("b", &["a"]).unwrap();
        let waiter = {
            let g = g.clone();
            std::thread::spawn(move || g.wait_ready("b"))
        };
        while g.parked() == 0 {
            std::thread::yield_now();
        }
        assert!(g.try_start("a").unwrap());
        g.complete("a").unwrap();
        assert_eq!(waiter.join().unwrap(), Ok(Readiness::Ready));
    }
}
