//! `nexus init`: a commented configuration file with fresh secrets.

use std::io;
use std::path::Path;

use super::keys::KEYS;
use super::secrets::{create_private_dir, generate_secret, write_private};
use super::{ConfigError, SECTIONS};
use crate::secret::Secret;

/// The text `nexus init` writes: every key with its help line, its variable and its default
/// (commented out), except `grpc.api_keys`, `delegator.jwt_secret` and
/// `metrics.scrape_token`, which hold the given secrets.
pub fn render_init_file(api_key: &Secret, jwt_secret: &Secret, scrape_token: &Secret) -> String {
    let mut out = String::from(
        "# nexus configuration, written by `nexus init`.\n\
         #\n\
         # Each key is shown with its default, commented out: uncomment a line to change it.\n\
         # Any key can also be set by an environment variable NEXUS_<SECTION>_<KEY>, which wins\n\
         # over this file; command-line flags win over both. Sizes: 512MiB, 2GiB, 1TiB (or MB, GB).\n\
         # Durations: 500ms, 60s, 5m. Paths are absolute or start with ~/.\n\
         # Reference: docs/configuration.md.\n\
         #\n\
         # This file holds secrets (the API key, the JWT secret and the metrics scrape token):\n\
         # keep it private (mode 0600).\n",
    );
    for section in SECTIONS {
        out.push_str(&format!("\n[{section}]\n"));
        for def in KEYS.iter().filter(|k| k.section == section) {
            out.push_str(&format!("# {} ({})\n", def.help, def.env_var()));
            match def.name {
                "grpc.api_keys" => out.push_str(&format!(
                    "api_keys = [{}]\n",
                    toml::Value::String(api_key.expose().to_owned())
                )),
                "delegator.jwt_secret" => out.push_str(&format!(
                    "jwt_secret = {}\n",
                    toml::Value::String(jwt_secret.expose().to_owned())
                )),
                "metrics.scrape_token" => out.push_str(&format!(
                    "scrape_token = {}\n",
                    toml::Value::String(scrape_token.expose().to_owned())
                )),
                _ => out.push_str(&format!("# {} = {}\n", def.key, def.default)),
            }
        }
    }
    out
}

/// Writes a fresh configuration file to `path` (mode 0600, missing parent directories 0700)
/// with a new API key, JWT secret and metrics scrape token. An existing file is kept unless `force`.
pub fn write_init_file(path: &Path, force: bool) -> Result<(), ConfigError> {
    if !force && path.exists() {
        return Err(ConfigError::Exists {
            path: path.to_owned(),
        });
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir)?;
    }
    let text = render_init_file(
        &generate_secret()?,
        &generate_secret()?,
        &generate_secret()?,
    );
    write_private(path, &text, force).map_err(|source| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            ConfigError::Exists {
                path: path.to_owned(),
            }
        } else {
            ConfigError::Write {
                path: path.to_owned(),
                source,
            }
        }
    })
}
