//! End-to-end: the real `nexus daemon` process on free ports, real Docker, the test image, the
//! real SQLite store, driven through the `nexus` CLI exactly as an operator would.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{docker, image};
use serde_json::Value;

const KEY_A: &str = "test-key-a-0123456789abcdefghijklmnopqrstuvwxyz";
const KEY_B: &str = "test-key-b-0123456789abcdefghijklmnopqrstuvwxyz";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_nexus")
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("rng");
    hex::encode(b)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A daemon process with its own directory, configuration, ports and Docker owner scope.
struct Daemon {
    dir: PathBuf,
    config: PathBuf,
    instance: String,
    grpc: u16,
    delegator: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Writes a configuration; `extra` is appended verbatim (more sections or keys).
    fn configure(port_base: u16, grpc_section_extra: &str) -> Daemon {
        let id = random_hex(3);
        let dir = std::env::temp_dir().join(format!("nexus-e2e-{id}"));
        std::fs::create_dir_all(&dir).expect("dir");
        let instance = format!("e2e-{id}");
        let grpc = free_port();
        let delegator = free_port();
        let config = dir.join("nexus.toml");
        let text = format!(
            r#"
[daemon]
data_dir = "{data}"

[docker]
instance = "{instance}"

[node]
image = "{image}"
public_address = "127.0.0.1"
cpus = "0.5"
memory = "256MiB"
disk = "512MiB"

[ports]
swarm = "{s0}-{s1}"

[grpc]
listen = "127.0.0.1:{grpc}"
api_keys = ["{KEY_A}", "{KEY_B}"]
{grpc_section_extra}

[delegator]
listen = "127.0.0.1:{delegator}"

[metrics]
listen = ""

[log]
level = "info,nexus=debug"
"#,
            data = dir.join("data").display(),
            image = image(),
            s0 = port_base,
            s1 = port_base + 19,
        );
        std::fs::write(&config, text).expect("config");
        Daemon {
            log: dir.join("daemon.log"),
            dir,
            config,
            instance,
            grpc,
            delegator,
            child: None,
        }
    }

    fn start(&mut self) {
        self.start_with(&[]);
    }

    /// Starts the daemon with `env` added to its environment.
    fn start_with(&mut self, env: &[(&str, &str)]) {
        if let Err(e) = self.try_start_with(env) {
            panic!("{e}");
        }
    }

    /// Starts the daemon; `Err` with its log if it exited at start (e.g. refused).
    fn try_start_with(&mut self, env: &[(&str, &str)]) -> Result<(), String> {
        let log = std::fs::File::create(&self.log).expect("log file");
        let child = Command::new(bin())
            .args(["--config"])
            .arg(&self.config)
            .arg("daemon")
            .env_remove("NEXUS_CONFIG")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn daemon");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "daemon exited at start ({status}):\n{}",
                    self.logs()
                ));
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.grpc)).is_ok() {
                if self.instance.is_empty() {
                    self.instance = self.logged_instance().unwrap_or_default();
                }
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not listen:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Like [`Daemon::configure`], but with no `docker.instance`: the daemon uses its store's
    /// own, generated on the store's first open ([`Daemon::start`] learns it from the log). With
    /// `data_dir`, the daemon shares that data directory (and so the store) with another;
    /// `extra` is appended to the configuration (whole sections).
    fn configure_unscoped(port_base: u16, data_dir: Option<&Path>, extra: &str) -> Daemon {
        let mut d = Daemon::configure(port_base, "");
        let text = std::fs::read_to_string(&d.config).expect("config");
        let mut out = String::new();
        for line in text.lines() {
            match (
                line.starts_with("instance = "),
                line.starts_with("data_dir = "),
                data_dir,
            ) {
                (true, _, _) => continue,
                (_, true, Some(dir)) => out.push_str(&format!("data_dir = \"{}\"", dir.display())),
                _ => out.push_str(line),
            }
            out.push('\n');
        }
        out.push_str(extra);
        std::fs::write(&d.config, out).expect("config");
        d.instance.clear();
        d
    }

    /// The instance the daemon logged at start (`io.nexus.instance=…`), if it did.
    fn logged_instance(&self) -> Option<String> {
        let logs = self.logs();
        let at = logs.find("io.nexus.instance=")? + "io.nexus.instance=".len();
        let name: String = logs[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
            .collect();
        Some(name).filter(|n| !n.is_empty())
    }

    /// Starts the daemon expecting it to refuse to start: returns its log once it exited
    /// unsuccessfully.
    fn start_refused(&mut self) -> String {
        let log = std::fs::File::create(&self.log).expect("log file");
        let mut child = Command::new(bin())
            .args(["--config"])
            .arg(&self.config)
            .arg("daemon")
            .env_remove("NEXUS_CONFIG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn daemon");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                assert!(
                    !status.success(),
                    "refused daemon exited 0:\n{}",
                    self.logs()
                );
                return self.logs();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the daemon was not refused:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the log says `needle` (or panics after `limit`).
    fn wait_for_log(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.logs().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no `{needle}` in the log:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    /// SIGKILL: the daemon leaves its lease to expire.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits; returns whether it exited successfully.
    fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Rewrites the configuration: `from` (which must be there) becomes `to`.
    fn edit_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.config).expect("config");
        assert!(text.contains(from), "no `{from}` in the configuration");
        std::fs::write(&self.config, text.replacen(from, to, 1)).expect("config");
    }

    /// Runs the CLI against this daemon (configuration file only: no flags, no env).
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("NEXUS_CONFIG")
            .env_remove("NEXUS_CLIENT_API_KEY")
            .env_remove("NEXUS_CLIENT_ADDRESS")
            .output()
            .expect("run cli")
    }

    /// Runs the CLI with `--json`, asserts success and parses stdout as one JSON document.
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
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "nexus {args:?}: stdout is not one JSON document ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Runs the CLI expecting failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            !out.status.success(),
            "nexus {args:?} should fail but printed {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn containers(&self, state: &str) -> usize {
        docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=io.nexus.instance={}", self.instance),
            "--filter",
            &format!("status={state}"),
        ])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Whatever the test left: this instance's containers, volumes and networks.
        if self.instance.is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
            return;
        }
        let filter = format!("label=io.nexus.instance={}", self.instance);
        for (kind, list) in [
            ("container", vec!["ps", "-aq", "--filter", &filter]),
            ("volume", vec!["volume", "ls", "-q", "--filter", &filter]),
            ("network", vec!["network", "ls", "-q", "--filter", &filter]),
        ] {
            for id in docker(&list).split_whitespace() {
                let _ = match kind {
                    "container" => Command::new("docker").args(["rm", "-fv", id]).output(),
                    "volume" => Command::new("docker")
                        .args(["volume", "rm", "-f", id])
                        .output(),
                    _ => Command::new("docker").args(["network", "rm", id]).output(),
                };
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn names(list: &Value) -> Vec<String> {
    list["networks"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn operator_drives_a_network_through_the_cli() {
    let mut d = Daemon::configure(31000, "");
    d.start();
    let net = format!("e2e-{}", random_hex(2));

    let v = d.json(&["version"]);
    assert_eq!(v["api"], "nexus.v1");
    assert_eq!(v["node_image"], image());

    // Bad input at the CLI's flags and at the RPC fields: clear errors, nothing recorded.
    let err = d.fails(&["network", "create", "Bad_Name"]);
    assert!(err.contains("Bad_Name") || err.contains("name"), "{err}");
    let err = d.fails(&["network", "create", &net, "--memory", "lots"]);
    assert!(err.contains("--memory"), "{err}");
    let err = d.fails(&["network", "create", &net, "--replicas", "100"]);
    assert!(err.contains("InvalidArgument"), "{err}");
    let err = d.fails(&["network", "create", &net, "--allowed-origin", "ftp://x"]);
    assert!(err.contains("origin"), "{err}");
    let err = d.fails(&["network", "get", "nope"]);
    assert!(err.contains("NotFound"), "{err}");
    assert!(names(&d.json(&["network", "list"])).is_empty());

    // create → start
    let n = d.json(&[
        "network",
        "create",
        &net,
        "--replicas",
        "3",
        "--user",
        "alice",
        "--api-deny",
        "pin/rm",
    ]);
    assert_eq!(n["status"], "stopped");
    assert_eq!(n["replicas"], 3);
    assert_eq!(n["users"], serde_json::json!(["alice"]));
    assert_eq!(n["resources"]["cpu_millis"], 500);
    let err = d.fails(&["network", "create", &net]);
    assert!(err.contains("AlreadyExists"), "{err}");

    let n = d.json(&["network", "start", &net]);
    assert_eq!(n["status"], "running", "{n}");
    let nodes = n["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3);
    assert!(nodes.iter().all(|x| x["state"] == "running"));
    assert_eq!(d.containers("running"), 3);
    let text = String::from_utf8_lossy(&d.cli(&["network", "list"]).stdout).into_owned();
    assert!(
        text.contains("NAME") && text.contains(&net) && text.contains("3/3"),
        "{text}"
    );

    // The delegator of the real daemon: a token for a network user adds through the path
    // form and cats back through the host form; no token, a stranger and a denied RPC fail.
    through_the_delegator(&d, &net);

    // stats
    let s = d.json(&["network", "stats", &net]);
    let stats = s["nodes"].as_array().expect("stats");
    assert_eq!(stats.len(), 3);
    for st in stats {
        assert!(st["memory_bytes"].as_u64().unwrap_or(0) > 0, "{st}");
        assert_eq!(st["memory_limit_bytes"], 256 * 1024 * 1024);
    }

    // join kit: the swarm key and one bootstrap address per ready node, on the public address
    let kit = d.json(&["network", "join-kit", &net]);
    assert!(kit["swarm_key"]
        .as_str()
        .unwrap_or("")
        .starts_with("/key/swarm/psk/1.0.0/"));
    let boot = kit["bootstrap"].as_array().expect("bootstrap");
    assert_eq!(boot.len(), 3);
    for (b, node) in boot.iter().zip(nodes) {
        let b = b.as_str().unwrap_or("");
        assert!(b.starts_with("/ip4/127.0.0.1/tcp/"), "{b}");
        assert!(b.ends_with(node["peer_id"].as_str().unwrap_or("?")), "{b}");
    }
    let key_file = d.dir.join("swarm.key");
    let kit2 = d.json(&[
        "network",
        "join-kit",
        &net,
        "--swarm-key-out",
        key_file.to_str().unwrap_or(""),
    ]);
    assert_eq!(
        kit2["swarm_key"], "",
        "the key went to the file, not stdout"
    );
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap_or_default(),
        kit["swarm_key"].as_str().unwrap_or("-")
    );
    // No other answer carries the swarm key or any private key.
    let get = d.cli(&["--json", "network", "get", &net]);
    let get_text = String::from_utf8_lossy(&get.stdout);
    let key_line = kit["swarm_key"]
        .as_str()
        .unwrap_or("")
        .lines()
        .last()
        .unwrap_or("x");
    assert!(!get_text.contains(key_line));
    assert!(!get_text.contains("PrivKey"));
    let diag = d.json(&["network", "diagnostics", &net]);
    let diag_text = diag.to_string();
    assert!(!diag_text.contains("PrivKey") && !diag_text.contains(key_line));
    assert_eq!(diag["nodes"].as_array().map(Vec::len), Some(3));

    // events follow a change
    let mut events = Command::new(bin())
        .arg("--config")
        .arg(&d.config)
        .args(["--json", "events", "--network", &net])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("events");
    std::thread::sleep(Duration::from_millis(500));

    // update: scale down and change access
    let n = d.json(&[
        "network",
        "update",
        &net,
        "--replicas",
        "2",
        "--user",
        "bob",
        "--gateway-public",
        "true",
    ]);
    assert_eq!(n["replicas"], 2);
    assert_eq!(n["users"], serde_json::json!(["bob"]));
    assert_eq!(n["gateway_public"], true);
    assert_eq!(n["status"], "running");
    assert_eq!(d.containers("running"), 2);
    let err = d.fails(&["network", "update", &net]);
    assert!(err.contains("nothing to change"), "{err}");

    // Graceful shutdown leaves nodes running; the next daemon adopts them.
    let ids_before = docker(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label=io.nexus.instance={}", d.instance),
    ]);
    assert!(d.terminate(), "daemon did not exit cleanly:\n{}", d.logs());
    let _ = events.wait();
    let lines: Vec<Value> = BufReader::new(events.stdout.take().expect("stdout"))
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect();
    assert!(
        lines.iter().all(|e| e["network"] == net.as_str()),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|e| e["kind"] == "status" || e["kind"] == "node_die"),
        "no event seen: {lines:?}"
    );
    assert_eq!(
        d.containers("running"),
        2,
        "shutdown must leave nodes running"
    );
    d.start();
    let n = d.json(&["network", "get", &net]);
    assert_eq!(n["status"], "running");
    let ids_after = docker(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label=io.nexus.instance={}", d.instance),
    ]);
    assert_eq!(
        sorted(&ids_before),
        sorted(&ids_after),
        "nodes were re-created"
    );

    // stop → remove
    let err = d.fails(&["network", "remove", &net]);
    assert!(err.contains("--force"), "{err}");
    let n = d.json(&["network", "stop", &net]);
    assert_eq!(n["status"], "stopped");
    assert_eq!(d.containers("running"), 0);
    d.json(&["network", "remove", &net]);
    assert!(names(&d.json(&["network", "list"])).is_empty());
    assert_eq!(d.containers("exited") + d.containers("running"), 0);
    assert!(d.terminate(), "daemon did not exit cleanly:\n{}", d.logs());
}

fn token(d: &Daemon, user: &str) -> String {
    let out = d.cli(&["token", "issue", "--user", user, "--ttl", "10m"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn through_the_delegator(d: &Daemon, net: &str) {
    use bytes::Bytes;
    use http_body_util::Full;
    let alice = token(d, "alice");
    let mallory = token(d, "mallory");
    let port = d.delegator;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let req =
            |path: &str, host: Option<String>, tok: Option<&str>, body: Vec<u8>, ctype: &str| {
                let mut b = hyper::Request::post(format!("http://127.0.0.1:{port}{path}"))
                    .header("content-type", ctype);
                // The path form answers on the configured domain itself.
                b = b.header("host", host.unwrap_or_else(|| format!("localhost:{port}")));
                if let Some(t) = tok {
                    b = b.header("authorization", format!("Bearer {t}"));
                }
                b.body(Full::new(Bytes::from(body))).expect("request")
            };
        let boundary = "nexus-e2e-boundary";
        let data = format!("hello from {net} through the delegator");
        let body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n{data}\r\n--{boundary}--\r\n"
        );
        let ctype = format!("multipart/form-data; boundary={boundary}");
        let (status, out) = common::send(req(
            &format!("/network/{net}/api/v0/add"),
            None,
            Some(&alice),
            body.clone().into_bytes(),
            &ctype,
        ))
        .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&out));
        let text = String::from_utf8_lossy(&out).into_owned();
        let last = text.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
        let cid = serde_json::from_str::<Value>(last).expect("add JSON")["Hash"]
            .as_str()
            .expect("Hash")
            .to_string();
        let (status, out) = common::send(req(
            &format!("/api/v0/cat?arg={cid}"),
            Some(format!("{net}.api.localhost:{port}")),
            Some(&alice),
            vec![],
            "text/plain",
        ))
        .await;
        assert_eq!(status, 200);
        assert_eq!(String::from_utf8_lossy(&out), data);

        let (status, _) = common::send(req(
            &format!("/network/{net}/api/v0/add"),
            None,
            None,
            body.clone().into_bytes(),
            &ctype,
        ))
        .await;
        assert_eq!(status, 401, "no token");
        let (status, _) = common::send(req(
            &format!("/network/{net}/api/v0/id"),
            None,
            Some(&mallory),
            vec![],
            "text/plain",
        ))
        .await;
        assert_eq!(status, 403, "a user who is not in the network");
        let (status, _) = common::send(req(
            &format!("/network/{net}/api/v0/config/show"),
            None,
            Some(&alice),
            vec![],
            "text/plain",
        ))
        .await;
        assert_eq!(status, 403, "config/show is denied to tenants");

        // The gateway is private until the network says otherwise.
        let get = |path: String, tok: Option<&str>| {
            let mut b = hyper::Request::get(format!("http://127.0.0.1:{port}{path}"))
                .header("host", format!("localhost:{port}"));
            if let Some(t) = tok {
                b = b.header("authorization", format!("Bearer {t}"));
            }
            b.body(Full::new(Bytes::new())).expect("request")
        };
        let (status, _) =
            common::send(get(format!("/network/{net}/gateway/ipfs/{cid}"), None)).await;
        assert_eq!(status, 401, "private gateway without a token");
        let (status, out) = common::send(get(
            format!("/network/{net}/gateway/ipfs/{cid}"),
            Some(&alice),
        ))
        .await;
        assert_eq!(status, 200);
        assert_eq!(String::from_utf8_lossy(&out), data);
    });
}

