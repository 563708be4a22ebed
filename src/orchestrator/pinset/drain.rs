//! Draining a scale-down: pins that nodes about to be removed hold are copied to the remaining
//! nodes before those nodes go.
//!
//! Owns [`Drain`] (one network's drain in progress, in memory: which nodes leave, since when,
//! until when, what the last pin pass still saw pending), the pure [`decide`] and the
//! reconciler's gate ([`Orchestrator::drain_gate`]): a pass that would remove running nodes
//! above the replicas first starts a drain and waits (the pinset loop places what only they
//! hold on the remaining nodes, as far as `replication` allows, and reports what is left),
//! then lets the removal go once nothing is pending, or once `node.pin_drain_timeout` has
//! passed, saying so in an event. After a restart a drain starts again from zero (pinning is
//! idempotent). It must not remove nodes (the reconciler does) nor place pins (the plan does).

use std::time::{Duration, Instant};

use crate::node::endpoint::Endpoint;
use crate::node::NetworkName;
use crate::orchestrator::events::EventKind;
use crate::orchestrator::handle::Orchestrator;
use crate::store::NetworkRecord;
use crate::sync::lock;

/// One network's drain in progress.
#[derive(Clone, Debug)]
pub(crate) struct Drain {
    /// The running nodes a scale-down is about to remove, and their RPC endpoints.
    pub(crate) leaving: Vec<(u16, Endpoint)>,
    pub(crate) started: Instant,
    pub(crate) deadline: Instant,
    /// Pins still to copy, as the last pin pass after the start saw (`None`: none ran yet).
    pub(crate) pending: Option<u64>,
    /// The removal was let go (drained or timed out): later passes do not wait again.
    released: bool,
}

/// What the reconciler does with a scale-down's removals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Remove now (nothing to drain, drained, or released before).
    Go,
    /// Not yet: check again by `left` at the latest.
    Wait {
        pending: Option<u64>,
        left: Duration,
    },
    /// Drained after `took`: remove now.
    Drained { took: Duration },
    /// The timeout passed with `pending` pins not yet copied: remove anyway.
    TimedOut { pending: Option<u64> },
}

/// Pure: where a drain stands at `now`.
pub(crate) fn decide(d: &Drain, now: Instant) -> Gate {
    if d.released {
        return Gate::Go;
    }
    if d.pending == Some(0) {
        return Gate::Drained {
            took: now.saturating_duration_since(d.started),
        };
    }
    if now >= d.deadline {
        return Gate::TimedOut { pending: d.pending };
    }
    Gate::Wait {
        pending: d.pending,
        left: d.deadline - now,
    }
}

