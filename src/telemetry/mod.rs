//! Observability: Prometheus metrics, health and readiness, and their HTTP listener.
//!
//! Owns every metric name (the `nexus_…` constants below and [`names::ALL`]), their
//! descriptions and the Prometheus recorder ([`install`]); the metrics/health listener
//! (`/metrics`, `/healthz`, `/readyz`, and the authenticated scrape-through of a node's own
//! kubo metrics at `/nodes/<network>/<index>/metrics`, see [`server`]); readiness (store, Docker
//! and reconciler checks, timeboxed and cached, see [`health`]) and the gRPC health status it
//! drives; the periodic pass that refreshes gauges ([`refresh`]); and the gRPC metrics layer
//! ([`grpc`]). Counters and histograms are recorded where things happen (orchestrator,
//! runtime, delegator) with the names from here.
//!
//! It must not change state: it reads the orchestrator, store and runtime and never starts,
//! stops or repairs anything. Labels stay bounded: networks, node indexes, port kinds and
//! ranges, feature, status code and known gRPC methods; never paths, users, tokens or keys.

pub mod grpc;
pub mod health;
pub mod refresh;
pub mod server;

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;

pub use health::{Readiness, ReadinessReport};
pub use server::{serve, TelemetryError, TelemetryState};

/// Every metric the daemon exports. Units are in the names; counters end in `_total`.
pub mod names {
    /// Gauge, `status`: networks per status (every status is always present).
    pub const NETWORKS: &str = "nexus_networks";
    /// Gauge, `network`, `state`: nodes of each network per container state.
    pub const NODES: &str = "nexus_nodes";
    /// Counter, `network`, `node`: unexpected deaths (exit or OOM) of a node meant to run,
    /// each followed by a restart (or the network failing after too many).
    pub const NODE_RESTARTS: &str = "nexus_node_restarts_total";
    /// Histogram, `result` (`ok`, `error`): time of one reconcile pass of one network.
    pub const RECONCILE_DURATION: &str = "nexus_reconcile_duration_seconds";
    /// Counter, `network`, `kind` (`transient`, `fatal`): reconcile passes that failed.
    pub const RECONCILE_ERRORS: &str = "nexus_reconcile_errors_total";
    /// Counter, `kind` (`unavailable`, `api`): failed Docker Engine API calls.
    pub const DOCKER_ERRORS: &str = "nexus_docker_errors_total";
    /// Gauge, `kind`, `range`: ports of a configured range allocated to nodes.
    pub const PORTS_USED: &str = "nexus_port_pool_used_ports";
    /// Gauge, `kind`, `range`: ports in a configured range.
    pub const PORTS_SIZE: &str = "nexus_port_pool_size_ports";
    /// Counter, `method`, `code`: finished gRPC calls.
    pub const GRPC_REQUESTS: &str = "nexus_grpc_requests_total";
    /// Histogram, `method`: gRPC call duration (to the end of the response stream).
    pub const GRPC_DURATION: &str = "nexus_grpc_request_duration_seconds";
    /// Counter, `network`, `feature`, `status`: delegator requests answered.
    pub const DELEGATOR_REQUESTS: &str = "nexus_delegator_requests_total";
    /// Histogram, `network`, `feature`: delegator time to response headers.
    pub const DELEGATOR_DURATION: &str = "nexus_delegator_request_duration_seconds";
    /// Counter, `network`, `kind` (`connect`, `timeout`, `other`): failed attempts to reach a
    /// node (a fail-over to another node counts each attempt).
    pub const DELEGATOR_UPSTREAM_ERRORS: &str = "nexus_delegator_upstream_errors_total";
    /// Gauges, `network`, `node`: the runtime's stats of each node with a container.
    pub const NODE_CPU: &str = "nexus_node_cpu_usage_cores";
    pub const NODE_MEMORY: &str = "nexus_node_memory_usage_bytes";
    pub const NODE_MEMORY_LIMIT: &str = "nexus_node_memory_limit_bytes";
    pub const NODE_NET_RX: &str = "nexus_node_network_receive_bytes";
    pub const NODE_NET_TX: &str = "nexus_node_network_transmit_bytes";
    pub const NODE_DISK: &str = "nexus_node_disk_used_bytes";
    pub const NODE_PEERS: &str = "nexus_node_peers";
    pub const NODE_UPTIME: &str = "nexus_node_uptime_seconds";
    /// Gauge: 1 when every readiness check passes.
    pub const READY: &str = "nexus_ready";
    /// Gauge, `check` (`store`, `docker`, `reconciler`): 1 when the check passes.
    pub const READINESS_CHECK: &str = "nexus_readiness_check";
    /// Counter: refresh passes whose stats could not be read (Docker or store errors).
    pub const REFRESH_ERRORS: &str = "nexus_metrics_refresh_errors_total";

