//! The daemon: wires store, runtime, orchestrator and the API together and runs them until a
//! signal.
//!
//! Owns start-up order (metrics recorder → store → Docker → orchestrator → listeners → recovery
//! in the background), the node image check, the readiness and metrics-refresh tasks, and
//! graceful shutdown: on SIGINT/SIGTERM the listeners
//! stop accepting, in-flight calls finish, and nodes are left running (the next start adopts
//! them). It must not hold logic of its own about networks; it only assembles.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::api::{self, ApiKeys, NexusService, ServiceConfig};
use crate::delegator::{self, Delegator, DelegatorConfig, DelegatorError};
use crate::node::{DockerRuntime, DockerRuntimeConfig, NodeRuntime, RuntimeError};
use crate::orchestrator::ports::BindProbe;
use crate::orchestrator::{Orchestrator, OrchestratorConfig, OrchestratorError};
use crate::store::{CachedStore, SqlStore, Store, StoreError};
use crate::telemetry::{self, Readiness, TelemetryState};

/// How often readiness is checked for the gRPC health service (and the log).
pub const READINESS_INTERVAL: Duration = Duration::from_secs(2);

/// Everything the daemon needs, already validated (see [`crate::config`]).
#[derive(Clone)]
pub struct DaemonOptions {
    pub store_url: String,
    pub docker: DockerRuntimeConfig,
    pub orchestrator: OrchestratorConfig,
    pub grpc_listen: SocketAddr,
    pub api_keys: Vec<String>,
    /// PEM certificate chain and key files.
    pub grpc_tls: Option<(PathBuf, PathBuf)>,
    /// Host advertised in join kits.
    pub public_address: String,
    /// Pull the node image at start-up when it is missing.
    pub pull_image: bool,
    /// The delegator, when enabled.
    pub delegator: Option<DelegatorOptions>,
    /// The metrics and health listener (`/metrics`, `/healthz`, `/readyz`), when enabled.
    pub metrics: Option<SocketAddr>,
    /// How often gauges (node stats, statuses, port pools) are refreshed.
    pub metrics_interval: Duration,
}

/// Where and how the delegator serves.
#[derive(Clone, Debug)]
pub struct DelegatorOptions {
    pub listen: SocketAddr,
    pub config: DelegatorConfig,
    /// PEM certificate chain and key files.
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl std::fmt::Debug for DaemonOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonOptions")
            .field("store_url", &crate::store::redact_url(&self.store_url))
            .field("grpc_listen", &self.grpc_listen)
            .field("api_keys", &format!("{} key(s)", self.api_keys.len()))
            .field("grpc_tls", &self.grpc_tls)
            .field("public_address", &self.public_address)
            .field("metrics", &self.metrics)
            .field("metrics_interval", &self.metrics_interval)
            .finish_non_exhaustive()
    }
}

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

fn read(path: &PathBuf) -> Result<Vec<u8>, DaemonError> {
    std::fs::read(path).map_err(|e| DaemonError::ReadFile {
        path: path.clone(),
        detail: e.to_string(),
    })
}

/// Runs the daemon until `shutdown` resolves.
pub async fn run(
    opts: DaemonOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    if opts.api_keys.is_empty() {
        return Err(DaemonError::NoApiKey);
    }
    // Installed first so that errors at start-up are counted. Gauges of networks and nodes
    // that are gone stop being set and vanish after this idle time.
    let metrics_handle = match opts.metrics {
        Some(_) => {
            let idle = opts.metrics_interval * 3 + Duration::from_secs(60);
            let h = telemetry::install(idle);
            if h.is_none() {
                tracing::warn!("another metrics recorder is installed: /metrics stays empty");
            }
            h
        }
        None => None,
    };
    let sql: Arc<dyn Store> = Arc::new(SqlStore::connect(&opts.store_url).await?);
    // This daemon is the store's only writer (as the port allocator already requires), so the
    // reconciler's per-network reads can come from memory.
    let store: Arc<dyn Store> = Arc::new(CachedStore::new(sql));
    tracing::info!(url = %crate::store::redact_url(&opts.store_url), "store open");

    let docker = DockerRuntime::connect(opts.docker.clone()).await?;
    match docker.ensure_image(&opts.orchestrator.image).await {
        Ok(()) => {}
        Err(RuntimeError::ImageMissing { image }) if opts.pull_image => {
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
    let runtime: Arc<dyn NodeRuntime> = Arc::new(docker);

    let orch = Orchestrator::new(
        store.clone(),
        runtime.clone(),
        opts.orchestrator.clone(),
        Box::new(BindProbe),
    )
    .await?;

    let grpc_listener = tokio::net::TcpListener::bind(opts.grpc_listen)
        .await
        .map_err(|e| DaemonError::Listen {
            what: "gRPC",
            addr: opts.grpc_listen,
            detail: e.to_string(),
        })?;
    let tls = match &opts.grpc_tls {
        Some((cert, key)) => Some((read(cert)?, read(key)?)),
        None => None,
    };

    // One shutdown signal for every listener.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
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
    if let Some(addr) = opts.metrics {
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
            interval = ?opts.metrics_interval,
            "metrics and health listening"
        );
        if let Some(handle) = metrics_handle {
            telemetry_tasks.push(tokio::spawn(telemetry::refresh::run(
                orch.clone(),
                handle.clone(),
                opts.metrics_interval,
            )));
            let state = TelemetryState::new(
                handle,
                readiness.clone(),
                orch.registry(),
                ApiKeys::new(&opts.api_keys),
            );
            let signal = stopped(stop_rx.clone());
            telemetry_tasks.push(tokio::spawn(async move {
                if let Err(e) = telemetry::serve(listener, state, signal).await {
                    tracing::error!(error = %e, "metrics listener failed");
                }
            }));
        }
    }

    let delegator_task = match &opts.delegator {
        Some(d) => {
            let listener =
                tokio::net::TcpListener::bind(d.listen)
                    .await
                    .map_err(|e| DaemonError::Listen {
                        what: "delegator",
                        addr: d.listen,
                        detail: e.to_string(),
                    })?;
            let acceptor = match &d.tls {
                Some((cert, key)) => Some(delegator::tls_acceptor_from_pem_files(cert, key)?),
                None => None,
            };
            let server = Delegator::new(orch.registry(), d.config.clone())?;
            tracing::info!(
                addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
                domain = %d.config.domain,
                tls = d.tls.is_some(),
                "delegator listening"
            );
            let signal = stopped(stop_rx.clone());
            Some(tokio::spawn(async move {
                server.serve(listener, acceptor, signal).await
            }))
        }
        None => None,
    };

    // Recovery and the reconciler run in the background: the API answers meanwhile, and
    // operations on a network wait for its lock.
    let background = {
        let orch = orch.clone();
        tokio::spawn(async move {
            if let Err(e) = orch.recover().await {
                tracing::error!(error = %e, "recovery failed; the periodic resync will retry");
            }
            orch.run().await;
        })
    };

    let service = NexusService::new(
        orch.clone(),
        ServiceConfig {
            public_address: opts.public_address.clone(),
            node_image: opts.orchestrator.image.clone(),
        },
        stop_rx.clone(),
    );
    tracing::info!(
        grpc = %grpc_listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        tls = opts.grpc_tls.is_some(),
        "nexus daemon listening"
    );
    let result = api::serve(
        grpc_listener,
        service,
        ApiKeys::new(&opts.api_keys),
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
    tracing::info!("nexus daemon stopped; nodes keep running and are adopted on the next start");
    Ok(())
}
