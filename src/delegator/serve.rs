//! The listening side of the delegator: listeners, serving threads, client connections and
//! graceful shutdown.
//!
//! Owns the accept loop with its connection caps (all connections, and per client address),
//! each connection's protocol (optional TLS, then HTTP/1.1 or HTTP/2), and the daemon's layout:
//! [`Listeners`] bound to one address with `SO_REUSEPORT`, each served by a thread of its own
//! that runs a current-thread runtime ([`Delegator::serve_on`]); the kernel spreads new
//! connections over them. Every thread serves the same delegator: the request limits, the
//! connection caps, the disk use and the verified tokens are shared; only the pool of node
//! connections is the thread's own.
//!
//! Rules: it must not look into requests (that is `proxy`'s), and nothing but the delegator runs
//! on its threads (the pin handles run on the runtime that set them: `homed`). A thread that
//! fails stops the others; shutdown stops every thread's accepting at once, then each waits for
//! its requests in flight for the same `shutdown_grace`.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::{proxy, Delegator, DelegatorConfig, DelegatorError};

/// Connections waiting to be accepted, per listener.
const BACKLOG: u32 = 1024;

/// The listening sockets of the daemon's layout: one per serving thread, all bound to one
/// address with `SO_REUSEPORT`.
#[derive(Debug)]
pub struct Listeners {
    socks: Vec<std::net::TcpListener>,
    addr: SocketAddr,
}

impl Listeners {
    /// Binds `threads` (at least one) listening sockets to `addr`; with port 0 the system picks
    /// one port for all. Fails with `AddrInUse` when anything listens there already, even a
    /// socket of this user with `SO_REUSEPORT` (which would otherwise silently take a share of
    /// the connections). Must be called within a tokio runtime (sockets are made through it).
    pub fn bind(addr: SocketAddr, threads: usize) -> std::io::Result<Self> {
        let socket = || {
            let s = if addr.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }?;
            s.set_reuseaddr(true)?;
            Ok::<_, std::io::Error>(s)
        };
        // A plain socket first: it cannot share the port, so it finds any listener there, and
        // it picks the port when none is given. Nothing is listening on it; the group below
        // replaces it at once.
        let probe = socket()?;
        probe.bind(addr)?;
        let at = probe.local_addr()?;
        drop(probe);
        let mut socks = Vec::with_capacity(threads.max(1));
        for _ in 0..threads.max(1) {
            let s = socket()?;
            s.set_reuseport(true)?;
            s.bind(at)?;
            // Back to a std listener: each thread registers it with its own runtime.
            socks.push(s.listen(BACKLOG)?.into_std()?);
        }
        Ok(Self { socks, addr: at })
    }

    /// The address every listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many listeners (and so serving threads).
    pub fn len(&self) -> usize {
        self.socks.len()
    }

    /// Never true: [`Listeners::bind`] makes at least one.
    pub fn is_empty(&self) -> bool {
        self.socks.is_empty()
    }
}

