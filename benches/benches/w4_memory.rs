//! Criterion bench of W4 (memory): builds the random 3-edge graph (N = 10,000 here) and times it;
//! before benchmarking it prints the heap bytes per unit of both graphs, counted by the crate's
//! counting allocator, which this bench installs. Our graph (group `ours`) beside the `RwLock`
//! baseline (group `rwlock_baseline`; built without its cycle walk, see `Subject::want_unchecked`).
//! The `report` binary measures the full N = 100,000.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::time::Duration;
use unitsync_benches::alloc_counter::{self, CountingAlloc};
use unitsync_benches::baseline_graph::RwLockGraph;
use unitsync_benches::workloads::{Memory, Subject};
use unitsync_core::Graph;

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

const N: usize = 10_000;

fn bytes_per_unit<S: Subject>(memory: &Memory) -> f64 {
    let live = alloc_counter::measure_live(
        || {
            let graph = S::fresh();
            memory.build(&graph);
            graph
        },
        |_| {
            for _ in 0..8 {
                crossbeam_epoch::pin().flush();
            }
        },
    );
    live.retained as f64 / memory.len() as f64
}

fn memory<S: Subject>(c: &mut Criterion, group: &str, memory: &Memory) {
    let mut group = c.benchmark_group(group);
    group.throughput(Throughput::Elements(memory.len() as u64));
    group.bench_function(format!("w4_build/{N}"), |b| {
        b.iter_batched(
            S::fresh,
            |graph| {
                memory.build(&graph);
                graph
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let workload = Memory::new(N);
    eprintln!(
        "w4 heap bytes per unit at N={N}: ours {:.0}, rwlock_baseline {:.0}",
        bytes_per_unit::<Graph>(&workload),
        bytes_per_unit::<RwLockGraph>(&workload)
    );
    memory::<Graph>(c, "ours", &workload);
    memory::<RwLockGraph>(c, "rwlock_baseline", &workload);
}

criterion_group! {
    name = w4;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(w4);
