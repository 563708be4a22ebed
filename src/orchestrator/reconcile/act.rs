//! One pass's work on one network: rows, ports, plan, actions, and undoing a failed start.
//!
//! Owns what a pass changes: it makes sure every wanted node has a row, allocates ports to the
//! nodes that will run, asks [`crate::orchestrator::plan`] what to do, and does it through the
//! runtime (updates one at a time; before creates, the network is prepared on its subnet; then
//! creates in parallel, then the new nodes dial their peers). A scale-down's removal of running
//! nodes first waits for their pins to be drained to the remaining nodes (`gate_scale_down`,
//! the network `pending` meanwhile). A start that fails part-way is
//! rolled back ([`Orchestrator::roll_back`]) so no container, port, row or network is left half
//! made. It runs under the network's lock, taken by its caller; it must not write the
//! network's status (its caller does).

use super::PassError;
use crate::node::endpoint::Endpoint;
use crate::node::Ports;
use crate::node::{NodeRecord, NodeRef, NodeSecrets, NodeSpec, NodeState};
use crate::orchestrator::error::{ErrorKind, OrchestratorError};
use crate::orchestrator::handle::{new_row, Orchestrator};
use crate::orchestrator::pinset::Gate;
use crate::orchestrator::plan::{desired_nodes, observed_status, on_lost_host, plan, Action};
use crate::store::{DesiredState, NetworkRecord, NetworkStatus, NodeRow};
use crate::sync::lock;

/// What a pass did: the status it observed after acting, the rows as it left them, what it
/// observed last, and a reason for the status: why it put the network back on its old image,
/// or what a scale-down waits for.
/// How many host ports one node's create tries when each is taken before the node starts.
const PORT_ATTEMPTS: usize = 4;

pub(super) type Acted = (NetworkStatus, Vec<NodeRow>, Vec<NodeRecord>, Option<String>);

impl Orchestrator {
    /// Rows and ports, plan, act. `Err(Fatal)` is the reason the network failed.
    pub(super) async fn act(&self, rec: &mut NetworkRecord) -> Result<Acted, PassError> {
        let name = rec.name.clone();
        let mut rows = self.ensure_rows(rec).await?;
        if rec.desired == DesiredState::Running {
            self.allocate_ports(rec, &mut rows).await?;
        }
        let observed = self.observe(&name).await?;
        // Before acting: was anything of this network running, and which nodes ever had a
        // container (their volumes hold data that a rollback must keep)?
        let fresh_start = observed.is_empty();
        let had_container: Vec<u16> = rows
            .iter()
            .filter(|r| r.container_id.is_some())
            .map(|r| r.index)
            .collect();
        let desired = desired_nodes(rec, &rows, self.image_of(rec));
        let specs: Vec<_> = desired.iter().map(|(s, _)| s.clone()).collect();
        let (lost, waiting) = self.hosts_lost(&name, &observed);
        let actions = plan(rec.desired, &specs, &observed, &lost);
        let (actions, draining) = self.gate_scale_down(rec, actions, &observed).await;
        if !actions.is_empty() {
            // The registry drops what no longer runs before anything is restarted: a node that
            // died must not take traffic while this pass brings it back (it is published again
            // once the pass has seen it answer). A pass with nothing to do publishes once, after.
            self.publish(rec, &observed);
        }
        let creates = match self
            .apply(rec, &mut rows, &desired, &actions, &observed)
            .await
        {
            Ok(creates) => creates,
            Err(PassError::RolledBack { image, reason }) => {
                // The network stays on the image its nodes run; its caller stores the record.
                tracing::warn!(network = %name, %image, %reason, "image change rolled back");
                self.emit(
                    &name,
                    crate::orchestrator::events::EventKind::ImageRolledBack,
                    rec.status,
                    None,
                    reason.clone(),
                );
                rec.image = Some(image);
                let observed = self.observe(&name).await?;
                return Ok((
                    observed_status(rec.desired, &specs, &observed),
                    rows,
                    observed,
                    Some(reason),
                ));
            }
            Err(e) => return Err(e),
        };
        if !creates.is_empty() {
            // A fresh start is undone whole; a scale-up only loses its new nodes.
            let undo: Vec<u16> = if fresh_start {
                rows.iter().map(|r| r.index).collect()
            } else {
                creates.clone()
            };
            let prepared = match self.prepare_network(rec, fresh_start).await {
                Ok(created) => created,
                Err(e) if transient(&e) => return Err(PassError::Transient(e)),
                Err(e) => {
                    self.roll_back(rec, &mut rows, &undo, &had_container).await;
                    return Err(PassError::Fatal(format!(
                        "the network's own network could not be made: {e}"
                    )));
                }
            };
            if let Err(reason) = self.create_nodes(&mut rows, &desired, &creates).await {
                self.roll_back(rec, &mut rows, &undo, &had_container).await;
                if prepared && fresh_start {
                    if let Err(e) = self.inner.runtime.release_network(&name).await {
                        tracing::error!(network = %name, error = %e, "rollback: network not removed");
                    }
                }
                return Err(PassError::Fatal(reason));
            }
        }
        let observed = self.observe(&name).await?;
        let status = match draining {
            // The update is not done until the leaving nodes are gone.
            Some(_) => NetworkStatus::Pending,
            None => observed_status(rec.desired, &specs, &observed),
        };
        Ok((status, rows, observed, draining.or(waiting)))
    }

