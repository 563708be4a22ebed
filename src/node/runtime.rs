//! The node-runtime interface: what "run this node" means, independent of Docker.
//!
//! Owns the [`NodeRuntime`] trait, the records, stats and events it returns, and its error
//! type. Implementations: [`super::docker::DockerRuntime`] (real) and
//! [`super::mock::MockRuntime`] (for unit tests of the logic above). The runtime knows *how* a
//! node runs; it must not decide *when* or *where* (that is the orchestrator's job) and keeps no
//! state of its own beyond what Docker holds.

use std::time::Duration;

use futures_util::stream::BoxStream;

use super::endpoint::NodeEndpoints;
use super::kubo_version::KuboVersion;
use super::spec::{NetworkName, NetworkSpec, NodeRef, NodeSecrets, NodeSpec, Ports, SpecError};

/// Container state, as Docker reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    Created,
    Running,
    Restarting,
    Paused,
    Exited { code: i64 },
    Dead,
    Unknown,
}

/// What the runtime knows about one node: its spec (rebuilt from labels) and live facts.
#[derive(Clone, Debug)]
pub struct NodeRecord {
    pub spec: NodeSpec,
    pub container_id: String,
    pub state: NodeState,
    pub ports: Ports,
    /// Where its RPC API and gateway are reached. `None` for a container an older nexus made
    /// (RPC API and gateway on TCP ports): the orchestrator re-creates it.
    pub endpoints: Option<NodeEndpoints>,
    /// RFC 3339 time of the last start, if it ever started.
    pub started_at: Option<String>,
    /// The host it runs on, for runtimes whose nodes span hosts (`None`: this one host).
    pub host: Option<NodeHost>,
}

/// One host of a cluster, as a runtime whose nodes span hosts reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeHost {
    /// The engine's id of the host.
    pub id: String,
    /// Its name (hostname), for people.
    pub name: String,
    /// The address peers outside the network dial it at (join kits, announced addresses).
    pub address: String,
    /// Whether the engine sees it up. A node on a host that is down is lost until the host
    /// returns or the node is re-created elsewhere.
    pub up: bool,
}

/// The CPU time one run of a node has used: what the CPU meter reads twice to get a rate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeCpu {
    /// CPU time used since the container started (all its processes, user and system).
    pub used: Duration,
    /// RFC 3339 time of that start: two readings are of the same run only if it matches.
    pub started_at: String,
}

/// A point-in-time view of a node's resource use.
#[derive(Clone, Debug, Default)]
pub struct NodeStats {
    /// Share of one core, in percent (150.0 = one and a half cores busy).
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    /// Bytes used in the node's data volume (`None` when the node is not running).
    pub disk_used_bytes: Option<u64>,
    /// Time since the last start (`None` when not running).
    pub uptime: Option<Duration>,
    /// Distinct connected swarm peers (`None` when the RPC API did not answer).
    pub peer_count: Option<usize>,
}

/// What an operator needs to see why a node misbehaves. Never carries a secret.
#[derive(Clone, Debug, Default)]
pub struct NodeDiagnostics {
    pub state: Option<NodeState>,
    /// The container's last log lines (stdout and stderr).
    pub logs: String,
    /// Distinct peer ids it is connected to (`None` when the RPC API did not answer).
    pub peers: Option<Vec<String>>,
    /// kubo's config file with `Identity.PrivKey` removed (`None` when not running).
    pub config: Option<serde_json::Value>,
}

/// What happened to a node container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEventKind {
    Start,
    Die { exit_code: Option<i64> },
    Oom,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEvent {
    pub node: NodeRef,
    pub kind: NodeEventKind,
    /// Unix time in seconds.
    pub time: i64,
}

/// Why a node became ready or did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReadyReason {
    Timeout(Duration),
    Exited(i64),
    /// It exited and Docker's restart policy already started it again (the exit code is gone).
    Restarted(i64),
    WrongPeer {
        expected: String,
        got: String,
    },
}

