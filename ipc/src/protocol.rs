//! The wire protocol between the `unitsync` CLI and its agent, in one file so it reads as a spec.
//!
//! A connection is a sequence of *frames*: a 4-byte big-endian length, then that many bytes of one
//! JSON document (see `frame`); the client's frames are at most [`MAX_FRAME_BYTES`] long, the
//! agent's at most [`MAX_RESPONSE_BYTES`]. The client speaks first with a [`Hello`] naming its protocol version;
//! the agent answers [`Welcome`] or refuses a different version and closes. After that the client
//! sends [`Request`]s, one at a time; the agent answers each with one final [`Response`], preceded,
//! for the blocking requests (`start`, `wait`), by any number of interim `blocked` progress frames,
//! and for `watch` by an endless stream of `event`/`lagged` frames.
//!
//! Timestamps on the wire are Unix milliseconds. Names travel as plain strings and are validated by
//! the graph, so every naming error is the graph's own message. Adding a request or a field is a
//! compatible change; changing or removing one bumps [`PROTOCOL_VERSION`].
//! This module owns message shapes only: no I/O, no graph logic.

use serde::{Deserialize, Serialize};
use unitsync_core::{
    DependencyStatus, EventKind, Failure, GraphError, GraphFormat, UnitName, UnitState, WaitTarget,
};

/// The version both sides must speak.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest frame the agent accepts from a client (a request or a hello), in bytes of payload.
/// Anything longer is refused from its header alone and closes that connection.
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// The largest frame a client accepts from the agent, in bytes of payload. Answers describe the
/// whole graph (`list`, `graph`, `status`), so they may be far larger than any request: 20,000
/// units make a `list` of a few MiB. The agent never sends a longer frame; it answers `error`
/// instead.
pub const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// The client's first frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version the client speaks.
    pub protocol: u32,
    /// Free text naming the client, for logs (e.g. `unitsync 0.1.0`).
    pub client: String,
}

/// The agent's answer to a matching [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The protocol version the agent speaks.
    pub protocol: u32,
    /// The agent's version.
    pub agent_version: String,
    /// The agent's process id.
    pub pid: u32,
}

/// The agent's answer to a [`Hello`]: welcome, or why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HelloReply {
    /// Accepted.
    Welcome(Welcome),
    /// Refused (version mismatch, other user); the agent closes the connection after this.
    Refused {
        /// Why.
        message: String,
        /// The agent's protocol version.
        protocol: u32,
    },
}

/// One request. Unit names are validated by the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// Liveness and agent facts.
    Ping,
    /// Register `unit` and make it wait for `dependencies` (all or nothing).
    Want {
        /// The waiting unit.
        unit: String,
        /// What it waits for.
        dependencies: Vec<String>,
    },
    /// Block until `unit` is ready, then start it.
    Start {
        /// The unit.
        unit: String,
        /// Give up after this many milliseconds.
        timeout_ms: Option<u64>,
        /// Who starts the unit, as `<owner>#<invocation>` (see [`claim_owner`]): recorded on the unit
        /// and in its `started` event (`by`). The same claim sent again for a unit it already started
        /// answers `started` again without a new event, so a client that lost the answer (the agent
        /// restarted) can simply resend its request. `abandon` fails units by the owner part.
        #[serde(default)]
        claim: Option<String>,
    },
    /// Mark a started unit completed.
    Complete {
        /// The unit.
        unit: String,
    },
    /// Mark a unit failed; its dependents that have not started fail too.
    Fail {
        /// The unit.
        unit: String,
        /// Why (shown to everyone waiting on it).
        reason: Option<String>,
    },
    /// Whether every dependency is completed.
    Ready {
        /// The unit.
        unit: String,
    },
    /// Block until another unit reaches a state.
    Wait {
        /// The unit.
        unit: String,
        /// Which state.
        until: WaitTarget,
        /// Give up after this many milliseconds.
        timeout_ms: Option<u64>,
    },
    /// One unit in detail.
    Status {
        /// The unit.
        unit: String,
    },
    /// Every unit.
    List,
    /// The graph as text.
    Graph {
        /// Which syntax.
        format: GraphFormat,
    },
    /// Stream every event from now on (or from `from_seq`, while buffered).
    Watch {
        /// Resume from this sequence number.
        from_seq: Option<u64>,
    },
    /// The owner exited: fail every unit started under a claim whose owner part (see
    /// [`claim_owner`]) is `owner` and not finished, with `reason`.
    Abandon {
        /// The owner part of the claims.
        owner: String,
        /// The failure reason to record.
        reason: String,
    },
}

