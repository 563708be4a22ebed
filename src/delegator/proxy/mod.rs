//! The request path of the delegator: route, resolve, authenticate, authorise, forward.
//!
//! Owns the per-request handler, header rewriting (hop-by-hop, `X-Forwarded-*`, request id,
//! CORS), the streaming forward with replica fail-over, the JSON error answers and the access
//! log. It reads the registry on every request and caches nothing, so a request can only reach
//! a node the registry lists for the routed network *now*. It must not change the registry,
//! buffer bodies, or forward anything it has not routed, authenticated and checked.
//!
//! One file per concern, as linkerd2-proxy keeps them: [`access`] (the service function, its
//! metrics and the access line), [`headers`] (request id, host, hop-by-hop, `X-Forwarded-*`),
//! [`cors`], [`forward`] (the streaming forward with fail-over), [`response`] (the JSON error
//! answers and the status feature), [`quota`] (the disk limit on writes). This file holds the
//! pipeline itself: route, resolve, CORS, the feature's checks, the disk limit, forward. The
//! `pins` feature (the Pinning Service API) is answered here, never forwarded: after the token,
//! membership and rate checks it goes to [`super::pinsvc`].

mod access;
mod cors;
mod forward;
mod headers;
mod limit;
mod pins;
mod quota;
mod response;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName};
use hyper::{Method, Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::delegator::net::IpText;

use super::auth::{AuthError, Verifier};
use super::pinsvc::{self, Failure};
use super::policy;
use super::route::{self, Feature, RouteError};
use super::DelegatorConfig;
use crate::access::Role;
use crate::node::endpoint::{Connector, Endpoint};
use crate::orchestrator::registry::{NetworkEntry, Registry};
use crate::pinsink::{PinService, PinSink};
use crate::revocations::Revocations;
pub(crate) use access::handle;
use access::Trace;
use cors::{add_cors, origin_allowed, preflight};
use forward::forward;
use forward::ReplayBody;
pub(crate) use headers::AmbiguousHost;
use headers::{request_host, strip_hop_by_hop, upstream_headers};
pub use limit::{LimitConfig, Rate};
pub(crate) use limit::{LimitError, Limits};
pub(crate) use quota::Quotas;
use response::{status_response, ProxyError};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// What every connection of one serving thread reads: the delegator's state, shared by all its
/// threads (registry, limits, disk use, verified tokens, the pin handles), and the thread's own
/// pool of node connections (a pooled connection is driven by the runtime that opened it).
pub(crate) struct Shared {
    pub registry: Registry,
    /// Revoked token ids (the orchestrator keeps it in step with the store).
    pub revocations: Revocations,
    pub cfg: DelegatorConfig,
    pub verifier: Verifier,
    /// This thread's upstream pool (the one field not shared between threads).
    pub client: Client<Connector, ReplayBody>,
    pub round_robin: Arc<AtomicUsize>,
    /// Each node's disk use, for the limit on writes.
    pub quota: Arc<Quotas>,
    /// Request rates and in-flight caps per client address and per user.
    pub limits: Arc<Limits>,
    /// Where the CIDs that writes pinned or unpinned are reported (the orchestrator's pinset),
    /// once the daemon sets it.
    pub pin_sink: Arc<std::sync::OnceLock<Arc<dyn PinSink>>>,
    /// The pinset the Pinning Service API works on (the orchestrator's), once the daemon sets
    /// it; until then the API answers 503.
    pub pin_service: Arc<std::sync::OnceLock<Arc<dyn PinService>>>,
}

impl Shared {
    /// The state for one more serving thread: everything shared with `self` but the upstream
    /// pool, which is new and empty.
    pub(crate) fn for_thread(&self) -> Self {
        Self {
            registry: self.registry.clone(),
            revocations: self.revocations.clone(),
            cfg: self.cfg.clone(),
            verifier: self.verifier.clone(),
            client: upstream_pool(&self.cfg),
            round_robin: self.round_robin.clone(),
            quota: self.quota.clone(),
            limits: self.limits.clone(),
            pin_sink: self.pin_sink.clone(),
            pin_service: self.pin_service.clone(),
        }
    }
}

/// A new, empty pool of connections to nodes, as `cfg` sizes it.
pub(crate) fn upstream_pool(cfg: &DelegatorConfig) -> Client<Connector, ReplayBody> {
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(cfg.idle_timeout)
        .pool_max_idle_per_host(cfg.max_idle_per_node)
        .build(Connector::new(cfg.connect_timeout))
}

/// Where a request came from (the TCP peer, its address's text, and whether it arrived over
/// TLS); made once per connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnInfo {
    pub peer: SocketAddr,
    pub peer_text: IpText,
    pub tls: bool,
}

