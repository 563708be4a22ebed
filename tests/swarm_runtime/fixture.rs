//! The swarm lab's settings, a daemon with `runtime.kind = "swarm"` run on the lab's manager,
//! and what the tests ask of the lab's hosts. Owns only what each test made: its drop removes
//! every swarm object labelled with its instance and its host directory.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common;
use nexus::gate::GateAccess;
use nexus::node::endpoint::{Endpoint, GateSocket, GateTarget};
use nexus::store::seal::{KeyFile, KeySource};

/// The daemons' lease of their instance: short, so that a restart after a kill waits little.
const LEASE_TTL: Duration = Duration::from_secs(10);
pub const KEY: &str = "swarm-test-key-0123456789abcdefghijklmnopqrstuvwxyz";

/// A `NEXUS_LAB_*` setting of the lab the test command brought up.
pub fn lab(key: &str) -> String {
    std::env::var(format!("NEXUS_LAB_{key}")).unwrap_or_else(|_| {
        panic!("NEXUS_LAB_{key} is not set: run the suite with scripts/test.sh, which brings up the swarm lab")
    })
}

/// The lab's image whose reference contains `name` (the test image, the gate image).
pub fn lab_image(name: &str) -> String {
    (1..10)
        .filter_map(|k| std::env::var(format!("NEXUS_LAB_IMAGE_{k}")).ok())
        .find(|r| r.contains(name))
        .unwrap_or_else(|| {
            panic!("the swarm lab serves no `{name}` image: scripts/test.sh pushes it")
        })
}

/// Moves this thread (and what it spawns from now on) into network namespace `ns`.
pub fn enter_netns(ns: &str) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/run/netns/{ns}")).expect("the lab host's namespace");
    // SAFETY: setns on a valid namespace fd; it changes only this thread's namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

