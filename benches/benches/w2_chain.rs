//! Criterion bench of W2 (chain): (a) building a chain, where a cycle check that walks the graph on
//! every insert costs O(N²), and (b) start, complete, check-next-ready along it; our graph (group
//! `ours`) beside the `RwLock` baseline (group `rwlock_baseline`). The baseline's build is O(N²), so
//! (a) runs at N = 1,000 only here (the `report` binary measures N = 10,000).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::time::Duration;
use unitsync_benches::baseline_graph::RwLockGraph;
use unitsync_benches::workloads::{Chain, Subject};
use unitsync_core::Graph;

fn chain<S: Subject>(c: &mut Criterion, group: &str) {
    let mut group = c.benchmark_group(group);
    let small = Chain::new(1_000);
    group.throughput(Throughput::Elements(1_000));
    group.bench_function("w2a_build/1000", |b| {
        b.iter_batched(
            S::fresh,
            |graph| {
                small.build(&graph);
                graph
            },
            BatchSize::LargeInput,
        )
    });
    for n in [1_000usize, 10_000] {
        let chain = Chain::new(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("w2b_run/{n}"), |b| {
            b.iter_batched(
                || chain.built::<S>(),
                |graph| {
                    chain.run(&graph);
                    graph
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    chain::<Graph>(c, "ours");
    chain::<RwLockGraph>(c, "rwlock_baseline");
}

criterion_group! {
    name = w2;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(w2);
