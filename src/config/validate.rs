//! Validation: turns the configured text into [`Settings`], checking every value once in file
//! order (the per-key checks are in `checks`). The only file it reads is
//! `delegator.jwt_public_key` (to infer or check the algorithm), and only in
//! [`Config::validate`]; it writes nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::checks::JwtSource;
use super::settings::{
    ClientSettings, DelegatorSettings, GrpcSettings, LogFormat, LogSettings, MetricsSettings,
    Settings,
};
use super::values::{clip, parse_size};
use super::{Config, Result};
use crate::delegator::{DelegatorConfig, IpNet};
use crate::names::{is_dns_name, InstanceName};
use crate::node::docker::MAX_NODE_DIR;
use crate::node::spec::{validate_image, MAX_NODES};
use crate::node::DockerRuntimeConfig;
use crate::orchestrator::{default_start_parallelism, OrchestratorConfig, PinsetConfig};

/// The checked values, before the public key file is read.
struct Parsed {
    settings: Settings,
    jwt: JwtSource,
    /// The delegator's configuration but its key.
    delegator: DelegatorParts,
}

/// Most serving threads `delegator.threads` may ask for.
const MAX_DELEGATOR_THREADS: usize = 256;

struct DelegatorParts {
    domain: String,
    trusted_proxies: Vec<IpNet>,
    audience: Option<String>,
    issuer: Option<String>,
    max_ttl: Duration,
    limits: crate::delegator::LimitConfig,
    max_connections: usize,
    max_connections_per_client: usize,
    header_timeout: Duration,
    gateway_timeout: Duration,
    max_body: Option<u64>,
    connect_timeout: Duration,
    idle_timeout: Duration,
}

impl Config {
    /// Checks every value and returns the typed settings. Reads `delegator.jwt_public_key` when
    /// it is set; touches no other file. Call it after [`Config::resolve_secrets`] so that the
    /// secrets from the secrets file are checked and included.
    pub fn validate(&self) -> Result<Settings> {
        let Parsed {
            mut settings,
            jwt,
            delegator: d,
        } = self.parse()?;
        let jwt = match jwt {
            JwtSource::Secret(jwt) => Some(jwt),
            JwtSource::PublicKey { path, configured } => Some(self.public_key(path, configured)?),
            JwtSource::None => None,
        };
        settings.delegator.config = jwt.map(|mut jwt| {
            jwt.audience = d.audience;
            jwt.issuer = d.issuer;
            jwt.max_ttl = d.max_ttl;
            let mut c = DelegatorConfig::new(d.domain, jwt);
            c.trusted_proxies = d.trusted_proxies;
            c.max_body_bytes = d.max_body;
            c.connect_timeout = d.connect_timeout;
            c.limits = d.limits;
            c.max_connections = d.max_connections;
            c.max_connections_per_client = d.max_connections_per_client;
            c.header_read_timeout = d.header_timeout;
            c.gateway_timeout = Some(d.gateway_timeout);
            c.idle_timeout = d.idle_timeout;
            c
        });
        Ok(settings)
    }

    /// What the CLI needs to reach the daemon, after checking every value as
    /// [`Config::validate`] does, but without reading the delegator's public key.
    pub fn client_settings(&self) -> Result<ClientSettings> {
        Ok(self.parse()?.settings.client)
    }

    /// Checks every value (touching no file).
    pub(super) fn check(&self) -> Result<()> {
        self.parse().map(drop)
    }

