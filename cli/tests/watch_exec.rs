//! `watch` (every event, in order, one JSON object per line with `--json`) and `exec` (want + start
//! + run + complete/fail, passing the child's exit code through) through the real binary.

#![cfg(unix)] // real Unix sockets, signals and uids throughout

mod common;

use common::Agent;
use serde_json::{json, Value};

/// The events a watcher printed, parsed, waiting until there are `count` of them.
#[track_caller]
fn events(watch: &common::Proc, count: usize) -> Vec<Value> {
    watch
        .stdout
        .wait_count(count)
        .unwrap_or_else(|| panic!("fewer than {count} events: {:#?}", watch.stdout.all()))
        .iter()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect()
}

/// An event without its `seq`, `at_ms` and a start's claim (`by`), for comparing with the script.
/// A `started` event of a plain `unitsync start` carries the claim `#<pid>-<nanos>` (no owner).
fn what(event: &Value) -> Value {
    let mut event = event.clone();
    let object = event.as_object_mut().unwrap();
    object.remove("seq");
    object.remove("at_ms");
    if object["event"] == "started" {
        let by = object
            .remove("by")
            .expect("a started event names its claim");
        let invocation = by.as_str().unwrap().strip_prefix('#').expect("no owner");
        assert!(
            invocation.split('-').all(|n| n.parse::<u128>().is_ok()),
            "claim {by}"
        );
    }
    event
}

#[test]
fn watch_json_sees_every_event_in_order() {
    let agent = Agent::start();
    // `--from 1` replays from the agent's first event, so the watcher cannot miss the start of the
    // script however late it subscribes.
    let watch = agent.spawn(&["watch", "--json", "--from", "1"]);
    agent.run(&["want", "claude", "git"]).ok();
    agent.run(&["start", "git"]).ok();
    agent.run(&["complete", "git"]).ok();
    agent.run(&["start", "claude"]).ok();
    agent.run(&["fail", "claude", "--reason", "crashed"]).ok();
    agent.run(&["want", "editor", "claude"]).ok();

    let seen = events(&watch, 10);
    let expected = [
        json!({ "event": "registered", "unit": "claude" }),
        json!({ "event": "dependency_added", "unit": "claude", "dependency": "git" }),
        json!({ "event": "registered", "unit": "git" }),
        json!({ "event": "started", "unit": "git" }),
        json!({ "event": "completed", "unit": "git" }),
        json!({ "event": "started", "unit": "claude" }),
        json!({ "event": "failed", "unit": "claude", "reason": "crashed", "cause": null }),
        json!({ "event": "registered", "unit": "editor" }),
        json!({ "event": "dependency_added", "unit": "editor", "dependency": "claude" }),
        json!({ "event": "failed", "unit": "editor", "reason": "dependency claude failed", "cause": "claude" }),
    ];
    for (event, expected) in seen.iter().zip(&expected) {
        assert_eq!(&what(event), expected, "all events: {seen:#?}");
    }
    let seqs: Vec<u64> = seen.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seq increases: {seqs:?}"
    );
    let times: Vec<u64> = seen.iter().map(|e| e["at_ms"].as_u64().unwrap()).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "time never goes back: {times:?}"
    );

    // Live events keep coming on the same stream.
    agent.run(&["start", "later"]).ok();
    let seen = events(&watch, 12);
    assert_eq!(
        what(&seen[10]),
        json!({ "event": "registered", "unit": "later" })
    );
    assert_eq!(
        what(&seen[11]),
        json!({ "event": "started", "unit": "later" })
    );
    assert!(seen[11]["seq"].as_u64() > seen[9]["seq"].as_u64());
    assert_eq!(watch.stderr.all(), Vec::<String>::new());
}

#[test]
fn watch_resumes_from_a_sequence_number_and_prints_aligned_lines() {
    let agent = Agent::start();
    agent.run(&["start", "a"]).ok();
    agent.run(&["complete", "a"]).ok();
    // The third event onwards: `completed a` only.
    let watch = agent.spawn(&["watch", "--from", "3"]);
    let line = watch
        .stdout
        .wait_for(|l| l.contains("completed"))
        .expect("a completed line");
    // `13:30:00.123  #3      completed   a`
    let (clock, rest) = line.split_at(12);
    assert_eq!(clock.len(), 12);
    assert_eq!(clock.as_bytes()[2], b':');
    assert_eq!(rest, "  #3      completed   a");
    assert_eq!(watch.stdout.all().len(), 1);
}

