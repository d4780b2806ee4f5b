//! SPEC §3 "Errors are answers, not crashes" and the exit codes, through the real binary: every
//! refusal exits with its documented code and one message naming the rule, the state, or the
//! dependency involved; refusals leave the graph exactly as it was.

#![cfg(unix)] // real Unix sockets, signals and uids throughout

mod common;

use common::{run, tempdir, unitsync, Agent};
use std::time::{Duration, Instant};

#[test]
fn invalid_names_name_the_rule_and_exit_1() {
    let agent = Agent::start();
    let long = "x".repeat(256);
    for (name, rule) in [
        ("", "must not be empty"),
        (long.as_str(), "at most 255 bytes"),
        ("a\tb", "control characters"),
        ("line\nbreak", "control characters"),
    ] {
        agent
            .run(&["want", name, "dep"])
            .code(1)
            .stderr_has("invalid unit name")
            .stderr_has(rule);
        agent.run(&["want", "ok", name]).code(1).stderr_has(rule);
        agent.run(&["start", name]).code(1).stderr_has(rule);
        agent.run(&["status", name]).code(1).stderr_has(rule);
    }
    // 255 bytes is fine, and 128 two-byte characters (256 bytes) are not.
    agent.run(&["start", &"y".repeat(255)]).ok();
    agent
        .run(&["start", &"é".repeat(128)])
        .code(1)
        .stderr_has("at most 255 bytes");
    // Nothing above registered anything but the one valid name.
    let units = agent.run(&["list", "--all", "--json"]).ok().json();
    assert_eq!(units["units"].as_array().unwrap().len(), 1, "{units}");
}

#[test]
fn self_dependency_is_refused() {
    let agent = Agent::start();
    agent
        .run(&["want", "a", "a"])
        .code(1)
        .stderr_has("`a` cannot depend on itself");
    agent
        .run(&["status", "a"])
        .code(1)
        .stderr_has("no such unit");
}

#[test]
fn a_cycle_is_printed_and_the_graph_is_left_exactly_as_before() {
    let agent = Agent::start();
    agent.run(&["want", "b", "c"]).ok();
    agent.run(&["want", "c", "a"]).ok();
    let list_before = agent.run(&["list", "--all", "--json"]).ok().stdout.clone();
    let graph_before = agent.run(&["graph"]).ok().stdout.clone();
    let events_before = agent.run(&["ping", "--json"]).ok().json();

    // `new` would be a new unknown unit: all or nothing means it must not appear.
    let refused = agent.run(&["want", "a", "new", "b"]);
    refused.code(1);
    assert_eq!(
        refused.stderr.trim_end(),
        "unitsync: cycle: a -> b -> c -> a"
    );

    assert_eq!(
        agent.run(&["list", "--all", "--json"]).ok().stdout,
        list_before
    );
    assert_eq!(agent.run(&["graph"]).ok().stdout, graph_before);
    let events_after = agent.run(&["ping", "--json"]).ok().json();
    assert_eq!(events_after["units"], events_before["units"]);
    agent
        .run(&["status", "new"])
        .code(1)
        .stderr_has("no such unit");
    // `a` is still only depended on, and still has no dependency.
    let a = agent.status("a");
    assert_eq!(a["state"], "unknown");
    assert_eq!(a["dependencies"], serde_json::json!([]));
}

#[test]
fn want_on_a_started_or_finished_unit_is_refused() {
    let agent = Agent::start();
    agent.run(&["start", "s"]).ok();
    agent
        .run(&["want", "s", "x"])
        .code(1)
        .stderr_has("already started")
        .stderr_has("can no longer hold");
    agent.run(&["complete", "s"]).ok();
    agent
        .run(&["want", "s", "x"])
        .code(1)
        .stderr_has("already completed");
    agent.run(&["fail", "f"]).ok();
    agent
        .run(&["want", "f", "x"])
        .code(1)
        .stderr_has("already failed");
    // Refusals added nothing.
    agent
        .run(&["status", "x"])
        .code(1)
        .stderr_has("no such unit");
}

#[test]
fn repeating_an_edge_is_a_no_op() {
    let agent = Agent::start();
    let first = agent.run(&["want", "a", "b", "--json"]).ok().json();
    assert_eq!(first["registered"], true);
    assert_eq!(first["added"], serde_json::json!(["b"]));
    let again = agent.run(&["want", "a", "b", "b", "--json"]).ok().json();
    assert_eq!(again["registered"], false);
    assert_eq!(again["added"], serde_json::json!([]));
    assert_eq!(
        agent.status("a")["dependencies"].as_array().unwrap().len(),
        1
    );
}

