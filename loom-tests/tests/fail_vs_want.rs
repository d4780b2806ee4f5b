//! Model 3b: `fail` racing `want`, and two failures racing to the same dependent.
//!
//! For an edge `u -> d` added while `d` fails, exactly one side accounts for it, decided by the order
//! of `want`'s push onto `d`'s dependents list and the seal that `fail`'s propagation puts on it: a
//! push before the seal is seen by the propagation, which fails `u`; a push refused by the seal makes
//! `want` fail `u` itself (and propagate from `u`). Either way `u` ends failed with the root cause
//! named, never stuck pending. A unit reached by two propagations fails once: its status CAS has one
//! winner, and only the winner propagates further.
//!
//! Wall time (release, `LOOM_MAX_PREEMPTIONS=2`, 2 shared cores, slowest of 3 runs):
//! `want_races_fail_of_wanted_dep` 367 interleavings, 18 ms;
//! `want_onto_chain_member_races_fail_propagation` 47 interleavings, 2 ms;
//! `want_then_fail_of_dep_races_try_start_of_dependent` 61 interleavings, 2 ms;
//! `fails_of_two_deps_race_to_shared_dependent` 36 interleavings, 2 ms.
#![cfg(loom)]

use unitsync_core::{GraphError, Operation, StartAttempt, UnitState};
use unitsync_loom_tests::{
    assert_failed_by, block_on_waiter, check, events, failure_of, model_graph, name, spawn,
    start_now, started,
};

/// `want(u, [x])` races `fail(x)`; `u` already has a dependent `v`. Then a `start("u")` waiter must
/// return the dependency failure at once instead of waiting for a completion that never comes.
#[test]
fn want_races_fail_of_wanted_dep() {
    check(|| {
        let graph = model_graph();
        graph.register("x").unwrap();
        graph.want("v", &["u"]).unwrap();

        let failer = spawn(&graph, |graph| graph.fail("x", "boom").unwrap());
        // `want` never refuses here: `u` is unknown or pending, and the edge closes no cycle.
        let wanted = graph.want("u", &["x"]).unwrap();
        assert_eq!(wanted.added, vec![name("x")]);
        let outcome = block_on_waiter(&graph, graph.start("u", None, |_| {}));
        let fail = failer.join().unwrap();

        // Never stuck pending: the waiter got the failure, naming the root cause.
        assert_eq!(
            outcome,
            Err(GraphError::DependencyFailed {
                unit: name("u"),
                dependency: name("x"),
                reason: "boom".to_owned(),
            })
        );
        // `u` and its own dependent fail once each (the event helpers panic on a second Failed).
        assert_failed_by(&graph, "u", "x", "boom");
        assert_failed_by(&graph, "v", "x", "boom");
        // The fail's report lists `u` and `v` exactly when its propagation (not `want`) got them.
        assert!(
            fail.propagated.is_empty() || fail.propagated == vec![name("u"), name("v")],
            "propagated {:?}",
            fail.propagated
        );
    });
}

/// `fail(x)` propagates to `a` (which depends on `x`) while the other thread makes `b` depend on
/// `a` and tries to start it. Whether `b`'s edge lands before or after `a` is failed or sealed, `b`
/// must end failed with `x` named as the cause.
#[test]
fn want_onto_chain_member_races_fail_propagation() {
    check(|| {
        let graph = model_graph();
        start_now(&graph, "x");
        graph.want("a", &["x"]).unwrap();

        let failer = spawn(&graph, |graph| graph.fail("x", "boom").unwrap());
        graph.want("b", &["a"]).unwrap();
        let start_b = graph.try_start("b");
        failer.join().unwrap();

        assert_failed_by(&graph, "a", "x", "boom");
        // The root cause travels through `a`'s record, not `a` itself.
        assert_failed_by(&graph, "b", "x", "boom");
        assert_eq!(started(&events(&graph), "b"), None);
        match start_b {
            Ok(StartAttempt::Blocked { .. }) => {}
            Err(GraphError::DependencyFailed {
                dependency, reason, ..
            }) => assert_eq!((dependency.as_str(), reason.as_str()), ("x", "boom")),
            other => panic!("unexpected start of b: {other:?}"),
        }
    });
}

/// One thread adds the edge `a -> x` and then fails `x`; the other starts `a`, which is ready until
/// the edge lands. Either the start wins (the `want` is refused and the failure does not touch the
/// started `a`) or the `want` wins (`a` can no longer start and the failure reaches it).
#[test]
fn want_then_fail_of_dep_races_try_start_of_dependent() {
    check(|| {
        let graph = model_graph();
        graph.register("a").unwrap();
        graph.register("x").unwrap();

        let other = spawn(&graph, |graph| {
            let wanted = graph.want("a", &["x"]);
            (wanted, graph.fail("x", "boom").unwrap())
        });
        let start_a = graph.try_start("a");
        let (wanted, fail) = other.join().unwrap();

        match wanted {
            Err(refused) => {
                // The start came first: its ordering can no longer change, and propagation must
                // leave the started unit alone (there is no edge to follow).
                assert_eq!(
                    refused,
                    GraphError::WrongState {
                        unit: name("a"),
                        operation: Operation::Want,
                        state: UnitState::Started,
                    }
                );
                assert_eq!(start_a, Ok(StartAttempt::Started));
                assert!(fail.propagated.is_empty());
                assert_eq!(graph.state("a"), Some(UnitState::Started));
            }
            Ok(_) => {
                // The edge came first: `a` is blocked by `x`, which never completes, so it cannot
                // have started, and the failure reaches it.
                assert_eq!(fail.propagated, vec![name("a")]);
                assert_failed_by(&graph, "a", "x", "boom");
                assert_eq!(started(&events(&graph), "a"), None);
                assert!(matches!(
                    start_a,
                    Ok(StartAttempt::Blocked { .. }) | Err(GraphError::DependencyFailed { .. })
                ));
            }
        }
    });
}

/// `c` depends on `a` and `b`, `d` on `c`; `a` and `b` fail on two threads at once. `c` and `d`
/// fail exactly once each, both naming the same root cause, reported by exactly one of the fails.
#[test]
fn fails_of_two_deps_race_to_shared_dependent() {
    check(|| {
        let graph = model_graph();
        graph.register("a").unwrap();
        graph.register("b").unwrap();
        graph.want("c", &["a", "b"]).unwrap();
        graph.want("d", &["c"]).unwrap();

        let other = spawn(&graph, |graph| graph.fail("a", "ra").unwrap());
        let fail_b = graph.fail("b", "rb").unwrap();
        let fail_a = other.join().unwrap();

        // The event helpers inside `assert_failed_by` panic on a second Failed event for a unit.
        let cause = failure_of(&graph, "c")
            .cause
            .expect("c failed by a dependency");
        let (reason, winner, loser) = match cause.as_str() {
            "a" => ("ra", &fail_a, &fail_b),
            "b" => ("rb", &fail_b, &fail_a),
            other => panic!("c failed because of {other}"),
        };
        assert_failed_by(&graph, "c", cause.as_str(), reason);
        // Only the propagation that failed `c` goes on from it, so `d` names the same cause.
        assert_failed_by(&graph, "d", cause.as_str(), reason);
        assert_eq!(winner.propagated, vec![name("c"), name("d")]);
        assert!(loser.propagated.is_empty());
    });
}
