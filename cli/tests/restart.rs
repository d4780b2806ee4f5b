//! SPEC §4 "State survives an agent restart", through the real binary and its state file: every
//! unit, edge, failure and timestamp comes back after a SIGTERM and after a SIGKILL, event numbers go
//! on where they stopped, restarts without changes leave the file byte for byte the same, `--fresh`
//! starts empty, a file that is not a journal or does not replay is
//! refused (exit 1, naming the file and `--fresh`) and left untouched, a torn or corrupt tail is cut
//! with a warning and never stops the agent, a second agent on the same state file is refused, a
//! journal that cannot be written makes changes answer `unsaved` (exit 5) instead of a false success,
//! and a big journal restarts in bounded time (the figure is printed).

#![cfg(unix)] // real Unix sockets, signals and file modes throughout

mod common;

use common::{journal_of, run, Agent, Stopped};
use serde_json::Value;
use std::time::Instant;
use unitsync_core::{EventKind, UnitName};
use unitsync_ipc::journal::{encode_header, encode_record, JournalRecord};

/// A small workspace's worth of every kind of change.
fn populate(agent: &Agent) {
    agent.run(&["want", "claude", "git", "node"]).ok();
    agent.run(&["start", "git"]).ok();
    agent.run(&["complete", "git"]).ok();
    agent
        .run(&["fail", "node", "--reason", "npm exploded"])
        .ok();
    agent.run(&["want", "editor", "claude"]).ok(); // fails at once: claude failed
    agent.run(&["start", "server"]).ok();
    agent.run(&["want", "later", "server", "never"]).ok();
}

/// `list --all --json`.
fn list(agent: &Agent) -> Value {
    agent.run(&["list", "--all", "--json"]).ok().json()
}

/// Asserts two `list --json` documents are the same, timestamps within 1 ms.
#[track_caller]
fn assert_same_units(before: &Value, after: &Value) {
    let (before, after) = (
        before["units"].as_array().unwrap(),
        after["units"].as_array().unwrap(),
    );
    assert_eq!(before.len(), after.len(), "{before:#?}\n{after:#?}");
    for (b, a) in before.iter().zip(after) {
        for key in ["registered_at_ms", "started_at_ms", "finished_at_ms"] {
            match (b[key].as_u64(), a[key].as_u64()) {
                (Some(x), Some(y)) => assert!(x.abs_diff(y) <= 1, "{key}: {b} vs {a}"),
                (x, y) => assert_eq!(x, y, "{key}: {b} vs {a}"),
            }
        }
        let strip = |u: &Value| {
            let mut u = u.clone();
            for key in ["registered_at_ms", "started_at_ms", "finished_at_ms"] {
                u.as_object_mut().unwrap().remove(key);
            }
            u
        };
        assert_eq!(strip(b), strip(a));
    }
}

#[track_caller]
fn restart_keeps_state(signal: i32) {
    let agent = Agent::start();
    populate(&agent);
    let units = list(&agent);
    let history = agent.history("sentinel");
    let units_with_sentinel = list(&agent);
    assert_eq!(
        units_with_sentinel["units"].as_array().unwrap().len(),
        units["units"].as_array().unwrap().len() + 1
    );

    let (stopped, run) = agent.stop(signal);
    if signal == libc::SIGTERM {
        run.ok();
    }
    let state = stopped.state_file();
    let began = Instant::now();
    let agent = stopped.restart(&[]);
    eprintln!(
        "restart after signal {signal}: listening again after {:?}",
        began.elapsed()
    );
    agent.log_line("state restored");
    assert_same_units(&units_with_sentinel, &list(&agent));
    assert_eq!(agent.state("editor"), "failed");
    assert_eq!(agent.status("editor")["failure"]["cause"], "node");

    // The restored agent replays the same history under the same numbers ...
    let last = history.last().unwrap()["seq"].as_u64().unwrap();
    let replayed = agent.events_until(1, |e| e["seq"].as_u64() == Some(last));
    assert_eq!(replayed, history);
    // ... and numbers new events after them.
    agent.run(&["complete", "server"]).ok();
    let next = agent.events_until(last + 1, |e| e["event"] == "completed");
    assert_eq!(next.len(), 1, "{next:#?}");
    assert_eq!(next[0]["seq"].as_u64(), Some(last + 1));
    assert_eq!(next[0]["unit"], "server");
    // `watch --from N` through the CLI continues the numbering too.
    let watched = agent.spawn(&["watch", "--json", "--from", &last.to_string()]);
    let lines = watched.stdout.wait_count(2).expect("two events");
    let seqs: Vec<u64> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, vec![last, last + 1]);
    assert!(state.exists());
}

