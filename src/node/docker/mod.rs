//! The Docker implementation of [`NodeRuntime`](super::runtime::NodeRuntime), through bollard.
//!
//! Owns every call nexus makes to the Docker Engine API for nodes: the per-network bridge
//! network, the per-node volume and container, the node's directory on the host (init script,
//! secrets until installed, the RPC API and gateway sockets), readiness, stats and events. It touches only objects labelled `io.nexus.managed=true`; anything else with a
//! colliding name is reported, never modified. It must not decide which nodes should exist
//! (the orchestrator does) and keeps no state of its own: Docker is the record.
//!
//! One file per concern; the trait impl only delegates:
//! - [`client`]: the connection, error mapping, the image, and ownership (what is ours).
//! - [`files`]: the node's directory on the host and its layout.
//! - [`create`]: network, volume, container, start, readiness and roll-back.
//! - [`lifecycle`]: start, stop, update, remove, and dialling peers of existing nodes.
//! - [`observe`]: listing, records from inspect, stats, diagnostics and events.
//! - [`probe`]: what kubo (and repo version) an image runs, from a throw-away container.
//! - [`runtime_impl`]: `impl NodeRuntime for DockerRuntime`, delegating to the above.
//! - [`storage`]: what the host's Docker storage can guarantee about a node's disk (reports).

mod client;
mod create;
mod files;
mod lifecycle;
mod observe;
mod probe;
mod runtime_impl;
mod storage;

use std::path::PathBuf;
use std::time::Duration;

use bollard::Docker;

use super::rpc::KuboRpc;
use crate::names::InstanceName;
pub(crate) use client::{docker_err, is_status, overlap_detail};
pub(crate) use create::{ipam_on, subnets_not_ours};
pub use storage::DiskGuarantee;

pub use files::MAX_NODE_DIR;

/// Where kubo keeps its repo in the official image (and our volume's mount point).
const REPO_PATH: &str = "/data/ipfs";

/// Settings of the Docker runtime.
#[derive(Clone, Debug)]
pub struct DockerRuntimeConfig {
    /// How long a node may take from start until its RPC API answers `id`.
    pub ready_timeout: Duration,
    /// Grace period between SIGTERM and SIGKILL on stop.
    pub stop_timeout: Duration,
    /// Host address the swarm port is published on (all interfaces: peers must reach it).
    pub swarm_host_ip: String,
    /// Where the nodes' directories live on the host (`<data_dir>/nodes`; mode 0700): their
    /// init scripts, secrets until installed, and RPC API and gateway sockets. At most
    /// [`MAX_NODE_DIR`] bytes long, so that a socket path fits a unix socket address.
    pub node_dir: PathBuf,
    /// How many log lines an error carries when a node fails to start.
    pub log_tail: usize,
    /// Docker's `PidsLimit` per node container.
    pub pids_limit: i64,
    /// Owner scope: this runtime creates, lists, watches and removes only objects labelled
    /// `io.nexus.instance=<instance>`, so several nexus installations (or test runs) can
    /// share one Docker host without touching each other's nodes.
    pub instance: InstanceName,
    /// Docker Engine endpoint (`unix://…`, `tcp://…`, `http://…`); `None` honours
    /// `DOCKER_HOST`, else the local socket.
    pub endpoint: Option<String>,
}

impl Default for DockerRuntimeConfig {
    fn default() -> Self {
        Self {
            ready_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(10),
            swarm_host_ip: "0.0.0.0".into(),
            node_dir: PathBuf::from("/var/lib/nexus/nodes"),
            log_tail: 40,
            pids_limit: 4096,
            // A fresh id: a runtime made from defaults shares no node with any other. The
            // daemon sets the instance it resolved against its store.
            instance: InstanceName::generate(),
            endpoint: None,
        }
    }
}

/// Runs kubo nodes as Docker containers.
#[derive(Clone)]
pub struct DockerRuntime {
    docker: Docker,
    rpc: KuboRpc,
    cfg: DockerRuntimeConfig,
    /// Serializes creating and removing Docker networks: Docker does not enforce unique
    /// network names, so parallel node creates would otherwise make one network each.
    network_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}