fn list(leaving: &[(u16, Endpoint)]) -> String {
    leaving
        .iter()
        .map(|(i, _)| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Orchestrator {
    /// Whether a pass may remove `leaving` (the running nodes at or above the replicas, with
    /// their endpoints) now. Starts a drain on the first call; events for its start and end.
    pub(crate) async fn drain_gate(
        &self,
        rec: &NetworkRecord,
        leaving: Vec<(u16, Endpoint)>,
    ) -> Gate {
        let name = &rec.name;
        let timeout = self.inner.cfg.pins.drain_timeout;
        let now = Instant::now();
        let existing = lock(&self.inner.pins.drains).get(name).cloned();
        let Some(mut drain) = existing else {
            if timeout.is_zero() || !self.has_pins(name).await {
                return Gate::Go;
            }
            let nodes = list(&leaving);
            lock(&self.inner.pins.drains).insert(
                name.clone(),
                Drain {
                    leaving,
                    started: now,
                    deadline: now + timeout,
                    pending: None,
                    released: false,
                },
            );
            self.emit(
                name,
                EventKind::PinDrain,
                rec.status,
                None,
                format!(
                    "copying the pins of node(s) {nodes} to the remaining nodes before removing \
                     them (at most {})",
                    humantime::format_duration(timeout)
                ),
            );
            self.wake_pinset();
            return Gate::Wait {
                pending: None,
                left: timeout,
            };
        };
        let gate = decide(&drain, now);
        let nodes = list(&leaving);
        let message = match &gate {
            Gate::Drained { took } => Some(format!(
                "the pins of node(s) {nodes} are on the remaining nodes (after {}); removing them",
                humantime::format_duration(Duration::from_millis(
                    u64::try_from(took.as_millis()).unwrap_or(u64::MAX)
                ))
            )),
            Gate::TimedOut { pending } => Some(format!(
                "pin drain timed out after {} with {} pin(s) of node(s) {nodes} not yet on the \
                 remaining nodes; removing them anyway (node.pin_drain_timeout)",
                humantime::format_duration(timeout),
                pending.map_or_else(|| "unknown".to_string(), |p| p.to_string())
            )),
            Gate::Go | Gate::Wait { .. } => None,
        };
        if let Some(message) = message {
            drain.released = true;
            self.emit(name, EventKind::PinDrain, rec.status, None, message);
        }
        drain.leaving = leaving;
        lock(&self.inner.pins.drains).insert(name.clone(), drain);
        gate
    }

    /// The drain of `name` is over (its leaving nodes are gone, or none is leaving).
    pub(crate) fn end_drain(&self, name: &NetworkName) {
        lock(&self.inner.pins.drains).remove(name);
    }

    /// The nodes a drain of `name` waits on, if one is under way.
    pub(crate) fn draining(&self, name: &NetworkName) -> Vec<(u16, Endpoint)> {
        lock(&self.inner.pins.drains)
            .get(name)
            .filter(|d| !d.released)
            .map(|d| d.leaving.clone())
            .unwrap_or_default()
    }

    /// A pin pass's count of pins still to copy; the first zero wakes the reconciler.
    pub(crate) fn note_drain(&self, name: &NetworkName, pending: u64) {
        let done = {
            let mut drains = lock(&self.inner.pins.drains);
            let Some(d) = drains.get_mut(name).filter(|d| !d.released) else {
                return;
            };
            let was = d.pending.replace(pending);
            pending == 0 && was != Some(0)
        };
        if done {
            self.enqueue(name);
        }
    }

    async fn has_pins(&self, name: &NetworkName) -> bool {
        match self.inner.store.pin_counts(name).await {
            Ok(c) => c.total() > 0,
            // Unknown: drain rather than risk the copies.
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(pending: Option<u64>, started_ago: u64, timeout: u64) -> (Drain, Instant) {
        let now = Instant::now() + Duration::from_secs(1000);
        let started = now - Duration::from_secs(started_ago);
        (
            Drain {
                leaving: vec![],
                started,
                deadline: started + Duration::from_secs(timeout),
                pending,
                released: false,
            },
            now,
        )
    }

    #[test]
    fn a_drain_waits_for_a_pin_pass_then_for_nothing_pending_then_the_deadline() {
        // No pin pass yet: wait, even though nothing is known to be pending.
        let (d, now) = drain(None, 1, 120);
        assert_eq!(
            decide(&d, now),
            Gate::Wait {
                pending: None,
                left: Duration::from_secs(119)
            }
        );
        let (d, now) = drain(Some(3), 10, 120);
        assert!(matches!(
            decide(&d, now),
            Gate::Wait {
                pending: Some(3),
                ..
            }
        ));
        let (d, now) = drain(Some(0), 10, 120);
        assert_eq!(
            decide(&d, now),
            Gate::Drained {
                took: Duration::from_secs(10)
            }
        );
        let (d, now) = drain(Some(3), 121, 120);
        assert_eq!(decide(&d, now), Gate::TimedOut { pending: Some(3) });
        let (mut d, now) = drain(Some(3), 1, 120);
        d.released = true;
        assert_eq!(decide(&d, now), Gate::Go);
    }
}
