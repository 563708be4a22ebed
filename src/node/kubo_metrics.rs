//! kubo's own figures for its process, as its Prometheus endpoint reports them.
//!
//! kubo serves the Prometheus text exposition format (version 0.0.4) at
//! [`METRICS_PATH`] on its RPC API listener, outside the `/api/v0` commands (no
//! `API.Authorizations` check, any method). Its default registry carries the Go client's process
//! collector, which reads `/proc/self`: `process_cpu_seconds_total` (user + system CPU time),
//! `process_resident_memory_bytes` and `process_start_time_seconds` (Unix time). This module owns
//! a small, strict parser for exactly those three samples ([`parse_process_metrics`]) and the
//! limit on how much of an answer is read ([`MAX_METRICS_BYTES`]). It is pure: the call itself is
//! [`super::rpc::KuboRpc::process_metrics`]. It must not become a general Prometheus parser:
//! other metrics' lines are skipped unread, whatever they hold.

/// Where kubo serves its metrics (on the RPC API listener).
pub const METRICS_PATH: &str = "/debug/metrics/prometheus";

/// The most of a metrics answer that is read. kubo's whole page is some hundreds of kB with
/// every subsystem's histograms; an answer past this is refused, not cut.
pub const MAX_METRICS_BYTES: usize = 4 << 20;

const CPU: &str = "process_cpu_seconds_total";
const RSS: &str = "process_resident_memory_bytes";
const START: &str = "process_start_time_seconds";

/// The three figures of kubo's process collector nexus uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcessMetrics {
    /// User and system CPU time the process has used since it started, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory, in bytes.
    pub resident_bytes: u64,
    /// When the process started, in seconds since the Unix epoch (on its host's clock).
    pub start_time: f64,
}

/// Why a metrics page did not give the three figures.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetricsError {
    #[error("line {line}: {what}")]
    Malformed { line: usize, what: String },
    #[error("`{name}` has more than one sample")]
    Duplicate { name: &'static str },
    #[error("`{name}` is missing")]
    Missing { name: &'static str },
    #[error("`{name}` is declared a {found}, not a {expected}")]
    WrongType {
        name: &'static str,
        found: String,
        expected: &'static str,
    },
    #[error("`{name}` is {value}, not a plausible value")]
    Implausible { name: &'static str, value: String },
}

/// Which of our three names `name` is, with the type kubo declares for it.
fn ours(name: &str) -> Option<(&'static str, &'static str)> {
    match name {
        CPU => Some((CPU, "counter")),
        RSS => Some((RSS, "gauge")),
        START => Some((START, "gauge")),
        _ => None,
    }
}

/// The metric name a sample line starts with (`[a-zA-Z_:][a-zA-Z0-9_:]*`) and the rest of the
/// line; `None` when the line does not start with one (e.g. a quoted UTF-8 name).
fn split_name(line: &str) -> Option<(&str, &str)> {
    let first = line.chars().next()?;
    if !(first.is_ascii_alphabetic() || first == '_' || first == ':') {
        return None;
    }
    let end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    Some(line.split_at(end))
}

/// The value of one of our samples, from what follows its name: no labels (or `{}`), one or
/// more blanks, the value, optionally a timestamp in milliseconds, nothing else.
fn sample_value(name: &'static str, rest: &str, line: usize) -> Result<f64, MetricsError> {
    let malformed = |what: String| MetricsError::Malformed { line, what };
    let rest = match rest.strip_prefix('{') {
        Some(r) => r
            .trim_start_matches([' ', '\t'])
            .strip_prefix('}')
            .ok_or_else(|| malformed(format!("`{name}` has labels; kubo's has none")))?,
        None => rest,
    };
    if !rest.starts_with([' ', '\t']) {
        return Err(malformed(format!("no blank after `{name}`")));
    }
    let mut fields = rest.split([' ', '\t']).filter(|f| !f.is_empty());
    let value = fields
        .next()
        .ok_or_else(|| malformed(format!("`{name}` has no value")))?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| malformed(format!("`{name}` has a bad timestamp `{ts}`")))?;
    }
    if fields.next().is_some() {
        return Err(malformed(format!(
            "`{name}` has more than a value and a timestamp"
        )));
    }
    let v: f64 = value
        .parse()
        .map_err(|_| malformed(format!("`{name}` has a bad value `{value}`")))?;
    if !v.is_finite() || v < 0.0 {
        return Err(MetricsError::Implausible {
            name,
            value: value.to_string(),
        });
    }
    Ok(v)
}

