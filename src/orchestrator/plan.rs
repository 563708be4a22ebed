//! The reconciler's decisions, as pure functions.
//!
//! Owns turning stored intent into node specs ([`desired_nodes`]) and comparing them with what
//! the runtime observes ([`plan`] → a list of [`Action`]s, [`observed_status`] → the network's
//! status). No I/O here: the async reconciler executes the actions, which keeps every state
//! transition testable without Docker. It must not allocate ports or generate identities (the
//! store rows already carry them).

use crate::node::{NodeRecord, NodeSecrets, NodeSpec, NodeState, Peer};
use crate::store::{DesiredState, NetworkRecord, NetworkStatus, NodeRow};

/// One step towards the desired state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// No container for this wanted node: create it.
    Create { index: u16 },
    /// Its container exists but does not run: start it.
    Start { index: u16 },
    /// It runs with another spec (resources, peers, image, ports): bring it to the new one.
    Update { index: u16 },
    /// Not wanted any more (scaled down, or unknown to the store): remove container and data.
    Remove { index: u16 },
    /// The network is stopped: remove this node's container, keeping its data (frees ports).
    Stop { index: u16 },
    /// Its host has been down longer than the grace period: re-create it on another host
    /// (same identity; its repo there starts empty).
    Relocate { index: u16 },
}

/// The node specs and secrets a network's store rows describe, with the full mesh of peers.
pub fn desired_nodes(
    network: &NetworkRecord,
    rows: &[NodeRow],
    image: &str,
) -> Vec<(NodeSpec, NodeSecrets)> {
    let wanted: Vec<&NodeRow> = rows
        .iter()
        .filter(|r| r.index < network.replicas && r.network == network.name)
        .collect();
    // Each node's peer id, encoded once for the whole mesh (every pass renders it).
    let ids: Vec<String> = wanted
        .iter()
        .map(|r| r.identity.peer_id().to_base58())
        .collect();
    wanted
        .iter()
        .zip(&ids)
        .map(|(row, id)| {
            let node = crate::node::NodeRef {
                network: network.name.clone(),
                index: row.index,
            };
            let mut peers: Vec<Peer> = wanted
                .iter()
                .zip(&ids)
                .filter(|(o, _)| o.index != row.index)
                .map(|(o, oid)| Peer {
                    peer_id: oid.clone(),
                    addr: crate::node::NodeRef {
                        network: network.name.clone(),
                        index: o.index,
                    }
                    .internal_multiaddr(),
                })
                .collect();
            // The operator's extra peers outside nexus (validated when they entered).
            peers.extend(network.bootstrap_peers.iter().filter_map(|full| {
                let (addr, id) = full.rsplit_once("/p2p/")?;
                Peer::new(id, addr).ok()
            }));
            let spec = NodeSpec {
                node,
                image: image.to_owned(),
                peer_id: id.clone(),
                resources: network.resources,
                ports: row.ports,
                peers,
                announce: Vec::new(),
            };
            let secrets = NodeSecrets {
                swarm_key: network.swarm_key.clone(),
                identity: row.identity.clone(),
            };
            (spec, secrets)
        })
        .collect()
}

/// Whether the runtime reports the node's host down.
pub fn on_lost_host(r: &NodeRecord) -> bool {
    r.host.as_ref().is_some_and(|h| !h.up)
}

fn is_up(state: &NodeState) -> bool {
    matches!(state, NodeState::Running | NodeState::Restarting)
}

