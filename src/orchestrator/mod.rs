//! The orchestrator: *when* and *where* nodes run (issue 3, in progress).
//!
//! - [`plan`]: the reconciler's pure decisions (desired specs, actions, status).
//! - [`ports`]: host port ranges and allocation.
//! - [`registry`]: the in-memory view of ready nodes the delegator reads.
//!
//! Still to come here: the desired-state reconciler that reads the [`crate::store`] and drives
//! the [`crate::node::NodeRuntime`]. It must not talk to Docker directly.

pub mod plan;
pub mod ports;
pub mod registry;
