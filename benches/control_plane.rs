//! Control-plane benchmark program (issue 7, `scripts/bench/run control`).
//!
//! The real orchestrator, store (with the daemon's write-through cache in front) and port
//! allocator (bind probe included) on the in-memory runtime, so what is measured is nexus's own
//! control plane, not Docker. Three figures, printed
//! as one JSON line on stdout:
//!
//! - `starts_per_s`: create + start of `--networks` one-node networks, `--concurrency` in
//!   flight, through the orchestrator (`--via inproc`) or through the gRPC API over loopback TCP
//!   with the typed client (`--via grpc`; server and client in this process, one HTTP/2
//!   connection, `CreateNetwork` with `start = true`);
//! - `rss_mib`: this process's resident memory once every network runs;
//! - `store_calls_per_start` and `store_round_trips_per_s`: how many store calls one create +
//!   start sends to the database (counted between the cache and the database), and how many `SELECT 1` round trips
//!   the same store answers per second at the same concurrency: the ceiling they imply is
//!   `store_round_trips_per_s / store_calls_per_start`;
//! - `recovery_secs`: a second store holding `--recovery-nodes` running nodes (networks of 4),
//!   then a new orchestrator on it: from `Orchestrator::new` until `recover` returned and every
//!   network is back in the registry with all its nodes.
//!
//! `--store sqlite` uses a fresh file in a temporary directory; `--store postgres://…` creates a
//! throwaway database on that server for each phase and drops it afterwards. It is a program
//! for the benchmark driver, not a test: it asserts only that the work it timed was done.
//!
//! ```text
//! control_plane --store sqlite|postgres://… --via inproc|grpc [--networks 10000]
//!               [--concurrency 32] [--recovery-nodes 1000]
//! ```

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use nexus::api::pb;
use nexus::api::{ApiKeys, NexusService, ServiceConfig};
use nexus::names::InstanceName;
use nexus::node::mock::MockRuntime;
use nexus::node::NetworkName;
use nexus::orchestrator::ports::{BindProbe, PortConfig, PortRange};
use nexus::orchestrator::{CreateNetwork, Orchestrator, OrchestratorConfig};
use nexus::store::{
    CachedStore, Lease, LeaseHolder, LeaseOutcome, NetworkRecord, NodeRow, SqlStore, Store,
};

const IMAGE: &str = "nexus-kubo-test:bench";
const RECOVERY_NETWORK_SIZE: u16 = 4;

#[derive(Clone, Copy, PartialEq)]
enum Via {
    InProc,
    Grpc,
}

struct Args {
    store: String,
    via: Via,
    networks: usize,
    concurrency: usize,
    recovery_nodes: usize,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        store: "sqlite".into(),
        via: Via::InProc,
        networks: 10_000,
        concurrency: 32,
        recovery_nodes: 1_000,
    };
    let mut it = std::env::args().skip(1);
    let num = |v: Option<String>, flag: &str| -> Result<usize> {
        v.with_context(|| format!("{flag} needs a number"))?
            .parse()
            .with_context(|| format!("{flag} needs a number"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--store" => {
                a.store = it
                    .next()
                    .context("--store needs sqlite or a postgres URL")?
            }
            "--via" => {
                a.via = match it.next().as_deref() {
                    Some("inproc") => Via::InProc,
                    Some("grpc") => Via::Grpc,
                    _ => bail!("--via takes inproc or grpc"),
                }
            }
            "--networks" => a.networks = num(it.next(), "--networks")?,
            "--concurrency" => a.concurrency = num(it.next(), "--concurrency")?.max(1),
            "--recovery-nodes" => a.recovery_nodes = num(it.next(), "--recovery-nodes")?,
            // `cargo bench` passes `--bench` to harness-less targets.
            "--bench" => {}
            other => bail!("unknown argument `{other}`"),
        }
    }
    ensure!(
        a.networks <= 16_000 && a.recovery_nodes <= 16_000,
        "--networks and --recovery-nodes: at most 16,000 (the port space)"
    );
    ensure!(
        a.store == "sqlite" || a.store.starts_with("postgres"),
        "--store takes sqlite or a postgres:// URL"
    );
    Ok(a)
}

