//! The per-key checks validation is made of: each turns one key's text (or a few keys that go
//! together) into a typed value or an error naming the key, where its value came from and what a
//! valid value looks like. Reads only `delegator.jwt_public_key`; writes nothing.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use ipnet::Ipv4Net;

use super::settings::TlsFiles;
use super::values::{clip, cores_text, parse_cpus, parse_duration, parse_size, size_text};
use super::{Config, ConfigError, Result, Secret, DEFAULT_DOCKER_ENDPOINT, SEAL_KEY_FILE};
use crate::delegator::auth::MIN_HS256_SECRET;
use crate::delegator::{JwtConfig, JwtConfigError, PublicKeyAlg};
use crate::names::is_dns_name;
use crate::node::Resources;
use crate::orchestrator::ports::{BindProbe, PortAllocator, PortConfig, PortError, PortRange};
use crate::orchestrator::subnets::SubnetConfig;
use crate::orchestrator::AdmissionConfig;
use crate::store::seal::{KeyFile, KeySource, Keyring, SealKey};
use crate::store::sql::redact_url;

/// Shortest API key accepted.
const MIN_API_KEY_LEN: usize = 32;

/// `delegator.jwt_algorithm`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum JwtAlgorithm {
    Hs256,
    PublicKey(PublicKeyAlg),
}

impl JwtAlgorithm {
    fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "HS256" => Some(Self::Hs256),
            "RS256" => Some(Self::PublicKey(PublicKeyAlg::Rs256)),
            "EDDSA" => Some(Self::PublicKey(PublicKeyAlg::EdDsa)),
            _ => None,
        }
    }
}

/// Where the delegator's token key comes from, once the configuration is checked.
pub(super) enum JwtSource {
    /// HS256, the secret checked.
    Secret(JwtConfig),
    /// A PEM public key file, read by [`Config::validate`].
    PublicKey {
        path: PathBuf,
        configured: Option<PublicKeyAlg>,
    },
    /// Neither: the secrets file may give a secret.
    None,
}

