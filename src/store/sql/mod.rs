//! sqlx implementation of the [`super::Store`] trait: one implementation for SQLite (embedded
//! default) and Postgres, chosen by URL, through `sqlx::AnyPool`.
//!
//! Owns the SQL, the embedded migrations (`migrations/*.sql`, the same schema on both backends)
//! and the pool; the mapping between rows and [`NetworkRecord`]/[`NodeRow`] is [`rows`], SQLite's
//! group-commit writer is [`writer`], the instance and lease records are [`lease`], the
//! revocation list is [`revoked`], the pinset is [`pins`], URLs are
//! [`super::url`], sealing secrets and the database files' hygiene is [`sealed`]. Secrets
//! (swarm keys, node private keys) are stored sealed (see [`crate::store::seal`]), bound as
//! query parameters and never formatted into errors; the URL's password never appears in
//! `Debug` output or errors.

mod lease;
mod pins;
mod revoked;
mod rows;
mod sealed;
mod writer;

pub use sealed::{Resealed, Rotation, SealRotator};

use std::borrow::Cow;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Executor as _};

use super::seal::Keyring;
pub use super::url::{redact_url, Backend};
use super::url::{scrub, sqlite_create_if_missing};
use super::{Lease, LeaseHolder, LeaseOutcome, NetworkRecord, NodeRow, Result, Store, StoreError};
use crate::names::InstanceName;
use crate::node::NetworkName;
use crate::store::{Allocation, PinCounts, PinFilter, PinPage, PinRecord, PinStatus, RevokedToken};
use rows::{bind_network, network_from_row, node_from_row, NETWORK_COLUMNS, NODE_COLUMNS};
use writer::{group_commit, write_err, WriteError, WriteJob};

/// The schema, in order. Append new files; never edit an applied one (sqlx checks checksums).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../../migrations/0001_initial.sql"),
    ),
    (
        2,
        "api policy",
        include_str!("../../../migrations/0002_api_policy.sql"),
    ),
    (
        3,
        "instance",
        include_str!("../../../migrations/0003_instance.sql"),
    ),
    (
        4,
        "network subnet",
        include_str!("../../../migrations/0004_network_subnet.sql"),
    ),
    (
        5,
        "revoked tokens",
        include_str!("../../../migrations/0005_revoked_tokens.sql"),
    ),
    (
        6,
        "ipns dns",
        include_str!("../../../migrations/0006_ipns_dns.sql"),
    ),
    (
        7,
        "network image",
        include_str!("../../../migrations/0007_network_image.sql"),
    ),
    (
        8,
        "replication",
        include_str!("../../../migrations/0008_replication.sql"),
    ),
    (
        9,
        "pinset",
        include_str!("../../../migrations/0009_pinset.sql"),
    ),
];

