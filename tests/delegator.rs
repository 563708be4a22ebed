//! The delegator in front of real kubo nodes (the test image), run by a real orchestrator on
//! real Docker, with the delegator in this process on a loopback listener: both routing forms,
//! tokens, the RPC allow-list, gateways, CORS, a 256 MiB streamed add with flat memory, and
//! fail-over when a node dies.
//!
//! One test per behaviour, each over [`fixture`]: its own orchestrator (instance, SQLite file
//! and port ranges derived from the test's number), the networks it needs (started only when
//! a check needs a kubo node) and a delegator. nextest runs each test in its own process.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use nexus::access::Access;
use nexus::delegator::{mint_token, Delegator, DelegatorConfig, JwtConfig};
use nexus::node::endpoint::{Connector, Endpoint};
use nexus::node::NetworkName;
use nexus::node::NodeRuntime;
use nexus::orchestrator::ports::{BindProbe, PortConfig, PortRange};
use nexus::orchestrator::registry::{NetworkEntry, ReadyNode, Registry};
use nexus::orchestrator::{
    CreateNetwork, NetworkView, Orchestrator, OrchestratorConfig, UpdateNetwork,
};
use nexus::store::sql::SqlStore;
use nexus::store::Store;

const MIB: u64 = 1024 * 1024;
const DOMAIN: &str = "nexus.test";
const SECRET: &[u8] = b"delegator-integration-test-secret-0123456789";

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;

fn jwt() -> JwtConfig {
    JwtConfig::hs256(SECRET).expect("jwt config")
}

fn token(user: &str) -> String {
    mint_token(&jwt(), user, Duration::from_secs(600)).expect("token")
}

fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn bytes_body(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A client that talks to the delegator.
struct Http {
    addr: SocketAddr,
    client: Client<HttpConnector, Body>,
}

struct Answer {
    status: u16,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON ({}): {}", self.status, self.text()))
    }
}

impl Http {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn send(
        &self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Body,
    ) -> Answer {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header("host", host);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req.body(body).expect("request");
        let resp = tokio::time::timeout(Duration::from_secs(300), self.client.request(req))
            .await
            .expect("delegator answered in time")
            .expect("delegator request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        Answer {
            status,
            headers,
            body,
        }
    }

    /// An RPC call with an optional token.
    async fn rpc(&self, host: &str, path: &str, tok: Option<&str>) -> Answer {
        let h: Vec<(&str, String)> = tok
            .map(|t| vec![("authorization", format!("Bearer {t}"))])
            .unwrap_or_default();
        self.send("POST", host, path, &h, empty()).await
    }

    /// `add` of one file; returns the CID.
    async fn add(&self, host: &str, path: &str, tok: &str, data: &[u8]) -> String {
        let (ct, body) = multipart(data);
        let a = self
            .send(
                "POST",
                host,
                path,
                &[
                    ("authorization", format!("Bearer {tok}")),
                    ("content-type", ct),
                ],
                bytes_body(body),
            )
            .await;
        assert_eq!(a.status, 200, "add via {host}{path}: {}", a.text());
        last_hash(&a.body)
    }
}

const BOUNDARY: &str = "nexus-delegator-test-4b1d";

fn multipart(data: &[u8]) -> (String, Vec<u8>) {
    let mut body = multipart_head().into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(multipart_tail().as_bytes());
    (format!("multipart/form-data; boundary={BOUNDARY}"), body)
}

fn multipart_head() -> String {
    format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.bin\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
}

fn multipart_tail() -> String {
    format!("\r\n--{BOUNDARY}--\r\n")
}

fn last_hash(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let last = text
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .expect("add output");
    let v: serde_json::Value = serde_json::from_str(last).expect("add JSON");
    v["Hash"].as_str().expect("Hash").to_string()
}

fn api_host(net: &str) -> String {
    format!("{net}.api.{DOMAIN}")
}

fn gw_host(net: &str) -> String {
    format!("{net}.gateway.{DOMAIN}")
}

fn config(port_base: u16) -> OrchestratorConfig {
    let range = |low: u16| {
        vec![PortRange {
            low,
            high: low + 19,
        }]
    };
    OrchestratorConfig {
        image: image(),
        op_timeout: Duration::from_secs(120),
        resync_interval: Duration::from_secs(2),
        restart_backoff: Duration::from_millis(200),
        default_resources: nexus::node::Resources {
            cpu_millis: 500,
            memory_bytes: 512 * MIB,
            disk_bytes: 2048 * MIB,
        },
        ports: PortConfig {
            swarm: range(port_base),
        },
        ..Default::default()
    }
}

async fn orchestrator(
    url: &str,
    instance: &str,
    port_base: u16,
) -> (Orchestrator, tokio::task::JoinHandle<()>) {
    let store: Arc<dyn Store> = Arc::new(
        SqlStore::connect(url, common::seal_keys())
            .await
            .expect("store"),
    );
    let runtime: Arc<dyn NodeRuntime> = Arc::new(
        runtime_with(nexus::node::DockerRuntimeConfig {
            instance: nexus::names::InstanceName::new(instance).unwrap(),
            ..Default::default()
        })
        .await,
    );
    let orch = Orchestrator::new(store, runtime, config(port_base), Box::new(BindProbe))
        .await
        .expect("orchestrator");
    orch.recover().await.expect("recovery");
    let runner = {
        let o = orch.clone();
        tokio::spawn(async move { o.run().await })
    };
    (orch, runner)
}

/// Starts a delegator on 127.0.0.1:0 in the daemon's layout (two serving threads, each with its
/// own listener); returns its address and a shutdown trigger.
async fn delegator(
    registry: Registry,
    revocations: nexus::revocations::Revocations,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), nexus::delegator::DelegatorError>>,
) {
    let mut cfg = DelegatorConfig::new(DOMAIN, jwt());
    cfg.connect_timeout = Duration::from_secs(2);
    cfg.request_timeout = Some(Duration::from_secs(120));
    let d = Delegator::with_revocations(registry, revocations, cfg).expect("delegator");
    let listeners =
        nexus::delegator::Listeners::bind("127.0.0.1:0".parse().expect("addr"), 2).expect("bind");
    let addr = listeners.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(d.serve_on(listeners, None, async move {
        let _ = rx.await;
    }));
    (addr, tx, task)
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmRSS")
}

