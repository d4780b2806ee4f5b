//! The integration tests' harness: a real `unitsync agent` process on a socket in a fresh temporary
//! directory, the real CLI binary run against it, and a raw client that speaks the wire framing by
//! hand. Nothing here sleeps to synchronise: every wait is for something a process printed (a line
//! on its stdout/stderr, its exit), bounded by a deadline so a broken build fails instead of hanging.
//!
//! This module owns process and socket plumbing only; the tests decide what to assert.

#![allow(dead_code)] // each test binary uses a different part of the harness

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The `unitsync` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_unitsync");

/// How long any single expected thing may take before the test fails (generous: CI is slow; the
/// happy path never waits anywhere near this long).
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The agent's log filter in tests: `info`, plus the IPC layer's debug lines (they report, e.g.,
/// that a departed client's waiter was freed, which tests wait for).
pub const AGENT_LOG: &str = "info,unitsync_ipc=debug";

/// A `unitsync` command with a clean environment: no inherited socket, state, owner, quiet or log
/// settings.
pub fn unitsync() -> Command {
    let mut command = Command::new(BIN);
    command
        .env_remove("UNITSYNC_SOCKET")
        .env_remove("UNITSYNC_STATE")
        .env_remove("UNITSYNC_OWNER")
        .env_remove("UNITSYNC_QUIET")
        .env_remove("UNITSYNC_LOG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    command
}

/// What a finished process said and how it ended.
#[derive(Debug)]
pub struct Run {
    /// The exit code (`-1` if killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from_output(output: std::process::Output) -> Self {
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Asserts exit 0 and returns `self`.
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "expected success, got {self:#?}");
        self
    }

    /// Asserts the exit code and returns `self`.
    #[track_caller]
    pub fn code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "expected exit {code}, got {self:#?}");
        self
    }

    /// Asserts stderr contains `text` and returns `self`.
    #[track_caller]
    pub fn stderr_has(&self, text: &str) -> &Self {
        assert!(
            self.stderr.contains(text),
            "stderr should contain {text:?}: {self:#?}"
        );
        self
    }

    /// Asserts stdout contains `text` and returns `self`.
    #[track_caller]
    pub fn stdout_has(&self, text: &str) -> &Self {
        assert!(
            self.stdout.contains(text),
            "stdout should contain {text:?}: {self:#?}"
        );
        self
    }

    /// Stdout as one JSON document.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("stdout is not one JSON document ({error}): {self:#?}"))
    }
}

/// Runs `command` to completion (bounded by [`PATIENCE`]).
#[track_caller]
pub fn run(command: &mut Command) -> Run {
    spawn(command).finish()
}

/// The lines read so far, and whether the pipe reached end of file.
type Feed = Mutex<(Vec<String>, bool)>;

/// Lines read from a pipe by a background thread, which tests can wait on.
#[derive(Clone, Default)]
pub struct Lines {
    state: Arc<(Feed, Condvar)>,
}

impl Lines {
    /// Starts reading `source` line by line until end of file.
    pub fn read_from(source: impl Read + Send + 'static) -> Self {
        let lines = Self::default();
        let feed = lines.clone();
        std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                let mut reader = BufReader::new(source);
                let mut line = String::new();
                loop {
                    line.clear();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => feed.push(line.trim_end_matches('\n').to_owned()),
                    }
                }
                let (lock, changed) = &*feed.state;
                lock.lock().unwrap().1 = true;
                changed.notify_all();
            })
            .expect("spawn a reader thread");
        lines
    }

    /// Already at end of file, with nothing in it.
    pub fn closed() -> Self {
        let lines = Self::default();
        lines.state.0.lock().unwrap().1 = true;
        lines
    }

    fn push(&self, line: String) {
        let (lock, changed) = &*self.state;
        lock.lock().unwrap().0.push(line);
        changed.notify_all();
    }

    /// Every line so far.
    pub fn all(&self) -> Vec<String> {
        self.state.0.lock().unwrap().0.clone()
    }

    /// Waits until some line satisfies `wanted` and returns it; `None` if the pipe closed or the
    /// deadline passed first.
    pub fn wait_for(&self, wanted: impl Fn(&str) -> bool) -> Option<String> {
        self.wait_until(|lines, _| lines.iter().find(|l| wanted(l)).cloned())
    }

    /// Waits until at least `count` lines were read; returns the first `count`.
    pub fn wait_count(&self, count: usize) -> Option<Vec<String>> {
        self.wait_until(|lines, _| (lines.len() >= count).then(|| lines[..count].to_vec()))
    }

    /// Waits for end of file (bounded).
    pub fn wait_closed(&self) -> bool {
        self.wait_until(|_, closed| closed.then_some(())).is_some()
    }

    fn wait_until<T>(&self, found: impl Fn(&[String], bool) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + PATIENCE;
        let (lock, changed) = &*self.state;
        let mut state = lock.lock().unwrap();
        loop {
            if let Some(value) = found(&state.0, state.1) {
                return Some(value);
            }
            let now = Instant::now();
            if state.1 || now >= deadline {
                return None;
            }
            state = changed.wait_timeout(state, deadline - now).unwrap().0;
        }
    }
}

