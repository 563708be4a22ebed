//! The reconciler: brings one network towards what the store says, level-triggered.
//!
//! A *pass* over one network, in layers named for what they do:
//! - [`Orchestrator::reconcile`]: the public entry; one pass, its new status.
//! - [`Orchestrator::pass`]: the same, measured (duration, errors) and in a span; it also
//!   returns the network as the pass left it, so an operation can answer without reading back.
//! - [`Orchestrator::settle`]: under the network's lock, reads the record, lets [`act`] change
//!   the nodes, and stores the outcome (status, reason, activation time) and publishes it to
//!   the registry and the event bus.
//! - [`act`]: store rows and ports, plan, act (`act.rs`), undoing a failed start
//!   (`roll_back`).
//!
//! What triggers passes lives beside it: [`trigger`] (start-up recovery, runtime events,
//! periodic resync, delayed restarts) feeds the [`queue`], which runs at most one pass and keeps
//! at most one waiting per network; [`backoff`] remembers deaths and says when a node may
//! restart. It must not validate callers' requests or wait for convergence (operations do).

mod act;
mod backoff;
mod queue;
mod trigger;

pub(crate) use backoff::Crashes;
pub(crate) use queue::PassQueue;

use std::sync::atomic::Ordering;
use std::time::Instant;

use tracing::Instrument;

use super::error::Result;
use super::handle::{now_ms, Orchestrator};
use super::registry::{NetworkEntry, ReadyNode};
use super::view::NetworkView;
use crate::node::{NetworkName, NodeRecord, NodeState};
use crate::store::{NetworkRecord, NetworkStatus};
use crate::telemetry::names;

/// Why a pass stopped early.
pub(super) enum PassError {
    /// The operator must act (a node would not start, ports ran out): the network fails.
    Fatal(String),
    /// Docker or the store hiccuped: keep the status, retry on the next event or resync.
    Transient(super::OrchestratorError),
    /// The first node moved to a new image did not come up on it and is back on `image`, the
    /// one it ran; the network goes back to it (`act` handles this; it never leaves `act`).
    RolledBack { image: String, reason: String },
}

impl From<super::OrchestratorError> for PassError {
    fn from(e: super::OrchestratorError) -> Self {
        Self::Transient(e)
    }
}

impl From<crate::node::RuntimeError> for PassError {
    fn from(e: crate::node::RuntimeError) -> Self {
        Self::Transient(e.into())
    }
}

impl From<crate::store::StoreError> for PassError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Transient(e.into())
    }
}

impl Orchestrator {
    /// Brings one network towards its desired state once and returns its new status.
    pub async fn reconcile(&self, name: &NetworkName) -> Result<NetworkStatus> {
        Ok(self.pass(name).await?.0)
    }

    /// [`Orchestrator::reconcile`], measured, also returning the network as the pass left it
    /// when the pass completed.
    pub(super) async fn pass(
        &self,
        name: &NetworkName,
    ) -> Result<(NetworkStatus, Option<NetworkView>)> {
        let start = Instant::now();
        let result = self
            .settle(name)
            .instrument(tracing::debug_span!("reconcile", network = %name))
            .await;
        self.inner.passes.fetch_add(1, Ordering::Relaxed);
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::histogram!(names::RECONCILE_DURATION, "result" => outcome)
            .record(start.elapsed().as_secs_f64());
        if result.is_err() {
            metrics::counter!(names::RECONCILE_ERRORS, "network" => name.to_string(), "kind" => "transient")
                .increment(1);
        }
        result
    }

    /// One pass under the network's lock: act, then record and publish the outcome.
    async fn settle(&self, name: &NetworkName) -> Result<(NetworkStatus, Option<NetworkView>)> {
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
        let as_stored = rec.clone();
        let (status, reason, rows, observed) = match self.act(&mut rec).await {
            Ok((status, rows, observed, note)) => (status, note, Some(rows), observed),
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
            Err(PassError::RolledBack { reason, .. }) => {
                // `act` turns a rollback into an outcome; keep the network as it is if not.
                return Err(super::OrchestratorError::FailedPrecondition(reason));
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
        // A pass that changed nothing (most resyncs) writes nothing.
        if rec != as_stored {
            rec.updated_at = now_ms();
            self.inner.store.update_network(&rec).await?;
        }
        self.publish(&rec, &observed);
        self.emit_status(&rec, before);
        Ok((
            status,
            rows.map(|rows| NetworkView::new(rec, rows, &observed)),
        ))
    }

    /// Tells the registry which of the network's nodes may take traffic now.
    pub(super) fn publish(&self, rec: &NetworkRecord, observed: &[NodeRecord]) {
        let nodes = observed
            .iter()
            .filter(|r| r.state == NodeState::Running && r.spec.node.index < rec.replicas)
            .filter_map(|r| {
                let e = r.endpoints.clone()?;
                Some(ReadyNode {
                    index: r.spec.node.index,
                    peer_id: r.spec.peer_id.clone(),
                    api: e.api,
                    gateway: e.gateway,
                })
            })
            .collect::<Vec<_>>();
        let changed = self
            .inner
            .registry
            .get(&rec.name)
            .is_none_or(|e| e.nodes != nodes);
        self.inner.registry.publish(NetworkEntry {
            name: rec.name.clone(),
            access: rec.access.clone(),
            nodes,
            disk_bytes: Some(rec.resources.disk_bytes),
        });
        // Ready nodes came or went: the pinset re-places pins now rather than at its tick.
        if changed {
            self.wake_pinset();
        }
    }
}
