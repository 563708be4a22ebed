//! A small client for the parts of kubo's RPC API the runtime itself needs.
//!
//! Owns HTTP calls to one node's RPC API (`POST /api/v0/...`): `id` for readiness,
//! `swarm/peers` for stats, `swarm/connect` to mesh a network's new nodes at once, and for the
//! orchestrator's pinset `pin/add`, `pin/ls` (recursive), `pin/rm` and `repo/stat` (size only).
//! CIDs reach it parsed ([`crate::cid::Cid`]). It must not be a general kubo client nor proxy
//! user traffic (that is the delegator's job).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use super::endpoint::{Connector, Endpoint};

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
        let req = hyper::Request::post(addr.uri(&format!("/api/v0/{path_and_query}")))
            .body(Empty::<Bytes>::new())
            .map_err(|e| RpcError::Http(e.to_string()))?;
        let fut = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| RpcError::Http(e.to_string()))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| RpcError::Http(e.to_string()))?
                .to_bytes();
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

    pub async fn swarm_peers(&self, addr: &Endpoint) -> Result<Vec<PeerEntry>, RpcError> {
        let body = self.post(addr, "swarm/peers").await?;
        let parsed: PeersResponse =
            serde_json::from_slice(&body).map_err(|e| RpcError::Json(e.to_string()))?;
        Ok(parsed.peers.unwrap_or_default())
    }
}
