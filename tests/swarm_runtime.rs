//! The swarm runtime (`runtime.kind = "swarm"`) on the swarm lab the test command brings up
//! (scripts/swarm-lab: three dockerd hosts in network namespaces, a registry): a real daemon
//! process, run where a swarm's daemon runs (on the manager, host 1: this test process enters
//! its network namespace first, so the daemon and the CLI it spawns are there too), the test
//! image's real kubo nodes as services on the hosts, reached only through each host's gate.
//!
//! Each test owns its instance, gate port, swarm ports and host directory; its drop removes
//! every swarm object labelled with its instance and its host directory.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use nexus::gate::GateAccess;
use nexus::node::endpoint::{Endpoint, GateSocket, GateTarget};
use nexus::store::seal::{KeyFile, KeySource};

const KEY: &str = "swarm-test-key-0123456789abcdefghijklmnopqrstuvwxyz";

/// A `NEXUS_LAB_*` setting of the lab the test command brought up.
fn lab(key: &str) -> String {
    std::env::var(format!("NEXUS_LAB_{key}")).unwrap_or_else(|_| {
        panic!("NEXUS_LAB_{key} is not set: run the suite with scripts/test.sh, which brings up the swarm lab")
    })
}

/// The lab's image whose reference contains `name` (the test image, the gate image).
fn lab_image(name: &str) -> String {
    (1..10)
        .filter_map(|k| std::env::var(format!("NEXUS_LAB_IMAGE_{k}")).ok())
        .find(|r| r.contains(name))
        .unwrap_or_else(|| {
            panic!("the swarm lab serves no `{name}` image: scripts/test.sh pushes it")
        })
}

/// Moves this thread (and what it spawns from now on) into network namespace `ns`.
fn enter_netns(ns: &str) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/run/netns/{ns}")).expect("the lab host's namespace");
    // SAFETY: setns on a valid namespace fd; it changes only this thread's namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

