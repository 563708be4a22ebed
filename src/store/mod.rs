//! The store: every network's record and its nodes' records, persisted.
//!
//! Owns the data model of what nexus has been asked to run ([`NetworkRecord`], [`NodeRow`]),
//! the [`Store`] trait, and its sqlx implementation ([`sql::SqlStore`]: SQLite as the embedded
//! default, Postgres for production, chosen by URL, one schema and one set of migrations), and
//! [`cache::CachedStore`], the write-through cache the daemon puts in front of it; and the
//! store's owner records ([`lease`]): the instance it belongs to and the lease of the one daemon
//! acting for it. It stores and returns records; it must not decide anything (the orchestrator does) nor talk to
//! Docker. Secrets (swarm keys, node private keys) are stored here and only here; they never
//! appear in `Debug` output or errors.

pub mod cache;
pub mod lease;
pub mod pins;
pub mod seal;
pub mod sql;
mod url;

pub use cache::CachedStore;
pub use lease::{Lease, LeaseHolder, LeaseOutcome};
pub use pins::{
    check_meta, check_name, Allocation, AllocationStatus, NameMatch, PinCounts, PinFilter, PinPage,
    PinRecord, PinStatus, MAX_META_BYTES, MAX_NAME_CHARS,
};
pub use sql::SqlStore;
pub use url::{redact_url, Backend};

use std::time::Duration;

use crate::access::Access;
use crate::names::InstanceName;
use crate::node::{NetworkName, NodeIdentity, Ports, Resources, SwarmKey};
use crate::replication::Replication;

/// What the operator asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DesiredState {
    Running,
    Stopped,
}

/// What the reconciler last observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkStatus {
    Pending,
    Starting,
    Running,
    Degraded,
    Stopping,
    Stopped,
    Failed,
}

impl DesiredState {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "running" => Some(Self::Running),
            "stopped" => Some(Self::Stopped),
            _ => None,
        }
    }
}

impl NetworkStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Degraded => "degraded",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "starting" => Self::Starting,
            "running" => Self::Running,
            "degraded" => Self::Degraded,
            "stopping" => Self::Stopping,
            "stopped" => Self::Stopped,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

/// One private network as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkRecord {
    pub name: NetworkName,
    /// Number of nodes wanted (≥ 1).
    pub replicas: u16,
    /// Limits of each node.
    pub resources: Resources,
    /// Who may use it through the delegator, and what they may call.
    pub access: Access,
    /// The network's pre-shared key. Secret.
    pub swarm_key: SwarmKey,
    /// Extra bootstrap peers outside nexus (`…/p2p/<id>` multiaddrs).
    pub bootstrap_peers: Vec<String>,
    pub desired: DesiredState,
    pub status: NetworkStatus,
    /// Why the status is what it is (e.g. the error that made it `failed`).
    pub status_reason: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
    /// When it last reached `running`; `None` while it never did or is stopped.
    pub activated_at: Option<i64>,
    /// The IPv4 subnet nexus allocated to its nodes' network. `None`: made before nexus
    /// allocated subnets (Docker's default pools chose one, which it keeps).
    pub subnet: Option<ipnet::Ipv4Net>,
    /// The node image its nodes run (`None`: a row from before networks had their own image;
    /// the orchestrator fills it in with the daemon's `node.image` at start-up).
    pub image: Option<String>,
    /// On how many nodes each pin of the network's pinset is held.
    pub replication: Replication,
}

/// One node of a network as stored.
#[derive(Clone, Debug)]
pub struct NodeRow {
    pub network: NetworkName,
    pub index: u16,
    /// The node's identity (peer id and private key). Secret.
    pub identity: NodeIdentity,
    pub ports: Ports,
    pub container_id: Option<String>,
    pub last_error: Option<String>,
}

impl PartialEq for NodeRow {
    fn eq(&self, other: &Self) -> bool {
        self.network == other.network
            && self.index == other.index
            && self.identity.peer_id() == other.identity.peer_id()
            && self.ports == other.ports
            && self.container_id == other.container_id
            && self.last_error == other.last_error
    }
}

