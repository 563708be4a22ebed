//! The orchestrator against real Docker, real kubo nodes (the test image) and both store
//! backends: SQLite (a file) and Postgres (`NEXUS_TEST_POSTGRES_URL`, from scripts/test.sh).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use nexus::node::endpoint::Endpoint;
use nexus::node::{NetworkName, NodeRuntime};
use nexus::orchestrator::ports::{BindProbe, PortConfig, PortRange};
use nexus::orchestrator::{CreateNetwork, Orchestrator, OrchestratorConfig, UpdateNetwork};
use nexus::store::sql::SqlStore;
use nexus::store::{NetworkStatus, Store};
use sqlx::{Connection, Executor};

const MIB: u64 = 1024 * 1024;

fn config(port_base: u16) -> OrchestratorConfig {
    let range = |low: u16| {
        vec![PortRange {
            low,
            high: low + 19,
        }]
    };
    OrchestratorConfig {
        image: image(),
        op_timeout: Duration::from_secs(120),
        resync_interval: Duration::from_secs(2),
        restart_backoff: Duration::from_millis(200),
        default_resources: nexus::node::Resources {
            cpu_millis: 500,
            memory_bytes: 256 * MIB,
            disk_bytes: 512 * MIB,
        },
        ports: PortConfig {
            swarm: range(port_base),
        },
        ..Default::default()
    }
}

async fn orchestrator(
    url: &str,
    port_base: u16,
    instance: &str,
) -> (Orchestrator, tokio::task::JoinHandle<()>) {
    let store: Arc<dyn Store> = Arc::new(
        SqlStore::connect(url, common::seal_keys())
            .await
            .expect("store"),
    );
    // Its own owner scope: recovery removes unknown nexus nodes, but only of this instance,
    // so the other tests sharing the Docker daemon are safe.
    let runtime: Arc<dyn NodeRuntime> = Arc::new(
        runtime_with(nexus::node::DockerRuntimeConfig {
            instance: nexus::names::InstanceName::new(instance).unwrap(),
            ..Default::default()
        })
        .await,
    );
    let orch = Orchestrator::new(store, runtime, config(port_base), Box::new(BindProbe))
        .await
        .expect("orchestrator");
    orch.recover().await.expect("recovery");
    let runner = {
        let o = orch.clone();
        tokio::spawn(async move { o.run().await })
    };
    (orch, runner)
}

/// The RPC API endpoint of a ready node, as the registry publishes it for the delegator.
fn api_of_node(orch: &Orchestrator, network: &str, index: u16) -> Option<Endpoint> {
    let entry = orch.registry().get(&NetworkName::new(network).ok()?)?;
    let node = entry.nodes.iter().find(|n| n.index == index)?;
    Some(node.api.clone())
}

/// Waits until every running node of the network sees all the others.
async fn meshed(orch: &Orchestrator, network: &str, n: usize) -> bool {
    eventually(Duration::from_secs(60), || async {
        let Ok(view) = orch.get(network).await else {
            return false;
        };
        if view.nodes.len() != n {
            return false;
        }
        for node in &view.nodes {
            let Some(api) = api_of_node(orch, network, node.index) else {
                return false;
            };
            let Some((status, body)) = try_rpc(&api, "swarm/peers").await else {
                return false;
            };
            if status != 200 {
                return false;
            }
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let mut ids: Vec<String> = v["Peers"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|p| p["Peer"].as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            ids.sort();
            ids.dedup();
            if ids.len() != n - 1 {
                return false;
            }
        }
        true
    })
    .await
}

fn container_ids(network: &str) -> Vec<String> {
    let out = docker(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label=io.nexus.network={network}"),
    ]);
    let mut ids: Vec<String> = out.lines().map(String::from).collect();
    ids.sort();
    ids
}

