//! The Docker implementation of [`NodeRuntime`], through bollard.
//!
//! Owns every call nexus makes to the Docker Engine API for nodes: the per-network bridge
//! network, the per-node volume and container, the pre-start file upload, readiness, stats
//! and events. It touches only objects labelled `io.nexus.managed=true`; anything else with a
//! colliding name is reported, never modified. It must not decide which nodes should exist
//! (the orchestrator does) and keeps no state of its own: Docker is the record.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ContainerUpdateBody,
    EventMessage, HostConfig, HostConfigLogConfig, Mount, MountType, NetworkCreateRequest,
    PortBinding, RestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptions, ListContainersOptions,
    ListVolumesOptions, LogsOptions, RemoveContainerOptions, RemoveVolumeOptions, StatsOptions,
    StopContainerOptions, UploadToContainerOptions,
};
use bollard::Docker;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};

use super::kubo_config::{self, BundleFile};
use super::labels::{self, INSTANCE};
use super::rpc::KuboRpc;
use super::runtime::{
    NodeDiagnostics, NodeEvent, NodeEventKind, NodePorts, NodeRecord, NodeRuntime, NodeState,
    NodeStats, NotReadyReason, Result, RuntimeError,
};
use super::spec::{
    NetworkName, NodeRef, NodeSecrets, NodeSpec, SpecError, API_PORT, GATEWAY_PORT, SWARM_PORT,
};

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
    /// Host address the RPC API and gateway are published on (loopback: only the delegator
    /// and nexus itself may reach them).
    pub private_host_ip: String,
    /// How many log lines an error carries when a node fails to start.
    pub log_tail: usize,
    /// Docker's `PidsLimit` per node container.
    pub pids_limit: i64,
    /// Owner scope: this runtime creates, lists, watches and removes only objects labelled
    /// `io.nexus.instance=<instance>`, so several nexus installations (or test runs) can
    /// share one Docker host without touching each other's nodes.
    pub instance: String,
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
            private_host_ip: "127.0.0.1".into(),
            log_tail: 40,
            pids_limit: 4096,
            instance: "default".into(),
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

