//! Every rule and every error of SPEC §2–§3 as `unitsync-core` exposes them, one test each, through the
//! public API only: `want` (all-or-nothing, unknown dependencies, repeated edges, self-dependency,
//! cycles, refused on started/finished units), `try_start`, `complete`, `fail` and its propagation,
//! readiness, states and snapshots, `list`, DOT and Mermaid export, name validation everywhere a name
//! is accepted, and the event stream (order, `subscribe_from`, lagging, `try_recv`).

use unitsync_core::{
    to_dot, to_mermaid, DependencyStatus, Event, EventKind, Failure, Graph, GraphError,
    GraphFormat, NameRule, Operation, StartAttempt, UnitName, UnitState, WantOutcome,
};

fn name(unit: &str) -> UnitName {
    UnitName::new(unit).expect("valid name")
}

fn names(units: &[&str]) -> Vec<UnitName> {
    units.iter().map(|u| name(u)).collect()
}

/// Every event the graph published, from the first; panics if the subscriber lagged.
fn all_events(graph: &Graph) -> Vec<Event> {
    let mut feed = graph.subscribe_from(1);
    let mut events = Vec::new();
    while let Some(event) = feed
        .try_recv()
        .expect("the test's event buffer is big enough")
    {
        events.push(event);
    }
    events
}

fn kinds(events: &[Event]) -> Vec<EventKind> {
    events.iter().map(|e| e.kind.clone()).collect()
}

fn registered(unit: &str) -> EventKind {
    EventKind::Registered { unit: name(unit) }
}

fn edge(unit: &str, dependency: &str) -> EventKind {
    EventKind::DependencyAdded {
        unit: name(unit),
        dependency: name(dependency),
    }
}

fn started(unit: &str) -> EventKind {
    EventKind::Started {
        unit: name(unit),
        by: None,
    }
}

fn completed(unit: &str) -> EventKind {
    EventKind::Completed { unit: name(unit) }
}

fn start_and_complete(graph: &Graph, unit: &str) {
    assert_eq!(graph.try_start(unit), Ok(StartAttempt::Started), "{unit}");
    graph.complete(unit).unwrap();
}

fn dependency(unit: &str, current: UnitState) -> DependencyStatus {
    DependencyStatus {
        name: name(unit),
        required: UnitState::Completed,
        current,
        satisfied: current == UnitState::Completed,
    }
}

fn dependency_failure(cause: &str, cause_reason: &str) -> Failure {
    Failure {
        reason: format!("dependency {cause} failed"),
        cause: Some(name(cause)),
        cause_reason: Some(cause_reason.to_owned()),
    }
}

fn wrong_state(unit: &str, operation: Operation, state: UnitState) -> GraphError {
    GraphError::WrongState {
        unit: name(unit),
        operation,
        state,
    }
}

/// The whole observable graph: every unit's snapshot and the number of events published.
fn observable(graph: &Graph) -> (Vec<unitsync_core::UnitSnapshot>, usize, u64) {
    (
        graph.list(),
        all_events(graph).len(),
        graph.next_event_seq(),
    )
}

// ---- want ----

#[test]
fn want_registers_the_unit_and_notes_unknown_dependencies() {
    let graph = Graph::new();
    assert_eq!(
        graph.want("claude", &["git", "node"]),
        Ok(WantOutcome {
            registered: true,
            added: names(&["git", "node"]),
        })
    );
    assert_eq!(graph.state("claude"), Some(UnitState::Pending));
    assert_eq!(graph.state("git"), Some(UnitState::Unknown));
    assert_eq!(graph.state("node"), Some(UnitState::Unknown));
    assert_eq!(graph.is_ready("claude"), Ok(false));
    assert_eq!(graph.len(), 3);
}

#[test]
fn want_without_dependencies_only_registers() {
    let graph = Graph::new();
    let none: &[&str] = &[];
    assert_eq!(
        graph.want("a", none),
        Ok(WantOutcome {
            registered: true,
            added: vec![],
        })
    );
    assert_eq!(
        graph.want("a", none),
        Ok(WantOutcome {
            registered: false,
            added: vec![],
        })
    );
    assert_eq!(graph.state("a"), Some(UnitState::Pending));
    assert_eq!(kinds(&all_events(&graph)), vec![registered("a")]);
}

#[test]
fn want_on_an_unknown_unit_registers_it() {
    let graph = Graph::new();
    graph.want("a", &["b"]).unwrap();
    assert_eq!(
        graph.want("b", &["c"]),
        Ok(WantOutcome {
            registered: true,
            added: names(&["c"]),
        })
    );
    assert_eq!(graph.state("b"), Some(UnitState::Pending));
    assert!(graph.snapshot("b").unwrap().registered_at.is_some());
}

