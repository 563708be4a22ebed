//! The request path of the delegator: route, resolve, authenticate, authorise, forward.
//!
//! Owns the per-request handler, header rewriting (hop-by-hop, `X-Forwarded-*`, request id,
//! CORS), the streaming forward with replica fail-over, the JSON error answers and the access
//! log. It reads the registry on every request and caches nothing, so a request can only reach
//! a node the registry lists for the routed network *now*. It must not change the registry,
//! buffer bodies, or forward anything it has not routed, authenticated and checked.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use tracing::Instrument;

use super::auth::{AuthError, Verifier};
use super::policy::{self, PolicyError};
use super::route::{self, Feature, RouteError};
use super::DelegatorConfig;
use crate::orchestrator::registry::{NetworkEntry, Registry};
use crate::telemetry::names;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// State shared by every connection.
pub(crate) struct Shared {
    pub registry: Registry,
    pub cfg: DelegatorConfig,
    pub verifier: Verifier,
    pub client: Client<HttpConnector, ReplayBody>,
    pub round_robin: AtomicUsize,
}

/// Where a request came from (the TCP peer and whether it arrived over TLS).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// Every answer that is not a forward: a status and a message, rendered as JSON.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("unknown network `{0}`")]
    UnknownNetwork(String),
    #[error("network `{0}` has no ready node right now")]
    NoReadyNode(String),
    #[error("{0}")]
    Unauthorized(#[from] AuthError),
    #[error("user is not a member of network `{0}`")]
    NotMember(String),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("the gateway serves only /ipfs/… and /ipns/… paths")]
    GatewayPath,
    #[error("method {0} is not allowed here")]
    Method(Method),
    #[error("origin not allowed for network `{0}`")]
    Origin(String),
    #[error("request body larger than the configured limit of {0} bytes")]
    TooLarge(u64),
    #[error("the network's nodes could not be reached")]
    BadGateway,
    #[error("the node did not answer in time")]
    Timeout,
}

