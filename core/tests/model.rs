//! Model-based test: random sequences of `register`, `want` (1–3 dependencies), `try_start`,
//! `complete` and `fail` over six names — few enough that self-dependencies, repeated edges, cycles,
//! refused transitions and failure propagation happen all the time — are applied both to the real
//! [`Graph`] and to a plain sequential reference model written here (a vector of units with their
//! dependency lists, a DFS cycle check, transitive failure propagation).
//!
//! After every step the two must agree on the result (the same `Ok` value, or the same error; a cycle
//! error's path must be a real cycle through the refused edge), on every name's state, readiness,
//! dependencies, dependents and failure record, and on the events the step published.

use proptest::prelude::*;
use unitsync_core::{
    DependencyStatus, EventKind, FailOutcome, Failure, Graph, GraphError, Operation, StartAttempt,
    Subscription, UnitName, UnitState, WantOutcome,
};

const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

fn name(unit: usize) -> UnitName {
    UnitName::new(NAMES[unit]).unwrap()
}

#[derive(Debug, Clone)]
enum Op {
    Register(usize),
    Want(usize, Vec<usize>),
    TryStart(usize),
    Complete(usize),
    Fail(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let unit = 0..NAMES.len();
    prop_oneof![
        1 => unit.clone().prop_map(Op::Register),
        5 => (unit.clone(), prop::collection::vec(0..NAMES.len(), 1..=3))
            .prop_map(|(unit, deps)| Op::Want(unit, deps)),
        3 => unit.clone().prop_map(Op::TryStart),
        3 => unit.clone().prop_map(Op::Complete),
        1 => unit.prop_map(Op::Fail),
    ]
}

// ---- the reference model ----

#[derive(Debug, Clone)]
struct ModelUnit {
    state: UnitState,
    deps: Vec<usize>,
    failure: Option<Failure>,
}

/// What one operation returned, in a form both sides produce.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Registered(bool),
    Want(WantOutcome),
    Start(StartAttempt),
    Completed,
    /// The units failed by propagation, sorted (their order of reaching is not specified).
    Failed(Vec<UnitName>),
    /// A cycle through the refused edge `unit -> dependency`; the path is checked separately.
    Cycle {
        unit: usize,
        dependency: usize,
    },
    Error(GraphError),
}

#[derive(Debug, Default)]
struct Model {
    units: Vec<Option<ModelUnit>>,
    /// Every edge `(unit, dependency)` in the order it was added.
    edges: Vec<(usize, usize)>,
    /// Events of the current step.
    events: Vec<EventKind>,
}

impl Model {
    fn new() -> Self {
        Self {
            units: vec![None; NAMES.len()],
            ..Self::default()
        }
    }

    fn state(&self, unit: usize) -> Option<UnitState> {
        self.units[unit].as_ref().map(|u| u.state)
    }

    fn unit(&mut self, unit: usize) -> &mut ModelUnit {
        self.units[unit].as_mut().expect("unit exists")
    }

    fn ready(&self, unit: usize) -> bool {
        let deps = &self.units[unit].as_ref().unwrap().deps;
        deps.iter()
            .all(|&d| self.state(d) == Some(UnitState::Completed))
    }

    fn dependents(&self, unit: usize) -> Vec<usize> {
        self.edges
            .iter()
            .filter(|&&(_, dep)| dep == unit)
            .map(|&(u, _)| u)
            .collect()
    }

    /// Whether `to` can be reached from `from` by following dependencies.
    fn reaches(&self, from: usize, to: usize) -> bool {
        let mut seen = vec![false; NAMES.len()];
        let mut stack = vec![from];
        while let Some(at) = stack.pop() {
            if at == to {
                return true;
            }
            if std::mem::replace(&mut seen[at], true) {
                continue;
            }
            if let Some(unit) = &self.units[at] {
                stack.extend(&unit.deps);
            }
        }
        false
    }

    /// Registers `unit` (pending) if it is new or unknown.
    fn ensure_registered(&mut self, unit: usize) -> bool {
        match self.state(unit) {
            None => {
                self.units[unit] = Some(ModelUnit {
                    state: UnitState::Pending,
                    deps: Vec::new(),
                    failure: None,
                });
            }
            Some(UnitState::Unknown) => self.unit(unit).state = UnitState::Pending,
            Some(_) => return false,
        }
        self.events.push(EventKind::Registered { unit: name(unit) });
        true
    }