/// The store on SQLite or Postgres. Cheap to share (`Arc`) between tasks; the pool is inside.
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
    /// SQLite allows one writer at a time; concurrent writers would meet `SQLITE_BUSY` and
    /// sleep in SQLite's busy handler (milliseconds each). This process's writes go to one
    /// writer task instead, which commits the writes waiting together in one transaction
    /// (group commit; see [`group_commit`]). `None` on Postgres.
    writer: Option<tokio::sync::mpsc::Sender<WriteJob>>,
    /// The URL with any password replaced (see [`redact_url`]).
    redacted_url: String,
    /// The keys secrets are sealed and opened with (swapped by a rotation).
    keys: std::sync::RwLock<std::sync::Arc<Keyring>>,
    /// Writes hold it shared from sealing until their commit; a keyring swap holds it
    /// exclusively, so no write sealed under a replaced keyring lands after the swap.
    seal_gate: tokio::sync::RwLock<()>,
    /// One rotation at a time.
    rotating: tokio::sync::Mutex<()>,
    /// The SQLite database file, if the store is one.
    file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("url", &self.redacted_url)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl SqlStore {
    /// Opens the store at `url`, brings its schema up to date and seals, under `keys`' current
    /// key, every secret that is not yet (plain-text rows of an older nexus, rows under a
    /// previous key). A secret under a key `keys` lacks fails the open, naming the key id.
    ///
    /// URLs: `sqlite://path/to/nexus.db` (the file is created if missing, mode 0600, unless
    /// the URL gives another `mode=`; a database file, `-wal` or `-shm` that others may read or
    /// write is refused with the `chmod` to run),
    /// `sqlite::memory:` (private to this store, gone when it is dropped), or
    /// `postgres://user:password@host:port/database`.
    pub async fn connect(url: &str, keys: Keyring) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let redacted_url = redact_url(url);
        let open_err = |detail: String| StoreError::Open {
            url: redacted_url.clone(),
            detail: scrub(&detail, url),
        };
        let backend = Backend::from_url(url).ok_or_else(|| {
            open_err("unsupported URL: use sqlite://…, sqlite::memory: or postgres://…".into())
        })?;
        let in_memory = backend == Backend::Sqlite && url.contains(":memory:");
        let file = match backend {
            Backend::Sqlite if !in_memory => sealed::sqlite_file(url),
            _ => None,
        };
        if let Some((path, create)) = &file {
            sealed::prepare_sqlite_file(path, *create).map_err(&open_err)?;
        }

        let mut options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(30));
        options = match backend {
            Backend::Sqlite if in_memory => {
                // One connection that lives as long as the pool: the database lives in it.
                options
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
            }
            // A file's connection cannot break: skip the round trip to its worker thread that
            // checking it before every query costs (half of all thread switches).
            Backend::Sqlite => options.max_connections(8).test_before_acquire(false),
            Backend::Postgres => options.max_connections(10),
        };
        if backend == Backend::Sqlite {
            options = options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    // With WAL (below), NORMAL syncs at checkpoints rather than every commit:
                    // the file cannot be corrupted; a power loss may lose the last commits,
                    // which recovery reconciles against what the runtime runs.
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    // Deleted and overwritten content (an old sealed value, a row sealed at
                    // open) is zeroed rather than left in free space.
                    conn.execute("PRAGMA secure_delete = ON").await?;
                    Ok(())
                })
            });
        }
        let connect_url = match backend {
            Backend::Sqlite if !in_memory => sqlite_create_if_missing(url),
            _ => Cow::Borrowed(url),
        };
        let pool = options
            .connect(&connect_url)
            .await
            .map_err(|e| open_err(e.to_string()))?;
        if backend == Backend::Sqlite && !in_memory {
            // Persistent in the file; readers no longer block the writer.
            sqlx::query("PRAGMA journal_mode = WAL")
                .fetch_optional(&pool)
                .await
                .map_err(|e| open_err(format!("cannot enable WAL: {e}")))?;
        }

        migrator()
            .run(&pool)
            .await
            .map_err(|e| StoreError::Migrate(scrub(&e.to_string(), url)))?;

        let writer = (backend == Backend::Sqlite).then(|| {
            let (tx, rx) = tokio::sync::mpsc::channel(1024);
            tokio::spawn(group_commit(pool.clone(), rx));
            tx
        });
        let store = Self {
            pool,
            backend,
            writer,
            redacted_url,
            keys: std::sync::RwLock::new(std::sync::Arc::new(keys)),
            seal_gate: tokio::sync::RwLock::new(()),
            rotating: tokio::sync::Mutex::new(()),
            file: file.map(|(path, _)| path),
        };
        store.seal_at_open().await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Runs one write statement and returns the rows it affected: on Postgres directly, on
    /// SQLite through the writer task (which returns once the statement is committed).
    async fn write(&self, query: AnyQuery<'static>) -> Result<u64, WriteError> {
        let Some(writer) = &self.writer else {
            return query
                .execute(&self.pool)
                .await
                .map(|r| r.rows_affected())
                .map_err(WriteError::Sql);
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let gone = || WriteError::Batch("the store's writer task has stopped".into());
        writer.send((query, tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Closes every connection (waits for queries in flight). Dropping the store also closes it.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn migrator() -> Migrator {
    let mut migrator = Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    sqlx::SqlStr::from_static(sql),
                    false,
                )
            })
            .collect(),
    );
    migrator.set_locking(true);
    migrator
}

/// A driver error as a [`StoreError::Query`]: what we were doing and the driver's message.
/// Parameters (which may be secrets) are never part of it.
fn query_err(action: &str, e: sqlx::Error) -> StoreError {
    let detail = match &e {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("{} (code {code})", db.message()),
            None => db.message().to_string(),
        },
        other => other.to_string(),
    };
    StoreError::Query(format!("{action}: {detail}"))
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