#[test]
fn repeating_an_edge_is_a_no_op() {
    let graph = Graph::new();
    graph.want("a", &["b"]).unwrap();
    let before = observable(&graph);
    assert_eq!(
        graph.want("a", &["b"]),
        Ok(WantOutcome {
            registered: false,
            added: vec![],
        })
    );
    assert_eq!(observable(&graph), before);
}

#[test]
fn a_dependency_named_twice_in_one_call_is_one_edge() {
    let graph = Graph::new();
    assert_eq!(graph.want("a", &["b", "b"]).unwrap().added, names(&["b"]));
    assert_eq!(graph.snapshot("a").unwrap().dependencies.len(), 1);
    start_and_complete(&graph, "b");
    assert_eq!(graph.is_ready("a"), Ok(true));
}

#[test]
fn want_adds_only_the_edges_that_are_new() {
    let graph = Graph::new();
    graph.want("a", &["b"]).unwrap();
    assert_eq!(
        graph.want("a", &["b", "c"]),
        Ok(WantOutcome {
            registered: false,
            added: names(&["c"]),
        })
    );
    let deps: Vec<UnitName> = graph
        .snapshot("a")
        .unwrap()
        .dependencies
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(deps, names(&["b", "c"]));
}

#[test]
fn want_is_all_or_nothing() {
    let graph = Graph::new();
    // c -> a and b -> c, so `a -> b` would close a -> b -> c -> a.
    graph.want("c", &["a"]).unwrap();
    graph.want("b", &["c"]).unwrap();
    graph.register("a").unwrap();
    graph.register("done").unwrap();
    start_and_complete(&graph, "done");
    let before = observable(&graph);

    let refusals: Vec<(&str, Vec<&str>)> = vec![
        ("a", vec!["fresh", "b"]),           // cycle after a new name
        ("a", vec!["fresh", "done", ""]),    // one bad name among good ones
        ("a", vec!["fresh", "a"]),           // self-dependency among good ones
        ("newcomer", vec!["fresh", "x\ny"]), // a new unit is not registered either
        ("", vec!["fresh"]),
    ];
    for (unit, deps) in refusals {
        assert!(graph.want(unit, &deps).is_err(), "{unit} {deps:?}");
        assert_eq!(
            observable(&graph),
            before,
            "want {unit} {deps:?} left a trace"
        );
        assert_eq!(graph.state("fresh"), None);
        assert_eq!(graph.state("newcomer"), None);
    }

    graph.try_start("a").unwrap();
    let before = observable(&graph);
    assert_eq!(
        graph.want("a", &["fresh"]),
        Err(wrong_state("a", Operation::Want, UnitState::Started))
    );
    assert_eq!(observable(&graph), before);
}

#[test]
fn self_dependency_is_refused() {
    let graph = Graph::new();
    let error = graph.want("a", &["a"]).unwrap_err();
    assert_eq!(error, GraphError::SelfDependency { unit: name("a") });
    assert_eq!(error.to_string(), "`a` cannot depend on itself");
    assert!(graph.is_empty());
}

#[test]
fn an_edge_closing_a_cycle_is_refused_with_the_path() {
    let graph = Graph::new();
    graph.want("b", &["c"]).unwrap();
    graph.want("c", &["a"]).unwrap();
    let error = graph.want("a", &["b"]).unwrap_err();
    assert_eq!(
        error,
        GraphError::Cycle {
            path: names(&["a", "b", "c", "a"]),
        }
    );
    assert_eq!(error.to_string(), "cycle: a -> b -> c -> a");
}

#[test]
fn a_two_unit_cycle_through_an_unknown_name_is_refused() {
    let graph = Graph::new();
    graph.want("a", &["b"]).unwrap();
    assert_eq!(
        graph.want("b", &["a"]).unwrap_err().to_string(),
        "cycle: b -> a -> b"
    );
    assert_eq!(graph.state("b"), Some(UnitState::Unknown));
}

#[test]
fn a_cycle_against_the_registration_order_is_found_after_reordering() {
    // Edges against the order units were first seen in force the topological order to be rebuilt;
    // the cycle check must still see every path afterwards.
    let graph = Graph::new();
    for unit in ["a", "b", "c", "d"] {
        graph.register(unit).unwrap();
    }
    graph.want("a", &["b"]).unwrap();
    graph.want("b", &["c"]).unwrap();
    graph.want("c", &["d"]).unwrap();
    assert_eq!(
        graph.want("d", &["a"]).unwrap_err().to_string(),
        "cycle: d -> a -> b -> c -> d"
    );
    assert_eq!(
        graph.want("c", &["a"]).unwrap_err().to_string(),
        "cycle: c -> a -> b -> c"
    );
    // A path that is not a cycle is still accepted.
    assert!(graph.want("a", &["d"]).is_ok());
}