    fn set_failed(&mut self, unit: usize, failure: Failure) {
        self.events.push(EventKind::Failed {
            unit: name(unit),
            reason: failure.reason.clone(),
            cause: failure.cause.clone(),
        });
        let record = self.unit(unit);
        record.state = UnitState::Failed;
        record.failure = Some(failure);
    }

    /// Fails every not-started unit that depends on `root`, transitively.
    fn propagate(&mut self, root: usize, cause: usize, cause_reason: &str) -> Vec<UnitName> {
        let mut failed = Vec::new();
        let mut stack = vec![root];
        while let Some(at) = stack.pop() {
            for dependent in self.dependents(at) {
                if matches!(
                    self.state(dependent),
                    Some(UnitState::Pending | UnitState::Unknown)
                ) {
                    self.set_failed(dependent, propagated(cause, cause_reason));
                    failed.push(name(dependent));
                    stack.push(dependent);
                }
            }
        }
        failed.sort();
        failed
    }

    /// The unit whose own failure explains `unit`'s, and its reason.
    fn root_cause(&self, unit: usize) -> (usize, String) {
        let failure = self.units[unit].as_ref().unwrap().failure.clone().unwrap();
        match failure.cause {
            Some(cause) => (
                NAMES.iter().position(|n| *n == cause.as_str()).unwrap(),
                failure.cause_reason.unwrap(),
            ),
            None => (unit, failure.reason),
        }
    }

    fn apply(&mut self, op: &Op, reason: &str) -> Answer {
        self.events.clear();
        match *op {
            Op::Register(unit) => Answer::Registered(self.ensure_registered(unit)),
            Op::Want(unit, ref deps) => self.want(unit, deps),
            Op::TryStart(unit) => self.try_start(unit),
            Op::Complete(unit) => match self.state(unit) {
                None => Answer::Error(GraphError::NoSuchUnit { unit: name(unit) }),
                Some(UnitState::Started) => {
                    self.unit(unit).state = UnitState::Completed;
                    self.events.push(EventKind::Completed { unit: name(unit) });
                    Answer::Completed
                }
                Some(state) => Answer::Error(wrong_state(unit, Operation::Complete, state)),
            },
            Op::Fail(unit) => {
                self.ensure_registered(unit);
                match self.state(unit).unwrap() {
                    UnitState::Pending | UnitState::Started => {
                        self.set_failed(
                            unit,
                            Failure {
                                reason: reason.to_owned(),
                                cause: None,
                                cause_reason: None,
                            },
                        );
                        Answer::Failed(self.propagate(unit, unit, reason))
                    }
                    state => Answer::Error(wrong_state(unit, Operation::Fail, state)),
                }
            }
        }
    }

    fn want(&mut self, unit: usize, deps: &[usize]) -> Answer {
        if deps.contains(&unit) {
            return Answer::Error(GraphError::SelfDependency { unit: name(unit) });
        }
        let mut distinct: Vec<usize> = Vec::new();
        for &dep in deps {
            if !distinct.contains(&dep) {
                distinct.push(dep);
            }
        }
        if let Some(state) = self.state(unit) {
            if !matches!(state, UnitState::Unknown | UnitState::Pending) {
                return Answer::Error(wrong_state(unit, Operation::Want, state));
            }
        }
        let mut new_edges = Vec::new();
        for dep in distinct {
            if let Some(existing) = &self.units[unit] {
                if existing.deps.contains(&dep) {
                    continue;
                }
                if self.reaches(dep, unit) {
                    return Answer::Cycle {
                        unit,
                        dependency: dep,
                    };
                }
            }
            new_edges.push(dep);
        }
        let registered = self.ensure_registered(unit);
        let mut first_failed = None;
        for &dep in &new_edges {
            if self.units[dep].is_none() {
                self.units[dep] = Some(ModelUnit {
                    state: UnitState::Unknown,
                    deps: Vec::new(),
                    failure: None,
                });
            }
            self.unit(unit).deps.push(dep);
            self.edges.push((unit, dep));
            self.events.push(EventKind::DependencyAdded {
                unit: name(unit),
                dependency: name(dep),
            });
            if self.state(dep) == Some(UnitState::Failed) && first_failed.is_none() {
                first_failed = Some(dep);
            }
        }
        if let Some(dep) = first_failed {
            let (cause, cause_reason) = self.root_cause(dep);
            self.set_failed(unit, propagated(cause, &cause_reason));
            self.propagate(unit, cause, &cause_reason);
        }
        Answer::Want(WantOutcome {
            registered,
            added: new_edges.into_iter().map(name).collect(),
        })
    }

