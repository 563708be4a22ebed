//! Observation: our nodes listed and rebuilt from their labels, the record of one container
//! (ports, state, live limits), log tails, stats, diagnostics (config without the private key)
//! and the event stream. Reads only; must not change any Docker object.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum, EventMessage};
use bollard::query_parameters::{EventsOptions, ListContainersOptions, LogsOptions, StatsOptions};
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};

use super::client::{docker_err, is_status};
use super::{DockerRuntime, REPO_PATH};
use crate::node::endpoint::NodeEndpoints;
use crate::node::runtime::{
    NodeCpu, NodeDiagnostics, NodeEvent, NodeEventKind, NodeRecord, NodeState, NodeStats, Result,
    RuntimeError,
};
use crate::node::spec::{NodeRef, Ports, SWARM_PORT};
use crate::node::{kubo_config, labels};

/// A container's labels (empty if it has none).
pub(super) fn labels_of(info: &ContainerInspectResponse) -> HashMap<String, String> {
    info.config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default()
}

/// The host port a container port is published on, if any.
pub(super) fn host_port(info: &ContainerInspectResponse, container_port: u16) -> Option<u16> {
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

impl DockerRuntime {
    /// Our nodes among the containers `filters` selects, rebuilt from their labels.
    pub(super) async fn list_matching(
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
            let l = labels_of(&info);
            // A probe of an image (`probe.rs`) is ours but no node.
            if !self.ours(&l) || l.contains_key(super::probe::PROBE) {
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

    /// The last log lines of a container, for error messages.
    pub(super) async fn log_tail(&self, name: &str) -> String {
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

    /// The record of an inspected container: its spec from the labels, live limits, ports, state.
    pub(super) fn record_from(&self, info: ContainerInspectResponse) -> Result<NodeRecord> {
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
        // Containers of an older nexus have no run directory: their APIs are TCP ports.
        let sockets = info
            .mounts
            .iter()
            .flatten()
            .any(|m| m.destination.as_deref() == Some(kubo_config::RUN_DIR));
        let endpoints = sockets.then(|| {
            let dir = self.node_dir(&spec.node);
            NodeEndpoints {
                api: dir.api(),
                gateway: dir.gateway(),
            }
        });
        Ok(NodeRecord {
            ports: Ports {
                swarm: host_port(&info, SWARM_PORT),
            },
            endpoints,
            state: state_of(&info),
            started_at: started_at(&info),
            host: None,
            container_id: info.id.clone().unwrap_or_default(),
            spec,
        })
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

    /// The CPU time of a running node's container since its start: one inspect and one
    /// one-shot stats call (Docker does not wait for a second sample).
    pub(super) async fn cpu_of(&self, node: &NodeRef) -> Result<Option<NodeCpu>> {
        let info = self.inspect_node(node).await?;
        let running = info.state.as_ref().and_then(|s| s.running) == Some(true);
        let Some(started_at) = started_at(&info).filter(|_| running) else {
            return Ok(None);
        };
        let opts = StatsOptions {
            stream: false,
            one_shot: true,
        };
        let stats = self
            .docker
            .stats(&node.container_name(), Some(opts))
            .try_next()
            .await
            .map_err(docker_err)?;
        Ok(stats
            .and_then(|s| s.cpu_stats?.cpu_usage?.total_usage)
            .map(|ns| NodeCpu {
                used: Duration::from_nanos(ns),
                started_at,
            }))
    }

    /// A point-in-time view of a node's resource use (Docker stats, disk, peers).
    pub(super) async fn stats_of(&self, node: &NodeRef) -> Result<NodeStats> {
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
        if running {
            let api = self.node_dir(node).api();
            stats.peer_count = self.rpc.peer_ids(&api).await.ok().map(|ids| ids.len());
        }
        Ok(stats)
    }

    /// State, log tail, public config and peers of a node.
    pub(super) async fn diagnostics_of(&self, node: &NodeRef) -> Result<NodeDiagnostics> {
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
            d.peers = self.rpc.peer_ids(&self.node_dir(node).api()).await.ok();
        }
        Ok(d)
    }

    /// Start, die and OOM events of this instance's node containers, from now on.
    pub(super) fn event_stream(&self) -> BoxStream<'static, Result<NodeEvent>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::spec::NetworkName;

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
