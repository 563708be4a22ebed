//! The service function and what it records: every outcome becomes a response, then one
//! request counter, one latency sample and one access line, outside the request's span. Must
//! not log tokens or bodies, nor decide anything about the request (the pipeline does).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response};
use tracing::Instrument;

use super::headers::{confine_shared_origin, request_id, X_REQUEST_ID};
use super::response::ProxyError;
use super::{proxy, ConnInfo, ProxyBody, Shared};
use crate::delegator::route::{Feature, Form};
use crate::node::endpoint::Endpoint;
use crate::telemetry::names;

/// What the access log line says about a request, filled in as it is handled.
#[derive(Default)]
pub(super) struct Trace {
    pub(super) network: Option<String>,
    pub(super) feature: Option<Feature>,
    pub(super) user: Option<String>,
    pub(super) node: Option<Endpoint>,
    /// The network is one the registry lists (only then is it a metric label).
    pub(super) known: bool,
    /// Which routing form matched (the path form is the shared origin).
    pub(super) form: Option<Form>,
}

/// The service function: never fails, every outcome is a response.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let start = Instant::now();
    let request_id = request_id(&shared.cfg, conn, req.headers());
    let span = tracing::info_span!("request", request_id = %request_id);
    let method = req.method().clone();
    let path: String = req.uri().path().chars().take(256).collect();
    let mut trace = Trace::default();
    let mut refusal = None;
    let resp = async {
        let mut resp = match proxy(&shared, conn, req, &request_id, &mut trace).await {
            Ok(r) => r,
            Err(e) => {
                if matches!(e, ProxyError::BadGateway | ProxyError::Timeout) {
                    tracing::warn!(error = %e, "upstream failure");
                }
                refusal = e.refusal_reason();
                e.response(&request_id, trace.feature == Some(Feature::Pins))
            }
        };
        if trace.form == Some(Form::Path) {
            confine_shared_origin(resp.headers_mut());
        }
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            resp.headers_mut().insert(X_REQUEST_ID, v);
        }
        resp
    }
    .instrument(span)
    .await;
    // Metrics and the access line, outside the request's span: the line carries the request id
    // itself, and a JSON log does not have to serialise the span again for every request.
    let network = match (&trace.network, trace.known) {
        (Some(n), true) => n.clone(),
        _ => "-".to_owned(),
    };
    let feature = trace.feature.map(Feature::as_str).unwrap_or("-");
    metrics::counter!(
        names::DELEGATOR_REQUESTS,
        "network" => network.clone(),
        "feature" => feature,
        "status" => resp.status().as_u16().to_string()
    )
    .increment(1);
    if let Some(reason) = refusal {
        metrics::counter!(
            names::DELEGATOR_REFUSALS,
            "network" => network.clone(),
            "reason" => reason
        )
        .increment(1);
    }
    metrics::histogram!(names::DELEGATOR_DURATION, "network" => network, "feature" => feature)
        .record(start.elapsed().as_secs_f64());
    tracing::info!(
        target: "nexus::delegator::access",
        request_id = %request_id,
        network = trace.network.as_deref().unwrap_or("-"),
        feature = trace.feature.map(Feature::as_str).unwrap_or("-"),
        method = %method,
        path = %path,
        status = resp.status().as_u16(),
        latency_ms = start.elapsed().as_secs_f64() * 1000.0,
        user = trace.user.as_deref().unwrap_or("-"),
        node = %trace.node.as_ref().map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
        peer = %conn.peer.ip(),
        "request"
    );
    Ok(resp)
}
