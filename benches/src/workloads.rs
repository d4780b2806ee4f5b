//! The in-process workloads W1–W4 of `WORKLOADS.md`, defined once and run against any [`Subject`]:
//! our `unitsync_core::Graph` or the [`RwLockGraph`] baseline.
//!
//! Every workload pre-computes its unit names and edges when it is constructed, so the timed parts
//! call the graph and nothing else (no formatting, no allocation of ours). Random choices come from
//! [`SplitMix64`] with the seeds the workloads name, so every run builds the same graphs. The W1 (c)
//! wake-up measurements live here too, one per waiting style (tokio tasks on our graph, `Condvar`
//! threads and polling threads on the baseline). This module defines and times workloads; it must not
//! print, and it must not know how figures are reported.

use crate::baseline_graph::{Readiness, RwLockGraph};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use unitsync_core::{Graph, ReadyOutcome, StartAttempt};

/// The operations the workloads need, implemented by our graph and by the baseline. Every method
/// panics on a refusal: the workloads never ask for anything the graph should refuse.
pub trait Subject: Clone + Send + Sync + 'static {
    /// An empty graph.
    fn fresh() -> Self;
    /// Registers `unit` (pending).
    fn register_unit(&self, unit: &str);
    /// Makes `unit` wait for every one of `deps` (checked for cycles).
    fn want_all(&self, unit: &str, deps: &[&str]);
    /// `want_all` for building a graph outside any timed part (W2 (b) set-up) and for the memory
    /// workload W4: the baseline skips its O(N) cycle walk there, which leaves the same graph.
    fn want_unchecked(&self, unit: &str, deps: &[&str]) {
        self.want_all(unit, deps);
    }
    /// Starts `unit` if ready; whether it started.
    fn start_now(&self, unit: &str) -> bool;
    /// Completes a started unit.
    fn complete_unit(&self, unit: &str);
    /// Whether every dependency of `unit` completed.
    fn ready_now(&self, unit: &str) -> bool;
}

impl Subject for Graph {
    fn fresh() -> Self {
        Graph::new()
    }
    fn register_unit(&self, unit: &str) {
        self.register(unit).expect("register");
    }
    fn want_all(&self, unit: &str, deps: &[&str]) {
        self.want(unit, deps).expect("want");
    }
    fn start_now(&self, unit: &str) -> bool {
        matches!(self.try_start(unit).expect("start"), StartAttempt::Started)
    }
    fn complete_unit(&self, unit: &str) {
        self.complete(unit).expect("complete");
    }
    fn ready_now(&self, unit: &str) -> bool {
        self.is_ready(unit).expect("ready")
    }
}

impl Subject for RwLockGraph {
    fn fresh() -> Self {
        RwLockGraph::new()
    }
    fn register_unit(&self, unit: &str) {
        self.register(unit).expect("register");
    }
    fn want_all(&self, unit: &str, deps: &[&str]) {
        self.want(unit, deps).expect("want");
    }
    fn want_unchecked(&self, unit: &str, deps: &[&str]) {
        RwLockGraph::want_unchecked(self, unit, deps).expect("want");
    }
    fn start_now(&self, unit: &str) -> bool {
        self.try_start(unit).expect("start")
    }
    fn complete_unit(&self, unit: &str) {
        self.complete(unit).expect("complete");
    }
    fn ready_now(&self, unit: &str) -> bool {
        self.is_ready(unit).expect("ready")
    }
}

/// A small, fast, seedable generator (SplitMix64), so every run picks the same random edges.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound > 0`).
    pub fn below(&mut self, bound: usize) -> usize {
        ((u128::from(self.next_u64()) * bound as u128) >> 64) as usize
    }

    /// `count` distinct numbers in `0..bound` (all of them if `bound <= count`), in drawing order.
    pub fn distinct_below(&mut self, bound: usize, count: usize) -> Vec<usize> {
        if bound <= count {
            return (0..bound).collect();
        }
        let mut picked = Vec::with_capacity(count);
        while picked.len() < count {
            let candidate = self.below(bound);
            if !picked.contains(&candidate) {
                picked.push(candidate);
            }
        }
        picked
    }
}

