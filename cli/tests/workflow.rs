//! The everyday commands through the real binary: SPEC §1's two scripts racing as real `sh`
//! scripts, `start` telling the user what it waits for, and the output of `ping`, `status`, `list`,
//! `graph`, `--help` and `completions` (human text aligned, `--json` with its documented fields), and
//! the agent serving on as many worker threads as `--threads` says (half the CPUs unless told).

#![cfg(unix)] // real Unix sockets, signals and uids throughout

mod common;

use common::{spawn, Agent, BIN};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

const SCRIPT_A: &str = r#"set -e
unitsync want "$CLAUDE" "$GIT"
unitsync start "$CLAUDE"
echo "$CLAUDE start" >> "$LOG"
unitsync complete "$CLAUDE"
"#;

const SCRIPT_B: &str = r#"set -e
unitsync start "$GIT"
echo "$GIT start" >> "$LOG"
i=0
while [ $i -lt 50 ]; do echo "$GIT cloning $i" >> "$LOG"; i=$((i + 1)); done
echo "$GIT done" >> "$LOG"
unitsync complete "$GIT"
"#;

/// One of the SPEC §1 scripts as a real `sh` script, with `unitsync` on its PATH.
fn script(agent: &Agent, dir: &Path, body: &str, round: usize) -> std::process::Command {
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut sh = std::process::Command::new("sh");
    sh.arg("-c")
        .arg(body)
        .env("PATH", path)
        .env("UNITSYNC_SOCKET", &agent.socket)
        .env_remove("UNITSYNC_OWNER")
        .env("CLAUDE", format!("claude{round}"))
        .env("GIT", format!("git{round}"))
        .env("LOG", dir.join("log"))
        .stdin(std::process::Stdio::null());
    sh
}

#[test]
fn spec_section_1_scripts_run_in_order() {
    let agent = Agent::start();
    let dir = agent.dir.path().to_owned();
    for round in 0..6 {
        std::fs::write(dir.join("log"), "").unwrap();
        let (a, b) = match round % 3 {
            // Both at once: whatever the interleaving, the order must hold.
            0 => {
                let a = spawn(&mut script(&agent, &dir, SCRIPT_A, round));
                let b = spawn(&mut script(&agent, &dir, SCRIPT_B, round));
                (a, b)
            }
            // Script A first, and certainly blocked before B begins.
            1 => {
                let a = spawn(&mut script(&agent, &dir, SCRIPT_A, round));
                a.stderr_line(&format!("claude{round} waits for git{round}"));
                let b = spawn(&mut script(&agent, &dir, SCRIPT_B, round));
                (a, b)
            }
            // Script B first.
            _ => {
                let b = spawn(&mut script(&agent, &dir, SCRIPT_B, round));
                let a = spawn(&mut script(&agent, &dir, SCRIPT_A, round));
                (a, b)
            }
        };
        a.finish().ok();
        b.finish().ok();
        let log = std::fs::read_to_string(dir.join("log")).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        let position = |text: &str| {
            lines
                .iter()
                .position(|l| *l == text)
                .unwrap_or_else(|| panic!("{text:?} missing from the log: {lines:#?}"))
        };
        let git_done = position(&format!("git{round} done"));
        let claude_start = position(&format!("claude{round} start"));
        assert!(
            git_done < claude_start,
            "round {round}: claude started before git was done: {lines:#?}"
        );
        assert_eq!(agent.state(&format!("claude{round}")), "completed");
        assert_eq!(agent.state(&format!("git{round}")), "completed");
    }
}

