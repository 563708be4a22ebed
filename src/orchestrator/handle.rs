//! The orchestrator's handle and the state its rooms share.
//!
//! Owns [`OrchestratorConfig`], [`Orchestrator`] (a cheap clone of one shared state: store,
//! runtime, port and subnet allocators, the admission lock, registry, per-network locks, crash
//! history, the pass queue, the event bus, the reconciler's liveness, the pinset loop's state)
//! and the small accessors the daemon, the API and
//! telemetry use. The operations ([`super::operations`]) and the reconciler
//! ([`super::reconcile`]) are `impl Orchestrator` blocks of their own files; this file must not
//! grow either.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::capacity::AdmissionConfig;
use super::error::{invalid, OrchestratorError, Result};
use super::events::{Event, EventBus, EventKind};
use super::pinset::{PinState, PinsetConfig};
use super::ports::{PortAllocator, PortConfig, PortProbe, PortUsage};
use super::reconcile::{Crashes, PassQueue};
use super::registry::Registry;
use super::subnets::{SubnetAllocator, SubnetConfig};
use crate::node::spec::validate_image;
use crate::node::Ports;
use crate::node::{NetworkName, NodeIdentity, NodeRecord, NodeRef, NodeRuntime, Resources};
use crate::revocations::Revocations;
use crate::store::{NetworkRecord, NetworkStatus, NodeRow, Store};
use crate::sync::lock;

/// Settings of the orchestrator.
#[derive(Clone, Debug)]
pub struct OrchestratorConfig {
    /// Node image of a network created without one (`node.image`); each network stores its own.
    pub image: String,
    /// Most nodes a network may have.
    pub max_replicas: u16,
    /// Resources of a node when a request gives none.
    pub default_resources: Resources,
    /// The most CPU, memory and disk a request may give one node (create and update).
    pub max_resources: Resources,
    pub ports: PortConfig,
    /// Where networks' subnets come from.
    pub subnets: SubnetConfig,
    /// How long start/update/stop may take before the caller gets a timeout.
    pub op_timeout: Duration,
    /// How often every network is reconciled even without events.
    pub resync_interval: Duration,
    /// How long a node whose host is down waits for the host before it is re-created on
    /// another host (same identity, empty repo; runtimes whose nodes span hosts).
    pub host_lost_grace: Duration,
    /// First delay before restarting a node that died; doubles with each recent death.
    pub restart_backoff: Duration,
    pub restart_backoff_max: Duration,
    /// A node dying this many times within `crash_window` makes its network `failed`.
    pub crash_limit: usize,
    pub crash_window: Duration,
    /// How long a revoked token id stays on the revocation list: the longest a token carrying
    /// it can still be accepted (the delegator's `max_ttl` plus its leeway).
    pub revocation_horizon: Duration,
    /// Most node starts (create, start, re-create) in flight at once, across all networks.
    /// A node waits for its turn before its readiness deadline starts, so a burst of starts
    /// queues instead of missing deadlines on a small host.
    pub start_parallelism: usize,
    /// What running networks may hold together on this host (memory, nodes).
    pub admission: AdmissionConfig,
    /// The pinset loop's timing and per-node concurrency.
    pub pins: PinsetConfig,
    /// How often the CPU meter reads a few running nodes (`node.cpu_meter_interval`).
    pub cpu_meter_interval: Duration,
}

/// Node starts at once when the configuration does not say: two per core the host gives
/// this process (at least two). Starting a kubo node is CPU-bound for its first seconds.
pub fn default_start_parallelism() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() * 2)
        .unwrap_or(2)
        .max(2)
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
            subnets: SubnetConfig::default(),
            op_timeout: Duration::from_secs(180),
            resync_interval: Duration::from_secs(30),
            host_lost_grace: Duration::from_secs(60),
            restart_backoff: Duration::from_secs(1),
            restart_backoff_max: Duration::from_secs(60),
            crash_limit: 5,
            crash_window: Duration::from_secs(300),
            revocation_horizon: crate::delegator::auth::DEFAULT_MAX_TTL
                + crate::delegator::auth::DEFAULT_LEEWAY,
            start_parallelism: default_start_parallelism(),
            admission: AdmissionConfig::default(),
            pins: PinsetConfig::default(),
            cpu_meter_interval: Duration::from_secs(30),
        }
    }
}

pub(super) struct Inner {
    pub(super) store: Arc<dyn Store>,
    pub(super) runtime: Arc<dyn NodeRuntime>,
    pub(super) cfg: OrchestratorConfig,
    pub(super) ports: Mutex<PortAllocator>,
    pub(super) subnets: Mutex<SubnetAllocator>,
    pub(super) registry: Registry,
    /// The revoked token ids the delegator refuses (the store's list, kept in step).
    pub(super) revocations: Revocations,
    locks: Mutex<HashMap<NetworkName, Arc<tokio::sync::Mutex<()>>>>,
    pub(super) crashes: Mutex<HashMap<NodeRef, Crashes>>,
    /// Since when each node's host has been seen down (nodes on hosts that are up: absent).
    pub(super) hosts_down: Mutex<HashMap<NodeRef, std::time::Instant>>,
    /// Background passes: at most one running and one waiting per network.
    pub(super) queue: PassQueue,
    /// Reconcile passes run since start (every trigger).
    pub(super) passes: AtomicU64,
    events: EventBus,
    /// Whether the reconciler runs (readiness).
    pub(super) heartbeat: Mutex<Liveness>,
    /// Turns for node starts ([`OrchestratorConfig::start_parallelism`]).
    pub(super) starts: tokio::sync::Semaphore,
    /// Held from an admission check to the write of intent ([`super::admission`]).
    pub(super) admission: tokio::sync::Mutex<()>,
    /// The host's memory as the runtime reported it, once it did.
    pub(super) host_memory: std::sync::OnceLock<Option<u64>>,
    /// The host's cores as the runtime reported them, once it did.
    pub(super) host_cpus: std::sync::OnceLock<Option<f64>>,
    /// What one running node uses, measured ([`super::cpu_meter`]).
    pub(super) cpu_meter: Mutex<super::cpu_meter::CpuMeter>,
    /// The pinset loop's state between passes.
    pub(super) pins: PinState,
}

