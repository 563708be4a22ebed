//! The typed settings [`Config::validate`](super::Config::validate) returns: every value parsed
//! once, in the types the other modules take (the orchestrator's [`OrchestratorConfig`], the
//! Docker runtime's [`DockerRuntimeConfig`], the delegator's [`DelegatorConfig`], …). Nothing
//! here parses text; it must not start anything either.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, Result, SECRETS_FILE};
use crate::client::ClientConfig;
use crate::delegator::DelegatorConfig;
use crate::names::InstanceName;
use crate::node::{DockerRuntimeConfig, SwarmRuntimeConfig};
use crate::orchestrator::OrchestratorConfig;
use crate::secret::Secret;
use crate::store::seal::KeySource;

/// How long the CLI waits to connect to the daemon.
pub const CLIENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Every value of the configuration, parsed and checked.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where state lives: the SQLite store and `secrets.toml`.
    pub data_dir: PathBuf,
    /// The store to open: `store.url`, else `sqlite://<data_dir>/nexus.db`. May hold a
    /// password: print it with [`crate::store::redact_url`].
    pub store_url: Secret,
    /// Where the store's seal keys come from: `store.seal_key` (and previous keys), else the
    /// seal key file (`store.seal_key_file`, else `<data_dir>/seal.key`).
    pub seal: KeySource,
    /// How long the daemon's lease of its instance lasts without renewal (`store.lease_ttl`).
    pub lease_ttl: Duration,
    /// `docker.instance` when configured; `None`: the instance recorded in the store
    /// (generated on its first open). The daemon resolves the effective one against the store
    /// ([`crate::instance::resolve`]) and sets `docker.instance` before it connects to Docker.
    pub instance: Option<InstanceName>,
    /// `instance` holds the configured one; otherwise a fresh generated id, a placeholder
    /// that collides with nothing, which the daemon replaces with the store's.
    pub docker: DockerRuntimeConfig,
    /// `Some` when `runtime.kind = "swarm"`: the nodes run on a Docker Swarm (its instance is
    /// set with `docker.instance`'s).
    pub swarm: Option<SwarmRuntimeConfig>,
    pub orchestrator: OrchestratorConfig,
    /// The address advertised in join kits: `node.public_address`, else the host's IPv4
    /// address on its default route, else `127.0.0.1`.
    pub public_address: String,
    pub grpc: GrpcSettings,
    pub client: ClientSettings,
    pub delegator: DelegatorSettings,
    pub metrics: MetricsSettings,
    pub log: LogSettings,
}

impl Settings {
    /// `<data_dir>/secrets.toml`.
    pub fn secrets_path(&self) -> PathBuf {
        self.data_dir.join(SECRETS_FILE)
    }

    /// The listeners that serve plain text beyond loopback, to be warned about at start:
    /// gRPC and the delegator without TLS, and the metrics listener (it has no TLS). Each is
    /// `(what, address)`.
    pub fn plain_text_listeners(&self) -> Vec<(&'static str, SocketAddr)> {
        let mut out = Vec::new();
        if self.grpc.tls.is_none() && beyond_loopback(self.grpc.listen) {
            out.push(("gRPC API", self.grpc.listen));
        }
        if self.delegator.enabled
            && self.delegator.tls.is_none()
            && beyond_loopback(self.delegator.listen)
        {
            out.push(("delegator", self.delegator.listen));
        }
        if let Some(m) = self.metrics.listen.filter(|m| beyond_loopback(*m)) {
            out.push(("metrics", m));
        }
        out
    }
}

/// Whether others than this host can reach `addr`: it is not a loopback address (an
/// unspecified one, `0.0.0.0` or `::`, listens on every interface). IPv4 addresses mapped into
/// IPv6 count as the IPv4 address.
pub fn beyond_loopback(addr: SocketAddr) -> bool {
    !addr.ip().to_canonical().is_loopback()
}

/// A PEM certificate chain and its private key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The gRPC API's listener.
#[derive(Clone, Debug)]
pub struct GrpcSettings {
    pub listen: SocketAddr,
    /// The keys the API accepts; after [`Config::resolve_secrets`](super::Config::resolve_secrets)
    /// with [`Create::Yes`](super::Create::Yes), never empty.
    pub api_keys: Vec<Secret>,
    /// `None`: plain HTTP/2.
    pub tls: Option<TlsFiles>,
}

/// How the CLI reaches the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSettings {
    /// `client.address`, else `grpc.listen` with an unspecified address replaced by loopback,
    /// `https://` when gRPC TLS is on, else `http://`.
    pub address: String,
    /// `client.api_key`, else the first of `grpc.api_keys` (which
    /// [`Config::resolve_secrets`](super::Config::resolve_secrets) fills from the secrets file).
    pub api_key: Option<Secret>,
    /// The CA the CLI trusts: `client.tls_ca`, else `grpc.tls_cert` when `client.address` is
    /// empty (the daemon on this machine, possibly self-signed).
    pub tls_ca: Option<PathBuf>,
}

impl ClientSettings {
    /// The client's [`ClientConfig`]: reads the CA file, if any.
    pub fn client_config(&self) -> Result<ClientConfig> {
        let tls_ca = match &self.tls_ca {
            Some(path) => Some(std::fs::read(path).map_err(|source| ConfigError::ReadKey {
                key: "client.tls_ca",
                path: path.clone(),
                source,
            })?),
            None => None,
        };
        Ok(ClientConfig {
            address: self.address.clone(),
            api_key: self.api_key.clone(),
            tls_ca,
            connect_timeout: CLIENT_CONNECT_TIMEOUT,
        })
    }
}

/// The delegator's listener and configuration.
#[derive(Clone, Debug)]
pub struct DelegatorSettings {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Serving threads, each with its own listener on `listen` (`delegator.threads`; 0 there:
    /// one per core). At least 1.
    pub threads: usize,
    pub tls: Option<TlsFiles>,
    /// `None` while no key to verify tokens is known: neither `delegator.jwt_secret` nor
    /// `delegator.jwt_public_key` is set and the secrets file gave none (the CLI before the
    /// daemon first ran). The daemon always has one; see [`DelegatorSettings::config`].
    pub config: Option<DelegatorConfig>,
    /// Where the empty `delegator.jwt_secret` came from, for the error of a missing key.
    pub(super) jwt_secret_origin: String,
}

impl DelegatorSettings {
    /// The delegator's configuration, or an error saying how to give it a key.
    pub fn config(&self) -> Result<&DelegatorConfig> {
        self.config.as_ref().ok_or_else(|| ConfigError::Invalid {
            key: "delegator.jwt_secret".into(),
            origin: self.jwt_secret_origin.clone(),
            message: "no key to verify tokens: set delegator.jwt_secret or delegator.jwt_public_key (the daemon generates a secret when both are empty)".into(),
        })
    }
}

/// The metrics and health listener.
#[derive(Clone, Debug)]
pub struct MetricsSettings {
    /// `None`: off.
    pub listen: Option<SocketAddr>,
    /// How often gauges (node stats, statuses, port pools) are refreshed; at least 1s.
    pub interval: Duration,
    /// The bearer token the node scrape-through accepts (`metrics.scrape_token`, else the
    /// secrets file's); read-only, distinct from every API key. `None` before
    /// [`Config::resolve_secrets`](super::Config::resolve_secrets) found one: the
    /// scrape-through then refuses every request.
    pub scrape_token: Option<Secret>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug)]
pub struct LogSettings {
    pub format: LogFormat,
    /// An `EnvFilter` directive string, checked.
    pub filter: String,
}
