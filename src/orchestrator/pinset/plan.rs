//! The pin reconciler's pure decisions: a network's pinset and what its ready nodes hold →
//! the steps that bring each pin to its wanted number of copies.
//!
//! Owns [`plan`], [`Nodes`] and [`NodeView`] (the network and one node as observed this
//! pass), [`PinTimers`] and [`Step`]. Level-triggered: it looks only at the stored pinset, the nodes' `pin/ls` and what
//! is already in flight, never at what happened before. Placement prefers nodes that already
//! hold the CID, then the most free space (in [`SPACE_STEP`]s), then the fewest pins, then the
//! lowest index (a scale-down removes the highest indices first). Nodes a scale-down is about
//! to remove ([`Nodes::leaving`]) keep their copies and count them, but take no new ones: what
//! only they hold is placed on the remaining nodes, and [`Plan::drain_pending`] says how many
//! pins still wait for that. No I/O, no clock (the caller passes `now`). It must not call
//! nodes nor write the store.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use crate::store::{Allocation, AllocationStatus, PinRecord, PinStatus};

/// Free space is compared in steps of this many bytes: nodes within one step count as equal,
/// and the lower index wins among them (the nodes a scale-down keeps longest).
pub const SPACE_STEP: u64 = 64 << 20;

/// One ready node of the network as this pass observed it.
#[derive(Clone, Debug, Default)]
pub struct NodeView {
    pub index: u16,
    /// The CIDs its `pin/ls` lists as recursive pins.
    pub holds: HashSet<String>,
    /// Bytes it can still take (its disk limit minus its repo's size).
    pub free_bytes: u64,
}

/// Timing of retries and of giving up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinTimers {
    /// A pin that no node holds this long after it was recorded ends `failed`.
    pub fail_after: Duration,
    /// Delay before retrying a node whose pin attempt failed; doubles per failure.
    pub backoff: Duration,
    pub backoff_max: Duration,
}

impl Default for PinTimers {
    fn default() -> Self {
        Self {
            fail_after: Duration::from_secs(300),
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        }
    }
}

impl PinTimers {
    /// How long after its `attempts`-th failure an allocation is retried.
    pub fn retry_delay(&self, attempts: u32) -> Duration {
        let factor = 1u32 << attempts.saturating_sub(1).min(16);
        self.backoff.saturating_mul(factor).min(self.backoff_max)
    }
}

/// One thing to do. Node calls are `Pin`/`Unpin`; the rest are store writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Record `allocation` (new or changed).
    Allocate {
        request_id: String,
        allocation: Allocation,
    },
    /// Forget an allocation without calling its node (node gone, or not worth keeping).
    Forget { request_id: String, node: u16 },
    /// Ask `node` to pin `cid` (`pin/add`); the allocation is already `pinning`.
    Pin {
        request_id: String,
        node: u16,
        cid: String,
        attempts: u32,
    },
    /// Ask `node` to unpin `cid` (`pin/rm`), then forget the allocation.
    Unpin {
        request_id: String,
        node: u16,
        cid: String,
    },
    /// The pin's status changes.
    Status {
        request_id: String,
        status: PinStatus,
        reason: Option<String>,
    },
    /// A removed pin with no allocation left: delete it.
    Erase { request_id: String },
}

/// What a pass decided, and what it saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Pins (not removed) held on fewer nodes than wanted.
    pub under_replicated: u64,
    /// Pins a leaving node holds that the remaining ready nodes do not yet hold as often as
    /// they can (`min(wanted, ready nodes)`): what a scale-down still waits for.
    pub drain_pending: u64,
    /// `pinned` pins held on fewer nodes than the ready nodes can hold (`min(wanted, ready)`):
    /// a copy was lost and is being made again.
    pub short: Vec<String>,
    /// Pins held on as many nodes as the ready nodes can hold (not decided without ready nodes).
    pub whole: Vec<String>,
}

/// The network as a pass sees it.
#[derive(Clone, Copy, Debug)]
pub struct Nodes<'a> {
    /// Copies per pin (the replication factor against the replicas).
    pub wanted: u16,
    /// The network's node count: allocations to indices at or above it are of removed nodes.
    pub replicas: u16,
    /// Its ready nodes (indices below `replicas`), observed.
    pub ready: &'a [NodeView],
    /// Nodes a scale-down is about to remove (indices at or above `replicas`) that still run,
    /// observed: their allocations are kept and their copies counted until they are gone, but
    /// pins are placed on the ready nodes only, so what they hold is copied there first.
    pub leaving: &'a [NodeView],
}