/// Up to three dependency names on the stack, for a `want` call without allocating.
fn names<'a>(all: &'a [String], picked: &[usize]) -> ([&'a str; 3], usize) {
    let mut out = [""; 3];
    for (slot, &index) in out.iter_mut().zip(picked) {
        *slot = all[index].as_str();
    }
    (out, picked.len().min(3))
}

/// W1, fan-out: `root` and N units `d{i}` that each want `root`.
#[derive(Debug, Clone)]
pub struct Fanout {
    /// `root`.
    pub root: String,
    /// `d0` … `d{N-1}`.
    pub dependents: Vec<String>,
}

impl Fanout {
    /// The workload with `n` dependents.
    pub fn new(n: usize) -> Self {
        Self {
            root: "root".to_owned(),
            dependents: (0..n).map(|i| format!("d{i}")).collect(),
        }
    }

    /// N.
    pub fn len(&self) -> usize {
        self.dependents.len()
    }

    /// Whether N is 0.
    pub fn is_empty(&self) -> bool {
        self.dependents.is_empty()
    }

    /// (a) register `root`; for each i register `d{i}` and want `d{i}` `root`.
    pub fn build<S: Subject>(&self, graph: &S) {
        graph.register_unit(&self.root);
        let root = [self.root.as_str()];
        for dependent in &self.dependents {
            graph.register_unit(dependent);
            graph.want_all(dependent, &root);
        }
    }

    /// (b) start and complete `root`, then confirm every `d{i}` is ready.
    pub fn release<S: Subject>(&self, graph: &S) {
        self.complete_root(graph);
        for dependent in &self.dependents {
            assert!(graph.ready_now(dependent), "{dependent} should be ready");
        }
    }

    /// Start and complete `root` only (the first part of (b)).
    pub fn complete_root<S: Subject>(&self, graph: &S) {
        assert!(graph.start_now(&self.root), "root should start");
        graph.complete_unit(&self.root);
    }

    /// A fresh graph with the fan-out built.
    pub fn built<S: Subject>(&self) -> S {
        let graph = S::fresh();
        self.build(&graph);
        graph
    }
}

/// W1 (c) on our graph: an async waiter (`wait_ready`, one tokio task each) parked on every `d{i}`
/// of a built `graph`; times `start root` + `complete root` until the last waiter has woken.
/// Runs on a current-thread runtime, so the waking and the woken share one core.
pub fn wake_all_async(fanout: &Fanout, graph: &Graph) -> Duration {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let parked = Arc::new(AtomicUsize::new(0));
        let mut waiters = Vec::with_capacity(fanout.len());
        for dependent in &fanout.dependents {
            let graph = graph.clone();
            let dependent = dependent.clone();
            let parked = Arc::clone(&parked);
            waiters.push(tokio::spawn(async move {
                parked.fetch_add(1, Ordering::Relaxed);
                // The first poll of `wait_ready` parks the task (in the same poll as the count).
                let outcome = graph.wait_ready(&dependent, None).await;
                assert_eq!(outcome, Ok(ReadyOutcome::Ready));
                Instant::now()
            }));
        }
        while parked.load(Ordering::Relaxed) < fanout.len() {
            tokio::task::yield_now().await;
        }
        let begin = Instant::now();
        fanout.complete_root(graph);
        let mut last = begin;
        for waiter in waiters {
            last = last.max(waiter.await.expect("waiter task"));
        }
        last - begin
    })
}

/// W1 (c) on the baseline: one OS thread blocked in `wait_ready` (the `Condvar`) per `d{i}`; times
/// `start root` + `complete root` until the last thread has woken and seen its unit ready.
pub fn wake_all_condvar(fanout: &Fanout, graph: &RwLockGraph) -> Duration {
    let threads: Vec<_> = fanout
        .dependents
        .iter()
        .map(|dependent| {
            let graph = graph.clone();
            let dependent = dependent.clone();
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    assert_eq!(graph.wait_ready(&dependent), Ok(Readiness::Ready));
                    Instant::now()
                })
                .expect("spawn waiter thread")
        })
        .collect();
    while graph.parked() < fanout.len() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let begin = Instant::now();
    fanout.complete_root(graph);
    threads
        .into_iter()
        .map(|t| t.join().expect("waiter thread"))
        .fold(begin, Instant::max)
        - begin
}

/// The Go CLI's way of waiting, sampled for real: `waiters` threads poll readiness every `interval`,
/// their phases spread evenly over one interval (as independent CLI processes would be); `root`
/// completes once all are polling. Returns each waiter's delay from the completion to its wake-up.
/// Takes about two intervals.
pub fn polling_wake_sample(waiters: usize, interval: Duration) -> Vec<Duration> {
    let fanout = Fanout::new(waiters);
    let graph: RwLockGraph = fanout.built();
    let threads: Vec<_> = fanout
        .dependents
        .iter()
        .enumerate()
        .map(|(i, dependent)| {
            let graph = graph.clone();
            let dependent = dependent.clone();
            let phase = interval.mul_f64((i as f64 + 0.5) / waiters as f64);
            std::thread::spawn(move || {
                std::thread::sleep(phase);
                assert_eq!(
                    graph.wait_ready_polling(&dependent, interval),
                    Ok(Readiness::Ready)
                );
                Instant::now()
            })
        })
        .collect();
    std::thread::sleep(interval + interval / 10);
    let begin = Instant::now();
    fanout.complete_root(&graph);
    threads
        .into_iter()
        .map(|t| {
            t.join()
                .expect("polling thread")
                .saturating_duration_since(begin)
        })
        .collect()
}

