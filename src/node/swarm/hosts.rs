//! The swarm's hosts as nexus sees them, and placement: which host a new node goes to.
//!
//! Owns [`Host`] (id, name, the address the daemon reaches its gate at, the public address
//! join kits advertise, zone, whether it is up and may take nodes) read from the engine's node
//! list, and [`place`], the pure rule that spreads a network's nodes. Must not create or
//! change anything.

use std::collections::HashMap;
use std::net::IpAddr;

use bollard::models::{NodeSpecAvailabilityEnum, NodeState as SwarmNodeState};
use bollard::query_parameters::ListNodesOptions;

use super::SwarmRuntime;
use crate::node::docker::docker_err;
use crate::node::runtime::{NodeHost, Result};

/// The node label naming a host's zone (failure domain): a network's nodes spread over zones
/// first, then over hosts.
pub const ZONE_LABEL: &str = "io.nexus.zone";
/// The node label that keeps nexus's nodes off a host when `false`.
pub const NODES_LABEL: &str = "io.nexus.nodes";

/// One host of the swarm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// The swarm's node id.
    pub id: String,
    pub name: String,
    /// Where the daemon reaches the host (its swarm address): the gate listens there.
    pub addr: IpAddr,
    /// What peers outside dial (the address label, else `addr`).
    pub public_address: String,
    pub zone: Option<String>,
    /// Ready in the swarm.
    pub up: bool,
    /// Active, and not labelled to keep nexus's nodes off.
    pub eligible: bool,
}

impl Host {
    /// The runtime-neutral view of this host.
    pub fn view(&self) -> NodeHost {
        NodeHost {
            id: self.id.clone(),
            name: self.name.clone(),
            address: self.public_address.clone(),
            up: self.up,
        }
    }

    /// A short form of the id for names of objects on the host.
    pub fn short_id(&self) -> String {
        self.id
            .chars()
            .take(12)
            .collect::<String>()
            .to_ascii_lowercase()
    }
}

/// Picks the host for a new node among `hosts`, given the hosts its network's other nodes run
/// on (`siblings`, by host id) and how many nexus nodes each host runs (`load`): up and
/// eligible hosts only; then the zone fewest siblings use, then the host fewest siblings use,
/// then the least loaded, then the lowest id (so a tie is decided the same way every time).
/// `None` when no host may take a node.
pub fn place<'a>(
    hosts: &'a [Host],
    siblings: &[String],
    load: &HashMap<String, usize>,
) -> Option<&'a Host> {
    let zone_of: HashMap<&str, Option<&str>> = hosts
        .iter()
        .map(|h| (h.id.as_str(), h.zone.as_deref()))
        .collect();
    let in_zone = |zone: Option<&str>| {
        siblings
            .iter()
            .filter(|s| zone.is_some() && zone_of.get(s.as_str()).copied().flatten() == zone)
            .count()
    };
    let on_host = |id: &str| siblings.iter().filter(|s| s.as_str() == id).count();
    hosts.iter().filter(|h| h.up && h.eligible).min_by(|a, b| {
        let key = |h: &Host| {
            (
                in_zone(h.zone.as_deref()),
                on_host(&h.id),
                load.get(&h.id).copied().unwrap_or(0),
            )
        };
        key(a).cmp(&key(b)).then_with(|| a.id.cmp(&b.id))
    })
}

