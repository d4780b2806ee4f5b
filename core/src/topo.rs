//! Incremental cycle detection by a dynamic topological order (Pearce–Kelly).
//!
//! Every unit carries an integer `order` such that a dependency always has a smaller order than the
//! units that depend on it. Registered units get increasing orders and units first mentioned as a
//! dependency (unknown, so with no dependencies of their own) get decreasing negative ones, so the
//! common cases — wanting something registered earlier, or something never seen — agree with the
//! order and are accepted in O(1) without touching the graph. Only an edge against the order walks
//! the *affected region*: the units between the two orders reachable forward from the dependent and
//! backward from the dependency. Reaching the dependency from the dependent is a cycle; otherwise
//! those units are renumbered among their own orders so the new edge agrees.
//!
//! Everything here runs under the graph's structure lock (edge insertion is serialised; status
//! changes never take that lock and never read `order`). New units get their order from atomic
//! counters when they are created, without the lock: a new unit has no edge, so any order agrees
//! with its edges, and it takes part in a walk only once an edge (added under the lock) reaches it.
//! This module must not change edges or states.

use crate::name::UnitName;
use crate::unit::Unit;
use std::collections::{HashMap, HashSet};

fn key(unit: &Unit) -> *const Unit {
    unit
}

/// The cycle that `unit depends on dependency` would close, as `unit -> dependency -> ... -> unit`.
pub(crate) fn find_cycle(unit: &Unit, dependency: &Unit) -> Option<Vec<UnitName>> {
    let bound = dependency.order();
    if bound < unit.order() {
        return None;
    }
    // Forward from `unit` through its dependents, staying at or below the dependency's order.
    let mut parent: HashMap<*const Unit, &Unit> = HashMap::new();
    let mut seen: HashSet<*const Unit> = HashSet::from([key(unit)]);
    let mut stack = vec![unit];
    while let Some(current) = stack.pop() {
        let mut found = false;
        current.for_each_dependent(|next| {
            if found || next.order() > bound || !seen.insert(key(next)) {
                return;
            }
            parent.insert(key(next), current);
            if std::ptr::eq(next, dependency) {
                found = true;
            } else {
                stack.push(next);
            }
        });
        if found {
            // chain from dependency back to unit, following "is a dependent of" links
            let mut path = vec![unit.name.clone(), dependency.name.clone()];
            let mut at = key(dependency);
            while let Some(previous) = parent.get(&at) {
                path.push(previous.name.clone());
                if std::ptr::eq(*previous, unit) {
                    break;
                }
                at = key(previous);
            }
            return Some(path);
        }
    }
    None
}

/// Renumbers the affected region so that `dependency` comes before `unit`. Requires that the edge
/// closes no cycle (checked by [`find_cycle`] first).
pub(crate) fn restore_order(unit: &Unit, dependency: &Unit) {
    let (low, high) = (unit.order(), dependency.order());
    if high < low {
        return;
    }
    let forward = region(unit, |u, f| u.for_each_dependent(f), |o| o < high);
    let backward = region(dependency, |u, f| u.for_each_dependency(f), |o| o > low);
    let mut orders: Vec<i64> = forward.iter().chain(&backward).map(|u| u.order()).collect();
    orders.sort_unstable();
    for (unit, order) in backward.iter().chain(&forward).zip(orders) {
        unit.set_order(order);
    }
}

/// The units reachable from `start` through `neighbours` whose order passes `inside`, sorted by order.
fn region<'a>(
    start: &'a Unit,
    neighbours: impl Fn(&'a Unit, &mut dyn FnMut(&'a Unit)),
    inside: impl Fn(i64) -> bool,
) -> Vec<&'a Unit> {
    let mut seen: HashSet<*const Unit> = HashSet::from([key(start)]);
    let mut found = vec![start];
    let mut next = 0;
    while next < found.len() {
        let current = found[next];
        next += 1;
        neighbours(current, &mut |n: &'a Unit| {
            if inside(n.order()) && seen.insert(key(n)) {
                found.push(n);
            }
        });
    }
    found.sort_by_key(|u| u.order());
    found
}
