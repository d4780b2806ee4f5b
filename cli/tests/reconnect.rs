//! Clients that outlive their agent: a `start`, `wait` or `watch` whose agent goes away (SIGKILL,
//! SIGTERM) says so once and reconnects until an agent answers on the socket again, then carries on
//! as if nothing happened — a `start` starts its unit exactly once (its claim makes the resent
//! request idempotent), a `wait` ends when the unit gets there, a `watch` shows every event once, in
//! order, with no gap. A `--timeout` bounds the outage (exit 5); `--quiet` hides the notice; and the
//! very first connection still fails at once. At the protocol level: the same claimed start twice
//! answers `started` twice with one event, another claim is refused, and `abandon` fails what an
//! owner's claims started.

#![cfg(unix)] // real Unix sockets and signals throughout

mod common;

use common::{run, tempdir, unitsync, Agent};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The `started` events of `unit` in `events`.
fn starts_of(events: &[Value], unit: &str) -> usize {
    events
        .iter()
        .filter(|e| e["event"] == "started" && e["unit"] == unit)
        .count()
}

#[track_caller]
fn a_blocked_start_survives(signal: i32) {
    let agent = Agent::start();
    agent.run(&["want", "claude", "git"]).ok();
    let blocked = agent.spawn(&["start", "claude", "--timeout", "60s"]);
    blocked.stderr_line("claude waits for git (unknown)");
    let notice = format!("lost the agent at {}; reconnecting", agent.socket.display());

    let (stopped, _) = agent.stop(signal);
    blocked.stderr_line(&notice);
    let agent = stopped.restart(&[]);
    assert_eq!(agent.state("claude"), "pending");
    agent.run(&["start", "git"]).ok();
    agent.run(&["complete", "git"]).ok();
    let run = blocked.finish();
    run.ok();
    assert_eq!(
        run.stderr.matches("lost the agent").count(),
        1,
        "one line per outage: {run:#?}"
    );
    assert_eq!(agent.state("claude"), "started");
    let history = agent.history("sentinel");
    assert_eq!(starts_of(&history, "claude"), 1, "{history:#?}");
}

#[test]
fn a_blocked_start_survives_a_killed_agent_and_starts_exactly_once() {
    a_blocked_start_survives(libc::SIGKILL);
}

#[test]
fn a_blocked_start_survives_an_agent_that_shut_down() {
    a_blocked_start_survives(libc::SIGTERM);
}

#[test]
fn a_wait_survives_a_restart() {
    let agent = Agent::start();
    let waiting = agent.spawn(&["wait", "server", "--until", "completed", "--timeout", "60s"]);
    agent.wait_for_waiters(1);
    let (stopped, _) = agent.stop(libc::SIGKILL);
    waiting.stderr_line("reconnecting");
    let agent = stopped.restart(&[]);
    agent.run(&["start", "server"]).ok();
    agent.run(&["complete", "server"]).ok();
    waiting.finish().ok();
}

#[test]
fn a_watch_across_restarts_shows_every_event_once_in_order() {
    let agent = Agent::start();
    let watch = agent.spawn(&["watch", "--json", "--from", "1"]);
    agent.run(&["want", "claude", "git"]).ok();
    agent.run(&["start", "git"]).ok();
    let (stopped, _) = agent.stop(libc::SIGKILL);
    let agent = stopped.restart(&[]);
    agent.run(&["complete", "git"]).ok();
    agent.run(&["start", "claude"]).ok();
    // Reconnected (it printed the events since the restart) before the second outage.
    watch.stdout.wait_count(6).expect("six events so far");
    let (stopped, _) = agent.stop(libc::SIGTERM);
    let agent = stopped.restart(&[]);
    agent.run(&["complete", "claude"]).ok();
    let history = agent.history("sentinel");

    let lines = watch.stdout.wait_count(history.len()).expect("every event");
    let seen: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(seen, history, "no gap, no repeat, nothing out of order");
    assert_eq!(
        watch.stderr.all().len(),
        2,
        "one notice per outage: {:#?}",
        watch.stderr.all()
    );
}

