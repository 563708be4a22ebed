//! Admission control joined to the store and the runtime: what running networks hold, what
//! the host has, and the check a start or an update passes before it writes intent.
//!
//! Owns gathering the figures for [`super::capacity::admit`] (networks meant to run, from the
//! store; free swarm ports, from the allocator; the host's memory and cores, asked of the
//! runtime once; one node's CPU, from [`super::cpu_meter`]) and counting refusals. Callers hold the admission lock ([`Orchestrator::admission_turn`])
//! from the check until their intent is written, so two starts cannot both take the last
//! room. It must not change the store or act on nodes.

use super::capacity::{admit, AdmissionError, Demand, Host};
use super::error::Result;
use super::handle::Orchestrator;
use crate::node::NetworkName;
use crate::store::{DesiredState, NetworkRecord};
use crate::sync::lock;
use crate::telemetry::names;

/// What running networks hold against what the host admits (metrics, `nexus status`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AdmissionUsage {
    /// Nodes and memory limits of networks meant to run.
    pub held: Demand,
    /// The most their memory limits may add up to, if the host's memory is known.
    pub memory_budget: Option<u64>,
    /// `node.max_nodes`, if set.
    pub max_nodes: Option<u32>,
    /// The cores nodes may use together, if the host's cores are known and the check is on.
    pub cpu_budget: Option<f64>,
    /// What one running node uses, in cores, once measured.
    pub cpu_per_node: Option<f64>,
}

