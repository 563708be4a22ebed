//! The store's test suite, run against every backend: SQLite in a temporary file, SQLite in
//! memory (where that makes sense: it cannot be reopened nor reached by a second connection),
//! and Postgres (`NEXUS_TEST_POSTGRES_URL`, set by scripts/test.sh; each test gets its own
//! database, created through that admin URL and dropped at the end, so tests run in parallel).
//! The contract tests also run against the daemon's `CachedStore` over a SQLite file: the cache
//! must be indistinguishable from the database it fronts.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use nexus::access::Access;
use nexus::cid::Cid;
use nexus::names::InstanceName;
use nexus::node::{NetworkName, NodeIdentity, Ports, Resources, SwarmKey};
use nexus::store::seal::{KeyFile, KeySource, Keyring, SealError, SealKey};
use nexus::store::sql::SqlStore;
use nexus::store::{
    Allocation, AllocationStatus, CachedStore, DesiredState, Lease, LeaseHolder, LeaseOutcome,
    NameMatch, NetworkRecord, NetworkStatus, NodeRow, PinFilter, PinRecord, PinStatus, Store,
    StoreError,
};
use sqlx::{AnyConnection, Connection as _, Executor as _};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    SqliteFile,
    SqliteMemory,
    Postgres,
    /// A SQLite file behind the daemon's write-through cache.
    CachedSqliteFile,
}

/// One test's database and a store open on it.
struct TestDb {
    kind: Kind,
    url: String,
    /// The keys the store seals under (a reopen needs them).
    keys: Keyring,
    store: Arc<SqlStore>,
    /// What the contract tests use: `store`, or the cache in front of it.
    s: Arc<dyn Store>,
    dir: Option<PathBuf>,
    /// (admin URL, database name) of a Postgres test database.
    pg: Option<(String, String)>,
}

fn unique_suffix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).expect("rng");
    format!(
        "{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        hex::encode(b)
    )
}

fn postgres_admin_url() -> String {
    std::env::var("NEXUS_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "NEXUS_TEST_POSTGRES_URL is not set: run the suite with scripts/test.sh (it starts a \
             throwaway Postgres), or export an admin-capable URL such as \
             postgres://nexus@127.0.0.1:5432/postgres"
        )
    })
}

/// `url` pointing at database `db` instead (query string kept).
fn with_database(url: &str, db: &str) -> String {
    let scheme_end = url.find("://").expect("URL has a scheme") + 3;
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let after_authority = &rest[authority_end..];
    let query = after_authority
        .find('?')
        .map(|q| &after_authority[q..])
        .unwrap_or("");
    format!(
        "{}{}/{db}{query}",
        &url[..scheme_end],
        &rest[..authority_end]
    )
}

impl TestDb {
    async fn new(kind: Kind) -> Self {
        sqlx::any::install_default_drivers();
        let (url, dir, pg) = match kind {
            Kind::SqliteFile | Kind::CachedSqliteFile => {
                let dir = std::env::temp_dir().join(format!("nexus-store-{}", unique_suffix()));
                std::fs::create_dir_all(&dir).expect("temp dir");
                let url = format!("sqlite://{}?mode=rwc", dir.join("nexus.db").display());
                (url, Some(dir), None)
            }
            Kind::SqliteMemory => ("sqlite::memory:".to_string(), None, None),
            Kind::Postgres => {
                let admin = postgres_admin_url();
                let name = format!("nexus_test_{}", unique_suffix());
                let mut conn = AnyConnection::connect(&admin)
                    .await
                    .expect("connect to the Postgres admin URL");
                conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                    .await
                    .expect("create test database");
                conn.close().await.ok();
                (with_database(&admin, &name), None, Some((admin, name)))
            }
        };
        let keys = Keyring::generate().expect("seal keys");
        let store = Arc::new(
            SqlStore::connect(&url, keys.clone())
                .await
                .expect("open store"),
        );
        let s: Arc<dyn Store> = if kind == Kind::CachedSqliteFile {
            Arc::new(CachedStore::new(store.clone()))
        } else {
            store.clone()
        };
        Self {
            kind,
            url,
            keys,
            store,
            s,
            dir,
            pg,
        }
    }

    /// A second, independent connection for raw SQL (not for in-memory SQLite).
    async fn raw(&self) -> AnyConnection {
        assert_ne!(self.kind, Kind::SqliteMemory);
        AnyConnection::connect(&self.url)
            .await
            .expect("raw connection")
    }

    async fn finish(self) {
        self.store.close().await;
        if let Some((admin, name)) = &self.pg {
            let mut conn = AnyConnection::connect(admin).await.expect("admin");
            conn.execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
            )))
            .await
            .expect("drop test database");
            conn.close().await.ok();
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn name(s: &str) -> NetworkName {
    NetworkName::new(s).expect("valid network name")
}

/// A record with every field set to something unusual.
fn full_record(n: &str) -> NetworkRecord {
    NetworkRecord {
        name: name(n),
        replicas: u16::MAX,
        resources: Resources {
            cpu_millis: 256_000,
            memory_bytes: 4096 << 30,
            disk_bytes: 5 << 40,
        },
        access: Access {
            users: vec![
                "alice".into(),
                "bob \"o'neil\" ✓".into(),
                String::new(),
                "x,y;DROP TABLE networks;--".into(),
            ],
            gateway_public: true,
            ipns_dns: true,
            allowed_origins: vec!["https://a.example".into(), "http://localhost:3000".into()],
            api_allow: vec!["key/list".into(), "\"quoted\"".into()],
            api_deny: vec!["pin/rm".into()],
        },
        swarm_key: SwarmKey::generate().expect("key"),
        bootstrap_peers: vec![
            "/ip4/203.0.113.7/tcp/4001/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"
                .into(),
        ],
        desired: DesiredState::Stopped,
        status: NetworkStatus::Degraded,
        status_reason: Some("node 2: exited with 137 (OOM) — 'quoted'".into()),
        created_at: 1_700_000_000_123,
        updated_at: 1_700_000_999_456,
        activated_at: Some(-1),
        subnet: Some("10.224.3.64/26".parse().expect("cidr")),
        image: Some("registry.example/kubo:v0.43.1@sha256:'quoted'".into()),
        replication: nexus::replication::Replication::All,
    }
}

/// A record with the defaults and every optional field empty.
fn plain_record(n: &str) -> NetworkRecord {
    NetworkRecord {
        name: name(n),
        replicas: 1,
        resources: Resources::default(),
        access: Access::default(),
        swarm_key: SwarmKey::generate().expect("key"),
        bootstrap_peers: vec![],
        desired: DesiredState::Running,
        status: NetworkStatus::Pending,
        status_reason: None,
        created_at: 0,
        updated_at: 0,
        activated_at: None,
        subnet: None,
        image: None,
        replication: nexus::replication::Replication::Count(1),
    }
}

fn node(network: &str, index: u16) -> NodeRow {
    NodeRow {
        network: name(network),
        index,
        identity: NodeIdentity::generate(),
        ports: Ports {
            swarm: Some(4001 + index),
        },
        container_id: Some(format!("c0ffee{index:04}")),
        last_error: None,
    }
}

fn private_key(n: &NodeRow) -> String {
    n.identity.kubo_private_key().expect("encode key")
}

fn assert_same_nodes(got: &[NodeRow], want: &[NodeRow]) {
    assert_eq!(got, want);
    for (g, w) in got.iter().zip(want) {
        assert_eq!(
            private_key(g),
            private_key(w),
            "private key of node {}",
            w.index
        );
    }
}

// ---- the tests, each run on every backend (see the macro at the end) ----

