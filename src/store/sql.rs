//! sqlx implementation of the [`super::Store`] trait: one implementation for SQLite (embedded
//! default) and Postgres, chosen by URL, through `sqlx::AnyPool`.
//!
//! Owns the SQL, the embedded migrations (`migrations/*.sql`, the same schema on both backends)
//! and the mapping between rows and [`NetworkRecord`]/[`NodeRow`]. Rows read back are validated;
//! a row that does not decode is [`StoreError::Corrupt`]. Secrets (swarm keys, node private keys)
//! are bound as query parameters and never formatted into errors; the URL's password never
//! appears in `Debug` output or errors.

use std::borrow::Cow;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Executor as _, Row as _};

use super::{
    DesiredState, NetworkRecord, NetworkStatus, NodeRow, Result, Store, StoreError, StoredPorts,
};
use crate::access::Access;
use crate::node::{NetworkName, NodeIdentity, Resources, SwarmKey};

/// The schema, in order. Append new files; never edit an applied one (sqlx checks checksums).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/0001_initial.sql"),
    ),
    (
        2,
        "api policy",
        include_str!("../../migrations/0002_api_policy.sql"),
    ),
];

/// Which database a URL points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn from_url(url: &str) -> Option<Self> {
        let scheme = url.split(':').next().unwrap_or("").to_ascii_lowercase();
        match scheme.as_str() {
            "sqlite" => Some(Self::Sqlite),
            "postgres" | "postgresql" => Some(Self::Postgres),
            _ => None,
        }
    }
}

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
    /// Opens the store at `url` and brings its schema up to date.
    ///
    /// URLs: `sqlite://path/to/nexus.db` (the file is created if missing unless the URL gives
    /// another `mode=`),
    /// `sqlite::memory:` (private to this store, gone when it is dropped), or
    /// `postgres://user:password@host:port/database`.
    pub async fn connect(url: &str) -> Result<Self> {
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
        Ok(Self {
            pool,
            backend,
            writer,
            redacted_url,
        })
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

/// One write for the writer task and where its outcome goes.
type WriteJob = (
    AnyQuery<'static>,
    tokio::sync::oneshot::Sender<Result<u64, WriteError>>,
);

/// Why a write failed.
#[derive(Debug)]
enum WriteError {
    /// The statement itself failed (nothing of it was written).
    Sql(sqlx::Error),
    /// Its transaction failed or was abandoned; no write of the batch was committed.
    Batch(String),
}

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 64;

/// SQLite's writer: takes the writes waiting (up to [`MAX_BATCH`]) and commits them in one
/// transaction, then answers each; a lone write runs on its own. A statement that fails on a
/// constraint (duplicate name, missing network) fails alone: SQLite undoes only that statement
/// and the batch goes on. Any other failure abandons the batch: it is rolled back and every
/// write in it, run or not, fails. Callers are answered only after the commit, so a write
/// reported done is durable and one reported failed did not land. Ends when the store is
/// dropped.
async fn group_commit(pool: AnyPool, mut jobs: tokio::sync::mpsc::Receiver<WriteJob>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if batch.len() == 1 {
            if let Some((query, reply)) = batch.pop() {
                let result = query.execute(&pool).await;
                let _ = reply.send(result.map(|r| r.rows_affected()).map_err(WriteError::Sql));
            }
            continue;
        }
        commit_batch(&pool, &mut batch).await;
    }
}

async fn commit_batch(pool: &AnyPool, batch: &mut Vec<WriteJob>) {
    let fail_all = |batch: &mut Vec<WriteJob>, why: String| {
        for (_, reply) in batch.drain(..) {
            let _ = reply.send(Err(WriteError::Batch(why.clone())));
        }
    };
    let mut tx = match pool.begin().await {
        Ok(tx) => tx,
        Err(e) => return fail_all(batch, format!("cannot begin a transaction: {e}")),
    };
    let mut done = Vec::with_capacity(batch.len());
    let mut abandoned = None;
    for (query, reply) in batch.drain(..) {
        if abandoned.is_some() {
            let _ = reply.send(Err(WriteError::Batch(
                "an earlier write of its transaction failed".into(),
            )));
            continue;
        }
        match query.execute(&mut *tx).await {
            Ok(r) => done.push((Ok(r.rows_affected()), reply)),
            Err(e) if is_unique_violation(&e) || is_foreign_key_violation(&e) => {
                done.push((Err(WriteError::Sql(e)), reply));
            }
            Err(e) => {
                abandoned = Some(e.to_string());
                let _ = reply.send(Err(WriteError::Sql(e)));
            }
        }
    }
    let outcome = match abandoned {
        Some(why) => {
            let _ = tx.rollback().await;
            Err(format!("its transaction was rolled back: {why}"))
        }
        None => tx.commit().await.map_err(|e| format!("commit failed: {e}")),
    };
    for (result, reply) in done {
        let _ = reply.send(match &outcome {
            Ok(()) => result,
            Err(why) => Err(WriteError::Batch(why.clone())),
        });
    }
}

