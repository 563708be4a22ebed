//! What a node is made of on a swarm, by name and label: the key that names its objects, its
//! directories on a host, its secrets (swarm key, configuration, identity) and init-script
//! config, and ownership (this instance's objects only). Creates and removes secrets and
//! configs; must not create services or networks.

use std::collections::HashMap;

use base64::Engine as _;
use bollard::models::{ConfigSpec, SecretSpec};
use bollard::query_parameters::{ListConfigsOptions, ListSecretsOptions};
use sha2::{Digest, Sha256};

use super::SwarmRuntime;
use crate::node::docker::{docker_err, is_status};
use crate::node::kubo_config::{self, Bundle, Placement};
use crate::node::labels::{self, INSTANCE};
use crate::node::runtime::{Result, RuntimeError};
use crate::node::spec::{NetworkName, NodeRef, NodeSecrets, NodeSpec};

/// The label on a node's service naming the host it is placed on (the swarm's node id).
pub const HOST_LABEL: &str = "io.nexus.host";
/// The label on the gate's objects.
pub const GATE_LABEL: &str = "io.nexus.gate";
/// The label on a node's placement marker: a swarm config naming the host that holds its
/// repo, kept while its service is removed (a stopped network), so it comes back there.
pub const PLACEMENT_LABEL: &str = "io.nexus.placement";

/// 16 hex digits naming a node's objects of this instance (secret and config names are at
/// most 64 characters; an instance name alone may be 63).
pub fn node_key(instance: &str, node: &NodeRef) -> String {
    short_hash(format!("{instance}/{}/{}", node.network, node.index), 16)
}

/// The first `n` hex digits of SHA-256 of `s`.
pub fn short_hash(s: impl AsRef<[u8]>, n: usize) -> String {
    let mut h = hex::encode(Sha256::digest(s.as_ref()));
    h.truncate(n);
    h
}

/// The node's socket directory on its host (relative to `swarm.host_dir`).
pub fn run_dir(key: &str) -> String {
    format!("{key}-run")
}

/// The node's repo directory on host `host_short` (relative to `swarm.host_dir`): a node
/// re-created on another host starts with an empty repo there.
pub fn repo_dir(key: &str, host_short: &str) -> String {
    format!("{key}-{host_short}-repo")
}

/// A secret or config as a service refers to it: its name, id and the file it becomes.
#[derive(Clone, Debug)]
pub struct Ref {
    pub name: String,
    pub id: String,
    pub file: String,
}

impl SwarmRuntime {
    /// Creates a secret unless one of that name exists; its reference as file `file`.
    pub(super) async fn secret(&self, spec: SecretSpec, file: &str) -> Result<Ref> {
        let name = spec.name.clone().unwrap_or_default();
        let id = match self.docker.create_secret(spec).await {
            Ok(r) => r.id,
            Err(e) if is_status(&e, 409) => self
                .docker
                .inspect_secret(&name)
                .await
                .map_err(docker_err)?
                .id
                .unwrap_or_default(),
            Err(e) => return Err(docker_err(e)),
        };
        Ok(Ref {
            name,
            id,
            file: file.to_owned(),
        })
    }

    /// Whether an object's labels say it is this instance's.
    pub(super) fn ours(&self, l: &HashMap<String, String>) -> bool {
        labels::is_managed(l)
            && l.get(INSTANCE).map(String::as_str) == Some(self.cfg.instance.as_str())
    }

    /// Adds this instance's owner label.
    pub(super) fn stamp(&self, mut l: HashMap<String, String>) -> HashMap<String, String> {
        l.insert(INSTANCE.into(), self.cfg.instance.to_string());
        l
    }

    /// Label filters selecting this instance's objects, plus `extra` (`key=value`).
    pub(super) fn filter(&self, extra: &[String]) -> HashMap<String, Vec<String>> {
        let mut l = vec![
            labels::managed_filter(),
            format!("{INSTANCE}={}", self.cfg.instance),
        ];
        l.extend(extra.iter().cloned());
        HashMap::from([("label".to_string(), l)])
    }

