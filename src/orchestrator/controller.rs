//! The orchestrator proper: operations on networks and the level-triggered reconciler.
//!
//! Owns *when* and *where* nodes run. Every operation validates its input, records the desired
//! state in the [`Store`] first, then runs [`Orchestrator::reconcile`] for that network, which
//! compares the store with what the [`NodeRuntime`] observes and acts (see [`super::plan`]).
//! The same reconcile runs on start-up (recovery), on every runtime event and on a periodic
//! resync. Operations on one network are serialised by a per-network lock; different networks
//! proceed in parallel. It owns the port allocator and writes the registry. It must not talk to
//! Docker except through the runtime, nor serve traffic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use serde::Serialize;
use tracing::Instrument;

use super::events::{Event, EventBus, EventKind};
use super::plan::{desired_nodes, observed_status, plan, Action};
use super::ports::{PortAllocator, PortConfig, PortError, PortProbe, PortUsage};
use super::registry::{NetworkEntry, ReadyNode, Registry};
use crate::node::spec::{validate_image, MAX_NODES};
use crate::node::{
    NetworkName, NodeEventKind, NodeIdentity, NodeRecord, NodeRef, NodeRuntime, NodeState,
    NodeStats, Resources, RuntimeError, SwarmKey,
};
use crate::store::{
    DesiredState, NetworkRecord, NetworkStatus, NodeRow, Store, StoreError, StoredPorts,
};
use crate::telemetry::names;

/// Settings of the orchestrator.
#[derive(Clone, Debug)]
pub struct OrchestratorConfig {
    /// Node image for every network.
    pub image: String,
    /// Most nodes a network may have.
    pub max_replicas: u16,
    /// Resources of a node when a request gives none.
    pub default_resources: Resources,
    /// The most CPU, memory and disk a request may give one node (create and update).
    pub max_resources: Resources,
    pub ports: PortConfig,
    /// How long start/update/stop may take before the caller gets a timeout.
    pub op_timeout: Duration,
    /// How often every network is reconciled even without events.
    pub resync_interval: Duration,
    /// First delay before restarting a node that died; doubles with each recent death.
    pub restart_backoff: Duration,
    pub restart_backoff_max: Duration,
    /// A node dying this many times within `crash_window` makes its network `failed`.
    pub crash_limit: usize,
    pub crash_window: Duration,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        Self {
            image: "ipfs/kubo:v0.43.1".into(),
            max_replicas: 16,
            default_resources: Resources::default(),
            max_resources: Resources {
                cpu_millis: 4000,
                memory_bytes: 8 << 30,
                disk_bytes: 1 << 40,
            },
            ports: PortConfig::default(),
            op_timeout: Duration::from_secs(180),
            resync_interval: Duration::from_secs(30),
            restart_backoff: Duration::from_secs(1),
            restart_backoff_max: Duration::from_secs(60),
            crash_limit: 5,
            crash_window: Duration::from_secs(300),
        }
    }
}

/// What a caller asks for when creating a network.
#[derive(Clone, Debug, Default)]
pub struct CreateNetwork {
    pub name: String,
    pub replicas: u16,
    pub resources: Option<Resources>,
    pub users: Vec<String>,
    pub gateway_public: bool,
    pub allowed_origins: Vec<String>,
    /// A swarm key in kubo's file format; generated when absent.
    pub swarm_key: Option<String>,
    pub bootstrap_peers: Vec<String>,
    pub api_allow: Vec<String>,
    pub api_deny: Vec<String>,
}

/// Changes to an existing network; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct UpdateNetwork {
    pub replicas: Option<u16>,
    pub cpu_millis: Option<u32>,
    pub memory_bytes: Option<u64>,
    pub disk_bytes: Option<u64>,
    pub users: Option<Vec<String>>,
    pub gateway_public: Option<bool>,
    pub allowed_origins: Option<Vec<String>>,
    pub api_allow: Option<Vec<String>>,
    pub api_deny: Option<Vec<String>>,
}