/// One unit, as the wire and `--json` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitInfo {
    /// The unit.
    pub name: UnitName,
    /// Its state.
    pub state: UnitState,
    /// Whether every dependency is completed.
    pub ready: bool,
    /// Its dependencies, in the order added.
    pub dependencies: Vec<DependencyStatus>,
    /// Units that depend on it, in the order added.
    pub dependents: Vec<UnitName>,
    /// When it was registered (Unix ms).
    pub registered_at_ms: Option<u64>,
    /// When it started (Unix ms).
    pub started_at_ms: Option<u64>,
    /// When it completed or failed (Unix ms).
    pub finished_at_ms: Option<u64>,
    /// Why it failed.
    pub failure: Option<Failure>,
}

/// One event, as the wire and `watch --json` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventInfo {
    /// Position in the agent's total order of events.
    pub seq: u64,
    /// When it happened (Unix ms).
    pub at_ms: u64,
    /// What happened (`event` field: registered, dependency_added, started, completed, failed).
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Facts about the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingInfo {
    /// The agent's version.
    pub agent_version: String,
    /// The protocol version it speaks.
    pub protocol: u32,
    /// Milliseconds since it started.
    pub uptime_ms: u64,
    /// Units it knows (registered and unknown).
    pub units: usize,
    /// Its process id.
    pub pid: u32,
    /// Blocked `start`/`wait` requests parked in the graph right now (falls back when they end or
    /// their clients leave).
    #[serde(default)]
    pub waiters: usize,
}

/// One response frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "snake_case")]
pub enum Response {
    /// Answer to `ping`.
    Pong {
        /// Agent facts.
        agent: PingInfo,
    },
    /// Answer to `want`.
    Wanted {
        /// The unit was registered by this request.
        registered: bool,
        /// The edges that were new.
        added: Vec<UnitName>,
    },
    /// Interim, during `start`/`wait`: what is still unmet (sent again whenever it changes).
    Blocked {
        /// Unmet dependencies and their states.
        unmet: Vec<DependencyStatus>,
    },
    /// Final answer to `start`: the unit is started.
    Started,
    /// Final answer to `complete`.
    Completed,
    /// Final answer to `fail`.
    Failed {
        /// Dependents failed with it.
        propagated: Vec<UnitName>,
    },
    /// Answer to `ready`.
    Ready {
        /// Whether the unit is ready.
        ready: bool,
    },
    /// Final answer to `wait`: the unit reached the state.
    Reached {
        /// Its state now.
        state: UnitState,
    },
    /// Final answer to `wait`: the unit failed.
    UnitFailed {
        /// Why.
        failure: Failure,
    },
    /// Final answer to `start`/`wait` when the timeout passed.
    TimedOut {
        /// For `wait`: the unit's state; for `start`: `pending`.
        state: UnitState,
        /// For `start`: what was still unmet.
        unmet: Vec<DependencyStatus>,
    },
    /// Answer to `status`.
    Status {
        /// The unit.
        unit: UnitInfo,
    },
    /// Answer to `list`.
    List {
        /// Every unit, sorted by name.
        units: Vec<UnitInfo>,
    },
    /// Answer to `graph`.
    Graph {
        /// DOT or Mermaid text.
        text: String,
    },
    /// One streamed `watch` event.
    Event {
        /// The event.
        event: EventInfo,
    },
    /// Streamed by `watch` when the watcher fell behind the agent's buffer.
    Lagged {
        /// How many events were skipped (upper bound).
        missed: u64,
    },
    /// Answer to `abandon`: the units that were failed.
    Abandoned {
        /// Units the owner had started and not finished.
        failed: Vec<UnitName>,
    },
    /// The graph refused the request.
    Refused {
        /// Why, as the graph puts it.
        error: GraphError,
    },
    /// The request itself was bad (malformed, unknown, too large).
    Error {
        /// What was wrong.
        message: String,
    },
    /// The agent is stopping; blocked requests end with this (reconnect to a new agent).
    ShuttingDown,
    /// The change was made, but the agent could not save it to its state file (its journal stopped
    /// after a write error), so it would not survive a restart. Every later change gets this too,
    /// until the agent is restarted.
    Unsaved {
        /// What went wrong, naming the file.
        message: String,
    },
}

/// The owner part of a start claim `<owner>#<invocation>`: the text before its last `#` (the whole
/// claim if it has none). `unitsync run` gives each script an owner; each `unitsync` process adds an
/// invocation of its own, unique to it and kept across its retries.
pub fn claim_owner(claim: &str) -> &str {
    claim.rsplit_once('#').map_or(claim, |(owner, _)| owner)
}
