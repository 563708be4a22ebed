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
//!
//! This module owns the listener, connections (HTTP/1.1 and HTTP/2, optional TLS), the upstream
//! connection pool and graceful shutdown. It reads the orchestrator's
//! [`Registry`](crate::orchestrator::registry::Registry) on every request and caches no
//! routing, so it never sends a request to a node the registry no longer lists for that network.
//! It must not write the registry or the store (pin changes go through the leaf traits of
//! `crate::pinsink`), start or stop nodes, buffer whole bodies (but the Pinning Service API's
//! small JSON ones, bounded), or log tokens, secrets or query strings.

pub mod auth;
pub mod mint;
pub mod net;
pub mod pinsvc;
pub mod policy;
mod proxy;
pub mod route;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

pub use auth::{AuthError, Identity, JwtConfig, JwtConfigError, JwtKey, PublicKeyAlg, Verifier};
pub use mint::{mint, mint_token, Minted, TokenRequest};
pub use net::{BadIpNet, IpNet};
pub use proxy::{LimitConfig, Rate};
pub use route::{Feature, Route, RouteError};

use crate::node::endpoint::Connector;
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
}

/// The delegator: build it with [`Delegator::new`], then [`Delegator::serve`] a listener.
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
        let cfg_limits = cfg.limits;
        let connector = Connector::new(cfg.connect_timeout);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(cfg.idle_timeout)
            .pool_max_idle_per_host(cfg.max_idle_per_node)
            .build(connector);
        Ok(Self {
            shared: Arc::new(proxy::Shared {
                registry,
                revocations,
                cfg,
                verifier,
                client,
                round_robin: AtomicUsize::new(0),
                quota: proxy::Quotas::default(),
                limits: proxy::Limits::new(cfg_limits),
                pin_sink: std::sync::OnceLock::new(),
                pin_service: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Reports the CIDs that writes through the delegator pin or unpin to `sink` (the
    /// orchestrator's pinset). Set once; a second call is ignored.
    pub fn set_pin_sink(&self, sink: Arc<dyn crate::pinsink::PinSink>) {
        let _ = self.shared.pin_sink.set(sink);
    }

    /// Serves the Pinning Service API (`<net>.pins.<domain>`) on `service` (the orchestrator's
    /// pinset). Set once; a second call is ignored. Until set, the API answers 503.
    pub fn set_pin_service(&self, service: Arc<dyn crate::pinsink::PinService>) {
        let _ = self.shared.pin_service.set(service);
    }

    /// Serves connections from `listener` (TLS when `tls` is given) until `shutdown` resolves,
    /// then stops accepting, lets in-flight requests finish (up to `shutdown_grace`) and
    /// returns. Fails only when the listener itself fails.
    pub async fn serve(
        self,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), DelegatorError> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut conns = JoinSet::new();
        let slots = Arc::new(tokio::sync::Semaphore::new(self.shared.cfg.max_connections));
        let per_client: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>> =
            Arc::default();
        tokio::pin!(shutdown);
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, tls = tls.is_some(), domain = %self.shared.cfg.domain, "delegator listening");
        }
        let result = loop {
            tokio::select! {
                _ = &mut shutdown => break Ok(()),
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                // At the global cap, nothing is accepted until a connection ends.
                permit = slots.clone().acquire_owned() => {
                    let Ok(permit) = permit else { break Ok(()) };
                    let accepted = tokio::select! {
                        _ = &mut shutdown => break Ok(()),
                        a = listener.accept() => a,
                    };
                    match accepted {
                    Ok((stream, peer)) => {
                        // A trusted proxy carries many clients: only the global cap applies to it.
                        let cap = if proxy::is_trusted_peer(&self.shared.cfg, peer.ip()) {
                            usize::MAX
                        } else {
                            self.shared.cfg.max_connections_per_client
                        };
                        let Some(guard) = ClientConn::open(&per_client, peer.ip(), cap) else {
                            metrics::counter!(crate::telemetry::names::DELEGATOR_REFUSALS, "network" => "-", "reason" => "connections").increment(1);
                            tracing::debug!(%peer, "connection refused: too many from this address");
                            drop(stream);
                            continue;
                        };
                        let shared = self.shared.clone();
                        let tls = tls.clone();
                        let stop = stop_rx.clone();
                        conns.spawn(async move {
                            connection(shared, stream, peer, tls, stop).await;
                            drop((guard, permit));
                        });
                    }
                    Err(e) if transient_accept_error(&e) => {
                        tracing::warn!(error = %e, "accept failed; continuing");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => break Err(DelegatorError::Accept(e)),
                    }
                },
            }
        };
        drop(listener);
        let _ = stop_tx.send(true);
        let grace = self.shared.cfg.shutdown_grace;
        let drained =
            tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(
                remaining = conns.len(),
                "shutdown grace over; dropping connections"
            );
            conns.abort_all();
        }
        tracing::info!("delegator stopped");
        result
    }
}

/// One open connection of a client address, counted until dropped.
struct ClientConn {
    map: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    ip: std::net::IpAddr,
}

impl ClientConn {
    /// Counts a connection of `ip`, or `None` when it already has `max` open.
    fn open(
        map: &Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
        ip: std::net::IpAddr,
        max: usize,
    ) -> Option<Self> {
        let mut m = crate::sync::lock(map);
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Self {
            map: map.clone(),
            ip,
        })
    }
}