pub fn manager(args: &[&str]) -> String {
    let out = Command::new("docker")
        .arg("-H")
        .arg(lab("HOST_1_SOCKET"))
        .args(args)
        .output()
        .expect("docker");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn on_host(i: usize, args: &[&str]) -> String {
    let out = Command::new("docker")
        .arg("-H")
        .arg(lab(&format!("HOST_{i}_SOCKET")))
        .args(args)
        .output()
        .expect("docker");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("rng");
    hex::encode(b)
}

/// A daemon on the lab's manager with `runtime.kind = "swarm"`.
pub struct SwarmDaemon {
    pub dir: PathBuf,
    pub host_dir: PathBuf,
    config: PathBuf,
    pub instance: String,
    child: Option<Child>,
    log: PathBuf,
    grpc: u16,
    delegator: u16,
    pub gate_port: u16,
}

impl SwarmDaemon {
    /// `ports`: the first of 20 swarm ports; `gate_port`: the gate's; `node_extra`: more keys
    /// of `[node]`.
    pub fn start(ports: u16, gate_port: u16, node_extra: &str) -> SwarmDaemon {
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
subnet_pool = "10.{pool_octet}.0.0/20"

[store]
lease_ttl = "{lease_ttl}s"

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
                lease_ttl = LEASE_TTL.as_secs(),
                // Overlays of daemons sharing the swarm must not overlap: a pool per test,
                // from its port block (29100 → 10.225.0.0/20, 29200 → 10.226…, …).
                pool_octet = 225 + (ports - 29100) / 100,
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
            gate_port,
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

    /// Kills the daemon (SIGKILL: no clean stop, as a crash) and starts it again on the same
    /// configuration and data directory; its log goes on in the same file.
    pub fn restart(mut self) -> SwarmDaemon {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let before = self.logs();
        std::fs::write(self.dir.join("daemon-before-restart.log"), before).expect("keep log");
        // The killed daemon's lease of the instance runs out before another may act for it.
        std::thread::sleep(LEASE_TTL + Duration::from_secs(1));
        SwarmDaemon::spawn(self)
    }

    /// Creates `net` with 3 nodes for the user `alice` (and `extra` flags), starts it and
    /// checks the start succeeded; returns what `network create` answered.
    pub fn create_and_start(&self, net: &str, extra: &[&str]) -> Value {
        let mut args = vec![
            "network",
            "create",
            net,
            "--replicas",
            "3",
            "--user",
            "alice",
        ];
        args.extend_from_slice(extra);
        let created = self.json(&args);
        let started = self.cli(&["network", "start", net]);
        assert!(
            started.status.success(),
            "start: {}\n{}",
            String::from_utf8_lossy(&started.stderr),
            self.logs()
        );
        created
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn cli(&self, args: &[&str]) -> Output {
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

    pub fn json(&self, args: &[&str]) -> Value {
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
    pub fn gate_access(&self) -> Arc<GateAccess> {
        let data = self.dir.join("data");
        let keys = KeySource::File(KeyFile::new(data.join("seal.key")))
            .load()
            .expect("seal key");
        Arc::new(GateAccess::load_or_create(&data.join("gate.sealed"), &keys).expect("gate access"))
    }

    /// A POST through the delegator (host form `<net>.api.localhost`), with `body` as a multipart file when not
    /// empty.
    pub async fn delegator(
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

    /// A tenant token for `user`.
    pub fn token(&self, user: &str) -> String {
        let out = self.cli(&["token", "issue", "--user", user, "--ttl", "10m"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Polls `network get` until its status is `status`; the last view.
    pub fn wait_status(&self, net: &str, status: &str, limit: Duration) -> Value {
        let mut view = Value::Null;
        let ok = poll(limit, || {
            view = self.json(&["network", "get", net]);
            view["status"] == status
        });
        assert!(ok, "{net} is not {status}: {view}\n{}", self.logs());
        view
    }

    /// The RPC API of node `n` (an entry of `network get`'s `nodes`) through its host's gate,
    /// with the daemon's credentials (installed in this process once).
    pub fn node_api(&self, net: &str, n: &Value) -> Endpoint {
        let _ = nexus::node::endpoint::install_gate_access(self.gate_access());
        let host_ip = n["host_address"]
            .as_str()
            .unwrap_or_default()
            .parse()
            .expect("host address");
        let index = n["index"].as_u64().unwrap_or(0) as u16;
        let network = nexus::node::NetworkName::new(net).expect("name");
        let node = nexus::node::NodeRef::new(network, index).expect("node");
        Endpoint::Gate(GateTarget {
            gate: std::net::SocketAddr::new(host_ip, self.gate_port),
            dir: format!(
                "{}-run",
                nexus::node::swarm::node_key(&self.instance, &node)
            ),
            socket: GateSocket::Api,
        })
    }

    /// Every task of this instance's services that is meant to run, as `service task-id
    /// host` lines, sorted: what a restart of a task would change.
    pub fn running_tasks(&self) -> Vec<String> {
        let filter = format!("label=io.nexus.instance={}", self.instance);
        let services = manager(&["service", "ls", "-q", "--filter", &filter]);
        let mut out = Vec::new();
        for s in services.split_whitespace() {
            for line in manager(&[
                "service",
                "ps",
                s,
                "--filter",
                "desired-state=running",
                "--format",
                "{{.Name}} {{.ID}} {{.Node}} {{.CurrentState}}",
            ])
            .lines()
            {
                // The state's age ("Running 2 minutes ago") changes; the rest must not.
                let kept: Vec<&str> = line.split_whitespace().take(4).collect();
                if !kept.is_empty() {
                    out.push(kept.join(" "));
                }
            }
        }
        out.sort();
        out
    }

    /// Removes `net` and checks nothing of it is left: no service, secret, config or network
    /// on the swarm (the gate's are the instance's, not the network's), no container or volume
    /// on any host, no node directory.
    pub fn remove_and_check_nothing_left(&self, net: &str) {
        let out = self.cli(&["network", "rm", net, "--force"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The swarm forgets a removed overlay once every host has let go of it.
        let mut left = Vec::new();
        let gone = poll(Duration::from_secs(60), || {
            left = self.swarm_objects();
            left.iter()
                .all(|o| o.contains("nexus-gate") || o.contains("nx-gate"))
        });
        assert!(gone, "left on the swarm: {left:?}\n{}", self.logs());
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
            let volumes = on_host(i, &["volume", "ls", "--format", "{{.Name}}"]);
            assert!(
                !volumes.contains(&format!("nexus-{net}-")),
                "host {i} keeps a volume of the network: {volumes}"
            );
        }
        let dirs: Vec<String> = std::fs::read_dir(&self.host_dir)
            .expect("host dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            dirs.is_empty(),
            "node directories left on the hosts: {dirs:?}"
        );
    }

    /// Everything of this instance's on the swarm's manager: services, secrets, configs,
    /// networks.
    pub fn swarm_objects(&self) -> Vec<String> {
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

pub fn poll(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
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

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

pub fn swarm_lab(args: &[&str]) {
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
pub struct HostBack(pub usize);

impl Drop for HostBack {
    fn drop(&mut self) {
        swarm_lab(&["start-host", &self.0.to_string()]);
    }
}
