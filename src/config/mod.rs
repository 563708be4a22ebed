//! The configuration of `nexus daemon` and of the CLI that talks to it.
//!
//! Owns reading, layering and validating configuration, and the secrets nexus generates for
//! itself (`<data_dir>/secrets.toml`) and for `nexus init`. Layers, later wins: built-in
//! defaults < the TOML file < environment variables `NEXUS_<SECTION>_<KEY>` < command-line flags
//! ([`Config::set`]). Then [`Config::resolve_secrets`] and [`Config::validate`], which parses
//! every value once into [`Settings`]: the typed settings the other modules take. By phase:
//!
//! - `env`: where the file is found and the environment read ([`Env`], [`find_config_file`]);
//! - `keys`: the key table ([`keys`]), which drives the file parser, the environment, flags,
//!   `nexus init` and the error messages, so they cannot drift apart;
//! - `validate` and `checks`: validation into [`Settings`] (`settings`);
//! - `secrets`, `init`: the generated secrets file and `nexus init`'s file.
//!
//! Errors name the key (`grpc.listen`), where its value came from (file, variable, command
//! line) and what a valid value looks like; secrets never appear in errors or `Debug` output.
//! See `docs/configuration.md`.
//!
//! It must not start anything, bind ports, or talk to Docker or the store. The only files it
//! touches are the configuration file, the secrets file and, for the delegator, the JWT public
//! key it reads to infer the algorithm (and, for the CLI, the CA file
//! [`ClientSettings::client_config`] reads).
//!
//! Warnings (a configuration file holding secrets that others can read) are collected in
//! [`Config::warnings`] rather than logged, because logging is configured from this
//! configuration: print them once the subscriber is set up.

mod checks;
mod env;
mod init;
mod keys;
mod secrets;
mod settings;
mod validate;
mod values;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::PathBuf;

pub use crate::delegator::IpNet;
pub use crate::secret::Secret;
pub use env::{find_config_file, init_config_path, Env};
pub use init::{render_init_file, write_init_file};
pub use keys::{keys, KeyDef, Val};
pub(crate) use secrets::{create_private_dir, loose_mode, write_private};
pub use secrets::{
    ensure_private_dir, generate_secret, read_or_create_secrets, read_secrets, SecretsFile,
};
pub use settings::{
    ClientSettings, DelegatorSettings, GrpcSettings, LogFormat, LogSettings, MetricsSettings,
    Settings, TlsFiles, CLIENT_CONNECT_TIMEOUT,
};
pub use values::{parse_cpus, parse_duration, parse_size, ValueError};

use crate::delegator::JwtConfigError;
use crate::store::sql::redact_url;

/// The Docker endpoint when neither `docker.endpoint` nor `DOCKER_HOST` gives one.
pub const DEFAULT_DOCKER_ENDPOINT: &str = "unix:///var/run/docker.sock";
/// The name of the secrets file in the data directory.
pub const SECRETS_FILE: &str = "secrets.toml";
/// The name of the seal key file in the data directory (see `store.seal_key_file`).
pub const SEAL_KEY_FILE: &str = "seal.key";
/// The sections of the file, in the order `nexus init` writes them.
pub const SECTIONS: [&str; 11] = [
    "daemon",
    "store",
    "docker",
    "runtime",
    "node",
    "ports",
    "grpc",
    "client",
    "delegator",
    "metrics",
    "log",
];