#[test]
fn a_restart_after_sigterm_keeps_every_unit_edge_failure_and_time() {
    restart_keeps_state(libc::SIGTERM);
}

#[test]
fn a_restart_after_sigkill_keeps_every_acknowledged_change() {
    restart_keeps_state(libc::SIGKILL);
}

/// The journal is the state: no event is ever superseded (units are never removed or reset; each
/// has at most one registration, start and completion or failure, and one record per edge), so
/// the file rewritten at start is already the snapshot. Restarting with no change in between must
/// leave it byte for byte as it was: it does not grow across restarts.
#[test]
fn restarts_without_changes_leave_the_journal_byte_for_byte_the_same() {
    let agent = Agent::start();
    populate(&agent);
    let (mut stopped, run) = agent.stop(libc::SIGTERM);
    run.ok();
    let first = std::fs::read(stopped.state_file()).unwrap();
    assert!(!first.is_empty());
    for restart in 1..=3 {
        let agent = stopped.restart(&[]);
        agent.log_line("state restored");
        let (again, run) = agent.stop(libc::SIGTERM);
        run.ok();
        let bytes = std::fs::read(again.state_file()).unwrap();
        assert_eq!(
            bytes.len(),
            first.len(),
            "restart {restart} changed the journal's size"
        );
        assert!(bytes == first, "restart {restart} changed the journal");
        stopped = again;
    }
}

#[test]
fn fresh_starts_empty_and_stays_empty() {
    let agent = Agent::start();
    populate(&agent);
    let (stopped, _) = agent.stop(libc::SIGTERM);
    let agent = stopped.restart(&["--fresh"]);
    assert_eq!(list(&agent)["units"], serde_json::json!([]));
    agent
        .run(&["status", "claude"])
        .code(1)
        .stderr_has("no such unit");
    // The old state is gone for good, not merely hidden for one run.
    let (stopped, _) = agent.stop(libc::SIGTERM);
    let agent = stopped.restart(&[]);
    assert_eq!(list(&agent)["units"], serde_json::json!([]));
}

#[test]
fn a_file_that_is_not_a_journal_is_refused_naming_it_and_fresh() {
    let agent = Agent::start();
    let (stopped, _) = agent.stop(libc::SIGTERM);
    let state = stopped.state_file();
    for garbage in [
        &b"precious notes, not a journal\n"[..],
        b"\x00\x00\x00\x00\x00\x00\x00\x00",
        b"{\"journal\":\"unitsync\",\"version\":1}",
    ] {
        std::fs::write(&state, garbage).unwrap();
        let refused = stopped.refused(&[]);
        refused
            .code(1)
            .stderr_has(&state.display().to_string())
            .stderr_has("not a unitsync journal")
            .stderr_has("--fresh");
        assert!(!refused.stderr.contains("listening on"), "{refused:#?}");
        assert_eq!(std::fs::read(&state).unwrap(), garbage, "left untouched");
        assert!(!stopped.socket.exists(), "no socket is left behind");
    }
    // `--fresh` discards it.
    let agent = stopped.restart(&["--fresh"]);
    agent.run(&["ping"]).ok();
}

/// The file of a journal holding `records`.
fn journal_bytes(records: &[JournalRecord]) -> Vec<u8> {
    let mut bytes = encode_header();
    for record in records {
        encode_record(record, &mut bytes).unwrap();
    }
    bytes
}

fn record(seq: u64, kind: EventKind) -> JournalRecord {
    JournalRecord {
        seq,
        unix_ms: 1_764_000_000_000 + seq,
        kind,
    }
}

fn name(unit: &str) -> UnitName {
    UnitName::new(unit).unwrap()
}

