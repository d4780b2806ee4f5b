//! Model 1: `complete(dep)` racing `want(unit, dep)` followed by `try_start(unit)`.
//!
//! The edge `u -> dep` is accounted for exactly once: either `want`'s push lands before `complete`
//! seals `dep`'s dependents list (and `complete` decrements `u`'s unmet count), or the seal wins and
//! `want` decrements it itself. A lost or doubled decrement shows up as `u` never becoming ready or
//! starting too early.
#![cfg(loom)]

use loom::thread;
use unitsync_core::{EventKind, Graph, StartAttempt, UnitState};
use unitsync_loom_tests::{check, completed, events, started};

/// Asserts the end state both models share: `u` started, every dependency completed before it.
fn assert_started_after(graph: &Graph, deps: &[&str]) {
    assert_eq!(graph.state("u"), Some(UnitState::Started));
    let snapshot = graph.snapshot("u").unwrap();
    assert!(snapshot.ready);
    assert_eq!(snapshot.dependencies.len(), deps.len());
    assert!(snapshot.dependencies.iter().all(|d| d.satisfied));
    let log = events(graph);
    let start = started(&log, "u").expect("u has a Started event");
    for dep in deps {
        let done = completed(&log, dep).expect("dep has a Completed event");
        assert!(
            done < start,
            "u started (#{start}) before {dep} completed (#{done})"
        );
    }
    let edges: Vec<u64> = log
        .iter()
        .filter(
            |e| matches!(&e.kind, EventKind::DependencyAdded { unit, .. } if unit.as_str() == "u"),
        )
        .map(|e| e.seq)
        .collect();
    assert_eq!(
        edges.len(),
        deps.len(),
        "one DependencyAdded event per edge"
    );
    assert!(edges.iter().all(|&edge| edge < start));
}

#[test]
fn complete_dep_races_want_then_try_start() {
    check(|| {
        let graph = Graph::with_event_capacity(16);
        graph.register("dep").unwrap();
        assert_eq!(graph.try_start("dep"), Ok(StartAttempt::Started));

        let completer = {
            let graph = graph.clone();
            thread::spawn(move || graph.complete("dep").unwrap())
        };
        graph.want("u", &["dep"]).unwrap();
        // Readiness must imply completion at every instant, not only at the end.
        if graph.is_ready("u").unwrap() {
            assert_eq!(graph.state("dep"), Some(UnitState::Completed));
        }
        let first = graph.try_start("u").unwrap();
        completer.join().unwrap();

        if first != StartAttempt::Started {
            // Blocked while dep was not completed yet; now it is, so the count must be back to 0.
            assert_eq!(graph.state("u"), Some(UnitState::Pending));
            assert!(graph.is_ready("u").unwrap(), "unmet count stuck above zero");
            assert_eq!(graph.try_start("u"), Ok(StartAttempt::Started));
        }
        assert_started_after(&graph, &["dep"]);
    });
}

#[test]
fn completes_of_two_deps_race_want_of_both_then_try_start() {
    check(|| {
        let graph = Graph::with_event_capacity(32);
        for dep in ["d1", "d2"] {
            graph.register(dep).unwrap();
            assert_eq!(graph.try_start(dep), Ok(StartAttempt::Started));
        }

        let completer = {
            let graph = graph.clone();
            thread::spawn(move || {
                graph.complete("d1").unwrap();
                graph.complete("d2").unwrap();
            })
        };
        graph.want("u", &["d1", "d2"]).unwrap();
        let first = graph.try_start("u").unwrap();
        if first == StartAttempt::Started {
            assert_eq!(graph.state("d1"), Some(UnitState::Completed));
            assert_eq!(graph.state("d2"), Some(UnitState::Completed));
        }
        completer.join().unwrap();

        if first != StartAttempt::Started {
            assert!(graph.is_ready("u").unwrap(), "unmet count stuck above zero");
            assert_eq!(graph.try_start("u"), Ok(StartAttempt::Started));
        }
        assert_started_after(&graph, &["d1", "d2"]);
    });
}
