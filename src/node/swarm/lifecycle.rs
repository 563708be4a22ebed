//! Existing nodes on the swarm: stop (no replica), start (one replica, then ready), update (the
//! service re-made on the same host, so the repo stays), removal of a service, a node with its
//! directories on every host, a network with its overlay; dialling a node's peers. Touches
//! only what is ours; must not decide which nodes should exist.

use std::time::{Duration, Instant};

use bollard::models::ServiceSpecModeReplicated;
use bollard::query_parameters::UpdateServiceOptions;

use super::objects::{repo_dir, run_dir, HOST_LABEL};
use super::SwarmRuntime;
use crate::node::docker::{docker_err, is_status};
use crate::node::runtime::{NodeRecord, Result, RuntimeError};
use crate::node::spec::{NetworkName, NodeRef, NodeSecrets, NodeSpec};

impl SwarmRuntime {
    /// Removes the node's service (absent is fine) and waits until its task is gone, so its
    /// secrets, port and directories are free.
    pub(super) async fn delete_service(&self, node: &NodeRef) -> Result<()> {
        let Some(s) = self.find_service(node).await? else {
            return Ok(());
        };
        let id = s.id.unwrap_or_default();
        match self.docker.delete_service(&id).await {
            Ok(()) => {}
            Err(e) if is_status(&e, 404) => return Ok(()),
            Err(e) => return Err(docker_err(e)),
        }
        // The swarm stops the task after answering; its container holds the host port and
        // the secrets until then.
        let deadline = Instant::now() + self.cfg.stop_timeout + Duration::from_secs(20);
        while Instant::now() < deadline {
            let tasks = self.tasks_of(&id).await?;
            if tasks.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(())
    }

    /// Sets the node's replica count (0: stopped, 1: running).
    async fn scale(&self, node: &NodeRef, replicas: i64) -> Result<()> {
        let s = self
            .find_service(node)
            .await?
            .ok_or_else(|| RuntimeError::NotFound { node: node.clone() })?;
        let mut spec = s.spec.unwrap_or_default();
        let mode = spec.mode.get_or_insert_with(Default::default);
        mode.replicated = Some(ServiceSpecModeReplicated {
            replicas: Some(replicas),
        });
        let version = s.version.and_then(|v| v.index).unwrap_or(0);
        self.docker
            .update_service(
                &node.container_name(),
                spec,
                UpdateServiceOptions {
                    version: i32::try_from(version).unwrap_or(i32::MAX),
                    ..Default::default()
                },
                None,
            )
            .await
            .map_err(docker_err)?;
        Ok(())
    }

    pub(super) async fn start_existing(&self, node: &NodeRef) -> Result<NodeRecord> {
        let r = self.record(node).await?;
        self.scale(node, 1).await?;
        self.wait_ready(node, &r.spec.peer_id).await
    }

    pub(super) async fn stop_existing(&self, node: &NodeRef) -> Result<()> {
        self.samples.forget(node);
        self.scale(node, 0).await?;
        let deadline = Instant::now() + self.cfg.stop_timeout + Duration::from_secs(20);
        while Instant::now() < deadline {
            let running = self
                .current_task(node)
                .await?
                .is_some_and(|t| t.desired_state == Some(bollard::models::TaskState::RUNNING));
            if !running {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(())
    }

    /// Removes the node's service and secrets; its directories (repo) stay on its host.
    pub(super) async fn remove_service_keep_data(&self, node: &NodeRef) -> Result<()> {
        self.samples.forget(node);
        self.delete_service(node).await?;
        self.remove_bundle(node, &[]).await
    }

    /// Removes the node's service, secrets and its directories on every host that is up
    /// (a repo left on a host that is down now stays there: see docs/swarm.md).
    pub(super) async fn remove_node_and_data(&self, node: &NodeRef) -> Result<()> {
        self.remove_service_keep_data(node).await?;
        let key = self.key(node);
        for host in self.hosts().await?.into_iter().filter(|h| h.up) {
            self.remove_dirs(&host, &[run_dir(&key), repo_dir(&key, &host.short_id())])
                .await?;
        }
        self.forget(node).await
    }

    /// Removes every node of a network (with data) and its overlay.
    pub(super) async fn remove_network_objects(&self, network: &NetworkName) -> Result<()> {
        for r in self.list_network(network).await? {
            self.remove_node_and_data(&r.spec.node).await?;
        }
        self.samples.forget_network(network);
        self.remove_overlay_if_unused(network).await
    }

    /// Removes the network's overlay unless one of our services still uses it.
    pub(super) async fn remove_overlay_if_unused(&self, network: &NetworkName) -> Result<()> {
        let _guard = self.network_lock.lock().await;
        if !self
            .services(self.network_filter(network))
            .await?
            .is_empty()
        {
            tracing::debug!(network = %network, "overlay kept: services use it");
            return Ok(());
        }
        let name = network.docker_network();
        match self.docker.inspect_network(&name, None).await {
            Ok(n) if n.labels.as_ref().is_some_and(|l| self.ours(l)) => {}
            Ok(_) => return Ok(()),
            Err(e) if is_status(&e, 404) => return Ok(()),
            Err(e) => return Err(docker_err(e)),
        }
        // A task's attachment may linger for a moment after its service is gone.
        let mut tries = 0;
        loop {
            match self.docker.remove_network(&name).await {
                Ok(()) => {
                    tracing::debug!(network = %network, "overlay removed");
                    return Ok(());
                }
                Err(e) if is_status(&e, 404) => return Ok(()),
                Err(e) if tries < 40 => {
                    tries += 1;
                    tracing::debug!(network = %network, error = %e, "overlay still in use; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(docker_err(e)),
            }
        }
    }

    /// Re-makes the node's service to `spec` on the host that holds its repo (another host
    /// when that one is down: the node then starts empty there).
    pub(super) async fn update_inner(
        &self,
        spec: &NodeSpec,
        secrets: &NodeSecrets,
    ) -> Result<NodeRecord> {
        spec.validate()?;
        secrets.check(spec)?;
        let host = self
            .find_service(&spec.node)
            .await?
            .and_then(|s| s.spec?.labels?.get(HOST_LABEL).cloned());
        self.remove_service_keep_data(&spec.node).await?;
        self.create_inner(spec, secrets, host.as_deref()).await
    }

    /// Asks the node to dial each of its peers; returns how many dials succeeded.
    pub(super) async fn dial_peers(&self, spec: &NodeSpec) -> usize {
        let Ok(r) = self.record(&spec.node).await else {
            return 0;
        };
        let Some(ep) = r.endpoints else { return 0 };
        let api = &ep.api;
        let dials = spec.peers.iter().map(|p| async move {
            let target = format!("{}/p2p/{}", p.addr, p.peer_id);
            self.rpc.swarm_connect(api, &target).await.is_ok()
        });
        futures_util::future::join_all(dials)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count()
    }
}