async fn round_trip_every_field(db: &TestDb) {
    let s = &db.s;
    let full = full_record("full");
    let plain = plain_record("plain");
    s.create_network(&full).await.unwrap();
    s.create_network(&plain).await.unwrap();

    let got = s.get_network(&full.name).await.unwrap().expect("stored");
    assert_eq!(got, full);
    assert_eq!(got.swarm_key, full.swarm_key);
    assert_eq!(
        got.swarm_key.to_file_contents(),
        full.swarm_key.to_file_contents()
    );
    assert_eq!(
        s.get_network(&plain.name).await.unwrap(),
        Some(plain.clone())
    );
    assert_eq!(s.get_network(&name("absent")).await.unwrap(), None);

    // Every enum value survives.
    let mut r = plain.clone();
    for desired in [DesiredState::Running, DesiredState::Stopped] {
        for status in [
            NetworkStatus::Pending,
            NetworkStatus::Starting,
            NetworkStatus::Running,
            NetworkStatus::Degraded,
            NetworkStatus::Stopping,
            NetworkStatus::Stopped,
            NetworkStatus::Failed,
        ] {
            r.desired = desired;
            r.status = status;
            s.update_network(&r).await.unwrap();
            assert_eq!(s.get_network(&r.name).await.unwrap(), Some(r.clone()));
        }
    }

    let nodes = vec![node("full", 0), node("full", 1)];
    let mut n2 = node("full", 2);
    n2.ports = Ports::default();
    n2.container_id = None;
    n2.last_error = Some("create failed: image missing\nsecond line".into());
    for n in nodes.iter().chain([&n2]) {
        s.put_node(n).await.unwrap();
    }
    let want: Vec<NodeRow> = nodes.into_iter().chain([n2]).collect();
    assert_same_nodes(&s.list_nodes(&full.name).await.unwrap(), &want);
}

async fn duplicate_create_is_refused(db: &TestDb) {
    let s = &db.s;
    let first = plain_record("dup");
    s.create_network(&first).await.unwrap();
    let err = s.create_network(&full_record("dup")).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Duplicate(n) if n == "dup"),
        "{err:?}"
    );
    // The first one is untouched.
    assert_eq!(s.get_network(&first.name).await.unwrap(), Some(first));
}

async fn update_replaces_and_missing_is_not_found(db: &TestDb) {
    let s = &db.s;
    let err = s.update_network(&plain_record("ghost")).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound(n) if n == "ghost"),
        "{err:?}"
    );
    assert_eq!(s.get_network(&name("ghost")).await.unwrap(), None);

    let mut r = plain_record("upd");
    s.create_network(&r).await.unwrap();
    let other = plain_record("other");
    s.create_network(&other).await.unwrap();
    let mut replacement = full_record("upd");
    replacement.swarm_key = SwarmKey::generate().unwrap();
    s.update_network(&replacement).await.unwrap();
    assert_eq!(
        s.get_network(&r.name).await.unwrap(),
        Some(replacement.clone())
    );
    // Back to empty optionals.
    r.updated_at = 42;
    s.update_network(&r).await.unwrap();
    assert_eq!(s.get_network(&r.name).await.unwrap(), Some(r));
    assert_eq!(s.get_network(&other.name).await.unwrap(), Some(other));
}

async fn delete_cascades_to_nodes(db: &TestDb) {
    let s = &db.s;
    s.create_network(&plain_record("gone")).await.unwrap();
    s.create_network(&plain_record("kept")).await.unwrap();
    for i in 0..3 {
        s.put_node(&node("gone", i)).await.unwrap();
    }
    let kept = node("kept", 0);
    s.put_node(&kept).await.unwrap();

    s.delete_network(&name("gone")).await.unwrap();
    assert_eq!(s.get_network(&name("gone")).await.unwrap(), None);
    assert!(s.list_nodes(&name("gone")).await.unwrap().is_empty());
    assert_same_nodes(&s.all_nodes().await.unwrap(), std::slice::from_ref(&kept));
    // Absent is not an error.
    s.delete_network(&name("gone")).await.unwrap();
    // The name can be used again, with no nodes left over.
    s.create_network(&plain_record("gone")).await.unwrap();
    assert!(s.list_nodes(&name("gone")).await.unwrap().is_empty());
}

async fn put_node_upserts(db: &TestDb) {
    let s = &db.s;
    s.create_network(&plain_record("up")).await.unwrap();
    let first = node("up", 0);
    s.put_node(&first).await.unwrap();
    assert_same_nodes(
        &s.list_nodes(&name("up")).await.unwrap(),
        std::slice::from_ref(&first),
    );

    let replaced = NodeRow {
        identity: NodeIdentity::generate(),
        ports: Ports { swarm: None },
        container_id: None,
        last_error: Some("restarted 3 times".into()),
        ..first.clone()
    };
    s.put_node(&replaced).await.unwrap();
    let got = s.list_nodes(&name("up")).await.unwrap();
    assert_same_nodes(&got, std::slice::from_ref(&replaced));
    assert_ne!(private_key(&got[0]), private_key(&first));

    // delete_node: present, then absent (not an error).
    s.delete_node(&name("up"), 0).await.unwrap();
    assert!(s.list_nodes(&name("up")).await.unwrap().is_empty());
    s.delete_node(&name("up"), 0).await.unwrap();
    s.delete_node(&name("nonet"), 7).await.unwrap();
}

async fn node_of_missing_network_is_not_found(db: &TestDb) {
    let s = &db.s;
    let err = s.put_node(&node("nonet", 0)).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound(n) if n == "nonet"),
        "{err:?}"
    );
    assert!(s.all_nodes().await.unwrap().is_empty());
}

async fn lists_are_ordered(db: &TestDb) {
    let s = &db.s;
    // Byte order: '-' < '0'-'9' < 'a'-'z', whatever the database's collation says.
    let names = ["b", "ab", "a-b", "a1", "a", "a-a", "b0"];
    for n in names {
        s.create_network(&plain_record(n)).await.unwrap();
    }
    let mut want: Vec<&str> = names.to_vec();
    want.sort();
    let got: Vec<String> = s
        .list_networks()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name.as_str().to_string())
        .collect();
    assert_eq!(got, want);

    for i in [10, 2, 0, 1, 300] {
        s.put_node(&node("ab", i)).await.unwrap();
    }
    let idx: Vec<u16> = s
        .list_nodes(&name("ab"))
        .await
        .unwrap()
        .iter()
        .map(|n| n.index)
        .collect();
    assert_eq!(idx, [0, 1, 2, 10, 300]);
}

async fn all_nodes_spans_networks(db: &TestDb) {
    let s = &db.s;
    assert!(s.all_nodes().await.unwrap().is_empty());
    for n in ["net-b", "net-a", "neta"] {
        s.create_network(&plain_record(n)).await.unwrap();
    }
    let mut want = vec![];
    for (n, i) in [
        ("neta", 0),
        ("net-b", 1),
        ("net-a", 2),
        ("net-b", 0),
        ("net-a", 0),
    ] {
        let row = node(n, i);
        s.put_node(&row).await.unwrap();
        want.push(row);
    }
    want.sort_by(|a, b| (a.network.as_str(), a.index).cmp(&(b.network.as_str(), b.index)));
    assert_same_nodes(&s.all_nodes().await.unwrap(), &want);
}

async fn concurrent_creates_one_wins(db: &TestDb) {
    let mut tasks = vec![];
    for _ in 0..16 {
        let store = db.s.clone();
        tasks.push(tokio::spawn(async move {
            store.create_network(&plain_record("race")).await
        }));
    }
    let mut ok = 0;
    let mut dup = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::Duplicate(n)) if n == "race" => dup += 1,
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    assert_eq!((ok, dup), (1, 15));
    assert_eq!(db.s.list_networks().await.unwrap().len(), 1);
}