fn sorted(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.split_whitespace().map(String::from).collect();
    v.sort();
    v
}

#[test]
fn ctl_reaches_every_rpc_through_reflection() {
    let mut d = Daemon::configure(31100, "");
    d.start();
    let net = format!("ctl-{}", random_hex(2));

    let help = d.json(&["ctl", "help"]);
    let rpcs: Vec<&str> = help
        .as_array()
        .expect("help")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(rpcs.len(), 19, "{rpcs:?}");

    let ctl = |args: &[&str]| -> Value {
        let mut all = vec!["ctl"];
        all.extend_from_slice(args);
        let out = d.cli(&all);
        assert!(
            out.status.success(),
            "ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("ctl prints JSON")
    };
    assert!(ctl(&["Ping"])["time_ms"].as_i64().unwrap_or(0) > 0);
    assert_eq!(ctl(&["Version"])["api"], "nexus.v1");
    let n = ctl(&[
        "CreateNetwork",
        &format!("name={net}"),
        "replicas=1",
        "users=alice,bob",
        "resources.memory_bytes=268435456",
    ]);
    assert_eq!(n["users"], serde_json::json!(["alice", "bob"]));
    assert_eq!(n["resources"]["memory_bytes"], 268435456u64);
    assert_eq!(
        ctl(&["StartNetwork", &format!("name={net}")])["status"],
        "running"
    );
    assert_eq!(
        ctl(&["GetNetwork", &format!("name={net}")])["name"],
        net.as_str()
    );
    assert_eq!(names(&ctl(&["ListNetworks"])), vec![net.clone()]);
    assert_eq!(
        ctl(&["ListPins", &format!("network={net}")])["count"],
        0,
        "the pinset RPCs are reachable too"
    );
    assert_eq!(
        ctl(&["NetworkStats", &format!("name={net}")])["nodes"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(
        ctl(&["NetworkDiagnostics", &format!("name={net}")])["nodes"][0]["state"],
        "running"
    );
    assert_eq!(
        ctl(&["GetJoinKit", &format!("name={net}")])["bootstrap"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let r = ctl(&["RevokeToken", "jti=ctl-revoked-id"]);
    assert_eq!(r["jti"], "ctl-revoked-id");
    assert!(r["forget_at"].as_i64().unwrap_or(0) > 0, "{r}");
    let n = ctl(&[
        "UpdateNetwork",
        &format!("name={net}"),
        "users=",
        "api_deny=pin/rm",
    ]);
    assert_eq!(n["users"], serde_json::json!([]));
    assert_eq!(n["api_deny"], serde_json::json!(["pin/rm"]));
    // WatchEvents streams: read the first event, caused by a stop.
    let mut watch = Command::new(bin())
        .arg("--config")
        .arg(&d.config)
        .args(["ctl", "WatchEvents", &format!("network={net}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("watch");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        ctl(&["StopNetwork", &format!("name={net}")])["status"],
        "stopped"
    );
    let mut first = String::new();
    BufReader::new(watch.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("read");
    let _ = watch.kill();
    let _ = watch.wait();
    let ev: Value = serde_json::from_str(&first).expect("event JSON");
    assert_eq!(ev["network"], net.as_str());
    ctl(&["RemoveNetwork", &format!("name={net}")]);
    assert!(names(&ctl(&["ListNetworks"])).is_empty());

    // Bad fields name the field.
    let err = d.fails(&["ctl", "GetNetwork", "nmae=x"]);
    assert!(err.contains("nmae") && err.contains("name"), "{err}");
    let err = d.fails(&["ctl", "NoSuchRpc"]);
    assert!(err.contains("CreateNetwork"), "{err}");
    let err = d.fails(&["ctl", "CreateNetwork", "name=x", "replicas=lots"]);
    assert!(err.contains("replicas") || err.contains("invalid"), "{err}");
}

/// Calls Ping with a typed client over `channel`, with `key` if any.
async fn ping(address: &str, key: Option<&str>, ca: Option<Vec<u8>>) -> Result<(), String> {
    let cfg = nexus::client::ClientConfig {
        address: address.to_string(),
        api_key: key.map(nexus::secret::Secret::from),
        tls_ca: ca,
        connect_timeout: Duration::from_secs(5),
    };
    let conn = nexus::client::connect(&cfg)
        .await
        .map_err(|e| e.to_string())?;
    conn.client()
        .ping(nexus::api::pb::PingRequest {})
        .await
        .map(|_| ())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

#[tokio::test]
async fn api_keys_are_required_and_rotate() {
    let mut d = Daemon::configure(31200, "");
    d.start();
    let addr = format!("http://127.0.0.1:{}", d.grpc);
    let e = ping(&addr, None, None).await.unwrap_err();
    assert!(e.starts_with("Unauthenticated"), "{e}");
    let e = ping(
        &addr,
        Some("wrong-key-0123456789abcdefghijklmnopqrstuvwxyz"),
        None,
    )
    .await
    .unwrap_err();
    assert!(
        e.starts_with("Unauthenticated") && !e.contains("wrong-key"),
        "{e}"
    );
    ping(&addr, Some(KEY_A), None).await.expect("first key");
    ping(&addr, Some(KEY_B), None)
        .await
        .expect("second key (rotation)");

    // Health needs no key.
    let conn = nexus::client::connect(&nexus::client::ClientConfig {
        address: addr.clone(),
        api_key: None,
        tls_ca: None,
        connect_timeout: Duration::from_secs(5),
    })
    .await
    .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(conn.channel.clone());
    let h = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "nexus.v1.Nexus".into(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(
        h.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // A generic client using only reflection lists the service and calls Ping.
    let keyed = nexus::client::connect(&nexus::client::ClientConfig {
        address: addr.clone(),
        api_key: Some(KEY_B.into()),
        tls_ca: None,
        connect_timeout: Duration::from_secs(5),
    })
    .await
    .expect("connect");
    let mut refl = tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(
        keyed.channel.clone(),
    );
    let mut req = tonic::Request::new(futures_util::stream::iter([
        tonic_reflection::pb::v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                    String::new(),
                ),
            ),
        },
    ]));
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {KEY_B}").parse().expect("header"),
    );
    let mut stream = refl
        .server_reflection_info(req)
        .await
        .expect("reflection")
        .into_inner();
    let resp = stream.message().await.expect("answer").expect("one answer");
    let listed = format!("{:?}", resp.message_response);
    assert!(listed.contains("nexus.v1.Nexus"), "{listed}");
    let schema = nexus::client::dynamic::fetch_schema(&keyed, "nexus.v1.Nexus")
        .await
        .expect("schema by reflection");
    let m = schema.method("Ping").expect("Ping");
    let req = nexus::client::dynamic::build_request(&m.input(), &[]).expect("request");
    let mut answers = vec![];
    nexus::client::dynamic::call(&keyed, &m, req, |msg| {
        answers.push(nexus::client::dynamic::to_json(&msg))
    })
    .await
    .expect("dynamic Ping");
    assert!(answers[0]["time_ms"].as_i64().unwrap_or(0) > 0);
    // A client still holding a connection does not keep the daemon alive: after
    // `SHUTDOWN_GRACE` it exits anyway, cleanly (hyper#4170).
    assert!(d.terminate(), "daemon did not exit cleanly:\n{}", d.logs());
    drop((stream, refl, health, conn, keyed));
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
}

#[tokio::test]
async fn tls_on_the_grpc_api() {
    let ca = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("cert");
    let tmp = std::env::temp_dir().join(format!("nexus-tls-{}", random_hex(3)));
    std::fs::create_dir_all(&tmp).expect("dir");
    let cert = tmp.join("cert.pem");
    let key = tmp.join("key.pem");
    write(&cert, &ca.cert.pem());
    write(&key, &ca.signing_key.serialize_pem());
    let extra = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        cert.display(),
        key.display()
    );
    let mut d = Daemon::configure(31300, &extra);
    d.start();
    let https = format!("https://localhost:{}", d.grpc);
    ping(&https, Some(KEY_A), Some(ca.cert.pem().into_bytes()))
        .await
        .expect("TLS ping with the CA");
    let e = ping(&https, Some(KEY_A), None).await.unwrap_err();
    assert!(e.contains("CA"), "{e}");
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    assert!(
        ping(&https, Some(KEY_A), Some(other.cert.pem().into_bytes()))
            .await
            .is_err(),
        "an unknown CA must not be trusted"
    );
    assert!(
        ping(&format!("http://127.0.0.1:{}", d.grpc), Some(KEY_A), None)
            .await
            .is_err(),
        "plain text must not reach a TLS listener"
    );
    // The CLI with the CA from a flag.
    let out = d.cli(&[
        "--address",
        &https,
        "--tls-ca",
        cert.to_str().unwrap_or(""),
        "--json",
        "network",
        "list",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(d.terminate(), "daemon did not exit cleanly:\n{}", d.logs());
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn bad_configuration_is_refused_naming_the_key() {
    let d = Daemon::configure(31400, "");
    let run = |extra_env: &[(&str, &str)], config: &Path| -> (bool, String) {
        let out = Command::new(bin())
            .arg("--config")
            .arg(config)
            .arg("daemon")
            .envs(extra_env.iter().copied())
            .output()
            .expect("run");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let text = std::fs::read_to_string(&d.config).expect("config");

    let typo = d.dir.join("typo.toml");
    write(&typo, &text.replace("[grpc]\n", "[grpc]\nlistn = \"x\"\n"));
    let (ok, err) = run(&[], &typo);
    assert!(!ok && err.contains("listn"), "{err}");

    let (ok, err) = run(&[("NEXUS_GRPC_LISTEN", "not-an-address")], &d.config);
    assert!(!ok && err.contains("NEXUS_GRPC_LISTEN"), "{err}");

    let (ok, err) = run(&[("NEXUS_GRPC_LISTNE", "127.0.0.1:1")], &d.config);
    assert!(!ok && err.contains("NEXUS_GRPC_LISTNE"), "{err}");

    let bad_size = d.dir.join("size.toml");
    write(
        &bad_size,
        &text.replace("memory = \"256MiB\"", "memory = \"lots\""),
    );
    let (ok, err) = run(&[], &bad_size);
    assert!(!ok && err.contains("node.memory"), "{err}");

    let (ok, err) = run(&[], &d.dir.join("missing.toml"));
    assert!(!ok && err.contains("missing.toml"), "{err}");

    // Nothing was started and nothing was created in Docker.
    assert_eq!(d.containers("running") + d.containers("exited"), 0);
}

#[test]
fn init_writes_a_private_config_that_runs() {
    let dir = std::env::temp_dir().join(format!("nexus-init-{}", random_hex(3)));
    let path = dir.join("conf").join("nexus.toml");
    let init = |force: bool| {
        let mut c = Command::new(bin());
        c.arg("--config").arg(&path).arg("init");
        if force {
            c.arg("--force");
        }
        c.output().expect("init")
    };
    let out = init(false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let first = std::fs::read_to_string(&path).expect("read");
    let out = init(false);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(std::fs::read_to_string(&path).expect("read"), first);
    let out = init(true);
    assert!(out.status.success());
    assert_ne!(
        std::fs::read_to_string(&path).expect("read"),
        first,
        "fresh secrets"
    );
    // A token can be minted with the file's secret.
    let out = Command::new(bin())
        .arg("--config")
        .arg(&path)
        .args(["token", "issue", "--user", "alice", "--ttl", "10m"])
        .output()
        .expect("token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(token.split('.').count(), 3, "{token}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The running containers of `instance`: full ids.
fn running_ids(instance: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label=io.nexus.instance={instance}"),
    ])
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

#[test]
fn a_second_daemon_with_another_data_dir_deletes_nothing_of_the_first() {
    // Neither configures an instance: each uses the id its own store generated.
    let mut first = Daemon::configure_unscoped(32000, None, "");
    first.start();
    assert!(first.instance.starts_with("n-"), "{}", first.logs());
    let net = format!("inst-{}", random_hex(2));
    let n = first.json(&["network", "create", &net, "--start"]);
    assert_eq!(n["status"], "running", "{n}");
    let ids = running_ids(&first.instance);
    assert_eq!(ids.len(), 1, "{ids:?}");

    // A second installation on the same host: its recovery runs and finds nothing of its own.
    let mut second = Daemon::configure_unscoped(32100, None, "");
    second.start();
    assert!(second.instance.starts_with("n-"), "{}", second.logs());
    assert_ne!(second.instance, first.instance);
    second.wait_for_log("recovery done", Duration::from_secs(60));
    assert!(names(&second.json(&["network", "list"])).is_empty());
    assert!(
        !second.logs().contains("removing nexus containers"),
        "{}",
        second.logs()
    );

    // The first's node is untouched: the same container, running, and its network too.
    assert_eq!(running_ids(&first.instance), ids);
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Running}}", &ids[0]]),
        "true"
    );
    let got = first.json(&["network", "get", &net]);
    assert_eq!(got["status"], "running", "{got}");
    assert!(second.terminate(), "{}", second.logs());
    assert!(first.terminate(), "{}", first.logs());
}

#[test]
fn a_second_daemon_on_the_same_store_is_refused_until_the_first_is_gone() {
    let ttl = "[store]\nlease_ttl = \"2s\"\n";
    let mut first = Daemon::configure_unscoped(32200, None, ttl);
    first.start();
    let instance = first.instance.clone();
    assert!(instance.starts_with("n-"), "{}", first.logs());

    // Same data directory, so the same store and instance: refused, naming the holder.
    let data = first.dir.join("data");
    let mut second = Daemon::configure_unscoped(32300, Some(&data), ttl);
    let refused = second.start_refused();
    assert!(
        refused.contains(&format!(
            "another live daemon acts for instance `{instance}`"
        )),
        "{refused}"
    );
    assert!(
        refused.contains(&format!("pid {}", first.pid())),
        "{refused}"
    );
    assert!(refused.contains("expires in"), "{refused}");

    // Killed, the first cannot release it; once the TTL has passed the second starts, as the
    // same instance.
    first.kill();
    std::thread::sleep(Duration::from_millis(2500));
    second.start();
    assert_eq!(second.instance, instance, "{}", second.logs());
    assert!(second.terminate(), "{}", second.logs());
    assert!(
        second.logs().contains("lease released"),
        "{}",
        second.logs()
    );
}

#[tokio::test]
async fn a_daemon_that_loses_its_lease_stops() {
    use sqlx::{Connection, Executor};
    let mut d = Daemon::configure_unscoped(32400, None, "[store]\nlease_ttl = \"3s\"\n");
    d.start();
    // Another holder takes the lease behind the daemon's back (as one would once it expired
    // while this daemon was frozen).
    sqlx::any::install_default_drivers();
    let db = d.dir.join("data").join("nexus.db");
    let mut conn = sqlx::AnyConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("open the daemon's store");
    conn.execute("UPDATE instance_lease SET holder = 'intruder', host = 'elsewhere', pid = 1")
        .await
        .expect("take the lease");
    conn.close().await.ok();
    // At its next heartbeat (every second) it notices, stops and exits with an error.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            break status;
        }
        assert!(Instant::now() < deadline, "still running:\n{}", d.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    d.child = None;
    let logs = d.logs();
    assert!(!status.success(), "{logs}");
    assert!(logs.contains("lost the lease"), "{logs}");
    assert!(logs.contains("another daemon holds it now"), "{logs}");
}

/// A proto3 JSON integer (64-bit ones are strings).
fn int(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

/// The key lines of a seal key file.
fn key_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("seal key file")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn private_files_and_secrets_rotate() {
    use std::os::unix::fs::PermissionsExt;
    let mut d = Daemon::configure(31500, "");
    let data = d.dir.join("data");
    let mode = |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
    let refused = |d: &Daemon| -> String {
        let out = Command::new(bin())
            .arg("--config")
            .arg(&d.config)
            .arg("daemon")
            .env_remove("NEXUS_CONFIG")
            .output()
            .expect("run");
        assert!(!out.status.success(), "the daemon started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    // A data directory others may enter (as `mkdir` makes it) is refused, with the chmod.
    std::fs::create_dir_all(&data).expect("data dir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let err = refused(&d);
    assert!(
        err.contains(&format!("chmod 700 {}", data.display())),
        "{err}"
    );
    // A database file others may read is refused too.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let db = data.join("nexus.db");
    std::fs::write(&db, b"").expect("db file");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = refused(&d);
    assert!(
        err.contains(&format!("chmod 600 {}", db.display())),
        "{err}"
    );
    std::fs::remove_file(&db).expect("rm db");

    d.start();
    let key_file = data.join("seal.key");
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&db), 0o600);
    assert_eq!(mode(&key_file), 0o600);
    let net = format!("seal-{}", random_hex(2));
    d.json(&["network", "create", &net, "--replicas", "2"]);
    for f in ["nexus.db-wal", "nexus.db-shm"] {
        let p = data.join(f);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{f}");
        }
    }
    let before = key_lines(&key_file);
    assert_eq!(before.len(), 1);

    // Rotation: a new key, every row sealed again, the old key gone from the file.
    let r = d.json(&["secrets", "rotate"]);
    assert_eq!(int(&r["networks"]), 1, "{r}");
    let (old_id, new_id) = (r["old_key_id"].as_str(), r["new_key_id"].as_str());
    assert!(
        old_id.is_some() && new_id.is_some() && old_id != new_id,
        "{r}"
    );
    assert_eq!(r["key_file"], key_file.display().to_string());
    let after = key_lines(&key_file);
    assert_eq!(after.len(), 1);
    assert_ne!(after, before);
    assert_eq!(mode(&key_file), 0o600);
    assert_eq!(d.json(&["network", "get", &net])["name"], net.as_str());
    // For people: a table.
    let out = d.cli(&["secrets", "rotate"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("new key") && text.contains("networks"),
        "{text}"
    );

    // A restart opens everything with the rotated key.
    assert!(d.terminate(), "daemon did not exit cleanly:\n{}", d.logs());
    d.start();
    assert_eq!(d.json(&["network", "get", &net])["name"], net.as_str());

    // With the key from the environment, the daemon cannot rewrite it: refused, saying how.
    assert!(d.terminate(), "daemon did not exit cleanly:\n{}", d.logs());
    let current = key_lines(&key_file).remove(0);
    d.start_with(&[("NEXUS_STORE_SEAL_KEY", current.as_str())]);
    assert_eq!(d.json(&["network", "get", &net])["name"], net.as_str());
    let err = d.fails(&["secrets", "rotate"]);
    assert!(err.contains("FailedPrecondition"), "{err}");
    assert!(
        err.contains("NEXUS_STORE_SEAL_PREVIOUS_KEYS") && err.contains("restart"),
        "{err}"
    );
    assert!(!err.contains(&current), "{err}");
    assert!(!d.logs().contains(&current), "the seal key is in the log");
}

/// At `--log-level trace`, with every library's own logging on (bollard's Docker client, hyper,
/// h2, tonic, sqlx), creating and starting a network logs neither its swarm key nor any node's
/// private key, in any encoding.
#[test]
fn trace_logs_hold_no_secret() {
    let mut d = Daemon::configure(31700, "");
    let text = std::fs::read_to_string(&d.config).expect("config");
    std::fs::write(
        &d.config,
        text.replace("level = \"info,nexus=debug\"", "level = \"trace\""),
    )
    .expect("config");
    d.start();
    let net = format!("e2e-{}", random_hex(2));
    d.json(&[
        "network",
        "create",
        &net,
        "--replicas",
        "2",
        "--user",
        "alice",
    ]);
    let v = d.json(&["network", "start", &net]);
    assert_eq!(v["status"], "running", "{v}");
    // What must not be logged: the key (the join kit is the one answer that hands it out)...
    let kit = d.json(&["network", "join-kit", &net]);
    let key_hex = kit["swarm_key"]
        .as_str()
        .and_then(|k| k.lines().last())
        .expect("swarm key")
        .trim()
        .to_owned();
    assert_eq!(key_hex.len(), 64);
    let key_bytes = hex::decode(&key_hex).expect("hex key");
    let b64 = |b: &[u8]| {
        use base64::Engine;
        [
            base64::engine::general_purpose::STANDARD.encode(b),
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(b),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b),
        ]
    };
    let mut secrets = vec![key_hex.clone(), key_hex.to_uppercase()];
    secrets.extend(b64(&key_bytes));
    // ...and each node's private key, as kubo's config holds it (base64 protobuf) and raw.
    for i in 0..2 {
        let config: Value = serde_json::from_str(&docker(&[
            "exec",
            &format!("nexus-{net}-{i}"),
            "cat",
            "/data/ipfs/config",
        ]))
        .expect("node config");
        let pk = config["Identity"]["PrivKey"]
            .as_str()
            .expect("PrivKey")
            .to_owned();
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&pk)
            .expect("base64 key");
        secrets.push(pk);
        secrets.push(hex::encode(&raw));
        secrets.extend(b64(&raw));
        // The ed25519 seed alone (after the 4-byte protobuf header), in every encoding.
        if raw.len() >= 36 {
            secrets.push(hex::encode(&raw[4..36]));
            secrets.extend(b64(&raw[4..36]));
        }
    }
    d.json(&["network", "stop", &net]);
    let log = d.logs();
    assert!(
        log.lines().count() > 100 && log.contains("TRACE"),
        "the daemon did not log at trace level"
    );
    for s in &secrets {
        assert!(
            !log.contains(s.as_str()),
            "a secret ({} characters) is in the trace log",
            s.len()
        );
    }
    d.json(&["network", "remove", &net]);
}

// --- subnets (issue 19) --------------------------------------------------------------------

/// The subnet Docker gave a network (its first IPAM config), or empty.
fn docker_subnet(net: &str) -> String {
    docker(&[
        "network",
        "inspect",
        &format!("nexus-{net}"),
        "-f",
        "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
    ])
    .trim()
    .to_owned()
}

/// Docker networks of an instance.
fn instance_networks(instance: &str) -> Vec<String> {
    docker(&[
        "network",
        "ls",
        "-q",
        "--filter",
        &format!("label=io.nexus.instance={instance}"),
    ])
    .split_whitespace()
    .map(String::from)
    .collect()
}

/// Removes a Docker network that is not nexus's when dropped.
struct ForeignNetwork(String);

impl Drop for ForeignNetwork {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["network", "rm", &self.0])
            .output();
    }
}

#[test]
fn a_full_subnet_pool_refuses_up_front_and_foreign_networks_are_skipped() {
    // A pool of four /28s of its own (outside the default pool, so no other test's networks
    // are in it), the second held by a Docker network that is not nexus's.
    let mut b = [0u8; 2];
    getrandom::fill(&mut b).expect("rng");
    let base = format!("10.240.{}.{}", b[0], (b[1] % 4) * 64);
    let pool = format!("{base}/26");
    let sub = |i: u8| {
        let last: u8 = base.rsplit('.').next().unwrap().parse().unwrap();
        format!("10.240.{}.{}/28", b[0], last + 16 * i)
    };
    let foreign = ForeignNetwork(format!("foreign-{}", random_hex(3)));
    assert!(
        common::docker_ok(&["network", "create", "--subnet", &sub(1), &foreign.0]),
        "could not make the foreign network on {}",
        sub(1)
    );

    let mut d = Daemon::configure(31600, "");
    d.edit_config(
        &format!("instance = \"{}\"", d.instance),
        &format!(
            "instance = \"{}\"\nsubnet_pool = \"{pool}\"\nsubnet_prefix = 28",
            d.instance
        ),
    );
    d.edit_config("disk = \"512MiB\"", "disk = \"512MiB\"\nmax_replicas = 4");
    d.start();
    let id = random_hex(2);
    let net = |i: usize| format!("pool-{id}-{i}");

    // Three networks fit; each on its own subnet, never the foreign one's.
    let mut got = Vec::new();
    for i in 0..3 {
        let n = d.json(&["network", "create", &net(i), "--start"]);
        assert_eq!(n["status"], "running", "{n}");
        let subnet = n["subnet"].as_str().expect("subnet").to_owned();
        assert_eq!(
            docker_subnet(&net(i)),
            subnet,
            "Docker's subnet is the recorded one"
        );
        got.push(subnet);
    }
    let mut want = vec![sub(0), sub(2), sub(3)];
    want.sort();
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(sorted, want);
    let logs = d.logs();
    assert!(
        logs.contains("subnet skipped") && logs.contains(&foreign.0),
        "the log does not say which subnet was skipped and why:\n{logs}"
    );
    // `network get` shows it to people too.
    let text = String::from_utf8_lossy(&d.cli(&["network", "get", &net(0)]).stdout).into_owned();
    assert!(text.contains(&got[0]), "{text}");

    // The fourth is refused up front, saying which pool ran out and what to do; nothing made.
    let err = d.fails(&["network", "create", &net(3)]);
    assert!(err.contains("ResourceExhausted"), "{err}");
    assert!(
        err.contains(&pool) && err.contains("no free /28 subnet") && err.contains("widen"),
        "{err}"
    );
    assert!(!names(&d.json(&["network", "list"])).contains(&net(3)));
    assert!(!common::docker_ok(&[
        "network",
        "inspect",
        &format!("nexus-{}", net(3))
    ]));

    // Removing one frees its subnet for the next.
    d.json(&["network", "remove", &net(1), "--force"]);
    assert!(!common::docker_ok(&[
        "network",
        "inspect",
        &format!("nexus-{}", net(1))
    ]));
    let n = d.json(&["network", "create", &net(3), "--start"]);
    assert_eq!(n["status"], "running", "{n}");
    assert_eq!(n["subnet"].as_str(), Some(got[1].as_str()));
    assert_eq!(docker_subnet(&net(3)), got[1]);
}

/// Checks every 2 s until `check` holds (true) or `limit` passed (false).
fn poll_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn mem_available_bytes() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    text.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("MemAvailable")
}

/// Runs `nexus <args>` for every item at once (one thread each); returns the failures.
fn cli_all(d: &Daemon, items: &[String], args: impl Fn(&str) -> Vec<String> + Sync) -> Vec<String> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .iter()
            .map(|item| {
                let a = args(item);
                scope.spawn(move || {
                    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
                    let out = d.cli(&refs);
                    (!out.status.success())
                        .then(|| format!("{item}: {}", String::from_utf8_lossy(&out.stderr).trim()))
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().expect("thread"))
            .collect()
    })
}

/// Every network of the list `network list --json` gives, by name: (status, subnet).
fn statuses(d: &Daemon) -> std::collections::BTreeMap<String, (String, String)> {
    d.json(&["network", "list"])["networks"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|n| {
                    (
                        n["name"].as_str().unwrap_or_default().to_owned(),
                        (
                            n["status"].as_str().unwrap_or_default().to_owned(),
                            n["subnet"].as_str().unwrap_or_default().to_owned(),
                        ),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Issue 19: far more networks than Docker's default pools hold (~30), each on the subnet
/// nexus recorded, through a daemon killed during 60 concurrent starts. Heavy: the test command
/// runs it on its own after the suite (`heavy_` tests), so it does not starve the others.
#[test]
fn heavy_hundreds_of_networks_each_on_its_own_subnet() {
    const TARGET: usize = 200;
    const FIRST: usize = 60;
    const BATCH: usize = 10;
    /// Stop adding networks when the host has less memory than this available.
    const MEMORY_FLOOR: u64 = 3 << 30;
    let t0 = Instant::now();
    // Swarm ports below the kernel's ephemeral range (32768-60999): with hundreds of
    // connections opening and closing around a restart, a port in that range can be taken by
    // an outgoing connection between the kill and the node's start on its recorded port.
    let mut d = Daemon::configure(28000, "");
    d.edit_config("swarm = \"28000-28019\"", "swarm = \"28000-28299\"");
    d.edit_config("cpus = \"0.5\"", "cpus = \"0.1\"");
    d.edit_config("memory = \"256MiB\"", "memory = \"128MiB\"");
    d.edit_config(
        "disk = \"512MiB\"",
        // The default ready_timeout (60s): a burst of starts queues for its turns
        // (node.start_parallelism) instead of missing it. The API may answer before a
        // queued start is done: op_timeout is raised, as the work goes on either way. 200
        // nodes of 128 MiB promise more than the host's memory: admission control is told
        // they idle (overcommit 8). What this test asks of the host's CPU is its own
        // business, not admission's (node.cpu_budget is tested on its own): no CPU check.
        "disk = \"64MiB\"\nop_timeout = \"900s\"\nmemory_overcommit = \"8\"\ncpu_budget = \"0\"",
    );
    d.edit_config("level = \"info,nexus=debug\"", "level = \"info\"");
    // A killed daemon's lease expires soon, so the restart is not refused for long.
    d.edit_config("[docker]", "[store]\nlease_ttl = \"6s\"\n\n[docker]");
    d.start();
    let id = random_hex(2);
    let names: Vec<String> = (0..TARGET).map(|i| format!("h{id}-{i}")).collect();

    // 60 networks started at once; the daemon is killed (-9) while they start.
    let first = &names[..FIRST];
    for n in first {
        d.json(&["network", "create", n]);
    }
    let killed = std::thread::scope(|scope| {
        let starts = scope.spawn(|| {
            cli_all(&d, first, |n| {
                vec!["network".into(), "start".into(), n.into()]
            })
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        while d.containers("running") < FIRST / 4 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        let running = d.containers("running");
        let _ = Command::new("kill")
            .args(["-KILL", &d.pid().to_string()])
            .status();
        let _ = starts.join();
        running
    });
    d.kill();
    assert!(
        killed < FIRST,
        "the daemon was killed only after every start ({killed})"
    );
    // Started again as an operator would: refused while the killed daemon's lease lasts.
    let killed_at = Instant::now();
    while let Err(e) = d.try_start_with(&[]) {
        assert!(
            e.contains("another live daemon") && killed_at.elapsed() < Duration::from_secs(60),
            "{e}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "subnets: restarted {:?} after the kill",
        killed_at.elapsed()
    );
    let recovered = poll_until(Duration::from_secs(900), || {
        let s = statuses(&d);
        first
            .iter()
            .all(|n| s.get(n).is_some_and(|(st, _)| st == "running"))
    });
    let s = statuses(&d);
    assert!(
        recovered,
        "not every network ran after recovery: {:?}\n{}",
        first.iter().map(|n| (n, s.get(n))).collect::<Vec<_>>(),
        d.logs()
    );
    let mut seen = std::collections::BTreeSet::new();
    for n in first {
        let (_, subnet) = &s[n];
        assert!(subnet.starts_with("10."), "{n}: {subnet}");
        assert_eq!(
            &docker_subnet(n),
            subnet,
            "{n}: Docker's subnet is not the recorded one"
        );
        assert!(seen.insert(subnet.clone()), "{subnet} twice");
    }
    eprintln!(
        "subnets: {FIRST} networks recovered after a kill during their starts ({killed} nodes were up) in {:?}",
        t0.elapsed()
    );

    // Then on, ten at a time, until the target or the host's memory says stop.
    let mut started = FIRST;
    let mut stopped_by_memory = false;
    while started < TARGET {
        if mem_available_bytes() < MEMORY_FLOOR {
            stopped_by_memory = true;
            break;
        }
        let batch = &names[started..(started + BATCH).min(TARGET)];
        let failed = cli_all(&d, batch, |n| {
            vec![
                "network".into(),
                "create".into(),
                n.into(),
                "--start".into(),
            ]
        });
        assert!(
            failed.is_empty(),
            "starts failed at {started}: {failed:?}\n--- the daemon's last log lines ---\n{}",
            tail(&d.logs(), 40)
        );
        started += batch.len();
    }
    let s = statuses(&d);
    let up: Vec<_> = names[..started]
        .iter()
        .filter(|n| s.get(*n).is_some_and(|(st, _)| st == "running"))
        .collect();
    assert_eq!(up.len(), started, "every started network runs");
    let subnets: std::collections::BTreeSet<_> =
        names[..started].iter().map(|n| s[n].1.clone()).collect();
    assert_eq!(subnets.len(), started, "one subnet per network");
    eprintln!(
        "subnets: {started} one-node networks running, each on its own subnet, after {:?} ({}; MemAvailable {} MiB)",
        t0.elapsed(),
        if stopped_by_memory { "stopped by the memory floor" } else { "target reached" },
        mem_available_bytes() >> 20
    );
    assert!(
        started >= 100,
        "only {started} networks before the host's memory ran low: far fewer than the test needs to show"
    );

    // Removed, they leave no Docker network behind.
    for chunk in names[..started].chunks(20) {
        let failed = cli_all(&d, chunk, |n| {
            vec![
                "network".into(),
                "remove".into(),
                n.into(),
                "--force".into(),
            ]
        });
        assert!(failed.is_empty(), "{failed:?}");
    }
    assert!(statuses(&d).is_empty());
    assert_eq!(instance_networks(&d.instance), Vec::<String>::new());
    assert_eq!(
        d.containers("running") + d.containers("exited") + d.containers("created"),
        0
    );
}

/// `POST /api/v0/id` through the daemon's delegator (host form) with `tok`; the status.
fn delegator_id(d: &Daemon, net: &str, tok: &str) -> u16 {
    let host = format!("{net}.api.localhost");
    delegator_call(d, hyper::Method::POST, &host, "/api/v0/id", Some(tok)).0
}

/// Issue 15, observation 2: tokens bound and revocable, through the real daemon. `token
/// issue --json` gives the id; `token revoke` makes the delegator refuse it at once (well
/// within a second), and still after a restart; a token limited to another network and one
/// for another audience are refused; bad ids are refused with nothing recorded.
#[test]
fn revoked_tokens_stay_refused_across_a_restart() {
    let mut d = Daemon::configure(31800, "");
    d.start();
    let net = format!("rv-{}", random_hex(2));
    let other = format!("rw-{}", random_hex(2));
    d.json(&[
        "network",
        "create",
        &net,
        "--replicas",
        "1",
        "--user",
        "alice",
    ]);
    d.json(&["network", "create", &other, "--user", "alice"]);
    let n = d.json(&["network", "start", &net]);
    assert_eq!(n["status"], "running", "{n}");

    let issue = |extra: &[&str]| -> Value {
        let mut args = vec!["token", "issue", "--user", "alice", "--ttl", "1h"];
        args.extend_from_slice(extra);
        d.json(&args)
    };
    let t = issue(&[]);
    let (tok, jti) = (
        t["token"].as_str().expect("token").to_owned(),
        t["jti"].as_str().expect("jti").to_owned(),
    );
    let spare = issue(&[]);
    let spare = spare["token"].as_str().expect("token").to_owned();
    assert_eq!(delegator_id(&d, &net, &tok), 200);

    // Limited to another network: refused here.
    let elsewhere = issue(&["--net", &other]);
    let elsewhere = elsewhere["token"].as_str().expect("token").to_owned();
    assert_eq!(delegator_id(&d, &net, &elsewhere), 403);
    let here = issue(&["--net", &net]);
    assert_eq!(
        delegator_id(&d, &net, here["token"].as_str().expect("token")),
        200
    );
    // Longer than delegator.max_ttl (30 days) cannot be issued.
    let err = d.fails(&["token", "issue", "--user", "alice", "--ttl", "31d"]);
    assert!(err.contains("lifetime"), "{err}");

    // Bad ids: refused, nothing recorded.
    let err = d.fails(&["token", "revoke", "has space"]);
    assert!(err.contains("InvalidArgument"), "{err}");

    // Revoked: refused from the answer on.
    let r = d.json(&["token", "revoke", &jti]);
    assert_eq!(r["jti"], jti.as_str());
    let started = Instant::now();
    assert_eq!(delegator_id(&d, &net, &tok), 401);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(delegator_id(&d, &net, &spare), 200, "only that token");

    // …and after a restart.
    assert!(d.terminate(), "daemon did not exit cleanly:\n{}", d.logs());
    d.start();
    let deadline = Instant::now() + Duration::from_secs(60);
    while delegator_id(&d, &net, &spare) != 200 {
        assert!(
            Instant::now() < deadline,
            "the network did not come back:\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(delegator_id(&d, &net, &tok), 401);
    assert!(!d.logs().contains(&tok), "a token is in the log");
    assert!(d.terminate(), "daemon did not exit cleanly:\n{}", d.logs());
}

/// A POST through the daemon's delegator (host form) with `tok`: status and body.
fn delegator_rpc(d: &Daemon, net: &str, path_and_query: &str, tok: &str) -> (u16, String) {
    let host = format!("{net}.api.localhost");
    delegator_call(d, hyper::Method::POST, &host, path_and_query, Some(tok))
}

/// One request with an empty body through the daemon's delegator on `host` (the delegator's
/// port is added), with `tok` as the bearer if given: status and body.
fn delegator_call(
    d: &Daemon,
    method: hyper::Method,
    host: &str,
    path_and_query: &str,
    tok: Option<&str>,
) -> (u16, String) {
    let port = d.delegator;
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}{path_and_query}"))
        .header("host", format!("{host}:{port}"));
    if let Some(tok) = tok {
        req = req.header("authorization", format!("Bearer {tok}"));
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let (status, body) = send_blocking(req);
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// [`common::send`] from a synchronous test.
fn send_blocking(req: hyper::Request<http_body_util::Full<bytes::Bytes>>) -> (u16, bytes::Bytes) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(common::send(req))
}

/// Issue 15, observation 1: roles per user, through the real daemon's delegator against a real
/// node. Every row of the role table (`policy::ROLES`, the table of docs/delegator.md) is
/// called by a reader, a writer, an admin and a user given without a role (a writer): the
/// delegator refuses exactly the roles below the row's (403 naming the role), and lets the
/// others reach the node. A writer's MFS is its own directory; a token's `role` claim only
/// lowers; the hard denials stay closed to an admin.
#[test]
fn every_role_table_row_through_the_daemons_delegator() {
    use nexus::access::Role;
    use nexus::delegator::policy::{Scope, ROLES};
    let mut d = Daemon::configure(31900, "");
    d.start();
    let net = format!("ro-{}", random_hex(2));
    d.json(&[
        "network",
        "create",
        &net,
        "--replicas",
        "1",
        "--user",
        "rd:reader",
        "--user",
        "wr:writer",
        "--user",
        "ad:admin",
        "--user",
        "plain",
        "--api-allow",
        "object/stat",
        "--api-allow",
        "resolve",
    ]);
    let err = d.fails(&["network", "create", "ro-bad", "--user", "x:root"]);
    assert!(
        err.contains("InvalidArgument") && err.contains("x:root"),
        "{err}"
    );
    let n = d.json(&["network", "start", &net]);
    assert_eq!(n["status"], "running", "{n}");
    let users = [
        ("rd", Role::Reader),
        ("wr", Role::Writer),
        ("ad", Role::Admin),
        ("plain", Role::Writer),
    ];
    let tokens: Vec<(&str, Role, String)> =
        users.iter().map(|&(u, r)| (u, r, token(&d, u))).collect();
    for &(rule, needed, scope) in ROLES {
        let command = match rule {
            "stats" => "stats/bw",
            r => r,
        };
        for (user, role, tok) in &tokens {
            let query = match (rule, scope) {
                ("files", Scope::OwnDir) => format!("?arg=/{user}/d&parents=true"),
                _ => String::new(),
            };
            let path = format!("/api/v0/{command}{query}");
            let (status, body) = delegator_rpc(&d, &net, &path, tok);
            if *role >= needed {
                assert_ne!(status, 403, "{user} ({role}) {path}: {body}");
            } else {
                assert_eq!(status, 403, "{user} ({role}) {path}: {body}");
                assert!(body.contains(&format!("needs the {needed} role")), "{body}");
            }
        }
    }
    let tok = |u: &str| tokens.iter().find(|t| t.0 == u).expect("user").2.clone();
    // A writer's MFS is /<user>: not another's, not the root; an admin's is everywhere.
    let (s, body) = delegator_rpc(&d, &net, "/api/v0/files/mkdir?arg=/ad/x", &tok("wr"));
    assert_eq!(s, 403, "{body}");
    let (s, _) = delegator_rpc(
        &d,
        &net,
        "/api/v0/files/rm?arg=/wr/d&recursive=true",
        &tok("wr"),
    );
    assert_ne!(s, 403);
    let (s, _) = delegator_rpc(&d, &net, "/api/v0/files/mkdir?arg=/shared", &tok("ad"));
    assert_ne!(s, 403);
    // A token's role claim lowers, never raises.
    let lowered = d.json(&["token", "issue", "--user", "ad", "--role", "reader"]);
    let lowered = lowered["token"].as_str().expect("token").to_owned();
    let (s, body) = delegator_rpc(&d, &net, "/api/v0/pin/rm?arg=x", &lowered);
    assert_eq!(s, 403, "{body}");
    let (s, _) = delegator_rpc(&d, &net, "/api/v0/version", &lowered);
    assert_eq!(s, 200);
    let raised = d.json(&["token", "issue", "--user", "rd", "--role", "admin"]);
    let raised = raised["token"].as_str().expect("token").to_owned();
    let (s, _) = delegator_rpc(&d, &net, "/api/v0/pin/rm?arg=x", &raised);
    assert_eq!(s, 403);
    // Hard denials: no role lifts them.
    for path in [
        "/api/v0/config/show",
        "/api/v0/shutdown",
        "/api/v0/key/export?arg=self",
        "/api/v0/key/list",
        "/api/v0/p2p/ls",
        "/api/v0/swarm/connect?arg=/ip4/1.2.3.4/tcp/1",
        "/api/v0/pin/remote/service/ls",
        "/api/v0/repo/gc",
        "/api/v0/diag/profile",
        "/api/v0/log/level?arg=all&arg=debug",
    ] {
        let (s, body) = delegator_rpc(&d, &net, path, &tok("ad"));
        assert_eq!(s, 403, "{path}: {body}");
    }
    assert!(d.terminate(), "daemon did not exit cleanly:\n{}", d.logs());
}

// ---- Per-network images and upgrades (issue 20) ------------------------------------------

/// A node's RPC API socket on the host (the bind mount of its `/nexus`).
fn node_api(container: &str) -> nexus::node::endpoint::Endpoint {
    let dir = common::inspect(
        container,
        "{{range .Mounts}}{{if eq .Destination \"/nexus\"}}{{.Source}}{{end}}{{end}}",
    );
    assert!(!dir.is_empty(), "{container} has no /nexus mount");
    nexus::node::endpoint::Endpoint::Unix(PathBuf::from(dir).join("api.sock"))
}

/// Docker's RFC 3339 times (`.Created` trims trailing zeros, `logs -t` does not) as
/// (date and time to the second, nanoseconds), comparable.
fn docker_time(t: &str) -> (String, u64) {
    let t = t.trim().trim_end_matches('Z');
    let (secs, frac) = t.split_once('.').unwrap_or((t, "0"));
    let digits: String = frac.chars().take_while(char::is_ascii_digit).collect();
    let nanos = format!("{digits:0<9}").parse().expect("nanoseconds");
    (secs.to_string(), nanos)
}

/// When the container's kubo said `Daemon is ready` (from `docker logs -t`).
fn ready_at(container: &str) -> (String, u64) {
    let logs = docker(&["logs", "-t", container]);
    let line = logs
        .lines()
        .find(|l| l.contains("Daemon is ready"))
        .unwrap_or_else(|| panic!("{container} never said it was ready:\n{logs}"));
    docker_time(line.split_whitespace().next().expect("timestamp"))
}

async fn cat_is(api: &nexus::node::endpoint::Endpoint, cid: &str, want: &[u8]) -> bool {
    common::eventually(Duration::from_secs(60), || async {
        common::try_rpc(api, &format!("cat?arg={cid}"))
            .await
            .is_some_and(|(s, b)| s == 200 && b.as_ref() == want)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_upgrade_migrates_node_by_node_and_a_downgrade_is_refused() {
    let base = image();
    let newer = common::newer_repo_image();
    let mut d = Daemon::configure(22000, "");
    d.start();
    let net = format!("up{}", random_hex(3));
    let v = d.json(&["network", "create", &net, "--replicas", "2", "--start"]);
    assert_eq!(v["image"], base.as_str(), "{v}");
    assert_eq!(v["status"], "running", "{v}");
    let names: Vec<String> = (0..2).map(|i| format!("nexus-{net}-{i}")).collect();
    let mut cids = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let data = format!("added to node {i} of {net} before the upgrade");
        cids.push((add_to(&node_api(name), data.as_bytes()).await, data));
        assert_eq!(docker(&["exec", name, "cat", "/data/ipfs/version"]), "14");
    }

    // (a) The upgrade: both nodes on the newer image, repos migrated, content still there.
    let v = d.json(&["network", "update", &net, "--image", &newer]);
    assert_eq!(v["image"], newer.as_str(), "{v}");
    assert_eq!(v["status"], "running", "{v}");
    for name in &names {
        assert_eq!(common::inspect(name, "{{.Config.Image}}"), newer);
        assert_eq!(docker(&["exec", name, "cat", "/data/ipfs/version"]), "15");
        let logs = docker(&["logs", name]);
        assert!(
            logs.contains("Success: fs-repo migrated to version 15."),
            "{name}: {logs}"
        );
        let api = node_api(name);
        for (cid, data) in &cids {
            assert!(
                cat_is(&api, cid, data.as_bytes()).await,
                "{name} does not serve {cid} after the upgrade"
            );
        }
    }
    // One at a time: node 1's new container was made after node 0 was ready on the new image.
    let made_1 = docker_time(&common::inspect(&names[1], "{{.Created}}"));
    let ready_0 = ready_at(&names[0]);
    assert!(
        made_1 > ready_0,
        "node 1 re-created at {made_1:?}, before node 0 was ready at {ready_0:?}"
    );
    let shown = d.json(&["network", "get", &net]);
    assert_eq!(shown["image"], newer.as_str(), "{shown}");
    let listed = String::from_utf8_lossy(&d.cli(&["network", "list"]).stdout).into_owned();
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&net) && l.trim_end().ends_with(&newer)),
        "{listed}"
    );
    let table = String::from_utf8_lossy(&d.cli(&["network", "get", &net]).stdout).into_owned();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("image") && l.contains(&newer)),
        "{table}"
    );

    // (b) Back to the older repo version: refused up front, nothing restarted or stored.
    let ids: Vec<String> = names
        .iter()
        .map(|n| common::inspect(n, "{{.Id}}"))
        .collect();
    let err = d.fails(&["network", "update", &net, "--image", &base]);
    assert!(
        err.contains("nexus does not migrate repos backwards")
            && err.contains("repo version 14")
            && err.contains("have repo version 15"),
        "{err}"
    );
    let after: Vec<String> = names
        .iter()
        .map(|n| common::inspect(n, "{{.Id}}"))
        .collect();
    assert_eq!(after, ids, "a refused downgrade restarted a node");
    assert_eq!(d.json(&["network", "get", &net])["image"], newer.as_str());
    // A kubo from before 0.37 (the stand-in claiming 0.36.0): refused up front too, on update
    // and on create, nothing restarted, nothing recorded.
    let old = common::derived_image("nexus-test-kubo036", "ENV KUBO_SHIM_VERSION=0.36.0");
    let err = d.fails(&["network", "update", &net, "--image", &old]);
    assert!(
        err.contains("0.34–0.36 lack keys nexus sets") && err.contains("kubo 0.37 or later"),
        "{err}"
    );
    let after: Vec<String> = names
        .iter()
        .map(|n| common::inspect(n, "{{.Id}}"))
        .collect();
    assert_eq!(after, ids, "a refused image change restarted a node");
    let other = format!("old{}", random_hex(3));
    let err = d.fails(&["network", "create", &other, "--image", &old]);
    assert!(err.contains("0.34–0.36 lack keys nexus sets"), "{err}");
    let listed = d.json(&["network", "list"]);
    assert!(!self::names(&listed).contains(&other), "{listed}");
    // A probe leaves nothing behind.
    assert_eq!(
        docker(&["ps", "-aq", "--filter", "label=io.nexus.probe"])
            .lines()
            .filter(|l| !l.is_empty())
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_first_node_that_fails_on_a_new_image_is_put_back_and_the_others_untouched() {
    let base = image();
    // Starts `ipfs version` fine, but its daemon stops at kubo's fatal start-up check.
    let broken = common::derived_image("nexus-test-reuseport", "ENV IPFS_REUSEPORT=1");
    let mut d = Daemon::configure(22100, "");
    d.start();
    let net = format!("fb{}", random_hex(3));
    d.json(&["network", "create", &net, "--replicas", "2", "--start"]);
    let names: Vec<String> = (0..2).map(|i| format!("nexus-{net}-{i}")).collect();
    let data = format!("added to {net} before the failed upgrade");
    let cid = add_to(&node_api(&names[0]), data.as_bytes()).await;
    let ids: Vec<String> = names
        .iter()
        .map(|n| common::inspect(n, "{{.Id}}"))
        .collect();

    let err = d.fails(&["network", "update", &net, "--image", &broken]);
    assert!(
        err.contains(&format!("stays on `{base}`")) && err.contains("node 0 did not come up"),
        "{err}"
    );
    assert!(
        err.contains("support for IPFS_REUSEPORT was removed"),
        "the node's own words: {err}"
    );
    // Node 0 was tried and put back on the old image; node 1 was not touched.
    assert_ne!(common::inspect(&names[0], "{{.Id}}"), ids[0]);
    assert_eq!(common::inspect(&names[0], "{{.Config.Image}}"), base);
    assert_eq!(common::inspect(&names[0], "{{.State.Status}}"), "running");
    assert_eq!(common::inspect(&names[1], "{{.Id}}"), ids[1]);
    assert_eq!(common::inspect(&names[1], "{{.Config.Image}}"), base);
    let v = d.json(&["network", "get", &net]);
    assert_eq!(v["image"], base.as_str(), "{v}");
    assert_eq!(v["status"], "running", "{v}");
    assert!(
        v["nodes"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(&broken)),
        "{v}"
    );
    // Still serving, on both nodes.
    for name in &names {
        assert!(
            cat_is(&node_api(name), &cid, data.as_bytes()).await,
            "{name} does not serve {cid} after the rollback"
        );
    }
}

async fn add_to(api: &nexus::node::endpoint::Endpoint, data: &[u8]) -> String {
    common::add(api, data).await
}

/// Issue 18: a host that is full refuses the next start up front, saying which limit and by how
/// much, and changes nothing; stopping a network frees its room.
#[test]
fn a_full_host_refuses_the_next_start_up_front_with_the_reason() {
    let mut d = Daemon::configure(25000, "");
    // 1 GiB admitted for nodes of 256 MiB (the harness's profile): four nodes fit, a fifth not.
    d.edit_config(
        "disk = \"512MiB\"",
        "disk = \"512MiB\"\nhost_memory = \"1GiB\"\nmax_nodes = 6",
    );
    d.start();
    let id = random_hex(2);
    let (a, b) = (format!("full-{id}-a"), format!("full-{id}-b"));
    let n = d.json(&["network", "create", &a, "--replicas", "3", "--start"]);
    assert_eq!(n["status"], "running", "{n}");
    d.json(&["network", "create", &b, "--replicas", "2"]);

    let err = d.fails(&["network", "start", &b]);
    assert!(err.contains("ResourceExhausted"), "{err}");
    assert!(
        err.contains("starting network `") && err.contains("needs 512 MiB of memory limits"),
        "the refusal does not say what was asked: {err}"
    );
    assert!(
        err.contains("768 MiB of it held by running networks: 256 MiB short"),
        "the refusal does not say by how much: {err}"
    );
    assert!(err.contains("node.memory_overcommit"), "{err}");
    // Nothing changed: b is stopped and has no container.
    assert_stopped_without_containers(&d, &b);

    // A running network may not grow past the host either, and keeps its size.
    let err = d.fails(&["network", "update", &a, "--replicas", "5"]);
    assert!(
        err.contains("ResourceExhausted") && err.contains("short"),
        "{err}"
    );
    assert_eq!(d.json(&["network", "get", &a])["replicas"], 3);
    // Growing to exactly what fits is fine.
    let n = d.json(&["network", "update", &a, "--replicas", "4"]);
    assert_eq!(n["replicas"], 4, "{n}");

    // Stopping a frees its room.
    d.json(&["network", "stop", &a]);
    let n = d.json(&["network", "start", &b]);
    assert_eq!(n["status"], "running", "{n}");
    d.json(&["network", "remove", &b, "--force"]);
    d.json(&["network", "remove", &a, "--force"]);
}

/// Issue 18: a host whose nodes use the CPU that `node.cpu_budget` leaves them refuses the
/// next start up front, with what one node was measured to use, and changes nothing. The
/// budget is set tiny here, so that two idle nodes already use it.
#[test]
fn a_host_whose_nodes_use_its_cpu_budget_refuses_the_next_start() {
    let mut d = Daemon::configure(25040, "");
    d.edit_config(
        "disk = \"512MiB\"",
        "disk = \"512MiB\"\ncpu_budget = \"0.001\"\ncpu_meter_interval = \"1s\"",
    );
    let metrics_port = free_port();
    d.edit_config(
        "[metrics]\nlisten = \"\"",
        &format!("[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\ninterval = \"1s\""),
    );
    d.start();
    let id = random_hex(2);
    let (a, b) = (format!("cpu-{id}-a"), format!("cpu-{id}-b"));
    // Nothing is measured yet: admitted.
    let n = d.json(&["network", "create", &a, "--replicas", "2", "--start"]);
    assert_eq!(n["status"], "running", "{n}");
    d.json(&["network", "create", &b]);
    // The meter reads a's nodes once they have run two intervals.
    assert!(
        poll_until(Duration::from_secs(60), || gauge(
            &metrics_text(metrics_port),
            "nexus_node_cpu_measured_cores"
        )
        .is_some_and(|c| c > 0.0)),
        "no CPU measured:\n{}",
        tail(&d.logs(), 30)
    );
    let budget = gauge(
        &metrics_text(metrics_port),
        "nexus_admission_cpu_budget_cores",
    );
    assert!(
        budget.is_some_and(|b| b > 0.0 && b < 0.1),
        "the budget is the host's cores × 0.001: {budget:?}"
    );

    let err = d.fails(&["network", "start", &b]);
    assert!(err.contains("ResourceExhausted"), "{err}");
    assert!(
        err.contains(&format!("starting network `{b}` (1 node(s)) needs about"))
            && err.contains("% of a core that one running node uses here (measured)")
            && err.contains("node.cpu_budget 0.001")
            && err.contains("the 2 node(s) of running networks use about")
            && err.contains("short"),
        "the refusal does not say what holds it: {err}"
    );
    // Nothing changed: b is stopped and has no container; a still runs.
    assert_stopped_without_containers(&d, &b);
    assert_eq!(d.json(&["network", "get", &a])["status"], "running");
    assert!(
        metrics_text(metrics_port).contains("nexus_admission_refusals_total{limit=\"cpu\"} 1"),
        "the refusal is not counted"
    );
    d.json(&["network", "remove", &b, "--force"]);
    d.json(&["network", "remove", &a, "--force"]);
}

#[test]
fn replication_is_set_checked_and_shown() {
    let mut d = Daemon::configure(23000, "");
    d.start();
    // Default: min(2, replicas).
    let n = d.json(&["network", "create", "rep-a", "--replicas", "3"]);
    assert_eq!(n["replication"], "2", "{n}");
    let n = d.json(&["network", "create", "rep-b"]);
    assert_eq!(n["replication"], "1", "{n}");
    // Explicit, and `all`.
    let n = d.json(&[
        "network",
        "create",
        "rep-c",
        "--replicas",
        "2",
        "--replication",
        "all",
    ]);
    assert_eq!(n["replication"], "all", "{n}");
    // Bad input: a clear error, nothing recorded or changed.
    let err = d.fails(&[
        "network",
        "create",
        "rep-d",
        "--replicas",
        "2",
        "--replication",
        "3",
    ]);
    assert!(err.contains("at most 2"), "{err}");
    let err = d.fails(&["network", "create", "rep-d", "--replication", "two"]);
    assert!(err.contains("not a number of nodes"), "{err}");
    let err = d.fails(&["network", "create", "rep-d", "--replication", "0"]);
    assert!(err.contains("at least 1"), "{err}");
    let err = d.fails(&["network", "get", "rep-d"]);
    assert!(err.contains("rep-d"), "{err}");
    let err = d.fails(&[
        "network",
        "update",
        "rep-a",
        "--replication",
        "4",
        "--cpus",
        "0.25",
    ]);
    assert!(err.contains("at most 3"), "{err}");
    let n = d.json(&["network", "get", "rep-a"]);
    assert_eq!(n["replication"], "2", "{n}");
    assert_eq!(n["resources"]["cpu_millis"], 500, "{n}");
    // Update, alone or with the replicas (checked against the new count).
    let n = d.json(&["network", "update", "rep-a", "--replication", "3"]);
    assert_eq!(n["replication"], "3", "{n}");
    let n = d.json(&[
        "network",
        "update",
        "rep-b",
        "--replicas",
        "2",
        "--replication",
        "2",
    ]);
    assert_eq!(
        (n["replicas"].as_u64(), n["replication"].as_str()),
        (Some(2), Some("2"))
    );
    // The table shows it too.
    let out = d.cli(&["network", "get", "rep-c"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("replication") && l.trim_end().ends_with("all")),
        "{table}"
    );
}

/// One call to a node's own RPC socket (found through the container's `/nexus` bind mount),
/// not through nexus: the body of the answer, `None` when the node does not answer.
fn node_rpc(
    container: &str,
    path_and_query: &str,
    body: &[u8],
    content_type: &str,
) -> Option<String> {
    use std::io::{Read, Write};
    let out = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{range .Mounts}}{{if eq .Destination \"/nexus\"}}{{.Source}}{{end}}{{end}}",
            container,
        ])
        .output()
        .ok()?;
    let dir = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut s =
        std::os::unix::net::UnixStream::connect(Path::new(dir.trim()).join("api.sock")).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let head = format!(
        "POST /api/v0/{path_and_query} HTTP/1.1\r\nHost: node\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let (status, rest) = out.split_once("\r\n\r\n")?;
    status.contains(" 200 ").then(|| rest.to_string())
}

/// The CIDs a node pins recursively, asked on its own RPC socket; `None` when the node does
/// not answer.
fn node_pins_checked(container: &str) -> Option<std::collections::BTreeSet<String>> {
    let body = node_rpc(container, "pin/ls?type=recursive", b"", "text/plain")?;
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) if a < b => &body[a..=b],
        _ => return None,
    };
    serde_json::from_str::<Value>(json)
        .ok()
        .and_then(|v| v["Keys"].as_object().map(|m| m.keys().cloned().collect()))
}

/// The CIDs a node pins recursively. Empty when the node does not answer.
fn node_pins(container: &str) -> std::collections::BTreeSet<String> {
    node_pins_checked(container).unwrap_or_default()
}

/// Indices of the network's nodes (0..n) whose own `pin/ls` lists `cid`.
fn holders(net: &str, n: u16, cid: &str) -> Vec<u16> {
    (0..n)
        .filter(|i| node_pins(&format!("nexus-{net}-{i}")).contains(cid))
        .collect()
}

/// Adds `data` through the daemon's delegator (RPC `add`, which pins on the node that takes
/// it) and returns its CID.
fn add_through_delegator(d: &Daemon, net: &str, user: &str, data: &str) -> String {
    use bytes::Bytes;
    use http_body_util::Full;
    let tok = token(d, user);
    let port = d.delegator;
    let boundary = "nexus-pins-boundary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n{data}\r\n--{boundary}--\r\n"
    );
    let req = hyper::Request::post(format!("http://127.0.0.1:{port}/network/{net}/api/v0/add"))
        .header("host", format!("localhost:{port}"))
        .header("authorization", format!("Bearer {tok}"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let (status, out) = send_blocking(req);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&out));
    let text = String::from_utf8_lossy(&out).into_owned();
    let last = text.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
    serde_json::from_str::<Value>(last).expect("add JSON")["Hash"]
        .as_str()
        .expect("Hash")
        .to_string()
}

/// The value of an unlabelled gauge in a `/metrics` text.
fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

/// After a refused start: `net` is still stopped, as meant, and has no container.
fn assert_stopped_without_containers(d: &Daemon, net: &str) {
    let got = d.json(&["network", "get", net]);
    assert_eq!(got["desired"], "stopped", "{got}");
    assert_eq!(got["status"], "stopped", "{got}");
    let containers = common::docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=io.nexus.instance={}", d.instance),
        "--filter",
        &format!("name=nexus-{net}-"),
    ]);
    assert!(
        containers.trim().is_empty(),
        "{net} has containers: {containers}"
    );
}

/// The daemon's `/metrics` text (empty when it does not answer).
fn metrics_text(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let req = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if s.write_all(req.as_bytes()).is_err() {
        return String::new();
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// One RPC call through the daemon's delegator as `user`; returns the status code.
fn delegator_rpc_as(d: &Daemon, net: &str, user: &str, path_and_query: &str) -> u16 {
    let path = format!("/network/{net}/api/v0/{path_and_query}");
    delegator_call(
        d,
        hyper::Method::POST,
        "localhost",
        &path,
        Some(&token(d, user)),
    )
    .0
}

fn pin_status(d: &Daemon, net: &str, id: &str) -> String {
    d.json(&["pin", "get", net, id])["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn pinset_keeps_two_copies_through_disk_loss_and_scaling() {
    let mut d = Daemon::configure(23020, "");
    d.edit_config(
        "disk = \"512MiB\"",
        "disk = \"512MiB\"\npin_interval = \"1s\"\npin_timeout = \"20s\"\npin_fail_after = \"20s\"",
    );
    let metrics_port = free_port();
    d.edit_config(
        "[metrics]\nlisten = \"\"",
        &format!("[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\ninterval = \"1s\""),
    );
    d.start();
    let net = format!("pins-{}", random_hex(3));
    let n = d.json(&[
        "network",
        "create",
        &net,
        "--replicas",
        "3",
        "--replication",
        "2",
        "--user",
        "alice",
        "--user",
        "root:admin",
        "--start",
    ]);
    assert_eq!(n["status"], "running", "{n}");
    let limit = Duration::from_secs(90);

    // A plain RPC `add` through the delegator joins the pinset, on behalf of the token's user.
    let cid = add_through_delegator(&d, &net, "alice", &format!("durable {net}"));
    let mut id = String::new();
    assert!(
        poll_until(limit, || {
            let l = d.json(&["pin", "ls", &net, "--cid", &cid]);
            id = l["pins"][0]["request_id"]
                .as_str()
                .unwrap_or("")
                .to_string();
            l["count"] == 1 && l["pins"][0]["owner"] == "alice"
        }),
        "the add did not join the pinset:\n{}",
        tail(&d.logs(), 30)
    );
    assert_eq!(id.len(), 32);
    assert_ne!(id, cid, "the request id is not the CID");
    assert!(
        poll_until(limit, || pin_status(&d, &net, &id) == "pinned"
            && holders(&net, 3, &cid).len() == 2),
        "not pinned on two nodes: {:?} {}",
        holders(&net, 3, &cid),
        tail(&d.logs(), 30)
    );
    // A CID no node has: queued, then failed with a reason after pin_fail_after, never stuck.
    let absent = format!("f01551220{}", random_hex(32));
    let p = d.json(&[
        "pin", "add", &net, &absent, "--name", "report", "--meta", "app=e2e",
    ]);
    let absent_id = p["request_id"].as_str().expect("request id").to_string();
    assert_eq!(p["status"], "queued", "{p}");
    assert!(
        p["cid"].as_str().unwrap_or("").starts_with("bafkrei"),
        "kept in base32: {p}"
    );
    let mut failed = Value::Null;
    assert!(
        poll_until(limit, || {
            failed = d.json(&["pin", "get", &net, &absent_id]);
            failed["status"] == "failed"
        }),
        "never failed: {failed}"
    );
    assert!(
        failed["reason"]
            .as_str()
            .unwrap_or("")
            .contains("no node could pin"),
        "{failed}"
    );
    let f = d.json(&["pin", "ls", &net, "--status", "failed", "--meta", "app=e2e"]);
    assert_eq!(f["count"], 1, "{f}");
    assert_eq!(f["pins"][0]["name"], "report");
    d.json(&["pin", "rm", &net, &absent_id]);
    // Exactly two, and it stays so (the loop runs every second).
    std::thread::sleep(Duration::from_secs(3));
    let two = holders(&net, 3, &cid);
    assert_eq!(two.len(), 2, "{two:?}");
    let listed = d.json(&["pin", "ls", &net]);
    assert_eq!(listed["count"], 1, "{listed}");
    assert_eq!(listed["pins"][0]["cid"], cid.as_str());
    let out = d.cli(&["pin", "ls", &net]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));
    let g = d.json(&["network", "get", &net]);
    assert_eq!(g["pins"]["pinned"], 1, "{g}");
    assert_eq!(g["under_replicated"], false, "{g}");
    assert_eq!(g["under_replicated_pins"], 0, "{g}");
    // The gauges (refreshed every second).
    let want = format!("nexus_pins{{network=\"{net}\",status=\"pinned\"}} 1");
    assert!(
        poll_until(Duration::from_secs(30), || metrics_text(metrics_port)
            .contains(&want)),
        "no `{want}` in:\n{}",
        metrics_text(metrics_port)
    );
    let want = format!("nexus_pins_under_replicated{{network=\"{net}\"}} 0");
    assert!(
        poll_until(Duration::from_secs(30), || metrics_text(metrics_port)
            .contains(&want)),
        "no `{want}`"
    );

    // Bad input changes nothing.
    let other = format!("pino-{}", random_hex(3));
    d.json(&["network", "create", &other]);
    let err = d.fails(&["pin", "add", &net, "not-a-cid"]);
    assert!(err.contains("not a valid CID"), "{err}");
    let long = "n".repeat(300);
    let err = d.fails(&["pin", "add", &net, &cid, "--name", &long]);
    assert!(err.contains("at most 255"), "{err}");
    let big = format!("k={}", "v".repeat(5000));
    let err = d.fails(&["pin", "add", &net, &cid, "--meta", &big]);
    assert!(err.contains("at most 4096"), "{err}");
    let err = d.fails(&["pin", "get", &net, &random_hex(16)]);
    assert!(err.contains("no pin with request id"), "{err}");
    let err = d.fails(&["pin", "get", &other, &id]);
    assert!(
        err.contains("no pin with request id"),
        "another network's id: {err}"
    );
    let err = d.fails(&["pin", "rm", &other, &id]);
    assert!(err.contains("NotFound"), "{err}");
    let err = d.fails(&["pin", "add", "no-such-net", &cid]);
    assert!(err.contains("no network named"), "{err}");
    assert_eq!(d.json(&["pin", "ls", &net])["count"], 1);
    assert_eq!(pin_status(&d, &net, &id), "pinned");

    // Disk loss: a holder's container and volume go; nothing is asked of nexus.
    let lost = two[0];
    let container = format!("nexus-{net}-{lost}");
    docker(&["rm", "-f", &container]);
    docker(&["volume", "rm", "-f", &format!("{container}-data")]);
    assert!(
        poll_until(Duration::from_secs(120), || holders(&net, 3, &cid).len()
            == 2),
        "not back on two nodes: {:?}\n{}",
        holders(&net, 3, &cid),
        tail(&d.logs(), 40)
    );
    assert_eq!(pin_status(&d, &net, &id), "pinned");
    // The time it took is in the re-replication histogram.
    let want = format!("nexus_pin_rereplication_duration_seconds_count{{network=\"{net}\"}} ");
    assert!(
        poll_until(Duration::from_secs(30), || metrics_text(metrics_port)
            .contains(&want)),
        "no `{want}` in:\n{}",
        metrics_text(metrics_port)
    );
    assert!(
        d.logs().contains("pin(s) re-replicated"),
        "no re-replication event"
    );
    // Once the lost node is back, the copies settle on the lowest indices (the nodes a
    // scale-down keeps), never fewer than two meanwhile.
    assert!(
        poll_until(limit, || {
            let h = holders(&net, 3, &cid);
            assert!(h.len() >= 2, "a copy went missing while settling: {h:?}");
            h == vec![0, 1]
        }),
        "copies did not settle on nodes 0 and 1: {:?}",
        holders(&net, 3, &cid)
    );

    // Scale 3 → 1: under-replicated, reported, the content still there.
    let n = d.json(&["network", "update", &net, "--replicas", "1"]);
    assert_eq!(n["status"], "running", "{n}");
    assert!(
        poll_until(limit, || d.json(&["network", "get", &net])
            ["under_replicated"]
            == true),
        "not reported under-replicated"
    );
    assert_eq!(holders(&net, 1, &cid), vec![0], "node 0 keeps its copy");
    assert_eq!(pin_status(&d, &net, &id), "pinned");
    let g = d.json(&["network", "get", &net]);
    assert_eq!(g["replication"], "2");
    // Back to 3: two copies again.
    d.json(&["network", "update", &net, "--replicas", "3"]);
    assert!(
        poll_until(limit, || holders(&net, 3, &cid).len() == 2
            && d.json(&["network", "get", &net])["under_replicated"] == false),
        "not two copies after scaling up: {:?}",
        holders(&net, 3, &cid)
    );

    // `pin/rm` through the delegator (an admin's command) removes the CID from the set, alice's
    // pin included: unpinned on every node.
    assert_eq!(
        delegator_rpc_as(&d, &net, "alice", &format!("pin/rm?arg={cid}")),
        403,
        "a writer may not unpin"
    );
    assert_eq!(pin_status(&d, &net, &id), "pinned");
    assert_eq!(
        delegator_rpc_as(&d, &net, "root", &format!("pin/rm?arg={cid}")),
        200
    );
    assert!(
        poll_until(limit, || holders(&net, 3, &cid).is_empty()),
        "still pinned on {:?}",
        holders(&net, 3, &cid)
    );
    let err = d.fails(&["pin", "get", &net, &id]);
    assert!(err.contains("no pin with request id"), "{err}");
    assert_eq!(d.json(&["pin", "ls", &net])["count"], 0);
}

/// Adds `data` on one node directly (its own RPC socket, pinned there only); its CID.
fn add_on_node(container: &str, data: &str) -> String {
    let boundary = "nexus-drain-boundary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n{data}\r\n--{boundary}--\r\n"
    );
    let out = node_rpc(
        container,
        "add?pin=true",
        body.as_bytes(),
        &format!("multipart/form-data; boundary={boundary}"),
    )
    .expect("the node answers add");
    let json = &out[out.find('{').expect("JSON")..=out.rfind('}').expect("JSON")];
    serde_json::from_str::<Value>(json).expect("add JSON")["Hash"]
        .as_str()
        .expect("Hash")
        .to_string()
}

/// Issue 16, scale-down draining: 3 → 2 with replication 2 keeps two copies of every pin
/// throughout. A copy is a node's own `pin/ls` listing the CID; a node that does not answer
/// for a moment (re-created for its new peer list) keeps its last answer while its volume
/// exists, and a removed node (volume gone) holds nothing.
#[test]
fn a_scale_down_copies_the_pins_of_the_nodes_it_removes_first() {
    let mut d = Daemon::configure(27000, "");
    d.edit_config(
        "disk = \"512MiB\"",
        "disk = \"512MiB\"\npin_interval = \"1s\"\npin_timeout = \"20s\"\npin_drain_timeout = \"150s\"",
    );
    d.edit_config("[node]", "[node]\nop_timeout = \"5m\"");
    d.start();
    let net = format!("drain-{}", random_hex(3));
    let n = d.json(&[
        "network",
        "create",
        &net,
        "--replicas",
        "3",
        "--replication",
        "2",
        "--user",
        "alice",
        "--start",
    ]);
    assert_eq!(n["status"], "running", "{n}");
    let limit = Duration::from_secs(120);
    // Content that only node 2 (the one the scale-down removes) has at first, and some that
    // comes in through the delegator.
    let mut cids = vec![
        add_on_node(&format!("nexus-{net}-2"), &format!("only on two {net}")),
        add_on_node(&format!("nexus-{net}-2"), &format!("also on two {net}")),
    ];
    for c in cids.clone() {
        d.json(&["pin", "add", &net, &c]);
    }
    cids.push(add_through_delegator(
        &d,
        &net,
        "alice",
        &format!("via {net}"),
    ));
    for cid in &cids {
        assert!(
            poll_until(limit, || {
                let l = d.json(&["pin", "ls", &net, "--cid", cid]);
                l["pins"][0]["status"] == "pinned" && holders(&net, 3, cid).len() == 2
            }),
            "{cid} not pinned on two nodes: {:?}\n{}",
            holders(&net, 3, cid),
            tail(&d.logs(), 30)
        );
    }
    // Node 2 holds the first two (the placement keeps a holder).
    for cid in &cids[..2] {
        assert!(
            holders(&net, 3, cid).contains(&2),
            "{cid}: {:?}",
            holders(&net, 3, cid)
        );
    }

    // Watch every node's pin/ls while the scale-down runs. Each sample looks at the volumes
    // first, then asks the nodes that have one: an answer is never older than the removal it
    // is counted against. A node that does not answer (re-created for its new peer list)
    // keeps its last answer, unless a node was removed since: then it counts as unknown (not
    // as missing) until it answers again, from the same volume. A removed node (volume gone)
    // holds nothing. Sampling ends once the update has returned and every node answered.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let watcher = {
        let (stop, net, cids) = (stop.clone(), net.clone(), cids.clone());
        std::thread::spawn(move || {
            let container = |i: usize| format!("nexus-{net}-{i}");
            let volume = |i: usize| {
                Command::new("docker")
                    .args(["volume", "inspect", &format!("{}-data", container(i))])
                    .output()
                    .is_ok_and(|o| o.status.success())
            };
            // Where each node stands before the scale-down, read until it answers (an
            // unanswered read is not an empty pinset).
            let mut last: Vec<Option<std::collections::BTreeSet<String>>> = (0..3)
                .map(|i| {
                    (0..40).find_map(|_| {
                        node_pins_checked(&container(i)).or_else(|| {
                            std::thread::sleep(Duration::from_millis(250));
                            None
                        })
                    })
                })
                .collect();
            let _ = ready_tx.send(());
            let mut present = [true; 3];
            let mut fewest = usize::MAX;
            let mut samples = 0u32;
            let mut worst = String::new();
            let deadline = Instant::now() + Duration::from_secs(600);
            loop {
                let done = stop.load(std::sync::atomic::Ordering::Relaxed);
                let now: Vec<bool> = (0..3).map(volume).collect();
                for i in 0..3 {
                    if present[i] && !now[i] {
                        // Removed: what the others said before may predate their copies.
                        for (j, seen) in last.iter_mut().enumerate() {
                            *seen = if j == i {
                                Some(Default::default())
                            } else {
                                None
                            };
                        }
                    }
                }
                present.copy_from_slice(&now);
                for (i, seen) in last.iter_mut().enumerate() {
                    if present[i] {
                        if let Some(pins) = node_pins_checked(&container(i)) {
                            *seen = Some(pins);
                        }
                    }
                }
                for cid in &cids {
                    // Unknown counts as held until its next answer says otherwise.
                    let copies = last
                        .iter()
                        .filter(|s| s.as_ref().is_none_or(|s| s.contains(cid)))
                        .count();
                    if copies < fewest {
                        fewest = copies;
                        worst = format!("{cid} on {copies} node(s) at sample {samples}: {last:?}");
                    }
                }
                samples += 1;
                if done && last.iter().all(Option::is_some) || Instant::now() > deadline {
                    break;
                }
            }
            (fewest, samples, worst, last)
        })
    };
    // The update is sent once the watcher knows where every node stands.
    ready_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the watcher read the nodes");
    let n = d.json(&["network", "update", &net, "--replicas", "2"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (fewest, samples, worst, last) = watcher.join().expect("watcher");
    assert_eq!(n["status"], "running", "{n}");
    assert_eq!(n["replicas"], 2, "{n}");
    assert!(samples > 1, "the watcher saw the scale-down");
    assert!(
        last.iter().all(Option::is_some),
        "a node never answered after the removal: {last:?}"
    );
    // No copy was made after the removal (a re-replication would hide a lost copy from the
    // watcher while nodes 0 and 1 were re-created): the daemon logs every pin it completes.
    let logs = d.logs();
    // (Fields may be coloured: the line is matched by its parts.)
    let node2 = format!("{net}/2");
    let removed = logs
        .lines()
        .position(|l| l.contains("node removed") && l.contains(&node2))
        .unwrap_or_else(|| panic!("node 2's removal is not logged:\n{}", tail(&logs, 30)));
    for line in logs.lines().skip(removed) {
        assert!(
            !(line.contains(" pinned ") && cids.iter().any(|c| line.contains(c.as_str()))),
            "a copy was made only after node 2 was removed: {line}"
        );
    }
    assert!(
        fewest >= 2,
        "a copy went missing: {worst}\n{}",
        tail(&d.logs(), 40)
    );
    // Node 2 is gone; nodes 0 and 1 hold everything, and the pins stay pinned.
    assert!(
        docker(&["ps", "-aq", "--filter", &format!("name=nexus-{net}-2")])
            .trim()
            .is_empty()
    );
    for cid in &cids {
        assert_eq!(holders(&net, 2, cid), vec![0, 1], "{cid}");
        let l = d.json(&["pin", "ls", &net, "--cid", cid]);
        assert_eq!(l["pins"][0]["status"], "pinned", "{l}");
    }
    let logs = d.logs();
    assert!(
        logs.contains("pin_drain") && logs.contains("are on the remaining nodes"),
        "no drain event:\n{}",
        tail(&logs, 40)
    );
    let g = d.json(&["network", "get", &net]);
    assert_eq!(g["under_replicated"], false, "{g}");
    // `network stats` has the pinset in figures too (table and JSON).
    let st = d.json(&["network", "stats", &net]);
    assert_eq!(st["pins"]["pinned"], 3, "{st}");
    assert_eq!(st["pins"]["failed"], 0, "{st}");
    assert_eq!(st["under_replicated_pins"], 0, "{st}");
    assert_eq!(st["under_replicated"], false, "{st}");
    assert_eq!(st["replication"], "2", "{st}");
    assert_eq!(st["nodes"].as_array().map(Vec::len), Some(2), "{st}");
    let out = d.cli(&["network", "stats", &net]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "pins: 3 pinned, 0 pinning, 0 queued, 0 failed; 0 under-replicated (replication 2)"
        ),
        "{text}"
    );
}

/// A GET through the daemon's delegator on `host` (no token): status and body.
fn delegator_get(d: &Daemon, host: &str, path: &str) -> (u16, String) {
    delegator_call(d, hyper::Method::GET, host, path, None)
}

/// Issue 15, observation 7: `/ipns/` names that need DNS are refused on a public gateway
/// unless the network enables them (`--ipns-dns`). Refused by default (403 naming the switch,
/// nothing reaches the node); a bad update changes nothing; once enabled the request is
/// forwarded to the node (its own answer, not the delegator's refusal), in both forms; the
/// setting shows in `network get` (table and JSON) and survives a restart.
#[test]
fn ipns_dns_names_on_a_public_gateway_only_when_the_network_enables_them() {
    let mut d = Daemon::configure(21000, "");
    d.start();
    let net = format!("ipd-{}", random_hex(2));
    let n = d.json(&[
        "network",
        "create",
        &net,
        "--user",
        "alice",
        "--gateway-public",
        "--start",
    ]);
    assert_eq!(n["status"], "running", "{n}");
    assert_eq!(n["ipns_dns"], false, "off by default: {n}");
    let host_form = (
        format!("{net}.gateway.localhost"),
        "/ipns/example.com/".to_string(),
    );
    let path_form = (
        "localhost".to_string(),
        format!("/network/{net}/gateway/ipns/example.com/"),
    );
    let refused = |d: &Daemon| {
        for (host, path) in [&host_form, &path_form] {
            let (s, body) = delegator_get(d, host, path);
            assert_eq!(s, 403, "{host}{path}: {body}");
            assert!(
                body.contains("need DNS") && body.contains("--ipns-dns true"),
                "{body}"
            );
        }
        // A key, not a DNS name, is served (it needs no look-up).
        let (s, body) = delegator_get(
            d,
            &host_form.0,
            "/ipns/k51qzi5uqu5dlvj2baxnqndepeb86cbk3ng7n3i46uzyxzyqj2xjonzllnv0v8/",
        );
        assert!(!body.contains("need DNS"), "{s} {body}");
    };
    refused(&d);
    let table = String::from_utf8_lossy(&d.cli(&["network", "get", &net]).stdout).into_owned();
    assert!(table.contains("refused (public gateway)"), "{table}");

    // Bad input changes nothing.
    let err = d.fails(&["network", "update", &net, "--ipns-dns", "maybe"]);
    assert!(err.contains("--ipns-dns"), "{err}");
    let err = d.fails(&[
        "network",
        "update",
        &net,
        "--ipns-dns",
        "true",
        "--api-allow",
        "Not A Command",
    ]);
    assert!(err.contains("InvalidArgument"), "{err}");
    let err = d.fails(&["network", "update", "ipd-nosuch", "--ipns-dns", "true"]);
    assert!(err.contains("NotFound"), "{err}");
    assert_eq!(d.json(&["network", "get", &net])["ipns_dns"], false);
    refused(&d);

    // Enabled: forwarded to the node, which answers for itself.
    let n = d.json(&["network", "update", &net, "--ipns-dns", "true"]);
    assert_eq!(n["ipns_dns"], true, "{n}");
    let served = |d: &Daemon| {
        for (host, path) in [&host_form, &path_form] {
            let (s, body) = delegator_get(d, host, path);
            assert_ne!(s, 403, "{host}{path}: {body}");
            assert!(!body.contains("need DNS"), "{host}{path}: {s} {body}");
            // Not one of the delegator's own answers (JSON errors): the node's.
            assert!(
                serde_json::from_str::<Value>(&body).is_err(),
                "{host}{path}: {s} {body}"
            );
        }
    };
    served(&d);
    let table = String::from_utf8_lossy(&d.cli(&["network", "get", &net]).stdout).into_owned();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("ipns dns") && l.ends_with("served")),
        "{table}"
    );

    // Kept across a restart (the store), and switched off again.
    assert!(d.terminate(), "daemon did not exit cleanly:\n{}", d.logs());
    d.start();
    assert_eq!(d.json(&["network", "get", &net])["ipns_dns"], true);
    let deadline = Instant::now() + Duration::from_secs(60);
    while delegator_get(&d, &host_form.0, &host_form.1).0 == 503 {
        assert!(
            Instant::now() < deadline,
            "the network did not come back:\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    served(&d);
    d.json(&["network", "update", &net, "--ipns-dns", "false"]);
    refused(&d);
    assert!(d.terminate(), "daemon did not exit cleanly:\n{}", d.logs());
}
