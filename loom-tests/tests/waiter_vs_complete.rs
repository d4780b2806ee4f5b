//! Model 2: an async waiter registering interest racing the change that releases it (no lost
//! wake-up).
//!
//! Every wait in `core/src/waiting.rs` enables its `Notified` future, then checks its condition, then
//! sleeps; every change that can satisfy the condition (`satisfy` after a dependency completes, a
//! unit's own transitions) notifies *after* it is visible. If any change could fall between a
//! waiter's check and its sleep, the waiter would sleep forever: under `loom::future::block_on` that
//! leaves every thread blocked, and loom fails the model with a deadlock. So each model here passes
//! only if the waiter finishes in every explored interleaving.
//!
//! Wall time (release, `LOOM_MAX_PREEMPTIONS=2`, 2 shared cores, slowest of 3 runs):
//! `start_waiter_races_complete_of_last_dep` 204 interleavings, 8 ms;
//! `start_waiter_races_completes_of_two_deps_on_two_threads` (3 threads) 25746 interleavings, 1.7 s;
//! `wait_ready_waiter_races_complete_of_last_dep` 188 interleavings, 7 ms;
//! `wait_for_started_races_register_and_start_of_unknown_unit` 509 interleavings, 19 ms;
//! `start_waiter_races_register_start_complete_of_unknown_dep` 1732 interleavings, 75 ms;
//! `blocked_report_races_complete_of_last_dep` (found the empty-report bug; see its doc);
//! `two_first_waiters_race_to_install_the_notification_while_dep_completes` (3 threads) 77428
//! interleavings, 4.5 s.
//!
//! A unit's notification is allocated by its first waiter (`sync::LazyNotify` in the core), so every
//! model here also races that installation against the notifier's pointer load: the waiter's
//! no-op read-modify-write on the status words it reads (`Unit::sync_waiter`) is what makes the
//! notifier find it. Removing that sync makes every model here (and `fail_vs_start`'s waiter models)
//! deadlock under loom.
#![cfg(loom)]

use unitsync_core::{
    DependencyStatus, Graph, ReadyOutcome, StartAttempt, StartOutcome, UnitState, WaitOutcome,
    WaitTarget,
};
use unitsync_loom_tests::{
    block_on_waiter, check, completed, events, model_graph, spawn, start_now, started,
};

/// Asserts that `unit` started, and after every one of `deps` completed (by event number).
fn assert_started_after(graph: &Graph, unit: &str, deps: &[&str]) {
    assert_eq!(graph.state(unit), Some(UnitState::Started));
    let log = events(graph);
    let start = started(&log, unit).expect("a Started event");
    for dep in deps {
        let done = completed(&log, dep).expect("a Completed event for the dependency");
        assert!(
            done < start,
            "{unit} started (#{start}) before {dep} completed (#{done})"
        );
    }
}

/// The waiter is `start("u")`, blocked on `dep`; the other thread completes `dep`.
#[test]
fn start_waiter_races_complete_of_last_dep() {
    check(|| {
        let graph = model_graph();
        start_now(&graph, "dep");
        graph.want("u", &["dep"]).unwrap();

        let completer = spawn(&graph, |graph| graph.complete("dep").unwrap());
        // Finishing at all is the no-lost-wake-up property; the outcome must be a real start.
        let outcome = block_on_waiter(&graph, graph.start("u", None, |_| {}));
        assert_eq!(outcome, Ok(StartOutcome::Started));
        completer.join().unwrap();

        // Start is atomic with readiness: `dep`'s completion precedes `u`'s start.
        assert_started_after(&graph, "u", &["dep"]);
    });
}

/// The waiter is `start("u")`, blocked on two dependencies; two threads complete one each.
#[test]
fn start_waiter_races_completes_of_two_deps_on_two_threads() {
    check(|| {
        let graph = model_graph();
        start_now(&graph, "d1");
        start_now(&graph, "d2");
        graph.want("u", &["d1", "d2"]).unwrap();

        let first = spawn(&graph, |graph| graph.complete("d1").unwrap());
        let second = spawn(&graph, |graph| graph.complete("d2").unwrap());
        // No lost wake-up, whichever completion is the last one and however it interleaves.
        let outcome = block_on_waiter(&graph, graph.start("u", None, |_| {}));
        assert_eq!(outcome, Ok(StartOutcome::Started));
        first.join().unwrap();
        second.join().unwrap();

        // Neither completion alone may release `u`: both precede its start.
        assert_started_after(&graph, "u", &["d1", "d2"]);
    });
}

