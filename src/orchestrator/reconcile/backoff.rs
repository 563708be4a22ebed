//! Crash accounting: when a dead node may restart, and when its deaths fail the network.
//!
//! Owns each node's recent deaths ([`Crashes`]): the restart delay (doubling per recent death,
//! capped) and the crash-loop rule (`crash_limit` deaths within `crash_window` fail the
//! network). Memory only, by design: a daemon restart forgives. It must not restart or stop
//! anything itself.

use std::time::{Duration, Instant};

use crate::node::{NetworkName, NodeRef};
use crate::orchestrator::handle::Orchestrator;
use crate::sync::lock;

/// Recent deaths of one node.
#[derive(Default)]
pub(crate) struct Crashes {
    deaths: Vec<Instant>,
}

impl Orchestrator {
    /// Records a node's death; returns the reason if it now dies too often.
    pub(in crate::orchestrator) fn record_death(&self, node: &NodeRef) -> Option<String> {
        let cfg = &self.inner.cfg;
        let mut crashes = lock(&self.inner.crashes);
        let c = crashes.entry(node.clone()).or_default();
        let now = Instant::now();
        c.deaths
            .retain(|t| now.duration_since(*t) < cfg.crash_window);
        c.deaths.push(now);
        (c.deaths.len() >= cfg.crash_limit).then(|| {
            format!(
                "node {} died {} times within {:?}; see `nexus network diagnostics {}`",
                node.index,
                c.deaths.len(),
                cfg.crash_window,
                node.network
            )
        })
    }

    /// How long to wait before restarting a node that died recently (`None`: now).
    pub(in crate::orchestrator) fn restart_delay(&self, node: &NodeRef) -> Option<Duration> {
        let cfg = &self.inner.cfg;
        let crashes = lock(&self.inner.crashes);
        let c = crashes.get(node)?;
        let last = *c.deaths.last()?;
        let recent = c
            .deaths
            .iter()
            .filter(|t| t.elapsed() < cfg.crash_window)
            .count()
            .max(1);
        let factor = 1u32 << (recent - 1).min(16) as u32;
        let delay = cfg
            .restart_backoff
            .saturating_mul(factor)
            .min(cfg.restart_backoff_max);
        let ready_at = last + delay;
        let now = Instant::now();
        (ready_at > now).then(|| ready_at - now)
    }

    /// Forgets the deaths of a removed network's nodes.
    pub(in crate::orchestrator) fn forget_crashes(&self, network: &NetworkName) {
        lock(&self.inner.crashes).retain(|n, _| &n.network != network);
    }
}