/// The algorithm a PEM public key is for.
fn pem_algorithm(pem: &[u8]) -> std::result::Result<PublicKeyAlg, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "is not a PEM file".to_string())?;
    if text.contains("PRIVATE KEY-----") {
        return Err("holds a private key: give the public key (openssl pkey -pubout)".into());
    }
    if text.contains("-----BEGIN RSA PUBLIC KEY-----") {
        return Ok(PublicKeyAlg::Rs256);
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
        Ok(PublicKeyAlg::EdDsa)
    } else if has(RSA) {
        Ok(PublicKeyAlg::Rs256)
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

impl Config {
    /// The JWT configuration from a PEM public key file.
    pub(super) fn public_key(
        &self,
        path: PathBuf,
        configured: Option<PublicKeyAlg>,
    ) -> Result<JwtConfig> {
        let pem = std::fs::read(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let found = pem_algorithm(&pem).map_err(|m| {
            self.invalid(
                "delegator.jwt_public_key",
                format!("{} {m}", path.display()),
            )
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
        JwtConfig::from_public_key_pem(found, &String::from_utf8_lossy(&pem)).map_err(|source| {
            ConfigError::Jwt {
                key: "delegator.jwt_public_key",
                source,
            }
        })
    }

    /// `daemon.data_dir`, else `$XDG_DATA_HOME/nexus`, else `$HOME/.local/share/nexus`, else
    /// `/var/lib/nexus`.
    pub(super) fn data_dir(&self) -> Result<PathBuf> {
        if let Some(p) = self.path("daemon.data_dir", &self.daemon.data_dir)? {
            return Ok(p);
        }
        if let Some(x) = &self.ctx.xdg_data_home {
            return Ok(x.join("nexus"));
        }
        Ok(match &self.ctx.home {
            Some(h) => h.join(".local").join("share").join("nexus"),
            None => PathBuf::from("/var/lib/nexus"),
        })
    }

    pub(super) fn path(&self, key: &str, s: &str) -> Result<Option<PathBuf>> {
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

    pub(super) fn duration(&self, key: &str, s: &str) -> Result<Duration> {
        parse_duration(s).map_err(|e| self.invalid(key, e.0))
    }

    pub(super) fn socket(&self, key: &str, s: &str) -> Result<SocketAddr> {
        s.trim().parse().map_err(|_| {
            self.invalid(
                key,
                format!("`{}` is not a listen address: use IP:PORT, e.g. 127.0.0.1:7700, 0.0.0.0:7700 or [::]:7700", clip(s)),
            )
        })
    }

    pub(super) fn optional_socket(&self, key: &str, s: &str) -> Result<Option<SocketAddr>> {
        if s.trim().is_empty() {
            Ok(None)
        } else {
            self.socket(key, s).map(Some)
        }
    }

    pub(super) fn tls_pair(
        &self,
        section: &str,
        cert: &str,
        key: &str,
    ) -> Result<Option<TlsFiles>> {
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

    pub(super) fn resources_of(&self, max: bool) -> Result<Resources> {
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

    pub(super) fn port_ranges(&self, key: &str, s: &str) -> Result<Vec<PortRange>> {
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

    pub(super) fn ports_checked(&self) -> Result<PortConfig> {
        let cfg = PortConfig {
            swarm: self.port_ranges("ports.swarm", &self.ports.swarm)?,
        };
        // Only validates the ranges: nothing is bound or allocated.
        match PortAllocator::new(&cfg, Box::new(BindProbe)) {
            Ok(_) => Ok(cfg),
            Err(PortError::Overlap { port, .. }) => Err(self.invalid(
                "ports.swarm",
                format!("its ranges overlap each other (port {port})"),
            )),
            Err(e) => Err(self.invalid("ports.swarm", e.to_string())),
        }
    }

    /// Admission control: the host's memory (configured or reported), the overcommit ratio
    /// (above 0, at most 100), the node cap and the CPU budget (0 to 1).
    pub(super) fn admission_checked(&self) -> Result<AdmissionConfig> {
        let n = &self.node;
        let host_memory = match n.host_memory.trim() {
            "" => None,
            m => Some(parse_size(m).map_err(|e| self.invalid("node.host_memory", e.0))?),
        };
        let memory_overcommit = self.ratio(
            "node.memory_overcommit",
            &n.memory_overcommit,
            |r| r > 0.0 && r <= 100.0,
            "a ratio above 0 and at most 100 (e.g. 1, or 4 for a host of mostly idle nodes)",
        )?;
        let cpu_budget = self.ratio(
            "node.cpu_budget",
            &n.cpu_budget,
            |r| (0.0..=1.0).contains(&r),
            "a share of the host's cores from 0 to 1 (e.g. 0.5; 0 turns the CPU check off)",
        )?;
        Ok(AdmissionConfig {
            host_memory,
            memory_overcommit,
            max_nodes: (n.max_nodes > 0).then_some(u32::from(n.max_nodes)),
            cpu_budget,
        })
    }

    /// A finite number that `ok` accepts, or an error naming `key` and saying it is not `what`.
    fn ratio(&self, key: &str, text: &str, ok: impl Fn(f64) -> bool, what: &str) -> Result<f64> {
        let text = text.trim();
        text.parse()
            .ok()
            .filter(|r: &f64| r.is_finite() && ok(*r))
            .ok_or_else(|| self.invalid(key, format!("`{}` is not {what}", clip(text))))
    }

    /// The subnet pool and prefix, checked against the largest network allowed.
    pub(super) fn subnets_checked(&self, max_replicas: u16) -> Result<SubnetConfig> {
        let text = self.docker.subnet_pool.trim();
        let pool: Ipv4Net = text.parse().map_err(|_| {
            self.invalid(
                "docker.subnet_pool",
                format!(
                    "`{}` is not an IPv4 range: use CIDR such as 10.224.0.0/12",
                    clip(text)
                ),
            )
        })?;
        if pool != pool.trunc() {
            return Err(self.invalid(
                "docker.subnet_pool",
                format!("`{pool}` has host bits set: did you mean {}?", pool.trunc()),
            ));
        }
        let prefix = u8::try_from(self.docker.subnet_prefix).unwrap_or(u8::MAX);
        let cfg = SubnetConfig { pool, prefix };
        cfg.check(max_replicas).map_err(|e| {
            self.invalid(
                "docker.subnet_prefix",
                format!("{e} (node.max_replicas is {max_replicas})"),
            )
        })?;
        Ok(cfg)
    }

    pub(super) fn check_api_key(&self, key: &str, s: &Secret) -> Result<()> {
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

    /// Unless `ok`, the error "`value` what" about `key` (`value` clipped).
    pub(super) fn expect(&self, ok: bool, key: &str, value: &str, what: &str) -> Result<()> {
        if ok {
            Ok(())
        } else {
            Err(self.invalid(key, format!("`{}` {what}", clip(value))))
        }
    }

    /// `store.url`, else `sqlite://<data_dir>/nexus.db`.
    pub(super) fn store_url(&self, data_dir: &Path) -> Result<Secret> {
        let url = self.store.url.trim();
        if url.is_empty() {
            return Ok(Secret::new(format!(
                "sqlite://{}",
                data_dir.join("nexus.db").display()
            )));
        }
        let ok = ["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .any(|p| url.starts_with(p) && url.len() > p.len());
        self.expect(ok, "store.url", &redact_url(url), "is not a store URL: use sqlite:///PATH/nexus.db or postgres://USER:PASSWORD@HOST:PORT/DATABASE")?;
        Ok(Secret::new(url))
    }

    /// `store.seal_key` with `store.seal_previous_keys`, else the key file
    /// (`store.seal_key_file`, else `<data_dir>/seal.key`). Reads no file.
    pub(super) fn seal_source(&self, data_dir: &Path) -> Result<KeySource> {
        let s = &self.store;
        let file = self.path("store.seal_key_file", &s.seal_key_file)?;
        if s.seal_key.is_empty() {
            if !s.seal_previous_keys.is_empty() {
                return Err(self.invalid(
                    "store.seal_previous_keys",
                    format!(
                        "is set but {} is empty: previous keys go with a configured seal_key \
                         (the key file keeps its own, and `nexus secrets rotate` rewrites it)",
                        self.named("store.seal_key")
                    ),
                ));
            }
            let path = file.unwrap_or_else(|| data_dir.join(SEAL_KEY_FILE));
            return Ok(KeySource::File(KeyFile::new(path)));
        }
        if file.is_some() {
            return Err(self.invalid(
                "store.seal_key_file",
                format!(
                    "is set together with {}: give the key or the file, not both",
                    self.named("store.seal_key")
                ),
            ));
        }
        let current = SealKey::parse(s.seal_key.expose())
            .map_err(|e| self.invalid("store.seal_key", e.to_string()))?;
        let previous = s
            .seal_previous_keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                SealKey::parse(k.expose()).map_err(|e| {
                    self.invalid(&format!("store.seal_previous_keys[{i}]"), e.to_string())
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let keyring = Keyring::new(current, previous)
            .map_err(|e| self.invalid("store.seal_previous_keys", e.to_string()))?;
        Ok(KeySource::Configured {
            keyring,
            origin: self.named("store.seal_key"),
        })
    }

    /// `docker.endpoint`, else `DOCKER_HOST`, else the local socket.
    pub(super) fn docker_endpoint(&self) -> Result<String> {
        let e = self.docker.endpoint.trim();
        if e.is_empty() {
            return Ok(self
                .ctx
                .docker_host
                .clone()
                .unwrap_or_else(|| DEFAULT_DOCKER_ENDPOINT.to_owned()));
        }
        let ok = match e.strip_prefix("unix://") {
            Some(path) => path.starts_with('/'),
            None => ["tcp://", "http://"].iter().any(|p| {
                e.strip_prefix(p)
                    .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace))
            }),
        };
        self.expect(ok, "docker.endpoint", e, "is not a Docker endpoint: use unix:///var/run/docker.sock, tcp://HOST:2375 or http://HOST:2375")?;
        Ok(e.to_owned())
    }

    /// The swarm runtime's settings when `runtime.kind = "swarm"`; `None` for `docker`.
    /// `instance` and `ready_timeout` are the Docker runtime's (the daemon sets the instance
    /// it resolved against the store on both).
    pub(super) fn swarm_runtime(
        &self,
        docker: &crate::node::DockerRuntimeConfig,
    ) -> Result<Option<crate::node::SwarmRuntimeConfig>> {
        let r = &self.runtime;
        match r.kind.trim() {
            "docker" => return Ok(None),
            "swarm" => {}
            other => {
                return Err(self.invalid(
                    "runtime.kind",
                    format!("`{}` is not a runtime: use docker or swarm", clip(other)),
                ))
            }
        }
        let image = r.gate_image.trim();
        self.expect(
            !image.is_empty(),
            "runtime.gate_image",
            image,
            "is empty: build the gate image (scripts/build-gate-image.sh), push it where every swarm host pulls from, and name it here",
        )?;
        self.expect(
            crate::node::spec::validate_image(image).is_ok(),
            "runtime.gate_image",
            image,
            "is not an image reference, e.g. registry.example.com:5000/nexus-gate:1",
        )?;
        self.expect(
            r.gate_port != 0,
            "runtime.gate_port",
            "0",
            "is not a port: use 1-65535, e.g. 4702",
        )?;
        let dir = r.host_dir.trim();
        self.expect(
            dir.starts_with('/') && !dir.contains("..") && dir.len() <= 200,
            "runtime.host_dir",
            dir,
            "is not an absolute directory path on the hosts, e.g. /var/lib/nexus-swarm",
        )?;
        let label = r.address_label.trim();
        self.expect(
            !label.is_empty()
                && label.len() <= 128
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b)),
            "runtime.address_label",
            label,
            "is not a node label name, e.g. io.nexus.public-address",
        )?;
        let endpoint = match r.swarm_endpoint.trim() {
            "" => docker.endpoint.clone(),
            e => {
                let ok = match e.strip_prefix("unix://") {
                    Some(path) => path.starts_with('/'),
                    None => ["tcp://", "http://"].iter().any(|p| {
                        e.strip_prefix(p).is_some_and(|rest| {
                            !rest.is_empty() && !rest.contains(char::is_whitespace)
                        })
                    }),
                };
                self.expect(ok, "runtime.swarm_endpoint", e, "is not a Docker endpoint: use unix:///var/run/docker.sock, tcp://HOST:2375 or http://HOST:2375")?;
                Some(e.to_owned())
            }
        };
        let mut cfg =
            crate::node::SwarmRuntimeConfig::new(docker.instance.clone(), image.to_owned());
        cfg.endpoint = endpoint;
        cfg.ready_timeout = docker.ready_timeout.max(cfg.ready_timeout);
        cfg.gate_port = r.gate_port;
        cfg.host_dir = std::path::PathBuf::from(dir);
        cfg.address_label = label.to_owned();
        cfg.encrypted = r.encrypted;
        Ok(Some(cfg))
    }

    /// `client.address` without a trailing `/`; `None` when empty.
    pub(super) fn client_address(&self) -> Result<Option<String>> {
        let a = self.client.address.trim();
        if a.is_empty() {
            return Ok(None);
        }
        let rest = a
            .strip_prefix("http://")
            .or_else(|| a.strip_prefix("https://"));
        let ok = rest.is_some_and(|r| {
            let host = r.trim_end_matches('/');
            !host.is_empty() && !host.contains(['/', ' ', '?', '#', '@'])
        });
        self.expect(ok, "client.address", a, "is not a daemon address: use http://HOST:PORT or https://HOST:PORT, e.g. http://127.0.0.1:7700")?;
        Ok(Some(a.trim_end_matches('/').to_owned()))
    }

    /// `node.public_address`, else the host's IPv4 address on its default route, else
    /// `127.0.0.1`.
    pub(super) fn public_address(&self) -> Result<String> {
        let a = self.node.public_address.trim();
        if a.is_empty() {
            return Ok(default_route_ipv4()
                .unwrap_or(Ipv4Addr::LOCALHOST)
                .to_string());
        }
        let ok = match a.parse::<IpAddr>() {
            Ok(ip) => !ip.is_unspecified(),
            Err(_) => is_dns_name(a),
        };
        self.expect(ok, "node.public_address", a, "is not an address peers can dial: use an IPv4 or IPv6 address or a DNS name, e.g. 203.0.113.7 or ipfs.example.com")?;
        Ok(a.to_owned())
    }

    /// Each default resource at most its maximum.
    pub(super) fn check_defaults_within_max(&self, def: &Resources, max: &Resources) -> Result<()> {
        let limits = [
            (
                "node.cpus",
                "node.max_cpus",
                def.cpu_millis > max.cpu_millis,
                format!("{} cores", cores_text(def.cpu_millis)),
                cores_text(max.cpu_millis),
            ),
            (
                "node.memory",
                "node.max_memory",
                def.memory_bytes > max.memory_bytes,
                size_text(def.memory_bytes),
                size_text(max.memory_bytes),
            ),
            (
                "node.disk",
                "node.max_disk",
                def.disk_bytes > max.disk_bytes,
                size_text(def.disk_bytes),
                size_text(max.disk_bytes),
            ),
        ];
        for (key, max_key, above, value, limit) in limits {
            if above {
                return Err(self.invalid(
                    key,
                    format!(
                        "{value} is above the maximum of {limit} set by {}",
                        self.named(max_key)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `delegator.jwt_secret`, `jwt_public_key` and `jwt_algorithm`, checked together.
    pub(super) fn jwt_source(&self) -> Result<JwtSource> {
        let d = &self.delegator;
        let public_key = self.path("delegator.jwt_public_key", &d.jwt_public_key)?;
        if !d.jwt_secret.is_empty() && public_key.is_some() {
            return Err(self.invalid(
                "delegator.jwt_public_key",
                format!(
                    "is set together with {}: use a shared secret (HS256) or a public key (RS256, EdDSA), not both",
                    self.named("delegator.jwt_secret")
                ),
            ));
        }
        let secret = if d.jwt_secret.is_empty() {
            None
        } else {
            // The delegator's rule, with this key's name and a hint.
            let jwt = JwtConfig::hs256(d.jwt_secret.expose().as_bytes()).map_err(|e| match e {
                JwtConfigError::SecretTooShort(n) => self.invalid(
                    "delegator.jwt_secret",
                    format!(
                        "must be at least {} bytes (this one has {n}): e.g. `openssl rand -base64 32`, or leave it empty to have one generated",
                        MIN_HS256_SECRET
                    ),
                ),
                source => ConfigError::Jwt {
                    key: "delegator.jwt_secret",
                    source,
                },
            })?;
            Some(jwt)
        };
        let algorithm = d.jwt_algorithm.trim();
        let configured = if algorithm.is_empty() {
            None
        } else {
            Some(JwtAlgorithm::parse(algorithm).ok_or_else(|| {
                self.invalid(
                    "delegator.jwt_algorithm",
                    format!(
                        "`{}` is not supported: use HS256, RS256 or EdDSA, or leave it empty",
                        clip(algorithm)
                    ),
                )
            })?)
        };
        match (configured, public_key, secret) {
            (Some(JwtAlgorithm::Hs256), Some(_), _) => Err(self.invalid(
                "delegator.jwt_algorithm",
                "is HS256, which needs delegator.jwt_secret, but delegator.jwt_public_key is set: use RS256 or EdDSA",
            )),
            (Some(JwtAlgorithm::PublicKey(a)), None, _) => Err(self.invalid(
                "delegator.jwt_algorithm",
                format!(
                    "is {}, which needs delegator.jwt_public_key (a PEM public key)",
                    a.as_str()
                ),
            )),
            (configured, Some(path), _) => Ok(JwtSource::PublicKey {
                path,
                configured: match configured {
                    Some(JwtAlgorithm::PublicKey(a)) => Some(a),
                    _ => None,
                },
            }),
            (_, None, Some(jwt)) => Ok(JwtSource::Secret(jwt)),
            (_, None, None) => Ok(JwtSource::None),
        }
    }
}
