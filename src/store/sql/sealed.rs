//! The SQL store's side of sealing: which columns hold sealed secrets and the place each value
//! is bound to (`networks.swarm_key/<network>`, `nodes.private_key/<network>/<index>`), the
//! pass that seals every secret not sealed under the current key (plain-text rows written
//! before sealing existed, at open; rows under a previous key, after a rotation or a change of
//! configured key), key rotation with no downtime, and SQLite's file hygiene (the database
//! files private, `secure_delete`, the WAL truncated so no plain text survives a sealing pass).
//!
//! The cryptography and the key file are [`crate::store::seal`]'s; this module must not print
//! a secret nor decide anything about networks.

use std::fs;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sqlx::Row as _;
use zeroize::Zeroizing;

use super::{query_err, SqlStore};
use crate::store::seal::{is_sealed, KeyFile, KeySource, Keyring, SealError, SealKey};
use crate::store::{Backend, Result, StoreError};

/// Rows updated per transaction by a sealing pass.
const BATCH: usize = 256;

pub(super) fn swarm_key_ad(network: &str) -> String {
    format!("networks.swarm_key/{network}")
}

pub(super) fn private_key_ad(network: &str, index: u16) -> String {
    format!("nodes.private_key/{network}/{index}")
}

fn sealed_err(what: impl Into<String>, cause: SealError) -> StoreError {
    StoreError::Sealed {
        what: what.into(),
        cause,
    }
}

/// `plaintext` sealed for the place `ad` under the current key.
pub(super) fn seal_text(keys: &Keyring, plaintext: &str, ad: &str) -> Result<String> {
    keys.seal(plaintext.as_bytes(), ad)
        .map_err(|e| sealed_err(format!("sealing {ad}"), e))
}

/// The plain text of the sealed value `stored` of network `name`'s `column`.
pub(super) fn open_text(
    keys: &Keyring,
    stored: &str,
    ad: &str,
    name: &str,
    column: &str,
) -> Result<Zeroizing<String>> {
    let bytes = keys
        .open(stored, ad)
        .map_err(|e| sealed_err(format!("network `{name}`: `{column}`"), e))?;
    // Both secrets are ASCII text; anything else is damage (never quoted).
    std::str::from_utf8(&bytes)
        .map(|s| Zeroizing::new(s.to_owned()))
        .map_err(|_| StoreError::Corrupt {
            name: name.to_owned(),
            detail: format!("`{column}` opens to something that is not text"),
        })
}

/// What a sealing pass or a rotation changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resealed {
    /// Networks whose swarm key was sealed again.
    pub networks: u64,
    /// Nodes whose private key was sealed again.
    pub nodes: u64,
    /// Of those, values that were plain text (written before sealing existed).
    pub plaintext: u64,
}

/// What [`SqlStore::rotate`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// The key every secret was sealed under before (the current one, if several).
    pub old_key_id: String,
    /// The key every secret is sealed under now.
    pub new_key_id: String,
    pub resealed: Resealed,
    /// Where the new key was written.
    pub key_file: PathBuf,
}

/// What `nexus secrets rotate` reaches: the store and where its keys come from.
#[derive(Clone, Debug)]
pub struct SealRotator {
    store: Arc<SqlStore>,
    source: KeySource,
}

impl SealRotator {
    pub fn new(store: Arc<SqlStore>, source: KeySource) -> Self {
        Self { store, source }
    }

    /// See [`SqlStore::rotate`].
    pub async fn rotate(&self) -> Result<Rotation> {
        self.store.rotate(&self.source).await
    }
}

/// One sealed column: its table, the columns naming its row, and the place a value is bound to.
#[derive(Clone, Copy)]
enum Column {
    SwarmKey,
    PrivateKey,
}