impl Orchestrator {
    /// The admission lock: held from the check to the write of intent.
    pub(super) async fn admission_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.admission.lock().await
    }

    /// Refuses starting `rec` if the host cannot take its nodes beside the networks already
    /// meant to run. A network already meant to run was admitted before: not checked again.
    pub(super) async fn admit_start(&self, rec: &NetworkRecord) -> Result<()> {
        if rec.desired == DesiredState::Running {
            return Ok(());
        }
        let adding = Demand::nodes(rec.replicas, rec.resources.memory_bytes)
            .with_ports(self.ports_needed(&rec.name, rec.replicas).await?);
        let what = format!("starting network `{}` ({} node(s))", rec.name, rec.replicas);
        self.admit(&rec.name, adding, &what).await
    }

    /// Refuses changing a running network from `before` to `after` if the host cannot take
    /// the difference. Stopped networks hold nothing: their updates are not checked.
    pub(super) async fn admit_update(
        &self,
        before: &NetworkRecord,
        after: &NetworkRecord,
    ) -> Result<()> {
        if after.desired != DesiredState::Running {
            return Ok(());
        }
        let grows = after.replicas > before.replicas
            || after.resources.memory_bytes > before.resources.memory_bytes;
        if !grows {
            return Ok(());
        }
        let adding = Demand::nodes(after.replicas, after.resources.memory_bytes)
            .with_ports(self.ports_needed(&after.name, after.replicas).await?);
        let what = format!(
            "network `{}` with {} node(s) of {} MiB",
            after.name,
            after.replicas,
            after.resources.memory_bytes >> 20
        );
        self.admit(&after.name, adding, &what).await
    }

    /// Refuses a network that could never start on this host, even alone (at create).
    pub(super) async fn admit_alone(&self, rec: &NetworkRecord) -> Result<()> {
        let cfg = &self.inner.cfg.admission;
        let host = self.host(u32::MAX).await;
        let what = format!("network `{}` ({} node(s))", rec.name, rec.replicas);
        admit(
            cfg,
            host,
            Demand::default(),
            Demand::nodes(rec.replicas, rec.resources.memory_bytes),
            &what,
        )
        .map_err(|e| self.refused(e))
    }

    /// What networks meant to run hold, and the limits (for metrics).
    pub async fn admission_usage(&self) -> Result<AdmissionUsage> {
        let held = self.held(None).await?;
        let cfg = &self.inner.cfg.admission;
        Ok(AdmissionUsage {
            held,
            memory_budget: cfg.memory_budget(self.host_memory().await),
            max_nodes: cfg.max_nodes,
            cpu_budget: self
                .host_cpus()
                .await
                .filter(|_| cfg.cpu_budget > 0.0)
                .map(|c| c * cfg.cpu_budget),
            cpu_per_node: self.cpu_per_node(),
        })
    }

    async fn admit(&self, name: &NetworkName, adding: Demand, what: &str) -> Result<()> {
        let held = self.held(Some(name)).await?;
        let host = self.host(self.free_ports()).await;
        admit(&self.inner.cfg.admission, host, held, adding, what).map_err(|e| self.refused(e))
    }

    /// What the host has now, with `free_ports` swarm ports free.
    async fn host(&self, free_ports: u32) -> Host {
        Host {
            reported_memory: self.host_memory().await,
            free_ports,
            cpus: self.host_cpus().await,
            cpu_per_node: self.cpu_per_node(),
        }
    }

    fn refused(&self, e: AdmissionError) -> super::OrchestratorError {
        metrics::counter!(names::ADMISSION_REFUSALS, "limit" => e.limit()).increment(1);
        tracing::info!(limit = e.limit(), reason = %e, "admission refused");
        e.into()
    }

    /// Nodes and memory limits of the networks meant to run, but `except`.
    async fn held(&self, except: Option<&NetworkName>) -> Result<Demand> {
        let mut held = Demand::default();
        for rec in self.inner.store.list_networks().await? {
            if rec.desired == DesiredState::Running && Some(&rec.name) != except {
                held = held.plus(Demand::nodes(rec.replicas, rec.resources.memory_bytes));
            }
        }
        Ok(held)
    }

    /// Swarm ports `replicas` nodes of `name` still need (nodes without one).
    async fn ports_needed(&self, name: &NetworkName, replicas: u16) -> Result<u32> {
        let rows = self.inner.store.list_nodes(name).await?;
        let have = rows
            .iter()
            .filter(|r| r.index < replicas && r.ports.swarm.is_some())
            .count();
        Ok(u32::from(replicas).saturating_sub(u32::try_from(have).unwrap_or(u32::MAX)))
    }

    fn free_ports(&self) -> u32 {
        let free: usize = lock(&self.inner.ports)
            .usage()
            .iter()
            .map(|u| u.size.saturating_sub(u.used))
            .sum();
        u32::try_from(free).unwrap_or(u32::MAX)
    }

    /// The host's cores as the runtime reports them, asked until it answers once; a runtime
    /// that cannot say leaves CPU unchecked.
    pub(super) async fn host_cpus(&self) -> Option<f64> {
        reported_once(&self.inner.host_cpus, "cores", || {
            self.inner.runtime.host_cpus()
        })
        .await
    }

    /// The host's memory as the runtime reports it, asked until it answers once; a runtime
    /// that cannot say leaves memory unchecked unless `node.host_memory` is set.
    async fn host_memory(&self) -> Option<u64> {
        if self.inner.cfg.admission.host_memory.is_some() {
            return None;
        }
        reported_once(&self.inner.host_memory, "memory", || {
            self.inner.runtime.host_memory()
        })
        .await
    }
}

/// A figure the runtime reports about the host (`what`), from `cell` once it answered, else
/// asked; a failed answer is logged and asked again next time.
async fn reported_once<T: Copy, F>(
    cell: &std::sync::OnceLock<Option<T>>,
    what: &str,
    ask: impl FnOnce() -> F,
) -> Option<T>
where
    F: std::future::Future<Output = crate::node::runtime::Result<Option<T>>>,
{
    if let Some(v) = cell.get() {
        return *v;
    }
    match ask().await {
        Ok(v) => *cell.get_or_init(|| v),
        Err(e) => {
            tracing::warn!(error = %e, "the runtime did not say the host's {what}; it is not checked at admission");
            None
        }
    }
}
