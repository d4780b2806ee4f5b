//! Criterion bench of W3 (mixed, concurrent): 1, 2 and 8 worker threads, each registering, wiring
//! and running its own 1,000 units on one shared graph; throughput is in operations (register, each
//! edge, each ready check, start, complete). Our graph (group `ours`) beside the `RwLock` baseline
//! (group `rwlock_baseline`).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::sync::Arc;
use std::time::Duration;
use unitsync_benches::baseline_graph::RwLockGraph;
use unitsync_benches::workloads::{Mixed, Subject};
use unitsync_core::Graph;

fn mixed<S: Subject>(c: &mut Criterion, group: &str) {
    let mut group = c.benchmark_group(group);
    for workers in [1usize, 2, 8] {
        let plan = Arc::new(Mixed::new(workers));
        group.throughput(Throughput::Elements(plan.ops()));
        group.bench_function(format!("w3_workers/{workers}"), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| plan.run::<S>()).sum())
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    mixed::<Graph>(c, "ours");
    mixed::<RwLockGraph>(c, "rwlock_baseline");
}

criterion_group! {
    name = w3;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(w3);