fn manager(args: &[&str]) -> String {
    let out = Command::new("docker")
        .arg("-H")
        .arg(lab("HOST_1_SOCKET"))
        .args(args)
        .output()
        .expect("docker");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn on_host(i: usize, args: &[&str]) -> String {
    let out = Command::new("docker")
        .arg("-H")
        .arg(lab(&format!("HOST_{i}_SOCKET")))
        .args(args)
        .output()
        .expect("docker");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("rng");
    hex::encode(b)
}

/// A daemon on the lab's manager with `runtime.kind = "swarm"`.
struct SwarmDaemon {
    dir: PathBuf,
    host_dir: PathBuf,
    config: PathBuf,
    instance: String,
    child: Option<Child>,
    log: PathBuf,
    grpc: u16,
    delegator: u16,
}

impl SwarmDaemon {
    /// `ports`: the first of 20 swarm ports; `gate_port`: the gate's; `node_extra`: more keys
    /// of `[node]`.
    fn start(ports: u16, gate_port: u16, node_extra: &str) -> SwarmDaemon {
        enter_netns("nxlab-h1");
        let id = random_hex(3);
        let dir = std::env::temp_dir().join(format!("nexus-swarm-{id}"));
        std::fs::create_dir_all(&dir).expect("dir");
        // On a real swarm, a directory on every host; the lab's hosts share this machine's.
        let host_dir = PathBuf::from(lab("STATE")).join(format!("t-{id}"));
        std::fs::create_dir_all(&host_dir).expect("host dir");
        let status = Command::new("chown")
            .args(["1000:100"])
            .arg(&host_dir)
            .status()
            .expect("chown");
        assert!(status.success());
        let status = Command::new("chmod")
            .arg("0700")
            .arg(&host_dir)
            .status()
            .expect("chmod");
        assert!(status.success());
        let instance = format!("sw-{id}");
        let grpc = ports + 40;
        let delegator = ports + 41;
        let config = dir.join("nexus.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[daemon]
data_dir = "{data}"

[docker]
endpoint = "{endpoint}"
instance = "{instance}"

[runtime]
kind = "swarm"
gate_image = "{gate}"
gate_port = {gate_port}
host_dir = "{host_dir}"

[node]
image = "{image}"
cpus = "0.5"
memory = "256MiB"
disk = "512MiB"
ready_timeout = "120s"
{node_extra}

[ports]
swarm = "{ports}-{ports_end}"

[grpc]
listen = "127.0.0.1:{grpc}"
api_keys = ["{KEY}"]

[delegator]
listen = "127.0.0.1:{delegator}"

[metrics]
listen = ""

[log]
level = "info,nexus=debug"
"#,
                data = dir.join("data").display(),
                endpoint = lab("HOST_1_SOCKET"),
                gate = lab_image("nexus-gate"),
                image = lab_image("nexus-kubo-test"),
                host_dir = host_dir.display(),
                ports_end = ports + 19,
            ),
        )
        .expect("config");
        let status = Command::new("chmod")
            .arg("0600")
            .arg(&config)
            .status()
            .expect("chmod");
        assert!(status.success());
        let d = SwarmDaemon {
            log: dir.join("daemon.log"),
            dir,
            host_dir,
            config,
            instance,
            child: None,
            grpc,
            delegator,
        };
        SwarmDaemon::spawn(d)
    }

    /// Starts the daemon process and waits until it listens.
    fn spawn(mut d: SwarmDaemon) -> SwarmDaemon {
        let child = Command::new(env!("CARGO_BIN_EXE_nexus"))
            .arg("--config")
            .arg(&d.config)
            .arg("daemon")
            .env_remove("NEXUS_CONFIG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&d.log).expect("log"))
            .spawn()
            .expect("spawn daemon");
        d.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(90);
        while std::net::TcpStream::connect(("127.0.0.1", d.grpc)).is_err() {
            if let Some(status) = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("daemon exited at start ({status}):\n{}", d.logs());
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not listen:\n{}",
                d.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        d
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_nexus"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("NEXUS_CONFIG")
            .env("NEXUS_CLIENT_API_KEY", KEY)
            .env(
                "NEXUS_CLIENT_ADDRESS",
                format!("http://127.0.0.1:{}", self.grpc),
            )
            .output()
            .expect("run cli")
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.cli(&all);
        assert!(
            out.status.success(),
            "nexus {args:?} failed: {}\n--- daemon log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        serde_json::from_slice(&out.stdout).expect("one JSON document")
    }

    /// The gates' credentials, as the daemon keeps them (sealed under its seal key file).
    fn gate_access(&self) -> Arc<GateAccess> {
        let data = self.dir.join("data");
        let keys = KeySource::File(KeyFile::new(data.join("seal.key")))
            .load()
            .expect("seal key");
        Arc::new(GateAccess::load_or_create(&data.join("gate.sealed"), &keys).expect("gate access"))
    }

    /// A POST through the delegator (host form `<net>.api.localhost`), with `body` as a multipart file when not
    /// empty.
    async fn delegator(
        &self,
        net: &str,
        path_and_query: &str,
        token: &str,
        body: &[u8],
    ) -> (u16, bytes::Bytes) {
        let mut req = hyper::Request::builder()
            .method(hyper::Method::POST)
            .uri(format!(
                "http://127.0.0.1:{}{path_and_query}",
                self.delegator
            ))
            .header("host", format!("{net}.api.localhost:{}", self.delegator))
            .header("authorization", format!("Bearer {token}"));
        let payload = if body.is_empty() {
            Vec::new()
        } else {
            let (content_type, payload) = common::multipart_file(body);
            req = req.header("content-type", content_type);
            payload
        };
        let req = req
            .body(http_body_util::Full::new(bytes::Bytes::from(payload)))
            .expect("request");
        common::send(req).await
    }

    /// Everything of this instance's on the swarm's manager: services, secrets, configs,
    /// networks.
    fn swarm_objects(&self) -> Vec<String> {
        let filter = format!("label=io.nexus.instance={}", self.instance);
        let mut out = Vec::new();
        for kind in ["service", "secret", "config", "network"] {
            for name in manager(&[kind, "ls", "--filter", &filter, "--format", "{{.Name}}"]).lines()
            {
                if !name.trim().is_empty() {
                    out.push(format!("{kind} {name}"));
                }
            }
        }
        out
    }
}

impl Drop for SwarmDaemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let filter = format!("label=io.nexus.instance={}", self.instance);
        for kind in ["service", "secret", "config", "network"] {
            let ids = manager(&[kind, "ls", "-q", "--filter", &filter]);
            for id in ids.split_whitespace() {
                // Secrets, configs and networks free up once the services' tasks are gone.
                for _ in 0..40 {
                    let ok = Command::new("docker")
                        .arg("-H")
                        .arg(lab("HOST_1_SOCKET"))
                        .args([kind, "rm", id])
                        .output()
                        .is_ok_and(|o| o.status.success());
                    if ok {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.host_dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn poll(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

#[test]
fn a_network_spreads_over_three_hosts_meshes_and_serves_content_from_each() {
    let d = SwarmDaemon::start(29100, 29190, "");
    let net = format!("sw{}", random_hex(3));
    let created = d.json(&[
        "network",
        "create",
        &net,
        "--replicas",
        "3",
        "--user",
        "alice",
    ]);
    assert_eq!(created["name"], Value::from(net.clone()), "{created}");
    let started = d.cli(&["network", "start", &net]);
    assert!(
        started.status.success(),
        "start: {}\n{}",
        String::from_utf8_lossy(&started.stderr),
        d.logs()
    );
    let mut view = Value::Null;
    assert!(
        poll(Duration::from_secs(240), || {
            view = d.json(&["network", "get", &net]);
            view["status"] == "running"
        }),
        "the network did not run: {view}\n{}",
        d.logs()
    );

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
    let access = d.gate_access();
    let _ = nexus::node::endpoint::install_gate_access(access);
    let api = |n: &Value| {
        let host_ip = n["host_address"]
            .as_str()
            .unwrap_or_default()
            .parse()
            .expect("ip");
        let index = n["index"].as_u64().unwrap_or(0) as u16;
        let network = nexus::node::NetworkName::new(&net).expect("name");
        let node = nexus::node::NodeRef::new(network, index).expect("node");
        Endpoint::Gate(GateTarget {
            gate: std::net::SocketAddr::new(host_ip, 29190),
            dir: format!("{}-run", nexus::node::swarm::node_key(&d.instance, &node)),
            socket: GateSocket::Api,
        })
    };
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
    let token = d.cli(&["token", "issue", "--user", "alice", "--ttl", "10m"]);
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
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

    // Removed: nothing of the network is left on any host.
    let out = d.cli(&["network", "rm", &net, "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The swarm forgets a removed overlay once every host has let go of it.
    let mut left = Vec::new();
    let gone = poll(Duration::from_secs(60), || {
        left = d.swarm_objects();
        left.iter()
            .all(|o| o.contains("nexus-gate") || o.contains("nx-gate"))
    });
    assert!(gone, "left on the swarm: {left:?}\n{}", d.logs());
    // Each host removes the containers of a removed service on its own, soon after.
    for i in 1..=3 {
        let mut containers = String::new();
        let gone = poll(Duration::from_secs(60), || {
            containers = on_host(i, &["ps", "-a", "--format", "{{.Names}}"]);
            !containers.contains(&format!("nexus-{net}-"))
        });
        assert!(
            gone,
            "host {i} keeps a container of the network: {containers}"
        );
    }
    let dirs: Vec<String> = std::fs::read_dir(&d.host_dir)
        .expect("host dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        dirs.is_empty(),
        "node directories left on the hosts: {dirs:?}"
    );
}

fn swarm_lab(args: &[&str]) {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/swarm-lab"))
        .args(args)
        .output()
        .expect("run scripts/swarm-lab");
    assert!(
        out.status.success(),
        "swarm-lab {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Brings a lost lab host back however the test ends.
struct HostBack(usize);

impl Drop for HostBack {
    fn drop(&mut self) {
        swarm_lab(&["start-host", &self.0.to_string()]);
    }
}

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
    d.json(&[
        "network",
        "create",
        &net,
        "--replicas",
        "3",
        "--user",
        "alice",
        "--replication",
        "2",
    ]);
    let out = d.cli(&["network", "start", &net]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.logs()
    );
    let view = d.json(&["network", "get", &net]);
    assert_eq!(view["status"], "running", "{view}");

    let token = d.cli(&["token", "issue", "--user", "alice", "--ttl", "10m"]);
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
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
    let back = HostBack(3);
    let mut v = Value::Null;
    assert!(
        poll(Duration::from_secs(90), || {
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