impl std::fmt::Display for NotReadyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout(d) => write!(f, "its RPC API did not answer within {d:?}"),
            Self::Exited(code) => write!(f, "its container exited with code {code}"),
            Self::Restarted(n) => write!(f, "its container exited and was restarted {n} time(s)"),
            Self::WrongPeer { expected, got } => {
                write!(f, "it runs as peer {got}, not the expected {expected}")
            }
        }
    }
}

/// Errors of a node runtime. Each says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "cannot reach the Docker daemon ({detail}). Start it (`sudo systemctl start docker`, or \
         `sudo dockerd &`), or point DOCKER_HOST at a running daemon"
    )]
    DockerUnavailable { detail: String },
    #[error(
        "node image `{image}` is not present on this Docker host. Pull it with `docker pull \
         {image}`, or build the offline test image with `scripts/build-test-image.sh` and use \
         that image instead"
    )]
    ImageMissing { image: String },
    #[error(
        "`{name}` already exists in Docker but was not created by nexus; nexus never touches it. \
         Remove or rename it, or use another network name"
    )]
    NameTaken { name: String },
    #[error(
        "subnet {subnet} is already used on this host outside nexus ({detail}); nexus allocates \
         the network another one"
    )]
    SubnetTaken {
        subnet: ipnet::Ipv4Net,
        detail: String,
    },
    #[error(
        "host port {port} was taken by another program between its allocation and the node's \
         start ({detail}); nexus gives the node another port"
    )]
    PortTaken { port: u16, detail: String },
    #[error("node {node} already exists")]
    AlreadyExists { node: NodeRef },
    #[error("node {node} does not exist")]
    NotFound { node: NodeRef },
    #[error("node {node} did not become ready: {reason}. Its last log lines:\n{logs}")]
    NotReady {
        node: NodeRef,
        reason: NotReadyReason,
        logs: String,
    },
    #[error(
        "image `{image}` did not answer like a kubo image: {detail}. nexus runs `ipfs version \
         --all` in it (as uid 1000, without a network) to learn its kubo and repo versions"
    )]
    ImageProbe { image: String, detail: String },
    #[error("invalid node: {0}")]
    Spec(#[from] SpecError),
    #[error("node {node} has damaged nexus labels: {detail}")]
    BadLabels { node: String, detail: String },
    #[error("node {node}'s RPC API failed: {detail}")]
    Rpc { node: NodeRef, detail: String },
    #[error("Docker refused the request: {0}")]
    Docker(String),
    #[error("could not prepare node files: {0}")]
    Bundle(String),
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// Runs nodes. Every method is safe to call concurrently for different nodes; creating all
/// nodes of a network in parallel is the expected use.
#[async_trait::async_trait]
pub trait NodeRuntime: Send + Sync {
    /// What kubo `image` runs (its version and the repo version it expects), from the image's
    /// own `ipfs version --all` in a throw-away container: no network, no capabilities,
    /// read-only, nothing left behind. [`RuntimeError::ImageMissing`] when it is not present,
    /// [`RuntimeError::ImageProbe`] when it does not answer like kubo.
    async fn probe_image(&self, image: &str) -> Result<KuboVersion>;
    /// Creates the node's container (and its network and volume if missing), installs its
    /// config, identity and swarm key, starts it and waits until its RPC API answers as the
    /// expected peer. On any failure, nothing this call created is left behind.
    async fn create_node(&self, spec: &NodeSpec, secrets: &NodeSecrets) -> Result<NodeRecord>;
    /// Starts an existing, stopped node and waits until it is ready.
    async fn start_node(&self, node: &NodeRef) -> Result<NodeRecord>;
    /// Stops a node; its container and data stay.
    async fn stop_node(&self, node: &NodeRef) -> Result<()>;
    /// Removes a node's container but keeps its data volume: a later `create_node` of the same
    /// node finds its repo again. Frees the node's host ports. Absent is not an error.
    async fn remove_container(&self, node: &NodeRef) -> Result<()>;
    /// Removes a node's container and data volume.
    async fn remove_node(&self, node: &NodeRef) -> Result<()>;
    /// Removes every node of a network and the network's Docker network.
    async fn remove_network(&self, network: &NetworkName) -> Result<()>;
    /// Makes the network's own network (where its nodes reach each other) exist on
    /// `spec.subnet`; `None`: the engine's default pools. An existing network of ours is kept
    /// as it is. [`RuntimeError::SubnetTaken`] when the engine reports the subnet overlapping a
    /// network that is not ours (nothing is created). Returns whether it created it.
    async fn prepare_network(&self, spec: &NetworkSpec) -> Result<bool>;
    /// Removes the network's own network if no node is attached to it (undoing
    /// [`Self::prepare_network`] after a start that failed). Absent is not an error.
    async fn release_network(&self, network: &NetworkName) -> Result<()>;
    /// IPv4 subnets the engine's networks hold that are not this runtime's (other programs'
    /// networks, other installations'), each with the network that holds it: what the
    /// orchestrator's subnet allocator must skip.
    async fn foreign_subnets(&self) -> Result<Vec<(ipnet::Ipv4Net, String)>>;
    /// Brings a node to `spec`: CPU changes apply live; memory, disk, image, peers or ports
    /// re-create the container on the same volume (a restart), keeping labels true.
    async fn update_node(&self, spec: &NodeSpec, secrets: &NodeSecrets) -> Result<NodeRecord>;
    /// Dials each of the spec's peers from the (ready) node, so a network whose nodes were
    /// just started together is meshed at once instead of when kubo's peering retries (seconds
    /// later when two nodes dialled each other before both listened). Best effort: returns how
    /// many peers it reached; a peer it could not reach is left to kubo's peering.
    async fn connect_peers(&self, _spec: &NodeSpec) -> usize {
        0
    }
    /// Every nexus-managed node, rebuilt from Docker alone.
    async fn list_nodes(&self) -> Result<Vec<NodeRecord>>;
    /// The nodes of one network (what the reconciler looks at); by default `list_nodes`
    /// filtered, which a runtime should do cheaper when it can.
    async fn list_network_nodes(&self, network: &NetworkName) -> Result<Vec<NodeRecord>> {
        let mut all = self.list_nodes().await?;
        all.retain(|r| &r.spec.node.network == network);
        Ok(all)
    }
    /// Resource use of one node.
    async fn node_stats(&self, node: &NodeRef) -> Result<NodeStats>;
    /// State, last log lines, peers and config (without secrets) of one node.
    async fn node_diagnostics(&self, node: &NodeRef) -> Result<NodeDiagnostics>;
    /// Start, die and OOM events of nexus-managed containers from the moment this is called
    /// (to the second), whenever the stream is first polled.
    fn watch(&self) -> BoxStream<'static, Result<NodeEvent>>;
    /// The memory of the host(s) nodes run on, in bytes, as the engine reports it; `None`
    /// when it does not know (admission control then checks memory only against a configured
    /// `node.host_memory`).
    async fn host_memory(&self) -> Result<Option<u64>> {
        Ok(None)
    }
    /// The cores of the host nodes run on, as the engine reports them; `None` when it does
    /// not say (admission control then leaves CPU unchecked).
    async fn host_cpus(&self) -> Result<Option<f64>> {
        Ok(None)
    }
    /// The CPU time a running node has used since its start, cheaply (no waiting for a
    /// second sample); `None` when it is not running or the runtime cannot read it.
    async fn node_cpu(&self, _node: &NodeRef) -> Result<Option<NodeCpu>> {
        Ok(None)
    }
    /// A cheap round trip: the runtime's backend answers (readiness).
    async fn ping(&self) -> Result<()> {
        self.list_nodes().await.map(|_| ())
    }
}
