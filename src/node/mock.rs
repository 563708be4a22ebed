//! An in-memory [`NodeRuntime`] for unit tests of the logic above the runtime.
//!
//! Owns a map of fake nodes and an event channel, and lets a test make chosen nodes fail to
//! create. It must never stand in for the Docker runtime in integration tests: it proves the
//! callers' logic, not that nodes run.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use ipnet::Ipv4Net;

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use tokio::sync::broadcast;

use super::endpoint::{Endpoint, NodeEndpoints};
use super::kubo_version::KuboVersion;
use super::runtime::{
    NodeCpu, NodeDiagnostics, NodeEvent, NodeEventKind, NodeRecord, NodeRuntime, NodeState,
    NodeStats, NotReadyReason, Result, RuntimeError,
};
use super::spec::{NetworkName, NetworkSpec, NodeRef, NodeSecrets, NodeSpec, Ports, SpecError};

#[derive(Default)]
struct State {
    nodes: BTreeMap<NodeRef, NodeRecord>,
    fail_create: HashSet<NodeRef>,
    /// Nodes whose next `create_node` finds their host port taken by another program.
    port_taken: HashSet<NodeRef>,
    /// Calls (by prefix, e.g. `list`) that fail once as if Docker were unreachable.
    fail_once: Vec<String>,
    next_id: u64,
    calls: Vec<String>,
    /// Networks prepared, with their subnets.
    networks: BTreeMap<NetworkName, Option<Ipv4Net>>,
    /// Subnets of networks that are not ours; `listed: false` ones are refused by
    /// `prepare_network` but not reported by `foreign_subnets` (a network made meanwhile).
    foreign: Vec<(Ipv4Net, String, bool)>,
    /// What `probe_image` answers per image (others: kubo 0.43.1, repo 18).
    images: BTreeMap<String, KuboVersion>,
    /// Images no node becomes ready on: `update_node` to one fails, the node stays as it was.
    broken_images: HashSet<String>,
    /// Nodes whose next `update_node` fails (the node stays as it was).
    fail_update: HashSet<NodeRef>,
    /// The host's cores, and the CPU time each running node adds per `node_cpu` reading
    /// (`None`: the runtime cannot say, as by default).
    cpu: Option<(f64, std::time::Duration)>,
    /// CPU time read so far per node.
    cpu_used: BTreeMap<NodeRef, std::time::Duration>,
}

/// Fake runtime: nodes are records in memory.
pub struct MockRuntime {
    state: Mutex<State>,
    events: broadcast::Sender<NodeEvent>,
    /// How long a `create_node` takes (zero: at once).
    create_delay: Mutex<std::time::Duration>,
    /// Creates in flight now, and the most there ever were.
    creating: AtomicUsize,
    most_creating: AtomicUsize,
}

impl Default for MockRuntime {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            events: broadcast::channel(4096).0,
            create_delay: Mutex::default(),
            creating: AtomicUsize::new(0),
            most_creating: AtomicUsize::new(0),
        }
    }
}

