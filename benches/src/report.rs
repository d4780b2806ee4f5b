//! The `report` binary's body (see `src/bin/report.rs`): runs every comparison of `WORKLOADS.md` (W1–W6, plus the CLI process and agent memory
//! figures) in one process, and prints a Markdown table (workload, ours, baseline, ratio, target)
//! followed by one `summary: key=value ...` line holding every figure and ratio.
//!
//! ```text
//! cargo build --release -p unitsync           # the CLI figures need the built binary
//! cargo run --release -p unitsync-benches --bin report [-- --quick] [-- --only w1,w5]
//! ```
//!
//! Every figure is a median (or percentile) over repeated runs, ours and the baseline interleaved so
//! that the shared machine's noise hits both alike; `--quick` runs fewer repetitions (under a minute).
//! The socket figures run against `unitsync agent` as users run it, journaling to a (fresh) state
//! file; W5, W6 and the throughput figure (`tput`, part of `w6`) also run, interleaved, against
//! `unitsync agent --no-state`, with rows `journal_*` giving the ratio with / without the journal.
//! Progress goes to stderr, the table and summary to stdout. The binary installs the counting
//! allocator for W4 and has two hidden modes used as child processes: `--serve-raw SOCKET` (the raw
//! ping-pong server) and `--serve-agent SOCKET [--no-state]` (a `unitsync_ipc::Agent`, used only
//! when the `unitsync` binary is missing). It measures and reports; it must not change what it
//! measures.
//! Unix only: W5/W6 speak Unix domain sockets.

use crate::alloc_counter;
use crate::baseline_graph::RwLockGraph;
use crate::machine;
use crate::over_socket::{self, IdleConnections, PingClient};
use crate::process::{self, SocketChild};
use crate::raw_socket::{self, RawClient};
use crate::stats::Samples;
use crate::workloads::{self, Chain, Fanout, Memory, Mixed, Subject};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use unitsync_core::Graph;

/// The report's command line.
#[derive(clap::Parser)]
#[command(
    name = "report",
    about = "Runs every workload of WORKLOADS.md against its baseline in this process and prints a \
             Markdown table and one `summary:` line",
    after_help = "Example: cargo run --release -p unitsync-benches --bin report -- --quick --only w1,w5"
)]
struct Arguments {
    /// Fewer repetitions and samples: about 15 s instead of about a minute (CI's smoke run)
    #[arg(long)]
    quick: bool,
    /// Run only these sections (comma-separated; w6 includes tput)
    #[arg(
        long,
        value_delimiter = ',',
        ignore_case = true,
        value_parser = ["w1", "w2", "w3", "w4", "w5", "w6", "tput", "cli"]
    )]
    only: Option<Vec<String>>,
    /// Connections of the throughput figure. Only the default is the counted figure; other values
    /// show how the journal's cost depends on concurrency, and their target is information only
    #[arg(long, value_name = "N", default_value_t = CHURN_CONNECTIONS as u16, value_parser = clap::value_parser!(u16).range(1..=4096))]
    tput_connections: u16,
    /// Child mode: the raw UnixStream ping-pong server on this socket
    #[arg(long, hide = true, value_name = "SOCKET", conflicts_with_all = ["quick", "only", "serve_agent"])]
    serve_raw: Option<PathBuf>,
    /// Child mode: a `unitsync_ipc::Agent` on this socket (when the `unitsync` binary is missing)
    #[arg(long, hide = true, value_name = "SOCKET", conflicts_with_all = ["quick", "only"])]
    serve_agent: Option<PathBuf>,
    /// With --serve-agent: no state journal
    #[arg(long, hide = true, requires = "serve_agent")]
    no_state: bool,
}

/// Runs the report with this process's arguments (the binary must install
/// [`alloc_counter::CountingAlloc`] as its global allocator for the W4 figures).
pub fn main() {
    let arguments = <Arguments as clap::Parser>::parse();
    if let Some(socket) = &arguments.serve_raw {
        return serve_raw(socket);
    }
    if let Some(socket) = &arguments.serve_agent {
        return serve_agent(socket, arguments.no_state);
    }
    let only = arguments
        .only
        .map(|sections| sections.iter().map(|s| s.to_lowercase()).collect());
    let mut report = Report::new(
        Plan {
            quick: arguments.quick,
            tput_connections: usize::from(arguments.tput_connections),
        },
        only,
    );
    report.run();
    report.print();
}

fn serve_raw(socket: &Path) {
    let listener = std::os::unix::net::UnixListener::bind(socket).expect("bind raw socket");
    raw_socket::serve(listener).expect("raw server");
}

/// The stand-in for `unitsync agent` when the binary is missing: journaling to a fresh state file
/// beside the socket, as `unitsync agent` does by default, or with none (`--no-state`).
fn serve_agent(socket: &Path, no_state: bool) {
    let state = (!no_state).then(|| unitsync_ipc::state::StateOptions {
        path: unitsync_ipc::state::default_state_path(socket),
        fresh: true,
        sync: false,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let options = unitsync_ipc::AgentOptions {
            event_capacity: unitsync_core::DEFAULT_EVENT_CAPACITY,
            state,
        };
        let agent = unitsync_ipc::Agent::start(socket, options)
            .await
            .expect("start agent");
        agent.serve_until(std::future::pending()).await;
    });
}

/// How many repetitions each measurement gets.
#[derive(Clone, Copy)]
struct Plan {
    quick: bool,
    /// Connections of the throughput figure ([`CHURN_CONNECTIONS`] for the counted one).
    tput_connections: usize,
}