/// A store for one phase, and how to throw it away.
struct Scratch {
    url: String,
    /// The seal keys of the store (kept for a reopen).
    keys: nexus::store::seal::Keyring,
    dir: Option<PathBuf>,
    /// (admin URL, database) for Postgres.
    pg: Option<(String, String)>,
}

impl Scratch {
    async fn new(spec: &str, phase: &str) -> Result<Self> {
        let tag = format!("nexus_bench_{}_{phase}", std::process::id());
        if spec == "sqlite" {
            let dir = std::env::temp_dir().join(&tag);
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)?;
            let url = format!("sqlite://{}", dir.join("nexus.db").display());
            return Ok(Self {
                url,
                keys: nexus::store::seal::Keyring::generate()?,
                dir: Some(dir),
                pg: None,
            });
        }
        sqlx::any::install_default_drivers();
        let admin = sqlx::AnyPool::connect(spec)
            .await
            .context("cannot connect to the Postgres server")?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {tag}"
        )))
        .execute(&admin)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {tag}")))
            .execute(&admin)
            .await?;
        admin.close().await;
        let (base, query) = match spec.split_once('?') {
            Some((b, q)) => (b, format!("?{q}")),
            None => (spec, String::new()),
        };
        let slash = base
            .rfind('/')
            .filter(|i| *i > "postgres://".len())
            .context("the Postgres URL names no database")?;
        let url = format!("{}/{tag}{query}", &base[..slash]);
        Ok(Self {
            url,
            keys: nexus::store::seal::Keyring::generate()?,
            dir: None,
            pg: Some((spec.to_owned(), tag)),
        })
    }

    async fn drop_it(self) -> Result<()> {
        if let Some(dir) = self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some((admin_url, db)) = self.pg {
            let admin = sqlx::AnyPool::connect(&admin_url).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
            )))
            .execute(&admin)
            .await?;
            admin.close().await;
        }
        Ok(())
    }
}

fn config(nodes: usize) -> Result<OrchestratorConfig> {
    // Three disjoint ranges with room for every node and for ports other programs hold (the
    // bind probe checks each one), from 1024 up.
    let width = nodes + nodes / 5 + 100;
    let range = |k: usize| -> Result<Vec<PortRange>> {
        let low = u16::try_from(1024 + k * width).context("too many nodes for the port space")?;
        let high = u16::try_from(1024 + (k + 1) * width - 1)
            .context("too many nodes for the port space")?;
        Ok(vec![PortRange { low, high }])
    };
    Ok(OrchestratorConfig {
        image: IMAGE.into(),
        ports: PortConfig { swarm: range(0)? },
        ..OrchestratorConfig::default()
    })
}

async fn orchestrator(
    store: Arc<dyn Store>,
    runtime: Arc<MockRuntime>,
    nodes: usize,
) -> Result<Orchestrator> {
    Ok(Orchestrator::new(store, runtime, config(nodes)?, Box::new(BindProbe)).await?)
}

/// The store, counting calls (to report store calls per operation).
struct Counting {
    inner: Arc<dyn Store>,
    calls: AtomicUsize,
}