impl MockRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next `create_node` of `node` fail as if it never became ready.
    pub fn fail_create(&self, node: NodeRef) {
        self.lock().fail_create.insert(node);
    }

    /// Makes the next `create_node` of `node` fail as if another program had bound its host
    /// port meanwhile (the call is recorded as `port-taken PORT`).
    pub fn port_taken(&self, node: NodeRef) {
        self.lock().port_taken.insert(node);
    }

    /// Makes the next call whose name starts with `prefix` (`list`, `remove-container …`) fail
    /// as if the Docker daemon were briefly unreachable.
    pub fn fail_once(&self, prefix: &str) {
        self.lock().fail_once.push(prefix.to_owned());
    }

    /// Puts a network that is not ours on `subnet`. `listed`: whether `foreign_subnets`
    /// reports it (else only `prepare_network` finds out, as when it appeared a moment ago).
    pub fn add_foreign_subnet(&self, subnet: Ipv4Net, name: &str, listed: bool) {
        self.lock().foreign.push((subnet, name.to_owned(), listed));
    }

    /// Makes `probe_image(image)` answer kubo `version` with repo version `repo`.
    pub fn set_image(&self, image: &str, version: (u32, u32, u32), repo: u32) {
        let v = KuboVersion {
            version: format!("{}.{}.{}", version.0, version.1, version.2),
            number: version,
            repo,
        };
        self.lock().images.insert(image.to_owned(), v);
    }

    /// Makes the next `update_node` of `node` fail as if it never became ready.
    pub fn fail_update(&self, node: NodeRef) {
        self.lock().fail_update.insert(node);
    }

    /// Makes every node fail to come up on `image` (its previous container is kept).
    pub fn break_image(&self, image: &str) {
        self.lock().broken_images.insert(image.to_owned());
    }

    /// The subnet a prepared network is on (`Some(None)`: the engine's defaults).
    pub fn network_subnet(&self, network: &NetworkName) -> Option<Option<Ipv4Net>> {
        self.lock().networks.get(network).copied()
    }

    /// Makes every `create_node` take `delay` (as a node's start does).
    pub fn set_create_delay(&self, delay: std::time::Duration) {
        *crate::sync::lock(&self.create_delay) = delay;
    }

    /// Reports `cores` for the host, and each running node as using `per_read` more CPU time
    /// at every `node_cpu` reading.
    pub fn set_cpu(&self, cores: f64, per_read: std::time::Duration) {
        self.lock().cpu = Some((cores, per_read));
    }

    /// The most `create_node` calls that were ever in flight at once.
    pub fn most_concurrent_creates(&self) -> usize {
        self.most_creating.load(Ordering::SeqCst)
    }

    /// The runtime methods called so far, e.g. `create nexus-a-0`.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// Simulates a container dying (as `docker kill` would).
    pub fn kill(&self, node: &NodeRef) {
        let mut st = self.lock();
        if let Some(r) = st.nodes.get_mut(node) {
            r.state = NodeState::Exited { code: 137 };
            let _ = self.events.send(NodeEvent {
                node: node.clone(),
                kind: NodeEventKind::Die {
                    exit_code: Some(137),
                },
                time: 0,
            });
        }
    }

    fn injected(st: &mut State, call: &str) -> Result<()> {
        if let Some(i) = st
            .fail_once
            .iter()
            .position(|p| call.starts_with(p.as_str()))
        {
            st.fail_once.remove(i);
            return Err(RuntimeError::DockerUnavailable {
                detail: format!("mock: injected failure of `{call}`"),
            });
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic in another test thread must not hide this one's result.
        crate::sync::lock(&self.state)
    }

    /// Sends a runtime event without changing any node (as a burst of Docker events would).
    pub fn send_event(&self, node: &NodeRef, kind: NodeEventKind) {
        self.emit(node, kind);
    }

    fn emit(&self, node: &NodeRef, kind: NodeEventKind) {
        let _ = self.events.send(NodeEvent {
            node: node.clone(),
            kind,
            time: 0,
        });
    }
}

#[async_trait::async_trait]
impl NodeRuntime for MockRuntime {
    async fn probe_image(&self, image: &str) -> Result<KuboVersion> {
        let mut st = self.lock();
        st.calls.push(format!("probe {image}"));
        Ok(st.images.get(image).cloned().unwrap_or(KuboVersion {
            version: "0.43.1".into(),
            number: (0, 43, 1),
            repo: 18,
        }))
    }

    async fn create_node(&self, spec: &NodeSpec, secrets: &NodeSecrets) -> Result<NodeRecord> {
        spec.validate()?;
        secrets.check(spec)?;
        let delay = *crate::sync::lock(&self.create_delay);
        if !delay.is_zero() {
            let now = self.creating.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_creating.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            self.creating.fetch_sub(1, Ordering::SeqCst);
        }
        let mut st = self.lock();
        st.calls
            .push(format!("create {}", spec.node.container_name()));
        if st.nodes.contains_key(&spec.node) {
            return Err(RuntimeError::AlreadyExists {
                node: spec.node.clone(),
            });
        }
        if st.port_taken.remove(&spec.node) {
            let port = spec.ports.swarm.unwrap_or(0);
            st.calls.push(format!("port-taken {port}"));
            return Err(RuntimeError::PortTaken {
                port,
                detail: "mock: listen tcp4 0.0.0.0: bind: address already in use".into(),
            });
        }
        if st.fail_create.remove(&spec.node) {
            return Err(RuntimeError::NotReady {
                node: spec.node.clone(),
                reason: NotReadyReason::Exited(1),
                logs: "mock: injected failure".into(),
            });
        }
        // As Docker's runtime does when nobody prepared the network: the engine's defaults.
        st.networks.entry(spec.node.network.clone()).or_insert(None);
        st.next_id += 1;
        let base = 20000 + (st.next_id as u16) * 3;
        let record = NodeRecord {
            spec: spec.clone(),
            container_id: format!("mock{:08}", st.next_id),
            state: NodeState::Running,
            ports: Ports {
                swarm: Some(spec.ports.swarm.unwrap_or(base)),
            },
            endpoints: Some(NodeEndpoints {
                api: Endpoint::Tcp(SocketAddr::from(([127, 0, 0, 1], base + 1))),
                gateway: Endpoint::Tcp(SocketAddr::from(([127, 0, 0, 1], base + 2))),
            }),
            started_at: Some("2026-01-01T00:00:00Z".into()),
            host: None,
        };
        st.nodes.insert(spec.node.clone(), record.clone());
        drop(st);
        self.emit(&spec.node, NodeEventKind::Start);
        Ok(record)
    }

