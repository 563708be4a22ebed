//! The narrow handle through which the delegator tells the orchestrator about pins it saw.
//!
//! Owns [`PinSink`] and [`PinChange`]: a CID pinned or unpinned on a node of a network by a
//! user, through the delegator (`add`, `pin/add`, `dag/import`, `pin/rm`). A leaf: the
//! orchestrator implements it, the delegator holds it, so the delegator never imports the
//! orchestrator's operations and the arrows keep pointing one way. It must not carry anything
//! but what the delegator read from a node's answer.

use crate::node::NetworkName;

/// What a response through the delegator did to its CIDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinChange {
    /// The node pinned them (a successful `add`, `pin/add`, `dag/import`).
    Pinned,
    /// The node unpinned them (`pin/rm`).
    Unpinned,
}

/// Receives the CIDs the delegator saw pinned or unpinned. Called once per finished response,
/// from the delegator's task: it must return at once (queue the work, do not wait on it).
pub trait PinSink: Send + Sync + 'static {
    fn record(&self, network: &NetworkName, user: &str, change: PinChange, cids: Vec<String>);
}
