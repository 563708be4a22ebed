//! The gRPC server: `nexus.v1.Nexus` behind API-key auth, plus health and reflection.
//!
//! Owns the listener's protocol stack: optional TLS (rustls), the auth interceptor on every
//! service but `grpc.health.v1`, server reflection (v1 and v1alpha, so grpcurl-style clients
//! need no proto file), per-call tracing spans, and graceful shutdown (stop accepting, finish
//! in-flight calls), and call metrics ([`crate::telemetry::grpc`]). The health service reports
//! the daemon's readiness when given one ([`crate::telemetry::Readiness`]). It must not know
//! what the RPCs do.

use std::future::Future;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use super::auth::ApiKeys;
use super::pb;
use super::pb::nexus_server::NexusServer;
use super::service::NexusService;

/// Errors of building or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid gRPC TLS certificate or key: {0}")]
    Tls(String),
    #[error("cannot build the reflection service: {0}")]
    Reflection(String),
    #[error("gRPC server failed: {0}")]
    Serve(String),
}

/// How long in-flight calls may take to finish after a shutdown signal.
/// hyper's HTTP/2 graceful shutdown can wait for a client that never closes its connection
/// (hyper#4170), so the wait is bounded.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The health service's handle, to report the daemon's readiness.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
}

impl Health {
    /// Marks the whole server and `nexus.v1.Nexus` serving or not.
    pub async fn set(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter.set_service_status("", status).await;
        self.reporter.set_service_status(pb::SERVICE, status).await;
    }
}

/// Serves until `shutdown` resolves, then waits for in-flight calls to finish.
/// `tls` is a PEM certificate chain and private key. With `readiness`, the health service
/// reports `SERVING` exactly while it holds `true`; without, always `SERVING`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: NexusService,
    keys: ApiKeys,
    tls: Option<(Vec<u8>, Vec<u8>)>,
    readiness: Option<tokio::sync::watch::Receiver<bool>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<Health, ServerError> {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let health = Health { reporter };
    let follower = match readiness {
        Some(mut rx) => {
            let serving = *rx.borrow_and_update();
            health.set(serving).await;
            let h = health.clone();
            Some(tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    let serving = *rx.borrow_and_update();
                    h.set(serving).await;
                }
            }))
        }
        None => {
            health.set(true).await;
            None
        }
    };
    let methods = crate::telemetry::grpc::known_methods(&[
        pb::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ]);

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServerError::Reflection(e.to_string()))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServerError::Reflection(e.to_string()))?;

    let mut builder = Server::builder().trace_fn(
        |req| tracing::info_span!("grpc", method = %req.uri().path(), request_id = %request_id()),
    );
    if let Some((cert, key)) = tls {
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
            .map_err(|e| ServerError::Tls(e.to_string()))?;
    }
    let auth = move |req| keys.check(req);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        let _ = signalled_tx.send(());
    };
    let serve = builder
        .layer(crate::telemetry::grpc::GrpcMetricsLayer::new(methods))
        .add_service(health_service)
        .add_service(InterceptedService::new(reflection_v1, auth.clone()))
        .add_service(InterceptedService::new(reflection_v1alpha, auth.clone()))
        .add_service(NexusServer::with_interceptor(service, auth))
        .serve_with_incoming_shutdown(incoming, signal);
    tokio::pin!(serve);
    // In-flight calls get `SHUTDOWN_GRACE` to finish; a client that never lets go does not
    // keep the daemon alive.
    tokio::select! {
        r = &mut serve => r.map_err(|e| ServerError::Serve(e.to_string()))?,
        _ = async {
            if signalled_rx.await.is_ok() {
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => tracing::warn!(grace = ?SHUTDOWN_GRACE, "gRPC calls still open after the grace period; closing them"),
    }
    if let Some(f) = follower {
        f.abort();
    }
    health.set(false).await;
    Ok(health)
}

/// A short random id for correlating a call's log lines.
fn request_id() -> String {
    let mut b = [0u8; 6];
    if getrandom::fill(&mut b).is_err() {
        return "-".into();
    }
    hex::encode(b)
}
