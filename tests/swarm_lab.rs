//! The swarm lab (`scripts/swarm-lab`) that the swarm runtime's tests stand on: a real Docker
//! Swarm of several dockerd hosts on this machine, images served by its registry. The test
//! command brings it up and exports its `NEXUS_LAB_*` settings (scripts/test.sh); a test that
//! needs it fails, not skips, when they are missing.

use std::process::Command;
use std::time::{Duration, Instant};

use bollard::models::{NodeState, NodeStatus};
use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;

/// A `NEXUS_LAB_*` setting of the lab the test command brought up.
fn lab(key: &str) -> String {
    std::env::var(format!("NEXUS_LAB_{key}")).unwrap_or_else(|_| {
        panic!("NEXUS_LAB_{key} is not set: run the suite with scripts/test.sh, which brings up the swarm lab")
    })
}

fn hosts() -> usize {
    lab("HOSTS").parse().expect("NEXUS_LAB_HOSTS is a number")
}

fn host(i: usize) -> Docker {
    Docker::connect_with_unix(
        &lab(&format!("HOST_{i}_SOCKET")),
        60,
        bollard::API_DEFAULT_VERSION,
    )
    .expect("connect to a lab host")
}

/// Each swarm node's hostname and state, as the manager (host 1) sees them.
async fn nodes() -> Vec<(String, Option<NodeState>, bool)> {
    host(1)
        .list_nodes(None)
        .await
        .expect("the manager lists the swarm's nodes")
        .into_iter()
        .map(|n| {
            let name = n.description.and_then(|d| d.hostname).unwrap_or_default();
            let state = n.status.and_then(|s: NodeStatus| s.state);
            let leader = n.manager_status.and_then(|m| m.leader).unwrap_or(false);
            (name, state, leader)
        })
        .collect()
}

async fn state_of(name: &str) -> Option<NodeState> {
    nodes()
        .await
        .into_iter()
        .find(|(n, _, _)| n == name)
        .and_then(|(_, s, _)| s)
}

fn swarm_lab(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/swarm-lab");
    let out = Command::new(script)
        .args(args)
        .output()
        .expect("run scripts/swarm-lab");
    assert!(
        out.status.success(),
        "swarm-lab {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn the_lab_is_a_swarm_whose_hosts_pull_from_its_registry() {
    let n = hosts();
    assert!(
        n >= 3,
        "the swarm runtime's tests need at least 3 hosts, the lab has {n}"
    );
    let seen = nodes().await;
    assert_eq!(seen.len(), n, "{seen:?}");
    assert!(
        seen.iter().all(|(_, s, _)| *s == Some(NodeState::READY)),
        "{seen:?}"
    );
    assert_eq!(seen.iter().filter(|(_, _, l)| *l).count(), 1, "{seen:?}");
    // Every host is its own engine with its own name, address and storage.
    let mut names = std::collections::BTreeSet::new();
    for i in 1..=n {
        let info = host(i).info().await.expect("docker info of a lab host");
        let name = info.name.clone().unwrap_or_default();
        assert!(
            name.ends_with(&format!("-h{i}")),
            "host {i} is named {name}"
        );
        assert_eq!(
            info.swarm.and_then(|s| s.node_addr).as_deref(),
            Some(lab(&format!("HOST_{i}_IP")).as_str())
        );
        names.insert(name);
    }
    assert_eq!(names.len(), n);
    // The test image is served by the lab's registry: every host pulls it as a real one would.
    let image = lab("IMAGE_1");
    assert!(image.starts_with(&lab("REGISTRY")), "{image}");
    for i in 1..=n {
        let opts = CreateImageOptionsBuilder::default()
            .from_image(&image)
            .build();
        let mut pull = host(i).create_image(Some(opts), None, None);
        while let Some(step) = pull.next().await {
            step.unwrap_or_else(|e| panic!("host {i} cannot pull {image}: {e}"));
        }
        host(i)
            .inspect_image(&image)
            .await
            .unwrap_or_else(|e| panic!("host {i} has no {image} after pulling it: {e}"));
    }
}

/// A lost host (every process of it killed) is seen `down` by the manager, and `ready` again
/// once it returns. It disturbs whatever else runs on the lab, so it runs alone (`heavy_`).
#[tokio::test]
async fn heavy_swarm_lab_a_lost_host_is_seen_down_and_returns() {
    let n = hosts();
    let name = nodes()
        .await
        .into_iter()
        .map(|(name, _, _)| name)
        .find(|name| name.ends_with(&format!("-h{n}")))
        .expect("the last host is in the swarm");
    swarm_lab(&["kill-host", &n.to_string()]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while state_of(&name).await != Some(NodeState::DOWN) {
        assert!(Instant::now() < deadline, "{name} was never seen down");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    swarm_lab(&["start-host", &n.to_string()]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while state_of(&name).await != Some(NodeState::READY) {
        assert!(Instant::now() < deadline, "{name} did not come back");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
