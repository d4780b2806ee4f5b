//! One function per subcommand: build the request, call the agent, print the answer. Each returns
//! `Ok(())` for exit 0 or a [`CliError`] that `main` renders once. The one-shot commands (`ping`,
//! `want`, `complete`, `fail`, `ready`) are plain functions that send their one request through
//! [`one_shot`] (no async runtime on Unix); the others are async and run on `main`'s runtime.

use crate::args::{Format, Until};
use crate::failure::{code, CliError};
use crate::render;
use std::ffi::OsString;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use unitsync_core::{GraphFormat, WaitTarget};
use unitsync_ipc::client::{Delivery, Resumable};
use unitsync_ipc::protocol::{Request, Response, UnitInfo};
use unitsync_ipc::Client;

/// Set by `unitsync run` for each script: units started under it are failed if the script exits
/// without finishing them.
pub const OWNER_ENV: &str = "UNITSYNC_OWNER";

/// This process's start claim, `<owner>#<invocation>`: the owner from [`OWNER_ENV`] (may be empty)
/// and an invocation unique to this process (its pid and start time), the same for every retry, so
/// that a `start` resent after an agent restart is recognised if the old agent had applied it.
fn claim() -> String {
    static INVOCATION: OnceLock<String> = OnceLock::new();
    let invocation = INVOCATION.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("{}-{nanos}", std::process::id())
    });
    let owner = std::env::var(OWNER_ENV).unwrap_or_default();
    format!("{owner}#{invocation}")
}

/// The instant `timeout` runs out, counted from now (`None`: never, also for a timeout too long to
/// represent).
fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// Follows a blocking request (`start`, `wait`, `watch`) to its end through agent restarts: the
/// one retry loop of the CLI (the reconnecting itself is [`Resumable`]'s). Hands each answer to
/// `on_response` until it returns `Some`; says once per outage, on stderr, that the agent was lost,
/// unless `quiet`.
async fn follow<T>(
    session: &mut Resumable,
    socket: &Path,
    quiet: bool,
    mut on_response: impl FnMut(&mut Resumable, Response) -> Result<Option<T>, CliError>,
) -> Result<T, CliError> {
    loop {
        match session.recv().await? {
            Delivery::Lost(_) => {
                if !quiet {
                    eprintln!(
                        "unitsync: lost the agent at {}; reconnecting…",
                        socket.display()
                    );
                }
            }
            Delivery::Response(response) => {
                if let Some(done) = on_response(session, response)? {
                    return Ok(done);
                }
            }
        }
    }
}

pub(crate) fn unexpected(response: Response) -> CliError {
    CliError::Ipc(unitsync_ipc::IpcError::Unexpected(format!("{response:?}")))
}

fn millis(timeout: Option<Duration>) -> Option<u64> {
    timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
}

/// Sends `request` on a connection of its own and returns the answer: on Unix through a
/// [`BlockingClient`](unitsync_ipc::client::BlockingClient), without an async runtime (most of
/// what a one-shot command costs beyond starting the process would be the runtime's set-up);
/// elsewhere through a [`Client`] on a small runtime.
pub fn one_shot(socket: &Path, request: &Request) -> Result<Response, CliError> {
    #[cfg(unix)]
    {
        Ok(unitsync_ipc::client::BlockingClient::ask(socket, request)?)
    }
    #[cfg(not(unix))]
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(CliError::no_runtime)?;
        runtime.block_on(async {
            let mut client = Client::connect(socket).await?;
            Ok(client.request(request).await?)
        })
    }
}

pub fn ping(socket: &Path, json: bool) -> Result<(), CliError> {
    match one_shot(socket, &Request::Ping)? {
        Response::Pong { agent } if json => render::json(&agent),
        Response::Pong { agent } => render::ping(&agent),
        other => return Err(unexpected(other)),
    }
    Ok(())
}

pub fn want(
    socket: &Path,
    unit: String,
    dependencies: Vec<String>,
    json: bool,
) -> Result<(), CliError> {
    let request = Request::Want {
        unit: unit.clone(),
        dependencies,
    };
    match one_shot(socket, &request)? {
        Response::Wanted { registered, added } => {
            if json {
                render::json(&serde_json::json!({
                    "unit": unit, "registered": registered, "added": added,
                }));
            }
            Ok(())
        }
        Response::Refused { error } => Err(CliError::Refused(error)),
        other => Err(unexpected(other)),
    }
}

