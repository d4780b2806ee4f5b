//! The command line, as `clap` derive types: every subcommand, its arguments and its help text.
//! Parsing only: nothing here talks to the agent or prints.

use clap::builder::FalseyValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// Put the scripts of a dev workspace in order.
///
/// Each script says what it waits for (`unitsync want claude git`), blocks until that is done
/// (`unitsync start claude`) and says when it is done (`unitsync complete claude`). A small agent on
/// a local socket holds the dependency graph and wakes waiters the instant they may go.
#[derive(Debug, Parser)]
#[command(
    name = "unitsync",
    version,
    propagate_version = true,
    max_term_width = 100
)]
#[command(
    after_help = "Exit codes: 0 ok · 1 refused (bad state, bad name, cycle) · 2 usage · \
3 a dependency (or the waited-for unit) failed · 4 timed out · 5 agent unreachable or protocol mismatch"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where the agent's socket is.
#[derive(Debug, Clone, Args)]
pub struct SocketArg {
    /// The agent's socket [default: $XDG_RUNTIME_DIR/unitsync/agent.sock, else <tmp>/unitsync-<uid>/agent.sock]
    #[arg(long, env = "UNITSYNC_SOCKET", value_name = "PATH", global = true)]
    pub socket: Option<PathBuf>,
}

/// `--json`.
#[derive(Debug, Clone, Copy, Args)]
pub struct JsonArg {
    /// Print one JSON document on stdout instead of text
    #[arg(long)]
    pub json: bool,
}