/// W2, chain: `u{i}` wants `u{i-1}`.
#[derive(Debug, Clone)]
pub struct Chain {
    /// `u0` … `u{N-1}`.
    pub units: Vec<String>,
}

impl Chain {
    /// The chain of `n` units.
    pub fn new(n: usize) -> Self {
        Self {
            units: (0..n).map(|i| format!("u{i}")).collect(),
        }
    }

    /// N.
    pub fn len(&self) -> usize {
        self.units.len()
    }

    /// Whether N is 0.
    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// (a) for each i: register `u{i}`, and for i > 0 want `u{i}` `u{i-1}`.
    pub fn build<S: Subject>(&self, graph: &S) {
        self.build_with(graph, S::want_all);
    }

    /// The same graph as [`build`](Self::build), with [`Subject::want_unchecked`] (set-up for (b)).
    pub fn build_unchecked<S: Subject>(&self, graph: &S) {
        self.build_with(graph, S::want_unchecked);
    }

    fn build_with<S: Subject>(&self, graph: &S, want: impl Fn(&S, &str, &[&str])) {
        for (i, unit) in self.units.iter().enumerate() {
            graph.register_unit(unit);
            if i > 0 {
                want(graph, unit, &[self.units[i - 1].as_str()]);
            }
        }
    }

    /// (b) for each i in order: start `u{i}`, complete `u{i}`, check `u{i+1}` is ready.
    pub fn run<S: Subject>(&self, graph: &S) {
        for (i, unit) in self.units.iter().enumerate() {
            assert!(graph.start_now(unit), "{unit} should start");
            graph.complete_unit(unit);
            if let Some(next) = self.units.get(i + 1) {
                assert!(graph.ready_now(next), "{next} should be ready");
            }
        }
    }

    /// A fresh graph with the chain built (by [`build_unchecked`](Self::build_unchecked)).
    pub fn built<S: Subject>(&self) -> S {
        let graph = S::fresh();
        self.build_unchecked(&graph);
        graph
    }
}

/// W3, one worker's share: units `w{g}_{j}`, unit j > 0 wanting 2 earlier ones (seeded by g).
#[derive(Debug, Clone)]
pub struct MixedWorker {
    /// `w{g}_0` … `w{g}_{999}`.
    pub units: Vec<String>,
    /// For each unit, the indices of its dependencies (2, or fewer where fewer exist).
    pub deps: Vec<Vec<usize>>,
}

/// Units per W3 worker.
pub const MIXED_UNITS: usize = 1000;

impl MixedWorker {
    /// Worker `g`'s plan.
    pub fn new(g: usize, units: usize) -> Self {
        let mut rng = SplitMix64::new(g as u64);
        Self {
            units: (0..units).map(|j| format!("w{g}_{j}")).collect(),
            deps: (0..units)
                .map(|j| {
                    if j == 0 {
                        Vec::new()
                    } else {
                        rng.distinct_below(j, 2)
                    }
                })
                .collect(),
        }
    }

    /// Operations this worker performs: register, each edge, 3 ready checks, start, complete.
    pub fn ops(&self) -> u64 {
        let edges: usize = self.deps.iter().map(Vec::len).sum();
        (self.units.len() * 6 + edges) as u64
    }

    /// Builds the worker's units, then for each in order: ready ×3, start, complete.
    pub fn run<S: Subject>(&self, graph: &S) {
        for (unit, deps) in self.units.iter().zip(&self.deps) {
            graph.register_unit(unit);
            if !deps.is_empty() {
                let (names, n) = names(&self.units, deps);
                graph.want_all(unit, &names[..n]);
            }
        }
        for unit in &self.units {
            for _ in 0..3 {
                assert!(graph.ready_now(unit), "{unit} should be ready");
            }
            assert!(graph.start_now(unit), "{unit} should start");
            graph.complete_unit(unit);
        }
    }
}

/// W3: `workers` threads, each running its own [`MixedWorker`] on one shared fresh graph.
#[derive(Debug, Clone)]
pub struct Mixed {
    /// One plan per worker.
    pub workers: Vec<MixedWorker>,
}

impl Mixed {
    /// The workload for `workers` workers of [`MIXED_UNITS`] units.
    pub fn new(workers: usize) -> Self {
        Self::with_units(workers, MIXED_UNITS)
    }

    /// The workload for `workers` workers of `units` units (smaller sizes for criterion).
    pub fn with_units(workers: usize, units: usize) -> Self {
        Self {
            workers: (0..workers).map(|g| MixedWorker::new(g, units)).collect(),
        }
    }

    /// Operations over all workers.
    pub fn ops(&self) -> u64 {
        self.workers.iter().map(MixedWorker::ops).sum()
    }

