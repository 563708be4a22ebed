//! The CPU meter: what one running node uses, in cores, measured on this host.
//!
//! Owns [`CpuMeter`] (a panel of at most [`PANEL`] running nodes, each one's last CPU reading,
//! and the estimate) and its loop ([`Orchestrator::run_cpu_meter`]), which reads the panel
//! every `node.cpu_meter_interval`: one cheap runtime call per node (no `docker stats` of every
//! node). A node counts once it has run two intervals (a start costs far more than a node at
//! rest), a restarted node starts over, and the estimate is the median of a round's rates,
//! averaged with the one before. Admission ([`super::admission`]) multiplies it by the nodes of
//! running networks against `node.cpu_budget`. It reads only: it must not refuse anything
//! itself, nor act on nodes.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use super::handle::Orchestrator;
use crate::node::{NodeCpu, NodeRef};
use crate::sync::lock;
use crate::telemetry::names;

/// Nodes read per round: enough for a median that one busy node does not move.
pub(crate) const PANEL: usize = 8;

/// One reading of one node.
#[derive(Clone, Debug)]
struct Reading {
    at: Instant,
    wall: SystemTime,
    cpu: NodeCpu,
}

/// The panel's last readings and the estimate they gave.
#[derive(Debug, Default)]
pub(crate) struct CpuMeter {
    last: HashMap<NodeRef, Reading>,
    estimate: Option<f64>,
}

impl CpuMeter {
    /// The nodes to read this round, of `running`: those read last round first (a rate needs
    /// two readings of one node), then the others in order, at most [`PANEL`].
    pub(crate) fn panel(&self, running: &[NodeRef]) -> Vec<NodeRef> {
        let mut panel: Vec<NodeRef> = running
            .iter()
            .filter(|n| self.last.contains_key(n))
            .take(PANEL)
            .cloned()
            .collect();
        for n in running {
            if panel.len() >= PANEL {
                break;
            }
            if !panel.contains(n) {
                panel.push(n.clone());
            }
        }
        panel
    }

    /// Folds in a round: `(node, when, wall clock, reading)` for each node of the panel (no
    /// reading: not running or not readable). A node's rate counts when its last reading was
    /// of the same run, taken at least `settle` after that run started. Nodes not in the
    /// round are forgotten. Returns the estimate, in cores per node.
    pub(crate) fn record(
        &mut self,
        round: Vec<(NodeRef, Instant, SystemTime, Option<NodeCpu>)>,
        settle: Duration,
    ) -> Option<f64> {
        let mut rates = Vec::new();
        let mut next = HashMap::new();
        for (node, at, wall, cpu) in round {
            let Some(cpu) = cpu else { continue };
            if let Some(prev) = self.last.get(&node) {
                if let Some(rate) = rate(prev, at, &cpu, settle) {
                    rates.push(rate);
                }
            }
            next.insert(node, Reading { at, wall, cpu });
        }
        self.last = next;
        if let Some(m) = median(&mut rates) {
            self.estimate = Some(match self.estimate {
                Some(before) => (before + m) / 2.0,
                None => m,
            });
        }
        self.estimate
    }

    /// Cores one running node uses, as last measured.
    pub(crate) fn estimate(&self) -> Option<f64> {
        self.estimate
    }
}

