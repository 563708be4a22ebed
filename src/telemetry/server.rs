//! The metrics and health listener (plain HTTP, meant for loopback or a private network):
//!
//! - `GET /metrics`: the daemon's metrics in the Prometheus text format;
//! - `GET /healthz`: 200 while the process serves;
//! - `GET /readyz`: 200 `{"ready":true,…}` or 503 naming the failed checks;
//! - `GET /nodes/<network>/<index>/metrics`: with `Authorization: Bearer <api key>`, the node's
//!   own `/debug/metrics/prometheus`, fetched from its loopback RPC port, so Prometheus can
//!   scrape kubo without node ports being exposed.

use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::PrometheusHandle;

use super::Readiness;
use crate::api::ApiKeys;
use crate::node::endpoint::Connector;
use crate::node::NetworkName;
use crate::orchestrator::registry::Registry;

/// How long a node may take to answer a scrape-through.
pub const NODE_SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the listener itself.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("the metrics listener failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// What the handlers need.
#[derive(Clone)]
pub struct TelemetryState {
    pub handle: PrometheusHandle,
    pub readiness: Readiness,
    pub registry: Registry,
    pub keys: ApiKeys,
    client: Client<Connector, Empty<Bytes>>,
}

impl TelemetryState {
    pub fn new(
        handle: PrometheusHandle,
        readiness: Readiness,
        registry: Registry,
        keys: ApiKeys,
    ) -> Self {
        Self {
            handle,
            readiness,
            registry,
            keys,
            client: Client::builder(TokioExecutor::new())
                .build(Connector::new(Duration::from_secs(3))),
        }
    }
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        v.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    json(status, &serde_json::json!({ "error": msg.into() }))
}

async fn metrics(State(s): State<TelemetryState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        s.handle.render(),
    )
        .into_response()
}

async fn healthz() -> Response {
    json(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(s): State<TelemetryState>) -> Response {
    let report = s.readiness.check().await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(
        status,
        &serde_json::to_value(&report).unwrap_or(serde_json::Value::Null),
    )
}

fn authorized(keys: &ApiKeys, headers: &HeaderMap) -> bool {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let b = v.as_bytes();
    b.strip_prefix(b"Bearer ")
        .or_else(|| b.strip_prefix(b"bearer "))
        .is_some_and(|k| keys.accepts(k))
}

async fn node_metrics(
    State(s): State<TelemetryState>,
    Path((network, index)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&s.keys, &headers) {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "send `Authorization: Bearer <api key>` (one of grpc.api_keys)",
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let (Ok(name), Ok(index)) = (NetworkName::new(&network), index.parse::<u16>()) else {
        return error(StatusCode::NOT_FOUND, "no such node");
    };
    let Some(entry) = s.registry.get(&name) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no running network `{name}`"),
        );
    };
    let Some(node) = entry.nodes.iter().find(|n| n.index == index) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("node {index} of `{name}` is not ready"),
        );
    };
    let Ok(uri) = node
        .api
        .uri("/debug/metrics/prometheus")
        .parse::<hyper::Uri>()
    else {
        return error(StatusCode::BAD_GATEWAY, "bad node address");
    };
    match tokio::time::timeout(NODE_SCRAPE_TIMEOUT, s.client.get(uri)).await {
        Ok(Ok(resp)) => {
            let (parts, body) = resp.into_parts();
            let mut out = Response::new(Body::new(body));
            *out.status_mut() = parts.status;
            if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
                out.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
            }
            out
        }
        Ok(Err(e)) => {
            tracing::warn!(network = %name, node = index, error = %e, "node metrics scrape failed");
            error(StatusCode::BAD_GATEWAY, "the node did not answer")
        }
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            "the node did not answer in time",
        ),
    }
}

/// The router (public for tests).
pub fn router(state: TelemetryState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/nodes/{network}/{index}/metrics", get(node_metrics))
        .with_state(state)
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: TelemetryState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), TelemetryError> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(TelemetryError::Serve)
}