/// Many writes at once (SQLite commits those waiting together): one that breaks a constraint
/// fails alone, with its own error, and every other lands.
async fn concurrent_writes_fail_alone(db: &TestDb) {
    let s = &db.s;
    for i in 0..8 {
        s.create_network(&plain_record(&format!("w{i}")))
            .await
            .unwrap();
    }
    let mut tasks = vec![];
    for i in 0..64u16 {
        let store = db.s.clone();
        tasks.push(tokio::spawn(async move {
            let r = match i {
                // No such network (foreign key) and an existing name (unique).
                13 => store.put_node(&node("nowhere", 0)).await,
                29 => store.create_network(&plain_record("w3")).await,
                _ => store.put_node(&node(&format!("w{}", i % 8), i / 8)).await,
            };
            (i, r)
        }));
    }
    for t in tasks {
        match t.await.unwrap() {
            (13, r) => assert!(
                matches!(r, Err(StoreError::NotFound(ref n)) if n == "nowhere"),
                "{r:?}"
            ),
            (29, r) => assert!(
                matches!(r, Err(StoreError::Duplicate(ref n)) if n == "w3"),
                "{r:?}"
            ),
            (i, r) => assert!(r.is_ok(), "write {i}: {r:?}"),
        }
    }
    assert_eq!(s.all_nodes().await.unwrap().len(), 62);
    for i in 0..8 {
        let rows = s.list_nodes(&name(&format!("w{i}"))).await.unwrap();
        let want: Vec<u16> = (0..8u16)
            .filter(|j| !matches!(j * 8 + i, 13 | 29))
            .collect();
        assert_eq!(
            rows.iter().map(|r| r.index).collect::<Vec<_>>(),
            want,
            "network w{i}"
        );
    }
}

async fn memory_stores_are_private(db: &TestDb) {
    let a = SqlStore::connect("sqlite::memory:", db.keys.clone())
        .await
        .unwrap();
    let b = SqlStore::connect("sqlite::memory:", db.keys.clone())
        .await
        .unwrap();
    a.create_network(&plain_record("mine")).await.unwrap();
    assert_eq!(a.list_networks().await.unwrap().len(), 1);
    assert!(b.list_networks().await.unwrap().is_empty());
}

// ---- persistent backends only ----

async fn reopen_keeps_data_and_migrations_are_idempotent(db: &TestDb) {
    let full = full_record("persist");
    db.store.create_network(&full).await.unwrap();
    let n = node("persist", 3);
    db.store.put_node(&n).await.unwrap();
    db.store.close().await;

    for _ in 0..2 {
        let again = SqlStore::connect(&db.url, db.keys.clone())
            .await
            .expect("reopen");
        assert_eq!(
            again.get_network(&full.name).await.unwrap(),
            Some(full.clone())
        );
        assert_same_nodes(&again.all_nodes().await.unwrap(), std::slice::from_ref(&n));
        again.close().await;
    }
    let mut raw = db.raw().await;
    let (applied,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .expect("migrations dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
        })
        .count();
    assert_eq!(
        applied as usize, migrations,
        "each migration applied exactly once"
    );
    if db.kind == Kind::SqliteFile {
        let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
            .fetch_one(&mut raw)
            .await
            .unwrap();
        assert_eq!(mode.to_ascii_lowercase(), "wal");
    }
    raw.close().await.ok();
}

async fn damaged_rows_are_corrupt_without_leaking(db: &TestDb) {
    let s = &db.s;
    let good = plain_record("good");
    s.create_network(&good).await.unwrap();
    s.create_network(&plain_record("bad")).await.unwrap();
    s.put_node(&node("good", 0)).await.unwrap();

    let leaked_key = "/key/swarm/psk/1.0.0/\n/base16/\nSECRETSECRETd00d";
    let mut raw = db.raw().await;
    let (sealed_bad_key,): (String,) =
        sqlx::query_as("SELECT swarm_key FROM networks WHERE name = $1")
            .bind("bad")
            .fetch_one(&mut raw)
            .await
            .unwrap();
    sqlx::query("UPDATE networks SET swarm_key = $1 WHERE name = $2")
        .bind(leaked_key)
        .bind("bad")
        .execute(&mut raw)
        .await
        .unwrap();

    let check = |err: StoreError, secret: &str| {
        let shown = format!("{err} | {err:?}");
        // Plain text where a sealed value belongs does not open; a sealed value that opens to
        // garbage is damaged.
        assert!(
            matches!(
                &err,
                StoreError::Corrupt { .. }
                    | StoreError::Sealed {
                        cause: SealError::NotSealed,
                        ..
                    }
            ),
            "{shown}"
        );
        assert!(!shown.contains(secret), "error leaks the secret: {shown}");
        assert!(!shown.contains("SECRET"), "error leaks the secret: {shown}");
        shown
    };
    let shown = check(s.get_network(&name("bad")).await.unwrap_err(), leaked_key);
    assert!(shown.contains("bad"), "{shown}");
    check(s.list_networks().await.unwrap_err(), leaked_key);
    // Other rows still read.
    assert_eq!(s.get_network(&good.name).await.unwrap(), Some(good));

    // A swarm key with a bad header (the whole key on one line) is not quoted either.
    let one_line = "SECRETSECRET0123456789abcdef0123456789abcdef0123456789abcdef0123";
    sqlx::query("UPDATE networks SET swarm_key = $1 WHERE name = $2")
        .bind(one_line)
        .bind("bad")
        .execute(&mut raw)
        .await
        .unwrap();
    check(s.get_network(&name("bad")).await.unwrap_err(), one_line);

    // A damaged private key, and a peer id that does not match its key.
    let bad_priv = "SECRETSECRET+not/a/key==";
    sqlx::query("UPDATE nodes SET private_key = $1 WHERE network = $2 AND idx = 0")
        .bind(bad_priv)
        .bind("good")
        .execute(&mut raw)
        .await
        .unwrap();
    check(s.list_nodes(&name("good")).await.unwrap_err(), bad_priv);
    check(s.all_nodes().await.unwrap_err(), bad_priv);

    // Another node's key, sealed for this row: opens, but does not match the peer id.
    let other = NodeIdentity::generate();
    let sealed_other = db
        .keys
        .seal(
            other.kubo_private_key().unwrap().as_bytes(),
            "nodes.private_key/good/0",
        )
        .unwrap();
    sqlx::query("UPDATE nodes SET private_key = $1 WHERE network = $2 AND idx = 0")
        .bind(sealed_other)
        .bind("good")
        .execute(&mut raw)
        .await
        .unwrap();
    let shown = format!("{:?}", s.list_nodes(&name("good")).await.unwrap_err());
    assert!(shown.contains("peer_id"), "{shown}");
    assert!(
        !shown.contains(&other.kubo_private_key().unwrap()),
        "{shown}"
    );

    // Out-of-range and unknown values.
    sqlx::query("UPDATE networks SET swarm_key = $1, replicas = $2 WHERE name = $3")
        .bind(sealed_bad_key)
        .bind(70_000_i64)
        .bind("bad")
        .execute(&mut raw)
        .await
        .unwrap();
    let shown = format!("{}", s.get_network(&name("bad")).await.unwrap_err());
    assert!(shown.contains("replicas"), "{shown}");
    sqlx::query("UPDATE networks SET replicas = 1, status = 'sideways' WHERE name = $1")
        .bind("bad")
        .execute(&mut raw)
        .await
        .unwrap();
    let shown = format!("{}", s.get_network(&name("bad")).await.unwrap_err());
    assert!(shown.contains("sideways"), "{shown}");
    raw.close().await.ok();
}