    /// Runs every worker on its own thread against a fresh `S`, all released together by a
    /// barrier; returns the time from the first worker's start to the last worker's end, both
    /// read by the workers themselves. (Timing from the releasing thread would count nothing
    /// when that thread is descheduled past the barrier while the workers run, which happens on
    /// a busy 2-core machine: a run takes about a millisecond.) Thread creation and each thread's
    /// registration with crossbeam-epoch are not timed.
    pub fn run<S: Subject>(self: &Arc<Self>) -> Duration {
        let graph = S::fresh();
        let barrier = Arc::new(Barrier::new(self.workers.len()));
        let threads: Vec<_> = (0..self.workers.len())
            .map(|g| {
                let graph = graph.clone();
                let barrier = Arc::clone(&barrier);
                let plan = Arc::clone(self);
                std::thread::spawn(move || {
                    // A thread's first epoch pin registers it with crossbeam-epoch (an allocation
                    // that can set glibc consolidating its heap): a once-per-thread cost that the
                    // agent's long-lived threads never pay per request, so it is paid before timing.
                    drop(crossbeam_epoch::pin());
                    barrier.wait();
                    let began = Instant::now();
                    plan.workers[g].run(&graph);
                    (began, Instant::now())
                })
            })
            .collect();
        let spans: Vec<(Instant, Instant)> = threads
            .into_iter()
            .map(|t| t.join().expect("worker thread"))
            .collect();
        let first_start = spans.iter().map(|span| span.0).min().expect("a worker");
        let last_end = spans.iter().map(|span| span.1).max().expect("a worker");
        last_end - first_start
    }

    /// Operations per second of one [`run`](Self::run).
    pub fn ops_per_sec<S: Subject>(self: &Arc<Self>) -> f64 {
        self.ops() as f64 / self.run::<S>().as_secs_f64()
    }
}

/// W4, memory: `m{i}` for i in 0..N; unit i > 0 wants 3 distinct earlier units (seed 42).
#[derive(Debug, Clone)]
pub struct Memory {
    /// `m0` … `m{N-1}`.
    pub units: Vec<String>,
    /// For each unit, its dependencies' indices.
    pub deps: Vec<Vec<usize>>,
}

impl Memory {
    /// The workload with `n` units.
    pub fn new(n: usize) -> Self {
        let mut rng = SplitMix64::new(42);
        Self {
            units: (0..n).map(|i| format!("m{i}")).collect(),
            deps: (0..n)
                .map(|i| {
                    if i == 0 {
                        Vec::new()
                    } else {
                        rng.distinct_below(i, 3)
                    }
                })
                .collect(),
        }
    }

    /// N.
    pub fn len(&self) -> usize {
        self.units.len()
    }

    /// Whether N is 0.
    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// Edges in total.
    pub fn edges(&self) -> usize {
        self.deps.iter().map(Vec::len).sum()
    }

    /// Builds the graph into `graph`.
    pub fn build<S: Subject>(&self, graph: &S) {
        graph.register_unit(&self.units[0]);
        for (unit, deps) in self.units.iter().zip(&self.deps).skip(1) {
            let (names, n) = names(&self.units, deps);
            graph.want_unchecked(unit, &names[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_workloads<S: Subject>() {
        let fanout = Fanout::new(50);
        let graph: S = fanout.built();
        fanout.release(&graph);
        let chain = Chain::new(50);
        let graph: S = chain.built();
        chain.run(&graph);
        let mixed = Arc::new(Mixed::with_units(3, 100));
        assert!(mixed.ops_per_sec::<S>() > 0.0);
        let memory = Memory::new(200);
        memory.build(&S::fresh());
    }

    #[test]
    fn workloads_run_on_both_graphs() {
        all_workloads::<Graph>();
        all_workloads::<RwLockGraph>();
    }

    #[test]
    fn wake_ups_are_measured() {
        let fanout = Fanout::new(100);
        assert!(wake_all_async(&fanout, &fanout.built()) < Duration::from_secs(5));
        assert!(wake_all_condvar(&fanout, &fanout.built()) < Duration::from_secs(5));
    }

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let mut a = SplitMix64::new(42);
        let mut b = SplitMix64::new(42);
        for bound in 1..500 {
            let x = a.below(bound);
            assert_eq!(x, b.below(bound));
            assert!(x < bound);
        }
        let picked = a.distinct_below(10, 3);
        assert_eq!(picked.len(), 3);
        assert!(picked.iter().all(|&p| p < 10));
        assert_eq!(a.distinct_below(2, 3), vec![0, 1]);
    }

    #[test]
    fn mixed_ops_count() {
        let worker = MixedWorker::new(0, 1000);
        // unit 1 has one edge, units 2.. have two.
        assert_eq!(worker.ops(), 1000 * 6 + 1 + 998 * 2);
    }
}
