//! Header handling: the request id (fresh, or a trusted proxy's), the host a request was
//! addressed to (refusing ambiguous ones: several `Host`s, a target or `:authority` naming
//! another host), hop-by-hop removal (both ways), the headers sent upstream (the credential,
//! origin and every host-naming forwarding header dropped; `X-Forwarded-For`/`-Proto` and the
//! request id set), and the headers that confine content served on the shared origin.
//! Trusts forwarding headers only from the configured proxies; must not read bodies.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::Request;

use super::ConnInfo;
use crate::delegator::route::Feature;
use crate::delegator::DelegatorConfig;

pub(super) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(super) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(super) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(super) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Whether `peer` is one of the configured trusted proxies.
pub(super) fn is_trusted(cfg: &DelegatorConfig, peer: IpAddr) -> bool {
    trusted(cfg, peer)
}

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
pub(super) fn request_id(cfg: &DelegatorConfig, conn: ConnInfo, headers: &HeaderMap) -> String {
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

/// Why the host a request names is ambiguous (answered 400, never routed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AmbiguousHost {
    #[error("ambiguous request: more than one Host header")]
    ManyHosts,
    #[error("ambiguous request: the absolute-form target names another host than Host")]
    Target,
    #[error("ambiguous request: the HTTP/2 :authority differs from the host header")]
    Authority,
}

/// Two authorities name the same host and port: case-insensitive, one trailing dot of the host
/// ignored.
fn same_authority(a: &str, b: &str) -> bool {
    fn norm(s: &str) -> String {
        let s = s.trim().to_ascii_lowercase();
        match s.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') && !h.contains(':') => {
                format!("{}:{p}", h.strip_suffix('.').unwrap_or(h))
            }
            _ => s.strip_suffix('.').map(str::to_owned).unwrap_or(s),
        }
    }
    norm(a) == norm(b)
}

/// The host a request was addressed to: `X-Forwarded-Host` from a trusted proxy, else `Host`
/// (or the URI authority: HTTP/2's `:authority`, HTTP/1.1's absolute-form target). A request
/// whose `Host` headers, target and `:authority` do not all name one host is refused whoever
/// sent it: the delegator and a node must never read two different hosts from one request.
pub(super) fn request_host(
    cfg: &DelegatorConfig,
    conn: ConnInfo,
    req: &Request<Incoming>,
) -> Result<Option<String>, AmbiguousHost> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(AmbiguousHost::ManyHosts);
    }
    let host = match host.map(|v| v.to_str()) {
        // Not text: no host this server answers for (404).
        Some(Err(_)) => return Ok(None),
        Some(Ok(h)) => Some(h),
        None => None,
    };
    if let (Some(h), Some(a)) = (host, req.uri().authority()) {
        if !same_authority(h, a.as_str()) {
            return Err(if req.version() == hyper::Version::HTTP_2 {
                AmbiguousHost::Authority
            } else {
                AmbiguousHost::Target
            });
        }
    }
    if trusted(cfg, conn.peer.ip()) {
        if let Some(h) = req
            .headers()
            .get(&X_FORWARDED_HOST)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
        {
            return Ok(Some(h.trim().to_owned()));
        }
    }
    Ok(host
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned())))
}

/// `Content-Security-Policy: sandbox` and `X-Content-Type-Options: nosniff` on what is served
/// on the shared origin (the path form on the apex domain), so that one tenant's HTML never
/// runs as the origin every network's path-form API and gateway share.
pub(super) fn confine_shared_origin(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
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

pub(super) fn strip_hop_by_hop(h: &mut HeaderMap) {
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

/// The headers sent to a node. `Host` is set by the forward (the node's own); no header that
/// names the client's host (`X-Forwarded-Host`, `Forwarded`) reaches it, so kubo never changes
/// behaviour (subdomain redirects, DNSLink) on a host name a client chose.
pub(super) fn upstream_headers(
    cfg: &DelegatorConfig,
    conn: ConnInfo,
    incoming: &HeaderMap,
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
        X_FORWARDED_HOST,
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
    let peer = conn.peer_text.as_str();
    let xff = match prior_for {
        Some(p) => Cow::Owned(format!("{p}, {peer}")),
        None => Cow::Borrowed(peer),
    };
    let proto = prior_proto.unwrap_or_else(|| if conn.tls { "https" } else { "http" }.into());
    for (name, value) in [
        (X_FORWARDED_FOR, xff.as_ref()),
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

    fn cfg(trusted: Vec<crate::delegator::IpNet>) -> DelegatorConfig {
        let jwt = crate::delegator::JwtConfig::hs256(vec![7u8; 32]).unwrap();
        let mut c = DelegatorConfig::new("nexus.test", jwt);
        c.trusted_proxies = trusted;
        c
    }

    #[test]
    fn authorities_compare_without_case_or_trailing_dot() {
        assert!(same_authority("A.api.Nexus.test", "a.api.nexus.test"));
        assert!(same_authority(
            "a.api.nexus.test.:8080",
            "a.api.nexus.test:8080"
        ));
        assert!(!same_authority("a.api.nexus.test:8080", "a.api.nexus.test"));
        assert!(!same_authority("b.api.nexus.test", "a.api.nexus.test"));
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
        let conn = ConnInfo::new("10.0.0.9:5555".parse().unwrap(), false);
        incoming.insert(X_FORWARDED_HOST, HeaderValue::from_static("evil.localhost"));
        incoming.insert(
            header::FORWARDED,
            HeaderValue::from_static("host=evil.localhost"),
        );
        let h = upstream_headers(&cfg(vec![]), conn, &incoming, "rid", Feature::Api);
        assert!(!h.contains_key(header::AUTHORIZATION));
        assert!(!h.contains_key(header::ORIGIN));
        assert!(!h.contains_key(header::REFERER));
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.9");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert!(!h.contains_key(&X_FORWARDED_HOST));
        assert!(!h.contains_key(header::FORWARDED));
        assert_eq!(h[header::TE], "trailers");
        assert_eq!(h[&X_REQUEST_ID], "rid");
        let trusted_cfg = cfg(vec![crate::delegator::IpNet::parse("10.0.0.0/24").unwrap()]);
        let h = upstream_headers(&trusted_cfg, conn, &incoming, "rid", Feature::Gateway);
        assert!(!h.contains_key(&X_FORWARDED_HOST), "even a trusted proxy's");
        assert_eq!(h[&X_FORWARDED_FOR], "6.6.6.6, 10.0.0.9");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert!(h.contains_key(header::REFERER));
    }
}