impl ConnInfo {
    pub(crate) fn new(peer: SocketAddr, tls: bool) -> Self {
        Self {
            peer,
            peer_text: IpText::new(peer.ip()),
            tls,
        }
    }
}

/// The pipeline of one request: route, resolve the network, CORS, the feature's checks (token,
/// membership, policy, method), then the forward; every refusal is a [`ProxyError`].
async fn proxy(
    shared: &Shared,
    conn: ConnInfo,
    req: Request<Incoming>,
    request_id: &str,
    trace: &mut Trace,
) -> Result<Response<ProxyBody>, ProxyError> {
    let cfg = &shared.cfg;
    // Limits per client address first: a client over its rate is refused before any work.
    let mut slots = Vec::new();
    slots.extend(shared.limits.client(client_ip(cfg, conn, req.headers()))?);
    let host = request_host(cfg, conn, &req)?.ok_or(RouteError::UnknownHost)?;
    let r = route::route(&host, req.uri().path(), &cfg.domain)?;
    trace.network = Some(r.network.to_string());
    trace.feature = Some(r.feature);
    trace.form = Some(r.form);
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

    let mut pin_tap: Option<(pins::Tap, String)> = None;
    let (mut nodes, retry_safe, write) = match r.feature {
        Feature::Status => {
            if req.method() != Method::GET && req.method() != Method::HEAD {
                return Err(ProxyError::Method(req.method().clone()));
            }
            // The network's existence and peer ids are for its members, unless it is public.
            if !entry.access.gateway_public {
                let (user, _) = authenticate(shared, &entry, req.headers(), trace)?;
                slots.extend(shared.limits.user(&user)?);
            }
            let mut resp = status_response(&entry);
            add_cors(resp.headers_mut(), origin.as_ref());
            return Ok(resp);
        }
        Feature::Pins => {
            let (user, role) = authenticate(shared, &entry, req.headers(), trace)?;
            slots.extend(shared.limits.user(&user)?);
            return pin_api(shared, &entry, &r.path, req, &user, role, origin.as_ref()).await;
        }
        Feature::Api => {
            let (user, role) = authenticate(shared, &entry, req.headers(), trace)?;
            slots.extend(shared.limits.user(&user)?);
            let command =
                policy::check_rpc(&r.path, &entry.access.api_allow, &entry.access.api_deny)?;
            policy::check_role(command, req.uri().query(), &user, role)?;
            let retry_safe = policy::read_only(command);
            pin_tap = pins::Tap::of(command, req.uri().query()).map(|t| (t, user.clone()));
            // The one node RPC calls go to is the first ready one; the rest are fail-overs.
            (
                entry
                    .nodes
                    .iter()
                    .map(|n| n.api.clone())
                    .collect::<Vec<_>>(),
                retry_safe,
                quota::is_write(command),
            )
        }
        Feature::Gateway => {
            // Every role reads the gateway.
            if !entry.access.gateway_public {
                let (user, _) = authenticate(shared, &entry, req.headers(), trace)?;
                slots.extend(shared.limits.user(&user)?);
            }
            if entry.access.refuses_ipns_dns() && policy::needs_dns(&r.path) {
                return Err(ProxyError::IpnsDns);
            }
            if !policy::gateway_path_allowed(&r.path) {
                return Err(ProxyError::GatewayPath);
            }
            let m = req.method();
            if m != Method::GET && m != Method::HEAD {
                return Err(ProxyError::Method(m.clone()));
            }
            // Spread over the ready nodes: rotate the starting point.
            let mut nodes: Vec<Endpoint> = entry.nodes.iter().map(|n| n.gateway.clone()).collect();
            if !nodes.is_empty() {
                let k = shared.round_robin.fetch_add(1, Ordering::Relaxed) % nodes.len();
                nodes.rotate_left(k);
            }
            (nodes, true, false)
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
    // The disk limit: a write is measured against the node it goes to (507 up front, or its
    // body cut at the limit); the node's answer keeps it counted until it ends.
    let (body, ticket) = if write {
        let declared = content_length(&parts.headers);
        let a = shared.quota.admit(shared, &entry, declared, body).await?;
        nodes.drain(..a.skip.min(nodes.len()));
        (a.body, a.ticket)
    } else {
        (body, None)
    };
    let headers = upstream_headers(cfg, conn, &parts.headers, request_id, r.feature);
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("{}?{q}", r.path),
        None => r.path.clone(),
    };
    let timeout = match r.feature {
        Feature::Gateway => match (cfg.gateway_timeout, cfg.request_timeout) {
            (Some(g), Some(t)) => Some(g.min(t)),
            (g, t) => g.or(t),
        },
        _ => cfg.request_timeout,
    };
    let forwarded = forward(
        shared,
        entry.name.as_str(),
        &nodes,
        &parts.method,
        headers,
        &path_and_query,
        body,
        retry_safe,
        timeout,
    )
    .await;
    // A body cut at the disk limit: 507, whatever the node made of the broken upload.
    if let Some(cut) = ticket.as_ref().and_then(|t| t.cut()) {
        return Err(cut.into());
    }
    let (resp, node) = forwarded?;
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
    let body = match ticket {
        Some(t) => t.hold(body),
        None => body,
    };
    // A write that pinned (or unpinned) joins the network's pinset, read as it streams by.
    // `pin/rm` is reported from its arguments whatever the node answered: the user asked the
    // network to let those CIDs go, and this node may not have been one that held them.
    let body = match (pin_tap, shared.pin_sink.get()) {
        (Some((pins::Tap::PinRm, user)), Some(sink)) => {
            let cids = pins::args(parts.uri.query());
            if !cids.is_empty() {
                sink.record(
                    &entry.name,
                    &user,
                    crate::pinsink::PinChange::Unpinned,
                    cids,
                );
            }
            body
        }
        (Some((t, user)), Some(sink)) if rparts.status.is_success() => {
            pins::tap(body, t, sink.clone(), entry.name.clone(), user)
        }
        _ => body,
    };
    Ok(Response::from_parts(rparts, limit::hold(body, slots)))
}

/// The Pinning Service API (`Feature::Pins`): the body read whole (at most
/// [`pinsvc::MAX_BODY_BYTES`]; a `Pin` is small), the call handed to the pinset through the
/// [`PinService`](crate::pinsink::PinService) handle, the answer as JSON with CORS.
async fn pin_api(
    shared: &Shared,
    entry: &NetworkEntry,
    path: &str,
    req: Request<Incoming>,
    user: &str,
    role: Role,
    origin: Option<&header::HeaderValue>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let Some(svc) = shared.pin_service.get() else {
        return Err(Failure::new(503, "the pinning service is not running on this daemon").into());
    };
    let (parts, body) = req.into_parts();
    let max = pinsvc::MAX_BODY_BYTES;
    if content_length(&parts.headers).is_some_and(|n| n > max as u64) {
        return Err(Failure::new(413, format!("the body is over {max} bytes")).into());
    }
    let body = Limited::new(body, max)
        .collect()
        .await
        .map_err(|e| {
            Failure::bad_request(format!(
                "the body could not be read ({e}); at most {max} bytes"
            ))
        })?
        .to_bytes();
    let answer = pinsvc::handle(
        svc.as_ref(),
        &entry.name,
        parts.method.as_str(),
        path,
        parts.uri.query(),
        &body,
        pinsvc::Caller { user, role },
    )
    .await?;
    let mut resp = response::answer(answer.status, answer.body.as_ref());
    add_cors(resp.headers_mut(), origin);
    Ok(resp)
}

/// The bearer token's user, who must be one of the network's users: a valid, unrevoked token
/// (401), limited to this network if it names networks, of a member (403). Returns the user
/// and the role the request has: the user's on the network, lowered by the token's `role`.
fn authenticate(
    shared: &Shared,
    entry: &NetworkEntry,
    headers: &HeaderMap,
    trace: &mut Trace,
) -> Result<(String, Role), ProxyError> {
    let id = shared
        .verifier
        .identify_header(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()))?;
    trace.user = Some(id.user.clone());
    if let Some(jti) = &id.jti {
        let now = i64::try_from(jsonwebtoken::get_current_timestamp()).unwrap_or(i64::MAX);
        if shared.revocations.is_revoked(jti, now) {
            return Err(AuthError::Revoked.into());
        }
    }
    if !id.allows_network(entry.name.as_str()) {
        return Err(ProxyError::TokenNetwork(entry.name.to_string()));
    }
    match entry.access.role_of(&id.user) {
        Some(role) => {
            let role = id.role.map_or(role, |t| t.min(role));
            Ok((id.user.clone(), role))
        }
        None => Err(ProxyError::NotMember(entry.name.to_string())),
    }
}

/// Whether `ip` is one of the configured trusted proxies.
pub(crate) fn is_trusted_peer(cfg: &DelegatorConfig, ip: std::net::IpAddr) -> bool {
    headers::is_trusted(cfg, ip)
}

/// The client's address: the TCP peer, or the nearest address a trusted proxy appended.
fn client_ip(cfg: &DelegatorConfig, conn: ConnInfo, h: &HeaderMap) -> std::net::IpAddr {
    if headers::is_trusted(cfg, conn.peer.ip()) {
        if let Some(ip) = h
            .get(headers::X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse().ok())
        {
            return ip;
        }
    }
    conn.peer.ip()
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}
