//! The fixture of the Pinning Service API tests: a daemon on this file's ports (26000-26999
//! only), its CLI, and requests through its delegator in both routing forms.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;

use super::common::{self, docker, image};

pub(crate) const KEY: &str = "test-key-psa-0123456789abcdefghijklmnopqrstuvwxyz";
pub(crate) const GRPC: u16 = 26090;
pub(crate) const DELEGATOR: u16 = 26091;
pub(crate) const SWARM: u16 = 26000;

pub(crate) fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("rng");
    hex::encode(b)
}

/// A daemon process with its own directory, configuration and Docker owner scope.
pub(crate) struct Daemon {
    dir: PathBuf,
    config: PathBuf,
    instance: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    pub(crate) fn start() -> Daemon {
        let id = random_hex(3);
        let dir = std::env::temp_dir().join(format!("nexus-psa-{id}"));
        std::fs::create_dir_all(&dir).expect("dir");
        let instance = format!("psa-{id}");
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
pin_interval = "1s"
pin_timeout = "3s"
pin_fail_after = "8s"

[ports]
swarm = "{s0}-{s1}"

[grpc]
listen = "127.0.0.1:{GRPC}"
api_keys = ["{KEY}"]

[delegator]
listen = "127.0.0.1:{DELEGATOR}"
rate_per_client = "0"
rate_per_user = "0"
concurrent_per_client = 0
concurrent_per_user = 0

[metrics]
listen = ""

[log]
level = "info,nexus=debug"
"#,
            data = dir.join("data").display(),
            image = image(),
            s0 = SWARM,
            s1 = SWARM + 19,
        );
        std::fs::write(&config, text).expect("config");
        let log = dir.join("daemon.log");
        let child = Command::new(env!("CARGO_BIN_EXE_nexus"))
            .arg("--config")
            .arg(&config)
            .arg("daemon")
            .env_remove("NEXUS_CONFIG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn daemon");
        let mut d = Daemon {
            dir,
            config,
            instance,
            child: Some(child),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", GRPC)).is_err() {
            let exited = d
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
                .is_some();
            assert!(
                !exited && Instant::now() < deadline,
                "daemon did not listen:\n{}",
                d.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        d
    }

    pub(crate) fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_nexus"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("NEXUS_CONFIG")
            .env_remove("NEXUS_CLIENT_API_KEY")
            .env_remove("NEXUS_CLIENT_ADDRESS")
            .output()
            .expect("run cli")
    }

    pub(crate) fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.cli(&all);
        assert!(
            out.status.success(),
            "nexus {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        serde_json::from_slice(&out.stdout).expect("one JSON document")
    }