/// Errors of orchestrator operations; each maps to one gRPC status class.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("no network named `{0}`")]
    NotFound(String),
    #[error("a network named `{0}` already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error(transparent)]
    Ports(#[from] PortError),
    #[error("network `{name}` failed: {reason}")]
    Failed { name: String, reason: String },
    #[error("network `{name}` did not reach `{wanted}` within {after:?} (now `{status}`); it keeps converging in the background")]
    Timeout {
        name: String,
        wanted: &'static str,
        status: &'static str,
        after: Duration,
    },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type Result<T, E = OrchestratorError> = std::result::Result<T, E>;

/// A network as shown to callers: its record without secrets, and its nodes.
#[derive(Clone, Debug, Serialize)]
pub struct NetworkView {
    pub name: String,
    pub replicas: u16,
    pub resources: Resources,
    pub users: Vec<String>,
    pub gateway_public: bool,
    pub allowed_origins: Vec<String>,
    pub bootstrap_peers: Vec<String>,
    pub api_allow: Vec<String>,
    pub api_deny: Vec<String>,
    pub desired: DesiredState,
    pub status: NetworkStatus,
    pub status_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub activated_at: Option<i64>,
    pub nodes: Vec<NodeView>,
}

#[derive(Clone, Debug, Serialize)]
pub struct NodeView {
    pub index: u16,
    pub peer_id: String,
    pub ports: StoredPorts,
    pub state: Option<NodeState>,
    pub last_error: Option<String>,
}

/// One node's diagnostics: what the store knows plus what the runtime shows. No secrets.
#[derive(Clone, Debug, Serialize)]
pub struct NodeDiagnosis {
    pub index: u16,
    pub peer_id: String,
    pub ports: StoredPorts,
    pub last_error: Option<String>,
    /// `None` when the node has no container (stopped network, failed start).
    pub runtime: Option<crate::node::NodeDiagnostics>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn invalid(e: impl std::fmt::Display) -> OrchestratorError {
    OrchestratorError::Invalid(e.to_string())
}

/// Why a reconcile pass stopped early.
enum PassError {
    /// The operator must act (a node would not start, ports ran out): the network fails.
    Fatal(String),
    /// Docker or the store hiccuped: keep the status, retry on the next event or resync.
    Transient(OrchestratorError),
}

impl From<OrchestratorError> for PassError {
    fn from(e: OrchestratorError) -> Self {
        Self::Transient(e)
    }
}

impl From<RuntimeError> for PassError {
    fn from(e: RuntimeError) -> Self {
        Self::Transient(e.into())
    }
}

impl From<StoreError> for PassError {
    fn from(e: StoreError) -> Self {
        Self::Transient(e.into())
    }
}

/// Recent deaths of one node.
#[derive(Default)]
struct Crashes {
    deaths: Vec<Instant>,
}

struct Inner {
    store: Arc<dyn Store>,
    runtime: Arc<dyn NodeRuntime>,
    cfg: OrchestratorConfig,
    ports: Mutex<PortAllocator>,
    registry: Registry,
    locks: Mutex<HashMap<NetworkName, Arc<tokio::sync::Mutex<()>>>>,
    crashes: Mutex<HashMap<NodeRef, Crashes>>,
    events: EventBus,
    /// Whether the reconciler runs (readiness).
    heartbeat: Mutex<Liveness>,
}

/// The reconciler's life, for readiness.
#[derive(Clone, Copy, Debug, Default)]
enum Liveness {
    #[default]
    Idle,
    /// Start-up recovery reconciles every network; `run` follows.
    Recovering,
    /// The `run` loop last went round at this instant.
    Running(Instant),
}

/// Marks the reconciler idle when `run` ends or its task is aborted.
struct RunGuard<'a>(&'a Mutex<Liveness>);

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        *lock(self.0) = Liveness::Idle;
    }
}