/// What to do so that `observed` (the runtime's records of this network) matches `desired`.
/// Removals come first (they free ports and names), then creates/starts/updates by index. A
/// node whose host is down is left alone (nothing on it can be started or changed) unless it
/// is in `lost` (down past the grace period): then it is relocated.
pub fn plan(
    desired_state: DesiredState,
    desired: &[NodeSpec],
    observed: &[NodeRecord],
    lost: &[u16],
) -> Vec<Action> {
    let mut actions = Vec::new();
    for rec in observed {
        let index = rec.spec.node.index;
        let wanted = desired.iter().any(|d| d.node.index == index);
        if !wanted {
            actions.push(Action::Remove { index });
        }
    }
    for spec in desired {
        let index = spec.node.index;
        let rec = observed.iter().find(|r| r.spec.node.index == index);
        match (desired_state, rec) {
            (DesiredState::Stopped, Some(_)) => actions.push(Action::Stop { index }),
            (DesiredState::Stopped, None) => {}
            (DesiredState::Running, None) => actions.push(Action::Create { index }),
            (DesiredState::Running, Some(r)) if on_lost_host(r) => {
                if lost.contains(&index) {
                    actions.push(Action::Relocate { index });
                }
            }
            // A container of an older nexus (no sockets) is re-created like a changed one.
            (DesiredState::Running, Some(r))
                if same_node(&r.spec, spec) && r.endpoints.is_some() =>
            {
                if !is_up(&r.state) {
                    actions.push(Action::Start { index });
                }
            }
            (DesiredState::Running, Some(_)) => actions.push(Action::Update { index }),
        }
    }
    actions
}

/// Whether a running node already is what `want` describes. Ports the store left to Docker
/// (`None`) match whatever Docker chose; the identity must match exactly.
fn same_node(have: &NodeSpec, want: &NodeSpec) -> bool {
    let ports_match = |h: Option<u16>, w: Option<u16>| w.is_none() || h == w;
    have.peer_id == want.peer_id
        && have.image == want.image
        && have.resources == want.resources
        && have.announce == want.announce
        && ports_match(have.ports.swarm, want.ports.swarm)
        && {
            let mut a = have.peers.clone();
            let mut b = want.peers.clone();
            a.sort_by(|x, y| x.peer_id.cmp(&y.peer_id));
            b.sort_by(|x, y| x.peer_id.cmp(&y.peer_id));
            a == b
        }
}