impl Column {
    fn select(self) -> &'static str {
        match self {
            Self::SwarmKey => "SELECT name, swarm_key FROM networks",
            Self::PrivateKey => "SELECT network, idx, private_key FROM nodes",
        }
    }

    fn update(self) -> &'static str {
        match self {
            Self::SwarmKey => {
                "UPDATE networks SET swarm_key = $1 WHERE name = $2 AND swarm_key = $3"
            }
            Self::PrivateKey => {
                "UPDATE nodes SET private_key = $1 WHERE network = $2 AND idx = $3 \
                 AND private_key = $4"
            }
        }
    }

    fn count_stale(self) -> &'static str {
        match self {
            Self::SwarmKey => "SELECT COUNT(*) FROM networks WHERE swarm_key NOT LIKE $1",
            Self::PrivateKey => "SELECT COUNT(*) FROM nodes WHERE private_key NOT LIKE $1",
        }
    }
}

/// One row a pass re-seals: where it is, what it held, what it gets.
struct Change {
    network: String,
    index: Option<i64>,
    old: String,
    new: String,
    plaintext: bool,
}

impl SqlStore {
    /// The keyring secrets are sealed and opened with now.
    pub fn keyring(&self) -> Arc<Keyring> {
        crate::sync::read(&self.keys).clone()
    }

    /// Replaces the keyring once every write in flight has landed, so that no write sealed
    /// under the old keyring commits after the swap.
    async fn set_keyring(&self, keys: Keyring) {
        let _no_writes = self.seal_gate.write().await;
        *crate::sync::write(&self.keys) = Arc::new(keys);
    }

    /// Seals again every secret not sealed under the current key: plain text, or sealed under
    /// a previous key. Rows are updated only if unchanged since they were read (a concurrent
    /// write seals under the current key itself), in transactions of up to [`BATCH`] rows.
    /// A secret under a key the keyring lacks, or one that does not open, stops the pass with
    /// an error naming the row and the key id.
    pub async fn reseal(&self) -> Result<Resealed> {
        let mut out = Resealed::default();
        for column in [Column::SwarmKey, Column::PrivateKey] {
            let (n, plain) = self.reseal_column(column).await?;
            match column {
                Column::SwarmKey => out.networks = n,
                Column::PrivateKey => out.nodes = n,
            }
            out.plaintext += plain;
        }
        Ok(out)
    }