/// Sends `start` on `client` and follows it to its final answer, through agent restarts.
async fn start_on(
    client: Client,
    unit: &str,
    timeout: Option<Duration>,
    quiet: bool,
) -> Result<(), CliError> {
    let socket = client.path().to_owned();
    let request = Request::Start {
        unit: unit.to_owned(),
        timeout_ms: millis(timeout),
        claim: Some(claim()),
    };
    let mut session = Resumable::new(client, request, deadline(timeout));
    follow(&mut session, &socket, quiet, |_, response| match response {
        Response::Blocked { unmet } => {
            if !quiet {
                eprintln!("unitsync: {unit} waits for {}", render::unmet_list(&unmet));
            }
            Ok(None)
        }
        Response::Started => Ok(Some(())),
        Response::TimedOut { unmet, .. } => Err(CliError::TimedOut(format!(
            "timed out after {} waiting to start `{unit}`; still unmet: {}",
            render::duration(timeout.unwrap_or_default()),
            render::unmet_list(&unmet)
        ))),
        Response::Refused { error } => Err(CliError::Refused(error)),
        other => Err(unexpected(other)),
    })
    .await
}

pub async fn start(
    socket: &Path,
    unit: String,
    timeout: Option<Duration>,
    quiet: bool,
) -> Result<(), CliError> {
    let client = Client::connect(socket).await?;
    start_on(client, &unit, timeout, quiet).await
}

fn complete_request(unit: &str) -> Request {
    Request::Complete {
        unit: unit.to_owned(),
    }
}

/// What `complete` makes of the agent's answer.
fn completed(response: Response) -> Result<(), CliError> {
    match response {
        Response::Completed => Ok(()),
        Response::Refused { error } => Err(CliError::Refused(error)),
        other => Err(unexpected(other)),
    }
}

async fn complete_on(client: &mut Client, unit: &str) -> Result<(), CliError> {
    completed(client.request(&complete_request(unit)).await?)
}

pub fn complete(socket: &Path, unit: String) -> Result<(), CliError> {
    completed(one_shot(socket, &complete_request(&unit))?)
}

fn fail_request(unit: &str, reason: Option<String>) -> Request {
    Request::Fail {
        unit: unit.to_owned(),
        reason,
    }
}

/// `fail` on an open connection (for `exec`), printing as `fail` without `--json` does.
async fn fail_on(client: &mut Client, unit: &str, reason: String) -> Result<(), CliError> {
    let response = client.request(&fail_request(unit, Some(reason))).await?;
    failed(unit, false, response)
}

/// What `fail` makes of the agent's answer.
fn failed(unit: &str, json: bool, response: Response) -> Result<(), CliError> {
    match response {
        Response::Failed { propagated } => {
            if json {
                render::json(&serde_json::json!({ "unit": unit, "propagated": propagated }));
            } else if !propagated.is_empty() {
                let names: Vec<&str> = propagated.iter().map(|n| n.as_str()).collect();
                eprintln!(
                    "unitsync: {unit} failed; so did what waited for it: {}",
                    names.join(", ")
                );
            }
            Ok(())
        }
        Response::Refused { error } => Err(CliError::Refused(error)),
        other => Err(unexpected(other)),
    }
}

pub fn fail(
    socket: &Path,
    unit: String,
    reason: Option<String>,
    json: bool,
) -> Result<(), CliError> {
    failed(&unit, json, one_shot(socket, &fail_request(&unit, reason))?)
}

pub fn ready(socket: &Path, unit: String, json: bool) -> Result<(), CliError> {
    match one_shot(socket, &Request::Ready { unit: unit.clone() })? {
        Response::Ready { ready } => {
            if json {
                render::json(&serde_json::json!({ "unit": unit, "ready": ready }));
            }
            if ready {
                Ok(())
            } else {
                Err(CliError::NotReady)
            }
        }
        Response::Refused { error } => Err(CliError::Refused(error)),
        other => Err(unexpected(other)),
    }
}

pub async fn wait(
    socket: &Path,
    unit: String,
    until: Until,
    timeout: Option<Duration>,
) -> Result<(), CliError> {
    let client = Client::connect(socket).await?;
    let target = match until {
        Until::Started => WaitTarget::Started,
        Until::Completed => WaitTarget::Completed,
    };
    let request = Request::Wait {
        unit: unit.clone(),
        until: target,
        timeout_ms: millis(timeout),
    };
    let mut session = Resumable::new(client, request, deadline(timeout));
    follow(&mut session, socket, false, |_, response| match response {
        Response::Reached { .. } => Ok(Some(())),
        Response::UnitFailed { failure } => Err(CliError::UnitFailed {
            unit: unit.clone(),
            failure,
        }),
        Response::TimedOut { state, .. } => Err(CliError::TimedOut(format!(
            "timed out after {} waiting for `{unit}` to be {}; it is {state}",
            render::duration(timeout.unwrap_or_default()),
            match until {
                Until::Started => "started",
                Until::Completed => "completed",
            }
        ))),
        Response::Refused { error } => Err(CliError::Refused(error)),
        other => Err(unexpected(other)),
    })
    .await
}