    /// Every name above (a histogram's series add `_bucket`, `_sum` and `_count`).
    pub const ALL: &[&str] = &[
        NETWORKS,
        NODES,
        NODE_RESTARTS,
        RECONCILE_DURATION,
        RECONCILE_ERRORS,
        DOCKER_ERRORS,
        PORTS_USED,
        PORTS_SIZE,
        GRPC_REQUESTS,
        GRPC_DURATION,
        DELEGATOR_REQUESTS,
        DELEGATOR_DURATION,
        DELEGATOR_UPSTREAM_ERRORS,
        NODE_CPU,
        NODE_MEMORY,
        NODE_MEMORY_LIMIT,
        NODE_NET_RX,
        NODE_NET_TX,
        NODE_DISK,
        NODE_PEERS,
        NODE_UPTIME,
        READY,
        READINESS_CHECK,
        REFRESH_ERRORS,
    ];

    /// The histograms among [`ALL`].
    pub const HISTOGRAMS: &[&str] = &[RECONCILE_DURATION, GRPC_DURATION, DELEGATOR_DURATION];

    /// Whether `series` (a name as it appears in a scrape or a query) belongs to a metric
    /// above, including a histogram's `_bucket`, `_sum` and `_count` series.
    pub fn is_exported(series: &str) -> bool {
        ALL.contains(&series)
            || HISTOGRAMS.iter().any(|h| {
                series
                    .strip_prefix(h)
                    .is_some_and(|s| matches!(s, "_bucket" | "_sum" | "_count"))
            })
    }
}

/// Histogram buckets in seconds: from 5 ms (a proxied `id`) to 5 minutes (a slow start).
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once; later calls return the same handle).
/// Gauges not set for `gauge_idle` disappear from the output: this is how the series of
/// removed networks and nodes go away. Returns `None` if another recorder is installed.
pub fn install(gauge_idle: Duration) -> Option<PrometheusHandle> {
    if let Some(h) = HANDLE.get() {
        return Some(h.clone());
    }
    let builder = PrometheusBuilder::new()
        .idle_timeout(MetricKindMask::GAUGE, Some(gauge_idle))
        .set_buckets(BUCKETS)
        .ok()?;
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        return HANDLE.get().cloned();
    }
    let _ = HANDLE.set(handle.clone());
    describe();
    Some(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    use names::*;
    describe_gauge!(NETWORKS, "Networks per status.");
    describe_gauge!(NODES, "Nodes of each network per container state.");
    describe_counter!(
        NODE_RESTARTS,
        "Unexpected deaths (exit or OOM) of nodes meant to run; each is restarted."
    );
    describe_histogram!(
        RECONCILE_DURATION,
        Unit::Seconds,
        "Duration of one reconcile pass of one network."
    );
    describe_counter!(RECONCILE_ERRORS, "Reconcile passes that failed.");
    describe_counter!(DOCKER_ERRORS, "Failed Docker Engine API calls.");
    describe_gauge!(
        PORTS_USED,
        "Ports of a configured range allocated to nodes."
    );
    describe_gauge!(PORTS_SIZE, "Ports in a configured range.");
    describe_counter!(
        GRPC_REQUESTS,
        "Finished gRPC calls by method and status code."
    );
    describe_histogram!(GRPC_DURATION, Unit::Seconds, "gRPC call duration.");
    describe_counter!(DELEGATOR_REQUESTS, "Requests answered by the delegator.");
    describe_histogram!(
        DELEGATOR_DURATION,
        Unit::Seconds,
        "Delegator time from request to response headers."
    );
    describe_counter!(
        DELEGATOR_UPSTREAM_ERRORS,
        "Failed attempts of the delegator to reach a node."
    );
    describe_gauge!(NODE_CPU, "CPU used by a node, in cores.");
    describe_gauge!(NODE_MEMORY, Unit::Bytes, "Memory used by a node.");
    describe_gauge!(NODE_MEMORY_LIMIT, Unit::Bytes, "Memory limit of a node.");
    describe_gauge!(
        NODE_NET_RX,
        Unit::Bytes,
        "Bytes a node received since its start."
    );
    describe_gauge!(
        NODE_NET_TX,
        Unit::Bytes,
        "Bytes a node sent since its start."
    );
    describe_gauge!(
        NODE_DISK,
        Unit::Bytes,
        "Bytes used in a node's data volume."
    );
    describe_gauge!(NODE_PEERS, "Connected swarm peers of a node.");
    describe_gauge!(
        NODE_UPTIME,
        Unit::Seconds,
        "Time since a node's last start."
    );
    describe_gauge!(READY, "1 when the daemon is ready (every check passes).");
    describe_gauge!(READINESS_CHECK, "1 when a readiness check passes.");
    describe_counter!(REFRESH_ERRORS, "Gauge refresh passes that hit an error.");
}

#[cfg(test)]
mod tests {
    use super::names;

    #[test]
    fn names_are_prometheus_names_with_units() {
        for n in names::ALL {
            assert!(n.starts_with("nexus_"), "{n}");
            assert!(
                n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{n}"
            );
        }
        for h in names::HISTOGRAMS {
            assert!(h.ends_with("_seconds"), "{h}");
        }
        assert!(names::is_exported(
            "nexus_grpc_request_duration_seconds_bucket"
        ));
        assert!(!names::is_exported("nexus_networks_bucket"));
        assert!(!names::is_exported("nexus_unknown"));
    }
}
