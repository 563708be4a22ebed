//! The pass queue: background triggers coalesce into at most one running and one waiting pass
//! per network.
//!
//! Owns which networks have a background worker, whether another pass is wanted after the
//! running one, a failure waiting to be recorded, and the one pending restart timer per
//! network. A burst of events for one network therefore costs at most two passes, and
//! different networks proceed in parallel (one worker task each, only while there is work), as
//! a kube-runtime scheduler does. It must not run a pass itself beyond calling
//! [`Orchestrator::reconcile`] and [`Orchestrator::fail`] from the worker.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::node::NetworkName;
use crate::orchestrator::handle::Orchestrator;
use crate::sync::lock;

#[derive(Default)]
pub(crate) struct PassQueue {
    /// Networks with a worker; `again`: run one more pass after the current one.
    slots: Mutex<HashMap<NetworkName, Slot>>,
    /// When each network's pending delayed pass is due.
    timers: Mutex<HashMap<NetworkName, Instant>>,
}

#[derive(Default)]
struct Slot {
    again: bool,
    /// A crash loop to record before the next pass (the first reason wins).
    fail: Option<String>,
}

/// What a worker does next.
enum Next {
    Fail(String),
    Pass,
    Done,
}

impl PassQueue {
    /// Asks for a pass; `true` when no worker runs for `name` and the caller must start one.
    fn push(&self, name: &NetworkName, fail: Option<String>) -> bool {
        let mut slots = lock(&self.slots);
        match slots.get_mut(name) {
            Some(slot) => {
                slot.again = true;
                if slot.fail.is_none() {
                    slot.fail = fail;
                }
                false
            }
            None => {
                slots.insert(name.clone(), Slot { again: true, fail });
                true
            }
        }
    }

    /// The worker's next step; `Done` removes its slot (under the same lock as `push`, so no
    /// request is lost between the last pass and the worker's end).
    fn next(&self, name: &NetworkName) -> Next {
        let mut slots = lock(&self.slots);
        let Some(slot) = slots.get_mut(name) else {
            return Next::Done;
        };
        if let Some(reason) = slot.fail.take() {
            slot.again = false;
            return Next::Fail(reason);
        }
        if std::mem::take(&mut slot.again) {
            return Next::Pass;
        }
        slots.remove(name);
        Next::Done
    }

    /// Claims the timer for a pass due at `due`; `false` when one at least as early is pending.
    fn arm(&self, name: &NetworkName, due: Instant) -> bool {
        let mut timers = lock(&self.timers);
        match timers.get(name) {
            Some(t) if *t <= due => false,
            _ => {
                timers.insert(name.clone(), due);
                true
            }
        }
    }

    /// Releases the timer armed for `due` (a later, earlier timer keeps its own).
    fn fire(&self, name: &NetworkName, due: Instant) {
        let mut timers = lock(&self.timers);
        if timers.get(name) == Some(&due) {
            timers.remove(name);
        }
    }
}

impl Orchestrator {
    /// Queues a background pass over `name` (coalesced with any already waiting).
    pub(in crate::orchestrator) fn enqueue(&self, name: &NetworkName) {
        self.enqueue_with(name, None);
    }

    /// Queues recording a crash loop, then a pass.
    pub(in crate::orchestrator) fn enqueue_failure(&self, name: &NetworkName, reason: String) {
        self.enqueue_with(name, Some(reason));
    }

    fn enqueue_with(&self, name: &NetworkName, fail: Option<String>) {
        if !self.inner.queue.push(name, fail) {
            return;
        }
        let this = self.clone();
        let name = name.clone();
        tokio::spawn(async move {
            loop {
                match this.inner.queue.next(&name) {
                    Next::Fail(reason) => this.fail(&name, reason).await,
                    Next::Pass => {
                        if let Err(e) = this.reconcile(&name).await {
                            tracing::warn!(network = %name, error = %e, "background reconcile failed");
                        }
                    }
                    Next::Done => return,
                }
            }
        });
    }

    /// Queues a pass over `name` after `delay` (one pending timer per network, the earliest).
    pub(in crate::orchestrator) fn schedule(&self, name: NetworkName, delay: Duration) {
        let due = Instant::now() + delay;
        if !self.inner.queue.arm(&name, due) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(due.into()).await;
            this.inner.queue.fire(&name, due);
            this.enqueue(&name);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> NetworkName {
        NetworkName::new(s).unwrap()
    }

    #[test]
    fn requests_while_a_worker_runs_coalesce_into_one_more_pass() {
        let q = PassQueue::default();
        let n = name("q");
        assert!(q.push(&n, None), "the first request starts a worker");
        assert!(matches!(q.next(&n), Next::Pass));
        for _ in 0..1000 {
            assert!(!q.push(&n, None), "a running worker takes the rest");
        }
        assert!(matches!(q.next(&n), Next::Pass));
        assert!(matches!(q.next(&n), Next::Done));
        assert!(q.push(&n, None), "after the worker ends, a new one starts");
        assert!(q.push(&name("other"), None), "networks are independent");
    }

    #[test]
    fn a_failure_is_recorded_before_the_next_pass_and_only_once() {
        let q = PassQueue::default();
        let n = name("f");
        assert!(q.push(&n, None));
        assert!(matches!(q.next(&n), Next::Pass));
        q.push(&n, Some("first".into()));
        q.push(&n, Some("second".into()));
        assert!(matches!(q.next(&n), Next::Fail(r) if r == "first"));
        assert!(matches!(q.next(&n), Next::Done));
    }

    #[test]
    fn only_the_earliest_timer_is_kept() {
        let q = PassQueue::default();
        let n = name("t");
        let now = Instant::now();
        assert!(q.arm(&n, now + Duration::from_secs(5)));
        assert!(!q.arm(&n, now + Duration::from_secs(9)));
        assert!(q.arm(&n, now + Duration::from_secs(1)));
        q.fire(&n, now + Duration::from_secs(5));
        assert!(
            !q.arm(&n, now + Duration::from_secs(2)),
            "the 1 s timer still holds"
        );
        q.fire(&n, now + Duration::from_secs(1));
        assert!(q.arm(&n, now + Duration::from_secs(2)));
    }
}
