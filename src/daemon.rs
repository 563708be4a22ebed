//! The daemon: wires store, runtime, orchestrator and the API together and runs them until a
//! signal.
//!
//! Owns start-up order (metrics recorder → private data directory → seal keys → store →
//! instance and its lease → Docker → orchestrator → listeners → recovery in the background),
//! the node image check, the readiness and metrics-refresh tasks, and graceful shutdown: on
//! SIGINT/SIGTERM the listeners stop accepting, in-flight calls finish, the instance's lease is
//! released, and nodes are left running (the next start adopts them). A daemon that loses its
//! lease ([`crate::instance`]) stops its reconciler at once, shuts down the same way and
//! returns [`DaemonError::LeaseLost`]. It must not hold logic of its own about networks; it
//! only assembles.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::api::{self, ApiKeys, NexusService, ServiceConfig};
use crate::config::{ConfigError, Settings};
use crate::delegator::{self, Delegator, DelegatorError};
use crate::instance::{self, InstanceError, LeaseKeeper};
use crate::node::{DockerRuntime, NodeRuntime, RuntimeError, SwarmRuntime};
use crate::orchestrator::ports::BindProbe;
use crate::orchestrator::{Orchestrator, OrchestratorError};
use crate::store::seal::KeySource;
use crate::store::sql::SealRotator;
use crate::store::{CachedStore, SqlStore, Store, StoreError};
use crate::telemetry::{self, Readiness, TelemetryState};
use metrics_exporter_prometheus::PrometheusHandle;

/// How often readiness is checked for the gRPC health service (and the log).
pub const READINESS_INTERVAL: Duration = Duration::from_secs(2);

/// How often revoked token ids whose tokens have all expired are forgotten.
const REVOCATION_SWEEP: Duration = Duration::from_secs(3600);

