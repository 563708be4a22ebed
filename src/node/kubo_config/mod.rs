//! The kubo configuration nexus owns, and how it reaches an unmodified node image.
//!
//! Owns: the list of config keys nexus sets on every node (pnet-safe for kubo ≥ 0.37, with the
//! 0.40–0.43 settings a private network needs), the whole configuration file nexus renders
//! from them, the memory split between Docker, Go and libp2p's resource manager, the daemon's
//! command line, where kubo listens (unix sockets in [`RUN_DIR`], never TCP). `bundle.rs` holds
//! the files a container gets before it starts (an init script for `/container-init.d/`, the
//! swarm key, the configuration and the identity). It must not talk to Docker or the file
//! system; the runtime places what this module renders.
//!
//! How it works with the official image: the image's own first init creates the repo; on every
//! start it runs `/container-init.d/*.sh` before `ipfs daemon`. Our script installs the swarm
//! key, then, when the repo's datastore is kubo's default (`datastore_spec` is
//! [`DEFAULT_DATASTORE_SPEC`]), writes the whole configuration nexus rendered (kubo 0.43's
//! `ipfs init` defaults, the identity, and every key below) in place of the file, atomically:
//! no `ipfs` process opens the repo before the daemon, so a start costs no `ipfs config` call
//! and `daemon --migrate` migrates a repo left by another kubo before anything else opens it.
//! A repo with another datastore keeps its `Datastore.Spec`: the script writes the identity
//! with `sed` and sets each key with `ipfs config --json` instead, migrating first if kubo
//! says the repo needs it. A restart of the same container finds nothing to install: the
//! repo already holds it.

mod bundle;

use serde_json::{json, Value};

use super::spec::{NodeSecrets, NodeSpec, SWARM_PORT};
pub use bundle::{
    bundle, identity_sed, init_script, init_script_for, Bundle, BundleFile, Placement,
};

/// Directory in the container, owned by the node user (0700), holding the secret files until
/// the init script has installed them, and kubo's RPC API and gateway sockets.
pub const RUN_DIR: &str = "/nexus";
/// Directory in the container whose scripts the image runs before every daemon start.
pub const INIT_DIR: &str = "/container-init.d";
/// Our init script's name in [`INIT_DIR`].
pub const INIT_SCRIPT_NAME: &str = "00-nexus.sh";
/// kubo's RPC API socket in [`RUN_DIR`].
pub const API_SOCKET_NAME: &str = "api.sock";
/// kubo's gateway socket in [`RUN_DIR`].
pub const GATEWAY_SOCKET_NAME: &str = "gateway.sock";
/// The secret files in [`RUN_DIR`]; the init script removes them once installed. The
/// configuration holds the node's private key.
pub const SECRET_FILES: [&str; 3] = ["swarm.key", "identity.sed", "config.json"];
/// `$IPFS_PATH/datastore_spec` as kubo's `ipfs init` writes it for its default datastore
/// (flatfs for blocks, leveldb for the rest; `config/init.go` `flatfsSpec`, `fsrepo.go`
/// `DiskSpec`): the one repo file the rendered configuration must agree with.
pub const DEFAULT_DATASTORE_SPEC: &str = r#"{"mounts":[{"mountpoint":"/blocks","path":"blocks","shardFunc":"/repo/flatfs/shard/v1/next-to-last/2","type":"flatfs"},{"mountpoint":"/","path":"datastore","type":"levelds"}],"type":"mount"}"#;
/// uid/gid kubo runs as in the official image (`ipfs:users`).
pub const NODE_UID: u32 = 1000;
pub const NODE_GID: u32 = 100;

/// How a node's memory limit is shared out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Docker's hard limit (`Memory`, `MemorySwap` equal: no swap).
    pub container_bytes: u64,
    /// Go's soft limit (`GOMEMLIMIT`): 90% of the container, leaving room for non-heap memory.
    pub go_limit_bytes: u64,
    /// libp2p resource manager (`Swarm.ResourceMgr.MaxMemory`): half of the container, the
    /// same share kubo takes of a whole machine by default — but of the container's memory,
    /// not the host's, which kubo would otherwise read.
    pub rcmgr_bytes: u64,
}

