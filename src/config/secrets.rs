//! Generated secrets and private files.
//!
//! `<data_dir>/secrets.toml` (mode 0600, its directory 0700) holds the `api_key`,
//! `jwt_secret` and metrics `scrape_token` nexus generates when the configuration gives none, so `nexus daemon` runs with
//! no configuration file and the CLI on the same machine finds the key. nexus refuses to read
//! it when other users may (like ssh with its keys): it created the file 0600 itself, so a
//! looser mode means someone changed it.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine;

use super::keys::key_def;
use super::{Config, ConfigError, Create, Origin, Result, SECRETS_FILE};
use crate::secret::Secret;

/// 32 random bytes from the OS CSPRNG as URL-safe base64 (43 characters).
pub fn generate_secret() -> Result<Secret, ConfigError> {
    let mut buf = [0u8; 32];
    getrandom::fill(&mut buf).map_err(|e| ConfigError::Random(e.to_string()))?;
    Ok(Secret::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf),
    ))
}

/// Creates `dir` and missing parents with mode 0700 (existing ones keep theirs).
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), ConfigError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| ConfigError::Write {
            path: dir.to_owned(),
            source,
        })
}

/// Creates `dir` (and missing parents) 0700, or, if it exists, refuses it when others than its
/// owner may read, write or enter it, naming the `chmod` to run: the daemon's data directory
/// holds the store, `secrets.toml` and the seal key file.
pub fn ensure_private_dir(dir: &Path) -> Result<(), ConfigError> {
    create_private_dir(dir)?;
    match loose_mode(dir) {
        Ok(None) => Ok(()),
        Ok(Some(mode)) => Err(ConfigError::DirPermissions {
            path: dir.to_owned(),
            mode,
        }),
        Err(source) => Err(ConfigError::Read {
            path: dir.to_owned(),
            source,
        }),
    }
}

/// Writes `contents` to `path` with mode 0600. Without `overwrite`, fails with
/// `AlreadyExists` if the file exists (checked atomically); with it, replaces the file
/// atomically (temporary file and rename).
pub(crate) fn write_private(path: &Path, contents: &str, overwrite: bool) -> io::Result<()> {
    let write = |target: &Path| -> io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(target)?;
        let done = f.write_all(contents.as_bytes()).and_then(|()| f.sync_all());
        if done.is_err() {
            let _ = fs::remove_file(target);
        }
        done
    };
    if !overwrite {
        return write(path);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "nexus".into());
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    write(&tmp)?;
    fs::rename(&tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// The permission bits of `path` that let others than its owner read or write it.
pub(crate) fn loose_mode(path: &Path) -> io::Result<Option<u32>> {
    let mode = fs::metadata(path)?.permissions().mode() & 0o777;
    Ok((mode & 0o077 != 0).then_some(mode))
}

/// What `<data_dir>/secrets.toml` holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretsFile {
    pub api_key: Option<Secret>,
    pub jwt_secret: Option<Secret>,
    /// The node scrape-through's read-only token (`metrics.scrape_token`).
    pub scrape_token: Option<Secret>,
}

impl SecretsFile {
    fn render(&self) -> String {
        let mut out = String::from(
            "# Secrets nexus generated because its configuration gave none.\n\
             # Keep this file private (mode 0600). Configured values take precedence.\n",
        );
        for (key, v) in [
            ("api_key", &self.api_key),
            ("jwt_secret", &self.jwt_secret),
            ("scrape_token", &self.scrape_token),
        ] {
            if let Some(s) = v {
                out.push_str(&format!(
                    "{key} = {}\n",
                    toml::Value::String(s.expose().to_owned())
                ));
            }
        }
        out
    }
}

/// Reads the secrets file; `None` if it does not exist.
pub fn read_secrets(path: &Path) -> Result<Option<SecretsFile>, ConfigError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    let mode = loose_mode(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    if let Some(mode) = mode {
        return Err(ConfigError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    let bad = |detail: String| ConfigError::SecretsFile {
        path: path.to_owned(),
        detail,
    };
    // Never quote toml's message: it may show the line, which holds a secret.
    let table: toml::Table = text
        .parse()
        .map_err(|_| bad("is not valid TOML; delete it to have new secrets generated".into()))?;
    let mut file = SecretsFile::default();
    for (key, value) in table {
        let slot = match key.as_str() {
            "api_key" => &mut file.api_key,
            "jwt_secret" => &mut file.jwt_secret,
            "scrape_token" => &mut file.scrape_token,
            other => {
                return Err(bad(format!(
                    "unknown key `{}`: valid keys are api_key, jwt_secret, scrape_token",
                    super::values::clip(other)
                )))
            }
        };
        match value {
            toml::Value::String(s) if !s.is_empty() => *slot = Some(Secret::new(s)),
            _ => return Err(bad(format!("`{key}` must be a non-empty string"))),
        }
    }
    Ok(Some(file))
}

/// Reads the secrets file, generating it (or its missing entries) first if needed.
pub fn read_or_create_secrets(path: &Path) -> Result<SecretsFile, ConfigError> {
    let write_err = |source| ConfigError::Write {
        path: path.to_owned(),
        source,
    };
    // Two processes may race to create the file: the loser reads the winner's.
    for _ in 0..3 {
        let existing = read_secrets(path)?;
        let mut file = existing.clone().unwrap_or_default();
        if file.api_key.is_none() {
            file.api_key = Some(generate_secret()?);
        }
        if file.jwt_secret.is_none() {
            file.jwt_secret = Some(generate_secret()?);
        }
        if file.scrape_token.is_none() {
            file.scrape_token = Some(generate_secret()?);
        }
        if existing.as_ref() == Some(&file) {
            return Ok(file);
        }
        if let Some(dir) = path.parent() {
            create_private_dir(dir)?;
        }
        match write_private(path, &file.render(), existing.is_some()) {
            Ok(()) => return Ok(file),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(write_err(e)),
        }
    }
    Err(write_err(io::Error::other(
        "another process keeps rewriting it",
    )))
}

impl Config {
    /// Fills `grpc.api_keys`, `delegator.jwt_secret` and `metrics.scrape_token` from
    /// `<data_dir>/secrets.toml` when the configuration gives none (`jwt_secret` only when
    /// `jwt_public_key` is empty too).
    /// Configured values always win. With [`Create::Yes`] (the daemon) the file and the data
    /// directory are created as needed (0600 / 0700); with [`Create::No`] (the CLI) a missing
    /// or unreadable file changes nothing (unreadable adds a warning). A secrets file others
    /// can read is refused either way. Every value is checked first, so bad input is refused
    /// before any file is created.
    pub fn resolve_secrets(&mut self, create: Create) -> Result<()> {
        self.check()?;
        let need_api = self.grpc.api_keys.is_empty();
        let need_jwt =
            self.delegator.jwt_secret.is_empty() && self.delegator.jwt_public_key.trim().is_empty();
        let need_scrape = self.metrics.scrape_token.is_empty();
        if !need_api && !need_jwt && !need_scrape {
            return Ok(());
        }
        let path = self.data_dir()?.join(SECRETS_FILE);
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
                    self.record(def, origin.clone());
                }
            }
        }
        if need_scrape {
            if let Some(s) = file.scrape_token {
                self.metrics.scrape_token = s;
                if let Some(def) = key_def("metrics.scrape_token") {
                    self.record(def, origin);
                }
            }
        }
        Ok(())
    }
}
