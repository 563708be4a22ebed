//! A small client for the parts of kubo's RPC API the runtime itself needs.
//!
//! Owns HTTP calls to one node's RPC API (`POST /api/v0/...`): `id` for readiness,
//! `swarm/peers` for stats, `swarm/connect` to mesh a network's new nodes at once, and for the
//! orchestrator's pinset `pin/add`, `pin/ls` (recursive), `pin/rm` and `repo/stat` (size only);
//! and kubo's own process figures from its Prometheus endpoint (`GET /debug/metrics/prometheus`,
//! read up to a bound and parsed by [`super::kubo_metrics`]) for runtimes that cannot ask the
//! container engine. CIDs reach it parsed ([`crate::cid::Cid`]). It must not be a general kubo
//! client nor proxy user traffic (that is the delegator's job).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper::Method;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use super::endpoint::{Connector, Endpoint};
use super::kubo_metrics::{self, MetricsError, ProcessMetrics, MAX_METRICS_BYTES};

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("request failed: {0}")]
    Http(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("answered with unexpected JSON: {0}")]
    Json(String),
    #[error("answered more than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("answered with unexpected metrics: {0}")]
    Metrics(#[from] MetricsError),
}

/// `POST /api/v0/id`.
#[derive(Debug, Deserialize)]
pub struct IdResponse {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "AgentVersion", default)]
    pub agent_version: String,
}

#[derive(Debug, Deserialize)]
struct PeersResponse {
    #[serde(rename = "Peers", default)]
    peers: Option<Vec<PeerEntry>>,
}

/// One entry of `swarm/peers`.
#[derive(Debug, Deserialize)]
pub struct PeerEntry {
    #[serde(rename = "Peer")]
    pub peer: String,
    #[serde(rename = "Addr", default)]
    pub addr: String,
}

/// Client for kubo RPC APIs reachable over plain HTTP (a unix socket or TCP).
#[derive(Clone)]
pub struct KuboRpc {
    client: Client<Connector, Empty<Bytes>>,
    timeout: Duration,
}

