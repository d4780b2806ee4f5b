//! The wire format, pinned: every request and response as the JSON an agent and a client exchange
//! (and `--json` partly shows), and every message surviving a serialise/deserialise round trip.
//! Changing one of these strings is a protocol change (see `PROTOCOL_VERSION`).

use serde_json::{json, Value};
use unitsync_core::{
    DependencyStatus, EventKind, Failure, GraphError, GraphFormat, NameRule, Operation, UnitName,
    UnitState, WaitTarget,
};
use unitsync_ipc::protocol::{
    EventInfo, Hello, HelloReply, PingInfo, Request, Response, UnitInfo, Welcome, PROTOCOL_VERSION,
};

fn name(text: &str) -> UnitName {
    UnitName::new(text).unwrap()
}

/// Asserts `value` serialises to `expected` and deserialises back to itself.
#[track_caller]
fn pinned<T>(value: T, expected: Value)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    assert_eq!(serde_json::to_value(&value).unwrap(), expected);
    let back: T = serde_json::from_value(expected).unwrap();
    assert_eq!(back, value);
}

#[test]
fn the_version_is_1() {
    assert_eq!(PROTOCOL_VERSION, 1);
}

#[test]
fn handshake_messages() {
    pinned(
        Hello {
            protocol: 1,
            client: "unitsync 0.1.0".to_owned(),
        },
        json!({ "protocol": 1, "client": "unitsync 0.1.0" }),
    );
    pinned(
        HelloReply::Welcome(Welcome {
            protocol: 1,
            agent_version: "0.1.0".to_owned(),
            pid: 42,
        }),
        json!({ "welcome": { "protocol": 1, "agent_version": "0.1.0", "pid": 42 } }),
    );
    pinned(
        HelloReply::Refused {
            message: "protocol mismatch".to_owned(),
            protocol: 1,
        },
        json!({ "refused": { "message": "protocol mismatch", "protocol": 1 } }),
    );
}

#[test]
fn requests() {
    pinned(Request::Ping, json!({ "request": "ping" }));
    pinned(
        Request::Want {
            unit: "claude".to_owned(),
            dependencies: vec!["git".to_owned()],
        },
        json!({ "request": "want", "unit": "claude", "dependencies": ["git"] }),
    );
    pinned(
        Request::Start {
            unit: "claude".to_owned(),
            timeout_ms: Some(1500),
            claim: Some("run-1/agent.sh#4242-17".to_owned()),
        },
        json!({
            "request": "start", "unit": "claude", "timeout_ms": 1500,
            "claim": "run-1/agent.sh#4242-17",
        }),
    );
    // `claim` is optional: a start without it (an older client) still parses, unclaimed.
    let old: Request =
        serde_json::from_value(json!({ "request": "start", "unit": "a", "timeout_ms": null }))
            .unwrap();
    assert_eq!(
        old,
        Request::Start {
            unit: "a".to_owned(),
            timeout_ms: None,
            claim: None
        }
    );
    pinned(
        Request::Complete {
            unit: "git".to_owned(),
        },
        json!({ "request": "complete", "unit": "git" }),
    );
    pinned(
        Request::Fail {
            unit: "git".to_owned(),
            reason: Some("boom".to_owned()),
        },
        json!({ "request": "fail", "unit": "git", "reason": "boom" }),
    );
    pinned(
        Request::Ready {
            unit: "a".to_owned(),
        },
        json!({ "request": "ready", "unit": "a" }),
    );
    pinned(
        Request::Wait {
            unit: "a".to_owned(),
            until: WaitTarget::Started,
            timeout_ms: None,
        },
        json!({ "request": "wait", "unit": "a", "until": "started", "timeout_ms": null }),
    );
    pinned(
        Request::Status {
            unit: "a".to_owned(),
        },
        json!({ "request": "status", "unit": "a" }),
    );
    pinned(Request::List, json!({ "request": "list" }));
    pinned(
        Request::Graph {
            format: GraphFormat::Mermaid,
        },
        json!({ "request": "graph", "format": "mermaid" }),
    );
    pinned(
        Request::Watch { from_seq: Some(7) },
        json!({ "request": "watch", "from_seq": 7 }),
    );
    pinned(
        Request::Abandon {
            owner: "a.sh".to_owned(),
            reason: "exited".to_owned(),
        },
        json!({ "request": "abandon", "owner": "a.sh", "reason": "exited" }),
    );
}