/// A write's failure as a [`StoreError::Query`] (see [`query_err`]).
fn write_err(action: &str, e: WriteError) -> StoreError {
    match e {
        WriteError::Sql(e) => query_err(action, e),
        WriteError::Batch(why) => StoreError::Query(format!("{action}: {why}")),
    }
}

/// A SQLite file URL that creates the file if missing: adds `mode=rwc` unless a mode is given.
fn sqlite_create_if_missing(url: &str) -> Cow<'_, str> {
    let query = url.split_once('?').map(|(_, q)| q);
    let has_mode = query.is_some_and(|q| q.split('&').any(|p| p.starts_with("mode=")));
    match (has_mode, query) {
        (true, _) => Cow::Borrowed(url),
        (false, Some(_)) => Cow::Owned(format!("{url}&mode=rwc")),
        (false, None) => Cow::Owned(format!("{url}?mode=rwc")),
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

/// `url` with the password (in the userinfo or a `password=` query parameter) replaced by
/// `<redacted>`. The user name, host and database stay, for error messages.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let (head, rest) = url.split_at(scheme_end + 3);
    // The userinfo ends at the last `@` before the query: a password may hold an unencoded `/`
    // or `@`; if the path held an `@`, we redact too much, never too little.
    let (authority, tail) = match userinfo_end(rest) {
        Some(at) => {
            let (userinfo, after) = rest.split_at(at);
            let userinfo = match userinfo.find(':') {
                Some(colon) => format!("{}:<redacted>", &userinfo[..colon]),
                None => userinfo.to_string(),
            };
            let host_end = after[1..]
                .find(['/', '?', '#'])
                .map_or(after.len(), |i| i + 1);
            (
                format!("{userinfo}{}", &after[..host_end]),
                &after[host_end..],
            )
        }
        None => {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            (rest[..end].to_string(), &rest[end..])
        }
    };
    let tail = match tail.find('?') {
        Some(q) => {
            let (path, query) = tail.split_at(q + 1);
            let (query, fragment) = match query.find('#') {
                Some(h) => query.split_at(h),
                None => (query, ""),
            };
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => {
                        format!("{k}=<redacted>")
                    }
                    _ => p.to_string(),
                })
                .collect();
            format!("{path}{}{fragment}", params.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{head}{authority}{tail}")
}

/// Where the userinfo of `rest` (the URL after `://`) ends: its last `@` before any `?`.
fn userinfo_end(rest: &str) -> Option<usize> {
    rest[..rest.find('?').unwrap_or(rest.len())].rfind('@')
}

/// Removes the URL's password from a driver message, in case a driver quotes the URL.
fn scrub(detail: &str, url: &str) -> String {
    let mut out = detail.replace(url, &redact_url(url));
    for secret in url_passwords(url) {
        if secret.len() >= 3 {
            out = out.replace(&secret, "<redacted>");
        }
    }
    out
}

fn url_passwords(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        if let Some(at) = userinfo_end(rest) {
            if let Some((_, pw)) = rest[..at].split_once(':') {
                found.push(pw.to_string());
            }
        }
    }
    if let Some((_, query)) = url.split_once('?') {
        for p in query.split('&') {
            if let Some((k, v)) = p.split_once('=') {
                if k.eq_ignore_ascii_case("password") {
                    found.push(v.to_string());
                }
            }
        }
    }
    found
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

fn to_i64(value: u64, what: &str) -> Result<i64> {
    i64::try_from(value)
        .map_err(|_| StoreError::Query(format!("{what} {value} does not fit in a BIGINT")))
}

fn to_json(list: &[String]) -> Result<String> {
    serde_json::to_string(list).map_err(|e| StoreError::Query(format!("cannot encode list: {e}")))
}

/// The columns of `networks`, in the order [`bind_network`] binds them.
const NETWORK_COLUMNS: &str = "name, replicas, cpu_millis, memory_bytes, disk_bytes, users, \
     gateway_public, allowed_origins, swarm_key, bootstrap_peers, desired, status, status_reason, \
     created_at, updated_at, activated_at, api_allow, api_deny";

const NODE_COLUMNS: &str = "network, idx, private_key, peer_id, swarm_port, api_port, \
     gateway_port, container_id, last_error";

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

fn bind_network<'q>(query: AnyQuery<'q>, n: &NetworkRecord) -> Result<AnyQuery<'q>> {
    Ok(query
        .bind(n.name.as_str().to_string())
        .bind(i64::from(n.replicas))
        .bind(i64::from(n.resources.cpu_millis))
        .bind(to_i64(n.resources.memory_bytes, "memory_bytes")?)
        .bind(to_i64(n.resources.disk_bytes, "disk_bytes")?)
        .bind(to_json(&n.access.users)?)
        .bind(i64::from(n.access.gateway_public))
        .bind(to_json(&n.access.allowed_origins)?)
        .bind(n.swarm_key.to_file_contents())
        .bind(to_json(&n.bootstrap_peers)?)
        .bind(n.desired.as_str().to_string())
        .bind(n.status.as_str().to_string())
        .bind(n.status_reason.clone())
        .bind(n.created_at)
        .bind(n.updated_at)
        .bind(n.activated_at)
        .bind(to_json(&n.access.api_allow)?)
        .bind(to_json(&n.access.api_deny)?))
}