    /// Checks every value in file order and returns them typed, the public key unread.
    fn parse(&self) -> Result<Parsed> {
        // [daemon] [store] [docker]
        let data_dir = self.data_dir()?;
        let node_dir = data_dir.join("nodes");
        if node_dir.as_os_str().len() > MAX_NODE_DIR {
            return Err(self.invalid(
                "daemon.data_dir",
                format!(
                    "`{}` is too long: the nodes' sockets live in <data_dir>/nodes, which may be at most {MAX_NODE_DIR} bytes; choose a shorter data directory",
                    clip(&data_dir.display().to_string())
                ),
            ));
        }
        let store_url = self.store_url(&data_dir)?;
        let seal = self.seal_source(&data_dir)?;
        let endpoint = self.docker_endpoint()?;
        let lease_ttl = self.duration("store.lease_ttl", &self.store.lease_ttl)?;
        if lease_ttl < Duration::from_secs(1) {
            return Err(self.invalid("store.lease_ttl", "must be at least 1s".to_string()));
        }
        let configured_instance = match self.docker.instance.trim() {
            "" => None,
            name => Some(InstanceName::new(name).map_err(|_| {
                self.invalid(
                    "docker.instance",
                    format!(
                        "`{}` is not a valid instance name: use 1–63 lower-case letters, digits and hyphens, e.g. prod-1, or leave it empty for the store's own",
                        clip(&self.docker.instance)
                    ),
                )
            })?),
        };
        let instance = configured_instance
            .clone()
            .unwrap_or_else(InstanceName::generate);

        // [node]
        validate_image(&self.node.image)
            .map_err(|e| self.invalid("node.image", format!("{e}: use e.g. ipfs/kubo:v0.43.1")))?;
        let public_address = self.public_address()?;
        let ready_timeout = self.duration("node.ready_timeout", &self.node.ready_timeout)?;
        let op_timeout = self.duration("node.op_timeout", &self.node.op_timeout)?;
        let pins = PinsetConfig {
            pin_timeout: self.duration("node.pin_timeout", &self.node.pin_timeout)?,
            fail_after: self.duration("node.pin_fail_after", &self.node.pin_fail_after)?,
            interval: self.duration("node.pin_interval", &self.node.pin_interval)?,
            // `0s` is allowed here: a scale-down that does not wait.
            drain_timeout: match humantime::parse_duration(self.node.pin_drain_timeout.trim()) {
                Ok(d) if d.is_zero() => Duration::ZERO,
                _ => self.duration("node.pin_drain_timeout", &self.node.pin_drain_timeout)?,
            },
            per_node: match self.node.pin_concurrency {
                n @ 1..=64 => usize::from(n),
                n => {
                    return Err(self.invalid(
                        "node.pin_concurrency",
                        format!("must be between 1 and 64, not {n}"),
                    ))
                }
            },
            ..PinsetConfig::default()
        };
        let default_resources = self.resources_of(false)?;
        let max_resources = self.resources_of(true)?;
        self.check_defaults_within_max(&default_resources, &max_resources)?;
        if !(1..=MAX_NODES).contains(&self.node.max_replicas) {
            return Err(self.invalid(
                "node.max_replicas",
                format!(
                    "must be between 1 and {MAX_NODES}, not {}",
                    self.node.max_replicas
                ),
            ));
        }

        let subnets = self.subnets_checked(self.node.max_replicas)?;
        let admission = self.admission_checked()?;

        // [ports]
        let ports = self.ports_checked()?;
        let swarm_host_ip = self.ports.swarm_host_ip.trim();
        swarm_host_ip.parse::<IpAddr>().map_err(|_| {
            self.invalid(
                "ports.swarm_host_ip",
                format!(
                    "`{}` is not an IP address: use e.g. 0.0.0.0 or 203.0.113.7",
                    clip(&self.ports.swarm_host_ip)
                ),
            )
        })?;

        // [grpc]
        let grpc_listen = self.socket("grpc.listen", &self.grpc.listen)?;
        for (i, k) in self.grpc.api_keys.iter().enumerate() {
            self.check_api_key(&format!("grpc.api_keys[{i}]"), k)?;
        }
        let grpc_tls = self.tls_pair("grpc", &self.grpc.tls_cert, &self.grpc.tls_key)?;

        // [client]
        let client_address = self.client_address()?;
        if !self.client.api_key.is_empty() {
            self.check_api_key("client.api_key", &self.client.api_key)?;
        }
        let client_tls_ca = self.path("client.tls_ca", &self.client.tls_ca)?;

        // [delegator]
        let d = &self.delegator;
        let delegator_listen = self.socket("delegator.listen", &d.listen)?;
        let delegator_threads = match d.threads {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get().min(MAX_DELEGATOR_THREADS)),
            n if usize::from(n) > MAX_DELEGATOR_THREADS => {
                return Err(self.invalid(
                    "delegator.threads",
                    format!(
                    "{n} is too many: give at most {MAX_DELEGATOR_THREADS}, or 0 for one per core"
                ),
                ))
            }
            n => usize::from(n),
        };
        if !is_dns_name(d.domain.trim()) {
            return Err(self.invalid(
                "delegator.domain",
                format!(
                    "`{}` is not a DNS name: use e.g. localhost or nexus.example.com",
                    clip(&d.domain)
                ),
            ));
        }
        let trusted_proxies = d
            .trusted_proxies
            .iter()
            .enumerate()
            .map(|(i, p)| {
                IpNet::parse(p)
                    .map_err(|e| self.invalid(&format!("delegator.trusted_proxies[{i}]"), e.0))
            })
            .collect::<Result<Vec<_>>>()?;
        let jwt = self.jwt_source()?;
        let max_body = if d.max_body.trim().is_empty() {
            None
        } else {
            Some(parse_size(&d.max_body).map_err(|e| self.invalid("delegator.max_body", e.0))?)
        };
        let max_ttl = self.duration("delegator.max_ttl", &d.max_ttl)?;
        if max_ttl < Duration::from_secs(1) || max_ttl > crate::delegator::auth::MAX_MAX_TTL {
            return Err(self.invalid(
                "delegator.max_ttl",
                "must be between 1s and 3650d".to_string(),
            ));
        }
        let rate = |key: &str, v: &str| -> Result<Option<crate::delegator::Rate>> {
            let n: f64 = v.trim().parse().map_err(|_| {
                self.invalid(
                    key,
                    format!(
                        "`{}` is not a number of requests per second (0: no limit)",
                        clip(v)
                    ),
                )
            })?;
            if !(0.0..=1_000_000.0).contains(&n) {
                return Err(self.invalid(key, "must be between 0 and 1000000".to_string()));
            }
            Ok((n > 0.0).then(|| crate::delegator::Rate {
                per_second: n,
                burst: (2.0 * n).ceil().max(1.0) as u32,
            }))
        };
        let positive = |n: u16| (n > 0).then_some(u32::from(n));
        let limits = crate::delegator::LimitConfig {
            rate_per_client: rate("delegator.rate_per_client", &d.rate_per_client)?,
            rate_per_user: rate("delegator.rate_per_user", &d.rate_per_user)?,
            concurrent_per_client: positive(d.concurrent_per_client),
            concurrent_per_user: positive(d.concurrent_per_user),
        };
        for (key, n) in [
            ("delegator.max_connections", d.max_connections),
            (
                "delegator.max_connections_per_client",
                d.max_connections_per_client,
            ),
        ] {
            if n == 0 {
                return Err(self.invalid(key, "must be at least 1".to_string()));
            }
        }
        let header_timeout = self.duration("delegator.header_timeout", &d.header_timeout)?;
        let gateway_timeout = self.duration("delegator.gateway_timeout", &d.gateway_timeout)?;
        let connect_timeout = self.duration("delegator.connect_timeout", &d.connect_timeout)?;
        let idle_timeout = self.duration("delegator.idle_timeout", &d.idle_timeout)?;
        let delegator_tls = self.tls_pair("delegator", &d.tls_cert, &d.tls_key)?;

