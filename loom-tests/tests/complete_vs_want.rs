//! Model 1: `complete(dep)` racing `want(u, dep)` followed by `try_start(u)`.
//!
//! `want` counts the edge `u -> dep` in `u`'s unmet count before it pushes `u` onto `dep`'s
//! dependents list; `complete` CASes `dep` to completed, then seals that list and decrements the
//! unmet count of every dependent pushed before the seal. The edge is accounted for exactly once:
//! either the push lands before the seal (and `complete`'s seal walk decrements `u`), or it lands
//! after (the push reports `Sealed`) and `want` decrements it itself. A lost decrement shows up as
//! `u` stuck unready after both threads finished; a doubled one, or a decrement before the
//! completion, as `u` ready or started before `dep` completed.
//!
//! Wall time (release, `LOOM_MAX_PREEMPTIONS=2`, 2 shared cores, slowest of 3 runs):
//! `complete_dep_races_want_then_try_start` 53 interleavings, 2 ms;
//! `completes_of_two_deps_race_want_of_both_then_try_start` 103 interleavings, 5 ms.
#![cfg(loom)]

use unitsync_core::{EventKind, Graph, StartAttempt, UnitState};
use unitsync_loom_tests::{check, completed, events, model_graph, spawn, start_now, started};

/// Asserts the end state both models share: `u` started, every dependency completed before it.
fn assert_started_after(graph: &Graph, deps: &[&str]) {
    assert_eq!(graph.state("u"), Some(UnitState::Started));
    // Each edge counted once and released once: ready, and every dependency listed and satisfied.
    let snapshot = graph.snapshot("u").unwrap();
    assert!(snapshot.ready);
    assert_eq!(snapshot.dependencies.len(), deps.len());
    assert!(snapshot.dependencies.iter().all(|d| d.satisfied));
    // Start is atomic with readiness: every completion is numbered before the start.
    let log = events(graph);
    let start = started(&log, "u").expect("u has a Started event");
    for dep in deps {
        let done = completed(&log, dep).expect("dep has a Completed event");
        assert!(
            done < start,
            "u started (#{start}) before {dep} completed (#{done})"
        );
    }
    // Every edge was published (once) before the unit could start on it.
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

/// One dependency: the completer's seal races `want`'s push; then `u` tries to start.
#[test]
fn complete_dep_races_want_then_try_start() {
    check(|| {
        let graph = model_graph();
        start_now(&graph, "dep");

        let completer = spawn(&graph, |graph| graph.complete("dep").unwrap());
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

/// Two dependencies completed one after the other while `want` adds both edges: the two edges
/// may be accounted for by different sides, and neither completion alone may release `u`.
#[test]
fn completes_of_two_deps_race_want_of_both_then_try_start() {
    check(|| {
        let graph = model_graph();
        start_now(&graph, "d1");
        start_now(&graph, "d2");

        let completer = spawn(&graph, |graph| {
            graph.complete("d1").unwrap();
            graph.complete("d2").unwrap();
        });
        graph.want("u", &["d1", "d2"]).unwrap();
        // Readiness implies every dependency completed, at every instant.
        if graph.is_ready("u").unwrap() {
            assert_eq!(graph.state("d1"), Some(UnitState::Completed));
            assert_eq!(graph.state("d2"), Some(UnitState::Completed));
        }
        let first = graph.try_start("u").unwrap();
        if first == StartAttempt::Started {
            // A start is only possible once both completions happened.
            assert_eq!(graph.state("d1"), Some(UnitState::Completed));
            assert_eq!(graph.state("d2"), Some(UnitState::Completed));
        }
        completer.join().unwrap();

        if first != StartAttempt::Started {
            // Both completions happened now, so the count must be back to 0.
            assert!(graph.is_ready("u").unwrap(), "unmet count stuck above zero");
            assert_eq!(graph.try_start("u"), Ok(StartAttempt::Started));
        }
        assert_started_after(&graph, &["d1", "d2"]);
    });
}
