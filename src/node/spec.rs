//! What a node should be: the validated description the runtime turns into a container.
//!
//! Owns network names, node references (and the Docker names derived from them), resource
//! limits, peers, requested host ports and the secrets a node needs. Everything that comes from
//! outside is validated here, where it enters, so the runtime can trust what it is given. It
//! must not talk to Docker or decide placement (that is the orchestrator's job).

use std::fmt;
use std::str::FromStr;

use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};

use super::identity::NodeIdentity;
use super::swarm_key::SwarmKey;
use crate::names::is_dns_label;

/// Port kubo's swarm listens on inside every node container.
pub const SWARM_PORT: u16 = 4001;
/// Port of kubo's RPC API inside every node container.
pub const API_PORT: u16 = 5001;
/// Port of kubo's gateway inside every node container.
pub const GATEWAY_PORT: u16 = 8080;

/// Longest network name: leaves room in a 63-byte DNS label and Docker names for suffixes.
pub const MAX_NETWORK_NAME: usize = 40;
/// Most nodes one network may have.
pub const MAX_NODES: u16 = 64;

/// Why a node description was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("network name must not be empty")]
    EmptyName,
    #[error("network name `{0}` is longer than {MAX_NETWORK_NAME} characters")]
    NameTooLong(String),
    #[error(
        "network name `{0}` is not allowed: use lowercase letters, digits and single `-`, \
         starting with a letter and not ending with `-` (it becomes a DNS label and Docker names)"
    )]
    BadName(String),
    #[error("a network needs between 1 and {MAX_NODES} nodes, not {0}")]
    NodeCount(u16),
    #[error("node index {0} is out of range (0..{MAX_NODES})")]
    NodeIndex(u16),
    #[error("`{0}` is not a valid peer id (expected a base58 libp2p peer id such as 12D3KooW…)")]
    BadPeerId(String),
    #[error("`{0}` is not a valid multiaddr for a peer (expected e.g. /dns4/host/tcp/4001)")]
    BadMultiaddr(String),
    #[error("{0}")]
    BadResources(String),
    #[error("image reference `{0}` is not valid")]
    BadImage(String),
    #[error("the node's identity does not match its peer id {0}")]
    IdentityMismatch(String),
}

/// A validated private-network name (a DNS label).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NetworkName(String);

impl NetworkName {
    pub fn new(name: &str) -> Result<Self, SpecError> {
        if name.is_empty() {
            return Err(SpecError::EmptyName);
        }
        if name.len() > MAX_NETWORK_NAME {
            return Err(SpecError::NameTooLong(name.chars().take(60).collect()));
        }
        // A lower-case DNS label that starts with a letter and has no `--`.
        let ok =
            is_dns_label(name) && name.as_bytes()[0].is_ascii_lowercase() && !name.contains("--");
        if !ok {
            return Err(SpecError::BadName(name.chars().take(60).collect()));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The Docker network that isolates this private network's nodes.
    pub fn docker_network(&self) -> String {
        format!("nexus-{}", self.0)
    }
}

impl fmt::Display for NetworkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for NetworkName {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for NetworkName {
    type Error = SpecError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(&s)
    }
}

impl From<NetworkName> for String {
    fn from(n: NetworkName) -> String {
        n.0
    }
}

/// One node of one network: `nexus-<network>-<index>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeRef {
    pub network: NetworkName,
    pub index: u16,
}

impl NodeRef {
    pub fn new(network: NetworkName, index: u16) -> Result<Self, SpecError> {
        if index >= MAX_NODES {
            return Err(SpecError::NodeIndex(index));
        }
        Ok(Self { network, index })
    }

    /// Container name, also its hostname and DNS name on the network's Docker network.
    pub fn container_name(&self) -> String {
        format!("nexus-{}-{}", self.network, self.index)
    }

    /// Named volume holding the node's repo; survives container re-creation.
    pub fn volume_name(&self) -> String {
        format!("nexus-{}-{}-data", self.network, self.index)
    }

    /// How the other nodes of the network dial this one (without the `/p2p/` part).
    pub fn internal_multiaddr(&self) -> String {
        format!("/dns4/{}/tcp/{SWARM_PORT}", self.container_name())
    }