#[test]
fn wrong_state_errors_name_the_state_and_what_to_run_instead() {
    let agent = Agent::start();
    agent.run(&["want", "p", "dep"]).ok();
    agent
        .run(&["complete", "p"])
        .code(1)
        .stderr_has("`p` is pending, not started; start it first");
    agent.run(&["start", "s"]).ok();
    agent
        .run(&["start", "s"])
        .code(1)
        .stderr_has("`s` is already started; complete it (or fail it)");
    agent.run(&["complete", "s"]).ok();
    agent
        .run(&["complete", "s"])
        .code(1)
        .stderr_has("`s` is already completed");
    agent
        .run(&["start", "s"])
        .code(1)
        .stderr_has("`s` already completed");
    agent
        .run(&["fail", "s"])
        .code(1)
        .stderr_has("`s` is already completed; a finished unit cannot fail");
    agent.run(&["fail", "f", "--reason", "boom"]).ok();
    agent
        .run(&["fail", "f"])
        .code(1)
        .stderr_has("`f` is already failed");
    agent
        .run(&["complete", "never"])
        .code(1)
        .stderr_has("no such unit: `never`");
    // One line per refusal.
    let refusal = agent.run(&["start", "s"]);
    assert_eq!(refusal.stderr.lines().count(), 1, "{refusal:#?}");
}

