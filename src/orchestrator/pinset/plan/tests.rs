//! The pin plan's unit tests.

use super::*;
use crate::cid::Cid;
use crate::node::NetworkName;

const CID: &str = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku";
const NOW: i64 = 1_000_000;

fn pin(allocations: Vec<Allocation>) -> PinRecord {
    PinRecord {
        network: NetworkName::new("plan").unwrap(),
        request_id: "p1".into(),
        cid: Cid::parse(CID).unwrap(),
        name: None,
        meta: Default::default(),
        origins: vec![],
        owner: String::new(),
        created_at: NOW - 1000,
        status: PinStatus::Queued,
        reason: None,
        updated_at: NOW - 1000,
        removed_at: None,
        allocations,
    }
}

fn alloc(node: u16, status: AllocationStatus) -> Allocation {
    Allocation {
        node,
        status,
        reason: None,
        attempts: 0,
        updated_at: NOW - 1000,
    }
}

fn node(index: u16, holds: bool, free_mib: u64) -> NodeView {
    NodeView {
        index,
        holds: if holds {
            [CID.to_string()].into_iter().collect()
        } else {
            HashSet::new()
        },
        free_bytes: free_mib << 20,
    }
}

fn net(wanted: u16, replicas: u16, ready: &[NodeView]) -> Nodes<'_> {
    Nodes {
        wanted,
        replicas,
        ready,
        leaving: &[],
    }
}

fn run(pins: &[PinRecord], wanted: u16, nodes: &[NodeView]) -> Plan {
    plan(
        pins,
        &net(wanted, 3, nodes),
        &HashSet::new(),
        &PinTimers::default(),
        NOW,
    )
}

