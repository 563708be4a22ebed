//! The gate itself: `nexus gate` on each host.
//!
//! Owns the listener (TLS 1.3 with the gate's certificate), the per-connection handshake
//! (preamble within [`HANDSHAKE_TIMEOUT`], token in constant time), the three verbs on the
//! root directory, the bound on concurrent connections, and the process around it (reading
//! the credential files, logging, stopping at SIGINT/SIGTERM). It must not log a token or a
//! key, touch anything outside its root, or follow a symlink a node left in its directory.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::protocol::{self, GateSocket, Request, MAX_PREAMBLE};
use super::{constant_time_eq, read_line, GateAccess, GateError, HANDSHAKE_TIMEOUT};

/// The reason a wrong token gets, and the client recognises.
pub const UNAUTHORIZED: &str = "unauthorized";
/// Default bound on concurrent connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// What a gate serves and how much.
#[derive(Clone, Debug)]
pub struct GateConfig {
    /// The directory holding the node directories (`/run/nexus` in the image).
    pub root: PathBuf,
    /// Connections served at once; more are closed at once.
    pub max_connections: usize,
}

/// A gate ready to serve: credentials, TLS, root.
pub struct Gate {
    access: GateAccess,
    acceptor: TlsAcceptor,
    root: PathBuf,
    limit: Arc<Semaphore>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("access", &self.access)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl Gate {
    /// Checks the root (an existing directory) and builds the TLS acceptor.
    pub fn new(access: GateAccess, config: GateConfig) -> Result<Self, GateError> {
        let meta = std::fs::metadata(&config.root).map_err(|e| GateError::Root {
            path: config.root.clone(),
            reason: e.to_string(),
        })?;
        if !meta.is_dir() {
            return Err(GateError::Root {
                path: config.root,
                reason: "not a directory".into(),
            });
        }
        let acceptor = TlsAcceptor::from(access.server_config()?);
        Ok(Self {
            access,
            acceptor,
            root: config.root,
            limit: Arc::new(Semaphore::new(config.max_connections.max(1))),
        })
    }

    /// Serves `listener` until `shutdown` completes. Connections in flight are dropped then.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                () = &mut shutdown => return,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = self.limit.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "too many connections: closed");
                continue;
            };
            let gate = self.clone();
            tokio::spawn(async move {
                gate.handle(tcp, peer).await;
                drop(permit);
            });
        }
    }

    async fn handle(&self, tcp: TcpStream, peer: SocketAddr) {
        let _ = tcp.set_nodelay(true);
        let handshake = async {
            let mut tls = self.acceptor.accept(tcp).await.map_err(|e| {
                tracing::info!(%peer, error = %e, "refused: no TLS handshake");
            })?;
            let line = read_line(&mut tls, MAX_PREAMBLE).await;
            Ok::<_, ()>((tls, line))
        };
        let Ok(Ok((mut tls, line))) = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await
        else {
            tracing::debug!(%peer, "handshake failed or timed out");
            return;
        };
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "refused: no preamble");
                answer(&mut tls, Err("bad preamble")).await;
                return;
            }
        };
        let preamble = match protocol::parse_preamble(&line) {
            Ok(p) => p,
            Err(e) => {
                // The error quotes the offending field, never the token.
                tracing::warn!(%peer, reason = %e, "refused: bad preamble");
                answer(&mut tls, Err(&format!("bad preamble: {e}"))).await;
                return;
            }
        };
        if !constant_time_eq(preamble.token.as_ref(), self.access.token()) {
            tracing::warn!(%peer, verb = preamble.request.verb(), "refused: wrong token");
            answer(&mut tls, Err(UNAUTHORIZED)).await;
            return;
        }
        let request = preamble.request;
        match &request {
            Request::Prepare { dir } => {
                let r = prepare(&self.root, dir);
                log_outcome(peer, &request, &r);
                answer(&mut tls, r.as_ref().map(|_| ()).map_err(String::as_str)).await;
            }
            Request::Remove { dir } => {
                let r = remove(&self.root, dir);
                log_outcome(peer, &request, &r);
                answer(&mut tls, r.as_ref().map(|_| ()).map_err(String::as_str)).await;
            }
            Request::Connect { dir, socket } => {
                let mut unix = match open_socket(&self.root, dir, *socket).await {
                    Ok(s) => s,
                    Err(reason) => {
                        tracing::warn!(%peer, dir, socket = socket.file_name(), %reason,
                            "CONNECT failed");
                        answer(&mut tls, Err(&reason)).await;
                        return;
                    }
                };
                tracing::debug!(%peer, dir, socket = socket.file_name(), "CONNECT");
                if tls.write_all(b"OK\n").await.is_err() || tls.flush().await.is_err() {
                    return;
                }
                if let Err(e) = tokio::io::copy_bidirectional(&mut tls, &mut unix).await {
                    tracing::debug!(%peer, dir, error = %e, "connection ended with an error");
                }
            }
        }
    }
}

