//! The operations callers use: create, start, stop, update, remove, and the reads.
//!
//! Owns what each operation writes to the store (intent first) and how it waits for the
//! reconciler to converge ([`Orchestrator::converge`]). Every operation checks its request
//! ([`super::request`]) before it takes the network's lock, and changes nothing on error. It
//! must not act on nodes itself: acting is the reconciler's ([`super::reconcile`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::error::{invalid, OrchestratorError, Result};
use super::events::EventKind;
use super::handle::{new_row, now_ms, Orchestrator};
use super::request::{parse_name, CreateNetwork, UpdateNetwork};
use super::subnets::fits;
use super::view::{NetworkView, NodeDiagnosis};
use crate::node::{NetworkName, NodeRecord, NodeRef, NodeStats, RuntimeError, SwarmKey};
use crate::replication::Replication;
use crate::store::{DesiredState, NetworkRecord, NetworkStatus, NodeRow, PinCounts, StoreError};
use crate::sync::lock;

/// A network's pinset in figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinSummary {
    pub counts: PinCounts,
    /// Pins held on fewer nodes than wanted, as the pinset loop last saw.
    pub under_replicated_pins: u64,
    /// A running network with fewer ready nodes than copies wanted.
    pub under_replicated: bool,
    pub replication: Replication,
}