impl MemoryPlan {
    pub fn for_limit(container_bytes: u64) -> Self {
        Self {
            container_bytes,
            go_limit_bytes: container_bytes / 10 * 9,
            rcmgr_bytes: container_bytes / 2,
        }
    }
}

/// The daemon's arguments (the image's entrypoint runs `ipfs "$@"`). `--enable-gc` makes
/// `Datastore.StorageMax` a real limit rather than a number nobody reads.
pub fn daemon_command() -> Vec<String> {
    [
        "daemon",
        "--migrate=true",
        "--enable-gc",
        "--agent-version-suffix=nexus",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// Environment of the node container. Never carries a secret: the swarm key is a file.
pub fn container_env(spec: &NodeSpec) -> Vec<String> {
    let mem = MemoryPlan::for_limit(spec.resources.memory_bytes);
    vec![
        // Refuse to run without a swarm key rather than join the public network.
        "LIBP2P_FORCE_PNET=1".into(),
        format!("GOMEMLIMIT={}", mem.go_limit_bytes),
        // kubo 0.37–0.42 report to a public telemetry service unless told not to (0.43 asks).
        "IPFS_TELEMETRY=off".into(),
    ]
}

/// Every config key nexus sets, in the order the init script sets them.
pub fn settings(spec: &NodeSpec) -> Vec<(&'static str, Value)> {
    let mem = MemoryPlan::for_limit(spec.resources.memory_bytes);
    // A node bootstraps from the network's nodes of lower index (and peers outside nexus).
    // kubo answers nothing until its first bootstrap round is over, and a network's nodes start
    // a few at a time in index order: a round that dials a node whose container does not run
    // yet can only fail, and waits to (Docker's DNS passes a name it does not know on to the
    // host's resolver, 5 s on the benchmark host; the round allows 10 s). Every node is in
    // `Peering.Peers`, which dials them all in the background and keeps the mesh, and the
    // orchestrator has each new node dial every peer once all are ready.
    let bootstrap: Vec<String> = spec
        .peers
        .iter()
        .filter(|p| {
            spec.node
                .sibling_index(&p.addr)
                .is_none_or(|i| i < spec.node.index)
        })
        .map(|p| p.bootstrap_addr())
        .collect();
    let peering: Vec<Value> = spec
        .peers
        .iter()
        .map(|p| json!({ "ID": p.peer_id, "Addrs": [p.addr] }))
        .collect();
    vec![
        // Unix sockets only, in a directory only nexus can enter on the host: no other local
        // account and no other container can reach a node's RPC API or gateway.
        (
            "Addresses.API",
            json!(format!("/unix{RUN_DIR}/{API_SOCKET_NAME}")),
        ),
        (
            "Addresses.Gateway",
            json!(format!("/unix{RUN_DIR}/{GATEWAY_SOCKET_NAME}")),
        ),
        // pnet is TCP-only: QUIC/WebTransport/WebRTC are fatal under a swarm key.
        (
            "Addresses.Swarm",
            json!([format!("/ip4/0.0.0.0/tcp/{SWARM_PORT}")]),
        ),
        ("Addresses.Announce", json!(spec.announce)),
        // kubo ≥ 0.37 refuses to start a private node with AutoConf on.
        ("AutoConf.Enabled", json!(false)),
        // AutoTLS needs the public network; explicit true is fatal under pnet.
        ("AutoTLS.Enabled", json!(false)),
        ("Bootstrap", json!(bootstrap)),
        ("Peering.Peers", json!(peering)),
        ("Routing.Type", json!("dht")),
        ("Routing.DelegatedRouters", json!([])),
        ("Ipns.DelegatedPublishers", json!([])),
        ("DNS.Resolvers", json!({})),
        ("Discovery.MDNS.Enabled", json!(false)),
        ("Swarm.Transports.Network.QUIC", json!(false)),
        ("Swarm.Transports.Network.WebTransport", json!(false)),
        ("Swarm.Transports.Network.WebRTCDirect", json!(false)),
        // WebSocket shares the TCP listener, which logs errors under pnet; nothing needs it.
        ("Swarm.Transports.Network.Websocket", json!(false)),
        ("Swarm.RelayClient.Enabled", json!(false)),
        ("Swarm.RelayService.Enabled", json!(false)),
        ("Swarm.EnableHolePunching", json!(false)),
        // No UPnP or NAT-PMP discovery: a node's swarm port is published by Docker (or the
        // swarm), and no gateway of a bridge or overlay network maps ports.
        ("Swarm.DisableNatPortMap", json!(true)),
        (
            "Swarm.ResourceMgr.MaxMemory",
            json!(mem.rcmgr_bytes.to_string()),
        ),
        (
            "Datastore.StorageMax",
            json!(spec.resources.disk_bytes.to_string()),
        ),
        ("Datastore.StorageGCWatermark", json!(90)),
        ("Datastore.GCPeriod", json!("1h")),
        // kubo ≥ 0.40: the gateway would serve /routing/v1 with the private network's peers.
        ("Gateway.ExposeRoutingAPI", json!(false)),
        // kubo ≥ 0.39: error pages would link to a public diagnostic service.
        ("Gateway.DiagnosticServiceURL", json!("")),
        // The gateway never changes behaviour on a client's host name: no DNSLink look-up for
        // unknown hosts, and no implicit `localhost` subdomain gateway (which redirects
        // path-form requests to `<cid>.ipfs.localhost`). The delegator sends its own `Host`.
        ("Gateway.NoDNSLink", json!(true)),
        ("Gateway.PublicGateways", json!({ "localhost": null })),
        // kubo ≥ 0.36: HTTP retrieval from providers found through delegated routing; inert
        // under `Routing.Type=dht`, off for certain.
        ("HTTPRetrieval.Enabled", json!(false)),
        // kubo ≥ 0.39 provides with the sweep provider, which can drop announcements in very
        // small networks (go-libp2p-kad-dht#1263); the classic provider keeps a 2-node network
        // announced. `Provide.Enabled` is explicit, as kubo ≥ 0.42 requires when tuning it.
        ("Provide.Enabled", json!(true)),
        ("Provide.DHT.SweepEnabled", json!(false)),
    ]
}

/// kubo 0.43's configuration as its `ipfs init` writes it (`config/init.go`
/// `InitWithIdentity`, default datastore) for `identity`: what nexus's keys are laid over.
/// Keys kubo's init leaves out take kubo's defaults when the daemon reads the file.
fn init_defaults(peer_id: &str, private_key: &str) -> Value {
    json!({
        "API": { "HTTPHeaders": {} },
        "Addresses": {
            "API": "/ip4/127.0.0.1/tcp/5001",
            "Announce": [],
            "AppendAnnounce": [],
            "Gateway": "/ip4/127.0.0.1/tcp/8080",
            "NoAnnounce": [],
            "Swarm": ["/ip4/0.0.0.0/tcp/4001", "/ip6/::/tcp/4001"]
        },
        "Bootstrap": ["auto"],
        "DNS": { "Resolvers": { ".": "auto" } },
        "Datastore": {
            "BloomFilterSize": 0,
            "GCPeriod": "1h",
            "Spec": {
                "mounts": [
                    {
                        "mountpoint": "/blocks",
                        "path": "blocks",
                        "prefix": "flatfs.datastore",
                        "shardFunc": "/repo/flatfs/shard/v1/next-to-last/2",
                        "sync": false,
                        "type": "flatfs"
                    },
                    {
                        "compression": "none",
                        "mountpoint": "/",
                        "path": "datastore",
                        "prefix": "leveldb.datastore",
                        "type": "levelds"
                    }
                ],
                "type": "mount"
            },
            "StorageGCWatermark": 90,
            "StorageMax": "10GB"
        },
        "Discovery": { "MDNS": { "Enabled": true } },
        "Gateway": { "HTTPHeaders": {}, "NoFetch": false, "RootRedirect": "" },
        "Identity": { "PeerID": peer_id, "PrivKey": private_key },
        "Ipns": { "DelegatedPublishers": ["auto"], "ResolveCacheSize": 128 },
        "Mounts": { "IPFS": "/ipfs", "IPNS": "/ipns", "MFS": "/mfs" },
        "Pinning": { "RemoteServices": {} },
        "Routing": { "DelegatedRouters": ["auto"] }
    })
}

/// Sets `value` at the dotted `key` (creating missing objects), as `ipfs config --json` does.
fn set_key(config: &mut Value, key: &str, value: Value) {
    let mut at = config;
    for part in key.split('.') {
        if !at.is_object() {
            *at = json!({});
        }
        let Value::Object(map) = at else { return };
        at = map.entry(part).or_insert(Value::Null);
    }
    *at = value;
}

/// The node's whole kubo configuration: kubo 0.43's init defaults, the node's identity, and
/// every key of [`settings`]. Secret (it holds the private key): placed as a 0400 file and
/// deleted once installed.
pub fn rendered_config(
    spec: &NodeSpec,
    secrets: &NodeSecrets,
) -> Result<Value, crate::node::identity::IdentityError> {
    let key = secrets.identity.kubo_private_key()?;
    let mut config = init_defaults(&secrets.identity.peer_id().to_base58(), &key);
    for (k, v) in settings(spec) {
        set_key(&mut config, k, v);
    }
    Ok(config)
}

/// The container's health check: the RPC API answers through its socket.
pub fn health_command() -> Vec<String> {
    [
        "CMD".to_owned(),
        "ipfs".to_owned(),
        format!("--api=/unix{RUN_DIR}/{API_SOCKET_NAME}"),
        "id".to_owned(),
    ]
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::spec::{plan_network, NetworkName, Peer, Resources};
    use crate::node::swarm_key::SwarmKey;

    pub(super) fn three_nodes() -> Vec<(NodeSpec, NodeSecrets)> {
        let key = SwarmKey::generate().unwrap();
        plan_network(
            &NetworkName::new("cfg").unwrap(),
            3,
            "ipfs/kubo:v0.43.1",
            Resources {
                cpu_millis: 500,
                memory_bytes: 1 << 30,
                disk_bytes: 5 << 30,
            },
            &key,
        )
        .unwrap()
    }

    fn get<'a>(s: &'a [(&'static str, Value)], key: &str) -> &'a Value {
        &s.iter()
            .find(|(k, _)| *k == key)
            .unwrap_or_else(|| panic!("{key} is not set"))
            .1
    }

    #[test]
    fn every_pnet_rule_is_set() {
        let plan = three_nodes();
        let (spec, _) = &plan[0];
        let s = settings(spec);
        assert_eq!(get(&s, "AutoConf.Enabled"), &json!(false));
        assert_eq!(get(&s, "AutoTLS.Enabled"), &json!(false));
        assert_eq!(get(&s, "Routing.Type"), &json!("dht"));
        assert_eq!(get(&s, "Routing.DelegatedRouters"), &json!([]));
        assert_eq!(get(&s, "Ipns.DelegatedPublishers"), &json!([]));
        assert_eq!(get(&s, "DNS.Resolvers"), &json!({}));
        assert_eq!(get(&s, "Discovery.MDNS.Enabled"), &json!(false));
        for t in ["QUIC", "WebTransport", "WebRTCDirect", "Websocket"] {
            assert_eq!(
                get(&s, &format!("Swarm.Transports.Network.{t}")),
                &json!(false),
                "{t}"
            );
        }
        // TCP only, on every interface of the container.
        assert_eq!(
            get(&s, "Addresses.Swarm"),
            &json!(["/ip4/0.0.0.0/tcp/4001"])
        );
        // The RPC API and the gateway listen on unix sockets only.
        assert_eq!(get(&s, "Addresses.API"), &json!("/unix/nexus/api.sock"));
        assert_eq!(
            get(&s, "Addresses.Gateway"),
            &json!("/unix/nexus/gateway.sock")
        );
        // kubo 0.40–0.43 settings a private network needs.
        assert_eq!(get(&s, "Gateway.ExposeRoutingAPI"), &json!(false));
        assert_eq!(get(&s, "Gateway.DiagnosticServiceURL"), &json!(""));
        assert_eq!(get(&s, "Gateway.NoDNSLink"), &json!(true));
        assert_eq!(
            get(&s, "Gateway.PublicGateways"),
            &json!({ "localhost": null })
        );
        assert_eq!(get(&s, "HTTPRetrieval.Enabled"), &json!(false));
        assert_eq!(get(&s, "Provide.Enabled"), &json!(true));
        assert_eq!(get(&s, "Provide.DHT.SweepEnabled"), &json!(false));
        assert!(container_env(spec).contains(&"IPFS_TELEMETRY=off".to_string()));
        // No "auto" placeholder anywhere.
        assert!(!s.iter().any(|(_, v)| v.to_string().contains("\"auto\"")));
    }

    #[test]
    fn peering_lists_the_other_nodes_and_bootstrap_those_before_and_outside() {
        let plan = three_nodes();
        let (spec, _) = &plan[1];
        let mut spec = spec.clone();
        let outside = plan[0].0.peer_id.clone();
        spec.peers
            .push(Peer::new(&outside, "/dns4/peer.example/tcp/4001").unwrap());
        let spec = &spec;
        let s = settings(spec);
        let bootstrap = get(&s, "Bootstrap").as_array().unwrap();
        let peering = get(&s, "Peering.Peers").as_array().unwrap();
        // Node 1: node 0 and the peer outside, not node 2.
        assert_eq!(
            bootstrap,
            &vec![
                json!(format!(
                    "/dns4/{}/tcp/4001/p2p/{}",
                    plan[0].0.node.container_name(),
                    plan[0].0.peer_id
                )),
                json!(format!("/dns4/peer.example/tcp/4001/p2p/{outside}"))
            ]
        );
        assert_eq!(peering.len(), 3);
        for (other, _) in plan.iter().filter(|(o, _)| o.node != spec.node) {
            assert!(peering.contains(&json!({
                "ID": other.peer_id,
                "Addrs": [format!("/dns4/{}/tcp/4001", other.node.container_name())]
            })));
        }
        assert!(!bootstrap
            .iter()
            .any(|b| b.as_str().unwrap().ends_with(&spec.peer_id)));
    }

    #[test]
    fn limits_reach_kubo_and_go() {
        let plan = three_nodes();
        let (spec, _) = &plan[0];
        let s = settings(spec);
        assert_eq!(
            get(&s, "Datastore.StorageMax"),
            &json!((5u64 << 30).to_string())
        );
        assert_eq!(
            get(&s, "Swarm.ResourceMgr.MaxMemory"),
            &json!((1u64 << 29).to_string())
        );
        let env = container_env(spec);
        assert!(env.contains(&"LIBP2P_FORCE_PNET=1".to_string()));
        let plan_mem = MemoryPlan::for_limit(1 << 30);
        assert!(env.contains(&format!("GOMEMLIMIT={}", plan_mem.go_limit_bytes)));
        assert!(plan_mem.go_limit_bytes < plan_mem.container_bytes);
        assert!(plan_mem.rcmgr_bytes < plan_mem.go_limit_bytes);
        assert!(daemon_command().contains(&"--enable-gc".to_string()));
        assert_eq!(daemon_command()[0], "daemon");
    }

    #[test]
    fn the_rendered_config_is_kubos_init_with_every_key_and_the_identity() {
        let plan = three_nodes();
        let (spec, secrets) = &plan[0];
        let config = rendered_config(spec, secrets).unwrap();
        for (key, value) in settings(spec) {
            let pointer = format!("/{}", key.replace('.', "/"));
            assert_eq!(config.pointer(&pointer), Some(&value), "{key}");
        }
        assert_eq!(config["Identity"]["PeerID"], json!(spec.peer_id));
        assert_eq!(
            config["Identity"]["PrivKey"],
            json!(secrets.identity.kubo_private_key().unwrap())
        );
        // The datastore kubo's init made, as `datastore_spec` describes it on disk.
        let spec_on_disk: Value = serde_json::from_str(DEFAULT_DATASTORE_SPEC).unwrap();
        let mounts = config["Datastore"]["Spec"]["mounts"].as_array().unwrap();
        for (m, d) in mounts
            .iter()
            .zip(spec_on_disk["mounts"].as_array().unwrap())
        {
            for k in ["mountpoint", "path", "type"] {
                assert_eq!(m[k], d[k], "{k}");
            }
        }
        // Init's other defaults stay (kubo fills what is absent).
        assert_eq!(config["Mounts"]["MFS"], json!("/mfs"));
        assert_eq!(config["Ipns"]["ResolveCacheSize"], json!(128));
        // No `"auto"` placeholder survives: AutoConf is off in a private network.
        let text = config.to_string();
        assert!(!text.contains("\"auto\""), "{text}");
        // kubo's MarshalIndent layout, which the identity check greps.
        let file = &bundle(spec, secrets).unwrap()[3];
        assert_eq!(file.name, "config.json");
        assert!(String::from_utf8_lossy(&file.contents)
            .contains(&format!("\"PeerID\": \"{}\"", spec.peer_id)));
    }
}