/// The byte at offset `i` of the generated big file: not constant, cheap to recompute.
fn gen_byte(i: u64) -> u8 {
    ((i / 4099) ^ (i >> 17) ^ i.wrapping_mul(31)) as u8
}

/// A network a test needs: how it is created, and whether its nodes are started.
struct Net {
    replicas: u16,
    users: &'static [&'static str],
    gateway_public: bool,
    allowed_origins: &'static [&'static str],
    start: bool,
}

impl Net {
    /// A network of `replicas` nodes for `users`, private gateway, no origins.
    const fn of(replicas: u16, users: &'static [&'static str], start: bool) -> Self {
        Self {
            replicas,
            users,
            gateway_public: false,
            allowed_origins: &[],
            start,
        }
    }

    /// The same with a public gateway.
    const fn public(replicas: u16, users: &'static [&'static str], start: bool) -> Self {
        Self {
            gateway_public: true,
            ..Self::of(replicas, users, start)
        }
    }

    fn create(&self, name: &NetworkName) -> CreateNetwork {
        CreateNetwork {
            name: name.to_string(),
            replicas: self.replicas,
            access: Access {
                users: self.users.iter().map(|u| u.to_string()).collect(),
                gateway_public: self.gateway_public,
                allowed_origins: self.allowed_origins.iter().map(|o| o.to_string()).collect(),
                ..Access::default()
            },
            ..Default::default()
        }
    }
}

/// What every test stands on: an orchestrator of its own, its networks, a delegator in front.
struct Fixture {
    orch: Orchestrator,
    runner: tokio::task::JoinHandle<()>,
    /// Network names, in the order the test asked for them.
    names: Vec<String>,
    /// The view `start` answered with, for started networks.
    views: Vec<Option<NetworkView>>,
    addr: SocketAddr,
    http: Http,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<Result<(), nexus::delegator::DelegatorError>>>,
    dir: std::path::PathBuf,
    _cleanup: Vec<Cleanup>,
}

/// The RPC API endpoint of a ready node, as the registry publishes it for the delegator.
fn node_api(orch: &Orchestrator, network: &str, index: u16) -> Endpoint {
    let entry = orch
        .registry()
        .get(&NetworkName::new(network).unwrap())
        .expect("network in the registry");
    let node = entry
        .nodes
        .iter()
        .find(|n| n.index == index)
        .expect("node ready");
    node.api.clone()
}

