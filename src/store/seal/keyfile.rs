//! Where the seal keys come from: the configuration ([`KeySource::Configured`]: nexus cannot
//! rewrite them) or the seal key file ([`KeyFile`], `<data_dir>/seal.key` by default), which
//! the daemon generates on first start and rewrites atomically when it rotates.
//!
//! The file is text: comment lines (`#`) and one key per line, URL-safe base64; the first key
//! seals, any others only open (a rotation in progress). It is created 0600 in a 0700
//! directory, with the helpers of `secrets.toml`, and refused when others may read or write it.
//! Errors never quote a line of it.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{Keyring, SealError, SealKey};
use crate::config::{create_private_dir, loose_mode, write_private};

/// Where the store's keys come from.
#[derive(Clone, Debug)]
pub enum KeySource {
    /// `store.seal_key` and `store.seal_previous_keys`. `origin` names the key and where its
    /// value came from (e.g. `store.seal_key (from NEXUS_STORE_SEAL_KEY)`), for messages.
    Configured { keyring: Keyring, origin: String },
    /// The seal key file, generated when missing.
    File(KeyFile),
}

impl KeySource {
    /// The keyring: the configured keys, or the file's (creating it with a fresh key when it
    /// does not exist).
    pub fn load(&self) -> Result<Keyring, SealError> {
        match self {
            Self::Configured { keyring, .. } => Ok(keyring.clone()),
            Self::File(f) => f.read_or_create(),
        }
    }

    /// The key file nexus may rewrite, or why it cannot rotate by itself and how to rotate.
    pub fn rotatable(&self) -> Result<&KeyFile, SealError> {
        match self {
            Self::File(f) => Ok(f),
            Self::Configured { origin, .. } => Err(SealError::NotRotatable(format!(
                "the seal key comes from {origin}, which nexus cannot rewrite. To rotate: generate \
                 a new key (`openssl rand -base64 32`), set it as store.seal_key \
                 (NEXUS_STORE_SEAL_KEY), put the current key in store.seal_previous_keys \
                 (NEXUS_STORE_SEAL_PREVIOUS_KEYS) and restart the daemon: it re-seals every row \
                 under the new key at start. Then remove the previous key and restart again"
            ))),
        }
    }
}

/// The seal key file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFile {
    path: PathBuf,
}

const HEADER: &str = "\
# nexus seal keys: they encrypt the swarm keys and node private keys in the store.
# Keep this file private (mode 0600) and back it up apart from the database: without it the
# secrets in the store are lost. One key per line; the first seals, any others only open (a
# rotation in progress). `nexus secrets rotate` rewrites this file.
";

impl KeyFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: io::Error) -> SealError {
        SealError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn bad(&self, detail: impl Into<String>) -> SealError {
        SealError::KeyFile {
            path: self.path.clone(),
            detail: detail.into(),
        }
    }

