//! Observation on the swarm: our node services, each one's current task and the host it runs
//! on, rebuilt into [`NodeRecord`]s; log tails, stats and diagnostics (through the node's own
//! RPC API and metrics, by its host's gate: the manager sees no other host's containers); and
//! events, polled from the tasks (the swarm emits no task events). Reads only (on the swarm; it
//! keeps each node's last process sample in [`usage`]).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use bollard::models::{Service, Task, TaskState};
use bollard::query_parameters::{ListServicesOptions, ListTasksOptions, LogsOptions};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;

use super::hosts::Host;
use super::objects::{run_dir, HOST_LABEL};
use super::usage::{self, Sample};
use super::SwarmRuntime;
use crate::node::docker::{docker_err, is_status};
use crate::node::endpoint::Endpoint;
use crate::node::labels;
use crate::node::rpc::RpcError;
use crate::node::runtime::{
    NodeDiagnostics, NodeEvent, NodeEventKind, NodeRecord, NodeState, NodeStats, Result,
    RuntimeError,
};
use crate::node::spec::{NetworkName, NodeRef, Ports, SWARM_PORT};

/// How often the event stream looks at the tasks.
const EVENT_POLL: Duration = Duration::from_secs(2);

/// The state of a node whose service has `replicas` and whose current task is `task`.
fn state_of(replicas: i64, task: Option<&Task>, host_up: bool) -> NodeState {
    if !host_up {
        return NodeState::Unknown;
    }
    let Some(t) = task else {
        return if replicas == 0 {
            NodeState::Exited { code: 0 }
        } else {
            NodeState::Created
        };
    };
    let status = t.status.as_ref();
    let code = status
        .and_then(|s| s.container_status.as_ref())
        .and_then(|c| c.exit_code)
        .unwrap_or(-1);
    match status.and_then(|s| s.state) {
        state if container_started(state) => NodeState::Running,
        Some(
            TaskState::NEW
            | TaskState::ALLOCATED
            | TaskState::PENDING
            | TaskState::ASSIGNED
            | TaskState::ACCEPTED
            | TaskState::PREPARING
            | TaskState::READY,
        ) => {
            if replicas == 0 {
                NodeState::Exited { code: 0 }
            } else {
                NodeState::Restarting
            }
        }
        Some(TaskState::COMPLETE | TaskState::SHUTDOWN) => NodeState::Exited { code: code.max(0) },
        Some(TaskState::FAILED) => NodeState::Exited { code },
        Some(TaskState::REJECTED) => NodeState::Dead,
        _ => NodeState::Unknown,
    }
}

/// Whether a task's container runs. The swarm holds a task in `STARTING` from its
/// container's start until the first health check passes (an `interval` later, 30 s; Docker
/// 20.10 has no shorter first interval); the container runs meanwhile, as a container whose
/// health is still `starting` does on one host, and readiness is the node answering through
/// its gate either way.
pub(super) fn container_started(state: Option<TaskState>) -> bool {
    matches!(state, Some(TaskState::RUNNING | TaskState::STARTING))
}

/// The task that stands for the node now: the newest one meant to run, else the newest.
fn current(tasks: &[Task]) -> Option<&Task> {
    let version = |t: &&Task| t.version.as_ref().and_then(|v| v.index).unwrap_or(0);
    tasks
        .iter()
        .filter(|t| t.desired_state == Some(TaskState::RUNNING))
        .max_by_key(version)
        .or_else(|| tasks.iter().max_by_key(version))
}

fn replicas_of(s: &Service) -> i64 {
    s.spec
        .as_ref()
        .and_then(|s| s.mode.as_ref())
        .and_then(|m| m.replicated.as_ref())
        .and_then(|r| r.replicas)
        .unwrap_or(1)
}

fn labels_of(s: &Service) -> HashMap<String, String> {
    s.spec
        .as_ref()
        .and_then(|s| s.labels.clone())
        .unwrap_or_default()
}