#[test]
fn a_cycle_through_a_failed_unit_is_refused() {
    let graph = Graph::new();
    graph.want("t", &["p"]).unwrap();
    graph.fail("t", "broken").unwrap();
    // x wants t after t failed: x fails too, and the edge x -> t still exists.
    graph.want("x", &["t"]).unwrap();
    assert_eq!(graph.state("x"), Some(UnitState::Failed));
    assert_eq!(
        graph.want("p", &["x"]).unwrap_err().to_string(),
        "cycle: p -> x -> t -> p"
    );
}

#[test]
fn want_is_refused_on_a_started_or_finished_unit() {
    let graph = Graph::new();
    for unit in ["s", "c", "f"] {
        graph.register(unit).unwrap();
    }
    graph.try_start("s").unwrap();
    start_and_complete(&graph, "c");
    graph.fail("f", "no").unwrap();
    for (unit, state) in [
        ("s", UnitState::Started),
        ("c", UnitState::Completed),
        ("f", UnitState::Failed),
    ] {
        let error = graph.want(unit, &["z"]).unwrap_err();
        assert_eq!(error, wrong_state(unit, Operation::Want, state));
        assert_eq!(
            error.to_string(),
            format!(
                "cannot add dependencies to `{unit}`: it is already {state}, so its ordering can no longer hold"
            )
        );
    }
    assert_eq!(graph.state("z"), None);
}

#[test]
fn wanting_a_completed_dependency_is_satisfied_at_once() {
    let graph = Graph::new();
    graph.register("git").unwrap();
    start_and_complete(&graph, "git");
    graph.want("claude", &["git"]).unwrap();
    assert_eq!(graph.is_ready("claude"), Ok(true));
    assert_eq!(
        graph.snapshot("claude").unwrap().dependencies,
        vec![dependency("git", UnitState::Completed)]
    );
    assert_eq!(
        graph.snapshot("git").unwrap().dependents,
        names(&["claude"])
    );
    assert_eq!(graph.try_start("claude"), Ok(StartAttempt::Started));
}

#[test]
fn wanting_a_failed_dependency_fails_the_unit_and_its_dependents() {
    let graph = Graph::new();
    graph.want("later", &["claude"]).unwrap();
    graph.fail("git", "clone failed").unwrap();
    graph.want("claude", &["git"]).unwrap();
    assert_eq!(graph.state("claude"), Some(UnitState::Failed));
    assert_eq!(graph.state("later"), Some(UnitState::Failed));
    for unit in ["claude", "later"] {
        assert_eq!(
            graph.snapshot(unit).unwrap().failure,
            Some(dependency_failure("git", "clone failed"))
        );
    }
    assert_eq!(
        graph.snapshot("git").unwrap().dependents,
        names(&["claude"])
    );
}

// ---- try_start ----

#[test]
fn try_start_starts_a_unit_without_dependencies() {
    let graph = Graph::new();
    graph.register("a").unwrap();
    assert_eq!(graph.is_ready("a"), Ok(true));
    assert_eq!(graph.try_start("a"), Ok(StartAttempt::Started));
    assert_eq!(graph.state("a"), Some(UnitState::Started));
}

#[test]
fn try_start_registers_a_new_name() {
    let graph = Graph::new();
    assert_eq!(graph.try_start("new"), Ok(StartAttempt::Started));
    assert_eq!(
        kinds(&all_events(&graph)),
        vec![registered("new"), started("new")]
    );
}

#[test]
fn try_start_reports_the_unmet_dependencies_in_order() {
    let graph = Graph::new();
    graph.want("a", &["b", "c"]).unwrap();
    graph.register("b").unwrap();
    assert_eq!(
        graph.try_start("a"),
        Ok(StartAttempt::Blocked {
            unmet: vec![
                dependency("b", UnitState::Pending),
                dependency("c", UnitState::Unknown),
            ],
        })
    );
    start_and_complete(&graph, "b");
    graph.try_start("c").unwrap();
    assert_eq!(
        graph.try_start("a"),
        Ok(StartAttempt::Blocked {
            unmet: vec![dependency("c", UnitState::Started)],
        })
    );
    assert_eq!(graph.state("a"), Some(UnitState::Pending));
    graph.complete("c").unwrap();
    assert_eq!(graph.try_start("a"), Ok(StartAttempt::Started));
}