/// The reconciler's life, for readiness.
#[derive(Clone, Copy, Debug, Default)]
pub(super) enum Liveness {
    #[default]
    Idle,
    /// Start-up recovery reconciles every network; `run` follows.
    Recovering,
    /// The `run` loop last went round at this instant.
    Running(Instant),
}

/// Cheaply cloneable handle to the orchestrator.
#[derive(Clone)]
pub struct Orchestrator {
    pub(super) inner: Arc<Inner>,
}

pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A node row with a fresh identity and nothing allocated.
pub(super) fn new_row(name: &NetworkName, index: u16) -> NodeRow {
    NodeRow {
        network: name.clone(),
        index,
        identity: NodeIdentity::generate(),
        ports: Ports::default(),
        container_id: None,
        last_error: None,
    }
}

impl Orchestrator {
    /// Builds the orchestrator and reserves every port and subnet the store records. Call
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
                row.ports = Ports::default();
                store.put_node(&row).await?;
            }
        }
        cfg.subnets.check(cfg.max_replicas).map_err(invalid)?;
        let mut subnets = SubnetAllocator::new(cfg.subnets);
        for mut rec in store.list_networks().await? {
            if let Some(subnet) = rec.subnet {
                subnets.reserve(subnet);
            }
            if rec.image.is_none() {
                // A network from before networks had their own image ran `node.image`: it
                // keeps it, so a later change of `node.image` only reaches new networks.
                rec.image = Some(cfg.image.clone());
                store.update_network(&rec).await?;
            }
        }
        let starts = tokio::sync::Semaphore::new(cfg.start_parallelism.max(1));
        let cfg_pins = cfg.pins.clone();
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                runtime,
                cfg,
                ports: Mutex::new(ports),
                subnets: Mutex::new(subnets),
                registry: Registry::new(),
                revocations: Revocations::default(),
                locks: Mutex::default(),
                crashes: Mutex::default(),
                hosts_down: Mutex::default(),
                queue: PassQueue::default(),
                passes: AtomicU64::new(0),
                events: EventBus::default(),
                heartbeat: Mutex::default(),
                starts,
                admission: tokio::sync::Mutex::new(()),
                host_memory: std::sync::OnceLock::new(),
                host_cpus: std::sync::OnceLock::new(),
                cpu_meter: Mutex::default(),
                pins: PinState::new(&cfg_pins),
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

    /// Use of each configured port range.
    pub fn port_usage(&self) -> Vec<PortUsage> {
        lock(&self.inner.ports).usage()
    }

    /// The subnet pool and how many subnets networks hold.
    pub fn subnet_usage(&self) -> (SubnetConfig, usize) {
        let subnets = lock(&self.inner.subnets);
        (subnets.config(), subnets.in_use())
    }

    /// Waits for a turn to start a node (see [`OrchestratorConfig::start_parallelism`]); the
    /// turn lasts as long as the permit is held. Never fails: the semaphore is never closed.
    pub(super) async fn start_turn(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.inner.starts.acquire().await.ok()
    }

    /// The registry the delegator reads.
    pub fn registry(&self) -> Registry {
        self.inner.registry.clone()
    }

    /// The revocation list the delegator reads ([`Orchestrator::revoke_token`] writes it).
    pub fn revocations(&self) -> Revocations {
        self.inner.revocations.clone()
    }

    /// Reconcile passes run since start, whatever triggered them.
    pub fn passes_run(&self) -> u64 {
        self.inner.passes.load(Ordering::Relaxed)
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

    pub(super) fn emit(
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
    pub(super) fn emit_status(&self, rec: &NetworkRecord, before: NetworkStatus) {
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

    /// The lock that serialises operations and passes on one network.
    pub(super) fn network_lock(&self, name: &NetworkName) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.inner.locks)
            .entry(name.clone())
            .or_default()
            .clone()
    }

    /// A network's stored record, or [`OrchestratorError::NotFound`].
    pub(super) async fn record(&self, name: &NetworkName) -> Result<NetworkRecord> {
        self.inner
            .store
            .get_network(name)
            .await?
            .ok_or_else(|| OrchestratorError::NotFound(name.to_string()))
    }

    /// The image a network's nodes run (the daemon's `node.image` for a record that has none).
    pub(super) fn image_of<'a>(&'a self, rec: &'a NetworkRecord) -> &'a str {
        rec.image.as_deref().unwrap_or(&self.inner.cfg.image)
    }

    /// What the runtime runs of a network now.
    pub(super) async fn observe(&self, name: &NetworkName) -> Result<Vec<NodeRecord>> {
        Ok(self.inner.runtime.list_network_nodes(name).await?)
    }
}