#[test]
fn watch_ends_quietly_when_its_reader_goes_away() {
    use std::io::BufRead;
    let agent = Agent::start();
    agent.run(&["start", "a"]).ok();
    let (reader, writer) = std::io::pipe().unwrap();
    let mut watch = agent
        .command()
        .args(["watch", "--from", "1"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(reader)
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("registered  a"), "{first}");
    // The reader is gone (`| head -1`); the next event finds nobody to print to.
    agent.run(&["complete", "a"]).ok();
    agent.run(&["start", "b"]).ok();
    let status = watch.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut watch.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!((status.code(), stderr.as_str()), (Some(0), ""));
}

#[test]
fn exec_completes_on_success_and_passes_the_exit_code_through() {
    let agent = Agent::start();
    let out = agent.dir.path().join("out");
    let run = agent.run(&[
        "exec",
        "build",
        "--",
        "sh",
        "-c",
        &format!("echo \"$UNITSYNC_UNIT ran\" > {}", out.display()),
    ]);
    run.ok();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "build ran\n");
    assert_eq!(agent.state("build"), "completed");

    // The child's own output is not captured or prefixed.
    agent
        .run(&["exec", "hello", "--", "echo", "hi there"])
        .ok()
        .stdout_has("hi there\n");
}

#[test]
fn exec_fails_the_unit_with_the_status_and_its_dependents_fail_too() {
    let agent = Agent::start();
    agent.run(&["want", "test", "build"]).ok();
    agent.run(&["want", "deploy", "test"]).ok();
    let run = agent.run(&["exec", "build", "--", "sh", "-c", "exit 7"]);
    run.code(7);
    assert_eq!(
        run.stderr,
        "unitsync: build failed; so did what waited for it: test, deploy\n"
    );
    let build = agent.status("build");
    assert_eq!(build["state"], "failed");
    assert_eq!(build["failure"]["reason"], "exited with status 7");
    for dependent in ["test", "deploy"] {
        let status = agent.status(dependent);
        assert_eq!(status["state"], "failed", "{status}");
        assert_eq!(status["failure"]["cause"], "build");
        assert_eq!(status["failure"]["cause_reason"], "exited with status 7");
    }
    // A dependent's own exec now refuses to run at all (exit 3), and runs nothing.
    let marker = agent.dir.path().join("deploy-ran");
    agent
        .run(&["exec", "deploy", "--", "touch", marker.to_str().unwrap()])
        .code(3)
        .stderr_has("dependency `build` failed: exited with status 7");
    assert!(!marker.exists());
}

#[test]
fn exec_reports_signals_and_missing_programs() {
    let agent = Agent::start();
    agent
        .run(&["exec", "killed", "--", "sh", "-c", "kill -TERM $$"])
        .code(128 + libc::SIGTERM);
    assert_eq!(
        agent.status("killed")["failure"]["reason"],
        format!("killed by signal {}", libc::SIGTERM)
    );
    agent
        .run(&["exec", "missing", "--", "/nonexistent/program"])
        .code(127)
        .stderr_has("cannot run /nonexistent/program");
    assert_eq!(agent.state("missing"), "failed");
}

#[test]
fn exec_waits_for_its_after_dependencies() {
    let agent = Agent::start();
    let log = agent.dir.path().join("log");
    let exec = agent.spawn(&[
        "exec",
        "app",
        "--after",
        "db",
        "--after",
        "cache",
        "--",
        "sh",
        "-c",
        &format!("echo app >> {}", log.display()),
    ]);
    exec.stderr_line("app waits for db (unknown), cache (unknown)");
    agent.run(&["start", "db"]).ok();
    agent.run(&["start", "cache"]).ok();
    agent.run(&["complete", "cache"]).ok();
    exec.stderr
        .wait_for(|line| line == "unitsync: app waits for db (started)")
        .expect("progress: only db left");
    std::fs::write(&log, "db\n").unwrap();
    agent.run(&["complete", "db"]).ok();
    exec.finish().ok();
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "db\napp\n");
    assert_eq!(agent.state("app"), "completed");
    let deps: Vec<String> = agent.status("app")["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(deps, ["db", "cache"]);

    // And gives up after --timeout (exit 4) without running anything.
    agent.run(&["want", "never", "nothing"]).ok();
    let marker = agent.dir.path().join("never-ran");
    agent
        .run(&[
            "exec",
            "never",
            "--timeout",
            "100ms",
            "--",
            "touch",
            marker.to_str().unwrap(),
        ])
        .code(4)
        .stderr_has("still unmet: nothing (unknown)");
    assert!(!marker.exists());
}