#[test]
fn a_journal_that_does_not_replay_is_refused() {
    let agent = Agent::start();
    let (stopped, _) = agent.stop(libc::SIGTERM);
    let state = stopped.state_file();
    // Well-formed, but `b` starts before its dependency `a` completed: not a history any agent wrote.
    let bytes = journal_bytes(&[
        record(1, EventKind::Registered { unit: name("b") }),
        record(
            2,
            EventKind::DependencyAdded {
                unit: name("b"),
                dependency: name("a"),
            },
        ),
        record(
            3,
            EventKind::Started {
                unit: name("b"),
                by: None,
            },
        ),
    ]);
    std::fs::write(&state, &bytes).unwrap();
    stopped
        .refused(&[])
        .code(1)
        .stderr_has(&state.display().to_string())
        .stderr_has("cannot be replayed")
        .stderr_has("journal event 3")
        .stderr_has("--fresh");
    assert_eq!(std::fs::read(&state).unwrap(), bytes, "left untouched");
}

#[test]
fn a_torn_or_corrupt_tail_is_cut_with_a_warning_and_the_agent_serves() {
    let agent = Agent::start();
    populate(&agent);
    let units = list(&agent);
    let (mut stopped, _) = agent.stop(libc::SIGTERM);
    let state = stopped.state_file();
    let clean = std::fs::read(&state).unwrap();
    let frame = {
        let mut frame = Vec::new();
        encode_record(
            &record(
                1000,
                EventKind::Registered {
                    unit: name("ghost"),
                },
            ),
            &mut frame,
        )
        .unwrap();
        frame
    };
    let torn = [clean.clone(), frame[..frame.len() - 3].to_vec()].concat();
    let mut corrupt = [clean.clone(), frame.clone()].concat();
    let last = corrupt.len() - 2;
    corrupt[last] ^= 0x20; // a flipped bit: the checksum no longer matches
    for (damaged, what) in [(torn, "torn"), (corrupt, "corrupt")] {
        std::fs::write(&state, &damaged).unwrap();
        let agent = stopped.restart(&[]);
        let warning = agent.log_line("journal: cutting off");
        assert!(warning.contains(&format!("a {what} tail")), "{warning}");
        assert!(warning.contains("WARN"), "{warning}");
        assert_same_units(&units, &list(&agent));
        agent.run(&["status", "ghost"]).code(1);
        // The cut is for good: the file is the clean journal again.
        assert_eq!(std::fs::read(&state).unwrap(), clean);
        (stopped, _) = agent.stop(libc::SIGTERM);
    }
    let agent = stopped.restart(&[]);
    assert!(
        !agent
            .proc
            .stderr
            .all()
            .iter()
            .any(|l| l.contains("cutting off")),
        "a clean restart warns about nothing"
    );
    agent.run(&["start", "after-the-cut"]).ok();
    agent.run(&["complete", "after-the-cut"]).ok();
}

#[test]
fn a_second_agent_on_the_same_state_file_is_refused() {
    let first = Agent::start();
    let state = first.state_file();
    first.run(&["start", "mine"]).ok();
    let other_socket = first.dir.path().join("other").join("agent.sock");
    let second = run(common::unitsync()
        .arg("agent")
        .arg("--socket")
        .arg(&other_socket)
        .arg("--state")
        .arg(&state)
        .env("UNITSYNC_LOG", "info"));
    second
        .code(1)
        .stderr_has("another unitsync agent is using the state file")
        .stderr_has(&state.display().to_string());
    assert!(
        !other_socket.exists(),
        "the second agent unbound its socket"
    );
    // The first agent's journal was not touched: it still acknowledges and keeps changes.
    first.run(&["complete", "mine"]).ok();
    let (stopped, _) = first.stop(libc::SIGTERM);
    let agent = stopped.restart(&[]);
    assert_eq!(agent.state("mine"), "completed");
}

