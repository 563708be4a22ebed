//! The gate in process: a real TLS listener (ports 27500-27549), real unix sockets.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};

use super::server::{Gate, GateConfig};
use super::*;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nexus-gate-t-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A gate with fresh credentials on `port`, serving `root`; returns its access and address.
async fn start(port: u16, root: &std::path::Path) -> (Arc<GateAccess>, SocketAddr) {
    start_with(port, root, 8).await
}

async fn start_with(
    port: u16,
    root: &std::path::Path,
    max_connections: usize,
) -> (Arc<GateAccess>, SocketAddr) {
    let access = GateAccess::generate().unwrap();
    let served = GateAccess::from_parts(
        access.token_file().expose().as_bytes(),
        access.cert_pem().expose().as_bytes(),
        access.key_pem().expose().as_bytes(),
    )
    .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let listener = TcpListener::bind(addr).await.unwrap();
    let gate = Arc::new(
        Gate::new(
            served,
            GateConfig {
                root: root.to_owned(),
                max_connections,
            },
        )
        .unwrap(),
    );
    tokio::spawn(gate.serve(listener, std::future::pending()));
    (Arc::new(access), addr)
}

/// A unix socket server at `path` that answers each connection with `hello` and echoes.
fn echo_server(path: &std::path::Path) {
    let listener = UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(b"hello ").await;
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
}

fn connect_req(dir: &str) -> Request {
    Request::Connect {
        dir: dir.into(),
        socket: GateSocket::Api,
    }
}

const T: Duration = Duration::from_secs(5);

#[tokio::test]
async fn prepare_connect_remove() {
    let root = tmp("pcr");
    let (access, addr) = start(27500, &root).await;
    request(addr, &access, &Request::Prepare { dir: "n-0".into() }, T)
        .await
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(root.join("n-0"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
    // Idempotent.
    request(addr, &access, &Request::Prepare { dir: "n-0".into() }, T)
        .await
        .unwrap();
    echo_server(&root.join("n-0/api.sock"));
    let mut s = connect(addr, &access, &connect_req("n-0"), T)
        .await
        .unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 10];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello ping");
    drop(s);
    // No gateway socket there: refused with the reason.
    let err = connect(
        addr,
        &access,
        &Request::Connect {
            dir: "n-0".into(),
            socket: GateSocket::Gateway,
        },
        T,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("gateway.sock"), "{err}");
    request(addr, &access, &Request::Remove { dir: "n-0".into() }, T)
        .await
        .unwrap();
    assert!(!root.join("n-0").exists());
    request(addr, &access, &Request::Remove { dir: "n-0".into() }, T)
        .await
        .unwrap();
    std::fs::remove_dir_all(&root).unwrap();
}

#[tokio::test]
async fn a_wrong_token_or_certificate_never_reaches_a_socket() {
    let root = tmp("auth");
    let (access, addr) = start(27501, &root).await;
    std::fs::create_dir(root.join("n")).unwrap();
    echo_server(&root.join("n/api.sock"));
    // The right certificate pinned, another token.
    let other = GateAccess::generate().unwrap();
    let wrong_token = GateAccess::from_parts(
        other.token_file().expose().as_bytes(),
        access.cert_pem().expose().as_bytes(),
        access.key_pem().expose().as_bytes(),
    )
    .unwrap();
    let err = connect(addr, &wrong_token, &connect_req("n"), T)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
    let err = request(addr, &wrong_token, &Request::Remove { dir: "n".into() }, T)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
    assert!(root.join("n/api.sock").exists(), "nothing removed");
    // The right token, another certificate pinned: the TLS handshake fails.
    let wrong_pin = GateAccess::from_parts(
        access.token_file().expose().as_bytes(),
        other.cert_pem().expose().as_bytes(),
        other.key_pem().expose().as_bytes(),
    )
    .unwrap();
    let err = connect(addr, &wrong_pin, &connect_req("n"), T)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("TLS"), "{err}");
    // Plain text gets nothing back.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    let line = format!(
        "NEXUS-GATE/1 {} CONNECT n/api.sock\n",
        access.token_file().expose().trim()
    );
    plain.write_all(line.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(T * 2, plain.read_to_end(&mut buf)).await;
    assert!(!String::from_utf8_lossy(&buf).contains("hello"), "{buf:?}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[tokio::test]
async fn symlinks_and_bad_directories_are_refused() {
    let root = tmp("links");
    let (access, addr) = start(27502, &root).await;
    std::fs::create_dir_all(root.join("victim")).unwrap();
    echo_server(&root.join("victim/api.sock"));
    // A node points its api.sock at another node's.
    std::fs::create_dir(root.join("evil")).unwrap();
    std::os::unix::fs::symlink(root.join("victim/api.sock"), root.join("evil/api.sock")).unwrap();
    let err = connect(addr, &access, &connect_req("evil"), T)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("evil/api.sock"), "{err}");
    // A directory that is a symlink.
    std::os::unix::fs::symlink(root.join("victim"), root.join("alias")).unwrap();
    assert!(connect(addr, &access, &connect_req("alias"), T)
        .await
        .is_err());
    // REMOVE of the symlinked directory removes the link, never the target.
    request(
        addr,
        &access,
        &Request::Remove {
            dir: "alias".into(),
        },
        T,
    )
    .await
    .unwrap();
    assert!(root.join("victim/api.sock").exists());
    // Names outside [a-z0-9-] are refused by the gate.
    for dir in ["..", "victim/..", ""] {
        let err = connect(addr, &access, &connect_req(dir), T)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("bad preamble"), "{err}");
    }
    let err = request(addr, &access, &Request::Remove { dir: "..".into() }, T)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("bad preamble"), "{err}");
    assert!(root.exists() && root.join("victim/api.sock").exists());
    std::fs::remove_dir_all(&root).unwrap();
}

#[tokio::test]
async fn connections_beyond_the_bound_are_closed() {
    let root = tmp("bound");
    let (access, addr) = start_with(27503, &root, 1).await;
    std::fs::create_dir(root.join("n")).unwrap();
    echo_server(&root.join("n/api.sock"));
    let mut first = connect(addr, &access, &connect_req("n"), T).await.unwrap();
    let mut buf = [0u8; 6];
    first.read_exact(&mut buf).await.unwrap();
    // The one slot is taken: the next connection is closed before TLS.
    assert!(connect(addr, &access, &connect_req("n"), T).await.is_err());
    // Once the first ends, the slot is free again.
    first.shutdown().await.unwrap();
    drop(first);
    let mut freed = false;
    for _ in 0..50 {
        if connect(addr, &access, &connect_req("n"), T).await.is_ok() {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(freed, "the slot was never given back");
    std::fs::remove_dir_all(&root).unwrap();
}
