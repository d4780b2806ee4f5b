//! Model 4: creating a name's unit without the structure lock.
//!
//! `register` (and `start`, `fail`, which register first) creates a new name's unit through the unit
//! table alone: the table's insertion decides which thread creates it, the loser uses the winner's
//! unit and promotes it if it is still `unknown`. `want` on a name nobody mentioned creates the unit
//! as `unknown` before it takes the structure lock, and registers it with its counting CAS. These
//! models race those paths on one new name and check that the name gets exactly one unit, registered
//! exactly once (one `Registered` event, and exactly one caller told it registered the unit), with
//! the edge counted and the events numbered in order.
//!
//! Wall time (release, `LOOM_MAX_PREEMPTIONS=2`, 2 shared cores):
//! `register_races_want_of_the_same_new_name` 35 interleavings, 2 ms;
//! `want_races_want_of_the_same_new_name` 29 interleavings, 2 ms (both pass at bound 4 too).
#![cfg(loom)]

use unitsync_core::{EventKind, UnitState};
use unitsync_loom_tests::{check, events, model_graph, seq_of, spawn};

/// How many `Registered` events `unit` has (at most one, or `seq_of` panics).
fn registered(log: &[unitsync_core::Event], unit: &str) -> Option<u64> {
    seq_of(
        log,
        |kind| matches!(kind, EventKind::Registered { unit: u } if u.as_str() == unit),
    )
}

/// `register("u")` on one thread, `want("u", ["d"])` on the other, `u` new to both.
#[test]
fn register_races_want_of_the_same_new_name() {
    check(|| {
        let graph = model_graph();
        graph.register("d").unwrap();

        let registrar = spawn(&graph, |graph| graph.register("u").unwrap());
        let wanted = graph.want("u", &["d"]).unwrap();
        let registered_by_register = registrar.join().unwrap();

        // Exactly one of them registered it, and there is one unit for the name.
        assert!(registered_by_register != wanted.registered);
        assert_eq!(graph.len(), 2);
        assert_eq!(graph.state("u"), Some(UnitState::Pending));
        let snapshot = graph.snapshot("u").unwrap();
        assert!(snapshot.registered_at.is_some());
        assert_eq!(snapshot.dependencies.len(), 1);
        assert!(!snapshot.ready, "the edge to a pending dependency is unmet");
        // One registration event, numbered before the edge's.
        let log = events(&graph);
        let registration = registered(&log, "u").expect("u registered");
        let edge = seq_of(
            &log,
            |kind| matches!(kind, EventKind::DependencyAdded { unit, .. } if unit.as_str() == "u"),
        )
        .expect("an edge event");
        assert!(registration < edge);
    });
}

/// Two `want`s on the same new name with different dependencies: one registers the unit, both edges
/// land, and the unit waits for both.
#[test]
fn want_races_want_of_the_same_new_name() {
    check(|| {
        let graph = model_graph();
        graph.register("d1").unwrap();
        graph.register("d2").unwrap();

        let other = spawn(&graph, |graph| graph.want("u", &["d2"]).unwrap());
        let mine = graph.want("u", &["d1"]).unwrap();
        let theirs = other.join().unwrap();

        assert!(mine.registered != theirs.registered);
        assert_eq!(graph.len(), 3);
        let snapshot = graph.snapshot("u").unwrap();
        assert_eq!(snapshot.state, UnitState::Pending);
        assert_eq!(snapshot.dependencies.len(), 2);
        assert!(!snapshot.ready);
        let log = events(&graph);
        assert!(registered(&log, "u").is_some());
    });
}
