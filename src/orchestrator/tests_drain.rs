//! Unit tests of a scale-down's pin drain on the mock runtime (the gate in the reconciler, its
//! events and status): the removal of a node that holds pins waits for them, then goes once
//! the pinset reports nothing pending, or once the drain timeout passed.

use std::time::Duration;

use super::tests::{cfg, fixture_with, name, req, Fixture};
use super::*;
use crate::node::NodeRuntime;
use crate::store::{Allocation, AllocationStatus, NetworkStatus, Store};

const CID: &str = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku";

/// A running 3-node network whose one pin node 2 holds.
async fn pinned_on_node_2(net: &str, drain_timeout: Duration) -> Fixture {
    let mut c = cfg();
    c.pins.drain_timeout = drain_timeout;
    c.op_timeout = Duration::from_secs(30);
    let f = fixture_with(c).await;
    f.orch.create(req(net, 3)).await.unwrap();
    f.orch.start(net).await.unwrap();
    let p = f
        .orch
        .add_pin(
            net,
            AddPin {
                cid: CID.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let held = Allocation {
        node: 2,
        status: AllocationStatus::Pinned,
        reason: None,
        attempts: 0,
        updated_at: 0,
    };
    f.store
        .put_allocation(&name(net), &p.request_id, &held)
        .await
        .unwrap();
    f
}

fn down_to_2() -> UpdateNetwork {
    UpdateNetwork {
        replicas: Some(2),
        ..Default::default()
    }
}

/// The next `pin_drain` event's message.
async fn next_drain(rx: &mut tokio::sync::broadcast::Receiver<Event>) -> String {
    loop {
        let e = rx.recv().await.unwrap();
        if e.kind == EventKind::PinDrain {
            return e.message;
        }
    }
}

#[tokio::test]
async fn a_scale_down_keeps_a_pinned_node_until_its_pins_are_copied() {
    let f = pinned_on_node_2("drain", Duration::from_secs(600)).await;
    let mut rx = f.orch.subscribe();
    let orch = f.orch.clone();
    let update = tokio::spawn(async move { orch.update("drain", down_to_2()).await });
    let started = next_drain(&mut rx).await;
    assert!(started.contains("node(s) 2"), "{started}");
    // Waiting: node 2 still runs, the network says why it is pending.
    let pass = f.orch.reconcile(&name("drain")).await.unwrap();
    assert_eq!(pass, NetworkStatus::Pending);
    assert_eq!(f.rt.list_nodes().await.unwrap().len(), 3);
    let rec = f.store.get_network(&name("drain")).await.unwrap().unwrap();
    assert!(
        rec.status_reason
            .as_deref()
            .unwrap_or("")
            .contains("copying the pins of node(s) 2"),
        "{:?}",
        rec.status_reason
    );
    // The pinset reports nothing left to copy: the removal goes ahead by itself.
    f.orch.note_drain(&name("drain"), 0);
    let done = next_drain(&mut rx).await;
    assert!(done.contains("are on the remaining nodes"), "{done}");
    let v = update.await.unwrap().unwrap();
    assert_eq!(v.status, NetworkStatus::Running);
    assert_eq!(v.nodes.len(), 2);
    let left: Vec<u16> =
        f.rt.list_nodes()
            .await
            .unwrap()
            .iter()
            .map(|r| r.spec.node.index)
            .collect();
    assert_eq!(left.len(), 2);
    assert!(!left.contains(&2), "{left:?}");
    // Over: the next scale-down starts a drain of its own.
    assert!(f.orch.draining(&name("drain")).is_empty());
}

#[tokio::test]
async fn a_drain_that_times_out_removes_the_node_anyway_and_says_so() {
    let f = pinned_on_node_2("drain-late", Duration::from_millis(300)).await;
    let mut rx = f.orch.subscribe();
    let v = f.orch.update("drain-late", down_to_2()).await.unwrap();
    assert_eq!(v.nodes.len(), 2);
    assert_eq!(f.rt.list_nodes().await.unwrap().len(), 2);
    assert!(next_drain(&mut rx).await.contains("before removing them"));
    let late = next_drain(&mut rx).await;
    assert!(
        late.contains("timed out") && late.contains("node.pin_drain_timeout"),
        "{late}"
    );
}

#[tokio::test]
async fn without_a_drain_timeout_or_pins_a_scale_down_does_not_wait() {
    let f = pinned_on_node_2("drain-off", Duration::ZERO).await;
    let mut rx = f.orch.subscribe();
    f.orch.update("drain-off", down_to_2()).await.unwrap();
    assert_eq!(f.rt.list_nodes().await.unwrap().len(), 2);
    f.orch.create(req("no-pins", 3)).await.unwrap();
    f.orch.start("no-pins").await.unwrap();
    f.orch.update("no-pins", down_to_2()).await.unwrap();
    assert_eq!(f.rt.list_nodes().await.unwrap().len(), 4);
    while let Ok(e) = rx.try_recv() {
        assert_ne!(e.kind, EventKind::PinDrain, "{}", e.message);
    }
}
