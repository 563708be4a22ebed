//! Where a node's RPC API and gateway are reached, and how nexus dials them.
//!
//! Owns [`Endpoint`] (a unix socket path; a node's socket behind the gate of another host; or
//! a TCP address for tests of the layers above), its encoding into an HTTP URI, and
//! [`Connector`], the one hyper connector every part of nexus that talks to a node uses (the
//! runtime's readiness and stats, the delegator, the metrics scrape-through). It must not
//! decide which node to dial. The gates' credentials are installed once per process
//! ([`install_gate_access`]) and read at connect time; they never travel in an endpoint or URI.
//!
//! A unix endpoint travels inside the URI's host as `<hex of the path>.sock`, a gate endpoint
//! as `<hex of "gate-addr|dir|socket">.gate`: hyper's pool keys connections by authority, so
//! each socket gets its own connections, and the connector needs no table of its own.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::client::TlsStream;

pub use crate::gate::GateSocket;
use crate::gate::{GateAccess, Request};

/// The host suffix that marks a unix socket in a URI.
const UNIX_SUFFIX: &str = ".sock";
/// The host suffix that marks a socket behind a gate in a URI.
const GATE_SUFFIX: &str = ".gate";
/// Longest path a unix socket address holds on Linux (`sun_path` less the NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// One listening address of a node, as nexus dials it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A unix socket on this host, in a directory only nexus can enter.
    Unix(PathBuf),
    /// A TCP address (tests of the layers above).
    Tcp(SocketAddr),
    /// A node's socket on another host, through that host's gate.
    Gate(GateTarget),
}

/// A node's socket behind a gate: the gate's address, the node's directory under the gate's
/// root, and which socket.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GateTarget {
    pub gate: SocketAddr,
    pub dir: String,
    pub socket: GateSocket,
}

impl GateTarget {
    fn encode(&self) -> String {
        let socket = match self.socket {
            GateSocket::Api => "api",
            GateSocket::Gateway => "gateway",
        };
        format!("{}|{}|{socket}", self.gate, self.dir)
    }

    fn decode(text: &str) -> Option<Self> {
        let mut parts = text.split('|');
        let (gate, dir, socket) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        crate::gate::protocol::validate_dir(dir).ok()?;
        let socket = match socket {
            "api" => GateSocket::Api,
            "gateway" => GateSocket::Gateway,
            _ => return None,
        };
        Some(Self {
            gate: gate.parse().ok()?,
            dir: dir.to_owned(),
            socket,
        })
    }
}

static GATE_ACCESS: OnceLock<Arc<GateAccess>> = OnceLock::new();

/// Installs the gates' credentials for this process, once (the daemon does at assembly, for a
/// runtime whose nodes are behind gates). A second call changes nothing and returns the
/// credentials it was given.
pub fn install_gate_access(access: Arc<GateAccess>) -> Result<(), Arc<GateAccess>> {
    GATE_ACCESS.set(access)
}

fn gate_access() -> io::Result<&'static GateAccess> {
    GATE_ACCESS.get().map(|a| a.as_ref()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotConnected,
            "no gate credentials installed in this process: a node behind a gate cannot be dialled",
        )
    })
}

/// How long a gate request may take.
const GATE_REQUEST_TIMEOUT: Duration = crate::gate::HANDSHAKE_TIMEOUT;

/// Asks the gate at `gate` to create the node directory `dir` (mode 0700; already there is
/// fine), with the installed credentials.
pub async fn gate_prepare(gate: SocketAddr, dir: &str) -> io::Result<()> {
    check_dir(dir)?;
    let req = Request::Prepare {
        dir: dir.to_owned(),
    };
    crate::gate::request(gate, gate_access()?, &req, GATE_REQUEST_TIMEOUT).await
}

/// Asks the gate at `gate` to remove the node directory `dir` and its contents (absent is
/// fine), with the installed credentials.
pub async fn gate_remove(gate: SocketAddr, dir: &str) -> io::Result<()> {
    check_dir(dir)?;
    let req = Request::Remove {
        dir: dir.to_owned(),
    };
    crate::gate::request(gate, gate_access()?, &req, GATE_REQUEST_TIMEOUT).await
}

fn check_dir(dir: &str) -> io::Result<()> {
    crate::gate::protocol::validate_dir(dir)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
}