/// A duration such as `300ms`, `5s`, `2m`, `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|error| format!("{error}; write a duration like 300ms, 5s, 2m or 1h30m"))
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent in the foreground on the socket.
    ///
    /// Refuses to start if a live agent answers on the socket; replaces a stale socket file.
    /// Journals every change to its state file and replays it when it starts again, so units
    /// survive a restart or a crash (a change is acknowledged only once it is in the file);
    /// --no-state keeps the units in memory only. Stops cleanly on Ctrl-C / SIGTERM and removes its
    /// socket. Logs go to stderr, filtered by UNITSYNC_LOG (or RUST_LOG), e.g. UNITSYNC_LOG=debug.
    #[command(
        after_help = "Example:\n  unitsync agent &\n  unitsync agent --socket /tmp/ws.sock --state ~/ws.journal --sync\n  unitsync agent --no-state\n  unitsync agent --threads 4"
    )]
    Agent {
        #[command(flatten)]
        socket: SocketArg,
        /// How many events a slow `watch` may fall behind before it is told it missed some
        #[arg(long, default_value_t = unitsync_core::DEFAULT_EVENT_CAPACITY, value_name = "EVENTS")]
        event_buffer: usize,
        /// The state file (journal) [env: UNITSYNC_STATE; default: the socket path with `.journal`
        /// appended]
        // The environment variable is read in `main`, so that it never conflicts with --no-state.
        #[arg(long, value_name = "FILE")]
        state: Option<PathBuf>,
        /// Discard the state file's contents and start with no units
        #[arg(long)]
        fresh: bool,
        /// Flush every change to disk (fdatasync) before acknowledging it, so it survives a power
        /// loss too; concurrent changes share one flush
        #[arg(long)]
        sync: bool,
        /// Keep no state file: the units live in memory only and are gone when the agent stops or
        /// crashes (changes are acknowledged without waiting for a disk write)
        #[arg(long, conflicts_with_all = ["state", "fresh", "sync"])]
        no_state: bool,
        /// Worker threads serving connections [default: half the CPUs, at least 1]. The scripts
        /// the agent serves run on the same machine and need CPU to send each request; more
        /// threads than that compete with them
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
        threads: Option<u16>,
    },
    /// Check the agent is alive: version, protocol, uptime, unit count.
    #[command(after_help = "Example:\n  unitsync ping")]
    Ping {
        #[command(flatten)]
        socket: SocketArg,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Declare that UNIT waits for every DEP to complete (registers UNIT if new).
    ///
    /// All or nothing: a bad name, a self-dependency or an edge that would close a cycle adds
    /// nothing. A DEP nobody registered yet is fine (it is `unknown` until a script registers it).
    /// Repeating an edge is a no-op. Refused once UNIT has started or finished.
    #[command(after_help = "Example:\n  unitsync want claude git npm-install")]
    Want {
        /// The waiting unit
        unit: String,
        /// What it waits for
        #[arg(required = true, value_name = "DEP")]
        dependencies: Vec<String>,
        #[command(flatten)]
        socket: SocketArg,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Block until UNIT is ready, then mark it started (registers UNIT if new).
    ///
    /// The readiness check and the start are one atomic step. While it waits it prints, on stderr,
    /// which dependencies are unmet and their states, again whenever that changes. The agent wakes
    /// it the instant the last dependency completes: nothing polls.
    #[command(after_help = "Example:\n  unitsync start claude --timeout 10m && claude")]
    Start {
        /// The unit to start
        unit: String,
        /// Give up after this long (exit 4), e.g. 300ms, 5s, 10m
        #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
        timeout: Option<Duration>,
        /// Do not print what it waits for (also: env UNITSYNC_QUIET=1)
        #[arg(long, short, env = "UNITSYNC_QUIET", hide_env = true, value_parser = FalseyValueParser::new())]
        quiet: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Mark a started UNIT completed; wakes every dependent that became ready.
    #[command(after_help = "Example:\n  unitsync complete git")]
    Complete {
        /// The unit
        unit: String,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Mark UNIT failed; every unit that depends on it and has not started fails too.
    #[command(
        after_help = "Example:\n  unitsync fail git --reason \"clone: authentication failed\""
    )]
    Fail {
        /// The unit
        unit: String,
        /// Why (shown to everyone waiting on it)
        #[arg(long, short)]
        reason: Option<String>,
        #[command(flatten)]
        socket: SocketArg,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Exit 0 if every dependency of UNIT is completed, 1 if not.
    #[command(after_help = "Example:\n  unitsync ready claude && echo go")]
    Ready {
        /// The unit
        unit: String,
        #[command(flatten)]
        socket: SocketArg,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Wait for another unit to start or complete, without being a unit yourself.
    ///
    /// Exit 0 when it gets there, 3 if it fails, 4 on timeout. A name no script registered yet is
    /// waited for as well.
    #[command(after_help = "Example:\n  unitsync wait dev-server --until started --timeout 1m")]
    Wait {
        /// The unit to wait for
        unit: String,
        /// The state to wait for
        #[arg(long, value_enum, default_value_t = Until::Completed)]
        until: Until,
        /// Give up after this long (exit 4)
        #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
        timeout: Option<Duration>,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Show one unit: state, readiness, dependencies, dependents, times, failure reason.
    #[command(after_help = "Example:\n  unitsync status claude")]
    Status {
        /// The unit
        unit: String,
        #[command(flatten)]
        socket: SocketArg,
        #[command(flatten)]
        json: JsonArg,
    },
    /// List every registered unit with its state, readiness and times.
    #[command(after_help = "Example:\n  unitsync list --all")]
    List {
        /// Include units that are only depended on (unknown)
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        socket: SocketArg,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Print the graph (DOT or Mermaid) with names and states; unknown units are dashed.
    #[command(
        after_help = "Example:\n  unitsync graph | dot -Tsvg > graph.svg\n  unitsync graph --format mermaid"
    )]
    Graph {
        /// Output syntax
        #[arg(long, value_enum, default_value_t = Format::Dot)]
        format: Format,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Stream every event (registered, dependency added, started, completed, failed) as it happens.
    #[command(after_help = "Example:\n  unitsync watch --json | jq .")]
    Watch {
        /// Start from this event sequence number, if the agent still has it
        #[arg(long, value_name = "SEQ")]
        from: Option<u64>,
        #[command(flatten)]
        socket: SocketArg,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Run CMD as UNIT once its --after dependencies completed; its exit code completes or fails UNIT.
    ///
    /// Wants every --after DEP, starts UNIT (waiting like `start`, and saying what for), runs CMD,
    /// then completes UNIT on exit 0 or fails it with the exit status, so its dependents fail too.
    /// Exits with CMD's exit code (128+N if a signal N killed it; 127 if CMD cannot be run).
    #[command(after_help = "Example:\n  unitsync exec npm-install --after git -- npm ci")]
    Exec {
        /// The unit CMD runs as
        unit: String,
        /// A dependency to wait for (repeatable)
        #[arg(long = "after", value_name = "DEP")]
        after: Vec<String>,
        /// Give up waiting after this long (exit 4); CMD's own run time is not limited
        #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
        timeout: Option<Duration>,
        /// Do not print what it waits for (also: env UNITSYNC_QUIET=1)
        #[arg(long, short, env = "UNITSYNC_QUIET", hide_env = true, value_parser = FalseyValueParser::new())]
        quiet: bool,
        #[command(flatten)]
        socket: SocketArg,
        /// The command and its arguments
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<std::ffi::OsString>,
    },
    /// Run a workspace's scripts at once, in the order their units demand; show it live; explain it.
    ///
    /// Starts a private agent (or joins the live one at --socket / UNITSYNC_SOCKET), launches every
    /// SCRIPT at once with UNITSYNC_SOCKET set and this unitsync on PATH, prefixes each output line
    /// with the script's name, and shows on a terminal which units run and what the others wait for.
    /// At the end it prints per unit how long it waited and ran and how it ended, and the critical
    /// chain: the units that determined the total time. A script that exits without completing a
    /// unit it started has that unit failed, so whatever waits for it fails fast instead of hanging.
    /// Ctrl-C stops every script and still prints the summary.
    ///
    /// Exit 0 if every script exited 0 and every unit completed; otherwise non-zero, naming why
    /// (4 if --timeout stopped it, 130 if interrupted).
    #[command(
        after_help = "Example:\n  unitsync run examples/workspace/*.sh\n  unitsync run --json ws/*.sh > timeline.json"
    )]
    Run {
        /// The scripts to run (`.sh` and non-executable files run with `sh`)
        #[arg(required = true, value_name = "SCRIPT")]
        scripts: Vec<PathBuf>,
        /// Stop every script after this long (exit 4), e.g. 90s, 10m
        #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
        timeout: Option<Duration>,
        #[command(flatten)]
        socket: SocketArg,
        /// Print the timeline as one JSON document on stdout (script output goes to stderr)
        #[arg(long)]
        json: bool,
    },
    /// Show what has happened so far: per unit waited, ran, result; and the critical chain.
    #[command(
        after_help = "Example:\n  unitsync timeline\n  unitsync timeline --json | jq .critical_chain"
    )]
    Timeline {
        #[command(flatten)]
        socket: SocketArg,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Print a shell completion script.
    #[command(
        after_help = "Example:\n  unitsync completions bash > ~/.local/share/bash-completion/completions/unitsync"
    )]
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
}

/// `wait --until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Until {
    /// Started (or already completed)
    Started,
    /// Completed
    Completed,
}

/// `graph --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Graphviz DOT
    Dot,
    /// Mermaid flowchart
    Mermaid,
}
