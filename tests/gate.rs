//! The gate image against a real kubo node on local Docker: a gate container (the image from
//! `scripts/build-gate-image.sh`, named by `NEXUS_GATE_IMAGE`) with a named volume at
//! `/run/nexus`, a kubo node of the test image (`NEXUS_TEST_IMAGE`) whose sockets are in a
//! directory of that volume, and nexus's own connector through the gate. Ports 27600-27699.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use nexus::gate::{self, GateAccess, GateSocket, Request};
use nexus::node::endpoint::{self, Endpoint, GateTarget};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GATE_PORT: u16 = 27600;
const NODE_DIR: &str = "node-a";
const T: Duration = Duration::from_secs(5);

fn gate_image() -> String {
    std::env::var("NEXUS_GATE_IMAGE").unwrap_or_else(|_| {
        panic!(
            "NEXUS_GATE_IMAGE is not set: run the suite with scripts/test.sh, or build the image \
             with scripts/build-gate-image.sh and export NEXUS_GATE_IMAGE=<its last line>"
        )
    })
}

/// Everything the test makes, removed when dropped, even if the test failed.
struct Lab {
    gate: String,
    node: String,
    volume: String,
    secrets: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-fv", &self.gate, &self.node])
            .output();
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f", &self.volume])
            .output();
        let _ = std::fs::remove_dir_all(&self.secrets);
    }
}

/// Runs `cmd` as user `nobody` (setpriv); returns (success, stdout + stderr).
fn as_nobody(cmd: &[&str]) -> (bool, String) {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(cmd)
        .output()
        .expect("setpriv");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn write_secret(dir: &std::path::Path, name: &str, value: &str) {
    let path = dir.join(name);
    std::fs::write(&path, value).unwrap();
    // The gate runs as 1000: the file is its own, mode 0600 (0644 if this user cannot chown).
    if std::os::unix::fs::chown(&path, Some(1000), Some(1000)).is_ok() {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    } else {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
}

async fn post(endpoint: &Endpoint, path: &str) -> Option<(u16, Bytes)> {
    let req = hyper::Request::post(endpoint.uri(path))
        .header(hyper::header::HOST, endpoint.host_header())
        .body(Full::new(Bytes::new()))
        .ok()?;
    try_send(req).await
}

async fn try_send(req: hyper::Request<Full<Bytes>>) -> Option<(u16, Bytes)> {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(endpoint::Connector::new(T));
    let resp = tokio::time::timeout(Duration::from_secs(15), client.request(req))
        .await
        .ok()?
        .ok()?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, body))
}

