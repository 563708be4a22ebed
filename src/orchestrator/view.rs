//! Networks as callers see them: records without secrets, with their nodes' observed state.
//!
//! Owns [`NetworkView`], [`NodeView`], [`NodeDiagnosis`] and how a view is made from a stored
//! record, its node rows and what the runtime observed. Pure. It must never carry a swarm key
//! or a private key.

use crate::access::Access;
use crate::node::Ports;
use crate::node::{NodeDiagnostics, NodeHost, NodeRecord, NodeState, Resources};
use crate::replication::Replication;
use crate::store::{DesiredState, NetworkRecord, NetworkStatus, NodeRow, PinCounts};

/// A network as shown to callers: its record without secrets, and its nodes.
#[derive(Clone, Debug)]
pub struct NetworkView {
    pub name: String,
    pub replicas: u16,
    pub resources: Resources,
    pub access: Access,
    pub bootstrap_peers: Vec<String>,
    pub desired: DesiredState,
    pub status: NetworkStatus,
    pub status_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub activated_at: Option<i64>,
    /// The network's subnet (`None`: Docker's default pools chose it).
    pub subnet: Option<ipnet::Ipv4Net>,
    /// The node image its nodes run.
    pub image: String,
    /// Copies of each pin.
    pub replication: Replication,
    /// The pinset's pins by status (one network's view only; `None` in listings).
    pub pins: Option<PinCounts>,
    /// Pins held on fewer nodes than wanted, as the pinset loop last saw.
    pub under_replicated_pins: u64,
    /// Fewer ready nodes than the replication factor wants.
    pub under_replicated: bool,
    pub nodes: Vec<NodeView>,
}

#[derive(Clone, Debug)]
pub struct NodeView {
    pub index: u16,
    pub peer_id: String,
    pub ports: Ports,
    pub state: Option<NodeState>,
    pub last_error: Option<String>,
    /// The host it runs on, for runtimes whose nodes span hosts.
    pub host: Option<NodeHost>,
}

/// One node's diagnostics: what the store knows plus what the runtime shows. No secrets.
#[derive(Clone, Debug)]
pub struct NodeDiagnosis {
    pub index: u16,
    pub peer_id: String,
    pub ports: Ports,
    pub last_error: Option<String>,
    /// `None` when the node has no container (stopped network, failed start).
    pub runtime: Option<NodeDiagnostics>,
}

impl NetworkView {
    /// The view of `rec` with the nodes of `rows` that belong to it, in the states `observed`.
    pub(super) fn new(rec: NetworkRecord, rows: Vec<NodeRow>, observed: &[NodeRecord]) -> Self {
        let nodes = rows
            .into_iter()
            .filter(|r| r.index < rec.replicas)
            .map(|r| {
                let seen = observed
                    .iter()
                    .find(|o| o.spec.node.network == rec.name && o.spec.node.index == r.index);
                NodeView {
                    index: r.index,
                    peer_id: r.identity.peer_id().to_base58(),
                    ports: r.ports,
                    state: seen.map(|o| o.state),
                    host: seen.and_then(|o| o.host.clone()),
                    last_error: r.last_error,
                }
            })
            .collect();
        NetworkView {
            name: rec.name.to_string(),
            replicas: rec.replicas,
            resources: rec.resources,
            access: rec.access,
            bootstrap_peers: rec.bootstrap_peers,
            desired: rec.desired,
            status: rec.status,
            status_reason: rec.status_reason,
            created_at: rec.created_at,
            updated_at: rec.updated_at,
            activated_at: rec.activated_at,
            subnet: rec.subnet,
            // Every record has one once the orchestrator started (it fills in old rows).
            image: rec.image.unwrap_or_default(),
            replication: rec.replication,
            pins: None,
            under_replicated_pins: 0,
            under_replicated: false,
            nodes,
        }
    }
}

/// The multiaddr of a node's swarm port on `host` (an IP address or a DNS name): what the join
/// kit bootstraps from and what the Pinning Service API gives as `delegates`.
pub fn swarm_multiaddr(host: &str, port: u16, peer_id: &str) -> String {
    let proto = match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => "ip4",
        Ok(std::net::IpAddr::V6(_)) => "ip6",
        Err(_) => "dns",
    };
    format!("/{proto}/{host}/tcp/{port}/p2p/{peer_id}")
}