impl Plan {
    fn reps(self, quick: usize, full: usize) -> usize {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

/// The unit of a figure: how it prints and what its summary keys end with.
#[derive(Clone, Copy, PartialEq)]
enum Quantity {
    Ms,
    Us,
    NsPerDependent,
    NsPerStep,
    OpsPerSec,
    BytesPerUnit,
    MiB,
    KiB,
}

impl Quantity {
    fn suffix(self) -> &'static str {
        match self {
            Quantity::Ms => "ms",
            Quantity::Us => "us",
            Quantity::NsPerDependent => "ns_per_dependent",
            Quantity::NsPerStep => "ns_per_step",
            Quantity::OpsPerSec => "ops_per_s",
            Quantity::BytesPerUnit => "bytes_per_unit",
            Quantity::MiB => "mib",
            Quantity::KiB => "kib",
        }
    }

    fn show(self, value: f64) -> String {
        match self {
            Quantity::Ms if value >= 1000.0 => format!("{:.2} s", value / 1000.0),
            Quantity::Ms if value >= 10.0 => format!("{value:.1} ms"),
            Quantity::Ms => format!("{value:.3} ms"),
            Quantity::Us => format!("{value:.1} µs"),
            Quantity::NsPerDependent => format!("{value:.0} ns/dependent"),
            Quantity::NsPerStep => format!("{value:.0} ns/step"),
            Quantity::OpsPerSec => format!("{:.0}k ops/s", value / 1000.0),
            Quantity::BytesPerUnit => format!("{value:.0} B/unit"),
            Quantity::MiB => format!("{value:.1} MiB"),
            Quantity::KiB => format!("{value:.1} KiB"),
        }
    }

    fn higher_is_better(self) -> bool {
        self == Quantity::OpsPerSec
    }
}

/// One check of a target: what it says and whether the figure meets it.
struct Check {
    text: String,
    met: bool,
}

/// One line of the table.
struct Row {
    key: String,
    label: String,
    unit: Quantity,
    ours: Option<f64>,
    ours_note: Option<String>,
    base: Option<f64>,
    base_note: Option<String>,
    checks: Vec<Check>,
    reference: Option<String>,
}

impl Row {
    fn new(key: impl Into<String>, label: impl Into<String>, unit: Quantity) -> Self {
        Self {
            key: key.into(),
            label: label.into(),
            unit,
            ours: None,
            ours_note: None,
            base: None,
            base_note: None,
            checks: Vec::new(),
            reference: None,
        }
    }

    fn ours(mut self, value: f64) -> Self {
        self.ours = Some(value);
        self
    }

    fn ours_note(mut self, note: impl Into<String>) -> Self {
        self.ours_note = Some(note.into());
        self
    }

    fn base(mut self, value: f64) -> Self {
        self.base = Some(value);
        self
    }

    fn base_note(mut self, note: impl Into<String>) -> Self {
        self.base_note = Some(note.into());
        self
    }

    fn check(mut self, text: impl Into<String>, met: bool) -> Self {
        self.checks.push(Check {
            text: text.into(),
            met,
        });
        self
    }

    fn reference(mut self, text: impl Into<String>) -> Self {
        self.reference = Some(text.into());
        self
    }

    /// ours / baseline.
    fn ratio(&self) -> Option<f64> {
        Some(self.ours? / self.base?)
    }

    fn ratio_cell(&self) -> String {
        let Some(ratio) = self.ratio() else {
            return "—".to_owned();
        };
        let (better, times) = if self.unit.higher_is_better() {
            (ratio >= 1.0, if ratio >= 1.0 { ratio } else { 1.0 / ratio })
        } else {
            (ratio <= 1.0, if ratio <= 1.0 { 1.0 / ratio } else { ratio })
        };
        let word = match (self.unit, better) {
            (Quantity::OpsPerSec, true) => "more ops/s",
            (Quantity::OpsPerSec, false) => "fewer ops/s",
            (Quantity::BytesPerUnit | Quantity::MiB | Quantity::KiB, true) => "less memory",
            (Quantity::BytesPerUnit | Quantity::MiB | Quantity::KiB, false) => "more memory",
            (_, true) => "faster",
            (_, false) => "slower",
        };
        format!("{ratio:.3} ({times:.1}× {word})")
    }

    fn cell(&self, value: Option<f64>, note: &Option<String>) -> String {
        let mut cell = value.map_or_else(|| "—".to_owned(), |v| self.unit.show(v));
        if let Some(note) = note {
            if value.is_some() {
                cell.push(' ');
            }
            cell.push_str(note);
        }
        cell
    }

    fn target_cell(&self) -> String {
        let mut parts: Vec<String> = self
            .checks
            .iter()
            .map(|c| {
                let verdict = if c.met { "**met**" } else { "**MISSED**" };
                format!("{}: {verdict}", c.text)
            })
            .collect();
        if let Some(reference) = &self.reference {
            parts.push(reference.clone());
        }
        if parts.is_empty() {
            "—".to_owned()
        } else {
            parts.join("; ")
        }
    }
}

struct Report {
    plan: Plan,
    only: Option<Vec<String>>,
    rows: Vec<Row>,
    notes: Vec<String>,
    extra: Vec<(String, String)>,
    begin: Instant,
    binary: Result<std::path::PathBuf, String>,
    machine: String,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn time<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let begin = Instant::now();
    let out = f();
    (begin.elapsed(), out)
}

/// Interleaves `reps` runs of `ours` and `base` (each returning one sample) and returns both sets.
fn paired(
    reps: usize,
    mut ours: impl FnMut() -> f64,
    mut base: impl FnMut() -> f64,
) -> (Samples, Samples) {
    let (mut a, mut b) = (Samples::new(), Samples::new());
    for _ in 0..reps {
        a.push(ours());
        b.push(base());
    }
    (a, b)
}

impl Report {
    fn new(plan: Plan, only: Option<Vec<String>>) -> Self {
        Self {
            plan,
            only,
            rows: Vec::new(),
            notes: Vec::new(),
            extra: Vec::new(),
            begin: Instant::now(),
            binary: process::unitsync_binary(),
            machine: machine::describe(),
        }
    }

    fn wanted(&self, section: &str) -> bool {
        match &self.only {
            None => true,
            Some(only) => only.iter().any(|s| s == section),
        }
    }

    fn progress(&self, what: &str) {
        eprintln!("[{:6.1} s] {what}", self.begin.elapsed().as_secs_f64());
    }

    fn run(&mut self) {
        if !alloc_counter::installed() {
            self.notes
                .push("the counting allocator is not installed: W4 is not measured".into());
        }
        self.progress(&format!("machine: {}", self.machine));
        self.extra
            .push(("load_at_start".into(), machine::load_average()));
        let fds = process::raise_fd_limit();
        self.extra.push(("fd_limit".into(), fds.to_string()));
        // W4 first: the counting allocator is most exact on a quiet, fresh heap.
        if self.wanted("w4") {
            self.w4();
        }
        if self.wanted("w1") {
            self.w1();
        }
        if self.wanted("w2") {
            self.w2();
        }
        if self.wanted("w3") {
            self.w3();
        }
        if ["w5", "w6", "tput", "cli"].iter().any(|s| self.wanted(s)) {
            self.over_socket();
        }
        self.progress("done");
    }

