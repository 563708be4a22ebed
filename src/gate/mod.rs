//! The gate: how nexus reaches the sockets of nodes that run on another host.
//!
//! A node's RPC API and gateway listen only on unix sockets (`/unix/nexus/api.sock`,
//! `/unix/nexus/gateway.sock`), which do not cross hosts, and kubo's own authorizations cover
//! `/api/v0` only. So each host runs one **gate** (`nexus gate`, the nexus binary in the
//! `nexus-gate` image): it holds the host's node directories under its root (`/run/nexus`, a
//! per-host volume; a node's directory `<dir>` is the node's `/nexus`) and forwards to their
//! sockets only for a client that proves it is nexus.
//!
//! Protocol, one connection per request:
//!
//! 1. TLS 1.3 (rustls, ring). The gate presents a self-signed certificate; the client accepts
//!    exactly the certificate whose DER hashes (SHA-256) to its pin: no CA, no name check, the
//!    handshake signature still checked, so only the key's holder passes.
//! 2. The client sends one line, at most [`protocol::MAX_PREAMBLE`] bytes, within
//!    [`HANDSHAKE_TIMEOUT`] of connecting (TLS included):
//!    `NEXUS-GATE/1 <token: 64 hex digits> <VERB> <arg>\n`. The gate compares the token in
//!    constant time and answers one line: `OK\n` or `ERR <reason>\n` (then closes).
//! 3. Verbs: `CONNECT <dir>/api.sock` or `CONNECT <dir>/gateway.sock` (after `OK` the
//!    connection is that socket's: bytes are spliced both ways until either side closes);
//!    `PREPARE <dir>` (create `<root>/<dir>`, mode 0700; already there is fine);
//!    `REMOVE <dir>` (remove it and what it holds; absent is fine). `<dir>` is
//!    `[a-z0-9-]{1,80}`; anything else is refused.
//!
//! A plain-text client, a bad preamble or a wrong token never reaches a socket or the file
//! system; the socket is opened without following a symlink (a node cannot point its
//! `api.sock` at another node's). Connections beyond [`server::GateConfig::max_connections`]
//! are closed at once.
//!
//! Rooms: `protocol.rs` (the preamble, pure), `access.rs` ([`GateAccess`]: the credentials,
//! sealed in the daemon's data directory, and the TLS configurations), `server.rs` (the gate
//! itself), and [`connect`] here (the client: the node connector and `PREPARE`/`REMOVE` use it).
//! It must not know networks, nodes or runtimes (a directory is just a checked name), nor
//! print a token or a key.

pub mod access;
pub mod protocol;
pub mod server;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

pub use access::GateAccess;
pub use protocol::{GateSocket, Request};

/// How long a client has to finish TLS and send its preamble, and a gate to answer.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong with the gate's credentials or serving. Names files, never values.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("gate credentials: {0}")]
    Credentials(String),
    #[error("gate credentials file {}: {reason}", .path.display())]
    File { path: PathBuf, reason: String },
    #[error("gate TLS: {0}")]
    Tls(String),
    #[error("gate root {}: {reason}", .path.display())]
    Root { path: PathBuf, reason: String },
    #[error("gate cannot listen on {addr}: {reason}")]
    Listen { addr: SocketAddr, reason: String },
}

/// Compares two byte strings in time that depends on their lengths only.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads one line of at most `max` bytes (newline included), one byte at a time so nothing
/// after the newline is consumed.
pub(crate) async fn read_line<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> io::Result<Vec<u8>> {
    let mut line = Vec::with_capacity(64);
    loop {
        let b = r.read_u8().await?;
        line.push(b);
        if b == b'\n' {
            return Ok(line);
        }
        if line.len() >= max {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
        }
    }
}

/// Opens a connection to the gate at `gate` with `access` and makes `request`. For
/// `CONNECT`, the stream returned is the node's socket; for the others it is spent. The
/// handshake, preamble and answer share `timeout` (at most [`HANDSHAKE_TIMEOUT`] is useful:
/// the gate waits no longer). A refusal is `PermissionDenied` (token) or `Other` with the
/// gate's reason; a certificate that is not the pinned one fails the TLS handshake.
pub async fn connect(
    gate: SocketAddr,
    access: &GateAccess,
    request: &Request,
    timeout: Duration,
) -> io::Result<TlsStream<TcpStream>> {
    let config = access.client_config().map_err(io::Error::other)?;
    let dial = async {
        let tcp = TcpStream::connect(gate).await?;
        tcp.set_nodelay(true)?;
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(GateAccess::server_name(), tcp)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("gate {gate}: TLS: {e}")))?;
        let line = protocol::format_preamble(access.token(), request);
        tls.write_all(line.as_bytes()).await?;
        tls.flush().await?;
        let answer = read_line(&mut tls, protocol::MAX_ANSWER)
            .await
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("gate {gate}: no answer to {}: {e}", request.verb()),
                )
            })?;
        match protocol::parse_answer(&answer) {
            Ok(()) => Ok(tls),
            Err(reason) => {
                let kind = if reason == server::UNAUTHORIZED {
                    io::ErrorKind::PermissionDenied
                } else {
                    io::ErrorKind::Other
                };
                Err(io::Error::new(
                    kind,
                    format!(
                        "gate {gate} refused {} {}: {reason}",
                        request.verb(),
                        request.dir()
                    ),
                ))
            }
        }
    };
    match tokio::time::timeout(timeout, dial).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("gate {gate}: {} timed out", request.verb()),
        )),
    }
}

/// Makes a `PREPARE` or `REMOVE` request and waits for the gate's `OK`.
pub async fn request(
    gate: SocketAddr,
    access: &GateAccess,
    request: &Request,
    timeout: Duration,
) -> io::Result<()> {
    let mut s = connect(gate, access, request, timeout).await?;
    let _ = s.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests;
