//! The orchestrator: *when* and *where* nodes run.
//!
//! - [`plan`]: the reconciler's pure decisions (desired specs, actions, status).
//! - [`ports`]: host port ranges and allocation.
//! - [`registry`]: the in-memory view of ready nodes the delegator reads.
//!
//! - [`events`]: the bus of network and node events (`WatchEvents`, logs).
//! - [`controller`]: the [`Orchestrator`]: operations, the level-triggered reconciler,
//!   recovery, events and resync. It reads the [`crate::store`] and drives the
//!   [`crate::node::NodeRuntime`]; it never talks to Docker directly.

pub mod controller;
pub mod events;
pub mod plan;
pub mod ports;
pub mod registry;

pub use controller::{
    CreateNetwork, NetworkView, NodeDiagnosis, NodeView, Orchestrator, OrchestratorConfig,
    OrchestratorError, UpdateNetwork,
};
pub use events::{Event, EventBus, EventKind};

#[cfg(test)]
mod tests;
