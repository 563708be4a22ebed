//! Where the CLI gets its settings: the configuration (file, `NEXUS_…` variables, flags),
//! shared with the daemon so one machine needs no extra setup, and the commands that only
//! touch configuration (`init`, `daemon`, `token issue`).

use anyhow::{bail, Result};
use nexus::client::ClientConfig;
use nexus::config::{self, Config, Create, Env, LogFormat, LogSettings, Secret, Settings};
use nexus::daemon;

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
            "wrote {} (mode 0600, with a new API key, JWT secret and metrics scrape token)\nnext: `nexus daemon`",
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
        cfg.client.api_key = Secret::new(k.clone());
    }
    if let Some(ca) = &global.tls_ca {
        cfg.client.tls_ca = ca.display().to_string();
    }
    cfg.resolve_secrets(Create::No)?;
    for w in cfg.warnings() {
        eprintln!("warning: {w}");
    }
    Ok(cfg.client_settings()?.client_config()?)
}

fn init_daemon_logging(log: &LogSettings) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NEXUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Json => {
            // The delegator's access lines: the same JSON, formatted by hand and written off
            // the request path (nexus::telemetry::access_log).
            nexus::telemetry::access_log::install_stderr();
            builder.json().flatten_event(true).try_init()
        }
        LogFormat::Text => builder.try_init(),
    };
}

/// The daemon's settings: the configuration, the flags over it, the secrets (created when
/// missing, after every value is checked), validated. Errors about a key a flag sets name the
/// flag too.
fn daemon_settings(mut cfg: Config, flags: &DaemonFlags) -> Result<(Config, Settings)> {
    let settings = flags
        .apply(&mut cfg)
        .and_then(|()| cfg.resolve_secrets(Create::Yes))
        .and_then(|()| cfg.validate());
    match settings {
        Ok(s) => Ok((cfg, s)),
        Err(e) => {
            let hint = e.key().and_then(DaemonFlags::hint);
            bail!("{e}{}", hint.unwrap_or_default())
        }
    }
}

/// `nexus daemon`: load → flags → validate → run.
pub async fn daemon(global: &Global, flags: &DaemonFlags) -> Result<()> {
    let env = Env::from_process();
    let (cfg, settings) = daemon_settings(load(global, &env)?, flags)?;
    init_daemon_logging(&settings.log);
    for w in cfg.warnings() {
        tracing::warn!("{w}");
    }
    match cfg.file() {
        Some(f) => tracing::info!(file = %f.display(), "configuration read"),
        None => tracing::info!(
            data_dir = %settings.data_dir.display(),
            "no configuration file: running on defaults (`nexus init` writes one)"
        ),
    }
    // The daemon creates the data directory 0700 (and refuses one others may use).
    let run = daemon::run(settings, daemon::shutdown_signal()).await;
    nexus::telemetry::access_log::flush();
    run?;
    Ok(())
}

/// `nexus token issue`: an HS256 token signed with the delegator's secret.
pub fn issue_token(
    global: &Global,
    user: &str,
    ttl: &str,
    networks: Vec<String>,
    role: Option<&str>,
) -> Result<()> {
    let env = Env::from_process();
    let mut cfg = load(global, &env)?;
    cfg.resolve_secrets(Create::No)?;
    let ttl = config::parse_duration(ttl).map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
    let role = match role {
        Some(r) => Some(nexus::access::Role::parse(r).ok_or_else(|| {
            anyhow::anyhow!("--role: `{r}` is not a role: use reader, writer or admin")
        })?),
        None => None,
    };
    let settings = cfg.validate()?;
    let jwt = &settings.delegator.config()?.jwt;
    let minted = nexus::delegator::mint(
        jwt,
        &nexus::delegator::TokenRequest {
            user: user.to_owned(),
            ttl,
            networks: networks.clone(),
            role,
        },
    )?;
    if global.json {
        println!(
            "{}",
            serde_json::json!({
                "token": minted.token,
                "jti": minted.jti,
                "user": user,
                "ttl_seconds": ttl.as_secs(),
                "expires_at": minted.expires_at,
                "networks": networks,
                "role": role.map(|r| r.as_str()),
            })
        );
    } else {
        println!("{}", minted.token);
        eprintln!(
            "token id (for `nexus token revoke`): {}; expires at {} (unix)",
            minted.jti, minted.expires_at
        );
    }
    Ok(())
}