    fn w4(&mut self) {
        self.progress("W4: memory of 100,000 units with 3 edges each");
        let memory = Memory::new(100_000);
        let n = memory.len() as f64;
        let ours = alloc_counter::measure_live(
            || {
                let graph = Graph::new();
                memory.build(&graph);
                graph
            },
            |_| {
                // Let crossbeam-epoch run the frees it deferred (replaced event records).
                for _ in 0..8 {
                    crossbeam_epoch::pin().flush();
                }
            },
        );
        let base = alloc_counter::measure_live(
            || {
                let graph = RwLockGraph::new();
                memory.build(&graph);
                graph
            },
            |_| {},
        );
        let (ours_b, base_b) = (ours.retained as f64 / n, base.retained as f64 / n);
        // Where the bytes go: the same units registered with no edge at all.
        let ours_units = alloc_counter::measure_live(
            || {
                let graph = Graph::new();
                memory.units.iter().for_each(|u| graph.register_unit(u));
                graph
            },
            |_| {
                for _ in 0..8 {
                    crossbeam_epoch::pin().flush();
                }
            },
        );
        let base_units = alloc_counter::measure_live(
            || {
                let graph = RwLockGraph::new();
                memory.units.iter().for_each(|u| graph.register_unit(u));
                graph
            },
            |_| {},
        );
        let edges = memory.edges() as f64;
        for (key, units_only, all) in [("ours", ours_units, ours), ("base", base_units, base)] {
            self.extra.push((
                format!("w4_{key}_unit_without_edges_bytes"),
                format!("{:.1}", units_only.retained as f64 / n),
            ));
            self.extra.push((
                format!("w4_{key}_per_edge_bytes"),
                format!("{:.1}", (all.retained - units_only.retained) as f64 / edges),
            ));
        }
        self.extra.push((
            "w4_ours_after_drop_bytes".into(),
            ours.after_drop.to_string(),
        ));
        self.extra.push((
            "w4_base_after_drop_bytes".into(),
            base.after_drop.to_string(),
        ));
        self.rows.push(
            Row::new(
                "w4",
                "W4 heap per unit, N=100k, 3 edges each",
                Quantity::BytesPerUnit,
            )
            .ours(ours_b)
            .base(base_b)
            .check("≤ 256 B/unit", ours_b <= 256.0)
            .reference("Go: 876 B/unit"),
        );
    }

    fn w1(&mut self) {
        let plan = self.plan;
        for (n, tag) in [(1_000, "1k"), (10_000, "10k")] {
            self.progress(&format!("W1 fan-out N={tag}: build, release"));
            let fanout = Fanout::new(n);
            let reps = plan.reps(
                if n == 1_000 { 15 } else { 7 },
                if n == 1_000 { 41 } else { 21 },
            );
            let (a_ours, a_base) = paired(
                reps,
                || {
                    let graph = Graph::new();
                    ms(time(|| fanout.build(&graph)).0)
                },
                || {
                    let graph = RwLockGraph::new();
                    ms(time(|| fanout.build(&graph)).0)
                },
            );
            let (mut a_ours, mut a_base) = (a_ours, a_base);
            self.rows.push(
                Row::new(
                    format!("w1_{tag}_a"),
                    format!("W1 N={tag} (a) build"),
                    Quantity::Ms,
                )
                .ours(a_ours.median())
                .base(a_base.median()),
            );
            let (mut b_ours, mut b_base) = paired(
                reps,
                || {
                    let graph: Graph = fanout.built();
                    time(|| fanout.release(&graph)).0.as_nanos() as f64 / n as f64
                },
                || {
                    let graph: RwLockGraph = fanout.built();
                    time(|| fanout.release(&graph)).0.as_nanos() as f64 / n as f64
                },
            );
            let (ours_b, base_b) = (b_ours.median(), b_base.median());
            let mut row = Row::new(
                format!("w1_{tag}_b"),
                format!("W1 N={tag} (b) start+complete root, then every d_i confirmed ready"),
                Quantity::NsPerDependent,
            )
            .ours(ours_b)
            .ours_note(format!("({:.2} ms)", ours_b * n as f64 / 1e6))
            .base(base_b)
            .base_note(format!("({:.2} ms)", base_b * n as f64 / 1e6));
            if n == 10_000 {
                row = row
                    .check("≥ 10× faster than RwLock", ours_b * 10.0 <= base_b)
                    .check("≤ 60 ns/dependent", ours_b <= 60.0)
                    .reference("Go: 632 ns/dependent");
            }
            self.rows.push(row);
            // The two halves of (b) for our graph, to see where its time goes.
            let mut complete_only = Samples::new();
            for _ in 0..reps {
                let graph: Graph = fanout.built();
                complete_only
                    .push(time(|| fanout.complete_root(&graph)).0.as_nanos() as f64 / n as f64);
            }
            self.extra.push((
                format!("w1_{tag}_b_ours_complete_only_ns_per_dependent"),
                format!("{:.1}", complete_only.median()),
            ));

            self.progress(&format!("W1 fan-out N={tag}: wake every waiter"));
            let wake_reps = plan.reps(5, if n == 1_000 { 21 } else { 11 });
            let mut c_ours = Samples::new();
            for _ in 0..wake_reps {
                let graph: Graph = fanout.built();
                c_ours.push(ms(workloads::wake_all_async(&fanout, &graph)));
            }
            let condvar_reps = plan.reps(
                if n == 1_000 { 3 } else { 1 },
                if n == 1_000 { 7 } else { 3 },
            );
            let mut c_base = Samples::new();
            for _ in 0..condvar_reps {
                let graph: RwLockGraph = fanout.built();
                c_base.push(ms(workloads::wake_all_condvar(&fanout, &graph)));
            }
            let ours_c = c_ours.median();
            let mut row = Row::new(
                format!("w1_{tag}_c"),
                format!("W1 N={tag} (c) wake {n} parked waiters (ours: tokio tasks; baseline: Condvar threads)"),
                Quantity::Ms,
            )
            .ours(ours_c)
            .base(c_base.median());
            if n == 10_000 {
                row = row.check("≤ 5 ms", ours_c <= 5.0);
            }
            self.rows.push(row);
        }

        self.progress("W1 (c): sampling the Go CLI's 1 s polling wait");
        let delays = workloads::polling_wake_sample(32, Duration::from_secs(1));
        let delays = Samples::from_durations(&delays);
        let mean_ms = delays.mean() / 1e6;
        let last_ms = delays.max() / 1e6;
        let ours_10k = self
            .rows
            .iter()
            .find(|r| r.key == "w1_10k_c")
            .and_then(|r| r.ours);
        let mut row = Row::new(
            "w1_poll",
            "W1 (c) vs waiters polling once a second (Go CLI model): ours all 10k woken; baseline mean wake delay of 32 real pollers",
            Quantity::Ms,
        )
        .base(mean_ms)
        .base_note(format!("(last of 32: {last_ms:.0} ms)"));
        if let Some(ours) = ours_10k {
            row = row.ours(ours);
        }
        self.rows.push(row);
        self.extra
            .push(("w1_poll_last_of_32_ms".into(), format!("{last_ms:.1}")));
    }