#[test]
fn starting_twice_is_refused_and_says_what_to_do() {
    let graph = Graph::new();
    graph.try_start("a").unwrap();
    let error = graph.try_start("a").unwrap_err();
    assert_eq!(
        error,
        wrong_state("a", Operation::Start, UnitState::Started)
    );
    assert_eq!(
        error.to_string(),
        "`a` is already started; complete it (or fail it) when its work is done"
    );
}

#[test]
fn starting_a_finished_unit_is_refused() {
    let graph = Graph::new();
    start_and_complete(&graph, "c");
    let error = graph.try_start("c").unwrap_err();
    assert_eq!(
        error,
        wrong_state("c", Operation::Start, UnitState::Completed)
    );
    assert_eq!(error.to_string(), "`c` already completed; a unit runs once");

    graph.fail("f", "no").unwrap();
    let error = graph.try_start("f").unwrap_err();
    assert_eq!(error, wrong_state("f", Operation::Start, UnitState::Failed));
    assert_eq!(
        error.to_string(),
        "`f` is failed; a finished unit cannot start again"
    );
}

#[test]
fn starting_a_unit_failed_by_a_dependency_names_the_root_dependency() {
    let graph = Graph::new();
    graph.want("app", &["db"]).unwrap();
    graph.want("db", &["disk"]).unwrap();
    graph.fail("disk", "no space").unwrap();
    let error = graph.try_start("app").unwrap_err();
    assert_eq!(
        error,
        GraphError::DependencyFailed {
            unit: name("app"),
            dependency: name("disk"),
            reason: "no space".to_owned(),
        }
    );
    assert_eq!(
        error.to_string(),
        "`app` cannot start: dependency `disk` failed: no space"
    );
}

// ---- complete ----

#[test]
fn completing_a_unit_that_has_not_started_is_refused() {
    let graph = Graph::new();
    graph.want("a", &["u"]).unwrap();
    let error = graph.complete("a").unwrap_err();
    assert_eq!(
        error,
        wrong_state("a", Operation::Complete, UnitState::Pending)
    );
    assert_eq!(
        error.to_string(),
        "`a` is pending, not started; start it first"
    );
    let error = graph.complete("u").unwrap_err();
    assert_eq!(
        error,
        wrong_state("u", Operation::Complete, UnitState::Unknown)
    );
    assert_eq!(
        error.to_string(),
        "`u` is unknown, not started; start it first"
    );
    assert_eq!(
        graph.complete("nobody"),
        Err(GraphError::NoSuchUnit {
            unit: name("nobody"),
        })
    );
}

#[test]
fn completing_a_finished_unit_is_refused() {
    let graph = Graph::new();
    start_and_complete(&graph, "c");
    let error = graph.complete("c").unwrap_err();
    assert_eq!(
        error,
        wrong_state("c", Operation::Complete, UnitState::Completed)
    );
    assert_eq!(
        error.to_string(),
        "`c` is already completed; only a started unit can complete"
    );
    graph.fail("f", "no").unwrap();
    assert_eq!(
        graph.complete("f").unwrap_err().to_string(),
        "`f` is already failed; only a started unit can complete"
    );
}

#[test]
fn completing_releases_dependents_whose_last_dependency_it_was() {
    let graph = Graph::new();
    graph.want("one", &["a"]).unwrap();
    graph.want("both", &["a", "b"]).unwrap();
    graph.register("a").unwrap();
    graph.register("b").unwrap();
    start_and_complete(&graph, "a");
    assert_eq!(graph.is_ready("one"), Ok(true));
    assert_eq!(graph.is_ready("both"), Ok(false));
    start_and_complete(&graph, "b");
    assert_eq!(graph.is_ready("both"), Ok(true));
}

// ---- fail ----

#[test]
fn failing_a_finished_unit_is_refused() {
    let graph = Graph::new();
    start_and_complete(&graph, "c");
    let error = graph.fail("c", "late").unwrap_err();
    assert_eq!(
        error,
        wrong_state("c", Operation::Fail, UnitState::Completed)
    );
    assert_eq!(
        error.to_string(),
        "`c` is already completed; a finished unit cannot fail; its outcome is final (use a new unit name to redo the work)"
    );
    graph.fail("f", "first").unwrap();
    assert_eq!(
        graph.fail("f", "second").unwrap_err(),
        wrong_state("f", Operation::Fail, UnitState::Failed)
    );
    assert_eq!(
        graph.snapshot("f").unwrap().failure.unwrap().reason,
        "first"
    );
}

#[test]
fn failing_pending_and_started_units_is_allowed() {
    let graph = Graph::new();
    graph.register("p").unwrap();
    graph.try_start("s").unwrap();
    assert!(graph.fail("p", "a").is_ok());
    assert!(graph.fail("s", "b").is_ok());
    assert_eq!(graph.state("p"), Some(UnitState::Failed));
    assert_eq!(graph.state("s"), Some(UnitState::Failed));
}