impl Counting {
    fn tick(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

type StoreResult<T> = nexus::store::Result<T>;

#[async_trait::async_trait]
impl Store for Counting {
    async fn create_network(&self, n: &NetworkRecord) -> StoreResult<()> {
        self.tick();
        self.inner.create_network(n).await
    }
    async fn get_network(&self, name: &NetworkName) -> StoreResult<Option<NetworkRecord>> {
        self.tick();
        self.inner.get_network(name).await
    }
    async fn list_networks(&self) -> StoreResult<Vec<NetworkRecord>> {
        self.tick();
        self.inner.list_networks().await
    }
    async fn update_network(&self, n: &NetworkRecord) -> StoreResult<()> {
        self.tick();
        self.inner.update_network(n).await
    }
    async fn delete_network(&self, name: &NetworkName) -> StoreResult<()> {
        self.tick();
        self.inner.delete_network(name).await
    }
    async fn put_node(&self, node: &NodeRow) -> StoreResult<()> {
        self.tick();
        self.inner.put_node(node).await
    }
    async fn list_nodes(&self, network: &NetworkName) -> StoreResult<Vec<NodeRow>> {
        self.tick();
        self.inner.list_nodes(network).await
    }
    async fn all_nodes(&self) -> StoreResult<Vec<NodeRow>> {
        self.tick();
        self.inner.all_nodes().await
    }
    async fn delete_node(&self, network: &NetworkName, index: u16) -> StoreResult<()> {
        self.tick();
        self.inner.delete_node(network, index).await
    }
    async fn ping(&self) -> StoreResult<()> {
        self.tick();
        self.inner.ping().await
    }
    async fn instance(&self) -> StoreResult<Option<InstanceName>> {
        self.tick();
        self.inner.instance().await
    }
    async fn claim_instance(&self, proposed: &InstanceName) -> StoreResult<InstanceName> {
        self.tick();
        self.inner.claim_instance(proposed).await
    }
    async fn acquire_lease(
        &self,
        instance: &InstanceName,
        holder: &LeaseHolder,
        ttl: Duration,
    ) -> StoreResult<LeaseOutcome> {
        self.tick();
        self.inner.acquire_lease(instance, holder, ttl).await
    }
    async fn renew_lease(
        &self,
        instance: &InstanceName,
        holder: &LeaseHolder,
        ttl: Duration,
    ) -> StoreResult<Option<Lease>> {
        self.tick();
        self.inner.renew_lease(instance, holder, ttl).await
    }
    async fn release_lease(
        &self,
        instance: &InstanceName,
        holder: &LeaseHolder,
    ) -> StoreResult<()> {
        self.tick();
        self.inner.release_lease(instance, holder).await
    }
    async fn get_lease(&self, instance: &InstanceName) -> StoreResult<Option<Lease>> {
        self.tick();
        self.inner.get_lease(instance).await
    }
    async fn revoke_token(&self, jti: &str, revoked_at: i64, forget_at: i64) -> StoreResult<()> {
        self.tick();
        self.inner.revoke_token(jti, revoked_at, forget_at).await
    }
    async fn revoked_tokens(&self, now: i64) -> StoreResult<Vec<nexus::store::RevokedToken>> {
        self.tick();
        self.inner.revoked_tokens(now).await
    }
    async fn forget_revoked_tokens(&self, now: i64) -> StoreResult<u64> {
        self.tick();
        self.inner.forget_revoked_tokens(now).await
    }
    async fn create_pin(&self, pin: &nexus::store::PinRecord) -> StoreResult<()> {
        self.tick();
        self.inner.create_pin(pin).await
    }
    async fn get_pin(
        &self,
        network: &NetworkName,
        id: &str,
    ) -> StoreResult<Option<nexus::store::PinRecord>> {
        self.tick();
        self.inner.get_pin(network, id).await
    }
    async fn list_pins(
        &self,
        network: &NetworkName,
        filter: &nexus::store::PinFilter,
    ) -> StoreResult<nexus::store::PinPage> {
        self.tick();
        self.inner.list_pins(network, filter).await
    }
    async fn pinset(&self, network: &NetworkName) -> StoreResult<Vec<nexus::store::PinRecord>> {
        self.tick();
        self.inner.pinset(network).await
    }
    async fn set_pin_status(
        &self,
        network: &NetworkName,
        id: &str,
        status: nexus::store::PinStatus,
        reason: Option<&str>,
        at: i64,
    ) -> StoreResult<bool> {
        self.tick();
        self.inner
            .set_pin_status(network, id, status, reason, at)
            .await
    }
    async fn remove_pin(&self, network: &NetworkName, id: &str, at: i64) -> StoreResult<bool> {
        self.tick();
        self.inner.remove_pin(network, id, at).await
    }
    async fn delete_pin(&self, network: &NetworkName, id: &str) -> StoreResult<()> {
        self.tick();
        self.inner.delete_pin(network, id).await
    }
    async fn put_allocation(
        &self,
        network: &NetworkName,
        id: &str,
        a: &nexus::store::Allocation,
    ) -> StoreResult<()> {
        self.tick();
        self.inner.put_allocation(network, id, a).await
    }
    async fn delete_allocation(
        &self,
        network: &NetworkName,
        id: &str,
        node: u16,
    ) -> StoreResult<()> {
        self.tick();
        self.inner.delete_allocation(network, id, node).await
    }
    async fn pin_counts(&self, network: &NetworkName) -> StoreResult<nexus::store::PinCounts> {
        self.tick();
        self.inner.pin_counts(network).await
    }
}

/// `SELECT 1` round trips per second through the store at `concurrency`.
async fn round_trips(store: Arc<dyn Store>, concurrency: usize) -> Result<f64> {
    let n = 20_000;
    let t0 = Instant::now();
    run_all(n, concurrency, move |_| {
        let store = store.clone();
        async move { Ok(store.ping().await?) }
    })
    .await?;
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

/// The store as the daemon has it: the database behind the write-through cache.
fn cached(sql: SqlStore) -> Arc<dyn Store> {
    Arc::new(CachedStore::new(Arc::new(sql)))
}

fn rss_mib() -> Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS in /proc/self/status")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib / 1024.0)
}

fn net_name(prefix: &str, i: usize) -> String {
    format!("{prefix}{i}")
}

/// Runs `op(i)` for i in 0..n with `concurrency` workers; the first error stops the run.
async fn run_all<F, Fut>(n: usize, concurrency: usize, op: F) -> Result<()>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let next = next.clone();
        let op = op.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), anyhow::Error>(());
                }
                op(i).await?;
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    Ok(())
}