/// The three process figures from a metrics page in the text format. Strict about them: each
/// must appear exactly once, without labels, with a finite value that is not negative, and a
/// `# TYPE` line for one of them must name kubo's type. Lines of other metrics, `# HELP` and
/// other comments are skipped without being read further.
pub fn parse_process_metrics(text: &str) -> Result<ProcessMetrics, MetricsError> {
    let mut cpu = None;
    let mut rss = None;
    let mut start = None;
    for (i, raw) in text.split('\n').enumerate() {
        let line_no = i + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            if words.next() != Some("TYPE") {
                continue;
            }
            let Some((name, expected)) = words.next().and_then(ours) else {
                continue;
            };
            let found = words.next().unwrap_or_default();
            if found != expected || words.next().is_some() {
                return Err(MetricsError::WrongType {
                    name,
                    found: found.to_string(),
                    expected,
                });
            }
            continue;
        }
        let Some((name, rest)) = split_name(line) else {
            continue;
        };
        let Some((name, _)) = ours(name) else {
            continue;
        };
        let value = sample_value(name, rest, line_no)?;
        let slot = match name {
            CPU => &mut cpu,
            RSS => &mut rss,
            _ => &mut start,
        };
        if slot.replace(value).is_some() {
            return Err(MetricsError::Duplicate { name });
        }
    }
    let cpu_seconds = cpu.ok_or(MetricsError::Missing { name: CPU })?;
    let rss = rss.ok_or(MetricsError::Missing { name: RSS })?;
    let start_time = start.ok_or(MetricsError::Missing { name: START })?;
    // A resident size is whole bytes and fits a u64 (2^64 is far beyond any host).
    if rss.fract() != 0.0 || rss >= 18_446_744_073_709_551_616.0 {
        return Err(MetricsError::Implausible {
            name: RSS,
            value: rss.to_string(),
        });
    }
    if start_time == 0.0 {
        return Err(MetricsError::Implausible {
            name: START,
            value: "0".into(),
        });
    }
    Ok(ProcessMetrics {
        cpu_seconds,
        resident_bytes: rss as u64,
        start_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of kubo 0.3x's page (Go client's text encoder: `%g` floats, families sorted by
    /// name), cut down: labelled histograms and summaries before, the process family, after.
    const KUBO: &str = r#"# HELP go_gc_duration_seconds A summary of the wall-time pause (stop-the-world) duration in garbage collection cycles.
# TYPE go_gc_duration_seconds summary
go_gc_duration_seconds{quantile="0"} 2.9115e-05
go_gc_duration_seconds{quantile="0.25"} 4.4291e-05
go_gc_duration_seconds{quantile="1"} 0.000512866
go_gc_duration_seconds_sum 0.003013
go_gc_duration_seconds_count 27
# HELP go_info Information about the Go environment.
# TYPE go_info gauge
go_info{version="go1.25.1"} 1
# HELP ipfs_http_requests_total Total number of HTTP requests made.
# TYPE ipfs_http_requests_total counter
ipfs_http_requests_total{code="200",handler="api",method="post"} 412
# HELP libp2p_rcmgr_connections Number of Connections
# TYPE libp2p_rcmgr_connections gauge
libp2p_rcmgr_connections{dir="inbound",scope="system"} 2
libp2p_rcmgr_connections{dir="outbound",scope="system"} 1
# HELP libp2p_swarm_dial_ranking_delay_seconds delay introduced by the dial ranking logic
# TYPE libp2p_swarm_dial_ranking_delay_seconds histogram
libp2p_swarm_dial_ranking_delay_seconds_bucket{le="0.001"} 3
libp2p_swarm_dial_ranking_delay_seconds_bucket{le="+Inf"} 3
libp2p_swarm_dial_ranking_delay_seconds_sum 0
libp2p_swarm_dial_ranking_delay_seconds_count 3
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.47
# HELP process_max_fds Maximum number of open file descriptors.
# TYPE process_max_fds gauge
process_max_fds 1.048576e+06
# HELP process_network_receive_bytes_total Number of bytes received by the process over the network.
# TYPE process_network_receive_bytes_total counter
process_network_receive_bytes_total 2.3450871e+07
# HELP process_open_fds Number of open file descriptors.
# TYPE process_open_fds gauge
process_open_fds 87
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 1.38104576e+08
# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1.76481092354e+09
# HELP process_virtual_memory_bytes Virtual memory size in bytes.
# TYPE process_virtual_memory_bytes gauge
process_virtual_memory_bytes 3.025010688e+09
# HELP promhttp_metric_handler_requests_total Total number of scrapes by HTTP status code.
# TYPE promhttp_metric_handler_requests_total counter
promhttp_metric_handler_requests_total{code="200"} 5
promhttp_metric_handler_requests_total{code="500"} 0
"#;

    #[test]
    fn kubos_page_gives_the_three_process_figures() {
        let m = parse_process_metrics(KUBO).expect("parses");
        assert_eq!(m.cpu_seconds, 12.47);
        assert_eq!(m.resident_bytes, 138_104_576);
        assert_eq!(m.start_time, 1_764_810_923.54);
    }

    #[test]
    fn timestamps_empty_braces_tabs_and_crlf_are_the_format_too() {
        let text = "process_cpu_seconds_total{} 3 1764810923540\r\n\
                    process_resident_memory_bytes\t25165824\n\
                    process_start_time_seconds 1764810923\n";
        let m = parse_process_metrics(text).expect("parses");
        assert_eq!(m.cpu_seconds, 3.0);
        assert_eq!(m.resident_bytes, 25_165_824);
        assert_eq!(m.start_time, 1_764_810_923.0);
    }

    #[test]
    fn other_metrics_are_never_taken_for_ours() {
        // Longer names with ours as a prefix, ours inside a label value, a quoted UTF-8 name.
        let text = format!(
            "process_cpu_seconds_total_other 99\n\
             some_metric{{name=\"process_cpu_seconds_total 5\"}} 1\n\
             {{\"process.cpu\", a=\"b\"}} 7\n{KUBO}"
        );
        assert_eq!(
            parse_process_metrics(&text).expect("parses").cpu_seconds,
            12.47
        );
    }

    #[test]
    fn a_missing_figure_is_named() {
        let text = KUBO.replace("process_resident_memory_bytes 1.38104576e+08\n", "");
        assert_eq!(
            parse_process_metrics(&text),
            Err(MetricsError::Missing { name: RSS })
        );
        assert!(matches!(
            parse_process_metrics("<html>404 page not found</html>"),
            Err(MetricsError::Missing { .. })
        ));
    }

    #[test]
    fn labels_duplicates_and_wrong_types_are_refused() {
        let labelled = KUBO.replace(
            "process_cpu_seconds_total 12.47",
            "process_cpu_seconds_total{mode=\"user\"} 12.47",
        );
        assert!(matches!(
            parse_process_metrics(&labelled),
            Err(MetricsError::Malformed { line: 26, .. })
        ));
        let twice = format!("{KUBO}process_start_time_seconds 1.7e+09\n");
        assert_eq!(
            parse_process_metrics(&twice),
            Err(MetricsError::Duplicate { name: START })
        );
        let gauge = KUBO.replace(
            "# TYPE process_cpu_seconds_total counter",
            "# TYPE process_cpu_seconds_total gauge",
        );
        assert!(matches!(
            parse_process_metrics(&gauge),
            Err(MetricsError::WrongType { name: CPU, .. })
        ));
    }

    #[test]
    fn bad_values_are_refused() {
        for (from, to) in [
            (
                "process_cpu_seconds_total 12.47",
                "process_cpu_seconds_total NaN",
            ),
            (
                "process_cpu_seconds_total 12.47",
                "process_cpu_seconds_total -1",
            ),
            (
                "process_cpu_seconds_total 12.47",
                "process_cpu_seconds_total +Inf",
            ),
            (
                "process_cpu_seconds_total 12.47",
                "process_cpu_seconds_total 12,47",
            ),
            (
                "process_cpu_seconds_total 12.47",
                "process_cpu_seconds_total",
            ),
            (
                "process_cpu_seconds_total 12.47",
                "process_cpu_seconds_total 1 2 3",
            ),
            (
                "process_cpu_seconds_total 12.47",
                "process_cpu_seconds_total 1 x",
            ),
            (
                "process_resident_memory_bytes 1.38104576e+08",
                "process_resident_memory_bytes 1.5",
            ),
            (
                "process_resident_memory_bytes 1.38104576e+08",
                "process_resident_memory_bytes 1e30",
            ),
            (
                "process_start_time_seconds 1.76481092354e+09",
                "process_start_time_seconds 0",
            ),
        ] {
            let text = KUBO.replace(from, to);
            assert!(parse_process_metrics(&text).is_err(), "accepted `{to}`");
        }
    }
}