    /// The index of the node of the same network whose [`NodeRef::internal_multiaddr`]
    /// `addr` is; `None` for any other address (an operator's peer outside nexus).
    pub fn sibling_index(&self, addr: &str) -> Option<u16> {
        addr.strip_prefix(&format!("/dns4/nexus-{}-", self.network))
            .and_then(|rest| rest.strip_suffix(&format!("/tcp/{SWARM_PORT}")))
            // Digits as `container_name` writes them: no sign, no leading zero.
            .filter(|i| {
                !i.is_empty()
                    && i.bytes().all(|b| b.is_ascii_digit())
                    && (i.len() == 1 || !i.starts_with('0'))
            })
            .and_then(|i| i.parse().ok())
    }
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.index)
    }
}

/// Resource limits of one node, enforced by Docker and given to kubo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU in thousandths of a core (1000 = one core).
    pub cpu_millis: u32,
    /// Memory limit in bytes (no swap beyond it).
    pub memory_bytes: u64,
    /// Repo size limit in bytes (`Datastore.StorageMax`, with GC on).
    pub disk_bytes: u64,
}

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

impl Default for Resources {
    fn default() -> Self {
        Self {
            cpu_millis: 1000,
            memory_bytes: GIB,
            disk_bytes: 10 * GIB,
        }
    }
}

impl Resources {
    pub fn validate(&self) -> Result<(), SpecError> {
        if !(10..=256_000).contains(&self.cpu_millis) {
            return Err(SpecError::BadResources(format!(
                "cpu must be between 0.01 and 256 cores, not {}",
                self.cpu_millis as f64 / 1000.0
            )));
        }
        if self.memory_bytes < 128 * MIB {
            return Err(SpecError::BadResources(format!(
                "memory must be at least 128 MiB for kubo to start (got {} bytes)",
                self.memory_bytes
            )));
        }
        if self.memory_bytes > 4096 * GIB {
            return Err(SpecError::BadResources(
                "memory above 4 TiB is not supported".into(),
            ));
        }
        if self.disk_bytes < 64 * MIB {
            return Err(SpecError::BadResources(format!(
                "disk must be at least 64 MiB (got {} bytes)",
                self.disk_bytes
            )));
        }
        Ok(())
    }

    /// Docker's `NanoCpus`.
    pub fn nano_cpus(&self) -> i64 {
        i64::from(self.cpu_millis) * 1_000_000
    }
}

/// Another node this node peers with: its id and where to dial it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub peer_id: String,
    /// Multiaddr without `/p2p/<id>`, e.g. `/dns4/nexus-net-1/tcp/4001`.
    pub addr: String,
}

impl Peer {
    pub fn new(peer_id: &str, addr: &str) -> Result<Self, SpecError> {
        validate_peer_id(peer_id)?;
        validate_multiaddr(addr)?;
        Ok(Self {
            peer_id: peer_id.to_owned(),
            addr: addr.to_owned(),
        })
    }

    /// `Bootstrap` entry: `<addr>/p2p/<id>`.
    pub fn bootstrap_addr(&self) -> String {
        format!("{}/p2p/{}", self.addr, self.peer_id)
    }
}

pub fn validate_peer_id(s: &str) -> Result<(), SpecError> {
    PeerId::from_str(s)
        .map(|_| ())
        .map_err(|_| SpecError::BadPeerId(s.chars().take(80).collect()))
}

/// Multiaddrs end up in a shell script and in kubo's config: allow only the characters a
/// `/ip4|ip6|dns4|dns6|dns/<host>/tcp/<port>` address needs.
pub fn validate_multiaddr(s: &str) -> Result<(), SpecError> {
    let bad = || SpecError::BadMultiaddr(s.chars().take(120).collect());
    if !s.starts_with('/') || s.len() > 256 || s.contains("/p2p/") {
        return Err(bad());
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/.-_:".contains(&b))
    {
        return Err(bad());
    }
    let parts: Vec<&str> = s[1..].split('/').collect();
    if parts.len() < 4 || parts.iter().any(|p| p.is_empty()) {
        return Err(bad());
    }
    if !matches!(parts[0], "ip4" | "ip6" | "dns" | "dns4" | "dns6") || parts[2] != "tcp" {
        return Err(bad());
    }
    parts[3].parse::<u16>().map_err(|_| bad())?;
    Ok(())
}

/// A node's host ports: allocated by the orchestrator, stored with the node, published by the
/// runtime, observed back from it. `None`: not allocated (or, when asking the runtime, let
/// Docker choose a free one). Only the swarm port is published: the RPC API and gateway are
/// unix sockets ([`super::endpoint`]). Labels and rows of an older nexus that also carry
/// `api`/`gateway` ports still read (the extra fields are ignored).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ports {
    pub swarm: Option<u16>,
}

