//! The key table: every configuration key once ([`keys`]), with its default, help line and
//! variable, and the layering it drives: defaults, the file, `NEXUS_…` variables, flags
//! ([`Config::set`]), remembering where each value came from for error messages. It must not
//! interpret values beyond their TOML type; validation does.

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::Path;

use super::env::{find_config_file, Env};
use super::secrets;
use super::values::clip;
use super::{Config, ConfigError, Context, Origin, Result, Secret, SECTIONS};
use crate::store::sql::redact_url;

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
pub(super) enum Slot<'a> {
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
    pub(super) set: for<'a> fn(&'a mut Config) -> Slot<'a>,
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

pub(super) static KEYS: &[KeyDef] = &[
    key!(daemon.data_dir: Str = r#""""#,
        "Directory for state: the SQLite store, secrets.toml, seal.key and nodes/ (sockets; at most 73 bytes long; created 0700, refused when others may use it). Empty: $XDG_DATA_HOME/nexus, else ~/.local/share/nexus, else /var/lib/nexus."),
    key!(store.url: Str = r#""""#,
        "Store URL: sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DB. Empty: sqlite://<data_dir>/nexus.db."),
    key!(store.seal_key: Secret = r#""""#,
        "Key that seals the swarm keys and node private keys in the store: 32 random bytes as base64 (openssl rand -base64 32). Empty: the key in seal_key_file."),
    key!(store.seal_previous_keys: Secrets = "[]",
        "Older seal keys that only open, while rotating a configured seal_key: secrets sealed under them are sealed again under seal_key at start."),
    key!(store.seal_key_file: Str = r#""""#,
        "File of seal keys used when seal_key is empty, generated on first start (mode 0600) and rewritten by `nexus secrets rotate`. Empty: <data_dir>/seal.key."),
    key!(store.lease_ttl: Str = r#""30s""#,
        "How long a daemon's lease of its instance lasts without renewal (renewed every third of it); a second daemon is refused while it lasts (at least 1s)."),
    key!(docker.endpoint: Str = r#""""#,
        "Docker Engine endpoint: unix://PATH, tcp://HOST:PORT or http://HOST:PORT. Empty: $DOCKER_HOST, else unix:///var/run/docker.sock."),
    key!(docker.instance: Str = r#""""#,
        "Owner label of this installation's containers (lower-case DNS label). Empty: the id recorded in the store, generated on its first start (n-<12 hex digits>), so installations with different stores never share one."),
    key!(docker.subnet_pool: Str = r#""10.224.0.0/12""#,
        "IPv4 range nexus cuts networks' subnets from (CIDR), one subnet per network. Keep it clear of Docker's default-address-pools and of addresses the host routes elsewhere."),
    key!(docker.subnet_prefix: U16 = "26",
        "Prefix length of each network's subnet (/26: 64 addresses, up to 61 nodes); must hold node.max_replicas nodes plus 3 and lie within subnet_pool."),
    key!(runtime.kind: Str = r#""docker""#,
        "What runs the nodes: docker (one Docker engine, docker.endpoint) or swarm (a Docker Swarm: each node a service on one of its hosts; docs/swarm.md)."),
    key!(runtime.swarm_endpoint: Str = r#""""#,
        "A swarm manager's Docker Engine endpoint (runtime.kind = swarm). Empty: docker.endpoint."),
    key!(runtime.gate_image: Str = r#""""#,
        "The gate image every swarm host runs (scripts/build-gate-image.sh, pushed to a registry the hosts pull from); required when runtime.kind = swarm."),
    key!(runtime.gate_port: U16 = "4702",
        "Port each swarm host's gate listens on (published on the host; only nexus holding the gate's credentials gets through)."),
    key!(runtime.host_dir: Str = r#""/var/lib/nexus-swarm""#,
        "Directory on every swarm host holding its nodes' sockets and repos: must exist on each host, owned by uid 1000, mode 0700."),
    key!(runtime.address_label: Str = r#""io.nexus.public-address""#,
        "Swarm node label holding a host's public address (join kits); hosts without it advertise their swarm address."),
    key!(runtime.encrypted: Bool = "false",
        "Encrypt each network's overlay on a swarm (IPsec: needs the kernel's ESP support on every host)."),
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
    key!(node.start_parallelism: U16 = "0",
        "Most node starts (create, start, re-create) at once across all networks; a node waits its turn before its ready_timeout starts. 0: two per CPU core."),
    key!(node.host_memory: Str = r#""""#,
        "Memory of this host that nodes' memory limits are admitted against (e.g. 24GiB). Empty: what Docker reports (docker info)."),
    key!(node.memory_overcommit: Str = r#""1""#,
        "How many times host_memory the memory limits of running networks' nodes may add up to; a start or update beyond is refused up front. 1: every node may use its whole limit at once. Idle kubo nodes use a fraction of it (docs/configuration.md#admission)."),
    key!(node.max_nodes: U16 = "0",
        "Most nodes of running networks on this host; a start or update beyond is refused up front. 0: no cap."),
    key!(node.cpu_budget: Str = r#""0.5""#,
        "Share of the host's cores (0 to 1) that running networks' nodes may use together, at the CPU one running node is measured to use; a start or update beyond is refused up front. 0: no CPU check (docs/configuration.md#admission)."),
    key!(node.cpu_meter_interval: Str = r#""30s""#,
        "How often the CPU of a few running nodes is read to measure what one node uses (for node.cpu_budget); a node counts once it has run twice this long."),
    key!(node.pin_timeout: Str = r#""60s""#,
        "How long one node may take to pin one CID of its network's pinset (pin/add) before the attempt counts as failed and is retried with backoff."),
    key!(node.pin_fail_after: Str = r#""5m""#,
        "A pin that no node of its network holds this long after it was added ends `failed`, with the reason (never stuck in `queued`)."),
    key!(node.pin_concurrency: U16 = "4",
        "Most pin/add and pin/rm calls in flight to one node at once (1-64)."),
    key!(node.host_lost_grace: Str = r#""60s""#,
        "How long a node whose host is down (a swarm host lost) waits for it before it is re-created on another host, with its identity and an empty repo refilled from its peers (at least 1s)."),
    key!(node.pin_interval: Str = r#""5s""#,
        "How often every running network's pinset is compared with what its nodes hold (pin/ls), besides the passes a change triggers."),
    key!(node.pin_drain_timeout: Str = r#""2m""#,
        "Longest a scale-down (network update --replicas lower) waits for the pins of the nodes it removes to be copied to the remaining nodes before removing them anyway (an event says so). 0s: do not wait."),
    key!(node.max_cpus: Str = r#""4""#,
        "Most CPU cores a request may give one node."),
    key!(node.max_memory: Str = r#""8GiB""#,
        "Most memory a request may give one node."),
    key!(node.max_disk: Str = r#""1TiB""#,
        "Largest repository size a request may give one node."),
    key!(ports.swarm: Str = r#""4001-5000""#,
        "Host ports for the nodes' swarm (libp2p) port: LOW-HIGH, several separated by commas."),
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
    key!(delegator.threads: U16 = "0",
        "Threads serving the delegator, each with its own listener on `listen` (SO_REUSEPORT) and its own connections to nodes; limits and caps stay shared. 0: one per core (at most 256)."),
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
    key!(delegator.jwt_audience: Str = r#""nexus""#,
        "Required `aud` claim of tenant tokens (nexus token issue writes it). Empty: not checked, which accepts tokens the same key signed for any other application."),
    key!(delegator.jwt_issuer: Str = r#""""#,
        "Required `iss` claim. Empty: not checked."),
    key!(delegator.max_ttl: Str = r#""30d""#,
        "Longest lifetime of a tenant token (exp - iat; exp - now without iat), accepted or issued; a revoked token id is remembered this long (1s to 3650d)."),
    key!(delegator.rate_per_client: Str = r#""100""#,
        "Requests per second one client address may make on average (bursts of twice as many); beyond, 429 with Retry-After. 0: no limit (behind a reverse proxy, list it in trusted_proxies so each client counts, not the proxy)."),
    key!(delegator.rate_per_user: Str = r#""50""#,
        "Requests per second one token user may make on average (bursts of twice as many); beyond, 429. 0: no limit."),
    key!(delegator.concurrent_per_client: U16 = "64",
        "Requests one client address may have in flight at once (until their answers end); beyond, 429. 0: no limit."),
    key!(delegator.concurrent_per_user: U16 = "32",
        "Requests one token user may have in flight at once; beyond, 429. 0: no limit."),
    key!(delegator.max_connections: U16 = "4096",
        "Client connections open at once; further ones wait in the listen backlog (at least 1)."),
    key!(delegator.max_connections_per_client: U16 = "256",
        "Client connections open at once from one address; further ones are closed at once (at least 1)."),
    key!(delegator.header_timeout: Str = r#""10s""#,
        "Time a client has to send its request headers (and finish the TLS handshake): slow clients cannot hold sockets longer."),
    key!(delegator.gateway_timeout: Str = r#""10s""#,
        "Time a node's gateway has to start answering (an unknown CID would hold the client much longer); beyond, 504."),
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
    key!(metrics.scrape_token: Secret = r#""""#,
        "Bearer token of the node scrape-through (/nodes/<network>/<index>/metrics), read-only; the API keys are refused there. Empty: the scrape_token in <data_dir>/secrets.toml, generated on first start."),
    key!(log.format: Str = r#""text""#,
        "Log format: text or json."),
    key!(log.level: Str = r#""info""#,
        "Log filter: a level (error, warn, info, debug, trace) or tracing directives like info,nexus=debug."),
];