#[tokio::test]
async fn a_kubo_node_is_reached_through_the_gate_and_only_with_its_credentials() {
    let mut b = [0u8; 3];
    getrandom::fill(&mut b).unwrap();
    let id = format!("nexus-gatetest-{}", hex::encode(b));
    let lab = Lab {
        gate: id.clone(),
        node: format!("{id}-kubo"),
        volume: format!("{id}-run"),
        secrets: std::env::temp_dir().join(&id),
    };
    std::fs::create_dir_all(&lab.secrets).unwrap();
    std::fs::set_permissions(&lab.secrets, std::fs::Permissions::from_mode(0o755)).unwrap();

    // Credentials as the daemon keeps them, handed to the gate as files.
    let ring = nexus::store::seal::Keyring::generate().unwrap();
    let access =
        Arc::new(GateAccess::load_or_create(&lab.secrets.join("gate.sealed"), &ring).unwrap());
    let token = access.token_file();
    write_secret(&lab.secrets, "token", token.expose());
    write_secret(&lab.secrets, "cert.pem", access.cert_pem().expose());
    write_secret(&lab.secrets, "key.pem", access.key_pem().expose());
    assert!(endpoint::install_gate_access(access.clone()).is_ok());

    docker(&["volume", "create", &lab.volume]);
    let publish = format!("127.0.0.1:{GATE_PORT}:7790");
    let run_mount = format!("{}:/run/nexus", lab.volume);
    let secrets_mount = format!("{}:/secrets:ro", lab.secrets.display());
    docker(&[
        "run",
        "-d",
        "--name",
        &lab.gate,
        "-p",
        &publish,
        "-v",
        &run_mount,
        "-v",
        &secrets_mount,
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        &gate_image(),
        "--listen",
        "0.0.0.0:7790",
        "--token-file",
        "/secrets/token",
        "--cert-file",
        "/secrets/cert.pem",
        "--key-file",
        "/secrets/key.pem",
        "--log-format",
        "text",
    ]);
    let gate_addr: SocketAddr = format!("127.0.0.1:{GATE_PORT}").parse().unwrap();

    // PREPARE, once the gate listens.
    let prepared = eventually(Duration::from_secs(30), || async {
        endpoint::gate_prepare(gate_addr, NODE_DIR).await.is_ok()
    })
    .await;
    assert!(
        prepared,
        "the gate did not prepare {NODE_DIR}: {}",
        docker(&["logs", &lab.gate])
    );
    endpoint::gate_prepare(gate_addr, NODE_DIR).await.unwrap();

    // A real kubo node with its sockets in that directory (this Docker has no volume
    // subpaths, so the node sees the whole volume at /vol; in a swarm it gets only its dir).
    let vol_mount = format!("{}:/vol", lab.volume);
    let script = format!(
        "export IPFS_PATH=/tmp/ipfs && ipfs init >/dev/null && \
         ipfs config Addresses.API /unix/vol/{NODE_DIR}/api.sock && \
         ipfs config Addresses.Gateway /unix/vol/{NODE_DIR}/gateway.sock && exec ipfs daemon"
    );
    docker(&[
        "run",
        "-d",
        "--name",
        &lab.node,
        "--user",
        "1000:100",
        "--network",
        "none",
        "-v",
        &vol_mount,
        "--entrypoint",
        "/bin/sh",
        &image(),
        "-c",
        &script,
    ]);

    // Through nexus's connector and the gate: the node answers.
    let api = Endpoint::Gate(GateTarget {
        gate: gate_addr,
        dir: NODE_DIR.into(),
        socket: GateSocket::Api,
    });
    let answered = eventually(Duration::from_secs(60), || async {
        matches!(post(&api, "/api/v0/id").await, Some((200, _)))
    })
    .await;
    assert!(
        answered,
        "no answer through the gate; node: {}; gate: {}",
        docker(&["logs", &lab.node]),
        docker(&["logs", &lab.gate])
    );
    let (status, body) = post(&api, "/api/v0/id").await.unwrap();
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(v["ID"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
    // The gateway socket too: a block added through the API is read back through it.
    let cid = add(&api, b"through the gate").await;
    let gw = Endpoint::Gate(GateTarget {
        gate: gate_addr,
        dir: NODE_DIR.into(),
        socket: GateSocket::Gateway,
    });
    let req = hyper::Request::get(gw.uri(&format!("/ipfs/{cid}")))
        .header(hyper::header::HOST, gw.host_header())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, body) = try_send(req).await.expect("the gateway answers");
    assert_eq!(status, 200, "{body:?}");
    assert_eq!(&body[..], b"through the gate");

    // The right certificate pinned, a wrong token: refused before any socket.
    let other = GateAccess::generate().unwrap();
    let wrong_token = GateAccess::from_parts(
        other.token_file().expose().as_bytes(),
        access.cert_pem().expose().as_bytes(),
        access.key_pem().expose().as_bytes(),
    )
    .unwrap();
    let connect = Request::Connect {
        dir: NODE_DIR.into(),
        socket: GateSocket::Api,
    };
    let err = gate::connect(gate_addr, &wrong_token, &connect, T)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
    // The right token, another certificate pinned (a gate impostor would present its own):
    // the TLS handshake fails, the token is never sent.
    let wrong_pin = GateAccess::from_parts(
        token.expose().as_bytes(),
        other.cert_pem().expose().as_bytes(),
        other.key_pem().expose().as_bytes(),
    )
    .unwrap();
    let err = gate::connect(gate_addr, &wrong_pin, &connect, T)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("TLS"), "{err}");
    // Directories outside [a-z0-9-]: refused by the client, and by the gate when sent.
    let err = endpoint::gate_prepare(gate_addr, "../etc")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    for dir in ["..", "node-a/..", "."] {
        let bad = Request::Connect {
            dir: dir.into(),
            socket: GateSocket::Api,
        };
        let err = gate::connect(gate_addr, &access, &bad, T)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("bad preamble"), "{dir}: {err}");
    }

    // A raw client without TLS gets nothing; with TLS but no preamble, no node either.
    let mut raw = tokio::net::TcpStream::connect(gate_addr).await.unwrap();
    raw.write_all(b"POST /api/v0/id HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut got)).await;
    let got = String::from_utf8_lossy(&got);
    assert!(
        !got.contains("HTTP/1.1") && !got.contains("\"ID\""),
        "{got}"
    );
    let url = format!("http://127.0.0.1:{GATE_PORT}/api/v0/id");
    let (ok, out) = as_nobody(&["curl", "-sS", "-m", "10", "-X", "POST", &url]);
    assert!(
        !ok && !out.contains("\"ID\""),
        "plain HTTP as nobody: {out}"
    );
    let url = format!("https://127.0.0.1:{GATE_PORT}/api/v0/id");
    let (ok, out) = as_nobody(&["curl", "-sSk", "-m", "10", "-X", "POST", &url]);
    assert!(
        !ok && !out.contains("\"ID\""),
        "TLS without the token as nobody: {out}"
    );
    // Nor can nobody reach the sockets in the volume on this host.
    let mountpoint = inspect(&lab.volume, "{{.Mountpoint}}");
    let sock = format!("{}/{NODE_DIR}/api.sock", mountpoint.trim());
    let (ok, out) = as_nobody(&[
        "curl",
        "-sS",
        "-m",
        "10",
        "--unix-socket",
        &sock,
        "-X",
        "POST",
        "http://127.0.0.1/api/v0/id",
    ]);
    assert!(
        !ok && !out.contains("\"ID\""),
        "the socket as nobody: {out}"
    );

    // The gate never logged the token.
    let logs = Command::new("docker")
        .args(["logs", &lab.gate])
        .output()
        .unwrap();
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&logs.stdout),
        String::from_utf8_lossy(&logs.stderr)
    );
    assert!(logs.contains("wrong token"), "{logs}");
    assert!(
        !logs.contains(token.expose().trim()),
        "the token is in the gate's log"
    );
    assert!(!logs.contains(other.token_file().expose().trim()));

    // REMOVE takes the directory and its sockets away.
    docker(&["rm", "-f", &lab.node]);
    endpoint::gate_remove(gate_addr, NODE_DIR).await.unwrap();
    endpoint::gate_remove(gate_addr, NODE_DIR).await.unwrap();
    let listing = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &vol_mount,
        "--entrypoint",
        "/bin/ls",
        &image(),
        "-A",
        "/vol",
    ]);
    assert!(!listing.contains(NODE_DIR), "{listing}");
    assert!(post(&api, "/api/v0/id").await.is_none());
}