    /// A token of `user`; `extra`: `--role r`, `--net n`.
    pub(crate) fn token(&self, user: &str, extra: &[&str]) -> String {
        let mut args = vec!["token", "issue", "--user", user, "--ttl", "30m"];
        args.extend_from_slice(extra);
        let out = self.cli(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let filter = format!("label=io.nexus.instance={}", self.instance);
        for id in docker(&["ps", "-aq", "--filter", &filter]).split_whitespace() {
            let _ = Command::new("docker").args(["rm", "-fv", id]).output();
        }
        for id in docker(&["volume", "ls", "-q", "--filter", &filter]).split_whitespace() {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f", id])
                .output();
        }
        for id in docker(&["network", "ls", "-q", "--filter", &filter]).split_whitespace() {
            let _ = Command::new("docker").args(["network", "rm", id]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where a call goes: the host form (`<net>.pins.localhost`, path `/pins…`) or the path form
/// (`localhost`, `/network/<net>/pins…`).
#[derive(Clone, Copy)]
pub(crate) enum Form {
    Host,
    Path,
}

pub(crate) fn request(
    form: Form,
    net: &str,
    method: &str,
    tail: &str,
    tok: Option<&str>,
    body: Option<&Value>,
) -> hyper::Request<Full<Bytes>> {
    let (host, path) = match form {
        Form::Host => (format!("{net}.pins.localhost"), format!("/pins{tail}")),
        Form::Path => (
            "localhost".to_string(),
            format!("/network/{net}/pins{tail}"),
        ),
    };
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{DELEGATOR}{path}"))
        .header("host", format!("{host}:{DELEGATOR}"));
    if let Some(t) = tok {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let body = match body {
        Some(v) => {
            req = req.header("content-type", "application/json");
            Bytes::from(v.to_string())
        }
        None => Bytes::new(),
    };
    req.body(Full::new(body)).expect("request")
}

/// One request: its status and headers (the body is dropped).
pub(crate) async fn send_with_headers(req: hyper::Request<Full<Bytes>>) -> (u16, hyper::HeaderMap) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(nexus::node::endpoint::Connector::new(Duration::from_secs(
            5,
        )));
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .expect("request timed out")
        .expect("request");
    (resp.status().as_u16(), resp.headers().clone())
}

pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// One call: status and the JSON body (`Null` when empty).
pub(crate) fn call(
    form: Form,
    net: &str,
    method: &str,
    tail: &str,
    tok: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let (status, out) = block_on(common::send(request(form, net, method, tail, tok, body)));
    let v = if out.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&out).unwrap_or_else(|e| {
            panic!(
                "{method} {tail}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out)
            )
        })
    };
    (status, v)
}

/// Asserts a refusal: `status` with the spec's Failure body and `reason`.
pub(crate) fn refused(got: (u16, Value), status: u16, reason: &str, what: &str) {
    assert_eq!(got.0, status, "{what}: {}", got.1);
    assert_eq!(got.1["error"]["reason"], reason, "{what}: {}", got.1);
    assert!(
        got.1["error"]["details"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{what}: no details: {}",
        got.1
    );
}

/// `GET /pins?<query>` (with every status unless the query names some): the answer.
pub(crate) fn list(net: &str, tok: &str, query: &str) -> Value {
    let q = if query.contains("status=") {
        query.to_string()
    } else if query.is_empty() {
        "status=queued,pinning,pinned,failed".to_string()
    } else {
        format!("{query}&status=queued,pinning,pinned,failed")
    };
    let (s, v) = call(Form::Host, net, "GET", &format!("?{q}"), Some(tok), None);
    assert_eq!(s, 200, "GET /pins?{q}: {v}");
    v
}

pub(crate) fn count(net: &str, tok: &str, query: &str) -> u64 {
    list(net, tok, query)["count"].as_u64().expect("count")
}

pub(crate) fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(crate) fn poll_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The recursive pins of one node, from its own RPC API.
pub(crate) fn node_pins(container: &str) -> BTreeSet<String> {
    let dir = common::inspect(
        container,
        "{{range .Mounts}}{{if eq .Destination \"/nexus\"}}{{.Source}}{{end}}{{end}}",
    );
    let api = nexus::node::endpoint::Endpoint::Unix(PathBuf::from(dir).join("api.sock"));
    let (status, body) = block_on(common::rpc(&api, "pin/ls?type=recursive"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["Keys"].as_object().map(|m| m.keys().cloned().collect()))
        .unwrap_or_default()
}

/// Adds `data` through the delegator's RPC API without pinning it (`pin=false`: it does not
/// join the pinset); returns its CID.
pub(crate) fn add_unpinned(net: &str, tok: &str, data: &str) -> String {
    let boundary = "nexus-psa-boundary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n{data}\r\n--{boundary}--\r\n"
    );
    let req = hyper::Request::post(format!(
        "http://127.0.0.1:{DELEGATOR}/network/{net}/api/v0/add?pin=false"
    ))
    .header("host", format!("localhost:{DELEGATOR}"))
    .header("authorization", format!("Bearer {tok}"))
    .header(
        "content-type",
        format!("multipart/form-data; boundary={boundary}"),
    )
    .body(Full::new(Bytes::from(body)))
    .expect("request");
    let (status, out) = block_on(common::send(req));
    let text = String::from_utf8_lossy(&out).into_owned();
    assert_eq!(status, 200, "{text}");
    let last = text.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
    serde_json::from_str::<Value>(last).expect("add JSON")["Hash"]
        .as_str()
        .expect("Hash")
        .to_string()
}

/// A valid CIDv1 (raw, sha2-256) of random bytes that no node has, in base16.
pub(crate) fn absent_cid() -> String {
    format!("f01551220{}", random_hex(32))
}

/// A `meta` filter of `GET /pins`.
pub(crate) fn meta_q(m: &Value) -> String {
    format!("meta={}", enc(&m.to_string()))
}
