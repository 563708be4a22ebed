//! A node's resource use on the swarm, from kubo's own process figures (the manager's engine
//! sees no other host's containers): CPU as the rate of `process_cpu_seconds_total` between two
//! samples, memory as the process's resident size, uptime from its start time.
//!
//! Owns the arithmetic (pure) and the runtime's only memory of its own: the last sample taken
//! of each node, bounded ([`MAX_NODES`]), forgotten when the node is stopped or removed. It is
//! a cache of what was measured, never of what was decided: losing it costs one more sample
//! [`MIN_WINDOW`] later, never a wrong figure. It does no I/O (the samples are taken in
//! `observe.rs`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::node::kubo_metrics::ProcessMetrics;
use crate::node::spec::{NetworkName, NodeRef};
use crate::sync::lock;

/// How old a previous sample may be and still be the start of the CPU window (the metrics
/// refresh samples every running node every `metrics.interval`, 15 s by default).
pub(super) const RECENT: Duration = Duration::from_secs(60);

/// The shortest window a CPU rate is taken over (kubo's counter moves in 10 ms ticks): without
/// a recent sample, a second one is taken this long after the first.
pub(super) const MIN_WINDOW: Duration = Duration::from_millis(500);

/// The most nodes whose last sample is kept.
pub(super) const MAX_NODES: usize = 4096;

/// Two samples whose start times differ by more than this are of two processes (the Go
/// collector adds the process's start ticks to `/proc/stat`'s `btime`, which the kernel may
/// report a second apart from one read to the next).
const SAME_START: f64 = 1.5;

/// One look at a node's kubo process, with when it was taken on this daemon's clock.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Sample {
    pub at: Instant,
    pub metrics: ProcessMetrics,
}

impl Sample {
    /// Whether `later` is a later sample of the same process (not restarted in between).
    fn same_process(&self, later: &Sample) -> bool {
        (self.metrics.start_time - later.metrics.start_time).abs() <= SAME_START
            && later.metrics.cpu_seconds >= self.metrics.cpu_seconds
            && later.at > self.at
    }
}

/// CPU use between two samples of one process, in percent of one core (150 = one and a half
/// cores busy); `None` when they are not two samples of the same process in that order.
pub(super) fn cpu_percent(earlier: &Sample, later: &Sample) -> Option<f64> {
    if !earlier.same_process(later) {
        return None;
    }
    let wall = later.at.duration_since(earlier.at).as_secs_f64();
    Some((later.metrics.cpu_seconds - earlier.metrics.cpu_seconds) / wall * 100.0)
}

/// How long the process has run at `now` (wall clock). A start time ahead of `now` (the node's
/// host's clock ahead of this one's) is zero, not an error.
pub(super) fn uptime(metrics: &ProcessMetrics, now: SystemTime) -> Duration {
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    Duration::try_from_secs_f64(now - metrics.start_time).unwrap_or(Duration::ZERO)
}

/// The last sample of each node, bounded.
#[derive(Debug, Default)]
pub(super) struct Samples {
    last: Mutex<HashMap<NodeRef, Sample>>,
}

impl Samples {
    /// The node's last sample if it is of the same process as `now` and at most [`RECENT`]
    /// older: where a CPU window may start.
    pub fn baseline(&self, node: &NodeRef, now: &Sample) -> Option<Sample> {
        let last = *lock(&self.last).get(node)?;
        (last.same_process(now) && now.at.duration_since(last.at) <= RECENT).then_some(last)
    }

    /// Keeps `sample` as the node's last. When [`MAX_NODES`] are kept, the stale ones go first,
    /// then the oldest.
    pub fn keep(&self, node: &NodeRef, sample: Sample) {
        let mut last = lock(&self.last);
        if !last.contains_key(node) && last.len() >= MAX_NODES {
            last.retain(|_, s| sample.at.saturating_duration_since(s.at) <= RECENT);
            if last.len() >= MAX_NODES {
                if let Some(oldest) = last
                    .iter()
                    .min_by_key(|(_, s)| s.at)
                    .map(|(n, _)| n.clone())
                {
                    last.remove(&oldest);
                }
            }
        }
        last.insert(node.clone(), sample);
    }

    /// Forgets the node (stopped or removed).
    pub fn forget(&self, node: &NodeRef) {
        lock(&self.last).remove(node);
    }