    /// The file's keyring; `None` if it does not exist. Refused when others than its owner
    /// may read or write it.
    pub fn read(&self) -> Result<Option<Keyring>, SealError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => zeroize::Zeroizing::new(t),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(e)),
        };
        if let Some(mode) = loose_mode(&self.path).map_err(|e| self.io(e))? {
            return Err(SealError::Permissions {
                path: self.path.clone(),
                mode,
            });
        }
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // Never quote the line: it is a key.
            keys.push(SealKey::parse(line).map_err(|e| self.bad(format!("line {}: {e}", i + 1)))?);
        }
        let mut keys = keys.into_iter();
        let Some(current) = keys.next() else {
            return Err(self.bad(
                "holds no key. If the store has sealed rows, restore this file from a backup; \
                 if it is new, delete the file to have a key generated",
            ));
        };
        Keyring::new(current, keys.collect())
            .map(Some)
            .map_err(|e| self.bad(e.to_string()))
    }

    /// The file's keyring, generating the file (one fresh key; 0600, its directory 0700) when
    /// it does not exist.
    pub fn read_or_create(&self) -> Result<Keyring, SealError> {
        // Two processes may race to create it: the loser reads the winner's.
        for _ in 0..3 {
            if let Some(ring) = self.read()? {
                return Ok(ring);
            }
            let ring = Keyring::generate()?;
            if let Some(dir) = self.path.parent() {
                create_private_dir(dir).map_err(|e| self.bad(e.to_string()))?;
            }
            match write_private(&self.path, &render(&ring), false) {
                Ok(()) => {
                    sync_dir(&self.path);
                    tracing::info!(path = %self.path.display(), key = ring.current().id(), "seal key generated");
                    return Ok(ring);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(self.io(e)),
            }
        }
        Err(self.io(io::Error::other("another process keeps rewriting it")))
    }

    /// Replaces the file with `ring`'s keys, atomically (a temporary file renamed over it, the
    /// directory synced), mode 0600; a missing directory is created 0700.
    pub fn write(&self, ring: &Keyring) -> Result<(), SealError> {
        if let Some(dir) = self.path.parent() {
            create_private_dir(dir).map_err(|e| self.bad(e.to_string()))?;
        }
        write_private(&self.path, &render(ring), true).map_err(|e| self.io(e))?;
        sync_dir(&self.path);
        // The rename keeps the temporary file's mode (0600); make sure anyway.
        let _ = fs::set_permissions(&self.path, fs::Permissions::from_mode(0o600));
        Ok(())
    }
}

fn render(ring: &Keyring) -> zeroize::Zeroizing<String> {
    let mut out = zeroize::Zeroizing::new(String::from(HEADER));
    for k in ring.keys() {
        out.push_str(&k.to_base64());
        out.push('\n');
    }
    out
}

/// Makes a rename in `path`'s directory durable (best effort: not every filesystem can).
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let mut b = [0u8; 4];
        getrandom::fill(&mut b).unwrap();
        std::env::temp_dir().join(format!("nexus-keyfile-{tag}-{}", hex::encode(b)))
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn generated_private_and_read_back() {
        let dir = temp_dir("gen");
        let file = KeyFile::new(dir.join("data").join("seal.key"));
        let ring = file.read_or_create().unwrap();
        assert_eq!(mode(file.path()), 0o600);
        assert_eq!(mode(file.path().parent().unwrap()), 0o700);
        assert_eq!(file.read_or_create().unwrap(), ring);

        // Rotation state is kept: current first, previous after.
        let rotating = ring.rotated_to(SealKey::generate().unwrap()).unwrap();
        file.write(&rotating).unwrap();
        assert_eq!(file.read().unwrap(), Some(rotating.clone()));
        assert_eq!(mode(file.path()), 0o600);
        file.write(&rotating.current_only()).unwrap();
        assert_eq!(file.read().unwrap().unwrap().previous().len(), 0);

        // Loose modes are refused with the chmod to run.
        fs::set_permissions(file.path(), fs::Permissions::from_mode(0o644)).unwrap();
        let err = file.read().unwrap_err().to_string();
        assert!(
            err.contains(&format!("chmod 600 {}", file.path().display())),
            "{err}"
        );

        // A damaged line is named, never quoted.
        fs::set_permissions(file.path(), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(file.path(), "# c\nSECRETSECRETnotakey\n").unwrap();
        let err = file.read().unwrap_err().to_string();
        assert!(
            err.contains("line 2") && !err.contains("SECRETSECRET"),
            "{err}"
        );
        fs::write(file.path(), "# only comments\n").unwrap();
        assert!(file.read().unwrap_err().to_string().contains("no key"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn configured_keys_cannot_rotate_and_say_how() {
        let src = KeySource::Configured {
            keyring: Keyring::generate().unwrap(),
            origin: "store.seal_key (from NEXUS_STORE_SEAL_KEY)".into(),
        };
        let err = src.rotatable().unwrap_err().to_string();
        assert!(err.contains("NEXUS_STORE_SEAL_KEY"), "{err}");
        assert!(err.contains("store.seal_previous_keys"), "{err}");
        assert!(err.contains("restart"), "{err}");
    }
}