/// Every configuration key, in file order.
pub fn keys() -> &'static [KeyDef] {
    KEYS
}

pub(super) fn key_def(name: &str) -> Option<&'static KeyDef> {
    KEYS.iter().find(|k| k.name == name)
}

fn section_keys(section: &str) -> impl Iterator<Item = &'static KeyDef> + '_ {
    KEYS.iter().filter(move |k| k.section == section)
}

pub(super) fn fingerprint(v: &Val<'_>) -> u64 {
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
pub(super) enum Incoming<'a> {
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
pub(super) fn assign(slot: Slot<'_>, v: Incoming<'_>) -> std::result::Result<(), String> {
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
            runtime: Default::default(),
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

    pub(super) fn record(&mut self, def: &'static KeyDef, origin: Origin) {
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

    /// Sets `key` (`section.key`) to `value` as a flag does: a value that differs from what
    /// was loaded is reported as "set on the command line". `key` must be in [`keys`].
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let Some(def) = key_def(key) else {
            return Err(ConfigError::UnknownKey {
                key: clip(key),
                section: key.split('.').next().unwrap_or_default().to_owned(),
                origin: " (set on the command line)".into(),
                valid: KEYS.iter().map(|d| d.name).collect::<Vec<_>>().join(", "),
            });
        };
        assign((def.set)(self), Incoming::Text(value)).map_err(|message| ConfigError::Invalid {
            key: def.name.into(),
            origin: " (set on the command line)".into(),
            message,
        })
    }

    // -----------------------------------------------------------------------------------------
    // Errors.

    /// Where the current value of `name` came from, for messages.
    pub(super) fn origin_of(&self, name: &str) -> String {
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
    pub(super) fn named(&self, key: &str) -> String {
        format!("{key}{}", self.origin_of(key))
    }

    pub(super) fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.to_owned(),
            origin: self.origin_of(key),
            message: message.into(),
        }
    }
}
