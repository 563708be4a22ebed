//! The IPFS Pinning Service API (spec v1.0.0) through a real daemon's delegator, on real kubo
//! nodes in Docker: endpoint by endpoint (status codes, the `Failure` body), every filter,
//! paging over 1,000 pins, roles and owners, host form and path form, bad input changing
//! nothing, a CID no node has ending `failed`, and `DELETE` unpinning on every node.
//!
//! Ports: only 26000-26999 (swarm 26000-26019, gRPC 26090, delegator 26091).

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{json, Value};

use common::{docker, image};

const KEY: &str = "test-key-psa-0123456789abcdefghijklmnopqrstuvwxyz";
const GRPC: u16 = 26090;
const DELEGATOR: u16 = 26091;
const SWARM: u16 = 26000;

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("rng");
    hex::encode(b)
}

/// A daemon process with its own directory, configuration and Docker owner scope.
struct Daemon {
    dir: PathBuf,
    config: PathBuf,
    instance: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    fn start() -> Daemon {
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

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn cli(&self, args: &[&str]) -> Output {
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

    fn json(&self, args: &[&str]) -> Value {
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
    fn token(&self, user: &str, extra: &[&str]) -> String {
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
enum Form {
    Host,
    Path,
}

fn request(
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
async fn send_with_headers(req: hyper::Request<Full<Bytes>>) -> (u16, hyper::HeaderMap) {
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

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// One call: status and the JSON body (`Null` when empty).
fn call(
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
fn refused(got: (u16, Value), status: u16, reason: &str, what: &str) {
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
fn list(net: &str, tok: &str, query: &str) -> Value {
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

fn count(net: &str, tok: &str, query: &str) -> u64 {
    list(net, tok, query)["count"].as_u64().expect("count")
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn poll_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
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
fn node_pins(container: &str) -> BTreeSet<String> {
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
fn add_unpinned(net: &str, tok: &str, data: &str) -> String {
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
fn absent_cid() -> String {
    format!("f01551220{}", random_hex(32))
}

#[test]
fn pinning_service_api_endpoint_by_endpoint() {
    let d = Daemon::start();
    let net = format!("psa-{}", random_hex(3));
    let other = format!("psb-{}", random_hex(3));
    let users = [
        "--user",
        "alice",
        "--user",
        "bob",
        "--user",
        "rita:reader",
        "--user",
        "root:admin",
    ];
    let mut args = vec![
        "network",
        "create",
        &net,
        "--replicas",
        "2",
        "--replication",
        "2",
        "--allowed-origin",
        "https://app.example",
    ];
    args.extend_from_slice(&users);
    args.push("--start");
    assert_eq!(d.json(&args)["status"], "running");
    let mut args = vec!["network", "create", &other, "--replicas", "1"];
    args.extend_from_slice(&users);
    args.push("--start");
    assert_eq!(d.json(&args)["status"], "running");
    let alice = d.token("alice", &[]);
    let bob = d.token("bob", &[]);
    let rita = d.token("rita", &[]);
    let root = d.token("root", &[]);
    let mallory = d.token("mallory", &[]);
    let alice_other_only = d.token("alice", &["--net", &other]);
    let alice_as_reader = d.token("alice", &["--role", "reader"]);
    let limit = Duration::from_secs(90);

    // 401: no token, a bad token; 403: not a member, a token for another network, a reader.
    let pin_body = json!({"cid": absent_cid()});
    refused(
        call(Form::Host, &net, "GET", "", None, None),
        401,
        "UNAUTHORIZED",
        "no token",
    );
    refused(
        call(
            Form::Path,
            &net,
            "POST",
            "",
            Some("not.a.jwt"),
            Some(&pin_body),
        ),
        401,
        "UNAUTHORIZED",
        "bad token",
    );
    refused(
        call(Form::Host, &net, "GET", "", Some(&mallory), None),
        403,
        "FORBIDDEN",
        "non-member",
    );
    refused(
        call(Form::Host, &net, "GET", "", Some(&alice_other_only), None),
        403,
        "FORBIDDEN",
        "token for another network",
    );
    refused(
        call(Form::Host, &net, "POST", "", Some(&rita), Some(&pin_body)),
        403,
        "FORBIDDEN",
        "reader adds",
    );
    refused(
        call(
            Form::Host,
            &net,
            "POST",
            "",
            Some(&alice_as_reader),
            Some(&pin_body),
        ),
        403,
        "FORBIDDEN",
        "token lowered to reader adds",
    );
    refused(
        call(Form::Host, "nosuchnet", "GET", "", Some(&alice), None),
        404,
        "NOT_FOUND",
        "unknown network",
    );
    assert_eq!(count(&net, &root, ""), 0, "refusals added nothing");

    // CORS as on the other features: an allowed origin's preflight (DELETE included) and its
    // answers carry the headers; a foreign origin is refused in the Failure shape.
    let cors = |origin: &str, method: &str, preflight: bool| {
        let mut req = request(Form::Host, &net, method, "", Some(&rita), None);
        let h = req.headers_mut();
        h.insert("origin", origin.parse().expect("origin"));
        if preflight {
            h.insert(
                "access-control-request-method",
                "DELETE".parse().expect("method"),
            );
        }
        block_on(send_with_headers(req))
    };
    let (s, h) = cors("https://app.example", "OPTIONS", true);
    assert_eq!(s, 204, "{h:?}");
    assert_eq!(
        h.get("access-control-allow-origin").map(|v| v.as_bytes()),
        Some(&b"https://app.example"[..])
    );
    assert!(h
        .get("access-control-allow-methods")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| m.contains("DELETE")));
    let (s, h) = cors("https://app.example", "GET", false);
    assert_eq!(s, 200);
    assert!(h.contains_key("access-control-allow-origin"));
    let (s, _) = cors("https://evil.example", "GET", false);
    assert_eq!(s, 403);

    // Real content: added without pinning, then pinned through POST /pins (host form) on both
    // nodes, read back through GET (path form).
    let cid = add_unpinned(&net, &alice, &format!("pinning api {net}"));
    let (s, created) = call(
        Form::Host,
        &net,
        "POST",
        "",
        Some(&alice),
        Some(&json!({
            "cid": cid,
            "name": "Report",
            "meta": {"app": "e2e"},
            // What kubo's own `pin remote add` sends: its node's addresses, any transport.
            "origins": [
                "/ip4/203.0.113.7/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN",
                "/ip6/2001:db8::7/udp/4001/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN",
            ],
        })),
    );
    assert_eq!(s, 202, "{created}");
    let id = created["requestid"]
        .as_str()
        .expect("requestid")
        .to_string();
    assert_eq!(id.len(), 32);
    assert_eq!(created["pin"]["cid"], cid.as_str());
    assert_eq!(created["pin"]["name"], "Report");
    assert!(
        ["queued", "pinning", "pinned"].contains(&created["status"].as_str().unwrap_or("")),
        "{created}"
    );
    let delegates: Vec<&str> = created["delegates"]
        .as_array()
        .expect("delegates")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(delegates.len(), 2, "{created}");
    for dlg in &delegates {
        assert!(
            dlg.starts_with("/ip4/127.0.0.1/tcp/") && dlg.contains("/p2p/12D3"),
            "{dlg}"
        );
    }
    assert_eq!(created["pin"]["origins"].as_array().map(Vec::len), Some(2));
    let created_at = created["created"].as_str().expect("created").to_string();
    assert!(
        created_at.ends_with('Z') && created_at.contains('.'),
        "{created_at}"
    );
    let mut got = Value::Null;
    assert!(
        poll_until(limit, || {
            got = call(
                Form::Path,
                &net,
                "GET",
                &format!("/{id}"),
                Some(&rita),
                None,
            )
            .1;
            got["status"] == "pinned"
        }),
        "never pinned: {got}\n{}",
        d.logs()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(got["info"]["owner"], "alice");
    let holders = |cid: &str| -> Vec<u16> {
        (0..2)
            .filter(|i| node_pins(&format!("nexus-{net}-{i}")).contains(cid))
            .collect()
    };
    assert_eq!(holders(&cid), vec![0, 1], "pinned on both nodes");

    // Filters on it: the default status is pinned; name with its match modes; meta; cid.
    let (s, page) = call(Form::Host, &net, "GET", "", Some(&rita), None);
    assert_eq!((s, &page["count"]), (200, &json!(1)), "{page}");
    assert_eq!(page["results"][0]["requestid"], id.as_str());
    assert_eq!(count(&net, &rita, "status=queued,failed"), 0);
    assert_eq!(count(&net, &rita, "name=Report"), 1);
    assert_eq!(count(&net, &rita, "name=report"), 0);
    assert_eq!(count(&net, &rita, "name=report&match=iexact"), 1);
    assert_eq!(count(&net, &rita, "name=epo&match=partial"), 1);
    assert_eq!(count(&net, &rita, "name=EPO&match=partial"), 0);
    assert_eq!(count(&net, &rita, "name=EPO&match=ipartial"), 1);
    let meta = |m: Value| format!("meta={}", enc(&m.to_string()));
    assert_eq!(count(&net, &rita, &meta(json!({"app": "e2e"}))), 1);
    assert_eq!(count(&net, &rita, &meta(json!({"app": "other"}))), 0);
    assert_eq!(
        count(&net, &rita, &meta(json!({"app": "e2e", "x": "y"}))),
        0
    );
    assert_eq!(count(&net, &rita, &format!("cid={cid}")), 1);
    assert_eq!(count(&net, &rita, &format!("cid={}", absent_cid())), 0);

    // Bad input: 400 (or 404) with the Failure body, and nothing changes.
    let before_all = list(&net, &root, "limit=1000");
    for (body, what) in [
        (json!({"cid": "not-a-cid"}), "invalid CID"),
        (json!({"name": "no cid"}), "no CID"),
        (
            json!({"cid": cid, "name": "n".repeat(256)}),
            "oversize name",
        ),
        (
            json!({"cid": cid, "meta": {"k": "v".repeat(5000)}}),
            "oversize meta",
        ),
        (json!({"cid": cid, "meta": {"k": 1}}), "meta not strings"),
        (
            json!({"cid": cid, "origins": ["not a multiaddr"]}),
            "bad origin",
        ),
        (json!("just a string"), "not an object"),
    ] {
        refused(
            call(Form::Host, &net, "POST", "", Some(&alice), Some(&body)),
            400,
            "BAD_REQUEST",
            what,
        );
        refused(
            call(
                Form::Path,
                &net,
                "POST",
                &format!("/{id}"),
                Some(&alice),
                Some(&body),
            ),
            400,
            "BAD_REQUEST",
            &format!("replace: {what}"),
        );
    }
    for q in [
        "limit=0",
        "limit=1001",
        "status=done",
        "match=fuzzy",
        "before=yesterday",
        "meta=%5B%5D",
        "cid=nope",
    ] {
        refused(
            call(Form::Host, &net, "GET", &format!("?{q}"), Some(&rita), None),
            400,
            "BAD_REQUEST",
            q,
        );
    }
    let unknown = random_hex(16);
    for (method, tail) in [
        ("GET", format!("/{unknown}")),
        ("DELETE", format!("/{unknown}")),
        ("GET", "/zz-not-an-id".to_string()),
    ] {
        refused(
            call(Form::Host, &net, method, &tail, Some(&root), None),
            404,
            "NOT_FOUND",
            &tail,
        );
    }
    refused(
        call(
            Form::Host,
            &net,
            "POST",
            &format!("/{unknown}"),
            Some(&root),
            Some(&json!({"cid": cid})),
        ),
        404,
        "NOT_FOUND",
        "replace an unknown id",
    );
    refused(
        call(Form::Host, &net, "PUT", "", Some(&root), None),
        405,
        "METHOD_NOT_ALLOWED",
        "PUT",
    );
    assert_eq!(
        list(&net, &root, "limit=1000"),
        before_all,
        "bad input changed nothing"
    );

    // Another network's request id is not found here, and stays there.
    let (s, theirs) = call(
        Form::Host,
        &other,
        "POST",
        "",
        Some(&alice),
        Some(&json!({"cid": absent_cid()})),
    );
    assert_eq!(s, 202, "{theirs}");
    assert_eq!(
        theirs["status"], "queued",
        "a CID no node has starts queued: {theirs}"
    );
    let their_id = theirs["requestid"].as_str().expect("requestid").to_string();
    for method in ["GET", "DELETE"] {
        refused(
            call(
                Form::Host,
                &net,
                method,
                &format!("/{their_id}"),
                Some(&root),
                None,
            ),
            404,
            "NOT_FOUND",
            "another network's id",
        );
    }
    refused(
        call(
            Form::Host,
            &net,
            "POST",
            &format!("/{their_id}"),
            Some(&root),
            Some(&json!({"cid": cid})),
        ),
        404,
        "NOT_FOUND",
        "replace another network's id",
    );
    assert_eq!(
        call(
            Form::Host,
            &other,
            "GET",
            &format!("/{their_id}"),
            Some(&alice),
            None
        )
        .0,
        200
    );

    // Replace: only the owner (or an admin); a new request id, the old one gone, the CID kept.
    for (tok, who) in [(&bob, "another writer"), (&rita, "a reader")] {
        refused(
            call(
                Form::Host,
                &net,
                "POST",
                &format!("/{id}"),
                Some(tok),
                Some(&json!({"cid": cid})),
            ),
            403,
            "FORBIDDEN",
            who,
        );
        refused(
            call(
                Form::Host,
                &net,
                "DELETE",
                &format!("/{id}"),
                Some(tok),
                None,
            ),
            403,
            "FORBIDDEN",
            who,
        );
    }
    let (s, replaced) = call(
        Form::Path,
        &net,
        "POST",
        &format!("/{id}"),
        Some(&alice),
        Some(&json!({"cid": cid, "name": "Report v2"})),
    );
    assert_eq!(s, 202, "{replaced}");
    let new_id = replaced["requestid"]
        .as_str()
        .expect("requestid")
        .to_string();
    assert_ne!(new_id, id);
    assert_eq!(replaced["pin"]["name"], "Report v2");
    refused(
        call(
            Form::Host,
            &net,
            "GET",
            &format!("/{id}"),
            Some(&alice),
            None,
        ),
        404,
        "NOT_FOUND",
        "replaced id",
    );
    assert!(
        poll_until(limit, || call(
            Form::Host,
            &net,
            "GET",
            &format!("/{new_id}"),
            Some(&alice),
            None
        )
        .1["status"]
            == "pinned"),
        "the replacement is not pinned"
    );
    assert_eq!(holders(&cid), vec![0, 1], "replacing kept the copies");

    // An admin removes anyone's pin.
    let (_, bobs) = call(
        Form::Host,
        &net,
        "POST",
        "",
        Some(&bob),
        Some(&json!({"cid": absent_cid(), "name": "bob's"})),
    );
    let bobs_id = bobs["requestid"].as_str().expect("requestid").to_string();
    let (s, v) = call(
        Form::Host,
        &net,
        "DELETE",
        &format!("/{bobs_id}"),
        Some(&root),
        None,
    );
    assert_eq!((s, v), (202, Value::Null));
    refused(
        call(
            Form::Host,
            &net,
            "GET",
            &format!("/{bobs_id}"),
            Some(&bob),
            None,
        ),
        404,
        "NOT_FOUND",
        "removed by admin",
    );

    // DELETE by the owner: 202, then unpinned on every node.
    let (s, _) = call(
        Form::Host,
        &net,
        "DELETE",
        &format!("/{new_id}"),
        Some(&alice),
        None,
    );
    assert_eq!(s, 202);
    refused(
        call(
            Form::Host,
            &net,
            "GET",
            &format!("/{new_id}"),
            Some(&alice),
            None,
        ),
        404,
        "NOT_FOUND",
        "deleted",
    );
    assert!(
        poll_until(limit, || holders(&cid).is_empty()),
        "still pinned on {:?}",
        holders(&cid)
    );
    assert_eq!(count(&net, &root, ""), 0);

    // 1,000 pins of CIDs no node has, through POST /pins on the other network.
    let (s, _) = call(
        Form::Host,
        &other,
        "DELETE",
        &format!("/{their_id}"),
        Some(&alice),
        None,
    );
    assert_eq!(s, 202);
    let started = Instant::now();
    let bodies: Vec<Value> = (0..1000)
        .map(|i| {
            json!({
                "cid": absent_cid(),
                "name": format!("Item-{i:04}"),
                "meta": {"batch": "b1", "parity": if i % 2 == 0 { "even" } else { "odd" }},
            })
        })
        .collect();
    let answers: Vec<(u16, Bytes)> = block_on(async {
        let mut out = Vec::new();
        for chunk in bodies.chunks(25) {
            let calls = chunk.iter().map(|b| {
                common::send(request(
                    Form::Host,
                    &other,
                    "POST",
                    "",
                    Some(&alice),
                    Some(b),
                ))
            });
            out.extend(futures_util::future::join_all(calls).await);
        }
        out
    });
    let accept_secs = started.elapsed().as_secs_f64();
    let mut added: Vec<Value> = Vec::new();
    for (s, b) in &answers {
        assert_eq!(*s, 202, "{}", String::from_utf8_lossy(b));
        added.push(serde_json::from_slice(b).expect("PinStatus"));
    }
    eprintln!(
        "1000 pins accepted in {accept_secs:.2}s ({:.0}/s)",
        1000.0 / accept_secs
    );
    assert_eq!(count(&other, &alice, ""), 1000);

    // Paging: newest first, distinct `created`; `before` walks every page, `after` the rest.
    let all = list(&other, &alice, "limit=1000");
    let results = all["results"].as_array().expect("results");
    assert_eq!(results.len(), 1000);
    let times: Vec<i64> = results
        .iter()
        .map(|r| {
            let t = r["created"].as_str().expect("created");
            nexus::delegator::pinsvc::wire::parse_rfc3339(t).expect("RFC 3339")
        })
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] > w[1]),
        "newest first, no two alike"
    );
    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    for _ in 0..11 {
        let q = match &before {
            Some(b) => format!("limit=100&before={}", enc(b)),
            None => "limit=100".to_string(),
        };
        let page = list(&other, &alice, &q);
        let rs = page["results"].as_array().expect("results").clone();
        if rs.is_empty() {
            break;
        }
        assert!(rs.len() <= 100);
        before = rs
            .last()
            .and_then(|r| r["created"].as_str())
            .map(str::to_string);
        seen.extend(
            rs.iter()
                .map(|r| r["requestid"].as_str().unwrap_or("").to_string()),
        );
    }
    let all_ids: Vec<String> = results
        .iter()
        .map(|r| r["requestid"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        seen, all_ids,
        "paging by `before` returns every pin once, in order"
    );
    let mid = results[499]["created"].as_str().expect("created");
    assert_eq!(count(&other, &alice, &format!("after={}", enc(mid))), 499);
    assert_eq!(count(&other, &alice, &format!("before={}", enc(mid))), 500);
    let first_page = list(&other, &alice, "");
    assert_eq!(
        first_page["results"].as_array().map(Vec::len),
        Some(10),
        "default limit 10"
    );

    // Every filter over the 1,000.
    let cids: Vec<&str> = added[..3]
        .iter()
        .filter_map(|a| a["pin"]["cid"].as_str())
        .collect();
    assert_eq!(count(&other, &alice, &format!("cid={}", cids.join(","))), 3);
    let eleven: Vec<&str> = added[..11]
        .iter()
        .filter_map(|a| a["pin"]["cid"].as_str())
        .collect();
    refused(
        call(
            Form::Host,
            &other,
            "GET",
            &format!("?cid={}", eleven.join(",")),
            Some(&alice),
            None,
        ),
        400,
        "BAD_REQUEST",
        "11 CIDs",
    );
    assert_eq!(count(&other, &alice, "name=Item-0007"), 1);
    assert_eq!(count(&other, &alice, "name=item-0007"), 0);
    assert_eq!(count(&other, &alice, "name=item-0007&match=iexact"), 1);
    assert_eq!(count(&other, &alice, "name=Item-00&match=partial"), 100);
    assert_eq!(count(&other, &alice, "name=item-00&match=partial"), 0);
    assert_eq!(count(&other, &alice, "name=item-00&match=ipartial"), 100);
    assert_eq!(count(&other, &alice, &meta(json!({"parity": "even"}))), 500);
    assert_eq!(
        count(
            &other,
            &alice,
            &meta(json!({"parity": "odd", "batch": "b1"}))
        ),
        500
    );
    assert_eq!(count(&other, &alice, &meta(json!({"parity": "none"}))), 0);
    assert_eq!(
        count(
            &other,
            &alice,
            &format!(
                "name=Item-0008&match=exact&{}",
                meta(json!({"parity": "even"}))
            )
        ),
        1
    );

    // None is stuck: every one ends `failed` with a reason after pin_fail_after.
    assert!(
        poll_until(Duration::from_secs(120), || count(
            &other,
            &alice,
            "status=failed"
        ) == 1000),
        "not all failed: {}",
        list(&other, &alice, "status=queued,pinning&limit=3")
    );
    assert_eq!(count(&other, &alice, "status=queued,pinning,pinned"), 0);
    let one = call(
        Form::Path,
        &other,
        "GET",
        &format!("/{}", added[0]["requestid"].as_str().unwrap_or("")),
        Some(&alice),
        None,
    )
    .1;
    assert_eq!(one["status"], "failed");
    assert!(
        one["info"]["status_details"]
            .as_str()
            .unwrap_or("")
            .contains("no node could pin"),
        "{one}"
    );
    // The default listing (pinned only) shows none of them.
    assert_eq!(
        call(Form::Host, &other, "GET", "", Some(&alice), None).1["count"],
        0
    );
}