impl Orchestrator {
    /// Records a new network (stopped) with fresh node identities. Changes nothing on error.
    #[tracing::instrument(name = "create", skip_all, fields(network = %req.name))]
    pub async fn create(&self, req: CreateNetwork) -> Result<NetworkView> {
        let (name, resources) = req.check(&self.inner.cfg)?;
        // An image of the caller's is asked what kubo it runs before anything is written (the
        // daemon's own `node.image` was checked at its start).
        if let Some(image) = req.image.as_deref().filter(|i| *i != self.inner.cfg.image) {
            self.check_image(name.as_str(), None, image).await?;
        }
        let swarm_key = match &req.swarm_key {
            Some(text) => SwarmKey::parse(text).map_err(invalid)?,
            None => SwarmKey::generate().map_err(invalid)?,
        };
        let guard = self.network_lock(&name);
        let _guard = guard.lock().await;
        if self.inner.store.get_network(&name).await?.is_some() {
            return Err(OrchestratorError::AlreadyExists(name.to_string()));
        }
        let subnet = self.allocate_subnet(&name).await?;
        let now = now_ms();
        let record = NetworkRecord {
            name: name.clone(),
            replicas: req.replicas,
            resources,
            access: req.access,
            swarm_key,
            bootstrap_peers: req.bootstrap_peers,
            desired: DesiredState::Stopped,
            status: NetworkStatus::Stopped,
            status_reason: None,
            created_at: now,
            updated_at: now,
            activated_at: None,
            subnet: Some(subnet),
            image: Some(req.image.unwrap_or_else(|| self.inner.cfg.image.clone())),
            replication: req
                .replication
                .unwrap_or_else(|| Replication::default_for(req.replicas)),
        };
        if let Err(e) = self.admit_alone(&record).await {
            lock(&self.inner.subnets).release(&subnet);
            return Err(e);
        }
        let created = match self.inner.store.create_network(&record).await {
            Ok(()) => Ok(()),
            Err(StoreError::Duplicate(n)) => Err(OrchestratorError::AlreadyExists(n)),
            Err(e) => Err(e.into()),
        };
        if let Err(e) = created {
            lock(&self.inner.subnets).release(&subnet);
            return Err(e);
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
        Ok(NetworkView::new(record, rows, &observed))
    }

    /// Makes a network run; returns once every node is ready, or the network failed. Refused
    /// up front, changing nothing, when the host cannot take its nodes (admission control).
    #[tracing::instrument(name = "start", skip_all, fields(network = %name))]
    pub async fn start(&self, name: &str) -> Result<NetworkView> {
        let name = parse_name(name)?;
        {
            let _admission = self.admission_turn().await;
            let rec = self.record(&name).await?;
            self.admit_start(&rec).await?;
            self.set_desired(&name, DesiredState::Running).await?;
        }
        self.converge(&name, DesiredState::Running).await
    }

    /// Stops a network: containers go, data and identities stay, ports are released.
    #[tracing::instrument(name = "stop", skip_all, fields(network = %name))]
    pub async fn stop(&self, name: &str) -> Result<NetworkView> {
        let name = parse_name(name)?;
        self.set_desired(&name, DesiredState::Stopped).await?;
        self.converge(&name, DesiredState::Stopped).await
    }

    /// Changes a network. Running nodes are brought to the new spec one at a time.
    ///
    /// A new image is checked first (see `upgrade`), before anything is written; if the first
    /// node moved to it does not come up, the reconciler puts it and the network back on the
    /// old image, and this returns [`OrchestratorError::FailedPrecondition`] saying why.
    /// A running network that would grow past what the host admits is refused, changing nothing.
    #[tracing::instrument(name = "update", skip_all, fields(network = %name))]
    pub async fn update(&self, name: &str, changes: UpdateNetwork) -> Result<NetworkView> {
        let name = parse_name(name)?;
        changes.check(&self.inner.cfg)?;
        // Outside the lock: asking an image takes a container start or two.
        let checked_from = match &changes.image {
            Some(image) => {
                let rec = self.record(&name).await?;
                let from = self.image_of(&rec).to_owned();
                if from != *image {
                    self.check_image(name.as_str(), Some(&rec), image).await?;
                }
                Some(from)
            }
            None => None,
        };
        let desired = {
            let _admission = self.admission_turn().await;
            let guard = self.network_lock(&name);
            let _guard = guard.lock().await;
            let mut rec = self.record(&name).await?;
            let before = rec.clone();
            if let (Some(image), Some(from)) = (&changes.image, &checked_from) {
                if self.image_of(&rec) != from {
                    return Err(OrchestratorError::FailedPrecondition(format!(
                        "network `{name}` moved to image `{}` while `{image}` was being checked; \
                         run the update again",
                        self.image_of(&rec)
                    )));
                }
                rec.image = Some(image.clone());
            }
            let replication = changes.replication(rec.replication, rec.replicas)?;
            if let Some(r) = changes.replicas {
                if let Some(subnet) = rec.subnet {
                    fits(subnet.prefix_len(), r).map_err(|e| {
                        invalid(format!("network `{name}` is on subnet {subnet}: {e}"))
                    })?;
                }
                rec.replicas = r;
            }
            rec.resources = changes.resources(rec.resources)?;
            rec.replication = replication;
            // Checked with the rest of the request, before the lock.
            rec.access.apply(changes.access);
            self.admit_update(&before, &rec).await?;
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
        let view = self.converge(&name, desired).await?;
        match &changes.image {
            Some(image) if view.image != *image => {
                let reason = view
                    .status_reason
                    .clone()
                    .or_else(|| view.nodes.iter().find_map(|n| n.last_error.clone()))
                    .unwrap_or_else(|| "a node did not come up on it".into());
                Err(OrchestratorError::FailedPrecondition(format!(
                    "network `{name}` was not moved to image `{image}` and stays on `{}`: \
                     {reason}",
                    view.image
                )))
            }
            _ => Ok(view),
        }
    }

    /// Removes a network and its data. A network that is not stopped needs `force`.
    #[tracing::instrument(name = "remove", skip_all, fields(network = %name, force))]
    pub async fn remove(&self, name: &str, force: bool) -> Result<()> {
        let name = parse_name(name)?;
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
        if let Some(subnet) = rec.subnet {
            lock(&self.inner.subnets).release(&subnet);
        }
        self.inner.registry.remove(&name);
        self.forget_crashes(&name);
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
        let name = parse_name(name)?;
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
            out.push(NetworkView::new(rec, rows, seen));
        }
        Ok(out)
    }

    /// A network's pinset in figures (`network stats`).
    pub async fn pins_of(&self, name: &str) -> Result<PinSummary> {
        let name = parse_name(name)?;
        let rec = self.record(&name).await?;
        self.pin_summary(&rec).await
    }

    /// Resource use of each node of a network that has a container.
    pub async fn stats(&self, name: &str) -> Result<Vec<(u16, NodeStats)>> {
        let name = parse_name(name)?;
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
        let name = parse_name(name)?;
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
        let name = parse_name(name)?;
        Ok(self.record(&name).await?.swarm_key)
    }

    async fn view(&self, name: &NetworkName) -> Result<NetworkView> {
        let rec = self.record(name).await?;
        let rows = self.inner.store.list_nodes(name).await?;
        let observed = self.observe(name).await?;
        let summary = self.pin_summary(&rec).await?;
        let mut view = NetworkView::new(rec, rows, &observed);
        view.pins = Some(summary.counts);
        view.under_replicated_pins = summary.under_replicated_pins;
        view.under_replicated = summary.under_replicated;
        Ok(view)
    }

    /// A network's pinset in figures (`network get`, `network stats`).
    async fn pin_summary(&self, rec: &NetworkRecord) -> Result<PinSummary> {
        let wanted = rec.replication.wanted(rec.replicas);
        let running = rec.desired == DesiredState::Running;
        let ready = self
            .inner
            .registry
            .get(&rec.name)
            .map_or(0, |e| e.nodes.len());
        Ok(PinSummary {
            counts: self.inner.store.pin_counts(&rec.name).await?,
            under_replicated_pins: self.under_replicated_pins(rec.name.as_str()),
            under_replicated: running && ready < usize::from(wanted),
            replication: rec.replication,
        })
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

    /// Runs passes until the network reaches `wanted` (or fails, or the operation times out).
    async fn converge(&self, name: &NetworkName, wanted: DesiredState) -> Result<NetworkView> {
        let target = match wanted {
            DesiredState::Running => NetworkStatus::Running,
            DesiredState::Stopped => NetworkStatus::Stopped,
        };
        let timeout = self.inner.cfg.op_timeout;
        let deadline = Instant::now() + timeout;
        loop {
            let (status, view) = self.pass(name).await?;
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
}