#[test]
fn starting_a_unit_failed_by_its_dependency_exits_3_naming_it() {
    let agent = Agent::start();
    agent.run(&["want", "claude", "git"]).ok();
    agent.run(&["want", "editor", "claude"]).ok();
    let failed = agent
        .run(&[
            "fail",
            "git",
            "--reason",
            "clone: authentication failed",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(
        failed["propagated"],
        serde_json::json!(["claude", "editor"])
    );
    for unit in ["claude", "editor"] {
        agent
            .run(&["start", unit])
            .code(3)
            .stderr_has("dependency `git` failed: clone: authentication failed");
        let status = agent.status(unit);
        assert_eq!(status["state"], "failed");
        assert_eq!(status["failure"]["reason"], "dependency git failed");
        assert_eq!(status["failure"]["cause"], "git");
        assert_eq!(
            status["failure"]["cause_reason"],
            "clone: authentication failed"
        );
    }
    // A unit that failed by itself cannot start either, but that is a plain refusal.
    agent
        .run(&["start", "git"])
        .code(1)
        .stderr_has("`git` is failed");
    // Wanting a failed dependency fails the new unit at once.
    agent.run(&["want", "late", "git"]).ok();
    assert_eq!(agent.state("late"), "failed");
    agent.run(&["start", "late"]).code(3).stderr_has("`git`");
}

#[test]
fn a_blocked_start_whose_dependency_fails_exits_3_at_once() {
    let agent = Agent::start();
    agent.run(&["want", "claude", "git"]).ok();
    let start = agent.spawn(&["start", "claude"]);
    start.stderr_line("claude waits for git (unknown)");
    let watcher = agent.spawn(&["wait", "claude", "--until", "started"]);
    agent.run(&["fail", "git", "--reason", "disk full"]).ok();
    start
        .finish()
        .code(3)
        .stderr_has("`claude` cannot start: dependency `git` failed: disk full");
    watcher
        .finish()
        .code(3)
        .stderr_has("`claude` failed: dependency git failed (git: disk full)");
}

#[test]
fn status_distinguishes_never_mentioned_from_only_depended_on() {
    let agent = Agent::start();
    agent
        .run(&["status", "ghost"])
        .code(1)
        .stderr_has("no such unit: `ghost`");
    agent.run(&["want", "claude", "git"]).ok();
    let git = agent.status("git");
    assert_eq!(git["state"], "unknown");
    assert_eq!(git["dependents"], serde_json::json!(["claude"]));
    agent
        .run(&["status", "git"])
        .ok()
        .stdout_has("state:       unknown");
}

#[test]
fn ready_exits_0_when_ready_and_1_when_not() {
    let agent = Agent::start();
    agent.run(&["want", "claude", "git"]).ok();
    let not_ready = agent.run(&["ready", "claude"]);
    not_ready.code(1);
    assert_eq!(not_ready.stderr, "", "not ready is an answer, not an error");
    assert_eq!(
        agent.run(&["ready", "claude", "--json"]).code(1).json(),
        serde_json::json!({ "unit": "claude", "ready": false })
    );
    agent.run(&["start", "git"]).ok();
    agent.run(&["ready", "claude"]).code(1);
    agent.run(&["complete", "git"]).ok();
    agent.run(&["ready", "claude"]).ok();
    assert_eq!(
        agent.run(&["ready", "claude", "--json"]).ok().json(),
        serde_json::json!({ "unit": "claude", "ready": true })
    );
    agent
        .run(&["ready", "nobody"])
        .code(1)
        .stderr_has("no such unit");
}

#[test]
fn wait_exits_3_when_the_unit_fails() {
    let agent = Agent::start();
    // Whether the wait parks before the failure or finds it failed, it must end with 3.
    let waiter = agent.spawn(&["wait", "build"]);
    agent
        .run(&["fail", "build", "--reason", "compiler crashed"])
        .ok();
    waiter
        .finish()
        .code(3)
        .stderr_has("`build` failed: compiler crashed");

    agent.run(&["want", "test", "build2"]).ok();
    agent.run(&["fail", "build2", "--reason", "oom"]).ok();
    agent
        .run(&["wait", "test", "--until", "started"])
        .code(3)
        .stderr_has("`test` failed: dependency build2 failed (build2: oom)");
}

#[test]
fn wait_exits_0_when_the_unit_gets_there() {
    let agent = Agent::start();
    agent.run(&["start", "server"]).ok();
    agent.run(&["wait", "server", "--until", "started"]).ok();
    let waiter = agent.spawn(&["wait", "server"]);
    // The wait blocks on `completed`; nothing observable tells us it parked, but it does not need
    // to have: completing before or after the wait parks must both end it with 0.
    agent.run(&["complete", "server"]).ok();
    waiter.finish().ok();
}

#[test]
fn timeouts_exit_4_and_print_what_is_unmet() {
    let agent = Agent::start();
    agent.run(&["want", "claude", "git", "npm"]).ok();
    agent.run(&["start", "npm"]).ok();
    let started = Instant::now();
    let timed_out = agent.run(&["start", "claude", "--timeout", "200ms", "--quiet"]);
    timed_out
        .code(4)
        .stderr_has("timed out after 200ms waiting to start `claude`")
        .stderr_has("still unmet:")
        .stderr_has("git (unknown)")
        .stderr_has("npm (started)");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(
        agent.state("claude"),
        "pending",
        "a timed-out start changes nothing"
    );

    agent
        .run(&["wait", "npm", "--timeout", "100ms"])
        .code(4)
        .stderr_has("waiting for `npm` to be completed; it is started");
    // Human durations with several parts parse (and a ready unit does not wait at all).
    agent.run(&["start", "quick", "--timeout", "1h 30m"]).ok();
    agent.run(&["start", "quick2", "--timeout", "2m"]).ok();
}

#[test]
fn usage_errors_exit_2() {
    let agent = Agent::start();
    agent.run(&["want", "a"]).code(2);
    agent.run(&["frobnicate"]).code(2);
    agent
        .run(&["start", "a", "--timeout", "soon"])
        .code(2)
        .stderr_has("write a duration like");
    agent.run(&["exec", "a"]).code(2);
}

#[test]
fn an_unreachable_agent_exits_5_at_once_with_one_line_saying_how_to_start_one() {
    let dir = tempdir();
    let missing = dir.path().join("nowhere").join("agent.sock");
    // A stale socket file: bound once, nobody listening now.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    for socket in [&missing, &stale] {
        for args in [
            vec!["ping"],
            vec!["start", "a"],
            vec!["status", "a", "--json"],
            vec!["watch"],
        ] {
            let started = Instant::now();
            let run = run(unitsync().args(&args).arg("--socket").arg(socket));
            let elapsed = started.elapsed();
            run.code(5)
                .stderr_has(&socket.display().to_string())
                .stderr_has("unitsync agent");
            assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
            assert_eq!(run.stdout, "");
            // At once: nothing to wait for (typically a few ms; the bound allows for a loaded CI).
            assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
        }
    }
    // The environment variable is honoured the same way.
    run(unitsync().arg("ping").env("UNITSYNC_SOCKET", &missing))
        .code(5)
        .stderr_has(&missing.display().to_string());
}

#[test]
fn a_protocol_mismatch_exits_5_with_the_agents_reason() {
    use std::io::{Read, Write};
    let dir = tempdir();
    let socket = dir.path().join("old-agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    // A fake agent from the future: reads the hello, refuses it as a real agent would.
    let fake = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut header = [0u8; 4];
        stream.read_exact(&mut header).unwrap();
        let mut hello = vec![0u8; u32::from_be_bytes(header) as usize];
        stream.read_exact(&mut hello).unwrap();
        let hello: serde_json::Value = serde_json::from_slice(&hello).unwrap();
        assert_eq!(hello["protocol"], 1);
        let reply = serde_json::json!({ "refused": {
            "message": "protocol mismatch: the agent speaks version 2, the client 1",
            "protocol": 2,
        }})
        .to_string();
        let mut frame = (reply.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(reply.as_bytes());
        stream.write_all(&frame).unwrap();
    });
    run(unitsync().args(["ping", "--socket"]).arg(&socket))
        .code(5)
        .stderr_has("refused the connection: protocol mismatch");
    fake.join().unwrap();
}

#[test]
fn a_peer_that_answers_garbage_exits_5() {
    use std::io::{Read, Write};
    let dir = tempdir();
    let socket = dir.path().join("not-an-agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let fake = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut header = [0u8; 4];
        stream.read_exact(&mut header).unwrap();
        let mut hello = vec![0u8; u32::from_be_bytes(header) as usize];
        stream.read_exact(&mut hello).unwrap();
        stream.write_all(b"\0\0\0\x05nope!").unwrap();
    });
    run(unitsync().args(["ping", "--socket"]).arg(&socket))
        .code(5)
        .stderr_has("malformed message");
    fake.join().unwrap();
}
