//! `unitsync-benches`: the workloads of `WORKLOADS.md` (W1–W6) and the baselines they are measured
//! against, shared by the criterion benches (`benches/*.rs`) and the one-process `report` binary.
//!
//! One module per concept: [`workloads`] defines W1–W4 once, generically over a [`workloads::Subject`]
//! (our graph or a baseline); [`baseline_graph`] is the `HashMap`-behind-one-`RwLock` baseline;
//! [`raw_socket`] is the raw `UnixStream` ping-pong baseline; [`over_socket`] drives W5/W6 against a
//! real agent; [`process`] spawns and inspects processes (agent, CLI, `/bin/true`); [`alloc_counter`]
//! counts heap bytes for W4; [`stats`] turns samples into medians and percentiles; [`machine`] says
//! what the shared machine offers while the figures are taken; [`report`] is the `report` binary's
//! body. The socket and process modules are Unix-only (W5/W6 speak Unix domain sockets); CPU pinning
//! is Linux-only and reports itself unsupported elsewhere. This crate measures;
//! it must never change how `unitsync-core`, `unitsync-ipc` or the CLI behave.

pub mod alloc_counter;
pub mod baseline_graph;
pub mod machine;
#[cfg(unix)]
pub mod over_socket;
#[cfg(unix)]
pub mod process;
#[cfg(unix)]
pub mod raw_socket;
#[cfg(unix)]
pub mod report;
pub mod stats;
#[cfg(unix)]
pub mod stress;
pub mod workloads;
