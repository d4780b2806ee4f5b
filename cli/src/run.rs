//! `unitsync run SCRIPT...`: the project's main job. Starts an agent in-process on a private socket
//! (or uses the live agent at `--socket`), launches every script at once with `UNITSYNC_SOCKET` set
//! and this `unitsync` on `PATH`, shows their output and the live state, and ends with the timeline
//! and the critical chain.
//!
//! A script that exits without completing a unit it started gets that unit failed (`abandon`, keyed
//! by the `UNITSYNC_OWNER` token each script inherits), so its dependents fail fast instead of
//! hanging. Ctrl-C (or `--timeout`) stops every script's process group — SIGINT, then SIGTERM, then
//! SIGKILL, each after a grace period — and the summary is still printed. The run exits non-zero,
//! naming why, if any script exited non-zero, any unit failed, or any unit was left unfinished.
//!
//! This module orchestrates; scripts are launched by `scripts`, the screen is `display`'s, and the
//! summary is computed by `crate::timeline`.

mod display;
mod scripts;

use crate::commands::{fetch_units, unexpected};
use crate::failure::{code, CliError};
use crate::timeline::Timeline;
use display::Feed;
use scripts::{Ending, Environment, Script, Stop};
use serde::Serialize;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, watch};
use unitsync_core::Graph;
use unitsync_ipc::protocol::{Request, Response};
use unitsync_ipc::{Agent, Client};

/// How long scripts get to stop after each escalation (SIGINT → SIGTERM → SIGKILL).
const GRACE: Duration = Duration::from_secs(3);

/// What the user asked for.
pub struct RunOptions {
    /// The scripts, in the order given.
    pub scripts: Vec<PathBuf>,
    /// Use (or create) the agent at this socket instead of a private one.
    pub socket: Option<PathBuf>,
    /// Stop everything after this long.
    pub timeout: Option<Duration>,
    /// Print the timeline as JSON on stdout (script output then goes to stderr).
    pub json: bool,
}

/// One script's line in the JSON report.
#[derive(Debug, Serialize)]
struct ScriptReport {
    script: String,
    path: PathBuf,
    /// `status 0`, `signal 2`, `not launched`.
    ended: String,
    exit_code: i32,
}

