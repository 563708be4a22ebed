//! `impl NodeRuntime for DockerRuntime`: each method delegates to the file that owns its
//! concern. Holds no logic of its own.

use std::collections::HashMap;

use futures_util::stream::BoxStream;

use super::client::docker_err;
use super::DockerRuntime;
use crate::node::kubo_version::KuboVersion;
use crate::node::runtime::{
    NodeCpu, NodeDiagnostics, NodeEvent, NodeRecord, NodeRuntime, NodeStats, Result,
};
use crate::node::spec::{NetworkName, NetworkSpec, NodeRef, NodeSecrets, NodeSpec};

#[async_trait::async_trait]
impl NodeRuntime for DockerRuntime {
    async fn ping(&self) -> Result<()> {
        self.docker.ping().await.map(|_| ()).map_err(docker_err)
    }

    async fn probe_image(&self, image: &str) -> Result<KuboVersion> {
        self.probe(image).await
    }

    async fn host_memory(&self) -> Result<Option<u64>> {
        self.memory_total().await
    }

    async fn host_cpus(&self) -> Result<Option<f64>> {
        self.cpus_total().await
    }

    async fn node_cpu(&self, node: &NodeRef) -> Result<Option<NodeCpu>> {
        self.cpu_of(node).await
    }

    async fn create_node(&self, spec: &NodeSpec, secrets: &NodeSecrets) -> Result<NodeRecord> {
        self.create_inner(spec, secrets).await
    }

    async fn start_node(&self, node: &NodeRef) -> Result<NodeRecord> {
        self.start_existing(node).await
    }

    async fn stop_node(&self, node: &NodeRef) -> Result<()> {
        self.stop_existing(node).await
    }

    async fn remove_container(&self, node: &NodeRef) -> Result<()> {
        self.remove_node_container(node).await
    }

    async fn remove_node(&self, node: &NodeRef) -> Result<()> {
        self.remove_node_and_data(node).await
    }

    async fn prepare_network(&self, spec: &NetworkSpec) -> Result<bool> {
        self.ensure_network(spec).await
    }

    async fn release_network(&self, network: &NetworkName) -> Result<()> {
        self.remove_network_if_unused(network).await
    }

    async fn foreign_subnets(&self) -> Result<Vec<(ipnet::Ipv4Net, String)>> {
        DockerRuntime::foreign_subnets(self).await
    }

    async fn remove_network(&self, network: &NetworkName) -> Result<()> {
        self.remove_network_objects(network).await
    }

    async fn update_node(&self, spec: &NodeSpec, secrets: &NodeSecrets) -> Result<NodeRecord> {
        self.update_inner(spec, secrets).await
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>> {
        self.list_matching(HashMap::from([("label".to_string(), self.owner_labels())]))
            .await
    }

    async fn connect_peers(&self, spec: &NodeSpec) -> usize {
        self.dial_peers(spec).await
    }

    async fn list_network_nodes(&self, network: &NetworkName) -> Result<Vec<NodeRecord>> {
        self.list_matching(self.network_filter(network)).await
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
