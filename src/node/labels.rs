//! Docker labels: how a node container says what it is.
//!
//! Owns the `io.nexus.*` label set written on every node container (and on the Docker network
//! and volume nexus creates), and the reverse: rebuilding a [`NodeSpec`] from labels alone, so
//! nexus's state can be recovered from Docker after losing everything in memory. Nothing
//! without `io.nexus.managed=true` is ever treated as ours. Labels never carry secrets.

use std::collections::HashMap;

use super::spec::{NetworkName, NodeRef, NodeSpec, Peer, Ports, Resources, SpecError};

pub const MANAGED: &str = "io.nexus.managed";
/// Which nexus installation owns the object (several may share one Docker host).
pub const INSTANCE: &str = "io.nexus.instance";
pub const NETWORK: &str = "io.nexus.network";
pub const INDEX: &str = "io.nexus.node-index";
pub const PEER_ID: &str = "io.nexus.peer-id";
pub const IMAGE: &str = "io.nexus.image";
pub const CPU_MILLIS: &str = "io.nexus.cpu-millis";
pub const MEMORY_BYTES: &str = "io.nexus.memory-bytes";
pub const DISK_BYTES: &str = "io.nexus.disk-bytes";
pub const PORTS: &str = "io.nexus.ports";
pub const PEERS: &str = "io.nexus.peers";
pub const ANNOUNCE: &str = "io.nexus.announce";
pub const VERSION: &str = "io.nexus.label-version";
const LABEL_VERSION: &str = "1";

/// Docker filter selecting only nexus-managed objects.
pub fn managed_filter() -> String {
    format!("{MANAGED}=true")
}