impl SwarmRuntime {
    /// Our node services among those `filters` selects (gate excluded).
    pub(super) async fn services(
        &self,
        filters: HashMap<String, Vec<String>>,
    ) -> Result<Vec<Service>> {
        let services = self
            .docker
            .list_services(Some(ListServicesOptions {
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(docker_err)?;
        Ok(services
            .into_iter()
            .filter(|s| {
                let l = labels_of(s);
                self.ours(&l) && l.contains_key(labels::INDEX)
            })
            .collect())
    }

    /// The node's service, if it exists and is ours; a foreign one of that name is
    /// [`RuntimeError::NameTaken`].
    pub(super) async fn find_service(&self, node: &NodeRef) -> Result<Option<Service>> {
        let name = node.container_name();
        match self.docker.inspect_service(&name, None).await {
            Ok(s) if self.ours(&labels_of(&s)) => Ok(Some(s)),
            Ok(_) => Err(RuntimeError::NameTaken { name }),
            Err(e) if is_status(&e, 404) => Ok(None),
            Err(e) => Err(docker_err(e)),
        }
    }

    /// The tasks of a service; none once the service is gone (the swarm answers 404).
    pub(super) async fn tasks_of(&self, service_id: &str) -> Result<Vec<Task>> {
        match self
            .docker
            .list_tasks(Some(ListTasksOptions {
                filters: Some(HashMap::from([(
                    "service".to_string(),
                    vec![service_id.to_string()],
                )])),
            }))
            .await
        {
            Ok(t) => Ok(t),
            Err(e) if is_status(&e, 404) => Ok(Vec::new()),
            Err(e) => Err(docker_err(e)),
        }
    }

    /// The node's current task, if its service has one.
    pub(super) async fn current_task(&self, node: &NodeRef) -> Result<Option<Task>> {
        let Some(s) = self.find_service(node).await? else {
            return Ok(None);
        };
        let tasks = self.tasks_of(s.id.as_deref().unwrap_or_default()).await?;
        Ok(current(&tasks).cloned())
    }

    /// The record of one service, given the swarm's hosts.
    fn record_from(&self, s: &Service, tasks: &[Task], hosts: &[Host]) -> Result<NodeRecord> {
        let l = labels_of(s);
        let name = s
            .spec
            .as_ref()
            .and_then(|s| s.name.clone())
            .unwrap_or_default();
        let spec = labels::spec_from_labels(&l).map_err(|e| RuntimeError::BadLabels {
            node: name.clone(),
            detail: e.to_string(),
        })?;
        let host = l
            .get(HOST_LABEL)
            .and_then(|id| hosts.iter().find(|h| &h.id == id));
        let task = current(tasks);
        let status = task.and_then(|t| t.status.as_ref());
        let state = state_of(replicas_of(s), task, host.is_some_and(|h| h.up));
        let published = status
            .and_then(|s| s.port_status.as_ref())
            .and_then(|p| p.ports.as_ref())
            .and_then(|ports| {
                ports
                    .iter()
                    .find(|p| p.target_port == Some(i64::from(SWARM_PORT)))
                    .and_then(|p| p.published_port)
            })
            .and_then(|p| u16::try_from(p).ok());
        Ok(NodeRecord {
            ports: Ports {
                swarm: published.or(spec.ports.swarm),
            },
            endpoints: host.map(|h| self.endpoints(h, &run_dir(&self.key(&spec.node)))),
            container_id: status
                .and_then(|s| s.container_status.as_ref())
                .and_then(|c| c.container_id.clone())
                .unwrap_or_default(),
            started_at: (state == NodeState::Running)
                .then(|| {
                    status
                        .and_then(|s| s.timestamp.as_ref())
                        .map(|t| t.to_string())
                })
                .flatten(),
            host: host.map(Host::view),
            state,
            spec,
        })
    }

    /// Records of our nodes among the services `filters` selects.
    pub(super) async fn list_matching(
        &self,
        filters: HashMap<String, Vec<String>>,
    ) -> Result<Vec<NodeRecord>> {
        let services = self.services(filters).await?;
        if services.is_empty() {
            return Ok(Vec::new());
        }
        let hosts = self.hosts().await?;
        let mut records = Vec::new();
        for s in &services {
            let tasks = self.tasks_of(s.id.as_deref().unwrap_or_default()).await?;
            match self.record_from(s, &tasks, &hosts) {
                Ok(r) => records.push(r),
                Err(e) => tracing::warn!(error = %e, "ignored"),
            }
        }
        records.sort_by(|a, b| a.spec.node.cmp(&b.spec.node));
        Ok(records)
    }

    pub(super) async fn list_network(&self, network: &NetworkName) -> Result<Vec<NodeRecord>> {
        self.list_matching(self.network_filter(network)).await
    }

    /// The record of one node.
    pub(super) async fn record(&self, node: &NodeRef) -> Result<NodeRecord> {
        let hosts = self.hosts().await?;
        Ok(self.record_and_task(node, &hosts).await?.0)
    }

    /// The node's record and its current task, from one inspect and one task list.
    pub(super) async fn record_and_task(
        &self,
        node: &NodeRef,
        hosts: &[Host],
    ) -> Result<(NodeRecord, Option<Task>)> {
        let Some(s) = self.find_service(node).await? else {
            return Err(RuntimeError::NotFound { node: node.clone() });
        };
        let tasks = self.tasks_of(s.id.as_deref().unwrap_or_default()).await?;
        let record = self.record_from(&s, &tasks, hosts)?;
        Ok((record, current(&tasks).cloned()))
    }

    /// The node's last log lines (the swarm gathers them from its host).
    pub(super) async fn service_log_tail(&self, node: &NodeRef) -> String {
        let opts = LogsOptions {
            stdout: true,
            stderr: true,
            tail: self.cfg.log_tail.to_string(),
            ..Default::default()
        };
        let mut out = String::new();
        let mut stream = self.docker.service_logs(&node.container_name(), Some(opts));
        let read = async {
            while let Some(Ok(chunk)) = stream.next().await {
                out.push_str(&chunk.to_string());
                if out.len() > 16 * 1024 {
                    break;
                }
            }
        };
        // A host that is down never ends the stream.
        let _ = tokio::time::timeout(Duration::from_secs(3), read).await;
        out
    }

    /// What the node's own RPC API says: peers and repo size; CPU, resident memory and uptime
    /// from kubo's own process figures ([`usage`]); the memory limit from its spec. Network
    /// counters stay 0: nothing the daemon reaches on a swarm reports them per container.
    pub(super) async fn stats_of(&self, node: &NodeRef) -> Result<NodeStats> {
        let r = self.record(node).await?;
        let mut stats = NodeStats {
            memory_limit_bytes: r.spec.resources.memory_bytes,
            ..Default::default()
        };
        if r.state != NodeState::Running {
            return Ok(stats);
        }
        // Unless kubo says when its process started: since its task became running.
        stats.uptime = r
            .started_at
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .and_then(|t| SystemTime::now().duration_since(t).ok());
        if let Some(ep) = &r.endpoints {
            stats.peer_count = self.rpc.peer_ids(&ep.api).await.ok().map(|p| p.len());
            stats.disk_used_bytes = self.rpc.repo_size(&ep.api).await.ok();
            match self.process_usage(node, &ep.api).await {
                Ok((cpu, last)) => {
                    stats.cpu_percent = cpu;
                    stats.memory_bytes = last.metrics.resident_bytes;
                    stats.uptime = Some(usage::uptime(&last.metrics, SystemTime::now()));
                }
                Err(e) => tracing::debug!(
                    node = %node.container_name(), error = %e,
                    "no process figures from kubo's metrics"
                ),
            }
        }
        Ok(stats)
    }

    /// kubo's process figures now and its CPU use (percent of one core) since the node's last
    /// recent sample, or over [`usage::MIN_WINDOW`] by sampling twice. Keeps the newest sample.
    async fn process_usage(
        &self,
        node: &NodeRef,
        api: &Endpoint,
    ) -> std::result::Result<(f64, Sample), RpcError> {
        let first = self.process_sample(api).await?;
        let start = self.samples.baseline(node, &first).unwrap_or(first);
        let waited = first.at.saturating_duration_since(start.at);
        let last = if waited < usage::MIN_WINDOW {
            tokio::time::sleep(usage::MIN_WINDOW - waited).await;
            match self.process_sample(api).await {
                Ok(s) => s,
                Err(e) => {
                    // Memory and uptime are still known; CPU is not.
                    tracing::debug!(node = %node.container_name(), error = %e, "no second sample");
                    first
                }
            }
        } else {
            first
        };
        self.samples.keep(node, last);
        Ok((usage::cpu_percent(&start, &last).unwrap_or(0.0), last))
    }

    /// One sample of kubo's process figures, dated halfway through the request.
    async fn process_sample(&self, api: &Endpoint) -> std::result::Result<Sample, RpcError> {
        let sent = Instant::now();
        let metrics = self.rpc.process_metrics(api).await?;
        let at = sent + sent.elapsed() / 2;
        Ok(Sample { at, metrics })
    }

    pub(super) async fn diagnostics_of(&self, node: &NodeRef) -> Result<NodeDiagnostics> {
        let r = self.record(node).await?;
        let peers = match (&r.endpoints, r.state) {
            (Some(ep), NodeState::Running) => self.rpc.peer_ids(&ep.api).await.ok(),
            _ => None,
        };
        Ok(NodeDiagnostics {
            state: Some(r.state),
            logs: self.service_log_tail(node).await,
            peers,
            config: None,
        })
    }

    /// Start and die events from polling the tasks of our services every [`EVENT_POLL`].
    pub(super) fn event_stream(&self) -> BoxStream<'static, Result<NodeEvent>> {
        let rt = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            // Task id → whether it was running when last seen.
            let mut running: HashMap<String, (NodeRef, bool)> = HashMap::new();
            let mut first = true;
            loop {
                match rt.poll_tasks().await {
                    Ok(tasks) => {
                        let now = unix_now();
                        for (node, id, is_running, code) in tasks {
                            let was = running.get(&id).map(|(_, r)| *r);
                            let kind = match (was, is_running) {
                                (None | Some(false), true) if !first => Some(NodeEventKind::Start),
                                (Some(true), false) => Some(NodeEventKind::Die { exit_code: code }),
                                _ => None,
                            };
                            running.insert(id, (node.clone(), is_running));
                            if let Some(kind) = kind {
                                if tx
                                    .send(Ok(NodeEvent {
                                        node,
                                        kind,
                                        time: now,
                                    }))
                                    .await
                                    .is_err()
                                {
                                    return;
                                }
                            }
                        }
                        first = false;
                    }
                    Err(e) => {
                        if tx.send(Err(e)).await.is_err() {
                            return;
                        }
                    }
                }
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(EVENT_POLL).await;
            }
        });
        tokio_stream_from(rx)
    }