/// Create + start of `n` one-node networks; returns the seconds it took.
async fn starts(args: &Args, orch: &Orchestrator) -> Result<f64> {
    let n = args.networks;
    let t0;
    match args.via {
        Via::InProc => {
            let orch = orch.clone();
            t0 = Instant::now();
            run_all(n, args.concurrency, move |i| {
                let orch = orch.clone();
                async move {
                    let name = net_name("cp", i);
                    orch.create(CreateNetwork {
                        name: name.clone(),
                        replicas: 1,
                        ..Default::default()
                    })
                    .await?;
                    let view = orch.start(&name).await?;
                    ensure!(view.nodes.len() == 1, "{name}: started without its node");
                    Ok(())
                }
            })
            .await?;
        }
        Via::Grpc => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let service = NexusService::new(
                orch.clone(),
                ServiceConfig {
                    public_address: "127.0.0.1".into(),
                    node_image: IMAGE.into(),
                },
                stop_rx,
            );
            let key = "bench-key-0123456789abcdef";
            tokio::spawn(nexus::api::serve(
                listener,
                service,
                ApiKeys::new([key]),
                None,
                None,
                std::future::pending(),
            ));
            let conn = nexus::client::connect(&nexus::client::ClientConfig {
                address: format!("http://{addr}"),
                api_key: Some(key.into()),
                tls_ca: None,
                connect_timeout: Duration::from_secs(5),
            })
            .await?;
            let client: nexus::client::Client = conn.client();
            t0 = Instant::now();
            run_all(n, args.concurrency, move |i| {
                let mut client: nexus::client::Client = client.clone();
                async move {
                    let name = net_name("cp", i);
                    let net = client
                        .create_network(pb::CreateNetworkRequest {
                            name: name.clone(),
                            replicas: 1,
                            start: true,
                            ..Default::default()
                        })
                        .await?
                        .into_inner();
                    ensure!(net.nodes.len() == 1, "{name}: started without its node");
                    Ok(())
                }
            })
            .await?;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let running = orch.registry().names().len();
    ensure!(
        running == n,
        "only {running} of {n} networks are in the registry"
    );
    Ok(secs)
}

/// Seconds from a new orchestrator to every network of a store holding `nodes` running nodes
/// back in the registry.
async fn recovery(spec: &str, nodes: usize) -> Result<f64> {
    let scratch = Scratch::new(spec, "recovery").await?;
    let runtime = Arc::new(MockRuntime::new());
    let networks = nodes.div_ceil(usize::from(RECOVERY_NETWORK_SIZE));
    {
        let store: Arc<dyn Store> =
            cached(SqlStore::connect(&scratch.url, scratch.keys.clone()).await?);
        let orch = orchestrator(store, runtime.clone(), nodes).await?;
        let o = orch.clone();
        run_all(networks, 32, move |i| {
            let orch = o.clone();
            async move {
                let name = net_name("rc", i);
                orch.create(CreateNetwork {
                    name: name.clone(),
                    replicas: RECOVERY_NETWORK_SIZE,
                    ..Default::default()
                })
                .await?;
                orch.start(&name).await?;
                Ok(())
            }
        })
        .await?;
    }
    // The "restart": a new store connection and orchestrator; the nodes still run.
    let t0 = Instant::now();
    let store: Arc<dyn Store> =
        cached(SqlStore::connect(&scratch.url, scratch.keys.clone()).await?);
    let orch = orchestrator(store, runtime.clone(), nodes).await?;
    orch.recover().await?;
    let registry = orch.registry();
    let secs = t0.elapsed().as_secs_f64();
    let mut back = 0;
    for i in 0..networks {
        let name = NetworkName::new(&net_name("rc", i))?;
        if let Some(e) = registry.get(&name) {
            back += e.nodes.len();
        }
    }
    ensure!(
        back == networks * usize::from(RECOVERY_NETWORK_SIZE),
        "recovery: only {back} nodes back in the registry"
    );
    drop(orch);
    scratch.drop_it().await?;
    Ok(secs)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let scratch = Scratch::new(&args.store, "starts").await?;
    let (secs, rss, calls, trips);
    {
        let sql: Arc<dyn Store> =
            Arc::new(SqlStore::connect(&scratch.url, scratch.keys.clone()).await?);
        let counting = Arc::new(Counting {
            inner: sql.clone(),
            calls: AtomicUsize::new(0),
        });
        let runtime = Arc::new(MockRuntime::new());
        let cached: Arc<dyn Store> = Arc::new(CachedStore::new(counting.clone()));
        let orch = orchestrator(cached, runtime, args.networks).await?;
        let before = counting.calls.load(Ordering::Relaxed);
        secs = starts(&args, &orch).await?;
        calls = (counting.calls.load(Ordering::Relaxed) - before) as f64 / args.networks as f64;
        rss = rss_mib()?;
        trips = round_trips(sql, args.concurrency).await?;
    }
    scratch.drop_it().await?;
    let recovery_secs = recovery(&args.store, args.recovery_nodes).await?;
    let out = serde_json::json!({
        "store": if args.store == "sqlite" { "sqlite" } else { "postgres" },
        "via": match args.via { Via::InProc => "inproc", Via::Grpc => "grpc" },
        "networks": args.networks,
        "concurrency": args.concurrency,
        "secs": secs,
        "starts_per_s": args.networks as f64 / secs,
        "rss_mib": rss,
        "store_calls_per_start": calls,
        "store_round_trips_per_s": trips,
        "recovery_nodes": args.recovery_nodes,
        "recovery_secs": recovery_secs,
    });
    println!("{out}");
    Ok(())
}
