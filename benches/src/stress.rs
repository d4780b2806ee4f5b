//! Stress workloads for profiling (`profiles/run.sh`, the `stress` binary): long enough runs of the
//! same operations the benchmarks time, so that a sampling profiler sees where the time and the heap
//! go. [`graph`] runs W1 (fan-out with parked async waiters), W2 (chain) and W3 (mixed, two worker
//! threads) against an in-process `unitsync_core::Graph`; [`agent`] drives a real agent over its
//! socket with many connections doing want/start/complete and thousands of blocked starts released
//! by completes; [`memory`] builds W4's graph and hands it back so a heap profiler sees it alive.
//!
//! Every size is a fixed count times a caller-chosen scale (never a time budget), so a profile of the
//! same code is of the same work each run. The agent client here speaks the wire protocol itself
//! (4-byte big-endian length, one JSON document, see `unitsync_ipc::protocol`) with `serde_json`
//! values on plain tokio Unix sockets: it is only a load generator, kept cheap so that the machine's
//! two cores go to the agent, and independent of the Rust client API. This module generates load and
//! counts what it did; it must not measure latencies (the benches do) and must not start processes.

use crate::workloads::{self, Chain, Fanout, Memory, Mixed};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use unitsync_core::Graph;

/// Errors of this module: anything unexpected ends the run.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// What one phase did: a name, an operation count and how long it took.
#[derive(Debug, Clone)]
pub struct Phase {
    /// Which phase (`w1_fanout`, `agent_churn`, …).
    pub name: &'static str,
    /// Graph operations or requests it made.
    pub ops: u64,
    /// Wall time.
    pub elapsed: Duration,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        write!(
            f,
            "{}: {} ops in {:.3} s ({:.0} ops/s)",
            self.name,
            self.ops,
            secs,
            self.ops as f64 / secs.max(1e-9)
        )
    }
}

fn scaled(count: usize, scale: f64) -> usize {
    ((count as f64 * scale).round() as usize).max(1)
}

fn timed(name: &'static str, run: impl FnOnce() -> u64) -> Phase {
    let begin = Instant::now();
    let ops = run();
    Phase {
        name,
        ops,
        elapsed: begin.elapsed(),
    }
}

/// W1 rounds: a fresh 10k fan-out each, 10k `wait_ready` tasks parked, `root` completed, then every
/// dependent checked ready. A separate function so that it is its own tower in a flamegraph.
#[inline(never)]
fn w1_fanout(rounds: usize) -> u64 {
    let fanout = Fanout::new(10_000);
    for _ in 0..rounds {
        let graph: Graph = fanout.built();
        workloads::wake_all_async(&fanout, &graph);
        for dependent in &fanout.dependents {
            assert!(graph.is_ready(dependent).expect("ready"));
        }
    }
    // register + want per dependent, one task's wake-up, one ready check.
    (rounds * (fanout.len() * 4 + 3)) as u64
}

/// W2 rounds: build a 10k chain with checked `want`s, then start, complete and check each in order.
#[inline(never)]
fn w2_chain(rounds: usize) -> u64 {
    let chain = Chain::new(10_000);
    for _ in 0..rounds {
        let graph = Graph::new();
        chain.build(&graph);
        chain.run(&graph);
    }
    (rounds * chain.len() * 5) as u64
}

/// W3 rounds: two worker threads with 1,000 units each on one fresh graph.
#[inline(never)]
fn w3_mixed(rounds: usize) -> u64 {
    let mixed = Arc::new(Mixed::new(2));
    for _ in 0..rounds {
        mixed.run::<Graph>();
    }
    rounds as u64 * mixed.ops()
}

/// The in-process graph workload: W1, W2, W3 in that order (about 5 s of CPU at scale 1 here).
pub fn graph(scale: f64) -> Vec<Phase> {
    vec![
        timed("w1_fanout_10k_async_waiters", || {
            w1_fanout(scaled(40, scale))
        }),
        timed("w2_chain_10k", || w2_chain(scaled(60, scale))),
        timed("w3_mixed_2_workers", || w3_mixed(scaled(250, scale))),
    ]
}

/// W4: `n` units, each after the first wanting 3 earlier ones (seed 42), built into a fresh graph.
/// The plan (names, edge indices) is dropped before returning, so what stays alive is the graph.
pub fn memory(n: usize) -> Graph {
    let plan = Memory::new(n);
    let graph = Graph::new();
    plan.build(&graph);
    drop(plan);
    settle_epoch();
    graph
}