/// Reads one column; a type mismatch is damage. The message names the column, never its value.
fn col<'r, T>(row: &'r AnyRow, name: &str, column: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get::<T, _>(column)
        .map_err(|_| StoreError::Corrupt {
            name: name.to_string(),
            detail: format!("column `{column}` is missing or has an unexpected type"),
        })
}

fn corrupt(name: &str, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        name: name.to_string(),
        detail: detail.into(),
    }
}

fn int<T: TryFrom<i64>>(row: &AnyRow, name: &str, column: &str) -> Result<T> {
    let v: i64 = col(row, name, column)?;
    T::try_from(v).map_err(|_| corrupt(name, format!("`{column}` is out of range ({v})")))
}

fn opt_int<T: TryFrom<i64>>(row: &AnyRow, name: &str, column: &str) -> Result<Option<T>> {
    let v: Option<i64> = col(row, name, column)?;
    v.map(|v| {
        T::try_from(v).map_err(|_| corrupt(name, format!("`{column}` is out of range ({v})")))
    })
    .transpose()
}

fn list(row: &AnyRow, name: &str, column: &str) -> Result<Vec<String>> {
    let text: String = col(row, name, column)?;
    serde_json::from_str(&text)
        .map_err(|_| corrupt(name, format!("`{column}` is not a JSON list of strings")))
}