    /// Every task of our services: (node, task id, running — its container started, on a host
    /// that is up —, exit code).
    async fn poll_tasks(&self) -> Result<Vec<(NodeRef, String, bool, Option<i64>)>> {
        let services = self.services(self.filter(&[])).await?;
        let by_id: HashMap<String, NodeRef> = services
            .iter()
            .filter_map(|s| {
                let node = labels::node_ref_from_labels(&labels_of(s)).ok()?;
                Some((s.id.clone()?, node))
            })
            .collect();
        if by_id.is_empty() {
            return Ok(Vec::new());
        }
        let tasks = self
            .docker
            .list_tasks(None::<ListTasksOptions>)
            .await
            .map_err(docker_err)?;
        // A lost host's tasks still read running (nothing reports otherwise): they count as
        // dead as soon as the swarm reports the host down, so the network's pass sees it then
        // rather than at the next resync.
        let down: HashSet<String> = self
            .hosts()
            .await?
            .into_iter()
            .filter(|h| !h.up)
            .map(|h| h.id)
            .collect();
        Ok(tasks
            .into_iter()
            .filter_map(|t| {
                let node = by_id.get(t.service_id.as_deref()?)?.clone();
                let status = t.status.as_ref();
                let on_lost_host = t.node_id.as_ref().is_some_and(|h| down.contains(h));
                let running = container_started(status.and_then(|s| s.state)) && !on_lost_host;
                let code = status
                    .and_then(|s| s.container_status.as_ref())
                    .and_then(|c| c.exit_code);
                Some((node, t.id?, running, code))
            })
            .collect())
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A stream of what `rx` receives.
fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> BoxStream<'static, T> {
    futures_util::stream::unfold(rx, |mut rx| async move {
        let item = rx.recv().await?;
        Some((item, rx))
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerStatus, ObjectVersion, TaskStatus};

    fn task(version: u64, desired: TaskState, state: TaskState, code: Option<i64>) -> Task {
        Task {
            id: Some(format!("t{version}")),
            version: Some(ObjectVersion {
                index: Some(version),
            }),
            desired_state: Some(desired),
            status: Some(TaskStatus {
                state: Some(state),
                container_status: Some(ContainerStatus {
                    exit_code: code,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_current_task_is_the_newest_meant_to_run() {
        let tasks = [
            task(5, TaskState::SHUTDOWN, TaskState::FAILED, Some(1)),
            task(7, TaskState::RUNNING, TaskState::RUNNING, None),
            task(9, TaskState::SHUTDOWN, TaskState::SHUTDOWN, Some(0)),
        ];
        assert_eq!(current(&tasks).and_then(|t| t.id.as_deref()), Some("t7"));
        assert_eq!(state_of(1, current(&tasks), true), NodeState::Running);
    }

    #[test]
    fn states_map_like_containers() {
        let failed = task(1, TaskState::RUNNING, TaskState::FAILED, Some(3));
        assert_eq!(
            state_of(1, Some(&failed), true),
            NodeState::Exited { code: 3 }
        );
        assert_eq!(state_of(0, None, true), NodeState::Exited { code: 0 });
        let starting = task(1, TaskState::RUNNING, TaskState::PREPARING, None);
        assert_eq!(state_of(1, Some(&starting), true), NodeState::Restarting);
        // A node on a host that is down is not known to run.
        let running = task(1, TaskState::RUNNING, TaskState::RUNNING, None);
        assert_eq!(state_of(1, Some(&running), false), NodeState::Unknown);
        let rejected = task(1, TaskState::RUNNING, TaskState::REJECTED, None);
        assert_eq!(state_of(1, Some(&rejected), true), NodeState::Dead);
    }
}
