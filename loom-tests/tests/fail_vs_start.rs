//! Model 3a: `fail` and its propagation racing `try_start`, `complete` and `start` waiters.
//!
//! `fail(x)` CASes `x` to failed (from pending, or from started: a direct fail may fail a running
//! unit), then seals `x`'s dependents list and fails every dependent that is still pending, and so
//! on transitively; it never fails a unit that started. A unit starts only by CAS-ing
//! `(pending, unmet = 0)` to started, and a failed dependency never completes, so its dependents'
//! unmet counts stay above zero: no unit starts after one of its dependencies failed. These models
//! race those CASes on a chain `x <- a <- b` (`a` depends on `x`, `b` on `a`).
//!
//! Wall time (release, `LOOM_MAX_PREEMPTIONS=2`, 2 shared cores, slowest of 3 runs):
//! `fail_races_try_start_then_complete_of_ready_unit` 125 interleavings, 6 ms;
//! `fail_propagation_races_complete_of_sibling_dep_and_try_start` 34 interleavings, 2 ms;
//! `start_waiter_races_fail_of_dep` 241 interleavings, 12 ms;
//! `wait_ready_waiter_races_fail_of_dep` 220 interleavings, 9 ms;
//! `wait_ready_waiter_on_failed_unit_races_fail_of_dep` 243 interleavings, 10 ms.
#![cfg(loom)]

use unitsync_core::{FailOutcome, GraphError, Operation, ReadyOutcome, StartAttempt, UnitState};
use unitsync_loom_tests::{
    assert_failed_by, block_on_waiter, check, completed, events, failed, failure_of, model_graph,
    name, spawn, start_now, started,
};

/// `fail(x)` races `try_start(x)` on a ready `x`; the starter then tries to complete `x` and start
/// its dependent `a`. Exactly one outcome order per run, and each must leave a consistent chain.
#[test]
fn fail_races_try_start_then_complete_of_ready_unit() {
    check(|| {
        let graph = model_graph();
        graph.register("x").unwrap();
        graph.want("a", &["x"]).unwrap();
        graph.want("b", &["a"]).unwrap();

        let failer = spawn(&graph, |graph| graph.fail("x", "boom"));
        let start_x = graph.try_start("x");
        let complete_x = match start_x {
            Ok(StartAttempt::Started) => Some(graph.complete("x")),
            _ => None,
        };
        let start_a = graph.try_start("a");
        let fail_x = failer.join().unwrap();

        let log = events(&graph);
        match (&start_x, &complete_x, &fail_x) {
            // The fail came first: `x` never starts, the refusal names the state.
            (Err(refused), None, Ok(_)) => {
                assert_eq!(
                    *refused,
                    GraphError::WrongState {
                        unit: name("x"),
                        operation: Operation::Start,
                        state: UnitState::Failed,
                    }
                );
                assert_eq!(started(&log, "x"), None);
            }
            // The start won, then the fail: a direct fail still fails a started unit, and the
            // completion is refused (exactly one of fail/complete wins).
            (Ok(StartAttempt::Started), Some(Err(GraphError::WrongState { state, .. })), Ok(_)) => {
                assert_eq!(*state, UnitState::Failed);
                let start = started(&log, "x").expect("x started");
                assert!(start < failed(&log, "x").expect("x failed"));
            }
            // Start and complete both won: the fail is refused, and `a` is released.
            (Ok(StartAttempt::Started), Some(Ok(())), Err(refused)) => {
                assert_eq!(
                    *refused,
                    GraphError::WrongState {
                        unit: name("x"),
                        operation: Operation::Fail,
                        state: UnitState::Completed,
                    }
                );
                assert_eq!(graph.state("x"), Some(UnitState::Completed));
                // `a`'s start came after `x` completed on this thread, so it must have started.
                assert_eq!(start_a, Ok(StartAttempt::Started));
                assert!(completed(&log, "x").unwrap() < started(&log, "a").unwrap());
                assert_eq!(graph.state("b"), Some(UnitState::Pending));
                return;
            }
            other => panic!("impossible combination of outcomes: {other:?}"),
        }

        // The fail won `x`: `x` carries its own reason, and propagation reached every transitive
        // dependent (none of which could have started: `x` never completed).
        assert_eq!(graph.state("x"), Some(UnitState::Failed));
        assert_eq!(failure_of(&graph, "x").reason, "boom");
        assert_eq!(
            fail_x,
            Ok(FailOutcome {
                propagated: vec![name("a"), name("b")],
            })
        );
        assert_failed_by(&graph, "a", "x", "boom");
        assert_failed_by(&graph, "b", "x", "boom");
        assert_eq!(started(&log, "a"), None, "a started although x failed");
        // `a`'s start attempt: blocked before propagation reached it, refused (naming `x`) after.
        match start_a {
            Ok(StartAttempt::Blocked { .. }) => {}
            Err(GraphError::DependencyFailed {
                dependency, reason, ..
            }) => assert_eq!((dependency.as_str(), reason.as_str()), ("x", "boom")),
            other => panic!("unexpected start of a: {other:?}"),
        }
    });
}