pub async fn status(socket: &Path, unit: String, json: bool) -> Result<(), CliError> {
    let mut client = Client::connect(socket).await?;
    match client.request(&Request::Status { unit }).await? {
        Response::Status { unit } if json => render::json(&unit),
        Response::Status { unit } => render::status(&unit),
        Response::Refused { error } => return Err(CliError::Refused(error)),
        other => return Err(unexpected(other)),
    }
    Ok(())
}

/// Every unit the agent knows.
pub async fn fetch_units(client: &mut Client) -> Result<Vec<UnitInfo>, CliError> {
    match client.request(&Request::List).await? {
        Response::List { units } => Ok(units),
        other => Err(unexpected(other)),
    }
}

pub async fn list(socket: &Path, all: bool, json: bool) -> Result<(), CliError> {
    let mut client = Client::connect(socket).await?;
    let units = fetch_units(&mut client).await?;
    let shown: Vec<&UnitInfo> = units
        .iter()
        .filter(|u| all || u.state != unitsync_core::UnitState::Unknown)
        .collect();
    if json {
        render::json(&serde_json::json!({ "units": shown }));
    } else {
        render::list(&shown);
    }
    Ok(())
}

pub async fn graph(socket: &Path, format: Format) -> Result<(), CliError> {
    let mut client = Client::connect(socket).await?;
    let format = match format {
        Format::Dot => GraphFormat::Dot,
        Format::Mermaid => GraphFormat::Mermaid,
    };
    match client.request(&Request::Graph { format }).await? {
        Response::Graph { text } => render::emit(&text),
        other => return Err(unexpected(other)),
    }
    Ok(())
}

pub async fn watch(socket: &Path, from: Option<u64>, json: bool) -> Result<(), CliError> {
    let client = Client::connect(socket).await?;
    let mut session = Resumable::new(client, Request::Watch { from_seq: from }, None);
    follow(&mut session, socket, false, |session, response| {
        match response {
            Response::Event { event } => {
                // After an agent restart, carry on right after the last event printed.
                session.resend_as(Request::Watch {
                    from_seq: Some(event.seq + 1),
                });
                if json {
                    render::json(&event);
                } else {
                    render::event(&event);
                }
            }
            Response::Lagged { missed } if json => {
                render::json(&serde_json::json!({ "lagged": missed }))
            }
            Response::Lagged { missed } => {
                eprintln!("unitsync: fell behind the agent; {missed} events were skipped")
            }
            // A closed stdout (`| head`) ends the watch quietly, inside `render::emit`.
            other => return Err(unexpected(other)),
        }
        Ok(None::<()>)
    })
    .await
}

pub async fn exec(
    socket: &Path,
    unit: String,
    after: Vec<String>,
    timeout: Option<Duration>,
    quiet: bool,
    command: Vec<OsString>,
) -> Result<(), CliError> {
    let mut client = Client::connect(socket).await?;
    if !after.is_empty() {
        let request = Request::Want {
            unit: unit.clone(),
            dependencies: after,
        };
        match client.request(&request).await? {
            Response::Wanted { .. } => {}
            Response::Refused { error } => return Err(CliError::Refused(error)),
            other => return Err(unexpected(other)),
        }
    }
    start_on(client, &unit, timeout, quiet).await?;
    // No connection is held while CMD runs: the agent may restart meanwhile, and the result is
    // reported on a connection of its own.
    let (program, args) = command.split_first().expect("clap requires CMD");
    let spawned = tokio::process::Command::new(program)
        .args(args)
        .env("UNITSYNC_UNIT", &unit)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => {
            let reason = format!("cannot run {}: {error}", program.to_string_lossy());
            let mut client = Client::connect(socket).await?;
            fail_on(&mut client, &unit, reason.clone()).await?;
            return Err(CliError::Other {
                code: 127,
                message: reason,
            });
        }
    };
    let status = child.wait().await.map_err(|error| CliError::Other {
        code: code::REFUSED,
        message: format!("cannot wait for {}: {error}", program.to_string_lossy()),
    })?;
    let mut client = Client::connect(socket).await?;
    if status.success() {
        complete_on(&mut client, &unit).await?;
        return Ok(());
    }
    let (reason, exit) = describe_exit(&status);
    fail_on(&mut client, &unit, reason).await?;
    Err(CliError::Exit(exit))
}

/// The failure reason and the exit code to pass on for an unsuccessful child.
fn describe_exit(status: &std::process::ExitStatus) -> (String, i32) {
    if let Some(code) = status.code() {
        return (format!("exited with status {code}"), code);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return (format!("killed by signal {signal}"), 128 + signal);
        }
    }
    ("exited abnormally".to_owned(), 1)
}

pub async fn timeline(socket: &Path, json: bool) -> Result<(), CliError> {
    let mut client = Client::connect(socket).await?;
    let units = fetch_units(&mut client).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let timeline = crate::timeline::Timeline::build(&units, None, now);
    if json {
        render::json(&timeline);
    } else {
        render::emit(&timeline.render());
    }
    Ok(())
}