impl KuboRpc {
    pub fn new(timeout: Duration) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build(Connector::new(timeout)),
            timeout,
        }
    }

    async fn post(&self, addr: &Endpoint, path_and_query: &str) -> Result<Bytes, RpcError> {
        self.call(
            Method::POST,
            addr.uri(&format!("/api/v0/{path_and_query}")),
            None,
        )
        .await
    }

    /// One request without a body; the answer's body, read whole (at most `limit` bytes when
    /// given), if the status is a success.
    async fn call(
        &self,
        method: Method,
        uri: String,
        limit: Option<usize>,
    ) -> Result<Bytes, RpcError> {
        let req = hyper::Request::builder()
            .method(method)
            .uri(uri)
            .body(Empty::<Bytes>::new())
            .map_err(|e| RpcError::Http(e.to_string()))?;
        let fut = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| RpcError::Http(e.to_string()))?;
            let status = resp.status();
            let body = match limit {
                None => resp
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| RpcError::Http(e.to_string()))?
                    .to_bytes(),
                Some(limit) => Limited::new(resp.into_body(), limit)
                    .collect()
                    .await
                    .map_err(|e| {
                        if e.is::<LengthLimitError>() {
                            RpcError::TooLarge { limit }
                        } else {
                            RpcError::Http(e.to_string())
                        }
                    })?
                    .to_bytes(),
            };
            if !status.is_success() {
                return Err(RpcError::Status {
                    status: status.as_u16(),
                    body: String::from_utf8_lossy(&body).chars().take(300).collect(),
                });
            }
            Ok(body)
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| RpcError::Timeout(self.timeout))?
    }

    pub async fn id(&self, addr: &Endpoint) -> Result<IdResponse, RpcError> {
        let body = self.post(addr, "id").await?;
        serde_json::from_slice(&body).map_err(|e| RpcError::Json(e.to_string()))
    }

    /// Distinct connected peer ids, sorted. `swarm/peers` lists connections, and two nodes
    /// that dial each other at once have two.
    pub async fn peer_ids(&self, addr: &Endpoint) -> Result<Vec<String>, RpcError> {
        let mut ids: Vec<String> = self
            .swarm_peers(addr)
            .await?
            .into_iter()
            .map(|c| c.peer)
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// `swarm/connect` to one peer (`<multiaddr>/p2p/<id>`), which must already be validated.
    pub async fn swarm_connect(&self, addr: &Endpoint, peer: &str) -> Result<(), RpcError> {
        self.post(addr, &format!("swarm/connect?arg={peer}"))
            .await
            .map(|_| ())
    }

    /// `pin/add` of one CID (recursive): returns once the node holds it all.
    pub async fn pin_add(&self, addr: &Endpoint, cid: &crate::cid::Cid) -> Result<(), RpcError> {
        self.post(addr, &format!("pin/add?arg={cid}&recursive=true"))
            .await
            .map(|_| ())
    }

    /// The CIDs the node pins recursively (`pin/ls?type=recursive`).
    pub async fn pins(
        &self,
        addr: &Endpoint,
    ) -> Result<std::collections::HashSet<String>, RpcError> {
        #[derive(Deserialize)]
        struct Keys {
            #[serde(rename = "Keys", default)]
            keys: Option<std::collections::HashMap<String, serde_json::Value>>,
        }
        let body = self.post(addr, "pin/ls?type=recursive").await?;
        let parsed: Keys =
            serde_json::from_slice(&body).map_err(|e| RpcError::Json(e.to_string()))?;
        Ok(parsed.keys.unwrap_or_default().into_keys().collect())
    }

    /// `pin/rm` of one CID; a CID the node does not pin is not an error.
    pub async fn pin_rm(&self, addr: &Endpoint, cid: &crate::cid::Cid) -> Result<(), RpcError> {
        match self.post(addr, &format!("pin/rm?arg={cid}")).await {
            Ok(_) => Ok(()),
            Err(RpcError::Status { body, .. }) if body.contains("not pinned") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The size of the node's repo in bytes (`repo/stat?size-only=true`).
    pub async fn repo_size(&self, addr: &Endpoint) -> Result<u64, RpcError> {
        #[derive(Deserialize)]
        struct Stat {
            #[serde(rename = "RepoSize", default)]
            repo_size: u64,
        }
        let body = self.post(addr, "repo/stat?size-only=true").await?;
        let parsed: Stat =
            serde_json::from_slice(&body).map_err(|e| RpcError::Json(e.to_string()))?;
        Ok(parsed.repo_size)
    }

    /// kubo's process figures (CPU time, resident memory, start time) from its Prometheus
    /// endpoint on the RPC API listener (`GET`, as Prometheus scrapes; at most
    /// [`MAX_METRICS_BYTES`] read).
    pub async fn process_metrics(&self, addr: &Endpoint) -> Result<ProcessMetrics, RpcError> {
        let body = self
            .call(
                Method::GET,
                addr.uri(kubo_metrics::METRICS_PATH),
                Some(MAX_METRICS_BYTES),
            )
            .await?;
        let text = std::str::from_utf8(&body).map_err(|e| MetricsError::Malformed {
            line: 0,
            what: format!("not UTF-8: {e}"),
        })?;
        Ok(kubo_metrics::parse_process_metrics(text)?)
    }

    pub async fn swarm_peers(&self, addr: &Endpoint) -> Result<Vec<PeerEntry>, RpcError> {
        let body = self.post(addr, "swarm/peers").await?;
        let parsed: PeersResponse =
            serde_json::from_slice(&body).map_err(|e| RpcError::Json(e.to_string()))?;
        Ok(parsed.peers.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-answer-per-connection HTTP server on loopback: every request gets `status`,
    /// `body`; the request lines it saw are sent back on the channel.
    async fn serve(
        status: &'static str,
        body: String,
    ) -> (Endpoint, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let first = String::from_utf8_lossy(&head)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let _ = tx.send(first);
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
        (Endpoint::Tcp(addr), rx)
    }

    const PAGE: &str = "# HELP go_info Information about the Go environment.\n\
        # TYPE go_info gauge\n\
        go_info{version=\"go1.25.1\"} 1\n\
        # HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n\
        # TYPE process_cpu_seconds_total counter\n\
        process_cpu_seconds_total 0.85\n\
        # HELP process_resident_memory_bytes Resident memory size in bytes.\n\
        # TYPE process_resident_memory_bytes gauge\n\
        process_resident_memory_bytes 5.2592640e+07\n\
        # HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n\
        # TYPE process_start_time_seconds gauge\n\
        process_start_time_seconds 1.76481092354e+09\n";

    #[tokio::test]
    async fn process_metrics_are_read_with_a_get_on_kubos_path() {
        let (ep, mut seen) = serve("200 OK", PAGE.to_string()).await;
        let m = KuboRpc::new(Duration::from_secs(5))
            .process_metrics(&ep)
            .await
            .expect("figures");
        assert_eq!(m.cpu_seconds, 0.85);
        assert_eq!(m.resident_bytes, 52_592_640);
        assert_eq!(m.start_time, 1_764_810_923.54);
        assert_eq!(
            seen.recv().await.as_deref(),
            Some("GET /debug/metrics/prometheus HTTP/1.1")
        );
    }

    #[tokio::test]
    async fn a_node_without_metrics_or_with_too_much_is_an_error() {
        let rpc = KuboRpc::new(Duration::from_secs(5));
        let (ep, _seen) = serve("404 Not Found", "404 page not found\n".into()).await;
        assert!(matches!(
            rpc.process_metrics(&ep).await,
            Err(RpcError::Status { status: 404, .. })
        ));
        let huge = format!("{PAGE}{}", "# padding\n".repeat(MAX_METRICS_BYTES / 10 + 1));
        let (ep, _seen) = serve("200 OK", huge).await;
        assert!(matches!(
            rpc.process_metrics(&ep).await,
            Err(RpcError::TooLarge { .. })
        ));
        let (ep, _seen) = serve("200 OK", "process_cpu_seconds_total 1\n".into()).await;
        assert!(matches!(
            rpc.process_metrics(&ep).await,
            Err(RpcError::Metrics(MetricsError::Missing { .. }))
        ));
    }
}