/// Why the daemon could not start or stopped abnormally.

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Orchestrator(#[from] OrchestratorError),
    #[error("cannot listen on {addr} ({what}): {detail}. Is another daemon running? Choose another address in the configuration")]
    Listen {
        what: &'static str,
        addr: SocketAddr,
        detail: String,
    },
    #[error("cannot read {path}: {detail}")]
    ReadFile { path: PathBuf, detail: String },
    #[error(transparent)]
    Server(#[from] api::ServerError),
    #[error("no API key configured: the gRPC API would accept nobody")]
    NoApiKey,
    #[error(transparent)]
    Delegator(#[from] DelegatorError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Instance(#[from] InstanceError),
    #[error("the swarm gate's credentials: {0}")]
    Gate(#[from] crate::gate::GateError),
    /// The lease was lost while running ([`InstanceError::Lost`], as text).
    #[error("{0}")]
    LeaseLost(String),
}

/// Warns at start-up when this host's kernel neighbour table (`gc_thresh3`) cannot serve the
/// nodes the daemon may run here: `node.max_nodes`, or as many as the swarm port pool holds,
/// in networks of 10 nodes (or `node.max_replicas`, if smaller). Only for the Docker runtime,
/// whose nodes run on this host; the sysctl is the operator's to raise.
fn warn_about_the_neighbour_table(cfg: &crate::orchestrator::OrchestratorConfig) {
    let Some(limit) = std::fs::read_to_string("/proc/sys/net/ipv4/neigh/default/gc_thresh3")
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
    else {
        return;
    };
    let may_run = match cfg.admission.max_nodes {
        Some(n) => u64::from(n),
        None => cfg
            .ports
            .swarm
            .iter()
            .map(|r| u64::from(r.high - r.low) + 1)
            .sum(),
    };
    let replicas = cfg.max_replicas.min(10);
    let serves = crate::orchestrator::capacity::neighbour_capacity(limit, replicas);
    if may_run > serves {
        tracing::warn!(
            gc_thresh3 = limit,
            nodes_it_serves = serves,
            replicas_per_network = replicas,
            nodes_this_daemon_may_run = may_run,
            "the kernel's neighbour (ARP) table is shared by all containers and holds about one entry per peer of each node: past about nodes_it_serves nodes, new nodes' dials wait for ARP and starts slow by 5 s and more; raise net.ipv4.neigh.default.gc_thresh1/2/3 (e.g. 4096/8192/16384), or set node.max_nodes"
        );
    }
}

/// Waits for SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received: shutting down"),
        _ = term => tracing::info!("SIGTERM received: shutting down"),
    }
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, DaemonError> {
    std::fs::read(path).map_err(|e| DaemonError::ReadFile {
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

/// Runs the daemon with `settings` (see [`crate::config`]) until `shutdown` resolves or the
/// instance's lease is lost. A node image that is missing is pulled.
pub async fn run(
    mut settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    if settings.grpc.api_keys.is_empty() {
        return Err(DaemonError::NoApiKey);
    }
    let delegator = match settings.delegator.enabled {
        true => Some(settings.delegator.config()?.clone()),
        false => None,
    };
    // Installed first so that errors at start-up are counted. Gauges of networks and nodes
    // that are gone stop being set and vanish after this idle time.
    let metrics_handle = match settings.metrics.listen {
        Some(_) => {
            let idle = settings.metrics.interval * 3 + Duration::from_secs(60);
            let h = telemetry::install(idle);
            if h.is_none() {
                tracing::warn!("another metrics recorder is installed: /metrics stays empty");
            }
            h
        }
        None => None,
    };
    // The data directory holds the SQLite store, secrets.toml and the seal key file: 0700, and
    // refused (with the chmod to run) when others may use it.
    crate::config::ensure_private_dir(&settings.data_dir)?;
    let keys = settings.seal.load().map_err(|cause| StoreError::Sealed {
        what: "loading the store's seal keys".into(),
        cause,
    })?;
    // The swarm's gates trust whoever holds these (sealed under the store's keys, in the data
    // directory): loaded, or made on the first start with runtime.kind = "swarm".
    let gate = match &settings.swarm {
        Some(_) => Some(Arc::new(crate::gate::GateAccess::load_or_create(
            &settings.data_dir.join(crate::gate::access::FILE_NAME),
            &keys,
        )?)),
        None => None,
    };
    let sealed = Arc::new(SqlStore::connect(settings.store_url.expose(), keys).await?);
    if let KeySource::File(file) = &settings.seal {
        // A rotation a restart interrupted: every secret is sealed under the new key now.
        if let Err(e) = sealed.drop_previous_keys(file).await {
            tracing::warn!(error = %e, "previous seal keys kept");
        }
    }
    let rotator = SealRotator::new(sealed.clone(), settings.seal.clone());
    let sql: Arc<dyn Store> = sealed;
    // This daemon is the store's only writer (as the port allocator already requires), so the
    // reconciler's per-network reads can come from memory.
    let store: Arc<dyn Store> = Arc::new(CachedStore::new(sql));
    tracing::info!(url = %crate::store::redact_url(settings.store_url.expose()), "store open");

    // Who this daemon is, and that no other live daemon acts for it, before anything talks
    // to Docker.
    let (instance, source) = instance::resolve(store.as_ref(), settings.instance.as_ref()).await?;
    let keeper = LeaseKeeper::acquire(store.clone(), instance.clone(), settings.lease_ttl).await?;
    tracing::info!(
        %instance,
        source = source.as_str(),
        lease_ttl = ?settings.lease_ttl,
        holder = %keeper.lease().holder.id,
        "instance: this daemon touches only Docker objects labelled io.nexus.instance={instance}"
    );
    if let Some(swarm) = settings.swarm.as_mut() {
        swarm.instance = instance.clone();
    }
    settings.docker.instance = instance;
    for (what, addr) in settings.plain_text_listeners() {
        tracing::warn!(
            listener = what,
            %addr,
            "{what} listens beyond loopback in plain text (no TLS): anyone on the network can read and alter its traffic{}",
            match what {
                "metrics" => ", including scrape tokens; keep it on loopback or a private network",
                _ => ", including keys and tokens; configure tls_cert/tls_key or listen on 127.0.0.1",
            }
        );
    }
    let lost = keeper.lost();
    let result = serve(
        settings,
        store,
        Sealed { rotator, gate },
        delegator,
        metrics_handle,
        lost,
        shutdown,
    )
    .await;
    keeper.release().await;
    result
}

/// What the daemon holds sealed under the store's keys besides the store: the rotator of
/// those keys and, on a swarm, the gates' credentials.
struct Sealed {
    rotator: SealRotator,
    gate: Option<Arc<crate::gate::GateAccess>>,
}

/// Everything after the lease is held: Docker, the orchestrator, the listeners, until
/// `shutdown` or `lost`.
async fn serve(
    settings: Settings,
    store: Arc<dyn Store>,
    Sealed { rotator, gate }: Sealed,
    delegator: Option<delegator::DelegatorConfig>,
    metrics_handle: Option<PrometheusHandle>,
    lost: impl Future<Output = InstanceError> + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    // One shutdown signal for every listener: the signal, or a lost lease (noticed from here
    // on, so also while the image is pulled; it also stops the reconciler at once, below).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (lost_tx, lost_rx) = tokio::sync::watch::channel(None::<String>);
    tokio::spawn(async move {
        tokio::select! {
            () = shutdown => {}
            e = lost => {
                tracing::error!(error = %e, "shutting down: another daemon may act for this instance now");
                let _ = lost_tx.send(Some(e.to_string()));
            }
        }
        let _ = stop_tx.send(true);
    });

    // On a swarm, the manager's engine: images are checked and probed there.
    let mut docker_cfg = settings.docker.clone();
    if let Some(swarm) = &settings.swarm {
        docker_cfg.endpoint = swarm.endpoint.clone();
    }
    let docker = DockerRuntime::connect(docker_cfg).await?;
    if settings.swarm.is_none() {
        match docker.disk_guarantee().await {
            Ok(g) => tracing::info!(disk = %g, "node disk limits"),
            Err(e) => tracing::warn!(error = %e, "could not read Docker's storage driver"),
        }
    }
    // On a swarm the image is pulled by each host; the manager needs it too, to probe it.
    match docker.ensure_image(&settings.orchestrator.image).await {
        Ok(()) => {}
        Err(RuntimeError::ImageMissing { image }) => {
            tracing::info!(%image, "node image missing: pulling it");
            if let Err(e) = docker
                .pull_image(&image, |s| tracing::debug!(status = s, "pull"))
                .await
            {
                tracing::warn!(%image, error = %e, "could not pull the node image; starting networks will fail until it is present");
            }
        }
        Err(e) => tracing::warn!(error = %e, "node image check failed"),
    }
    let runtime: Arc<dyn NodeRuntime> = match (settings.swarm.clone(), gate) {
        (Some(cfg), Some(gate)) => {
            // Every connector of this process (readiness, delegator, scrape-through) dials
            // the gates with these.
            if crate::node::endpoint::install_gate_access(gate.clone()).is_err() {
                tracing::warn!("gate credentials were installed before; keeping the first");
            }
            let swarm = SwarmRuntime::connect(cfg, gate).await?;
            tracing::info!(
                gate_port = swarm.config().gate_port,
                gate_image = %swarm.config().gate_image,
                "nodes run on a Docker Swarm"
            );
            Arc::new(swarm)
        }
        _ => Arc::new(docker),
    };

    if let Some(eph) = crate::orchestrator::ports::kernel_ephemeral_range() {
        let ranges = &settings.orchestrator.ports.swarm;
        let n = crate::orchestrator::ports::overlap_with(ranges, eph);
        if n > 0 {
            tracing::warn!(
                ports_in_ephemeral_range = n,
                ephemeral = %eph,
                "some node ports lie in the kernel's range for outgoing connections: a node whose port is taken at its start moves to another; set ports.swarm outside that range"
            );
        }
    }
    if settings.swarm.is_none() {
        warn_about_the_neighbour_table(&settings.orchestrator);
    }
    let orch = Orchestrator::new(
        store.clone(),
        runtime.clone(),
        settings.orchestrator.clone(),
        Box::new(BindProbe),
    )
    .await?;

    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    // Readiness drives the gRPC health service; the metrics listener answers /readyz from it.
    // Recovery and the reconciler are spawned below; from here on they count as running.
    orch.reconciler_starting();
    let readiness = Readiness::new(store, runtime, orch.clone());
    // The first answer is known before the gRPC server serves, so health does not flicker.
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(readiness.check().await.ready);
    let readiness_task = tokio::spawn(readiness.clone().watch(READINESS_INTERVAL, ready_tx));

    let mut telemetry_tasks = vec![readiness_task];
    if let Some(addr) = settings.metrics.listen {
        let listener =
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| DaemonError::Listen {
                    what: "metrics",
                    addr,
                    detail: e.to_string(),
                })?;
        tracing::info!(
            addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            interval = ?settings.metrics.interval,
            "metrics and health listening"
        );
        if let Some(handle) = metrics_handle {
            telemetry_tasks.push(tokio::spawn(telemetry::refresh::run(
                orch.clone(),
                handle.clone(),
                settings.metrics.interval,
            )));
            let state = TelemetryState::new(
                handle,
                readiness.clone(),
                orch.registry(),
                // Its own read-only token: an admin API key is refused there.
                ApiKeys::new(settings.metrics.scrape_token.iter().cloned()),
            );
            let signal = stopped(stop_rx.clone());
            telemetry_tasks.push(tokio::spawn(async move {
                if let Err(e) = telemetry::serve(listener, state, signal).await {
                    tracing::error!(error = %e, "metrics listener failed");
                }
            }));
        }
    }

    let delegator_task = match delegator {
        Some(config) => {
            let addr = settings.delegator.listen;
            // One listener per serving thread, all on `delegator.listen` (`SO_REUSEPORT`).
            let listeners =
                delegator::Listeners::bind(addr, settings.delegator.threads).map_err(|e| {
                    DaemonError::Listen {
                        what: "delegator",
                        addr,
                        detail: e.to_string(),
                    }
                })?;
            let acceptor = match &settings.delegator.tls {
                Some(t) => Some(delegator::tls_acceptor_from_pem_files(&t.cert, &t.key)?),
                None => None,
            };
            // Revoked tokens are refused from the first request on.
            let revoked = orch.load_revocations().await?;
            tracing::info!(revoked, "revocation list loaded");
            let server = Delegator::with_revocations(orch.registry(), orch.revocations(), config)?;
            // Writes through the delegator join the pinset (a narrow handle, not the orchestrator).
            server.set_pin_sink(Arc::new(orch.clone()));
            // The Pinning Service API works on the pinset through a leaf trait as well; its
            // `delegates` are the join kit's multiaddrs, on `node.public_address`.
            server.set_pin_service(Arc::new(crate::orchestrator::PinApi::new(
                orch.clone(),
                settings.public_address.clone(),
            )));
            // Ids whose tokens have all expired are forgotten, hourly.
            let o = orch.clone();
            telemetry_tasks.push(tokio::spawn(async move {
                let mut every = tokio::time::interval(REVOCATION_SWEEP);
                loop {
                    every.tick().await;
                    if let Err(e) = o.forget_expired_revocations().await {
                        tracing::warn!(error = %e, "could not forget expired revocations");
                    }
                }
            }));
            let signal = stopped(stop_rx.clone());
            Some(tokio::spawn(async move {
                server.serve_on(listeners, acceptor, signal).await
            }))
        }
        None => None,
    };

    // The gRPC listener is bound last: a client that reaches the API reaches the delegator
    // and the metrics listener too (a test or a supervisor waits for this port alone).
    let grpc_listener = tokio::net::TcpListener::bind(settings.grpc.listen)
        .await
        .map_err(|e| DaemonError::Listen {
            what: "gRPC",
            addr: settings.grpc.listen,
            detail: e.to_string(),
        })?;
    let tls = match &settings.grpc.tls {
        Some(t) => Some((read(&t.cert)?, read(&t.key)?)),
        None => None,
    };

    // Recovery and the reconciler run in the background: the API answers meanwhile, and
    // operations on a network wait for its lock.
    // A lost lease stops them at once (checked first, so they never start once it is lost).
    let background = {
        let orch = orch.clone();
        let mut lost = lost_rx.clone();
        tokio::spawn(async move {
            let work = async {
                match orch.recover().await {
                    Ok(()) => tracing::info!("recovery done"),
                    Err(e) => {
                        tracing::error!(error = %e, "recovery failed; the periodic resync will retry")
                    }
                }
                // The pinset loop and the CPU meter (admission's measure of a node) run
                // beside the reconciler, under the same lease.
                tokio::join!(orch.run(), orch.run_pinset(), orch.run_cpu_meter());
            };
            let lost = async {
                let _ = lost.wait_for(Option::is_some).await;
            };
            tokio::select! {
                biased;
                () = lost => tracing::warn!("reconciler stopped: the lease is lost"),
                () = work => {}
            }
        })
    };

    let service = NexusService::new(
        orch.clone(),
        ServiceConfig {
            public_address: settings.public_address.clone(),
            node_image: settings.orchestrator.image.clone(),
        },
        stop_rx.clone(),
    )
    .with_seal_rotator(rotator);
    tracing::info!(
        grpc = %grpc_listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        tls = settings.grpc.tls.is_some(),
        "nexus daemon listening"
    );
    let result = api::serve(
        grpc_listener,
        service,
        ApiKeys::new(settings.grpc.api_keys.iter().cloned()),
        tls,
        Some(ready_rx),
        stopped(stop_rx.clone()),
    )
    .await;
    if let Some(task) = delegator_task {
        if result.is_err() {
            task.abort();
        }
        match task.await {
            Ok(Err(e)) => tracing::error!(error = %e, "delegator failed"),
            Err(e) if !e.is_cancelled() => tracing::error!(error = %e, "delegator task failed"),
            Err(_) => {}
            Ok(Ok(())) => {}
        }
    }
    background.abort();
    for task in telemetry_tasks {
        task.abort();
    }
    result?;
    if let Some(why) = lost_rx.borrow().clone() {
        return Err(DaemonError::LeaseLost(why));
    }
    tracing::info!("nexus daemon stopped; nodes keep running and are adopted on the next start");
    Ok(())
}