fn network_from_row(row: &AnyRow) -> Result<NetworkRecord> {
    let raw_name: String = col(row, "?", "name")?;
    let name = NetworkName::new(&raw_name).map_err(|e| {
        corrupt(
            &raw_name.chars().take(64).collect::<String>(),
            e.to_string(),
        )
    })?;
    let n = raw_name.as_str();
    let gateway_public = match col::<i64>(row, n, "gateway_public")? {
        0 => false,
        1 => true,
        v => return Err(corrupt(n, format!("`gateway_public` is {v}, not 0 or 1"))),
    };
    let swarm_key_text: String = col(row, n, "swarm_key")?;
    // The parse error may quote part of the key: say only that it is bad.
    let swarm_key = SwarmKey::parse(&swarm_key_text)
        .map_err(|_| corrupt(n, "`swarm_key` is not a valid kubo swarm.key"))?;
    let desired_text: String = col(row, n, "desired")?;
    let desired = DesiredState::parse(&desired_text)
        .ok_or_else(|| corrupt(n, format!("unknown desired state `{desired_text}`")))?;
    let status_text: String = col(row, n, "status")?;
    let status = NetworkStatus::parse(&status_text)
        .ok_or_else(|| corrupt(n, format!("unknown status `{status_text}`")))?;
    Ok(NetworkRecord {
        replicas: int(row, n, "replicas")?,
        resources: Resources {
            cpu_millis: int(row, n, "cpu_millis")?,
            memory_bytes: int(row, n, "memory_bytes")?,
            disk_bytes: int(row, n, "disk_bytes")?,
        },
        access: Access {
            users: list(row, n, "users")?,
            gateway_public,
            allowed_origins: list(row, n, "allowed_origins")?,
            api_allow: list(row, n, "api_allow")?,
            api_deny: list(row, n, "api_deny")?,
        },
        swarm_key,
        bootstrap_peers: list(row, n, "bootstrap_peers")?,
        desired,
        status,
        status_reason: col(row, n, "status_reason")?,
        created_at: col(row, n, "created_at")?,
        updated_at: col(row, n, "updated_at")?,
        activated_at: col(row, n, "activated_at")?,
        name,
    })
}

