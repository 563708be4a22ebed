//! A network's address space: its subnet, from allocation to the runtime's network.
//!
//! Owns the two steps that join the subnet allocator ([`super::subnets`]) to the runtime:
//! [`Orchestrator::allocate_subnet`] (at create: asks the runtime which subnets networks
//! outside nexus hold, allocates the next free one, says in the log which it skipped and why)
//! and [`Orchestrator::prepare_network`] (in a pass, before nodes are created: makes the
//! runtime's network exist on the recorded subnet; when the engine reports that subnet taken by
//! a network that appeared since, and the network has no node yet, moves it to the next free
//! subnet and records that). It must not decide which nodes run, and changes a recorded subnet
//! only while nothing uses it.

use ipnet::Ipv4Net;

use super::error::Result;
use super::handle::Orchestrator;
use crate::node::{NetworkName, NetworkSpec, RuntimeError};
use crate::store::NetworkRecord;
use crate::sync::lock;

/// How many subnets one pass tries when the engine keeps reporting them taken.
const PREPARE_ATTEMPTS: usize = 8;

impl Orchestrator {
    /// The next free subnet of the pool for `network`, skipping what networks outside nexus
    /// hold. Recorded as used; the caller releases it if it does not store it.
    pub(super) async fn allocate_subnet(&self, network: &NetworkName) -> Result<Ipv4Net> {
        let foreign = match self.inner.runtime.foreign_subnets().await {
            Ok(f) => f,
            Err(e) => {
                // The engine is checked again when the network is prepared.
                tracing::warn!(%network, error = %e, "could not list the engine's networks; allocating without them");
                Vec::new()
            }
        };
        let (subnet, skipped) = lock(&self.inner.subnets).allocate(&foreign)?;
        for s in &skipped {
            tracing::warn!(
                %network,
                subnet = %s.subnet,
                held_by = %s.by,
                "subnet skipped: a network outside nexus overlaps it"
            );
        }
        tracing::debug!(%network, %subnet, "subnet allocated");
        Ok(subnet)
    }

    /// Makes the runtime's network for `rec` exist on its recorded subnet (a network from
    /// before subnets were allocated: on the engine's defaults). `Ok(true)` when this call
    /// created it. A subnet the engine reports taken is replaced — only while the network has
    /// no node (`fresh`) — and the new one stored in `rec`.
    pub(super) async fn prepare_network(
        &self,
        rec: &mut NetworkRecord,
        fresh: bool,
    ) -> Result<bool> {
        let runtime = &self.inner.runtime;
        for _ in 0..PREPARE_ATTEMPTS {
            let spec = NetworkSpec {
                name: rec.name.clone(),
                subnet: rec.subnet,
            };
            match runtime.prepare_network(&spec).await {
                Ok(created) => return Ok(created),
                Err(RuntimeError::SubnetTaken { subnet, detail }) if fresh => {
                    tracing::warn!(network = %rec.name, %subnet, %detail, "subnet taken outside nexus; moving the network to another");
                    let next = self.allocate_subnet(&rec.name).await?;
                    let mut moved = rec.clone();
                    moved.subnet = Some(next);
                    if let Err(e) = self.inner.store.update_network(&moved).await {
                        lock(&self.inner.subnets).release(&next);
                        return Err(e.into());
                    }
                    // The taken one stays marked as used: it is taken, by someone else.
                    rec.subnet = Some(next);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(RuntimeError::Docker(format!(
            "the engine refused {PREPARE_ATTEMPTS} subnets in a row for network `{}`; see the log",
            rec.name
        ))
        .into())
    }
}
