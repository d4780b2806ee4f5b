//! `unitsync`: the command-line front end. Parses arguments (`args`), calls the agent through
//! `unitsync-ipc` (`commands`), prints (`render`), and turns failures into one message and one exit
//! code (`failure`). It holds no graph or protocol logic of its own.
//!
//! On Unix the process starts at a C `main` of its own (`no_main`), not at std's runtime start-up:
//! that start-up reads `/proc/self/maps` to place a guard page for the main thread's stack-overflow
//! message, a fifth of a one-shot command's user-space instructions and about 0.1 ms. What it does
//! that matters here is done in [`main`]: `SIGPIPE` ignored (a closed pipe is an error, not a
//! kill; children still get the default), a panic caught and turned into exit code 101, and stdout
//! flushed on the way out. What is given up: a stack overflow ends in a plain `SIGSEGV` instead of
//! std's message.

#![cfg_attr(all(unix, not(test)), no_main)]

mod agent;
mod args;
mod commands;
mod failure;
mod render;
mod run;
mod timeline;

use args::{Cli, Command, SocketArg};
use clap::{CommandFactory, Parser};
use failure::CliError;
use std::path::PathBuf;

fn socket_path(socket: &SocketArg) -> PathBuf {
    socket
        .socket
        .clone()
        .unwrap_or_else(unitsync_ipc::socket::default_socket_path)
}

/// The entry point on Unix (see the module docs): what std's start-up would have done that this
/// program needs, then [`run`], then `exit` with its code (which flushes stdout).
#[cfg(all(unix, not(test)))]
#[no_mangle]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    // SAFETY: setting a signal's disposition to "ignore" has no preconditions; std's own start-up
    // does the same before `main`.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    // A panic must not unwind out of this `extern "C"` function: catch it (its message has been
    // printed by the panic hook) and exit as std does after a panic in `main`.
    let code = std::panic::catch_unwind(run).unwrap_or(101);
    std::process::exit(code)
}

/// Elsewhere (and in the unit-test build, whose harness brings its own entry point) std's start-up
/// runs as usual.
#[cfg(any(not(unix), test))]
fn main() {
    std::process::exit(run())
}

/// The program: parses the command line, runs the command, prints its failure; returns the exit
/// code.
fn run() -> i32 {
    let command = Cli::parse().command;
    let outcome = match command {
        Command::Agent {
            socket,
            event_buffer,
            state,
            fresh,
            sync,
            no_state,
            threads,
        } => {
            let socket = socket_path(&socket);
            let state = (!no_state).then(|| unitsync_ipc::state::StateOptions {
                path: state
                    .or_else(|| {
                        std::env::var_os("UNITSYNC_STATE")
                            .filter(|s| !s.is_empty())
                            .map(PathBuf::from)
                    })
                    .unwrap_or_else(|| unitsync_ipc::state::default_state_path(&socket)),
                fresh,
                sync,
            });
            agent::run(
                &socket,
                unitsync_ipc::AgentOptions {
                    event_capacity: event_buffer,
                    state,
                },
                threads.map_or_else(agent::default_threads, usize::from),
            )
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "unitsync",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Run {
            scripts,
            timeout,
            socket,
            json,
        } => run::run(run::RunOptions {
            scripts,
            socket: socket.socket,
            timeout,
            json,
        }),
        // One request, one answer: no async runtime (see `commands::one_shot`).
        Command::Ping { socket, json } => commands::ping(&socket_path(&socket), json.json),
        Command::Want {
            unit,
            dependencies,
            socket,
            json,
        } => commands::want(&socket_path(&socket), unit, dependencies, json.json),
        Command::Complete { unit, socket } => commands::complete(&socket_path(&socket), unit),
        Command::Fail {
            unit,
            reason,
            socket,
            json,
        } => commands::fail(&socket_path(&socket), unit, reason, json.json),
        Command::Ready { unit, socket, json } => {
            commands::ready(&socket_path(&socket), unit, json.json)
        }
        command => client_command(command),
    };
    if let Err(error) = outcome {
        if let Some(message) = error.message() {
            eprintln!("unitsync: {message}");
        }
        return error.exit_code();
    }
    0
}

/// Runs a command that may block or stream (`start`, `wait`, `watch`, `exec`, and those that read
/// the whole graph) on a small single-threaded runtime.
fn client_command(command: Command) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::no_runtime)?;
    runtime.block_on(async move {
        match command {
            Command::Start {
                unit,
                timeout,
                quiet,
                socket,
            } => commands::start(&socket_path(&socket), unit, timeout, quiet).await,
            Command::Wait {
                unit,
                until,
                timeout,
                socket,
            } => commands::wait(&socket_path(&socket), unit, until, timeout).await,
            Command::Status { unit, socket, json } => {
                commands::status(&socket_path(&socket), unit, json.json).await
            }
            Command::List { all, socket, json } => {
                commands::list(&socket_path(&socket), all, json.json).await
            }
            Command::Graph { format, socket } => {
                commands::graph(&socket_path(&socket), format).await
            }
            Command::Watch { from, socket, json } => {
                commands::watch(&socket_path(&socket), from, json.json).await
            }
            Command::Exec {
                unit,
                after,
                timeout,
                quiet,
                socket,
                command,
            } => commands::exec(&socket_path(&socket), unit, after, timeout, quiet, command).await,
            Command::Timeline { socket, json } => {
                commands::timeline(&socket_path(&socket), json.json).await
            }
            Command::Agent { .. }
            | Command::Completions { .. }
            | Command::Run { .. }
            | Command::Ping { .. }
            | Command::Want { .. }
            | Command::Complete { .. }
            | Command::Fail { .. }
            | Command::Ready { .. } => unreachable!("handled in `run`"),
        }
    })
}