fn node_from_row(row: &AnyRow) -> Result<NodeRow> {
    let raw_network: String = col(row, "?", "network")?;
    let network = NetworkName::new(&raw_network).map_err(|e| {
        corrupt(
            &raw_network.chars().take(64).collect::<String>(),
            e.to_string(),
        )
    })?;
    let n = raw_network.as_str();
    let index: u16 = int(row, n, "idx")?;
    let private_key: String = col(row, n, "private_key")?;
    // The decode error says nothing about the key's content, but keep the message fixed anyway.
    let identity = NodeIdentity::from_kubo_private_key(&private_key).map_err(|_| {
        corrupt(
            n,
            format!("node {index}: `private_key` is not a valid libp2p private key"),
        )
    })?;
    let peer_id: String = col(row, n, "peer_id")?;
    if identity.peer_id().to_string() != peer_id {
        return Err(corrupt(
            n,
            format!("node {index}: `peer_id` does not match the stored private key"),
        ));
    }
    Ok(NodeRow {
        ports: StoredPorts {
            swarm: opt_int(row, n, "swarm_port")?,
            api: opt_int(row, n, "api_port")?,
            gateway: opt_int(row, n, "gateway_port")?,
        },
        container_id: col(row, n, "container_id")?,
        last_error: col(row, n, "last_error")?,
        network,
        index,
        identity,
    })
}

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
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
        );
        let query = bind_network(sqlx::query(sqlx::AssertSqlSafe(sql)), network)?;
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
        row.as_ref().map(network_from_row).transpose()
    }

    async fn list_networks(&self) -> Result<Vec<NetworkRecord>> {
        let sql = format!("SELECT {NETWORK_COLUMNS} FROM networks ORDER BY name");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| query_err("list networks", e))?;
        let mut networks = rows
            .iter()
            .map(network_from_row)
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
                   api_allow = $17, api_deny = $18 \
                   WHERE name = $1";
        let affected = self
            .write(bind_network(sqlx::query(sql), network)?)
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
        let private_key = node.identity.kubo_private_key().map_err(|_| {
            StoreError::Query("put node: the node's private key cannot be encoded".into())
        })?;
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
            .bind(node.ports.api.map(i64::from))
            .bind(node.ports.gateway.map(i64::from))
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
        rows.iter().map(node_from_row).collect()
    }

    async fn all_nodes(&self) -> Result<Vec<NodeRow>> {
        let sql = format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY network, idx");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| query_err("list all nodes", e))?;
        let mut nodes = rows.iter().map(node_from_row).collect::<Result<Vec<_>>>()?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_userinfo_password() {
        assert_eq!(
            redact_url("postgres://nexus:s3cret@db.example:5432/nexus"),
            "postgres://nexus:<redacted>@db.example:5432/nexus"
        );
        // `@` and `:` inside the password.
        assert_eq!(
            redact_url("postgresql://u:p@ss:w0rd@host/db?sslmode=disable"),
            "postgresql://u:<redacted>@host/db?sslmode=disable"
        );
        assert_eq!(
            redact_url("postgres://u:pw@host"),
            "postgres://u:<redacted>@host"
        );
        // Unencoded `/` and `#` in the password.
        assert_eq!(
            redact_url("postgres://u:pa/ss#x@host:5432/db"),
            "postgres://u:<redacted>@host:5432/db"
        );
        assert_eq!(
            redact_url("postgres://:onlypw@host/db"),
            "postgres://:<redacted>@host/db"
        );
    }

    #[test]
    fn redacts_password_query_parameter() {
        assert_eq!(
            redact_url("postgres://host/db?user=u&password=hunter22&sslmode=off"),
            "postgres://host/db?user=u&password=<redacted>&sslmode=off"
        );
        assert_eq!(
            redact_url("postgres://u@host/db?PASSWORD=x#frag"),
            "postgres://u@host/db?PASSWORD=<redacted>#frag"
        );
    }

    #[test]
    fn leaves_urls_without_password_alone() {
        for url in [
            "postgres://nexus@127.0.0.1:5432/postgres",
            "sqlite:///var/lib/nexus/nexus.db?mode=rwc",
            "sqlite://nexus.db",
            "sqlite::memory:",
            "not a url",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn scrub_removes_passwords_from_messages() {
        let url = "postgres://u:hunter22@host/db";
        let msg = format!("failed to connect to {url}; password hunter22 rejected");
        let out = scrub(&msg, url);
        assert!(!out.contains("hunter22"), "{out}");
        assert!(out.contains("postgres://u:<redacted>@host/db"), "{out}");
    }

    #[test]
    fn sqlite_files_are_created_unless_a_mode_is_given() {
        assert_eq!(
            sqlite_create_if_missing("sqlite:///d/n.db"),
            "sqlite:///d/n.db?mode=rwc"
        );
        assert_eq!(
            sqlite_create_if_missing("sqlite://n.db?cache=shared"),
            "sqlite://n.db?cache=shared&mode=rwc"
        );
        assert_eq!(
            sqlite_create_if_missing("sqlite://n.db?mode=ro"),
            "sqlite://n.db?mode=ro"
        );
    }

    #[tokio::test]
    async fn sqlite_file_is_created_without_mode_parameter() {
        let dir = std::env::temp_dir().join(format!("nexus-sql-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fresh.db");
        let _ = std::fs::remove_file(&path);
        let store = SqlStore::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        assert!(store.list_networks().await.unwrap().is_empty());
        store.close().await;
        assert!(path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn backend_from_url() {
        assert_eq!(Backend::from_url("sqlite::memory:"), Some(Backend::Sqlite));
        assert_eq!(Backend::from_url("sqlite://x.db"), Some(Backend::Sqlite));
        assert_eq!(Backend::from_url("postgres://h/d"), Some(Backend::Postgres));
        assert_eq!(
            Backend::from_url("postgresql://h/d"),
            Some(Backend::Postgres)
        );
        assert_eq!(Backend::from_url("mysql://h/d"), None);
    }

    #[test]
    fn debug_hides_password() {
        // The Debug impl only ever sees the redacted URL; check the formatting path directly.
        let shown = format!("{:?}", redact_url("postgres://u:topsecret@h/d"));
        assert!(!shown.contains("topsecret"));
    }

    #[tokio::test]
    async fn debug_of_a_store_hides_password() {
        let store = SqlStore::connect("sqlite::memory:").await.unwrap();
        let shown = format!("{store:?}");
        assert!(shown.contains("sqlite::memory:"), "{shown}");
        assert!(shown.contains("Sqlite"), "{shown}");
    }

    #[tokio::test]
    async fn open_error_hides_password() {
        // `.invalid` never resolves (RFC 6761): fails at once (a refused connection would be
        // retried until the acquire timeout, as when the database is still starting).
        let err = SqlStore::connect("postgres://nexus:hunter22@nexus-store.invalid/db")
            .await
            .unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(matches!(err, StoreError::Open { .. }), "{shown}");
        assert!(!shown.contains("hunter22"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[tokio::test]
    async fn unsupported_scheme_is_an_open_error() {
        let err = SqlStore::connect("mysql://u:pw123@h/d").await.unwrap_err();
        assert!(matches!(err, StoreError::Open { .. }));
        assert!(!err.to_string().contains("pw123"));
    }
}
