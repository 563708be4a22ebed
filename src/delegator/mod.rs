//! The delegator: an authenticating reverse proxy in front of every network's kubo RPC API and
//! gateway, running in the daemon's process.
//!
//! - [`route`]: `<network>.<api|gateway|status|pins>.<domain>` and
//!   `/network/<network>/<feature>/…` → network, feature and the exact path to forward.
//! - [`pinsvc`]: the IPFS Pinning Service API on each network's pinset, reached through the
//!   leaf trait [`crate::pinsink::PinService`] (never the orchestrator itself).
//! - [`policy`]: the RPC allow/deny rule (defaults plus each network's `api_allow`/`api_deny`).
//! - [`auth`]: JWT configuration, verification (pinned algorithm) and HS256 minting.
//! - [`net`]: IP addresses and networks (the trusted proxies).
//! - `proxy`: the per-request handler: registry lookup, CORS, access checks, streaming forward
//!   with fail-over, headers, JSON errors, the access log.
//! - [`serve`]: listeners, serving threads (one current-thread runtime per core, each with its
//!   own `SO_REUSEPORT` listener), connections (HTTP/1.1 and HTTP/2), caps, graceful shutdown.
//! - [`tls`]: the TLS acceptor from PEM files. `homed`: the pin handles, run on the runtime that
//!   set them.
//!
//! This file owns the configuration, its checks and the state every thread shares. It reads the orchestrator's
//! [`Registry`](crate::orchestrator::registry::Registry) on every request and caches no
//! routing, so it never sends a request to a node the registry no longer lists for that network.
//! It must not write the registry or the store (pin changes go through the leaf traits of
//! `crate::pinsink`), start or stop nodes, buffer whole bodies (but the Pinning Service API's
//! small JSON ones, bounded), or log tokens, secrets or query strings.

pub mod auth;
mod homed;
pub mod mint;
pub mod net;
pub mod pinsvc;
pub mod policy;
mod proxy;
pub mod route;
pub mod serve;
#[cfg(test)]
mod testkit;
pub mod tls;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

pub use auth::{AuthError, Identity, JwtConfig, JwtConfigError, JwtKey, PublicKeyAlg, Verifier};
pub use mint::{mint, mint_token, Minted, TokenRequest};
pub use net::{BadIpNet, IpNet};
pub use proxy::{LimitConfig, Rate};
pub use route::{Feature, Route, RouteError};
pub use serve::Listeners;
pub use tls::{tls_acceptor_from_pem, tls_acceptor_from_pem_files};

use crate::orchestrator::registry::Registry;
use crate::revocations::Revocations;

/// How the delegator behaves. Build with [`DelegatorConfig::new`] and adjust the fields.
#[derive(Clone, Debug)]
pub struct DelegatorConfig {
    /// The domain routed: `<network>.<feature>.<domain>`, and the path form on `<domain>`
    /// itself. Case-insensitive; any other `Host` gets 404.
    pub domain: String,
    /// Peers whose `X-Forwarded-Host`, `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Request-Id`
    /// are believed: addresses or CIDR networks (IPv4-mapped IPv6 peers match their IPv4 form).
    pub trusted_proxies: Vec<IpNet>,
    /// How tenant tokens are checked.
    pub jwt: JwtConfig,
    /// Largest request body forwarded (`None`: no limit). Checked on `Content-Length` up front
    /// (413) and enforced while streaming.
    pub max_body_bytes: Option<u64>,
    /// TCP connect timeout to a node.
    pub connect_timeout: Duration,
    /// How long an idle pooled upstream connection is kept.
    pub idle_timeout: Duration,
    /// Time allowed until a node's response headers (`None`: no limit). Bodies stream freely.
    pub request_timeout: Option<Duration>,
    /// Time allowed for a client to send its request headers (and the TLS handshake).
    pub header_read_timeout: Duration,
    /// How long graceful shutdown waits for in-flight requests before dropping them.
    pub shutdown_grace: Duration,
    /// Idle pooled connections kept per node.
    pub max_idle_per_node: usize,
    /// Request rates and in-flight caps per client address and per user (429 + `Retry-After`).
    pub limits: LimitConfig,
    /// Time allowed until a node's gateway answers (its response head); an unknown CID on a
    /// public gateway then costs a client this long, not kubo's own timeout.
    pub gateway_timeout: Option<Duration>,
    /// Most client connections open at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Most connections open at once from one client address; further ones are closed at once.
    pub max_connections_per_client: usize,
}

