//! What starts passes: recovery at start-up, runtime events, the periodic resync, and the
//! failure of a crash-looping network.
//!
//! Owns [`Orchestrator::recover`] (remove what no stored network owns, then one pass per
//! network), [`Orchestrator::run`] (the event and resync loop, which hands every pass to the
//! queue instead of spawning one per trigger), the handling of one runtime event (node events
//! on the bus, deaths counted) and [`Orchestrator::fail`]. It must not act on nodes except to
//! stop a failed network's crash-looping ones.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::node::{NetworkName, NodeEvent, NodeEventKind, NodeRef};
use crate::orchestrator::error::Result;
use crate::orchestrator::events::EventKind;
use crate::orchestrator::handle::{now_ms, Liveness, Orchestrator};
use crate::store::{DesiredState, NetworkStatus};
use crate::sync::lock;
use crate::telemetry::names;

/// Marks the reconciler idle when `run` ends or its task is aborted.
struct RunGuard<'a>(&'a std::sync::Mutex<Liveness>);

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        *lock(self.0) = Liveness::Idle;
    }
}

impl Orchestrator {
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
        let known_set: HashSet<&NetworkName> = known.iter().collect();
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

    /// Reacts to runtime events and resyncs periodically, until the event stream ends. Every
    /// pass it wants goes through the queue: one running and one waiting per network at most.
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
                    Some(Ok(ev)) => self.on_event(ev).await,
                },
                _ = tick.tick() => self.resync().await,
            }
        }
    }

    /// One runtime event: on the bus, counted if it is a death, then a pass queued.
    async fn on_event(&self, ev: NodeEvent) {
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
                self.enqueue_failure(&name, reason);
                return;
            }
        }
        self.enqueue(&name);
    }

    /// Queues a pass over every stored network.
    async fn resync(&self) {
        match self.inner.store.list_networks().await {
            Ok(records) => {
                for rec in records {
                    self.enqueue(&rec.name);
                }
            }
            Err(e) => tracing::warn!(error = %e, "resync: store unavailable"),
        }
    }

    /// Marks a network failed and stops its crash-looping nodes (data kept).
    pub(in crate::orchestrator) async fn fail(&self, name: &NetworkName, reason: String) {
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
