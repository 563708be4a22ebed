//! Creating a node on the swarm: the network's overlay (on the subnet the orchestrator
//! allocated), the host it goes to ([`super::hosts::place`], under the placement lock), its
//! directories there (through the gate), its secrets and config, its service (one replica
//! pinned to that host, `dnsrr`, the swarm port published in host mode, limits and
//! reservations, hardened), readiness (the task runs and `id` answers as the expected peer
//! through the gate), and the roll-back of what a failed create made. Must not touch objects
//! that are not ours.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum,
    EndpointSpec, EndpointSpecModeEnum, HealthConfig, Limit, Mount, MountTmpfsOptions, MountType,
    NetworkAttachmentConfig, NetworkCreateRequest, ResourceObject, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, TaskSpec, TaskSpecContainerSpec, TaskSpecContainerSpecConfigs,
    TaskSpecContainerSpecFile, TaskSpecContainerSpecFile1, TaskSpecContainerSpecSecrets,
    TaskSpecLogDriver, TaskSpecPlacement, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::ListNetworksOptions;
use ipnet::Ipv4Net;

use super::hosts::{place, Host};
use super::objects::{repo_dir, run_dir, Ref, HOST_LABEL};
use super::observe::container_started;
use super::{SwarmRuntime, REPO_PATH};
use crate::node::docker::{docker_err, ipam_on, is_status, overlap_detail, subnets_not_ours};
use crate::node::kubo_config::{self, NODE_GID, NODE_UID};
use crate::node::labels;
use crate::node::runtime::{NodeRecord, NotReadyReason, Result, RuntimeError};
use crate::node::spec::{NetworkSpec, NodeRef, NodeSecrets, NodeSpec, SWARM_PORT};

/// Size of the node's `/tmp`.
const TMP_BYTES: i64 = 64 << 20;
/// How long a host's gate may take to answer before a node is placed there.
const GATE_WAIT: Duration = Duration::from_secs(60);

impl SwarmRuntime {
    /// Creates the network's overlay on `spec.subnet` unless it exists (ours is kept).
    pub(super) async fn ensure_overlay(&self, spec: &NetworkSpec) -> Result<bool> {
        let _guard = self.network_lock.lock().await;
        let name = spec.name.docker_network();
        match self.docker.inspect_network(&name, None).await {
            Ok(n) if n.labels.as_ref().is_some_and(|l| self.ours(l)) => return Ok(false),
            Ok(_) => return Err(RuntimeError::NameTaken { name }),
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(docker_err(e)),
        }
        let mut options = HashMap::new();
        if self.cfg.encrypted {
            options.insert("encrypted".to_string(), String::new());
        }
        let req = NetworkCreateRequest {
            name: name.clone(),
            driver: Some("overlay".into()),
            attachable: Some(true),
            ipam: ipam_on(spec.subnet),
            options: Some(options),
            labels: Some(self.stamp(labels::network_labels(&spec.name))),
            ..Default::default()
        };
        match self.docker.create_network(req).await {
            Ok(_) => {
                tracing::debug!(network = %spec.name, subnet = ?spec.subnet, "overlay created");
                Ok(true)
            }
            Err(e) if is_status(&e, 409) => Ok(false),
            Err(e) => match (spec.subnet, overlap_detail(&e)) {
                (Some(subnet), Some(detail)) => Err(RuntimeError::SubnetTaken { subnet, detail }),
                _ => Err(docker_err(e)),
            },
        }
    }

    /// The IPv4 subnets of networks on the manager that are not this instance's.
    pub(super) async fn foreign_subnets_inner(&self) -> Result<Vec<(Ipv4Net, String)>> {
        let networks = self
            .docker
            .list_networks(None::<ListNetworksOptions>)
            .await
            .map_err(docker_err)?;
        Ok(subnets_not_ours(networks, |l| self.ours(l)))
    }