#[test]
fn failing_a_never_mentioned_name_registers_and_fails_it() {
    let graph = Graph::new();
    assert_eq!(graph.fail("x", "why").unwrap().propagated, vec![]);
    assert_eq!(graph.state("x"), Some(UnitState::Failed));
    assert_eq!(
        kinds(&all_events(&graph)),
        vec![
            registered("x"),
            EventKind::Failed {
                unit: name("x"),
                reason: "why".to_owned(),
                cause: None,
            },
        ]
    );
}

#[test]
fn failure_propagates_transitively_to_units_that_have_not_started() {
    let graph = Graph::new();
    // root <- mid <- leaf, root <- side; `other` (started) and `dep` (a dependency of root) are not
    // dependents and must be untouched.
    graph.want("root", &["dep"]).unwrap();
    graph.want("mid", &["root"]).unwrap();
    graph.want("leaf", &["mid"]).unwrap();
    graph.want("side", &["root", "other"]).unwrap();
    graph.try_start("dep").unwrap();
    graph.try_start("other").unwrap();

    let outcome = graph.fail("root", "exit status 2").unwrap();
    let mut propagated = outcome.propagated.clone();
    propagated.sort();
    assert_eq!(propagated, names(&["leaf", "mid", "side"]));
    for unit in ["mid", "leaf", "side"] {
        let snapshot = graph.snapshot(unit).unwrap();
        assert_eq!(snapshot.state, UnitState::Failed, "{unit}");
        assert_eq!(
            snapshot.failure,
            Some(dependency_failure("root", "exit status 2"))
        );
        assert!(snapshot.finished_at.is_some());
    }
    assert_eq!(graph.state("dep"), Some(UnitState::Started));
    assert_eq!(graph.state("other"), Some(UnitState::Started));
    assert_eq!(
        graph.snapshot("root").unwrap().failure,
        Some(Failure {
            reason: "exit status 2".to_owned(),
            cause: None,
            cause_reason: None,
        })
    );
    let failed_events: Vec<(UnitName, String, Option<UnitName>)> = all_events(&graph)
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Failed {
                unit,
                reason,
                cause,
            } => Some((unit, reason, cause)),
            _ => None,
        })
        .collect();
    assert_eq!(failed_events.len(), 4, "{failed_events:?}");
    assert_eq!(
        failed_events[0],
        (name("root"), "exit status 2".to_owned(), None)
    );
    for (unit, reason, cause) in &failed_events[1..] {
        assert!(outcome.propagated.contains(unit));
        assert_eq!(reason, "dependency root failed");
        assert_eq!(cause.as_ref(), Some(&name("root")));
    }
}

#[test]
fn failing_a_started_unit_propagates_to_its_dependents() {
    let graph = Graph::new();
    graph.try_start("build").unwrap();
    graph.want("test", &["build"]).unwrap();
    assert_eq!(
        graph.fail("build", "killed").unwrap().propagated,
        names(&["test"])
    );
    assert_eq!(
        graph.snapshot("test").unwrap().failure,
        Some(dependency_failure("build", "killed"))
    );
}

// ---- readiness, states, snapshots ----

#[test]
fn readiness_means_every_dependency_completed() {
    let graph = Graph::new();
    graph.want("a", &["b", "c"]).unwrap();
    assert_eq!(graph.is_ready("a"), Ok(false));
    start_and_complete(&graph, "b");
    graph.try_start("c").unwrap();
    assert_eq!(
        graph.is_ready("a"),
        Ok(false),
        "a started dependency is not enough"
    );
    graph.complete("c").unwrap();
    assert_eq!(graph.is_ready("a"), Ok(true));
    graph.register("lonely").unwrap();
    assert_eq!(graph.is_ready("lonely"), Ok(true));
    assert_eq!(
        graph.is_ready("nobody"),
        Err(GraphError::NoSuchUnit {
            unit: name("nobody"),
        })
    );
}

#[test]
fn a_never_mentioned_name_has_no_state_and_no_snapshot() {
    let graph = Graph::new();
    graph.want("a", &["b"]).unwrap();
    assert_eq!(graph.state("nobody"), None);
    let error = graph.snapshot("nobody").unwrap_err();
    assert_eq!(
        error,
        GraphError::NoSuchUnit {
            unit: name("nobody"),
        }
    );
    assert_eq!(error.to_string(), "no such unit: `nobody`");
}

