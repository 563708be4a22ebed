//! The configuration of `nexus daemon` and of the CLI that talks to it.
//!
//! Owns reading, layering and validating configuration, and the secrets nexus generates for
//! itself (`<data_dir>/secrets.toml`) and for `nexus init`. Layers, later wins: built-in
//! defaults < the TOML file < environment variables `NEXUS_<SECTION>_<KEY>` < command-line flags,
//! which the CLI applies by assigning fields before it calls [`Config::validate`]. Every key is
//! listed in one table ([`keys`]), which drives the file parser, the environment, `nexus init`
//! and the error messages, so they cannot drift apart. Errors name the key (`grpc.listen`), where
//! its value came from (file, variable, command line) and what a valid value looks like;
//! secrets never appear in errors or `Debug` output. See `docs/configuration.md`.
//!
//! It must not start anything, bind ports, or talk to Docker or the store: it only turns text
//! into the settings structs the other modules take ([`Config::orchestrator_config`],
//! [`Config::docker_runtime_config`], …). The only files it touches are the configuration file,
//! the secrets file and, for the delegator, the JWT public key it reads to infer the algorithm.
//!
//! Warnings (a configuration file holding secrets that others can read) are collected in
//! [`Config::warnings`] rather than logged, because logging is configured from this
//! configuration: print them once the subscriber is set up.

mod init;
mod secrets;
mod values;

#[cfg(test)]
mod tests;

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;

pub use init::{render_init_file, write_init_file};
pub use secrets::{generate_secret, read_or_create_secrets, read_secrets, SecretsFile};
pub use values::{
    is_dns_label, is_dns_name, parse_cpus, parse_duration, parse_size, IpNet, Secret, ValueError,
};

use crate::node::spec::{validate_image, MAX_NODES};
use crate::node::{DockerRuntimeConfig, Resources};
use crate::orchestrator::ports::{BindProbe, PortAllocator, PortConfig, PortError, PortRange};
use crate::orchestrator::OrchestratorConfig;
use crate::store::sql::redact_url;
use values::{clip, cores_text, size_text};

/// The Docker endpoint when neither `docker.endpoint` nor `DOCKER_HOST` gives one.
pub const DEFAULT_DOCKER_ENDPOINT: &str = "unix:///var/run/docker.sock";
/// The name of the secrets file in the data directory.
pub const SECRETS_FILE: &str = "secrets.toml";
/// The sections of the file, in the order `nexus init` writes them.
pub const SECTIONS: [&str; 10] = [
    "daemon",
    "store",
    "docker",
    "node",
    "ports",
    "grpc",
    "client",
    "delegator",
    "metrics",
    "log",
];

/// Shortest API key accepted.
const MIN_API_KEY_LEN: usize = 32;
/// Shortest HS256 secret accepted, in bytes.
const MIN_JWT_SECRET_LEN: usize = 32;

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

/// The environment the configuration is read from: variables, and where system-wide files
/// live. Tests build one with [`Env::from_pairs`] instead of touching the process environment.
#[derive(Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
    system_dir: Option<PathBuf>,
}

impl Env {
    /// The process environment (variables that are not UTF-8 are skipped).
    pub fn from_process() -> Self {
        Self::from_pairs(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            system_dir: None,
        }
    }

    /// Where the system-wide `nexus.toml` is looked for (default `/etc/nexus`).
    pub fn with_system_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.system_dir = Some(dir.into());
        self
    }

    /// A variable's value; `None` when unset or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn abs_path(&self, name: &str) -> Option<PathBuf> {
        self.get(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    }

    fn system_dir(&self) -> PathBuf {
        self.system_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/etc/nexus"))
    }
}

impl fmt::Debug for Env {
    /// Names only: values may be secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env")
            .field("vars", &self.vars.keys().collect::<Vec<_>>())
            .field("system_dir", &self.system_dir)
            .finish()
    }
}

/// `$XDG_CONFIG_HOME/nexus/nexus.toml`, else `$HOME/.config/nexus/nexus.toml`.
fn user_config_path(env: &Env) -> Option<PathBuf> {
    if let Some(x) = env.abs_path("XDG_CONFIG_HOME") {
        return Some(x.join("nexus").join("nexus.toml"));
    }
    env.abs_path("HOME")
        .map(|h| h.join(".config").join("nexus").join("nexus.toml"))
}

/// The configuration file to read: `explicit` (`--config`), else `NEXUS_CONFIG` (both must
/// exist), else the user's file (`$XDG_CONFIG_HOME/nexus/nexus.toml` or
/// `~/.config/nexus/nexus.toml`) if it exists, else `/etc/nexus/nexus.toml` if it exists, else
/// none: defaults and environment only.
pub fn find_config_file(explicit: Option<&Path>, env: &Env) -> Result<Option<PathBuf>> {
    let must_exist = |p: &Path, given: &'static str| {
        if p.exists() {
            Ok(Some(p.to_owned()))
        } else {
            Err(ConfigError::NotFound {
                path: p.to_owned(),
                given,
            })
        }
    };
    if let Some(p) = explicit {
        return must_exist(p, "given with --config");
    }
    if let Some(p) = env.get("NEXUS_CONFIG") {
        return must_exist(Path::new(p), "given by NEXUS_CONFIG");
    }
    let candidates = [
        user_config_path(env),
        Some(env.system_dir().join("nexus.toml")),
    ];
    Ok(candidates.into_iter().flatten().find(|p| p.is_file()))
}

/// Where `nexus init` writes: `explicit`, else `NEXUS_CONFIG`, else the user's file, else (no
/// home directory) `/etc/nexus/nexus.toml`: the first place [`find_config_file`] looks.
pub fn init_config_path(explicit: Option<&Path>, env: &Env) -> PathBuf {
    explicit
        .map(Path::to_owned)
        .or_else(|| env.get("NEXUS_CONFIG").map(PathBuf::from))
        .or_else(|| user_config_path(env))
        .unwrap_or_else(|| env.system_dir().join("nexus.toml"))
}

// ---------------------------------------------------------------------------------------------
// Sections. Fields hold the text as configured; `validate` parses it, the accessors below give
// typed values. An empty string means "the default described in the key's help".

#[derive(Clone, Debug, Default, PartialEq)]
pub struct DaemonSection {
    pub data_dir: String,
}

#[derive(Clone, Default, PartialEq)]
pub struct StoreSection {
    /// May hold a password: shown redacted.
    pub url: String,
}