async fn debug_and_errors_hide_the_url_password(db: &TestDb) {
    let shown = format!("{:?}", db.store);
    assert!(shown.starts_with("SqlStore"), "{shown}");
    if db.kind == Kind::Postgres {
        // Same server and database, with a password the trust auth ignores.
        let url = db.url.replacen("://nexus@", "://nexus:hunter2-pw@", 1);
        if url != db.url {
            let store = SqlStore::connect(&url, db.keys.clone())
                .await
                .expect("connect with password");
            let shown = format!("{store:?}");
            assert!(!shown.contains("hunter2-pw"), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
            store.close().await;
        }
        let bad = with_database(&url, "no_such_database_here");
        let err = SqlStore::connect(&bad, db.keys.clone()).await.unwrap_err();
        let shown = format!("{err} | {err:?}");
        assert!(matches!(err, StoreError::Open { .. }), "{shown}");
        assert!(!shown.contains("hunter2-pw"), "{shown}");
    }
}

/// Only for the cache: it answers reads from memory, and a write that fails makes it ask the
/// database again rather than keep what may no longer be true.
async fn cache_forgets_what_a_failed_write_may_have_changed(db: &TestDb) {
    let s = &db.s;
    let rec = plain_record("cached");
    s.create_network(&rec).await.unwrap();
    s.put_node(&node("cached", 0)).await.unwrap();
    // Changed behind the cache's back (as no daemon may do): the cache still answers.
    let mut elsewhere = rec.clone();
    elsewhere.status = NetworkStatus::Failed;
    db.store.update_network(&elsewhere).await.unwrap();
    assert_eq!(s.get_network(&rec.name).await.unwrap(), Some(rec.clone()));
    assert_eq!(s.list_nodes(&rec.name).await.unwrap().len(), 1);
    // A write that fails (the network is gone underneath: foreign key) forgets the network.
    db.store.delete_network(&rec.name).await.unwrap();
    let err = s.put_node(&node("cached", 1)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_eq!(s.get_network(&rec.name).await.unwrap(), None);
    assert!(s.list_nodes(&rec.name).await.unwrap().is_empty());
    // A successful write is seen at once, and reads after it come from the cache again.
    s.create_network(&rec).await.unwrap();
    let mut changed = rec.clone();
    changed.replicas = 3;
    s.update_network(&changed).await.unwrap();
    assert_eq!(s.get_network(&rec.name).await.unwrap(), Some(changed));
    s.delete_node(&rec.name, 0).await.unwrap();
    assert!(s.list_nodes(&rec.name).await.unwrap().is_empty());
}

fn holder(id: &str) -> LeaseHolder {
    LeaseHolder {
        id: id.into(),
        host: format!("host-{id}"),
        pid: 4242,
    }
}

fn acquired(o: LeaseOutcome) -> Lease {
    match o {
        LeaseOutcome::Acquired(l) => l,
        LeaseOutcome::Held(l) => panic!("refused: held by {l}"),
    }
}

fn held(o: LeaseOutcome) -> Lease {
    match o {
        LeaseOutcome::Held(l) => l,
        LeaseOutcome::Acquired(l) => panic!("let in: {l}"),
    }
}

/// The revocation list (issue 15): ids kept until their `forget_at`, a second revocation keeps
/// the later time, expired ones are forgotten; it survives a reopen where the backend can.
async fn revocations_are_kept_until_forgotten(db: &TestDb) {
    let s = &db.s;
    assert!(s.revoked_tokens(0).await.unwrap().is_empty());
    s.revoke_token("b-jti", 100, 1_000).await.unwrap();
    s.revoke_token("a-jti", 100, 2_000).await.unwrap();
    // Again, with an earlier forget_at: the later one stays.
    s.revoke_token("b-jti", 150, 500).await.unwrap();
    let all = s.revoked_tokens(0).await.unwrap();
    let ids: Vec<(&str, i64)> = all.iter().map(|r| (r.jti.as_str(), r.forget_at)).collect();
    assert_eq!(ids, vec![("a-jti", 2_000), ("b-jti", 1_000)]);
    assert_eq!(all[1].revoked_at, 100);
    // Not listed once its time has passed, then deleted.
    let live = s.revoked_tokens(1_000).await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(s.forget_revoked_tokens(1_000).await.unwrap(), 1);
    assert_eq!(s.forget_revoked_tokens(1_000).await.unwrap(), 0);
    if db.kind != Kind::SqliteMemory {
        let again = SqlStore::connect(&db.url, db.keys.clone()).await.unwrap();
        let kept = again.revoked_tokens(0).await.unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].jti, "a-jti");
        again.close().await;
    }
}

async fn instance_is_recorded_once(db: &TestDb) {
    let s = &db.s;
    assert_eq!(s.instance().await.unwrap(), None);
    // Racing first opens all get the same one.
    let claims = (0..8).map(|i| {
        let s = s.clone();
        async move {
            let proposed = InstanceName::new(&format!("racer-{i}")).unwrap();
            s.claim_instance(&proposed).await.unwrap()
        }
    });
    let got = futures_util::future::join_all(claims).await;
    assert!(got.iter().all(|g| g == &got[0]), "{got:?}");
    assert!(got[0].as_str().starts_with("racer-"));
    let later = InstanceName::new("later").unwrap();
    assert_eq!(s.claim_instance(&later).await.unwrap(), got[0]);
    assert_eq!(s.instance().await.unwrap().as_ref(), Some(&got[0]));
}

async fn lease_acquire_renew_expire_release(db: &TestDb) {
    let s = &db.s;
    let inst = InstanceName::new("lease-test").unwrap();
    let other = InstanceName::new("lease-other").unwrap();
    let (a, b) = (holder("a"), holder("b"));
    let long = Duration::from_secs(60);
    assert_eq!(s.get_lease(&inst).await.unwrap(), None);

    // A takes it; B is refused and told who holds it and for how long.
    let first = acquired(s.acquire_lease(&inst, &a, long).await.unwrap());
    assert_eq!((&first.instance, &first.holder), (&inst, &a));
    assert!(first.expires_at - first.acquired_at >= 59_000, "{first:?}");
    let refused = held(s.acquire_lease(&inst, &b, long).await.unwrap());
    assert_eq!(refused.holder, a);
    assert!(refused.remaining_ms() > 50_000, "{refused:?}");
    assert!(
        refused.to_string().contains("host host-a, pid 4242"),
        "{refused}"
    );
    // Instances are independent.
    acquired(s.acquire_lease(&other, &b, long).await.unwrap());
    // Its holder may take it again (it keeps acquired_at) and renew it.
    let again = acquired(s.acquire_lease(&inst, &a, long).await.unwrap());
    assert_eq!(again.acquired_at, first.acquired_at);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let renewed = s
        .renew_lease(&inst, &a, long)
        .await
        .unwrap()
        .expect("renewed");
    assert!(
        renewed.expires_at > first.expires_at,
        "{renewed:?} {first:?}"
    );
    assert!(renewed.renewed_at >= renewed.acquired_at);
    // B cannot renew what it does not hold.
    assert_eq!(s.renew_lease(&inst, &b, long).await.unwrap(), None);

    // A short lease that is not renewed expires: B takes it, A has lost it.
    acquired(
        s.acquire_lease(&inst, &a, Duration::from_millis(300))
            .await
            .unwrap(),
    );
    held(s.acquire_lease(&inst, &b, long).await.unwrap());
    tokio::time::sleep(Duration::from_millis(600)).await;
    let expired = s.get_lease(&inst).await.unwrap().expect("still stored");
    assert_eq!(
        (expired.holder.clone(), expired.remaining_ms()),
        (a.clone(), 0)
    );
    let taken = acquired(s.acquire_lease(&inst, &b, long).await.unwrap());
    assert_eq!(taken.holder, b);
    assert!(taken.acquired_at > first.acquired_at);
    assert_eq!(s.renew_lease(&inst, &a, long).await.unwrap(), None);
    // A releasing what it lost changes nothing; B's release frees it.
    s.release_lease(&inst, &a).await.unwrap();
    assert_eq!(s.get_lease(&inst).await.unwrap().unwrap().holder, b);
    s.release_lease(&inst, &b).await.unwrap();
    assert_eq!(s.get_lease(&inst).await.unwrap(), None);
    acquired(s.acquire_lease(&inst, &a, long).await.unwrap());
}

