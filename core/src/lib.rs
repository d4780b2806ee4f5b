//! `unitsync-core`: the unit dependency graph behind unitsync, usable on its own (SPEC §5).
//!
//! A *unit* is any name a script chooses. Units wait for each other (`want`), start only when every
//! dependency completed (`start`, atomically with the readiness check), and finish by completing or
//! failing; a failure propagates to every dependent that has not started. Callers can wait for these
//! things asynchronously (woken by the change itself, never by polling) and subscribe to a totally
//! ordered stream of every change.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! use unitsync_core::{Graph, StartOutcome, UnitState};
//! let graph = Graph::new();
//! graph.want("claude", &["git"]).unwrap();
//! let waiter = {
//!     let graph = graph.clone();
//!     tokio::spawn(async move { graph.start("claude", None, |_| {}).await })
//! };
//! graph.register("git").unwrap();
//! assert_eq!(graph.start("git", None, |_| {}).await, Ok(StartOutcome::Started));
//! graph.complete("git").unwrap();
//! assert_eq!(waiter.await.unwrap(), Ok(StartOutcome::Started));
//! assert_eq!(graph.state("claude"), Some(UnitState::Started));
//! # });
//! ```
//!
//! The crate does no I/O and knows no clock but `Instant`. Its design (units in a sharded `dashmap`
//! whose locks are held for one probe, one atomic status word per unit, sealable lock-free edge lists
//! on `crossbeam-epoch`, a waiter notification allocated only for units someone waits on, one short
//! lock for adding edges only) is described in the `graph` module; its event ordering and the
//! journaling hook ([`EventSink`]) in `events`; rebuilding a graph from a journal
//! ([`GraphBuilder::restore`]) in `restore`; its cycle check in `topo`.

#![warn(missing_docs)]

mod edges;
mod error;
mod events;
mod export;
mod graph;
mod name;
mod restore;
mod state;
mod sync;
mod table;
mod topo;
mod unit;
mod waiting;

pub use error::{GraphError, Operation};
pub use events::{Event, EventKind, EventSink, Lagged, Subscription};
pub use export::{to_dot, to_mermaid, GraphFormat};
pub use graph::{
    DependencyStatus, FailOutcome, Graph, GraphBuilder, StartAttempt, UnitSnapshot, WantOutcome,
    DEFAULT_EVENT_CAPACITY,
};
pub use name::{NameRule, UnitName, MAX_NAME_BYTES};
pub use restore::{RestoreError, RestoreProblem};
pub use state::{UnitState, MAX_UNMET};
pub use unit::Failure;
pub use waiting::{ReadyOutcome, StartOutcome, WaitOutcome, WaitTarget};