/// The whole JSON report.
#[derive(Debug, Serialize)]
struct RunReport<'a> {
    ok: bool,
    /// Why the run is not ok, one sentence each.
    problems: &'a [String],
    interrupted: bool,
    timed_out: bool,
    scripts: Vec<ScriptReport>,
    #[serde(flatten)]
    timeline: &'a Timeline,
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Runs the scripts on a multi-threaded runtime (the in-process agent serves on it too).
pub fn run(options: RunOptions) -> Result<(), CliError> {
    for path in &options.scripts {
        if !path.is_file() {
            return Err(CliError::Other {
                code: code::REFUSED,
                message: format!("no such script: {}", path.display()),
            });
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(CliError::no_runtime)?;
    runtime.block_on(run_async(options))
}

/// The agent a run talks to: its own, or one that was already there.
struct AgentHandle {
    socket: PathBuf,
    /// Stops our in-process agent; `None` for a live agent we merely joined.
    stop: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
    /// Keeps the private socket directory until the agent is gone.
    _private_dir: Option<tempfile::TempDir>,
}

impl AgentHandle {
    async fn obtain(socket: Option<&Path>) -> Result<Self, CliError> {
        let (socket, private_dir) = match socket {
            Some(path) => {
                if Client::connect(path).await.is_ok() {
                    return Ok(Self {
                        socket: path.to_owned(),
                        stop: None,
                        _private_dir: None,
                    });
                }
                (path.to_owned(), None)
            }
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("unitsync-run-")
                    .tempdir()
                    .map_err(|error| CliError::Other {
                        code: code::REFUSED,
                        message: format!("cannot create a private socket directory: {error}"),
                    })?;
                (dir.path().join("agent.sock"), Some(dir))
            }
        };
        let agent = Agent::bind(&socket, Graph::new())
            .await
            .map_err(|error| CliError::Ipc(error.into()))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(agent.serve_until(async {
            let _ = stopped.await;
        }));
        Ok(Self {
            socket,
            stop: Some((stop, serving)),
            _private_dir: private_dir,
        })
    }

    async fn shut_down(self) {
        if let Some((stop, serving)) = self.stop {
            let _ = stop.send(());
            let _ = serving.await;
        }
    }
}

async fn run_async(options: RunOptions) -> Result<(), CliError> {
    let origin_unix_ms = unix_ms(SystemTime::now());
    let agent = AgentHandle::obtain(options.socket.as_deref()).await?;
    let mut control = Client::connect(&agent.socket).await?;
    let scripts = scripts::name_scripts(&options.scripts);

    let color = std::io::stdout().is_terminal()
        && !options.json
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    let live = std::io::stderr().is_terminal() && (options.json || std::io::stdout().is_terminal());
    let (feed, feed_rx) = mpsc::unbounded_channel();
    let screen = tokio::spawn(display::show(
        display::Settings {
            names: scripts.iter().map(|s| s.name.clone()).collect(),
            color,
            live,
            output_to_stderr: options.json,
        },
        feed_rx,
    ));
    let watcher = if live {
        Some(tokio::spawn(follow_events(
            agent.socket.clone(),
            feed.clone(),
        )))
    } else {
        None
    };

    let environment = Environment {
        socket: agent.socket.clone(),
        owner_prefix: format!("run-{}-{origin_unix_ms}/", std::process::id()),
        bin_dir: std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_owned)),
        // The live area shows what each unit waits for: the scripts need not say it too.
        quiet: live,
    };
    let (stop, stop_rx) = watch::channel(Stop::No);
    let (ended, mut ended_rx) = mpsc::unbounded_channel();
    let (lines, mut lines_rx) = mpsc::unbounded_channel();
    {
        let feed = feed.clone();
        tokio::spawn(async move {
            while let Some(line) = lines_rx.recv().await {
                let _ = feed.send(Feed::Line(line));
            }
        });
    }
    let environment = std::sync::Arc::new(environment);
    for (index, script) in scripts.iter().enumerate() {
        let (script, environment) = (script.clone(), std::sync::Arc::clone(&environment));
        let (lines, stop_rx, ended) = (lines.clone(), stop_rx.clone(), ended.clone());
        tokio::spawn(async move {
            let outcome = scripts::supervise(index, script, &environment, lines, stop_rx).await;
            let _ = ended.send((index, outcome));
        });
    }
    drop((lines, ended));

    let mut endings: Vec<Option<Ending>> = vec![None; scripts.len()];
    let mut remaining = scripts.len();
    let mut interrupted = false;
    let mut timed_out = false;
    let mut escalation: Option<tokio::time::Instant> = None;
    let deadline = options.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    while remaining > 0 {
        tokio::select! {
            Some((index, (ending, error))) = ended_rx.recv() => {
                remaining -= 1;
                endings[index] = Some(ending);
                let script = &scripts[index];
                let text = match error {
                    Some(error) => format!("could not run {}: {error}", script.path.display()),
                    None => format!("exited with {}", ending.describe()),
                };
                let _ = feed.send(Feed::Note { script: index, text });
                abandon(&mut control, &environment, script, index, ending, &feed).await?;
            }
            result = &mut ctrl_c, if !interrupted => {
                if result.is_ok() {
                    interrupted = true;
                    escalate(&stop, &mut escalation, Stop::Interrupt);
                }
            }
            () = sleep_until(deadline), if !timed_out && deadline.is_some() => {
                timed_out = true;
                escalate(&stop, &mut escalation, Stop::Terminate);
            }
            () = sleep_until(escalation), if escalation.is_some() => {
                let next = match *stop.borrow() {
                    Stop::No | Stop::Interrupt => Stop::Terminate,
                    Stop::Terminate | Stop::Kill => Stop::Kill,
                };
                escalate(&stop, &mut escalation, next);
            }
        }
    }

    let units = fetch_units(&mut control).await?;
    let timeline = Timeline::build(&units, Some(origin_unix_ms), unix_ms(SystemTime::now()));
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    drop(feed);
    let _ = screen.await;
    drop(control);
    agent.shut_down().await;

    let endings: Vec<Ending> = endings
        .into_iter()
        .map(|e| e.unwrap_or(Ending::NotLaunched))
        .collect();
    let mut problems = Vec::new();
    if interrupted {
        problems.push("interrupted: every script was stopped".to_owned());
    }
    if timed_out {
        problems.push(format!(
            "timed out after {}: every script was stopped",
            crate::render::duration(options.timeout.unwrap_or_default())
        ));
    }
    for (script, ending) in scripts.iter().zip(&endings) {
        if !ending.success() {
            problems.push(format!(
                "script {} exited with {}",
                script.name,
                ending.describe()
            ));
        }
    }
    for line in timeline.problems() {
        let why = line
            .failure
            .as_deref()
            .map(|reason| format!(": {reason}"))
            .unwrap_or_default();
        problems.push(format!(
            "unit {} {}{why}",
            line.unit,
            match line.outcome {
                crate::timeline::Outcome::Failed => "failed",
                crate::timeline::Outcome::Unfinished => "was started and never finished",
                crate::timeline::Outcome::NotStarted => "was registered and never started",
                _ => "was waited for but no script registered it",
            }
        ));
    }

    if options.json {
        let report = RunReport {
            ok: problems.is_empty(),
            problems: &problems,
            interrupted,
            timed_out,
            scripts: scripts
                .iter()
                .zip(&endings)
                .map(|(script, ending)| ScriptReport {
                    script: script.name.clone(),
                    path: script.path.clone(),
                    ended: ending.describe(),
                    exit_code: ending.code(),
                })
                .collect(),
            timeline: &timeline,
        };
        crate::render::json(&report);
    } else {
        println!();
        print!("{}", timeline.render());
    }

    if problems.is_empty() {
        return Ok(());
    }
    let exit = if interrupted {
        130
    } else if timed_out {
        code::TIMED_OUT
    } else {
        code::REFUSED
    };
    Err(CliError::Other {
        code: exit,
        message: format!("run failed:\n  {}", problems.join("\n  ")),
    })
}