#[test]
fn a_name_only_depended_on_is_unknown() {
    let graph = Graph::new();
    graph.want("a", &["u"]).unwrap();
    let snapshot = graph.snapshot("u").unwrap();
    assert_eq!(snapshot.state, UnitState::Unknown);
    assert!(snapshot.ready);
    assert_eq!(snapshot.dependencies, vec![]);
    assert_eq!(snapshot.dependents, names(&["a"]));
    assert_eq!(
        (
            snapshot.registered_at,
            snapshot.started_at,
            snapshot.finished_at
        ),
        (None, None, None)
    );
    assert_eq!(graph.is_ready("u"), Ok(true));
    // Registering it (explicitly or by starting it) makes it pending, once.
    assert_eq!(graph.register("u"), Ok(true));
    assert_eq!(graph.register("u"), Ok(false));
    assert_eq!(graph.state("u"), Some(UnitState::Pending));
}

#[test]
fn starting_an_unknown_unit_registers_and_starts_it() {
    let graph = Graph::new();
    graph.want("a", &["u"]).unwrap();
    let before = all_events(&graph).len();
    assert_eq!(graph.try_start("u"), Ok(StartAttempt::Started));
    assert_eq!(
        kinds(&all_events(&graph)[before..]),
        vec![registered("u"), started("u")]
    );
}

#[test]
fn a_snapshot_shows_dependencies_dependents_timestamps_and_failure() {
    let graph = Graph::new();
    graph.want("app", &["db", "cache"]).unwrap();
    graph.want("web", &["app"]).unwrap();
    start_and_complete(&graph, "db");
    graph.register("cache").unwrap();

    let app = graph.snapshot("app").unwrap();
    assert_eq!(app.name, name("app"));
    assert_eq!(app.state, UnitState::Pending);
    assert!(!app.ready);
    assert_eq!(
        app.dependencies,
        vec![
            dependency("db", UnitState::Completed),
            dependency("cache", UnitState::Pending),
        ]
    );
    assert_eq!(app.dependents, names(&["web"]));
    assert!(app.registered_at.is_some());
    assert_eq!(
        (app.started_at, app.finished_at, app.failure),
        (None, None, None)
    );

    let db = graph.snapshot("db").unwrap();
    let (registered_at, started_at, finished_at) = (
        db.registered_at.unwrap(),
        db.started_at.unwrap(),
        db.finished_at.unwrap(),
    );
    assert!(registered_at <= started_at && started_at <= finished_at);
    assert_eq!(db.failure, None);

    // Event times are the snapshot's timestamps.
    let events = all_events(&graph);
    let at = |kind: EventKind| events.iter().find(|e| e.kind == kind).unwrap().at;
    assert_eq!(at(started("db")), started_at);
    assert_eq!(at(completed("db")), finished_at);

    graph.fail("cache", "evicted").unwrap();
    let cache = graph.snapshot("cache").unwrap();
    assert_eq!(cache.state, UnitState::Failed);
    assert!(cache.finished_at.unwrap() >= cache.registered_at.unwrap());
    assert_eq!(cache.started_at, None);
    assert_eq!(
        cache.failure,
        Some(Failure {
            reason: "evicted".to_owned(),
            cause: None,
            cause_reason: None,
        })
    );
    assert_eq!(
        graph.snapshot("web").unwrap().failure,
        Some(dependency_failure("cache", "evicted"))
    );
}

#[test]
fn list_shows_every_unit_sorted_by_name() {
    let graph = Graph::new();
    graph.want("m", &["z", "b"]).unwrap();
    graph.register("a").unwrap();
    graph.try_start("k").unwrap();
    let listed: Vec<(UnitName, UnitState)> = graph
        .list()
        .into_iter()
        .map(|s| (s.name, s.state))
        .collect();
    assert_eq!(
        listed,
        vec![
            (name("a"), UnitState::Pending),
            (name("b"), UnitState::Unknown),
            (name("k"), UnitState::Started),
            (name("m"), UnitState::Pending),
            (name("z"), UnitState::Unknown),
        ]
    );
    assert_eq!(graph.list()[3], graph.snapshot("m").unwrap());
}

// ---- export ----

fn export_fixture() -> Graph {
    let graph = Graph::new();
    graph
        .want("app", &["db", "say \"hi\" \\ <now> #1"])
        .unwrap();
    start_and_complete(&graph, "db");
    graph.fail("broken", "no").unwrap();
    graph.try_start("running").unwrap();
    graph
}