#[test]
fn a_blocked_start_says_what_it_waits_for_and_updates_it() {
    let agent = Agent::start();
    agent.run(&["want", "claude", "git", "npm"]).ok();
    let start = agent.spawn(&["start", "claude"]);
    start.stderr_line("unitsync: claude waits for git (unknown), npm (unknown)");
    agent.run(&["start", "git"]).ok();
    start.stderr_line("claude waits for git (started), npm (unknown)");
    agent.run(&["complete", "git"]).ok();
    start.stderr_line("claude waits for npm (unknown)");
    agent.run(&["start", "npm"]).ok();
    start.stderr_line("claude waits for npm (started)");
    agent.run(&["complete", "npm"]).ok();
    let run = start.finish();
    run.ok();
    assert_eq!(run.stdout, "");
    // Every line it printed is a progress line, and none repeats the one before.
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert!(lines
        .iter()
        .all(|l| l.starts_with("unitsync: claude waits for ")));
    assert!(lines.windows(2).all(|w| w[0] != w[1]), "{lines:#?}");
    assert_eq!(agent.state("claude"), "started");
}

#[test]
fn quiet_start_prints_nothing_but_the_final_error() {
    let agent = Agent::start();
    agent.run(&["want", "b", "a"]).ok();
    let run = agent.run(&["start", "-q", "b", "--timeout", "150ms"]);
    run.code(4);
    assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
    run.stderr_has("timed out");
    let ready = agent.run(&["start", "c"]);
    ready.ok();
    assert_eq!((ready.stdout.as_str(), ready.stderr.as_str()), ("", ""));
}

#[test]
fn unitsync_quiet_in_the_environment_is_quiet_unless_empty_0_or_false() {
    let agent = Agent::start();
    agent.run(&["want", "b", "a"]).ok();
    for (value, quiet) in [
        ("1", true),
        ("yes", true),
        ("", false),
        ("0", false),
        ("false", false),
    ] {
        for command in [
            &["start", "b", "--timeout", "50ms"][..],
            &["exec", "b", "--timeout", "50ms", "--", "true"][..],
        ] {
            let run = common::run(agent.command().args(command).env("UNITSYNC_QUIET", value));
            run.code(4);
            assert_eq!(
                !run.stderr.contains("waits for"),
                quiet,
                "UNITSYNC_QUIET={value:?} {command:?}: {run:#?}"
            );
        }
    }
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .cloned()
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn ping_prints_version_protocol_uptime_and_units() {
    let agent = Agent::start();
    agent.run(&["want", "a", "b"]).ok();
    let human = agent.run(&["ping"]);
    human.ok();
    let line = human.stdout.trim_end();
    assert!(line.starts_with(&format!(
        "agent {} (protocol 1), pid ",
        env!("CARGO_PKG_VERSION")
    )));
    assert!(line.ends_with(", 2 units, 0 waiting"), "{line}");
    assert!(line.contains(", up "), "{line}");
    let json = agent.run(&["ping", "--json"]).ok().json();
    assert_eq!(
        keys(&json),
        set(&[
            "agent_version",
            "protocol",
            "uptime_ms",
            "units",
            "pid",
            "waiters"
        ])
    );
    assert_eq!(json["waiters"], 0);
    assert_eq!(json["protocol"], 1);
    assert_eq!(json["units"], 2);
    assert_eq!(json["pid"], agent.proc.pid());
}

#[test]
fn status_shows_state_dependencies_dependents_times_and_failure() {
    let agent = Agent::start();
    agent.run(&["want", "claude", "git", "npm-install"]).ok();
    agent.run(&["want", "editor", "claude"]).ok();
    agent.run(&["start", "git"]).ok();
    agent.run(&["complete", "git"]).ok();

    let human = agent.run(&["status", "claude"]);
    human.ok();
    let expected_prefix = "\
claude
  state:       pending (not ready)
  depends on:  git          completed  (needs completed: ok)
               npm-install  unknown    (needs completed: waiting)
  dependents:  editor
  registered:  ";
    assert!(
        human.stdout.starts_with(expected_prefix),
        "got:\n{}",
        human.stdout
    );
    assert!(human
        .stdout
        .contains("\n  started:     -\n  finished:    -\n"));

    let json = agent.status("claude");
    assert_eq!(
        keys(&json),
        set(&[
            "name",
            "state",
            "ready",
            "dependencies",
            "dependents",
            "registered_at_ms",
            "started_at_ms",
            "finished_at_ms",
            "failure",
        ])
    );
    assert_eq!(json["name"], "claude");
    assert_eq!(json["ready"], false);
    assert_eq!(
        json["dependencies"],
        serde_json::json!([
            { "name": "git", "required": "completed", "current": "completed", "satisfied": true },
            { "name": "npm-install", "required": "completed", "current": "unknown", "satisfied": false },
        ])
    );
    assert_eq!(json["dependents"], serde_json::json!(["editor"]));
    assert!(json["registered_at_ms"].as_u64().unwrap() > 1_600_000_000_000);
    assert_eq!(json["failure"], Value::Null);

    agent
        .run(&["fail", "npm-install", "--reason", "registry down"])
        .ok();
    let human = agent.run(&["status", "editor"]).ok().stdout.clone();
    assert!(
        human.contains("  failure:     dependency npm-install failed\n"),
        "{human}"
    );
    assert!(
        human.contains("  root cause:  npm-install: registry down\n"),
        "{human}"
    );
    let json = agent.status("editor");
    assert_eq!(
        keys(&json["failure"]),
        set(&["reason", "cause", "cause_reason"])
    );
    assert!(json["finished_at_ms"].as_u64().is_some());
}

#[test]
fn list_is_an_aligned_table_and_json_lists_registered_units() {
    let agent = Agent::start();
    agent.run(&["want", "a-long-unit-name", "git"]).ok();
    agent.run(&["start", "git"]).ok();
    agent.run(&["complete", "git"]).ok();
    agent.run(&["start", "x"]).ok();

    let table = agent.run(&["list"]).ok().stdout.clone();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(
        lines[0].starts_with("UNIT              STATE      READY  STARTED"),
        "{table}"
    );
    // Columns line up: every row has STATE where the header has it.
    let state_column = lines[0].find("STATE").unwrap();
    for (line, (name, state)) in lines[1..].iter().zip([
        ("a-long-unit-name", "pending"),
        ("git", "completed"),
        ("x", "started"),
    ]) {
        assert!(line.starts_with(name), "{line}");
        assert_eq!(
            &line[state_column..state_column + state.len()],
            state,
            "{line}"
        );
    }
    assert!(lines[3].trim_end().ends_with("running"), "{table}");

    let json = agent.run(&["list", "--json"]).ok().json();
    assert_eq!(keys(&json), set(&["units"]));
    let names: Vec<&str> = json["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a-long-unit-name", "git", "x"]);

    agent.run(&["want", "y", "only-depended-on"]).ok();
    let all = agent.run(&["list", "--all", "--json"]).ok().json();
    let unknown: Vec<&Value> = all["units"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["state"] == "unknown")
        .collect();
    assert_eq!(unknown.len(), 1);
    assert_eq!(unknown[0]["name"], "only-depended-on");
    assert!(!agent
        .run(&["list"])
        .ok()
        .stdout
        .contains("only-depended-on"));
}

