//! SPEC §4 "never the agent": hostile or broken clients on raw connections (garbage, oversized
//! frames, a wrong protocol version, unknown requests, silence, a partial frame) each end or answer
//! their own connection only; a waiter killed mid-wait leaves its unit unchanged and is freed; a
//! crowd of blocked `start` processes is released by one `complete`; and an answer far larger than
//! a request may be (`list` of 20,000 units, several MiB) arrives whole.

#![cfg(unix)] // real Unix sockets, signals and uids throughout

mod common;

use common::{Agent, Proc};
use serde_json::json;

/// Proves the agent still serves: a CLI round trip and a state change.
#[track_caller]
fn assert_alive(agent: &Agent, probe: &str) {
    agent.run(&["ping"]).ok();
    agent.run(&["start", probe]).ok();
    agent.run(&["complete", probe]).ok();
    assert_eq!(agent.state(probe), "completed");
}

#[test]
fn garbage_before_the_handshake_is_refused_on_that_connection_only() {
    let agent = Agent::start();
    // Text: its first four bytes read as a huge length, refused before any payload is read.
    let mut raw = agent.raw();
    raw.send_bytes(b"GET / HTTP/1.1\r\nHost: unitsync\r\n\r\n")
        .unwrap();
    let reply = raw.recv().expect("a refusal");
    let message = reply["refused"]["message"].as_str().unwrap();
    assert!(message.contains("expected a hello frame"), "{reply}");
    assert!(message.contains("exceeds the limit"), "{reply}");
    assert_eq!(reply["refused"]["protocol"], 1);
    raw.assert_closed();
    assert_alive(&agent, "after-text");

    // A well-formed frame that is not JSON.
    let mut raw = agent.raw();
    raw.send_payload(&[0xff, 0x00, 0x13, 0x37, 0x80]).unwrap();
    let reply = raw.recv().expect("a refusal");
    assert!(
        reply["refused"]["message"]
            .as_str()
            .unwrap()
            .contains("malformed message"),
        "{reply}"
    );
    raw.assert_closed();

    // An empty frame.
    let mut raw = agent.raw();
    raw.send_payload(b"").unwrap();
    assert!(raw.recv().expect("a refusal").get("refused").is_some());
    raw.assert_closed();
    assert_alive(&agent, "after-binary");
}

#[test]
fn a_wrong_protocol_version_is_refused_and_closed() {
    let agent = Agent::start();
    let mut raw = agent.raw();
    raw.send(&json!({ "protocol": 999, "client": "from the future" }))
        .unwrap();
    let reply = raw.recv().expect("a refusal");
    let message = reply["refused"]["message"].as_str().unwrap();
    assert!(message.contains("protocol mismatch"), "{reply}");
    assert!(message.contains("version 1"), "{reply}");
    assert!(message.contains("999"), "{reply}");
    assert_eq!(reply["refused"]["protocol"], 1);
    raw.assert_closed();
    assert_alive(&agent, "after-version");
}

#[test]
fn an_oversized_frame_after_the_handshake_closes_that_connection_only() {
    let agent = Agent::start();
    // Another client, mid-conversation, must not notice.
    let mut bystander = agent.raw();
    bystander.hello();

    let mut raw = agent.raw();
    raw.hello();
    // Announce 4 GiB; send nothing more. The agent must refuse from the header alone.
    raw.send_bytes(&u32::MAX.to_be_bytes()).unwrap();
    let reply = raw.recv().expect("an error");
    assert_eq!(reply["response"], "error");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("exceeds the limit of 1048576 bytes"),
        "{reply}"
    );
    raw.assert_closed();

    // One byte over the limit, with the payload actually sent.
    let mut raw = agent.raw();
    raw.hello();
    let mut frame = ((1u32 << 20) + 1).to_be_bytes().to_vec();
    frame.resize(4 + (1 << 20) + 1, b' ');
    // The agent may close before reading it all; a broken pipe here is fine.
    let _ = raw.send_bytes(&frame);
    let reply = raw.recv().expect("an error");
    assert_eq!(reply["response"], "error", "{reply}");

    let pong = bystander.request(&json!({ "request": "ping" }));
    assert_eq!(pong["response"], "pong", "{pong}");
    assert_alive(&agent, "after-oversized");
}

#[test]
fn unknown_and_malformed_requests_are_answered_and_the_connection_goes_on() {
    let agent = Agent::start();
    let mut raw = agent.raw();
    let welcome = raw.hello();
    assert_eq!(welcome["welcome"]["protocol"], 1);

    for bad in [
        json!({ "request": "explode" }),
        json!({ "request": "want", "unit": 42 }),
        json!({ "no": "tag" }),
        json!([1, 2, 3]),
    ] {
        let reply = raw.request(&bad);
        assert_eq!(reply["response"], "error", "{bad} -> {reply}");
        assert!(
            reply["message"]
                .as_str()
                .unwrap()
                .contains("malformed or unknown request"),
            "{reply}"
        );
    }
    raw.send_payload(b"{not json").unwrap();
    assert_eq!(raw.recv().unwrap()["response"], "error");

    // The same connection still works, and a graph refusal is a typed answer.
    let pong = raw.request(&json!({ "request": "ping" }));
    assert_eq!(pong["response"], "pong");
    let refused = raw.request(&json!({ "request": "want", "unit": "a", "dependencies": ["a"] }));
    assert_eq!(refused["response"], "refused", "{refused}");
    assert_eq!(refused["error"]["error"], "self_dependency");
    let wanted = raw.request(&json!({ "request": "want", "unit": "a", "dependencies": ["b"] }));
    assert_eq!(
        wanted,
        json!({ "response": "wanted", "registered": true, "added": ["b"] })
    );
    assert_alive(&agent, "after-unknown");
}