        // [metrics] [log]
        let metrics_listen = self.optional_socket("metrics.listen", &self.metrics.listen)?;
        let interval = self.duration("metrics.interval", &self.metrics.interval)?;
        if interval < Duration::from_secs(1) {
            return Err(self.invalid("metrics.interval", "must be at least 1s".to_string()));
        }
        let scrape_token = match self.metrics.scrape_token.is_empty() {
            true => None,
            false => {
                self.check_api_key("metrics.scrape_token", &self.metrics.scrape_token)?;
                if self.grpc.api_keys.contains(&self.metrics.scrape_token) {
                    return Err(self.invalid(
                        "metrics.scrape_token",
                        format!(
                            "is also one of {}: the scrape token is read-only and must differ from every API key",
                            self.named("grpc.api_keys")
                        ),
                    ));
                }
                Some(self.metrics.scrape_token.clone())
            }
        };
        let format = match self.log.format.trim() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => {
                return Err(self.invalid(
                    "log.format",
                    format!(
                        "`{}` is not a log format: use text or json",
                        clip(&self.log.format)
                    ),
                ))
            }
        };
        let filter = self.log.level.trim();
        tracing_subscriber::EnvFilter::builder()
            .parse(filter)
            .map_err(|e| {
                self.invalid(
                    "log.level",
                    format!("{e}: use a level (error, warn, info, debug, trace) or directives like info,nexus=debug"),
                )
            })?;

        // Listeners must not collide.
        let mut listeners = vec![("grpc.listen", grpc_listen)];
        if d.enabled {
            listeners.push(("delegator.listen", delegator_listen));
        }
        if let Some(m) = metrics_listen {
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

        let client = ClientSettings {
            api_key: match self.client.api_key.is_empty() {
                false => Some(self.client.api_key.clone()),
                true => self.grpc.api_keys.first().cloned(),
            },
            tls_ca: match (&client_tls_ca, &client_address) {
                (Some(ca), _) => Some(ca.clone()),
                (None, None) => grpc_tls.as_ref().map(|t| t.cert.clone()),
                (None, Some(_)) => None,
            },
            address: client_address
                .unwrap_or_else(|| default_client_address(grpc_listen, grpc_tls.is_some())),
        };
        let orchestrator = OrchestratorConfig {
            image: self.node.image.clone(),
            max_replicas: self.node.max_replicas,
            default_resources,
            max_resources,
            ports,
            subnets,
            op_timeout,
            start_parallelism: match self.node.start_parallelism {
                0 => default_start_parallelism(),
                n => usize::from(n),
            },
            revocation_horizon: max_ttl + crate::delegator::auth::DEFAULT_LEEWAY,
            admission,
            pins,
            host_lost_grace: {
                let g = self.duration("node.host_lost_grace", &self.node.host_lost_grace)?;
                self.expect(
                    g >= Duration::from_secs(1),
                    "node.host_lost_grace",
                    &self.node.host_lost_grace,
                    "is shorter than 1s: a host that is slow to answer once would lose its nodes",
                )?;
                g
            },
            cpu_meter_interval: {
                let i = self.duration("node.cpu_meter_interval", &self.node.cpu_meter_interval)?;
                self.expect(
                    i >= Duration::from_secs(1),
                    "node.cpu_meter_interval",
                    &self.node.cpu_meter_interval,
                    "is shorter than 1s: use 30s unless you are testing",
                )?;
                i
            },
            ..OrchestratorConfig::default()
        };
        let docker = DockerRuntimeConfig {
            ready_timeout,
            swarm_host_ip: swarm_host_ip.to_owned(),
            instance,
            endpoint: Some(endpoint),
            node_dir,
            ..DockerRuntimeConfig::default()
        };
        let swarm = self.swarm_runtime(&docker)?;
        Ok(Parsed {
            settings: Settings {
                data_dir,
                store_url,
                seal,
                lease_ttl,
                instance: configured_instance,
                docker,
                swarm,
                orchestrator,
                public_address,
                grpc: GrpcSettings {
                    listen: grpc_listen,
                    api_keys: self.grpc.api_keys.clone(),
                    tls: grpc_tls,
                },
                client,
                delegator: DelegatorSettings {
                    enabled: d.enabled,
                    listen: delegator_listen,
                    threads: delegator_threads,
                    tls: delegator_tls,
                    config: None,
                    jwt_secret_origin: self.origin_of("delegator.jwt_secret"),
                },
                metrics: MetricsSettings {
                    listen: metrics_listen,
                    interval,
                    scrape_token,
                },
                log: LogSettings {
                    format,
                    filter: filter.to_owned(),
                },
            },
            jwt,
            delegator: DelegatorParts {
                domain: d.domain.trim().to_ascii_lowercase(),
                trusted_proxies,
                audience: non_empty(&d.jwt_audience),
                issuer: non_empty(&d.jwt_issuer),
                max_ttl,
                limits,
                max_connections: usize::from(d.max_connections),
                max_connections_per_client: usize::from(d.max_connections_per_client),
                header_timeout,
                gateway_timeout,
                max_body,
                connect_timeout,
                idle_timeout,
            },
        })
    }
}

fn non_empty(s: &str) -> Option<String> {
    Some(s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// `grpc.listen` as the CLI dials it: an unspecified address becomes loopback; `https://` with
/// TLS.
fn default_client_address(mut listen: SocketAddr, tls: bool) -> String {
    match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => listen.set_ip(Ipv4Addr::LOCALHOST.into()),
        IpAddr::V6(v6) if v6.is_unspecified() => listen.set_ip(Ipv6Addr::LOCALHOST.into()),
        _ => {}
    }
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{listen}")
}