/// Cores used between `prev` and a reading `cpu` at `at`, if both are of one settled run.
fn rate(prev: &Reading, at: Instant, cpu: &NodeCpu, settle: Duration) -> Option<f64> {
    if prev.cpu.started_at != cpu.started_at {
        return None;
    }
    let started = humantime::parse_rfc3339(&cpu.started_at).ok()?;
    if prev.wall.duration_since(started).ok()? < settle {
        return None;
    }
    let wall = at.checked_duration_since(prev.at)?;
    let used = cpu.used.checked_sub(prev.cpu.used)?;
    (!wall.is_zero()).then(|| used.as_secs_f64() / wall.as_secs_f64())
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

impl Orchestrator {
    /// Reads a few running nodes' CPU every `node.cpu_meter_interval` until the process ends
    /// (spawn it once).
    pub async fn run_cpu_meter(&self) {
        let every = self.inner.cfg.cpu_meter_interval;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.cpu_meter_round(every * 2).await;
        }
    }

    /// One round: read the panel (ready nodes of every network), fold the readings in.
    pub(crate) async fn cpu_meter_round(&self, settle: Duration) {
        let registry = &self.inner.registry;
        let running: Vec<NodeRef> = registry
            .names()
            .into_iter()
            .filter_map(|name| registry.get(&name))
            .flat_map(|e| {
                e.nodes
                    .iter()
                    .filter_map(|n| NodeRef::new(e.name.clone(), n.index).ok())
                    .collect::<Vec<_>>()
            })
            .collect();
        let panel = lock(&self.inner.cpu_meter).panel(&running);
        let runtime = &self.inner.runtime;
        let round = futures_util::future::join_all(panel.into_iter().map(|node| async move {
            let cpu = match runtime.node_cpu(&node).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(%node, error = %e, "cpu meter: no reading");
                    None
                }
            };
            (node, Instant::now(), SystemTime::now(), cpu)
        }))
        .await;
        let (before, estimate) = {
            let mut meter = lock(&self.inner.cpu_meter);
            let before = meter.estimate();
            (before, meter.record(round, settle))
        };
        let Some(cores) = estimate else { return };
        metrics::gauge!(names::NODE_CPU_MEASURED).set(cores);
        // Said once measured, and again when it moves by a fifth or more.
        if before.is_none_or(|b| (cores - b).abs() > b * 0.2) {
            let budget = self.inner.cfg.admission.cpu_budget;
            let admits = match self.host_cpus().await {
                Some(cpus) if budget > 0.0 && cores > 0.0 => {
                    format!("{:.0}", (cpus * budget / cores).floor())
                }
                _ => "any number of".to_string(),
            };
            tracing::info!(
                cpu_budget = budget,
                "cpu meter: one running node uses {:.2} % of a core; admission counts every node at that, and this host admits {admits} nodes",
                cores * 100.0
            );
        }
    }

    /// Cores one running node uses on this host, as measured (`None` before the meter has).
    pub(crate) fn cpu_per_node(&self) -> Option<f64> {
        lock(&self.inner.cpu_meter).estimate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::NetworkName;

    fn node(i: u16) -> NodeRef {
        NodeRef::new(NetworkName::new("cpu").unwrap(), i).unwrap()
    }

    const STARTED: &str = "2026-12-04T10:00:00Z";

    fn at(secs_after_start: u64) -> SystemTime {
        humantime::parse_rfc3339(STARTED).unwrap() + Duration::from_secs(secs_after_start)
    }

    fn cpu(ms: u64, started: &str) -> Option<NodeCpu> {
        Some(NodeCpu {
            used: Duration::from_millis(ms),
            started_at: started.into(),
        })
    }

    #[test]
    fn the_panel_keeps_its_nodes_and_fills_up_to_its_size() {
        let mut m = CpuMeter::default();
        let all: Vec<NodeRef> = (0..12).map(node).collect();
        let first = m.panel(&all);
        assert_eq!(first, all[..PANEL].to_vec());
        let t = Instant::now();
        m.record(vec![(node(5), t, at(100), cpu(1, STARTED))], Duration::ZERO);
        // Node 5 was read: it stays, first; gone nodes make room for others.
        let running: Vec<NodeRef> = [0, 1, 5, 9, 10, 11].map(node).to_vec();
        let next = m.panel(&running);
        assert_eq!(next[0], node(5));
        assert_eq!(next.len(), 6);
    }

    #[test]
    fn rates_count_only_settled_runs_and_the_estimate_is_a_smoothed_median() {
        let mut m = CpuMeter::default();
        let settle = Duration::from_secs(60);
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(30);
        // Readings 30 s apart. Node 0: settled (read 100 s after its start), 0.5 % of a core
        // (150 ms in 30 s). Node 1: 1 %. Node 2: 3 %, one busy node. Node 3: read too soon
        // after its start. Node 4: restarted between the readings.
        let first = vec![
            (node(0), t0, at(100), cpu(1_000, STARTED)),
            (node(1), t0, at(100), cpu(1_000, STARTED)),
            (node(2), t0, at(100), cpu(1_000, STARTED)),
            (node(3), t0, at(10), cpu(1_000, STARTED)),
            (node(4), t0, at(100), cpu(9_000, STARTED)),
        ];
        assert_eq!(m.record(first, settle), None, "one reading gives no rate");
        let second = vec![
            (node(0), t1, at(130), cpu(1_150, STARTED)),
            (node(1), t1, at(130), cpu(1_300, STARTED)),
            (node(2), t1, at(130), cpu(1_900, STARTED)),
            (node(3), t1, at(40), cpu(50_000, STARTED)),
            (node(4), t1, at(130), cpu(50_000, "2026-12-04T10:01:50Z")),
        ];
        let e = m.record(second, settle).unwrap();
        assert!((e - 0.01).abs() < 1e-9, "median of 0.5 %, 1 %, 3 %: {e}");
        // The next round's median (0.5 %) is averaged with it.
        let t2 = t1 + Duration::from_secs(30);
        let third = vec![
            (node(0), t2, at(160), cpu(1_300, STARTED)),
            (node(1), t2, at(160), cpu(1_450, STARTED)),
            (node(2), t2, at(160), cpu(1_950, STARTED)),
        ];
        let e = m.record(third, settle).unwrap();
        assert!((e - 0.0075).abs() < 1e-9, "{e}");
        // A round without rates keeps the estimate; nodes not read are forgotten.
        assert_eq!(m.record(vec![], settle), Some(e));
        assert!(m.last.is_empty());
    }
}