    /// Filter for one node's objects.
    pub(super) fn node_filter(&self, node: &NodeRef) -> HashMap<String, Vec<String>> {
        self.filter(&[
            format!("{}={}", labels::NETWORK, node.network),
            format!("{}={}", labels::INDEX, node.index),
        ])
    }

    /// Filter for one network's objects.
    pub(super) fn network_filter(&self, network: &NetworkName) -> HashMap<String, Vec<String>> {
        self.filter(&[format!("{}={network}", labels::NETWORK)])
    }

    pub(super) fn key(&self, node: &NodeRef) -> String {
        node_key(self.cfg.instance.as_str(), node)
    }

    /// Creates the node's secrets (its bundle's secret files) and its init-script config;
    /// returns them as [`Ref`]s. Names carry a hash of their contents, so a changed file is a
    /// new object and an unchanged one is reused.
    pub(super) async fn make_bundle(
        &self,
        spec: &NodeSpec,
        secrets: &NodeSecrets,
    ) -> Result<(Vec<Ref>, Vec<Ref>)> {
        let key = self.key(&spec.node);
        let files =
            kubo_config::bundle(spec, secrets).map_err(|e| RuntimeError::Bundle(e.to_string()))?;
        let mut out_secrets = Vec::new();
        let mut out_configs = Vec::new();
        let labels = self.stamp(labels::volume_labels(&spec.node));
        for f in files {
            let (contents, file) = match f.placement {
                // The swarm's init script reads its secrets from the engine's directory.
                Placement::Init => (
                    kubo_config::init_script_for(spec, &Bundle::ENGINE_SECRETS).into_bytes(),
                    f.name,
                ),
                Placement::Run => (f.contents, f.name),
            };
            let short = match file {
                "swarm.key" => "key",
                "identity.sed" => "ids",
                "config.json" => "cfg",
                _ => "init",
            };
            let name = format!("nx-{key}-{short}-{}", short_hash(&contents, 12));
            let data = base64::engine::general_purpose::STANDARD.encode(&contents);
            match f.placement {
                Placement::Init => {
                    let spec = ConfigSpec {
                        name: Some(name.clone()),
                        labels: Some(labels.clone()),
                        data: Some(data),
                        ..Default::default()
                    };
                    let id = match self.docker.create_config(spec).await {
                        Ok(r) => r.id,
                        Err(e) if is_status(&e, 409) => self
                            .docker
                            .inspect_config(&name)
                            .await
                            .map_err(docker_err)?
                            .id
                            .unwrap_or_default(),
                        Err(e) => return Err(docker_err(e)),
                    };
                    out_configs.push(Ref {
                        name,
                        id,
                        file: file.to_owned(),
                    });
                }
                Placement::Run => {
                    let spec = SecretSpec {
                        name: Some(name.clone()),
                        labels: Some(labels.clone()),
                        data: Some(data),
                        ..Default::default()
                    };
                    out_secrets.push(self.secret(spec, file).await?);
                }
            }
        }
        Ok((out_secrets, out_configs))
    }

    /// Where each of our nodes' repos is, by their placement markers.
    pub(super) async fn placements(&self) -> Result<Vec<(NodeRef, String)>> {
        let configs = self
            .docker
            .list_configs(Some(ListConfigsOptions {
                filters: Some(self.filter(&[format!("{PLACEMENT_LABEL}=true")])),
            }))
            .await
            .map_err(docker_err)?;
        let mut out = Vec::new();
        for c in configs {
            let l = c.spec.and_then(|s| s.labels).unwrap_or_default();
            if let (Ok(node), Some(host)) = (labels::node_ref_from_labels(&l), l.get(HOST_LABEL)) {
                out.push((node, host.clone()));
            }
        }
        Ok(out)
    }

    /// The host that holds the node's repo, if it was placed before.
    pub(super) async fn placement(&self, node: &NodeRef) -> Result<Option<String>> {
        Ok(self
            .placements()
            .await?
            .into_iter()
            .find(|(n, _)| n == node)
            .map(|(_, h)| h))
    }

