//! Observability: Prometheus metrics, health and readiness, and their HTTP listener.
//!
//! Owns every metric name, kind, unit and description (one table, [`names::TABLE`], from
//! which the `nexus_…` constants and [`names::ALL`] come) and the Prometheus recorder
//! ([`install`]); the metrics/health listener (`/metrics`, `/healthz`, `/readyz`, and the
//! authenticated scrape-through of a node's own kubo metrics at
//! `/nodes/<network>/<index>/metrics`, see [`server`]); readiness (store, Docker
//! and reconciler checks, timeboxed and cached, see [`health`]) and the gRPC health status it
//! drives; the periodic pass that refreshes gauges ([`refresh`]); and the gRPC metrics layer
//! ([`grpc`]); the delegator's access-log writer ([`access_log`]: lines formatted by hand,
//! written by a thread of its own, dropped and counted rather than waited for). Counters and histograms are recorded where things happen (orchestrator,
//! runtime, delegator) with the names from here.
//!
//! It must not change state: it reads the orchestrator, store and runtime and never starts,
//! stops or repairs anything. Labels stay bounded: networks, node indexes, port kinds and
//! ranges, feature, status code and known gRPC methods; never paths, users, tokens or keys.

pub mod access_log;
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
///
/// One table ([`TABLE`](names::TABLE)): each row gives the constant callers record with, the
/// exported name, the kind, the unit and the help text; [`ALL`](names::ALL),
/// [`histograms`](names::histograms) and the descriptions given to the recorder all come from it.
pub mod names {
    use metrics::Unit;

