//! Criterion bench of W1 (fan-out): (a) build, (b) start + complete `root` then confirm every
//! dependent ready, (c) wake a parked waiter on every dependent; our graph (group `ours`) beside the
//! `RwLock` baseline (group `rwlock_baseline`). Workload code lives in `unitsync_benches::workloads`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::time::Duration;
use unitsync_benches::baseline_graph::RwLockGraph;
use unitsync_benches::workloads::{self, Fanout, Subject};
use unitsync_core::Graph;

fn build_and_release<S: Subject>(c: &mut Criterion, group: &str) {
    let mut group = c.benchmark_group(group);
    for n in [1_000usize, 10_000] {
        let fanout = Fanout::new(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("w1a_build/{n}"), |b| {
            b.iter_batched(
                S::fresh,
                |graph| {
                    fanout.build(&graph);
                    graph
                },
                BatchSize::LargeInput,
            )
        });
        group.bench_function(format!("w1b_release/{n}"), |b| {
            b.iter_batched(
                || fanout.built::<S>(),
                |graph| {
                    fanout.release(&graph);
                    graph
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn wake(c: &mut Criterion) {
    let n = 1_000;
    let fanout = Fanout::new(n);
    c.benchmark_group("ours")
        .throughput(Throughput::Elements(n as u64))
        .bench_function(format!("w1c_wake/{n}"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| workloads::wake_all_async(&fanout, &fanout.built::<Graph>()))
                    .sum()
            })
        });
    c.benchmark_group("rwlock_baseline")
        .throughput(Throughput::Elements(n as u64))
        .bench_function(format!("w1c_wake/{n}"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| workloads::wake_all_condvar(&fanout, &fanout.built::<RwLockGraph>()))
                    .sum()
            })
        });
}

fn benches(c: &mut Criterion) {
    build_and_release::<Graph>(c, "ours");
    build_and_release::<RwLockGraph>(c, "rwlock_baseline");
    wake(c);
}

criterion_group! {
    name = w1;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(w1);