    /// The service of one node: everything in its spec, pinned to `host`.
    fn service_spec(
        &self,
        spec: &NodeSpec,
        host: &Host,
        secrets: &[Ref],
        configs: &[Ref],
    ) -> ServiceSpec {
        let key = self.key(&spec.node);
        let bind = |dir: String, target: &str| Mount {
            target: Some(target.into()),
            source: Some(self.cfg.host_dir.join(dir).display().to_string()),
            typ: Some(MountType::BIND),
            ..Default::default()
        };
        let memory = i64::try_from(spec.resources.memory_bytes).unwrap_or(i64::MAX);
        let mut l = self.stamp(labels::node_labels(spec));
        l.insert(HOST_LABEL.into(), host.id.clone());
        ServiceSpec {
            name: Some(spec.node.container_name()),
            labels: Some(l),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(spec.image.clone()),
                    args: Some(kubo_config::daemon_command()),
                    env: Some(kubo_config::container_env(spec)),
                    hostname: Some(spec.node.container_name()),
                    user: Some(format!("{NODE_UID}:{NODE_GID}")),
                    read_only: Some(true),
                    capability_drop: Some(vec!["ALL".into()]),
                    stop_grace_period: i64::try_from(self.cfg.stop_timeout.as_nanos()).ok(),
                    health_check: Some(HealthConfig {
                        test: Some(kubo_config::health_command()),
                        interval: Some(30_000_000_000),
                        timeout: Some(5_000_000_000),
                        start_period: Some(5_000_000_000),
                        retries: Some(3),
                        ..Default::default()
                    }),
                    mounts: Some(vec![
                        bind(repo_dir(&key, &host.short_id()), REPO_PATH),
                        bind(run_dir(&key), kubo_config::RUN_DIR),
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
                    secrets: Some(
                        secrets
                            .iter()
                            .map(|r| TaskSpecContainerSpecSecrets {
                                file: Some(TaskSpecContainerSpecFile {
                                    name: Some(r.file.clone()),
                                    uid: Some(NODE_UID.to_string()),
                                    gid: Some(NODE_GID.to_string()),
                                    mode: Some(0o400),
                                }),
                                secret_name: Some(r.name.clone()),
                                secret_id: Some(r.id.clone()),
                            })
                            .collect(),
                    ),
                    configs: Some(
                        configs
                            .iter()
                            .map(|r| TaskSpecContainerSpecConfigs {
                                file: Some(TaskSpecContainerSpecFile1 {
                                    name: Some(format!("{}/{}", kubo_config::INIT_DIR, r.file)),
                                    uid: Some("0".into()),
                                    gid: Some("0".into()),
                                    mode: Some(0o555),
                                }),
                                config_name: Some(r.name.clone()),
                                config_id: Some(r.id.clone()),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                    ..Default::default()
                }),
                resources: Some(TaskSpecResources {
                    limits: Some(Limit {
                        nano_cpus: Some(spec.resources.nano_cpus()),
                        memory_bytes: Some(memory),
                        pids: Some(self.cfg.pids_limit),
                    }),
                    reservations: Some(ResourceObject {
                        memory_bytes: Some(memory),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                restart_policy: Some(TaskSpecRestartPolicy {
                    condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                    delay: Some(1_000_000_000),
                    max_attempts: Some(0),
                    window: None,
                }),
                placement: Some(TaskSpecPlacement {
                    constraints: Some(vec![format!("node.id=={}", host.id)]),
                    ..Default::default()
                }),
                networks: Some(vec![NetworkAttachmentConfig {
                    target: Some(spec.node.network.docker_network()),
                    aliases: Some(vec![spec.node.container_name()]),
                    ..Default::default()
                }]),
                log_driver: Some(TaskSpecLogDriver {
                    name: Some("json-file".into()),
                    options: Some(HashMap::from([
                        ("max-size".into(), "10m".into()),
                        ("max-file".into(), "3".into()),
                    ])),
                }),
                ..Default::default()
            }),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
                ..Default::default()
            }),
            endpoint_spec: Some(EndpointSpec {
                mode: Some(EndpointSpecModeEnum::DNSRR),
                ports: Some(vec![EndpointPortConfig {
                    protocol: Some(EndpointPortConfigProtocolEnum::TCP),
                    target_port: Some(i64::from(SWARM_PORT)),
                    published_port: spec.ports.swarm.map(i64::from),
                    publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        }
    }

    /// Picks the host for a new node: where its data is if it had a host before and that
    /// host is up (`prefer`), else spread.
    async fn choose_host(&self, node: &NodeRef, prefer: Option<&str>) -> Result<Host> {
        let hosts = self.hosts().await?;
        if let Some(id) = prefer {
            if let Some(h) = hosts.iter().find(|h| h.id == id && h.up) {
                return Ok(h.clone());
            }
        }
        let placed = self.placements().await?;
        let siblings: Vec<String> = placed
            .iter()
            .filter(|(n, _)| n.network == node.network && n != node)
            .map(|(_, h)| h.clone())
            .collect();
        let mut load: HashMap<String, usize> = HashMap::new();
        for (_, h) in &placed {
            *load.entry(h.clone()).or_default() += 1;
        }
        place(&hosts, &siblings, &load).cloned().ok_or_else(|| {
            RuntimeError::Docker(format!(
                "no swarm host can take node {node}: {} host(s), none both ready and active \
                 (`docker node ls` shows them; a host labelled io.nexus.nodes=false takes none)",
                hosts.len()
            ))
        })
    }

    /// Creates the node on a host (its previous host when it has data there and is up),
    /// starts it and waits until it is ready; undoes what it created on failure.
    pub(super) async fn create_inner(
        &self,
        spec: &NodeSpec,
        secrets: &NodeSecrets,
        prefer: Option<&str>,
    ) -> Result<NodeRecord> {
        spec.validate()?;
        secrets.check(spec)?;
        if self.find_service(&spec.node).await?.is_some() {
            return Err(RuntimeError::AlreadyExists {
                node: spec.node.clone(),
            });
        }
        let created_network = self
            .ensure_overlay(&NetworkSpec {
                name: spec.node.network.clone(),
                subnet: None,
            })
            .await?;
        let key = self.key(&spec.node);
        let guard = self.place_lock.lock().await;
        let marked = match prefer {
            Some(h) => Some(h.to_owned()),
            None => self.placement(&spec.node).await?,
        };
        let host = match self.choose_host(&spec.node, marked.as_deref()).await {
            Ok(h) => h,
            Err(e) => {
                drop(guard);
                self.undo_network(spec, created_network).await;
                return Err(e);
            }
        };
        let made = async {
            self.prepare_dirs(
                &host,
                &[run_dir(&key), repo_dir(&key, &host.short_id())],
                GATE_WAIT,
            )
            .await?;
            self.mark_placement(&spec.node, &host.id).await?;
            let (sec, conf) = self.make_bundle(spec, secrets).await?;
            let body = self.service_spec(spec, &host, &sec, &conf);
            match self.docker.create_service(body, None).await {
                Ok(_) => Ok(()),
                Err(e) if is_status(&e, 409) => Err(RuntimeError::AlreadyExists {
                    node: spec.node.clone(),
                }),
                Err(e) => Err(docker_err(e)),
            }
        }
        .await;
        drop(guard);
        // It had data if it goes back to the host its marker named.
        let had_data = marked.as_deref() == Some(host.id.as_str());
        if let Err(e) = made {
            self.rollback(spec, &host, had_data, created_network).await;
            return Err(e);
        }
        tracing::info!(node = %spec.node, host = %host.name, peer = %spec.peer_id, "node service created");
        match self.wait_ready(&spec.node, &spec.peer_id).await {
            Ok(r) => Ok(r),
            Err(e) => {
                self.rollback(spec, &host, had_data, created_network).await;
                Err(e)
            }
        }
    }

    /// Removes what a failed create made: the service, its secrets, its directories on the
    /// host, the network if this call made it.
    async fn rollback(&self, spec: &NodeSpec, host: &Host, had_data: bool, created_network: bool) {
        tracing::warn!(node = %spec.node, host = %host.name, "node failed to start; removing what was created");
        if let Err(e) = self.delete_service(&spec.node).await {
            tracing::error!(node = %spec.node, error = %e, "rollback: service not removed");
        }
        if let Err(e) = self.remove_bundle(&spec.node, &[]).await {
            tracing::error!(node = %spec.node, error = %e, "rollback: secrets not removed");
        }
        // A node that had a repo on this host keeps it (and its marker); a new one leaves
        // nothing.
        if !had_data {
            if let Err(e) = self.forget(&spec.node).await {
                tracing::error!(node = %spec.node, error = %e, "rollback: placement not removed");
            }
            let key = self.key(&spec.node);
            if let Err(e) = self
                .remove_dirs(host, &[run_dir(&key), repo_dir(&key, &host.short_id())])
                .await
            {
                tracing::error!(node = %spec.node, error = %e, "rollback: directories not removed");
            }
        }
        self.undo_network(spec, created_network).await;
    }

    async fn undo_network(&self, spec: &NodeSpec, created: bool) {
        if created {
            if let Err(e) = self.remove_overlay_if_unused(&spec.node.network).await {
                tracing::error!(node = %spec.node, error = %e, "rollback: network not removed");
            }
        }
    }

    /// Waits until the node's task runs and its RPC API answers `id` as `expected_peer`
    /// through its host's gate; fails early when the task fails or is rejected.
    pub(super) async fn wait_ready(
        &self,
        node: &NodeRef,
        expected_peer: &str,
    ) -> Result<NodeRecord> {
        let deadline = Instant::now() + self.cfg.ready_timeout;
        let mut seen_task: Option<String> = None;
        // The node was just placed on a host that is up; its hosts are read once.
        let hosts = self.hosts().await?;
        loop {
            let (record, task) = self.record_and_task(node, &hosts).await?;
            if let Some(t) = &task {
                let state = t.status.as_ref().and_then(|s| s.state);
                let id = t.id.clone().unwrap_or_default();
                if let Some(TaskState::FAILED | TaskState::REJECTED) = state {
                    let code = t
                        .status
                        .as_ref()
                        .and_then(|s| s.container_status.as_ref())
                        .and_then(|c| c.exit_code)
                        .unwrap_or(-1);
                    return Err(self.not_ready(node, NotReadyReason::Exited(code), t).await);
                }
                // A second task means the first one died and the swarm restarted it.
                if let Some(first) = &seen_task {
                    if *first != id && container_started(state) {
                        return Err(self.not_ready(node, NotReadyReason::Restarted(1), t).await);
                    }
                } else if !id.is_empty() {
                    seen_task = Some(id);
                }
                if container_started(state) {
                    if let Some(ep) = record.endpoints.as_ref() {
                        if let Ok(id) = self.rpc.id(&ep.api).await {
                            if id.id == expected_peer {
                                return Ok(record);
                            }
                            let reason = NotReadyReason::WrongPeer {
                                expected: expected_peer.into(),
                                got: id.id,
                            };
                            return Err(self.not_ready(node, reason, t).await);
                        }
                    }
                }
            }
            if Instant::now() >= deadline {
                let reason = NotReadyReason::Timeout(self.cfg.ready_timeout);
                return Err(RuntimeError::NotReady {
                    node: node.clone(),
                    reason,
                    logs: self.service_log_tail(node).await,
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn not_ready(
        &self,
        node: &NodeRef,
        reason: NotReadyReason,
        task: &bollard::models::Task,
    ) -> RuntimeError {
        let mut logs = self.service_log_tail(node).await;
        if let Some(err) = task.status.as_ref().and_then(|s| s.err.clone()) {
            logs.push_str(&format!("\n(swarm: {err})"));
        }
        RuntimeError::NotReady {
            node: node.clone(),
            reason,
            logs,
        }
    }
}