    /// What kind of metric a name is.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Kind {
        Counter,
        Gauge,
        Histogram,
    }

    /// One row of the table: the exported name, its kind, its unit (if any) and its help.
    #[derive(Clone, Copy, Debug)]
    pub struct Metric {
        pub name: &'static str,
        pub kind: Kind,
        pub unit: Option<Unit>,
        pub help: &'static str,
    }

    /// Writes, from one list, a constant per metric, [`TABLE`] and [`ALL`].
    macro_rules! metric_table {
        ($( $(#[$doc:meta])* $konst:ident = $name:literal, $kind:ident, $unit:expr, $help:literal; )*) => {
            $( $(#[$doc])* pub const $konst: &str = $name; )*

            /// Every metric: name, kind, unit and help.
            pub const TABLE: &[Metric] = &[
                $( Metric { name: $konst, kind: Kind::$kind, unit: $unit, help: $help }, )*
            ];

            /// Every name above (a histogram's series add `_bucket`, `_sum` and `_count`).
            pub const ALL: &[&str] = &[ $( $konst, )* ];
        };
    }

    metric_table! {
        /// Gauge, `status`: networks per status (every status is always present).
        NETWORKS = "nexus_networks", Gauge, None, "Networks per status.";
        /// Gauge, `network`, `state`: nodes of each network per container state.
        NODES = "nexus_nodes", Gauge, None, "Nodes of each network per container state.";
        /// Counter, `network`, `node`: unexpected deaths (exit or OOM) of a node meant to run,
        /// each followed by a restart (or the network failing after too many).
        NODE_RESTARTS = "nexus_node_restarts_total", Counter, None,
            "Unexpected deaths (exit or OOM) of nodes meant to run; each is restarted.";
        /// Histogram, `result` (`ok`, `error`): time of one reconcile pass of one network.
        RECONCILE_DURATION = "nexus_reconcile_duration_seconds", Histogram, Some(Unit::Seconds),
            "Duration of one reconcile pass of one network.";
        /// Counter, `network`, `kind` (`transient`, `fatal`): reconcile passes that failed.
        RECONCILE_ERRORS = "nexus_reconcile_errors_total", Counter, None,
            "Reconcile passes that failed.";
        /// Counter, `kind` (`unavailable`, `api`): failed Docker Engine API calls.
        DOCKER_ERRORS = "nexus_docker_errors_total", Counter, None,
            "Failed Docker Engine API calls.";
        /// Gauge, `kind`, `range`: ports of a configured range allocated to nodes.
        PORTS_USED = "nexus_port_pool_used_ports", Gauge, None,
            "Ports of a configured range allocated to nodes.";
        /// Gauge, `kind`, `range`: ports in a configured range.
        PORTS_SIZE = "nexus_port_pool_size_ports", Gauge, None, "Ports in a configured range.";
        /// Gauge, `pool`: subnets of the subnet pool held by networks.
        SUBNETS_USED = "nexus_subnet_pool_used_subnets", Gauge, None,
            "Subnets held by networks (of the pool, or kept from an earlier pool).";
        /// Gauge, `pool`: subnets the subnet pool holds.
        SUBNETS_SIZE = "nexus_subnet_pool_size_subnets", Gauge, None,
            "Subnets the configured subnet pool holds.";
        /// Counter, `limit` (`memory`, `nodes`, `cpu`, `ports`): starts and updates refused up front
        /// because the host could not take them.
        ADMISSION_REFUSALS = "nexus_admission_refusals_total", Counter, None,
            "Starts and updates refused by admission control, by the limit that refused.";
        /// Gauge: the sum of the memory limits of the nodes of networks meant to run.
        ADMITTED_MEMORY = "nexus_admitted_memory_bytes", Gauge, Some(Unit::Bytes),
            "Sum of the memory limits of the nodes of networks meant to run.";
        /// Gauge: the most those limits may add up to (host memory × node.memory_overcommit);
        /// absent when the host's memory is unknown.
        ADMISSION_MEMORY_BUDGET = "nexus_admission_memory_budget_bytes", Gauge, Some(Unit::Bytes),
            "The most the nodes' memory limits may add up to: host memory times node.memory_overcommit.";
        /// Gauge: the cores running networks' nodes may use together (the host's cores ×
        /// node.cpu_budget); absent when the host's cores are unknown or the check is off.
        ADMISSION_CPU_BUDGET = "nexus_admission_cpu_budget_cores", Gauge, None,
            "The cores running networks' nodes may use together: the host's cores times node.cpu_budget.";
        /// Gauge: what one running node uses, in cores, as the CPU meter measured it.
        NODE_CPU_MEASURED = "nexus_node_cpu_measured_cores", Gauge, None,
            "What one running node uses, in cores, as measured on a few settled nodes (admission counts every node at it).";
        /// Gauge: nodes of networks meant to run.
        ADMITTED_NODES = "nexus_admitted_nodes", Gauge, None,
            "Nodes of networks meant to run (node.max_nodes caps it).";
        /// Gauge, `network`, `status` (`queued`, `pinning`, `pinned`, `failed`): pins of a
        /// network's pinset.
        PINS = "nexus_pins", Gauge, None, "Pins of a network's pinset by status.";
        /// Gauge, `network`: pins held on fewer nodes than the replication factor wants.
        PINS_UNDER_REPLICATED = "nexus_pins_under_replicated", Gauge, None,
            "Pins held on fewer nodes than the network's replication factor wants.";
        /// Histogram, `network`: from a pinned pin losing a copy to it being held on as many
        /// nodes as the network's ready nodes can hold again.
        PIN_REREPLICATION = "nexus_pin_rereplication_duration_seconds", Histogram,
            Some(Unit::Seconds),
            "Time from a pinned pin losing a copy to it being held on as many nodes as wanted again.";
        /// Counter, `method`, `code`: finished gRPC calls.
        GRPC_REQUESTS = "nexus_grpc_requests_total", Counter, None,
            "Finished gRPC calls by method and status code.";
        /// Histogram, `method`: gRPC call duration (to the end of the response stream).
        GRPC_DURATION = "nexus_grpc_request_duration_seconds", Histogram, Some(Unit::Seconds),
            "gRPC call duration.";
        /// Counter, `network`, `feature`, `status`: delegator requests answered.
        DELEGATOR_REQUESTS = "nexus_delegator_requests_total", Counter, None,
            "Requests answered by the delegator.";
        /// Histogram, `network`, `feature`: delegator time to response headers.
        DELEGATOR_DURATION = "nexus_delegator_request_duration_seconds", Histogram,
            Some(Unit::Seconds), "Delegator time from request to response headers.";
        /// Counter, `network`, `kind` (`connect`, `timeout`, `other`): failed attempts to reach a
        /// node (a fail-over to another node counts each attempt).
        DELEGATOR_UPSTREAM_ERRORS = "nexus_delegator_upstream_errors_total", Counter, None,
            "Failed attempts of the delegator to reach a node.";
        /// Counter, `network`, `when` (`before`: refused up front; `streaming`: a body cut at
        /// the limit): writes refused with 507 because the node's disk limit would be passed.
        DELEGATOR_DISK_REFUSALS = "nexus_delegator_disk_refusals_total", Counter, None,
            "Writes the delegator refused because the node's disk limit would be passed.";
        /// Counter, `network` (`-` before a network is known), `reason` (`ambiguous_host`,
        /// `token`, `revoked`, `membership`, `role`, `policy`, `rate`, `concurrency`):
        /// requests the delegator refused, by why.
        DELEGATOR_REFUSALS = "nexus_delegator_refusals_total", Counter, None,
            "Requests the delegator refused, by reason.";
        /// Counter: access-log lines dropped because the writer's buffer was full (stderr
        /// blocked or slower than the requests); the requests themselves were answered.
        DELEGATOR_ACCESS_LOG_DROPPED = "nexus_delegator_access_log_dropped_total", Counter, None,
            "Delegator access-log lines dropped because the log writer's buffer was full.";
        /// Gauges, `network`, `node`: the runtime's stats of each node with a container.
        NODE_CPU = "nexus_node_cpu_usage_cores", Gauge, None, "CPU used by a node, in cores.";
        NODE_MEMORY = "nexus_node_memory_usage_bytes", Gauge, Some(Unit::Bytes),
            "Memory used by a node.";
        NODE_MEMORY_LIMIT = "nexus_node_memory_limit_bytes", Gauge, Some(Unit::Bytes),
            "Memory limit of a node.";
        NODE_NET_RX = "nexus_node_network_receive_bytes", Gauge, Some(Unit::Bytes),
            "Bytes a node received since its start.";
        NODE_NET_TX = "nexus_node_network_transmit_bytes", Gauge, Some(Unit::Bytes),
            "Bytes a node sent since its start.";
        NODE_DISK = "nexus_node_disk_used_bytes", Gauge, Some(Unit::Bytes),
            "Bytes used in a node's data volume.";
        NODE_PEERS = "nexus_node_peers", Gauge, None, "Connected swarm peers of a node.";
        NODE_UPTIME = "nexus_node_uptime_seconds", Gauge, Some(Unit::Seconds),
            "Time since a node's last start.";
        /// Gauge: 1 when every readiness check passes.
        READY = "nexus_ready", Gauge, None, "1 when the daemon is ready (every check passes).";
        /// Gauge, `check` (`store`, `docker`, `reconciler`): 1 when the check passes.
        READINESS_CHECK = "nexus_readiness_check", Gauge, None,
            "1 when a readiness check passes.";
        /// Counter: refresh passes whose stats could not be read (Docker or store errors).
        REFRESH_ERRORS = "nexus_metrics_refresh_errors_total", Counter, None,
            "Gauge refresh passes that hit an error.";
    }

    /// The histograms among [`ALL`].
    pub fn histograms() -> impl Iterator<Item = &'static str> {
        TABLE
            .iter()
            .filter(|m| m.kind == Kind::Histogram)
            .map(|m| m.name)
    }

    /// Whether `series` (a name as it appears in a scrape or a query) belongs to a metric
    /// above, including a histogram's `_bucket`, `_sum` and `_count` series.
    pub fn is_exported(series: &str) -> bool {
        ALL.contains(&series)
            || histograms().any(|h| {
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

/// Gives the recorder every metric's unit and help, from [`names::TABLE`].
fn describe() {
    use names::Kind;
    for m in names::TABLE {
        metrics::with_recorder(|recorder| {
            let (key, help) = (m.name.into(), m.help.into());
            match m.kind {
                Kind::Counter => recorder.describe_counter(key, m.unit, help),
                Kind::Gauge => recorder.describe_gauge(key, m.unit, help),
                Kind::Histogram => recorder.describe_histogram(key, m.unit, help),
            }
        });
    }
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
        for h in names::histograms() {
            assert!(h.ends_with("_seconds"), "{h}");
        }
        assert!(names::is_exported(
            "nexus_grpc_request_duration_seconds_bucket"
        ));
        assert!(!names::is_exported("nexus_networks_bucket"));
        assert!(!names::is_exported("nexus_unknown"));
    }

    #[test]
    fn one_table_gives_names_kinds_and_help() {
        use names::Kind;
        assert_eq!(names::ALL.len(), names::TABLE.len());
        for (m, n) in names::TABLE.iter().zip(names::ALL) {
            assert_eq!(m.name, *n);
            assert!(!m.help.is_empty(), "{n}");
            assert_eq!(m.kind == Kind::Counter, n.ends_with("_total"), "{n}");
        }
        assert_eq!(
            names::histograms().collect::<Vec<_>>(),
            [
                names::RECONCILE_DURATION,
                names::PIN_REREPLICATION,
                names::GRPC_DURATION,
                names::DELEGATOR_DURATION
            ]
        );
    }
}