/// Everything that can go wrong reading, validating or writing configuration. No variant holds
/// a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {} does not exist ({given})", .path.display())]
    NotFound { path: PathBuf, given: &'static str },
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file a key names (`client.tls_ca`) that cannot be read.
    #[error("{key}: cannot read {}: {source}", .path.display())]
    ReadKey {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A key the delegator refused (`delegator.jwt_public_key`).
    #[error("{key}: {source}")]
    Jwt {
        key: &'static str,
        #[source]
        source: JwtConfigError,
    },
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not valid TOML: {detail}", .path.display())]
    Syntax { path: PathBuf, detail: String },
    #[error("unknown section [{section}] in {}: valid sections are {valid}", .path.display())]
    UnknownSection {
        section: String,
        path: PathBuf,
        valid: String,
    },
    #[error("unknown key `{key}`{origin}: valid keys of [{section}] are {valid}")]
    UnknownKey {
        key: String,
        section: String,
        origin: String,
        valid: String,
    },
    #[error("unknown variable {var}: [{section}] has no such key; valid variables are {valid}")]
    UnknownVariable {
        var: String,
        section: String,
        valid: String,
    },
    /// A value that does not parse or is out of range. `key` is `section.key` (with `[i]` for
    /// an entry of a list), `origin` says where it came from (` (in FILE)`, ` (from VAR)`, …).
    #[error("`{key}`{origin}: {message}")]
    Invalid {
        key: String,
        origin: String,
        message: String,
    },
    #[error("{} already exists: use --force to overwrite it", .path.display())]
    Exists { path: PathBuf },
    #[error(
        "{} can be read or written by other users (mode {mode:04o}): run `chmod 600 {}`",
        .path.display(), .path.display()
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error(
        "directory {} can be used by other users (mode {mode:04o}) but holds the store and its \
         keys: run `chmod 700 {}`",
        .path.display(), .path.display()
    )]
    DirPermissions { path: PathBuf, mode: u32 },
    #[error("{}: {detail}", .path.display())]
    SecretsFile { path: PathBuf, detail: String },
    #[error("cannot generate a random secret: {0}")]
    Random(String),
}

impl ConfigError {
    /// The `section.key` an [`ConfigError::Invalid`] or unknown-key error is about.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Invalid { key, .. } | Self::UnknownKey { key, .. } => Some(key),
            _ => None,
        }
    }
}

pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// Whether [`Config::resolve_secrets`] may create `<data_dir>/secrets.toml`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Create {
    /// The daemon: create the file (and the data directory) when a secret is missing.
    Yes,
    /// The CLI: read the file if it is there and readable, never write.
    No,
}

// ---------------------------------------------------------------------------------------------
// Sections. Fields hold the text as configured; `validate` parses it into `Settings`. An empty
// string means "the default described in the key's help".

#[derive(Clone, Debug, Default, PartialEq)]
pub struct DaemonSection {
    pub data_dir: String,
}

#[derive(Clone, Default, PartialEq)]
pub struct StoreSection {
    /// May hold a password: shown redacted.
    pub url: String,
    pub seal_key: Secret,
    pub seal_previous_keys: Vec<Secret>,
    pub seal_key_file: String,
    pub lease_ttl: String,
}

impl fmt::Debug for StoreSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreSection")
            .field("url", &redact_url(&self.url))
            .field("seal_key", &self.seal_key)
            .field("seal_previous_keys", &self.seal_previous_keys)
            .field("seal_key_file", &self.seal_key_file)
            .field("lease_ttl", &self.lease_ttl)
            .finish()
    }
}

