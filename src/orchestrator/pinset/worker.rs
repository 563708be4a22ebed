//! The pinset loop: level-triggered, one pass per network after every change and every
//! `interval`.
//!
//! A pass reads the network's pinset, asks each ready node (the registry's) which CIDs it pins
//! (`pin/ls`) and how full its repo is, has [`super::plan::plan`] decide, writes the store and
//! starts the node calls (`pin/add`, `pin/rm`) in the background: at most
//! [`super::PinsetConfig::per_node`] per node, each bounded by its timeout, each writing its
//! outcome to the store and waking the loop. A node that does not answer is left out of the
//! pass (its allocations wait). Nodes a scale-down is draining are observed too, and the count
//! of pins still to copy off them goes to the drain. It must not decide placement itself (the plan does).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::plan::{plan, NodeView, Nodes, Step};
use crate::cid::Cid;
use crate::node::endpoint::Endpoint;
use crate::node::NetworkName;
use crate::orchestrator::error::Result;
use crate::orchestrator::events::EventKind;
use crate::orchestrator::handle::{now_ms, Orchestrator};
use crate::store::{Allocation, AllocationStatus, NetworkStatus, PinRecord, PinStatus};
use crate::sync::lock;
use crate::telemetry::names;

impl Orchestrator {
    /// Runs the pinset loop until the process ends (spawn it once, next to [`Orchestrator::run`]).
    pub async fn run_pinset(&self) {
        let mut tick = tokio::time::interval(self.inner.cfg.pins.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.inner.pins.wake.notified() => {}
            }
            for name in self.inner.registry.names() {
                if let Err(e) = self.pin_pass(&name).await {
                    tracing::warn!(network = %name, error = %e, "pinset pass failed");
                }
            }
        }
    }

    /// Pins of a network held on fewer nodes than wanted, as the last pass saw (0 before one).
    pub fn under_replicated_pins(&self, name: &str) -> u64 {
        let Ok(name) = NetworkName::new(name) else {
            return 0;
        };
        lock(&self.inner.pins.under_replicated)
            .get(&name)
            .copied()
            .unwrap_or(0)
    }

    /// Wakes the pinset loop for a pass now.
    pub(crate) fn wake_pinset(&self) {
        self.inner.pins.wake.notify_one();
    }

    /// One pass over one network's pinset.
    pub(crate) async fn pin_pass(&self, name: &NetworkName) -> Result<()> {
        let Some(rec) = self.inner.store.get_network(name).await? else {
            lock(&self.inner.pins.under_replicated).remove(name);
            return Ok(());
        };
        let in_flight: HashSet<(String, u16)> = lock(&self.inner.pins.in_flight)
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, id, node)| (id.clone(), *node))
            .collect();
        let pins = self.inner.store.pinset(name).await?;
        if pins.is_empty() {
            lock(&self.inner.pins.under_replicated).insert(name.clone(), 0);
            self.note_drain(name, 0);
            return Ok(());
        }
        let entry = self.inner.registry.get(name);
        let ready = entry.as_ref().map(|e| e.nodes.clone()).unwrap_or_default();
        let disk = entry
            .as_ref()
            .and_then(|e| e.disk_bytes)
            .unwrap_or(rec.resources.disk_bytes);
        let observed = futures_util::future::join_all(ready.iter().map(|n| {
            let rpc = self.inner.pins.quick.clone();
            let api = n.api.clone();
            let index = n.index;
            async move {
                let holds = rpc.pins(&api).await;
                let size = rpc.repo_size(&api).await.unwrap_or(0);
                (index, holds, size)
            }
        }))
        .await;
        let mut views = Vec::new();
        for (index, holds, size) in observed {
            match holds {
                Ok(holds) => views.push(NodeView {
                    index,
                    holds,
                    free_bytes: disk.saturating_sub(size),
                }),
                Err(e) => {
                    tracing::debug!(network = %name, node = index, error = %e, "pin/ls failed; node left out of this pass");
                }
            }
        }
        let leaving = self.leaving_views(name, &pins).await;
        let net = Nodes {
            wanted: rec.replication.wanted(rec.replicas),
            replicas: rec.replicas,
            ready: &views,
            leaving: &leaving,
        };
        let out = plan(
            &pins,
            &net,
            &in_flight,
            &self.inner.cfg.pins.timers(),
            now_ms(),
        );
        lock(&self.inner.pins.under_replicated).insert(name.clone(), out.under_replicated);
        // A ready node that did not answer may lack what the plan thinks it can place: a drain
        // waits for a complete look. A pass that began before the drain (it saw no leaving
        // node) says nothing about it: its zero would release the drain unexamined.
        if !leaving.is_empty() {
            let complete = views.len() == ready.len();
            self.note_drain(
                name,
                if complete {
                    out.drain_pending
                } else {
                    out.drain_pending.max(1)
                },
            );
        }
        self.time_rereplication(name, rec.status, &pins, &out.short, &out.whole);
        let store = &self.inner.store;
        for step in out.steps {
            match step {
                Step::Allocate {
                    request_id,
                    allocation,
                } => {
                    ignore_gone(store.put_allocation(name, &request_id, &allocation).await)?;
                }
                Step::Forget { request_id, node } => {
                    store.delete_allocation(name, &request_id, node).await?;
                }
                Step::Erase { request_id } => {
                    store.delete_pin(name, &request_id).await?;
                    tracing::debug!(network = %name, request_id, "removed pin erased");
                }
                Step::Status {
                    request_id,
                    status,
                    reason,
                } => {
                    let before = pins
                        .iter()
                        .find(|p| p.request_id == request_id)
                        .map(|p| (p.status, p.cid.to_string()));
                    store
                        .set_pin_status(name, &request_id, status, reason.as_deref(), now_ms())
                        .await?;
                    if let Some((was, cid)) = before {
                        if was != status {
                            let msg = match &reason {
                                Some(r) => format!("{}: {r}", status.as_str()),
                                None => status.as_str().to_string(),
                            };
                            self.emit_pin(name, rec.status, &request_id, &cid, was, &msg);
                        }
                    }
                }
                Step::Pin {
                    request_id,
                    node,
                    cid,
                    attempts,
                } => {
                    if let Some(api) = api_of(&ready, node) {
                        self.spawn_call(name, request_id, node, cid, api, Call::Pin { attempts });
                    }
                }
                Step::Unpin {
                    request_id,
                    node,
                    cid,
                } => {
                    if let Some(api) = api_of(&ready, node) {
                        self.spawn_call(name, request_id, node, cid, api, Call::Unpin);
                    }
                }
            }
        }
        Ok(())
    }

    /// The nodes a scale-down is about to remove, observed like the ready ones. A node that
    /// does not answer `pin/ls` is taken to hold what its allocations say it pinned.
    async fn leaving_views(&self, name: &NetworkName, pins: &[PinRecord]) -> Vec<NodeView> {
        let leaving = self.draining(name);
        let observed = futures_util::future::join_all(leaving.iter().map(|(index, api)| {
            let rpc = self.inner.pins.quick.clone();
            async move { (*index, rpc.pins(api).await) }
        }))
        .await;
        observed
            .into_iter()
            .map(|(index, holds)| NodeView {
                index,
                holds: holds.unwrap_or_else(|_| {
                    pins.iter()
                        .filter(|p| {
                            p.allocations
                                .iter()
                                .any(|a| a.node == index && a.status == AllocationStatus::Pinned)
                        })
                        .map(|p| p.cid.to_string())
                        .collect()
                }),
                free_bytes: 0,
            })
            .collect()
    }

    /// Starts the clock of pins that lost a copy, and records (`PIN_REREPLICATION`) how long
    /// the ones whole again took; one event per pass for each.
    fn time_rereplication(
        &self,
        name: &NetworkName,
        status: NetworkStatus,
        pins: &[PinRecord],
        short: &[String],
        whole: &[String],
    ) {
        let now = std::time::Instant::now();
        let (mut lost, mut back, mut slowest) = (0u64, 0u64, Duration::ZERO);
        {
            let mut since = lock(&self.inner.pins.short_since);
            for id in short {
                since.entry((name.clone(), id.clone())).or_insert_with(|| {
                    lost += 1;
                    now
                });
            }
            for id in whole {
                if let Some(t) = since.remove(&(name.clone(), id.clone())) {
                    let took = now.saturating_duration_since(t);
                    metrics::histogram!(names::PIN_REREPLICATION, "network" => name.to_string())
                        .record(took.as_secs_f64());
                    back += 1;
                    slowest = slowest.max(took);
                }
            }
            // Pins removed meanwhile are not waited for.
            let live: HashSet<&str> = pins
                .iter()
                .filter(|p| p.removed_at.is_none())
                .map(|p| p.request_id.as_str())
                .collect();
            since.retain(|(n, id), _| n != name || live.contains(id.as_str()));
        }
        if lost > 0 {
            self.emit(
                name,
                EventKind::Pin,
                status,
                None,
                format!("{lost} pinned pin(s) lost a copy; making it again"),
            );
        }
        if back > 0 {
            let ms = u64::try_from(slowest.as_millis()).unwrap_or(u64::MAX);
            self.emit(
                name,
                EventKind::Pin,
                status,
                None,
                format!(
                    "{back} pin(s) re-replicated (slowest after {})",
                    humantime::format_duration(Duration::from_millis(ms))
                ),
            );
        }
    }

    fn emit_pin(
        &self,
        name: &NetworkName,
        status: NetworkStatus,
        request_id: &str,
        cid: &str,
        was: PinStatus,
        now: &str,
    ) {
        self.emit(
            name,
            EventKind::Pin,
            status,
            None,
            format!("pin {request_id} ({cid}): {} → {now}", was.as_str()),
        );
    }

    /// An event for a pin added or removed by a caller.
    pub(super) async fn pin_event(
        &self,
        name: &NetworkName,
        request_id: &str,
        cid: &str,
        what: &str,
        now: &str,
    ) {
        let status = match self.inner.store.get_network(name).await {
            Ok(Some(r)) => r.status,
            _ => NetworkStatus::Pending,
        };
        self.emit(
            name,
            EventKind::Pin,
            status,
            None,
            format!("pin {request_id} ({cid}) {what}: {now}"),
        );
    }

    /// Starts one node call in the background, unless the same one is running.
    fn spawn_call(
        &self,
        name: &NetworkName,
        request_id: String,
        node: u16,
        cid: String,
        api: Endpoint,
        call: Call,
    ) {
        let key = (name.clone(), request_id.clone(), node);
        if !lock(&self.inner.pins.in_flight).insert(key.clone()) {
            return;
        }
        let turns = lock(&self.inner.pins.turns)
            .entry((name.clone(), node))
            .or_insert_with(|| {
                Arc::new(tokio::sync::Semaphore::new(
                    self.inner.cfg.pins.per_node.max(1),
                ))
            })
            .clone();
        let this = self.clone();
        let name = name.clone();
        tokio::spawn(async move {
            let _turn = turns.acquire_owned().await;
            let outcome = this
                .node_call(&name, &request_id, node, &cid, &api, call)
                .await;
            if let Err(e) = outcome {
                tracing::warn!(network = %name, request_id, node, error = %e, "recording a pin call failed");
            }
            lock(&this.inner.pins.in_flight).remove(&key);
            this.inner.pins.wake.notify_one();
        });
    }

    /// One `pin/add` or `pin/rm` and its outcome in the store.
    async fn node_call(
        &self,
        name: &NetworkName,
        request_id: &str,
        node: u16,
        cid: &str,
        api: &Endpoint,
        call: Call,
    ) -> Result<()> {
        let Ok(cid) = Cid::parse(cid) else {
            return Ok(());
        };
        let store = &self.inner.store;
        match call {
            Call::Pin { attempts } => {
                let result = self.inner.pins.slow.pin_add(api, &cid).await;
                let allocation = match &result {
                    Ok(()) => Allocation {
                        node,
                        status: AllocationStatus::Pinned,
                        reason: None,
                        attempts: 0,
                        updated_at: now_ms(),
                    },
                    Err(e) => Allocation {
                        node,
                        status: AllocationStatus::Failed,
                        reason: Some(format!("node {node}: pin/add: {e}")),
                        attempts: attempts.saturating_add(1),
                        updated_at: now_ms(),
                    },
                };
                match &result {
                    Ok(()) => tracing::debug!(network = %name, request_id, node, %cid, "pinned"),
                    Err(e) => {
                        tracing::info!(network = %name, request_id, node, %cid, error = %e, "pin attempt failed")
                    }
                }
                // The pin may have been removed (or its allocation moved) meanwhile.
                let current = store.get_pin(name, request_id).await?;
                let still = current.is_some_and(|p| {
                    p.allocations
                        .iter()
                        .any(|a| a.node == node && a.status == AllocationStatus::Pinning)
                });
                if still {
                    ignore_gone(store.put_allocation(name, request_id, &allocation).await)?;
                }
            }
            Call::Unpin => match self.inner.pins.quick.pin_rm(api, &cid).await {
                Ok(()) => {
                    tracing::debug!(network = %name, request_id, node, %cid, "unpinned");
                    store.delete_allocation(name, request_id, node).await?;
                }
                Err(e) => {
                    tracing::info!(network = %name, request_id, node, %cid, error = %e, "unpin failed; retried next pass");
                }
            },
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug)]
enum Call {
    Pin { attempts: u32 },
    Unpin,
}

fn api_of(ready: &[crate::orchestrator::registry::ReadyNode], node: u16) -> Option<Endpoint> {
    ready
        .iter()
        .find(|n| n.index == node)
        .map(|n| n.api.clone())
}

/// A write about a pin (or network) deleted meanwhile is nothing to report.
fn ignore_gone(r: crate::store::Result<()>) -> Result<()> {
    match r {
        Err(crate::store::StoreError::NotFound(_)) => Ok(()),
        other => Ok(other?),
    }
}
