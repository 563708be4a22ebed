//! Creating a node: the network's bridge network and the node's volume (both labelled), the
//! container with its limits and port bindings, the pre-start file upload, start, readiness
//! (`id` answers with the expected peer id), and the roll-back of what a failed create made.
//! Must not touch an object that is not ours, nor remove anything this call did not create.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, HostConfig, HostConfigLogConfig, Mount,
    MountType, NetworkCreateRequest, PortBinding, RestartPolicy, RestartPolicyNameEnum,
    VolumeCreateRequest,
};
use bollard::query_parameters::{CreateContainerOptionsBuilder, UploadToContainerOptions};

use super::client::{docker_err, is_status};
use super::observe::host_port;
use super::{DockerRuntime, REPO_PATH};
use crate::node::kubo_config::{self, BundleFile};
use crate::node::labels;
use crate::node::runtime::{NodeRecord, NotReadyReason, Result, RuntimeError};
use crate::node::spec::{
    NetworkName, NodeRef, NodeSecrets, NodeSpec, API_PORT, GATEWAY_PORT, SWARM_PORT,
};

fn tar_of(files: &[BundleFile]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs: Vec<(String, u64, u64, u32)> = Vec::new();
    for f in files {
        if let Some((dir, _)) = f.path.trim_start_matches('/').rsplit_once('/') {
            if !dirs.iter().any(|d| d.0 == dir) {
                // Secret directories belong to the node user and are closed to others.
                let (uid, gid, mode) = if f.mode == 0o400 {
                    (f.uid, f.gid, 0o500)
                } else {
                    (0, 0, 0o755)
                };
                dirs.push((dir.to_owned(), uid, gid, mode));
            }
        }
    }
    let mtime = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for (dir, uid, gid, mode) in &dirs {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_path(format!("{dir}/"))?;
        h.set_mode(*mode);
        h.set_uid(*uid);
        h.set_gid(*gid);
        h.set_mtime(mtime);
        h.set_size(0);
        h.set_cksum();
        builder.append(&h, std::io::empty())?;
    }
    for f in files {
        let mut h = tar::Header::new_gnu();
        h.set_path(f.path.trim_start_matches('/'))?;
        h.set_mode(f.mode);
        h.set_uid(f.uid);
        h.set_gid(f.gid);
        h.set_mtime(mtime);
        h.set_size(f.contents.len() as u64);
        h.set_cksum();
        builder.append(&h, f.contents.as_slice())?;
    }
    builder.into_inner()
}

impl DockerRuntime {
    /// Creates the network's bridge network unless it exists. Returns whether it created it.
    async fn ensure_network(&self, network: &NetworkName) -> Result<bool> {
        let _guard = self.network_lock.lock().await;
        let name = network.docker_network();
        match self.docker.inspect_network(&name, None).await {
            Ok(n) if n.labels.as_ref().is_some_and(|l| self.ours(l)) => return Ok(false),
            Ok(_) => return Err(RuntimeError::NameTaken { name }),
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(docker_err(e)),
        }
        let req = NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".into()),
            labels: Some(self.stamp(labels::network_labels(network))),
            ..Default::default()
        };
        match self.docker.create_network(req).await {
            Ok(_) => Ok(true),
            // Another node of the same network created it concurrently.
            Err(e) if is_status(&e, 409) => Ok(false),
            Err(e) => Err(docker_err(e)),
        }
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

