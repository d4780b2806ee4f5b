//! Loom models of `unitsync-core` (draft).

use unitsync_core::{Event, EventKind, Failure, Graph, UnitName};

/// Runs `model` under loom, with preemption bound `LOOM_MAX_PREEMPTIONS` or 2 if that is unset.
#[cfg(loom)]
pub fn check<F>(model: F)
where
    F: Fn() + Sync + Send + 'static,
{
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(2);
    }
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&runs);
    let started = std::time::Instant::now();
    builder.check(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        model()
    });
    eprintln!(
        "explored {} interleavings (preemption bound {:?}) in {:.2?}",
        runs.load(Ordering::Relaxed),
        builder.preemption_bound,
        started.elapsed()
    );
}

/// A unit name (panics on an invalid one).
pub fn name(unit: &str) -> UnitName {
    UnitName::new(unit).expect("valid unit name")
}

/// Every event the graph published, from the first; panics if any was lost (the model's event
/// capacity must exceed the number of sequence numbers it uses).
pub fn events(graph: &Graph) -> Vec<Event> {
    let mut feed = graph.subscribe_from(1);
    let mut all = Vec::new();
    while let Some(event) = feed
        .try_recv()
        .expect("event capacity too small for this model")
    {
        all.push(event);
    }
    all
}

/// The sequence number of the single event matching `wanted`, `None` if there is none; panics if
/// there are several.
pub fn seq_of(events: &[Event], wanted: impl Fn(&EventKind) -> bool) -> Option<u64> {
    let mut found = events.iter().filter(|event| wanted(&event.kind));
    let first = found.next().map(|event| event.seq);
    assert!(found.next().is_none(), "event recorded twice: {events:#?}");
    first
}

/// `unit`'s `Started` event.
pub fn started(events: &[Event], unit: &str) -> Option<u64> {
    seq_of(
        events,
        |kind| matches!(kind, EventKind::Started { unit: u } if u.as_str() == unit),
    )
}

/// `unit`'s `Completed` event.
pub fn completed(events: &[Event], unit: &str) -> Option<u64> {
    seq_of(
        events,
        |kind| matches!(kind, EventKind::Completed { unit: u } if u.as_str() == unit),
    )
}

/// `unit`'s `Failed` event.
pub fn failed(events: &[Event], unit: &str) -> Option<u64> {
    seq_of(
        events,
        |kind| matches!(kind, EventKind::Failed { unit: u, .. } if u.as_str() == unit),
    )
}

/// The failure record of a unit that failed because `cause` failed with `cause_reason`.
pub fn dependency_failure(cause: &str, cause_reason: &str) -> Failure {
    Failure {
        reason: format!("dependency {cause} failed"),
        cause: Some(name(cause)),
        cause_reason: Some(cause_reason.to_owned()),
    }
}

/// The failure record of `unit` (panics if it has none).
pub fn failure_of(graph: &Graph, unit: &str) -> Failure {
    graph
        .snapshot(unit)
        .expect("unit exists")
        .failure
        .expect("unit has a failure record")
}
