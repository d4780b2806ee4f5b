//! Criterion bench of W6 (wake-up over the socket): K clients blocked in `start` on units that want
//! `root`, timed from sending `complete root` until the last has its `started` answer, for K = 1 and
//! K = 100 (the `report` binary measures K = 10,000). Group `ours`; group `raw_socket` times one raw
//! `UnixStream` round trip of the ping bytes, the floor the K = 1 target is stated against.

#[cfg(unix)]
use criterion::{criterion_group, criterion_main, Criterion};
#[cfg(unix)]
use std::sync::atomic::{AtomicUsize, Ordering};
#[cfg(unix)]
use std::time::Duration;
#[cfg(unix)]
use unitsync_benches::over_socket;
#[cfg(unix)]
use unitsync_benches::process::BenchAgent;
#[cfg(unix)]
use unitsync_benches::raw_socket::{self, RawClient};

#[cfg(unix)]
fn benches(c: &mut Criterion) {
    let agent = BenchAgent::start().expect("start an agent");
    let run = AtomicUsize::new(0);
    let mut group = c.benchmark_group("ours");
    for k in [1usize, 100] {
        group.bench_function(format!("w6_wake/{k}"), |b| {
            b.iter_custom(|iters| {
                let prefix = format!("c{}_", run.fetch_add(1, Ordering::Relaxed));
                let times = if k == 1 {
                    over_socket::wake_one(agent.socket(), &prefix, 0, iters as usize)
                } else {
                    over_socket::wake_many(agent.socket(), &prefix, k, iters as usize)
                };
                times.expect("wake").into_iter().sum()
            })
        });
    }
    group.finish();

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("raw.sock");
    raw_socket::serve_in_thread(&path).expect("raw server");
    let mut raw = RawClient::connect(&path).expect("connect to the raw server");
    c.benchmark_group("raw_socket")
        .bench_function("round_trip", |b| {
            b.iter_custom(|iters| {
                raw.round_trips(iters as usize)
                    .expect("raw")
                    .into_iter()
                    .sum()
            })
        });
}

#[cfg(unix)]
criterion_group! {
    name = w6;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
#[cfg(unix)]
criterion_main!(w6);

/// The socket benches need Unix domain sockets: nothing to run elsewhere.
#[cfg(not(unix))]
fn main() {}
