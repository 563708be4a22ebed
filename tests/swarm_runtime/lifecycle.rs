//! A network's life on the swarm after its start: scaled 3 → 5 → 2 (spread kept, the nodes
//! that stay untouched, the ones that go gone from every host), resources updated (the
//! services' limits, each node on its host with its repo), stopped and started (no task left
//! running, then the same nodes on the same hosts with their data), removed (nothing left on
//! any host).
//!
//! Ports: swarm 29300-29319, gRPC 29340, delegator 29341, gate 29390.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use crate::common;
use crate::fixture::*;

/// `index → (host, peer id)` of a `network get` view.
fn placement(view: &Value) -> HashMap<u64, (String, String)> {
    view["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            (
                n["index"].as_u64().unwrap_or(0),
                (
                    n["host"].as_str().unwrap_or_default().to_owned(),
                    n["peer_id"].as_str().unwrap_or_default().to_owned(),
                ),
            )
        })
        .collect()
}

/// Waits until the network runs with `count` nodes; its view.
fn running_with(d: &SwarmDaemon, net: &str, count: usize) -> Value {
    let mut view = Value::Null;
    let ok = poll(Duration::from_secs(240), || {
        view = d.json(&["network", "get", net]);
        view["status"] == "running" && view["nodes"].as_array().map(Vec::len) == Some(count)
    });
    assert!(ok, "{net} does not run {count} nodes: {view}\n{}", d.logs());
    view
}