    fn w2(&mut self) {
        let plan = self.plan;
        for (n, tag) in [(1_000, "1k"), (10_000, "10k")] {
            self.progress(&format!("W2 chain N={tag}"));
            let chain = Chain::new(n);
            let reps = plan.reps(7, 21);
            // Build: the baseline's O(N²) DFS makes N=10k take seconds, so it gets fewer runs.
            let base_reps = if n == 10_000 { plan.reps(1, 3) } else { reps };
            let mut a_ours = Samples::new();
            let mut a_base = Samples::new();
            for rep in 0..reps {
                let graph = Graph::new();
                a_ours.push(ms(time(|| chain.build(&graph)).0));
                if rep < base_reps {
                    let graph = RwLockGraph::new();
                    a_base.push(ms(time(|| chain.build(&graph)).0));
                }
            }
            let ours_a = a_ours.median();
            let mut row = Row::new(
                format!("w2_{tag}_a"),
                format!("W2 N={tag} (a) build chain"),
                Quantity::Ms,
            )
            .ours(ours_a)
            .base(a_base.median());
            if n == 10_000 {
                row = row.check("≤ 20 ms", ours_a <= 20.0).reference("Go: 7.0 s");
            }
            self.rows.push(row);

            let (mut b_ours, mut b_base) = paired(
                reps,
                || {
                    let graph: Graph = chain.built();
                    time(|| chain.run(&graph)).0.as_nanos() as f64 / n as f64
                },
                || {
                    let graph: RwLockGraph = chain.built();
                    time(|| chain.run(&graph)).0.as_nanos() as f64 / n as f64
                },
            );
            let ours_b = b_ours.median();
            let mut row = Row::new(
                format!("w2_{tag}_b"),
                format!("W2 N={tag} (b) start, complete, check next ready"),
                Quantity::NsPerStep,
            )
            .ours(ours_b)
            .ours_note(format!("({:.2} ms)", ours_b * n as f64 / 1e6))
            .base(b_base.median())
            .base_note(format!("({:.2} ms)", b_base.median() * n as f64 / 1e6));
            if n == 10_000 {
                row = row
                    .check("≤ 100 ns/step", ours_b <= 100.0)
                    .reference("Go: 9.1 ms (910 ns/step)");
            }
            self.rows.push(row);
        }
    }

    fn w3(&mut self) {
        let reps = self.plan.reps(5, 15);
        let plans: Vec<(usize, Arc<Mixed>)> = [1usize, 2, 8]
            .into_iter()
            .map(|workers| (workers, Arc::new(Mixed::new(workers))))
            .collect();
        // Every repetition measures every configuration, ours and the baseline, plus how much two
        // threads of pure CPU work get from the machine at that moment (it is shared).
        self.progress(&format!(
            "W3 mixed: 1, 2 and 8 workers, ours and baseline, {reps} rounds"
        ));
        let mut ours = vec![Samples::new(); plans.len()];
        let mut base = vec![Samples::new(); plans.len()];
        let mut scaling = Samples::new();
        let mut machine_speedup = Samples::new();
        for _ in 0..reps {
            machine_speedup.push(machine::two_thread_speedup(1));
            let mut round = Vec::with_capacity(plans.len());
            for (i, (_, plan)) in plans.iter().enumerate() {
                let o = plan.ops_per_sec::<Graph>();
                ours[i].push(o);
                base[i].push(plan.ops_per_sec::<RwLockGraph>());
                round.push(o);
            }
            scaling.push(round[1] / round[0]);
        }
        let machine_speedup = machine_speedup.median();
        let scaling = scaling.median();
        self.extra.push((
            "machine_2_thread_speedup".into(),
            format!("{machine_speedup:.2}"),
        ));
        self.extra
            .push(("w3_ours_2w_over_1w".into(), format!("{scaling:.3}")));
        let go = ["Go: 702k ops/s", "Go: 649k ops/s", "Go: 476k ops/s"];
        for (i, (workers, _)) in plans.iter().enumerate() {
            let (o, b) = (ours[i].median(), base[i].median());
            let mut row = Row::new(
                format!("w3_{workers}w"),
                format!("W3 mixed, {workers} worker thread(s) on 2 cores"),
                Quantity::OpsPerSec,
            )
            .ours(o)
            .base(b);
            if *workers == 2 {
                row = row.check(
                    format!(
                        "≥ 1.5× ours at 1 worker (is {scaling:.2}×, median of paired rounds; pure CPU work got {machine_speedup:.2}× from 2 threads meanwhile)"
                    ),
                    scaling >= 1.5,
                );
            }
            if *workers == 8 {
                row = row.check("≥ 3× baseline at 8", o >= 3.0 * b);
            }
            self.rows.push(row.reference(go[i]));
        }
    }

    /// Starts the agent for W5/W6: `unitsync agent`, or the report's own child agent if missing.
    /// Starts an agent: the built `unitsync agent`, journaling to a fresh state file (`Journal::On`,
    /// the default, what users run) or with `--no-state`; else the report's own child agent.
    fn start_agent(&mut self, journal: Journal) -> Option<SocketChild> {
        let agent = match &self.binary {
            Ok(binary) => match journal {
                Journal::On => SocketChild::unitsync_agent(binary),
                Journal::Off => SocketChild::unitsync_agent_without_state(binary),
            },
            Err(missing) => {
                let note = format!(
                    "{missing}; W5/W6 ran against a `unitsync_ipc::Agent` in a child process of the report instead, and the CLI and agent-memory figures were not measured"
                );
                if !self.notes.contains(&note) {
                    self.notes.push(note);
                }
                let extra: &[&str] = match journal {
                    Journal::On => &[],
                    Journal::Off => &["--no-state"],
                };
                SocketChild::reexec("the report's child agent", "--serve-agent", extra)
            }
        };
        match agent {
            Ok(agent) => Some(agent),
            Err(error) => {
                self.notes.push(format!(
                    "could not start an agent{} ({error}): its socket figures skipped",
                    journal.label()
                ));
                None
            }
        }
    }

