//! Nodes: how one kubo node runs in a container (not when or where — that is the
//! orchestrator's job).
//!
//! - [`spec`]: validated description of a node (names, resources, peers, ports, secrets).
//! - [`swarm_key`], [`identity`]: the network's key and each node's libp2p identity.
//! - [`kubo_config`]: the kubo settings nexus owns and the files that carry them in.
//! - [`kubo_version`]: an image's kubo and repo versions, and which nexus supports.
//! - [`labels`]: `io.nexus.*` labels, from which node records are rebuilt.
//! - [`runtime`]: the [`NodeRuntime`] trait; [`docker`] implements it, [`mock`] fakes it.
//! - [`rpc`]: the few kubo RPC calls the runtime itself needs (readiness, peer count), and
//!   [`kubo_metrics`]: kubo's own process figures from its Prometheus endpoint.

pub mod docker;
pub mod endpoint;
pub mod identity;
pub mod kubo_config;
pub mod kubo_metrics;
pub mod kubo_version;
pub mod labels;
pub mod mock;
pub mod rpc;
pub mod runtime;
pub mod spec;
pub mod swarm;
pub mod swarm_key;

pub use docker::{DockerRuntime, DockerRuntimeConfig};
pub use identity::NodeIdentity;
pub use runtime::{
    NodeCpu, NodeDiagnostics, NodeEvent, NodeEventKind, NodeHost, NodeRecord, NodeRuntime,
    NodeState, NodeStats, RuntimeError,
};
pub use spec::{
    plan_network, NetworkName, NetworkSpec, NodeRef, NodeSecrets, NodeSpec, Peer, Ports, Resources,
};
pub use swarm::{SwarmRuntime, SwarmRuntimeConfig};
pub use swarm_key::SwarmKey;
