//! `unitsync`: the command-line front end. Parses arguments (`args`), calls the agent through
//! `unitsync-ipc` (`commands`), prints (`render`), and turns failures into one message and one exit
//! code (`failure`). It holds no graph or protocol logic of its own.

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

fn main() {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Agent {
            socket,
            event_buffer,
            state,
            fresh,
            sync,
        } => {
            let socket = socket_path(&socket);
            let state = state.unwrap_or_else(|| unitsync_ipc::state::default_state_path(&socket));
            agent::run(
                &socket,
                unitsync_ipc::AgentOptions {
                    event_capacity: event_buffer,
                    state: Some(unitsync_ipc::state::StateOptions {
                        path: state,
                        fresh,
                        sync,
                    }),
                },
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
        command => client_command(command),
    };
    if let Err(error) = outcome {
        if let Some(message) = error.message() {
            eprintln!("unitsync: {message}");
        }
        std::process::exit(error.exit_code());
    }
}

/// Runs a command that talks to an agent, on a small single-threaded runtime.
fn client_command(command: Command) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| CliError::Other {
            code: failure::code::REFUSED,
            message: format!("cannot start the async runtime: {error}"),
        })?;
    runtime.block_on(async move {
        match command {
            Command::Ping { socket, json } => {
                commands::ping(&socket_path(&socket), json.json).await
            }
            Command::Want {
                unit,
                dependencies,
                socket,
                json,
            } => commands::want(&socket_path(&socket), unit, dependencies, json.json).await,
            Command::Start {
                unit,
                timeout,
                quiet,
                socket,
            } => commands::start(&socket_path(&socket), unit, timeout, quiet).await,
            Command::Complete { unit, socket } => {
                commands::complete(&socket_path(&socket), unit).await
            }
            Command::Fail {
                unit,
                reason,
                socket,
                json,
            } => commands::fail(&socket_path(&socket), unit, reason, json.json).await,
            Command::Ready { unit, socket, json } => {
                commands::ready(&socket_path(&socket), unit, json.json).await
            }
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
            Command::Agent { .. } | Command::Completions { .. } | Command::Run { .. } => {
                unreachable!("handled in main")
            }
        }
    })
}