    /// A scale-down's removal of running nodes waits until the pins they hold are on the
    /// remaining nodes ([`Orchestrator::drain_gate`]); meanwhile the remaining nodes are not
    /// re-created for their new peer list either (that would interrupt the copying). Returns
    /// the actions to do now and, while waiting, why.
    async fn gate_scale_down(
        &self,
        rec: &NetworkRecord,
        actions: Vec<Action>,
        observed: &[NodeRecord],
    ) -> (Vec<Action>, Option<String>) {
        let leaving: Vec<(u16, Endpoint)> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Remove { index } if *index >= rec.replicas => Some(*index),
                _ => None,
            })
            .filter_map(|index| {
                let node = observed
                    .iter()
                    .find(|o| o.spec.node.index == index && o.state == NodeState::Running)?;
                Some((index, node.endpoints.as_ref()?.api.clone()))
            })
            .collect();
        if rec.desired != DesiredState::Running || leaving.is_empty() {
            self.end_drain(&rec.name);
            return (actions, None);
        }
        let Gate::Wait { pending, left } = self.drain_gate(rec, leaving.clone()).await else {
            return (actions, None);
        };
        // Checked again when the pinset loop reports nothing pending, or at the deadline.
        self.schedule(rec.name.clone(), left);
        let nodes: Vec<String> = leaving.iter().map(|(i, _)| i.to_string()).collect();
        let waits = |index: &u16| leaving.iter().any(|(i, _)| i == index);
        let now: Vec<Action> = actions
            .into_iter()
            .filter(|a| match a {
                Action::Remove { index } => !waits(index),
                Action::Update { .. } => false,
                _ => true,
            })
            .collect();
        let to_go = pending.map_or_else(|| "counting".to_string(), |n| format!("{n} to go"));
        let why = format!(
            "copying the pins of node(s) {} to the remaining nodes before removing them ({to_go})",
            nodes.join(", ")
        );
        (now, Some(why))
    }

    /// Nodes of `name` whose host is down: those past the grace period (to relocate now), and
    /// why the network is degraded while the others wait (a pass is scheduled for when their
    /// grace ends). Forgets nodes whose host is back.
    fn hosts_lost(
        &self,
        name: &crate::node::NetworkName,
        observed: &[NodeRecord],
    ) -> (Vec<u16>, Option<String>) {
        let grace = self.inner.cfg.host_lost_grace;
        let now = std::time::Instant::now();
        let mut down = lock(&self.inner.hosts_down);
        down.retain(|n, _| {
            &n.network != name
                || observed
                    .iter()
                    .any(|o| &o.spec.node == n && on_lost_host(o))
        });
        let mut lost = Vec::new();
        let mut waiting = Vec::new();
        let mut next: Option<std::time::Duration> = None;
        for o in observed.iter().filter(|o| on_lost_host(o)) {
            let since = *down.entry(o.spec.node.clone()).or_insert(now);
            let host = o.host.as_ref().map_or("?", |h| h.name.as_str());
            let left = grace.saturating_sub(now.duration_since(since));
            if left.is_zero() {
                lost.push(o.spec.node.index);
            } else {
                next = Some(next.map_or(left, |n| n.min(left)));
                waiting.push(format!("node {} (host {host})", o.spec.node.index));
            }
        }
        drop(down);
        if let Some(wait) = next {
            self.schedule(name.clone(), wait);
        }
        let reason = (!waiting.is_empty()).then(|| {
            format!(
                "host down: {}; each is re-created on another host {} after its host was lost unless the host returns",
                waiting.join(", "),
                humantime::format_duration(grace)
            )
        });
        (lost, reason)
    }

    /// The network's rows, sorted, with a new row (fresh identity) for every wanted node that
    /// has none.
    async fn ensure_rows(&self, rec: &NetworkRecord) -> Result<Vec<NodeRow>, PassError> {
        let store = &self.inner.store;
        let mut rows = store.list_nodes(&rec.name).await?;
        for index in 0..rec.replicas {
            if !rows.iter().any(|r| r.index == index) {
                let row = new_row(&rec.name, index);
                store.put_node(&row).await?;
                rows.push(row);
            }
        }
        rows.sort_by_key(|r| r.index);
        Ok(rows)
    }

    /// Ports for every wanted node that has none; all or nothing.
    async fn allocate_ports(
        &self,
        rec: &NetworkRecord,
        rows: &mut [NodeRow],
    ) -> Result<(), PassError> {
        let store = &self.inner.store;
        let mut allocated = Vec::new();
        let mut failure = None;
        for row in rows.iter_mut().filter(|r| r.index < rec.replicas) {
            if row.ports.swarm.is_some() {
                continue;
            }
            let result = lock(&self.inner.ports).allocate();
            match result {
                Ok(ports) => {
                    row.ports = ports;
                    allocated.push(row.index);
                    if let Err(e) = store.put_node(row).await {
                        failure = Some(PassError::from(e));
                        break;
                    }
                }
                Err(e) => {
                    failure = Some(PassError::Fatal(e.to_string()));
                    break;
                }
            }
        }
        let Some(failure) = failure else {
            return Ok(());
        };
        // Give back what this pass took; nothing was started yet.
        for row in rows.iter_mut().filter(|r| allocated.contains(&r.index)) {
            lock(&self.inner.ports).release(&row.ports);
            row.ports = Ports::default();
            let _ = store.put_node(row).await;
        }
        Err(failure)
    }

    /// Does every action but the creates, in order; returns the nodes to create.
    ///
    /// Updates run one at a time, each node ready before the next. When the first node moved to
    /// a new image (no node of the network ran it before this pass) does not come up on it, the
    /// runtime has put that node back on its old image; this stops there, leaving the other
    /// nodes untouched, and answers [`PassError::RolledBack`] so the network goes back to the
    /// old image too. A later node failing is fatal: the nodes before it run the new image
    /// (their repos may be migrated), so there is no way back to the old one.
    async fn apply(
        &self,
        rec: &NetworkRecord,
        rows: &mut [NodeRow],
        desired: &[(NodeSpec, NodeSecrets)],
        actions: &[Action],
        observed: &[NodeRecord],
    ) -> Result<Vec<u16>, PassError> {
        // Images some node of the network runs (or ran successfully in this pass).
        let mut images_in_use: Vec<&str> = observed.iter().map(|o| o.spec.image.as_str()).collect();
        let (store, runtime) = (&self.inner.store, &self.inner.runtime);
        let name = &rec.name;
        let node = |index: u16| NodeRef {
            network: name.clone(),
            index,
        };
        let mut creates = Vec::new();
        for action in actions {
            match *action {
                Action::Remove { index } => {
                    runtime.remove_node(&node(index)).await?;
                    if let Some(row) = rows.iter().find(|r| r.index == index) {
                        lock(&self.inner.ports).release(&row.ports);
                    }
                    if index >= rec.replicas {
                        store.delete_node(name, index).await?;
                    }
                }
                Action::Stop { index } => {
                    runtime.remove_container(&node(index)).await?;
                    if let Some(row) = rows.iter_mut().find(|r| r.index == index) {
                        // `container_id` stays: it records that this node has data.
                        lock(&self.inner.ports).release(&row.ports);
                        row.ports = Ports::default();
                        store.put_node(row).await?;
                    }
                }
                Action::Start { index } => {
                    if let Some(wait) = self.restart_delay(&node(index)) {
                        self.schedule(name.clone(), wait);
                        continue;
                    }
                    let turn = self.start_turn().await;
                    let started = runtime.start_node(&node(index)).await;
                    drop(turn);
                    if let Err(e) = started {
                        self.note_error(rows, index, &e.to_string()).await;
                    }
                }
                Action::Update { index } => {
                    if let Some((spec, secrets)) = find(desired, index) {
                        let was = observed
                            .iter()
                            .find(|o| o.spec.node.index == index)
                            .map(|o| o.spec.image.as_str());
                        let first_on_image = was.is_some_and(|w| w != spec.image)
                            && !images_in_use.contains(&spec.image.as_str());
                        let turn = self.start_turn().await;
                        let updated = runtime.update_node(spec, secrets).await;
                        drop(turn);
                        match (updated, was) {
                            (Ok(r), _) => {
                                self.note_container(rows, index, &r.container_id).await;
                                images_in_use.push(spec.image.as_str());
                            }
                            (Err(e), Some(old)) if first_on_image => {
                                let reason = format!(
                                    "node {index} did not come up on image `{}`, so it was put back \
                                     on `{old}` and the other nodes were left as they were: {e}",
                                    spec.image
                                );
                                self.note_error(rows, index, &reason).await;
                                return Err(PassError::RolledBack {
                                    image: old.to_owned(),
                                    reason,
                                });
                            }
                            (Err(e), _) => {
                                return Err(PassError::Fatal(format!("updating node {index}: {e}")))
                            }
                        }
                    }
                }
                Action::Create { index } => creates.push(index),
                Action::Relocate { index } => {
                    tracing::warn!(node = %node(index), "its host is lost: re-creating it on another host");
                    runtime.remove_container(&node(index)).await?;
                    lock(&self.inner.hosts_down).remove(&node(index));
                    self.emit(
                        name,
                        crate::orchestrator::events::EventKind::NodeRelocated,
                        rec.status,
                        Some(index),
                        format!("node {index}'s host was lost for longer than the grace period"),
                    );
                    creates.push(index);
                }
            }
        }
        Ok(creates)
    }

    /// Creates the nodes `creates` in parallel; once every one is ready, each dials its peers.
    /// `Err` is the first failure's reason (the caller rolls back).
    async fn create_nodes(
        &self,
        rows: &mut [NodeRow],
        desired: &[(NodeSpec, NodeSecrets)],
        creates: &[u16],
    ) -> Result<(), String> {
        let runtime = &self.inner.runtime;
        let results = futures_util::future::join_all(creates.iter().filter_map(|i| {
            let (spec, secrets) = find(desired, *i)?;
            Some(async move {
                // The node's readiness deadline starts once it has its turn.
                let _turn = self.start_turn().await;
                let (result, moved) = self.create_moving_port(spec, secrets).await;
                (*i, result, moved)
            })
        }))
        .await;
        let mut failure = None;
        for (index, result, moved) in results {
            if let Some(ports) = moved {
                // The row holds the node's port from now on (a rollback releases this one).
                if let Some(row) = rows.iter_mut().find(|r| r.index == index) {
                    row.ports = ports;
                }
            }
            match result {
                Ok(r) => self.note_container(rows, index, &r.container_id).await,
                Err(e) => {
                    let msg = e.to_string();
                    self.note_error(rows, index, &msg).await;
                    failure.get_or_insert(format!("node {index} did not start: {msg}"));
                }
            }
        }
        if let Some(reason) = failure {
            return Err(reason);
        }
        // Every node is ready now: mesh the new ones at once rather than when kubo's peering
        // retries a dial that came before its peer listened.
        futures_util::future::join_all(
            creates
                .iter()
                .filter_map(|i| find(desired, *i))
                .map(|(spec, _)| runtime.connect_peers(spec)),
        )
        .await;
        Ok(())
    }

    /// Creates one node; when its host port was taken by another program after it was
    /// allocated (an outgoing connection can take any port of the kernel's ephemeral range),
    /// moves the node to another free port and tries again, a few times. Returns the result
    /// and the node's ports when they changed (the caller records them).
    async fn create_moving_port(
        &self,
        spec: &NodeSpec,
        secrets: &NodeSecrets,
    ) -> (Result<NodeRecord, crate::node::RuntimeError>, Option<Ports>) {
        let runtime = &self.inner.runtime;
        let mut spec = std::borrow::Cow::Borrowed(spec);
        let mut moved = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = match runtime.create_node(&spec, secrets).await {
                Err(crate::node::RuntimeError::PortTaken { port, detail }) => {
                    tracing::warn!(node = %spec.node, port, %detail, "host port taken outside nexus; moving the node to another");
                    port
                }
                other => return (other, moved),
            };
            // The new port is taken before the old one is given back, so it differs.
            let next = {
                let mut ports = lock(&self.inner.ports);
                let next = ports.allocate();
                ports.release(&Ports { swarm: Some(port) });
                next
            };
            match next {
                Ok(ports) => {
                    spec.to_mut().ports = ports;
                    moved = Some(ports);
                }
                Err(e) => {
                    let err = crate::node::RuntimeError::Docker(format!(
                        "host port {port} was taken by another program and no other is free: {e}"
                    ));
                    // Nothing holds a port for this node any more.
                    return (Err(err), Some(Ports::default()));
                }
            }
        }
        let err = crate::node::RuntimeError::Docker(format!(
            "host ports kept being taken by other programs ({PORT_ATTEMPTS} tries); \
             move `ports.swarm` out of the kernel's ephemeral range \
             (/proc/sys/net/ipv4/ip_local_port_range)"
        ));
        (Err(err), moved)
    }

    /// Undoes a start that failed part-way for the nodes `undo`: removes their containers (and
    /// their volumes when they never had a container before, i.e. hold no data of the user's),
    /// and releases their ports.
    async fn roll_back(
        &self,
        rec: &NetworkRecord,
        rows: &mut [NodeRow],
        undo: &[u16],
        had_container: &[u16],
    ) {
        let name = &rec.name;
        tracing::warn!(network = %name, nodes = ?undo, "start failed; rolling back");
        for row in rows.iter_mut().filter(|r| undo.contains(&r.index)) {
            let node = NodeRef {
                network: name.clone(),
                index: row.index,
            };
            let keeps_data = had_container.contains(&row.index);
            let result = if keeps_data {
                self.inner.runtime.remove_container(&node).await
            } else {
                self.inner.runtime.remove_node(&node).await
            };
            if let Err(e) = result {
                tracing::error!(%node, error = %e, "rollback: node not removed");
            }
            lock(&self.inner.ports).release(&row.ports);
            row.ports = Ports::default();
            if !keeps_data {
                row.container_id = None;
            }
            if let Err(e) = self.inner.store.put_node(row).await {
                tracing::error!(%node, error = %e, "rollback: node row not saved");
            }
        }
    }

    async fn note_error(&self, rows: &mut [NodeRow], index: u16, msg: &str) {
        if let Some(row) = rows.iter_mut().find(|r| r.index == index) {
            row.last_error = Some(msg.chars().take(2000).collect());
            let _ = self.inner.store.put_node(row).await;
        }
    }

    async fn note_container(&self, rows: &mut [NodeRow], index: u16, id: &str) {
        if let Some(row) = rows.iter_mut().find(|r| r.index == index) {
            row.container_id = Some(id.to_owned());
            row.last_error = None;
            let _ = self.inner.store.put_node(row).await;
        }
    }
}

/// Whether a failure is the engine or the store being briefly unreachable (retry), rather
/// than something the operator must fix.
fn transient(e: &OrchestratorError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::RuntimeUnavailable | ErrorKind::StoreUnavailable
    )
}

fn find(desired: &[(NodeSpec, NodeSecrets)], index: u16) -> Option<&(NodeSpec, NodeSecrets)> {
    desired.iter().find(|(s, _)| s.node.index == index)
}