impl SwarmRuntime {
    /// Every host of the swarm.
    pub(super) async fn hosts(&self) -> Result<Vec<Host>> {
        let nodes = self
            .docker
            .list_nodes(None::<ListNodesOptions>)
            .await
            .map_err(docker_err)?;
        let mut out = Vec::new();
        for n in nodes {
            let Some(id) = n.id else { continue };
            let spec = n.spec.unwrap_or_default();
            let labels = spec.labels.unwrap_or_default();
            let status = n.status.unwrap_or_default();
            let Some(addr) = status
                .addr
                .as_deref()
                .and_then(|a| a.parse::<IpAddr>().ok())
            else {
                tracing::warn!(host = %id, "swarm host without a usable address; ignored");
                continue;
            };
            let public_address = labels
                .get(&self.cfg.address_label)
                .filter(|a| !a.is_empty())
                .cloned()
                .unwrap_or_else(|| addr.to_string());
            out.push(Host {
                name: n
                    .description
                    .and_then(|d| d.hostname)
                    .unwrap_or_else(|| id.clone()),
                up: status.state == Some(SwarmNodeState::READY),
                eligible: spec.availability == Some(NodeSpecAvailabilityEnum::ACTIVE)
                    && labels.get(NODES_LABEL).map(String::as_str) != Some("false"),
                zone: labels.get(ZONE_LABEL).filter(|z| !z.is_empty()).cloned(),
                public_address,
                addr,
                id,
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// The memory of the hosts that may take nodes, together (`None`: the engine reports
    /// none).
    pub(super) async fn memory_total(&self) -> Result<Option<u64>> {
        let nodes = self
            .docker
            .list_nodes(None::<ListNodesOptions>)
            .await
            .map_err(docker_err)?;
        let total: i64 = nodes
            .iter()
            .filter(|n| {
                let spec = n.spec.as_ref();
                spec.and_then(|s| s.availability) == Some(NodeSpecAvailabilityEnum::ACTIVE)
                    && spec
                        .and_then(|s| s.labels.as_ref())
                        .and_then(|l| l.get(NODES_LABEL))
                        .map(String::as_str)
                        != Some("false")
            })
            .filter_map(|n| n.description.as_ref()?.resources.as_ref()?.memory_bytes)
            .sum();
        Ok(u64::try_from(total).ok().filter(|t| *t > 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(id: &str, zone: Option<&str>) -> Host {
        Host {
            id: id.into(),
            name: id.into(),
            addr: "10.0.0.1".parse().expect("ip"),
            public_address: "10.0.0.1".into(),
            zone: zone.map(Into::into),
            up: true,
            eligible: true,
        }
    }

    #[test]
    fn a_networks_nodes_spread_over_hosts_then_share() {
        let hosts = [host("a", None), host("b", None), host("c", None)];
        let load = HashMap::new();
        let mut siblings = Vec::new();
        for _ in 0..3 {
            let h = place(&hosts, &siblings, &load).expect("a host");
            siblings.push(h.id.clone());
        }
        siblings.sort();
        assert_eq!(siblings, ["a", "b", "c"]);
        // A fourth node shares a host: the least loaded one.
        let load = HashMap::from([
            ("a".to_string(), 5),
            ("b".to_string(), 1),
            ("c".to_string(), 3),
        ]);
        assert_eq!(
            place(&hosts, &siblings, &load).map(|h| h.id.as_str()),
            Some("b")
        );
    }

    #[test]
    fn zones_come_before_hosts() {
        let hosts = [
            host("a", Some("z1")),
            host("b", Some("z1")),
            host("c", Some("z2")),
        ];
        let first = place(&hosts, &[], &HashMap::new()).expect("a host");
        assert_eq!(first.id, "a");
        // The second node avoids zone z1 although b is an empty host.
        let second = place(&hosts, &["a".into()], &HashMap::new()).expect("a host");
        assert_eq!(second.id, "c");
    }

    #[test]
    fn hosts_down_drained_or_labelled_off_take_nothing() {
        let mut down = host("a", None);
        down.up = false;
        let mut off = host("b", None);
        off.eligible = false;
        let hosts = [down, off.clone()];
        assert_eq!(place(&hosts, &[], &HashMap::new()), None);
        let hosts = [off, host("c", None)];
        assert_eq!(
            place(&hosts, &["c".into()], &HashMap::new()).map(|h| h.id.as_str()),
            Some("c")
        );
    }
}