/// Why a container's labels could not be read back as a node.
#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("not a nexus-managed object (no {MANAGED}=true label)")]
    NotManaged,
    #[error("label {0} is missing")]
    Missing(&'static str),
    #[error("label {0} has an unsupported value `{1}`")]
    Bad(&'static str, String),
    #[error("labels describe an invalid node: {0}")]
    Spec(#[from] SpecError),
}

/// Labels of the Docker network and the volumes of one private network.
pub fn network_labels(network: &NetworkName) -> HashMap<String, String> {
    HashMap::from([
        (MANAGED.into(), "true".into()),
        (NETWORK.into(), network.to_string()),
        (VERSION.into(), LABEL_VERSION.into()),
    ])
}

/// Labels of a node's volume.
pub fn volume_labels(node: &NodeRef) -> HashMap<String, String> {
    let mut l = network_labels(&node.network);
    l.insert(INDEX.into(), node.index.to_string());
    l
}

/// Labels of a node container: everything in its spec.
pub fn node_labels(spec: &NodeSpec) -> HashMap<String, String> {
    let mut l = volume_labels(&spec.node);
    l.insert(PEER_ID.into(), spec.peer_id.clone());
    l.insert(IMAGE.into(), spec.image.clone());
    l.insert(CPU_MILLIS.into(), spec.resources.cpu_millis.to_string());
    l.insert(MEMORY_BYTES.into(), spec.resources.memory_bytes.to_string());
    l.insert(DISK_BYTES.into(), spec.resources.disk_bytes.to_string());
    // serde_json cannot fail on these plain types.
    l.insert(
        PORTS.into(),
        serde_json::to_string(&spec.ports).unwrap_or_default(),
    );
    l.insert(
        PEERS.into(),
        serde_json::to_string(&spec.peers).unwrap_or_default(),
    );
    l.insert(
        ANNOUNCE.into(),
        serde_json::to_string(&spec.announce).unwrap_or_default(),
    );
    l
}

pub fn is_managed(labels: &HashMap<String, String>) -> bool {
    labels.get(MANAGED).map(String::as_str) == Some("true")
}

fn get<'a>(labels: &'a HashMap<String, String>, key: &'static str) -> Result<&'a str, LabelError> {
    labels
        .get(key)
        .map(String::as_str)
        .ok_or(LabelError::Missing(key))
}

fn num<T: std::str::FromStr>(
    labels: &HashMap<String, String>,
    key: &'static str,
) -> Result<T, LabelError> {
    let v = get(labels, key)?;
    v.parse().map_err(|_| LabelError::Bad(key, v.to_owned()))
}

fn json<T: serde::de::DeserializeOwned>(
    labels: &HashMap<String, String>,
    key: &'static str,
) -> Result<T, LabelError> {
    let v = get(labels, key)?;
    serde_json::from_str(v).map_err(|_| LabelError::Bad(key, v.chars().take(80).collect()))
}

/// Which node a managed object belongs to (containers, volumes).
pub fn node_ref_from_labels(labels: &HashMap<String, String>) -> Result<NodeRef, LabelError> {
    if !is_managed(labels) {
        return Err(LabelError::NotManaged);
    }
    let network = NetworkName::new(get(labels, NETWORK)?)?;
    Ok(NodeRef::new(network, num(labels, INDEX)?)?)
}

/// Rebuilds a node's spec from its container's labels, validating it as if it came from a user.
pub fn spec_from_labels(labels: &HashMap<String, String>) -> Result<NodeSpec, LabelError> {
    let node = node_ref_from_labels(labels)?;
    let version = get(labels, VERSION)?;
    if version != LABEL_VERSION {
        return Err(LabelError::Bad(VERSION, version.to_owned()));
    }
    let spec = NodeSpec {
        node,
        image: get(labels, IMAGE)?.to_owned(),
        peer_id: get(labels, PEER_ID)?.to_owned(),
        resources: Resources {
            cpu_millis: num(labels, CPU_MILLIS)?,
            memory_bytes: num(labels, MEMORY_BYTES)?,
            disk_bytes: num(labels, DISK_BYTES)?,
        },
        ports: json::<Ports>(labels, PORTS)?,
        peers: json::<Vec<Peer>>(labels, PEERS)?,
        announce: json::<Vec<String>>(labels, ANNOUNCE)?,
    };
    spec.validate()?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::spec::plan_network;
    use crate::node::swarm_key::SwarmKey;

    fn spec() -> NodeSpec {
        let key = SwarmKey::generate().unwrap();
        let mut plan = plan_network(
            &NetworkName::new("lbl").unwrap(),
            3,
            "nexus-kubo-test:abc",
            Resources {
                cpu_millis: 250,
                memory_bytes: 512 << 20,
                disk_bytes: 1 << 30,
            },
            &key,
        )
        .unwrap();
        let (mut spec, _) = plan.remove(2);
        spec.ports = Ports { swarm: Some(4101) };
        spec.announce = vec!["/ip4/203.0.113.7/tcp/4101".into()];
        spec
    }

    #[test]
    fn round_trip() {
        let spec = spec();
        let labels = node_labels(&spec);
        assert_eq!(spec_from_labels(&labels).unwrap(), spec);
        assert!(labels.keys().all(|k| k.starts_with("io.nexus.")));
        assert_eq!(labels[MANAGED], "true");
        assert_eq!(labels[NETWORK], "lbl");
        assert_eq!(labels[INDEX], "2");
        assert_eq!(node_ref_from_labels(&labels).unwrap(), spec.node);
    }

    #[test]
    fn unmanaged_or_damaged_labels_are_refused() {
        let spec = spec();
        let mut labels = node_labels(&spec);
        labels.remove(MANAGED);
        assert!(matches!(
            spec_from_labels(&labels),
            Err(LabelError::NotManaged)
        ));

        let mut labels = node_labels(&spec);
        labels.insert(MANAGED.into(), "false".into());
        assert!(matches!(
            spec_from_labels(&labels),
            Err(LabelError::NotManaged)
        ));

        let mut labels = node_labels(&spec);
        labels.remove(PEER_ID);
        assert!(matches!(
            spec_from_labels(&labels),
            Err(LabelError::Missing(PEER_ID))
        ));

        let mut labels = node_labels(&spec);
        labels.insert(CPU_MILLIS.into(), "lots".into());
        assert!(matches!(
            spec_from_labels(&labels),
            Err(LabelError::Bad(CPU_MILLIS, _))
        ));

        let mut labels = node_labels(&spec);
        labels.insert(NETWORK.into(), "../etc".into());
        assert!(matches!(
            spec_from_labels(&labels),
            Err(LabelError::Spec(_))
        ));

        let mut labels = node_labels(&spec);
        labels.insert(
            PEERS.into(),
            r#"[{"peer_id":"nope","addr":"/dns4/x/tcp/1"}]"#.into(),
        );
        assert!(matches!(
            spec_from_labels(&labels),
            Err(LabelError::Spec(_))
        ));

        let mut labels = node_labels(&spec);
        labels.insert(VERSION.into(), "99".into());
        assert!(matches!(
            spec_from_labels(&labels),
            Err(LabelError::Bad(VERSION, _))
        ));
    }

    #[test]
    fn no_secret_in_labels() {
        let key = SwarmKey::generate().unwrap();
        let plan = plan_network(
            &NetworkName::new("sec").unwrap(),
            2,
            "img:1",
            Resources::default(),
            &key,
        )
        .unwrap();
        let (spec, secrets) = &plan[0];
        let all: String = node_labels(spec).values().cloned().collect();
        let hex = key.to_file_contents().lines().nth(2).unwrap().to_string();
        assert!(!all.contains(&hex));
        assert!(!all.contains(&secrets.identity.kubo_private_key().unwrap()));
    }
}