#[test]
fn an_empty_list_says_so_on_stderr() {
    let agent = Agent::start();
    let run = agent.run(&["list"]);
    run.ok();
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr, "no units\n");
    assert_eq!(
        agent.run(&["list", "--json"]).ok().json(),
        serde_json::json!({ "units": [] })
    );
}

#[test]
fn graph_draws_names_states_and_unknown_units_distinctly() {
    let agent = Agent::start();
    agent.run(&["want", "claude", "git"]).ok();
    agent.run(&["start", "tools"]).ok();
    let dot = agent.run(&["graph"]).ok().stdout.clone();
    assert!(dot.starts_with("digraph unitsync {"), "{dot}");
    assert!(dot.contains("\"git\" -> \"claude\";"), "{dot}");
    // A node statement runs from `"name" [` to `];` (its label may span lines).
    let node = |name: &str| {
        let start = dot
            .find(&format!("  \"{name}\" ["))
            .expect("a node statement");
        let end = start + dot[start..].find("];").expect("the statement's end");
        dot[start..end].to_owned()
    };
    assert!(node("git").contains("dashed"), "unknown is dashed: {dot}");
    assert!(node("git").contains("unknown"), "{dot}");
    assert!(!node("claude").contains("dashed"), "{dot}");
    assert!(dot.contains("started"), "{dot}");

    let mermaid = agent
        .run(&["graph", "--format", "mermaid"])
        .ok()
        .stdout
        .clone();
    assert!(mermaid.starts_with("flowchart LR"), "{mermaid}");
    assert!(
        mermaid.contains("git<br/>unknown\"]:::unknown"),
        "{mermaid}"
    );
    assert!(mermaid.contains("classDef unknown"), "{mermaid}");
    assert!(mermaid.contains("stroke-dasharray"), "{mermaid}");
}