    async fn start_node(&self, node: &NodeRef) -> Result<NodeRecord> {
        let mut st = self.lock();
        st.calls.push(format!("start {}", node.container_name()));
        let r = st
            .nodes
            .get_mut(node)
            .ok_or_else(|| RuntimeError::NotFound { node: node.clone() })?;
        r.state = NodeState::Running;
        let r = r.clone();
        drop(st);
        self.emit(node, NodeEventKind::Start);
        Ok(r)
    }

    async fn stop_node(&self, node: &NodeRef) -> Result<()> {
        let mut st = self.lock();
        st.calls.push(format!("stop {}", node.container_name()));
        let r = st
            .nodes
            .get_mut(node)
            .ok_or_else(|| RuntimeError::NotFound { node: node.clone() })?;
        r.state = NodeState::Exited { code: 0 };
        drop(st);
        self.emit(node, NodeEventKind::Die { exit_code: Some(0) });
        Ok(())
    }

    async fn remove_container(&self, node: &NodeRef) -> Result<()> {
        let mut st = self.lock();
        let call = format!("remove-container {}", node.container_name());
        Self::injected(&mut st, &call)?;
        st.calls.push(call);
        st.nodes.remove(node);
        Ok(())
    }

    async fn remove_node(&self, node: &NodeRef) -> Result<()> {
        let mut st = self.lock();
        st.calls.push(format!("remove {}", node.container_name()));
        st.nodes.remove(node);
        Ok(())
    }

    async fn remove_network(&self, network: &NetworkName) -> Result<()> {
        let mut st = self.lock();
        st.calls.push(format!("remove-network {network}"));
        st.nodes.retain(|n, _| &n.network != network);
        st.networks.remove(network);
        Ok(())
    }

    async fn prepare_network(&self, spec: &NetworkSpec) -> Result<bool> {
        let mut st = self.lock();
        st.calls.push(format!("prepare-network {}", spec.name));
        Self::injected(&mut st, &format!("prepare-network {}", spec.name))?;
        if st.networks.contains_key(&spec.name) {
            return Ok(false);
        }
        if let Some(subnet) = spec.subnet {
            let overlaps =
                |o: &Ipv4Net| o.contains(&subnet.network()) || subnet.contains(&o.network());
            let taken = st
                .foreign
                .iter()
                .find(|(o, _, _)| overlaps(o))
                .map(|(_, name, _)| name.clone())
                .or_else(|| {
                    st.networks
                        .iter()
                        .find(|(_, o)| o.as_ref().is_some_and(overlaps))
                        .map(|(n, _)| n.docker_network())
                });
            if let Some(by) = taken {
                return Err(RuntimeError::SubnetTaken {
                    subnet,
                    detail: format!("mock: overlaps network `{by}`"),
                });
            }
        }
        st.networks.insert(spec.name.clone(), spec.subnet);
        Ok(true)
    }

    async fn release_network(&self, network: &NetworkName) -> Result<()> {
        let mut st = self.lock();
        st.calls.push(format!("release-network {network}"));
        if !st.nodes.keys().any(|n| &n.network == network) {
            st.networks.remove(network);
        }
        Ok(())
    }

    async fn foreign_subnets(&self) -> Result<Vec<(Ipv4Net, String)>> {
        let st = self.lock();
        Ok(st
            .foreign
            .iter()
            .filter(|(_, _, listed)| *listed)
            .map(|(s, n, _)| (*s, n.clone()))
            .collect())
    }

    async fn update_node(&self, spec: &NodeSpec, secrets: &NodeSecrets) -> Result<NodeRecord> {
        spec.validate()?;
        secrets.check(spec)?;
        let mut st = self.lock();
        st.calls
            .push(format!("update {}", spec.node.container_name()));
        let r = st
            .nodes
            .get_mut(&spec.node)
            .ok_or_else(|| RuntimeError::NotFound {
                node: spec.node.clone(),
            })?;
        if r.spec.peer_id != spec.peer_id {
            return Err(SpecError::IdentityMismatch(r.spec.peer_id.clone()).into());
        }
        if st.broken_images.contains(&spec.image) || st.fail_update.remove(&spec.node) {
            return Err(RuntimeError::NotReady {
                node: spec.node.clone(),
                reason: NotReadyReason::Exited(1),
                logs: format!("mock: {} does not start", spec.image),
            });
        }
        let r = st
            .nodes
            .get_mut(&spec.node)
            .ok_or_else(|| RuntimeError::NotFound {
                node: spec.node.clone(),
            })?;
        r.spec = spec.clone();
        Ok(r.clone())
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        let mut st = self.lock();
        Self::injected(&mut st, "list")?;
        Ok(st.nodes.values().cloned().collect())
    }

