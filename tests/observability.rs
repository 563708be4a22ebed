//! Observability end to end: the real `nexus daemon` process with its metrics listener, real
//! Docker and the test image. Scrapes `/metrics` after starting a network and proxying calls,
//! flips `/readyz` (and the gRPC health service) by cutting Docker and the store off through
//! TCP forwarders the test controls, and checks the Grafana dashboard against the exported
//! names.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{docker, image};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

const KEY: &str = "obs-key-0123456789abcdefghijklmnopqrstuvwxyz";
/// The node scrape-through's own read-only token (`metrics.scrape_token`).
const SCRAPE: &str = "obs-scrape-0123456789abcdefghijklmnopqrstuvwxyz";

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

// ---------------------------------------------------------------------------------------------
// A daemon process (a trimmed copy of tests/cli.rs's helper, plus the metrics listener).

struct Daemon {
    dir: PathBuf,
    config: PathBuf,
    instance: String,
    grpc: u16,
    delegator: u16,
    metrics: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// `extra` is appended to the file (e.g. `[store]` and `[docker]` endpoint settings).
    fn configure(port_base: u16, docker_endpoint: Option<&str>, store_url: Option<&str>) -> Self {
        let id = random_hex(3);
        let dir = std::env::temp_dir().join(format!("nexus-obs-{id}"));
        std::fs::create_dir_all(&dir).expect("dir");
        let instance = format!("obs-{id}");
        let (grpc, delegator, metrics) = (free_port(), free_port(), free_port());
        let config = dir.join("nexus.toml");
        let endpoint = docker_endpoint
            .map(|e| format!("endpoint = \"{e}\""))
            .unwrap_or_default();
        let store = store_url
            .map(|u| format!("[store]\nurl = \"{u}\"\n"))
            .unwrap_or_default();
        let text = format!(
            r#"
[daemon]
data_dir = "{data}"

{store}
[docker]
instance = "{instance}"
{endpoint}

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
api_keys = ["{KEY}"]

[delegator]
listen = "127.0.0.1:{delegator}"

[metrics]
listen = "127.0.0.1:{metrics}"
interval = "1s"
scrape_token = "{SCRAPE}"

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
            metrics,
            child: None,
        }
    }

    fn start(&mut self) {
        let log = std::fs::File::create(&self.log).expect("log file");
        let child = Command::new(bin())
            .arg("--config")
            .arg(&self.config)
            .arg("daemon")
            .env_remove("NEXUS_CONFIG")
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
                panic!("daemon exited at start ({status}):\n{}", self.logs());
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.grpc)).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", self.metrics)).is_ok()
            {
                return;
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

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.metrics)
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

// ---------------------------------------------------------------------------------------------
// HTTP and the Prometheus text format.

async fn http(method: &str, url: &str, auth: Option<&str>) -> (u16, String) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = hyper::Request::builder().method(method).uri(url);
    if url.contains("/network/") {
        // The delegator answers for its domain only (default `localhost`).
        req = req.header("host", "localhost");
    }
    if let Some(a) = auth {
        req = req.header("authorization", format!("Bearer {a}"));
    }
    let req = req.body(Full::new(Bytes::new())).expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .expect("HTTP timed out")
        .expect("HTTP request");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// One sample: name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let rest = rest.strip_suffix('}').expect("closing brace");
                let mut labels = BTreeMap::new();
                // Label values here never contain `,` or `"` (bounded label sets).
                for pair in rest.split(',').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').expect("label pair");
                    labels.insert(k.to_string(), v.trim_matches('"').to_string());
                }
                (n.to_string(), labels)
            }
            None => (series.to_string(), BTreeMap::new()),
        };
        out.push(Sample {
            name,
            labels,
            value: value.parse().unwrap_or(f64::NAN),
        });
    }
    out
}

fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    find(samples, name, labels).iter().map(|s| s.value).sum()
}

// ---------------------------------------------------------------------------------------------
// A TCP forwarder the test can cut off and restore.

#[derive(Clone)]
enum Target {
    Tcp(String),
    Unix(PathBuf),
}

struct Forwarder {
    port: u16,
    paused: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    async fn start(target: Target) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind forwarder");
        let port = listener.local_addr().expect("addr").port();
        let paused = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (p, c) = (paused.clone(), conns.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if p.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let handle = tokio::spawn(async move {
                    match target {
                        Target::Tcp(addr) => {
                            if let Ok(mut out) = tokio::net::TcpStream::connect(addr).await {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                            }
                        }
                        Target::Unix(path) => {
                            if let Ok(mut out) = tokio::net::UnixStream::connect(path).await {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                            }
                        }
                    }
                });
                c.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(handle.abort_handle());
            }
        });
        Forwarder {
            port,
            paused,
            conns,
            task,
        }
    }

    /// Refuses new connections and cuts the open ones.
    fn cut(&self) {
        self.paused.store(true, Ordering::SeqCst);
        for c in self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            c.abort();
        }
    }

    fn restore(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------

/// Every `expr` in a Grafana dashboard (panels, nested rows, templating queries).
fn dashboard_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    ("query", Value::String(s)) if s.contains("nexus_") => out.push(s.clone()),
                    _ => dashboard_exprs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| dashboard_exprs(x, out)),
        _ => {}
    }
}