impl fmt::Debug for StoreSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreSection")
            .field("url", &redact_url(&self.url))
            .finish()
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct DockerSection {
    pub endpoint: String,
    pub instance: String,
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
    pub max_cpus: String,
    pub max_memory: String,
    pub max_disk: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PortsSection {
    pub swarm: String,
    pub api: String,
    pub gateway: String,
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
    pub domain: String,
    pub trusted_proxies: Vec<String>,
    pub jwt_secret: Secret,
    pub jwt_public_key: String,
    pub jwt_algorithm: String,
    pub jwt_audience: String,
    pub jwt_issuer: String,
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

/// The whole configuration. Fields are public so the CLI can apply flags; call
/// [`Config::validate`] afterwards.
#[derive(Clone, Debug)]
pub struct Config {
    pub daemon: DaemonSection,
    pub store: StoreSection,
    pub docker: DockerSection,
    pub node: NodeSection,
    pub ports: PortsSection,
    pub grpc: GrpcSection,
    pub client: ClientSection,
    pub delegator: DelegatorSection,
    pub metrics: MetricsSection,
    pub log: LogSection,
    ctx: Context,
}

// ---------------------------------------------------------------------------------------------
// The key table.

/// A key's value, borrowed.
#[derive(Debug)]
pub enum Val<'a> {
    Str(&'a String),
    Secret(&'a Secret),
    List(&'a Vec<String>),
    Secrets(&'a Vec<Secret>),
    Bool(&'a bool),
    U16(&'a u16),
}

/// A key's value, to assign.
enum Slot<'a> {
    Str(&'a mut String),
    Secret(&'a mut Secret),
    List(&'a mut Vec<String>),
    Secrets(&'a mut Vec<Secret>),
    Bool(&'a mut bool),
    U16(&'a mut u16),
}

/// One configuration key.
pub struct KeyDef {
    pub section: &'static str,
    pub key: &'static str,
    /// `section.key`.
    pub name: &'static str,
    /// The built-in default as a TOML value (`"60s"`, `16`, `[]`, `true`).
    pub default: &'static str,
    /// One line for `nexus init` and the documentation.
    pub help: &'static str,
    /// Whether the value is a secret (never echoed).
    pub secret: bool,
    get: for<'a> fn(&'a Config) -> Val<'a>,
    set: for<'a> fn(&'a mut Config) -> Slot<'a>,
}

impl KeyDef {
    /// `NEXUS_<SECTION>_<KEY>`.
    pub fn env_var(&self) -> String {
        format!(
            "NEXUS_{}_{}",
            self.section.to_ascii_uppercase(),
            self.key.to_ascii_uppercase()
        )
    }

    /// The key's current value in `cfg`.
    pub fn value<'a>(&self, cfg: &'a Config) -> Val<'a> {
        (self.get)(cfg)
    }
}

impl fmt::Debug for KeyDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

macro_rules! key {
    ($sec:ident . $key:ident : $kind:ident = $default:literal, $help:literal) => {
        KeyDef {
            section: stringify!($sec),
            key: stringify!($key),
            name: concat!(stringify!($sec), ".", stringify!($key)),
            default: $default,
            help: $help,
            secret: matches!(stringify!($kind).as_bytes(), b"Secret" | b"Secrets"),
            get: |c| Val::$kind(&c.$sec.$key),
            set: |c| Slot::$kind(&mut c.$sec.$key),
        }
    };
}

static KEYS: &[KeyDef] = &[
    key!(daemon.data_dir: Str = r#""""#,
        "Directory for state: the SQLite store and secrets.toml. Empty: $XDG_DATA_HOME/nexus, else ~/.local/share/nexus, else /var/lib/nexus."),
    key!(store.url: Str = r#""""#,
        "Store URL: sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DB. Empty: sqlite://<data_dir>/nexus.db."),
    key!(docker.endpoint: Str = r#""""#,
        "Docker Engine endpoint: unix://PATH, tcp://HOST:PORT or http://HOST:PORT. Empty: $DOCKER_HOST, else unix:///var/run/docker.sock."),
    key!(docker.instance: Str = r#""default""#,
        "Owner label of this installation's containers (lower-case DNS label); installations sharing a Docker host need distinct ones."),
    key!(node.image: Str = r#""ipfs/kubo:v0.43.1""#,
        "kubo image of every node (kubo >= 0.37)."),
    key!(node.public_address: Str = r#""""#,
        "IP address or DNS name advertised in join kits. Empty: the host's IPv4 address on its default route, else 127.0.0.1."),
    key!(node.ready_timeout: Str = r#""60s""#,
        "How long a node may take from start until its RPC API answers."),
    key!(node.op_timeout: Str = r#""180s""#,
        "How long an API call (start, stop, update) waits before answering with a timeout; the work goes on."),
    key!(node.cpus: Str = r#""1""#,
        "CPU cores per node when a request gives none (e.g. 0.5)."),
    key!(node.memory: Str = r#""1GiB""#,
        "Memory per node when a request gives none (at least 128MiB)."),
    key!(node.disk: Str = r#""10GiB""#,
        "Repository size limit per node when a request gives none."),
    key!(node.max_replicas: U16 = "16",
        "Most nodes a network may have (at most 64)."),
    key!(node.max_cpus: Str = r#""4""#,
        "Most CPU cores a request may give one node."),
    key!(node.max_memory: Str = r#""8GiB""#,
        "Most memory a request may give one node."),
    key!(node.max_disk: Str = r#""1TiB""#,
        "Largest repository size a request may give one node."),
    key!(ports.swarm: Str = r#""4001-5000""#,
        "Host ports for the nodes' swarm (libp2p) port: LOW-HIGH, several separated by commas."),
    key!(ports.api: Str = r#""5001-6000""#,
        "Host ports (on 127.0.0.1) for the nodes' RPC API; must not overlap the other ranges."),
    key!(ports.gateway: Str = r#""8001-9000""#,
        "Host ports (on 127.0.0.1) for the nodes' HTTP gateway; must not overlap the other ranges."),
    key!(ports.swarm_host_ip: Str = r#""0.0.0.0""#,
        "Host address the swarm ports are published on (peers must reach it)."),
    key!(grpc.listen: Str = r#""127.0.0.1:7700""#,
        "Address the gRPC API listens on (IP:PORT)."),
    key!(grpc.api_keys: Secrets = "[]",
        "API keys the gRPC API accepts (several for rotation; each at least 32 characters). Empty: the api_key in <data_dir>/secrets.toml, generated on first start."),
    key!(grpc.tls_cert: Str = r#""""#,
        "PEM certificate chain for gRPC over TLS (with tls_key). Empty: plain HTTP/2; keep listen on loopback then."),
    key!(grpc.tls_key: Str = r#""""#,
        "PEM private key of tls_cert."),
    key!(client.address: Str = r#""""#,
        "Where the CLI reaches the daemon (http://HOST:PORT or https://HOST:PORT). Empty: grpc.listen (0.0.0.0 and :: as loopback), https when grpc.tls_cert is set."),
    key!(client.api_key: Secret = r#""""#,
        "API key the CLI sends. Empty: the first of grpc.api_keys, else the one in <data_dir>/secrets.toml."),
    key!(client.tls_ca: Str = r#""""#,
        "PEM CA certificate the CLI trusts for https. Empty: grpc.tls_cert when client.address is empty (a self-signed daemon on this machine)."),
    key!(delegator.enabled: Bool = "true",
        "Run the delegator, the authenticating reverse proxy in front of the nodes' RPC API and gateway."),
    key!(delegator.listen: Str = r#""127.0.0.1:7780""#,
        "Address the delegator listens on (IP:PORT)."),
    key!(delegator.domain: Str = r#""localhost""#,
        "Host name suffix: a network is served at <network>.api.<domain> and <network>.gateway.<domain>."),
    key!(delegator.trusted_proxies: List = "[]",
        "IP addresses or CIDR networks of reverse proxies whose X-Forwarded-Host and X-Forwarded-For are honoured."),
    key!(delegator.jwt_secret: Secret = r#""""#,
        "HS256 secret for bearer tokens (at least 32 bytes). Empty with no jwt_public_key: the jwt_secret in <data_dir>/secrets.toml."),
    key!(delegator.jwt_public_key: Str = r#""""#,
        "PEM public key (RSA or Ed25519) to verify RS256 or EdDSA tokens instead of jwt_secret."),
    key!(delegator.jwt_algorithm: Str = r#""""#,
        "HS256, RS256 or EdDSA. Empty: HS256 with jwt_secret, else the public key's type."),
    key!(delegator.jwt_audience: Str = r#""""#,
        "Required `aud` claim. Empty: not checked."),
    key!(delegator.jwt_issuer: Str = r#""""#,
        "Required `iss` claim. Empty: not checked."),
    key!(delegator.max_body: Str = r#""""#,
        "Largest request body the delegator forwards (e.g. 1GiB). Empty: unlimited."),
    key!(delegator.connect_timeout: Str = r#""5s""#,
        "How long the delegator waits to connect to a node."),
    key!(delegator.idle_timeout: Str = r#""90s""#,
        "How long an idle client connection stays open."),
    key!(delegator.tls_cert: Str = r#""""#,
        "PEM certificate chain for the delegator over TLS (with tls_key)."),
    key!(delegator.tls_key: Str = r#""""#,
        "PEM private key of the delegator's tls_cert."),
    key!(metrics.listen: Str = r#""127.0.0.1:7790""#,
        "Address of the Prometheus /metrics endpoint (IP:PORT). Empty: off."),
    key!(metrics.interval: Str = r#""15s""#,
        "How often node stats, statuses and port-pool gauges are refreshed (at least 1s)."),
    key!(log.format: Str = r#""text""#,
        "Log format: text or json."),
    key!(log.level: Str = r#""info""#,
        "Log filter: a level (error, warn, info, debug, trace) or tracing directives like info,nexus=debug."),
];

/// Every configuration key, in file order.
pub fn keys() -> &'static [KeyDef] {
    KEYS
}

fn key_def(name: &str) -> Option<&'static KeyDef> {
    KEYS.iter().find(|k| k.name == name)
}

fn section_keys(section: &str) -> impl Iterator<Item = &'static KeyDef> + '_ {
    KEYS.iter().filter(move |k| k.section == section)
}

fn fingerprint(v: &Val<'_>) -> u64 {
    let mut h = DefaultHasher::new();
    match v {
        Val::Str(s) => (0u8, s).hash(&mut h),
        Val::Secret(s) => (1u8, s).hash(&mut h),
        Val::List(l) => (2u8, l).hash(&mut h),
        Val::Secrets(l) => (3u8, l).hash(&mut h),
        Val::Bool(b) => (4u8, b).hash(&mut h),
        Val::U16(n) => (5u8, n).hash(&mut h),
    }
    h.finish()
}

/// A value from the file or the environment.
enum Incoming<'a> {
    Toml(&'a toml::Value),
    Text(&'a str),
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

fn toml_strings(v: &toml::Value) -> Option<Vec<String>> {
    v.as_array()?
        .iter()
        .map(|x| x.as_str().map(str::to_owned))
        .collect()
}

/// Assigns `v` to `slot`; on a type mismatch, says what was expected (never echoing secrets).
fn assign(slot: Slot<'_>, v: Incoming<'_>) -> std::result::Result<(), String> {
    use Incoming::{Text, Toml};
    match (slot, v) {
        (Slot::Str(s), Text(t)) => *s = t.to_owned(),
        (Slot::Str(s), Toml(toml::Value::String(t))) => *s = t.clone(),
        (Slot::Str(s), Toml(toml::Value::Integer(i))) => *s = i.to_string(),
        (Slot::Str(s), Toml(toml::Value::Float(f))) => *s = f.to_string(),
        (Slot::Str(_), Toml(_)) => return Err("expected a string".into()),
        (Slot::Secret(s), Text(t)) => *s = Secret::new(t),
        (Slot::Secret(s), Toml(toml::Value::String(t))) => *s = Secret::new(t.clone()),
        (Slot::Secret(_), Toml(_)) => return Err("expected a string".into()),
        (Slot::List(l), Text(t)) => *l = split_list(t),
        (Slot::List(l), Toml(v)) => {
            *l = toml_strings(v)
                .ok_or_else(|| "expected an array of strings, e.g. [\"10.0.0.0/8\"]".to_string())?
        }
        (Slot::Secrets(l), Text(t)) => *l = split_list(t).into_iter().map(Secret::new).collect(),
        (Slot::Secrets(l), Toml(v)) => {
            *l = toml_strings(v)
                .ok_or_else(|| "expected an array of strings".to_string())?
                .into_iter()
                .map(Secret::new)
                .collect()
        }
        (Slot::Bool(b), Text(t)) => {
            *b = match t.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                _ => return Err(format!("`{}` is not true or false", clip(t))),
            }
        }
        (Slot::Bool(b), Toml(toml::Value::Boolean(v))) => *b = *v,
        (Slot::Bool(_), Toml(_)) => return Err("expected true or false".into()),
        (Slot::U16(n), Text(t)) => {
            *n = t
                .trim()
                .parse()
                .map_err(|_| format!("`{}` is not a whole number from 0 to 65535", clip(t)))?
        }
        (Slot::U16(n), Toml(toml::Value::Integer(i))) => {
            *n = u16::try_from(*i)
                .map_err(|_| format!("{i} is not a whole number from 0 to 65535"))?
        }
        (Slot::U16(_), Toml(_)) => return Err("expected a whole number".into()),
    }
    Ok(())
}

/// Line and column of a byte offset, for syntax errors.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// A PEM certificate chain and its private key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JwtAlgorithm {
    Hs256,
    Rs256,
    EdDsa,
}

impl JwtAlgorithm {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::Rs256 => "RS256",
            Self::EdDsa => "EdDSA",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "HS256" => Some(Self::Hs256),
            "RS256" => Some(Self::Rs256),
            "EDDSA" => Some(Self::EdDsa),
            _ => None,
        }
    }
}

/// The key bearer tokens are verified with.
#[derive(Clone, PartialEq, Eq)]
pub enum JwtKey {
    /// HS256 shared secret.
    Secret(Secret),
    /// The PEM text of an RSA or Ed25519 public key.
    PublicKeyPem(Vec<u8>),
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Secret(s) => f.debug_tuple("Secret").field(s).finish(),
            Self::PublicKeyPem(p) => write!(f, "PublicKeyPem({} bytes)", p.len()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtSettings {
    pub algorithm: JwtAlgorithm,
    pub key: JwtKey,
    pub audience: Option<String>,
    pub issuer: Option<String>,
}

/// Everything the delegator needs, resolved.
#[derive(Clone, Debug)]
pub struct DelegatorSettings {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Lower-case.
    pub domain: String,
    pub trusted_proxies: Vec<IpNet>,
    pub jwt: JwtSettings,
    /// `None`: unlimited.
    pub max_body: Option<u64>,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub tls: Option<TlsFiles>,
}

/// The algorithm a PEM public key is for.
fn pem_algorithm(pem: &[u8]) -> std::result::Result<JwtAlgorithm, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "is not a PEM file".to_string())?;
    if text.contains("PRIVATE KEY-----") {
        return Err("holds a private key: give the public key (openssl pkey -pubout)".into());
    }
    if text.contains("-----BEGIN RSA PUBLIC KEY-----") {
        return Ok(JwtAlgorithm::Rs256);
    }
    let begin = "-----BEGIN PUBLIC KEY-----";
    let body = text
        .split_once(begin)
        .and_then(|(_, rest)| rest.split_once("-----END PUBLIC KEY-----"))
        .map(|(b, _)| b.split_whitespace().collect::<String>())
        .ok_or_else(|| "is not a PEM public key (-----BEGIN PUBLIC KEY-----)".to_string())?;
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| "is not a valid PEM public key (bad base64)".to_string())?;
    const ED25519: &[u8] = &[0x06, 0x03, 0x2B, 0x65, 0x70];
    const RSA: &[u8] = &[
        0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01,
    ];
    let has = |oid: &[u8]| der.windows(oid.len()).any(|w| w == oid);
    if has(ED25519) {
        Ok(JwtAlgorithm::EdDsa)
    } else if has(RSA) {
        Ok(JwtAlgorithm::Rs256)
    } else {
        Err("is neither an RSA nor an Ed25519 public key".into())
    }
}

/// The host's IPv4 address on its default route, found by "connecting" a UDP socket (no packet
/// is sent).
fn default_route_ipv4() -> Option<Ipv4Addr> {
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    sock.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).ok()?;
    match sock.local_addr().ok()?.ip() {
        IpAddr::V4(v4) if !v4.is_loopback() && !v4.is_unspecified() => Some(v4),
        _ => None,
    }
}

impl Default for Config {
    /// The built-in defaults in an empty environment (no home directory, no `DOCKER_HOST`).
    fn default() -> Self {
        Self::defaults(&Env::default())
    }
}

impl Config {
    /// The built-in defaults; `env` gives the home directory, `XDG_DATA_HOME` and
    /// `DOCKER_HOST` the computed defaults depend on. `NEXUS_…` variables are not applied.
    pub fn defaults(env: &Env) -> Self {
        let mut cfg = Self {
            daemon: Default::default(),
            store: Default::default(),
            docker: Default::default(),
            node: Default::default(),
            ports: Default::default(),
            grpc: Default::default(),
            client: Default::default(),
            delegator: Default::default(),
            metrics: Default::default(),
            log: Default::default(),
            ctx: Context {
                home: env.abs_path("HOME"),
                xdg_data_home: env.abs_path("XDG_DATA_HOME"),
                docker_host: env.get("DOCKER_HOST").map(str::to_owned),
                ..Default::default()
            },
        };
        for def in KEYS {
            // The table's defaults are literals, checked by a unit test.
            if let Ok(table) = format!("v = {}", def.default).parse::<toml::Table>() {
                if let Some(v) = table.get("v") {
                    let _ = assign((def.set)(&mut cfg), Incoming::Toml(v));
                }
            }
            cfg.record(def, Origin::Default);
        }
        cfg
    }

    /// Defaults, then the configuration file ([`find_config_file`]), then `NEXUS_…`
    /// variables. Apply flags by assigning fields, then call [`Config::validate`].
    pub fn load(explicit: Option<&Path>, env: &Env) -> Result<Self> {
        let mut cfg = Self::defaults(env);
        if let Some(path) = find_config_file(explicit, env)? {
            cfg.merge_file(&path)?;
        }
        cfg.merge_env(env)?;
        Ok(cfg)
    }

    fn record(&mut self, def: &'static KeyDef, origin: Origin) {
        let fp = fingerprint(&(def.get)(self));
        self.ctx.origins.insert(def.name, (origin, fp));
    }

    /// The configuration file that was read, if any.
    pub fn file(&self) -> Option<&Path> {
        self.ctx.file.as_deref()
    }

    /// Problems worth telling the operator that do not stop nexus (e.g. a configuration file
    /// holding secrets that others can read). Print them once logging is set up.
    pub fn warnings(&self) -> &[String] {
        &self.ctx.warnings
    }

    /// Reads `path` and applies it over the current values.
    pub fn merge_file(&mut self, path: &Path) -> Result<()> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        self.merge_toml_str(&text, path)?;
        self.ctx.file = Some(path.to_owned());
        let file_origin = Origin::File(path.to_owned());
        let holds_secrets = KEYS.iter().any(|def| {
            let from_file = self.ctx.origins.get(def.name).map(|(o, _)| o) == Some(&file_origin);
            from_file
                && match (def.get)(self) {
                    Val::Secret(s) => !s.is_empty(),
                    Val::Secrets(l) => !l.is_empty(),
                    Val::Str(s) if def.name == "store.url" => redact_url(s) != *s,
                    _ => false,
                }
        });
        if holds_secrets {
            if let Ok(Some(mode)) = secrets::loose_mode(path) {
                self.ctx.warnings.push(format!(
                    "{} holds secrets but other users may read it (mode {mode:04o}): run `chmod 600 {}`",
                    path.display(),
                    path.display()
                ));
            }
        }
        Ok(())
    }

    /// Applies TOML `text` (from `path`, for messages) over the current values.
    pub fn merge_toml_str(&mut self, text: &str, path: &Path) -> Result<()> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            // Only the message and position: the offending line may hold a secret.
            let at = e
                .span()
                .map(|s| {
                    let (l, c) = line_col(text, s.start);
                    format!(" at line {l}, column {c}")
                })
                .unwrap_or_default();
            ConfigError::Syntax {
                path: path.to_owned(),
                detail: format!("{}{at}", e.message().trim_end()),
            }
        })?;
        let origin = Origin::File(path.to_owned());
        for (section, value) in &table {
            if !SECTIONS.contains(&section.as_str()) {
                return Err(ConfigError::UnknownSection {
                    section: clip(section),
                    path: path.to_owned(),
                    valid: SECTIONS.join(", "),
                });
            }
            let toml::Value::Table(entries) = value else {
                return Err(ConfigError::Invalid {
                    key: section.clone(),
                    origin: origin.describe(),
                    message: format!(
                        "must be a table: put `[{section}]` on a line of its own, then its keys"
                    ),
                });
            };
            for (key, v) in entries {
                let Some(def) = section_keys(section).find(|d| d.key == key) else {
                    return Err(ConfigError::UnknownKey {
                        key: format!("{section}.{}", clip(key)),
                        section: section.clone(),
                        origin: origin.describe(),
                        valid: section_keys(section)
                            .map(|d| d.key)
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                };
                assign((def.set)(self), Incoming::Toml(v)).map_err(|message| {
                    ConfigError::Invalid {
                        key: def.name.into(),
                        origin: origin.describe(),
                        message,
                    }
                })?;
                self.record(def, origin.clone());
            }
        }
        Ok(())
    }

    /// Applies `NEXUS_<SECTION>_<KEY>` variables (lists comma-separated). Variables that do
    /// not start with a section's name (`NEXUS_CONFIG`, `NEXUS_LOG`, `NEXUS_TEST_IMAGE`) are
    /// not configuration and are ignored; an unknown key of a known section is an error.
    pub fn merge_env(&mut self, env: &Env) -> Result<()> {
        for (var, value) in &env.vars {
            let Some(rest) = var.strip_prefix("NEXUS_") else {
                continue;
            };
            let Some(section) = SECTIONS.iter().find(|s| {
                rest.strip_prefix(&s.to_ascii_uppercase())
                    .is_some_and(|r| r.starts_with('_'))
            }) else {
                continue;
            };
            let key_part = &rest[section.len() + 1..];
            let Some(def) = section_keys(section).find(|d| d.key.to_ascii_uppercase() == key_part)
            else {
                return Err(ConfigError::UnknownVariable {
                    var: clip(var),
                    section: (*section).into(),
                    valid: section_keys(section)
                        .map(KeyDef::env_var)
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            let origin = Origin::Env(var.clone());
            assign((def.set)(self), Incoming::Text(value)).map_err(|message| {
                ConfigError::Invalid {
                    key: def.name.into(),
                    origin: origin.describe(),
                    // A secret is never a bool or a number: the message cannot hold one.
                    message,
                }
            })?;
            self.record(def, origin);
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Errors and typed values.

    /// Where the current value of `name` came from, for messages.
    fn origin_of(&self, name: &str) -> String {
        let base = name.split('[').next().unwrap_or(name);
        let Some(def) = key_def(base) else {
            return String::new();
        };
        match self.ctx.origins.get(def.name) {
            Some((o, fp)) if *fp == fingerprint(&(def.get)(self)) => o.describe(),
            Some(_) => " (set on the command line)".into(),
            None => String::new(),
        }
    }

    /// `key` and, unless it is the default, where its value came from: for messages about
    /// another key than the one in error.
    fn named(&self, key: &str) -> String {
        format!("{key}{}", self.origin_of(key))
    }

    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.to_owned(),
            origin: self.origin_of(key),
            message: message.into(),
        }
    }

    /// An optional path: empty is `None`; `~/` is the home directory; otherwise absolute.
    fn path(&self, key: &str, s: &str) -> Result<Option<PathBuf>> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        let p = if s == "~" || s.starts_with("~/") {
            let Some(home) = &self.ctx.home else {
                return Err(self.invalid(
                    key,
                    "starts with ~ but HOME is not set: use an absolute path",
                ));
            };
            home.join(s.trim_start_matches('~').trim_start_matches('/'))
        } else {
            PathBuf::from(s)
        };
        if !p.is_absolute() {
            return Err(self.invalid(
                key,
                format!(
                    "`{}` is not an absolute path: use e.g. /etc/nexus/tls.pem or ~/nexus/tls.pem",
                    clip(s)
                ),
            ));
        }
        Ok(Some(p))
    }

    fn duration(&self, key: &str, s: &str) -> Result<Duration> {
        parse_duration(s).map_err(|e| self.invalid(key, e.0))
    }

    fn socket(&self, key: &str, s: &str) -> Result<SocketAddr> {
        s.trim().parse().map_err(|_| {
            self.invalid(
                key,
                format!("`{}` is not a listen address: use IP:PORT, e.g. 127.0.0.1:7700, 0.0.0.0:7700 or [::]:7700", clip(s)),
            )
        })
    }

    fn optional_socket(&self, key: &str, s: &str) -> Result<Option<SocketAddr>> {
        if s.trim().is_empty() {
            Ok(None)
        } else {
            self.socket(key, s).map(Some)
        }
    }

    fn tls_pair(&self, section: &str, cert: &str, key: &str) -> Result<Option<TlsFiles>> {
        let cert_key = format!("{section}.tls_cert");
        let key_key = format!("{section}.tls_key");
        match (self.path(&cert_key, cert)?, self.path(&key_key, key)?) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key })),
            (None, None) => Ok(None),
            (Some(_), None) => Err(self.invalid(
                &key_key,
                format!(
                    "is empty but {} is set: give both the certificate and its private key, or neither",
                    self.named(&cert_key)
                ),
            )),
            (None, Some(_)) => Err(self.invalid(
                &cert_key,
                format!(
                    "is empty but {} is set: give both the certificate and its private key, or neither",
                    self.named(&key_key)
                ),
            )),
        }
    }

    fn resources_of(&self, max: bool) -> Result<Resources> {
        let n = &self.node;
        let [(kc, c), (km, m), (kd, d)] = if max {
            [
                ("node.max_cpus", &n.max_cpus),
                ("node.max_memory", &n.max_memory),
                ("node.max_disk", &n.max_disk),
            ]
        } else {
            [
                ("node.cpus", &n.cpus),
                ("node.memory", &n.memory),
                ("node.disk", &n.disk),
            ]
        };
        let cpu_millis = parse_cpus(c).map_err(|e| self.invalid(kc, e.0))?;
        let memory_bytes = parse_size(m).map_err(|e| self.invalid(km, e.0))?;
        let disk_bytes = parse_size(d).map_err(|e| self.invalid(kd, e.0))?;
        let base = Resources::default();
        let each = [
            (kc, Resources { cpu_millis, ..base }),
            (
                km,
                Resources {
                    memory_bytes,
                    ..base
                },
            ),
            (kd, Resources { disk_bytes, ..base }),
        ];
        for (key, r) in each {
            r.validate().map_err(|e| self.invalid(key, e.to_string()))?;
        }
        Ok(Resources {
            cpu_millis,
            memory_bytes,
            disk_bytes,
        })
    }

    fn port_ranges(&self, key: &str, s: &str) -> Result<Vec<PortRange>> {
        let ranges = s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| PortRange::parse(p).map_err(|e| self.invalid(key, e.to_string())))
            .collect::<Result<Vec<_>>>()?;
        if ranges.is_empty() {
            return Err(self.invalid(
                key,
                "no ports: give a range like 4001-5000, several separated by commas",
            ));
        }
        Ok(ranges)
    }

    fn ports_checked(&self) -> Result<PortConfig> {
        let cfg = PortConfig {
            swarm: self.port_ranges("ports.swarm", &self.ports.swarm)?,
            api: self.port_ranges("ports.api", &self.ports.api)?,
            gateway: self.port_ranges("ports.gateway", &self.ports.gateway)?,
        };
        // Only validates the ranges: nothing is bound or allocated.
        match PortAllocator::new(&cfg, Box::new(BindProbe)) {
            Ok(_) => Ok(cfg),
            Err(PortError::Overlap { port, a, b }) if a == b => Err(self.invalid(
                &format!("ports.{a}"),
                format!("its ranges overlap each other (port {port})"),
            )),
            Err(PortError::Overlap { port, a, b }) => Err(self.invalid(
                &format!("ports.{b}"),
                format!(
                    "port {port} is also in {}: the swarm, api and gateway ranges must not overlap",
                    self.named(&format!("ports.{a}"))
                ),
            )),
            Err(e) => Err(self.invalid("ports.swarm", e.to_string())),
        }
    }

    fn check_api_key(&self, key: &str, s: &Secret) -> Result<()> {
        let v = s.expose();
        if v.len() < MIN_API_KEY_LEN {
            return Err(self.invalid(
                key,
                format!(
                    "an API key must be at least {MIN_API_KEY_LEN} characters (this one has {}): `nexus init` generates one",
                    v.chars().count()
                ),
            ));
        }
        if !v.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
            return Err(self.invalid(
                key,
                "an API key may only hold printable ASCII characters, no spaces or commas",
            ));
        }
        Ok(())
    }

    fn jwt_algorithm_setting(&self) -> Result<Option<JwtAlgorithm>> {
        let s = self.delegator.jwt_algorithm.trim();
        if s.is_empty() {
            return Ok(None);
        }
        JwtAlgorithm::parse(s).map(Some).ok_or_else(|| {
            self.invalid(
                "delegator.jwt_algorithm",
                format!(
                    "`{}` is not supported: use HS256, RS256 or EdDSA, or leave it empty",
                    clip(s)
                ),
            )
        })
    }

    fn check_jwt(&self) -> Result<()> {
        let d = &self.delegator;
        let has_secret = !d.jwt_secret.is_empty();
        let public_key = self.path("delegator.jwt_public_key", &d.jwt_public_key)?;
        if has_secret && public_key.is_some() {
            return Err(self.invalid(
                "delegator.jwt_public_key",
                format!(
                    "is set together with {}: use a shared secret (HS256) or a public key (RS256, EdDSA), not both",
                    self.named("delegator.jwt_secret")
                ),
            ));
        }
        if has_secret && d.jwt_secret.expose().len() < MIN_JWT_SECRET_LEN {
            return Err(self.invalid(
                "delegator.jwt_secret",
                format!(
                    "must be at least {MIN_JWT_SECRET_LEN} bytes (this one has {}): e.g. `openssl rand -base64 32`, or leave it empty to have one generated",
                    d.jwt_secret.expose().len()
                ),
            ));
        }
        match self.jwt_algorithm_setting()? {
            Some(JwtAlgorithm::Hs256) if public_key.is_some() => Err(self.invalid(
                "delegator.jwt_algorithm",
                "is HS256, which needs delegator.jwt_secret, but delegator.jwt_public_key is set: use RS256 or EdDSA",
            )),
            Some(a @ (JwtAlgorithm::Rs256 | JwtAlgorithm::EdDsa)) if public_key.is_none() => {
                Err(self.invalid(
                    "delegator.jwt_algorithm",
                    format!("is {}, which needs delegator.jwt_public_key (a PEM public key)", a.as_str()),
                ))
            }
            _ => Ok(()),
        }
    }

    fn check_url(&self) -> Result<()> {
        let url = self.store.url.trim();
        if url.is_empty() {
            return Ok(());
        }
        let ok = ["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .any(|p| url.starts_with(p) && url.len() > p.len());
        if !ok {
            return Err(self.invalid(
                "store.url",
                format!(
                    "`{}` is not a store URL: use sqlite:///PATH/nexus.db or postgres://USER:PASSWORD@HOST:PORT/DATABASE",
                    clip(&redact_url(url))
                ),
            ));
        }
        Ok(())
    }

    fn check_endpoint(&self) -> Result<()> {
        let e = self.docker.endpoint.trim();
        if e.is_empty() {
            return Ok(());
        }
        let ok = match e.strip_prefix("unix://") {
            Some(path) => path.starts_with('/'),
            None => ["tcp://", "http://"].iter().any(|p| {
                e.strip_prefix(p)
                    .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace))
            }),
        };
        if !ok {
            return Err(self.invalid(
                "docker.endpoint",
                format!(
                    "`{}` is not a Docker endpoint: use unix:///var/run/docker.sock, tcp://HOST:2375 or http://HOST:2375",
                    clip(e)
                ),
            ));
        }
        Ok(())
    }

    fn check_client_address(&self) -> Result<()> {
        let a = self.client.address.trim();
        if a.is_empty() {
            return Ok(());
        }
        let rest = a
            .strip_prefix("http://")
            .or_else(|| a.strip_prefix("https://"));
        let ok = rest.is_some_and(|r| {
            let host = r.trim_end_matches('/');
            !host.is_empty() && !host.contains(['/', ' ', '?', '#', '@'])
        });
        if !ok {
            return Err(self.invalid(
                "client.address",
                format!(
                    "`{}` is not a daemon address: use http://HOST:PORT or https://HOST:PORT, e.g. http://127.0.0.1:7700",
                    clip(a)
                ),
            ));
        }
        Ok(())
    }

    fn check_public_address(&self) -> Result<()> {
        let a = self.node.public_address.trim();
        if a.is_empty() {
            return Ok(());
        }
        let ok = match a.parse::<IpAddr>() {
            Ok(ip) => !ip.is_unspecified(),
            Err(_) => is_dns_name(a),
        };
        if !ok {
            return Err(self.invalid(
                "node.public_address",
                format!(
                    "`{}` is not an address peers can dial: use an IPv4 or IPv6 address or a DNS name, e.g. 203.0.113.7 or ipfs.example.com",
                    clip(a)
                ),
            ));
        }
        Ok(())
    }

    /// Checks every value: each error names the key (`section.key`), where the value came
    /// from and what a valid value looks like. Touches no files.
    pub fn validate(&self) -> Result<()> {
        // [daemon] [store] [docker]
        self.path("daemon.data_dir", &self.daemon.data_dir)?;
        self.check_url()?;
        self.check_endpoint()?;
        if !is_dns_label(&self.docker.instance) {
            return Err(self.invalid(
                "docker.instance",
                format!(
                    "`{}` is not a valid instance name: use 1–63 lower-case letters, digits and hyphens, e.g. default or prod-1",
                    clip(&self.docker.instance)
                ),
            ));
        }

        // [node]
        validate_image(&self.node.image)
            .map_err(|e| self.invalid("node.image", format!("{e}: use e.g. ipfs/kubo:v0.43.1")))?;
        self.check_public_address()?;
        self.duration("node.ready_timeout", &self.node.ready_timeout)?;
        self.duration("node.op_timeout", &self.node.op_timeout)?;
        let def = self.resources_of(false)?;
        let max = self.resources_of(true)?;
        if def.cpu_millis > max.cpu_millis {
            return Err(self.invalid(
                "node.cpus",
                format!(
                    "{} cores is above the maximum of {} set by {}",
                    cores_text(def.cpu_millis),
                    cores_text(max.cpu_millis),
                    self.named("node.max_cpus")
                ),
            ));
        }
        if def.memory_bytes > max.memory_bytes {
            return Err(self.invalid(
                "node.memory",
                format!(
                    "{} is above the maximum of {} set by {}",
                    size_text(def.memory_bytes),
                    size_text(max.memory_bytes),
                    self.named("node.max_memory")
                ),
            ));
        }
        if def.disk_bytes > max.disk_bytes {
            return Err(self.invalid(
                "node.disk",
                format!(
                    "{} is above the maximum of {} set by {}",
                    size_text(def.disk_bytes),
                    size_text(max.disk_bytes),
                    self.named("node.max_disk")
                ),
            ));
        }
        if !(1..=MAX_NODES).contains(&self.node.max_replicas) {
            return Err(self.invalid(
                "node.max_replicas",
                format!(
                    "must be between 1 and {MAX_NODES}, not {}",
                    self.node.max_replicas
                ),
            ));
        }

        // [ports]
        self.ports_checked()?;
        self.ports
            .swarm_host_ip
            .trim()
            .parse::<IpAddr>()
            .map_err(|_| {
                self.invalid(
                    "ports.swarm_host_ip",
                    format!(
                        "`{}` is not an IP address: use e.g. 0.0.0.0 or 203.0.113.7",
                        clip(&self.ports.swarm_host_ip)
                    ),
                )
            })?;

        // [grpc]
        let grpc = self.socket("grpc.listen", &self.grpc.listen)?;
        for (i, k) in self.grpc.api_keys.iter().enumerate() {
            self.check_api_key(&format!("grpc.api_keys[{i}]"), k)?;
        }
        self.tls_pair("grpc", &self.grpc.tls_cert, &self.grpc.tls_key)?;

        // [client]
        self.check_client_address()?;
        if !self.client.api_key.is_empty() {
            self.check_api_key("client.api_key", &self.client.api_key)?;
        }
        self.path("client.tls_ca", &self.client.tls_ca)?;

        // [delegator]
        let d = &self.delegator;
        let delegator = self.socket("delegator.listen", &d.listen)?;
        if !is_dns_name(d.domain.trim()) {
            return Err(self.invalid(
                "delegator.domain",
                format!(
                    "`{}` is not a DNS name: use e.g. localhost or nexus.example.com",
                    clip(&d.domain)
                ),
            ));
        }
        for (i, p) in d.trusted_proxies.iter().enumerate() {
            IpNet::parse(p)
                .map_err(|e| self.invalid(&format!("delegator.trusted_proxies[{i}]"), e.0))?;
        }
        self.check_jwt()?;
        if !d.max_body.trim().is_empty() {
            parse_size(&d.max_body).map_err(|e| self.invalid("delegator.max_body", e.0))?;
        }
        self.duration("delegator.connect_timeout", &d.connect_timeout)?;
        self.duration("delegator.idle_timeout", &d.idle_timeout)?;
        self.tls_pair("delegator", &d.tls_cert, &d.tls_key)?;

        // [metrics] [log]
        let metrics = self.optional_socket("metrics.listen", &self.metrics.listen)?;
        self.metrics_interval()?;
        if !matches!(self.log.format.trim(), "text" | "json") {
            return Err(self.invalid(
                "log.format",
                format!(
                    "`{}` is not a log format: use text or json",
                    clip(&self.log.format)
                ),
            ));
        }
        tracing_subscriber::EnvFilter::builder()
            .parse(self.log.level.trim())
            .map_err(|e| {
                self.invalid(
                    "log.level",
                    format!("{e}: use a level (error, warn, info, debug, trace) or directives like info,nexus=debug"),
                )
            })?;

        // Listeners must not collide.
        let mut listeners = vec![("grpc.listen", grpc)];
        if d.enabled {
            listeners.push(("delegator.listen", delegator));
        }
        if let Some(m) = metrics {
            listeners.push(("metrics.listen", m));
        }
        for (i, (ka, a)) in listeners.iter().enumerate() {
            for (kb, b) in &listeners[i + 1..] {
                if a.port() != 0 && a == b {
                    return Err(self.invalid(
                        kb,
                        format!(
                            "{b} is also {}: give each listener its own port",
                            self.named(ka)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Secrets.

    /// `<data_dir>/secrets.toml`.
    pub fn secrets_path(&self) -> PathBuf {
        self.data_dir().join(SECRETS_FILE)
    }

    /// Fills `grpc.api_keys` and `delegator.jwt_secret` from `<data_dir>/secrets.toml` when
    /// the configuration gives none (`jwt_secret` only when `jwt_public_key` is empty too).
    /// Configured values always win. With [`Create::Yes`] (the daemon) the file and the data
    /// directory are created as needed (0600 / 0700); with [`Create::No`] (the CLI) a missing
    /// or unreadable file changes nothing (unreadable adds a warning). A secrets file others
    /// can read is refused either way.
    pub fn resolve_secrets(&mut self, create: Create) -> Result<()> {
        let need_api = self.grpc.api_keys.is_empty();
        let need_jwt =
            self.delegator.jwt_secret.is_empty() && self.delegator.jwt_public_key.trim().is_empty();
        if !need_api && !need_jwt {
            return Ok(());
        }
        self.path("daemon.data_dir", &self.daemon.data_dir)?;
        let path = self.secrets_path();
        let file = match create {
            Create::Yes => read_or_create_secrets(&path)?,
            Create::No => match read_secrets(&path) {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(ConfigError::Read { source, .. })
                    if source.kind() == io::ErrorKind::PermissionDenied =>
                {
                    self.ctx.warnings.push(format!(
                        "cannot read {} (permission denied): set client.api_key or NEXUS_CLIENT_API_KEY",
                        path.display()
                    ));
                    return Ok(());
                }
                Err(e) => return Err(e),
            },
        };
        let origin = Origin::SecretsFile(path);
        if need_api {
            if let Some(k) = file.api_key {
                self.grpc.api_keys = vec![k];
                if let Some(def) = key_def("grpc.api_keys") {
                    self.record(def, origin.clone());
                }
            }
        }
        if need_jwt {
            if let Some(s) = file.jwt_secret {
                self.delegator.jwt_secret = s;
                if let Some(def) = key_def("delegator.jwt_secret") {
                    self.record(def, origin);
                }
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Typed values. They assume `validate` passed; a value that does not parse falls back to
    // the built-in default.

    /// `daemon.data_dir`, else `$XDG_DATA_HOME/nexus`, else `$HOME/.local/share/nexus`, else
    /// `/var/lib/nexus`.
    pub fn data_dir(&self) -> PathBuf {
        if let Ok(Some(p)) = self.path("daemon.data_dir", &self.daemon.data_dir) {
            return p;
        }
        if let Some(x) = &self.ctx.xdg_data_home {
            return x.join("nexus");
        }
        match &self.ctx.home {
            Some(h) => h.join(".local").join("share").join("nexus"),
            None => PathBuf::from("/var/lib/nexus"),
        }
    }

    /// The store URL to open: `store.url`, else `sqlite://<data_dir>/nexus.db`. It may hold a
    /// password: print [`Config::store_url_redacted`] instead.
    pub fn store_url(&self) -> String {
        let url = self.store.url.trim();
        if url.is_empty() {
            format!("sqlite://{}", self.data_dir().join("nexus.db").display())
        } else {
            url.to_owned()
        }
    }

    pub fn store_url_redacted(&self) -> String {
        redact_url(&self.store_url())
    }

    /// `docker.endpoint`, else `DOCKER_HOST`, else the local socket.
    pub fn docker_endpoint(&self) -> String {
        let e = self.docker.endpoint.trim();
        if !e.is_empty() {
            return e.to_owned();
        }
        self.ctx
            .docker_host
            .clone()
            .unwrap_or_else(|| DEFAULT_DOCKER_ENDPOINT.to_owned())
    }

    pub fn docker_runtime_config(&self) -> DockerRuntimeConfig {
        let d = DockerRuntimeConfig::default();
        DockerRuntimeConfig {
            ready_timeout: self
                .duration("node.ready_timeout", &self.node.ready_timeout)
                .unwrap_or(d.ready_timeout),
            swarm_host_ip: self.ports.swarm_host_ip.trim().to_owned(),
            instance: self.docker.instance.clone(),
            endpoint: Some(self.docker_endpoint()),
            ..d
        }
    }

    /// Default resources of a node (`node.cpus`, `node.memory`, `node.disk`).
    pub fn default_resources(&self) -> Resources {
        self.resources_of(false).unwrap_or_default()
    }

    /// The most a request may give one node (`node.max_*`).
    pub fn max_resources(&self) -> Resources {
        self.resources_of(true)
            .unwrap_or_else(|_| OrchestratorConfig::default().max_resources)
    }

    pub fn port_config(&self) -> PortConfig {
        self.ports_checked().unwrap_or_default()
    }

    pub fn orchestrator_config(&self) -> OrchestratorConfig {
        let d = OrchestratorConfig::default();
        OrchestratorConfig {
            image: self.node.image.clone(),
            max_replicas: self.node.max_replicas,
            default_resources: self.default_resources(),
            max_resources: self.max_resources(),
            ports: self.port_config(),
            op_timeout: self
                .duration("node.op_timeout", &self.node.op_timeout)
                .unwrap_or(d.op_timeout),
            ..d
        }
    }

    /// The address advertised in join kits: `node.public_address`, else the host's IPv4
    /// address on its default route, else `127.0.0.1`.
    pub fn public_address(&self) -> String {
        let a = self.node.public_address.trim();
        if !a.is_empty() {
            return a.to_owned();
        }
        default_route_ipv4()
            .unwrap_or(Ipv4Addr::LOCALHOST)
            .to_string()
    }

    pub fn grpc_listen(&self) -> SocketAddr {
        self.socket("grpc.listen", &self.grpc.listen)
            .unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::LOCALHOST, 7700)))
    }

    /// The API keys the daemon accepts (after [`Config::resolve_secrets`], never empty).
    pub fn grpc_api_keys(&self) -> &[Secret] {
        &self.grpc.api_keys
    }

    pub fn grpc_tls(&self) -> Option<TlsFiles> {
        self.tls_pair("grpc", &self.grpc.tls_cert, &self.grpc.tls_key)
            .ok()
            .flatten()
    }

    /// Where the CLI connects: `client.address`, else `grpc.listen` with an unspecified
    /// address replaced by loopback, `https://` when gRPC TLS is on, else `http://`.
    pub fn client_address(&self) -> String {
        let a = self.client.address.trim().trim_end_matches('/');
        if !a.is_empty() {
            return a.to_owned();
        }
        let mut listen = self.grpc_listen();
        match listen.ip() {
            IpAddr::V4(v4) if v4.is_unspecified() => listen.set_ip(Ipv4Addr::LOCALHOST.into()),
            IpAddr::V6(v6) if v6.is_unspecified() => listen.set_ip(Ipv6Addr::LOCALHOST.into()),
            _ => {}
        }
        let scheme = if self.grpc_tls().is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{listen}")
    }

    /// The key the CLI sends: `client.api_key`, else the first of `grpc.api_keys` (which
    /// [`Config::resolve_secrets`] fills from the secrets file).
    pub fn client_api_key(&self) -> Option<Secret> {
        if !self.client.api_key.is_empty() {
            return Some(self.client.api_key.clone());
        }
        self.grpc.api_keys.first().cloned()
    }

    /// The CA the CLI trusts: `client.tls_ca`, else `grpc.tls_cert` when `client.address` is
    /// empty (the daemon on this machine, possibly self-signed).
    pub fn client_tls_ca(&self) -> Option<PathBuf> {
        if let Ok(Some(p)) = self.path("client.tls_ca", &self.client.tls_ca) {
            return Some(p);
        }
        if self.client.address.trim().is_empty() {
            return self.grpc_tls().map(|t| t.cert);
        }
        None
    }

    /// The delegator's settings. Reads `delegator.jwt_public_key` (to infer or check the
    /// algorithm), so it can fail even after `validate`; call it after
    /// [`Config::resolve_secrets`].
    pub fn delegator_settings(&self) -> Result<DelegatorSettings> {
        self.validate()?;
        let d = &self.delegator;
        let public_key = self.path("delegator.jwt_public_key", &d.jwt_public_key)?;
        let configured = self.jwt_algorithm_setting()?;
        let (algorithm, key) = match public_key {
            Some(path) => {
                let pem = std::fs::read(&path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                let found = pem_algorithm(&pem).map_err(|m| {
                    self.invalid("delegator.jwt_public_key", format!("{} {m}", path.display()))
                })?;
                if let Some(c) = configured.filter(|c| *c != found) {
                    return Err(self.invalid(
                        "delegator.jwt_algorithm",
                        format!(
                            "is {} but {} is a key for {}",
                            c.as_str(),
                            path.display(),
                            found.as_str()
                        ),
                    ));
                }
                (found, JwtKey::PublicKeyPem(pem))
            }
            None if !d.jwt_secret.is_empty() => {
                (JwtAlgorithm::Hs256, JwtKey::Secret(d.jwt_secret.clone()))
            }
            None => {
                return Err(self.invalid(
                    "delegator.jwt_secret",
                    "no key to verify tokens: set delegator.jwt_secret or delegator.jwt_public_key (the daemon generates a secret when both are empty)",
                ))
            }
        };
        let opt = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        Ok(DelegatorSettings {
            enabled: d.enabled,
            listen: self.socket("delegator.listen", &d.listen)?,
            domain: d.domain.trim().to_ascii_lowercase(),
            trusted_proxies: d
                .trusted_proxies
                .iter()
                .filter_map(|p| IpNet::parse(p).ok())
                .collect(),
            jwt: JwtSettings {
                algorithm,
                key,
                audience: opt(&d.jwt_audience),
                issuer: opt(&d.jwt_issuer),
            },
            max_body: parse_size(&d.max_body).ok(),
            connect_timeout: self.duration("delegator.connect_timeout", &d.connect_timeout)?,
            idle_timeout: self.duration("delegator.idle_timeout", &d.idle_timeout)?,
            tls: self.tls_pair("delegator", &d.tls_cert, &d.tls_key)?,
        })
    }

    /// `metrics.interval`, at least one second.
    pub fn metrics_interval(&self) -> Result<Duration> {
        let d = self.duration("metrics.interval", &self.metrics.interval)?;
        if d < Duration::from_secs(1) {
            return Err(self.invalid("metrics.interval", "must be at least 1s".to_string()));
        }
        Ok(d)
    }

    /// `metrics.listen`; `None`: off.
    pub fn metrics_listen(&self) -> Option<SocketAddr> {
        self.optional_socket("metrics.listen", &self.metrics.listen)
            .ok()
            .flatten()
    }

    pub fn log_format(&self) -> LogFormat {
        if self.log.format.trim() == "json" {
            LogFormat::Json
        } else {
            LogFormat::Text
        }
    }

    /// An `EnvFilter` directive string.
    pub fn log_filter(&self) -> &str {
        self.log.level.trim()
    }
}