/// A running process whose stdout and stderr are read line by line.
pub struct Proc {
    pub child: Child,
    pub stdout: Lines,
    pub stderr: Lines,
}

/// Spawns `command` with stdout and stderr piped and read in the background.
#[track_caller]
pub fn spawn(command: &mut Command) -> Proc {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot spawn {command:?}: {error}"));
    let stdout = Lines::read_from(child.stdout.take().expect("piped stdout"));
    let stderr = Lines::read_from(child.stderr.take().expect("piped stderr"));
    Proc {
        child,
        stdout,
        stderr,
    }
}

impl Proc {
    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits for a stderr line containing `text` (panics if the process ended or the deadline
    /// passed first).
    #[track_caller]
    pub fn stderr_line(&self, text: &str) -> String {
        self.stderr
            .wait_for(|line| line.contains(text))
            .unwrap_or_else(|| {
                panic!(
                    "no stderr line containing {text:?}; stderr so far: {:#?}",
                    self.stderr.all()
                )
            })
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) {
        send_signal(self.pid(), signal);
    }

    /// Waits for the process to end (both pipes closed, then its exit) and collects its output.
    /// Panics, after killing it, if it does not end within [`PATIENCE`].
    #[track_caller]
    pub fn finish(mut self) -> Run {
        if !(self.stdout.wait_closed() && self.stderr.wait_closed()) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!(
                "process did not finish within {PATIENCE:?}; stdout: {:#?}; stderr: {:#?}",
                self.stdout.all(),
                self.stderr.all()
            );
        }
        let status = self.child.wait().expect("wait for the child");
        Run {
            code: status.code().unwrap_or(-1),
            stdout: self.stdout.all().iter().map(|l| format!("{l}\n")).collect(),
            stderr: self.stderr.all().iter().map(|l| format!("{l}\n")).collect(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends `signal` to process `pid`.
pub fn send_signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions; `pid` is a child this test spawned and has
    // not yet reaped, so the id cannot have been reused by another process.
    let result = unsafe { libc::kill(pid, signal) };
    assert_eq!(result, 0, "kill({pid}, {signal}) failed");
}

/// A real `unitsync agent` on a socket in a fresh temporary directory; killed on drop.
pub struct Agent {
    pub proc: Proc,
    /// The socket path.
    pub socket: PathBuf,
    /// The temporary directory everything lives in (the socket is in `dir/run/`).
    pub dir: tempfile::TempDir,
}

impl Agent {
    /// Starts an agent on `<fresh temp dir>/run/agent.sock` and waits until it listens.
    #[track_caller]
    pub fn start() -> Self {
        let dir = tempdir();
        let socket = dir.path().join("run").join("agent.sock");
        match Self::start_on(dir, &socket, &[]) {
            Ok(agent) => agent,
            Err(run) => panic!("the agent did not start: {run:#?}"),
        }
    }

    /// Starts an agent on `socket` with extra environment, keeping `dir` alive with it. Waits for its
    /// "listening on" line; if it exits first, returns what it said.
    pub fn start_on(
        dir: tempfile::TempDir,
        socket: &Path,
        env: &[(&str, &Path)],
    ) -> Result<Self, Run> {
        let mut command = unitsync();
        command
            .arg("agent")
            .arg("--socket")
            .arg(socket)
            .env("UNITSYNC_LOG", AGENT_LOG);
        for (key, value) in env {
            command.env(key, value);
        }
        Self::launch(command, dir, socket.to_owned())
    }

    /// Starts an agent on `<fresh temp dir>/run/agent.sock` with extra arguments (`--state`,
    /// `--sync`, ...) and waits until it listens.
    #[track_caller]
    pub fn start_with(args: &[&str]) -> Self {
        let dir = tempdir();
        let socket = dir.path().join("run").join("agent.sock");
        match Self::start_args(dir, &socket, args) {
            Ok(agent) => agent,
            Err(run) => panic!("the agent did not start: {run:#?}"),
        }
    }

    /// Starts an agent on `socket` with extra arguments, keeping `dir` alive with it. Waits for its
    /// "listening on" line; if it exits first, returns what it said.
    pub fn start_args(dir: tempfile::TempDir, socket: &Path, args: &[&str]) -> Result<Self, Run> {
        let mut command = unitsync();
        command
            .arg("agent")
            .arg("--socket")
            .arg(socket)
            .args(args)
            .env("UNITSYNC_LOG", AGENT_LOG);
        Self::launch(command, dir, socket.to_owned())
    }

    /// The default state file of this agent: beside its socket.
    pub fn state_file(&self) -> PathBuf {
        journal_of(&self.socket)
    }

    /// Stops the agent with `signal` (SIGTERM for a clean stop, SIGKILL for a crash) and waits
    /// until it has exited; returns what is needed to start it again, and what it said.
    #[track_caller]
    pub fn stop(self, signal: i32) -> (Stopped, Run) {
        self.proc.signal(signal);
        let Agent { proc, socket, dir } = self;
        let run = proc.finish();
        (Stopped { socket, dir }, run)
    }

    /// The number of `start`/`wait` requests parked in the agent, per `ping`.
    #[track_caller]
    pub fn waiters(&self) -> u64 {
        self.raw()
            .hello_then(&serde_json::json!({ "request": "ping" }))["agent"]["waiters"]
            .as_u64()
            .expect("ping reports waiters")
    }

    /// Waits (polling `ping`, bounded by [`PATIENCE`]) until exactly `count` requests are parked: a
    /// departed or newly arrived client is parked or freed asynchronously, with no event to wait for.
    #[track_caller]
    pub fn wait_for_waiters(&self, count: u64) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let now = self.waiters();
            if now == count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the agent still reports {now} parked waiters, expected {count}"
            );
            std::thread::yield_now();
        }
    }

