//! Where the CLI gets its settings: the configuration (file, `NEXUS_…` variables, flags),
//! shared with the daemon so one machine needs no extra setup, and the commands that only
//! touch configuration (`init`, `daemon`, `token issue`).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use nexus::client::ClientConfig;
use nexus::config::{self, Config, Create, Env, JwtKey, LogFormat};
use nexus::daemon::{self, DaemonOptions, DelegatorOptions};
use nexus::delegator::{DelegatorConfig, JwtConfig, PublicKeyAlg};

use super::{DaemonFlags, Global};

pub use nexus::config::{parse_cpus, parse_size};

fn load(global: &Global, env: &Env) -> Result<Config> {
    Ok(Config::load(global.config.as_deref(), env)?)
}

/// `nexus init`: a commented configuration with fresh secrets, mode 0600.
pub fn init(global: &Global, force: bool) -> Result<()> {
    let env = Env::from_process();
    let path = config::init_config_path(global.config.as_deref(), &env);
    config::write_init_file(&path, force)?;
    if global.json {
        println!("{}", serde_json::json!({ "path": path }));
    } else {
        eprintln!(
            "wrote {} (mode 0600, with a new API key and JWT secret)\nnext: `nexus daemon`",
            path.display()
        );
    }
    Ok(())
}

/// How the CLI reaches the daemon: flags, then `NEXUS_CLIENT_…`, then the configuration file,
/// then the daemon's own settings and secrets file.
pub fn client_config(global: &Global) -> Result<ClientConfig> {
    let env = Env::from_process();
    let mut cfg = load(global, &env)?;
    if let Some(a) = &global.address {
        cfg.client.address = a.clone();
    }
    if let Some(k) = &global.api_key {
        cfg.client.api_key = config::Secret::new(k.clone());
    }
    if let Some(ca) = &global.tls_ca {
        cfg.client.tls_ca = ca.display().to_string();
    }
    cfg.validate()?;
    cfg.resolve_secrets(Create::No)?;
    for w in cfg.warnings() {
        eprintln!("warning: {w}");
    }
    let tls_ca = match cfg.client_tls_ca() {
        Some(path) => Some(
            std::fs::read(&path)
                .with_context(|| format!("client.tls_ca: cannot read {}", path.display()))?,
        ),
        None => None,
    };
    Ok(ClientConfig {
        address: cfg.client_address(),
        api_key: cfg.client_api_key().map(|k| k.expose().to_string()),
        tls_ca,
        connect_timeout: Duration::from_secs(5),
    })
}

fn apply_flags(cfg: &mut Config, flags: &DaemonFlags) {
    let set = |target: &mut String, v: &Option<String>| {
        if let Some(v) = v {
            *target = v.clone();
        }
    };
    set(&mut cfg.grpc.listen, &flags.listen);
    if let Some(d) = &flags.data_dir {
        cfg.daemon.data_dir = d.display().to_string();
    }
    set(&mut cfg.store.url, &flags.store);
    set(&mut cfg.node.image, &flags.node_image);
    set(&mut cfg.node.public_address, &flags.public_address);
    set(&mut cfg.delegator.listen, &flags.delegator_listen);
    set(&mut cfg.delegator.domain, &flags.domain);
    set(&mut cfg.metrics.listen, &flags.metrics_listen);
    set(&mut cfg.log.format, &flags.log_format);
    set(&mut cfg.log.level, &flags.log_level);
}

/// Which flag sets a configuration key, for error messages.
fn flag_for(key: &str) -> Option<&'static str> {
    Some(match key {
        "grpc.listen" => "--listen",
        "daemon.data_dir" => "--data-dir",
        "store.url" => "--store",
        "node.image" => "--node-image",
        "node.public_address" => "--public-address",
        "delegator.listen" => "--delegator-listen",
        "delegator.domain" => "--domain",
        "metrics.listen" => "--metrics-listen",
        "log.format" => "--log-format",
        "log.level" => "--log-level",
        _ => return None,
    })
}

