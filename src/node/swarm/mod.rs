//! The Docker Swarm implementation of [`NodeRuntime`](super::runtime::NodeRuntime): a network's
//! nodes spread over the hosts of a swarm, through bollard's services, tasks, nodes, secrets and
//! configs APIs on one manager.
//!
//! Owns, on the swarm: each network's overlay network (attachable; encrypted when configured),
//! one service per node (one replica, so a node keeps its identity; endpoint mode `dnsrr`, no VIP;
//! its swarm port published in host mode on its host; limits and reservations), the node's
//! swarm key, configuration and identity as swarm secrets and its init script as a swarm config
//! (removed with the node), the per-host **gate** (a global service running `nexus gate`, the
//! only way to a node's RPC API and gateway from another host: [`crate::gate`]), and where each
//! node is placed. On each host, a node has two directories under `swarm.host_dir`, made and
//! removed through that host's gate: its sockets (`<key>-run`, mounted at `/nexus`) and its repo
//! (`<key>-<host>-repo`, at `/data/ipfs`), so a node re-created on another host starts empty
//! and nothing of it stays anywhere once removed.
//!
//! It touches only objects labelled `io.nexus.managed=true` with this instance's
//! `io.nexus.instance`. Like the Docker runtime it must not decide which nodes should exist nor
//! when (the orchestrator does); it decides only *where* a new node goes (spread over hosts and
//! zones), and keeps no state of its own: the swarm is the record. (Its one memory is a
//! bounded cache of each node's last process sample, so that CPU use is a rate: [`usage`].)
//!
//! One file per concern; the trait impl only delegates:
//! - [`hosts`]: the swarm's hosts, their addresses and zones; placement (pure).
//! - [`objects`]: names, labels, secrets and configs of a node.
//! - [`gate`]: the per-host gate service and the node directories it makes.
//! - [`service`]: the overlay network, a node's service spec, create, readiness, roll-back.
//! - [`observe`]: records from services and tasks, stats, diagnostics, events (polled).
//! - [`usage`]: CPU, memory and uptime from kubo's own process figures; the last sample kept.
//! - [`lifecycle`]: stop, start, update, removal.
//! - [`runtime_impl`]: `impl NodeRuntime for SwarmRuntime`, delegating.

mod gate;
mod hosts;
mod lifecycle;
mod objects;
mod observe;
mod runtime_impl;
mod service;
mod usage;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;

use super::docker::{DockerRuntime, DockerRuntimeConfig};
use super::rpc::KuboRpc;
use super::runtime::{Result, RuntimeError};
use crate::gate::GateAccess;
use crate::names::InstanceName;

pub use hosts::{place, Host};
pub use objects::node_key;

/// Where kubo keeps its repo in the official image.
const REPO_PATH: &str = "/data/ipfs";

/// Settings of the swarm runtime.
#[derive(Clone, Debug)]
pub struct SwarmRuntimeConfig {
    /// A swarm manager's Docker Engine endpoint; `None` honours `DOCKER_HOST`.
    pub endpoint: Option<String>,
    /// Owner scope, as for the Docker runtime.
    pub instance: InstanceName,
    /// How long a node may take from its service's creation until its RPC API answers `id`
    /// (includes pulling the image on its host).
    pub ready_timeout: Duration,
    /// Grace period between SIGTERM and SIGKILL on stop.
    pub stop_timeout: Duration,
    /// The gate image (`scripts/build-gate-image.sh`, pushed where every host pulls from).
    pub gate_image: String,
    /// The port each host's gate listens on (published in host mode).
    pub gate_port: u16,
    /// The directory on every host holding the nodes' sockets and repos (must exist on each
    /// host, owned by uid 1000, mode 0700).
    pub host_dir: PathBuf,
    /// The node label holding a host's public address (join kits); else the host's swarm
    /// address.
    pub address_label: String,
    /// Encrypt each network's overlay (needs the kernel's ESP support on every host).
    pub encrypted: bool,
    /// How many log lines an error carries when a node fails to start.
    pub log_tail: usize,
    /// Process limit per node.
    pub pids_limit: i64,
}

impl SwarmRuntimeConfig {
    /// The defaults for what an operator does not set.
    pub fn new(instance: InstanceName, gate_image: String) -> Self {
        Self {
            endpoint: None,
            instance,
            ready_timeout: Duration::from_secs(120),
            stop_timeout: Duration::from_secs(10),
            gate_image,
            gate_port: 4702,
            host_dir: PathBuf::from("/var/lib/nexus-swarm"),
            address_label: "io.nexus.public-address".into(),
            encrypted: false,
            log_tail: 40,
            pids_limit: 4096,
        }
    }
}

/// Runs kubo nodes as services of a Docker Swarm.
#[derive(Clone)]
pub struct SwarmRuntime {
    docker: Docker,
    /// The manager's own engine, for what happens on it alone (probing an image).
    local: DockerRuntime,
    rpc: KuboRpc,
    cfg: SwarmRuntimeConfig,
    gate: Arc<GateAccess>,
    /// Serializes placement and service creation, so nodes of one network created in
    /// parallel see each other's hosts.
    place_lock: Arc<tokio::sync::Mutex<()>>,
    /// Serializes creating and removing overlay networks (names are not unique in Docker).
    network_lock: Arc<tokio::sync::Mutex<()>>,
    /// Each node's last process sample (CPU rates between two `node_stats`).
    samples: Arc<usage::Samples>,
}

impl SwarmRuntime {
    /// Connects to the manager, checks it is one, and makes sure the gate service runs with
    /// `gate`'s credentials.
    pub async fn connect(cfg: SwarmRuntimeConfig, gate: Arc<GateAccess>) -> Result<Self> {
        let local = DockerRuntime::connect(DockerRuntimeConfig {
            instance: cfg.instance.clone(),
            endpoint: cfg.endpoint.clone(),
            ready_timeout: cfg.ready_timeout,
            ..Default::default()
        })
        .await?;
        let docker = local.docker().clone();
        let rt = Self {
            docker,
            local,
            rpc: KuboRpc::new(Duration::from_secs(5)),
            cfg,
            gate,
            place_lock: Default::default(),
            network_lock: Default::default(),
            samples: Default::default(),
        };
        rt.check_manager().await?;
        rt.ensure_gate().await?;
        Ok(rt)
    }

    /// The settings this runtime was made with.
    pub fn config(&self) -> &SwarmRuntimeConfig {
        &self.cfg
    }

    /// Fails unless the engine is an active swarm manager.
    async fn check_manager(&self) -> Result<()> {
        let info = self
            .docker
            .info()
            .await
            .map_err(super::docker::docker_err)?;
        let swarm = info.swarm.unwrap_or_default();
        if swarm.control_available != Some(true) {
            return Err(RuntimeError::Docker(
                "the engine at swarm.endpoint is not a swarm manager: point swarm.endpoint at a \
                 manager (`docker node ls` works there), or set runtime.kind = \"docker\""
                    .into(),
            ));
        }
        Ok(())
    }
}
