//! Criterion bench of W5 (socket round trip): `ping` through `unitsync_ipc::Client` against a real
//! agent (group `ours`; the built `unitsync agent` if present, else an agent thread) beside raw
//! `UnixStream` ping-pong of the same bytes (group `raw_socket`, server in a thread).

#[cfg(unix)]
use criterion::{criterion_group, criterion_main, Criterion};
#[cfg(unix)]
use std::time::Duration;
#[cfg(unix)]
use unitsync_benches::over_socket::PingClient;
#[cfg(unix)]
use unitsync_benches::process::BenchAgent;
#[cfg(unix)]
use unitsync_benches::raw_socket::{self, RawClient};

#[cfg(unix)]
fn benches(c: &mut Criterion) {
    let agent = BenchAgent::start().expect("start an agent");
    let mut ours = PingClient::connect(agent.socket()).expect("connect to the agent");
    c.benchmark_group("ours").bench_function("w5_ping", |b| {
        b.iter_custom(|iters| {
            ours.round_trips(iters as usize)
                .expect("ping")
                .into_iter()
                .sum()
        })
    });

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("raw.sock");
    raw_socket::serve_in_thread(&path).expect("raw server");
    let mut raw = RawClient::connect(&path).expect("connect to the raw server");
    c.benchmark_group("raw_socket")
        .bench_function("w5_ping", |b| {
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
    name = w5;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
#[cfg(unix)]
criterion_main!(w5);

/// The socket benches need Unix domain sockets: nothing to run elsewhere.
#[cfg(not(unix))]
fn main() {}
