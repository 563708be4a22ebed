//! The narrow handles through which the delegator reaches a network's pinset.
//!
//! Owns two leaf traits and the plain data they carry:
//! - [`PinSink`] and [`PinChange`]: a CID pinned or unpinned on a node of a network by a user,
//!   through the delegator (`add`, `pin/add`, `dag/import`, `pin/rm`).
//! - [`PinService`], [`PinRequest`], [`PinEntry`] and [`PinServiceError`]: the operations the
//!   IPFS Pinning Service API needs (add, get, list, replace, remove, and the delegates).
//!
//! Leaves: the orchestrator implements them, the delegator holds them, so the delegator never
//! imports the orchestrator's operations and the arrows keep pointing one way. They must not
//! carry anything but plain data, and must not check anything themselves: every check (CID,
//! name, `meta`, origins) lives once, in the orchestrator's pinset operations.

use std::collections::BTreeMap;

use crate::node::NetworkName;
use crate::store::{PinFilter, PinStatus};

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

/// A pin a user asks for (the Pinning Service API's `Pin`), unchecked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinRequest {
    pub cid: String,
    pub name: Option<String>,
    pub origins: Vec<String>,
    pub meta: BTreeMap<String, String>,
    /// Who asks: the token's user.
    pub owner: String,
}

/// A pin of a network's pinset, as the Pinning Service API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinEntry {
    pub request_id: String,
    pub cid: String,
    pub name: Option<String>,
    pub origins: Vec<String>,
    pub meta: BTreeMap<String, String>,
    pub owner: String,
    /// Unix milliseconds.
    pub created_at: i64,
    pub status: PinStatus,
    /// Why the status is what it is (e.g. why it failed).
    pub reason: Option<String>,
    /// How many nodes hold it now.
    pub holders: usize,
}

/// Why a pinset operation was refused, by what the caller can do about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PinServiceError {
    /// The request is wrong (a CID that does not parse, a name or `meta` too large, …).
    #[error("{0}")]
    Invalid(String),
    /// No such pin on this network (unknown, removed, or another network's request id).
    #[error("{0}")]
    NotFound(String),
    /// The network cannot take it now (e.g. it has no running node).
    #[error("{0}")]
    Conflict(String),
    /// The store or another dependency is down: try again later.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or damaged data.
    #[error("{0}")]
    Internal(String),
}

/// The pinset operations of the IPFS Pinning Service API, per network. Ownership and roles are
/// the caller's (the delegator's) to check; the implementation checks the input.
#[async_trait::async_trait]
pub trait PinService: Send + Sync + 'static {
    /// Adds a pin (`queued`); a refused one changes nothing.
    async fn add(
        &self,
        network: &NetworkName,
        pin: PinRequest,
    ) -> Result<PinEntry, PinServiceError>;
    /// One live pin of the network.
    async fn get(
        &self,
        network: &NetworkName,
        request_id: &str,
    ) -> Result<PinEntry, PinServiceError>;
    /// The network's pins matching `filter`, newest first: how many match, and the first
    /// `filter.limit`.
    async fn list(
        &self,
        network: &NetworkName,
        filter: &PinFilter,
    ) -> Result<(u64, Vec<PinEntry>), PinServiceError>;
    /// Replaces a pin: `pin` is added with a new request id, then the old one is removed. A
    /// refused `pin` or an unknown `request_id` changes nothing.
    async fn replace(
        &self,
        network: &NetworkName,
        request_id: &str,
        pin: PinRequest,
    ) -> Result<PinEntry, PinServiceError>;
    /// Removes a pin from the set (unpinned from its nodes in the background).
    async fn remove(&self, network: &NetworkName, request_id: &str) -> Result<(), PinServiceError>;
    /// The swarm multiaddrs of the network's ready nodes, as the join kit gives them.
    async fn delegates(&self, network: &NetworkName) -> Result<Vec<String>, PinServiceError>;
}