/// What runs the nodes: one Docker engine, or a Docker Swarm.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuntimeSection {
    pub kind: String,
    pub swarm_endpoint: String,
    pub gate_image: String,
    pub gate_port: u16,
    pub host_dir: String,
    pub address_label: String,
    pub encrypted: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct DockerSection {
    pub endpoint: String,
    pub instance: String,
    pub subnet_pool: String,
    pub subnet_prefix: u16,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeSection {
    pub image: String,
    pub public_address: String,
    pub ready_timeout: String,
    pub op_timeout: String,
    pub cpus: String,
    pub memory: String,
    pub disk: String,
    pub max_replicas: u16,
    pub start_parallelism: u16,
    pub host_memory: String,
    pub memory_overcommit: String,
    pub max_nodes: u16,
    pub cpu_budget: String,
    pub cpu_meter_interval: String,
    pub host_lost_grace: String,
    pub pin_timeout: String,
    pub pin_fail_after: String,
    pub pin_concurrency: u16,
    pub pin_interval: String,
    pub pin_drain_timeout: String,
    pub max_cpus: String,
    pub max_memory: String,
    pub max_disk: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PortsSection {
    pub swarm: String,
    pub swarm_host_ip: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct GrpcSection {
    pub listen: String,
    pub api_keys: Vec<Secret>,
    pub tls_cert: String,
    pub tls_key: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientSection {
    pub address: String,
    pub api_key: Secret,
    pub tls_ca: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct DelegatorSection {
    pub enabled: bool,
    pub listen: String,
    pub threads: u16,
    pub domain: String,
    pub trusted_proxies: Vec<String>,
    pub jwt_secret: Secret,
    pub jwt_public_key: String,
    pub jwt_algorithm: String,
    pub jwt_audience: String,
    pub jwt_issuer: String,
    pub max_ttl: String,
    pub rate_per_client: String,
    pub rate_per_user: String,
    pub concurrent_per_client: u16,
    pub concurrent_per_user: u16,
    pub max_connections: u16,
    pub max_connections_per_client: u16,
    pub header_timeout: String,
    pub gateway_timeout: String,
    pub max_body: String,
    pub connect_timeout: String,
    pub idle_timeout: String,
    pub tls_cert: String,
    pub tls_key: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsSection {
    pub listen: String,
    pub interval: String,
    pub scrape_token: Secret,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogSection {
    pub format: String,
    pub level: String,
}

/// Where a value came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Origin {
    Default,
    File(PathBuf),
    Env(String),
    SecretsFile(PathBuf),
}

impl Origin {
    fn describe(&self) -> String {
        match self {
            Self::Default => String::new(),
            Self::File(p) | Self::SecretsFile(p) => format!(" (in {})", p.display()),
            Self::Env(v) => format!(" (from {v})"),
        }
    }
}

/// What the configuration remembers from the environment it was loaded in.
#[derive(Clone, Default)]
struct Context {
    home: Option<PathBuf>,
    xdg_data_home: Option<PathBuf>,
    docker_host: Option<String>,
    file: Option<PathBuf>,
    /// Per key: where its value came from and a fingerprint of that value, so a value changed
    /// afterwards (a flag) is not blamed on the file.
    origins: BTreeMap<&'static str, (Origin, u64)>,
    warnings: Vec<String>,
}

impl fmt::Debug for Context {
    /// Without the fingerprints: a hash of a weak password could be brute-forced.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origins: BTreeMap<_, _> = self
            .ctx_origins()
            .filter(|(_, o)| **o != Origin::Default)
            .collect();
        f.debug_struct("Context")
            .field("home", &self.home)
            .field("xdg_data_home", &self.xdg_data_home)
            .field("docker_host", &self.docker_host.as_deref().map(redact_url))
            .field("file", &self.file)
            .field("origins", &origins)
            .field("warnings", &self.warnings)
            .finish()
    }
}

impl Context {
    fn ctx_origins(&self) -> impl Iterator<Item = (&'static str, &Origin)> + '_ {
        self.origins.iter().map(|(k, (o, _))| (*k, o))
    }
}

/// The whole configuration as text. Fields are public so the CLI can apply flags (or use
/// [`Config::set`]); call [`Config::resolve_secrets`] and [`Config::validate`] afterwards.
#[derive(Clone, Debug)]
pub struct Config {
    pub daemon: DaemonSection,
    pub store: StoreSection,
    pub docker: DockerSection,
    pub runtime: RuntimeSection,
    pub node: NodeSection,
    pub ports: PortsSection,
    pub grpc: GrpcSection,
    pub client: ClientSection,
    pub delegator: DelegatorSection,
    pub metrics: MetricsSection,
    pub log: LogSection,
    ctx: Context,
}