    fn over_socket(&mut self) {
        let sockets = self.wanted("w5") || self.wanted("w6");
        let load = self.wanted("w6") || self.wanted("tput");
        // 1. Where the scheduler puts things: informative for W5 / W6 K=1 (on an idle machine the
        //    client, the agent and the raw server may or may not share a CPU, run to run); counted
        //    for W6 K=10k, the throughput and the CLI figures, which use both CPUs.
        if let Some(agent) = self.start_agent(Journal::On) {
            self.extra.push((
                "agent".into(),
                agent.description.replace(' ', "_").replace('`', ""),
            ));
            if sockets {
                let raw_p50 = self.w5(&agent, None, Placement::Unpinned);
                if self.wanted("w6") {
                    self.w6_one(&agent, None, raw_p50, Placement::Unpinned);
                }
            }
            if load {
                // What earlier jobs left dirty would be written out during the measurement.
                let dirty_kib = machine::flush_pending_writes();
                self.extra.push((
                    "dirty_kib_flushed_before_load".into(),
                    dirty_kib.to_string(),
                ));
                let bare = self.start_agent(Journal::Off);
                if self.wanted("w6") {
                    self.w6_many(&agent, bare.as_ref());
                }
                self.throughput(&agent, bare.as_ref());
                if self.wanted("w6") {
                    self.ping_beside_list();
                }
            }
            if self.wanted("cli") {
                self.cli(&agent);
            }
        }
        if !sockets {
            return;
        }
        let cpus = match process::allowed_cpus() {
            Ok(cpus) if !cpus.is_empty() => cpus,
            Ok(_) | Err(_) => {
                self.notes
                    .push("cannot read this process's CPUs: W5 / W6 K=1 not measured".into());
                return;
            }
        };
        // 2. Everything on one CPU: the placement the counted W5 / W6 K=1 figures use, since it is
        //    the same for both sides every run and leaves only the software's own cost. Both
        //    agents, with and without a journal, are measured here, interleaved.
        match process::pin_to_cpu(cpus[0]) {
            Ok(pinned) => {
                if let Some(agent) = self.start_agent(Journal::On) {
                    let bare = self.start_agent(Journal::Off);
                    let placement = Placement::OneCpu(cpus[0]);
                    let raw_p50 = self.w5(&agent, bare.as_ref(), placement);
                    if self.wanted("w6") {
                        self.w6_one(&agent, bare.as_ref(), raw_p50, placement);
                    }
                }
                drop(pinned);
            }
            Err(error) => self
                .notes
                .push(format!("could not pin to one CPU: {error}")),
        }
        // 3. Client on one CPU, servers on another: every message wakes a thread on the other CPU.
        if let [client, server, ..] = cpus[..] {
            let agent = match process::pin_to_cpu(server) {
                Ok(_pinned) => self.start_agent(Journal::On),
                Err(error) => {
                    self.notes
                        .push(format!("could not pin to CPU {server}: {error}"));
                    None
                }
            };
            if let (Some(agent), Ok(_pinned)) = (agent, process::pin_to_cpu(client)) {
                let placement = Placement::Across { client, server };
                let raw_p50 = self.w5(&agent, None, placement);
                if self.wanted("w6") {
                    self.w6_one(&agent, None, raw_p50, placement);
                }
            }
        }
    }

    /// W5 against `agent` (journaling) and, if given, `bare` (`--no-state`), interleaved with the
    /// raw baseline; returns the raw round trip's p50 in µs (for W6's target). Targets are counted
    /// for the one-CPU placement only; the others show them for information.
    fn w5(
        &mut self,
        agent: &SocketChild,
        bare: Option<&SocketChild>,
        placement: Placement,
    ) -> Option<f64> {
        let (key, label) = (placement.key(), placement.label());
        self.progress(&format!(
            "W5: ping round trips, ours vs raw UnixStream{label}"
        ));
        let raw = match placement.spawn_servers_on() {
            Some(cpu) => process::pin_to_cpu(cpu)
                .and_then(|_pinned| SocketChild::reexec("raw echo server", "--serve-raw", &[])),
            None => SocketChild::reexec("raw echo server", "--serve-raw", &[]),
        };
        let raw = match raw {
            Ok(raw) => raw,
            Err(error) => {
                self.notes
                    .push(format!("raw echo server failed to start: {error}"));
                return None;
            }
        };
        let quick = self.plan.quick;
        type W5Samples = (Samples, Option<Samples>, Samples);
        let result = (|| -> Result<W5Samples, over_socket::Error> {
            let mut ours = PingClient::connect(agent.socket())?;
            let mut unjournaled = bare.map(|b| PingClient::connect(b.socket())).transpose()?;
            let mut theirs = RawClient::connect(raw.socket())?;
            ours.round_trips(2_000)?;
            if let Some(client) = &mut unjournaled {
                client.round_trips(2_000)?;
            }
            theirs.round_trips(2_000)?;
            let (blocks, per_block) = if quick { (5, 1_000) } else { (10, 2_000) };
            let (mut a, mut c) = (Samples::new(), Samples::new());
            let mut b = unjournaled.as_ref().map(|_| Samples::new());
            for _ in 0..blocks {
                a.extend(Samples::from_durations(&ours.round_trips(per_block)?).into_values());
                if let (Some(client), Some(b)) = (&mut unjournaled, &mut b) {
                    b.extend(
                        Samples::from_durations(&client.round_trips(per_block)?).into_values(),
                    );
                }
                c.extend(Samples::from_durations(&theirs.round_trips(per_block)?).into_values());
            }
            Ok((a, b, c))
        })();
        let (mut ours, mut unjournaled, mut raw_rt) = match result {
            Ok(samples) => samples,
            Err(error) => {
                self.notes.push(format!("W5{label} failed: {error}"));
                return None;
            }
        };
        for (p, name) in [(50.0, "p50"), (99.0, "p99")] {
            let (o, r) = (ours.percentile(p) / 1e3, raw_rt.percentile(p) / 1e3);
            let row = Row::new(
                format!("w5_{name}{key}"),
                format!("W5 ping round trip {name} (baseline: raw UnixStream, same bytes){label}"),
                Quantity::Us,
            )
            .ours(o)
            .base(r);
            self.rows
                .push(placement.target(row, "≤ 1.5× raw", o <= 1.5 * r));
            if let Some(unjournaled) = &mut unjournaled {
                let u = unjournaled.percentile(p) / 1e3;
                self.rows.push(
                    Row::new(
                        format!("w5_{name}_nojournal{key}"),
                        format!("W5 ping round trip {name}, agent --no-state (baseline: raw UnixStream){label}"),
                        Quantity::Us,
                    )
                    .ours(u)
                    .base(r)
                    .reference(informative("≤ 1.5× raw", u <= 1.5 * r)),
                );
                self.rows.push(
                    Row::new(
                        format!("journal_w5_{name}{key}"),
                        format!("W5 ping round trip {name}: agent with journal (ours) vs --no-state (baseline){label}"),
                        Quantity::Us,
                    )
                    .ours(o)
                    .base(u)
                    .reference(informative("≤ 1.2× without journal (a ping writes nothing)", o <= 1.2 * u)),
                );
            }
        }
        self.extra
            .push((format!("w5{key}_samples_each"), ours.len().to_string()));
        Some(raw_rt.percentile(50.0) / 1e3)
    }