#[async_trait::async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| query_err("ping", e))
    }

    async fn create_network(&self, network: &NetworkRecord) -> Result<()> {
        let sql = format!(
            "INSERT INTO networks ({NETWORK_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)"
        );
        let _sealing = self.seal_gate.read().await;
        let query = bind_network(
            sqlx::query(sqlx::AssertSqlSafe(sql)),
            network,
            &self.keyring(),
        )?;
        match self.write(query).await {
            Ok(_) => Ok(()),
            Err(WriteError::Sql(e)) if is_unique_violation(&e) => {
                Err(StoreError::Duplicate(network.name.as_str().to_string()))
            }
            Err(e) => Err(write_err("create network", e)),
        }
    }

    async fn get_network(&self, name: &NetworkName) -> Result<Option<NetworkRecord>> {
        let sql = format!("SELECT {NETWORK_COLUMNS} FROM networks WHERE name = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name.as_str().to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| query_err("get network", e))?;
        let keys = self.keyring();
        row.as_ref().map(|r| network_from_row(r, &keys)).transpose()
    }

    async fn list_networks(&self) -> Result<Vec<NetworkRecord>> {
        let sql = format!("SELECT {NETWORK_COLUMNS} FROM networks ORDER BY name");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| query_err("list networks", e))?;
        let keys = self.keyring();
        let mut networks = rows
            .iter()
            .map(|r| network_from_row(r, &keys))
            .collect::<Result<Vec<_>>>()?;
        // Byte order, whatever the database's collation.
        networks.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
        Ok(networks)
    }

    async fn update_network(&self, network: &NetworkRecord) -> Result<()> {
        let sql = "UPDATE networks SET replicas = $2, cpu_millis = $3, memory_bytes = $4, \
                   disk_bytes = $5, users = $6, gateway_public = $7, allowed_origins = $8, \
                   swarm_key = $9, bootstrap_peers = $10, desired = $11, status = $12, \
                   status_reason = $13, created_at = $14, updated_at = $15, activated_at = $16, \
                   api_allow = $17, api_deny = $18, subnet = $19, image = $20, \
                   replication = $21, ipns_dns = $22 \
                   WHERE name = $1";
        let _sealing = self.seal_gate.read().await;
        let affected = self
            .write(bind_network(sqlx::query(sql), network, &self.keyring())?)
            .await
            .map_err(|e| write_err("update network", e))?;
        if affected == 0 {
            return Err(StoreError::NotFound(network.name.as_str().to_string()));
        }
        Ok(())
    }

    async fn delete_network(&self, name: &NetworkName) -> Result<()> {
        self.write(
            sqlx::query("DELETE FROM networks WHERE name = $1").bind(name.as_str().to_string()),
        )
        .await
        .map_err(|e| write_err("delete network", e))?;
        Ok(())
    }

    async fn put_node(&self, node: &NodeRow) -> Result<()> {
        let private_key =
            zeroize::Zeroizing::new(node.identity.kubo_private_key().map_err(|_| {
                StoreError::Query("put node: the node's private key cannot be encoded".into())
            })?);
        let _sealing = self.seal_gate.read().await;
        let private_key = sealed::seal_text(
            &self.keyring(),
            &private_key,
            &sealed::private_key_ad(node.network.as_str(), node.index),
        )?;
        let sql = format!(
            "INSERT INTO nodes ({NODE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (network, idx) DO UPDATE SET private_key = excluded.private_key, \
             peer_id = excluded.peer_id, swarm_port = excluded.swarm_port, \
             api_port = excluded.api_port, gateway_port = excluded.gateway_port, \
             container_id = excluded.container_id, last_error = excluded.last_error"
        );
        let query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(node.network.as_str().to_string())
            .bind(i64::from(node.index))
            .bind(private_key)
            .bind(node.identity.peer_id().to_string())
            .bind(node.ports.swarm.map(i64::from))
            // No longer used: the RPC API and gateway are unix sockets (older rows may hold them).
            .bind(None::<i64>)
            .bind(None::<i64>)
            .bind(node.container_id.clone())
            .bind(node.last_error.clone());
        match self.write(query).await {
            Ok(_) => Ok(()),
            Err(WriteError::Sql(e)) if is_foreign_key_violation(&e) => {
                Err(StoreError::NotFound(node.network.as_str().to_string()))
            }
            Err(e) => Err(write_err("put node", e)),
        }
    }

    async fn list_nodes(&self, network: &NetworkName) -> Result<Vec<NodeRow>> {
        let sql = format!("SELECT {NODE_COLUMNS} FROM nodes WHERE network = $1 ORDER BY idx");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(network.as_str().to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(|e| query_err("list nodes", e))?;
        let keys = self.keyring();
        rows.iter().map(|r| node_from_row(r, &keys)).collect()
    }

    async fn all_nodes(&self) -> Result<Vec<NodeRow>> {
        let sql = format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY network, idx");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| query_err("list all nodes", e))?;
        let keys = self.keyring();
        let mut nodes = rows
            .iter()
            .map(|r| node_from_row(r, &keys))
            .collect::<Result<Vec<_>>>()?;
        nodes.sort_by(|a, b| (a.network.as_str(), a.index).cmp(&(b.network.as_str(), b.index)));
        Ok(nodes)
    }

    async fn delete_node(&self, network: &NetworkName, index: u16) -> Result<()> {
        let query = sqlx::query("DELETE FROM nodes WHERE network = $1 AND idx = $2")
            .bind(network.as_str().to_string())
            .bind(i64::from(index));
        self.write(query)
            .await
            .map_err(|e| write_err("delete node", e))?;
        Ok(())
    }

    async fn instance(&self) -> Result<Option<InstanceName>> {
        self.read_instance().await
    }

    async fn claim_instance(&self, proposed: &InstanceName) -> Result<InstanceName> {
        self.insert_instance(proposed).await
    }

    async fn acquire_lease(
        &self,
        instance: &InstanceName,
        holder: &LeaseHolder,
        ttl: Duration,
    ) -> Result<LeaseOutcome> {
        self.upsert_lease(instance, holder, ttl).await
    }

    async fn renew_lease(
        &self,
        instance: &InstanceName,
        holder: &LeaseHolder,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        self.extend_lease(instance, holder, ttl).await
    }

    async fn release_lease(&self, instance: &InstanceName, holder: &LeaseHolder) -> Result<()> {
        self.delete_lease(instance, holder).await
    }

    async fn get_lease(&self, instance: &InstanceName) -> Result<Option<Lease>> {
        self.select_lease(instance).await
    }

    async fn revoke_token(&self, jti: &str, revoked_at: i64, forget_at: i64) -> Result<()> {
        self.insert_revoked(jti, revoked_at, forget_at).await
    }

    async fn revoked_tokens(&self, now: i64) -> Result<Vec<RevokedToken>> {
        self.select_revoked(now).await
    }

    async fn forget_revoked_tokens(&self, now: i64) -> Result<u64> {
        self.delete_revoked(now).await
    }

    async fn create_pin(&self, pin: &PinRecord) -> Result<()> {
        self.insert_pin(pin).await
    }

    async fn get_pin(&self, network: &NetworkName, request_id: &str) -> Result<Option<PinRecord>> {
        self.select_pin(network, request_id).await
    }

    async fn list_pins(&self, network: &NetworkName, filter: &PinFilter) -> Result<PinPage> {
        self.select_pins(network, filter).await
    }

    async fn pinset(&self, network: &NetworkName) -> Result<Vec<PinRecord>> {
        self.select_pinset(network).await
    }

    async fn set_pin_status(
        &self,
        network: &NetworkName,
        request_id: &str,
        status: PinStatus,
        reason: Option<&str>,
        at: i64,
    ) -> Result<bool> {
        self.update_pin_status(network, request_id, status, reason, at)
            .await
    }

    async fn remove_pin(&self, network: &NetworkName, request_id: &str, at: i64) -> Result<bool> {
        self.mark_pin_removed(network, request_id, at).await
    }

    async fn delete_pin(&self, network: &NetworkName, request_id: &str) -> Result<()> {
        self.erase_pin(network, request_id).await
    }

    async fn put_allocation(
        &self,
        network: &NetworkName,
        request_id: &str,
        allocation: &Allocation,
    ) -> Result<()> {
        self.upsert_allocation(network, request_id, allocation)
            .await
    }

    async fn delete_allocation(
        &self,
        network: &NetworkName,
        request_id: &str,
        node: u16,
    ) -> Result<()> {
        self.erase_allocation(network, request_id, node).await
    }

    async fn pin_counts(&self, network: &NetworkName) -> Result<PinCounts> {
        self.count_pins(network).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keyring {
        Keyring::generate().unwrap()
    }

    #[tokio::test]
    async fn sqlite_file_is_created_without_mode_parameter() {
        let dir = std::env::temp_dir().join(format!("nexus-sql-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fresh.db");
        let _ = std::fs::remove_file(&path);
        let store = SqlStore::connect(&format!("sqlite://{}", path.display()), keys())
            .await
            .unwrap();
        assert!(store.list_networks().await.unwrap().is_empty());
        store.close().await;
        assert!(path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn debug_of_a_store_hides_password() {
        let store = SqlStore::connect("sqlite::memory:", keys()).await.unwrap();
        let shown = format!("{store:?}");
        assert!(shown.contains("sqlite::memory:"), "{shown}");
        assert!(shown.contains("Sqlite"), "{shown}");
    }

    #[tokio::test]
    async fn open_error_hides_password() {
        // `.invalid` never resolves (RFC 6761): fails at once (a refused connection would be
        // retried until the acquire timeout, as when the database is still starting).
        let err = SqlStore::connect("postgres://nexus:hunter22@nexus-store.invalid/db", keys())
            .await
            .unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(matches!(err, StoreError::Open { .. }), "{shown}");
        assert!(!shown.contains("hunter22"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[tokio::test]
    async fn unsupported_scheme_is_an_open_error() {
        let err = SqlStore::connect("mysql://u:pw123@h/d", keys())
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Open { .. }));
        assert!(!err.to_string().contains("pw123"));
    }
}