async fn concurrent_acquires_one_wins(db: &TestDb) {
    let s = &db.s;
    let inst = InstanceName::new("lease-race").unwrap();
    let tries = (0..8).map(|i| {
        let s = s.clone();
        let inst = inst.clone();
        async move {
            s.acquire_lease(&inst, &holder(&format!("h{i}")), Duration::from_secs(60))
                .await
                .unwrap()
        }
    });
    let outcomes = futures_util::future::join_all(tries).await;
    let winners: Vec<_> = outcomes
        .iter()
        .filter_map(|o| match o {
            LeaseOutcome::Acquired(l) => Some(l.holder.clone()),
            LeaseOutcome::Held(_) => None,
        })
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    for o in &outcomes {
        if let LeaseOutcome::Held(l) = o {
            assert_eq!(l.holder, winners[0]);
        }
    }
}

// ---- sealing (persistent backends) ----

/// The raw text of every sealed column, read behind the store's back.
async fn raw_secrets(db: &TestDb) -> Vec<String> {
    let mut raw = db.raw().await;
    let mut out: Vec<String> = sqlx::query_as::<_, (String,)>("SELECT swarm_key FROM networks")
        .fetch_all(&mut raw)
        .await
        .unwrap()
        .into_iter()
        .map(|(v,)| v)
        .collect();
    out.extend(
        sqlx::query_as::<_, (String,)>("SELECT private_key FROM nodes")
            .fetch_all(&mut raw)
            .await
            .unwrap()
            .into_iter()
            .map(|(v,)| v),
    );
    raw.close().await.ok();
    out
}

/// Networks `names` with `nodes` nodes each, written through the store.
async fn populate(s: &dyn Store, names: &[&str], nodes: u16) -> (Vec<NetworkRecord>, Vec<NodeRow>) {
    let mut recs = Vec::new();
    let mut rows = Vec::new();
    for n in names {
        let rec = full_record(n);
        s.create_network(&rec).await.unwrap();
        for i in 0..nodes {
            let row = node(n, i);
            s.put_node(&row).await.unwrap();
            rows.push(row);
        }
        recs.push(rec);
    }
    (recs, rows)
}

async fn assert_reads_back(s: &dyn Store, recs: &[NetworkRecord], rows: &[NodeRow]) {
    for rec in recs {
        assert_eq!(s.get_network(&rec.name).await.unwrap().as_ref(), Some(rec));
    }
    assert_same_nodes(&s.all_nodes().await.unwrap(), rows);
}

async fn secrets_are_sealed_and_bound_to_their_row(db: &TestDb) {
    let (recs, rows) = populate(db.s.as_ref(), &["seal-a", "seal-b"], 2).await;
    let stored = raw_secrets(db).await;
    assert_eq!(stored.len(), 6);
    let prefix = format!("sealed:v1:{}:", db.keys.current().id());
    for v in &stored {
        assert!(v.starts_with(&prefix), "not sealed under the current key");
    }
    for rec in &recs {
        let hex = swarm_key_bytes(&rec.swarm_key);
        assert!(!stored.iter().any(|v| v.contains(&hex::encode(&hex))));
    }
    for row in &rows {
        assert!(!stored.iter().any(|v| v.contains(&private_key(row))));
    }
    assert_reads_back(db.s.as_ref(), &recs, &rows).await;

    // A sealed value copied into another row does not open there, and says so.
    let mut raw = db.raw().await;
    sqlx::query(
        "UPDATE networks SET swarm_key = (SELECT swarm_key FROM networks WHERE name = 'seal-a') \
         WHERE name = 'seal-b'",
    )
    .execute(&mut raw)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE nodes SET private_key = (SELECT private_key FROM nodes WHERE network = 'seal-a' \
         AND idx = 0) WHERE network = 'seal-a' AND idx = 1",
    )
    .execute(&mut raw)
    .await
    .unwrap();
    raw.close().await.ok();
    let err = db.store.get_network(&name("seal-b")).await.unwrap_err();
    let shown = format!("{err} | {err:?}");
    assert!(
        matches!(
            &err,
            StoreError::Sealed {
                cause: SealError::Forged { .. },
                ..
            }
        ),
        "{shown}"
    );
    assert!(
        shown.contains("seal-b") && shown.contains("swarm_key"),
        "{shown}"
    );
    assert!(shown.contains("moved from another row"), "{shown}");
    let err = db.store.list_nodes(&name("seal-a")).await.unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::Sealed {
                cause: SealError::Forged { .. },
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        db.store
            .get_network(&name("seal-a"))
            .await
            .unwrap()
            .as_ref(),
        Some(&recs[0])
    );
}

async fn legacy_plaintext_rows_are_sealed_on_open(db: &TestDb) {
    let (recs, rows) = populate(db.s.as_ref(), &["legacy-a", "legacy-b"], 3).await;
    db.store.close().await;

    // Rows as nexus wrote them before sealing existed: plain text, written with raw SQL.
    let mut raw = db.raw().await;
    for rec in &recs {
        sqlx::query("UPDATE networks SET swarm_key = $1 WHERE name = $2")
            .bind(rec.swarm_key.to_file_contents())
            .bind(rec.name.as_str().to_string())
            .execute(&mut raw)
            .await
            .unwrap();
    }
    for row in &rows {
        sqlx::query("UPDATE nodes SET private_key = $1 WHERE network = $2 AND idx = $3")
            .bind(private_key(row))
            .bind(row.network.as_str().to_string())
            .bind(i64::from(row.index))
            .execute(&mut raw)
            .await
            .unwrap();
    }
    raw.close().await.ok();
    assert!(raw_secrets(db)
        .await
        .iter()
        .all(|v| !v.starts_with("sealed:")));

    // The first open seals every one of them under the current key.
    let again = SqlStore::connect(&db.url, db.keys.clone())
        .await
        .expect("reopen seals");
    let stored = raw_secrets(db).await;
    let prefix = format!("sealed:v1:{}:", db.keys.current().id());
    assert_eq!(stored.len(), recs.len() + rows.len());
    assert!(stored.iter().all(|v| v.starts_with(&prefix)), "all sealed");
    assert_eq!(again.stale_secrets().await.unwrap(), 0);
    assert_reads_back(&again, &recs, &rows).await;
    // A second open finds nothing to do.
    assert_eq!(again.reseal().await.unwrap(), Default::default());

    // Plain text planted behind a running store's back does not open (nothing accepts an
    // unsealed secret) and the message says what to do.
    let mut raw = db.raw().await;
    sqlx::query("UPDATE networks SET swarm_key = $1 WHERE name = 'legacy-a'")
        .bind(recs[0].swarm_key.to_file_contents())
        .execute(&mut raw)
        .await
        .unwrap();
    raw.close().await.ok();
    let err = again.get_network(&recs[0].name).await.unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::Sealed {
                cause: SealError::NotSealed,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("restart"), "{err}");
    again.close().await;
}

