//! The swarm runtime (`runtime.kind = "swarm"`) on the swarm lab the test command brings up
//! (scripts/swarm-lab: three dockerd hosts in network namespaces, a registry): a real daemon
//! process, run where a swarm's daemon runs (on the manager, host 1: each test enters its
//! network namespace first, so the daemon and the CLI it spawns are there too), the test
//! image's real kubo nodes as services on the hosts, reached only through each host's gate.
//!
//! Each test owns its instance, gate port, swarm ports and host directory (`fixture.rs`).
//! Ports: `spread` 29100-29190, `heavy_…` below 29200-29290, `lifecycle` 29300-29390.

#[path = "../common/mod.rs"]
mod common;
mod fixture;
mod lifecycle;
mod spread;

use std::time::Duration;

use serde_json::Value;

use fixture::*;

/// Issue 17: a host lost. The network reports `degraded` naming the host; after the grace
/// period the node is re-created on another host with its identity and an empty repo, and the
/// network runs again with one node per remaining host pair; content pinned before (replication
/// 2) stays readable through the delegator throughout and is held on two nodes again; when the
/// host returns, nothing of the node is duplicated. A heavy test: it stops a lab host, so it
/// runs alone.
#[test]
fn heavy_swarm_a_lost_host_degrades_then_its_node_moves_and_nothing_is_duplicated() {
    // A short grace, so the move comes within the test.
    let d = SwarmDaemon::start(29200, 29290, "host_lost_grace = \"5s\"");
    let net = format!("sl{}", random_hex(3));
    d.create_and_start(&net, &["--replication", "2"]);
    let view = d.json(&["network", "get", &net]);
    assert_eq!(view["status"], "running", "{view}");

    let token = d.token("alice");
    let data = format!("outlives a host {}", random_hex(8));
    let (status, body) =
        block_on(d.delegator(&net, "/api/v0/add?pin=true", &token, data.as_bytes()));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let cid = serde_json::from_slice::<Value>(&body).expect("add")["Hash"]
        .as_str()
        .expect("Hash")
        .to_owned();
    let pinned_on = |d: &SwarmDaemon| -> usize {
        let pins = d.json(&["pin", "ls", &net]);
        pins["pins"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["cid"].as_str() == Some(cid.as_str()))
            .flat_map(|p| p["allocations"].as_array().cloned().unwrap_or_default())
            .filter(|a| a["status"] == "pinned")
            .count()
    };
    assert!(
        poll(Duration::from_secs(60), || pinned_on(&d) == 2),
        "not pinned on two nodes"
    );

    // Host 3 is lost.
    let lost_ip = lab("HOST_3_IP");
    let moved: Vec<u64> = view["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["host_address"].as_str() == Some(lost_ip.as_str()))
        .map(|n| n["index"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(moved.len(), 1, "{view}");
    swarm_lab(&["kill-host", "3"]);
    let killed = std::time::Instant::now();
    let back = HostBack(3);
    let mut v = Value::Null;
    // Within 30 s of the kill (the swarm's heartbeats take about 15 s to call the host down).
    assert!(
        poll(Duration::from_secs(30), || {
            v = d.json(&["network", "get", &net]);
            v["status"] == "degraded"
                && v["status_reason"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("host down")
        }),
        "not degraded with the reason: {v}\n{}",
        d.logs()
    );
    eprintln!(
        "degraded {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    // Readable throughout, from the nodes that remain.
    let (status, body) =
        block_on(d.delegator(&net, &format!("/api/v0/cat?arg={cid}"), &token, b""));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body.as_ref(), data.as_bytes());

    // After the grace: the node runs again, on a host that is up, with the same identity.
    let old = view["nodes"][moved[0] as usize].clone();
    assert!(
        poll(Duration::from_secs(180), || {
            v = d.json(&["network", "get", &net]);
            v["status"] == "running"
        }),
        "the node was not moved: {v}\n{}",
        d.logs()
    );
    let now = v["nodes"][moved[0] as usize].clone();
    assert_eq!(now["peer_id"], old["peer_id"], "{v}");
    assert_ne!(now["host_address"], Value::from(lost_ip.clone()), "{v}");
    assert!(
        poll(Duration::from_secs(90), || pinned_on(&d) == 2),
        "not re-replicated"
    );
    let (status, body) =
        block_on(d.delegator(&net, &format!("/api/v0/cat?arg={cid}"), &token, b""));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    // The host returns: the node's old task there is not started again.
    drop(back);
    let service = format!("nexus-{net}-{}", moved[0]);
    std::thread::sleep(Duration::from_secs(10));
    let running: Vec<String> = manager(&[
        "service",
        "ps",
        &service,
        "--filter",
        "desired-state=running",
        "--format",
        "{{.Node}}",
    ])
    .lines()
    .map(str::to_owned)
    .collect();
    assert_eq!(running.len(), 1, "{running:?}");
    let on_host_3 = on_host(3, &["ps", "--format", "{{.Names}}"]);
    assert!(
        !on_host_3.contains(&format!("nexus-{net}-{}", moved[0])),
        "{on_host_3}"
    );
    let out = d.cli(&["network", "rm", &net, "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
