//! Where the CLI gets its settings: the configuration (file, `NEXUS_…` variables, flags),
//! shared with the daemon so one machine needs no extra setup, and the commands that only
//! touch configuration (`init`, `daemon`, `token issue`).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use nexus::client::ClientConfig;
use nexus::config::{self, Config, Create, Env, JwtKey, LogFormat};
use nexus::daemon::{self, DaemonOptions};

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
        let hint = e.key().and_then(flag_for).map(|f| format!(" (or the {f} flag)"));
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
    };
    daemon::run(opts, daemon::shutdown_signal()).await?;
    Ok(())
}

/// `nexus token issue`: an HS256 token signed with the delegator's secret.
pub fn issue_token(global: &Global, user: &str, ttl: &str) -> Result<()> {
    let env = Env::from_process();
    let mut cfg = load(global, &env)?;
    cfg.validate()?;
    cfg.resolve_secrets(Create::No)?;
    let ttl = config::parse_duration(ttl).map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
    let settings = cfg.delegator_settings()?;
    let JwtKey::Secret(secret) = &settings.jwt.key else {
        bail!(
            "the delegator verifies tokens with a public key (delegator.jwt_public_key): mint \
             them with the matching private key in your identity provider"
        );
    };
    let token = nexus::delegator::mint_token(
        secret.expose().as_bytes(),
        user,
        ttl,
        settings.jwt.audience.as_deref(),
        settings.jwt.issuer.as_deref(),
    )?;
    if global.json {
        println!("{}", serde_json::json!({ "token": token, "user": user, "ttl_seconds": ttl.as_secs() }));
    } else {
        println!("{token}");
    }
    Ok(())
}