fn dependency(text: &str, current: UnitState) -> DependencyStatus {
    DependencyStatus {
        name: name(text),
        required: UnitState::Completed,
        current,
        satisfied: current == UnitState::Completed,
    }
}

#[test]
fn responses() {
    pinned(
        Response::Pong {
            agent: PingInfo {
                agent_version: "0.1.0".to_owned(),
                protocol: 1,
                uptime_ms: 5,
                units: 2,
                pid: 9,
                waiters: 1,
            },
        },
        json!({ "response": "pong", "agent": {
            "agent_version": "0.1.0", "protocol": 1, "uptime_ms": 5, "units": 2, "pid": 9,
            "waiters": 1,
        }}),
    );
    // `waiters` was added later: an older agent's pong without it still parses.
    let old: Response = serde_json::from_value(json!({ "response": "pong", "agent": {
        "agent_version": "0.1.0", "protocol": 1, "uptime_ms": 5, "units": 2, "pid": 9,
    }}))
    .unwrap();
    assert!(matches!(old, Response::Pong { agent } if agent.waiters == 0));
    pinned(
        Response::Wanted {
            registered: true,
            added: vec![name("git")],
        },
        json!({ "response": "wanted", "registered": true, "added": ["git"] }),
    );
    pinned(
        Response::Blocked {
            unmet: vec![dependency("git", UnitState::Unknown)],
        },
        json!({ "response": "blocked", "unmet": [
            { "name": "git", "required": "completed", "current": "unknown", "satisfied": false },
        ]}),
    );
    pinned(Response::Started, json!({ "response": "started" }));
    pinned(Response::Completed, json!({ "response": "completed" }));
    pinned(
        Response::Failed {
            propagated: vec![name("claude")],
        },
        json!({ "response": "failed", "propagated": ["claude"] }),
    );
    pinned(
        Response::Ready { ready: false },
        json!({ "response": "ready", "ready": false }),
    );
    pinned(
        Response::Reached {
            state: UnitState::Completed,
        },
        json!({ "response": "reached", "state": "completed" }),
    );
    pinned(
        Response::UnitFailed {
            failure: Failure {
                reason: "dependency git failed".to_owned(),
                cause: Some(name("git")),
                cause_reason: Some("boom".to_owned()),
            },
        },
        json!({ "response": "unit_failed", "failure": {
            "reason": "dependency git failed", "cause": "git", "cause_reason": "boom",
        }}),
    );
    pinned(
        Response::TimedOut {
            state: UnitState::Pending,
            unmet: vec![],
        },
        json!({ "response": "timed_out", "state": "pending", "unmet": [] }),
    );
    pinned(
        Response::Graph {
            text: "flowchart LR\n".to_owned(),
        },
        json!({ "response": "graph", "text": "flowchart LR\n" }),
    );
    pinned(
        Response::Lagged { missed: 3 },
        json!({ "response": "lagged", "missed": 3 }),
    );
    pinned(
        Response::Abandoned {
            failed: vec![name("a")],
        },
        json!({ "response": "abandoned", "failed": ["a"] }),
    );
    pinned(
        Response::Error {
            message: "bad".to_owned(),
        },
        json!({ "response": "error", "message": "bad" }),
    );
    pinned(
        Response::ShuttingDown,
        json!({ "response": "shutting_down" }),
    );
    pinned(
        Response::Unsaved {
            message: "journaling stopped".to_owned(),
        },
        json!({ "response": "unsaved", "message": "journaling stopped" }),
    );
}

#[test]
fn the_owner_of_a_claim_is_what_comes_before_its_last_hash() {
    use unitsync_ipc::protocol::claim_owner;
    assert_eq!(claim_owner("run-1/agent#4242-17"), "run-1/agent");
    assert_eq!(claim_owner("a#b#4242-17"), "a#b");
    assert_eq!(claim_owner("#4242-17"), "");
    assert_eq!(claim_owner("no-invocation"), "no-invocation");
}