fn status_of(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn is_status(e: &DockerError, code: u16) -> bool {
    status_of(e) == Some(code)
}

/// Maps a bollard error: transport failures mean the daemon is unreachable.
/// Every failed Docker call passes here (or through `connect`), so this is where they are counted.
fn docker_err(e: DockerError) -> RuntimeError {
    let err = docker_err_kind(e);
    count_docker_error(&err);
    err
}

fn count_docker_error(e: &RuntimeError) {
    let kind = match e {
        RuntimeError::DockerUnavailable { .. } => "unavailable",
        _ => "api",
    };
    metrics::counter!(crate::telemetry::names::DOCKER_ERRORS, "kind" => kind).increment(1);
}

fn docker_err_kind(e: DockerError) -> RuntimeError {
    match e {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => RuntimeError::Docker(format!("HTTP {status_code}: {message}")),
        DockerError::SocketNotFoundError(_)
        | DockerError::HyperLegacyError { .. }
        | DockerError::IOError { .. }
        | DockerError::RequestTimeoutError => RuntimeError::DockerUnavailable {
            detail: e.to_string(),
        },
        other => RuntimeError::Docker(other.to_string()),
    }
}

fn labels_of(info: &ContainerInspectResponse) -> HashMap<String, String> {
    info.config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default()
}

fn host_port(info: &ContainerInspectResponse, container_port: u16) -> Option<u16> {
    info.network_settings
        .as_ref()?
        .ports
        .as_ref()?
        .get(&format!("{container_port}/tcp"))?
        .as_ref()?
        .iter()
        .find_map(|b| b.host_port.as_deref()?.parse().ok())
}

fn state_of(info: &ContainerInspectResponse) -> NodeState {
    let Some(state) = info.state.as_ref() else {
        return NodeState::Unknown;
    };
    match state.status {
        Some(ContainerStateStatusEnum::CREATED) => NodeState::Created,
        Some(ContainerStateStatusEnum::RUNNING) => NodeState::Running,
        Some(ContainerStateStatusEnum::RESTARTING) => NodeState::Restarting,
        Some(ContainerStateStatusEnum::PAUSED) => NodeState::Paused,
        Some(ContainerStateStatusEnum::EXITED) => NodeState::Exited {
            code: state.exit_code.unwrap_or(-1),
        },
        Some(ContainerStateStatusEnum::DEAD) => NodeState::Dead,
        _ => NodeState::Unknown,
    }
}

fn started_at(info: &ContainerInspectResponse) -> Option<String> {
    let s = info.state.as_ref()?.started_at.clone()?;
    // Docker reports the zero time for containers that never started.
    (!s.starts_with("0001-")).then_some(s)
}

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
    /// Whether a Docker object's labels say it is a node object of this instance.
    fn ours(&self, labels: &HashMap<String, String>) -> bool {
        labels::is_managed(labels) && labels.get(INSTANCE) == Some(&self.cfg.instance)
    }

    /// Adds this instance's owner label.
    fn stamp(&self, mut labels: HashMap<String, String>) -> HashMap<String, String> {
        labels.insert(INSTANCE.into(), self.cfg.instance.clone());
        labels
    }

    /// Docker label filters selecting this instance's objects.
    fn owner_labels(&self) -> Vec<String> {
        vec![
            labels::managed_filter(),
            format!("{INSTANCE}={}", self.cfg.instance),
        ]
    }

    /// Docker filter selecting one network's objects of this instance.
    fn network_filter(&self, network: &NetworkName) -> HashMap<String, Vec<String>> {
        let mut l = self.owner_labels();
        l.push(format!("{}={network}", labels::NETWORK));
        HashMap::from([("label".to_string(), l)])
    }

    /// Our nodes among the containers `filters` selects, rebuilt from their labels.
    async fn list_matching(
        &self,
        filters: HashMap<String, Vec<String>>,
    ) -> Result<Vec<NodeRecord>> {
        let containers = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(docker_err)?;
        let mut records = Vec::new();
        for c in containers {
            let Some(id) = c.id else { continue };
            let info = match self.docker.inspect_container(&id, None).await {
                Ok(info) => info,
                Err(e) if is_status(&e, 404) => continue, // removed meanwhile
                Err(e) => return Err(docker_err(e)),
            };
            if !self.ours(&labels_of(&info)) {
                continue;
            }
            match self.record_from(info) {
                Ok(r) => {
                    let name = c.names.unwrap_or_default().join(",");
                    if name.trim_start_matches('/') != r.spec.node.container_name() {
                        tracing::warn!(container = %name, "nexus-labelled container with an unexpected name; ignored");
                        continue;
                    }
                    records.push(r);
                }
                Err(e) => tracing::warn!(container = %id, error = %e, "ignored"),
            }
        }
        records.sort_by(|a, b| a.spec.node.cmp(&b.spec.node));
        Ok(records)
    }

    /// Connects to the Docker daemon at `cfg.endpoint` (else `DOCKER_HOST`, else the local
    /// socket) and checks it answers.
    pub async fn connect(cfg: DockerRuntimeConfig) -> Result<Self> {
        let unavailable = |e: DockerError| {
            let err = RuntimeError::DockerUnavailable {
                detail: e.to_string(),
            };
            count_docker_error(&err);
            err
        };
        let valid = !cfg.instance.is_empty()
            && cfg.instance.len() <= 63
            && cfg
                .instance
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(RuntimeError::Spec(SpecError::BadName(cfg.instance.clone())));
        }
        let docker = match &cfg.endpoint {
            Some(host) => Docker::connect_with_host(host),
            None => Docker::connect_with_defaults(),
        }
        .map_err(unavailable)?;
        let docker = docker.negotiate_version().await.map_err(unavailable)?;
        docker.ping().await.map_err(unavailable)?;
        let rpc = KuboRpc::new(Duration::from_secs(3));
        Ok(Self {
            docker,
            rpc,
            cfg,
            network_lock: Default::default(),
        })
    }

    /// Fails with [`RuntimeError::ImageMissing`] unless `image` is present locally.
    pub async fn ensure_image(&self, image: &str) -> Result<()> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Err(RuntimeError::ImageMissing {
                image: image.to_owned(),
            }),
            Err(e) => Err(docker_err(e)),
        }
    }

    /// Pulls `image`, reading the progress stream to its end so the image is complete before
    /// anything uses it. `progress` receives one line per status change.
    pub async fn pull_image(&self, image: &str, mut progress: impl FnMut(&str)) -> Result<()> {
        let opts = CreateImageOptionsBuilder::default()
            .from_image(image)
            .build();
        let mut stream = self.docker.create_image(Some(opts), None, None);
        let mut last = String::new();
        while let Some(item) = stream.next().await {
            let info = item.map_err(docker_err)?;
            if let Some(status) = info.status {
                if status != last {
                    progress(&status);
                    last = status;
                }
            }
        }
        Ok(())
    }

    fn private_connect_ip(&self) -> IpAddr {
        match self.cfg.private_host_ip.parse::<IpAddr>() {
            Ok(ip) if !ip.is_unspecified() => ip,
            _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    /// Inspects a container by name: `None` if absent, an error if it exists but is not ours.
    async fn inspect_managed(&self, name: &str) -> Result<Option<ContainerInspectResponse>> {
        match self.docker.inspect_container(name, None).await {
            Ok(info) if self.ours(&labels_of(&info)) => Ok(Some(info)),
            Ok(_) => Err(RuntimeError::NameTaken { name: name.into() }),
            Err(e) if is_status(&e, 404) => Ok(None),
            Err(e) => Err(docker_err(e)),
        }
    }

    async fn inspect_node(&self, node: &NodeRef) -> Result<ContainerInspectResponse> {
        self.inspect_managed(&node.container_name())
            .await?
            .ok_or_else(|| RuntimeError::NotFound { node: node.clone() })
    }

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

    /// The last log lines of a container, for error messages.
    async fn log_tail(&self, name: &str) -> String {
        let opts = LogsOptions {
            stdout: true,
            stderr: true,
            tail: self.cfg.log_tail.to_string(),
            ..Default::default()
        };
        let mut out = String::new();
        let mut stream = self.docker.logs(name, Some(opts));
        while let Some(Ok(chunk)) = stream.next().await {
            out.push_str(&chunk.to_string());
            if out.len() > 16 * 1024 {
                break;
            }
        }
        out
    }

    /// Waits until the node's RPC API answers `id` as `expected_peer`. The API is asked every
    /// 50 ms; Docker (exit, restarts, the published port) every fourth round, to keep the
    /// engine's load low while many nodes start.
    async fn wait_ready(&self, node: &NodeRef, expected_peer: &str) -> Result<NodeRecord> {
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

    fn record_from(&self, info: ContainerInspectResponse) -> Result<NodeRecord> {
        let name = info.name.clone().unwrap_or_default();
        let mut spec =
            labels::spec_from_labels(&labels_of(&info)).map_err(|e| RuntimeError::BadLabels {
                node: name.trim_start_matches('/').to_owned(),
                detail: e.to_string(),
            })?;
        // Live limits win over the labels written at creation (CPU is updated in place).
        if let Some(hc) = info.host_config.as_ref() {
            if let Some(n) = hc.nano_cpus.filter(|n| *n > 0) {
                spec.resources.cpu_millis = u32::try_from(n / 1_000_000).unwrap_or(u32::MAX);
            }
            if let Some(m) = hc.memory.filter(|m| *m > 0) {
                spec.resources.memory_bytes = m as u64;
            }
        }
        Ok(NodeRecord {
            ports: NodePorts {
                swarm: host_port(&info, SWARM_PORT),
                api: host_port(&info, API_PORT),
                gateway: host_port(&info, GATEWAY_PORT),
            },
            state: state_of(&info),
            started_at: started_at(&info),
            container_id: info.id.clone().unwrap_or_default(),
            spec,
        })
    }

    /// Removes a container by name if it is ours (force: stops it first).
    async fn remove_container_by_name(&self, name: &str) -> Result<()> {
        let opts = RemoveContainerOptions {
            force: true,
            v: false,
            link: false,
        };
        match self.docker.remove_container(name, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(docker_err(e)),
        }
    }

    async fn remove_volume(&self, name: &str) -> Result<()> {
        match self
            .docker
            .remove_volume(name, Some(RemoveVolumeOptions { force: true }))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(docker_err(e)),
        }
    }

    /// Every nexus container of a network, running or not.
    async fn network_containers(
        &self,
        network: &NetworkName,
    ) -> Result<Vec<bollard::models::ContainerSummary>> {
        self.docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(self.network_filter(network)),
                ..Default::default()
            }))
            .await
            .map_err(docker_err)
    }

    /// Removes the network's bridge network if it is ours and no node container uses it.
    async fn remove_network_if_unused(&self, network: &NetworkName) -> Result<()> {
        let _guard = self.network_lock.lock().await;
        if !self.network_containers(network).await?.is_empty() {
            return Ok(());
        }
        let name = network.docker_network();
        match self.docker.inspect_network(&name, None).await {
            Ok(n) if n.labels.as_ref().is_some_and(|l| self.ours(l)) => {
                match self.docker.remove_network(&name).await {
                    Ok(()) => Ok(()),
                    Err(e) if is_status(&e, 404) => Ok(()),
                    Err(e) => Err(docker_err(e)),
                }
            }
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(docker_err(e)),
        }
    }

    /// Creates, uploads, starts and waits; undoes what it created if any step fails.
    async fn create_inner(&self, spec: &NodeSpec, secrets: &NodeSecrets) -> Result<NodeRecord> {
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

    /// Runs a command in a running container and returns its stdout (`None` on any failure).
    async fn exec_output(&self, name: &str, cmd: Vec<&str>) -> Option<String> {
        use bollard::exec::{CreateExecOptions, StartExecResults};
        let exec = self
            .docker
            .create_exec(
                name,
                CreateExecOptions {
                    cmd: Some(cmd),
                    attach_stdout: Some(true),
                    attach_stderr: Some(false),
                    ..Default::default()
                },
            )
            .await
            .ok()?;
        let StartExecResults::Attached { mut output, .. } =
            self.docker.start_exec(&exec.id, None).await.ok()?
        else {
            return None;
        };
        let mut text = String::new();
        while let Some(Ok(chunk)) = output.next().await {
            text.push_str(&chunk.to_string());
            if text.len() > 4 << 20 {
                return None;
            }
        }
        Some(text)
    }

    /// Bytes used under the repo path, measured inside the running container.
    async fn disk_used(&self, name: &str) -> Option<u64> {
        let text = self
            .exec_output(name, vec!["du", "-s", "-k", REPO_PATH])
            .await?;
        let kib: u64 = text.split_whitespace().next()?.parse().ok()?;
        Some(kib * 1024)
    }

    /// kubo's config file with the private key removed.
    async fn public_config(&self, name: &str) -> Option<serde_json::Value> {
        let path = format!("{REPO_PATH}/config");
        let text = self.exec_output(name, vec!["cat", &path]).await?;
        let mut config: serde_json::Value = serde_json::from_str(&text).ok()?;
        if let Some(identity) = config.get_mut("Identity").and_then(|i| i.as_object_mut()) {
            identity.remove("PrivKey");
        }
        Some(config)
    }
}