/// Lets crossbeam-epoch run the frees it deferred, so a heap reading afterwards sees live data only.
pub fn settle_epoch() {
    for _ in 0..8 {
        crossbeam_epoch::pin().flush();
    }
}

/// Sizes of the agent workload.
#[derive(Debug, Clone, Copy)]
pub struct AgentLoad {
    /// Connections in the churn phase, each running its own chain.
    pub churn_connections: usize,
    /// Units per churn connection (want on the previous one, start, complete).
    pub churn_units: usize,
    /// Connections that block in `start` on one gate per round.
    pub blocked_connections: usize,
    /// Rounds of the blocked phase.
    pub blocked_rounds: usize,
}

impl AgentLoad {
    /// The profiling load at `scale` (1.0: about 5 s against the agent on this machine).
    pub fn at_scale(scale: f64) -> Self {
        Self {
            churn_connections: 32,
            churn_units: scaled(2_000, scale),
            blocked_connections: 2_000,
            blocked_rounds: scaled(12, scale),
        }
    }
}

/// One handshaken connection speaking the wire protocol.
struct Conn {
    stream: UnixStream,
    out: Vec<u8>,
    input: Vec<u8>,
}

impl Conn {
    async fn connect(path: &Path) -> Result<Self, Error> {
        let mut conn = Self {
            stream: UnixStream::connect(path).await?,
            out: Vec::with_capacity(256),
            input: Vec::with_capacity(256),
        };
        let reply = conn
            .call(&json!({"protocol": 1, "client": "unitsync-stress"}))
            .await?;
        if reply.get("welcome").is_none() {
            return Err(format!("handshake refused: {reply}").into());
        }
        Ok(conn)
    }

    async fn send(&mut self, message: &Value) -> Result<(), Error> {
        self.out.clear();
        self.out.extend_from_slice(&[0; 4]);
        serde_json::to_writer(&mut self.out, message)?;
        let length = u32::try_from(self.out.len() - 4)?;
        self.out[..4].copy_from_slice(&length.to_be_bytes());
        self.stream.write_all(&self.out).await?;
        Ok(())
    }

    async fn recv(&mut self) -> Result<Value, Error> {
        let mut header = [0u8; 4];
        self.stream.read_exact(&mut header).await?;
        self.input.resize(u32::from_be_bytes(header) as usize, 0);
        self.stream.read_exact(&mut self.input).await?;
        Ok(serde_json::from_slice(&self.input)?)
    }

    async fn call(&mut self, message: &Value) -> Result<Value, Error> {
        self.send(message).await?;
        self.recv().await
    }

    /// Sends `request` and checks the final answer is `expected` (skipping interim `blocked`).
    async fn expect(&mut self, request: &Value, expected: &str) -> Result<(), Error> {
        self.send(request).await?;
        self.recv_final(expected).await
    }

    async fn recv_final(&mut self, expected: &str) -> Result<(), Error> {
        loop {
            let reply = self.recv().await?;
            match kind(&reply) {
                "blocked" => continue,
                found if found == expected => return Ok(()),
                _ => return Err(format!("expected {expected}, got {reply}").into()),
            }
        }
    }
}

fn kind(reply: &Value) -> &str {
    reply.get("response").and_then(Value::as_str).unwrap_or("")
}

fn want(unit: &str, dependencies: &[&str]) -> Value {
    json!({"request": "want", "unit": unit, "dependencies": dependencies})
}

fn start(unit: &str) -> Value {
    json!({"request": "start", "unit": unit})
}

fn complete(unit: &str) -> Value {
    json!({"request": "complete", "unit": unit})
}

async fn connect_all(path: &Path, count: usize) -> Result<Vec<Conn>, Error> {
    let mut conns = Vec::with_capacity(count);
    // In batches, so the agent's listen backlog never overflows.
    for batch in (0..count).collect::<Vec<_>>().chunks(64) {
        let pending: Vec<_> = batch
            .iter()
            .map(|_| {
                let path = path.to_owned();
                tokio::spawn(async move { Conn::connect(&path).await })
            })
            .collect();
        for task in pending {
            conns.push(task.await??);
        }
    }
    Ok(conns)
}

