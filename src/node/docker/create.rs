//! Creating a node: the network's bridge network (on the subnet the orchestrator allocated,
//! or Docker's default pools) and the node's volume (both labelled), its directory on the host
//! (init script, secrets, sockets: [`super::files`]), the hardened container with its limits
//! and swarm port, start, readiness (`id` answers with the expected peer id through the API
//! socket), and the roll-back of what a failed create made. Also the Docker networks' subnets
//! that are not ours (what the allocator must skip). Must not touch an object that is not
//! ours, nor remove anything this call did not create.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, HealthConfig, HostConfig, HostConfigLogConfig,
    Ipam, IpamConfig, Mount, MountTmpfsOptions, MountType, NetworkCreateRequest, PortBinding,
    RestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{CreateContainerOptionsBuilder, ListNetworksOptions};
use ipnet::Ipv4Net;

use super::client::{docker_err, is_status, overlap_detail, port_in_use};
use super::files::NodeDir;
use super::{DockerRuntime, REPO_PATH};
use crate::node::kubo_config::{self, NODE_GID, NODE_UID};
use crate::node::labels;
use crate::node::runtime::{NodeRecord, NotReadyReason, Result, RuntimeError};
use crate::node::spec::{NetworkSpec, NodeRef, NodeSecrets, NodeSpec, SWARM_PORT};

/// Size of the node's `/tmp` (kubo writes nothing large there; the repo is a volume).
const TMP_BYTES: i64 = 64 << 20;

/// The IPAM of a network on `subnet`; `None`: the engine's default pools. Shared by the swarm
/// runtime's overlays.
pub(crate) fn ipam_on(subnet: Option<Ipv4Net>) -> Option<Ipam> {
    subnet.map(|subnet| Ipam {
        driver: Some("default".into()),
        config: Some(vec![IpamConfig {
            subnet: Some(subnet.to_string()),
            ..Default::default()
        }]),
        options: None,
    })
}

/// The IPv4 subnets of `networks` that `ours` does not claim, each with its network's name
/// (what the orchestrator's subnet allocator must skip). Shared by the swarm runtime.
pub(crate) fn subnets_not_ours(
    networks: Vec<bollard::models::Network>,
    ours: impl Fn(&HashMap<String, String>) -> bool,
) -> Vec<(Ipv4Net, String)> {
    let mut out = Vec::new();
    for n in networks {
        if n.labels.as_ref().is_some_and(&ours) {
            continue;
        }
        let name = n.name.unwrap_or_default();
        let configs = n.ipam.and_then(|i| i.config).unwrap_or_default();
        for c in configs {
            // IPv6 subnets and unparsable ones cannot overlap an IPv4 pool.
            if let Some(subnet) = c.subnet.and_then(|s| s.parse::<Ipv4Net>().ok()) {
                out.push((subnet.trunc(), name.clone()));
            }
        }
    }
    out
}