/// Where one node's RPC API and gateway are reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEndpoints {
    pub api: Endpoint,
    pub gateway: Endpoint,
}

impl Endpoint {
    /// The URI authority this endpoint is dialled by (also sent as `Host`).
    pub fn authority(&self) -> String {
        match self {
            Self::Unix(p) => format!(
                "{}{UNIX_SUFFIX}",
                hex::encode(p.as_os_str().as_encoded_bytes())
            ),
            Self::Tcp(a) => a.to_string(),
            Self::Gate(t) => format!("{}{GATE_SUFFIX}", hex::encode(t.encode())),
        }
    }

    /// The `Host` a node is sent: a TCP endpoint's address; for a socket `127.0.0.1`, which
    /// kubo's gateway treats as a plain path gateway (neither a subdomain gateway, as it does
    /// `localhost`, nor a DNSLink name to look up). The same behind a gate.
    pub fn host_header(&self) -> String {
        match self {
            Self::Unix(_) | Self::Gate(_) => "127.0.0.1".into(),
            Self::Tcp(a) => a.to_string(),
        }
    }

    /// `http://<authority><path_and_query>`; `path_and_query` starts with `/`.
    pub fn uri(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.authority())
    }

    /// The endpoint a URI made by [`Endpoint::uri`] names.
    pub fn from_uri(uri: &Uri) -> Option<Self> {
        let host = uri.host()?;
        if let Some(hexed) = host.strip_suffix(UNIX_SUFFIX) {
            let bytes = hex::decode(hexed).ok()?;
            let path = PathBuf::from(std::ffi::OsString::from_vec(bytes));
            return path.is_absolute().then_some(Self::Unix(path));
        }
        if let Some(hexed) = host.strip_suffix(GATE_SUFFIX) {
            let bytes = hex::decode(hexed).ok()?;
            return GateTarget::decode(std::str::from_utf8(&bytes).ok()?).map(Self::Gate);
        }
        let port = uri.port_u16().unwrap_or(80);
        let ip = host.trim_start_matches('[').trim_end_matches(']');
        Some(Self::Tcp(SocketAddr::new(ip.parse().ok()?, port)))
    }

    /// The socket path, for a unix endpoint.
    pub fn socket_path(&self) -> Option<&Path> {
        match self {
            Self::Unix(p) => Some(p),
            Self::Tcp(_) | Self::Gate(_) => None,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
            Self::Tcp(a) => write!(f, "{a}"),
            Self::Gate(t) => write!(f, "gate:{}/{}/{}", t.gate, t.dir, t.socket.file_name()),
        }
    }
}

