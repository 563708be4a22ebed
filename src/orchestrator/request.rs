//! What callers ask of the orchestrator, and the checks every request passes before anything
//! changes.
//!
//! Owns [`CreateNetwork`], [`UpdateNetwork`] and their validation against the orchestrator's
//! limits (replicas, per-node maxima, bootstrap addresses, the image reference; access
//! settings are checked by [`crate::access`]; what an image runs is checked by
//! [`super::upgrade`], which needs the runtime). Pure: no store, no runtime, no locks. It must not apply a request.

use super::error::{invalid, Result};
use super::handle::OrchestratorConfig;
use crate::access::{Access, AccessUpdate};
use crate::node::spec::{validate_image, MAX_NODES};
use crate::node::{NetworkName, Resources};
use crate::replication::Replication;

/// What a caller asks for when creating a network.
#[derive(Clone, Debug, Default)]
pub struct CreateNetwork {
    pub name: String,
    pub replicas: u16,
    pub resources: Option<Resources>,
    pub access: Access,
    /// A swarm key in kubo's file format; generated when absent.
    pub swarm_key: Option<String>,
    pub bootstrap_peers: Vec<String>,
    /// The node image (a Docker reference); the daemon's `node.image` when absent.
    pub image: Option<String>,
    /// Copies of each pin; `min(2, replicas)` when absent.
    pub replication: Option<Replication>,
}

/// Changes to an existing network; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct UpdateNetwork {
    pub replicas: Option<u16>,
    pub cpu_millis: Option<u32>,
    pub memory_bytes: Option<u64>,
    pub disk_bytes: Option<u64>,
    pub access: AccessUpdate,
    /// A new node image: checked up front (its kubo and repo versions), then the running
    /// nodes move to it one at a time.
    pub image: Option<String>,
    pub replication: Option<Replication>,
}

impl CreateNetwork {
    /// Checks everything but the swarm key (parsed when the record is made); returns the
    /// network's name and per-node resources.
    pub(super) fn check(&self, cfg: &OrchestratorConfig) -> Result<(NetworkName, Resources)> {
        let name = parse_name(&self.name)?;
        if let Some(image) = &self.image {
            validate_image(image).map_err(invalid)?;
        }
        check_replicas(cfg, self.replicas)?;
        if let Some(r) = &self.replication {
            r.check(self.replicas).map_err(invalid)?;
        }
        let resources = self.resources.unwrap_or(cfg.default_resources);
        resources.validate().map_err(invalid)?;
        if let Some(r) = &self.resources {
            check_max_resources(
                cfg,
                Some(r.cpu_millis),
                Some(r.memory_bytes),
                Some(r.disk_bytes),
            )?;
        }
        self.access.validate()?;
        for p in &self.bootstrap_peers {
            validate_bootstrap(p)?;
        }
        Ok((name, resources))
    }
}

impl UpdateNetwork {
    /// Checks the fields that are set, before the network is read.
    pub(super) fn check(&self, cfg: &OrchestratorConfig) -> Result<()> {
        if let Some(r) = self.replicas {
            check_replicas(cfg, r)?;
        }
        check_max_resources(cfg, self.cpu_millis, self.memory_bytes, self.disk_bytes)?;
        self.access.validate()?;
        if let Some(image) = &self.image {
            validate_image(image).map_err(invalid)?;
        }
        if let Some(Replication::Count(0)) = self.replication {
            return Err(invalid(crate::replication::ReplicationError::Zero));
        }
        Ok(())
    }

    /// The replication factor after this update of a network with `current` factor and
    /// `replicas` nodes (before the update). A factor set here must fit the replicas after the
    /// update; lowering the replicas below a kept factor is allowed (the network is then
    /// under-replicated, which is reported).
    pub(super) fn replication(&self, current: Replication, replicas: u16) -> Result<Replication> {
        let replicas = self.replicas.unwrap_or(replicas);
        match self.replication {
            Some(r) => {
                r.check(replicas).map_err(invalid)?;
                Ok(r)
            }
            None => Ok(current),
        }
    }

    /// `resources` with this update's changes, validated.
    pub(super) fn resources(&self, mut resources: Resources) -> Result<Resources> {
        if let Some(c) = self.cpu_millis {
            resources.cpu_millis = c;
        }
        if let Some(m) = self.memory_bytes {
            resources.memory_bytes = m;
        }
        if let Some(d) = self.disk_bytes {
            resources.disk_bytes = d;
        }
        resources.validate().map_err(invalid)?;
        Ok(resources)
    }
}

/// A network name from outside.
pub(super) fn parse_name(name: &str) -> Result<NetworkName> {
    NetworkName::new(name).map_err(invalid)
}

fn check_replicas(cfg: &OrchestratorConfig, replicas: u16) -> Result<()> {
    let max = cfg.max_replicas.min(MAX_NODES);
    if replicas == 0 || replicas > max {
        return Err(invalid(format!(
            "replicas must be between 1 and {max}, not {replicas}"
        )));
    }
    Ok(())
}

/// Refuses resources above the configured per-node maximum. Only the fields a request sets are
/// checked, so lowering a maximum never blocks unrelated updates.
fn check_max_resources(
    cfg: &OrchestratorConfig,
    cpu_millis: Option<u32>,
    memory_bytes: Option<u64>,
    disk_bytes: Option<u64>,
) -> Result<()> {
    let max = &cfg.max_resources;
    let cores = |m: u32| f64::from(m) / 1000.0;
    if let Some(c) = cpu_millis.filter(|c| *c > max.cpu_millis) {
        return Err(invalid(format!(
            "resources.cpu_millis: {c} ({} cores) is above the per-node maximum of {} ({} cores)",
            cores(c),
            max.cpu_millis,
            cores(max.cpu_millis)
        )));
    }
    if let Some(m) = memory_bytes.filter(|m| *m > max.memory_bytes) {
        return Err(invalid(format!(
            "resources.memory_bytes: {m} is above the per-node maximum of {}",
            max.memory_bytes
        )));
    }
    if let Some(d) = disk_bytes.filter(|d| *d > max.disk_bytes) {
        return Err(invalid(format!(
            "resources.disk_bytes: {d} is above the per-node maximum of {}",
            max.disk_bytes
        )));
    }
    Ok(())
}

/// Extra bootstrap peers: `/ip4|ip6|dns…/<host>/tcp/<port>/p2p/<peer id>`.
fn validate_bootstrap(addr: &str) -> Result<()> {
    let (base, peer) = addr.rsplit_once("/p2p/").ok_or_else(|| {
        invalid(format!(
            "bootstrap peer `{}` must end with /p2p/<peer id>",
            addr.chars().take(80).collect::<String>()
        ))
    })?;
    crate::node::spec::validate_multiaddr(base).map_err(invalid)?;
    crate::node::spec::validate_peer_id(peer).map_err(invalid)?;
    Ok(())
}