/// The network's status from what is observed (before any failure reason is considered).
pub fn observed_status(
    desired_state: DesiredState,
    desired: &[NodeSpec],
    observed: &[NodeRecord],
) -> NetworkStatus {
    let up = desired
        .iter()
        .filter(|d| {
            observed
                .iter()
                .any(|r| r.spec.node.index == d.node.index && r.state == NodeState::Running)
        })
        .count();
    match desired_state {
        DesiredState::Stopped if !observed.is_empty() => NetworkStatus::Stopping,
        DesiredState::Stopped => NetworkStatus::Stopped,
        DesiredState::Running if !desired.is_empty() && up == desired.len() => {
            NetworkStatus::Running
        }
        DesiredState::Running if up > 0 => NetworkStatus::Degraded,
        DesiredState::Running => NetworkStatus::Starting,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{NetworkName, NodeIdentity, Ports, Resources, SwarmKey};

    fn record(replicas: u16) -> NetworkRecord {
        NetworkRecord {
            name: NetworkName::new("plan").unwrap(),
            replicas,
            resources: Resources::default(),
            access: crate::access::Access::default(),
            swarm_key: SwarmKey::generate().unwrap(),
            bootstrap_peers: vec![],
            desired: DesiredState::Running,
            status: NetworkStatus::Pending,
            status_reason: None,
            created_at: 0,
            updated_at: 0,
            activated_at: None,
            subnet: None,
            image: None,
            replication: crate::replication::Replication::Count(1),
        }
    }

    fn rows(net: &NetworkRecord, n: u16) -> Vec<NodeRow> {
        (0..n)
            .map(|i| NodeRow {
                network: net.name.clone(),
                index: i,
                identity: NodeIdentity::generate(),
                ports: Ports {
                    swarm: Some(4001 + i),
                },
                container_id: None,
                last_error: None,
            })
            .collect()
    }

    fn running(spec: &NodeSpec) -> NodeRecord {
        NodeRecord {
            spec: spec.clone(),
            container_id: format!("c{}", spec.node.index),
            state: NodeState::Running,
            ports: spec.ports,
            endpoints: Some(crate::node::endpoint::NodeEndpoints {
                api: crate::node::endpoint::Endpoint::Tcp(([127, 0, 0, 1], 5001).into()),
                gateway: crate::node::endpoint::Endpoint::Tcp(([127, 0, 0, 1], 8080).into()),
            }),
            started_at: None,
            host: None,
        }
    }

    fn specs(net: &NetworkRecord, rows: &[NodeRow]) -> Vec<NodeSpec> {
        desired_nodes(net, rows, "img:1")
            .into_iter()
            .map(|(s, _)| s)
            .collect()
    }

    #[test]
    fn desired_nodes_form_a_full_mesh_of_the_wanted_replicas() {
        let net = record(3);
        let rows = rows(&net, 4); // one row beyond replicas (scaled down, not yet removed)
        let nodes = desired_nodes(&net, &rows, "img:1");
        assert_eq!(nodes.len(), 3);
        for (spec, secrets) in &nodes {
            spec.validate().unwrap();
            secrets.check(spec).unwrap();
            assert_eq!(spec.peers.len(), 2);
            assert!(spec
                .peers
                .iter()
                .all(|p| p.peer_id != rows[3].identity.peer_id().to_base58()));
            assert_eq!(spec.ports, rows[spec.node.index as usize].ports);
        }
    }

    #[test]
    fn extra_bootstrap_peers_reach_every_node() {
        let outside = NodeIdentity::generate().peer_id().to_base58();
        let mut net = record(2);
        net.bootstrap_peers = vec![format!("/ip4/203.0.113.9/tcp/4001/p2p/{outside}")];
        for (spec, _) in desired_nodes(&net, &rows(&net, 2), "img:1") {
            spec.validate().unwrap();
            assert_eq!(spec.peers.len(), 2);
            assert!(spec
                .peers
                .iter()
                .any(|p| p.peer_id == outside && p.addr == "/ip4/203.0.113.9/tcp/4001"));
        }
    }

    #[test]
    fn fresh_network_creates_every_node() {
        let net = record(3);
        let want = specs(&net, &rows(&net, 3));
        assert_eq!(
            plan(DesiredState::Running, &want, &[], &[]),
            vec![
                Action::Create { index: 0 },
                Action::Create { index: 1 },
                Action::Create { index: 2 }
            ]
        );
        assert_eq!(
            observed_status(DesiredState::Running, &want, &[]),
            NetworkStatus::Starting
        );
    }

    #[test]
    fn a_node_on_a_lost_host_waits_its_grace_then_is_relocated() {
        let net = record(3);
        let want = specs(&net, &rows(&net, 3));
        let mut obs: Vec<_> = want.iter().map(running).collect();
        obs[1].host = Some(crate::node::NodeHost {
            id: "h2".into(),
            name: "host-2".into(),
            address: "10.0.0.2".into(),
            up: false,
        });
        obs[1].state = NodeState::Unknown;
        // Within the grace: nothing can be done on that host, and nothing is tried.
        assert!(plan(DesiredState::Running, &want, &obs, &[]).is_empty());
        assert_eq!(
            observed_status(DesiredState::Running, &want, &obs),
            NetworkStatus::Degraded
        );
        // Past it: moved, the others untouched.
        assert_eq!(
            plan(DesiredState::Running, &want, &obs, &[1]),
            vec![Action::Relocate { index: 1 }]
        );
        // A stopped network's node on a lost host is only stopped.
        assert_eq!(
            plan(DesiredState::Stopped, &want, &obs, &[1]),
            (0..3)
                .map(|index| Action::Stop { index })
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn converged_network_needs_nothing_and_is_running() {
        let net = record(2);
        let want = specs(&net, &rows(&net, 2));
        let obs: Vec<_> = want.iter().map(running).collect();
        assert!(plan(DesiredState::Running, &want, &obs, &[]).is_empty());
        assert_eq!(
            observed_status(DesiredState::Running, &want, &obs),
            NetworkStatus::Running
        );
    }

    #[test]
    fn a_dead_node_is_started_and_the_network_is_degraded() {
        let net = record(3);
        let want = specs(&net, &rows(&net, 3));
        let mut obs: Vec<_> = want.iter().map(running).collect();
        obs[1].state = NodeState::Exited { code: 137 };
        assert_eq!(
            plan(DesiredState::Running, &want, &obs, &[]),
            vec![Action::Start { index: 1 }]
        );
        assert_eq!(
            observed_status(DesiredState::Running, &want, &obs),
            NetworkStatus::Degraded
        );
    }

    #[test]
    fn scaling_up_creates_and_updates_peers_of_the_others() {
        let net3 = record(3);
        let all = rows(&net3, 5);
        let before = specs(&net3, &all);
        let obs: Vec<_> = before.iter().map(running).collect();
        let net5 = NetworkRecord {
            replicas: 5,
            ..net3.clone()
        };
        let after = specs(&net5, &all);
        let actions = plan(DesiredState::Running, &after, &obs, &[]);
        // Existing nodes learn the new peers; the new ones are created.
        assert_eq!(
            actions,
            vec![
                Action::Update { index: 0 },
                Action::Update { index: 1 },
                Action::Update { index: 2 },
                Action::Create { index: 3 },
                Action::Create { index: 4 },
            ]
        );
    }

    #[test]
    fn scaling_down_removes_first() {
        let net5 = record(5);
        let all = rows(&net5, 5);
        let obs: Vec<_> = specs(&net5, &all).iter().map(running).collect();
        let net2 = NetworkRecord {
            replicas: 2,
            ..net5
        };
        let actions = plan(DesiredState::Running, &specs(&net2, &all), &obs, &[]);
        assert_eq!(
            actions,
            vec![
                Action::Remove { index: 2 },
                Action::Remove { index: 3 },
                Action::Remove { index: 4 },
                Action::Update { index: 0 },
                Action::Update { index: 1 },
            ]
        );
    }

    #[test]
    fn resource_or_identity_changes_are_updates_and_docker_chosen_ports_match() {
        let mut net = record(1);
        let mut r = rows(&net, 1);
        r[0].ports = Ports::default();
        let want = specs(&net, &r);
        let mut obs = vec![running(&want[0])];
        obs[0].spec.ports = Ports { swarm: Some(32768) };
        assert!(plan(DesiredState::Running, &want, &obs, &[]).is_empty());
        net.resources.cpu_millis = 2000;
        let want2 = specs(&net, &r);
        assert_eq!(
            plan(DesiredState::Running, &want2, &obs, &[]),
            vec![Action::Update { index: 0 }]
        );
    }

    #[test]
    fn stopping_stops_running_nodes_and_unknown_nodes_are_removed() {
        let net = record(2);
        let want = specs(&net, &rows(&net, 2));
        let mut obs: Vec<_> = want.iter().map(running).collect();
        obs[1].state = NodeState::Exited { code: 0 };
        // A nexus container of this network that the store does not know (index 7).
        let stranger_rows = rows(&record(8), 8);
        let mut stranger = running(&specs(&record(8), &stranger_rows)[7]);
        stranger.spec.node.network = net.name.clone();
        obs.push(stranger);
        // Every container goes, running or not; the stranger with its data.
        assert_eq!(
            plan(DesiredState::Stopped, &want, &obs, &[]),
            vec![
                Action::Remove { index: 7 },
                Action::Stop { index: 0 },
                Action::Stop { index: 1 }
            ]
        );
        assert_eq!(
            observed_status(DesiredState::Stopped, &want, &obs),
            NetworkStatus::Stopping
        );
        assert!(plan(DesiredState::Stopped, &want, &[], &[]).is_empty());
        assert_eq!(
            observed_status(DesiredState::Stopped, &want, &[]),
            NetworkStatus::Stopped
        );
    }
}