const SUBCOMMANDS: &[&str] = &[
    "agent",
    "ping",
    "want",
    "start",
    "complete",
    "fail",
    "ready",
    "wait",
    "status",
    "list",
    "graph",
    "watch",
    "exec",
    "completions",
];

#[test]
fn every_subcommand_help_has_a_purpose_and_an_example() {
    for subcommand in SUBCOMMANDS {
        let run = common::run(common::unitsync().args([subcommand, "--help"]));
        run.ok();
        let mut lines = run.stdout.lines();
        let first = lines.next().unwrap_or_default();
        assert!(
            !first.is_empty() && first.len() <= 100 && lines.next() == Some(""),
            "{subcommand}: the help should open with a one-line purpose:\n{}",
            run.stdout
        );
        let example = run
            .stdout
            .split("Example:\n")
            .nth(1)
            .unwrap_or_else(|| panic!("{subcommand} --help has no example:\n{}", run.stdout));
        assert!(
            example.trim_start().starts_with("unitsync "),
            "{subcommand}: {example}"
        );
    }
    let top = common::run(common::unitsync().arg("--help"));
    top.ok().stdout_has("Exit codes:");
    for subcommand in SUBCOMMANDS {
        assert!(
            top.stdout.contains(&format!("  {subcommand} ")),
            "{subcommand} missing"
        );
    }
}

#[test]
fn completions_are_generated_for_common_shells() {
    for shell in ["bash", "zsh", "fish"] {
        let run = common::run(common::unitsync().args(["completions", shell]));
        run.ok().stdout_has("unitsync");
        assert!(run.stdout.contains("want") && run.stdout.contains("exec"));
    }
    common::run(common::unitsync().args(["completions", "tcsh"])).code(2);
}

/// How many of the agent's threads are tokio workers (by tokio's thread name), read from /proc:
/// waits, up to a few seconds, for `expected` (a thread names itself as it starts).
#[cfg(target_os = "linux")]
fn worker_threads(agent: &Agent, expected: usize) -> usize {
    let count = || {
        std::fs::read_dir(format!("/proc/{}/task", agent.proc.pid()))
            .expect("the agent's threads")
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|name| name.trim_end() == "tokio-rt-worker")
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let now = count();
        if now == expected || std::time::Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[cfg(target_os = "linux")]
#[test]
fn the_agent_serves_on_the_worker_threads_it_is_told_and_half_the_cpus_by_default() {
    // `--no-state`: nothing is written, so no blocking-pool thread (named like the workers)
    // starts.
    let cpus = std::thread::available_parallelism().map_or(1, |cpus| cpus.get());
    let default = (cpus / 2).max(1);
    let agent = Agent::start_with(&["--no-state"]);
    agent.run(&["ping"]).ok();
    assert_eq!(worker_threads(&agent, default), default);

    let agent = Agent::start_with(&["--no-state", "--threads", "3"]);
    agent.run(&["ping"]).ok();
    assert_eq!(worker_threads(&agent, 3), 3);
    agent.run(&["want", "claude", "git"]).ok();
    let blocked = agent.spawn(&["start", "claude"]);
    agent.wait_for_waiters(1);
    agent.run(&["start", "git"]).ok();
    agent.run(&["complete", "git"]).ok();
    blocked.finish().ok();
    assert_eq!(agent.state("claude"), "started");

    common::run(common::unitsync().args(["agent", "--threads", "0"]))
        .code(2)
        .stderr_has("--threads");
}