/// Fails every unit the script started and did not finish, and says so on the screen.
async fn abandon(
    control: &mut Client,
    environment: &Environment,
    script: &Script,
    index: usize,
    ending: Ending,
    feed: &mpsc::UnboundedSender<Feed>,
) -> Result<(), CliError> {
    let request = Request::Abandon {
        owner: environment.owner(script),
        reason: format!("script exited ({}) without completing", ending.describe()),
    };
    match control.request(&request).await? {
        Response::Abandoned { failed } if failed.is_empty() => Ok(()),
        Response::Abandoned { failed } => {
            let names: Vec<&str> = failed.iter().map(|n| n.as_str()).collect();
            let _ = feed.send(Feed::Note {
                script: index,
                text: format!(
                    "left {} started but not completed: failed {}",
                    names.join(", "),
                    if names.len() == 1 { "it" } else { "them" }
                ),
            });
            Ok(())
        }
        other => Err(unexpected(other)),
    }
}

/// Raises the stop level and restarts the grace period.
fn escalate(
    stop: &watch::Sender<Stop>,
    escalation: &mut Option<tokio::time::Instant>,
    level: Stop,
) {
    stop.send_if_modified(|current| {
        let raise = level > *current;
        if raise {
            *current = level;
        }
        raise
    });
    *escalation = (level < Stop::Kill).then(|| tokio::time::Instant::now() + GRACE);
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Feeds the live view: the graph as it is, then every event as it happens.
async fn follow_events(socket: PathBuf, feed: mpsc::UnboundedSender<Feed>) {
    let Ok(mut events) = Client::connect(&socket).await else {
        return;
    };
    if events
        .send(&Request::Watch { from_seq: None })
        .await
        .is_err()
    {
        return;
    }
    if let Ok(mut snapshot) = Client::connect(&socket).await {
        if let Ok(units) = fetch_units(&mut snapshot).await {
            let _ = feed.send(Feed::Units(units));
        }
    }
    loop {
        match events.recv().await {
            Ok(Response::Event { event }) => {
                if feed.send(Feed::Event(event.kind)).is_err() {
                    return;
                }
            }
            Ok(Response::Lagged { .. }) => {
                // Fell behind the agent's buffer: catch up from a fresh snapshot.
                if let Ok(mut snapshot) = Client::connect(&socket).await {
                    if let Ok(units) = fetch_units(&mut snapshot).await {
                        let _ = feed.send(Feed::Units(units));
                    }
                }
            }
            _ => return,
        }
    }
}