    /// W6 K=1 against `agent` (journaling) and, if given, `bare` (`--no-state`), in alternating
    /// blocks of rounds.
    fn w6_one(
        &mut self,
        agent: &SocketChild,
        bare: Option<&SocketChild>,
        raw_p50_us: Option<f64>,
        placement: Placement,
    ) {
        let (key, label) = (placement.key(), placement.label());
        self.progress(&format!(
            "W6: wake one blocked start over the socket{label}"
        ));
        let rounds = self.plan.reps(200, 1_000);
        let blocks = if bare.is_some() { 4 } else { 1 };
        let (mut times, mut unjournaled) = (Vec::new(), Vec::new());
        for block in 0..blocks {
            let warmup = if block == 0 { 50 } else { 10 };
            let prefix = format!("w6k1{key}_b{block}_");
            match over_socket::wake_one(agent.socket(), &prefix, warmup, rounds / blocks) {
                Ok(more) => times.extend(more),
                Err(error) => {
                    self.notes.push(format!("W6 K=1{label} failed: {error}"));
                    return;
                }
            }
            if let Some(bare) = bare {
                match over_socket::wake_one(bare.socket(), &prefix, warmup, rounds / blocks) {
                    Ok(more) => unjournaled.extend(more),
                    Err(error) => {
                        self.notes
                            .push(format!("W6 K=1 --no-state{label} failed: {error}"));
                        return;
                    }
                }
            }
        }
        let mut times = Samples::from_durations(&times);
        let (p50, p99) = (times.percentile(50.0) / 1e3, times.percentile(99.0) / 1e3);
        let mut row = Row::new(
            format!("w6_k1_p50{key}"),
            format!("W6 K=1 wake-up p50, complete sent → started received (baseline: raw round trip p50){label}"),
            Quantity::Us,
        )
        .ours(p50);
        if let Some(raw) = raw_p50_us {
            row = placement.target(row.base(raw), "≤ 2× raw round trip", p50 <= 2.0 * raw);
        }
        self.rows.push(row);
        self.rows.push(
            Row::new(
                format!("w6_k1_p99{key}"),
                format!("W6 K=1 wake-up p99{label}"),
                Quantity::Us,
            )
            .ours(p99),
        );
        if bare.is_some() {
            let mut unjournaled = Samples::from_durations(&unjournaled);
            let (u50, u99) = (
                unjournaled.percentile(50.0) / 1e3,
                unjournaled.percentile(99.0) / 1e3,
            );
            let mut row = Row::new(
                format!("w6_k1_p50_nojournal{key}"),
                format!(
                    "W6 K=1 wake-up p50, agent --no-state (baseline: raw round trip p50){label}"
                ),
                Quantity::Us,
            )
            .ours(u50);
            if let Some(raw) = raw_p50_us {
                row = row
                    .base(raw)
                    .reference(informative("≤ 2× raw round trip", u50 <= 2.0 * raw));
            }
            self.rows.push(row);
            let row = Row::new(
                format!("journal_w6_k1_p50{key}"),
                format!(
                    "W6 K=1 wake-up p50: agent with journal (ours) vs --no-state (baseline){label}"
                ),
                Quantity::Us,
            )
            .ours(p50)
            .base(u50);
            self.rows
                .push(placement.target(row, "≤ 1.2× without journal", p50 <= 1.2 * u50));
            self.rows.push(
                Row::new(
                    format!("journal_w6_k1_p99{key}"),
                    format!("W6 K=1 wake-up p99: agent with journal (ours) vs --no-state (baseline){label}"),
                    Quantity::Us,
                )
                .ours(p99)
                .base(u99)
                .reference(informative("≤ 1.2× without journal", p99 <= 1.2 * u99)),
            );
        }
        if !matches!(placement, Placement::OneCpu(_)) {
            return;
        }
        let poll = self
            .rows
            .iter()
            .find(|r| r.key == "w1_poll")
            .and_then(|r| r.base);
        let mut row = Row::new(
            "w6_vs_poll",
            "W6 K=1 wake-up p50 vs the Go CLI's 1 s polling (mean wake delay sampled in W1)",
            Quantity::Ms,
        )
        .ours(p50 / 1e3);
        row = match poll {
            Some(poll) => row.base(poll),
            None => row
                .base(500.0)
                .base_note("(expected: half the 1 s interval)"),
        };
        self.rows.push(row);
    }

    /// W6 K=10k against `agent` (journaling) and, if given, `bare` (`--no-state`), alternating.
    fn w6_many(&mut self, agent: &SocketChild, bare: Option<&SocketChild>) {
        self.progress("W6: wake 10,000 blocked starts over the socket");
        let (blocks, rounds) = (self.plan.reps(1, 3), 2);
        let (mut times, mut unjournaled) = (Vec::new(), Vec::new());
        for block in 0..blocks {
            let prefix = format!("w6k10k_b{block}_");
            match over_socket::wake_many(agent.socket(), &prefix, 10_000, rounds) {
                Ok(more) => times.extend(more),
                Err(error) => {
                    self.notes.push(format!("W6 K=10k failed: {error}"));
                    return;
                }
            }
            if let Some(bare) = bare {
                match over_socket::wake_many(bare.socket(), &prefix, 10_000, rounds) {
                    Ok(more) => unjournaled.extend(more),
                    Err(error) => {
                        self.notes
                            .push(format!("W6 K=10k --no-state failed: {error}"));
                        return;
                    }
                }
            }
        }
        let total = Samples::from_durations(&times).median() / 1e6;
        self.rows.push(
            Row::new(
                "w6_k10k",
                "W6 K=10k: complete sent → last of 10,000 blocked clients has started",
                Quantity::Ms,
            )
            .ours(total)
            .check("≤ 100 ms", total <= 100.0),
        );
        if bare.is_some() {
            let without = Samples::from_durations(&unjournaled).median() / 1e6;
            self.rows.push(
                Row::new(
                    "w6_k10k_nojournal",
                    "W6 K=10k, agent --no-state",
                    Quantity::Ms,
                )
                .ours(without)
                .reference(informative("≤ 100 ms", without <= 100.0)),
            );
            self.rows.push(
                Row::new(
                    "journal_w6_k10k",
                    "W6 K=10k: agent with journal (ours) vs --no-state (baseline)",
                    Quantity::Ms,
                )
                .ours(total)
                .base(without)
                .check("≤ 1.2× without journal", total <= 1.2 * without),
            );
        }
        self.extra
            .push(("w6_k10k_rounds_each".into(), times.len().to_string()));
    }