async fn scenario(url: &str, port_base: u16) {
    let net = unique_network("orch");
    let name = net.to_string();
    let _cleanup = Cleanup(name.clone());
    let instance = format!("test-{name}");
    let (orch, runner) = orchestrator(url, port_base, &instance).await;

    // Create and start three nodes: all ready, all meshed.
    orch.create(CreateNetwork {
        name: name.clone(),
        replicas: 3,
        access: nexus::access::Access {
            users: vec!["alice".into()],
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let view = orch.start(&name).await.unwrap();
    assert_eq!(view.status, NetworkStatus::Running);
    assert!(meshed(&orch, &name, 3).await, "3 nodes did not mesh");
    let api0 = api_of_node(&orch, &name, view.nodes[0].index).unwrap();
    let cid = add(&api0, b"kept by the orchestrator").await;

    // Kill a node: it comes back and meshes again with no call from us.
    let victim = format!("nexus-{name}-1");
    docker(&["kill", &victim]);
    assert!(
        meshed(&orch, &name, 3).await,
        "killed node did not come back"
    );

    // Drop the orchestrator without shutdown; a new one adopts the nodes without restarting.
    let before = container_ids(&name);
    let started: Vec<String> = before
        .iter()
        .map(|id| inspect(id, "{{.State.StartedAt}}"))
        .collect();
    runner.abort();
    drop(orch);
    let (orch, runner) = orchestrator(url, port_base, &instance).await;
    assert_eq!(container_ids(&name), before, "containers were replaced");
    let after: Vec<String> = before
        .iter()
        .map(|id| inspect(id, "{{.State.StartedAt}}"))
        .collect();
    assert_eq!(after, started, "nodes were restarted");
    assert_eq!(
        orch.get(&name).await.unwrap().status,
        NetworkStatus::Running
    );
    assert_eq!(orch.registry().get(&net).unwrap().nodes.len(), 3);

    // Scale 3 → 5 → 2.
    let scale = |n| UpdateNetwork {
        replicas: Some(n),
        ..Default::default()
    };
    orch.update(&name, scale(5)).await.unwrap();
    assert!(meshed(&orch, &name, 5).await, "5 nodes did not mesh");
    orch.update(&name, scale(2)).await.unwrap();
    assert_eq!(container_ids(&name).len(), 2);
    assert!(meshed(&orch, &name, 2).await, "2 nodes did not mesh");

    // Stop keeps data; start brings it back.
    let stopped = orch.stop(&name).await.unwrap();
    assert_eq!(stopped.status, NetworkStatus::Stopped);
    assert!(container_ids(&name).is_empty());
    let view = orch.start(&name).await.unwrap();
    let api = api_of_node(&orch, &name, view.nodes[0].index).unwrap();
    let (status, body) = rpc(&api, &format!("cat?arg={cid}")).await;
    assert_eq!(
        (status, body.as_ref()),
        (200, b"kept by the orchestrator".as_ref())
    );

    // Remove leaves nothing: no container, volume, network or record.
    assert!(
        orch.remove(&name, false).await.is_err(),
        "running network removed without force"
    );
    orch.stop(&name).await.unwrap();
    orch.remove(&name, false).await.unwrap();
    let label = format!("label=io.nexus.network={name}");
    assert_eq!(docker(&["ps", "-aq", "--filter", &label]), "");
    assert_eq!(docker(&["volume", "ls", "-q", "--filter", &label]), "");
    assert!(!docker_ok(&["network", "inspect", &net.docker_network()]));
    assert!(orch.get(&name).await.is_err());
    runner.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn orchestrator_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("nexus-orch-{}", unique_network("db")));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("nexus.db").display());
    scenario(&url, 14000).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn orchestrator_on_postgres() {
    let admin = std::env::var("NEXUS_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!("NEXUS_TEST_POSTGRES_URL is not set: run the suite with scripts/test.sh")
    });
    sqlx::any::install_default_drivers();
    let db = format!(
        "nexus_orch_{}",
        unique_network("pg").as_str().replace('-', "_")
    );
    let mut conn = sqlx::AnyConnection::connect(&admin)
        .await
        .expect("Postgres admin");
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{db}\"")))
        .await
        .expect("create database");
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b)
        .expect("URL with a database");
    scenario(&format!("{base}/{db}"), 14100).await;
    conn.execute(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"
    )))
    .await
    .expect("drop database");
}