impl ProxyError {
    fn status(&self) -> StatusCode {
        let code = match self {
            ProxyError::Route(e) => e.status(),
            ProxyError::UnknownNetwork(_) => 404,
            ProxyError::NoReadyNode(_) => 503,
            ProxyError::Unauthorized(_) => 401,
            ProxyError::NotMember(_) | ProxyError::Policy(_) | ProxyError::Origin(_) => 403,
            ProxyError::GatewayPath => 404,
            ProxyError::Method(_) => 405,
            ProxyError::TooLarge(_) => 413,
            ProxyError::BadGateway => 502,
            ProxyError::Timeout => 504,
        };
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn response(&self, request_id: &str) -> Response<ProxyBody> {
        let mut resp = json_response(
            self.status(),
            &serde_json::json!({
                "error": self.to_string(),
                "status": self.status().as_u16(),
                "request_id": request_id,
            }),
        );
        if let ProxyError::Unauthorized(_) = self {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

fn json_response(status: StatusCode, v: &serde_json::Value) -> Response<ProxyBody> {
    let mut resp = Response::new(full(Bytes::from(v.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn full(b: Bytes) -> ProxyBody {
    Full::new(b).map_err(|never| match never {}).boxed_unsync()
}

/// What the access log line says about a request, filled in as it is handled.
#[derive(Default)]
struct Trace {
    network: Option<String>,
    feature: Option<Feature>,
    user: Option<String>,
    node: Option<SocketAddr>,
    /// The network is one the registry lists (only then is it a metric label).
    known: bool,
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
    let resp = async {
        let mut resp = match proxy(&shared, conn, req, &request_id, &mut trace).await {
            Ok(r) => r,
            Err(e) => {
                if matches!(e, ProxyError::BadGateway | ProxyError::Timeout) {
                    tracing::warn!(error = %e, "upstream failure");
                }
                e.response(&request_id)
            }
        };
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
        node = %trace.node.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
        peer = %conn.peer.ip(),
        "request"
    );
    Ok(resp)
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

fn trusted(cfg: &DelegatorConfig, peer: IpAddr) -> bool {
    let peer = match peer {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    cfg.trusted_proxies.iter().any(|net| net.contains(peer))
}

/// A fresh id, or the one a trusted proxy already assigned (when it is short and plain).
fn request_id(cfg: &DelegatorConfig, conn: ConnInfo, headers: &HeaderMap) -> String {
    if trusted(cfg, conn.peer.ip()) {
        if let Some(v) = headers.get(X_REQUEST_ID).and_then(|v| v.to_str().ok()) {
            if !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return v.to_owned();
            }
        }
    }
    let mut b = [0u8; 12];
    if getrandom::fill(&mut b).is_err() {
        // The OS RNG failing is not a reason to drop a request; fall back to a counter.
        static N: AtomicUsize = AtomicUsize::new(0);
        return format!("n{:x}", N.fetch_add(1, Ordering::Relaxed));
    }
    hex::encode(b)
}

/// The host a request was addressed to: `X-Forwarded-Host` from a trusted proxy, else `Host`
/// (or the URI authority, for HTTP/2).
fn request_host(cfg: &DelegatorConfig, conn: ConnInfo, req: &Request<Incoming>) -> Option<String> {
    if trusted(cfg, conn.peer.ip()) {
        if let Some(h) = req
            .headers()
            .get(&X_FORWARDED_HOST)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
        {
            return Some(h.trim().to_owned());
        }
    }
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()))
}

async fn proxy(
    shared: &Shared,
    conn: ConnInfo,
    req: Request<Incoming>,
    request_id: &str,
    trace: &mut Trace,
) -> Result<Response<ProxyBody>, ProxyError> {
    let cfg = &shared.cfg;
    let host = request_host(cfg, conn, &req).ok_or(RouteError::UnknownHost)?;
    let r = route::route(&host, req.uri().path(), &cfg.domain)?;
    trace.network = Some(r.network.to_string());
    trace.feature = Some(r.feature);
    let entry = shared
        .registry
        .get(&r.network)
        .ok_or_else(|| ProxyError::UnknownNetwork(r.network.to_string()))?;
    trace.known = true;

    // CORS: preflights are answered here; a foreign origin never reaches a node.
    let origin = req.headers().get(header::ORIGIN).cloned();
    if let Some(o) = &origin {
        let allowed = origin_allowed(&entry, o);
        if req.method() == Method::OPTIONS
            && req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            if !allowed {
                return Err(ProxyError::Origin(entry.name.to_string()));
            }
            return Ok(preflight(o, req.headers()));
        }
        if !allowed {
            return Err(ProxyError::Origin(entry.name.to_string()));
        }
    }

    let (nodes, retry_safe) = match r.feature {
        Feature::Status => {
            if req.method() != Method::GET && req.method() != Method::HEAD {
                return Err(ProxyError::Method(req.method().clone()));
            }
            let mut resp = status_response(&entry);
            add_cors(resp.headers_mut(), origin.as_ref());
            return Ok(resp);
        }
        Feature::Api => {
            authenticate(shared, &entry, req.headers(), trace)?;
            let command =
                policy::check_rpc(&r.path, &entry.access.api_allow, &entry.access.api_deny)?;
            let retry_safe = policy::read_only(command);
            // The one node RPC calls go to is the first ready one; the rest are fail-overs.
            (
                entry.nodes.iter().map(|n| n.api).collect::<Vec<_>>(),
                retry_safe,
            )
        }
        Feature::Gateway => {
            if !entry.access.gateway_public {
                authenticate(shared, &entry, req.headers(), trace)?;
            }
            if !policy::gateway_path_allowed(&r.path) {
                return Err(ProxyError::GatewayPath);
            }
            let m = req.method();
            if m != Method::GET && m != Method::HEAD {
                return Err(ProxyError::Method(m.clone()));
            }
            // Spread over the ready nodes: rotate the starting point.
            let mut nodes: Vec<SocketAddr> = entry.nodes.iter().map(|n| n.gateway).collect();
            if !nodes.is_empty() {
                let k = shared.round_robin.fetch_add(1, Ordering::Relaxed) % nodes.len();
                nodes.rotate_left(k);
            }
            (nodes, true)
        }
    };
    if nodes.is_empty() {
        return Err(ProxyError::NoReadyNode(entry.name.to_string()));
    }

    let (parts, body) = req.into_parts();
    if let (Some(max), Some(len)) = (cfg.max_body_bytes, content_length(&parts.headers)) {
        if len > max {
            return Err(ProxyError::TooLarge(max));
        }
    }
    let body: ProxyBody = match cfg.max_body_bytes {
        Some(max) => Limited::new(body, usize::try_from(max).unwrap_or(usize::MAX)).boxed_unsync(),
        None => body.map_err(|e| Box::new(e) as BoxError).boxed_unsync(),
    };
    let headers = upstream_headers(cfg, conn, &parts.headers, &host, request_id, r.feature);
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("{}?{q}", r.path),
        None => r.path.clone(),
    };
    let (resp, node) = forward(
        shared,
        entry.name.as_str(),
        &nodes,
        &parts.method,
        headers,
        &path_and_query,
        body,
        retry_safe,
    )
    .await?;
    trace.node = Some(node);

    let (mut rparts, rbody) = resp.into_parts();
    strip_hop_by_hop(&mut rparts.headers);
    let cors: Vec<HeaderName> = rparts
        .headers
        .keys()
        .filter(|k| k.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for k in cors {
        rparts.headers.remove(k);
    }
    add_cors(&mut rparts.headers, origin.as_ref());
    let body = rbody.map_err(|e| Box::new(e) as BoxError).boxed_unsync();
    Ok(Response::from_parts(rparts, body))
}

/// The bearer token's user, who must be one of the network's users (401, then 403).
fn authenticate(
    shared: &Shared,
    entry: &NetworkEntry,
    headers: &HeaderMap,
    trace: &mut Trace,
) -> Result<(), ProxyError> {
    let user = shared
        .verifier
        .check_header(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()))?;
    let member = entry.access.users.contains(&user);
    trace.user = Some(user);
    if member {
        Ok(())
    } else {
        Err(ProxyError::NotMember(entry.name.to_string()))
    }
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Sends the request to the first node that takes it. A node is skipped when the connection
/// could not be made (nothing was sent), or, once per request, when the request failed before
/// any answer, its body was never read and it only reads (`retry_safe`). A timeout is never
/// retried.
#[allow(clippy::too_many_arguments)]
async fn forward(
    shared: &Shared,
    network: &str,
    nodes: &[SocketAddr],
    method: &Method,
    mut headers: HeaderMap,
    path_and_query: &str,
    body: ProxyBody,
    retry_safe: bool,
) -> Result<(Response<Incoming>, SocketAddr), ProxyError> {
    let end = body.is_end_stream();
    let hint = body.size_hint();
    let slot = Arc::new(Mutex::new(Some(body)));
    let mut timed_out = false;
    let mut retried = false;
    for (i, &node) in nodes.iter().enumerate() {
        let uri = format!("http://{node}{path_and_query}");
        let mut req = Request::new(ReplayBody {
            slot: slot.clone(),
            body: None,
            end,
            hint,
        });
        *req.method_mut() = method.clone();
        *req.uri_mut() = uri.parse().map_err(|_| ProxyError::BadGateway)?;
        // The last attempt takes the headers; earlier ones copy them.
        *req.headers_mut() = if i + 1 < nodes.len() {
            headers.clone()
        } else {
            std::mem::take(&mut headers)
        };
        if let Ok(h) = HeaderValue::from_str(&node.to_string()) {
            req.headers_mut().insert(header::HOST, h);
        }
        let sent = shared.client.request(req);
        let result = match shared.cfg.request_timeout {
            Some(t) => match tokio::time::timeout(t, sent).await {
                Ok(r) => r,
                Err(_) => {
                    upstream_error(network, "timeout");
                    return Err(ProxyError::Timeout);
                }
            },
            None => sent.await,
        };
        match result {
            Ok(resp) => return Ok((resp, node)),
            Err(e) => {
                let untouched = lock(&slot).is_some();
                let connect = e.is_connect();
                timed_out |= connect && is_timeout(&e);
                let more = i + 1 < nodes.len();
                upstream_error(
                    network,
                    if connect && is_timeout(&e) {
                        "timeout"
                    } else if connect {
                        "connect"
                    } else {
                        "other"
                    },
                );
                tracing::warn!(node = %node, connect, error = %error_chain(&e), "upstream request failed");
                // A request that broke a node must not break the next one as well: a
                // non-connect failure is retried once at most.
                if more && (connect || (untouched && retry_safe && !retried)) {
                    retried |= !connect;
                    continue;
                }
                return Err(if timed_out {
                    ProxyError::Timeout
                } else {
                    ProxyError::BadGateway
                });
            }
        }
    }
    Err(ProxyError::BadGateway)
}

fn upstream_error(network: &str, kind: &'static str) {
    metrics::counter!(
        names::DELEGATOR_UPSTREAM_ERRORS,
        "network" => network.to_owned(),
        "kind" => kind
    )
    .increment(1);
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        cur = c.source();
    }
    false
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A request body that can be handed to a second attempt as long as the first never read it.
/// The real body waits in a shared slot and is taken on the first poll.
pub(crate) struct ReplayBody {
    slot: Arc<Mutex<Option<ProxyBody>>>,
    body: Option<ProxyBody>,
    end: bool,
    hint: SizeHint,
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.body.is_none() {
            this.body = lock(&this.slot).take();
        }
        match this.body.as_mut() {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(Some(Err("request body already consumed".into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.body {
            Some(b) => b.is_end_stream(),
            None => self.end,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.body {
            Some(b) => b.size_hint(),
            None => self.hint,
        }
    }
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
// Parsed names: removing by `&str` would parse each name again on every request.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(h: &mut HeaderMap) {
    if h.contains_key(header::CONNECTION) {
        let listed: Vec<String> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect();
        for name in listed {
            h.remove(name.as_str());
        }
    }
    for name in &HOP_BY_HOP {
        h.remove(name);
    }
}

fn upstream_headers(
    cfg: &DelegatorConfig,
    conn: ConnInfo,
    incoming: &HeaderMap,
    host: &str,
    request_id: &str,
    feature: Feature,
) -> HeaderMap {
    let mut h = incoming.clone();
    let wants_trailers = incoming
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    strip_hop_by_hop(&mut h);
    if wants_trailers {
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    // Ours, not the node's: the credential, the browser's origin (kubo refuses unknown
    // origins), and forwarding headers an untrusted client could forge.
    for name in [
        header::AUTHORIZATION,
        header::ORIGIN,
        header::HOST,
        header::FORWARDED,
        X_REQUEST_ID,
    ] {
        h.remove(name);
    }
    if feature == Feature::Api {
        h.remove(header::REFERER);
    }
    let is_trusted = trusted(cfg, conn.peer.ip());
    let prior_for = incoming
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .filter(|_| is_trusted)
        .map(str::to_owned);
    let prior_proto = incoming
        .get(&X_FORWARDED_PROTO)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_trusted && (*v == "http" || *v == "https"))
        .map(str::to_owned);
    let peer = conn.peer.ip().to_string();
    let xff = match prior_for {
        Some(p) => format!("{p}, {peer}"),
        None => peer,
    };
    let proto = prior_proto.unwrap_or_else(|| if conn.tls { "https" } else { "http" }.into());
    for (name, value) in [
        (X_FORWARDED_FOR, xff.as_str()),
        (X_FORWARDED_HOST, host),
        (X_FORWARDED_PROTO, proto.as_str()),
        (X_REQUEST_ID, request_id),
    ] {
        match HeaderValue::from_str(value) {
            Ok(v) => {
                h.insert(name, v);
            }
            Err(_) => {
                h.remove(name);
            }
        }
    }
    h
}

fn origin_allowed(entry: &NetworkEntry, origin: &HeaderValue) -> bool {
    let Ok(o) = origin.to_str() else {
        return false;
    };
    entry
        .access
        .allowed_origins
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(o))
}

fn add_cors(h: &mut HeaderMap, origin: Option<&HeaderValue>) {
    if let Some(o) = origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o.clone());
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(
                "X-Request-Id, X-Stream-Output, X-Chunked-Output, X-Content-Length, X-Ipfs-Path, Etag",
            ),
        );
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// The answer to an allowed CORS preflight.
fn preflight(origin: &HeaderValue, req: &HeaderMap) -> Response<ProxyBody> {
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, POST, OPTIONS"),
    );
    let allow_headers = req
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or(HeaderValue::from_static("Authorization, Content-Type"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    resp
}

/// The status feature: what a tenant may know about the network (no users, ports or keys).
fn status_response(entry: &NetworkEntry) -> Response<ProxyBody> {
    let nodes: Vec<_> = entry
        .nodes
        .iter()
        .map(|n| serde_json::json!({"index": n.index, "peer_id": n.peer_id}))
        .collect();
    json_response(
        StatusCode::OK,
        &serde_json::json!({
            "network": entry.name.as_str(),
            "ready_nodes": entry.nodes.len(),
            "gateway_public": entry.access.gateway_public,
            "nodes": nodes,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_listed_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_TYPE));
    }

    fn cfg(trusted: Vec<crate::config::IpNet>) -> DelegatorConfig {
        let jwt = super::super::JwtConfig::hs256(vec![7u8; 32]).unwrap();
        let mut c = DelegatorConfig::new("nexus.test", jwt);
        c.trusted_proxies = trusted;
        c
    }

    #[test]
    fn forwarding_headers_trust_only_configured_proxies() {
        let mut incoming = HeaderMap::new();
        incoming.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        incoming.insert(header::ORIGIN, HeaderValue::from_static("https://app"));
        incoming.insert(header::REFERER, HeaderValue::from_static("https://app/x"));
        incoming.insert(X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6"));
        incoming.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        incoming.insert(header::TE, HeaderValue::from_static("trailers"));
        let conn = ConnInfo {
            peer: "10.0.0.9:5555".parse().unwrap(),
            tls: false,
        };
        let h = upstream_headers(
            &cfg(vec![]),
            conn,
            &incoming,
            "a.api.nexus.test",
            "rid",
            Feature::Api,
        );
        assert!(!h.contains_key(header::AUTHORIZATION));
        assert!(!h.contains_key(header::ORIGIN));
        assert!(!h.contains_key(header::REFERER));
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.9");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_HOST], "a.api.nexus.test");
        assert_eq!(h[header::TE], "trailers");
        assert_eq!(h[&X_REQUEST_ID], "rid");
        let trusted_cfg = cfg(vec![crate::config::IpNet::parse("10.0.0.0/24").unwrap()]);
        let h = upstream_headers(&trusted_cfg, conn, &incoming, "h", "rid", Feature::Gateway);
        assert_eq!(h[&X_FORWARDED_FOR], "6.6.6.6, 10.0.0.9");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert!(h.contains_key(header::REFERER));
    }

    fn entry(origins: &[&str]) -> NetworkEntry {
        NetworkEntry {
            name: crate::node::NetworkName::new("cors").unwrap(),
            access: crate::access::Access {
                allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
            nodes: vec![],
        }
    }

    #[test]
    fn cors_origins_and_preflight() {
        let app = HeaderValue::from_static("https://app.example");
        assert!(origin_allowed(&entry(&["https://app.example"]), &app));
        assert!(origin_allowed(&entry(&["https://APP.example/"]), &app));
        assert!(origin_allowed(&entry(&["*"]), &app));
        assert!(!origin_allowed(&entry(&[]), &app));
        assert!(!origin_allowed(&entry(&["https://app.example.evil"]), &app));
        let mut req = HeaderMap::new();
        req.insert(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("authorization"),
        );
        let resp = preflight(&app, &req);
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            resp.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example"
        );
        assert_eq!(
            resp.headers()[header::ACCESS_CONTROL_ALLOW_HEADERS],
            "authorization"
        );
        let mut h = HeaderMap::new();
        add_cors(&mut h, Some(&app));
        assert_eq!(h[header::VARY], "Origin");
    }

    #[test]
    fn errors_are_json_without_secrets() {
        let e = ProxyError::Unauthorized(AuthError::Expired);
        let r = e.response("rid1");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(ProxyError::Timeout.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            ProxyError::Route(RouteError::BadPath("x")).status(),
            StatusCode::BAD_REQUEST
        );
    }
}