/// Metric names a PromQL expression uses: identifiers starting with `nexus_` (every metric
/// nexus exports does; kubo's, scraped through, do not appear on the dashboard).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let starts = expr[i..].starts_with("nexus_")
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
        if starts {
            let end = expr[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map(|e| i + e)
                .unwrap_or(expr.len());
            names.push(expr[i..end].to_string());
            i = end;
        } else {
            i += 1;
        }
    }
    names
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/nexus.json"),
    )
    .expect("deploy/grafana/nexus.json");
    serde_json::from_str(&text).expect("the dashboard is valid JSON")
}

#[test]
fn grafana_dashboard_queries_only_exported_metrics() {
    let d = dashboard();
    assert!(
        d["title"].is_string() && d["panels"].is_array(),
        "a dashboard"
    );
    let mut exprs = Vec::new();
    dashboard_exprs(&d, &mut exprs);
    assert!(exprs.len() >= 10, "panels with queries: {exprs:?}");
    let mut used = std::collections::BTreeSet::new();
    for e in &exprs {
        let names = metric_names(e);
        assert!(!names.is_empty(), "query names no nexus metric: {e}");
        for n in names {
            assert!(
                nexus::telemetry::names::is_exported(&n),
                "`{n}` in `{e}` is not a metric the daemon exports"
            );
            used.insert(n);
        }
    }
    // Every family has a panel.
    for n in nexus::telemetry::names::ALL {
        let shown = used
            .iter()
            .any(|u| u == n || u.strip_prefix(n).is_some_and(|s| s.starts_with('_')));
        assert!(shown, "no panel shows {n}");
    }
    // The Prometheus example is there and scrapes both.
    let prom = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/prometheus.yml"),
    )
    .expect("deploy/prometheus/prometheus.yml");
    assert!(
        prom.contains("/metrics") && prom.contains("/nodes/"),
        "{prom}"
    );
    assert!(prom.contains("credentials_file"), "{prom}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_of_a_running_network() {
    let mut d = Daemon::configure(15000, None, None);
    d.start();
    // Ready once recovery is done and the reconciler runs.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = http("GET", &d.url("/readyz"), None).await;
        if status == 200 {
            let v: Value = serde_json::from_str(&body).expect("JSON");
            assert_eq!(v["ready"], true);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never ready: {body}\n{}",
            d.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (status, body) = http("GET", &d.url("/healthz"), None).await;
    assert_eq!(status, 200, "{body}");

    let net = format!("obs-{}", random_hex(3));
    let n = d.json(&[
        "network",
        "create",
        &net,
        "--replicas",
        "2",
        "--user",
        "alice",
    ]);
    assert_eq!(n["status"], "stopped", "{n}");
    let n = d.json(&["network", "start", &net]);
    assert_eq!(n["status"], "running", "{n}");

    // Proxied calls through the delegator.
    let out = d.cli(&["token", "issue", "--user", "alice", "--ttl", "10m"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let proxied = 3;
    for _ in 0..proxied {
        let (status, body) = http(
            "POST",
            &format!("http://127.0.0.1:{}/network/{net}/api/v0/id", d.delegator),
            Some(&token),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    // Refused without a token: counted with its status.
    let (status, _) = http(
        "POST",
        &format!("http://127.0.0.1:{}/network/{net}/api/v0/id", d.delegator),
        None,
    )
    .await;
    assert_eq!(status, 401);

    // Node gauges appear after a refresh (interval 1 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    let samples = loop {
        let (status, text) = http("GET", &d.url("/metrics"), None).await;
        assert_eq!(status, 200);
        let samples = parse_metrics(&text);
        let mem: Vec<f64> = ["0", "1"]
            .iter()
            .map(|i| {
                value(
                    &samples,
                    "nexus_node_memory_usage_bytes",
                    &[("network", &net), ("node", i)],
                )
            })
            .collect();
        let nodes = value(
            &samples,
            "nexus_nodes",
            &[("network", &net), ("state", "running")],
        );
        // Peers need the node's RPC API to answer within the runtime's timeout: a later
        // pass may be the first to have them.
        let peers = ["0", "1"].iter().all(|i| {
            !find(
                &samples,
                "nexus_node_peers",
                &[("network", &net), ("node", i)],
            )
            .is_empty()
        });
        // A pass that began while `start` was still converging shows the old status: wait
        // for one that began after.
        let running = value(&samples, "nexus_networks", &[("status", "running")]);
        if mem.iter().all(|m| *m > 0.0) && nodes == 2.0 && peers && running == 1.0 {
            break samples;
        }
        assert!(
            Instant::now() < deadline,
            "node gauges never appeared:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let v = |name: &str, labels: &[(&str, &str)]| value(&samples, name, labels);
    let has = |name: &str, labels: &[(&str, &str)]| !find(&samples, name, labels).is_empty();

    // Status and state gauges.
    assert_eq!(v("nexus_networks", &[("status", "running")]), 1.0);
    assert!(has("nexus_networks", &[("status", "failed")]));
    assert_eq!(
        v("nexus_nodes", &[("network", &net), ("state", "exited")]),
        0.0
    );
    // Reconciler.
    assert!(
        v(
            "nexus_reconcile_duration_seconds_count",
            &[("result", "ok")]
        ) >= 1.0
    );
    assert!(has(
        "nexus_reconcile_duration_seconds_bucket",
        &[("le", "+Inf")]
    ));
    // Port pools: two nodes hold one swarm port each (their RPC API and gateway are sockets).
    assert_eq!(v("nexus_port_pool_used_ports", &[("kind", "swarm")]), 2.0);
    assert_eq!(v("nexus_port_pool_size_ports", &[("kind", "swarm")]), 20.0);
    for gone in ["api", "gateway"] {
        assert!(
            !has("nexus_port_pool_used_ports", &[("kind", gone)]),
            "{gone}"
        );
    }
    let swarm_range = "15000-15019";
    assert!(has(
        "nexus_port_pool_used_ports",
        &[("kind", "swarm"), ("range", swarm_range)]
    ));
    // The subnet pool: this daemon's one network holds one of the default pool's /26s.
    let pool = [("pool", "10.224.0.0/12")];
    assert_eq!(v("nexus_subnet_pool_used_subnets", &pool), 1.0);
    assert_eq!(v("nexus_subnet_pool_size_subnets", &pool), 16384.0);
    // gRPC.
    let create = "/nexus.v1.Nexus/CreateNetwork";
    assert!(
        v(
            "nexus_grpc_requests_total",
            &[("method", create), ("code", "Ok")]
        ) >= 1.0
    );
    assert!(
        v(
            "nexus_grpc_request_duration_seconds_count",
            &[("method", create)]
        ) >= 1.0
    );
    // Delegator.
    let ok = v(
        "nexus_delegator_requests_total",
        &[("network", &net), ("feature", "api"), ("status", "200")],
    );
    assert!(ok >= f64::from(proxied), "{ok}");
    assert!(
        v(
            "nexus_delegator_requests_total",
            &[("network", &net), ("feature", "api"), ("status", "401")]
        ) >= 1.0
    );
    assert!(
        v(
            "nexus_delegator_request_duration_seconds_count",
            &[("network", &net), ("feature", "api")]
        ) >= f64::from(proxied)
    );
    // Per-node resources, both nodes.
    for i in ["0", "1"] {
        let l = [("network", net.as_str()), ("node", i)];
        assert!(v("nexus_node_memory_usage_bytes", &l) > 0.0, "node {i}");
        assert!(v("nexus_node_memory_limit_bytes", &l) >= 256.0 * 1024.0 * 1024.0);
        assert!(has("nexus_node_cpu_usage_cores", &l));
        assert!(has("nexus_node_network_receive_bytes", &l));
        assert!(has("nexus_node_network_transmit_bytes", &l));
        assert!(has("nexus_node_uptime_seconds", &l));
        assert!(has("nexus_node_disk_used_bytes", &l));
        assert!(has("nexus_node_peers", &l));
    }
    // Readiness.
    assert_eq!(v("nexus_ready", &[]), 1.0);
    for check in ["store", "docker", "reconciler"] {
        assert_eq!(
            v("nexus_readiness_check", &[("check", check)]),
            1.0,
            "{check}"
        );
    }
    // Every family the dashboard uses that must exist by now is in the scrape; and nothing
    // nexus exports is missing from the list the dashboard test checks against.
    for s in &samples {
        if s.name.starts_with("nexus_") {
            assert!(
                nexus::telemetry::names::is_exported(&s.name),
                "{} is exported but not in telemetry::names::ALL",
                s.name
            );
        }
    }

    // A node death counts as a restart.
    let container = format!("nexus-{net}-1");
    docker(&["kill", &container]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, text) = http("GET", &d.url("/metrics"), None).await;
        let s = parse_metrics(&text);
        if value(
            &s,
            "nexus_node_restarts_total",
            &[("network", &net), ("node", "1")],
        ) >= 1.0
        {
            break;
        }
        assert!(Instant::now() < deadline, "no restart counted:\n{text}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Scrape-through: its own scrape token is required, the admin API key is refused; unknown
    // nodes are 404; otherwise the request reaches the node (the test image has no
    // /debug/metrics/prometheus: it answers its own plain 404, which real kubo would answer
    // with its metrics).
    let path = format!("/nodes/{net}/0/metrics");
    let (status, _) = http("GET", &d.url(&path), None).await;
    assert_eq!(status, 401);
    let (status, _) = http("GET", &d.url(&path), Some("wrong-key")).await;
    assert_eq!(status, 401);
    let (status, body) = http("GET", &d.url(&path), Some(KEY)).await;
    assert_eq!(
        status, 401,
        "the admin API key is not a scrape token: {body}"
    );
    assert!(
        body.contains("scrape token") && !body.contains(KEY),
        "{body}"
    );
    let (status, body) = http("GET", &d.url("/nodes/nope/0/metrics"), Some(SCRAPE)).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no running network"), "{body}");
    let (status, body) = http(
        "GET",
        &d.url(&format!("/nodes/{net}/7/metrics")),
        Some(SCRAPE),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("not ready"), "{body}");
    let (status, body) = http("GET", &d.url(&path), Some(SCRAPE)).await;
    assert!(
        (status == 200 && body.contains("# TYPE"))
            || (status == 404 && body.contains("404 page not found")),
        "not the node's answer: {status} {body}"
    );
}

/// The gRPC health service's status for the whole server.
async fn grpc_health(port: u16) -> Option<i32> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .ok()?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .ok()?;
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let resp = client
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?;
    Some(resp.into_inner().status)
}

const SERVING: i32 = 1;
const NOT_SERVING: i32 = 2;

/// Waits until `/readyz` answers `want` (and names `failing` when unready) and the gRPC health
/// service agrees.
async fn wait_ready(d: &Daemon, want: bool, failing: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = http("GET", &d.url("/readyz"), None).await;
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let failed: Vec<String> = v["checks"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|c| c["ok"] == false)
                    .filter_map(|c| c["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let http_ok = if want {
            status == 200 && v["ready"] == true
        } else {
            status == 503
                && v["ready"] == false
                && failing.is_none_or(|f| failed.iter().any(|x| x == f))
        };
        let grpc = grpc_health(d.grpc).await;
        let grpc_ok = grpc == Some(if want { SERVING } else { NOT_SERVING });
        if http_ok && grpc_ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "readiness never became {want} ({failing:?}): /readyz {status} {body}, gRPC health {grpc:?}\n{}",
            d.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_follows_docker_and_the_store() {
    let docker_fwd = Forwarder::start(Target::Unix("/var/run/docker.sock".into())).await;

    // The store: a dedicated Postgres database reached through a forwarder.
    let admin = std::env::var("NEXUS_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!("NEXUS_TEST_POSTGRES_URL is not set: run the suite with scripts/test.sh")
    });
    use sqlx::{Connection, Executor};
    sqlx::any::install_default_drivers();
    let db = format!("nexus_obs_{}", random_hex(4));
    let mut conn = sqlx::AnyConnection::connect(&admin)
        .await
        .expect("Postgres admin");
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{db}\"")))
        .await
        .expect("create database");
    // postgres://USER@HOST:PORT/DB → the forwarder in front of HOST:PORT.
    let (scheme_user, rest) = admin.split_once('@').expect("URL with user@host");
    let hostport = rest.split('/').next().expect("host:port");
    let pg_fwd = Forwarder::start(Target::Tcp(hostport.to_string())).await;
    let store_url = format!("{scheme_user}@127.0.0.1:{}/{db}", pg_fwd.port);

    let mut d = Daemon::configure(
        15100,
        Some(&format!("tcp://127.0.0.1:{}", docker_fwd.port)),
        Some(&store_url),
    );
    d.start();
    wait_ready(&d, true, None).await;

    docker_fwd.cut();
    wait_ready(&d, false, Some("docker")).await;
    docker_fwd.restore();
    wait_ready(&d, true, None).await;

    pg_fwd.cut();
    wait_ready(&d, false, Some("store")).await;
    pg_fwd.restore();
    wait_ready(&d, true, None).await;

    // The liveness probe never depended on either.
    let (status, _) = http("GET", &d.url("/healthz"), None).await;
    assert_eq!(status, 200);

    drop(d);
    let _ = conn
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"
        )))
        .await;
}