#[test]
fn a_timeout_too_long_to_represent_waits_without_one() {
    let agent = Agent::start();
    let mut control = agent.raw();
    control.hello();
    let wanted =
        control.request(&json!({ "request": "want", "unit": "late", "dependencies": ["dep"] }));
    assert_eq!(wanted["response"], "wanted", "{wanted}");
    // u64::MAX milliseconds from now is past what `Instant` holds on some platforms: the request
    // must wait with no deadline (not time out at once, not panic), until the unit may start.
    let mut starter = agent.raw();
    starter.hello();
    starter
        .send(&json!({ "request": "start", "unit": "late", "timeout_ms": u64::MAX }))
        .unwrap();
    let blocked = starter.recv().expect("a blocked report");
    assert_eq!(blocked["response"], "blocked", "{blocked}");
    let mut waiter = agent.raw();
    waiter.hello();
    waiter
        .send(&json!({ "request": "wait", "unit": "late", "until": "started", "timeout_ms": u64::MAX }))
        .unwrap();
    agent.wait_for_waiters(2);
    for request in [
        json!({ "request": "start", "unit": "dep" }),
        json!({ "request": "complete", "unit": "dep" }),
    ] {
        let reply = control.request(&request);
        assert!(reply["response"] != "error", "{request} -> {reply}");
    }
    // The start reports each change of its unmet list before it starts.
    let started = std::iter::from_fn(|| starter.recv())
        .find(|reply| reply["response"] != "blocked")
        .expect("an answer");
    assert_eq!(started["response"], "started", "{started}");
    assert_eq!(waiter.recv().expect("reached")["response"], "reached");
    assert_alive(&agent, "after-huge-timeout");
}

#[test]
fn silent_and_half_finished_clients_do_not_hold_anyone_up() {
    let agent = Agent::start();
    // Connects and says nothing.
    let _silent = agent.raw();
    // Sends half a header.
    let mut half_header = agent.raw();
    half_header.send_bytes(&[0, 0]).unwrap();
    // Handshakes, then announces 100 bytes and sends 10.
    let mut half_frame = agent.raw();
    half_frame.hello();
    half_frame.send_bytes(&100u32.to_be_bytes()).unwrap();
    half_frame.send_bytes(b"{\"request\"").unwrap();
    // Sends half a frame and hangs up.
    let mut quitter = agent.raw();
    quitter.hello();
    quitter.send_bytes(&50u32.to_be_bytes()).unwrap();
    quitter.send_bytes(b"{").unwrap();
    drop(quitter);

    assert_alive(&agent, "while-silent");
    // Blocking requests are served too while the silent ones sit there.
    agent.run(&["want", "b", "a"]).ok();
    let blocked = agent.spawn(&["start", "b"]);
    blocked.stderr_line("b waits for a (unknown)");
    agent.run(&["start", "a"]).ok();
    agent.run(&["complete", "a"]).ok();
    blocked.finish().ok();
}

/// The number of waiters parked in the agent's graph, as `ping --json` reports them.
fn parked(agent: &Agent) -> u64 {
    agent.run(&["ping", "--json"]).ok().json()["waiters"]
        .as_u64()
        .expect("ping reports waiters")
}

/// Polls `ping` until the agent reports `count` parked waiters (a bounded retry on a real
/// observable: a departed client's waiter is freed asynchronously, with no event to wait for).
#[track_caller]
fn wait_for_parked(agent: &Agent, count: u64) {
    let deadline = std::time::Instant::now() + common::PATIENCE;
    loop {
        let now = parked(agent);
        if now == count {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the agent still reports {now} parked waiters, expected {count}"
        );
    }
}

#[test]
fn a_start_killed_mid_wait_leaves_its_unit_pending_and_frees_its_waiter() {
    let agent = Agent::start();
    agent.run(&["want", "claude", "git"]).ok();
    assert_eq!(parked(&agent), 0);
    let start = agent.spawn(&["start", "claude"]);
    start.stderr_line("claude waits for git (unknown)");
    assert_eq!(parked(&agent), 1, "the blocked start is parked");
    start.signal(libc::SIGKILL);
    let run = start.finish();
    assert_eq!(run.code, -1, "killed by a signal");
    // The agent saw the client go and dropped its wait.
    agent.log_line("client left while waiting to start; its waiter is freed");
    wait_for_parked(&agent, 0);

    assert_eq!(agent.state("claude"), "pending");
    // Had the waiter survived, completing git would start claude behind nobody's back.
    agent.run(&["start", "git"]).ok();
    agent.run(&["complete", "git"]).ok();
    let claude = agent.status("claude");
    assert_eq!(claude["state"], "pending", "{claude}");
    assert_eq!(claude["ready"], true);
    assert_eq!(claude["started_at_ms"], serde_json::Value::Null);
    // And a new start takes it normally.
    agent.run(&["start", "claude"]).ok();
    assert_alive(&agent, "after-kill");
}