async fn rotation_reseals_every_row_under_the_new_key(db: &TestDb) {
    let (recs, rows) = populate(db.s.as_ref(), &["rot-a", "rot-b", "rot-c"], 2).await;
    let dir = std::env::temp_dir().join(format!("nexus-rotate-{}", unique_suffix()));
    let file = KeyFile::new(dir.join("seal.key"));
    file.write(&db.keys).unwrap();

    // Configured keys cannot be rewritten: the error says how to rotate them.
    let configured = KeySource::Configured {
        keyring: db.keys.clone(),
        origin: "store.seal_key (from NEXUS_STORE_SEAL_KEY)".into(),
    };
    let err = db.store.rotate(&configured).await.unwrap_err().to_string();
    assert!(
        err.contains("store.seal_previous_keys") && err.contains("restart"),
        "{err}"
    );

    // Writes go on during the rotation (no downtime).
    let writer = {
        let s = db.s.clone();
        let mut rec = recs[0].clone();
        tokio::spawn(async move {
            for i in 0..40 {
                rec.updated_at = i;
                s.update_network(&rec).await.expect("write during rotation");
                s.get_network(&rec.name)
                    .await
                    .expect("read during rotation");
            }
        })
    };
    let rotation = db
        .store
        .rotate(&KeySource::File(file.clone()))
        .await
        .unwrap();
    writer.await.unwrap();
    assert_eq!(rotation.old_key_id, db.keys.current().id());
    assert_ne!(rotation.new_key_id, rotation.old_key_id);
    assert_eq!(rotation.resealed.nodes, rows.len() as u64);
    // The network written meanwhile may have been sealed under the new key by its own write.
    assert!(
        (recs.len() as u64 - 1..=recs.len() as u64).contains(&rotation.resealed.networks),
        "{rotation:?}"
    );
    assert_eq!(rotation.key_file, file.path());

    // Every row is under the new key; the file holds only the new key.
    let prefix = format!("sealed:v1:{}:", rotation.new_key_id);
    assert!(raw_secrets(db).await.iter().all(|v| v.starts_with(&prefix)));
    let new_ring = file.read().unwrap().expect("key file");
    assert_eq!(new_ring.current().id(), rotation.new_key_id);
    assert!(new_ring.previous().is_empty());
    assert_eq!(db.store.keyring().as_ref(), &new_ring);
    assert_eq!(db.store.stale_secrets().await.unwrap(), 0);

    // The store reads everything back, and so does a new one with only the new key.
    let mut want = recs.clone();
    want[0].updated_at = 39;
    assert_reads_back(db.s.as_ref(), &want, &rows).await;
    let fresh = SqlStore::connect(&db.url, new_ring.clone())
        .await
        .expect("new key opens");
    assert_reads_back(&fresh, &want, &rows).await;
    fresh.close().await;

    // The old key alone opens nothing any more: the open names the key it lacks.
    let err = SqlStore::connect(&db.url, db.keys.clone())
        .await
        .unwrap_err();
    let shown = err.to_string();
    assert!(
        matches!(
            &err,
            StoreError::Sealed {
                cause: SealError::UnknownKey { .. },
                ..
            }
        ),
        "{shown}"
    );
    assert!(shown.contains(&rotation.new_key_id), "{shown}");
    assert!(shown.contains(db.keys.current().id()), "{shown}");

    // A keyring with the new key current and the old as previous is also fine (restart in
    // the middle of a rotation), and finishing drops the previous key.
    let middle = db.keys.rotated_to(new_ring.current().clone()).unwrap();
    file.write(&middle).unwrap();
    let resumed = SqlStore::connect(&db.url, middle).await.expect("resume");
    resumed.drop_previous_keys(&file).await.unwrap();
    assert!(file.read().unwrap().unwrap().previous().is_empty());
    resumed.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

async fn a_changed_configured_key_reseals_at_open(db: &TestDb) {
    let (recs, rows) = populate(db.s.as_ref(), &["cfg-a"], 2).await;
    db.store.close().await;
    // The operator's rotation with configured keys: the new key current, the old previous.
    let new_key = SealKey::generate().unwrap();
    let ring = db.keys.rotated_to(new_key.clone()).unwrap();
    let again = SqlStore::connect(&db.url, ring).await.expect("reopen");
    let prefix = format!("sealed:v1:{}:", new_key.id());
    assert!(raw_secrets(db).await.iter().all(|v| v.starts_with(&prefix)));
    again.close().await;
    let only_new = Keyring::new(new_key, vec![]).unwrap();
    let again = SqlStore::connect(&db.url, only_new)
        .await
        .expect("new key only");
    assert_reads_back(&again, &recs, &rows).await;
    again.close().await;
}

/// The swarm key's 32 bytes.
fn swarm_key_bytes(k: &SwarmKey) -> Vec<u8> {
    let text = k.to_file_contents();
    let hex_line = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .expect("key line");
    hex::decode(hex_line).expect("hex")
}

/// Every encoding of a secret a file could hold it in.
fn encodings(raw: &[u8]) -> Vec<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    vec![
        raw.to_vec(),
        hex::encode(raw).into_bytes(),
        hex::encode_upper(raw).into_bytes(),
        STANDARD.encode(raw).into_bytes(),
        STANDARD_NO_PAD.encode(raw).into_bytes(),
        URL_SAFE.encode(raw).into_bytes(),
        URL_SAFE_NO_PAD.encode(raw).into_bytes(),
    ]
}

/// Every needle for the secrets of `recs` and `rows`, named.
fn needles(recs: &[NetworkRecord], rows: &[NodeRow]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for rec in recs {
        let key = swarm_key_bytes(&rec.swarm_key);
        assert_eq!(key.len(), 32);
        for (i, e) in encodings(&key).into_iter().enumerate() {
            out.push((format!("swarm key of {} (encoding {i})", rec.name), e));
        }
        out.push((
            format!("swarm.key file of {}", rec.name),
            rec.swarm_key.to_file_contents().into_bytes(),
        ));
    }
    for row in rows {
        let kubo = private_key(row);
        out.push((
            format!("private key of {}/{} (kubo)", row.network, row.index),
            kubo.clone().into_bytes(),
        ));
        let proto = base64::engine::general_purpose::STANDARD
            .decode(&kubo)
            .expect("kubo's PrivKey is base64");
        // The protobuf, and the ed25519 secret inside it (its Data field starts with the
        // 32-byte seed).
        for (what, raw) in [
            ("protobuf", proto.clone()),
            ("seed", proto[proto.len() - 64..proto.len() - 32].to_vec()),
        ] {
            for (i, e) in encodings(&raw).into_iter().enumerate() {
                out.push((
                    format!(
                        "private key of {}/{} ({what}, encoding {i})",
                        row.network, row.index
                    ),
                    e,
                ));
            }
        }
    }
    out
}

/// Which needles the database files (`nexus.db`, `-wal`, `-shm`) hold.
fn found_in_files(dir: &std::path::Path, needles: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut found = Vec::new();
    let mut read_any = false;
    for f in ["nexus.db", "nexus.db-wal", "nexus.db-shm"] {
        let Ok(bytes) = std::fs::read(dir.join(f)) else {
            continue;
        };
        read_any |= !bytes.is_empty();
        for (what, needle) in needles {
            if bytes.windows(needle.len()).any(|w| w == needle.as_slice()) {
                found.push(format!("{what} in {f}"));
            }
        }
    }
    assert!(read_any, "no database file in {}", dir.display());
    found
}

/// The check: a copy of the database files without the key yields no secret, in any
/// encoding; also after a plain-text database of an older nexus was sealed.
async fn no_secret_in_the_database_files(db: &TestDb) {
    let dir = db.dir.clone().expect("a SQLite file");
    let names = ["grep-a", "grep-b", "grep-c"];
    let (mut recs, rows) = populate(db.s.as_ref(), &names, 3).await;
    // Updates too: each rewrites the sealed key (a fresh nonce).
    for rec in &mut recs {
        rec.status = NetworkStatus::Running;
        db.s.update_network(rec).await.unwrap();
    }
    let needles = needles(&recs, &rows);
    // While open (WAL and shm present) and after closing.
    let found = found_in_files(&dir, &needles);
    assert!(
        found.is_empty(),
        "secrets readable in the open database: {found:?}"
    );
    db.store.close().await;
    let found = found_in_files(&dir, &needles);
    assert!(
        found.is_empty(),
        "secrets readable in the closed database: {found:?}"
    );

    // The same rows as an older nexus left them: plain text, written with raw SQL.
    let mut raw = db.raw().await;
    for rec in &recs {
        sqlx::query("UPDATE networks SET swarm_key = $1 WHERE name = $2")
            .bind(rec.swarm_key.to_file_contents())
            .bind(rec.name.as_str().to_string())
            .execute(&mut raw)
            .await
            .unwrap();
    }
    for row in &rows {
        sqlx::query("UPDATE nodes SET private_key = $1 WHERE network = $2 AND idx = $3")
            .bind(private_key(row))
            .bind(row.network.as_str().to_string())
            .bind(i64::from(row.index))
            .execute(&mut raw)
            .await
            .unwrap();
    }
    raw.close().await.ok();
    // The check finds them in that state (it would catch a leak).
    assert!(
        !found_in_files(&dir, &needles).is_empty(),
        "the grep finds plain text"
    );

    // One open seals them and scrubs the file; nothing is left, open or closed.
    let again = SqlStore::connect(&db.url, db.keys.clone())
        .await
        .expect("reopen");
    assert_reads_back(&again, &recs, &rows).await;
    let found = found_in_files(&dir, &needles);
    assert!(found.is_empty(), "plain text left after sealing: {found:?}");
    again.close().await;
    let found = found_in_files(&dir, &needles);
    assert!(
        found.is_empty(),
        "plain text left after sealing and closing: {found:?}"
    );
}

