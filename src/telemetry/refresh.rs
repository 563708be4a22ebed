//! The periodic pass that sets the gauges: networks by status, nodes by state, port-pool use,
//! and each node's resource use from the runtime's stats.
//!
//! Series of networks and nodes that are gone are not set any more and disappear after the
//! recorder's idle timeout (see [`super::install`]).

use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;

use super::names;
use crate::node::NodeState;
use crate::orchestrator::Orchestrator;
use crate::store::NetworkStatus;

const STATUSES: &[NetworkStatus] = &[
    NetworkStatus::Pending,
    NetworkStatus::Stopped,
    NetworkStatus::Starting,
    NetworkStatus::Running,
    NetworkStatus::Degraded,
    NetworkStatus::Stopping,
    NetworkStatus::Failed,
];

/// The `state` label of a node: its container's state, or `absent` without a container.
fn state_label(state: Option<NodeState>) -> &'static str {
    match state {
        None => "absent",
        Some(NodeState::Created) => "created",
        Some(NodeState::Running) => "running",
        Some(NodeState::Restarting) => "restarting",
        Some(NodeState::Paused) => "paused",
        Some(NodeState::Exited { .. }) => "exited",
        Some(NodeState::Dead) => "dead",
        Some(NodeState::Unknown) => "unknown",
    }
}

const STATES: &[&str] = &[
    "absent",
    "created",
    "running",
    "restarting",
    "paused",
    "exited",
    "dead",
    "unknown",
];

/// One pass. Errors are logged and counted; the next pass tries again.
pub async fn refresh_once(orch: &Orchestrator) {
    for u in orch.port_usage() {
        let labels = [("kind", u.kind.to_string()), ("range", u.range.to_string())];
        metrics::gauge!(names::PORTS_USED, &labels).set(u.used as f64);
        metrics::gauge!(names::PORTS_SIZE, &labels).set(u.size as f64);
    }
    let (subnets, used) = orch.subnet_usage();
    let labels = [("pool", subnets.pool.to_string())];
    metrics::gauge!(names::SUBNETS_USED, &labels).set(used as f64);
    metrics::gauge!(names::SUBNETS_SIZE, &labels).set(subnets.total() as f64);
    match orch.admission_usage().await {
        Ok(u) => {
            metrics::gauge!(names::ADMITTED_MEMORY).set(u.held.memory_bytes as f64);
            metrics::gauge!(names::ADMITTED_NODES).set(f64::from(u.held.nodes));
            if let Some(b) = u.memory_budget {
                metrics::gauge!(names::ADMISSION_MEMORY_BUDGET).set(b as f64);
            }
            if let Some(c) = u.cpu_budget {
                metrics::gauge!(names::ADMISSION_CPU_BUDGET).set(c);
            }
        }
        Err(e) => {
            metrics::counter!(names::REFRESH_ERRORS).increment(1);
            tracing::debug!(error = %e, "metrics refresh: cannot read admission usage");
        }
    }
    let networks = match orch.list().await {
        Ok(n) => n,
        Err(e) => {
            metrics::counter!(names::REFRESH_ERRORS).increment(1);
            tracing::debug!(error = %e, "metrics refresh: cannot list networks");
            return;
        }
    };
    for status in STATUSES {
        let n = networks.iter().filter(|v| v.status == *status).count();
        metrics::gauge!(names::NETWORKS, "status" => status.as_str()).set(n as f64);
    }
    for net in &networks {
        for state in STATES {
            let n = net
                .nodes
                .iter()
                .filter(|n| state_label(n.state) == *state)
                .count();
            metrics::gauge!(names::NODES, "network" => net.name.clone(), "state" => *state)
                .set(n as f64);
        }
        match orch.pin_counts(&net.name).await {
            Ok(c) => {
                for (status, n) in [
                    ("queued", c.queued),
                    ("pinning", c.pinning),
                    ("pinned", c.pinned),
                    ("failed", c.failed),
                ] {
                    metrics::gauge!(names::PINS, "network" => net.name.clone(), "status" => status)
                        .set(n as f64);
                }
                let under = orch.under_replicated_pins(&net.name);
                metrics::gauge!(names::PINS_UNDER_REPLICATED, "network" => net.name.clone())
                    .set(under as f64);
            }
            Err(e) => {
                metrics::counter!(names::REFRESH_ERRORS).increment(1);
                tracing::debug!(network = %net.name, error = %e, "metrics refresh: no pin counts");
            }
        }
        if !net.nodes.iter().any(|n| n.state.is_some()) {
            continue;
        }
        let stats = match orch.stats(&net.name).await {
            Ok(s) => s,
            Err(e) => {
                metrics::counter!(names::REFRESH_ERRORS).increment(1);
                tracing::debug!(network = %net.name, error = %e, "metrics refresh: no stats");
                continue;
            }
        };
        for (index, s) in stats {
            let labels = [("network", net.name.clone()), ("node", index.to_string())];
            metrics::gauge!(names::NODE_CPU, &labels).set(s.cpu_percent / 100.0);
            metrics::gauge!(names::NODE_MEMORY, &labels).set(s.memory_bytes as f64);
            metrics::gauge!(names::NODE_MEMORY_LIMIT, &labels).set(s.memory_limit_bytes as f64);
            metrics::gauge!(names::NODE_NET_RX, &labels).set(s.net_rx_bytes as f64);
            metrics::gauge!(names::NODE_NET_TX, &labels).set(s.net_tx_bytes as f64);
            if let Some(d) = s.disk_used_bytes {
                metrics::gauge!(names::NODE_DISK, &labels).set(d as f64);
            }
            if let Some(p) = s.peer_count {
                metrics::gauge!(names::NODE_PEERS, &labels).set(p as f64);
            }
            if let Some(u) = s.uptime {
                metrics::gauge!(names::NODE_UPTIME, &labels).set(u.as_secs_f64());
            }
        }
    }
}

/// Refreshes every `every` (the first pass at once) until aborted; also runs the recorder's
/// upkeep.
pub async fn run(orch: Orchestrator, handle: PrometheusHandle, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        refresh_once(&orch).await;
        handle.run_upkeep();
    }
}