/// Builds the fixture of test number `test`: the instance name, database and port ranges
/// (`12000 + 100 × test`, 60 ports) are its own, so tests can run at the same time.
async fn fixture(test: u16, nets: &[Net]) -> Fixture {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("nexus::delegator=info,warn")
        .with_test_writer()
        .try_init();
    let id = unique_network(&format!("dlg{test}"));
    let names: Vec<NetworkName> = (0..nets.len())
        .map(|i| unique_network(&format!("dlg{test}{}", char::from(b'a' + i as u8))))
        .collect();
    let cleanup = names.iter().map(|n| Cleanup(n.to_string())).collect();
    let dir = std::env::temp_dir().join(format!("nexus-dlg-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("nexus.db").display());
    let (orch, runner) = orchestrator(&url, &format!("test-{id}"), 12000 + 100 * test).await;
    for (net, name) in nets.iter().zip(&names) {
        orch.create(net.create(name)).await.unwrap();
    }
    let starts = nets.iter().zip(&names).map(|(net, name)| {
        let orch = orch.clone();
        async move {
            if net.start {
                Some(orch.start(name.as_str()).await.unwrap())
            } else {
                None
            }
        }
    });
    let views = futures_util::future::join_all(starts).await;
    let registry = orch.registry();
    for (net, name) in nets.iter().zip(&names) {
        if net.start {
            assert_eq!(
                registry.get(name).unwrap().nodes.len(),
                usize::from(net.replicas)
            );
        } else {
            // A stopped network is listed (with no node) once the orchestrator reconciled it.
            assert!(
                eventually(Duration::from_secs(20), || async {
                    registry.get(name).is_some()
                })
                .await,
                "{name} never reached the registry"
            );
        }
    }
    let (addr, stop, server) = delegator(registry, orch.revocations()).await;
    Fixture {
        orch,
        runner,
        names: names.iter().map(|n| n.to_string()).collect(),
        views,
        addr,
        http: Http::new(addr),
        stop: Some(stop),
        server: Some(server),
        dir,
        _cleanup: cleanup,
    }
}

impl Fixture {
    /// The name of the `i`-th network.
    fn name(&self, i: usize) -> String {
        self.names[i].clone()
    }

    /// What `start` answered for the `i`-th network.
    fn view(&self, i: usize) -> &NetworkView {
        self.views[i].as_ref().expect("a started network")
    }

    /// The RPC API endpoint (socket) of node `index` of network `i`, as the registry has it.
    fn api(&self, i: usize, index: u16) -> Endpoint {
        node_api(&self.orch, &self.names[i], index)
    }

    /// Stops the delegator and removes what the test made.
    async fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(40), server).await;
        }
        self.runner.abort();
        for n in &self.names {
            let _ = self.orch.stop(n).await;
            let _ = self.orch.remove(n, true).await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const ALICE: &[&str] = &["alice"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn routing_forms_add_and_cat_back() {
    let fx = fixture(0, &[Net::of(3, ALICE, true)]).await;
    let (http, an, addr) = (&fx.http, fx.name(0), fx.addr);
    let alice = token("alice");

    // Add through one form, cat back through the other.
    let cid1 = http
        .add(
            &api_host(&an),
            "/api/v0/add",
            &alice,
            b"hello through the host form",
        )
        .await;
    let r = http
        .rpc(
            DOMAIN,
            &format!("/network/{an}/api/v0/cat?arg={cid1}"),
            Some(&alice),
        )
        .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "hello through the host form")
    );
    let cid2 = http
        .add(
            DOMAIN,
            &format!("/network/{an}/api/v0/add"),
            &alice,
            b"hello through the path form",
        )
        .await;
    let r = http
        .rpc(
            &format!("{}:{}", api_host(&an).to_uppercase(), addr.port()),
            &format!("/api/v0/cat?arg={cid2}"),
            Some(&alice),
        )
        .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "hello through the path form")
    );
    assert!(r.headers.contains_key("x-request-id"));
    // Trailing slash is normalised away by kubo's router and accepted by ours.
    let r = http
        .rpc(&api_host(&an), "/api/v0/version/", Some(&alice))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // RPC goes to the first ready node.
    let peer0 = fx.view(0).nodes[0].peer_id.clone();
    let r = http.rpc(&api_host(&an), "/api/v0/id", Some(&alice)).await;
    assert_eq!(r.json()["ID"].as_str(), Some(peer0.as_str()));
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_or_foreign_token_is_refused() {
    // Refused before any node is chosen: the network's nodes need not run.
    let fx = fixture(1, &[Net::of(3, ALICE, false)]).await;
    let (http, an) = (&fx.http, fx.name(0));
    let bob = token("bob");

    // None → 401; another network's user → 403; garbage → 401; another key → 401.
    let r = http.rpc(&api_host(&an), "/api/v0/id", None).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.json()["error"].is_string());
    let r = http.rpc(&api_host(&an), "/api/v0/id", Some(&bob)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = http.rpc(&api_host(&an), "/api/v0/id", Some("a.b.c")).await;
    assert_eq!(r.status, 401);
    let forged = mint_token(
        &JwtConfig::hs256(b"some-other-secret-of-32-bytes-at-least".to_vec()).unwrap(),
        "alice",
        Duration::from_secs(60),
    )
    .unwrap();
    let r = http.rpc(&api_host(&an), "/api/v0/id", Some(&forged)).await;
    assert_eq!(r.status, 401);
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn denied_rpcs_are_refused_before_the_node() {
    let fx = fixture(2, &[Net::of(1, ALICE, true)]).await;
    let (http, an) = (&fx.http, fx.name(0));
    let alice = token("alice");
    let peer0 = fx.view(0).nodes[0].peer_id.clone();

    // Denied RPCs → 403 from us; they would have worked directly.
    let api0 = &fx.api(0, 0);
    let (st, _) = rpc(api0, "config/show").await;
    assert_eq!(
        st, 200,
        "config/show works directly, so the 403 below is ours"
    );
    for path in [
        "/api/v0/config/show",
        "/api/v0/config?arg=Identity.PeerID",
        "/api/v0/shutdown",
        "/api/v0/key/export?arg=self",
        "/api/v0/swarm/connect?arg=/ip4/1.2.3.4/tcp/4001",
        "/api/v0/bootstrap/add?arg=/ip4/1.2.3.4/tcp/4001",
        "/debug/pprof/",
        "/webui",
        "/api/v0/con%66ig/show",
        "/api/v0/../../debug/pprof",
    ] {
        for host_form in [true, false] {
            let (host, p) = if host_form {
                (api_host(&an), path.to_string())
            } else {
                (DOMAIN.to_string(), format!("/network/{an}{path}"))
            };
            let r = http.rpc(&host, &p, Some(&alice)).await;
            // Real commands are refused by the policy (403); paths outside the API are not
            // routes at all in the path form (404) and tricks are malformed (400).
            let plain = path.starts_with("/api/v0/") && !path.contains('%') && !path.contains("..");
            let want: &[u16] = if plain { &[403] } else { &[400, 403, 404] };
            assert!(
                want.contains(&r.status),
                "{host}{p}: {} {}",
                r.status,
                r.text()
            );
            assert!(r.json()["error"].is_string());
        }
    }
    let r = http
        .rpc(&api_host(&an), "/api/v0/shutdown", Some(&alice))
        .await;
    assert_eq!(r.status, 403);
    // The node is unaffected.
    let v = rpc_json(api0, "id").await;
    assert_eq!(v["ID"].as_str(), Some(peer0.as_str()));
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn routing_refusals_are_json_404s() {
    let fx = fixture(3, &[Net::of(3, ALICE, false)]).await;
    let (http, an) = (&fx.http, fx.name(0));
    let alice = token("alice");

    // Routing refusals are JSON 404s, never forwards.
    let r = http.rpc("evil.example", "/api/v0/id", Some(&alice)).await;
    assert_eq!(r.status, 404);
    let r = http
        .rpc(
            &format!("nosuchnet.api.{DOMAIN}"),
            "/api/v0/id",
            Some(&alice),
        )
        .await;
    assert_eq!(r.status, 404);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("unknown network"));
    let r = http
        .rpc(&format!("{an}.swarm.{DOMAIN}"), "/", Some(&alice))
        .await;
    assert_eq!(r.status, 404);
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_in_both_forms_tells_no_secrets() {
    let fx = fixture(
        4,
        &[Net::of(3, ALICE, true), Net::public(1, &["bob"], false)],
    )
    .await;
    let (http, an, bn) = (&fx.http, fx.name(0), fx.name(1));

    // Status of a private network: for its members only (issue 15, observation 7).
    let r = http
        .send("GET", &format!("{an}.status.{DOMAIN}"), "/", &[], empty())
        .await;
    assert_eq!(r.status, 401, "{}", r.text());
    let bob = [("authorization", format!("Bearer {}", token("bob")))];
    let r = http
        .send("GET", &format!("{an}.status.{DOMAIN}"), "/", &bob, empty())
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    // Status, host and path form: no secrets.
    let alice = [("authorization", format!("Bearer {}", token("alice")))];
    let r = http
        .send(
            "GET",
            &format!("{an}.status.{DOMAIN}"),
            "/",
            &alice,
            empty(),
        )
        .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["ready_nodes"], 3);
    assert!(!r.text().contains("alice") && !r.text().contains("127.0.0.1"));
    let r = http
        .send(
            "GET",
            DOMAIN,
            &format!("/network/{bn}/status"),
            &[],
            empty(),
        )
        .await;
    assert_eq!(r.json()["gateway_public"], true);
    // A public network's gateway resolves no DNS name for anonymous clients.
    let r = http
        .send(
            "GET",
            &gw_host(&bn),
            "/ipns/example.com/index.html",
            &[],
            empty(),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn private_gateway_needs_a_member_public_is_open() {
    let fx = fixture(
        5,
        &[Net::of(1, ALICE, true), Net::public(1, &["bob"], true)],
    )
    .await;
    let (http, an, bn) = (&fx.http, fx.name(0), fx.name(1));
    let (alice, bob) = (token("alice"), token("bob"));
    let cid1 = http
        .add(
            &api_host(&an),
            "/api/v0/add",
            &alice,
            b"hello through the host form",
        )
        .await;

    // Private needs a member's token.
    let path = format!("/ipfs/{cid1}");
    let r = http.send("GET", &gw_host(&an), &path, &[], empty()).await;
    assert_eq!(r.status, 401, "{}", r.text());
    let r = http
        .send(
            "GET",
            &gw_host(&an),
            &path,
            &[("authorization", format!("Bearer {alice}"))],
            empty(),
        )
        .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "hello through the host form")
    );
    let r = http
        .send(
            "GET",
            DOMAIN,
            &format!("/network/{an}/gateway{path}"),
            &[("authorization", format!("Bearer {bob}"))],
            empty(),
        )
        .await;
    assert_eq!(r.status, 403);
    // Public is open, in both forms.
    let cid_b = http
        .add(&api_host(&bn), "/api/v0/add", &bob, b"public content")
        .await;
    for (host, p) in [
        (gw_host(&bn), format!("/ipfs/{cid_b}")),
        (
            DOMAIN.to_string(),
            format!("/network/{bn}/gateway/ipfs/{cid_b}"),
        ),
    ] {
        let r = http.send("GET", &host, &p, &[], empty()).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "public content"),
            "{host}{p}"
        );
    }
    let r = http
        .send("GET", &gw_host(&bn), "/api/v0/id", &[], empty())
        .await;
    assert_eq!(r.status, 404, "the gateway forwards only /ipfs and /ipns");
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cors_preflight_is_ours_and_foreign_origins_are_refused() {
    let with_origin = Net {
        allowed_origins: &["https://app.example"],
        ..Net::of(1, ALICE, true)
    };
    let fx = fixture(6, &[with_origin]).await;
    let (http, an) = (&fx.http, fx.name(0));
    let alice = token("alice");

    // The preflight is ours; an allowed origin passes (Origin stripped, or kubo would answer
    // 403), a foreign one is refused.
    let pre = |origin: &'static str| {
        vec![
            ("origin", origin.to_string()),
            ("access-control-request-method", "POST".to_string()),
            (
                "access-control-request-headers",
                "authorization".to_string(),
            ),
        ]
    };
    let r = http
        .send(
            "OPTIONS",
            &api_host(&an),
            "/api/v0/add",
            &pre("https://app.example"),
            empty(),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(r.headers["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    let r = http
        .send(
            "OPTIONS",
            &api_host(&an),
            "/api/v0/add",
            &pre("https://evil.example"),
            empty(),
        )
        .await;
    assert_eq!(r.status, 403);
    let r = http
        .send(
            "POST",
            &api_host(&an),
            "/api/v0/id",
            &[
                ("authorization", format!("Bearer {alice}")),
                ("origin", "https://app.example".into()),
            ],
            empty(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://app.example"
    );
    let r = http
        .send(
            "POST",
            &api_host(&an),
            "/api/v0/id",
            &[
                ("authorization", format!("Bearer {alice}")),
                ("origin", "https://evil.example".into()),
            ],
            empty(),
        )
        .await;
    assert_eq!(r.status, 403);
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_256_mib_add_streams_with_flat_memory() {
    let fx = fixture(7, &[Net::of(1, ALICE, true)]).await;
    let api0 = fx.api(0, 0);
    big_add(&fx.http, &fx.name(0), &token("alice"), &api0).await;
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fails_over_past_a_dead_first_node() {
    // Deterministic: a registry of its own whose first node is dead, the second one live.
    let fx = fixture(8, &[Net::of(1, ALICE, true)]).await;
    failover_with_dead_first_node(fx.view(0), fx.api(0, 0)).await;
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rpcs_survive_a_node_killed_mid_traffic() {
    let fx = fixture(9, &[Net::of(3, ALICE, true)]).await;
    let (http, an, addr) = (&fx.http, fx.name(0), fx.addr);
    let alice = token("alice");
    let va = fx.view(0);
    let peer0 = va.nodes[0].peer_id.clone();
    let api0 = &fx.api(0, va.nodes[0].index);

    // A node killed mid-traffic: RPCs keep succeeding on another replica.
    let traffic_ok = Arc::new(AtomicU64::new(0));
    let traffic_bad = Arc::new(AtomicU64::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let bg = {
        let (ok, bad, running) = (traffic_ok.clone(), traffic_bad.clone(), running.clone());
        let http = Http::new(addr);
        let (host, alice) = (api_host(&an), alice.clone());
        tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                let r = http.rpc(&host, "/api/v0/version", Some(&alice)).await;
                if r.status == 200 {
                    ok.fetch_add(1, Ordering::Relaxed)
                } else {
                    bad.fetch_add(1, Ordering::Relaxed)
                };
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Docker's own restart policy would bring the container back within ~100 ms, its port
    // accepting connections while kubo boots; what this test is about is a node that stays
    // dead until the orchestrator restarts it (and publishes it only once it answers).
    docker(&["update", "--restart=no", &format!("nexus-{an}-0")]);
    docker(&["kill", &format!("nexus-{an}-0")]);
    // Wait until node 0 really refuses connections, then call at once: the registry may still
    // list it, and the delegator must go on to node 1.
    assert!(
        eventually(Duration::from_secs(10), || async {
            try_rpc(api0, "version").await.is_none()
        })
        .await,
        "killed node still answers"
    );
    let peer1 = va.nodes[1].peer_id.clone();
    let r = http.rpc(&api_host(&an), "/api/v0/id", Some(&alice)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["ID"].as_str().unwrap_or_default().to_string();
    assert!(
        id == peer1 || id == peer0,
        "answered by an unknown peer {id}"
    );
    let cid3 = http
        .add(&api_host(&an), "/api/v0/add", &alice, b"after the kill")
        .await;
    assert!(!cid3.is_empty());
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.store(false, Ordering::Relaxed);
    bg.await.unwrap();
    let (ok, bad) = (
        traffic_ok.load(Ordering::Relaxed),
        traffic_bad.load(Ordering::Relaxed),
    );
    eprintln!("traffic during the kill: {ok} ok, {bad} failed");
    assert!(ok > 10, "too little traffic: {ok}");
    assert_eq!(bad, 0, "read-only RPCs failed while a replica died");
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_shutdown_returns_from_serve() {
    // Public: its status answers without a token.
    let mut fx = fixture(10, &[Net::public(1, ALICE, false)]).await;
    // A kept-alive client connection is open while the delegator shuts down.
    let r = fx
        .http
        .send(
            "GET",
            &format!("{}.status.{DOMAIN}", fx.name(0)),
            "/",
            &[],
            empty(),
        )
        .await;
    assert_eq!(r.status, 200);

    // Graceful shutdown: serve returns.
    let _ = fx.stop.take().expect("running").send(());
    tokio::time::timeout(Duration::from_secs(40), fx.server.take().expect("running"))
        .await
        .expect("delegator stopped")
        .expect("join")
        .expect("serve ok");
    fx.finish().await;
}

async fn big_add(http: &Http, net: &str, tok: &str, api0: &Endpoint) {
    const TOTAL: u64 = 256 * MIB;
    const CHUNK: u64 = 256 * 1024;
    let before = rss_bytes();
    let peak = Arc::new(AtomicU64::new(before));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss_bytes(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    let body = big_body(TOTAL, CHUNK);
    let started = std::time::Instant::now();
    let r = http
        .send(
            "POST",
            &api_host(net),
            "/api/v0/add",
            &[
                ("authorization", format!("Bearer {tok}")),
                (
                    "content-type",
                    format!("multipart/form-data; boundary={BOUNDARY}"),
                ),
            ],
            body,
        )
        .await;
    sampling.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    assert_eq!(r.status, 200, "big add: {}", r.text());
    let cid = last_hash(&r.body);
    let growth = peak.load(Ordering::Relaxed).saturating_sub(before);
    eprintln!(
        "256 MiB add through the delegator: {:.1} s, RSS before {} MiB, peak growth {} MiB",
        started.elapsed().as_secs_f64(),
        before / MIB,
        growth / MIB
    );
    assert!(growth < 64 * MIB, "RSS grew by {} MiB", growth / MIB);
    // The content arrived intact: the same bytes added directly to a node with `only-hash`
    // give the same CID. (Reading 256 MiB back is beyond the test image's `cat`, which stages
    // whole files.)
    let direct = Client::builder(TokioExecutor::new())
        .build::<_, Body>(Connector::new(Duration::from_secs(5)));
    let req = hyper::Request::post(api0.uri("/api/v0/add?only-hash=true"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(big_body(TOTAL, CHUNK))
        .expect("request");
    let resp = direct.request(req).await.expect("direct add");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(
        last_hash(&body),
        cid,
        "the proxied upload differs from the original"
    );
}

fn big_body(total: u64, chunk: u64) -> Body {
    let head = Bytes::from(multipart_head());
    let tail = Bytes::from(multipart_tail());
    let chunks = futures_util::stream::iter(
        std::iter::once(head)
            .chain((0..total / chunk).map(move |c| {
                let start = c * chunk;
                Bytes::from((start..start + chunk).map(gen_byte).collect::<Vec<u8>>())
            }))
            .chain(std::iter::once(tail))
            .map(|b| Ok::<_, BoxError>(Frame::data(b))),
    );
    StreamBody::new(chunks).boxed_unsync()
}

async fn failover_with_dead_first_node(va: &NetworkView, live_api: Endpoint) {
    // A port nothing listens on: bind, note, close.
    let dead = Endpoint::Tcp(
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap(),
    );
    let live = &va.nodes[0];
    let name = NetworkName::new(&va.name).unwrap();
    let reg = Registry::new();
    reg.publish(NetworkEntry {
        name: name.clone(),
        disk_bytes: None,
        access: Access {
            users: vec!["alice".into()],
            ..Access::default()
        },
        nodes: vec![
            ReadyNode {
                index: 0,
                peer_id: "dead".into(),
                api: dead.clone(),
                gateway: dead.clone(),
            },
            ReadyNode {
                index: 1,
                peer_id: live.peer_id.clone(),
                api: live_api,
                gateway: dead.clone(),
            },
        ],
    });
    let (addr, stop, server) = delegator(reg.clone(), Default::default()).await;
    let http = Http::new(addr);
    let alice = token("alice");
    // A read-only call and a body-carrying add both reach the live replica.
    let r = http
        .rpc(&api_host(name.as_str()), "/api/v0/id", Some(&alice))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["ID"].as_str(), Some(live.peer_id.as_str()));
    http.add(
        &api_host(name.as_str()),
        "/api/v0/add",
        &alice,
        b"failed over",
    )
    .await;
    // Only dead nodes → 502 JSON, quickly.
    reg.publish(NetworkEntry {
        nodes: vec![ReadyNode {
            index: 0,
            peer_id: "dead".into(),
            api: dead.clone(),
            gateway: dead.clone(),
        }],
        ..(*reg.get(&name).unwrap()).clone()
    });
    let r = http
        .rpc(&api_host(name.as_str()), "/api/v0/id", Some(&alice))
        .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.json()["error"].is_string());
    // No ready node → 503.
    reg.publish(NetworkEntry {
        nodes: vec![],
        ..(*reg.get(&name).unwrap()).clone()
    });
    let r = http
        .rpc(&api_host(name.as_str()), "/api/v0/id", Some(&alice))
        .await;
    assert_eq!(r.status, 503);
    // The network's own lists apply: api_deny closes a default-allowed command.
    let before = reg.get(&name).unwrap();
    reg.publish(NetworkEntry {
        access: Access {
            api_deny: vec!["version".into()],
            ..before.access.clone()
        },
        nodes: vec![ReadyNode {
            index: 0,
            peer_id: "dead".into(),
            api: dead.clone(),
            gateway: dead.clone(),
        }],
        ..(*before).clone()
    });
    let r = http
        .rpc(&api_host(name.as_str()), "/api/v0/version", Some(&alice))
        .await;
    assert_eq!(r.status, 403);
    let _ = stop.send(());
    let _ = server.await;
}

/// The disk limit holds (issue 14): with `disk` 64 MiB, a 100 MiB pinned add is refused with a
/// 507 that names the limit and the use, whether its `Content-Length` is declared (refused
/// before a byte of the body is sent) or it is chunked (cut while streaming, so kubo aborts
/// it); the repo stays within the limit plus one chunk and nothing of it is pinned; adds below
/// the limit still work; raising the network's `disk` lets the same add through.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disk_limit_that_holds() {
    const LIMIT: u64 = 64 * MIB;
    const BIG: u64 = 100 * MIB;
    const CHUNK: u64 = 256 * 1024;
    let fx = fixture(19, &[Net::of(1, ALICE, false)]).await;
    let (http, net) = (&fx.http, fx.name(0));
    let host = api_host(&net);
    let alice = token("alice");
    fx.orch
        .update(
            &net,
            UpdateNetwork {
                disk_bytes: Some(LIMIT),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    fx.orch.start(&net).await.unwrap();
    let registry = fx.orch.registry();
    let name = NetworkName::new(&net).unwrap();
    assert_eq!(registry.get(&name).unwrap().disk_bytes, Some(LIMIT));

    // Below the limit: a declared length and a chunked body both pass and are pinned.
    let small = http
        .add(&host, "/api/v0/add?pin=true", &alice, &[5u8; 1 << 20])
        .await;
    let r = streamed_add(http, &host, &alice, 2 * MIB, CHUNK).await;
    assert_eq!(r.status, 200, "small chunked add: {}", r.text());
    let small2 = last_hash(&r.body);
    let used = repo_size(http, &host, &alice).await;
    assert!(used < LIMIT, "{used}");
    let pinned_before = pins(http, &host, &alice).await;
    assert!(pinned_before.contains(&small) && pinned_before.contains(&small2));

    // A declared 100 MiB: refused on its head alone (the body is never sent).
    let (status, refusal) = head_only_add(fx.addr, &host, &alice, BIG).await;
    assert_eq!(status, 507, "{refusal}");
    check_refusal(&refusal, LIMIT);

    // A chunked 100 MiB: cut at the limit while streaming; the client gets the 507.
    let r = streamed_add(http, &host, &alice, BIG, CHUNK).await;
    assert_eq!(r.status, 507, "chunked 100 MiB: {}", r.text());
    check_refusal(&r.json(), LIMIT);

    // The repo stayed within the limit plus one chunk, and nothing new is pinned.
    let after = repo_size(http, &host, &alice).await;
    assert!(after <= LIMIT + CHUNK, "repo grew to {after} bytes");
    let pinned = pins(http, &host, &alice).await;
    assert_eq!(pinned, pinned_before, "a refused add left a pin");
    // Reads go on as before.
    let r = http
        .rpc(&host, &format!("/api/v0/cat?arg={small}"), Some(&alice))
        .await;
    assert_eq!((r.status, r.body.len()), (200, 1 << 20));

    // `network update --disk` raises the limit live: the same chunked add now passes.
    fx.orch
        .update(
            &net,
            UpdateNetwork {
                disk_bytes: Some(256 * MIB),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(60), || async {
            registry
                .get(&name)
                .is_some_and(|e| e.disk_bytes == Some(256 * MIB) && e.nodes.len() == 1)
        })
        .await,
        "the raised limit never reached the registry"
    );
    let r = streamed_add(http, &host, &alice, BIG, CHUNK).await;
    assert_eq!(r.status, 200, "100 MiB after the raise: {}", r.text());
    let big = last_hash(&r.body);
    let r = http
        .rpc(&host, &format!("/api/v0/pin/ls?arg={big}"), Some(&alice))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(repo_size(http, &host, &alice).await > BIG);
    fx.finish().await;
}

/// A pinned `add` of `total` generated bytes, sent chunked (no `Content-Length`).
async fn streamed_add(http: &Http, host: &str, tok: &str, total: u64, chunk: u64) -> Answer {
    http.send(
        "POST",
        host,
        "/api/v0/add?pin=true",
        &[
            ("authorization", format!("Bearer {tok}")),
            (
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            ),
        ],
        big_body(total, chunk),
    )
    .await
}

/// Sends only the head of an `add` declaring `len` body bytes (the body never follows) and
/// reads the answer: a refusal up front must not wait for the body.
async fn head_only_add(
    addr: SocketAddr,
    host: &str,
    tok: &str,
    len: u64,
) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /api/v0/add?pin=true HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {tok}\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len}\r\n\
         Connection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.expect("write head");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw))
        .await
        .expect("answered without the body")
        .expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let json = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, json)
}

/// The node's `RepoSize`, through the delegator (`repo/stat` is allowed by default).
async fn repo_size(http: &Http, host: &str, tok: &str) -> u64 {
    let r = http
        .rpc(host, "/api/v0/repo/stat?size-only=true", Some(tok))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["RepoSize"].as_u64().expect("RepoSize")
}

/// The node's recursive pins, sorted.
async fn pins(http: &Http, host: &str, tok: &str) -> Vec<String> {
    let r = http
        .rpc(host, "/api/v0/pin/ls?type=recursive", Some(tok))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut keys: Vec<String> = r.json()["Keys"]
        .as_object()
        .expect("Keys")
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

/// A 507 in the delegator's error format that names the limit and the use.
fn check_refusal(v: &serde_json::Value, limit: u64) {
    assert_eq!(v["status"], 507, "{v}");
    assert!(v["request_id"].is_string(), "{v}");
    assert_eq!(v["limit_bytes"].as_u64(), Some(limit), "{v}");
    let used = v["used_bytes"].as_u64().expect("used_bytes");
    assert!(used > 0 && used <= limit, "{v}");
    let msg = v["error"].as_str().expect("error");
    assert!(
        msg.contains(&format!("limit {limit} bytes"))
            && msg.contains(&format!("in use {used} bytes")),
        "{msg}"
    );
}

/// Writes `raw` to the delegator on a fresh connection and reads the whole answer.
async fn raw_http(addr: SocketAddr, raw: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(raw.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out))
        .await
        .expect("answered in time")
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

/// A token signed with the test key whose claims are exactly `claims`.
fn token_with(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .expect("token")
}

/// Issue 15, observations 3–6 against a real node: a bad `sub` never falls back to `id`
/// (401); ambiguous requests are JSON 400s; the client's host never changes what the node
/// serves; content on the shared origin (path form) is sandboxed, the host form is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unambiguous_requests_bound_users_and_a_sandboxed_shared_origin() {
    let fx = fixture(11, &[Net::public(1, ALICE, true)]).await;
    let (http, an, addr) = (&fx.http, fx.name(0), fx.addr);
    let alice = token("alice");
    let page = b"<html><script>document.title='tenant'</script></html>";
    let cid = http.add(&api_host(&an), "/api/v0/add", &alice, page).await;

    // Observation 3: a present but invalid `sub` is a 401, whatever `id` says.
    let now = jsonwebtoken::get_current_timestamp();
    for sub in [
        serde_json::json!(123),
        serde_json::json!(""),
        serde_json::json!(null),
    ] {
        let mut claims =
            serde_json::json!({"sub": sub, "id": "alice", "exp": now + 600, "iat": now});
        if let Some(aud) = jwt().audience {
            claims["aud"] = serde_json::json!(aud);
        }
        let t = token_with(claims);
        let r = http.rpc(&api_host(&an), "/api/v0/id", Some(&t)).await;
        assert_eq!(r.status, 401, "sub = {sub}: {}", r.text());
        assert!(r.json()["error"].is_string());
    }

    // Observation 4: ambiguous requests are refused with a JSON 400 before any node.
    let gw = gw_host(&an);
    for (what, req) in [
        (
            "absolute-form target naming another host",
            format!(
                "GET http://other.gateway.{DOMAIN}/ipfs/{cid} HTTP/1.1\r\nHost: {gw}\r\nConnection: close\r\n\r\n"
            ),
        ),
        (
            "two Host headers",
            format!(
                "GET /ipfs/{cid} HTTP/1.1\r\nHost: {gw}\r\nHost: other.gateway.{DOMAIN}\r\nConnection: close\r\n\r\n"
            ),
        ),
    ] {
        let answer = raw_http(addr, &req).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{what}: {answer}");
        assert!(answer.contains("\"status\":400"), "{what}: {answer}");
    }
    // HTTP/2 with `:authority` ≠ `host`.
    {
        use hyper_util::rt::TokioIo;
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        let req = hyper::Request::get(format!("http://{gw}/ipfs/{cid}"))
            .header("host", format!("other.gateway.{DOMAIN}"))
            .body(empty())
            .expect("request");
        let resp = send.send_request(req).await.expect("h2 answer");
        assert_eq!(resp.status(), 400);
        let req = hyper::Request::get(format!("http://{gw}/ipfs/{cid}"))
            .body(empty())
            .expect("request");
        let resp = send.send_request(req).await.expect("h2 answer");
        assert_eq!(resp.status(), 200);
    }

    // Observations 5 and 6: the path form on the apex serves the content itself (a client's
    // `X-Forwarded-Host` cannot turn it into a subdomain redirect), sandboxed.
    let r = http
        .send(
            "GET",
            DOMAIN,
            &format!("/network/{an}/gateway/ipfs/{cid}"),
            &[("x-forwarded-host", format!("{cid}.ipfs.localhost"))],
            empty(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body.as_ref(), page.as_ref());
    assert_eq!(r.headers["content-security-policy"], "sandbox");
    assert_eq!(r.headers["x-content-type-options"], "nosniff");
    // The host form is the network's own origin: served as the node serves it.
    let r = http
        .send("GET", &gw, &format!("/ipfs/{cid}"), &[], empty())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.headers.contains_key("content-security-policy"));
    fx.finish().await;
}

/// Issue 15, observation 2 against a real node: a token for another application (`aud`) and
/// one that lives too long are refused; a `net` claim limits a token to its networks; a
/// revoked token is refused at once, others of the same user are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_are_bound_to_an_audience_networks_and_revocable() {
    let fx = fixture(12, &[Net::of(1, ALICE, true), Net::of(1, ALICE, false)]).await;
    let (http, an, bn) = (&fx.http, fx.name(0), fx.name(1));
    let now = jsonwebtoken::get_current_timestamp();
    let host = api_host(&an);
    let id = |tok: String| {
        let host = host.clone();
        async move { http.rpc(&host, "/api/v0/id", Some(&tok)).await }
    };

    // Same key, another application's audience, or none: 401.
    for aud in [Some("billing-app"), None] {
        let mut claims = serde_json::json!({"sub": "alice", "iat": now, "exp": now + 600});
        if let Some(a) = aud {
            claims["aud"] = serde_json::json!(a);
        }
        let r = id(token_with(claims)).await;
        assert_eq!(r.status, 401, "aud {aud:?}: {}", r.text());
    }
    // Ten years: 401.
    let r = id(token_with(serde_json::json!({
        "sub": "alice", "aud": "nexus", "iat": now, "exp": now + 3650 * 86_400
    })))
    .await;
    assert_eq!(r.status, 401, "{}", r.text());

    // `net`: this network only.
    let only_b = nexus::delegator::mint(
        &jwt(),
        &nexus::delegator::TokenRequest {
            user: "alice".into(),
            ttl: Duration::from_secs(600),
            networks: vec![bn.clone()],
            role: None,
        },
    )
    .expect("mint");
    let r = id(only_b.token.clone()).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = http
        .rpc(&api_host(&bn), "/api/v0/id", Some(&only_b.token))
        .await;
    assert_ne!(r.status, 403, "{}", r.text());

    // Revocation: refused from the call's return on; the user's other tokens still work.
    let minted = nexus::delegator::mint(
        &jwt(),
        &nexus::delegator::TokenRequest {
            user: "alice".into(),
            ttl: Duration::from_secs(600),
            networks: vec![],
            role: None,
        },
    )
    .expect("mint");
    let other = token("alice");
    assert_eq!(id(minted.token.clone()).await.status, 200);
    fx.orch.revoke_token(&minted.jti).await.expect("revoke");
    let r = id(minted.token.clone()).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("revoked"));
    assert_eq!(id(other).await.status, 200);
    assert!(fx.orch.revoke_token("no spaces allowed").await.is_err());
    fx.finish().await;
}

/// Removes a container this test ran by hand, even when the test fails.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker_ok(&["rm", "-f", "-v", &self.0]);
    }
}

/// Issue 15, observation 5 at node level. The node's gateway (the test image's stand-in
/// mirrors boxo's hostname handler, docs/test-image.md) honours `X-Forwarded-Host`: a node
/// with kubo's default gateway settings, as nodes ran before nexus set
/// `Gateway.PublicGateways = {"localhost": null}`, answers a path-form request carrying
/// `X-Forwarded-Host: localhost` with a 301 to `<cid>.ipfs.localhost`. (a) Sent straight to
/// the node's gateway it does; (b) sent through the delegator, which never passes a client's
/// host on, it does not: the content is served as asked. Ports 21150–21151 (deleg2's range).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clients_forwarded_host_never_reaches_the_nodes_gateway() {
    let (gw_port, api_port) = (21150u16, 21151u16);
    let name = format!("nexus-xfh-{}", unique_network("x"));
    let node = Container(name.clone());
    let _ = docker_ok(&["rm", "-f", "-v", &name]);
    docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "-p",
        &format!("127.0.0.1:{api_port}:5001"),
        "-p",
        &format!("127.0.0.1:{gw_port}:8080"),
        &image(),
    ]);
    let api = Endpoint::Tcp(SocketAddr::from(([127, 0, 0, 1], api_port)));
    let gw_addr = SocketAddr::from(([127, 0, 0, 1], gw_port));
    assert!(
        eventually(Duration::from_secs(60), || async {
            try_rpc(&api, "id").await.is_some_and(|(s, _)| s == 200)
        })
        .await,
        "the stand-in did not start: {}",
        docker(&["logs", &node.0])
    );
    let data = b"served as asked, on the host the client named".to_vec();
    let cid = add(&api, &data).await;
    let path = format!("/ipfs/{cid}");
    let xfh = [("x-forwarded-host", "localhost".to_string())];

    // (a) Straight to the node's gateway: boxo's subdomain redirect.
    let direct = Http::new(gw_addr);
    let r = direct
        .send("GET", &gw_addr.to_string(), &path, &[], empty())
        .await;
    assert_eq!((r.status, r.body.as_ref()), (200, data.as_slice()));
    let r = direct
        .send("GET", &gw_addr.to_string(), &path, &xfh, empty())
        .await;
    assert_eq!(r.status, 301, "{}", r.text());
    let location = r.headers["location"].to_str().expect("location");
    assert!(
        location.starts_with("http://bafy") && location.ends_with(".ipfs.localhost/"),
        "{location}"
    );

    // (b) The same request through the delegator: never redirected, in both forms.
    let net = unique_network("dlgxfh");
    let registry = Registry::new();
    registry.publish(NetworkEntry {
        name: net.clone(),
        disk_bytes: None,
        access: Access {
            users: vec!["alice".into()],
            gateway_public: true,
            ..Access::default()
        },
        nodes: vec![ReadyNode {
            index: 0,
            peer_id: "stand-in".into(),
            api: api.clone(),
            gateway: Endpoint::Tcp(gw_addr),
        }],
    });
    let (addr, stop, server) =
        delegator(registry, nexus::revocations::Revocations::default()).await;
    let http = Http::new(addr);
    for (host, p) in [
        (gw_host(net.as_str()), path.clone()),
        (DOMAIN.to_string(), format!("/network/{net}/gateway{path}")),
    ] {
        for extra in [
            ("x-forwarded-host", "localhost".to_string()),
            ("forwarded", "host=localhost".to_string()),
        ] {
            let r = http
                .send("GET", &host, &p, std::slice::from_ref(&extra), empty())
                .await;
            assert_eq!(r.status, 200, "{host}{p} with {extra:?}: {}", r.text());
            assert!(
                !r.headers.contains_key("location"),
                "{host}{p}: {:?}",
                r.headers
            );
            assert_eq!(r.body.as_ref(), data.as_slice());
        }
    }
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(40), server).await;
}
