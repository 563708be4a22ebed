//! The client side of the gRPC API, used by the CLI and by tests.
//!
//! Owns connecting to a daemon (plain or TLS with a given CA, with the API key on every call),
//! the typed client, and [`dynamic`] calls built at run time from the server's reflection (the
//! engine of `nexus ctl`). It must not render anything for people; the CLI does that.

pub mod dynamic;

use std::time::Duration;

use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

use crate::api::pb::nexus_client::NexusClient;
use crate::secret::Secret;

/// How to reach a daemon.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `http://host:port` or `https://host:port`.
    pub address: String,
    pub api_key: Option<Secret>,
    /// PEM certificate(s) to trust for `https://` (the system's roots are not used).
    pub tls_ca: Option<Vec<u8>>,
    pub connect_timeout: Duration,
}

/// Errors of connecting.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("`{0}` is not a daemon address: use http://HOST:PORT or https://HOST:PORT")]
    BadAddress(String),
    #[error("the API key contains characters that cannot be sent in a header")]
    BadKey,
    #[error("{address} is https but no CA certificate is configured: set client.tls_ca (NEXUS_CLIENT_TLS_CA or --tls-ca) to the PEM file that signed the daemon's certificate")]
    NoCa { address: String },
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("cannot reach the nexus daemon at {address}: {detail}. Is `nexus daemon` running, and is the address (client.address, NEXUS_CLIENT_ADDRESS or --address) right?")]
    Unreachable { address: String, detail: String },
    #[error(transparent)]
    Status(#[from] Status),
    #[error("{0}")]
    Dynamic(String),
}

/// Adds `authorization: Bearer <key>` to every call.
#[derive(Clone)]
pub struct Auth {
    header: Option<AsciiMetadataValue>,
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(h) = &self.header {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    }
}

/// The typed client with authentication.
pub type Client = NexusClient<InterceptedService<Channel, Auth>>;

/// A connected channel plus the auth interceptor, for typed or dynamic calls.
#[derive(Clone)]
pub struct Connection {
    pub channel: Channel,
    pub auth: Auth,
    pub address: String,
}

impl Connection {
    /// The typed `nexus.v1.Nexus` client (no message size limit beyond tonic's default 4 MiB).
    pub fn client(&self) -> Client {
        NexusClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }
}

/// Connects (eagerly, so a wrong address fails here with a clear message).
pub async fn connect(cfg: &ClientConfig) -> Result<Connection, ClientError> {
    let address = cfg.address.trim().to_string();
    let tls = if address.starts_with("https://") {
        true
    } else if address.starts_with("http://") {
        false
    } else {
        return Err(ClientError::BadAddress(address));
    };
    let mut endpoint = Endpoint::from_shared(address.clone())
        .map_err(|_| ClientError::BadAddress(address.clone()))?
        .connect_timeout(cfg.connect_timeout)
        .tcp_nodelay(true);
    if tls {
        let ca = cfg.tls_ca.as_ref().ok_or_else(|| ClientError::NoCa {
            address: address.clone(),
        })?;
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
            .map_err(|e| ClientError::Tls(e.to_string()))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| ClientError::Unreachable {
            address: address.clone(),
            detail: error_chain(&e),
        })?;
    let header = match &cfg.api_key {
        Some(k) => Some(
            format!("Bearer {}", k.expose())
                .parse::<AsciiMetadataValue>()
                .map_err(|_| ClientError::BadKey)?,
        ),
        None => None,
    };
    Ok(Connection {
        channel,
        auth: Auth { header },
        address,
    })
}

/// An error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}