fn event_from(msg: EventMessage) -> Option<NodeEvent> {
    let actor = msg.actor?;
    let attrs = actor.attributes.unwrap_or_default();
    let node = labels::node_ref_from_labels(&attrs).ok()?;
    let kind = match msg.action.as_deref()? {
        "start" => NodeEventKind::Start,
        "die" => NodeEventKind::Die {
            exit_code: attrs.get("exitCode").and_then(|c| c.parse().ok()),
        },
        "oom" => NodeEventKind::Oom,
        _ => return None,
    };
    Some(NodeEvent {
        node,
        kind,
        time: msg.time.unwrap_or(0),
    })
}

#[async_trait::async_trait]
impl NodeRuntime for DockerRuntime {
    async fn ping(&self) -> Result<()> {
        self.docker.ping().await.map(|_| ()).map_err(docker_err)
    }

    async fn create_node(&self, spec: &NodeSpec, secrets: &NodeSecrets) -> Result<NodeRecord> {
        self.create_inner(spec, secrets).await
    }

    async fn start_node(&self, node: &NodeRef) -> Result<NodeRecord> {
        let info = self.inspect_node(node).await?;
        let spec = self.record_from(info)?.spec;
        match self
            .docker
            .start_container(&node.container_name(), None)
            .await
        {
            Ok(()) => {}
            Err(e) if is_status(&e, 304) => {}
            Err(e) => return Err(docker_err(e)),
        }
        self.wait_ready(node, &spec.peer_id).await
    }