    /// Spawns an agent `command` and waits for its "listening on" line.
    pub fn launch(
        mut command: Command,
        dir: tempfile::TempDir,
        socket: PathBuf,
    ) -> Result<Self, Run> {
        let proc = spawn(&mut command);
        match proc.stderr.wait_for(|line| line.contains("listening on")) {
            Some(_) => Ok(Self { proc, socket, dir }),
            None => Err(proc.finish()),
        }
    }

    /// A `unitsync` command aimed at this agent (through `UNITSYNC_SOCKET`).
    pub fn command(&self) -> Command {
        let mut command = unitsync();
        command.env("UNITSYNC_SOCKET", &self.socket);
        command
    }

    /// Runs `unitsync ARGS...` against this agent.
    #[track_caller]
    pub fn run(&self, args: &[&str]) -> Run {
        run(self.command().args(args))
    }

    /// Spawns `unitsync ARGS...` against this agent without waiting for it.
    #[track_caller]
    pub fn spawn(&self, args: &[&str]) -> Proc {
        spawn(self.command().args(args))
    }

    /// `unitsync status UNIT --json`, which must succeed.
    #[track_caller]
    pub fn status(&self, unit: &str) -> Value {
        self.run(&["status", unit, "--json"]).ok().json()
    }

    /// The state of `unit`, per `status --json`.
    #[track_caller]
    pub fn state(&self, unit: &str) -> String {
        self.status(unit)["state"]
            .as_str()
            .expect("state is a string")
            .to_owned()
    }

    /// Waits for an agent log line containing `text`.
    #[track_caller]
    pub fn log_line(&self, text: &str) -> String {
        self.proc.stderr_line(text)
    }

    /// A raw connection to this agent.
    pub fn raw(&self) -> Raw {
        Raw::connect(&self.socket)
    }

    /// Every event from `from` on, read over a raw `watch`, up to and including the first one that
    /// satisfies `last` (bounded by the read timeout: a missing event fails the test).
    #[track_caller]
    pub fn events_until(&self, from: u64, last: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut raw = self.raw();
        raw.hello();
        raw.send(&serde_json::json!({ "request": "watch", "from_seq": from }))
            .expect("send watch");
        let mut events = Vec::new();
        loop {
            let frame = raw.recv().expect("the watch goes on");
            assert_eq!(frame["response"], "event", "{frame}");
            let event = frame["event"].clone();
            let done = last(&event);
            events.push(event);
            if done {
                return events;
            }
        }
    }

