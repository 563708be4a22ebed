//! The orchestrator: *when* and *where* nodes run.
//!
//! Rooms, each standing on the ones below it:
//! - [`operations`]: what callers do (create, start, stop, update, remove, reads). Writes
//!   intent to the [`crate::store`] first, then waits for the reconciler to converge.
//! - [`reconcile`]: the level-triggered reconciler: one pass per network (rows, ports, plan,
//!   act, roll-back), crash backoff, recovery, the event/resync loop and the pass queue.
//! - [`handle`]: the [`Orchestrator`] handle, its settings and shared state.
//! - [`request`] (what callers ask and its checks), [`view`] (what they get back),
//!   [`error`] (what went wrong, by kind).
//! - [`plan`]: the reconciler's pure decisions (desired specs, actions, status).
//! - `upgrade`: whether a network may move to an image (kubo 0.37 or later, no older repo
//!   version than its nodes have), checked before anything is written.
//! - [`ports`]: host port ranges and allocation.
//! - [`subnets`]: the subnet pool and each network's subnet; [`addressing`] joins it to the
//!   runtime (allocation at create, the network prepared on it before nodes are created).
//! - [`capacity`]: admission control's rule (memory limits against the host's memory and
//!   an overcommit ratio, a node cap, free ports); `admission` joins it to the store and
//!   the runtime, checked before a start or update writes intent.
//! - [`pinset`]: each network's pinset held on as many ready nodes as its replication factor
//!   (pure placement plan, the level-triggered loop and its node calls, pin operations).
//! - [`registry`]: the in-memory view of ready nodes the delegator reads.
//! - [`events`]: the bus of network and node events (`WatchEvents`, logs).
//! - `tokens`: the revocation list of tenant tokens (stored first, then the in-memory list
//!   the delegator reads), loaded at start, expired ids forgotten.
//!
//! It reads the store and drives the [`crate::node::NodeRuntime`]; it never talks to Docker
//! directly, nor serves traffic.

mod addressing;
mod admission;
pub mod capacity;
mod cpu_meter;
pub mod error;
pub mod events;
mod handle;
mod operations;
pub mod pinset;
pub mod plan;
pub mod ports;
mod reconcile;
pub mod registry;
pub mod request;
pub mod subnets;
mod tokens;
mod upgrade;
pub mod view;

pub use admission::AdmissionUsage;
pub use capacity::AdmissionConfig;
pub use error::{ErrorKind, OrchestratorError, Result};
pub use events::{Event, EventBus, EventKind};
pub use handle::{default_start_parallelism, Orchestrator, OrchestratorConfig};
pub use operations::PinSummary;
pub use pinset::{AddPin, PinApi, PinQuery, PinView, PinsetConfig};
pub use request::{CreateNetwork, UpdateNetwork};
pub use view::{NetworkView, NodeDiagnosis, NodeView};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_drain;