    async fn stop_node(&self, node: &NodeRef) -> Result<()> {
        self.inspect_node(node).await?;
        let secs = i32::try_from(self.cfg.stop_timeout.as_secs()).unwrap_or(i32::MAX);
        let opts = StopContainerOptions {
            t: Some(secs),
            signal: None,
        };
        match self
            .docker
            .stop_container(&node.container_name(), Some(opts))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 304) => Ok(()),
            Err(e) => Err(docker_err(e)),
        }
    }

    async fn remove_container(&self, node: &NodeRef) -> Result<()> {
        let name = node.container_name();
        if self.inspect_managed(&name).await?.is_some() {
            self.remove_container_by_name(&name).await?;
            tracing::info!(%node, "node container removed; data kept");
        }
        Ok(())
    }

    async fn remove_node(&self, node: &NodeRef) -> Result<()> {
        let name = node.container_name();
        if self.inspect_managed(&name).await?.is_some() {
            self.remove_container_by_name(&name).await?;
        }
        let volume = node.volume_name();
        match self.docker.inspect_volume(&volume).await {
            Ok(v) if self.ours(&v.labels) => self.remove_volume(&volume).await?,
            Ok(_) => return Err(RuntimeError::NameTaken { name: volume }),
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(docker_err(e)),
        }
        tracing::info!(%node, "node removed");
        Ok(())
    }

    async fn remove_network(&self, network: &NetworkName) -> Result<()> {
        for c in self.network_containers(network).await? {
            if let Some(id) = c.id {
                self.remove_container_by_name(&id).await?;
            }
        }
        let volumes = self
            .docker
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(self.network_filter(network)),
            }))
            .await
            .map_err(docker_err)?;
        for v in volumes.volumes.unwrap_or_default() {
            if self.ours(&v.labels) {
                self.remove_volume(&v.name).await?;
            }
        }
        self.remove_network_if_unused(network).await?;
        tracing::info!(%network, "network removed");
        Ok(())
    }

    async fn update_node(&self, spec: &NodeSpec, secrets: &NodeSecrets) -> Result<NodeRecord> {
        spec.validate()?;
        secrets.check(spec)?;
        let info = self.inspect_node(&spec.node).await?;
        let current = self.record_from(info)?;
        if current.spec.peer_id != spec.peer_id {
            return Err(SpecError::IdentityMismatch(current.spec.peer_id).into());
        }
        let mut same_but_cpu = current.spec.clone();
        same_but_cpu.resources.cpu_millis = spec.resources.cpu_millis;
        if &same_but_cpu == spec {
            if current.spec.resources.cpu_millis != spec.resources.cpu_millis {
                let body = ContainerUpdateBody {
                    nano_cpus: Some(spec.resources.nano_cpus()),
                    ..Default::default()
                };
                self.docker
                    .update_container(&spec.node.container_name(), body)
                    .await
                    .map_err(docker_err)?;
                tracing::info!(node = %spec.node, cpu_millis = spec.resources.cpu_millis, "CPU limit updated live");
            }
            return self.record_from(self.inspect_node(&spec.node).await?);
        }
        // kubo reads GOMEMLIMIT, its config and the swarm key only at start: re-create the
        // container on the same volume so env, config and labels all agree.
        self.ensure_image(&spec.image).await?;
        self.remove_container_by_name(&spec.node.container_name())
            .await?;
        match self.create_inner(spec, secrets).await {
            Ok(record) => Ok(record),
            Err(e) => {
                tracing::error!(node = %spec.node, error = %e, "update failed; restoring the previous node");
                if let Err(e2) = self.create_inner(&current.spec, secrets).await {
                    tracing::error!(node = %spec.node, error = %e2, "previous node could not be restored");
                }
                Err(e)
            }
        }
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        self.list_matching(HashMap::from([("label".to_string(), self.owner_labels())]))
            .await
    }

    async fn connect_peers(&self, spec: &NodeSpec) -> usize {
        let port = match spec.ports.api {
            Some(p) => Some(p),
            None => match self.inspect_node(&spec.node).await {
                Ok(info) => host_port(&info, API_PORT),
                Err(_) => None,
            },
        };
        let Some(port) = port else { return 0 };
        let addr = SocketAddr::new(self.private_connect_ip(), port);
        let dials = spec.peers.iter().map(|p| async move {
            let target = format!("{}/p2p/{}", p.addr, p.peer_id);
            match self.rpc.swarm_connect(addr, &target).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!(node = %spec.node, peer = %p.peer_id, error = %e, "swarm connect failed; kubo's peering retries");
                    false
                }
            }
        });
        futures_util::future::join_all(dials)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count()
    }

    async fn list_network_nodes(&self, network: &NetworkName) -> Result<Vec<NodeRecord>> {
        self.list_matching(self.network_filter(network)).await
    }

    async fn node_stats(&self, node: &NodeRef) -> Result<NodeStats> {
        let info = self.inspect_node(node).await?;
        let name = node.container_name();
        let running = info.state.as_ref().and_then(|s| s.running) == Some(true);
        let mut stats = NodeStats::default();
        if let Some(hc) = info.host_config.as_ref() {
            stats.memory_limit_bytes = hc.memory.unwrap_or(0).max(0) as u64;
        }
        if !running {
            return Ok(stats);
        }
        let opts = StatsOptions {
            stream: false,
            one_shot: false,
        };
        if let Some(s) = self
            .docker
            .stats(&name, Some(opts))
            .try_next()
            .await
            .map_err(docker_err)?
        {
            let total = |c: &Option<bollard::models::ContainerCpuStats>| {
                c.as_ref()
                    .and_then(|c| c.cpu_usage.as_ref())
                    .and_then(|u| u.total_usage)
                    .unwrap_or(0)
            };
            let system = |c: &Option<bollard::models::ContainerCpuStats>| {
                c.as_ref().and_then(|c| c.system_cpu_usage).unwrap_or(0)
            };
            let cpu_delta = total(&s.cpu_stats).saturating_sub(total(&s.precpu_stats)) as f64;
            let sys_delta = system(&s.cpu_stats).saturating_sub(system(&s.precpu_stats)) as f64;
            let online = s
                .cpu_stats
                .as_ref()
                .and_then(|c| c.online_cpus)
                .unwrap_or(1)
                .max(1) as f64;
            if sys_delta > 0.0 {
                stats.cpu_percent = cpu_delta / sys_delta * online * 100.0;
            }
            if let Some(m) = s.memory_stats.as_ref() {
                let cache = m
                    .stats
                    .as_ref()
                    .and_then(|st| st.get("total_inactive_file").or(st.get("inactive_file")))
                    .copied()
                    .unwrap_or(0);
                stats.memory_bytes = m.usage.unwrap_or(0).saturating_sub(cache);
                if let Some(limit) = m.limit {
                    stats.memory_limit_bytes = limit;
                }
            }
            for n in s.networks.unwrap_or_default().values() {
                stats.net_rx_bytes += n.rx_bytes.unwrap_or(0);
                stats.net_tx_bytes += n.tx_bytes.unwrap_or(0);
            }
        }
        stats.uptime = started_at(&info)
            .and_then(|t| humantime::parse_rfc3339(&t).ok())
            .and_then(|t| SystemTime::now().duration_since(t).ok());
        stats.disk_used_bytes = self.disk_used(&name).await;
        if let Some(port) = host_port(&info, API_PORT) {
            let addr = SocketAddr::new(self.private_connect_ip(), port);
            stats.peer_count = self.rpc.peer_ids(addr).await.ok().map(|ids| ids.len());
        }
        Ok(stats)
    }

    async fn node_diagnostics(&self, node: &NodeRef) -> Result<NodeDiagnostics> {
        let info = self.inspect_node(node).await?;
        let name = node.container_name();
        let running = info.state.as_ref().and_then(|s| s.running) == Some(true);
        let mut d = NodeDiagnostics {
            state: Some(state_of(&info)),
            logs: self.log_tail(&name).await,
            ..Default::default()
        };
        if running {
            d.config = self.public_config(&name).await;
            if let Some(port) = host_port(&info, API_PORT) {
                let addr = SocketAddr::new(self.private_connect_ip(), port);
                d.peers = self.rpc.peer_ids(addr).await.ok();
            }
        }
        Ok(d)
    }

    fn watch(&self) -> BoxStream<'static, Result<NodeEvent>> {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            ("label".to_string(), self.owner_labels()),
            (
                "event".to_string(),
                vec!["start".into(), "die".into(), "oom".into()],
            ),
        ]);
        // The request goes out when the stream is first polled; `since` makes the stream
        // start at the moment `watch` was called, so nothing in between is lost.
        let since = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs().to_string())
            .ok();
        let opts = EventsOptions {
            since,
            filters: Some(filters),
            ..Default::default()
        };
        self.docker
            .events(Some(opts))
            .filter_map(|item| async move {
                match item {
                    Ok(msg) => event_from(msg).map(Ok),
                    Err(e) => Some(Err(docker_err(e))),
                }
            })
            .boxed()
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

    #[test]
    fn events_are_read_from_labels_only() {
        use bollard::models::EventActor;
        let node = NodeRef::new(NetworkName::new("ev").unwrap(), 1).unwrap();
        let mut attrs = labels::volume_labels(&node);
        attrs.insert("exitCode".into(), "137".into());
        let msg = |attrs: HashMap<String, String>, action: &str| EventMessage {
            action: Some(action.into()),
            actor: Some(EventActor {
                id: Some("abc".into()),
                attributes: Some(attrs),
            }),
            time: Some(42),
            ..Default::default()
        };
        let ev = event_from(msg(attrs.clone(), "die")).unwrap();
        assert_eq!(ev.node, node);
        assert_eq!(
            ev.kind,
            NodeEventKind::Die {
                exit_code: Some(137)
            }
        );
        assert_eq!(
            event_from(msg(attrs.clone(), "start")).unwrap().kind,
            NodeEventKind::Start
        );
        assert!(event_from(msg(attrs.clone(), "pause")).is_none());
        attrs.remove(labels::MANAGED);
        assert!(event_from(msg(attrs, "die")).is_none());
    }
}