/// The database files are created 0600 and a database others may read is refused.
async fn sqlite_files_are_private(db: &TestDb) {
    use std::os::unix::fs::PermissionsExt;
    let dir = db.dir.clone().expect("a SQLite file");
    populate(db.s.as_ref(), &["perm-a"], 1).await;
    let mode = |f: &str| {
        std::fs::metadata(dir.join(f))
            .map(|m| m.permissions().mode() & 0o777)
            .ok()
    };
    assert_eq!(mode("nexus.db"), Some(0o600));
    // WAL mode: both exist while the store is open, with the database file's mode.
    assert_eq!(mode("nexus.db-wal"), Some(0o600));
    assert_eq!(mode("nexus.db-shm"), Some(0o600));
    db.store.close().await;

    let db_file = dir.join("nexus.db");
    std::fs::set_permissions(&db_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = SqlStore::connect(&db.url, db.keys.clone())
        .await
        .unwrap_err();
    let shown = err.to_string();
    assert!(matches!(err, StoreError::Open { .. }), "{shown}");
    assert!(
        shown.contains(&format!("chmod 600 {}", db_file.display())),
        "{shown}"
    );
    std::fs::set_permissions(&db_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let again = SqlStore::connect(&db.url, db.keys.clone())
        .await
        .expect("0600 opens");
    again.close().await;
}

macro_rules! backend_tests {
    (
        kind = $kind:ident,
        tests = [$($test:ident),* $(,)?]
    ) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                let db = super::TestDb::new(super::Kind::$kind).await;
                super::$test(&db).await;
                db.finish().await;
            }
        )*
    };
}

fn pin(net: &str, id: &str, cid: &str, created_at: i64) -> PinRecord {
    PinRecord {
        network: name(net),
        request_id: id.into(),
        cid: Cid::parse(cid).expect("cid"),
        name: None,
        meta: Default::default(),
        origins: vec![],
        owner: String::new(),
        created_at,
        status: PinStatus::Queued,
        reason: None,
        updated_at: created_at,
        removed_at: None,
        allocations: vec![],
    }
}

const CID_A: &str = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku";
const CID_B: &str = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";

/// Every field of a pin and its allocations comes back as written; status, removal and
/// allocations change alone; deleting the network takes its pinset with it.
async fn pinset_round_trip_and_lifecycle(db: &TestDb) {
    let s = &db.s;
    s.create_network(&plain_record("pins"))
        .await
        .expect("create");
    s.create_network(&plain_record("other"))
        .await
        .expect("create");
    let mut full = pin(
        "pins",
        "0123456789abcdef0123456789abcdef",
        CID_A,
        1_700_000_000_001,
    );
    full.name = Some("report \"q1\" ✓ 'x'; DROP TABLE pins;--".into());
    full.meta = [
        ("app".to_string(), "photos".to_string()),
        ("k".into(), String::new()),
    ]
    .into_iter()
    .collect();
    full.origins = vec![
        "/ip4/203.0.113.7/tcp/4001/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo".into(),
    ];
    full.owner = "alice".into();
    full.allocations = vec![
        Allocation {
            node: 2,
            status: AllocationStatus::Pinning,
            reason: None,
            attempts: 0,
            updated_at: 5,
        },
        Allocation {
            node: 0,
            status: AllocationStatus::Failed,
            reason: Some("timeout after 30s".into()),
            attempts: 3,
            updated_at: 6,
        },
    ];
    s.create_pin(&full).await.expect("create pin");
    let mut want = full.clone();
    want.allocations.sort_by_key(|a| a.node);
    assert_eq!(
        s.get_pin(&name("pins"), &full.request_id)
            .await
            .expect("get"),
        Some(want.clone())
    );
    // Another network's id is not this network's pin.
    assert_eq!(
        s.get_pin(&name("other"), &full.request_id)
            .await
            .expect("get"),
        None
    );
    // A pin of a network that does not exist.
    assert!(matches!(
        s.create_pin(&pin("absent", "ff", CID_A, 1)).await,
        Err(StoreError::NotFound(_))
    ));
    // Status.
    assert!(s
        .set_pin_status(
            &name("pins"),
            &full.request_id,
            PinStatus::Failed,
            Some("no provider"),
            9
        )
        .await
        .expect("status"));
    assert!(!s
        .set_pin_status(&name("pins"), "nope", PinStatus::Pinned, None, 9)
        .await
        .expect("status"));
    let got = s
        .get_pin(&name("pins"), &full.request_id)
        .await
        .expect("get")
        .expect("pin");
    assert_eq!(
        (got.status, got.reason.as_deref(), got.updated_at),
        (PinStatus::Failed, Some("no provider"), 9)
    );
    // Allocations: upsert, delete; a pin that is not there.
    let a = Allocation {
        node: 2,
        status: AllocationStatus::Pinned,
        reason: None,
        attempts: 0,
        updated_at: 10,
    };
    s.put_allocation(&name("pins"), &full.request_id, &a)
        .await
        .expect("put");
    s.delete_allocation(&name("pins"), &full.request_id, 0)
        .await
        .expect("delete");
    s.delete_allocation(&name("pins"), &full.request_id, 7)
        .await
        .expect("absent is fine");
    assert!(matches!(
        s.put_allocation(&name("pins"), "nope", &a).await,
        Err(StoreError::NotFound(_))
    ));
    let got = s
        .get_pin(&name("pins"), &full.request_id)
        .await
        .expect("get")
        .expect("pin");
    assert_eq!(got.allocations, vec![a]);
    let counts = s.pin_counts(&name("pins")).await.expect("counts");
    assert_eq!((counts.failed, counts.total()), (1, 1));
    // Removal: hidden from listings and counts, still in the pinset until deleted.
    assert!(s
        .remove_pin(&name("pins"), &full.request_id, 11)
        .await
        .expect("remove"));
    assert!(!s
        .remove_pin(&name("pins"), &full.request_id, 12)
        .await
        .expect("again"));
    assert_eq!(
        s.list_pins(&name("pins"), &PinFilter::default())
            .await
            .expect("list")
            .count,
        0
    );
    assert_eq!(
        s.pin_counts(&name("pins")).await.expect("counts").total(),
        0
    );
    let set = s.pinset(&name("pins")).await.expect("pinset");
    assert_eq!(set.len(), 1);
    assert_eq!(set[0].removed_at, Some(11));
    assert_eq!(set[0].allocations.len(), 1);
    s.delete_pin(&name("pins"), &full.request_id)
        .await
        .expect("delete");
    assert!(s.pinset(&name("pins")).await.expect("pinset").is_empty());
    // Deleting a network deletes its pins and their allocations.
    s.create_pin(&full).await.expect("again");
    s.delete_network(&name("pins"))
        .await
        .expect("delete network");
    s.create_network(&plain_record("pins"))
        .await
        .expect("recreate");
    assert!(s.pinset(&name("pins")).await.expect("pinset").is_empty());
}