/// Two `wait_ready("u")` waiters on two threads race to install `u`'s notification (it is allocated
/// by the first waiter; one CAS wins, the loser frees its own and uses the winner's) while a third
/// thread completes `dep`. Both must wake, whichever installed it and whenever the completion's
/// notifier loads the pointer (before any install, between, or after both).
#[test]
fn two_first_waiters_race_to_install_the_notification_while_dep_completes() {
    check(|| {
        let graph = model_graph();
        start_now(&graph, "dep");
        graph.want("u", &["dep"]).unwrap();

        let other = spawn(&graph, |graph| {
            loom::future::block_on(graph.wait_ready("u", None))
        });
        let completer = spawn(&graph, |graph| graph.complete("dep").unwrap());
        let mine = loom::future::block_on(graph.wait_ready("u", None));
        assert_eq!(mine, Ok(ReadyOutcome::Ready));
        assert_eq!(other.join().unwrap(), Ok(ReadyOutcome::Ready));
        completer.join().unwrap();
        assert_eq!(
            graph.parked_waiters(),
            0,
            "a finished waiter is still counted"
        );
        assert_eq!(graph.state("u"), Some(UnitState::Pending));
    });
}

/// The waiter is `wait_ready("u")` (it must not start `u`); the other thread completes `dep`.
#[test]
fn wait_ready_waiter_races_complete_of_last_dep() {
    check(|| {
        let graph = model_graph();
        start_now(&graph, "dep");
        graph.want("u", &["dep"]).unwrap();

        let completer = spawn(&graph, |graph| graph.complete("dep").unwrap());
        let outcome = block_on_waiter(&graph, graph.wait_ready("u", None));
        // Ready is only reported once `dep` really completed (checked before the join).
        assert_eq!(outcome, Ok(ReadyOutcome::Ready));
        assert_eq!(graph.state("dep"), Some(UnitState::Completed));
        completer.join().unwrap();

        // Waiting for readiness never changes the unit.
        assert_eq!(graph.state("u"), Some(UnitState::Pending));
    });
}

/// The waiter is `wait_for("w", started)` on a name nobody mentioned yet; the other thread
/// registers and starts `w` with `try_start`. Either side may be the one that creates the unit.
#[test]
fn wait_for_started_races_register_and_start_of_unknown_unit() {
    check(|| {
        let graph = model_graph();

        let starter = spawn(&graph, |graph| {
            assert_eq!(graph.try_start("w"), Ok(StartAttempt::Started))
        });
        let outcome = block_on_waiter(&graph, graph.wait_for("w", WaitTarget::Started, None));
        // Reached, and with the state the unit really had: nothing can complete it here.
        assert_eq!(outcome, Ok(WaitOutcome::Reached(UnitState::Started)));
        starter.join().unwrap();

        // One unit, however the two registrations raced.
        assert_eq!(graph.len(), 1);
    });
}

/// The waiter is `start("u")` on a dependency nobody registered yet; the other thread registers,
/// starts and completes it. Covers the wake-ups of `promote` and of a dependency's start (progress
/// reports), not only of `satisfy`.
#[test]
fn start_waiter_races_register_start_complete_of_unknown_dep() {
    check(|| {
        let graph = model_graph();
        graph.want("u", &["dep"]).unwrap();

        let worker = spawn(&graph, |graph| {
            assert_eq!(graph.try_start("dep"), Ok(StartAttempt::Started));
            graph.complete("dep").unwrap();
        });
        let outcome = block_on_waiter(&graph, graph.start("u", None, |_| {}));
        assert_eq!(outcome, Ok(StartOutcome::Started));
        worker.join().unwrap();

        assert_started_after(&graph, "u", &["dep"]);
    });
}

/// The same race as `start_waiter_races_complete_of_last_dep`, checking what the blocked waiter
/// reports: `start` calls `on_blocked` "with the unmet dependencies" (SPEC §3 `start`: "while waiting
/// prints which dependencies are unmet and their states"), so every report must name `dep`, in a
/// state that is not `completed`.
///
/// This model found a bug: if `dep`'s `complete` CAS lands between the waiter's status-word load
/// (unmet = 1) and its `unmet_dependencies` walk (which filters by the dependencies' states), the
/// waiter reported an empty list, and the agent forwarded it as `Blocked { unmet: [] }`. `start` now
/// skips an empty report (the coming decrement wakes it).
#[test]
fn blocked_report_races_complete_of_last_dep() {
    check(|| {
        let graph = model_graph();
        start_now(&graph, "dep");
        graph.want("u", &["dep"]).unwrap();

        let completer = spawn(&graph, |graph| graph.complete("dep").unwrap());
        let mut reports: Vec<Vec<DependencyStatus>> = Vec::new();
        let outcome = block_on_waiter(
            &graph,
            graph.start("u", None, |unmet| reports.push(unmet.to_vec())),
        );
        assert_eq!(outcome, Ok(StartOutcome::Started));
        completer.join().unwrap();

        for report in &reports {
            // A blocked unit is blocked by something: the report names its unmet dependency, unmet.
            assert_eq!(report.len(), 1, "report {reports:?}");
            assert_eq!(report[0].name.as_str(), "dep");
            assert_eq!(report[0].current, UnitState::Started);
            assert!(!report[0].satisfied);
        }
    });
}