impl Delegator {
    /// Serves connections from `listener` on the caller's runtime (TLS when `tls` is given)
    /// until `shutdown` resolves, then stops accepting, lets in-flight requests finish (up to
    /// `shutdown_grace`) and returns. Fails only when the listener itself fails.
    pub async fn serve(
        self,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), DelegatorError> {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, tls = tls.is_some(), domain = %self.shared.cfg.domain, "delegator listening");
        }
        let caps = Caps::new(&self.shared.cfg);
        let result = accept_loop(self.shared, listener, tls, caps, shutdown).await;
        tracing::info!("delegator stopped");
        result
    }

    /// The daemon's layout: serves each of `listeners` on a thread of its own, each running a
    /// current-thread runtime with its own pool of node connections, until `shutdown` resolves
    /// or one of them fails; then as [`Delegator::serve`], on every thread at once. Returns
    /// when every thread has ended, with the first failure.
    pub async fn serve_on(
        self,
        listeners: Listeners,
        tls: Option<TlsAcceptor>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), DelegatorError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let caps = Caps::new(&self.shared.cfg);
        tracing::info!(
            addr = %listeners.addr,
            threads = listeners.len(),
            tls = tls.is_some(),
            domain = %self.shared.cfg.domain,
            "delegator listening"
        );
        let mut failed = None;
        for (i, sock) in listeners.socks.into_iter().enumerate() {
            let shared = Arc::new(self.shared.for_thread());
            let (tls, caps, done) = (tls.clone(), caps.clone(), done_tx.clone());
            let mut stop = stop_rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("delegator-{i}"))
                .spawn(move || {
                    let served = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(DelegatorError::Threads)
                        .and_then(|rt| {
                            rt.block_on(async move {
                                let listener =
                                    TcpListener::from_std(sock).map_err(DelegatorError::Accept)?;
                                // Stopped when told, or when `serve_on` itself is dropped.
                                let stopped = async move {
                                    let _ = stop.wait_for(|s| *s).await;
                                };
                                accept_loop(shared, listener, tls, caps, stopped).await
                            })
                        });
                    let _ = done.send(served);
                });
            if let Err(e) = spawned {
                failed = Some(DelegatorError::Threads(e));
                break;
            }
        }
        drop(done_tx);
        if failed.is_none() {
            tokio::pin!(shutdown);
            tokio::select! {
                () = &mut shutdown => {}
                // A thread ends before shutdown only when it failed.
                Some(served) = done_rx.recv() => failed = served.err(),
            }
        }
        let _ = stop_tx.send(true);
        while let Some(served) = done_rx.recv().await {
            if let Err(e) = served {
                failed.get_or_insert(e);
            }
        }
        tracing::info!("delegator stopped");
        failed.map_or(Ok(()), Err)
    }
}

/// The connection caps of one delegator, shared by all its listeners: every connection holds a
/// slot, and each client address has a count.
#[derive(Clone)]
struct Caps {
    slots: Arc<Semaphore>,
    per_client: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Caps {
    fn new(cfg: &DelegatorConfig) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(cfg.max_connections)),
            per_client: Arc::default(),
        }
    }
}