impl DelegatorConfig {
    /// Defaults: no trusted proxy, no body limit, connect 5 s, idle 90 s, no request timeout,
    /// gateway answers within 10 s, headers within 30 s, 30 s of shutdown grace, 4096
    /// connections (256 per client address), no request rate or in-flight limit (the daemon's
    /// configuration sets them: `delegator.rate_per_client` and the like).
    pub fn new(domain: impl Into<String>, jwt: JwtConfig) -> Self {
        Self {
            domain: domain.into(),
            trusted_proxies: Vec::new(),
            jwt,
            max_body_bytes: None,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(90),
            request_timeout: None,
            header_read_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            max_idle_per_node: 32,
            limits: LimitConfig::default(),
            gateway_timeout: Some(Duration::from_secs(10)),
            max_connections: 4096,
            max_connections_per_client: 256,
        }
    }
}

/// Errors of the delegator itself (never of one request: those are HTTP answers).
#[derive(Debug, thiserror::Error)]
pub enum DelegatorError {
    #[error("invalid delegator domain `{0}`: give a DNS name such as nexus.example.com")]
    BadDomain(String),
    #[error("invalid JWT configuration: {0}")]
    Jwt(#[from] JwtConfigError),
    #[error("invalid delegator setting: {0}")]
    BadSetting(&'static str),
    #[error("cannot read {what} `{path}`: {reason}")]
    TlsFile {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("invalid TLS certificate or key: {0}")]
    Tls(String),
    #[error("the delegator's listener failed: {0}")]
    Accept(#[source] std::io::Error),
    #[error("cannot start the delegator's serving threads: {0}")]
    Threads(#[source] std::io::Error),
}

/// The delegator: build it with [`Delegator::new`], then [`Delegator::serve_on`] its
/// [`Listeners`] (the daemon's layout) or [`Delegator::serve`] one listener.
pub struct Delegator {
    shared: Arc<proxy::Shared>,
}

impl std::fmt::Debug for Delegator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delegator")
            .field("domain", &self.shared.cfg.domain)
            .finish_non_exhaustive()
    }
}

impl Delegator {
    /// Validates the configuration and prepares the upstream connection pool (with no token
    /// revoked: see [`Delegator::with_revocations`]).
    pub fn new(registry: Registry, cfg: DelegatorConfig) -> Result<Self, DelegatorError> {
        Self::with_revocations(registry, Revocations::default(), cfg)
    }

    /// Like [`Delegator::new`], refusing the token ids `revocations` lists (read on every
    /// request; the orchestrator writes it).
    pub fn with_revocations(
        registry: Registry,
        revocations: Revocations,
        mut cfg: DelegatorConfig,
    ) -> Result<Self, DelegatorError> {
        cfg.domain = route::normalise_domain(&cfg.domain)
            .ok_or_else(|| DelegatorError::BadDomain(cfg.domain.chars().take(64).collect()))?;
        if cfg.connect_timeout.is_zero() {
            return Err(DelegatorError::BadSetting(
                "connect_timeout must be above zero",
            ));
        }
        if cfg.request_timeout.is_some_and(|t| t.is_zero()) {
            return Err(DelegatorError::BadSetting(
                "request_timeout must be above zero",
            ));
        }
        if cfg.gateway_timeout.is_some_and(|t| t.is_zero()) {
            return Err(DelegatorError::BadSetting(
                "gateway_timeout must be above zero",
            ));
        }
        if cfg.max_connections == 0 || cfg.max_connections_per_client == 0 {
            return Err(DelegatorError::BadSetting(
                "max_connections and max_connections_per_client must be above zero",
            ));
        }
        let bad_rate = |r: &Option<proxy::Rate>| {
            r.is_some_and(|r| !(r.per_second.is_finite() && r.per_second > 0.0) || r.burst == 0)
        };
        if bad_rate(&cfg.limits.rate_per_client) || bad_rate(&cfg.limits.rate_per_user) {
            return Err(DelegatorError::BadSetting(
                "a request rate must be above zero with a burst of at least 1",
            ));
        }
        if cfg.header_read_timeout.is_zero() {
            return Err(DelegatorError::BadSetting(
                "header_read_timeout must be above zero",
            ));
        }
        let verifier = cfg.jwt.verifier()?;
        let limits = proxy::Limits::new(cfg.limits);
        Ok(Self {
            shared: Arc::new(proxy::Shared {
                registry,
                revocations,
                client: proxy::upstream_pool(&cfg),
                cfg,
                verifier,
                round_robin: Arc::new(AtomicUsize::new(0)),
                quota: Arc::default(),
                limits: Arc::new(limits),
                pin_sink: Arc::default(),
                pin_service: Arc::default(),
            }),
        })
    }

    /// Reports the CIDs that writes through the delegator pin or unpin to `sink` (the
    /// orchestrator's pinset). Set once; a second call is ignored.
    /// Called within a runtime, the sink is called on that runtime, whichever thread serves.
    pub fn set_pin_sink(&self, sink: Arc<dyn crate::pinsink::PinSink>) {
        let _ = self.shared.pin_sink.set(homed::sink(sink));
    }

    /// Serves the Pinning Service API (`<net>.pins.<domain>`) on `service` (the orchestrator's
    /// pinset). Set once; a second call is ignored. Until set, the API answers 503.
    /// Called within a runtime, its operations run on that runtime, whichever thread serves.
    pub fn set_pin_service(&self, service: Arc<dyn crate::pinsink::PinService>) {
        let _ = self.shared.pin_service.set(homed::service(service));
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::*;
    use super::*;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    #[test]
    fn config_is_validated() {
        let reg = Registry::new();
        assert!(matches!(
            Delegator::new(reg.clone(), DelegatorConfig::new("bad domain", jwt())),
            Err(DelegatorError::BadDomain(_))
        ));
        let mut c = DelegatorConfig::new("Nexus.Example.", jwt());
        c.request_timeout = Some(Duration::ZERO);
        assert!(matches!(
            Delegator::new(reg.clone(), c),
            Err(DelegatorError::BadSetting(_))
        ));
        let mut c = DelegatorConfig::new("Nexus.Example.", jwt());
        c.jwt.key = JwtKey::Hs256(b"short".to_vec());
        assert!(matches!(
            Delegator::new(reg.clone(), c),
            Err(DelegatorError::Jwt(_))
        ));
        let d = Delegator::new(reg, DelegatorConfig::new("Nexus.Example.", jwt())).unwrap();
        assert_eq!(d.shared.cfg.domain, "nexus.example");
    }

    /// Observation 7: a client over its rate gets 429 with `Retry-After`; others do not.
    #[tokio::test]
    async fn a_client_over_its_rate_gets_429_with_retry_after() {
        let (up, _seen) = recording_upstream().await;
        let mut cfg = DelegatorConfig::new("nexus.test", jwt());
        cfg.limits.rate_per_client = Some(Rate {
            per_second: 0.5,
            burst: 2,
        });
        let addr = delegator_with(up, cfg).await;
        let req =
            "GET /ipfs/x HTTP/1.1\r\nHost: obs.gateway.nexus.test\r\nConnection: close\r\n\r\n";
        for _ in 0..2 {
            assert!(raw(addr, req).await.starts_with("HTTP/1.1 200"));
        }
        let refused = raw(addr, req).await.to_ascii_lowercase();
        assert!(refused.starts_with("http/1.1 429"), "{refused}");
        assert!(refused.contains("\r\nretry-after: 2\r\n"), "{refused}");
        assert!(refused.contains("too many requests"), "{refused}");
        // Another client address has its own bucket.
        let other = raw_from("127.0.0.2", addr, req).await;
        assert!(other.starts_with("HTTP/1.1 200"), "{other}");
    }

    /// Observation 7: an unknown CID holds a gateway client for the gateway timeout, not kubo's.
    #[tokio::test]
    async fn a_slow_gateway_answer_is_cut_at_the_first_byte_timeout() {
        let (up, _seen) = recording_upstream().await;
        let mut cfg = DelegatorConfig::new("nexus.test", jwt());
        cfg.gateway_timeout = Some(Duration::from_millis(300));
        let addr = delegator_with(up, cfg).await;
        let start = std::time::Instant::now();
        let answer = raw(
            addr,
            "GET /ipfs/slow HTTP/1.1\r\nHost: obs.gateway.nexus.test\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
        assert!(start.elapsed() < Duration::from_secs(3));
    }

    /// Observation 4: a request that names two hosts is a JSON 400 and reaches no node.
    #[tokio::test]
    async fn ambiguous_hosts_are_refused_with_400() {
        use http_body_util::{BodyExt, Empty};
        let (up, seen) = recording_upstream().await;
        let addr = delegator_in_front_of(up).await;
        for (what, req) in [
            (
                "absolute-form target naming another host",
                "GET http://other.gateway.nexus.test/ipfs/x HTTP/1.1\r\nHost: obs.gateway.nexus.test\r\nConnection: close\r\n\r\n",
            ),
            (
                "two Host headers",
                "GET /ipfs/x HTTP/1.1\r\nHost: obs.gateway.nexus.test\r\nHost: other.gateway.nexus.test\r\nConnection: close\r\n\r\n",
            ),
            (
                "two identical Host headers",
                "GET /ipfs/x HTTP/1.1\r\nHost: obs.gateway.nexus.test\r\nHost: obs.gateway.nexus.test\r\nConnection: close\r\n\r\n",
            ),
        ] {
            let answer = raw(addr, req).await;
            assert!(answer.starts_with("HTTP/1.1 400"), "{what}: {answer}");
            assert!(answer.contains("application/json"), "{what}: {answer}");
            assert!(answer.contains("ambiguous request"), "{what}: {answer}");
        }
        assert!(
            seen.lock().unwrap().is_empty(),
            "an ambiguous request was forwarded"
        );
        // The same target as Host (any case) is fine.
        let answer = raw(
            addr,
            "GET http://OBS.gateway.nexus.test/ipfs/x HTTP/1.1\r\nHost: obs.gateway.nexus.test\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

        // HTTP/2 (prior knowledge): `:authority` and `host` must agree.
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = |host: Option<&str>| {
            let mut b = hyper::Request::get("http://obs.gateway.nexus.test/ipfs/x");
            if let Some(h) = host {
                b = b.header("host", h);
            }
            b.body(Empty::<bytes::Bytes>::new()).unwrap()
        };
        let resp = send
            .send_request(req(Some("other.gateway.nexus.test")))
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v["error"].as_str().unwrap().contains(":authority"), "{v}");
        let before = seen.lock().unwrap().len();
        assert_eq!(
            before, 1,
            "only the unambiguous HTTP/1.1 request was forwarded"
        );
        let resp = send.send_request(req(None)).await.unwrap();
        assert_eq!(resp.status(), 200);
        let resp = send
            .send_request(req(Some("obs.gateway.nexus.test")))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }

    /// Observation 5: the node sees its own `Host` and no host a client chose.
    #[tokio::test]
    async fn the_node_never_sees_the_clients_host() {
        let (up, seen) = recording_upstream().await;
        let addr = delegator_in_front_of(up).await;
        let answer = raw(
            addr,
            "GET /network/obs/gateway/ipfs/x HTTP/1.1\r\nHost: nexus.test\r\nX-Forwarded-Host: x.ipfs.localhost\r\nForwarded: host=x.ipfs.localhost\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let seen = seen.lock().unwrap();
        let h = &seen[0];
        assert_eq!(h["host"], up.to_string());
        assert!(!h.contains_key("x-forwarded-host"), "{h:?}");
        assert!(!h.contains_key("forwarded"), "{h:?}");
    }

    /// Observation 6: what the path form serves on the shared origin is sandboxed; the host
    /// form (each network's own origin) is not.
    #[tokio::test]
    async fn the_shared_origin_is_sandboxed() {
        let (up, _seen) = recording_upstream().await;
        let addr = delegator_in_front_of(up).await;
        let path_form = raw(
            addr,
            "GET /network/obs/gateway/ipfs/x HTTP/1.1\r\nHost: nexus.test\r\nConnection: close\r\n\r\n",
        )
        .await
        .to_ascii_lowercase();
        assert!(path_form.starts_with("http/1.1 200"), "{path_form}");
        assert!(
            path_form.contains("\r\ncontent-security-policy: sandbox\r\n"),
            "{path_form}"
        );
        assert!(
            path_form.contains("\r\nx-content-type-options: nosniff\r\n"),
            "{path_form}"
        );
        // Refusals on the shared origin too.
        let refused = raw(
            addr,
            "GET /network/obs/gateway/nope HTTP/1.1\r\nHost: nexus.test\r\nConnection: close\r\n\r\n",
        )
        .await
        .to_ascii_lowercase();
        assert!(
            refused.contains("content-security-policy: sandbox"),
            "{refused}"
        );
        let host_form = raw(
            addr,
            "GET /ipfs/x HTTP/1.1\r\nHost: obs.gateway.nexus.test\r\nConnection: close\r\n\r\n",
        )
        .await
        .to_ascii_lowercase();
        assert!(host_form.starts_with("http/1.1 200"), "{host_form}");
        assert!(
            !host_form.contains("content-security-policy"),
            "{host_form}"
        );
    }
}
