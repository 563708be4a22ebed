//! Helpers shared by the integration tests: the test image, unique names, cleanup, and a tiny
//! kubo RPC client (multipart add, cat) that talks to real nodes.
#![allow(dead_code)]

use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use nexus::names::InstanceName;
use nexus::node::endpoint::{Connector, Endpoint};
use nexus::node::{DockerRuntime, DockerRuntimeConfig, NetworkName, NodeRecord};

/// The node image under test. The test command (`scripts/test.sh`) builds it and sets this.
pub fn image() -> String {
    std::env::var("NEXUS_TEST_IMAGE").unwrap_or_else(|_| {
        panic!(
            "NEXUS_TEST_IMAGE is not set: run the suite with scripts/test.sh, or build the image \
             with scripts/build-test-image.sh and export NEXUS_TEST_IMAGE=<its last line>"
        )
    })
}

/// The seal keys of this test binary's stores: one keyring for the whole run, so a store
/// reopened (a restart) opens what it sealed.
pub fn seal_keys() -> nexus::store::seal::Keyring {
    static KEYS: std::sync::OnceLock<nexus::store::seal::Keyring> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| nexus::store::seal::Keyring::generate().expect("seal keys"))
        .clone()
}

/// A network name unique to this test run.
pub fn unique_network(prefix: &str) -> NetworkName {
    let mut b = [0u8; 3];
    getrandom::fill(&mut b).expect("rng");
    NetworkName::new(&format!("{prefix}-{}", hex::encode(b))).expect("valid name")
}

/// This test process's Docker owner scope (`t-` and 12 random hex digits): every runtime of
/// the process shares it, so a fresh runtime lists the same nodes, and no other test, test run
/// or daemon on the host (each has its own) sees or touches them. Never `default`.
pub fn test_instance() -> InstanceName {
    static INSTANCE: OnceLock<InstanceName> = OnceLock::new();
    INSTANCE
        .get_or_init(|| {
            let mut b = [0u8; 6];
            getrandom::fill(&mut b).expect("rng");
            InstanceName::new(&format!("t-{}", hex::encode(b))).expect("valid instance")
        })
        .clone()
}

/// A runtime in [`test_instance`].
pub async fn runtime() -> DockerRuntime {
    runtime_with(DockerRuntimeConfig {
        instance: test_instance(),
        ..DockerRuntimeConfig::default()
    })
    .await
}

pub async fn runtime_with(cfg: DockerRuntimeConfig) -> DockerRuntime {
    DockerRuntime::connect(cfg)
        .await
        .expect("Docker must be running: scripts/test.sh starts it")
}

/// Runs `docker` and returns stdout (panics on failure).
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs `docker` and reports whether it succeeded.
pub fn docker_ok(args: &[&str]) -> bool {
    Command::new("docker")
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// An image derived from the test image by `FROM <test image>` plus `lines` (e.g. an `ENV`),
/// tagged `<repo>:<the test image's tag>`; built locally once (nothing is pulled).
pub fn derived_image(repo: &str, lines: &str) -> String {
    let base = image();
    let tag = format!("{repo}:{}", base.rsplit(':').next().unwrap_or("x"));
    if !docker_ok(&["image", "inspect", &tag]) {
        let dockerfile = format!("FROM {base}\n{lines}\n");
        let mut child = Command::new("docker")
            .args(["build", "-q", "-t", &tag, "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("docker build");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(dockerfile.as_bytes())
            .expect("dockerfile");
        assert!(
            child.wait().expect("docker build").success(),
            "could not build {tag}"
        );
    }
    tag
}

/// The test image told to expect a newer repo version (15 instead of 14): a stand-in for a
/// newer kubo, whose embedded migration brings an older repo up to it.
pub fn newer_repo_image() -> String {
    derived_image("nexus-test-repo15", "ENV KUBO_SHIM_REPO_VERSION=15")
}

/// Removes everything labelled with this network when dropped, even if the test failed.
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let label = format!("label=io.nexus.network={}", self.0);
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker ps -aq --filter {label} | xargs -r docker rm -f >/dev/null 2>&1; \
                 docker volume ls -q --filter {label} | xargs -r docker volume rm -f >/dev/null 2>&1; \
                 docker network rm nexus-{} >/dev/null 2>&1; true",
                self.0
            ))
            .status();
    }
}

fn client() -> Client<Connector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(Connector::new(Duration::from_secs(5)))
}

/// The RPC API endpoint of a node the runtime reported (its socket).
pub fn api_of(rec: &NodeRecord) -> Endpoint {
    rec.endpoints
        .as_ref()
        .expect("a node made by this nexus has endpoints")
        .api
        .clone()
}

/// POSTs to a node's RPC API (through its socket); returns status and body.
pub async fn rpc(node: &Endpoint, path_and_query: &str) -> (u16, Bytes) {
    let req = hyper::Request::post(node.uri(&format!("/api/v0/{path_and_query}")))
        .body(Full::new(Bytes::new()))
        .expect("request");
    send(req).await
}

/// Like [`rpc`], but `None` when the node does not answer (for polling while nodes restart).
pub async fn try_rpc(node: &Endpoint, path_and_query: &str) -> Option<(u16, Bytes)> {
    let req = hyper::Request::post(node.uri(&format!("/api/v0/{path_and_query}")))
        .body(Full::new(Bytes::new()))
        .ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(10), client().request(req))
        .await
        .ok()?
        .ok()?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, body))
}

pub async fn send(req: hyper::Request<Full<Bytes>>) -> (u16, Bytes) {
    let resp = tokio::time::timeout(Duration::from_secs(30), client().request(req))
        .await
        .expect("RPC timed out")
        .expect("RPC request");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, body)
}

pub async fn rpc_json(node: &Endpoint, path_and_query: &str) -> serde_json::Value {
    let (status, body) = rpc(node, path_and_query).await;
    assert_eq!(
        status,
        200,
        "{path_and_query}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).expect("JSON answer")
}

/// `ipfs add` through the RPC API (multipart upload); returns the CID.
/// `data` as the one file of a `multipart/form-data` body, as kubo's `add` takes it: the
/// content type (with its boundary) and the body.
pub fn multipart_file(data: &[u8]) -> (String, Vec<u8>) {
    let boundary = "nexus-test-boundary-7d1f";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.bin\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

pub async fn add(node: &Endpoint, data: &[u8]) -> String {
    let (content_type, body) = multipart_file(data);
    let req = hyper::Request::post(node.uri("/api/v0/add"))
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let (status, body) = send(req).await;
    assert_eq!(status, 200, "add: {}", String::from_utf8_lossy(&body));
    let text = String::from_utf8_lossy(&body);
    let last = text
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .expect("add output");
    let v: serde_json::Value = serde_json::from_str(last).expect("add JSON");
    v["Hash"].as_str().expect("Hash").to_string()
}

/// Peer ids a node is connected to (one entry per connection, as kubo lists them).
pub async fn peers(node: &Endpoint) -> Vec<String> {
    let v = rpc_json(node, "swarm/peers").await;
    v["Peers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["Peer"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `check` until it holds or `limit` passes; returns whether it held. A bound on
/// waiting for the network, not a performance assertion.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `docker inspect -f TEMPLATE target`.
pub fn inspect(target: &str, template: &str) -> String {
    docker(&["inspect", "-f", template, target])
}