    /// Requests per second of `tput_connections` connections ([`CHURN_CONNECTIONS`] unless told)
    /// each changing the graph (`over_socket::churn`), against `agent` (journaling) and `bare`
    /// (`--no-state`) in alternating rounds; unpinned, like W6 K=10k. Its target is issue 6's: with
    /// the journal at least 1/1.2 of the throughput without (counted at the default connections
    /// only).
    fn throughput(&mut self, agent: &SocketChild, bare: Option<&SocketChild>) {
        let connections = self.plan.tput_connections;
        // The same requests in all whatever the connections: 16,000 units' want/start/complete.
        let units = self.plan.reps(100, 1_000) * CHURN_CONNECTIONS / connections;
        let units = units.max(1);
        self.progress(&format!(
            "throughput: {connections} connections × {units} units × want/start/complete"
        ));
        // Rounds in pairs, the journaling agent first in one pair and second in the next, so that
        // neither the order nor a machine slowing down over seconds favours one side: the slowdown
        // is the median of the pairs' ratios.
        let rounds = self.plan.reps(2, 8);
        let (mut with, mut without, mut slowdowns) =
            (Samples::new(), Samples::new(), Samples::new());
        for round in 0..rounds {
            let prefix = format!("tput_r{round}_");
            let mut targets: Vec<_> = std::iter::once((agent, true))
                .chain(bare.map(|bare| (bare, false)))
                .collect();
            if round % 2 == 1 {
                targets.reverse();
            }
            let mut pair = [None, None];
            for (target, journaled) in targets {
                match over_socket::churn(target.socket(), &prefix, connections, units) {
                    Ok((requests, took)) => {
                        let rate = requests as f64 / took.as_secs_f64();
                        pair[usize::from(!journaled)] = Some(rate);
                        if journaled { &mut with } else { &mut without }.push(rate);
                    }
                    Err(error) => {
                        self.notes.push(format!(
                            "throughput against {} failed: {error}",
                            target.description
                        ));
                        return;
                    }
                }
            }
            if let [Some(journaled), Some(bare)] = pair {
                slowdowns.push(bare / journaled);
            }
        }
        let ours = with.median();
        let label = format!(
            "throughput: {connections} connections, each want + start + complete on its own units, requests/s"
        );
        let mut row = Row::new("tput", label, Quantity::OpsPerSec).ours(ours);
        if bare.is_some() {
            let base = without.median();
            self.rows.push(
                Row::new(
                    "tput_nojournal",
                    "throughput, agent --no-state, requests/s",
                    Quantity::OpsPerSec,
                )
                .ours(base),
            );
            row = Row::new(
                "journal_tput",
                format!(
                    "{}: agent with journal (ours) vs --no-state (baseline)",
                    row.label
                ),
                Quantity::OpsPerSec,
            )
            .ours(ours)
            .base(base);
            let slowdown = slowdowns.median();
            let pairs = slowdowns.len();
            let target = format!(
                "≤ 1.2× slower without journal (is {slowdown:.2}×, median of {pairs} paired rounds)"
            );
            row = if connections == CHURN_CONNECTIONS {
                row.check(target, slowdown <= 1.2)
            } else {
                row.reference(informative(&target, slowdown <= 1.2))
            };
            self.extra
                .push(("journal_tput_slowdown".into(), format!("{slowdown:.4}")));
            self.extra.push((
                "journal_tput_slowdown_of_medians".into(),
                format!("{:.4}", base / ours),
            ));
        }
        self.rows.push(row);
        self.extra.push((
            "tput_requests_per_round".into(),
            (3 * connections * units).to_string(),
        ));
        self.extra
            .push(("tput_connections".into(), connections.to_string()));
    }

    /// How long one large answer holds up the agent's other connections (information; no target):
    /// on a fresh journaling agent, the slowest `ping` on one connection while another gets a
    /// `list` of every unit, against the slowest over as long with nothing else asked
    /// (`over_socket::ping_beside_list`).
    fn ping_beside_list(&mut self) {
        let Some(agent) = self.start_agent(Journal::On) else {
            return;
        };
        let (units, rounds) = (self.plan.reps(2_000, 20_000), self.plan.reps(1, 3));
        self.progress(&format!(
            "a ping beside a {units}-unit list, {rounds} round(s)"
        ));
        let results = match over_socket::ping_beside_list(agent.socket(), "holdup_", units, rounds)
        {
            Ok(results) => results,
            Err(error) => {
                self.notes
                    .push(format!("the ping beside a large list failed: {error}"));
                return;
            }
        };
        let median = |pick: fn(&over_socket::PingBesideList) -> Duration| {
            Samples::from_durations(&results.iter().map(pick).collect::<Vec<_>>()).median() / 1e6
        };
        let (during, quiet, list) = (
            median(|r| r.worst_during),
            median(|r| r.worst_quiet),
            median(|r| r.list),
        );
        self.rows.push(
            Row::new(
                "ping_beside_list",
                format!(
                    "slowest `ping` on one connection while another gets a {units}-unit `list` \
                     (baseline: slowest over as long with nothing else asked), agent with journal"
                ),
                Quantity::Ms,
            )
            .ours(during)
            .base(quiet)
            .reference(format!("info, no target; the `list` took {list:.1} ms")),
        );
    }