#[test]
fn a_timeout_bounds_the_outage_and_quiet_hides_the_notice() {
    let agent = Agent::start();
    agent.run(&["want", "claude", "git"]).ok();
    let loud = agent.spawn(&["start", "claude", "--timeout", "1s"]);
    let quiet = agent.spawn(&["start", "claude", "--timeout", "1s", "--quiet"]);
    loud.stderr_line("claude waits for git");
    agent.wait_for_waiters(2);
    let began = Instant::now();
    let (stopped, _) = agent.stop(libc::SIGKILL);
    for (client, quiet) in [(loud, false), (quiet, true)] {
        let run = client.finish();
        run.code(5)
            .stderr_has("lost the agent at")
            .stderr_has("did not come back within");
        assert_eq!(run.stderr.contains("reconnecting"), !quiet, "{run:#?}");
    }
    let took = began.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "the 1 s timeout ended the outage, took {took:?}"
    );
    drop(stopped);
}

#[test]
fn the_first_connection_still_fails_at_once() {
    let dir = tempdir();
    let socket = dir.path().join("nobody.sock");
    for args in [
        vec!["start", "claude"],
        vec!["wait", "claude"],
        vec!["watch"],
        vec!["exec", "claude", "--", "true"],
    ] {
        let began = Instant::now();
        let run = run(unitsync().args(&args).arg("--socket").arg(&socket));
        run.code(5).stderr_has("no unitsync agent is running at");
        assert!(
            began.elapsed() < Duration::from_millis(900),
            "{args:?} took {:?}",
            began.elapsed()
        );
    }
}

#[test]
fn exec_survives_a_restart_while_it_waits_to_start() {
    let agent = Agent::start();
    let exec = agent.spawn(&[
        "exec",
        "build",
        "--after",
        "fetch",
        "--timeout",
        "60s",
        "--",
        "true",
    ]);
    exec.stderr_line("build waits for fetch");
    let (stopped, _) = agent.stop(libc::SIGKILL);
    exec.stderr_line("reconnecting");
    let agent = stopped.restart(&[]);
    agent.run(&["start", "fetch"]).ok();
    agent.run(&["complete", "fetch"]).ok();
    exec.finish().ok();
    assert_eq!(agent.state("build"), "completed");
}

#[test]
fn a_claimed_start_sent_again_answers_started_without_a_second_start() {
    let agent = Agent::start();
    let start = |claim: &str| {
        let mut raw = agent.raw();
        raw.hello();
        raw.request(&json!({
            "request": "start", "unit": "claude", "timeout_ms": null, "claim": claim,
        }))
    };
    // The answer to the first is "lost" (the connection is dropped unread), the retry is the
    // same request on a new connection.
    assert_eq!(start("run-1/agent#42-7")["response"], "started");
    assert_eq!(start("run-1/agent#42-7")["response"], "started");
    let other = start("run-1/agent#43-9");
    assert_eq!(other["response"], "refused", "{other}");
    let history = agent.history("sentinel");
    assert_eq!(starts_of(&history, "claude"), 1, "{history:#?}");
    let started = history
        .iter()
        .find(|e| e["event"] == "started" && e["unit"] == "claude")
        .unwrap();
    assert_eq!(started["by"], "run-1/agent#42-7");

    // `abandon` fails what the owner part of a claim started, and nothing else.
    let mut raw = agent.raw();
    raw.hello();
    let reply = raw.request(&json!({
        "request": "start", "unit": "theirs", "timeout_ms": null, "claim": "run-1/agentx#1-1",
    }));
    assert_eq!(reply["response"], "started");
    let reply = raw.request(&json!({
        "request": "abandon", "owner": "run-1/agent", "reason": "script exited",
    }));
    assert_eq!(
        reply,
        json!({ "response": "abandoned", "failed": ["claude"] })
    );
    assert_eq!(agent.state("claude"), "failed");
    assert_eq!(agent.state("theirs"), "started");
    assert_eq!(agent.state("sentinel"), "started");

    // The claim survives a restart: a retry after it is still recognised.
    agent.run(&["want", "after", "gate"]).ok();
    let mut raw = agent.raw();
    raw.hello();
    let reply = raw.request(&json!({
        "request": "start", "unit": "again", "timeout_ms": null, "claim": "o#1-2",
    }));
    assert_eq!(reply["response"], "started");
    let (stopped, _) = agent.stop(libc::SIGKILL);
    let agent = stopped.restart(&[]);
    let mut raw = agent.raw();
    raw.hello();
    let reply = raw.request(&json!({
        "request": "start", "unit": "again", "timeout_ms": null, "claim": "o#1-2",
    }));
    assert_eq!(reply["response"], "started", "{reply}");
    let history = agent.history("sentinel-2");
    assert_eq!(starts_of(&history, "again"), 1);
}