/// The plan for one network. `in_flight`: (request id, node) pairs whose node call is still
/// running; `now`: unix milliseconds.
pub fn plan(
    pins: &[PinRecord],
    net: &Nodes<'_>,
    in_flight: &HashSet<(String, u16)>,
    timers: &PinTimers,
    now: i64,
) -> Plan {
    let (wanted, replicas, nodes) = (net.wanted, net.replicas, net.ready);
    let leaving: HashSet<u16> = net.leaving.iter().map(|n| n.index).collect();
    let mut out = Plan::default();
    let ready: HashMap<u16, &NodeView> = nodes.iter().map(|n| (n.index, n)).collect();
    // Pins per node (live allocations), for placement; updated as the plan allocates.
    let mut load: HashMap<u16, usize> = HashMap::new();
    // CIDs that a live (not removed, not unpinning) allocation keeps on a node: an unpin of
    // the same CID there would take it from that other pin.
    let mut kept: HashSet<(u16, &str)> = HashSet::new();
    for p in pins {
        for a in &p.allocations {
            if a.status != AllocationStatus::Unpinning && p.removed_at.is_none() {
                *load.entry(a.node).or_default() += 1;
                kept.insert((a.node, p.cid.as_str()));
            }
        }
    }
    let copies = usize::from(wanted.min(u16::try_from(nodes.len()).unwrap_or(u16::MAX)));

    for p in pins {
        let id = &p.request_id;
        let cid = p.cid.as_str();
        let busy = |node: u16| in_flight.contains(&(id.clone(), node));

        if p.removed_at.is_some() {
            plan_removed(p, &ready, &kept, replicas, &busy, &mut out.steps);
            continue;
        }

        // Allocations of nodes that no longer exist are forgotten; of nodes that are not
        // ready now, kept but not counted.
        let mut live: Vec<&Allocation> = Vec::new();
        for a in &p.allocations {
            if a.node >= replicas {
                // A leaving node keeps its allocation (and its copy) until it is gone.
                if !leaving.contains(&a.node) {
                    out.steps.push(Step::Forget {
                        request_id: id.clone(),
                        node: a.node,
                    });
                }
                continue;
            }
            if a.status == AllocationStatus::Unpinning {
                if ready.contains_key(&a.node) && !busy(a.node) {
                    out.steps.push(unpin_or_forget(id, a.node, cid, &kept));
                }
                continue;
            }
            if ready.contains_key(&a.node) {
                live.push(a);
            }
        }
        let held_on = |node: u16| ready.get(&node).is_some_and(|n| n.holds.contains(cid));
        let held = live.iter().filter(|a| held_on(a.node)).count();

        // A failed pin stays failed unless a node turns out to hold it.
        if p.status == PinStatus::Failed
            && held == 0
            && !nodes.iter().any(|n| n.holds.contains(cid))
        {
            for a in &live {
                if !busy(a.node) {
                    out.steps.push(Step::Forget {
                        request_id: id.clone(),
                        node: a.node,
                    });
                }
            }
            continue;
        }

        // A failed pin that a node turns out to hold comes back: its allocations that hold
        // nothing go, so placement starts from the holders.
        if p.status == PinStatus::Failed {
            live.retain(|a| {
                let keep = held_on(a.node) || busy(a.node);
                if !keep {
                    out.steps.push(Step::Forget {
                        request_id: id.clone(),
                        node: a.node,
                    });
                }
                keep
            });
        }
        let mut reason: Option<String> = None;
        let mut active = 0usize;
        let mut keep: Vec<&Allocation> = live.clone();
        // Over-allocated (the factor went down, a node came back): converge on the lowest
        // indices (the nodes a scale-down keeps), shedding the others only once those hold
        // it, so the copies never drop below what is wanted meanwhile.
        keep.sort_by_key(|a| a.node);
        if keep.len() > copies && copies > 0 && keep[..copies].iter().all(|a| held_on(a.node)) {
            for a in keep.split_off(copies) {
                if busy(a.node) {
                    continue;
                }
                out.steps.push(Step::Allocate {
                    request_id: id.clone(),
                    allocation: Allocation {
                        status: AllocationStatus::Unpinning,
                        updated_at: now,
                        ..a.clone()
                    },
                });
                if let Some(l) = load.get_mut(&a.node) {
                    *l = l.saturating_sub(1);
                }
            }
        }
        for a in &keep {
            if held_on(a.node) {
                if a.status != AllocationStatus::Pinned {
                    out.steps.push(Step::Allocate {
                        request_id: id.clone(),
                        allocation: Allocation {
                            status: AllocationStatus::Pinned,
                            reason: None,
                            attempts: 0,
                            updated_at: now,
                            node: a.node,
                        },
                    });
                }
                continue;
            }
            active += 1;
            if busy(a.node) {
                continue;
            }
            if a.status == AllocationStatus::Failed {
                reason = a.reason.clone().or(reason);
                let due = a.updated_at.saturating_add(
                    i64::try_from(timers.retry_delay(a.attempts).as_millis()).unwrap_or(i64::MAX),
                );
                if now < due {
                    continue;
                }
            }
            // Pinning without a call in flight, failed and due, or pinned but no longer
            // listed by its node (lost volume, replaced node): pin (again).
            out.steps.push(Step::Allocate {
                request_id: id.clone(),
                allocation: Allocation {
                    status: AllocationStatus::Pinning,
                    updated_at: now,
                    ..(*a).clone()
                },
            });
            out.steps.push(Step::Pin {
                request_id: id.clone(),
                node: a.node,
                cid: cid.to_string(),
                attempts: a.attempts,
            });
        }

        // Under-allocated: add nodes, holders first, then free space, load, index.
        let mut have: BTreeSet<u16> = keep.iter().map(|a| a.node).collect();
        // Allocations on nodes not ready now still exist: do not allocate to them twice.
        have.extend(p.allocations.iter().map(|a| a.node));
        let missing = copies.saturating_sub(keep.len());
        let mut new_held = 0;
        if missing > 0 {
            let mut candidates: Vec<&NodeView> =
                nodes.iter().filter(|n| !have.contains(&n.index)).collect();
            candidates.sort_by(|a, b| {
                let ka = (
                    !a.holds.contains(cid),
                    std::cmp::Reverse(a.free_bytes / SPACE_STEP),
                );
                let kb = (
                    !b.holds.contains(cid),
                    std::cmp::Reverse(b.free_bytes / SPACE_STEP),
                );
                ka.cmp(&kb)
                    .then_with(|| {
                        let la = load.get(&a.index).copied().unwrap_or(0);
                        let lb = load.get(&b.index).copied().unwrap_or(0);
                        la.cmp(&lb)
                    })
                    .then(a.index.cmp(&b.index))
            });
            for n in candidates.into_iter().take(missing) {
                *load.entry(n.index).or_default() += 1;
                let holds = n.holds.contains(cid);
                out.steps.push(Step::Allocate {
                    request_id: id.clone(),
                    allocation: Allocation {
                        node: n.index,
                        status: if holds {
                            AllocationStatus::Pinned
                        } else {
                            AllocationStatus::Pinning
                        },
                        reason: None,
                        attempts: 0,
                        updated_at: now,
                    },
                });
                if holds {
                    new_held += 1;
                } else {
                    active += 1;
                    out.steps.push(Step::Pin {
                        request_id: id.clone(),
                        node: n.index,
                        cid: cid.to_string(),
                        attempts: 0,
                    });
                }
            }
        }

        // Copies held now (after this plan's confirmations), the pin's status, and failure.
        let held_now = keep.iter().filter(|a| held_on(a.node)).count() + new_held;
        // Copies on leaving nodes still exist: they count until those nodes are removed.
        let held_leaving = net.leaving.iter().filter(|n| n.holds.contains(cid)).count();
        let held_all = held_now + held_leaving;
        if held_all < usize::from(wanted) {
            out.under_replicated += 1;
        }
        if held_leaving > 0 && held_now < copies {
            out.drain_pending += 1;
        }
        if !nodes.is_empty() {
            if held_all >= copies {
                out.whole.push(id.clone());
            } else if p.status == PinStatus::Pinned {
                out.short.push(id.clone());
            }
        }
        if nodes.is_empty() {
            // No ready node to ask: the status stays what it was.
            continue;
        }
        let age = now.saturating_sub(p.created_at);
        let fail_after = i64::try_from(timers.fail_after.as_millis()).unwrap_or(i64::MAX);
        // Pinned once it has its copies; it stays pinned while any copy is held (a lost copy
        // is re-replicated and counted as under-replicated meanwhile).
        let (status, why) = if held_all >= copies || (held_all > 0 && p.status == PinStatus::Pinned)
        {
            (PinStatus::Pinned, None)
        } else if held_all == 0 && age >= fail_after {
            let why = match &reason {
                Some(r) => format!(
                    "no node could pin {cid} within {}: {r}",
                    humantime::format_duration(timers.fail_after)
                ),
                None => format!(
                    "no node could pin {cid} within {}",
                    humantime::format_duration(timers.fail_after)
                ),
            };
            (PinStatus::Failed, Some(why))
        } else if held_all > 0 || active > 0 {
            (PinStatus::Pinning, None)
        } else {
            (PinStatus::Queued, None)
        };
        if status != p.status || why != p.reason {
            out.steps.push(Step::Status {
                request_id: id.clone(),
                status,
                reason: why,
            });
        }
    }
    out
}

