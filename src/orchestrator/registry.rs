//! The in-memory registry: which nodes of which network can serve traffic right now.
//!
//! Owns a snapshot per network (access settings, disk limit and its ready nodes' RPC API and
//! gateway endpoints) for hot reads: the delegator resolves network → ready nodes on every
//! request without touching the store. Only the reconciler writes it; readers get cheap `Arc`
//! snapshots and never block writers for long. It must not decide anything itself.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::access::Access;
use crate::node::endpoint::Endpoint;
use crate::node::NetworkName;
use crate::sync::{read, write};

/// A node that answered as its expected peer and may receive traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadyNode {
    pub index: u16,
    pub peer_id: String,
    pub api: Endpoint,
    pub gateway: Endpoint,
}

/// What the delegator needs to know about one network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkEntry {
    pub name: NetworkName,
    /// Users, gateway, CORS origins and the RPC policy on top of the delegator's defaults.
    pub access: Access,
    /// Ready nodes, ordered by index (empty while none is ready).
    pub nodes: Vec<ReadyNode>,
    /// Each node's disk limit in bytes (the network's `disk`), which the delegator enforces on
    /// write commands; `None`: no limit (entries built by hand in tests and benchmarks).
    pub disk_bytes: Option<u64>,
}

/// Shared, cheaply cloneable registry.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    inner: Arc<RwLock<HashMap<NetworkName, Arc<NetworkEntry>>>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces a network's entry (reconciler only).
    pub fn publish(&self, mut entry: NetworkEntry) {
        entry.nodes.sort_by_key(|n| n.index);
        let mut map = write(&self.inner);
        map.insert(entry.name.clone(), Arc::new(entry));
    }

    /// Forgets a network (reconciler only).
    pub fn remove(&self, name: &NetworkName) {
        let mut map = write(&self.inner);
        map.remove(name);
    }

    /// The current entry of a network.
    pub fn get(&self, name: &NetworkName) -> Option<Arc<NetworkEntry>> {
        let map = read(&self.inner);
        map.get(name).cloned()
    }

    /// Names of every registered network, sorted.
    pub fn names(&self) -> Vec<NetworkName> {
        let map = read(&self.inner);
        let mut names: Vec<_> = map.keys().cloned().collect();
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(index: u16) -> ReadyNode {
        ReadyNode {
            index,
            peer_id: format!("peer{index}"),
            api: Endpoint::Tcp(([127, 0, 0, 1], 5001 + index).into()),
            gateway: Endpoint::Tcp(([127, 0, 0, 1], 8001 + index).into()),
        }
    }

    #[test]
    fn snapshots_are_isolated_from_later_writes() {
        let reg = Registry::new();
        let name = NetworkName::new("reg").unwrap();
        reg.publish(NetworkEntry {
            name: name.clone(),
            access: Access {
                users: vec!["alice".into()],
                ..Access::default()
            },
            nodes: vec![node(2), node(0)],
            disk_bytes: None,
        });
        let snap = reg.get(&name).unwrap();
        assert_eq!(
            snap.nodes.iter().map(|n| n.index).collect::<Vec<_>>(),
            [0, 2]
        );
        reg.publish(NetworkEntry {
            nodes: vec![],
            ..(*snap).clone()
        });
        assert_eq!(snap.nodes.len(), 2, "an old snapshot must not change");
        assert!(reg.get(&name).unwrap().nodes.is_empty());
        assert_eq!(reg.names(), vec![name.clone()]);
        reg.remove(&name);
        assert!(reg.get(&name).is_none());
    }

    #[test]
    fn concurrent_readers_and_a_writer() {
        let reg = Registry::new();
        let name = NetworkName::new("conc").unwrap();
        let writer = {
            let reg = reg.clone();
            let name = name.clone();
            std::thread::spawn(move || {
                for i in 0..500u16 {
                    reg.publish(NetworkEntry {
                        name: name.clone(),
                        access: Access {
                            gateway_public: true,
                            ..Access::default()
                        },
                        nodes: (0..(i % 4)).map(node).collect(),
                        disk_bytes: None,
                    });
                }
            })
        };
        for _ in 0..500 {
            if let Some(e) = reg.get(&name) {
                // Every snapshot is internally consistent: indices 0..n.
                let idx: Vec<u16> = e.nodes.iter().map(|n| n.index).collect();
                assert_eq!(idx, (0..idx.len() as u16).collect::<Vec<_>>());
            }
        }
        writer.join().unwrap();
    }
}