    /// Forgets every node of `network` (removed).
    pub fn forget_network(&self, network: &NetworkName) {
        lock(&self.last).retain(|n, _| &n.network != network);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.last).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: Instant, cpu_seconds: f64, start_time: f64) -> Sample {
        Sample {
            at,
            metrics: ProcessMetrics {
                cpu_seconds,
                resident_bytes: 30 << 20,
                start_time,
            },
        }
    }

    fn node(net: &str, index: u16) -> NodeRef {
        NodeRef {
            network: NetworkName::new(net).unwrap(),
            index,
        }
    }

    #[test]
    fn cpu_is_the_counters_rate_over_the_wall_time_between_samples() {
        let t0 = Instant::now();
        let a = sample(t0, 10.0, 1_764_810_000.0);
        let b = sample(t0 + Duration::from_millis(500), 10.75, 1_764_810_000.0);
        // 0.75 s of CPU in 0.5 s: one and a half cores.
        assert_eq!(cpu_percent(&a, &b), Some(150.0));
        // btime read a second apart is still the same process.
        let c = sample(t0 + Duration::from_secs(2), 11.0, 1_764_810_001.0);
        assert_eq!(cpu_percent(&a, &c), Some(50.0));
    }

    #[test]
    fn a_restart_or_a_sample_out_of_order_gives_no_rate() {
        let t0 = Instant::now();
        let a = sample(t0, 10.0, 1_764_810_000.0);
        let restarted = sample(t0 + Duration::from_secs(1), 0.2, 1_764_810_090.0);
        assert_eq!(cpu_percent(&a, &restarted), None);
        // A counter that went back is another process, whatever its start time says.
        let back = sample(t0 + Duration::from_secs(1), 9.0, 1_764_810_000.0);
        assert_eq!(cpu_percent(&a, &back), None);
        assert_eq!(cpu_percent(&a, &a), None);
        let later = sample(t0 + Duration::from_secs(1), 10.5, 1_764_810_000.0);
        assert_eq!(cpu_percent(&later, &a), None);
    }

    #[test]
    fn uptime_is_now_minus_the_start_and_never_negative() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_810_000);
        let m = sample(Instant::now(), 1.0, 1_764_810_000.0).metrics;
        assert_eq!(
            uptime(&m, start + Duration::from_secs(90)),
            Duration::from_secs(90)
        );
        assert_eq!(uptime(&m, start - Duration::from_secs(3)), Duration::ZERO);
    }

    #[test]
    fn the_baseline_is_a_recent_sample_of_the_same_process() {
        let s = Samples::default();
        let n = node("acme", 0);
        let t0 = Instant::now();
        let first = sample(t0, 10.0, 1_764_810_000.0);
        assert_eq!(s.baseline(&n, &first), None);
        s.keep(&n, first);
        let now = sample(t0 + Duration::from_secs(15), 11.0, 1_764_810_000.0);
        assert_eq!(s.baseline(&n, &now), Some(first));
        let stale = sample(t0 + RECENT + Duration::from_secs(1), 12.0, 1_764_810_000.0);
        assert_eq!(s.baseline(&n, &stale), None);
        let restarted = sample(t0 + Duration::from_secs(15), 0.1, 1_764_810_014.0);
        assert_eq!(s.baseline(&n, &restarted), None);
        assert_eq!(s.baseline(&node("acme", 1), &now), None);
    }

    #[test]
    fn samples_are_bounded_and_forgotten_with_their_nodes() {
        let s = Samples::default();
        let t0 = Instant::now();
        for i in 0..MAX_NODES {
            let at = t0 + Duration::from_millis(i as u64);
            s.keep(&node("big", i as u16), sample(at, 1.0, 1.0));
        }
        assert_eq!(s.len(), MAX_NODES);
        // One more: the oldest goes (all are recent).
        let later = t0 + Duration::from_secs(10);
        s.keep(&node("other", 0), sample(later, 1.0, 1.0));
        assert_eq!(s.len(), MAX_NODES);
        let probe = sample(later, 1.0, 1.0);
        assert_eq!(s.baseline(&node("big", 0), &probe), None);
        assert!(s.baseline(&node("big", 1), &probe).is_some());
        // Much later, every stale sample goes at once.
        let much_later = t0 + RECENT + Duration::from_secs(30);
        s.keep(&node("third", 0), sample(much_later, 1.0, 1.0));
        assert_eq!(s.len(), 1);
        s.forget(&node("third", 0));
        assert_eq!(s.len(), 0);
        s.keep(&node("other", 1), sample(much_later, 1.0, 1.0));
        s.keep(&node("other", 2), sample(much_later, 1.0, 1.0));
        s.keep(&node("third", 1), sample(much_later, 1.0, 1.0));
        s.forget_network(&NetworkName::new("other").unwrap());
        assert_eq!(s.len(), 1);
    }
}
