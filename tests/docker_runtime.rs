//! The Docker node runtime against a real Docker daemon and real kubo nodes (the test image
//! from `scripts/build-test-image.sh`, named by `NEXUS_TEST_IMAGE`).

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use nexus::names::InstanceName;
use nexus::node::endpoint::Endpoint;
use nexus::node::{
    plan_network, DockerRuntimeConfig, NodeEventKind, NodeRuntime, NodeSecrets, NodeSpec,
    NodeState, Resources, RuntimeError, SwarmKey,
};

const MIB: u64 = 1024 * 1024;

fn small() -> Resources {
    Resources {
        cpu_millis: 500,
        memory_bytes: 256 * MIB,
        disk_bytes: 512 * MIB,
    }
}

async fn create_all(
    rt: &nexus::node::DockerRuntime,
    plan: &[(NodeSpec, NodeSecrets)],
) -> Vec<nexus::node::NodeRecord> {
    let futs = plan
        .iter()
        .map(|(spec, secrets)| rt.create_node(spec, secrets));
    futures_util::future::join_all(futs)
        .await
        .into_iter()
        .map(|r| r.expect("node created and ready"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_mesh_without_any_post_start_step_and_share_content() {
    let net = unique_network("mesh");
    let _cleanup = Cleanup(net.to_string());
    let rt = runtime().await;
    let key = SwarmKey::generate().unwrap();
    let plan = plan_network(&net, 3, &image(), small(), &key).unwrap();
    let records = create_all(&rt, &plan).await;

    // Each node runs as the identity nexus generated for it.
    for (rec, (spec, _)) in records.iter().zip(&plan) {
        let id = rpc_json(&api_of(rec), "id").await;
        assert_eq!(id["ID"], spec.peer_id);
        assert_eq!(rec.state, NodeState::Running);
    }
    // Every node sees the two others, with no swarm/connect from us.
    for (rec, (spec, _)) in records.iter().zip(&plan) {
        let port = &api_of(rec);
        let want: Vec<String> = spec.peers.iter().map(|p| p.peer_id.clone()).collect();
        let meshed = eventually(Duration::from_secs(30), || {
            let want = want.clone();
            async move {
                let got = peers(port).await;
                want.iter().all(|w| got.contains(w))
            }
        })
        .await;
        assert!(
            meshed,
            "{} did not see {want:?}: {:?}",
            spec.node,
            peers(port).await
        );
    }
    // Content added on node 0 is read from nodes 1 and 2 (bitswap over the private swarm).
    let data = format!(
        "hello from {net} {}",
        hex::encode(key.to_file_contents().len().to_be_bytes())
    );
    let cid = add(&api_of(&records[0]), data.as_bytes()).await;
    for rec in &records[1..] {
        let (status, body) = rpc(&api_of(rec), &format!("cat?arg={cid}")).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(body.as_ref(), data.as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_with_another_key_gets_no_peers() {
    let net = unique_network("pnet");
    let _cleanup = Cleanup(net.to_string());
    let rt = runtime().await;
    let key = SwarmKey::generate().unwrap();
    let mut plan = plan_network(&net, 3, &image(), small(), &key).unwrap();
    // Node 2 is on the same Docker network and knows the others' addresses, but has its own key.
    plan[2].1.swarm_key = SwarmKey::generate().unwrap();
    let records = create_all(&rt, &plan).await;
    let outsider = plan[2].0.peer_id.clone();
    let (a, b, c) = (
        &api_of(&records[0]),
        &api_of(&records[1]),
        &api_of(&records[2]),
    );
    // The insiders find each other...
    let meshed = eventually(Duration::from_secs(30), || async move {
        peers(a).await.contains(&plan_peer(b).await)
    })
    .await;
    assert!(meshed, "nodes 0 and 1 share a key and should mesh");
    // ...and, given time to try, never the outsider.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(peers(c).await, Vec::<String>::new(), "outsider has peers");
    assert!(!peers(a).await.contains(&outsider));
    assert!(!peers(b).await.contains(&outsider));
    // An explicit dial is refused too.
    let target = format!(
        "/dns4/{}/tcp/4001/p2p/{}",
        plan[0].0.node.container_name(),
        plan[0].0.peer_id
    );
    let (status, _) = rpc(c, &format!("swarm/connect?arg={target}")).await;
    assert_ne!(status, 200, "outsider connected to an insider");
}

async fn plan_peer(node: &Endpoint) -> String {
    rpc_json(node, "id").await["ID"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_reach_docker_and_kubo_and_secrets_stay_files() {
    let net = unique_network("lim");
    let _cleanup = Cleanup(net.to_string());
    let rt = runtime().await;
    let key = SwarmKey::generate().unwrap();
    let resources = Resources {
        cpu_millis: 750,
        memory_bytes: 384 * MIB,
        disk_bytes: 2048 * MIB,
    };
    let plan = plan_network(&net, 1, &image(), resources, &key).unwrap();
    let rec = rt.create_node(&plan[0].0, &plan[0].1).await.unwrap();
    let name = plan[0].0.node.container_name();

    assert_eq!(inspect(&name, "{{.HostConfig.NanoCpus}}"), "750000000");
    assert_eq!(
        inspect(&name, "{{.HostConfig.Memory}}"),
        (384 * MIB).to_string()
    );
    assert_eq!(
        inspect(&name, "{{.HostConfig.MemorySwap}}"),
        (384 * MIB).to_string()
    );
    assert_eq!(
        inspect(&name, "{{.HostConfig.RestartPolicy.Name}}"),
        "unless-stopped"
    );
    // Only the swarm port is published: the RPC API and gateway are unix sockets.
    assert_eq!(
        inspect(
            &name,
            "{{range $p, $b := .HostConfig.PortBindings}}{{$p}} {{end}}"
        ),
        "4001/tcp"
    );
    // Hardened: the image's node user, no capability, no privilege gain, read-only root.
    assert_eq!(inspect(&name, "{{.Config.User}}"), "1000:100");
    assert_eq!(inspect(&name, "{{json .HostConfig.CapDrop}}"), r#"["ALL"]"#);
    assert_eq!(inspect(&name, "{{json .HostConfig.CapAdd}}"), "null");
    assert_eq!(
        inspect(&name, "{{json .HostConfig.SecurityOpt}}"),
        r#"["no-new-privileges:true"]"#
    );
    assert_eq!(inspect(&name, "{{.HostConfig.ReadonlyRootfs}}"), "true");
    assert_eq!(
        docker(&["exec", &name, "sh", "-c", "touch /x 2>&1 || echo refused"])
            .lines()
            .last(),
        Some("refused")
    );
    assert_eq!(
        inspect(
            &name,
            r#"{{(index (index .HostConfig.PortBindings "4001/tcp") 0).HostIp}}"#
        ),
        "0.0.0.0"
    );
    assert_eq!(
        inspect(&name, "{{.HostConfig.NetworkMode}}"),
        format!("nexus-{net}")
    );
    let env = inspect(&name, "{{json .Config.Env}}");
    assert!(env.contains("LIBP2P_FORCE_PNET=1"), "{env}");
    assert!(
        env.contains(&format!("GOMEMLIMIT={}", 384 * MIB / 10 * 9)),
        "{env}"
    );
    let key_hex = key.to_file_contents().lines().nth(2).unwrap().to_string();
    let everything = docker(&["inspect", &name]);
    assert!(
        !everything.contains(&key_hex),
        "swarm key visible in docker inspect"
    );
    assert!(!everything.contains(&plan[0].1.identity.kubo_private_key().unwrap()));
    // The data volume is a named volume mounted at the repo; the node's directory gives the
    // init script (read-only) and the run directory; /tmp is a small tmpfs.
    let mounts = inspect(
        &name,
        r#"{{range .Mounts}}{{.Type}}:{{.Name}}:{{.Destination}}:{{.RW}} {{end}}"#,
    );
    for want in [
        format!("volume:{}:/data/ipfs:true", plan[0].0.node.volume_name()),
        "bind::/container-init.d:false".into(),
        "bind::/nexus:true".into(),
        "tmpfs::/tmp:true".into(),
    ] {
        assert!(mounts.contains(&want), "{want} not in {mounts}");
    }

    // kubo's own config carries the limits and the pnet settings.
    let config: serde_json::Value =
        serde_json::from_str(&docker(&["exec", &name, "cat", "/data/ipfs/config"])).unwrap();
    assert_eq!(config["Datastore"]["StorageMax"], (2048 * MIB).to_string());
    assert_eq!(
        config["Swarm"]["ResourceMgr"]["MaxMemory"],
        (192 * MIB).to_string()
    );
    assert_eq!(config["AutoConf"]["Enabled"], false);
    assert_eq!(config["Identity"]["PeerID"], plan[0].0.peer_id);
    assert_eq!(config["Swarm"]["Transports"]["Network"]["QUIC"], false);
    assert_eq!(config["Addresses"]["API"], "/unix/nexus/api.sock");
    assert_eq!(config["Addresses"]["Gateway"], "/unix/nexus/gateway.sock");
    assert_eq!(config["Gateway"]["ExposeRoutingAPI"], false);
    assert_eq!(config["Gateway"]["DiagnosticServiceURL"], "");
    assert_eq!(config["HTTPRetrieval"]["Enabled"], false);
    assert_eq!(config["Provide"]["Enabled"], true);
    assert_eq!(config["Provide"]["DHT"]["SweepEnabled"], false);
    assert!(env.contains("IPFS_TELEMETRY=off"), "{env}");
    // The swarm key is a file readable by its owner only.
    let mode = docker(&["exec", &name, "stat", "-c", "%a", "/data/ipfs/swarm.key"]);
    assert_eq!(mode, "400");
    assert_eq!(
        docker(&["exec", &name, "cat", "/data/ipfs/swarm.key"]),
        key.to_file_contents().trim_end()
    );
    // The secret files were installed and removed: neither `docker cp` nor `docker export`
    // of the container, nor the node's directory on the host, still has them.
    for f in ["/nexus/swarm.key", "/nexus/identity.sed"] {
        assert!(
            !docker_ok(&["cp", &format!("{name}:{f}"), "-"]),
            "docker cp still finds {f}"
        );
    }
    let export = std::process::Command::new("docker")
        .args(["export", &name])
        .output()
        .unwrap();
    assert!(export.status.success());
    let priv_key = plan[0].1.identity.kubo_private_key().unwrap();
    for secret in [key_hex.as_bytes(), priv_key.as_bytes()] {
        assert!(
            !export.stdout.windows(secret.len()).any(|w| w == secret),
            "docker export carries a secret"
        );
    }
    let host_files = std::process::Command::new("grep")
        .args(["-rl", &key_hex, rt.config().node_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        host_files.stdout.is_empty(),
        "a host file holds the swarm key"
    );
    // The RPC API answers on its socket; no port is published for it.
    assert!(rec.ports.swarm.is_some());
    assert_eq!(rpc_json(&api_of(&rec), "id").await["ID"], plan[0].0.peer_id);
}

/// As another local account (`nobody`) and from another container on the node's own Docker
/// network, nothing of a node's RPC API or gateway answers: the sockets sit in a directory
/// only the daemon's user may enter, and nothing listens on TCP.
#[tokio::test(flavor = "multi_thread")]
async fn node_apis_answer_nobody_but_nexus() {
    let net = unique_network("iso");
    let _cleanup = Cleanup(net.to_string());
    let rt = runtime().await;
    let key = SwarmKey::generate().unwrap();
    let plan = plan_network(&net, 1, &image(), small(), &key).unwrap();
    let rec = rt.create_node(&plan[0].0, &plan[0].1).await.unwrap();
    let name = plan[0].0.node.container_name();
    let endpoints = rec.endpoints.clone().expect("endpoints");
    let api = endpoints
        .api
        .socket_path()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let gateway = endpoints
        .gateway
        .socket_path()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    // nexus itself gets through.
    let (status, _) = rpc(&endpoints.api, "config/show").await;
    assert_eq!(status, 200);

    let as_nobody = |args: &[&str]| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(args)
            .output()
            .expect("setpriv (util-linux) runs")
    };
    // The sockets, by path, as another local user: permission denied at the directory.
    for (sock, path) in [(&api, "/api/v0/config/show"), (&gateway, "/ipfs/bafkqaaa")] {
        let out = as_nobody(&[
            "curl",
            "-sS",
            "-m",
            "5",
            "-X",
            "POST",
            "--unix-socket",
            sock,
            &format!("http://x{path}"),
        ]);
        assert!(!out.status.success(), "nobody reached {sock}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("ermission denied") || err.contains("Couldn't connect"),
            "{err}"
        );
    }
    // The container's bridge address, as another local user and as root: nothing listens.
    let ip = inspect(
        &name,
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
    );
    assert!(!ip.is_empty());
    for port in ["5001", "8080"] {
        let url = format!("http://{ip}:{port}/api/v0/config/show");
        let out = as_nobody(&["curl", "-sS", "-m", "5", "-X", "POST", &url]);
        assert!(!out.status.success(), "nobody reached {url}");
        let out = std::process::Command::new("curl")
            .args(["-sS", "-m", "5", "-X", "POST", &url])
            .output()
            .unwrap();
        assert!(!out.status.success(), "root reached {url}");
    }
    // Another container on the node's own Docker network finds nothing listening either (the
    // image's own `ipfs` client dials the TCP ports kubo used to listen on).
    let out = std::process::Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            &format!("nexus-{net}"),
            "--entrypoint",
            "/bin/sh",
            &image(),
            "-c",
            &format!(
                "for p in 5001 8080; do ipfs --api=/ip4/{ip}/tcp/$p id 2>&1; done; echo probed"
            ),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("probed"),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.matches("refused").count(),
        2,
        "another container reached the node: {text}"
    );
    // The node directory is closed to others on the host.
    let node_dir = rt.config().node_dir.clone();
    let mode = std::fs::metadata(&node_dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        mode.permissions().mode() & 0o077,
        0,
        "{}",
        node_dir.display()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_gives_a_die_event_and_state_is_rebuilt_from_labels() {
    let net = unique_network("evt");
    let _cleanup = Cleanup(net.to_string());
    let rt = runtime().await;
    let key = SwarmKey::generate().unwrap();
    let plan = plan_network(&net, 2, &image(), small(), &key).unwrap();
    let mut events = rt.watch();
    let created = create_all(&rt, &plan).await;

    let victim = &plan[1].0.node;
    docker(&["kill", &victim.container_name()]);
    let got_die = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(ev) = events.next().await {
            let ev = ev.expect("event stream");
            if &ev.node == victim && matches!(ev.kind, NodeEventKind::Die { .. }) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(got_die, "no die event for the killed node");

    // Drop every bit of in-memory state: a new runtime rebuilds the nodes from Docker alone.
    drop(events);
    drop(rt);
    let fresh = runtime().await;
    let mut listed: Vec<_> = fresh
        .list_nodes()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.spec.node.network == net)
        .collect();
    listed.sort_by_key(|r| r.spec.node.index);
    assert_eq!(listed.len(), 2);
    for (rec, (spec, _)) in listed.iter().zip(&plan) {
        assert_eq!(&rec.spec, spec);
    }
    assert_eq!(listed[0].container_id, created[0].container_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn foreign_containers_are_never_touched() {
    let net = unique_network("foreign");
    let _cleanup = Cleanup(net.to_string());
    let rt = runtime().await;
    let key = SwarmKey::generate().unwrap();
    let plan = plan_network(&net, 2, &image(), small(), &key).unwrap();
    // A container squatting node 0's exact name, and one with a similar name; no nexus labels.
    let squatter = plan[0].0.node.container_name();
    let lookalike = format!("{squatter}x");
    let img = image();
    for name in [&squatter, &lookalike] {
        docker(&[
            "create",
            "--name",
            name,
            "--entrypoint",
            "/bin/sh",
            &img,
            "-c",
            "sleep 600",
        ]);
    }
    let _foreign = ForeignGuard(vec![squatter.clone(), lookalike.clone()]);

    let err = rt.create_node(&plan[0].0, &plan[0].1).await.unwrap_err();
    assert!(matches!(err, RuntimeError::NameTaken { .. }), "{err}");
    assert!(err.to_string().contains("not created by nexus"), "{err}");
    rt.create_node(&plan[1].0, &plan[1].1).await.unwrap();
    assert!(rt
        .list_nodes()
        .await
        .unwrap()
        .iter()
        .all(|r| r.spec.node != plan[0].0.node));
    assert!(matches!(
        rt.stop_node(&plan[0].0.node).await,
        Err(RuntimeError::NameTaken { .. })
    ));
    rt.remove_network(&net).await.unwrap();
    // Ours are gone; the foreign ones are exactly as they were.
    assert!(!docker_ok(&["inspect", &plan[1].0.node.container_name()]));
    for name in [&squatter, &lookalike] {
        assert_eq!(inspect(name, "{{.State.Status}}"), "created");
    }
}

struct ForeignGuard(Vec<String>);
impl Drop for ForeignGuard {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", "-v", n])
                .output();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_keeps_data_and_remove_leaves_nothing() {
    let net = unique_network("life");
    let _cleanup = Cleanup(net.to_string());
    let rt = runtime().await;
    let key = SwarmKey::generate().unwrap();
    let plan = plan_network(&net, 1, &image(), small(), &key).unwrap();
    let (spec, secrets) = &plan[0];
    let rec = rt.create_node(spec, secrets).await.unwrap();
    let cid = add(&api_of(&rec), b"kept across restarts").await;

    rt.stop_node(&spec.node).await.unwrap();
    let stopped = rt.list_nodes().await.unwrap();
    let stopped = stopped.iter().find(|r| r.spec.node == spec.node).unwrap();
    assert!(
        matches!(stopped.state, NodeState::Exited { .. }),
        "{:?}",
        stopped.state
    );

    let again = rt.start_node(&spec.node).await.unwrap();
    assert_eq!(again.container_id, rec.container_id);
    let api = &api_of(&again);
    assert_eq!(rpc_json(api, "id").await["ID"], spec.peer_id);
    let (status, body) = rpc(api, &format!("cat?arg={cid}")).await;
    assert_eq!(status, 200);
    assert_eq!(body.as_ref(), b"kept across restarts");

    // Container gone, data kept: a re-created node finds its repo again.
    rt.remove_container(&spec.node).await.unwrap();
    assert!(!docker_ok(&["inspect", &spec.node.container_name()]));
    assert!(docker_ok(&["volume", "inspect", &spec.node.volume_name()]));
    let recreated = rt.create_node(spec, secrets).await.unwrap();
    assert_ne!(recreated.container_id, rec.container_id);
    let (status, body) = rpc(&api_of(&recreated), &format!("cat?arg={cid}")).await;
    assert_eq!(
        (status, body.as_ref()),
        (200, b"kept across restarts".as_ref())
    );

    rt.remove_network(&net).await.unwrap();
    let label = format!("label=io.nexus.network={net}");
    assert_eq!(docker(&["ps", "-aq", "--filter", &label]), "");
    assert_eq!(docker(&["volume", "ls", "-q", "--filter", &label]), "");
    assert!(!docker_ok(&["network", "inspect", &net.docker_network()]));
    // Removing again is a no-op, not an error.
    rt.remove_network(&net).await.unwrap();
}

/// An image whose entrypoint fails at once, built locally from the test image.
fn broken_image() -> String {
    derived_image(
        "nexus-test-broken",
        r#"ENTRYPOINT ["/bin/sh", "-c", "echo nexus-test: exiting on purpose >&2; exit 3"]"#,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_nodes_leave_nothing_behind_and_say_why() {
    let net = unique_network("fail");
    let _cleanup = Cleanup(net.to_string());
    let key = SwarmKey::generate().unwrap();
    let plan = plan_network(&net, 1, &image(), small(), &key).unwrap();
    let (spec, secrets) = &plan[0];
    let label = format!("label=io.nexus.network={net}");
    let nothing_left = || {
        assert_eq!(docker(&["ps", "-aq", "--filter", &label]), "");
        assert_eq!(docker(&["volume", "ls", "-q", "--filter", &label]), "");
        assert!(!docker_ok(&["network", "inspect", &net.docker_network()]));
    };
    let rt = runtime().await;

    // A missing image is refused before anything is created, with a way forward.
    let mut missing = spec.clone();
    missing.image = "nexus-no-such-image:v0".into();
    let err = rt.create_node(&missing, secrets).await.unwrap_err();
    assert!(matches!(err, RuntimeError::ImageMissing { .. }), "{err}");
    assert!(err.to_string().contains("build-test-image.sh"), "{err}");
    nothing_left();

    // A host port another program holds: the runtime says which (the orchestrator moves the
    // node to another port) and leaves nothing.
    let holder = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let held = holder.local_addr().unwrap().port();
    let mut busy = spec.clone();
    busy.ports.swarm = Some(held);
    let err = rt.create_node(&busy, secrets).await.unwrap_err();
    match &err {
        RuntimeError::PortTaken { port, detail } => {
            assert_eq!(*port, held, "{err}");
            assert!(detail.contains("address already in use"), "{err}");
        }
        other => panic!("expected PortTaken, got {other}"),
    }
    drop(holder);
    nothing_left();

    // A node that exits at once: the error has its exit code and its last log lines.
    let mut broken = spec.clone();
    broken.image = broken_image();
    let err = rt.create_node(&broken, secrets).await.unwrap_err();
    match &err {
        RuntimeError::NotReady { reason, logs, .. } => {
            // Seen exited (code 3), or already restarted by Docker's restart policy.
            assert!(
                matches!(
                    reason,
                    nexus::node::runtime::NotReadyReason::Exited(3)
                        | nexus::node::runtime::NotReadyReason::Restarted(_)
                ),
                "{err}"
            );
            assert!(logs.contains("exiting on purpose"), "{err}");
        }
        other => panic!("expected NotReady, got {other}"),
    }
    nothing_left();

    // A node that does not answer in time is rolled back completely.
    let impatient = runtime_with(DockerRuntimeConfig {
        ready_timeout: Duration::from_millis(1),
        instance: test_instance(),
        ..Default::default()
    })
    .await;
    let err = impatient.create_node(spec, secrets).await.unwrap_err();
    assert!(
        matches!(
            &err,
            RuntimeError::NotReady {
                reason: nexus::node::runtime::NotReadyReason::Timeout(_),
                ..
            }
        ),
        "{err}"
    );
    nothing_left();

    // After all that, the same node can be created for real.
    rt.create_node(spec, secrets).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn cpu_updates_live_and_memory_recreates_on_the_same_volume() {
    let net = unique_network("upd");
    let _cleanup = Cleanup(net.to_string());
    let rt = runtime().await;
    let key = SwarmKey::generate().unwrap();
    let plan = plan_network(&net, 1, &image(), small(), &key).unwrap();
    let (spec, secrets) = &plan[0];
    let name = spec.node.container_name();
    let first = rt.create_node(spec, secrets).await.unwrap();
    let cid = add(&api_of(&first), b"survives updates").await;

    let mut cpu = spec.clone();
    cpu.resources.cpu_millis = 1500;
    let live = rt.update_node(&cpu, secrets).await.unwrap();
    assert_eq!(
        live.container_id, first.container_id,
        "CPU change must not re-create"
    );
    assert_eq!(inspect(&name, "{{.HostConfig.NanoCpus}}"), "1500000000");
    assert_eq!(live.spec.resources.cpu_millis, 1500);

    let mut mem = cpu.clone();
    mem.resources.memory_bytes = 320 * MIB;
    let recreated = rt.update_node(&mem, secrets).await.unwrap();
    assert_ne!(recreated.container_id, first.container_id);
    assert_eq!(recreated.spec, mem);
    assert_eq!(
        inspect(&name, "{{.HostConfig.Memory}}"),
        (320 * MIB).to_string()
    );
    assert!(inspect(&name, "{{json .Config.Env}}")
        .contains(&format!("GOMEMLIMIT={}", 320 * MIB / 10 * 9)));
    let api = &api_of(&recreated);
    assert_eq!(rpc_json(api, "id").await["ID"], spec.peer_id);
    let (status, body) = rpc(api, &format!("cat?arg={cid}")).await;
    assert_eq!((status, body.as_ref()), (200, b"survives updates".as_ref()));
    // Labels were rewritten: a fresh read of Docker gives the new spec.
    let listed = runtime().await.list_nodes().await.unwrap();
    assert_eq!(
        listed
            .iter()
            .find(|r| r.spec.node == spec.node)
            .unwrap()
            .spec,
        mem
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_report_real_use() {
    let net = unique_network("stats");
    let _cleanup = Cleanup(net.to_string());
    let rt = runtime().await;
    let key = SwarmKey::generate().unwrap();
    let plan = plan_network(&net, 2, &image(), small(), &key).unwrap();
    let records = create_all(&rt, &plan).await;
    add(&api_of(&records[0]), &vec![7u8; 256 * 1024]).await;
    let port = &api_of(&records[0]);
    assert!(
        eventually(Duration::from_secs(30), || async move {
            !peers(port).await.is_empty()
        })
        .await
    );

    let s = rt.node_stats(&plan[0].0.node).await.unwrap();
    assert_eq!(s.memory_limit_bytes, 256 * MIB);
    assert!(s.memory_bytes > 0 && s.memory_bytes < 256 * MIB, "{s:?}");
    assert!(s.cpu_percent >= 0.0, "{s:?}");
    assert!(s.net_rx_bytes > 0, "{s:?}");
    assert!(s.disk_used_bytes.unwrap_or(0) >= 256 * 1024, "{s:?}");
    assert!(s.uptime.is_some(), "{s:?}");
    assert_eq!(s.peer_count, Some(1), "{s:?}");

    // Diagnostics: state, logs, peers, and the config without the private key.
    let d = rt.node_diagnostics(&plan[0].0.node).await.unwrap();
    assert_eq!(d.state, Some(NodeState::Running));
    assert!(
        d.logs.contains("nexus: configuration written for"),
        "{}",
        d.logs
    );
    assert_eq!(d.peers, Some(vec![plan[1].0.peer_id.clone()]));
    let config = d.config.expect("config of a running node");
    assert_eq!(config["Identity"]["PeerID"], plan[0].0.peer_id);
    assert!(
        config["Identity"].get("PrivKey").is_none(),
        "private key leaked"
    );
    let all = serde_json::to_string(&config).unwrap() + &d.logs;
    assert!(!all.contains(&plan[0].1.identity.kubo_private_key().unwrap()));
    assert!(!all.contains(key.to_file_contents().lines().nth(2).unwrap()));

    // The CPU meter's reading: the CPU time of this run, growing, and the run's start.
    let first = rt
        .node_cpu(&plan[0].0.node)
        .await
        .unwrap()
        .expect("a reading");
    assert!(first.used > Duration::ZERO, "{first:?}");
    assert_eq!(Some(&first.started_at), records[0].started_at.as_ref());
    rpc(port, "repo/stat").await;
    let second = rt
        .node_cpu(&plan[0].0.node)
        .await
        .unwrap()
        .expect("a reading");
    assert!(second.used >= first.used, "{first:?} then {second:?}");
    let cores = rt
        .host_cpus()
        .await
        .unwrap()
        .expect("Docker says how many cores");
    assert!(cores >= 1.0, "{cores}");

    rt.stop_node(&plan[1].0.node).await.unwrap();
    let stopped = rt.node_stats(&plan[1].0.node).await.unwrap();
    assert_eq!(stopped.uptime, None);
    assert_eq!(stopped.peer_count, None);
    assert_eq!(rt.node_cpu(&plan[1].0.node).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn another_instances_nodes_are_invisible_and_untouchable() {
    let net = unique_network("inst");
    let _cleanup = Cleanup(net.to_string());
    let mine = runtime_with(DockerRuntimeConfig {
        instance: InstanceName::new(&format!("a-{net}")).unwrap(),
        ..Default::default()
    })
    .await;
    let theirs = runtime_with(DockerRuntimeConfig {
        instance: InstanceName::new(&format!("b-{net}")).unwrap(),
        ..Default::default()
    })
    .await;
    let key = SwarmKey::generate().unwrap();
    let plan = plan_network(&net, 1, &image(), small(), &key).unwrap();
    let rec = mine.create_node(&plan[0].0, &plan[0].1).await.unwrap();

    assert!(theirs
        .list_nodes()
        .await
        .unwrap()
        .iter()
        .all(|r| r.spec.node.network != net));
    theirs.remove_network(&net).await.unwrap();
    assert!(matches!(
        theirs.create_node(&plan[0].0, &plan[0].1).await,
        Err(RuntimeError::NameTaken { .. })
    ));
    assert!(matches!(
        theirs.stop_node(&plan[0].0.node).await,
        Err(RuntimeError::NameTaken { .. })
    ));
    // Still running, still listed by its owner.
    assert_eq!(inspect(&rec.container_id, "{{.State.Status}}"), "running");
    assert!(mine
        .list_nodes()
        .await
        .unwrap()
        .iter()
        .any(|r| r.spec.node.network == net));
    // A runtime cannot be made for a bad instance name: the name is refused where it enters.
    assert!(InstanceName::new("Bad Name").is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_newer_repo_version_is_migrated_by_the_daemon_and_an_older_kubo_refused() {
    let net = unique_network("migr");
    let _cleanup = Cleanup(net.to_string());
    let rt = runtime().await;
    let key = SwarmKey::generate().unwrap();
    let plan = plan_network(&net, 1, &image(), small(), &key).unwrap();
    let (spec, secrets) = &plan[0];
    let name = spec.node.container_name();
    let first = rt.create_node(spec, secrets).await.unwrap();
    let cid = add(&api_of(&first), b"added before the upgrade").await;
    assert_eq!(docker(&["exec", &name, "cat", "/data/ipfs/version"]), "14");

    // Upgrade: no `ipfs` process opens the repo before the daemon (the configuration is
    // written whole), so the daemon's `--migrate` migrates it first; an `ipfs config` call
    // would have refused the repo (the node would crash-loop and be rolled back).
    let mut newer = spec.clone();
    newer.image = newer_repo_image();
    let upgraded = rt.update_node(&newer, secrets).await.unwrap();
    assert_ne!(upgraded.container_id, first.container_id);
    assert_eq!(docker(&["exec", &name, "cat", "/data/ipfs/version"]), "15");
    // Nothing opened the repo before the daemon, whose `--migrate` migrated it.
    assert_eq!(
        starts_before_daemon(&name),
        [
            "version",
            "daemon --migrate=true --enable-gc --agent-version-suffix=nexus"
        ]
    );
    let logs = docker(&["logs", &name]);
    assert!(
        logs.contains("Success: fs-repo migrated to version 15."),
        "{logs}"
    );
    let api = &api_of(&upgraded);
    assert_eq!(rpc_json(api, "id").await["ID"], spec.peer_id);
    let (status, body) = rpc(api, &format!("cat?arg={cid}")).await;
    assert_eq!(
        (status, body.as_ref()),
        (200, b"added before the upgrade".as_ref())
    );

    // Back to the older image: kubo refuses a repo newer than itself, with its own message,
    // and the runtime puts the node back on the newer image, content intact.
    let err = rt.update_node(spec, secrets).await.unwrap_err();
    match &err {
        RuntimeError::NotReady { logs, .. } => assert!(
            logs.contains("Your programs version (14) is lower than your repos (15)."),
            "{err}"
        ),
        other => panic!("expected NotReady, got {other}"),
    }
    assert_eq!(inspect(&name, "{{.Config.Image}}"), newer.image);
    let back = runtime()
        .await
        .list_nodes()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.spec.node == spec.node)
        .expect("node still there");
    let api = &api_of(&back);
    assert!(
        eventually(Duration::from_secs(60), || async {
            try_rpc(api, &format!("cat?arg={cid}"))
                .await
                .is_some_and(|(s, b)| s == 200 && b.as_ref() == b"added before the upgrade")
        })
        .await,
        "the rolled-back node must serve its content again"
    );
}

/// The `ipfs` starts of one container start, in order, up to and including the daemon (the
/// test image logs each start; the health check's come after the daemon's).
fn starts_before_daemon(container: &str) -> Vec<String> {
    let log = docker(&["exec", container, "cat", "/tmp/kubo-shim-starts"]);
    let mut out = Vec::new();
    for line in log.lines() {
        out.push(line.to_owned());
        if line.starts_with("daemon") {
            return out;
        }
    }
    panic!("no daemon start in {log}");
}

/// Issue 18: nexus starts no `ipfs` process of its own before the daemon. A first start runs
/// only the image's own (`version`, then `init` and its two `config` calls on a fresh repo); a
/// restart and a re-created container run one (`version`) before the daemon.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_start_runs_no_ipfs_process_of_nexus_before_the_daemon() {
    let net = unique_network("starts");
    let _cleanup = Cleanup(net.to_string());
    let rt = runtime().await;
    let key = SwarmKey::generate().unwrap();
    let plan = plan_network(&net, 1, &image(), small(), &key).unwrap();
    let (spec, secrets) = &plan[0];
    let name = spec.node.container_name();
    let first = rt.create_node(spec, secrets).await.unwrap();
    assert_eq!(
        starts_before_daemon(&name),
        [
            "version",
            "init",
            "config Addresses.API /ip4/0.0.0.0/tcp/5001",
            "config Addresses.Gateway /ip4/0.0.0.0/tcp/8080",
            "daemon --migrate=true --enable-gc --agent-version-suffix=nexus",
        ],
        "a first start runs the image's own steps and nothing of nexus's"
    );
    let logs = docker(&["logs", &name]);
    assert!(logs.contains("nexus: configuration written for"), "{logs}");
    assert!(!logs.contains("key by key"), "{logs}");
    // What the node runs with is what nexus rendered: identity, sockets, pnet settings.
    let api = &api_of(&first);
    assert_eq!(rpc_json(api, "id").await["ID"], spec.peer_id);
    let cid = add(api, b"kept across restarts").await;
    let show = rpc_json(api, "config/show").await;
    assert_eq!(show["Routing"]["Type"], "dht");
    assert_eq!(show["AutoConf"]["Enabled"], false);
    assert_eq!(show["Addresses"]["API"], "/unix/nexus/api.sock");
    assert_eq!(show["Datastore"]["StorageMax"], (512 * MIB).to_string());
    assert_eq!(
        show["Identity"].get("PrivKey"),
        None,
        "kubo never shows the key"
    );

    // A restart of the same container: one `ipfs` start before the daemon.
    docker(&["restart", &name]);
    let up = rt.start_node(&spec.node).await.unwrap();
    assert_eq!(
        starts_before_daemon(&name),
        [
            "version",
            "daemon --migrate=true --enable-gc --agent-version-suffix=nexus"
        ]
    );
    assert_eq!(rpc_json(&api_of(&up), "id").await["ID"], spec.peer_id);

    // A re-created container on the same volume (more memory): the same, with the new value.
    let mut bigger = spec.clone();
    bigger.resources.memory_bytes = 320 * MIB;
    let again = rt.update_node(&bigger, secrets).await.unwrap();
    assert_ne!(again.container_id, first.container_id);
    assert_eq!(
        starts_before_daemon(&name),
        [
            "version",
            "daemon --migrate=true --enable-gc --agent-version-suffix=nexus"
        ]
    );
    let api = &api_of(&again);
    assert_eq!(
        rpc_json(api, "config/show").await["Swarm"]["ResourceMgr"]["MaxMemory"],
        (160 * MIB).to_string()
    );
    let (status, body) = rpc(api, &format!("cat?arg={cid}")).await;
    assert_eq!(
        (status, body.as_ref()),
        (200, b"kept across restarts".as_ref())
    );
}