    fn try_start(&mut self, unit: usize) -> Answer {
        self.ensure_registered(unit);
        let record = self.units[unit].clone().unwrap();
        match record.state {
            UnitState::Pending => {
                let unmet: Vec<DependencyStatus> = record
                    .deps
                    .iter()
                    .filter(|&&d| self.state(d) != Some(UnitState::Completed))
                    .map(|&d| DependencyStatus {
                        name: name(d),
                        required: UnitState::Completed,
                        current: self.state(d).unwrap(),
                        satisfied: false,
                    })
                    .collect();
                if unmet.is_empty() {
                    self.unit(unit).state = UnitState::Started;
                    self.events.push(EventKind::Started {
                        unit: name(unit),
                        by: None,
                    });
                    Answer::Start(StartAttempt::Started)
                } else {
                    Answer::Start(StartAttempt::Blocked { unmet })
                }
            }
            UnitState::Failed => match record.failure.unwrap() {
                Failure {
                    cause: Some(dependency),
                    cause_reason,
                    ..
                } => Answer::Error(GraphError::DependencyFailed {
                    unit: name(unit),
                    dependency,
                    reason: cause_reason.unwrap(),
                }),
                _ => Answer::Error(wrong_state(unit, Operation::Start, UnitState::Failed)),
            },
            state => Answer::Error(wrong_state(unit, Operation::Start, state)),
        }
    }
}

fn propagated(cause: usize, cause_reason: &str) -> Failure {
    Failure {
        reason: format!("dependency {} failed", NAMES[cause]),
        cause: Some(name(cause)),
        cause_reason: Some(cause_reason.to_owned()),
    }
}

fn wrong_state(unit: usize, operation: Operation, state: UnitState) -> GraphError {
    GraphError::WrongState {
        unit: name(unit),
        operation,
        state,
    }
}

// ---- the real graph, answering in the same form ----

fn apply_real(graph: &Graph, op: &Op, reason: &str) -> (Answer, Option<Vec<UnitName>>) {
    let answer = |result: Result<Answer, GraphError>| match result {
        Ok(answer) => (answer, None),
        Err(GraphError::Cycle { path }) => {
            let Op::Want(unit, _) = op else {
                panic!("cycle error from {op:?}")
            };
            let dependency = NAMES
                .iter()
                .position(|n| Some(*n) == path.get(1).map(UnitName::as_str))
                .expect("cycle path names the dependency second");
            (
                Answer::Cycle {
                    unit: *unit,
                    dependency,
                },
                Some(path),
            )
        }
        Err(error) => (Answer::Error(error), None),
    };
    match *op {
        Op::Register(unit) => answer(graph.register(NAMES[unit]).map(Answer::Registered)),
        Op::Want(unit, ref deps) => {
            let deps: Vec<&str> = deps.iter().map(|&d| NAMES[d]).collect();
            answer(graph.want(NAMES[unit], &deps).map(Answer::Want))
        }
        Op::TryStart(unit) => answer(graph.try_start(NAMES[unit]).map(Answer::Start)),
        Op::Complete(unit) => answer(graph.complete(NAMES[unit]).map(|()| Answer::Completed)),
        Op::Fail(unit) => answer(graph.fail(NAMES[unit], reason).map(
            |FailOutcome { mut propagated }| {
                propagated.sort();
                Answer::Failed(propagated)
            },
        )),
    }
}