fn init_daemon_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NEXUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cfg.log_filter()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cfg.log_format() {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// `nexus daemon`.
pub async fn daemon(global: &Global, flags: &DaemonFlags) -> Result<()> {
    let env = Env::from_process();
    let mut cfg = load(global, &env)?;
    apply_flags(&mut cfg, flags);
    if let Err(e) = cfg.validate() {
        let hint = e
            .key()
            .and_then(flag_for)
            .map(|f| format!(" (or the {f} flag)"));
        bail!("{e}{}", hint.unwrap_or_default());
    }
    cfg.resolve_secrets(Create::Yes)?;
    init_daemon_logging(&cfg);
    for w in cfg.warnings() {
        tracing::warn!("{w}");
    }
    match cfg.file() {
        Some(f) => tracing::info!(file = %f.display(), "configuration read"),
        None => tracing::info!(
            data_dir = %cfg.data_dir().display(),
            "no configuration file: running on defaults (`nexus init` writes one)"
        ),
    }
    std::fs::create_dir_all(cfg.data_dir())
        .with_context(|| format!("cannot create {}", cfg.data_dir().display()))?;
    let opts = DaemonOptions {
        store_url: cfg.store_url(),
        docker: cfg.docker_runtime_config(),
        orchestrator: cfg.orchestrator_config(),
        grpc_listen: cfg.grpc_listen(),
        api_keys: cfg
            .grpc_api_keys()
            .iter()
            .map(|k| k.expose().to_string())
            .collect(),
        grpc_tls: cfg.grpc_tls().map(|t| (t.cert, t.key)),
        public_address: cfg.public_address(),
        pull_image: true,
        delegator: delegator_options(&cfg)?,
        metrics: cfg.metrics_listen(),
        metrics_interval: cfg.metrics_interval()?,
    };
    daemon::run(opts, daemon::shutdown_signal()).await?;
    Ok(())
}

/// The delegator's token settings from the configuration.
fn jwt_config(cfg: &Config) -> Result<JwtConfig> {
    let s = cfg.delegator_settings()?.jwt;
    let mut jwt = match &s.key {
        JwtKey::Secret(secret) => {
            JwtConfig::hs256(secret.expose().as_bytes()).context("delegator.jwt_secret")?
        }
        JwtKey::PublicKeyPem(pem) => {
            let alg = match s.algorithm {
                config::JwtAlgorithm::Rs256 => PublicKeyAlg::Rs256,
                config::JwtAlgorithm::EdDsa => PublicKeyAlg::EdDsa,
                config::JwtAlgorithm::Hs256 => {
                    bail!("delegator.jwt_algorithm HS256 needs delegator.jwt_secret, not a public key")
                }
            };
            let pem = String::from_utf8_lossy(pem);
            JwtConfig::from_public_key_pem(alg, &pem).context("delegator.jwt_public_key")?
        }
    };
    if let Some(a) = s.audience {
        jwt = jwt.with_audience(a);
    }
    if let Some(i) = s.issuer {
        jwt = jwt.with_issuer(i);
    }
    Ok(jwt)
}

fn delegator_options(cfg: &Config) -> Result<Option<DelegatorOptions>> {
    let s = cfg.delegator_settings()?;
    if !s.enabled {
        return Ok(None);
    }
    let mut d = DelegatorConfig::new(s.domain.clone(), jwt_config(cfg)?);
    d.trusted_proxies = s.trusted_proxies.clone();
    d.max_body_bytes = s.max_body;
    d.connect_timeout = s.connect_timeout;
    d.idle_timeout = s.idle_timeout;
    Ok(Some(DelegatorOptions {
        listen: s.listen,
        config: d,
        tls: s.tls.map(|t| (t.cert, t.key)),
    }))
}

/// `nexus token issue`: an HS256 token signed with the delegator's secret.
pub fn issue_token(global: &Global, user: &str, ttl: &str) -> Result<()> {
    let env = Env::from_process();
    let mut cfg = load(global, &env)?;
    cfg.validate()?;
    cfg.resolve_secrets(Create::No)?;
    let ttl = config::parse_duration(ttl).map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
    let jwt = jwt_config(&cfg)?;
    let token = nexus::delegator::mint_token(&jwt, user, ttl)?;
    if global.json {
        println!(
            "{}",
            serde_json::json!({ "token": token, "user": user, "ttl_seconds": ttl.as_secs() })
        );
    } else {
        println!("{token}");
    }
    Ok(())
}