/// The node's own pin of `cid` is in its repo (not fetched from a peer: `pin/ls` reads only
/// the node's own pins).
fn holds(d: &SwarmDaemon, net: &str, view: &Value, index: u64, cid: &str) -> bool {
    let n = view["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["index"].as_u64() == Some(index))
        .cloned()
        .unwrap_or(Value::Null);
    let ep = d.node_api(net, &n);
    let (status, body) = block_on(common::rpc(
        &ep,
        &format!("pin/ls?arg={cid}&type=recursive"),
    ));
    status == 200 && String::from_utf8_lossy(&body).contains(cid)
}

/// The network's containers on every host, by name.
fn containers(net: &str, all: bool) -> Vec<String> {
    let mut out = Vec::new();
    for i in 1..=3 {
        let mut args = vec!["ps", "--format", "{{.Names}}"];
        if all {
            args.push("-a");
        }
        out.extend(
            on_host(i, &args)
                .lines()
                .filter(|l| l.starts_with(&format!("nexus-{net}-")))
                .map(str::to_owned),
        );
    }
    out
}

#[test]
fn scale_update_stop_start_and_remove_on_the_swarm() {
    let t0 = std::time::Instant::now();
    let step = |what: &str| eprintln!("{:>7.1} s  {what}", t0.elapsed().as_secs_f64());
    let d = SwarmDaemon::start(29300, 29390, "");
    let net = format!("sc{}", random_hex(3));
    d.create_and_start(&net, &[]);
    let first = running_with(&d, &net, 3);
    let at_start = placement(&first);

    step("running with 3 nodes");
    // Each node holds content of its own, added and pinned on it alone.
    let mut own = Vec::new();
    for n in first["nodes"].as_array().expect("nodes") {
        let data = format!("node {} keeps {}", n["index"], random_hex(8));
        let cid = block_on(common::add(&d.node_api(&net, n), data.as_bytes()));
        own.push((n["index"].as_u64().unwrap_or(0), cid));
    }

    // 3 → 5: the new nodes spread (every host used, none holds more than two), mesh with the
    // others, and the first three stay where they were.
    d.json(&["network", "update", &net, "--replicas", "5"]);
    let five = running_with(&d, &net, 5);
    let at_five = placement(&five);
    for (i, p) in &at_start {
        assert_eq!(at_five.get(i), Some(p), "node {i} moved or changed: {five}");
    }
    let mut per_host: HashMap<&str, usize> = HashMap::new();
    for (host, _) in at_five.values() {
        *per_host.entry(host.as_str()).or_default() += 1;
    }
    assert_eq!(per_host.len(), 3, "not on every host: {per_host:?}");
    assert!(per_host.values().all(|c| *c <= 2), "{per_host:?}");
    for n in five["nodes"].as_array().expect("nodes") {
        let ep = d.node_api(&net, n);
        let ok = block_on(common::eventually(Duration::from_secs(60), || async {
            common::peers(&ep).await.len() >= 4
        }));
        assert!(ok, "node {} is not meshed with the four others", n["index"]);
    }

    step("running with 5 nodes, meshed");
    // 5 → 2: nodes 2, 3, 4 leave every host; 0 and 1 are untouched with their data.
    let leaving: Vec<String> = (2..5u16)
        .map(|i| {
            let network = nexus::node::NetworkName::new(&net).expect("name");
            let node = nexus::node::NodeRef::new(network, i).expect("node");
            nexus::node::swarm::node_key(&d.instance, &node)
        })
        .collect();
    d.json(&["network", "update", &net, "--replicas", "2"]);
    let two = running_with(&d, &net, 2);
    let at_two = placement(&two);
    for i in [0, 1] {
        assert_eq!(at_two.get(&i), at_start.get(&i), "node {i}: {two}");
    }
    let filter = format!("label=io.nexus.instance={}", d.instance);
    let services: Vec<String> = manager(&[
        "service",
        "ls",
        "--filter",
        &filter,
        "--format",
        "{{.Name}}",
    ])
    .lines()
    .filter(|s| s.starts_with(&format!("nexus-{net}-")))
    .map(str::to_owned)
    .collect();
    assert_eq!(services.len(), 2, "{services:?}");
    let mut left = Vec::new();
    assert!(
        poll(Duration::from_secs(60), || {
            left = containers(&net, true);
            left.len() == 2
        }),
        "containers of removed nodes are left: {left:?}"
    );
    let dirs: Vec<String> = std::fs::read_dir(&d.host_dir)
        .expect("host dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for key in &leaving {
        assert!(
            !dirs.iter().any(|e| e.starts_with(key.as_str())),
            "a removed node's directory is left: {dirs:?}"
        );
    }
    for (i, cid) in &own[..2] {
        assert!(holds(&d, &net, &two, *i, cid), "node {i} lost its pin");
    }

    step("running with 2 nodes");
    // Resources: the services' limits change; each node stays on its host with its repo.
    d.json(&[
        "network", "update", &net, "--cpus", "0.75", "--memory", "320MiB",
    ]);
    let updated = running_with(&d, &net, 2);
    for i in 0..2 {
        let limits = manager(&[
            "service",
            "inspect",
            &format!("nexus-{net}-{i}"),
            "--format",
            "{{.Spec.TaskTemplate.Resources.Limits.NanoCPUs}} {{.Spec.TaskTemplate.Resources.Limits.MemoryBytes}}",
        ]);
        assert_eq!(limits.trim(), "750000000 335544320", "node {i}");
    }
    assert_eq!(placement(&updated), at_two, "{updated}");
    for (i, cid) in &own[..2] {
        assert!(
            holds(&d, &net, &updated, *i, cid),
            "node {i} lost its pin in the update"
        );
    }

    step("resources updated");
    // Stop: no task of the network runs on any host; start: the same nodes on the same hosts,
    // with their data.
    let out = d.cli(&["network", "stop", &net]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.wait_status(&net, "stopped", Duration::from_secs(60));
    let mut running = Vec::new();
    assert!(
        poll(Duration::from_secs(60), || {
            running = containers(&net, false);
            running.is_empty()
        }),
        "still running after stop: {running:?}"
    );
    let out = d.cli(&["network", "start", &net]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    step("stopped, starting");
    let again = running_with(&d, &net, 2);
    assert_eq!(placement(&again), at_two, "{again}");
    for (i, cid) in &own[..2] {
        assert!(
            holds(&d, &net, &again, *i, cid),
            "node {i} lost its pin over stop/start"
        );
    }

    step("started again");
    d.remove_and_check_nothing_left(&net);
    step("removed");
}