/// A cycle path must start and end at the refused edge's unit, go through the dependency second, and
/// follow existing edges the rest of the way.
fn assert_real_cycle(model: &Model, path: &[UnitName], unit: usize, dependency: usize) {
    let index = |n: &UnitName| NAMES.iter().position(|m| *m == n.as_str()).unwrap();
    assert!(path.len() >= 3, "{path:?}");
    assert_eq!(index(&path[0]), unit, "{path:?}");
    assert_eq!(index(&path[1]), dependency, "{path:?}");
    assert_eq!(index(path.last().unwrap()), unit, "{path:?}");
    for step in path[1..].windows(2) {
        let (from, to) = (index(&step[0]), index(&step[1]));
        assert!(
            model.units[from].as_ref().unwrap().deps.contains(&to),
            "{path:?}: no edge {from} -> {to}"
        );
    }
}

fn drain(feed: &mut Subscription) -> Vec<unitsync_core::Event> {
    std::iter::from_fn(|| feed.try_recv().expect("no lag in a small model")).collect()
}

fn sorted_kinds(kinds: impl IntoIterator<Item = EventKind>) -> Vec<String> {
    let mut kinds: Vec<String> = kinds.into_iter().map(|k| format!("{k:?}")).collect();
    kinds.sort();
    kinds
}

fn assert_same_graph(graph: &Graph, model: &Model, step: usize) {
    for (unit, &n) in NAMES.iter().enumerate() {
        assert_eq!(
            graph.state(n),
            model.state(unit),
            "state of {n} after step {step}"
        );
        let Some(record) = &model.units[unit] else {
            assert_eq!(
                graph.is_ready(n),
                Err(GraphError::NoSuchUnit { unit: name(unit) })
            );
            continue;
        };
        assert_eq!(graph.is_ready(n), Ok(model.ready(unit)), "readiness of {n}");
        let snapshot = graph.snapshot(n).unwrap();
        let deps: Vec<(UnitName, UnitState)> = snapshot
            .dependencies
            .iter()
            .map(|d| (d.name.clone(), d.current))
            .collect();
        let expected: Vec<(UnitName, UnitState)> = record
            .deps
            .iter()
            .map(|&d| (name(d), model.state(d).unwrap()))
            .collect();
        assert_eq!(deps, expected, "dependencies of {n}");
        let dependents: Vec<UnitName> = model.dependents(unit).into_iter().map(name).collect();
        assert_eq!(snapshot.dependents, dependents, "dependents of {n}");
        assert_eq!(snapshot.failure, record.failure, "failure of {n}");
        assert_eq!(snapshot.ready, model.ready(unit));
    }
    let listed: Vec<UnitName> = graph.list().into_iter().map(|s| s.name).collect();
    let known: Vec<UnitName> = (0..NAMES.len())
        .filter(|&u| model.units[u].is_some())
        .map(name)
        .collect();
    assert_eq!(listed, known);
}

fn run(ops: &[Op]) {
    let graph = Graph::new();
    let mut feed = graph.subscribe();
    let mut model = Model::new();
    let mut last_seq = 0;
    for (step, op) in ops.iter().enumerate() {
        let reason = format!("reason {step}");
        let (real, path) = apply_real(&graph, op, &reason);
        let expected = model.apply(op, &reason);
        assert_eq!(real, expected, "step {step}: {op:?}");
        if let (Some(path), Answer::Cycle { unit, dependency }) = (path, &expected) {
            assert_real_cycle(&model, &path, *unit, *dependency);
        }
        let events = drain(&mut feed);
        for event in &events {
            assert!(event.seq > last_seq, "event numbers must increase");
            last_seq = event.seq;
        }
        assert_eq!(
            sorted_kinds(events.into_iter().map(|e| e.kind)),
            sorted_kinds(model.events.clone()),
            "events of step {step}: {op:?}"
        );
        assert_same_graph(&graph, &model, step);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn graph_agrees_with_the_reference_model(ops in prop::collection::vec(op(), 1..48)) {
        run(&ops);
    }
}

/// The sequence that once let an edge close a cycle through a failed unit (its dependents list was
/// sealed, so the late edge was invisible to the cycle check).
#[test]
fn a_late_edge_to_a_failed_unit_still_counts_for_cycles() {
    run(&[
        Op::Want(0, vec![1]),
        Op::Fail(0),
        Op::Want(2, vec![0]),
        Op::Want(1, vec![2]),
    ]);
}