/// Cheaply cloneable handle to the orchestrator.
#[derive(Clone)]
pub struct Orchestrator {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Orchestrator {
    /// Builds the orchestrator and reserves every port the store records. Call
    /// [`Orchestrator::recover`] next, then [`Orchestrator::run`] in a task.
    pub async fn new(
        store: Arc<dyn Store>,
        runtime: Arc<dyn NodeRuntime>,
        cfg: OrchestratorConfig,
        probe: Box<dyn PortProbe>,
    ) -> Result<Self> {
        validate_image(&cfg.image).map_err(invalid)?;
        let mut ports = PortAllocator::new(&cfg.ports, probe)?;
        for mut row in store.all_nodes().await? {
            if let Err(e) = ports.reserve(&row.ports) {
                // Outside the (changed) ranges or doubly recorded: forget them; the node gets
                // new ports on its next start.
                tracing::warn!(network = %row.network, index = row.index, error = %e, "stored ports dropped");
                row.ports = StoredPorts::default();
                store.put_node(&row).await?;
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                runtime,
                cfg,
                ports: Mutex::new(ports),
                registry: Registry::new(),
                locks: Mutex::default(),
                crashes: Mutex::default(),
                events: EventBus::default(),
                heartbeat: Mutex::default(),
            }),
        })
    }

    /// Per-node resources a request gets when it gives none.
    pub fn default_resources(&self) -> Resources {
        self.inner.cfg.default_resources
    }

    /// Every network and node event from now on (for `WatchEvents`).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    fn emit(
        &self,
        network: &NetworkName,
        kind: EventKind,
        status: NetworkStatus,
        node_index: Option<u16>,
        message: String,
    ) {
        self.inner.events.publish(Event {
            time_ms: now_ms(),
            network: network.to_string(),
            kind,
            status,
            node_index,
            message,
        });
    }

    /// Publishes a status event when `rec`'s status differs from `before`.
    fn emit_status(&self, rec: &NetworkRecord, before: NetworkStatus) {
        if rec.status != before {
            self.emit(
                &rec.name,
                EventKind::Status,
                rec.status,
                None,
                rec.status_reason.clone().unwrap_or_default(),
            );
        }
    }

    /// Use of each configured port range.
    pub fn port_usage(&self) -> Vec<PortUsage> {
        lock(&self.inner.ports).usage()
    }

    /// Whether the reconciler runs: start-up recovery is under way (see
    /// [`Orchestrator::reconciler_starting`]), or the [`Orchestrator::run`] loop went round
    /// within two resync intervals (plus slack).
    pub fn reconciler_alive(&self) -> bool {
        let limit = self.inner.cfg.resync_interval * 2 + Duration::from_secs(10);
        match *lock(&self.inner.heartbeat) {
            Liveness::Idle => false,
            Liveness::Recovering => true,
            Liveness::Running(t) => t.elapsed() < limit,
        }
    }

    /// Declares that recovery and then [`Orchestrator::run`] are about to run (the daemon calls
    /// this before spawning them, so readiness does not flicker at start-up).
    pub fn reconciler_starting(&self) {
        *lock(&self.inner.heartbeat) = Liveness::Recovering;
    }

    /// The registry the delegator reads.
    pub fn registry(&self) -> Registry {
        self.inner.registry.clone()
    }

    fn network_lock(&self, name: &NetworkName) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.inner.locks)
            .entry(name.clone())
            .or_default()
            .clone()
    }

    fn parse_name(name: &str) -> Result<NetworkName> {
        NetworkName::new(name).map_err(invalid)
    }

    async fn record(&self, name: &NetworkName) -> Result<NetworkRecord> {
        self.inner
            .store
            .get_network(name)
            .await?
            .ok_or_else(|| OrchestratorError::NotFound(name.to_string()))
    }

    fn check_replicas(&self, replicas: u16) -> Result<()> {
        let max = self.inner.cfg.max_replicas.min(MAX_NODES);
        if replicas == 0 || replicas > max {
            return Err(invalid(format!(
                "replicas must be between 1 and {max}, not {replicas}"
            )));
        }
        Ok(())
    }

    /// Refuses resources above the configured per-node maximum. Only the fields a request
    /// sets are checked, so lowering a maximum never blocks unrelated updates.
    fn check_max_resources(
        &self,
        cpu_millis: Option<u32>,
        memory_bytes: Option<u64>,
        disk_bytes: Option<u64>,
    ) -> Result<()> {
        let max = &self.inner.cfg.max_resources;
        let cores = |m: u32| f64::from(m) / 1000.0;
        if let Some(c) = cpu_millis.filter(|c| *c > max.cpu_millis) {
            return Err(invalid(format!(
                "resources.cpu_millis: {c} ({} cores) is above the per-node maximum of {} ({} cores)",
                cores(c),
                max.cpu_millis,
                cores(max.cpu_millis)
            )));
        }
        if let Some(m) = memory_bytes.filter(|m| *m > max.memory_bytes) {
            return Err(invalid(format!(
                "resources.memory_bytes: {m} is above the per-node maximum of {}",
                max.memory_bytes
            )));
        }
        if let Some(d) = disk_bytes.filter(|d| *d > max.disk_bytes) {
            return Err(invalid(format!(
                "resources.disk_bytes: {d} is above the per-node maximum of {}",
                max.disk_bytes
            )));
        }
        Ok(())
    }

    fn check_users(users: &[String]) -> Result<()> {
        for u in users {
            if u.is_empty() || u.len() > 128 || u.chars().any(|c| c.is_control() || c == ',') {
                return Err(invalid(format!(
                    "user id `{}` is not allowed: 1–128 printable characters, no commas",
                    u.chars().take(40).collect::<String>()
                )));
            }
        }
        Ok(())
    }

    fn check_origins(origins: &[String]) -> Result<()> {
        for o in origins {
            let ok = o == "*"
                || ((o.starts_with("http://") || o.starts_with("https://"))
                    && !o.contains(char::is_whitespace)
                    && o.len() <= 255);
            if !ok {
                return Err(invalid(format!(
                    "CORS origin `{}` must be `*` or start with http:// or https://",
                    o.chars().take(60).collect::<String>()
                )));
            }
        }
        Ok(())
    }

    /// kubo RPC command paths for the delegator's policy: `pin/ls`, `key` (a command and its
    /// subcommands); lowercase letters, digits and `-`, segments joined by `/`.
    fn check_commands(field: &str, commands: &[String]) -> Result<()> {
        if commands.len() > 256 {
            return Err(invalid(format!("{field}: at most 256 commands")));
        }
        for c in commands {
            let ok = !c.is_empty()
                && c.len() <= 64
                && c.split('/').all(|seg| {
                    !seg.is_empty()
                        && seg
                            .chars()
                            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
                });
            if !ok {
                return Err(invalid(format!(
                    "{field}: `{}` is not a kubo RPC command path; write it like `pin/ls` or `key` (no /api/v0/ prefix)",
                    c.chars().take(60).collect::<String>()
                )));
            }
        }
        Ok(())
    }

    /// Records a new network (stopped) with fresh node identities. Changes nothing on error.
    #[tracing::instrument(name = "create", skip_all, fields(network = %req.name))]
    pub async fn create(&self, req: CreateNetwork) -> Result<NetworkView> {
        let name = Self::parse_name(&req.name)?;
        self.check_replicas(req.replicas)?;
        let resources = req.resources.unwrap_or(self.inner.cfg.default_resources);
        resources.validate().map_err(invalid)?;
        if let Some(r) = &req.resources {
            self.check_max_resources(Some(r.cpu_millis), Some(r.memory_bytes), Some(r.disk_bytes))?;
        }
        Self::check_users(&req.users)?;
        Self::check_origins(&req.allowed_origins)?;
        Self::check_commands("api_allow", &req.api_allow)?;
        Self::check_commands("api_deny", &req.api_deny)?;
        for p in &req.bootstrap_peers {
            validate_bootstrap(p)?;
        }
        let swarm_key = match &req.swarm_key {
            Some(text) => SwarmKey::parse(text).map_err(invalid)?,
            None => SwarmKey::generate().map_err(invalid)?,
        };
        let _guard = self.network_lock(&name);
        let _guard = _guard.lock().await;
        let now = now_ms();
        let record = NetworkRecord {
            name: name.clone(),
            replicas: req.replicas,
            resources,
            users: req.users,
            gateway_public: req.gateway_public,
            allowed_origins: req.allowed_origins,
            swarm_key,
            bootstrap_peers: req.bootstrap_peers,
            api_allow: req.api_allow,
            api_deny: req.api_deny,
            desired: DesiredState::Stopped,
            status: NetworkStatus::Stopped,
            status_reason: None,
            created_at: now,
            updated_at: now,
            activated_at: None,
        };
        match self.inner.store.create_network(&record).await {
            Ok(()) => {}
            Err(StoreError::Duplicate(n)) => return Err(OrchestratorError::AlreadyExists(n)),
            Err(e) => return Err(e.into()),
        }
        let mut rows = Vec::with_capacity(usize::from(record.replicas));
        for index in 0..record.replicas {
            let row = new_row(&name, index);
            self.inner.store.put_node(&row).await?;
            rows.push(row);
        }
        self.emit(
            &name,
            EventKind::Created,
            record.status,
            None,
            format!("{} node(s)", record.replicas),
        );
        // What was just written, without reading it back.
        let observed = self.observe(&name).await?;
        Ok(make_view(record, rows, &observed))
    }

    /// Makes a network run; returns once every node is ready, or the network failed.
    #[tracing::instrument(name = "start", skip_all, fields(network = %name))]
    pub async fn start(&self, name: &str) -> Result<NetworkView> {
        let name = Self::parse_name(name)?;
        self.set_desired(&name, DesiredState::Running).await?;
        self.converge(&name, DesiredState::Running).await
    }

    /// Stops a network: containers go, data and identities stay, ports are released.
    #[tracing::instrument(name = "stop", skip_all, fields(network = %name))]
    pub async fn stop(&self, name: &str) -> Result<NetworkView> {
        let name = Self::parse_name(name)?;
        self.set_desired(&name, DesiredState::Stopped).await?;
        self.converge(&name, DesiredState::Stopped).await
    }

    /// Changes a network. Running nodes are brought to the new spec one at a time.
    #[tracing::instrument(name = "update", skip_all, fields(network = %name))]
    pub async fn update(&self, name: &str, changes: UpdateNetwork) -> Result<NetworkView> {
        let name = Self::parse_name(name)?;
        if let Some(r) = changes.replicas {
            self.check_replicas(r)?;
        }
        self.check_max_resources(changes.cpu_millis, changes.memory_bytes, changes.disk_bytes)?;
        if let Some(u) = &changes.users {
            Self::check_users(u)?;
        }
        if let Some(o) = &changes.allowed_origins {
            Self::check_origins(o)?;
        }
        if let Some(c) = &changes.api_allow {
            Self::check_commands("api_allow", c)?;
        }
        if let Some(c) = &changes.api_deny {
            Self::check_commands("api_deny", c)?;
        }
        let desired = {
            let guard = self.network_lock(&name);
            let _guard = guard.lock().await;
            let mut rec = self.record(&name).await?;
            if let Some(r) = changes.replicas {
                rec.replicas = r;
            }
            let mut resources = rec.resources;
            if let Some(c) = changes.cpu_millis {
                resources.cpu_millis = c;
            }
            if let Some(m) = changes.memory_bytes {
                resources.memory_bytes = m;
            }
            if let Some(d) = changes.disk_bytes {
                resources.disk_bytes = d;
            }
            resources.validate().map_err(invalid)?;
            rec.resources = resources;
            if let Some(u) = changes.users {
                rec.users = u;
            }
            if let Some(g) = changes.gateway_public {
                rec.gateway_public = g;
            }
            if let Some(o) = changes.allowed_origins {
                rec.allowed_origins = o;
            }
            if let Some(c) = changes.api_allow {
                rec.api_allow = c;
            }
            if let Some(c) = changes.api_deny {
                rec.api_deny = c;
            }
            let before = rec.status;
            if rec.status == NetworkStatus::Failed {
                rec.status_reason = None;
                rec.status = NetworkStatus::Pending;
            }
            rec.updated_at = now_ms();
            self.inner.store.update_network(&rec).await?;
            self.emit_status(&rec, before);
            rec.desired
        };
        self.converge(&name, desired).await
    }

    /// Removes a network and its data. A network that is not stopped needs `force`.
    #[tracing::instrument(name = "remove", skip_all, fields(network = %name, force))]
    pub async fn remove(&self, name: &str, force: bool) -> Result<()> {
        let name = Self::parse_name(name)?;
        let guard = self.network_lock(&name);
        let _guard = guard.lock().await;
        let rec = self.record(&name).await?;
        if !force && (rec.desired != DesiredState::Stopped || rec.status != NetworkStatus::Stopped)
        {
            return Err(OrchestratorError::FailedPrecondition(format!(
                "network `{name}` is {}: stop it first (`nexus network stop {name}`) or remove it with --force",
                rec.status.as_str()
            )));
        }
        self.inner.runtime.remove_network(&name).await?;
        let rows = self.inner.store.list_nodes(&name).await?;
        {
            let mut ports = lock(&self.inner.ports);
            for r in &rows {
                ports.release(&r.ports);
            }
        }
        self.inner.store.delete_network(&name).await?;
        self.inner.registry.remove(&name);
        lock(&self.inner.crashes).retain(|n, _| n.network != name);
        self.emit(
            &name,
            EventKind::Removed,
            NetworkStatus::Stopped,
            None,
            String::new(),
        );
        Ok(())
    }

    /// One network, without secrets.
    pub async fn get(&self, name: &str) -> Result<NetworkView> {
        let name = Self::parse_name(name)?;
        self.view(&name).await
    }

    /// Every network, without secrets, ordered by name.
    pub async fn list(&self) -> Result<Vec<NetworkView>> {
        // Three reads in all, grouped here: not one query or runtime listing per network.
        let mut observed: HashMap<NetworkName, Vec<NodeRecord>> = HashMap::new();
        for r in self.inner.runtime.list_nodes().await? {
            observed
                .entry(r.spec.node.network.clone())
                .or_default()
                .push(r);
        }
        let mut rows: HashMap<NetworkName, Vec<NodeRow>> = HashMap::new();
        for r in self.inner.store.all_nodes().await? {
            rows.entry(r.network.clone()).or_default().push(r);
        }
        let mut out = Vec::new();
        for rec in self.inner.store.list_networks().await? {
            let mut rows = rows.remove(&rec.name).unwrap_or_default();
            rows.sort_by_key(|r| r.index);
            let seen = observed.get(&rec.name).map_or(&[][..], Vec::as_slice);
            out.push(make_view(rec, rows, seen));
        }
        Ok(out)
    }

    /// Resource use of each node of a network that has a container.
    pub async fn stats(&self, name: &str) -> Result<Vec<(u16, NodeStats)>> {
        let name = Self::parse_name(name)?;
        let rec = self.record(&name).await?;
        let mut out = Vec::new();
        for index in 0..rec.replicas {
            let node = NodeRef {
                network: name.clone(),
                index,
            };
            match self.inner.runtime.node_stats(&node).await {
                Ok(s) => out.push((index, s)),
                Err(RuntimeError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// Per node: status, last log lines, peers and kubo config without secrets.
    pub async fn diagnostics(&self, name: &str) -> Result<Vec<NodeDiagnosis>> {
        let name = Self::parse_name(name)?;
        let rec = self.record(&name).await?;
        let mut out = Vec::new();
        for row in self.inner.store.list_nodes(&name).await? {
            if row.index >= rec.replicas {
                continue;
            }
            let node = NodeRef {
                network: name.clone(),
                index: row.index,
            };
            let runtime = match self.inner.runtime.node_diagnostics(&node).await {
                Ok(d) => Some(d),
                Err(RuntimeError::NotFound { .. }) => None,
                Err(e) => return Err(e.into()),
            };
            out.push(NodeDiagnosis {
                index: row.index,
                peer_id: row.identity.peer_id().to_base58(),
                ports: row.ports,
                last_error: row.last_error,
                runtime,
            });
        }
        Ok(out)
    }

    /// The swarm key of a network: for the join kit only.
    pub async fn swarm_key(&self, name: &str) -> Result<SwarmKey> {
        let name = Self::parse_name(name)?;
        Ok(self.record(&name).await?.swarm_key)
    }

    async fn view(&self, name: &NetworkName) -> Result<NetworkView> {
        let rec = self.record(name).await?;
        let rows = self.inner.store.list_nodes(name).await?;
        let observed = self.observe(name).await?;
        Ok(make_view(rec, rows, &observed))
    }

    async fn set_desired(&self, name: &NetworkName, desired: DesiredState) -> Result<()> {
        let guard = self.network_lock(name);
        let _guard = guard.lock().await;
        let mut rec = self.record(name).await?;
        let before = rec.status;
        rec.desired = desired;
        // An explicit operation clears a failure: the operator asked to try again.
        if rec.status == NetworkStatus::Failed || desired == DesiredState::Running {
            rec.status_reason = None;
        }
        rec.status = match desired {
            DesiredState::Running => NetworkStatus::Starting,
            DesiredState::Stopped => NetworkStatus::Stopping,
        };
        rec.updated_at = now_ms();
        self.inner.store.update_network(&rec).await?;
        self.emit_status(&rec, before);
        Ok(())
    }

    /// Reconciles and waits until the network reaches `wanted` (or fails, or times out).
    async fn converge(&self, name: &NetworkName, wanted: DesiredState) -> Result<NetworkView> {
        let target = match wanted {
            DesiredState::Running => NetworkStatus::Running,
            DesiredState::Stopped => NetworkStatus::Stopped,
        };
        let timeout = self.inner.cfg.op_timeout;
        let deadline = Instant::now() + timeout;
        loop {
            let (status, view) = self.reconcile_pass(name).await?;
            if status == target {
                return match view {
                    Some(view) => Ok(view),
                    None => self.view(name).await,
                };
            }
            if status == NetworkStatus::Failed {
                let rec = self.record(name).await?;
                return Err(OrchestratorError::Failed {
                    name: name.to_string(),
                    reason: rec.status_reason.unwrap_or_else(|| "unknown".into()),
                });
            }
            if Instant::now() >= deadline {
                return Err(OrchestratorError::Timeout {
                    name: name.to_string(),
                    wanted: target.as_str(),
                    status: status.as_str(),
                    after: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Brings one network towards its desired state once and returns its new status.
    pub async fn reconcile(&self, name: &NetworkName) -> Result<NetworkStatus> {
        Ok(self.reconcile_pass(name).await?.0)
    }

    /// [`Orchestrator::reconcile`], also returning the network as the pass left it when the pass
    /// completed (so an operation can answer without reading it all back).
    async fn reconcile_pass(
        &self,
        name: &NetworkName,
    ) -> Result<(NetworkStatus, Option<NetworkView>)> {
        let start = Instant::now();
        let result = self
            .reconcile_locked(name)
            .instrument(tracing::debug_span!("reconcile", network = %name))
            .await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::histogram!(names::RECONCILE_DURATION, "result" => outcome)
            .record(start.elapsed().as_secs_f64());
        if result.is_err() {
            metrics::counter!(names::RECONCILE_ERRORS, "network" => name.to_string(), "kind" => "transient")
                .increment(1);
        }
        result
    }

    async fn reconcile_locked(
        &self,
        name: &NetworkName,
    ) -> Result<(NetworkStatus, Option<NetworkView>)> {
        let guard = self.network_lock(name);
        let _guard = guard.lock().await;
        let Some(mut rec) = self.inner.store.get_network(name).await? else {
            // No record: whatever nexus still runs for this name is an orphan.
            self.inner.registry.remove(name);
            self.inner.runtime.remove_network(name).await?;
            return Ok((NetworkStatus::Stopped, None));
        };
        if rec.status == NetworkStatus::Failed {
            // Waits for an operator's operation; keeps the registry honest meanwhile.
            self.publish(&rec, &self.observe(name).await?);
            return Ok((NetworkStatus::Failed, None));
        }
        let (status, reason, rows, observed) = match self.reconcile_once(&mut rec).await {
            Ok((status, rows, observed)) => (status, None, Some(rows), observed),
            // The rollback changed what runs: look again.
            Err(PassError::Fatal(reason)) => {
                metrics::counter!(names::RECONCILE_ERRORS, "network" => name.to_string(), "kind" => "fatal")
                    .increment(1);
                (
                    NetworkStatus::Failed,
                    Some(reason),
                    None,
                    self.observe(name).await?,
                )
            }
            Err(PassError::Transient(e)) => {
                tracing::warn!(network = %name, error = %e, "reconcile interrupted; will retry");
                return Err(e);
            }
        };
        let before = rec.status;
        rec.status = status;
        rec.status_reason = reason;
        match status {
            NetworkStatus::Running if rec.activated_at.is_none() => {
                rec.activated_at = Some(now_ms())
            }
            NetworkStatus::Stopped => rec.activated_at = None,
            _ => {}
        }
        rec.updated_at = now_ms();
        self.inner.store.update_network(&rec).await?;
        self.publish(&rec, &observed);
        self.emit_status(&rec, before);
        Ok((status, rows.map(|rows| make_view(rec, rows, &observed))))
    }

    async fn observe(&self, name: &NetworkName) -> Result<Vec<NodeRecord>> {
        Ok(self.inner.runtime.list_network_nodes(name).await?)
    }

    fn publish(&self, rec: &NetworkRecord, observed: &[NodeRecord]) {
        let loopback = |p: Option<u16>| p.map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], p)));
        let nodes = observed
            .iter()
            .filter(|r| r.state == NodeState::Running && r.spec.node.index < rec.replicas)
            .filter_map(|r| {
                Some(ReadyNode {
                    index: r.spec.node.index,
                    peer_id: r.spec.peer_id.clone(),
                    api: loopback(r.ports.api)?,
                    gateway: loopback(r.ports.gateway)?,
                })
            })
            .collect();
        self.inner.registry.publish(NetworkEntry {
            name: rec.name.clone(),
            users: rec.users.clone(),
            gateway_public: rec.gateway_public,
            allowed_origins: rec.allowed_origins.clone(),
            api_allow: rec.api_allow.clone(),
            api_deny: rec.api_deny.clone(),
            nodes,
        });
    }

    /// One pass: store rows and ports, plan, act. `Err` is the reason the network failed.
    /// On success, also returns the rows as it left them and what it observed last, so the caller
    /// need not read either again.
    async fn reconcile_once(
        &self,
        rec: &mut NetworkRecord,
    ) -> Result<(NetworkStatus, Vec<NodeRow>, Vec<NodeRecord>), PassError> {
        let name = rec.name.clone();
        let store = &self.inner.store;
        let runtime = &self.inner.runtime;
        let mut rows = store.list_nodes(&name).await?;
        for index in 0..rec.replicas {
            if !rows.iter().any(|r| r.index == index) {
                let row = new_row(&name, index);
                store.put_node(&row).await?;
                rows.push(row);
            }
        }
        rows.sort_by_key(|r| r.index);
        if rec.desired == DesiredState::Running {
            let mut allocated = Vec::new();
            let mut failure = None;
            for row in rows.iter_mut().filter(|r| r.index < rec.replicas) {
                if row.ports.swarm.is_some() {
                    continue;
                }
                let result = lock(&self.inner.ports).allocate();
                match result {
                    Ok(ports) => {
                        row.ports = ports;
                        allocated.push(row.index);
                        if let Err(e) = store.put_node(row).await {
                            failure = Some(PassError::Transient(e.into()));
                            break;
                        }
                    }
                    Err(e) => {
                        failure = Some(PassError::Fatal(e.to_string()));
                        break;
                    }
                }
            }
            if let Some(failure) = failure {
                // Give back what this pass took; nothing was started yet.
                for row in rows.iter_mut().filter(|r| allocated.contains(&r.index)) {
                    lock(&self.inner.ports).release(&row.ports);
                    row.ports = StoredPorts::default();
                    let _ = store.put_node(row).await;
                }
                return Err(failure);
            }
        }
        let observed = self.observe(&name).await?;
        // Before acting: was anything of this network running, and which nodes ever had a
        // container (their volumes hold data that a rollback must keep)?
        let fresh_start = observed.is_empty();
        let had_container: Vec<u16> = rows
            .iter()
            .filter(|r| r.container_id.is_some())
            .map(|r| r.index)
            .collect();
        let desired = desired_nodes(rec, &rows, &self.inner.cfg.image);
        let specs: Vec<_> = desired.iter().map(|(s, _)| s.clone()).collect();
        let actions = plan(rec.desired, &specs, &observed);
        let find = |index: u16| desired.iter().find(|(s, _)| s.node.index == index);
        let node = |index: u16| NodeRef {
            network: name.clone(),
            index,
        };

        let mut creates = Vec::new();
        for action in &actions {
            match *action {
                Action::Remove { index } => {
                    runtime.remove_node(&node(index)).await?;
                    if let Some(row) = rows.iter().find(|r| r.index == index) {
                        lock(&self.inner.ports).release(&row.ports);
                    }
                    if index >= rec.replicas {
                        store.delete_node(&name, index).await?;
                    }
                }
                Action::Stop { index } => {
                    runtime.remove_container(&node(index)).await?;
                    if let Some(row) = rows.iter_mut().find(|r| r.index == index) {
                        // `container_id` stays: it records that this node has data.
                        lock(&self.inner.ports).release(&row.ports);
                        row.ports = StoredPorts::default();
                        store.put_node(row).await?;
                    }
                }
                Action::Start { index } => {
                    if let Some(wait) = self.restart_delay(&node(index)) {
                        self.schedule(name.clone(), wait);
                        continue;
                    }
                    if let Err(e) = runtime.start_node(&node(index)).await {
                        self.note_error(&mut rows, index, &e.to_string()).await;
                    }
                }
                Action::Update { index } => {
                    if let Some((spec, secrets)) = find(index) {
                        match runtime.update_node(spec, secrets).await {
                            Ok(r) => self.note_container(&mut rows, index, &r.container_id).await,
                            Err(e) => {
                                return Err(PassError::Fatal(format!("updating node {index}: {e}")))
                            }
                        }
                    }
                }
                Action::Create { index } => creates.push(index),
            }
        }
        if !creates.is_empty() {
            let results = futures_util::future::join_all(creates.iter().filter_map(|i| {
                let (spec, secrets) = find(*i)?;
                Some(async move { (*i, runtime.create_node(spec, secrets).await) })
            }))
            .await;
            let mut failure = None;
            for (index, result) in results {
                match result {
                    Ok(r) => {
                        self.note_container(&mut rows, index, &r.container_id).await;
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        self.note_error(&mut rows, index, &msg).await;
                        failure.get_or_insert(format!("node {index} did not start: {msg}"));
                    }
                }
            }
            if failure.is_none() {
                // Every node is ready now: mesh the new ones at once rather than when kubo's
                // peering retries a dial that came before its peer listened.
                futures_util::future::join_all(
                    creates
                        .iter()
                        .filter_map(|i| find(*i))
                        .map(|(spec, _)| runtime.connect_peers(spec)),
                )
                .await;
            }
            if let Some(reason) = failure {
                // A fresh start is undone whole; a scale-up only loses its new nodes.
                let undo: Vec<u16> = if fresh_start {
                    rows.iter().map(|r| r.index).collect()
                } else {
                    creates.clone()
                };
                self.roll_back(&name, &mut rows, &undo, &had_container)
                    .await;
                return Err(PassError::Fatal(reason));
            }
        }
        let observed = self.observe(&name).await?;
        Ok((
            observed_status(rec.desired, &specs, &observed),
            rows,
            observed,
        ))
    }

    /// Undoes a start that failed part-way for the nodes `undo`: removes their containers (and
    /// their volumes when they never had a container before, i.e. hold no data of the user's),
    /// and releases their ports.
    async fn roll_back(
        &self,
        name: &NetworkName,
        rows: &mut [NodeRow],
        undo: &[u16],
        had_container: &[u16],
    ) {
        tracing::warn!(network = %name, nodes = ?undo, "start failed; rolling back");
        for row in rows.iter_mut().filter(|r| undo.contains(&r.index)) {
            let node = NodeRef {
                network: name.clone(),
                index: row.index,
            };
            let keeps_data = had_container.contains(&row.index);
            let result = if keeps_data {
                self.inner.runtime.remove_container(&node).await
            } else {
                self.inner.runtime.remove_node(&node).await
            };
            if let Err(e) = result {
                tracing::error!(%node, error = %e, "rollback: node not removed");
            }
            lock(&self.inner.ports).release(&row.ports);
            row.ports = StoredPorts::default();
            if !keeps_data {
                row.container_id = None;
            }
            if let Err(e) = self.inner.store.put_node(row).await {
                tracing::error!(%node, error = %e, "rollback: node row not saved");
            }
        }
    }

    async fn note_error(&self, rows: &mut [NodeRow], index: u16, msg: &str) {
        if let Some(row) = rows.iter_mut().find(|r| r.index == index) {
            row.last_error = Some(msg.chars().take(2000).collect());
            let _ = self.inner.store.put_node(row).await;
        }
    }

    async fn note_container(&self, rows: &mut [NodeRow], index: u16, id: &str) {
        if let Some(row) = rows.iter_mut().find(|r| r.index == index) {
            row.container_id = Some(id.to_owned());
            row.last_error = None;
            let _ = self.inner.store.put_node(row).await;
        }
    }

    /// Records a node's death; returns the reason if it now dies too often.
    pub(super) fn record_death(&self, node: &NodeRef) -> Option<String> {
        let cfg = &self.inner.cfg;
        let mut crashes = lock(&self.inner.crashes);
        let c = crashes.entry(node.clone()).or_default();
        let now = Instant::now();
        c.deaths
            .retain(|t| now.duration_since(*t) < cfg.crash_window);
        c.deaths.push(now);
        (c.deaths.len() >= cfg.crash_limit).then(|| {
            format!(
                "node {} died {} times within {:?}; see `nexus network diagnose {}`",
                node.index,
                c.deaths.len(),
                cfg.crash_window,
                node.network
            )
        })
    }

    /// How long to wait before restarting a node that died recently (`None`: now).
    pub(super) fn restart_delay(&self, node: &NodeRef) -> Option<Duration> {
        let cfg = &self.inner.cfg;
        let crashes = lock(&self.inner.crashes);
        let c = crashes.get(node)?;
        let last = *c.deaths.last()?;
        let recent = c
            .deaths
            .iter()
            .filter(|t| t.elapsed() < cfg.crash_window)
            .count()
            .max(1);
        let factor = 1u32 << (recent - 1).min(16) as u32;
        let delay = cfg
            .restart_backoff
            .saturating_mul(factor)
            .min(cfg.restart_backoff_max);
        let ready_at = last + delay;
        let now = Instant::now();
        (ready_at > now).then(|| ready_at - now)
    }

    /// Reconciles a network again after `delay`.
    fn schedule(&self, name: NetworkName, delay: Duration) {
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Err(e) = this.reconcile(&name).await {
                tracing::warn!(network = %name, error = %e, "scheduled reconcile failed");
            }
        });
    }

    /// Start-up recovery: removes nexus containers of networks the store does not know,
    /// then reconciles every stored network (adopting nodes that already run as wanted).
    pub async fn recover(&self) -> Result<()> {
        let known: Vec<NetworkName> = self
            .inner
            .store
            .list_networks()
            .await?
            .into_iter()
            .map(|r| r.name)
            .collect();
        let known_set: std::collections::HashSet<&NetworkName> = known.iter().collect();
        let mut orphans: Vec<NetworkName> = self
            .inner
            .runtime
            .list_nodes()
            .await?
            .into_iter()
            .map(|r| r.spec.node.network)
            .filter(|n| !known_set.contains(n))
            .collect();
        orphans.sort();
        orphans.dedup();
        for name in orphans {
            tracing::warn!(network = %name, "removing nexus containers that no stored network owns");
            self.inner.runtime.remove_network(&name).await?;
        }
        let results = futures_util::future::join_all(known.iter().map(|n| self.reconcile(n))).await;
        for (name, r) in known.iter().zip(results) {
            if let Err(e) = r {
                tracing::error!(network = %name, error = %e, "recovery: reconcile failed");
            }
        }
        Ok(())
    }

    /// Reacts to runtime events and resyncs periodically, until the event stream ends.
    pub async fn run(&self) {
        let _alive = RunGuard(&self.inner.heartbeat);
        let beat = || *lock(&self.inner.heartbeat) = Liveness::Running(Instant::now());
        beat();
        let mut events = self.inner.runtime.watch();
        let mut tick = tokio::time::interval(self.inner.cfg.resync_interval);
        tick.tick().await;
        loop {
            beat();
            tokio::select! {
                ev = events.next() => match ev {
                    None => return,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "runtime event stream error; resubscribing");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        events = self.inner.runtime.watch();
                    }
                    Some(Ok(ev)) => {
                        let this = self.clone();
                        tokio::spawn(async move { this.on_event(ev).await });
                    }
                },
                _ = tick.tick() => {
                    let this = self.clone();
                    tokio::spawn(async move { this.resync().await });
                }
            }
        }
    }

    async fn on_event(&self, ev: crate::node::NodeEvent) {
        let name = ev.node.network.clone();
        let rec = match self.inner.store.get_network(&name).await {
            Ok(rec) => rec,
            Err(e) => {
                tracing::warn!(network = %name, error = %e, "event ignored: store unavailable");
                return;
            }
        };
        if let Some(r) = &rec {
            let (kind, message) = match &ev.kind {
                NodeEventKind::Start => (EventKind::NodeStart, String::new()),
                NodeEventKind::Die { exit_code } => (
                    EventKind::NodeDie,
                    exit_code
                        .map(|c| format!("exit code {c}"))
                        .unwrap_or_default(),
                ),
                NodeEventKind::Oom => (
                    EventKind::NodeOom,
                    "killed: out of memory (raise the network's memory)".into(),
                ),
            };
            self.emit(&name, kind, r.status, Some(ev.node.index), message);
        }
        let counts = matches!(ev.kind, NodeEventKind::Die { .. } | NodeEventKind::Oom)
            && rec.as_ref().is_some_and(|r| {
                // Our own stops (and the stops of a failed network) are not deaths.
                r.desired == DesiredState::Running && r.status != NetworkStatus::Failed
            });
        if counts {
            metrics::counter!(
                names::NODE_RESTARTS,
                "network" => name.to_string(),
                "node" => ev.node.index.to_string()
            )
            .increment(1);
            tracing::info!(network = %name, node = ev.node.index, event = ?ev.kind, "node died; it will be restarted");
            if let Some(reason) = self.record_death(&ev.node) {
                self.fail(&name, reason).await;
                return;
            }
        }
        if let Err(e) = self.reconcile(&name).await {
            tracing::warn!(network = %name, error = %e, "reconcile after event failed");
        }
    }

    async fn resync(&self) {
        match self.inner.store.list_networks().await {
            Ok(records) => {
                for rec in records {
                    if let Err(e) = self.reconcile(&rec.name).await {
                        tracing::warn!(network = %rec.name, error = %e, "resync failed");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "resync: store unavailable"),
        }
    }

    /// Marks a network failed and stops its crash-looping nodes (data kept).
    async fn fail(&self, name: &NetworkName, reason: String) {
        let guard = self.network_lock(name);
        let _guard = guard.lock().await;
        let Ok(Some(mut rec)) = self.inner.store.get_network(name).await else {
            return;
        };
        if rec.status == NetworkStatus::Failed {
            return;
        }
        tracing::error!(network = %name, %reason, "network failed");
        for index in 0..rec.replicas {
            let node = NodeRef {
                network: name.clone(),
                index,
            };
            let _ = self.inner.runtime.stop_node(&node).await;
        }
        let before = rec.status;
        rec.status = NetworkStatus::Failed;
        rec.status_reason = Some(reason);
        rec.updated_at = now_ms();
        let _ = self.inner.store.update_network(&rec).await;
        self.emit_status(&rec, before);
        if let Ok(observed) = self.observe(name).await {
            self.publish(&rec, &observed);
        }
    }
}

fn new_row(name: &NetworkName, index: u16) -> NodeRow {
    NodeRow {
        network: name.clone(),
        index,
        identity: NodeIdentity::generate(),
        ports: StoredPorts::default(),
        container_id: None,
        last_error: None,
    }
}

/// Extra bootstrap peers: `/ip4|ip6|dns…/<host>/tcp/<port>/p2p/<peer id>`.
fn validate_bootstrap(addr: &str) -> Result<()> {
    let (base, peer) = addr.rsplit_once("/p2p/").ok_or_else(|| {
        invalid(format!(
            "bootstrap peer `{}` must end with /p2p/<peer id>",
            addr.chars().take(80).collect::<String>()
        ))
    })?;
    crate::node::spec::validate_multiaddr(base).map_err(invalid)?;
    crate::node::spec::validate_peer_id(peer).map_err(invalid)?;
    Ok(())
}

fn make_view(rec: NetworkRecord, rows: Vec<NodeRow>, observed: &[NodeRecord]) -> NetworkView {
    let nodes = rows
        .into_iter()
        .filter(|r| r.index < rec.replicas)
        .map(|r| NodeView {
            index: r.index,
            peer_id: r.identity.peer_id().to_base58(),
            ports: r.ports,
            state: observed
                .iter()
                .find(|o| o.spec.node.network == rec.name && o.spec.node.index == r.index)
                .map(|o| o.state),
            last_error: r.last_error,
        })
        .collect();
    NetworkView {
        name: rec.name.to_string(),
        replicas: rec.replicas,
        resources: rec.resources,
        users: rec.users,
        gateway_public: rec.gateway_public,
        allowed_origins: rec.allowed_origins,
        bootstrap_peers: rec.bootstrap_peers,
        api_allow: rec.api_allow,
        api_deny: rec.api_deny,
        desired: rec.desired,
        status: rec.status,
        status_reason: rec.status_reason,
        created_at: rec.created_at,
        updated_at: rec.updated_at,
        activated_at: rec.activated_at,
        nodes,
    }
}