    async fn reseal_column(&self, column: Column) -> Result<(u64, u64)> {
        let keys = self.keyring();
        let rows = sqlx::query(column.select())
            .fetch_all(&self.pool)
            .await
            .map_err(|e| query_err("read secrets to seal", e))?;
        let mut changes = Vec::new();
        for row in &rows {
            let network: String = row
                .try_get(0)
                .map_err(|e| query_err("read secrets to seal", e))?;
            let (index, stored): (Option<i64>, String) = match column {
                Column::SwarmKey => (
                    None,
                    row.try_get(1)
                        .map_err(|e| query_err("read secrets to seal", e))?,
                ),
                Column::PrivateKey => (
                    Some(
                        row.try_get(1)
                            .map_err(|e| query_err("read secrets to seal", e))?,
                    ),
                    row.try_get(2)
                        .map_err(|e| query_err("read secrets to seal", e))?,
                ),
            };
            if !keys.needs_reseal(&stored) {
                continue;
            }
            let (ad, what) = match index {
                None => (
                    swarm_key_ad(&network),
                    format!("network `{network}`: `swarm_key`"),
                ),
                Some(i) => (
                    private_key_ad(&network, u16::try_from(i).unwrap_or(u16::MAX)),
                    format!("network `{network}`: node {i}: `private_key`"),
                ),
            };
            let plaintext = !is_sealed(&stored);
            let clear = if plaintext {
                Zeroizing::new(stored.clone().into_bytes())
            } else {
                keys.open(&stored, &ad).map_err(|e| sealed_err(what, e))?
            };
            let new = keys
                .seal(&clear, &ad)
                .map_err(|e| sealed_err(format!("sealing {ad}"), e))?;
            changes.push(Change {
                network,
                index,
                old: stored,
                new,
                plaintext,
            });
        }
        let mut done = 0;
        let mut plain = 0;
        for batch in changes.chunks(BATCH) {
            let mut tx = self
                .pool
                .begin()
                .await
                .map_err(|e| query_err("seal secrets", e))?;
            let mut landed = Vec::with_capacity(batch.len());
            for c in batch {
                let mut q = sqlx::query(column.update())
                    .bind(c.new.clone())
                    .bind(c.network.clone());
                if let Some(i) = c.index {
                    q = q.bind(i);
                }
                let r = q
                    .bind(c.old.clone())
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| query_err("seal secrets", e))?;
                if r.rows_affected() > 0 {
                    landed.push(c.plaintext);
                }
            }
            tx.commit()
                .await
                .map_err(|e| query_err("seal secrets", e))?;
            done += landed.len() as u64;
            plain += landed.iter().filter(|p| **p).count() as u64;
        }
        Ok((done, plain))
    }

    /// How many secrets are not sealed under the current key.
    pub async fn stale_secrets(&self) -> Result<u64> {
        let current = format!("sealed:v1:{}:%", self.keyring().current().id());
        let mut n = 0;
        for column in [Column::SwarmKey, Column::PrivateKey] {
            let (count,): (i64,) = sqlx::query_as(column.count_stale())
                .bind(current.clone())
                .fetch_one(&self.pool)
                .await
                .map_err(|e| query_err("count secrets to seal", e))?;
            n += u64::try_from(count).unwrap_or(0);
        }
        Ok(n)
    }

    /// The pass at open: seals what is not sealed under the current key, then, on a SQLite
    /// file, scrubs what plain text could remain (freed pages are zeroed by `secure_delete`;
    /// `VACUUM` rewrites the file when plain text was sealed; the WAL is checkpointed and
    /// truncated).
    pub(super) async fn seal_at_open(&self) -> Result<Resealed> {
        let done = self.reseal().await?;
        if done.networks + done.nodes > 0 {
            tracing::info!(
                networks = done.networks,
                nodes = done.nodes,
                plaintext = done.plaintext,
                key = self.keyring().current().id(),
                "store secrets sealed under the current key"
            );
        }
        if done.plaintext > 0 {
            self.scrub(true).await;
        } else {
            self.scrub(false).await;
        }
        Ok(done)
    }

    /// Leaves no old page image behind: on a SQLite file, optionally `VACUUM`, then checkpoint
    /// the WAL and truncate it; on Postgres after plain text was sealed, `VACUUM FULL` the two
    /// tables (best effort: the role may not own them). Failures are logged, not returned: the
    /// secrets are sealed either way.
    async fn scrub(&self, vacuum: bool) {
        match self.backend {
            Backend::Sqlite if self.file.is_some() => {
                if vacuum {
                    if let Err(e) = sqlx::query("VACUUM").execute(&self.pool).await {
                        tracing::warn!(error = %e, "VACUUM after sealing failed: old plain text may remain in free pages until the next one");
                    }
                }
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .fetch_optional(&self.pool)
                    .await
                {
                    tracing::warn!(error = %e, "WAL checkpoint after sealing failed");
                }
            }
            Backend::Postgres if vacuum => {
                for table in ["networks", "nodes"] {
                    let sql = format!("VACUUM FULL {table}");
                    if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&self.pool)
                        .await
                    {
                        tracing::warn!(%table, error = %e, "VACUUM FULL after sealing failed: old plain text may remain in dead rows; run it as the table's owner");
                    }
                }
            }
            _ => {}
        }
    }

    /// Rotates the seal key with no downtime: a new key is generated and written to the key
    /// file next to the old ones (atomically), becomes the key new writes seal under, every
    /// secret is sealed again under it, and then the old keys are dropped from the file. Reads
    /// and writes go on meanwhile. Refused when the keys come from the configuration, with how
    /// to rotate them. A failure before the end leaves the file with both keys, which is safe:
    /// a restart (or the next rotation) finishes the job.
    pub async fn rotate(&self, source: &KeySource) -> Result<Rotation> {
        let what = "rotating the seal key";
        let file = source.rotatable().map_err(|e| sealed_err(what, e))?;
        let _one_at_a_time = self.rotating.lock().await;
        let old = self.keyring();
        let new_key = SealKey::generate().map_err(|e| sealed_err(what, e))?;
        let staged = old.rotated_to(new_key).map_err(|e| sealed_err(what, e))?;
        file.write(&staged).map_err(|e| sealed_err(what, e))?;
        self.set_keyring(staged.clone()).await;
        let resealed = self.reseal().await?;
        self.drop_previous_keys(file).await?;
        self.scrub(false).await;
        let rotation = Rotation {
            old_key_id: old.current().id().to_owned(),
            new_key_id: staged.current().id().to_owned(),
            resealed,
            key_file: file.path().to_owned(),
        };
        tracing::info!(
            old_key = %rotation.old_key_id,
            new_key = %rotation.new_key_id,
            networks = rotation.resealed.networks,
            nodes = rotation.resealed.nodes,
            "seal key rotated"
        );
        Ok(rotation)
    }

    /// Once no secret is sealed under a previous key, removes the previous keys from `file`
    /// and the keyring (finishing a rotation a restart interrupted). Refuses while some are.
    pub async fn drop_previous_keys(&self, file: &KeyFile) -> Result<()> {
        let keys = self.keyring();
        if keys.previous().is_empty() {
            return Ok(());
        }
        let stale = self.stale_secrets().await?;
        if stale > 0 {
            return Err(sealed_err(
                "dropping the previous seal keys",
                SealError::NotRotatable(format!(
                    "{stale} secret(s) are not sealed under the current key {} yet (a write \
                     failed, or a row is damaged); the previous keys stay in {}: run `nexus \
                     secrets rotate` again",
                    keys.current().id(),
                    file.path().display()
                )),
            ));
        }
        let done = keys.current_only();
        file.write(&done)
            .map_err(|e| sealed_err("dropping the previous seal keys", e))?;
        self.set_keyring(done).await;
        Ok(())
    }
}