/// `fail(x)` propagates through `x <- a <- b` while the other thread completes `a`'s second
/// dependency `y` and tries to start `a`. `a` must never start, and both `a` and `b` must fail.
#[test]
fn fail_propagation_races_complete_of_sibling_dep_and_try_start() {
    check(|| {
        let graph = model_graph();
        start_now(&graph, "x");
        start_now(&graph, "y");
        graph.want("a", &["x", "y"]).unwrap();
        graph.want("b", &["a"]).unwrap();

        let failer = spawn(&graph, |graph| graph.fail("x", "boom").unwrap());
        graph.complete("y").unwrap();
        let start_a = graph.try_start("a");
        let outcome = failer.join().unwrap();

        // Propagation reached every not-started transitive dependent, in chain order.
        assert_eq!(outcome.propagated, vec![name("a"), name("b")]);
        assert_failed_by(&graph, "a", "x", "boom");
        assert_failed_by(&graph, "b", "x", "boom");
        // The completion of `y` does not make `a` ready: `x` still counts as unmet.
        assert!(!graph.is_ready("a").unwrap());
        assert_eq!(started(&events(&graph), "a"), None);
        match start_a {
            Ok(StartAttempt::Blocked { .. }) | Err(GraphError::DependencyFailed { .. }) => {}
            other => panic!("unexpected start of a: {other:?}"),
        }
        assert_eq!(graph.state("y"), Some(UnitState::Completed));
    });
}

/// A `start("a")` waiter blocked on `x` races `fail(x)`: the waiter must wake and return the
/// dependency failure (never hang), and the failure must still reach `b`.
#[test]
fn start_waiter_races_fail_of_dep() {
    check(|| {
        let graph = model_graph();
        start_now(&graph, "x");
        graph.want("a", &["x"]).unwrap();
        graph.want("b", &["a"]).unwrap();

        let failer = spawn(&graph, |graph| graph.fail("x", "boom").unwrap());
        // No lost wake-up on the failure path: the waiter finishes, with the cause named.
        let outcome = block_on_waiter(&graph, graph.start("a", None, |_| {}));
        assert_eq!(
            outcome,
            Err(GraphError::DependencyFailed {
                unit: name("a"),
                dependency: name("x"),
                reason: "boom".to_owned(),
            })
        );
        failer.join().unwrap();

        assert_failed_by(&graph, "a", "x", "boom");
        assert_failed_by(&graph, "b", "x", "boom");
    });
}

/// A `wait_ready("a")` waiter blocked on `x` races `fail(x)`: the waiter must wake and report that
/// `a` will never be ready, naming the failed dependency.
#[test]
fn wait_ready_waiter_races_fail_of_dep() {
    check(|| {
        let graph = model_graph();
        start_now(&graph, "x");
        graph.want("a", &["x"]).unwrap();

        let failer = spawn(&graph, |graph| graph.fail("x", "boom").unwrap());
        // No lost wake-up on the failure path of `wait_ready` either.
        let outcome = block_on_waiter(&graph, graph.wait_ready("a", None));
        assert_eq!(
            outcome,
            Ok(ReadyOutcome::DependencyFailed {
                dependency: name("x"),
                reason: "boom".to_owned(),
            })
        );
        failer.join().unwrap();

        assert_failed_by(&graph, "a", "x", "boom");
    });
}

/// A `wait_ready("a")` waiter on a unit that failed by itself (so propagation will not fail it
/// again) races `fail(x)` of its dependency: propagation must still wake the waiter, which then
/// reports the dependency failure instead of waiting for a readiness that can never come.
#[test]
fn wait_ready_waiter_on_failed_unit_races_fail_of_dep() {
    check(|| {
        let graph = model_graph();
        start_now(&graph, "x");
        graph.want("a", &["x"]).unwrap();
        graph.fail("a", "own").unwrap();

        let failer = spawn(&graph, |graph| graph.fail("x", "boom").unwrap());
        let outcome = block_on_waiter(&graph, graph.wait_ready("a", None));
        assert_eq!(
            outcome,
            Ok(ReadyOutcome::DependencyFailed {
                dependency: name("x"),
                reason: "boom".to_owned(),
            })
        );
        let fail_x = failer.join().unwrap();

        // Propagation never re-fails a finished unit: `a` keeps its own reason and one Failed event.
        assert!(fail_x.propagated.is_empty());
        assert_eq!(failure_of(&graph, "a").reason, "own");
        assert!(failed(&events(&graph), "a").is_some());
    });
}