#[test]
fn an_explicit_state_file_and_sync_mode_keep_state_too() {
    let agent = Agent::start();
    let state = agent.dir.path().join("elsewhere").join("ws.journal");
    let state_arg = state.display().to_string();
    let (stopped, _) = agent.stop(libc::SIGTERM);
    let default_file = std::fs::read(stopped.state_file()).unwrap();
    let agent = stopped.restart(&["--state", &state_arg, "--sync"]);
    populate(&agent);
    let units = list(&agent);
    let (stopped, _) = agent.stop(libc::SIGKILL);
    assert_eq!(
        std::fs::read(stopped.state_file()).unwrap(),
        default_file,
        "the default file is not used"
    );
    let agent = stopped.restart(&["--state", &state_arg]);
    assert_same_units(&units, &list(&agent));
    // The state's directory was created private, like the socket's.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(state.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn a_journal_that_cannot_be_written_answers_unsaved_never_a_false_success() {
    use std::os::unix::process::CommandExt;
    let agent = Agent::start();
    let (stopped, _) = agent.stop(libc::SIGTERM);
    // An agent whose files may not grow past 1 KiB: its journal fills up after a few changes.
    let mut command = common::unitsync();
    command
        .arg("agent")
        .arg("--socket")
        .arg(&stopped.socket)
        .env("UNITSYNC_LOG", common::AGENT_LOG);
    // SAFETY: between fork and exec the closure only calls async-signal-safe functions (signal,
    // setrlimit) on a local struct; it allocates nothing and touches no lock.
    unsafe {
        command.pre_exec(|| {
            // Ignored, SIGXFSZ would kill the agent; ignored, the write fails with EFBIG instead.
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 1024,
                rlim_max: 1024,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let Stopped { socket, dir } = stopped;
    let agent = Agent::launch(command, dir, socket).expect("the agent starts");
    let mut acknowledged = Vec::new();
    let unsaved = loop {
        let unit = format!("unit-{}", acknowledged.len());
        let run = agent.run(&["start", &unit]);
        if run.code != 0 {
            break run;
        }
        acknowledged.push(unit);
        assert!(acknowledged.len() < 100, "the journal never filled up");
    };
    unsaved
        .code(5)
        .stderr_has("the agent could not save the change")
        .stderr_has("restart the agent");
    agent.log_line("journal: write failed");
    // Every later change is refused the same way; reads still work.
    agent
        .run(&["want", "x", "y"])
        .code(5)
        .stderr_has("could not save");
    agent.run(&["ping"]).ok();
    agent.run(&["list"]).ok();
    // After a restart (without the limit) every acknowledged change is there.
    let (stopped, _) = agent.stop(libc::SIGTERM);
    let agent = stopped.restart(&[]);
    for unit in &acknowledged {
        assert_eq!(agent.state(unit), "started", "{unit}");
    }
    eprintln!(
        "{} changes acknowledged before the journal filled up",
        acknowledged.len()
    );
}

#[test]
fn a_journal_of_many_events_restarts_in_bounded_time() {
    const UNITS: u64 = 50_000; // 4 events each: 200,000 events
    let agent = Agent::start();
    let (stopped, _) = agent.stop(libc::SIGTERM);
    let mut records = Vec::with_capacity(4 * UNITS as usize);
    let mut seq = 0;
    let mut next = |kind| {
        seq += 1;
        record(seq, kind)
    };
    for i in 0..UNITS {
        let unit = name(&format!("u{i}"));
        records.push(next(EventKind::Registered { unit: unit.clone() }));
        if i > 0 {
            records.push(next(EventKind::DependencyAdded {
                unit: unit.clone(),
                dependency: name(&format!("u{}", i - 1)),
            }));
        }
        records.push(next(EventKind::Started {
            unit: unit.clone(),
            by: Some("load#1".to_owned()),
        }));
        records.push(next(EventKind::Completed { unit }));
    }
    let bytes = journal_bytes(&records);
    std::fs::write(stopped.state_file(), &bytes).unwrap();
    let began = Instant::now();
    let agent = stopped.restart(&[]);
    let took = began.elapsed();
    let restored = agent.log_line("state restored");
    eprintln!(
        "restart with a journal of {} events ({} KiB): listening after {took:?}; {restored}",
        records.len(),
        bytes.len() / 1024
    );
    assert_eq!(agent.state(&format!("u{}", UNITS - 1)), "completed");
    assert!(took.as_secs() < 20, "restart took {took:?}");
    assert_eq!(journal_of(&agent.socket), agent.state_file());
}
