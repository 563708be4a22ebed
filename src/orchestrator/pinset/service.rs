//! The orchestrator's side of the Pinning Service API: [`PinApi`] implements the delegator's
//! leaf trait [`PinService`] over the pinset operations (`ops.rs`).
//!
//! Owns the translation between the leaf's plain data and the operations' types, the mapping of
//! [`OrchestratorError`] kinds to [`PinServiceError`], and the `delegates` (the network's ready
//! nodes' swarm multiaddrs, formatted as the join kit formats them). It must not check input
//! itself (the operations do, once) nor decide who may do what (the delegator checks roles and
//! ownership before calling).

use super::super::error::{ErrorKind, OrchestratorError};
use super::super::handle::Orchestrator;
use super::super::view::swarm_multiaddr;
use super::ops::{AddPin, PinView};
use crate::node::NetworkName;
use crate::pinsink::{PinEntry, PinRequest, PinService, PinServiceError};
use crate::store::{AllocationStatus, PinFilter};

/// The pinset as the Pinning Service API reaches it: the orchestrator, and the address outside
/// peers dial (`node.public_address`, the join kit's).
#[derive(Clone)]
pub struct PinApi {
    orch: Orchestrator,
    public_address: String,
}

impl PinApi {
    pub fn new(orch: Orchestrator, public_address: impl Into<String>) -> Self {
        Self {
            orch,
            public_address: public_address.into(),
        }
    }
}

fn entry(v: PinView) -> PinEntry {
    let holders = v
        .allocations
        .iter()
        .filter(|a| a.status == AllocationStatus::Pinned)
        .count();
    PinEntry {
        request_id: v.request_id,
        cid: v.cid,
        name: v.name,
        origins: v.origins,
        meta: v.meta,
        owner: v.owner,
        created_at: v.created_at,
        status: v.status,
        reason: v.reason,
        holders,
    }
}

fn add_pin(p: PinRequest) -> AddPin {
    AddPin {
        cid: p.cid,
        name: p.name,
        meta: p.meta,
        origins: p.origins,
        owner: p.owner,
    }
}

fn refusal(e: OrchestratorError) -> PinServiceError {
    let text = match &e {
        // The operation's "invalid request: " prefix says nothing a Failure's reason does not.
        OrchestratorError::Invalid(why) => why.clone(),
        _ => e.to_string(),
    };
    match e.kind() {
        ErrorKind::Invalid => PinServiceError::Invalid(text),
        ErrorKind::NotFound => PinServiceError::NotFound(text),
        ErrorKind::AlreadyExists | ErrorKind::FailedPrecondition | ErrorKind::Exhausted => {
            PinServiceError::Conflict(text)
        }
        ErrorKind::StoreUnavailable | ErrorKind::RuntimeUnavailable | ErrorKind::Timeout => {
            PinServiceError::Unavailable(text)
        }
        ErrorKind::Failed | ErrorKind::Internal => PinServiceError::Internal(text),
    }
}

#[async_trait::async_trait]
impl PinService for PinApi {
    async fn add(
        &self,
        network: &NetworkName,
        pin: PinRequest,
    ) -> Result<PinEntry, PinServiceError> {
        self.orch
            .add_pin(network.as_str(), add_pin(pin))
            .await
            .map(entry)
            .map_err(refusal)
    }

    async fn get(
        &self,
        network: &NetworkName,
        request_id: &str,
    ) -> Result<PinEntry, PinServiceError> {
        self.orch
            .get_pin(network.as_str(), request_id)
            .await
            .map(entry)
            .map_err(refusal)
    }

    async fn list(
        &self,
        network: &NetworkName,
        filter: &PinFilter,
    ) -> Result<(u64, Vec<PinEntry>), PinServiceError> {
        let (count, pins) = self
            .orch
            .list_pins(network.as_str(), filter)
            .await
            .map_err(refusal)?;
        Ok((count, pins.into_iter().map(entry).collect()))
    }

    async fn replace(
        &self,
        network: &NetworkName,
        request_id: &str,
        pin: PinRequest,
    ) -> Result<PinEntry, PinServiceError> {
        self.orch
            .replace_pin(network.as_str(), request_id, add_pin(pin))
            .await
            .map(entry)
            .map_err(refusal)
    }

    async fn remove(&self, network: &NetworkName, request_id: &str) -> Result<(), PinServiceError> {
        self.orch
            .remove_pin(network.as_str(), request_id)
            .await
            .map(|_| ())
            .map_err(refusal)
    }

    async fn delegates(&self, network: &NetworkName) -> Result<Vec<String>, PinServiceError> {
        let Some(entry) = self.orch.inner.registry.get(network) else {
            return Ok(Vec::new());
        };
        let rows = self
            .orch
            .inner
            .store
            .list_nodes(network)
            .await
            .map_err(|e| refusal(e.into()))?;
        Ok(entry
            .nodes
            .iter()
            .filter_map(|n| {
                let port = rows.iter().find(|r| r.index == n.index)?.ports.swarm?;
                Some(swarm_multiaddr(&self.public_address, port, &n.peer_id))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_kind() {
        assert_eq!(
            refusal(OrchestratorError::Invalid("name: too long".into())),
            PinServiceError::Invalid("name: too long".into())
        );
        assert!(matches!(
            refusal(OrchestratorError::PinNotFound {
                network: "a".into(),
                request_id: "b".into()
            }),
            PinServiceError::NotFound(_)
        ));
        assert!(matches!(
            refusal(OrchestratorError::FailedPrecondition("x".into())),
            PinServiceError::Conflict(_)
        ));
    }
}