    /// Marks the end of what a test did: starts a unit named `name` and returns every event from
    /// the first up to that start (so a test can compare whole histories without guessing counts).
    #[track_caller]
    pub fn history(&self, name: &str) -> Vec<Value> {
        self.run(&["start", name]).ok();
        self.events_until(1, |e| e["event"] == "started" && e["unit"] == name)
    }
}

/// An agent that was stopped (or crashed), ready to be started again on the same socket and state.
pub struct Stopped {
    pub socket: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Stopped {
    /// Starts an agent again on the same socket (and so the same default state file).
    #[track_caller]
    pub fn restart(self, args: &[&str]) -> Agent {
        match Agent::start_args(self.dir, &self.socket, args) {
            Ok(agent) => agent,
            Err(run) => panic!("the agent did not restart: {run:#?}"),
        }
    }

    /// Runs `unitsync agent` on the same socket with `args` and expects it to exit (a refusal):
    /// returns what it said. The directory stays.
    #[track_caller]
    pub fn refused(&self, args: &[&str]) -> Run {
        run(unitsync()
            .arg("agent")
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env("UNITSYNC_LOG", AGENT_LOG))
    }

    /// The default state file.
    pub fn state_file(&self) -> PathBuf {
        journal_of(&self.socket)
    }
}

/// The default state file for `socket`: the socket path with `.journal` appended.
pub fn journal_of(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".journal");
    PathBuf::from(name)
}

/// A small seeded random number generator (SplitMix64), so a failing random test can be replayed
/// from the seed it prints.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A seed from the clock, or from `UNITSYNC_SEED` to replay a failure.
    pub fn seed_from_env() -> u64 {
        std::env::var("UNITSYNC_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            })
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The resident set size of process `pid` in KiB, from `/proc/<pid>/status` (Linux).
pub fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc status")
}

/// An environment variable as a number, or `default`.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A fresh temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("unitsync-test-")
        .tempdir()
        .expect("create a temporary directory")
}

/// Whether the tests run as root (some permission tests need it to chown or switch users).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A connection that speaks the framing by hand: 4-byte big-endian length, then JSON.
pub struct Raw {
    pub stream: UnixStream,
}

impl Raw {
    /// Connects (no handshake).
    #[track_caller]
    pub fn connect(socket: &Path) -> Self {
        let stream = UnixStream::connect(socket)
            .unwrap_or_else(|error| panic!("connect to {}: {error}", socket.display()));
        stream
            .set_read_timeout(Some(PATIENCE))
            .expect("set a read timeout");
        Self { stream }
    }

    /// Writes raw bytes.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Writes one frame holding `payload`.
    pub fn send_payload(&mut self, payload: &[u8]) -> std::io::Result<()> {
        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(payload);
        self.send_bytes(&frame)
    }

    /// Writes one frame holding `message` as JSON.
    pub fn send(&mut self, message: &Value) -> std::io::Result<()> {
        self.send_payload(message.to_string().as_bytes())
    }

    /// Reads one frame; `None` at end of stream (the agent closed the connection).
    #[track_caller]
    pub fn recv(&mut self) -> Option<Value> {
        let mut header = [0u8; 4];
        match self.stream.read_exact(&mut header) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return None,
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(error) => panic!("reading a frame header: {error}"),
        }
        let mut payload = vec![0u8; u32::from_be_bytes(header) as usize];
        self.stream
            .read_exact(&mut payload)
            .expect("read a frame payload");
        Some(serde_json::from_slice(&payload).expect("a frame holds JSON"))
    }

    /// Asserts the agent closed the connection (after any frames already read).
    #[track_caller]
    pub fn assert_closed(&mut self) {
        let mut rest = Vec::new();
        match self.stream.read_to_end(&mut rest) {
            Ok(_) => assert!(
                rest.is_empty(),
                "expected the connection closed, got {rest:?}"
            ),
            Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset),
        }
    }

    /// Performs the version-1 handshake and returns the welcome.
    #[track_caller]
    pub fn hello(&mut self) -> Value {
        self.send(&json!({ "protocol": 1, "client": "raw test client" }))
            .expect("send hello");
        let reply = self.recv().expect("a reply to hello");
        assert!(reply.get("welcome").is_some(), "expected welcome: {reply}");
        reply
    }

    /// Sends a request and reads one response.
    #[track_caller]
    pub fn request(&mut self, request: &Value) -> Value {
        self.send(request).expect("send a request");
        self.recv().expect("a response")
    }

    /// Handshakes, then sends one request and reads its response.
    #[track_caller]
    pub fn hello_then(mut self, request: &Value) -> Value {
        self.hello();
        self.request(request)
    }
}