impl Drop for ClientConn {
    fn drop(&mut self) {
        let mut m = crate::sync::lock(&self.map);
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

fn transient_accept_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::ConnectionAborted | K::ConnectionReset | K::Interrupted | K::WouldBlock
    ) || e.raw_os_error().is_some_and(|c| c == 24 || c == 23) // EMFILE, ENFILE
}

/// One client connection: optional TLS, then HTTP/1.1 or HTTP/2; on shutdown, a graceful close
/// after the requests in flight.
async fn connection(
    shared: Arc<proxy::Shared>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let header_timeout = shared.cfg.header_read_timeout;
    match tls {
        None => serve_io(shared, TokioIo::new(stream), peer, false, stop).await,
        Some(acceptor) => {
            match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                Ok(Ok(s)) => serve_io(shared, TokioIo::new(s), peer, true, stop).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

async fn serve_io<I>(
    shared: Arc<proxy::Shared>,
    io: I,
    peer: SocketAddr,
    tls: bool,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let info = proxy::ConnInfo::new(peer, tls);
    let header_timeout = shared.cfg.header_read_timeout;
    let svc = hyper::service::service_fn(move |req| proxy::handle(shared.clone(), info, req));
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            return;
        }
        _ = stop.wait_for(|s| *s) => {}
    }
    conn.as_mut().graceful_shutdown();
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "connection ended with an error during shutdown");
    }
}

/// Builds a TLS acceptor (HTTP/2 and HTTP/1.1 by ALPN) from a PEM certificate chain and a PEM
/// private key (PKCS#8, PKCS#1 or SEC1).
pub fn tls_acceptor_from_pem_files(
    cert_path: &Path,
    key_path: &Path,
) -> Result<TlsAcceptor, DelegatorError> {
    let read = |what: &'static str, p: &Path| {
        std::fs::read(p).map_err(|e| DelegatorError::TlsFile {
            what,
            path: p.display().to_string(),
            reason: e.to_string(),
        })
    };
    let cert = read("certificate", cert_path)?;
    let key = read("private key", key_path)?;
    tls_acceptor_from_pem(&cert, &key)
}