/// Each connection runs its own chain `{prefix}c{c}_u{j}`: want on the previous unit, start (ready
/// at once), complete; a `ping` every 16 units. Returns the requests made.
async fn churn(path: &Path, prefix: &str, load: AgentLoad) -> Result<u64, Error> {
    let conns = connect_all(path, load.churn_connections).await?;
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(c, mut conn)| {
            let prefix = prefix.to_owned();
            tokio::spawn(async move {
                let mut requests = 0u64;
                let mut previous = String::new();
                for j in 0..load.churn_units {
                    let unit = format!("{prefix}c{c}_u{j}");
                    let deps: &[&str] = if j == 0 { &[] } else { &[&previous] };
                    conn.expect(&want(&unit, deps), "wanted").await?;
                    conn.expect(&start(&unit), "started").await?;
                    conn.expect(&complete(&unit), "completed").await?;
                    requests += 3;
                    if j % 16 == 0 {
                        conn.expect(&json!({"request": "ping"}), "pong").await?;
                        requests += 1;
                    }
                    previous = unit;
                }
                Ok::<_, Error>(requests)
            })
        })
        .collect();
    let mut requests = 0;
    for task in tasks {
        requests += task.await??;
    }
    Ok(requests)
}

/// Per round: `gate` started; every connection wants its unit on the gate and blocks in `start`;
/// once all have their first `blocked` frame the gate completes, each gets `started` and completes
/// its unit. Returns the requests made.
async fn blocked(path: &Path, prefix: &str, load: AgentLoad) -> Result<u64, Error> {
    let mut control = Conn::connect(path).await?;
    let mut conns = connect_all(path, load.blocked_connections).await?;
    let mut requests = 0u64;
    for round in 0..load.blocked_rounds {
        let gate = format!("{prefix}gate{round}");
        control.expect(&start(&gate), "started").await?;
        let (parked_tx, mut parked_rx) = tokio::sync::mpsc::unbounded_channel();
        let waiters: Vec<_> = conns
            .drain(..)
            .enumerate()
            .map(|(i, mut conn)| {
                let unit = format!("{prefix}b{round}_{i}");
                let gate = gate.clone();
                let parked = parked_tx.clone();
                tokio::spawn(async move {
                    conn.expect(&want(&unit, &[&gate]), "wanted").await?;
                    conn.send(&start(&unit)).await?;
                    let first = conn.recv().await?;
                    if kind(&first) != "blocked" {
                        return Err(format!("expected blocked, got {first}").into());
                    }
                    let _ = parked.send(());
                    conn.recv_final("started").await?;
                    conn.expect(&complete(&unit), "completed").await?;
                    Ok::<_, Error>(conn)
                })
            })
            .collect();
        drop(parked_tx);
        for _ in 0..waiters.len() {
            parked_rx.recv().await.ok_or("a waiter ended early")?;
        }
        control.expect(&complete(&gate), "completed").await?;
        for waiter in waiters {
            conns.push(waiter.await??);
        }
        requests += 2 + 3 * conns.len() as u64;
    }
    Ok(requests)
}

/// Drives the agent at `socket` with `load` from a current-thread runtime (one core for the client).
/// Unit names start with `prefix`, so runs against the same agent never collide.
pub fn agent(socket: &Path, prefix: &str, load: AgentLoad) -> Result<Vec<Phase>, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let begin = Instant::now();
        let ops = churn(socket, prefix, load).await?;
        let churned = Phase {
            name: "agent_churn_want_start_complete",
            ops,
            elapsed: begin.elapsed(),
        };
        let begin = Instant::now();
        let ops = blocked(socket, prefix, load).await?;
        let released = Phase {
            name: "agent_blocked_starts_released",
            ops,
            elapsed: begin.elapsed(),
        };
        Ok(vec![churned, released])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::BenchAgent;

    #[test]
    fn graph_workload_runs_small() {
        assert_eq!(w1_fanout(1), 40_003);
        assert_eq!(w2_chain(1), 50_000);
        assert!(w3_mixed(1) > 0);
    }

    #[test]
    fn memory_keeps_every_unit() {
        assert_eq!(memory(500).len(), 500);
    }

    #[test]
    fn agent_workload_runs_small() {
        let server = BenchAgent::start().expect("agent");
        let load = AgentLoad {
            churn_connections: 3,
            churn_units: 20,
            blocked_connections: 10,
            blocked_rounds: 2,
        };
        let phases = agent(server.socket(), "t_", load).expect("agent workload");
        assert_eq!(phases[0].ops, 3 * (20 * 3 + 2));
        assert_eq!(phases[1].ops, 2 * (2 + 3 * 10));
    }
}