/// Store failures. None carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a network named `{0}` already exists")]
    Duplicate(String),
    #[error("no network named `{0}`")]
    NotFound(String),
    #[error("cannot open the store at {url}: {detail}")]
    Open { url: String, detail: String },
    #[error("store migration failed: {0}")]
    Migrate(String),
    #[error("store query failed: {0}")]
    Query(String),
    #[error("stored record for `{name}` is damaged: {detail}")]
    Corrupt { name: String, detail: String },
    /// A sealed secret that does not open, or the seal keys themselves (key file, rotation).
    /// `what` names the row and column or the operation; never a key or a secret.
    #[error("{what}: {cause}")]
    Sealed {
        what: String,
        cause: seal::SealError,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Persistence of networks and nodes. Implementations must be safe to share between tasks.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Inserts a new network; [`StoreError::Duplicate`] if the name exists.
    async fn create_network(&self, network: &NetworkRecord) -> Result<()>;
    async fn get_network(&self, name: &NetworkName) -> Result<Option<NetworkRecord>>;
    /// All networks, ordered by name.
    async fn list_networks(&self) -> Result<Vec<NetworkRecord>>;
    /// Replaces a network's row; [`StoreError::NotFound`] if absent.
    async fn update_network(&self, network: &NetworkRecord) -> Result<()>;
    /// Deletes a network and all its nodes (absent is not an error).
    async fn delete_network(&self, name: &NetworkName) -> Result<()>;
    /// Inserts or replaces a node; [`StoreError::NotFound`] if its network is absent.
    async fn put_node(&self, node: &NodeRow) -> Result<()>;
    /// A network's nodes, ordered by index.
    async fn list_nodes(&self, network: &NetworkName) -> Result<Vec<NodeRow>>;
    /// Every node of every network (e.g. to rebuild the port allocator).
    async fn all_nodes(&self) -> Result<Vec<NodeRow>>;
    /// Deletes one node (absent is not an error).
    async fn delete_node(&self, network: &NetworkName, index: u16) -> Result<()>;
    /// A cheap round trip: the store answers (readiness).
    async fn ping(&self) -> Result<()> {
        self.list_networks().await.map(|_| ())
    }
    /// The instance recorded in the store, if any.
    async fn instance(&self) -> Result<Option<InstanceName>>;
    /// Records `proposed` as the store's instance unless one is recorded already, and returns
    /// the recorded one: of two callers racing on a fresh store, both get the first's.
    async fn claim_instance(&self, proposed: &InstanceName) -> Result<InstanceName>;
    /// Takes `instance`'s lease for `holder` until `ttl` from now (the store's clock), in one
    /// atomic step: if nobody holds it, its holder's lease has expired, or `holder` already
    /// holds it. Otherwise nothing changes and the live lease is returned as
    /// [`LeaseOutcome::Held`].
    async fn acquire_lease(
        &self,
        instance: &InstanceName,
        holder: &LeaseHolder,
        ttl: Duration,
    ) -> Result<LeaseOutcome>;
    /// Extends `holder`'s lease of `instance` to `ttl` from now. `None`: `holder` no longer
    /// holds it (it expired and another took it, or it was released); nothing changed.
    async fn renew_lease(
        &self,
        instance: &InstanceName,
        holder: &LeaseHolder,
        ttl: Duration,
    ) -> Result<Option<Lease>>;
    /// Gives up `holder`'s lease of `instance` (nothing if another holds it).
    async fn release_lease(&self, instance: &InstanceName, holder: &LeaseHolder) -> Result<()>;
    /// `instance`'s lease as stored, live or expired.
    async fn get_lease(&self, instance: &InstanceName) -> Result<Option<Lease>>;
    /// Puts a token id on the revocation list until `forget_at` (unix seconds); revoking it
    /// again keeps the later `forget_at`.
    async fn revoke_token(&self, jti: &str, revoked_at: i64, forget_at: i64) -> Result<()>;
    /// The revoked token ids not yet forgotten at `now` (unix seconds), ordered by id.
    async fn revoked_tokens(&self, now: i64) -> Result<Vec<RevokedToken>>;
    /// Deletes the ids whose `forget_at` has passed at `now`; returns how many.
    async fn forget_revoked_tokens(&self, now: i64) -> Result<u64>;
    /// Adds a pin to its network's pinset, with its allocations;
    /// [`StoreError::NotFound`] if the network is absent.
    async fn create_pin(&self, pin: &PinRecord) -> Result<()>;
    /// One pin and its allocations, removed or not.
    async fn get_pin(&self, network: &NetworkName, request_id: &str) -> Result<Option<PinRecord>>;
    /// The pins of a network that are not removed and match `filter`, newest first: how many
    /// match, and the first `filter.limit` of them with their allocations.
    async fn list_pins(&self, network: &NetworkName, filter: &PinFilter) -> Result<PinPage>;
    /// Every pin of a network, removed ones included, oldest first, with allocations (what
    /// the pin reconciler works from).
    async fn pinset(&self, network: &NetworkName) -> Result<Vec<PinRecord>>;
    /// Sets a pin's status and reason; `false` if there is no such pin.
    async fn set_pin_status(
        &self,
        network: &NetworkName,
        request_id: &str,
        status: PinStatus,
        reason: Option<&str>,
        at: i64,
    ) -> Result<bool>;
    /// Marks a pin removed from the set (it stays until unpinned from its nodes); `false` if
    /// there is no such pin or it was removed already.
    async fn remove_pin(&self, network: &NetworkName, request_id: &str, at: i64) -> Result<bool>;
    /// Deletes a pin and its allocations (absent is not an error).
    async fn delete_pin(&self, network: &NetworkName, request_id: &str) -> Result<()>;
    /// Inserts or replaces a pin's allocation to one node; [`StoreError::NotFound`] if the pin
    /// is absent.
    async fn put_allocation(
        &self,
        network: &NetworkName,
        request_id: &str,
        allocation: &Allocation,
    ) -> Result<()>;
    /// Deletes a pin's allocation to one node (absent is not an error).
    async fn delete_allocation(
        &self,
        network: &NetworkName,
        request_id: &str,
        node: u16,
    ) -> Result<()>;
    /// How many pins of a network (not removed) are in each status.
    async fn pin_counts(&self, network: &NetworkName) -> Result<PinCounts>;
}

/// A revoked token id and until when it is refused (unix seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedToken {
    pub jti: String,
    pub revoked_at: i64,
    pub forget_at: i64,
}