impl DockerRuntime {
    /// Creates the network's bridge network on `spec.subnet` (`None`: Docker's default pools)
    /// unless it exists; an existing one of ours is kept as it is. Returns whether it created
    /// it. A subnet Docker reports overlapping another network is [`RuntimeError::SubnetTaken`].
    pub(super) async fn ensure_network(&self, spec: &NetworkSpec) -> Result<bool> {
        let _guard = self.network_lock.lock().await;
        let name = spec.name.docker_network();
        match self.docker.inspect_network(&name, None).await {
            Ok(n) if n.labels.as_ref().is_some_and(|l| self.ours(l)) => return Ok(false),
            Ok(_) => return Err(RuntimeError::NameTaken { name }),
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(docker_err(e)),
        }
        let req = NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".into()),
            ipam: ipam_on(spec.subnet),
            labels: Some(self.stamp(labels::network_labels(&spec.name))),
            ..Default::default()
        };
        match self.docker.create_network(req).await {
            Ok(_) => {
                tracing::debug!(network = %spec.name, subnet = ?spec.subnet, "network created");
                Ok(true)
            }
            // Another node of the same network created it concurrently.
            Err(e) if is_status(&e, 409) => Ok(false),
            Err(e) => match (spec.subnet, overlap_detail(&e)) {
                (Some(subnet), Some(detail)) => Err(RuntimeError::SubnetTaken { subnet, detail }),
                _ => Err(docker_err(e)),
            },
        }
    }

    /// The IPv4 subnets of Docker networks that are not this instance's.
    pub(super) async fn foreign_subnets(&self) -> Result<Vec<(Ipv4Net, String)>> {
        let networks = self
            .docker
            .list_networks(None::<ListNetworksOptions>)
            .await
            .map_err(docker_err)?;
        Ok(subnets_not_ours(networks, |l| self.ours(l)))
    }

    /// Creates the node's volume unless it exists. Returns whether it created it.
    async fn ensure_volume(&self, node: &NodeRef) -> Result<bool> {
        let name = node.volume_name();
        match self.docker.inspect_volume(&name).await {
            Ok(v)
                if self.ours(&v.labels)
                    && labels::node_ref_from_labels(&v.labels).ok().as_ref() == Some(node) =>
            {
                return Ok(false)
            }
            Ok(_) => return Err(RuntimeError::NameTaken { name }),
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(docker_err(e)),
        }
        let req = VolumeCreateRequest {
            name: Some(name),
            labels: Some(self.stamp(labels::volume_labels(node))),
            ..Default::default()
        };
        self.docker.create_volume(req).await.map_err(docker_err)?;
        Ok(true)
    }

    /// The container: limits, the swarm port (the only one published), the repo volume, the
    /// node directory's two bind mounts, and hardening: the image's node user, no
    /// capabilities, no privilege gain, a read-only root file system.
    fn container_body(&self, spec: &NodeSpec) -> ContainerCreateBody {
        let dir = self.node_dir(&spec.node);
        let port_bindings = HashMap::from([(
            format!("{SWARM_PORT}/tcp"),
            Some(vec![PortBinding {
                host_ip: Some(self.cfg.swarm_host_ip.clone()),
                // An empty host port lets Docker choose a free one.
                host_port: Some(spec.ports.swarm.map(|p| p.to_string()).unwrap_or_default()),
            }]),
        )]);
        let bind = |source: &std::path::Path, target: &str, read_only: bool| Mount {
            target: Some(target.into()),
            source: Some(source.display().to_string()),
            typ: Some(MountType::BIND),
            read_only: Some(read_only),
            ..Default::default()
        };
        let memory = i64::try_from(spec.resources.memory_bytes).unwrap_or(i64::MAX);
        ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: Some(kubo_config::daemon_command()),
            env: Some(kubo_config::container_env(spec)),
            labels: Some(self.stamp(labels::node_labels(spec))),
            hostname: Some(spec.node.container_name()),
            // As the image's node user from the start: the entrypoint's root steps (chown,
            // then dropping to that user) are skipped, so the container needs no capability.
            user: Some(format!("{NODE_UID}:{NODE_GID}")),
            exposed_ports: Some(vec![format!("{SWARM_PORT}/tcp")]),
            // No health check on one host: nothing acts on it here (a node that dies is
            // restarted on its die event, readiness is nexus's own `id` poll), and each check
            // is an `ipfs` start in the container, ≈ 48 ms of CPU (node and engine) every
            // interval: with 300 nodes, a quarter of a 2-core host. `NONE` also turns
            // off the image's own check, which dials a TCP API that does not listen. The swarm
            // runtime keeps one: the swarm replaces a task that fails it.
            healthcheck: Some(HealthConfig {
                test: Some(vec!["NONE".to_owned()]),
                ..Default::default()
            }),
            host_config: Some(HostConfig {
                nano_cpus: Some(spec.resources.nano_cpus()),
                memory: Some(memory),
                memory_swap: Some(memory),
                pids_limit: Some(self.cfg.pids_limit),
                port_bindings: Some(port_bindings),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec!["no-new-privileges:true".into()]),
                readonly_rootfs: Some(true),
                mounts: Some(vec![
                    Mount {
                        target: Some(REPO_PATH.into()),
                        source: Some(spec.node.volume_name()),
                        typ: Some(MountType::VOLUME),
                        ..Default::default()
                    },
                    bind(&dir.init_dir(), kubo_config::INIT_DIR, true),
                    bind(&dir.run_dir(), kubo_config::RUN_DIR, false),
                    Mount {
                        target: Some("/tmp".into()),
                        typ: Some(MountType::TMPFS),
                        tmpfs_options: Some(MountTmpfsOptions {
                            size_bytes: Some(TMP_BYTES),
                            mode: Some(0o1777),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ]),
                network_mode: Some(spec.node.network.docker_network()),
                log_config: Some(HostConfigLogConfig {
                    typ: Some("json-file".into()),
                    config: Some(HashMap::from([
                        ("max-size".into(), "10m".into()),
                        ("max-file".into(), "3".into()),
                    ])),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Waits until the node's RPC API answers `id` as `expected_peer` on its socket. The API is
    /// asked every 50 ms; Docker (exit, restarts) every fourth round, to keep the engine's load
    /// low while many nodes start.
    pub(super) async fn wait_ready(
        &self,
        node: &NodeRef,
        expected_peer: &str,
    ) -> Result<NodeRecord> {
        let name = node.container_name();
        let deadline = Instant::now() + self.cfg.ready_timeout;
        let mut first_restart_count = None;
        let api = self.node_dir(node).api();
        let mut running = false;
        let mut round: u32 = 0;
        loop {
            if !running || round.is_multiple_of(4) {
                let info = self.inspect_node(node).await?;
                let state = info.state.clone().unwrap_or_default();
                let restarts = info.restart_count.unwrap_or(0);
                let initial = *first_restart_count.get_or_insert(restarts);
                let exited = matches!(
                    state.status,
                    Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD)
                );
                if exited || state.restarting == Some(true) {
                    let reason = NotReadyReason::Exited(state.exit_code.unwrap_or(-1));
                    return Err(self.not_ready(node, reason).await);
                }
                if restarts > initial {
                    let reason = NotReadyReason::Restarted(restarts - initial);
                    return Err(self.not_ready(node, reason).await);
                }
                running = state.running == Some(true);
            }
            if running {
                if let Ok(id) = self.rpc.id(&api).await {
                    if id.id == expected_peer {
                        return self.record_from(self.inspect_node(node).await?);
                    }
                    let reason = NotReadyReason::WrongPeer {
                        expected: expected_peer.into(),
                        got: id.id,
                    };
                    return Err(self.not_ready(node, reason).await);
                }
            }
            if Instant::now() >= deadline {
                let reason = NotReadyReason::Timeout(self.cfg.ready_timeout);
                return Err(self.not_ready(node, reason).await);
            }
            tracing::trace!(container = %name, "waiting for node to answer");
            round = round.wrapping_add(1);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn not_ready(&self, node: &NodeRef, reason: NotReadyReason) -> RuntimeError {
        RuntimeError::NotReady {
            node: node.clone(),
            reason,
            logs: self.log_tail(&node.container_name()).await,
        }
    }

    /// Creates, uploads, starts and waits; undoes what it created if any step fails.
    pub(super) async fn create_inner(
        &self,
        spec: &NodeSpec,
        secrets: &NodeSecrets,
    ) -> Result<NodeRecord> {
        spec.validate()?;
        secrets.check(spec)?;
        let name = spec.node.container_name();
        if self.inspect_managed(&name).await?.is_some() {
            return Err(RuntimeError::AlreadyExists {
                node: spec.node.clone(),
            });
        }
        self.ensure_image(&spec.image).await?;
        // The orchestrator prepares the network on its subnet first; a caller that did not gets
        // one on Docker's default pools.
        let created_network = self
            .ensure_network(&NetworkSpec {
                name: spec.node.network.clone(),
                subnet: None,
            })
            .await?;
        let created_volume = match self.ensure_volume(&spec.node).await {
            Ok(v) => v,
            Err(e) => {
                self.rollback(spec, None, false, created_network).await;
                return Err(e);
            }
        };
        let dir = self.node_dir(&spec.node);
        if let Err(e) = dir.prepare(&self.cfg.node_dir, spec, secrets) {
            self.rollback(spec, None, created_volume, created_network)
                .await;
            return Err(RuntimeError::Bundle(e.to_string()));
        }
        let container_id = match self.create_container(spec, &name).await {
            Ok(id) => id,
            Err(e) => {
                self.rollback(spec, None, created_volume, created_network)
                    .await;
                return Err(e);
            }
        };
        let result = self.start_and_wait(spec, &container_id).await;
        // Installed into the repo by now (or the node is rolled back): no copy stays behind.
        if let Err(e) = dir.remove_secrets() {
            tracing::error!(node = %spec.node, error = %e, "could not remove the node's secret files");
        }
        if result.is_err() {
            self.rollback(spec, Some(&container_id), created_volume, created_network)
                .await;
        }
        result
    }

    /// Removes what a failed create made: only objects this call created, the container by id.
    async fn rollback(
        &self,
        spec: &NodeSpec,
        container_id: Option<&str>,
        created_volume: bool,
        created_network: bool,
    ) {
        tracing::warn!(node = %spec.node, "node failed to start; removing what was created");
        if let Some(id) = container_id {
            if let Err(e) = self.remove_container_by_name(id).await {
                tracing::error!(node = %spec.node, error = %e, "rollback: container not removed");
            }
        }
        // No container uses the directory any more (this call made the only one).
        if let Err(e) = self.node_dir(&spec.node).remove() {
            tracing::error!(node = %spec.node, error = %e, "rollback: node directory not removed");
        }
        if created_volume {
            if let Err(e) = self.remove_volume(&spec.node.volume_name()).await {
                tracing::error!(node = %spec.node, error = %e, "rollback: volume not removed");
            }
        }
        if created_network {
            if let Err(e) = self.remove_network_if_unused(&spec.node.network).await {
                tracing::error!(node = %spec.node, error = %e, "rollback: network not removed");
            }
        }
    }

    /// Creates the container; returns its id.
    async fn create_container(&self, spec: &NodeSpec, name: &str) -> Result<String> {
        let opts = CreateContainerOptionsBuilder::default().name(name).build();
        match self
            .docker
            .create_container(Some(opts), self.container_body(spec))
            .await
        {
            Ok(resp) => Ok(resp.id),
            // Lost a race, or a foreign container took the name meanwhile.
            Err(e) if is_status(&e, 409) => Err(match self.inspect_managed(name).await {
                Ok(Some(_)) => RuntimeError::AlreadyExists {
                    node: spec.node.clone(),
                },
                _ => RuntimeError::NameTaken { name: name.into() },
            }),
            Err(e) => Err(docker_err(e)),
        }
    }

    /// Starts the created container and waits until it is ready.
    async fn start_and_wait(&self, spec: &NodeSpec, container_id: &str) -> Result<NodeRecord> {
        if let Err(e) = self.docker.start_container(container_id, None).await {
            let in_use = port_in_use(&e);
            let err = docker_err(e);
            return Err(match (in_use, spec.ports.swarm) {
                // An outgoing connection or another program bound the port after nexus
                // checked it: the orchestrator moves the node to another port.
                (Some(detail), Some(port)) => RuntimeError::PortTaken { port, detail },
                _ => err,
            });
        }
        tracing::info!(node = %spec.node, peer = %spec.peer_id, "node container started");
        self.wait_ready(&spec.node, &spec.peer_id).await
    }

    /// The node's directory on the host.
    pub(super) fn node_dir(&self, node: &NodeRef) -> NodeDir {
        NodeDir::new(&self.cfg.node_dir, node)
    }
}