/// The SQLite database file a URL names, unless it is in memory, and whether the URL lets it
/// be created.
pub(super) fn sqlite_file(url: &str) -> Option<(PathBuf, bool)> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let mode = query.and_then(|q| {
        q.split('&')
            .find_map(|p| p.strip_prefix("mode="))
            .map(str::to_owned)
    });
    if path.is_empty() || path == ":memory:" || mode.as_deref() == Some("memory") {
        return None;
    }
    let path = percent_decode(path);
    let create = matches!(mode.as_deref(), None | Some("rwc"));
    Some((PathBuf::from(path), create))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The database file and the files SQLite keeps beside it.
pub(super) fn sqlite_files(db: &Path) -> [PathBuf; 3] {
    let name = db.as_os_str().to_string_lossy();
    [
        db.to_owned(),
        PathBuf::from(format!("{name}-wal")),
        PathBuf::from(format!("{name}-shm")),
    ]
}

/// Before SQLite opens `db`: refuses files others may read or write, naming the `chmod` to
/// run, and creates a missing database file 0600 (SQLite gives its `-wal` and `-shm` the
/// database file's mode).
pub(super) fn prepare_sqlite_file(db: &Path, create: bool) -> std::result::Result<(), String> {
    let mut loose = Vec::new();
    for f in sqlite_files(db) {
        match fs::metadata(&f) {
            Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                loose.push((f, m.permissions().mode() & 0o777));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot inspect {}: {e}", f.display())),
        }
    }
    if !loose.is_empty() {
        let modes = loose
            .iter()
            .map(|(f, m)| format!("{} is mode {m:04o}", f.display()))
            .collect::<Vec<_>>()
            .join(", ");
        let files = loose
            .iter()
            .map(|(f, _)| f.display().to_string())
            .collect::<Vec<_>>()
            .join(" ");
        return Err(format!(
            "the database holds the network's secrets but other users may read or write it \
             ({modes}): run `chmod 600 {files}`"
        ));
    }
    if create {
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(db)
        {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            // SQLite reports a missing directory in its own words.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot create {}: {e}", db.display())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(
            sqlite_file("sqlite:///var/lib/nexus/nexus.db"),
            Some((PathBuf::from("/var/lib/nexus/nexus.db"), true))
        );
        assert_eq!(
            sqlite_file("sqlite:///d/a%20b.db?mode=rwc"),
            Some((PathBuf::from("/d/a b.db"), true))
        );
        assert_eq!(
            sqlite_file("sqlite:///d/n.db?mode=ro"),
            Some((PathBuf::from("/d/n.db"), false))
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("sqlite://?mode=memory"), None);
        assert_eq!(sqlite_file("postgres://h/db"), None);
    }
}