/// Like [`tls_acceptor_from_pem_files`], from PEM bytes.
pub fn tls_acceptor_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<TlsAcceptor, DelegatorError> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| DelegatorError::Tls(format!("certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(DelegatorError::Tls("no certificate in the PEM".into()));
    }
    // The key's parse error is not quoted: it could echo key bytes.
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|_| DelegatorError::Tls("no usable private key in the key PEM".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DelegatorError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| DelegatorError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt() -> JwtConfig {
        JwtConfig::hs256(vec![1u8; 32]).unwrap()
    }

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

    #[test]
    fn tls_from_rcgen_pem() {
        let ck = rcgen::generate_simple_self_signed(vec!["nexus.test".into()]).unwrap();
        let cert = ck.cert.pem();
        let key = ck.signing_key.serialize_pem();
        assert!(tls_acceptor_from_pem(cert.as_bytes(), key.as_bytes()).is_ok());
        assert!(tls_acceptor_from_pem(b"", key.as_bytes()).is_err());
        let Err(err) = tls_acceptor_from_pem(cert.as_bytes(), b"junk") else {
            panic!("a junk key was accepted");
        };
        assert!(!err.to_string().contains("junk"));
    }

    /// Over TLS (HTTP/1.1 by ALPN), an unknown host gets a JSON 404 with a request id; then
    /// shutdown waits for a slow in-flight request before `serve` returns.
    #[tokio::test]
    async fn serves_tls_and_shuts_down_gracefully() {
        use http_body_util::{BodyExt, Empty};
        use tokio_rustls::rustls;

        let ck = rcgen::generate_simple_self_signed(vec!["nexus.test".into()]).unwrap();
        let acceptor = tls_acceptor_from_pem(
            ck.cert.pem().as_bytes(),
            ck.signing_key.serialize_pem().as_bytes(),
        )
        .unwrap();
        // A node that answers slowly: the in-flight request during shutdown.
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up_addr = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = upstream.accept().await {
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"slow")),
                        ))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        let reg = one_node_registry("tls", up_addr);
        let d = Delegator::new(reg, DelegatorConfig::new("nexus.test", jwt())).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(d.serve(listener, Some(acceptor), async move {
            let _ = stop_rx.await;
        }));

        let mut roots = rustls::RootCertStore::empty();
        roots.add(ck.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cc = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cc.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cc));
        let connect = || async {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let sn = rustls::pki_types::ServerName::try_from("nexus.test").unwrap();
            let tls = connector.connect(sn, tcp).await.unwrap();
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .unwrap();
            tokio::spawn(conn);
            send
        };
        let get = |host: &str, path: &str| {
            hyper::Request::get(path)
                .header("host", host)
                .body(Empty::<bytes::Bytes>::new())
                .unwrap()
        };
        let mut send = connect().await;
        let resp = send.send_request(get("evil.example", "/")).await.unwrap();
        assert_eq!(resp.status(), 404);
        assert!(resp.headers().contains_key("x-request-id"));
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v["error"].as_str().unwrap().contains("unknown host"));

        // Start a slow request, then shut down while it is in flight.
        let mut send2 = connect().await;
        let inflight = tokio::spawn(async move {
            let resp = send2
                .send_request(get("tls.gateway.nexus.test", "/ipfs/x"))
                .await
                .unwrap();
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, body)
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop_tx.send(()).unwrap();
        let (status, body) = inflight.await.unwrap();
        assert_eq!((status.as_u16(), body.as_ref()), (200, b"slow".as_ref()));
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "still accepting"
        );
    }

    /// An upstream that records every request's headers and answers a small HTML page.
    async fn recording_upstream() -> (SocketAddr, Arc<std::sync::Mutex<Vec<hyper::HeaderMap>>>) {
        let seen: Arc<std::sync::Mutex<Vec<hyper::HeaderMap>>> = Arc::default();
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = upstream.local_addr().unwrap();
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = upstream.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                        log.lock().unwrap().push(req.headers().clone());
                        let slow = req.uri().path().contains("slow");
                        async move {
                            if slow {
                                tokio::time::sleep(Duration::from_secs(5)).await;
                            }
                            let mut r = hyper::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from_static(b"<script>alert(1)</script>"),
                            ));
                            r.headers_mut()
                                .insert("content-type", "text/html".parse().unwrap());
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        (addr, seen)
    }

    /// A delegator for `nexus.test` in front of `up` as network `obs` (public gateway).
    async fn delegator_in_front_of(up: SocketAddr) -> SocketAddr {
        delegator_with(up, DelegatorConfig::new("nexus.test", jwt())).await
    }

    /// A registry with one network, `name`, whose gateway is public and whose one node's API
    /// and gateway are both `up`: the fixture every test here stands on.
    fn one_node_registry(name: &str, up: SocketAddr) -> Registry {
        use crate::node::endpoint::Endpoint;
        use crate::orchestrator::registry::{NetworkEntry, ReadyNode};
        let reg = Registry::new();
        reg.publish(NetworkEntry {
            name: crate::node::NetworkName::new(name).unwrap(),
            disk_bytes: None,
            access: crate::access::Access {
                gateway_public: true,
                ..Default::default()
            },
            nodes: vec![ReadyNode {
                index: 0,
                peer_id: "p".into(),
                api: Endpoint::Tcp(up),
                gateway: Endpoint::Tcp(up),
            }],
        });
        reg
    }

    /// Like [`delegator_in_front_of`], with `cfg`.
    async fn delegator_with(up: SocketAddr, cfg: DelegatorConfig) -> SocketAddr {
        let d = Delegator::new(one_node_registry("obs", up), cfg).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(d.serve(listener, None, std::future::pending()));
        addr
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

    /// Observation 7, slowloris: one address opening many connections and trickling headers
    /// gets at most its per-address share, each dropped at the header timeout, and the
    /// delegator keeps serving another client meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slowloris_client_does_not_starve_others() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (up, _seen) = recording_upstream().await;
        let mut cfg = DelegatorConfig::new("nexus.test", jwt());
        cfg.header_read_timeout = Duration::from_secs(1);
        cfg.max_connections = 64;
        cfg.max_connections_per_client = 16;
        let addr = delegator_with(up, cfg).await;
        let mut held = Vec::new();
        for _ in 0..200 {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            let Ok(mut s) = sock.connect(addr).await else {
                continue;
            };
            let _ = s.write_all(b"GET /ipfs/x HTTP/1.1\r\nHost: obs.gat").await;
            held.push(s);
        }
        // Another client is served at once.
        let start = std::time::Instant::now();
        let ok = raw(
            addr,
            "GET /ipfs/x HTTP/1.1\r\nHost: obs.gateway.nexus.test\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(
            start.elapsed() < Duration::from_millis(900),
            "{:?}",
            start.elapsed()
        );
        // The attacker's connections are all closed within the header timeout (beyond its
        // share at once; the rest when the timeout fires).
        let mut closed = 0;
        for s in &mut held {
            let mut buf = [0u8; 256];
            match tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await {
                Ok(Ok(_)) | Ok(Err(_)) => closed += 1,
                Err(_) => {}
            }
        }
        assert_eq!(
            closed,
            held.len(),
            "a slow connection outlived the header timeout"
        );
    }

    /// The per-address connection cap closes an address's extra connections at once, except a
    /// trusted proxy's (it carries many clients).
    #[tokio::test]
    async fn the_per_address_connection_cap_spares_trusted_proxies() {
        let (up, _seen) = recording_upstream().await;
        let mut cfg = DelegatorConfig::new("nexus.test", jwt());
        cfg.max_connections_per_client = 2;
        cfg.trusted_proxies = vec![IpNet::parse("127.0.0.3").unwrap()];
        let addr = delegator_with(up, cfg).await;
        let idle = |local: &'static str| async move {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind(format!("{local}:0").parse().unwrap()).unwrap();
            sock.connect(addr).await.unwrap()
        };
        let req =
            "GET /ipfs/x HTTP/1.1\r\nHost: obs.gateway.nexus.test\r\nConnection: close\r\n\r\n";
        let _held = [idle("127.0.0.4").await, idle("127.0.0.4").await];
        tokio::time::sleep(Duration::from_millis(100)).await;
        let third = raw_from("127.0.0.4", addr, req).await;
        assert!(third.is_empty(), "a third connection was served: {third}");
        let _proxy = [
            idle("127.0.0.3").await,
            idle("127.0.0.3").await,
            idle("127.0.0.3").await,
        ];
        tokio::time::sleep(Duration::from_millis(100)).await;
        let served = raw_from("127.0.0.3", addr, req).await;
        assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    }

    /// [`raw`] from a chosen local address (another client).
    async fn raw_from(local: &str, addr: SocketAddr, raw: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(format!("{local}:0").parse().unwrap()).unwrap();
        let mut s = sock.connect(addr).await.unwrap();
        // A connection closed at once may refuse the write or the read: nothing was served.
        if s.write_all(raw.as_bytes()).await.is_err() {
            return String::new();
        }
        let mut out = Vec::new();
        match tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await {
            Ok(Ok(_)) => String::from_utf8_lossy(&out).into_owned(),
            Ok(Err(_)) => String::new(),
            Err(_) => panic!("no answer in time"),
        }
    }

    /// Writes `raw` on a fresh connection and reads the whole answer.
    async fn raw(addr: SocketAddr, raw: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(raw.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(&out).into_owned()
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