    fn container_body(&self, spec: &NodeSpec) -> ContainerCreateBody {
        let binding = |ip: &str, port: Option<u16>| {
            Some(vec![PortBinding {
                host_ip: Some(ip.to_owned()),
                // An empty host port lets Docker choose a free one.
                host_port: Some(port.map(|p| p.to_string()).unwrap_or_default()),
            }])
        };
        let port_bindings = HashMap::from([
            (
                format!("{SWARM_PORT}/tcp"),
                binding(&self.cfg.swarm_host_ip, spec.ports.swarm),
            ),
            (
                format!("{API_PORT}/tcp"),
                binding(&self.cfg.private_host_ip, spec.ports.api),
            ),
            (
                format!("{GATEWAY_PORT}/tcp"),
                binding(&self.cfg.private_host_ip, spec.ports.gateway),
            ),
        ]);
        let memory = i64::try_from(spec.resources.memory_bytes).unwrap_or(i64::MAX);
        ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: Some(kubo_config::daemon_command()),
            env: Some(kubo_config::container_env(spec)),
            labels: Some(self.stamp(labels::node_labels(spec))),
            hostname: Some(spec.node.container_name()),
            exposed_ports: Some(vec![
                format!("{SWARM_PORT}/tcp"),
                format!("{API_PORT}/tcp"),
                format!("{GATEWAY_PORT}/tcp"),
            ]),
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
                mounts: Some(vec![Mount {
                    target: Some(REPO_PATH.into()),
                    source: Some(spec.node.volume_name()),
                    typ: Some(MountType::VOLUME),
                    ..Default::default()
                }]),
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

    /// Waits until the node's RPC API answers `id` as `expected_peer`. The API is asked every
    /// 50 ms; Docker (exit, restarts, the published port) every fourth round, to keep the
    /// engine's load low while many nodes start.
    pub(super) async fn wait_ready(
        &self,
        node: &NodeRef,
        expected_peer: &str,
    ) -> Result<NodeRecord> {
        let name = node.container_name();
        let deadline = Instant::now() + self.cfg.ready_timeout;
        let mut first_restart_count = None;
        let mut api = None;
        let mut round: u32 = 0;
        loop {
            if api.is_none() || round.is_multiple_of(4) {
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
                api = match state.running {
                    Some(true) => host_port(&info, API_PORT)
                        .map(|port| SocketAddr::new(self.private_connect_ip(), port)),
                    _ => None,
                };
            }
            if let Some(addr) = api {
                if let Ok(id) = self.rpc.id(addr).await {
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
        let created_network = self.ensure_network(&spec.node.network).await?;
        let created_volume = match self.ensure_volume(&spec.node).await {
            Ok(v) => v,
            Err(e) => {
                self.rollback(spec, None, false, created_network).await;
                return Err(e);
            }
        };
        let container_id = match self.create_container(spec, &name).await {
            Ok(id) => id,
            Err(e) => {
                self.rollback(spec, None, created_volume, created_network)
                    .await;
                return Err(e);
            }
        };
        let result = self.install_and_start(spec, secrets, &container_id).await;
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

    /// Uploads the node's files into the created container, starts it and waits until ready.
    async fn install_and_start(
        &self,
        spec: &NodeSpec,
        secrets: &NodeSecrets,
        container_id: &str,
    ) -> Result<NodeRecord> {
        let files =
            kubo_config::bundle(spec, secrets).map_err(|e| RuntimeError::Bundle(e.to_string()))?;
        let archive = tar_of(&files).map_err(|e| RuntimeError::Bundle(e.to_string()))?;
        let upload = UploadToContainerOptions {
            path: "/".into(),
            ..Default::default()
        };
        self.docker
            .upload_to_container(
                container_id,
                Some(upload),
                bollard::body_full(archive.into()),
            )
            .await
            .map_err(docker_err)?;
        self.docker
            .start_container(container_id, None)
            .await
            .map_err(docker_err)?;
        tracing::info!(node = %spec.node, peer = %spec.peer_id, "node container started");
        self.wait_ready(&spec.node, &spec.peer_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_carries_owners_and_modes() {
        let files = vec![
            BundleFile {
                path: "/container-init.d/00-nexus.sh".into(),
                mode: 0o555,
                uid: 0,
                gid: 0,
                contents: b"#!/bin/sh\n".to_vec(),
            },
            BundleFile {
                path: "/nexus/swarm.key".into(),
                mode: 0o400,
                uid: 1000,
                gid: 100,
                contents: b"secret".to_vec(),
            },
        ];
        let bytes = tar_of(&files).unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let entries: Vec<(String, u32, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                )
            })
            .collect();
        assert!(entries.contains(&("container-init.d/".into(), 0o755, 0)));
        assert!(entries.contains(&("nexus/".into(), 0o500, 1000)));
        assert!(entries.contains(&("container-init.d/00-nexus.sh".into(), 0o555, 0)));
        assert!(entries.contains(&("nexus/swarm.key".into(), 0o400, 1000)));
    }
}