/// Listing: newest first, every filter, `count` of all matches with a page of `limit`.
async fn pin_listing_filters_and_pages(db: &TestDb) {
    let s = &db.s;
    s.create_network(&plain_record("list"))
        .await
        .expect("create");
    for i in 0..30i64 {
        let mut p = pin(
            "list",
            &format!("id{i:02}"),
            if i % 3 == 0 { CID_B } else { CID_A },
            1000 + i,
        );
        p.name = Some(if i % 2 == 0 {
            format!("Photo-{i}")
        } else {
            format!("doc-{i}")
        });
        p.status = if i < 10 {
            PinStatus::Pinned
        } else {
            PinStatus::Queued
        };
        if i % 5 == 0 {
            p.meta.insert("app".into(), "gallery".into());
        }
        s.create_pin(&p).await.expect("pin");
    }
    let net = name("list");
    let list = |f: PinFilter| {
        let s = s.clone();
        let net = net.clone();
        async move { s.list_pins(&net, &f).await.expect("list") }
    };
    let all = list(PinFilter::default()).await;
    assert_eq!(all.count, 30);
    let created: Vec<i64> = all.pins.iter().map(|p| p.created_at).collect();
    assert!(
        created.windows(2).all(|w| w[0] > w[1]),
        "newest first: {created:?}"
    );
    let page = list(PinFilter {
        limit: 7,
        ..Default::default()
    })
    .await;
    assert_eq!((page.count, page.pins.len()), (30, 7));
    assert_eq!(page.pins[0].request_id, "id29");
    // Paging with `before`: the next page starts where the last ended.
    let next = list(PinFilter {
        limit: 7,
        before: Some(page.pins[6].created_at),
        ..Default::default()
    })
    .await;
    assert_eq!(next.pins[0].request_id, "id22");
    assert_eq!(next.count, 23);
    let after = list(PinFilter {
        after: Some(1025),
        ..Default::default()
    })
    .await;
    assert_eq!(after.count, 4);
    let by_cid = list(PinFilter {
        cids: vec![CID_B.into()],
        ..Default::default()
    })
    .await;
    assert_eq!(by_cid.count, 10);
    let by_status = list(PinFilter {
        statuses: vec![PinStatus::Pinned],
        ..Default::default()
    })
    .await;
    assert_eq!(by_status.count, 10);
    let both = list(PinFilter {
        statuses: vec![PinStatus::Pinned, PinStatus::Queued],
        ..Default::default()
    })
    .await;
    assert_eq!(both.count, 30);
    let exact = list(PinFilter {
        name: Some("Photo-4".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(exact.count, 1);
    let not_exact = list(PinFilter {
        name: Some("photo-4".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(not_exact.count, 0);
    let iexact = list(PinFilter {
        name: Some("photo-4".into()),
        name_match: NameMatch::IExact,
        ..Default::default()
    })
    .await;
    assert_eq!(iexact.count, 1);
    let partial = list(PinFilter {
        name: Some("hoto".into()),
        name_match: NameMatch::Partial,
        ..Default::default()
    })
    .await;
    assert_eq!(partial.count, 15);
    let ipartial = list(PinFilter {
        name: Some("PHOTO-1".into()),
        name_match: NameMatch::IPartial,
        ..Default::default()
    })
    .await;
    // Photo-10, -12, -14, -16, -18.
    assert_eq!(ipartial.count, 5);
    let meta = list(PinFilter {
        meta: [("app".to_string(), "gallery".to_string())]
            .into_iter()
            .collect(),
        ..Default::default()
    })
    .await;
    assert_eq!(meta.count, 6);
    let none = list(PinFilter {
        meta: [("app".to_string(), "other".to_string())]
            .into_iter()
            .collect(),
        ..Default::default()
    })
    .await;
    assert_eq!(none.count, 0);
    let counts = s.pin_counts(&net).await.expect("counts");
    assert_eq!((counts.pinned, counts.queued), (10, 20));
}

mod sqlite_file {
    backend_tests!(
        kind = SqliteFile,
        tests = [
            pinset_round_trip_and_lifecycle,
            pin_listing_filters_and_pages,
            instance_is_recorded_once,
            revocations_are_kept_until_forgotten,
            lease_acquire_renew_expire_release,
            concurrent_acquires_one_wins,
            round_trip_every_field,
            duplicate_create_is_refused,
            update_replaces_and_missing_is_not_found,
            delete_cascades_to_nodes,
            put_node_upserts,
            node_of_missing_network_is_not_found,
            lists_are_ordered,
            all_nodes_spans_networks,
            concurrent_creates_one_wins,
            concurrent_writes_fail_alone,
            reopen_keeps_data_and_migrations_are_idempotent,
            damaged_rows_are_corrupt_without_leaking,
            debug_and_errors_hide_the_url_password,
            secrets_are_sealed_and_bound_to_their_row,
            legacy_plaintext_rows_are_sealed_on_open,
            rotation_reseals_every_row_under_the_new_key,
            a_changed_configured_key_reseals_at_open,
            no_secret_in_the_database_files,
            sqlite_files_are_private,
        ]
    );
}

mod sqlite_memory {
    backend_tests!(
        kind = SqliteMemory,
        tests = [
            pinset_round_trip_and_lifecycle,
            pin_listing_filters_and_pages,
            instance_is_recorded_once,
            revocations_are_kept_until_forgotten,
            lease_acquire_renew_expire_release,
            concurrent_acquires_one_wins,
            round_trip_every_field,
            duplicate_create_is_refused,
            update_replaces_and_missing_is_not_found,
            delete_cascades_to_nodes,
            put_node_upserts,
            node_of_missing_network_is_not_found,
            lists_are_ordered,
            all_nodes_spans_networks,
            concurrent_creates_one_wins,
            concurrent_writes_fail_alone,
            memory_stores_are_private,
        ]
    );
}

mod cached_sqlite_file {
    backend_tests!(
        kind = CachedSqliteFile,
        tests = [
            pinset_round_trip_and_lifecycle,
            pin_listing_filters_and_pages,
            instance_is_recorded_once,
            revocations_are_kept_until_forgotten,
            lease_acquire_renew_expire_release,
            concurrent_acquires_one_wins,
            round_trip_every_field,
            duplicate_create_is_refused,
            update_replaces_and_missing_is_not_found,
            delete_cascades_to_nodes,
            put_node_upserts,
            node_of_missing_network_is_not_found,
            lists_are_ordered,
            all_nodes_spans_networks,
            concurrent_creates_one_wins,
            concurrent_writes_fail_alone,
            cache_forgets_what_a_failed_write_may_have_changed,
        ]
    );
}

mod postgres {
    backend_tests!(
        kind = Postgres,
        tests = [
            pinset_round_trip_and_lifecycle,
            pin_listing_filters_and_pages,
            instance_is_recorded_once,
            revocations_are_kept_until_forgotten,
            lease_acquire_renew_expire_release,
            concurrent_acquires_one_wins,
            round_trip_every_field,
            duplicate_create_is_refused,
            update_replaces_and_missing_is_not_found,
            delete_cascades_to_nodes,
            put_node_upserts,
            node_of_missing_network_is_not_found,
            lists_are_ordered,
            all_nodes_spans_networks,
            concurrent_creates_one_wins,
            concurrent_writes_fail_alone,
            reopen_keeps_data_and_migrations_are_idempotent,
            damaged_rows_are_corrupt_without_leaking,
            debug_and_errors_hide_the_url_password,
            secrets_are_sealed_and_bound_to_their_row,
            legacy_plaintext_rows_are_sealed_on_open,
            rotation_reseals_every_row_under_the_new_key,
            a_changed_configured_key_reseals_at_open,
        ]
    );
}

#[test]
fn with_database_replaces_only_the_path() {
    assert_eq!(
        with_database("postgres://nexus@127.0.0.1:5432/postgres", "t1"),
        "postgres://nexus@127.0.0.1:5432/t1"
    );
    assert_eq!(
        with_database("postgres://u:p@h:1/postgres?sslmode=disable", "t2"),
        "postgres://u:p@h:1/t2?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h", "t3"), "postgres://h/t3");
}