    /// Records that the node's repo is on `host` (replacing an earlier marker).
    pub(super) async fn mark_placement(&self, node: &NodeRef, host: &str) -> Result<()> {
        let name = format!("nx-{}-at-{}", self.key(node), short_hash(host, 12));
        let mut l = self.stamp(labels::volume_labels(node));
        l.insert(PLACEMENT_LABEL.into(), "true".into());
        l.insert(HOST_LABEL.into(), host.to_owned());
        let spec = ConfigSpec {
            name: Some(name.clone()),
            labels: Some(l),
            data: Some(base64::engine::general_purpose::STANDARD.encode(host)),
            ..Default::default()
        };
        match self.docker.create_config(spec).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 409) => {}
            Err(e) => return Err(docker_err(e)),
        }
        self.remove_objects(node, &[name], true).await
    }

    /// Removes a node's secrets and configs (its placement marker too when `placement`)
    /// except those named in `keep`.
    pub(super) async fn remove_bundle(&self, node: &NodeRef, keep: &[String]) -> Result<()> {
        self.remove_objects(node, keep, false).await
    }

    /// Removes everything of the node's on the swarm but its service: secrets, configs and
    /// its placement marker.
    pub(super) async fn forget(&self, node: &NodeRef) -> Result<()> {
        self.remove_objects(node, &[], true).await?;
        self.remove_objects(node, &[], false).await
    }

    /// Removes a node's secrets and configs except those named in `keep`: only placement
    /// markers when `placement`, none of them otherwise. An object still in use by a service
    /// the swarm is removing is retried.
    async fn remove_objects(&self, node: &NodeRef, keep: &[String], placement: bool) -> Result<()> {
        let filters = self.node_filter(node);
        let secrets = self
            .docker
            .list_secrets(Some(ListSecretsOptions {
                filters: Some(filters.clone()),
            }))
            .await
            .map_err(docker_err)?;
        for s in secrets.into_iter().filter(|_| !placement) {
            let name = s.spec.and_then(|s| s.name).unwrap_or_default();
            let Some(id) = s.id else { continue };
            if keep.contains(&name) {
                continue;
            }
            self.retry_in_use(|| self.docker.delete_secret(&id)).await?;
        }
        let configs = self
            .docker
            .list_configs(Some(ListConfigsOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(docker_err)?;
        for c in configs {
            let spec = c.spec.unwrap_or_default();
            let is_marker = spec
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(PLACEMENT_LABEL));
            if is_marker != placement {
                continue;
            }
            let name = spec.name.unwrap_or_default();
            let Some(id) = c.id else { continue };
            if keep.contains(&name) {
                continue;
            }
            self.retry_in_use(|| self.docker.delete_config(&id)).await?;
        }
        Ok(())
    }

    /// Runs a removal, retrying while the swarm still reports the object in use (a service
    /// just removed releases its secrets a moment later). Absent is success.
    async fn retry_in_use<F, Fut>(&self, f: F) -> Result<()>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<(), bollard::errors::Error>>,
    {
        let mut tries = 0;
        loop {
            match f().await {
                Ok(()) => return Ok(()),
                Err(e) if is_status(&e, 404) => return Ok(()),
                Err(e)
                    if tries < 40
                        && (is_status(&e, 400) || is_status(&e, 409) || is_status(&e, 500)) =>
                {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                    let _ = e;
                }
                Err(e) => return Err(docker_err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::spec::NetworkName;

    #[test]
    fn names_fit_the_swarms_limits_and_differ_per_instance_and_node() {
        let net = NetworkName::new(&"a".repeat(crate::node::spec::MAX_NETWORK_NAME)).expect("name");
        let n0 = NodeRef::new(net.clone(), 0).expect("node");
        let n1 = NodeRef::new(net, 1).expect("node");
        let k = node_key("n-0123456789ab", &n0);
        assert_eq!(k.len(), 16);
        assert_ne!(k, node_key("n-0123456789ab", &n1));
        assert_ne!(k, node_key("other", &n0));
        let secret = format!("nx-{k}-init-{}", short_hash(b"x", 12));
        assert!(secret.len() <= 64, "{secret}");
        assert_ne!(repo_dir(&k, "aaaa"), repo_dir(&k, "bbbb"));
        assert!(run_dir(&k)
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    }
}