/// Accepts from `listener` within `caps` until `shutdown` resolves (or the listener fails),
/// then drains this loop's connections for up to `shutdown_grace`.
async fn accept_loop(
    shared: Arc<proxy::Shared>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    caps: Caps,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DelegatorError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    let result = loop {
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            // At the global cap, nothing is accepted until a connection ends.
            permit = caps.slots.clone().acquire_owned() => {
                let Ok(permit) = permit else { break Ok(()) };
                let accepted = tokio::select! {
                    _ = &mut shutdown => break Ok(()),
                    a = listener.accept() => a,
                };
                match accepted {
                Ok((stream, peer)) => {
                    // A trusted proxy carries many clients: only the global cap applies to it.
                    let cap = if proxy::is_trusted_peer(&shared.cfg, peer.ip()) {
                        usize::MAX
                    } else {
                        shared.cfg.max_connections_per_client
                    };
                    let Some(guard) = ClientConn::open(&caps.per_client, peer.ip(), cap) else {
                        metrics::counter!(crate::telemetry::names::DELEGATOR_REFUSALS, "network" => "-", "reason" => "connections").increment(1);
                        tracing::debug!(%peer, "connection refused: too many from this address");
                        drop(stream);
                        continue;
                    };
                    let shared = shared.clone();
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
    let grace = shared.cfg.shutdown_grace;
    let drained =
        tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            remaining = conns.len(),
            "shutdown grace over; dropping connections"
        );
        conns.abort_all();
    }
    result
}

/// One open connection of a client address, counted until dropped.
struct ClientConn {
    map: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl ClientConn {
    /// Counts a connection of `ip`, or `None` when it already has `max` open.
    fn open(map: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, max: usize) -> Option<Self> {
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
    stop: watch::Receiver<bool>,
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
    mut stop: watch::Receiver<bool>,
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

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use crate::delegator::{tls_acceptor_from_pem, IpNet};

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
        assert_stopped(server, addr, Duration::from_secs(5)).await;
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

    /// The daemon's layout: three threads on one port share the connection caps and the request
    /// limits (an address over them is refused whichever thread its connection reached), and
    /// shutdown lets a request in flight finish, stops every thread and frees the port.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn threads_share_one_port_the_caps_and_the_limits() {
        let (up, seen) = recording_upstream().await;
        let mut cfg = DelegatorConfig::new("nexus.test", jwt());
        cfg.max_connections_per_client = 2;
        cfg.limits.rate_per_client = Some(crate::delegator::Rate {
            per_second: 0.01,
            burst: 3,
        });
        let d = Delegator::new(one_node_registry("obs", up), cfg).unwrap();
        let listeners = Listeners::bind("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        assert_eq!(listeners.len(), 3);
        let addr = listeners.local_addr();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(d.serve_on(listeners, None, async move {
            let _ = stop_rx.await;
        }));
        let req =
            "GET /ipfs/x HTTP/1.1\r\nHost: obs.gateway.nexus.test\r\nConnection: close\r\n\r\n";

        // The rate: 3 requests of one address pass, over whichever threads; the next 6 do not.
        let mut answers = Vec::new();
        for _ in 0..9 {
            answers.push(raw_from("127.0.0.5", addr, req).await);
        }
        let ok = answers
            .iter()
            .filter(|a| a.starts_with("HTTP/1.1 200"))
            .count();
        let refused = answers
            .iter()
            .filter(|a| a.starts_with("HTTP/1.1 429"))
            .count();
        assert_eq!((ok, refused), (3, 6), "{answers:?}");

        // The per-address cap: two idle connections held, every further one is closed unserved.
        let idle = || async {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind("127.0.0.6:0".parse().unwrap()).unwrap();
            sock.connect(addr).await.unwrap()
        };
        let _held = [idle().await, idle().await];
        tokio::time::sleep(Duration::from_millis(100)).await;
        for i in 0..6 {
            let more = raw_from("127.0.0.6", addr, req).await;
            assert!(
                more.is_empty(),
                "connection {i} past the cap was served: {more}"
            );
        }
        // Another address is served meanwhile.
        assert!(raw_from("127.0.0.7", addr, req)
            .await
            .starts_with("HTTP/1.1 200"));

        // Shutdown with a request in flight: it finishes, then every thread stops.
        let before = seen.lock().unwrap().len();
        // The upstream answers `/slow` after 5 s.
        let inflight = tokio::spawn(raw_within(
            addr,
            "GET /ipfs/slow HTTP/1.1\r\nHost: obs.gateway.nexus.test\r\nConnection: close\r\n\r\n",
            Duration::from_secs(15),
        ));
        while seen.lock().unwrap().len() == before {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop_tx.send(()).unwrap();
        let answer = inflight.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert_stopped(server, addr, Duration::from_secs(10)).await;
    }

    /// A port something already listens on is refused, even when that socket would share it
    /// (`SO_REUSEPORT`, same user): two daemons on one address must not split its traffic.
    #[tokio::test]
    async fn a_port_in_use_is_refused_even_to_a_sharing_socket() {
        let first = Listeners::bind("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let taken = first.local_addr();
        let err = Listeners::bind(taken, 2).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = Listeners::bind(plain.local_addr().unwrap(), 1).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    }

    /// Another local user cannot join the listeners' port with `SO_REUSEPORT` to take a share
    /// of the delegator's connections: the kernel keeps a port's group to one user.
    #[tokio::test]
    async fn another_user_cannot_join_the_listeners_port() {
        let listeners = Listeners::bind("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let port = listeners.local_addr().port();
        let script = format!(
            "import socket\n\
             s = socket.socket()\n\
             s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)\n\
             try:\n    s.bind(('127.0.0.1', {port})); s.listen(); print('joined')\n\
             except OSError as e:\n    print('refused', e.errno)\n"
        );
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(["/usr/bin/python3", "-c", &script])
            .output()
            .expect("setpriv (util-linux) and /usr/bin/python3 run");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(text.trim(), "refused 98", "EADDRINUSE expected");
        drop(listeners);
    }
}