/// A network as its runtime makes it: the name and the IPv4 subnet nexus allocated to it.
/// `subnet: None` is a network made before nexus allocated subnets: the engine chose its
/// subnet from its default pools, and keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkSpec {
    pub name: NetworkName,
    pub subnet: Option<ipnet::Ipv4Net>,
}

/// Everything about a node except its secrets. Carried in the container's labels, so a node's
/// record can be rebuilt from Docker alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    pub node: NodeRef,
    pub image: String,
    pub peer_id: String,
    pub resources: Resources,
    pub ports: Ports,
    /// The other nodes of the network (Bootstrap and Peering.Peers).
    pub peers: Vec<Peer>,
    /// Extra addresses to announce (e.g. the host's public address and swarm port).
    pub announce: Vec<String>,
}

impl NodeSpec {
    pub fn validate(&self) -> Result<(), SpecError> {
        NodeRef::new(self.node.network.clone(), self.node.index)?;
        validate_image(&self.image)?;
        validate_peer_id(&self.peer_id)?;
        self.resources.validate()?;
        for p in &self.peers {
            validate_peer_id(&p.peer_id)?;
            validate_multiaddr(&p.addr)?;
        }
        for a in &self.announce {
            validate_multiaddr(a)?;
        }
        Ok(())
    }
}

/// Docker image references: `[registry[:port]/]name[:tag][@digest]`, conservatively.
pub fn validate_image(image: &str) -> Result<(), SpecError> {
    let ok = !image.is_empty()
        && image.len() <= 255
        && image
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/:._-@".contains(&b))
        && !image.starts_with(['-', '/', ':', '.']);
    if ok {
        Ok(())
    } else {
        Err(SpecError::BadImage(image.chars().take(80).collect()))
    }
}

/// What a node needs that must never appear in labels, logs or listings.
#[derive(Clone, Debug)]
pub struct NodeSecrets {
    pub swarm_key: SwarmKey,
    pub identity: NodeIdentity,
}

impl NodeSecrets {
    /// Checks the identity belongs to the spec's peer id.
    pub fn check(&self, spec: &NodeSpec) -> Result<(), SpecError> {
        if self.identity.peer_id().to_base58() != spec.peer_id {
            return Err(SpecError::IdentityMismatch(spec.peer_id.clone()));
        }
        Ok(())
    }
}