fn log_outcome(peer: SocketAddr, request: &Request, r: &Result<(), String>) {
    match r {
        Ok(()) => tracing::info!(%peer, verb = request.verb(), dir = request.dir(), "done"),
        Err(reason) => {
            tracing::warn!(%peer, verb = request.verb(), dir = request.dir(), %reason, "failed")
        }
    }
}

/// Writes the answer line and closes the TLS session.
async fn answer<S: tokio::io::AsyncWrite + Unpin>(s: &mut S, r: Result<(), &str>) {
    let line = match r {
        Ok(()) => "OK\n".to_owned(),
        Err(reason) => format!("ERR {}\n", reason.replace(['\n', '\r'], " ")),
    };
    let _ = s.write_all(line.as_bytes()).await;
    let _ = s.shutdown().await;
}

/// `PREPARE`: `<root>/<dir>` as a directory of mode 0700 (a symlink there is refused).
fn prepare(root: &Path, dir: &str) -> Result<(), String> {
    protocol::validate_dir(dir).map_err(|e| e.to_string())?;
    let path = root.join(dir);
    match std::fs::DirBuilder::new().mode(0o700).create(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => Ok(()),
                Ok(_) => Err(format!("{dir} exists and is not a directory")),
                Err(e) => Err(format!("{dir}: {e}")),
            }
        }
        Err(e) => Err(format!("cannot create {dir}: {e}")),
    }
}

/// `REMOVE`: `<root>/<dir>` and its contents; absent is fine. A symlink is removed itself,
/// never followed.
fn remove(root: &Path, dir: &str) -> Result<(), String> {
    protocol::validate_dir(dir).map_err(|e| e.to_string())?;
    let path = root.join(dir);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{dir}: {e}")),
    };
    let r = if meta.is_dir() {
        std::fs::remove_dir_all(&path)
    } else {
        std::fs::remove_file(&path)
    };
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot remove {dir}: {e}")),
    }
}

/// Opens a node's socket without following a symlink in the directory or the socket's name:
/// each is opened `O_PATH | O_NOFOLLOW`, the socket checked to be one, then connected through
/// its `/proc/self/fd` link (which names that inode, whatever the directory holds by then).
async fn open_socket(root: &Path, dir: &str, socket: GateSocket) -> Result<UnixStream, String> {
    protocol::validate_dir(dir).map_err(|e| e.to_string())?;
    let open = |p: &Path| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(p)
    };
    let dir_fd = open(&root.join(dir)).map_err(|e| format!("{dir}: {e}"))?;
    if !dir_fd.metadata().map_err(|e| e.to_string())?.is_dir() {
        return Err(format!("{dir} is not a directory"));
    }
    let sock_path = PathBuf::from(format!(
        "/proc/self/fd/{}/{}",
        dir_fd.as_raw_fd(),
        socket.file_name()
    ));
    let sock_fd = open(&sock_path).map_err(|e| format!("{dir}/{}: {e}", socket.file_name()))?;
    let is_socket = sock_fd
        .metadata()
        .map(|m| m.file_type().is_socket())
        .unwrap_or(false);
    if !is_socket {
        return Err(format!("{dir}/{} is not a socket", socket.file_name()));
    }
    let link = format!("/proc/self/fd/{}", sock_fd.as_raw_fd());
    let s = UnixStream::connect(&link)
        .await
        .map_err(|e| format!("{dir}/{}: {e}", socket.file_name()))?;
    drop(sock_fd);
    drop(dir_fd);
    Ok(s)
}

/// `nexus gate`'s arguments.
#[derive(Clone, Debug)]
pub struct GateArgs {
    pub listen: SocketAddr,
    pub root: PathBuf,
    pub token_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub max_connections: usize,
}

/// Runs a gate until SIGINT or SIGTERM.
pub async fn run(args: GateArgs) -> Result<(), GateError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| GateError::File {
            path: p.to_owned(),
            reason: e.to_string(),
        })
    };
    let token = zeroize::Zeroizing::new(read(&args.token_file)?);
    let cert = read(&args.cert_file)?;
    let key = zeroize::Zeroizing::new(read(&args.key_file)?);
    let access = GateAccess::from_parts(&token, &cert, &key)?;
    let fingerprint = access.fingerprint();
    let gate = Arc::new(Gate::new(
        access,
        GateConfig {
            root: args.root.clone(),
            max_connections: args.max_connections,
        },
    )?);
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| GateError::Listen {
            addr: args.listen,
            reason: e.to_string(),
        })?;
    tracing::info!(listen = %args.listen, root = %args.root.display(),
        cert_sha256 = %fingerprint, "gate serving");
    gate.serve(listener, stop_signal()).await;
    tracing::info!("gate stopped");
    Ok(())
}

async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