#[test]
fn dot_export_draws_every_unit_with_its_state_and_edges() {
    let graph = export_fixture();
    let dot = graph.export(GraphFormat::Dot);
    assert_eq!(dot, to_dot(&graph.list()));
    assert!(dot.starts_with("digraph unitsync {\n"), "{dot}");
    assert!(dot.ends_with("}\n"), "{dot}");
    // One statement per line: the label separates the name from the state with DOT's `\n` escape.
    let statements: Vec<&str> = dot.lines().collect();
    assert!(
        statements[3..statements.len() - 1]
            .iter()
            .all(|s| s.ends_with(';')),
        "{dot}"
    );
    let node = |id: &str| {
        statements
            .iter()
            .find(|s| s.starts_with(&format!("  {id} [label=")))
            .unwrap_or_else(|| panic!("no node {id} in\n{dot}"))
            .to_string()
    };
    for (unit, state) in [
        ("app", "pending"),
        ("db", "completed"),
        ("broken", "failed"),
        ("running", "started"),
    ] {
        let line = node(&format!("\"{unit}\""));
        assert!(
            line.contains(&format!("label=\"{unit}\\n{state}\"")),
            "{line}"
        );
        assert!(!line.contains("dashed"), "{line}");
    }
    // The odd name is quoted (quote and backslash escaped) and, being unknown, drawn dashed.
    let odd = "\"say \\\"hi\\\" \\\\ <now> #1\"";
    let odd_node = node(odd);
    assert!(odd_node.contains("style=\"rounded,dashed\""), "{odd_node}");
    assert!(odd_node.contains("\\nunknown\", fillcolor="), "{odd_node}");
    assert!(dot.contains("  \"db\" -> \"app\";\n"), "{dot}");
    assert!(dot.contains(&format!("  {odd} -> \"app\";\n")), "{dot}");
    assert_eq!(dot.matches(" -> ").count(), 2, "{dot}");
}

#[test]
fn mermaid_export_draws_every_unit_with_its_state_and_edges() {
    let graph = export_fixture();
    let mermaid = graph.export(GraphFormat::Mermaid);
    assert_eq!(mermaid, to_mermaid(&graph.list()));
    assert!(mermaid.starts_with("flowchart LR\n"), "{mermaid}");
    // list() order: app, broken, db, running, then the odd name (sorted by bytes).
    let listed: Vec<String> = graph.list().iter().map(|s| s.name.to_string()).collect();
    let id = |unit: &str| format!("u{}", listed.iter().position(|l| l == unit).unwrap());
    for (unit, state) in [
        ("app", "pending"),
        ("db", "completed"),
        ("broken", "failed"),
        ("running", "started"),
    ] {
        let node = format!("  {}[\"{unit}<br/>{state}\"]:::{state}\n", id(unit));
        assert!(mermaid.contains(&node), "missing {node:?} in\n{mermaid}");
    }
    let odd = "say \"hi\" \\ <now> #1";
    let odd_node = format!(
        "  {}[\"say #quot;hi#quot; \\ #lt;now#gt; #35;1<br/>unknown\"]:::unknown\n",
        id(odd)
    );
    assert!(
        mermaid.contains(&odd_node),
        "missing {odd_node:?} in\n{mermaid}"
    );
    assert!(
        mermaid.contains("  classDef unknown fill:#ffffff,stroke-dasharray: 5 5\n"),
        "{mermaid}"
    );
    assert!(!mermaid.contains("classDef pending fill:#eeeeee,stroke-dasharray"));
    assert!(mermaid.contains(&format!("  {} --> {}\n", id("db"), id("app"))));
    assert!(mermaid.contains(&format!("  {} --> {}\n", id(odd), id("app"))));
    assert_eq!(mermaid.matches(" --> ").count(), 2, "{mermaid}");
}

// ---- names ----

#[test]
fn invalid_names_are_refused_everywhere_a_name_is_accepted() {
    let too_long = "x".repeat(256);
    let cases = [
        ("", NameRule::Empty),
        (too_long.as_str(), NameRule::TooLong),
        ("tab\there", NameRule::ControlCharacter),
        ("nul\0", NameRule::ControlCharacter),
    ];
    let graph = Graph::new();
    graph.register("ok").unwrap();
    let before = observable(&graph);
    for (bad, rule) in cases {
        let expected = GraphError::InvalidName {
            name: bad.to_owned(),
            rule,
        };
        assert_eq!(graph.register(bad), Err(expected.clone()));
        assert_eq!(graph.want(bad, &["ok"]), Err(expected.clone()));
        assert_eq!(graph.want("ok", &[bad]), Err(expected.clone()));
        assert_eq!(graph.try_start(bad), Err(expected.clone()));
        assert_eq!(graph.complete(bad), Err(expected.clone()));
        assert_eq!(graph.fail(bad, "x"), Err(expected.clone()));
        assert_eq!(graph.is_ready(bad), Err(expected.clone()));
        assert_eq!(graph.snapshot(bad), Err(expected.clone()));
        assert_eq!(graph.state(bad), None);
        assert!(expected.to_string().starts_with("invalid unit name "));
        assert!(expected.to_string().ends_with(&rule.to_string()));
    }
    assert_eq!(observable(&graph), before);
    assert_eq!(
        GraphError::InvalidName {
            name: String::new(),
            rule: NameRule::Empty,
        }
        .to_string(),
        "invalid unit name \"\": a unit name must not be empty"
    );
    // The limits are exactly 1 and 255 bytes.
    assert_eq!(graph.register(&"y".repeat(255)), Ok(true));
    assert_eq!(graph.register("é"), Ok(true));
}

