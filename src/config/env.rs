//! Where the configuration comes from: the environment it is read in ([`Env`]: variables,
//! where system-wide files live) and which file is read ([`find_config_file`]) or written by
//! `nexus init` ([`init_config_path`]). It must not parse values; the key table does.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::{ConfigError, Result};

/// The environment the configuration is read from: variables, and where system-wide files
/// live. Tests build one with [`Env::from_pairs`] instead of touching the process environment.
#[derive(Clone, Default)]
pub struct Env {
    pub(super) vars: BTreeMap<String, String>,
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

    pub(super) fn abs_path(&self, name: &str) -> Option<PathBuf> {
        self.get(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    }

    pub(super) fn system_dir(&self) -> PathBuf {
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