fn pinned_to(plan: &Plan) -> Vec<u16> {
    let mut v: Vec<u16> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Pin { node, .. } => Some(*node),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

fn allocated(plan: &Plan) -> Vec<(u16, AllocationStatus)> {
    plan.steps
        .iter()
        .filter_map(|s| match s {
            Step::Allocate { allocation, .. } => Some((allocation.node, allocation.status)),
            _ => None,
        })
        .collect()
}

fn status(plan: &Plan) -> Option<PinStatus> {
    plan.steps.iter().find_map(|s| match s {
        Step::Status { status, .. } => Some(*status),
        _ => None,
    })
}

#[test]
fn a_new_pin_goes_to_its_holder_then_the_emptiest_node() {
    let nodes = [node(0, false, 100), node(1, true, 10), node(2, false, 400)];
    let p = run(&[pin(vec![])], 2, &nodes);
    // The holder is allocated as pinned (no call); node 2 has the most space.
    assert_eq!(
        allocated(&p),
        vec![
            (1, AllocationStatus::Pinned),
            (2, AllocationStatus::Pinning)
        ]
    );
    assert_eq!(pinned_to(&p), vec![2]);
    assert_eq!(status(&p), Some(PinStatus::Pinning));
    assert_eq!(p.under_replicated, 1);
}

#[test]
fn equal_space_prefers_the_lower_index() {
    let nodes = [
        node(2, false, 100),
        node(1, false, 100),
        node(0, false, 100),
    ];
    let p = run(&[pin(vec![])], 2, &nodes);
    assert_eq!(pinned_to(&p), vec![0, 1]);
}

#[test]
fn held_copies_make_it_pinned_and_nothing_moves() {
    let nodes = [node(0, true, 100), node(1, true, 100), node(2, false, 100)];
    let mut p = pin(vec![
        alloc(0, AllocationStatus::Pinned),
        alloc(1, AllocationStatus::Pinned),
    ]);
    p.status = PinStatus::Pinned;
    let out = run(&[p], 2, &nodes);
    assert!(out.steps.is_empty(), "{:?}", out.steps);
    assert_eq!(out.under_replicated, 0);
    assert_eq!(out.whole, vec!["p1".to_string()]);
    assert!(out.short.is_empty());
}

#[test]
fn a_node_that_lost_its_copy_pins_again_and_a_removed_node_is_replaced() {
    // Node 1 lost its volume (pin/ls no longer shows it); node 5 no longer exists.
    let nodes = [node(0, true, 100), node(1, false, 100), node(2, false, 100)];
    let mut p = pin(vec![
        alloc(0, AllocationStatus::Pinned),
        alloc(1, AllocationStatus::Pinned),
        alloc(5, AllocationStatus::Pinned),
    ]);
    p.status = PinStatus::Pinned;
    let out = run(&[p], 2, &nodes);
    assert!(out.steps.contains(&Step::Forget {
        request_id: "p1".into(),
        node: 5
    }));
    assert_eq!(pinned_to(&out), vec![1]);
    // Still held once: stays pinned while it re-replicates, and counts as short of a copy.
    assert_eq!(status(&out), None);
    assert_eq!(out.under_replicated, 1);
    assert_eq!(out.short, vec!["p1".to_string()]);
    assert!(out.whole.is_empty());
}

#[test]
fn a_node_not_ready_is_replaced_while_its_allocation_waits() {
    // Node 1 is down (not in the ready list): the pin gets node 2 meanwhile.
    let nodes = [node(0, true, 100), node(2, false, 100)];
    let mut p = pin(vec![
        alloc(0, AllocationStatus::Pinned),
        alloc(1, AllocationStatus::Pinned),
    ]);
    p.status = PinStatus::Pinned;
    let out = run(&[p], 2, &nodes);
    assert_eq!(pinned_to(&out), vec![2]);
    assert!(!out
        .steps
        .iter()
        .any(|s| matches!(s, Step::Forget { node: 1, .. })));
}

#[test]
fn over_allocation_converges_on_the_lowest_indices_without_losing_a_copy() {
    // Node 1 came back empty while node 2 took its place: node 1 pins first...
    let nodes = [node(0, true, 100), node(1, false, 100), node(2, true, 100)];
    let mut p = pin(vec![
        alloc(0, AllocationStatus::Pinned),
        alloc(1, AllocationStatus::Pinned),
        alloc(2, AllocationStatus::Pinned),
    ]);
    p.status = PinStatus::Pinned;
    let out = run(&[p.clone()], 2, &nodes);
    assert_eq!(allocated(&out), vec![(1, AllocationStatus::Pinning)]);
    assert_eq!(pinned_to(&out), vec![1]);
    // ...then node 2 lets it go.
    let nodes = [node(0, true, 100), node(1, true, 100), node(2, true, 100)];
    let out = run(&[p], 2, &nodes);
    assert_eq!(allocated(&out), vec![(2, AllocationStatus::Unpinning)]);
    assert!(pinned_to(&out).is_empty());
}

#[test]
fn removed_pins_are_unpinned_unless_another_pin_keeps_the_cid() {
    let nodes = [node(0, true, 100), node(1, true, 100), node(2, false, 100)];
    let mut gone = pin(vec![
        alloc(0, AllocationStatus::Pinned),
        alloc(1, AllocationStatus::Pinned),
    ]);
    gone.removed_at = Some(NOW - 10);
    let mut other = pin(vec![alloc(1, AllocationStatus::Pinned)]);
    other.request_id = "p2".into();
    other.status = PinStatus::Pinned;
    let out = run(&[gone.clone(), other], 1, &nodes);
    assert!(out.steps.contains(&Step::Unpin {
        request_id: "p1".into(),
        node: 0,
        cid: CID.into()
    }));
    assert!(out.steps.contains(&Step::Forget {
        request_id: "p1".into(),
        node: 1
    }));
    // Once no allocation is left, the pin is erased.
    gone.allocations.clear();
    let out = run(&[gone], 1, &nodes);
    assert_eq!(
        out.steps,
        vec![Step::Erase {
            request_id: "p1".into()
        }]
    );
}

#[test]
fn calls_in_flight_are_not_started_twice_and_failures_back_off() {
    let nodes = [node(0, false, 100), node(1, false, 100)];
    let p = pin(vec![alloc(0, AllocationStatus::Pinning)]);
    let busy: HashSet<(String, u16)> = [("p1".to_string(), 0)].into_iter().collect();
    let out = plan(&[p], &net(2, 3, &nodes), &busy, &PinTimers::default(), NOW);
    assert_eq!(pinned_to(&out), vec![1]);
    // A failure 500 ms ago with a 1 s backoff waits; after it, it is retried.
    let mut failed = alloc(0, AllocationStatus::Failed);
    failed.attempts = 1;
    failed.updated_at = NOW - 500;
    failed.reason = Some("node 0: pin/add: timed out".into());
    let out = run(&[pin(vec![failed.clone()])], 1, &nodes);
    assert!(pinned_to(&out).is_empty());
    failed.updated_at = NOW - 1500;
    let out = run(&[pin(vec![failed])], 1, &nodes);
    assert_eq!(pinned_to(&out), vec![0]);
    assert_eq!(PinTimers::default().retry_delay(3), Duration::from_secs(4));
    assert_eq!(
        PinTimers::default().retry_delay(30),
        Duration::from_secs(60)
    );
}

#[test]
fn a_cid_no_node_has_fails_after_the_timeout_with_a_reason_and_comes_back() {
    let nodes = [node(0, false, 100), node(1, false, 100)];
    let mut failed = alloc(0, AllocationStatus::Failed);
    failed.attempts = 2;
    failed.reason = Some("node 0: pin/add: timed out after 60s".into());
    let mut p = pin(vec![failed]);
    p.created_at = NOW - 301_000;
    let out = run(&[p.clone()], 1, &nodes);
    let reason = out.steps.iter().find_map(|s| match s {
        Step::Status {
            status: PinStatus::Failed,
            reason,
            ..
        } => reason.clone(),
        _ => None,
    });
    let reason = reason.expect("failed with a reason");
    assert!(
        reason.contains("within 5m") && reason.contains("timed out"),
        "{reason}"
    );
    // Failed: no more attempts...
    p.status = PinStatus::Failed;
    p.reason = Some(reason);
    let out = run(&[p.clone()], 1, &nodes);
    assert!(pinned_to(&out).is_empty());
    // ...until a node holds the CID.
    let nodes = [node(0, false, 100), node(1, true, 100)];
    let out = run(&[p], 1, &nodes);
    assert_eq!(status(&out), Some(PinStatus::Pinned));
}

#[test]
fn fewer_ready_nodes_than_wanted_is_under_replicated_not_failed() {
    let nodes = [node(0, true, 100)];
    let mut p = pin(vec![alloc(0, AllocationStatus::Pinned)]);
    p.status = PinStatus::Pinned;
    let out = plan(
        &[p],
        &net(2, 1, &nodes),
        &HashSet::new(),
        &PinTimers::default(),
        NOW,
    );
    assert!(out.steps.is_empty(), "{:?}", out.steps);
    assert_eq!(out.under_replicated, 1);
    // One copy is all one node can hold: not short (re-replication waits for more nodes).
    assert_eq!(out.whole, vec!["p1".to_string()]);
}

fn drain(pins: &[PinRecord], wanted: u16, ready: &[NodeView], leaving: &[NodeView]) -> Plan {
    let net = Nodes {
        wanted,
        replicas: 2,
        ready,
        leaving,
    };
    plan(pins, &net, &HashSet::new(), &PinTimers::default(), NOW)
}

#[test]
fn a_scale_down_copies_what_leaving_nodes_hold_before_they_go() {
    // 3 → 2 with replication 2: the pin is on nodes 1 and 2; node 2 is leaving.
    let mut p = pin(vec![
        alloc(1, AllocationStatus::Pinned),
        alloc(2, AllocationStatus::Pinned),
    ]);
    p.status = PinStatus::Pinned;
    let leaving = [node(2, true, 100)];
    let ready = [node(0, false, 100), node(1, true, 100)];
    let out = drain(&[p.clone()], 2, &ready, &leaving);
    // Node 0 takes a copy; node 2's allocation is kept (not forgotten) while it runs.
    assert_eq!(pinned_to(&out), vec![0]);
    assert!(!out
        .steps
        .iter()
        .any(|s| matches!(s, Step::Forget { node: 2, .. })));
    // Two copies exist (1 and 2): neither under-replicated nor any less pinned meanwhile...
    assert_eq!(out.under_replicated, 0);
    assert_eq!(status(&out), None);
    // ...but the scale-down must wait for node 0.
    assert_eq!(out.drain_pending, 1);
    // Node 0 holds it: nothing is pending, the removal may go ahead.
    p.allocations.push(alloc(0, AllocationStatus::Pinning));
    let ready = [node(0, true, 100), node(1, true, 100)];
    let out = drain(&[p.clone()], 2, &ready, &leaving);
    assert_eq!(out.drain_pending, 0);
    assert_eq!(out.under_replicated, 0);
    // Once node 2 is gone (no longer leaving), its allocation is forgotten.
    let out = drain(&[p], 2, &ready, &[]);
    assert!(out.steps.contains(&Step::Forget {
        request_id: "p1".into(),
        node: 2
    }));
    assert_eq!(out.drain_pending, 0);
}

#[test]
fn a_drain_asks_only_what_the_remaining_nodes_can_hold_and_ignores_what_they_have() {
    // 3 → 1 with replication 2: one copy on node 0 is all the remaining node can hold.
    let mut p = pin(vec![
        alloc(1, AllocationStatus::Pinned),
        alloc(2, AllocationStatus::Pinned),
    ]);
    p.status = PinStatus::Pinned;
    let leaving = [node(1, true, 100), node(2, true, 100)];
    let net = Nodes {
        wanted: 2,
        replicas: 1,
        ready: &[node(0, false, 100)],
        leaving: &leaving,
    };
    let out = plan(
        &[p.clone()],
        &net,
        &HashSet::new(),
        &PinTimers::default(),
        NOW,
    );
    assert_eq!(pinned_to(&out), vec![0]);
    assert_eq!(out.drain_pending, 1);
    let ready = [node(0, true, 100)];
    let net = Nodes {
        ready: &ready,
        ..net
    };
    let out = plan(&[p], &net, &HashSet::new(), &PinTimers::default(), NOW);
    assert_eq!(out.drain_pending, 0, "one copy is all one node can hold");
    // A pin the leaving node does not hold, or a failed one, never holds a drain up.
    let mut other = pin(vec![alloc(0, AllocationStatus::Pinning)]);
    other.request_id = "p2".into();
    let mut failed = pin(vec![]);
    failed.request_id = "p3".into();
    failed.status = PinStatus::Failed;
    let out = drain(
        &[other, failed],
        2,
        &[node(0, false, 100), node(1, false, 100)],
        &[node(2, false, 100)],
    );
    assert_eq!(out.drain_pending, 0);
}