/// A removed pin: unpin it from every ready node that holds it for no other pin, forget the
/// allocations of nodes gone, then erase it.
fn plan_removed(
    p: &PinRecord,
    ready: &HashMap<u16, &NodeView>,
    kept: &HashSet<(u16, &str)>,
    replicas: u16,
    busy: &dyn Fn(u16) -> bool,
    steps: &mut Vec<Step>,
) {
    let id = &p.request_id;
    let mut left = 0;
    for a in &p.allocations {
        if a.node >= replicas {
            steps.push(Step::Forget {
                request_id: id.clone(),
                node: a.node,
            });
            continue;
        }
        left += 1;
        if busy(a.node) || !ready.contains_key(&a.node) {
            continue;
        }
        steps.push(unpin_or_forget(id, a.node, p.cid.as_str(), kept));
    }
    if left == 0 {
        steps.push(Step::Erase {
            request_id: id.clone(),
        });
    }
}

fn unpin_or_forget(id: &str, node: u16, cid: &str, kept: &HashSet<(u16, &str)>) -> Step {
    if kept.contains(&(node, cid)) {
        Step::Forget {
            request_id: id.to_string(),
            node,
        }
    } else {
        Step::Unpin {
            request_id: id.to_string(),
            node,
            cid: cid.to_string(),
        }
    }
}

#[cfg(test)]
mod tests;