    async fn connect_peers(&self, spec: &NodeSpec) -> usize {
        let mut st = self.lock();
        st.calls
            .push(format!("connect {}", spec.node.container_name()));
        spec.peers
            .iter()
            .filter(|p| {
                st.nodes
                    .values()
                    .any(|r| r.spec.peer_id == p.peer_id && r.state == NodeState::Running)
            })
            .count()
    }

    async fn list_network_nodes(&self, network: &NetworkName) -> Result<Vec<NodeRecord>> {
        let mut st = self.lock();
        Self::injected(&mut st, "list")?;
        // Nodes are ordered by network, then index: one range holds a network's nodes.
        let first = NodeRef {
            network: network.clone(),
            index: 0,
        };
        Ok(st
            .nodes
            .range(first..)
            .take_while(|(n, _)| &n.network == network)
            .map(|(_, r)| r.clone())
            .collect())
    }

    async fn host_cpus(&self) -> Result<Option<f64>> {
        Ok(self.lock().cpu.map(|(cores, _)| cores))
    }

    async fn node_cpu(&self, node: &NodeRef) -> Result<Option<NodeCpu>> {
        let mut st = self.lock();
        let Some((_, per_read)) = st.cpu else {
            return Ok(None);
        };
        let running = st
            .nodes
            .get(node)
            .is_some_and(|r| r.state == NodeState::Running);
        if !running {
            return Ok(None);
        }
        let used = st.cpu_used.entry(node.clone()).or_default();
        *used += per_read;
        Ok(Some(NodeCpu {
            used: *used,
            started_at: "2026-01-01T00:00:00Z".into(),
        }))
    }

    async fn node_stats(&self, node: &NodeRef) -> Result<NodeStats> {
        let st = self.lock();
        let r = st
            .nodes
            .get(node)
            .ok_or_else(|| RuntimeError::NotFound { node: node.clone() })?;
        let running = r.state == NodeState::Running;
        Ok(NodeStats {
            memory_limit_bytes: r.spec.resources.memory_bytes,
            peer_count: running.then_some(r.spec.peers.len()),
            ..Default::default()
        })
    }

    async fn node_diagnostics(&self, node: &NodeRef) -> Result<NodeDiagnostics> {
        let st = self.lock();
        let r = st
            .nodes
            .get(node)
            .ok_or_else(|| RuntimeError::NotFound { node: node.clone() })?;
        Ok(NodeDiagnostics {
            state: Some(r.state),
            logs: format!("mock: {} runs as {}\n", node, r.spec.peer_id),
            peers: Some(r.spec.peers.iter().map(|p| p.peer_id.clone()).collect()),
            config: None,
        })
    }

    fn watch(&self) -> BoxStream<'static, Result<NodeEvent>> {
        let rx = self.events.subscribe();
        futures_util::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => return Some((Ok(ev), rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::spec::{plan_network, Resources};
    use crate::node::swarm_key::SwarmKey;

    #[tokio::test]
    async fn mock_follows_the_trait_contract() {
        let rt = MockRuntime::new();
        let net = NetworkName::new("mock").unwrap();
        let key = SwarmKey::generate().unwrap();
        let plan = plan_network(&net, 2, "img:1", Resources::default(), &key).unwrap();
        let mut events = rt.watch();
        rt.fail_create(plan[1].0.node.clone());
        let r0 = rt.create_node(&plan[0].0, &plan[0].1).await.unwrap();
        assert_eq!(r0.state, NodeState::Running);
        assert!(rt.create_node(&plan[1].0, &plan[1].1).await.is_err());
        assert!(matches!(
            rt.create_node(&plan[0].0, &plan[0].1).await,
            Err(RuntimeError::AlreadyExists { .. })
        ));
        assert_eq!(rt.list_nodes().await.unwrap().len(), 1);
        let ev = events.next().await.unwrap().unwrap();
        assert_eq!(ev.kind, NodeEventKind::Start);
        rt.kill(&plan[0].0.node);
        let ev = events.next().await.unwrap().unwrap();
        assert!(matches!(ev.kind, NodeEventKind::Die { .. }));
        // Secrets of another node are refused.
        assert!(rt.update_node(&plan[0].0, &plan[1].1).await.is_err());
        rt.remove_network(&net).await.unwrap();
        assert!(rt.list_nodes().await.unwrap().is_empty());
    }
}
