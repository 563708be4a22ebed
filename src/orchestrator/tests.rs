//! Unit tests of the orchestrator's logic: the mock runtime stands in for Docker, the store is
//! the real SQLite store (in memory).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::ports::{PortConfig, PortProbe, PortRange};
use super::*;
use crate::access::{Access, AccessUpdate};
use crate::node::mock::MockRuntime;
use crate::node::{NetworkName, NodeRef, NodeRuntime, NodeState, Resources, SwarmKey};
use crate::store::sql::SqlStore;
use crate::store::{DesiredState, NetworkStatus, Store};

struct AllFree;
impl PortProbe for AllFree {
    fn is_free(&self, _: IpAddr, _: u16) -> bool {
        true
    }
}

pub(super) fn cfg() -> OrchestratorConfig {
    OrchestratorConfig {
        image: "nexus-test:1".into(),
        op_timeout: Duration::from_secs(5),
        restart_backoff: Duration::from_millis(1),
        restart_backoff_max: Duration::from_millis(5),
        ..Default::default()
    }
}

pub(super) struct Fixture {
    pub(super) orch: Orchestrator,
    pub(super) rt: Arc<MockRuntime>,
    pub(super) store: Arc<SqlStore>,
}

pub(super) async fn fixture_with(cfg: OrchestratorConfig) -> Fixture {
    let store = Arc::new(
        SqlStore::connect(
            "sqlite::memory:",
            crate::store::seal::Keyring::generate().unwrap(),
        )
        .await
        .unwrap(),
    );
    let rt = Arc::new(MockRuntime::new());
    let orch = Orchestrator::new(store.clone(), rt.clone(), cfg, Box::new(AllFree))
        .await
        .unwrap();
    Fixture { orch, rt, store }
}

async fn fixture() -> Fixture {
    fixture_with(cfg()).await
}

pub(super) fn req(name: &str, replicas: u16) -> CreateNetwork {
    CreateNetwork {
        name: name.into(),
        replicas,
        access: Access {
            users: vec!["alice".into()],
            ..Access::default()
        },
        ..Default::default()
    }
}

fn creates(rt: &MockRuntime) -> usize {
    rt.calls()
        .iter()
        .filter(|c| c.starts_with("create "))
        .count()
}