/// A connection to a node: TCP, a unix socket, or a socket through a gate.
#[derive(Debug)]
pub enum NodeStream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Gate(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for NodeStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Self::Gate(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for NodeStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Self::Gate(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Unix(s) => Pin::new(s).poll_flush(cx),
            Self::Gate(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Self::Gate(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Connection for NodeStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// hyper's connector for [`Endpoint`] URIs. Plain HTTP to the node (through a gate, inside
/// its TLS); no name resolution (nodes are addressed by socket path or IP address).
#[derive(Clone, Debug)]
pub struct Connector {
    connect_timeout: Duration,
}

impl Connector {
    pub fn new(connect_timeout: Duration) -> Self {
        Self { connect_timeout }
    }

    async fn connect(self, uri: Uri) -> io::Result<TokioIo<NodeStream>> {
        let endpoint = Endpoint::from_uri(&uri).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "not a node endpoint URI")
        })?;
        let dial = async {
            Ok::<_, io::Error>(match &endpoint {
                Endpoint::Unix(p) => NodeStream::Unix(UnixStream::connect(p).await?),
                Endpoint::Tcp(a) => {
                    let s = TcpStream::connect(a).await?;
                    s.set_nodelay(true)?;
                    NodeStream::Tcp(s)
                }
                Endpoint::Gate(t) => {
                    let req = Request::Connect {
                        dir: t.dir.clone(),
                        socket: t.socket,
                    };
                    let s =
                        crate::gate::connect(t.gate, gate_access()?, &req, GATE_REQUEST_TIMEOUT)
                            .await?;
                    NodeStream::Gate(Box::new(s))
                }
            })
        };
        match tokio::time::timeout(self.connect_timeout, dial).await {
            Ok(r) => r.map(TokioIo::new),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connecting to {endpoint} timed out"),
            )),
        }
    }
}

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<NodeStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(self.clone().connect(uri))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_endpoints_round_trip_through_a_uri() {
        let e = Endpoint::Unix(PathBuf::from(
            "/var/lib/nexus/nodes/nexus-a-0/nexus/api.sock",
        ));
        let uri: Uri = e.uri("/api/v0/id?x=1").parse().unwrap();
        assert_eq!(uri.path(), "/api/v0/id");
        assert_eq!(Endpoint::from_uri(&uri), Some(e.clone()));
        let other = Endpoint::Unix(PathBuf::from(
            "/var/lib/nexus/nodes/nexus-a-1/nexus/api.sock",
        ));
        assert_ne!(e.authority(), other.authority());
    }

    #[test]
    fn gate_endpoints_round_trip_and_key_the_pool_per_socket() {
        let t = |dir: &str, socket| {
            Endpoint::Gate(GateTarget {
                gate: "10.0.0.7:27600".parse().unwrap(),
                dir: dir.into(),
                socket,
            })
        };
        let api = t("nexus-acme-0", GateSocket::Api);
        let uri: Uri = api.uri("/api/v0/id").parse().unwrap();
        assert_eq!(Endpoint::from_uri(&uri), Some(api.clone()));
        assert!(api.authority().ends_with(".gate"));
        assert_eq!(api.host_header(), "127.0.0.1");
        assert_eq!(api.to_string(), "gate:10.0.0.7:27600/nexus-acme-0/api.sock");
        let v6 = Endpoint::Gate(GateTarget {
            gate: "[fd00::1]:27600".parse().unwrap(),
            dir: "n".into(),
            socket: GateSocket::Gateway,
        });
        let uri: Uri = v6.uri("/ipfs/x").parse().unwrap();
        assert_eq!(Endpoint::from_uri(&uri), Some(v6));
        let others = [
            t("nexus-acme-0", GateSocket::Gateway),
            t("nexus-acme-1", GateSocket::Api),
        ];
        for o in others {
            assert_ne!(o.authority(), api.authority());
        }
        // A directory the gate would refuse does not decode.
        let bad = format!("http://{}.gate/", hex::encode("10.0.0.7:1|..|api"));
        assert_eq!(Endpoint::from_uri(&bad.parse().unwrap()), None);
    }

    #[tokio::test]
    async fn gate_calls_without_installed_credentials_fail_clearly() {
        // This test binary never installs gate credentials.
        let e = Endpoint::Gate(GateTarget {
            gate: "127.0.0.1:27599".parse().unwrap(),
            dir: "n".into(),
            socket: GateSocket::Api,
        });
        let err = Connector::new(Duration::from_secs(1))
            .connect(e.uri("/").parse().unwrap())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no gate credentials"), "{err}");
        let err = gate_prepare("127.0.0.1:27599".parse().unwrap(), "..")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn tcp_endpoints_round_trip_and_names_are_never_resolved() {
        for a in ["127.0.0.1:5001", "[::1]:8080"] {
            let e = Endpoint::Tcp(a.parse().unwrap());
            let uri: Uri = e.uri("/").parse().unwrap();
            assert_eq!(Endpoint::from_uri(&uri), Some(e));
        }
        let by_name: Uri = "http://localhost:5001/".parse().unwrap();
        assert_eq!(Endpoint::from_uri(&by_name), None);
        let relative: Uri = "http://00ff.sock/".parse().unwrap();
        assert_eq!(Endpoint::from_uri(&relative), None, "not an absolute path");
    }

    #[tokio::test]
    async fn the_connector_dials_a_unix_socket() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = std::env::temp_dir().join(format!("nexus-ep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.sock");
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"hi").await.unwrap();
        });
        let uri: Uri = Endpoint::Unix(path.clone()).uri("/").parse().unwrap();
        let mut io = Connector::new(Duration::from_secs(1))
            .connect(uri)
            .await
            .unwrap()
            .into_inner();
        let mut buf = [0u8; 2];
        io.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hi");
        server.await.unwrap();
        let missing: Uri = Endpoint::Unix(dir.join("none.sock"))
            .uri("/")
            .parse()
            .unwrap();
        assert!(Connector::new(Duration::from_secs(1))
            .connect(missing)
            .await
            .is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