    fn cli(&mut self, agent: &SocketChild) {
        let binary = match &self.binary {
            Ok(binary) => binary.clone(),
            Err(missing) => {
                for (key, label) in [
                    ("cli_ping", "one `unitsync ping` process"),
                    ("agent_idle_rss", "agent idle RSS"),
                    ("agent_rss_per_connection", "agent RSS per idle connection"),
                ] {
                    self.rows.push(
                        Row::new(key, label, Quantity::Ms)
                            .ours_note(format!("not measured: {missing}")),
                    );
                }
                return;
            }
        };
        self.progress("CLI: `unitsync ping` process vs /bin/true");
        let reps = self.plan.reps(15, 101);
        let ping = |b: &Path| {
            let mut command = Command::new(b);
            command.arg("ping").arg("--socket").arg(agent.socket());
            command
        };
        let version = |b: &Path| {
            let mut command = Command::new(b);
            command.arg("--version");
            command
        };
        let result = (|| -> std::io::Result<(Samples, Samples, Samples)> {
            for _ in 0..3 {
                process::time_command(&mut ping(&binary))?;
                process::time_command(&mut version(&binary))?;
                process::time_command(&mut Command::new("/bin/true"))?;
            }
            let (mut a, mut b, mut c) = (Samples::new(), Samples::new(), Samples::new());
            for _ in 0..reps {
                a.push_duration(process::time_command(&mut ping(&binary))?);
                b.push_duration(process::time_command(&mut Command::new("/bin/true"))?);
                c.push_duration(process::time_command(&mut version(&binary))?);
            }
            Ok((a, b, c))
        })();
        match result {
            Ok((mut ours, mut trivial, mut version_only)) => {
                // `unitsync --version` starts the same binary but opens no runtime or socket.
                self.extra.push((
                    "cli_version_only_ms".into(),
                    format!("{:.3}", version_only.median() / 1e6),
                ));
                let (o, t) = (ours.median() / 1e6, trivial.median() / 1e6);
                self.rows.push(
                    Row::new(
                        "cli_ping",
                        "one `unitsync ping` process, spawn to exit (baseline: /bin/true)",
                        Quantity::Ms,
                    )
                    .ours(o)
                    .base(t)
                    .check("≤ 2× trivial process", o <= 2.0 * t),
                );
            }
            Err(error) => self.notes.push(format!("CLI ping failed: {error}")),
        }

        self.progress("agent memory: idle, and per idle connection");
        let result = (|| -> Result<(f64, f64), over_socket::Error> {
            let fresh = SocketChild::unitsync_agent(&binary)?;
            std::thread::sleep(Duration::from_millis(300));
            let idle = fresh.rss_kib()?;
            let connections = IdleConnections::open(fresh.socket(), 1_000)?;
            std::thread::sleep(Duration::from_millis(300));
            let loaded = fresh.rss_kib()?;
            let per = (loaded as f64 - idle as f64) / connections.len() as f64;
            drop(connections);
            Ok((idle as f64 / 1024.0, per))
        })();
        match result {
            Ok((idle_mib, per_kib)) => {
                self.rows.push(
                    Row::new(
                        "agent_idle_rss",
                        "`unitsync agent` idle RSS (VmRSS)",
                        Quantity::MiB,
                    )
                    .ours(idle_mib)
                    .check("≤ 10 MiB", idle_mib <= 10.0),
                );
                self.rows.push(
                    Row::new(
                        "agent_rss_per_connection",
                        "agent RSS per idle handshaken connection (1,000 opened)",
                        Quantity::KiB,
                    )
                    .ours(per_kib)
                    .check("≤ 50 KiB", per_kib <= 50.0),
                );
            }
            Err(error) => self.notes.push(format!("agent memory failed: {error}")),
        }
    }

    fn print(&self) {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n## unitsync benchmark report ({})\n",
            if self.plan.quick { "quick" } else { "full" }
        );
        let _ = writeln!(out, "Machine: {}.\n", self.machine);
        let _ = writeln!(
            out,
            "| workload | ours | baseline | ratio (ours/baseline) | target |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|");
        for row in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                row.label,
                row.cell(row.ours, &row.ours_note),
                row.cell(row.base, &row.base_note),
                row.ratio_cell(),
                row.target_cell()
            );
        }
        let checks: Vec<&Check> = self.rows.iter().flat_map(|r| &r.checks).collect();
        let met = checks.iter().filter(|c| c.met).count();
        let _ = writeln!(out, "\nTargets met: {met} of {}.", checks.len());
        for note in &self.notes {
            let _ = writeln!(out, "\nNote: {note}");
        }

        let mut summary = vec![format!("quick={}", u8::from(self.plan.quick))];
        for row in &self.rows {
            let suffix = row.unit.suffix();
            if let Some(v) = row.ours {
                summary.push(format!("{}_ours_{suffix}={}", row.key, number(v)));
            }
            if let Some(v) = row.base {
                summary.push(format!("{}_base_{suffix}={}", row.key, number(v)));
            }
            if let Some(r) = row.ratio() {
                summary.push(format!("{}_ratio={r:.4}", row.key));
            }
            if !row.checks.is_empty() {
                let all = row.checks.iter().all(|c| c.met);
                summary.push(format!(
                    "{}_met={}",
                    row.key,
                    if all { "yes" } else { "no" }
                ));
            }
        }
        for (key, value) in &self.extra {
            summary.push(format!("{key}={value}"));
        }
        summary.push(format!("targets_met={met}/{}", checks.len()));
        summary.push(format!(
            "report_seconds={:.1}",
            self.begin.elapsed().as_secs_f64()
        ));
        let _ = writeln!(out, "\nsummary: {}", summary.join(" "));
        print!("{out}");
    }
}

/// Whether an agent journals (the default of `unitsync agent`) or runs with `--no-state`.
#[derive(Clone, Copy)]
enum Journal {
    On,
    Off,
}

impl Journal {
    fn label(self) -> &'static str {
        match self {
            Journal::On => "",
            Journal::Off => " (--no-state)",
        }
    }
}

/// Connections of the throughput figure: enough to keep both CPUs of the agent busy and to let
/// concurrent requests share journal writes.
const CHURN_CONNECTIONS: usize = 16;

/// Where the W5 / W6 K=1 processes run.
#[derive(Clone, Copy)]
enum Placement {
    /// Wherever the scheduler puts them.
    Unpinned,
    /// Client, agent and raw server all on this CPU (the counted figures).
    OneCpu(usize),
    /// Client on one CPU, agent and raw server on another.
    Across { client: usize, server: usize },
}

impl Placement {
    fn key(self) -> &'static str {
        match self {
            Placement::Unpinned => "_unpinned",
            Placement::OneCpu(_) => "",
            Placement::Across { .. } => "_across_cpus",
        }
    }

    fn label(self) -> String {
        match self {
            Placement::Unpinned => ", unpinned (placement varies run to run)".to_owned(),
            Placement::OneCpu(cpu) => format!(", client and servers all on CPU {cpu}"),
            Placement::Across { client, server } => {
                format!(", client on CPU {client}, servers on CPU {server}")
            }
        }
    }

    /// The CPU the raw server must be started on (the agent was started by the caller).
    fn spawn_servers_on(self) -> Option<usize> {
        match self {
            Placement::Across { server, .. } => Some(server),
            Placement::Unpinned | Placement::OneCpu(_) => None,
        }
    }

    /// Counts the target for the one-CPU placement; shows it for information otherwise.
    fn target(self, row: Row, target: &str, met: bool) -> Row {
        match self {
            Placement::OneCpu(_) => row.check(target, met),
            Placement::Unpinned | Placement::Across { .. } => {
                row.reference(informative(target, met))
            }
        }
    }
}

/// A target shown for information only (not counted), with what it would say.
fn informative(target: &str, met: bool) -> String {
    format!(
        "info, not counted: {target} would be {}",
        if met { "met" } else { "missed" }
    )
}

/// A figure for the summary line: enough digits, no exponent.
fn number(value: f64) -> String {
    if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.4}")
    }
}