#[tokio::test]
async fn new_nodes_dial_their_peers_once_all_are_ready() {
    let f = fixture().await;
    f.orch.create(req("mesh", 3)).await.unwrap();
    f.orch.start("mesh").await.unwrap();
    let calls = f.rt.calls();
    let last_create = calls
        .iter()
        .rposition(|c| c.starts_with("create "))
        .unwrap();
    for i in 0..3 {
        let at = calls
            .iter()
            .position(|c| *c == format!("connect nexus-mesh-{i}"))
            .unwrap_or_else(|| panic!("node {i} did not dial its peers: {calls:?}"));
        assert!(
            at > last_create,
            "dialled before every node was up: {calls:?}"
        );
    }
    // Scaling up dials from the new nodes only.
    let before = f.rt.calls().len();
    f.orch
        .update(
            "mesh",
            crate::orchestrator::UpdateNetwork {
                replicas: Some(4),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let connects: Vec<String> = f.rt.calls()[before..]
        .iter()
        .filter(|c| c.starts_with("connect "))
        .cloned()
        .collect();
    assert_eq!(connects, vec!["connect nexus-mesh-3".to_string()]);
}

pub(super) fn name(s: &str) -> NetworkName {
    NetworkName::new(s).unwrap()
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let f = fixture().await;
    let bad = [
        CreateNetwork {
            name: "Bad_Name".into(),
            ..req("x", 1)
        },
        req("zero", 0),
        req("huge", 1000),
        CreateNetwork {
            swarm_key: Some("not a key".into()),
            ..req("key", 1)
        },
        CreateNetwork {
            resources: Some(Resources {
                cpu_millis: 0,
                ..Resources::default()
            }),
            ..req("cpu", 1)
        },
        CreateNetwork {
            access: Access {
                allowed_origins: vec!["ftp://x".into()],
                ..Access::default()
            },
            ..req("origin", 1)
        },
        CreateNetwork {
            bootstrap_peers: vec!["/ip4/1.2.3.4/tcp/1".into()],
            ..req("boot", 1)
        },
        CreateNetwork {
            access: Access {
                users: vec!["a,b".into()],
                ..Access::default()
            },
            ..req("users", 1)
        },
        CreateNetwork {
            access: Access {
                api_allow: vec!["/api/v0/config".into()],
                ..Access::default()
            },
            ..req("allow", 1)
        },
        CreateNetwork {
            access: Access {
                api_deny: vec!["pin//ls".into()],
                ..Access::default()
            },
            ..req("deny", 1)
        },
    ];
    for r in bad {
        let label = r.name.clone();
        assert!(
            matches!(f.orch.create(r).await, Err(OrchestratorError::Invalid(_))),
            "{label}"
        );
    }
    assert!(f.store.list_networks().await.unwrap().is_empty());
    assert!(f.rt.calls().is_empty());

    f.orch.create(req("dup", 1)).await.unwrap();
    assert!(matches!(
        f.orch.create(req("dup", 2)).await,
        Err(OrchestratorError::AlreadyExists(_))
    ));
    assert_eq!(
        f.store
            .get_network(&name("dup"))
            .await
            .unwrap()
            .unwrap()
            .replicas,
        1
    );
    assert!(matches!(
        f.orch.start("nope").await,
        Err(OrchestratorError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_supplied_swarm_key_is_kept() {
    let f = fixture().await;
    let key = SwarmKey::generate().unwrap();
    f.orch
        .create(CreateNetwork {
            swarm_key: Some(key.to_file_contents()),
            ..req("own", 1)
        })
        .await
        .unwrap();
    assert_eq!(f.orch.swarm_key("own").await.unwrap(), key);
}

#[tokio::test]
async fn start_runs_every_node_with_distinct_ports_and_fills_the_registry() {
    let f = fixture().await;
    f.orch.create(req("web", 3)).await.unwrap();
    let view = f.orch.start("web").await.unwrap();
    assert_eq!(view.status, NetworkStatus::Running);
    assert!(view.activated_at.is_some());
    assert_eq!(creates(&f.rt), 3);
    let mut ports = std::collections::HashSet::new();
    for n in &view.nodes {
        assert_eq!(n.state, Some(NodeState::Running));
        assert!(ports.insert(n.ports.swarm.unwrap()), "port reused");
        let cfg = PortConfig::default();
        assert!((cfg.swarm[0].low..=cfg.swarm[0].high).contains(&n.ports.swarm.unwrap()));
    }
    let entry = f.orch.registry().get(&name("web")).unwrap();
    assert_eq!(entry.nodes.len(), 3);
    assert_eq!(entry.access.users, vec!["alice".to_string()]);
    // A second start is a no-op.
    f.orch.start("web").await.unwrap();
    assert_eq!(creates(&f.rt), 3);
}

#[tokio::test]
async fn concurrent_starts_create_nodes_once() {
    let f = fixture().await;
    f.orch.create(req("race", 3)).await.unwrap();
    let (a, b) = tokio::join!(f.orch.start("race"), f.orch.start("race"));
    a.unwrap();
    b.unwrap();
    assert_eq!(creates(&f.rt), 3);
}

#[tokio::test]
async fn stop_removes_containers_keeps_identities_and_releases_ports() {
    let f = fixture().await;
    f.orch.create(req("pause", 2)).await.unwrap();
    let running = f.orch.start("pause").await.unwrap();
    let stopped = f.orch.stop("pause").await.unwrap();
    assert_eq!(stopped.status, NetworkStatus::Stopped);
    assert_eq!(stopped.activated_at, None);
    assert!(f.rt.list_nodes().await.unwrap().is_empty());
    for (a, b) in running.nodes.iter().zip(&stopped.nodes) {
        assert_eq!(a.peer_id, b.peer_id, "identity must survive a stop");
        assert_eq!(b.ports.swarm, None, "ports must be released");
    }
    assert!(f
        .orch
        .registry()
        .get(&name("pause"))
        .unwrap()
        .nodes
        .is_empty());
    let again = f.orch.start("pause").await.unwrap();
    assert_eq!(again.status, NetworkStatus::Running);
    assert_eq!(again.nodes[0].peer_id, running.nodes[0].peer_id);
}

/// A node whose host port another program bound after its allocation (an outgoing
/// connection in the kernel's ephemeral range) moves to another port; the taken one is given
/// back and the new one recorded.
#[tokio::test]
async fn a_node_whose_port_was_taken_meanwhile_moves_to_another() {
    let f = fixture().await;
    f.orch.create(req("busy", 2)).await.unwrap();
    let node1 = NodeRef {
        network: name("busy"),
        index: 1,
    };
    f.rt.port_taken(node1.clone());
    let view = f.orch.start("busy").await.unwrap();
    assert_eq!(view.status, NetworkStatus::Running);
    let taken: u16 =
        f.rt.calls()
            .iter()
            .find_map(|c| c.strip_prefix("port-taken ")?.parse().ok())
            .expect("the mock refused a port");
    let ports: Vec<u16> = view.nodes.iter().filter_map(|n| n.ports.swarm).collect();
    assert_eq!(ports.len(), 2, "{ports:?}");
    assert_ne!(ports[0], ports[1]);
    assert!(
        !ports.contains(&taken),
        "node still on the taken port {taken}: {ports:?}"
    );
    let running = f.rt.list_nodes().await.unwrap();
    let on = running
        .iter()
        .find(|r| r.spec.node == node1)
        .and_then(|r| r.spec.ports.swarm);
    assert_eq!(
        on,
        Some(ports[1]),
        "the runtime runs node 1 on its recorded port"
    );
    let used: usize = f.orch.port_usage().iter().map(|u| u.used).sum();
    assert_eq!(used, 2, "the taken port was given back");
    assert!(view.nodes[1].last_error.is_none());
}

#[tokio::test]
async fn a_failed_start_rolls_back_and_says_why() {
    let f = fixture().await;
    f.orch.create(req("flaky", 3)).await.unwrap();
    f.rt.fail_create(NodeRef {
        network: name("flaky"),
        index: 1,
    });
    let err = f.orch.start("flaky").await.unwrap_err();
    match &err {
        OrchestratorError::Failed { reason, .. } => assert!(reason.contains("node 1"), "{reason}"),
        other => panic!("expected Failed, got {other}"),
    }
    assert!(
        f.rt.list_nodes().await.unwrap().is_empty(),
        "half-created nodes left"
    );
    let view = f.orch.get("flaky").await.unwrap();
    assert_eq!(view.status, NetworkStatus::Failed);
    assert!(view.status_reason.unwrap().contains("node 1"));
    assert!(
        view.nodes.iter().all(|n| n.ports.swarm.is_none()),
        "ports leaked"
    );
    assert!(view.nodes[1].last_error.is_some());
    // The background reconciler leaves a failed network alone...
    assert_eq!(
        f.orch.reconcile(&name("flaky")).await.unwrap(),
        NetworkStatus::Failed
    );
    assert!(f.rt.list_nodes().await.unwrap().is_empty());
    // ...until the operator starts it again.
    assert_eq!(
        f.orch.start("flaky").await.unwrap().status,
        NetworkStatus::Running
    );
}

#[tokio::test]
async fn port_exhaustion_is_a_clear_failure_with_nothing_left() {
    let mut c = cfg();
    c.ports = PortConfig {
        swarm: vec![PortRange {
            low: 100,
            high: 101,
        }],
    };
    let f = fixture_with(c).await;
    f.orch.create(req("big", 3)).await.unwrap();
    let err = f.orch.start("big").await.unwrap_err();
    assert!(
        err.to_string().contains("widen the swarm port range"),
        "{err}"
    );
    assert!(f.rt.list_nodes().await.unwrap().is_empty());
    // The two ports it got were released: a 2-node network fits.
    f.orch.create(req("fits", 2)).await.unwrap();
    f.orch.start("fits").await.unwrap();
}

#[tokio::test]
async fn scale_up_and_down() {
    let f = fixture().await;
    f.orch.create(req("scale", 3)).await.unwrap();
    f.orch.start("scale").await.unwrap();
    let up = UpdateNetwork {
        replicas: Some(5),
        ..Default::default()
    };
    let v = f.orch.update("scale", up).await.unwrap();
    assert_eq!(v.nodes.len(), 5);
    assert_eq!(f.rt.list_nodes().await.unwrap().len(), 5);
    // Every node lists all four others.
    for r in f.rt.list_nodes().await.unwrap() {
        assert_eq!(r.spec.peers.len(), 4);
    }
    let down = UpdateNetwork {
        replicas: Some(2),
        ..Default::default()
    };
    let v = f.orch.update("scale", down).await.unwrap();
    assert_eq!(v.status, NetworkStatus::Running);
    assert_eq!(v.nodes.len(), 2);
    let nodes = f.rt.list_nodes().await.unwrap();
    assert_eq!(
        nodes.iter().map(|r| r.spec.node.index).collect::<Vec<_>>(),
        [0, 1]
    );
    assert_eq!(f.store.list_nodes(&name("scale")).await.unwrap().len(), 2);
    assert!(matches!(
        f.orch
            .update(
                "scale",
                UpdateNetwork {
                    replicas: Some(0),
                    ..Default::default()
                }
            )
            .await,
        Err(OrchestratorError::Invalid(_))
    ));
}

#[tokio::test]
async fn access_changes_reach_the_registry_without_touching_nodes() {
    let f = fixture().await;
    f.orch.create(req("acl", 2)).await.unwrap();
    f.orch.start("acl").await.unwrap();
    let before = f.rt.calls().len();
    let change = UpdateNetwork {
        access: AccessUpdate {
            users: Some(vec!["bob".into()]),
            gateway_public: Some(true),
            ipns_dns: Some(true),
            allowed_origins: Some(vec!["https://app.example".into()]),
            api_allow: Some(vec!["key/list".into()]),
            api_deny: Some(vec!["pin/rm".into()]),
        },
        ..Default::default()
    };
    f.orch.update("acl", change).await.unwrap();
    let bad = UpdateNetwork {
        access: AccessUpdate {
            api_deny: Some(vec!["Pin".into()]),
            users: Some(vec![]),
            ..AccessUpdate::default()
        },
        ..Default::default()
    };
    assert!(matches!(
        f.orch.update("acl", bad).await,
        Err(OrchestratorError::Invalid(_))
    ));
    let bad = UpdateNetwork {
        memory_bytes: Some(1),
        access: AccessUpdate {
            users: Some(vec![]),
            ..AccessUpdate::default()
        },
        ..Default::default()
    };
    assert!(matches!(
        f.orch.update("acl", bad).await,
        Err(OrchestratorError::Invalid(_))
    ));
    let e = f.orch.registry().get(&name("acl")).unwrap();
    assert_eq!(e.access.users, vec!["bob".to_string()]);
    assert!(e.access.gateway_public);
    assert!(
        e.access.ipns_dns,
        "the registry carries the /ipns/ DNS switch"
    );
    assert_eq!(
        e.access.allowed_origins,
        vec!["https://app.example".to_string()]
    );
    assert_eq!(e.access.api_allow, vec!["key/list".to_string()]);
    assert_eq!(e.access.api_deny, vec!["pin/rm".to_string()]);
    assert_eq!(f.rt.calls().len(), before, "no node should change");
}

#[tokio::test]
async fn remove_needs_stop_or_force() {
    let f = fixture().await;
    f.orch.create(req("gone", 2)).await.unwrap();
    f.orch.start("gone").await.unwrap();
    let err = f.orch.remove("gone", false).await.unwrap_err();
    assert!(
        matches!(err, OrchestratorError::FailedPrecondition(_)),
        "{err}"
    );
    assert!(err.to_string().contains("--force"));
    assert_eq!(
        f.rt.list_nodes().await.unwrap().len(),
        2,
        "nothing may change"
    );
    f.orch.remove("gone", true).await.unwrap();
    assert!(f.rt.list_nodes().await.unwrap().is_empty());
    assert!(f.store.get_network(&name("gone")).await.unwrap().is_none());
    assert!(f.store.list_nodes(&name("gone")).await.unwrap().is_empty());
    assert!(f.orch.registry().get(&name("gone")).is_none());

    f.orch.create(req("tidy", 1)).await.unwrap();
    f.orch.start("tidy").await.unwrap();
    f.orch.stop("tidy").await.unwrap();
    f.orch.remove("tidy", false).await.unwrap();
}

#[tokio::test]
async fn recovery_adopts_running_nodes_and_removes_orphans() {
    let f = fixture().await;
    f.orch.create(req("keep", 3)).await.unwrap();
    f.orch.start("keep").await.unwrap();
    // A nexus-labelled network no record owns.
    let key = SwarmKey::generate().unwrap();
    let orphan =
        crate::node::plan_network(&name("orphan"), 1, "img:1", Resources::default(), &key).unwrap();
    f.rt.create_node(&orphan[0].0, &orphan[0].1).await.unwrap();
    let calls_before = f.rt.calls().len();

    // Drop the orchestrator without shutdown; a new one on the same store and runtime.
    drop(f.orch);
    let fresh = Orchestrator::new(f.store.clone(), f.rt.clone(), cfg(), Box::new(AllFree))
        .await
        .unwrap();
    fresh.recover().await.unwrap();
    let new_calls: Vec<String> = f.rt.calls()[calls_before..].to_vec();
    assert!(
        !new_calls.iter().any(|c| c.starts_with("create ")
            || c.starts_with("start ")
            || c.starts_with("update ")),
        "running nodes must be adopted untouched: {new_calls:?}"
    );
    assert!(
        new_calls.contains(&"remove-network orphan".to_string()),
        "{new_calls:?}"
    );
    assert_eq!(
        fresh.get("keep").await.unwrap().status,
        NetworkStatus::Running
    );
    assert_eq!(fresh.registry().get(&name("keep")).unwrap().nodes.len(), 3);
    // Ports recorded in the store are reserved: a new network gets other ones.
    fresh.create(req("next", 1)).await.unwrap();
    let next = fresh.start("next").await.unwrap();
    let keep = fresh.get("keep").await.unwrap();
    assert!(keep
        .nodes
        .iter()
        .all(|n| n.ports.swarm != next.nodes[0].ports.swarm));
}

#[tokio::test]
async fn a_dead_node_comes_back_and_a_crash_loop_fails_the_network() {
    let mut c = cfg();
    c.crash_limit = 3;
    let f = fixture_with(c).await;
    f.orch.create(req("phoenix", 2)).await.unwrap();
    f.orch.start("phoenix").await.unwrap();
    let runner = {
        let o = f.orch.clone();
        tokio::spawn(async move { o.run().await })
    };
    let victim = NodeRef {
        network: name("phoenix"),
        index: 1,
    };
    let up = |rt: Arc<MockRuntime>| async move {
        rt.list_nodes()
            .await
            .unwrap()
            .iter()
            .any(|r| r.spec.node.index == 1 && r.state == NodeState::Running)
    };
    tokio::task::yield_now().await;
    // Deaths 1 and 2: the reconciler restarts the node (after a short backoff).
    for _ in 0..2 {
        f.rt.kill(&victim);
        let mut back = false;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if up(f.rt.clone()).await {
                back = true;
                break;
            }
        }
        assert!(back, "dead node was not restarted");
    }
    // Death 3 within the window: the network fails with a reason and is left alone.
    f.rt.kill(&victim);
    let mut failed = false;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let v = f.orch.get("phoenix").await.unwrap();
        if v.status == NetworkStatus::Failed {
            let reason = v.status_reason.unwrap();
            assert!(reason.contains("died 3 times"), "{reason}");
            failed = true;
            break;
        }
    }
    assert!(failed, "crash loop not detected");
    runner.abort();
    let rec = f
        .store
        .get_network(&name("phoenix"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.desired, DesiredState::Running);
}

#[tokio::test]
async fn a_failed_scale_up_only_undoes_the_new_nodes() {
    let f = fixture().await;
    f.orch.create(req("grow", 2)).await.unwrap();
    f.orch.start("grow").await.unwrap();
    f.rt.fail_create(NodeRef {
        network: name("grow"),
        index: 3,
    });
    let up = UpdateNetwork {
        replicas: Some(4),
        ..Default::default()
    };
    let err = f.orch.update("grow", up).await.unwrap_err();
    assert!(err.to_string().contains("node 3"), "{err}");
    let left: Vec<u16> =
        f.rt.list_nodes()
            .await
            .unwrap()
            .iter()
            .map(|r| r.spec.node.index)
            .collect();
    // The original nodes keep serving (re-created with the new peer list or not, they exist);
    // node 2, made in the failed pass, is gone with its data.
    assert!(left.contains(&0) && left.contains(&1), "{left:?}");
    assert!(!left.contains(&2) && !left.contains(&3), "{left:?}");
    assert!(
        f.rt.calls().contains(&"remove nexus-grow-2".to_string()),
        "{:?}",
        f.rt.calls()
    );
    assert_eq!(f.orch.registry().get(&name("grow")).unwrap().nodes.len(), 2);
}

#[tokio::test]
async fn a_failed_restart_never_deletes_data() {
    let f = fixture().await;
    f.orch.create(req("precious", 2)).await.unwrap();
    f.orch.start("precious").await.unwrap();
    f.orch.stop("precious").await.unwrap();
    f.rt.fail_create(NodeRef {
        network: name("precious"),
        index: 1,
    });
    assert!(f.orch.start("precious").await.is_err());
    let calls = f.rt.calls();
    assert!(
        calls.contains(&"remove-container nexus-precious-0".to_string()),
        "{calls:?}"
    );
    assert!(
        !calls.iter().any(|c| c.starts_with("remove nexus-precious")),
        "{calls:?}"
    );
}

#[tokio::test]
async fn diagnostics_show_each_node_without_secrets() {
    let f = fixture().await;
    f.orch.create(req("diag", 2)).await.unwrap();
    f.orch.start("diag").await.unwrap();
    let d = f.orch.diagnostics("diag").await.unwrap();
    assert_eq!(d.len(), 2);
    assert_eq!(
        d[0].runtime.as_ref().unwrap().peers.as_ref().unwrap(),
        &vec![d[1].peer_id.clone()]
    );
    // Debug shows every field, whatever a renderer would pick.
    let text = format!("{d:?}");
    let rows = f.store.list_nodes(&name("diag")).await.unwrap();
    let key = f.orch.swarm_key("diag").await.unwrap().to_file_contents();
    assert!(!text.contains(&rows[0].identity.kubo_private_key().unwrap()));
    assert!(!text.contains(key.lines().nth(2).unwrap()));
    f.orch.stop("diag").await.unwrap();
    assert!(f
        .orch
        .diagnostics("diag")
        .await
        .unwrap()
        .iter()
        .all(|n| n.runtime.is_none()));
}

#[tokio::test]
async fn restart_backoff_doubles_and_is_capped() {
    let mut c = cfg();
    c.restart_backoff = Duration::from_secs(10);
    c.restart_backoff_max = Duration::from_secs(35);
    c.crash_limit = 100;
    let f = fixture_with(c).await;
    let node = NodeRef {
        network: name("bo"),
        index: 0,
    };
    assert_eq!(
        f.orch.restart_delay(&node),
        None,
        "never died: restart at once"
    );
    let mut delays = Vec::new();
    for _ in 0..4 {
        assert!(f.orch.record_death(&node).is_none());
        // Rounded to seconds: the delay is measured from "now".
        delays.push(f.orch.restart_delay(&node).unwrap().as_secs_f64().round() as u64);
    }
    assert_eq!(delays, vec![10, 20, 35, 35]);
}

#[tokio::test]
async fn a_docker_hiccup_is_retried_not_a_failure() {
    let f = fixture().await;
    f.orch.create(req("hiccup", 2)).await.unwrap();
    f.orch.start("hiccup").await.unwrap();
    f.rt.fail_once("remove-container nexus-hiccup-1");
    let err = f.orch.stop("hiccup").await.unwrap_err();
    assert!(matches!(err, OrchestratorError::Runtime(_)), "{err}");
    let rec = f.store.get_network(&name("hiccup")).await.unwrap().unwrap();
    assert_ne!(
        rec.status,
        NetworkStatus::Failed,
        "a transient error must not fail the network"
    );
    // The next reconcile (event, resync, or the operator's retry) finishes the job.
    assert_eq!(
        f.orch.reconcile(&name("hiccup")).await.unwrap(),
        NetworkStatus::Stopped
    );
    assert!(f.rt.list_nodes().await.unwrap().is_empty());
}

#[tokio::test]
async fn resources_above_the_per_node_maximum_are_refused() {
    let max = Resources {
        cpu_millis: 2000,
        memory_bytes: 2 << 30,
        disk_bytes: 20 << 30,
    };
    let f = fixture_with(OrchestratorConfig {
        max_resources: max,
        ..cfg()
    })
    .await;
    let too_much = [
        Resources {
            cpu_millis: 2500,
            ..max
        },
        Resources {
            memory_bytes: (2 << 30) + 1,
            ..max
        },
        Resources {
            disk_bytes: 21 << 30,
            ..max
        },
    ];
    for (r, field) in too_much
        .into_iter()
        .zip(["cpu_millis", "memory_bytes", "disk_bytes"])
    {
        let e = f
            .orch
            .create(CreateNetwork {
                resources: Some(r),
                ..req("big", 1)
            })
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, OrchestratorError::Invalid(_)), "{text}");
        assert!(text.contains(&format!("resources.{field}")), "{text}");
        assert!(text.contains("maximum"), "{text}");
    }
    assert!(f.store.list_networks().await.unwrap().is_empty());

    // Exactly the maximum is fine; an update may not go above it.
    f.orch
        .create(CreateNetwork {
            resources: Some(max),
            ..req("edge", 1)
        })
        .await
        .unwrap();
    let e = f
        .orch
        .update(
            "edge",
            UpdateNetwork {
                cpu_millis: Some(4000),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("maximum of 2000 (2 cores)"), "{e}");
    let view = f
        .orch
        .update(
            "edge",
            UpdateNetwork {
                cpu_millis: Some(1500),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(view.resources.cpu_millis, 1500);
}

#[tokio::test]
async fn a_burst_of_events_for_one_network_costs_at_most_two_passes() {
    let f = fixture().await;
    f.orch.create(req("burst", 1)).await.unwrap();
    f.orch.start("burst").await.unwrap();
    let mut bus = f.orch.subscribe();
    let runner = {
        let o = f.orch.clone();
        tokio::spawn(async move { o.run().await })
    };
    // The loop has subscribed to runtime events once it reports itself alive.
    while !f.orch.reconciler_alive() {
        tokio::task::yield_now().await;
    }
    let node = NodeRef {
        network: name("burst"),
        index: 0,
    };
    // A pass is "running" (it waits for the network's lock, as behind a long start) while
    // 1,000 events arrive.
    let lock = f.orch.network_lock(&name("burst"));
    let held = lock.lock().await;
    let before = f.orch.passes_run();
    for _ in 0..1000 {
        f.rt.send_event(&node, crate::node::NodeEventKind::Start);
    }
    let mut seen = 0;
    while seen < 1000 {
        let ev = tokio::time::timeout(Duration::from_secs(10), bus.recv())
            .await
            .expect("every event is handled")
            .unwrap();
        if ev.kind == EventKind::NodeStart {
            seen += 1;
        }
    }
    assert_eq!(
        f.orch.passes_run(),
        before,
        "no pass ran under the held lock"
    );
    drop(held);
    // Let the queue drain: it is done when no pass runs for a while.
    let mut last = f.orch.passes_run();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = f.orch.passes_run();
        if now == last {
            break;
        }
        last = now;
    }
    let passes = f.orch.passes_run() - before;
    assert!(
        (1..=2).contains(&passes),
        "1,000 events cost {passes} passes"
    );
    runner.abort();
}

fn subnet_cfg(pool: &str, prefix: u8, max_replicas: u16) -> OrchestratorConfig {
    OrchestratorConfig {
        subnets: super::subnets::SubnetConfig {
            pool: pool.parse().unwrap(),
            prefix,
        },
        max_replicas,
        ..cfg()
    }
}

async fn stored_subnet(f: &Fixture, n: &str) -> Option<ipnet::Ipv4Net> {
    f.store.get_network(&name(n)).await.unwrap().unwrap().subnet
}

#[tokio::test]
async fn each_network_gets_its_own_subnet_until_the_pool_is_full() {
    let f = fixture_with(subnet_cfg("10.9.0.0/24", 26, 16)).await;
    let mut got = Vec::new();
    for n in ["s0", "s1", "s2", "s3"] {
        let view = f.orch.create(req(n, 2)).await.unwrap();
        assert_eq!(view.subnet, stored_subnet(&f, n).await);
        got.push(view.subnet.unwrap());
    }
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 4, "{got:?}");
    // Full: refused up front, as a resource that ran out, and nothing recorded.
    let err = f.orch.create(req("s4", 1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Exhausted, "{err}");
    assert!(err.to_string().contains("10.9.0.0/24"), "{err}");
    assert!(f.store.get_network(&name("s4")).await.unwrap().is_none());
    // The network is made on its recorded subnet before its nodes.
    f.orch.start("s1").await.unwrap();
    let calls = f.rt.calls();
    let prepared = calls
        .iter()
        .position(|c| c == "prepare-network s1")
        .unwrap();
    let created = calls.iter().position(|c| c == "create nexus-s1-0").unwrap();
    assert!(prepared < created, "{calls:?}");
    assert_eq!(
        f.rt.network_subnet(&name("s1")),
        Some(stored_subnet(&f, "s1").await)
    );
    // Removing one frees its subnet for the next network.
    let freed = stored_subnet(&f, "s1").await;
    f.orch.remove("s1", true).await.unwrap();
    f.orch.create(req("s5", 1)).await.unwrap();
    assert_eq!(stored_subnet(&f, "s5").await, freed);
}

#[tokio::test]
async fn subnets_held_outside_nexus_are_skipped() {
    let f = fixture_with(subnet_cfg("10.9.0.0/24", 26, 16)).await;
    // Listed when nexus allocates: skipped at create.
    f.rt.add_foreign_subnet("10.9.0.0/25".parse().unwrap(), "br-other", true);
    f.orch.create(req("a", 1)).await.unwrap();
    assert_eq!(
        stored_subnet(&f, "a").await,
        Some("10.9.0.128/26".parse().unwrap())
    );
    // Appearing between create and start: the network, which has no node yet, moves to the
    // next free subnet, and the store says so.
    f.orch.create(req("b", 1)).await.unwrap();
    let b = stored_subnet(&f, "b").await.unwrap();
    assert_eq!(b, "10.9.0.192/26".parse().unwrap());
    f.rt.add_foreign_subnet(b, "br-late", false);
    // Nothing left for `b` to move to: the start fails and says why, leaving nothing.
    let err = f.orch.start("b").await.unwrap_err();
    assert!(err.to_string().contains("no free /26 subnet"), "{err}");
    assert!(f
        .rt
        .list_network_nodes(&name("b"))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(f.rt.network_subnet(&name("b")), None);
    // With room to move, the same start succeeds on another subnet.
    let f = fixture_with(subnet_cfg("10.9.0.0/24", 26, 16)).await;
    f.orch.create(req("c", 1)).await.unwrap();
    let first = stored_subnet(&f, "c").await.unwrap();
    f.rt.add_foreign_subnet(first, "br-late", false);
    f.orch.start("c").await.unwrap();
    let moved = stored_subnet(&f, "c").await.unwrap();
    assert_ne!(moved, first);
    assert_eq!(f.rt.network_subnet(&name("c")), Some(Some(moved)));
}

#[tokio::test]
async fn recorded_subnets_survive_a_restart_and_bound_scale_up() {
    let f = fixture_with(subnet_cfg("10.9.0.0/24", 29, 5)).await;
    f.orch.create(req("small", 2)).await.unwrap();
    f.orch.start("small").await.unwrap();
    let small = stored_subnet(&f, "small").await.unwrap();
    // A new orchestrator on the same store, with a coarser prefix and larger networks allowed.
    let Fixture { orch, rt, store } = f;
    drop(orch);
    let f = Fixture {
        orch: Orchestrator::new(store.clone(), rt.clone(), cfg(), Box::new(AllFree))
            .await
            .unwrap(),
        rt,
        store,
    };
    let fresh = Orchestrator::new(
        f.store.clone(),
        f.rt.clone(),
        subnet_cfg("10.9.0.0/24", 27, 16),
        Box::new(AllFree),
    )
    .await
    .unwrap();
    fresh.recover().await.unwrap();
    assert_eq!(stored_subnet(&f, "small").await, Some(small));
    // A new network never overlaps the recorded /29.
    fresh.create(req("big", 8)).await.unwrap();
    let big = stored_subnet(&f, "big").await.unwrap();
    assert!(!big.contains(&small.network()) && !small.contains(&big.network()));
    // `small`'s /29 holds 5 nodes: 8 are refused, naming the subnet, and nothing changes.
    let err = fresh
        .update(
            "small",
            UpdateNetwork {
                replicas: Some(8),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert!(err.to_string().contains(&small.to_string()), "{err}");
    assert_eq!(fresh.get("small").await.unwrap().replicas, 2);
}

#[tokio::test]
async fn a_network_from_before_subnets_keeps_dockers_choice() {
    let f = fixture().await;
    f.orch.create(req("legacy", 2)).await.unwrap();
    // As an older nexus stored it: no subnet.
    let mut rec = f.store.get_network(&name("legacy")).await.unwrap().unwrap();
    rec.subnet = None;
    f.store.update_network(&rec).await.unwrap();
    let fresh = Orchestrator::new(f.store.clone(), f.rt.clone(), cfg(), Box::new(AllFree))
        .await
        .unwrap();
    let view = fresh.start("legacy").await.unwrap();
    assert_eq!(view.status, NetworkStatus::Running);
    assert_eq!(view.subnet, None);
    // Prepared on the engine's default pools, and nothing recorded behind the operator's back.
    assert_eq!(f.rt.network_subnet(&name("legacy")), Some(None));
    assert_eq!(stored_subnet(&f, "legacy").await, None);
}

#[tokio::test]
async fn a_burst_of_starts_waits_its_turn() {
    let f = fixture_with(OrchestratorConfig {
        start_parallelism: 2,
        ..cfg()
    })
    .await;
    f.rt.set_create_delay(Duration::from_millis(50));
    for n in ["q0", "q1", "q2"] {
        f.orch.create(req(n, 3)).await.unwrap();
    }
    let (a, b, c) = tokio::join!(f.orch.start("q0"), f.orch.start("q1"), f.orch.start("q2"));
    for v in [a, b, c] {
        assert_eq!(v.unwrap().status, NetworkStatus::Running);
    }
    assert_eq!(creates(&f.rt), 9);
    assert_eq!(f.rt.most_concurrent_creates(), 2);
}

fn image_change(image: &str) -> UpdateNetwork {
    UpdateNetwork {
        image: Some(image.into()),
        ..Default::default()
    }
}

async fn images(rt: &MockRuntime) -> Vec<String> {
    let mut nodes = rt.list_nodes().await.unwrap();
    nodes.sort_by_key(|r| r.spec.node.index);
    nodes.into_iter().map(|r| r.spec.image).collect()
}

#[tokio::test]
async fn a_network_keeps_its_own_image_and_moves_node_by_node() {
    let f = fixture().await;
    // Without --image: the daemon's node.image, stored with the network.
    let v = f.orch.create(req("img", 2)).await.unwrap();
    assert_eq!(v.image, "nexus-test:1");
    let own = CreateNetwork {
        image: Some("kubo:0.43".into()),
        ..req("own", 1)
    };
    assert_eq!(f.orch.create(own).await.unwrap().image, "kubo:0.43");
    assert_eq!(
        f.store
            .get_network(&name("own"))
            .await
            .unwrap()
            .unwrap()
            .image,
        Some("kubo:0.43".into())
    );
    f.orch.start("img").await.unwrap();
    assert_eq!(images(&f.rt).await, ["nexus-test:1", "nexus-test:1"]);

    f.rt.set_image("kubo:0.44", (0, 44, 0), 19);
    f.rt.set_image("nexus-test:1", (0, 43, 1), 18);
    let before = f.rt.calls().len();
    let v = f
        .orch
        .update("img", image_change("kubo:0.44"))
        .await
        .unwrap();
    assert_eq!(v.image, "kubo:0.44");
    assert_eq!(v.status, NetworkStatus::Running);
    assert_eq!(images(&f.rt).await, ["kubo:0.44", "kubo:0.44"]);
    // Both images asked first, then the nodes one after the other.
    let calls: Vec<String> = f.rt.calls()[before..]
        .iter()
        .filter(|c| c.starts_with("probe ") || c.starts_with("update "))
        .cloned()
        .collect();
    assert_eq!(
        calls,
        [
            "probe kubo:0.44",
            "probe nexus-test:1",
            "update nexus-img-0",
            "update nexus-img-1"
        ]
    );
}

#[tokio::test]
async fn an_old_kubo_or_an_older_repo_version_is_refused_before_anything_changes() {
    let f = fixture().await;
    f.orch.create(req("down", 2)).await.unwrap();
    f.orch.start("down").await.unwrap();
    f.rt.set_image("nexus-test:1", (0, 43, 1), 18);
    f.rt.set_image("kubo:0.36", (0, 36, 0), 16);
    f.rt.set_image("kubo:0.42", (0, 42, 0), 17);
    let stored = || async { f.store.get_network(&name("down")).await.unwrap().unwrap() };
    let before_rec = stored().await;
    let before_calls = f.rt.calls().len();
    for (image, says) in [
        ("kubo:0.36", "0.34–0.36 lack keys nexus sets"),
        ("kubo:0.42", "nexus does not migrate repos backwards"),
    ] {
        match f.orch.update("down", image_change(image)).await {
            Err(OrchestratorError::FailedPrecondition(msg)) => {
                assert!(msg.contains(says), "{msg}");
                assert!(msg.contains(image), "{msg}");
            }
            other => panic!("{image}: expected FailedPrecondition, got {other:?}"),
        }
    }
    // Nothing stored, nothing restarted.
    let after = stored().await;
    assert_eq!(after.image, before_rec.image);
    assert_eq!(after.updated_at, before_rec.updated_at);
    assert!(f.rt.calls()[before_calls..]
        .iter()
        .all(|c| c.starts_with("probe ")));
    assert_eq!(images(&f.rt).await, ["nexus-test:1", "nexus-test:1"]);
    // A network being created with a kubo that is too old is refused too, and not recorded.
    let old = CreateNetwork {
        image: Some("kubo:0.36".into()),
        ..req("old", 1)
    };
    assert!(matches!(
        f.orch.create(old).await,
        Err(OrchestratorError::FailedPrecondition(_))
    ));
    assert!(f.store.get_network(&name("old")).await.unwrap().is_none());
    // A bad reference is refused where it enters.
    assert!(matches!(
        f.orch.update("down", image_change("-x")).await,
        Err(OrchestratorError::Invalid(_))
    ));
}

#[tokio::test]
async fn a_first_node_that_fails_on_the_new_image_puts_the_network_back() {
    let f = fixture().await;
    f.orch.create(req("back", 3)).await.unwrap();
    f.orch.start("back").await.unwrap();
    f.rt.break_image("kubo:broken");
    let before = f.rt.calls().len();
    let mut events = f.orch.subscribe();
    match f.orch.update("back", image_change("kubo:broken")).await {
        Err(OrchestratorError::FailedPrecondition(msg)) => {
            assert!(msg.contains("stays on `nexus-test:1`"), "{msg}");
            assert!(msg.contains("node 0 did not come up"), "{msg}");
        }
        other => panic!("expected FailedPrecondition, got {other:?}"),
    }
    // Only node 0 was tried; every node runs the old image; so does the record.
    let updates: Vec<String> = f.rt.calls()[before..]
        .iter()
        .filter(|c| c.starts_with("update "))
        .cloned()
        .collect();
    assert_eq!(updates, ["update nexus-back-0"]);
    assert_eq!(images(&f.rt).await, ["nexus-test:1"; 3]);
    let rec = f.store.get_network(&name("back")).await.unwrap().unwrap();
    assert_eq!(rec.image.as_deref(), Some("nexus-test:1"));
    let v = f.orch.get("back").await.unwrap();
    assert_eq!(v.status, NetworkStatus::Running);
    assert!(v.nodes[0]
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains("kubo:broken")));
    let mut rolled_back = false;
    while let Ok(e) = events.try_recv() {
        rolled_back |= e.kind == EventKind::ImageRolledBack;
    }
    assert!(rolled_back, "no image_rolled_back event");
    // The next pass leaves it alone.
    assert_eq!(
        f.orch.reconcile(&name("back")).await.unwrap(),
        NetworkStatus::Running
    );
    assert_eq!(images(&f.rt).await, ["nexus-test:1"; 3]);
}

#[tokio::test]
async fn a_network_from_before_per_network_images_keeps_the_daemons_image() {
    let f = fixture().await;
    f.orch.create(req("legacy", 1)).await.unwrap();
    let mut rec = f.store.get_network(&name("legacy")).await.unwrap().unwrap();
    rec.image = None; // as migration 0007 leaves an existing row
    f.store.update_network(&rec).await.unwrap();
    let later = OrchestratorConfig {
        image: "nexus-test:1".into(),
        ..cfg()
    };
    let orch = Orchestrator::new(f.store.clone(), f.rt.clone(), later, Box::new(AllFree))
        .await
        .unwrap();
    let rec = f.store.get_network(&name("legacy")).await.unwrap().unwrap();
    assert_eq!(rec.image.as_deref(), Some("nexus-test:1"));
    // Pinned: a daemon with another node.image leaves it as it is.
    let other = OrchestratorConfig {
        image: "kubo:other".into(),
        ..cfg()
    };
    drop(orch);
    let orch = Orchestrator::new(f.store.clone(), f.rt.clone(), other, Box::new(AllFree))
        .await
        .unwrap();
    assert_eq!(orch.get("legacy").await.unwrap().image, "nexus-test:1");
}

#[tokio::test]
async fn a_later_node_failing_on_the_new_image_fails_the_network_without_going_back() {
    let f = fixture().await;
    f.orch.create(req("later", 3)).await.unwrap();
    f.orch.start("later").await.unwrap();
    f.rt.fail_update(NodeRef {
        network: name("later"),
        index: 1,
    });
    match f.orch.update("later", image_change("kubo:0.44")).await {
        Err(OrchestratorError::Failed { reason, .. }) => {
            assert!(reason.contains("updating node 1"), "{reason}")
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    // Node 0 runs the new image (its repo may be migrated): no way back; node 2 untouched.
    assert_eq!(
        images(&f.rt).await,
        ["kubo:0.44", "nexus-test:1", "nexus-test:1"]
    );
    let rec = f.store.get_network(&name("later")).await.unwrap().unwrap();
    assert_eq!(rec.image.as_deref(), Some("kubo:0.44"));
    assert_eq!(rec.status, NetworkStatus::Failed);
    // The operator's retry goes on from where it stopped.
    f.orch.start("later").await.unwrap();
    assert_eq!(images(&f.rt).await, ["kubo:0.44"; 3]);
}

const GIB: u64 = 1 << 30;

fn admitting(admission: AdmissionConfig) -> OrchestratorConfig {
    OrchestratorConfig { admission, ..cfg() }
}

#[tokio::test]
async fn a_start_the_host_cannot_take_is_refused_up_front_and_changes_nothing() {
    // 3 GiB for nodes of 1 GiB (the default): a 2-node network fits, a second does not.
    let f = fixture_with(admitting(AdmissionConfig {
        host_memory: Some(3 * GIB),
        ..AdmissionConfig::default()
    }))
    .await;
    f.orch.create(req("a", 2)).await.unwrap();
    f.orch.create(req("b", 2)).await.unwrap();
    f.orch.start("a").await.unwrap();
    let err = f.orch.start("b").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Exhausted, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("starting network `b` (2 node(s)) needs 2.0 GiB"),
        "{text}"
    );
    assert!(
        text.contains("2.0 GiB of it held by running networks: 1.0 GiB short"),
        "{text}"
    );
    // Nothing changed: b is stopped as before, no node of it was created.
    let rec = f.store.get_network(&name("b")).await.unwrap().unwrap();
    assert_eq!(rec.desired, DesiredState::Stopped);
    assert_eq!(rec.status, NetworkStatus::Stopped);
    assert_eq!(creates(&f.rt), 2);
    // A running network's start is not checked again; stopping a frees its room.
    f.orch.start("a").await.unwrap();
    f.orch.stop("a").await.unwrap();
    assert_eq!(
        f.orch.start("b").await.unwrap().status,
        NetworkStatus::Running
    );
    let usage = f.orch.admission_usage().await.unwrap();
    assert_eq!(usage.held.nodes, 2);
    assert_eq!(usage.held.memory_bytes, 2 * GIB);
    assert_eq!(usage.memory_budget, Some(3 * GIB));
}

#[tokio::test]
async fn a_start_past_the_measured_cpu_is_refused_and_the_usage_says_why() {
    let f = fixture_with(cfg()).await;
    // 2 cores; every node reads 10 s more CPU at each reading, taken moments apart: far more
    // than the host has.
    f.rt.set_cpu(2.0, std::time::Duration::from_secs(10));
    f.orch.create(req("busy", 2)).await.unwrap();
    f.orch.create(req("next", 1)).await.unwrap();
    // Not measured yet: admitted.
    f.orch.start("busy").await.unwrap();
    assert_eq!(f.orch.cpu_per_node(), None);
    f.orch.cpu_meter_round(std::time::Duration::ZERO).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    f.orch.cpu_meter_round(std::time::Duration::ZERO).await;
    let per_node = f.orch.cpu_per_node().expect("measured");
    assert!(per_node > 2.0, "{per_node}");
    let err = f.orch.start("next").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Exhausted, "{err}");
    let text = err.to_string();
    assert!(text.contains("node.cpu_budget 0.5"), "{text}");
    assert!(
        text.contains("the 2 node(s) of running networks use about"),
        "{text}"
    );
    let rec = f.store.get_network(&name("next")).await.unwrap().unwrap();
    assert_eq!(rec.desired, DesiredState::Stopped);
    assert_eq!(creates(&f.rt), 2);
    let usage = f.orch.admission_usage().await.unwrap();
    assert_eq!(usage.cpu_budget, Some(1.0));
    assert_eq!(usage.cpu_per_node, Some(per_node));
}

#[tokio::test]
async fn two_starts_racing_for_the_last_room_get_one_each_way() {
    let f = fixture_with(admitting(AdmissionConfig {
        host_memory: Some(3 * GIB),
        ..AdmissionConfig::default()
    }))
    .await;
    f.orch.create(req("x", 2)).await.unwrap();
    f.orch.create(req("y", 2)).await.unwrap();
    let (x, y) = tokio::join!(f.orch.start("x"), f.orch.start("y"));
    let refused: Vec<_> = [x, y].into_iter().filter_map(Result::err).collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].kind(), ErrorKind::Exhausted);
    assert_eq!(creates(&f.rt), 2);
}

#[tokio::test]
async fn a_running_network_may_not_grow_past_the_host_but_a_stopped_one_may_change() {
    let f = fixture_with(admitting(AdmissionConfig {
        host_memory: Some(4 * GIB),
        memory_overcommit: 1.5,
        max_nodes: None,
        ..AdmissionConfig::default()
    }))
    .await;
    f.orch.create(req("g", 3)).await.unwrap();
    f.orch.create(req("s", 2)).await.unwrap();
    f.orch.start("g").await.unwrap();
    // 6 GiB budget: 3 → 6 nodes of 1 GiB fits, 3 → 7 does not.
    let grow = |r| UpdateNetwork {
        replicas: Some(r),
        ..Default::default()
    };
    let err = f.orch.update("g", grow(7)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Exhausted, "{err}");
    assert!(err.to_string().contains("1.0 GiB short"), "{err}");
    assert_eq!(
        f.store
            .get_network(&name("g"))
            .await
            .unwrap()
            .unwrap()
            .replicas,
        3
    );
    let bigger = UpdateNetwork {
        memory_bytes: Some(3 * GIB),
        ..Default::default()
    };
    assert_eq!(
        f.orch.update("g", bigger).await.unwrap_err().kind(),
        ErrorKind::Exhausted
    );
    assert_eq!(f.orch.update("g", grow(6)).await.unwrap().replicas, 6);
    // A stopped network holds nothing: it may be changed, and is checked when it starts.
    assert_eq!(f.orch.update("s", grow(4)).await.unwrap().replicas, 4);
    assert_eq!(
        f.orch.start("s").await.unwrap_err().kind(),
        ErrorKind::Exhausted
    );
}

#[tokio::test]
async fn the_node_cap_and_the_port_range_refuse_up_front() {
    let f = fixture_with(OrchestratorConfig {
        ports: PortConfig {
            swarm: vec![PortRange {
                low: 21500,
                high: 21504,
            }],
        },
        ..admitting(AdmissionConfig {
            max_nodes: Some(4),
            ..AdmissionConfig::default()
        })
    })
    .await;
    // A network bigger than the cap could never start: refused at create, nothing stored.
    let err = f.orch.create(req("huge", 5)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Exhausted, "{err}");
    assert!(err.to_string().contains("node.max_nodes allows 4"), "{err}");
    assert!(f.store.get_network(&name("huge")).await.unwrap().is_none());
    assert_eq!(f.orch.subnet_usage().1, 0);
    f.orch.create(req("p", 3)).await.unwrap();
    f.orch.create(req("q", 2)).await.unwrap();
    f.orch.start("p").await.unwrap();
    let err = f.orch.start("q").await.unwrap_err();
    assert!(err.to_string().contains("1 too many"), "{err}");
    // With no cap, the 5-port range is what refuses: 3 taken, 3 wanted.
    let g = fixture_with(OrchestratorConfig {
        ports: PortConfig {
            swarm: vec![PortRange {
                low: 21500,
                high: 21504,
            }],
        },
        ..cfg()
    })
    .await;
    g.orch.create(req("p", 3)).await.unwrap();
    g.orch.create(req("q", 3)).await.unwrap();
    g.orch.start("p").await.unwrap();
    let err = g.orch.start("q").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Exhausted, "{err}");
    assert!(
        err.to_string()
            .contains("3 more swarm port(s) and 2 of ports.swarm are free"),
        "{err}"
    );
    assert_eq!(creates(&g.rt), 3);
}

#[tokio::test]
async fn replication_defaults_checks_and_follows_updates() {
    use crate::replication::Replication;
    let f = fixture().await;
    // Default: two copies, or one on a 1-node network.
    assert_eq!(
        f.orch.create(req("rep-one", 1)).await.unwrap().replication,
        Replication::Count(1)
    );
    assert_eq!(
        f.orch
            .create(req("rep-three", 3))
            .await
            .unwrap()
            .replication,
        Replication::Count(2)
    );
    // More copies than nodes: refused, nothing recorded.
    let err = f
        .orch
        .create(CreateNetwork {
            replication: Some(Replication::Count(4)),
            ..req("rep-bad", 3)
        })
        .await
        .unwrap_err();
    assert!(matches!(err, OrchestratorError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("at most 3"), "{err}");
    assert!(f
        .store
        .get_network(&name("rep-bad"))
        .await
        .unwrap()
        .is_none());
    // An update that asks too much changes nothing (not even its other fields).
    let err = f
        .orch
        .update(
            "rep-three",
            UpdateNetwork {
                replication: Some(Replication::Count(5)),
                cpu_millis: Some(250),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, OrchestratorError::Invalid(_)), "{err}");
    let rec = f
        .store
        .get_network(&name("rep-three"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.replication, Replication::Count(2));
    assert_ne!(rec.resources.cpu_millis, 250);
    // Replicas and replication in one update: checked against the new replicas.
    let v = f
        .orch
        .update(
            "rep-three",
            UpdateNetwork {
                replicas: Some(4),
                replication: Some(Replication::Count(4)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((v.replicas, v.replication), (4, Replication::Count(4)));
    // Scaling below the factor keeps it (the network is under-replicated, not invalid).
    let v = f
        .orch
        .update(
            "rep-three",
            UpdateNetwork {
                replicas: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((v.replicas, v.replication), (1, Replication::Count(4)));
    let v = f
        .orch
        .update(
            "rep-three",
            UpdateNetwork {
                replication: Some(Replication::All),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(v.replication, Replication::All);
    assert_eq!(v.replication.wanted(v.replicas), 1);
}