#[test]
fn a_wait_whose_client_hangs_up_is_freed_and_changes_nothing() {
    let agent = Agent::start();
    agent.run(&["start", "server"]).ok();
    let mut raw = agent.raw();
    raw.hello();
    raw.send(
        &json!({ "request": "wait", "unit": "server", "until": "completed", "timeout_ms": null }),
    )
    .unwrap();
    wait_for_parked(&agent, 1);
    // Hang up mid-wait.
    drop(raw);
    agent.log_line("client left while waiting; its waiter is freed");
    wait_for_parked(&agent, 0);
    assert_eq!(agent.state("server"), "started");
    agent.run(&["complete", "server"]).ok();
    assert_alive(&agent, "after-wait-hangup");
}

#[test]
fn timed_out_waiters_are_freed_too() {
    let agent = Agent::start();
    agent.run(&["want", "a", "never"]).ok();
    agent.run(&["start", "a", "--timeout", "50ms"]).code(4);
    agent.run(&["wait", "never", "--timeout", "50ms"]).code(4);
    assert_eq!(parked(&agent), 0);
}

#[test]
fn two_hundred_blocked_starts_are_released_by_one_complete() {
    const WAITERS: usize = 220;
    let agent = Agent::start();
    // Register the waiters' edges over one raw connection (220 `want` processes would only slow the
    // test down without exercising anything new).
    let mut raw = agent.raw();
    raw.hello();
    for i in 0..WAITERS {
        let reply = raw.request(&json!({
            "request": "want", "unit": format!("w{i}"), "dependencies": ["gate"],
        }));
        assert_eq!(reply["response"], "wanted", "{reply}");
    }
    let waiters: Vec<Proc> = (0..WAITERS)
        .map(|i| agent.spawn(&["start", &format!("w{i}")]))
        .collect();
    // Each one says it is blocked once the agent has parked it.
    for (i, waiter) in waiters.iter().enumerate() {
        waiter.stderr_line(&format!("w{i} waits for gate (unknown)"));
    }
    assert_eq!(parked(&agent), WAITERS as u64);
    agent.run(&["start", "gate"]).ok();
    let released = std::time::Instant::now();
    agent.run(&["complete", "gate"]).ok();
    for waiter in waiters {
        waiter.finish().ok();
    }
    let elapsed = released.elapsed();
    let units = agent.run(&["list", "--json"]).ok().json();
    let started = units["units"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["state"] == "started")
        .count();
    assert_eq!(started, WAITERS);
    assert_eq!(parked(&agent), 0);
    eprintln!("{WAITERS} waiters released and exited in {elapsed:?}");
}

#[test]
fn a_list_of_twenty_thousand_units_is_answered_whole() {
    const UNITS: usize = 20_000;
    const WINDOW: usize = 200;
    let agent = Agent::start();
    // Register the units over a few raw connections, a window of requests in flight at a time.
    let workers: Vec<_> = (0..4)
        .map(|part| {
            let socket = agent.socket.clone();
            std::thread::spawn(move || {
                let mut raw = common::Raw::connect(&socket);
                raw.hello();
                let mine: Vec<usize> = (part..UNITS).step_by(4).collect();
                for window in mine.chunks(WINDOW) {
                    for &i in window {
                        raw.send(&json!({
                            "request": "want",
                            "unit": format!("unit-{i:05}"),
                            "dependencies": [format!("hub-{}", i % 10)],
                        }))
                        .unwrap();
                    }
                    for _ in window {
                        let reply = raw.recv().expect("an answer");
                        assert_eq!(reply["response"], "wanted", "{reply}");
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let list = agent.run(&["list", "--json"]);
    list.ok();
    let units = list.json()["units"].as_array().unwrap().len();
    assert_eq!(units, UNITS);
    assert!(
        list.stdout.len() > 2 * unitsync_ipc::protocol::MAX_FRAME_BYTES,
        "the answer ({} bytes) is larger than a request may be",
        list.stdout.len()
    );
    let all = agent.run(&["list", "--all", "--json"]).ok().json();
    assert_eq!(all["units"].as_array().unwrap().len(), UNITS + 10);
    agent.run(&["graph"]).ok().stdout_has("unit-19999");
    let hub = agent.status("hub-3");
    assert_eq!(hub["dependents"].as_array().unwrap().len(), UNITS / 10);
    eprintln!(
        "`list --json` of {UNITS} units: {} KiB on stdout",
        list.stdout.len() / 1024
    );
    assert_alive(&agent, "after-the-big-list");
}
