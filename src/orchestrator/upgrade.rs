//! Image changes: whether a network may move to an image, decided before anything is written.
//!
//! Owns the up-front check of `network create --image` and `network update --image`: the image
//! must be present and answer like kubo 0.37 or later, and must not expect an older repo version
//! than the network's nodes have (kubo refuses a repo newer than itself; nexus never migrates
//! backwards). What the image runs comes from the runtime's probe
//! ([`crate::node::NodeRuntime::probe_image`]); the rules from [`crate::node::kubo_version`].
//! Moving the nodes, one at a time, and putting a first node that fails back on the old image is
//! the reconciler's (`reconcile/act.rs`). It must not write the store or touch a node.

use super::error::{OrchestratorError, Result};
use super::handle::Orchestrator;
use crate::node::kubo_version::{check_repo_step, KuboVersion};
use crate::store::NetworkRecord;

impl Orchestrator {
    /// Checks that `image` may run the nodes of `rec` (a network being created: `rec` is `None`).
    /// Every refusal is [`OrchestratorError::FailedPrecondition`] naming the image and why, or
    /// the runtime's own error when the image is missing.
    pub(super) async fn check_image(
        &self,
        network: &str,
        rec: Option<&NetworkRecord>,
        image: &str,
    ) -> Result<KuboVersion> {
        let refuse = |why: String| {
            OrchestratorError::FailedPrecondition(format!(
                "image `{image}` cannot run network `{network}`: {why}"
            ))
        };
        let new = self.inner.runtime.probe_image(image).await?;
        new.check_supported().map_err(refuse)?;
        let Some(rec) = rec else {
            return Ok(new);
        };
        // Nodes that ever had a container have a repo, at the version of the image they run.
        let has_repos = self
            .inner
            .store
            .list_nodes(&rec.name)
            .await?
            .iter()
            .any(|r| r.container_id.is_some());
        if !has_repos {
            return Ok(new);
        }
        let current = self.image_of(rec);
        let have = self.inner.runtime.probe_image(current).await.map_err(|e| {
            OrchestratorError::FailedPrecondition(format!(
                "cannot tell the repo version of network `{network}`'s nodes from their image \
                 `{current}` ({e}); make that image present again, then retry"
            ))
        })?;
        check_repo_step(have.repo, new.repo).map_err(refuse)?;
        tracing::info!(
            network, from = current, to = image, kubo = %new.version, repo = new.repo,
            "image change checked"
        );
        Ok(new)
    }
}