/// A full-mesh plan for a new network of `count` nodes: fresh identities, one swarm key, and
/// every node listing every other as a peer, so all can start in parallel.
pub fn plan_network(
    network: &NetworkName,
    count: u16,
    image: &str,
    resources: Resources,
    swarm_key: &SwarmKey,
) -> Result<Vec<(NodeSpec, NodeSecrets)>, SpecError> {
    if count == 0 || count > MAX_NODES {
        return Err(SpecError::NodeCount(count));
    }
    validate_image(image)?;
    resources.validate()?;
    let nodes: Vec<(NodeRef, NodeIdentity)> = (0..count)
        .map(|i| Ok((NodeRef::new(network.clone(), i)?, NodeIdentity::generate())))
        .collect::<Result<_, SpecError>>()?;
    let plan = nodes
        .iter()
        .map(|(node, identity)| {
            let peers = nodes
                .iter()
                .filter(|(other, _)| other != node)
                .map(|(other, id)| Peer {
                    peer_id: id.peer_id().to_base58(),
                    addr: other.internal_multiaddr(),
                })
                .collect();
            let spec = NodeSpec {
                node: node.clone(),
                image: image.to_owned(),
                peer_id: identity.peer_id().to_base58(),
                resources,
                ports: Ports::default(),
                peers,
                announce: Vec::new(),
            };
            let secrets = NodeSecrets {
                swarm_key: swarm_key.clone(),
                identity: identity.clone(),
            };
            (spec, secrets)
        })
        .collect();
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_names() {
        for good in ["a", "my-net", "net1", "a-b-c", &"x".repeat(40)] {
            assert!(NetworkName::new(good).is_ok(), "{good}");
        }
        for bad in [
            "", "My-Net", "1net", "net-", "-net", "my_net", "my.net", "a--b", "net/../x", "ñ",
            "net 1",
        ] {
            assert!(NetworkName::new(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            NetworkName::new(&"x".repeat(41)),
            Err(SpecError::NameTooLong(_))
        ));
    }

    #[test]
    fn derived_docker_names() {
        let n = NodeRef::new(NetworkName::new("demo").unwrap(), 2).unwrap();
        assert_eq!(n.container_name(), "nexus-demo-2");
        assert_eq!(n.volume_name(), "nexus-demo-2-data");
        assert_eq!(n.network.docker_network(), "nexus-demo");
        assert_eq!(n.internal_multiaddr(), "/dns4/nexus-demo-2/tcp/4001");
        assert_eq!(n.sibling_index("/dns4/nexus-demo-0/tcp/4001"), Some(0));
        assert_eq!(n.sibling_index("/dns4/nexus-demo-17/tcp/4001"), Some(17));
        for other in [
            "/dns4/nexus-demo-x-1/tcp/4001",
            "/dns4/nexus-demo-/tcp/4001",
            "/dns4/nexus-demo-01/tcp/4001",
            "/dns4/nexus-demo-+1/tcp/4001",
            "/dns4/nexus-demo-99999/tcp/4001",
            "/dns4/nexus-demo-1/tcp/4002",
            "/dns4/nexus-other-1/tcp/4001",
            "/ip4/10.0.0.1/tcp/4001",
        ] {
            assert_eq!(n.sibling_index(other), None, "{other}");
        }
        assert!(NodeRef::new(n.network.clone(), MAX_NODES).is_err());
    }

    #[test]
    fn multiaddrs() {
        for good in [
            "/dns4/nexus-a-0/tcp/4001",
            "/ip4/10.0.0.1/tcp/4001",
            "/ip6/::1/tcp/1",
        ] {
            assert!(validate_multiaddr(good).is_ok(), "{good}");
        }
        for bad in [
            "dns4/x/tcp/1",
            "/dns4/x/udp/1",
            "/dns4/x/tcp/99999",
            "/dns4/x/tcp/1'; rm -rf /",
            "/dns4//tcp/1",
            "/ip4/1.2.3.4/tcp/1/p2p/12D3KooWabc",
            "/unix/tmp/x",
        ] {
            assert!(validate_multiaddr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resources_are_bounded() {
        assert!(Resources::default().validate().is_ok());
        let r = |cpu, mem, disk| Resources {
            cpu_millis: cpu,
            memory_bytes: mem,
            disk_bytes: disk,
        };
        assert!(r(0, GIB, GIB).validate().is_err());
        assert!(r(1000, MIB, GIB).validate().is_err());
        assert!(r(1000, GIB, MIB).validate().is_err());
        assert_eq!(r(1500, GIB, GIB).nano_cpus(), 1_500_000_000);
    }

    #[test]
    fn plan_is_a_full_mesh_with_matching_identities() {
        let net = NetworkName::new("mesh").unwrap();
        let key = SwarmKey::generate().unwrap();
        let plan = plan_network(&net, 3, "ipfs/kubo:v0.43.1", Resources::default(), &key).unwrap();
        assert_eq!(plan.len(), 3);
        for (spec, secrets) in &plan {
            spec.validate().unwrap();
            secrets.check(spec).unwrap();
            assert_eq!(spec.peers.len(), 2);
            assert!(spec.peers.iter().all(|p| p.peer_id != spec.peer_id));
            for (other, _) in plan.iter().filter(|(o, _)| o.node != spec.node) {
                assert!(spec.peers.iter().any(
                    |p| p.peer_id == other.peer_id && p.addr == other.node.internal_multiaddr()
                ));
            }
        }
        assert!(plan_network(&net, 0, "img", Resources::default(), &key).is_err());
        assert!(plan_network(&net, 3, "bad image!", Resources::default(), &key).is_err());
        let other = NodeIdentity::generate();
        let wrong = NodeSecrets {
            swarm_key: key,
            identity: other,
        };
        assert!(wrong.check(&plan[0].0).is_err());
    }
}
