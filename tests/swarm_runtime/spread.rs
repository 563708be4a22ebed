//! A network on the lab's three hosts, from start to removal: one node per host, meshed,
//! content across hosts through the gates and through the delegator; CPU, memory and uptime
//! from each node's own kubo; an outside kubo given the
//! join kit joins all three; an unprivileged container on each host reaches no node's RPC API
//! or gateway; the daemon killed and started again adopts every service without restarting a
//! task; removal leaves nothing on any host.
//!
//! Ports: swarm 29100-29119, gRPC 29140, delegator 29141, gate 29190.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common;
use crate::fixture::*;

#[test]
fn a_network_spreads_over_three_hosts_meshes_and_serves_content_from_each() {
    let d = SwarmDaemon::start(29100, 29190, "");
    let net = format!("sw{}", random_hex(3));
    let created = d.create_and_start(&net, &[]);
    assert_eq!(created["name"], Value::from(net.clone()), "{created}");
    let view = d.wait_status(&net, "running", Duration::from_secs(240));

    // One node per host, each dialled on its own host's address.
    let nodes = view["nodes"].as_array().expect("nodes").clone();
    assert_eq!(nodes.len(), 3, "{view}");
    let mut hosts: Vec<String> = nodes
        .iter()
        .map(|n| n["host"].as_str().unwrap_or_default().to_owned())
        .collect();
    hosts.sort();
    hosts.dedup();
    assert_eq!(hosts.len(), 3, "nodes share a host: {view}");
    let lab_ips: Vec<String> = (1..=3).map(|i| lab(&format!("HOST_{i}_IP"))).collect();
    for n in &nodes {
        let addr = n["host_address"].as_str().unwrap_or_default();
        assert!(lab_ips.iter().any(|ip| ip == addr), "{n}");
        assert_eq!(n["host_up"], Value::Bool(true), "{n}");
    }
    let kit = d.json(&["network", "join-kit", &net]);
    let bootstrap: Vec<String> = kit["bootstrap"]
        .as_array()
        .expect("bootstrap")
        .iter()
        .map(|b| b.as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(bootstrap.len(), 3, "{kit}");
    for ip in &lab_ips {
        assert!(
            bootstrap
                .iter()
                .any(|b| b.starts_with(&format!("/ip4/{ip}/tcp/"))),
            "{bootstrap:?}"
        );
    }

    // Through each host's gate, with the daemon's credentials: meshed, and content added on
    // one node is read on the others.
    let api = |n: &Value| d.node_api(&net, n);
    block_on(async {
        for n in &nodes {
            let ep = api(n);
            let ok = common::eventually(Duration::from_secs(60), || async {
                common::peers(&ep).await.len() >= 2
            })
            .await;
            assert!(
                ok,
                "node {} is not meshed: {:?}",
                n["index"],
                common::peers(&ep).await
            );
        }
        let data = format!("across hosts {}", random_hex(8));
        let cid = common::add(&api(&nodes[0]), data.as_bytes()).await;
        for n in &nodes[1..] {
            let (status, body) = common::rpc(&api(n), &format!("cat?arg={cid}")).await;
            assert_eq!(
                status,
                200,
                "node {}: {}",
                n["index"],
                String::from_utf8_lossy(&body)
            );
            assert_eq!(body.as_ref(), data.as_bytes());
        }
    });

    // Through the delegator (the only way in for a customer), on the daemon's host: content
    // added there is read from every node by the delegator's fail-over order.
    let token = d.token("alice");
    let data = format!("through the delegator {}", random_hex(8));
    let (status, body) =
        block_on(d.delegator(&net, "/api/v0/add?pin=true", &token, data.as_bytes()));
    assert_eq!(
        status,
        200,
        "{}\n{}",
        String::from_utf8_lossy(&body),
        d.logs()
    );
    let added: Value = serde_json::from_slice(&body).expect("add answer");
    let cid = added["Hash"].as_str().expect("Hash").to_owned();
    for _ in 0..6 {
        let (status, body) =
            block_on(d.delegator(&net, &format!("/api/v0/cat?arg={cid}"), &token, b""));
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(body.as_ref(), data.as_bytes());
    }

    // Stats on a swarm come from each node's own kubo (its RPC API and its metrics page):
    // resident memory within the limit, uptime, peers and repo size; CPU as the rate between
    // two samples (work in between makes it move); network counters are not reported there.
    let before = d.json(&["network", "stats", &net]);
    let stats_before = before["nodes"].as_array().expect("stats").clone();
    assert_eq!(stats_before.len(), 3, "{before}");
    for st in &stats_before {
        let memory = st["memory_bytes"].as_u64().unwrap_or(0);
        assert!(
            memory > 8 << 20 && memory < 256 << 20,
            "resident memory: {st}"
        );
        assert_eq!(st["memory_limit_bytes"], 256u64 << 20, "{st}");
        assert!(st["cpu_percent"].as_f64().is_some_and(|c| c >= 0.0), "{st}");
        let uptime = st["uptime_ms"].as_u64().unwrap_or(0);
        assert!(uptime > 0 && uptime < 600_000, "uptime: {st}");
        assert_eq!(st["net_rx_bytes"], 0, "not reported on a swarm: {st}");
        assert_eq!(st["net_tx_bytes"], 0, "not reported on a swarm: {st}");
        assert!(st["disk_used_bytes"].as_u64().unwrap_or(0) > 0, "{st}");
        assert_eq!(st["peer_count"], 2, "{st}");
    }
    let load = random_hex(2 << 20);
    let (status, body) =
        block_on(d.delegator(&net, "/api/v0/add?pin=true", &token, load.as_bytes()));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let after = d.json(&["network", "stats", &net]);
    let stats_after = after["nodes"].as_array().expect("stats").clone();
    let cpu: f64 = stats_after
        .iter()
        .filter_map(|st| st["cpu_percent"].as_f64())
        .sum();
    assert!(cpu > 0.0, "no CPU measured across adding 4 MiB: {after}");
    for (a, b) in stats_before.iter().zip(&stats_after) {
        assert!(
            b["uptime_ms"].as_u64() >= a["uptime_ms"].as_u64(),
            "the same processes, older:\n{a}\n{b}"
        );
    }

    // An outside kubo on host 2, given only the join kit, joins all three nodes and reads the
    // network's content.
    let peer_ids: Vec<String> = nodes
        .iter()
        .map(|n| n["peer_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let outsider = Outsider::join(2, kit["swarm_key"].as_str().expect("swarm key"), &bootstrap);
    let mut seen = Vec::new();
    assert!(
        poll(Duration::from_secs(90), || {
            seen = outsider.peers();
            peer_ids.iter().all(|p| seen.contains(p))
        }),
        "the outside peer did not join all three nodes: {seen:?} (nodes {peer_ids:?})\n{}",
        outsider.logs()
    );
    // The first read waits for bitswap to find the block on the nodes: on a loaded host that
    // can take until its next broadcast of wants (a minute in this kubo core), so one read may
    // wait 70 s and the whole check up to four minutes.
    let mut read = String::new();
    assert!(
        poll(Duration::from_secs(240), || {
            // Dialled again from the kit before each try: a connection dropped since the join
            // would leave the request waiting on peers it no longer asks.
            outsider.connect(&bootstrap);
            read = outsider.cat(&cid);
            read == data
        }),
        "the outside peer did not read the network's content: {read:?}\n{}",
        outsider.logs()
    );
    drop(outsider);

    // Nothing but the delegator reaches a node: from an unprivileged container on each host,
    // no address and port of the lab answers a node's RPC API or gateway.
    probe_from_every_host(&d, &net, &nodes);

    // The daemon dies and comes back: it adopts the services as they are (no task restarted,
    // no service updated) and serves as before.
    let tasks = d.running_tasks();
    assert_eq!(
        tasks.iter().filter(|t| t.contains(&net)).count(),
        3,
        "{tasks:?}"
    );
    let versions = service_versions(&d, &net);
    let d = d.restart();
    d.wait_status(&net, "running", Duration::from_secs(120));
    // A pass after the restart has had time to act (recovery runs one per network at start).
    std::thread::sleep(Duration::from_secs(8));
    let view = d.wait_status(&net, "running", Duration::from_secs(30));
    assert_eq!(
        d.running_tasks(),
        tasks,
        "a task was restarted or moved by the daemon's restart\n{}",
        d.logs()
    );
    assert_eq!(
        service_versions(&d, &net),
        versions,
        "a service was updated"
    );
    for (n, id) in view["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .zip(&peer_ids)
    {
        assert_eq!(n["peer_id"].as_str(), Some(id.as_str()), "{view}");
    }
    let token = d.token("alice");
    let (status, body) =
        block_on(d.delegator(&net, &format!("/api/v0/cat?arg={cid}"), &token, b""));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body.as_ref(), data.as_bytes());

    d.remove_and_check_nothing_left(&net);
}

/// `name version` of the network's services: a service update bumps its version.
fn service_versions(d: &SwarmDaemon, net: &str) -> Vec<String> {
    let filter = format!("label=io.nexus.instance={}", d.instance);
    let mut out: Vec<String> = manager(&["service", "ls", "-q", "--filter", &filter])
        .split_whitespace()
        .map(|id| {
            manager(&[
                "service",
                "inspect",
                id,
                "--format",
                "{{.Spec.Name}} {{.Version.Index}}",
            ])
        })
        .map(|l| l.trim().to_owned())
        .filter(|l| l.contains(net))
        .collect();
    out.sort();
    out
}

/// A kubo outside the network, as a customer would run one: the stock image on host `host`'s
/// own Docker (default bridge, not the network's overlay), configured by the join kit alone
/// (the swarm key, the bootstrap list, and kubo's private-network rules).
struct Outsider {
    host: usize,
    name: String,
    dir: PathBuf,
}

impl Outsider {
    fn join(host: usize, swarm_key: &str, bootstrap: &[String]) -> Outsider {
        let name = format!("nxout-{}", random_hex(3));
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).expect("init dir");
        let script = format!(
            "#!/bin/sh\nset -e\n\
             ipfs config --json AutoConf.Enabled false\n\
             ipfs config --json AutoTLS.Enabled false\n\
             ipfs config --json Addresses.Swarm '[\"/ip4/0.0.0.0/tcp/4001\"]'\n\
             ipfs config --json Swarm.Transports.Network.QUIC false\n\
             ipfs config --json Swarm.Transports.Network.WebTransport false\n\
             ipfs config --json Swarm.Transports.Network.WebRTCDirect false\n\
             ipfs config --json Discovery.MDNS.Enabled false\n\
             ipfs config --json Bootstrap '{}'\n",
            serde_json::to_string(bootstrap).expect("json")
        );
        let file = dir.join("10-join.sh");
        std::fs::write(&file, script).expect("script");
        let status = Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&dir)
            .status()
            .expect("chmod");
        assert!(status.success());
        let status = Command::new("chmod")
            .arg("0755")
            .arg(&file)
            .status()
            .expect("chmod");
        assert!(status.success());
        let o = Outsider { host, name, dir };
        let out = Command::new("docker")
            .arg("-H")
            .arg(lab(&format!("HOST_{host}_SOCKET")))
            .args(["run", "-d", "--name", &o.name])
            .arg("-e")
            .arg(format!("IPFS_SWARM_KEY={swarm_key}"))
            .args(["-e", "LIBP2P_FORCE_PNET=1", "-v"])
            .arg(format!("{}:/container-init.d:ro", o.dir.display()))
            .arg(lab_image("nexus-kubo-test"))
            .output()
            .expect("docker run");
        assert!(
            out.status.success(),
            "the outside kubo did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        o
    }

    /// POSTs to the outsider's own RPC API from inside its container (HTTP/1.0 over nc).
    fn rpc(&self, path: &str) -> String {
        self.rpc_within(path, 30)
    }

    /// The body of one RPC call, or empty if there is none within `secs` of silence.
    fn rpc_within(&self, path: &str, secs: u32) -> String {
        let req = format!("POST /api/v0/{path} HTTP/1.0\r\nContent-Length: 0\r\n\r\n");
        let out = Command::new("docker")
            .arg("-H")
            .arg(lab(&format!("HOST_{}_SOCKET", self.host)))
            .args(["exec", &self.name, "sh", "-c"])
            .arg(format!(
                "printf '{}' | nc -w {secs} 127.0.0.1 5001",
                req.replace('\r', "\\r").replace('\n', "\\n")
            ))
            .output()
            .expect("docker exec");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default()
    }

    fn peers(&self) -> Vec<String> {
        let v: Value = serde_json::from_str(&self.rpc("swarm/peers")).unwrap_or(Value::Null);
        v["Peers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["Peer"].as_str().map(str::to_owned))
            .collect()
    }

    /// Dials each address (`swarm/connect`; an existing connection is kept).
    fn connect(&self, addrs: &[String]) {
        for a in addrs {
            self.rpc(&format!("swarm/connect?arg={a}"));
        }
    }

    fn cat(&self, cid: &str) -> String {
        self.rpc_within(&format!("cat?arg={cid}"), 70)
    }

    fn logs(&self) -> String {
        let out = Command::new("docker")
            .arg("-H")
            .arg(lab(&format!("HOST_{}_SOCKET", self.host)))
            .args(["logs", &self.name])
            .output()
            .expect("docker logs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Outsider {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .arg("-H")
            .arg(lab(&format!("HOST_{}_SOCKET", self.host)))
            .args(["rm", "-f", "-v", &self.name])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// From a container on each lab host (the test image's busybox, user `nobody`, no
/// capabilities, the host's default bridge), sends an RPC request to every address and port a
/// node could be reached on: each host's address at every port the network's nodes publish,
/// the gate's port, kubo's default API and gateway ports, and every node's address on the
/// network's overlay. No answer may be HTTP. The registry in the lab's hub answers HTTP to the
/// same probe, so the probe would see one.
fn probe_from_every_host(d: &SwarmDaemon, net: &str, nodes: &[Value]) {
    let mut targets = Vec::new();
    let swarm_ports: Vec<String> = nodes
        .iter()
        .filter_map(|n| n["swarm_port"].as_u64().map(|p| p.to_string()))
        .collect();
    assert_eq!(swarm_ports.len(), nodes.len(), "{nodes:?}");
    for i in 1..=3 {
        let ip = lab(&format!("HOST_{i}_IP"));
        for port in swarm_ports.iter().cloned().chain([
            d.gate_port.to_string(),
            "5001".into(),
            "8080".into(),
        ]) {
            targets.push(format!("{ip}:{port}"));
        }
    }
    // Each node's address on the overlay, as the host running it reports it.
    for i in 1..=3 {
        for line in on_host(
            i,
            &[
                "ps",
                "--filter",
                &format!("name=nexus-{net}-"),
                "--format",
                "{{.ID}}",
            ],
        )
        .lines()
        {
            let ips = on_host(
                i,
                &[
                    "inspect",
                    line.trim(),
                    "--format",
                    "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                ],
            );
            for ip in ips.split_whitespace() {
                for port in ["5001", "8080", "4001"] {
                    targets.push(format!("{ip}:{port}"));
                }
            }
        }
    }
    assert!(
        targets.len() >= 3 * 6 + 3 * 3,
        "too few targets (the overlay addresses?): {targets:?}"
    );
    let control = lab("REGISTRY");
    let script = format!(
        "for t in {control} {}; do \
           r=$(printf 'POST /api/v0/id HTTP/1.0\\r\\nHost: x\\r\\nContent-Length: 0\\r\\n\\r\\n' \
               | nc -w 2 ${{t%:*}} ${{t#*:}} 2>/dev/null | head -c 12 | tr -dc 'A-Za-z0-9/. '); \
           echo \"$t [$r]\"; \
         done",
        targets.join(" ")
    );
    let probes: Vec<_> = (1..=3)
        .map(|i| {
            Command::new("docker")
                .arg("-H")
                .arg(lab(&format!("HOST_{i}_SOCKET")))
                .args([
                    "run",
                    "--rm",
                    "--user",
                    "65534:65534",
                    "--cap-drop",
                    "ALL",
                    "--security-opt",
                    "no-new-privileges",
                    "--entrypoint",
                    "/bin/sh",
                ])
                .arg(lab_image("nexus-kubo-test"))
                .args(["-c", &script])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("probe")
        })
        .collect();
    for (i, p) in probes.into_iter().enumerate() {
        let out = p.wait_with_output().expect("probe output");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "probe on host {}: {}",
            i + 1,
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), targets.len() + 1, "host {}: {text}", i + 1);
        assert!(
            lines[0].contains("[HTTP/"),
            "host {}: the probe does not see the registry's HTTP answer, so it proves nothing: {text}",
            i + 1
        );
        for l in &lines[1..] {
            assert!(
                !l.contains("HTTP"),
                "host {}: a node answered HTTP without the delegator: {l}\n{text}",
                i + 1
            );
        }
    }
}
