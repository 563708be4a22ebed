//! Existing nodes: start, stop, update (CPU live, anything else by re-creating the container
//! on the same volume), removal of a container, a node (with its data) or a whole network, and
//! dialling a node's peers. Touches only what is ours; must not create nodes other than through
//! [`create`](super::create) nor decide which nodes should exist.

use bollard::models::ContainerUpdateBody;
use bollard::query_parameters::{
    ListContainersOptions, ListVolumesOptions, RemoveContainerOptions, RemoveVolumeOptions,
    StopContainerOptions,
};

use super::client::{docker_err, is_status};
use super::DockerRuntime;
use crate::node::labels;
use crate::node::runtime::{NodeRecord, Result, RuntimeError};
use crate::node::spec::{NetworkName, NodeRef, NodeSecrets, NodeSpec, SpecError};

impl DockerRuntime {
    /// Removes a container by name if it is ours (force: stops it first).
    pub(super) async fn remove_container_by_name(&self, name: &str) -> Result<()> {
        let opts = RemoveContainerOptions {
            force: true,
            v: false,
            link: false,
        };
        match self.docker.remove_container(name, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(docker_err(e)),
        }
    }

    /// Removes a volume by name (absent is fine).
    pub(super) async fn remove_volume(&self, name: &str) -> Result<()> {
        match self
            .docker
            .remove_volume(name, Some(RemoveVolumeOptions { force: true }))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(docker_err(e)),
        }
    }

    /// Every nexus container of a network, running or not.
    async fn network_containers(
        &self,
        network: &NetworkName,
    ) -> Result<Vec<bollard::models::ContainerSummary>> {
        self.docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(self.network_filter(network)),
                ..Default::default()
            }))
            .await
            .map_err(docker_err)
    }

    /// Removes the network's bridge network if it is ours and no node container uses it.
    pub(super) async fn remove_network_if_unused(&self, network: &NetworkName) -> Result<()> {
        let _guard = self.network_lock.lock().await;
        if !self.network_containers(network).await?.is_empty() {
            return Ok(());
        }
        let name = network.docker_network();
        match self.docker.inspect_network(&name, None).await {
            Ok(n) if n.labels.as_ref().is_some_and(|l| self.ours(l)) => {
                match self.docker.remove_network(&name).await {
                    Ok(()) => Ok(()),
                    Err(e) if is_status(&e, 404) => Ok(()),
                    Err(e) => Err(docker_err(e)),
                }
            }
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(docker_err(e)),
        }
    }

    /// Starts an existing node (already running is fine) and waits until it is ready.
    pub(super) async fn start_existing(&self, node: &NodeRef) -> Result<NodeRecord> {
        let info = self.inspect_node(node).await?;
        let spec = self.record_from(info)?.spec;
        match self
            .docker
            .start_container(&node.container_name(), None)
            .await
        {
            Ok(()) => {}
            Err(e) if is_status(&e, 304) => {}
            Err(e) => return Err(docker_err(e)),
        }
        self.wait_ready(node, &spec.peer_id).await
    }

    /// Stops a node's container within the configured grace period (already stopped is fine).
    pub(super) async fn stop_existing(&self, node: &NodeRef) -> Result<()> {
        self.inspect_node(node).await?;
        let secs = i32::try_from(self.cfg.stop_timeout.as_secs()).unwrap_or(i32::MAX);
        let opts = StopContainerOptions {
            t: Some(secs),
            signal: None,
        };
        match self
            .docker
            .stop_container(&node.container_name(), Some(opts))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 304) => Ok(()),
            Err(e) => Err(docker_err(e)),
        }
    }

    /// Removes a node's directory on the host (its container is gone).
    fn remove_node_dir(&self, node: &NodeRef) -> Result<()> {
        self.node_dir(node)
            .remove()
            .map_err(|e| RuntimeError::Bundle(format!("cannot remove the node directory: {e}")))
    }

    /// Removes a node's container if it is ours; its volume (data) stays.
    pub(super) async fn remove_node_container(&self, node: &NodeRef) -> Result<()> {
        let name = node.container_name();
        if self.inspect_managed(&name).await?.is_some() {
            self.remove_container_by_name(&name).await?;
            tracing::info!(%node, "node container removed; data kept");
        }
        self.remove_node_dir(node)
    }

    /// Removes a node's container and volume, if ours; a foreign volume of that name is an error.
    pub(super) async fn remove_node_and_data(&self, node: &NodeRef) -> Result<()> {
        let name = node.container_name();
        if self.inspect_managed(&name).await?.is_some() {
            self.remove_container_by_name(&name).await?;
        }
        self.remove_node_dir(node)?;
        let volume = node.volume_name();
        match self.docker.inspect_volume(&volume).await {
            Ok(v) if self.ours(&v.labels) => self.remove_volume(&volume).await?,
            Ok(_) => return Err(RuntimeError::NameTaken { name: volume }),
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(docker_err(e)),
        }
        tracing::info!(%node, "node removed");
        Ok(())
    }

    /// Removes every container and volume of a network, then its bridge network if unused.
    pub(super) async fn remove_network_objects(&self, network: &NetworkName) -> Result<()> {
        for c in self.network_containers(network).await? {
            if let Some(id) = c.id {
                self.remove_container_by_name(&id).await?;
            }
            let labels = c.labels.unwrap_or_default();
            if let Ok(node) = labels::node_ref_from_labels(&labels) {
                self.remove_node_dir(&node)?;
            }
        }
        let volumes = self
            .docker
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(self.network_filter(network)),
            }))
            .await
            .map_err(docker_err)?;
        for v in volumes.volumes.unwrap_or_default() {
            if self.ours(&v.labels) {
                self.remove_volume(&v.name).await?;
            }
        }
        self.remove_network_if_unused(network).await?;
        tracing::info!(%network, "network removed");
        Ok(())
    }

    /// Applies a changed spec: CPU in place when only CPU changed, else re-creates the container
    /// on the same volume, restoring the previous node if the new one fails.
    pub(super) async fn update_inner(
        &self,
        spec: &NodeSpec,
        secrets: &NodeSecrets,
    ) -> Result<NodeRecord> {
        spec.validate()?;
        secrets.check(spec)?;
        let info = self.inspect_node(&spec.node).await?;
        let current = self.record_from(info)?;
        if current.spec.peer_id != spec.peer_id {
            return Err(SpecError::IdentityMismatch(current.spec.peer_id).into());
        }
        let mut same_but_cpu = current.spec.clone();
        same_but_cpu.resources.cpu_millis = spec.resources.cpu_millis;
        // A container of an older nexus (RPC API on a TCP port) is always re-created.
        if &same_but_cpu == spec && current.endpoints.is_some() {
            if current.spec.resources.cpu_millis != spec.resources.cpu_millis {
                let body = ContainerUpdateBody {
                    nano_cpus: Some(spec.resources.nano_cpus()),
                    ..Default::default()
                };
                self.docker
                    .update_container(&spec.node.container_name(), body)
                    .await
                    .map_err(docker_err)?;
                tracing::info!(node = %spec.node, cpu_millis = spec.resources.cpu_millis, "CPU limit updated live");
            }
            return self.record_from(self.inspect_node(&spec.node).await?);
        }
        // kubo reads GOMEMLIMIT, its config and the swarm key only at start: re-create the
        // container on the same volume so env, config and labels all agree.
        self.ensure_image(&spec.image).await?;
        self.remove_container_by_name(&spec.node.container_name())
            .await?;
        match self.create_inner(spec, secrets).await {
            Ok(record) => Ok(record),
            Err(e) => {
                tracing::error!(node = %spec.node, error = %e, "update failed; restoring the previous node");
                if let Err(e2) = self.create_inner(&current.spec, secrets).await {
                    tracing::error!(node = %spec.node, error = %e2, "previous node could not be restored");
                }
                Err(e)
            }
        }
    }

    /// Asks the node to dial each of its peers; returns how many dials succeeded.
    pub(super) async fn dial_peers(&self, spec: &NodeSpec) -> usize {
        let addr = &self.node_dir(&spec.node).api();
        let dials = spec.peers.iter().map(|p| async move {
            let target = format!("{}/p2p/{}", p.addr, p.peer_id);
            match self.rpc.swarm_connect(addr, &target).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!(node = %spec.node, peer = %p.peer_id, error = %e, "swarm connect failed; kubo's peering retries");
                    false
                }
            }
        });
        futures_util::future::join_all(dials)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count()
    }
}