#[test]
fn units_and_events() {
    pinned(
        Response::Status {
            unit: UnitInfo {
                name: name("claude"),
                state: UnitState::Failed,
                ready: false,
                dependencies: vec![dependency("git", UnitState::Failed)],
                dependents: vec![name("editor")],
                registered_at_ms: Some(1000),
                started_at_ms: None,
                finished_at_ms: Some(2000),
                failure: Some(Failure {
                    reason: "dependency git failed".to_owned(),
                    cause: Some(name("git")),
                    cause_reason: Some("boom".to_owned()),
                }),
            },
        },
        json!({ "response": "status", "unit": {
            "name": "claude", "state": "failed", "ready": false,
            "dependencies": [
                { "name": "git", "required": "completed", "current": "failed", "satisfied": false },
            ],
            "dependents": ["editor"],
            "registered_at_ms": 1000, "started_at_ms": null, "finished_at_ms": 2000,
            "failure": { "reason": "dependency git failed", "cause": "git", "cause_reason": "boom" },
        }}),
    );
    let events = [
        (
            EventKind::Registered { unit: name("a") },
            json!({ "event": "registered", "unit": "a" }),
        ),
        (
            EventKind::DependencyAdded {
                unit: name("a"),
                dependency: name("b"),
            },
            json!({ "event": "dependency_added", "unit": "a", "dependency": "b" }),
        ),
        (
            EventKind::Started {
                unit: name("a"),
                by: None,
            },
            json!({ "event": "started", "unit": "a" }),
        ),
        (
            EventKind::Started {
                unit: name("a"),
                by: Some("a.sh".to_owned()),
            },
            json!({ "event": "started", "unit": "a", "by": "a.sh" }),
        ),
        (
            EventKind::Completed { unit: name("a") },
            json!({ "event": "completed", "unit": "a" }),
        ),
        (
            EventKind::Failed {
                unit: name("a"),
                reason: "dependency b failed".to_owned(),
                cause: Some(name("b")),
            },
            json!({ "event": "failed", "unit": "a", "reason": "dependency b failed", "cause": "b" }),
        ),
    ];
    for (seq, (kind, mut expected)) in events.into_iter().enumerate() {
        let seq = seq as u64 + 1;
        let object = expected.as_object_mut().unwrap();
        object.insert("seq".to_owned(), json!(seq));
        object.insert("at_ms".to_owned(), json!(1_700_000_000_000u64));
        pinned(
            EventInfo {
                seq,
                at_ms: 1_700_000_000_000,
                kind,
            },
            expected,
        );
    }
}

#[test]
fn graph_refusals_travel_typed() {
    let cases = [
        (
            GraphError::InvalidName {
                name: String::new(),
                rule: NameRule::Empty,
            },
            json!({ "error": "invalid_name", "name": "", "rule": "empty" }),
        ),
        (
            GraphError::SelfDependency { unit: name("a") },
            json!({ "error": "self_dependency", "unit": "a" }),
        ),
        (
            GraphError::Cycle {
                path: vec![name("a"), name("b"), name("a")],
            },
            json!({ "error": "cycle", "path": ["a", "b", "a"] }),
        ),
        (
            GraphError::NoSuchUnit { unit: name("x") },
            json!({ "error": "no_such_unit", "unit": "x" }),
        ),
        (
            GraphError::WrongState {
                unit: name("a"),
                operation: Operation::Complete,
                state: UnitState::Pending,
            },
            json!({ "error": "wrong_state", "unit": "a", "operation": "complete", "state": "pending" }),
        ),
        (
            GraphError::DependencyFailed {
                unit: name("a"),
                dependency: name("b"),
                reason: "boom".to_owned(),
            },
            json!({ "error": "dependency_failed", "unit": "a", "dependency": "b", "reason": "boom" }),
        ),
    ];
    for (error, expected) in cases {
        pinned(
            Response::Refused { error },
            json!({ "response": "refused", "error": expected }),
        );
    }
}

#[test]
fn unknown_fields_and_requests() {
    // An unknown request is an error the agent answers, not a crash.
    assert!(serde_json::from_value::<Request>(json!({ "request": "explode" })).is_err());
    assert!(serde_json::from_value::<Request>(json!({ "unit": "a" })).is_err());
    // Extra fields from a newer client are ignored (adding a field is a compatible change).
    let ping: Request =
        serde_json::from_value(json!({ "request": "ping", "verbose": true })).unwrap();
    assert_eq!(ping, Request::Ping);
}
