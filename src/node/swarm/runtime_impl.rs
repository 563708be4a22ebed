//! `impl NodeRuntime for SwarmRuntime`: each method delegates to the file that owns its
//! concern. Holds no logic of its own.

use futures_util::stream::BoxStream;

use super::SwarmRuntime;
use crate::node::docker::docker_err;
use crate::node::kubo_version::KuboVersion;
use crate::node::runtime::{
    NodeDiagnostics, NodeEvent, NodeRecord, NodeRuntime, NodeStats, Result,
};
use crate::node::spec::{NetworkName, NetworkSpec, NodeRef, NodeSecrets, NodeSpec};

#[async_trait::async_trait]
impl NodeRuntime for SwarmRuntime {
    async fn ping(&self) -> Result<()> {
        self.docker.ping().await.map(|_| ()).map_err(docker_err)
    }

    /// Probed on the manager's own engine (the image must be there; the daemon pulls it).
    async fn probe_image(&self, image: &str) -> Result<KuboVersion> {
        self.local.probe_image(image).await
    }

    /// The memory of the hosts that may take nodes, together.
    async fn host_memory(&self) -> Result<Option<u64>> {
        self.memory_total().await
    }

    async fn create_node(&self, spec: &NodeSpec, secrets: &NodeSecrets) -> Result<NodeRecord> {
        self.create_inner(spec, secrets, None).await
    }

    async fn start_node(&self, node: &NodeRef) -> Result<NodeRecord> {
        self.start_existing(node).await
    }

    async fn stop_node(&self, node: &NodeRef) -> Result<()> {
        self.stop_existing(node).await
    }

    async fn remove_container(&self, node: &NodeRef) -> Result<()> {
        self.remove_service_keep_data(node).await
    }

    async fn remove_node(&self, node: &NodeRef) -> Result<()> {
        self.remove_node_and_data(node).await
    }

    async fn prepare_network(&self, spec: &NetworkSpec) -> Result<bool> {
        self.ensure_overlay(spec).await
    }

    async fn release_network(&self, network: &NetworkName) -> Result<()> {
        self.remove_overlay_if_unused(network).await
    }

    async fn foreign_subnets(&self) -> Result<Vec<(ipnet::Ipv4Net, String)>> {
        self.foreign_subnets_inner().await
    }

    async fn remove_network(&self, network: &NetworkName) -> Result<()> {
        self.remove_network_objects(network).await
    }

    async fn update_node(&self, spec: &NodeSpec, secrets: &NodeSecrets) -> Result<NodeRecord> {
        self.update_inner(spec, secrets).await
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        self.list_matching(self.filter(&[])).await
    }

    async fn connect_peers(&self, spec: &NodeSpec) -> usize {
        self.dial_peers(spec).await
    }

    async fn list_network_nodes(&self, network: &NetworkName) -> Result<Vec<NodeRecord>> {
        self.list_network(network).await
    }

    async fn node_stats(&self, node: &NodeRef) -> Result<NodeStats> {
        self.stats_of(node).await
    }

    async fn node_diagnostics(&self, node: &NodeRef) -> Result<NodeDiagnostics> {
        self.diagnostics_of(node).await
    }

    fn watch(&self) -> BoxStream<'static, Result<NodeEvent>> {
        self.event_stream()
    }
}