// ---- events ----

#[test]
fn every_change_is_one_event_in_increasing_order() {
    let graph = Graph::new();
    graph.want("a", &["b"]).unwrap();
    graph.register("b").unwrap();
    graph.try_start("b").unwrap();
    graph.complete("b").unwrap();
    graph.try_start("a").unwrap();
    graph.want("c", &["d"]).unwrap();
    graph.fail("d", "boom").unwrap();
    // Refusals add nothing.
    let _ = graph.try_start("a");
    let _ = graph.complete("d");
    let _ = graph.want("a", &["b"]);

    let events = all_events(&graph);
    assert_eq!(
        kinds(&events),
        vec![
            registered("a"),
            edge("a", "b"),
            registered("b"),
            started("b"),
            completed("b"),
            started("a"),
            registered("c"),
            edge("c", "d"),
            registered("d"),
            EventKind::Failed {
                unit: name("d"),
                reason: "boom".to_owned(),
                cause: None,
            },
            EventKind::Failed {
                unit: name("c"),
                reason: "dependency d failed".to_owned(),
                cause: Some(name("d")),
            },
        ]
    );
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=11).collect::<Vec<u64>>());
    assert!(events.windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!(graph.next_event_seq(), 12);
    assert_eq!(events[0].kind.unit(), &name("a"));
}

#[test]
fn subscribe_starts_now_and_subscribe_from_starts_at_a_number() {
    let graph = Graph::new();
    graph.register("old").unwrap();
    let mut live = graph.subscribe();
    assert_eq!(live.next_seq(), 2);
    assert_eq!(live.try_recv(), Ok(None));
    graph.register("new").unwrap();
    let event = live.try_recv().unwrap().unwrap();
    assert_eq!((event.seq, event.kind), (2, registered("new")));
    assert_eq!(live.try_recv(), Ok(None));

    let mut replay = graph.subscribe_from(1);
    assert_eq!(replay.try_recv().unwrap().unwrap().kind, registered("old"));
    assert_eq!(replay.try_recv().unwrap().unwrap().kind, registered("new"));
    assert_eq!(replay.try_recv(), Ok(None));
    let mut from_two = graph.subscribe_from(2);
    assert_eq!(from_two.try_recv().unwrap().unwrap().seq, 2);
}

#[test]
fn a_lagging_subscriber_is_told_how_much_it_missed_and_continues() {
    let graph = Graph::with_event_capacity(4);
    let mut feed = graph.subscribe();
    for i in 0..10 {
        graph.register(&format!("r{i}")).unwrap();
    }
    assert_eq!(feed.try_recv(), Err(unitsync_core::Lagged(6)));
    let rest: Vec<EventKind> = std::iter::from_fn(|| feed.try_recv().unwrap())
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        rest,
        vec![
            registered("r6"),
            registered("r7"),
            registered("r8"),
            registered("r9")
        ]
    );
    graph.register("after").unwrap();
    assert_eq!(feed.try_recv().unwrap().unwrap().kind, registered("after"));
    assert_eq!(feed.try_recv(), Ok(None));
    assert_eq!(
        unitsync_core::Lagged(6).to_string(),
        "the subscriber fell behind and missed 6 events"
    );
}

#[test]
fn subscribing_from_a_number_no_longer_buffered_lags_first() {
    let graph = Graph::with_event_capacity(2);
    for i in 0..5 {
        graph.register(&format!("r{i}")).unwrap();
    }
    let mut feed = graph.subscribe_from(1);
    assert_eq!(feed.try_recv(), Err(unitsync_core::Lagged(3)));
    assert_eq!(feed.try_recv().unwrap().unwrap().kind, registered("r3"));
}

#[tokio::test]
async fn recv_waits_for_the_next_event() {
    let graph = Graph::new();
    let mut feed = graph.subscribe();
    let publisher = {
        let graph = graph.clone();
        tokio::spawn(async move { graph.register("late").unwrap() })
    };
    let event = feed.recv().await.unwrap();
    assert_eq!(event.kind, registered("late"));
    publisher.await.unwrap();
}
