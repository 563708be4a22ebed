//! What the delegator's own tests stand on: an upstream that records what reaches it, a one-node
//! registry, a delegator in front of it, and raw HTTP/1.1 exchanges from chosen addresses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::{Delegator, DelegatorConfig, JwtConfig};
use crate::orchestrator::registry::Registry;

/// An HS256 configuration with a fixed 32-byte secret.
pub(super) fn jwt() -> JwtConfig {
    JwtConfig::hs256(vec![1u8; 32]).unwrap()
}

/// An upstream that records every request's headers and answers a small HTML page.
pub(super) async fn recording_upstream(
) -> (SocketAddr, Arc<std::sync::Mutex<Vec<hyper::HeaderMap>>>) {
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
pub(super) async fn delegator_in_front_of(up: SocketAddr) -> SocketAddr {
    delegator_with(up, DelegatorConfig::new("nexus.test", jwt())).await
}

/// A registry with one network, `name`, whose gateway is public and whose one node's API
/// and gateway are both `up`: the fixture every test here stands on.
pub(super) fn one_node_registry(name: &str, up: SocketAddr) -> Registry {
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
pub(super) async fn delegator_with(up: SocketAddr, cfg: DelegatorConfig) -> SocketAddr {
    let d = Delegator::new(one_node_registry("obs", up), cfg).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(d.serve(listener, None, std::future::pending()));
    addr
}

/// [`raw`] from a chosen local address (another client).
pub(super) async fn raw_from(local: &str, addr: SocketAddr, raw: &str) -> String {
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
pub(super) async fn raw(addr: SocketAddr, raw: &str) -> String {
    raw_within(addr, raw, Duration::from_secs(5)).await
}

/// [`raw`], waiting up to `wait` for the whole answer.
pub(super) async fn raw_within(addr: SocketAddr, raw: &str, wait: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(wait, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits up to `wait` for a serving task to return `Ok`, then checks that `addr` accepts no
/// connection any more.
pub(super) async fn assert_stopped(
    server: tokio::task::JoinHandle<Result<(), super::DelegatorError>>,
    addr: SocketAddr,
    wait: Duration,
) {
    tokio::time::timeout(wait, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting"
    );
}
