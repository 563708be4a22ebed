//! The SQL of the store's owner records: the one-row `instance` table and `instance_lease`
//! (migration 3). Every time comes from the database's clock, so daemons on several hosts
//! sharing a Postgres store agree on when a lease expires whatever their own clocks say; each
//! lease change is one atomic statement (an upsert guarded by its `WHERE`), on SQLite and
//! Postgres alike. It must not decide when to take or give up a lease
//! ([`crate::instance`] does).

use std::time::Duration;

use sqlx::any::AnyRow;
use sqlx::Row as _;

use super::{query_err, write_err, Backend, SqlStore};
use crate::names::InstanceName;
use crate::store::{Lease, LeaseHolder, LeaseOutcome, Result, StoreError};

/// The database's clock in unix milliseconds, as an SQL expression.
fn now_ms(backend: Backend) -> &'static str {
    match backend {
        // Julian day number of the unix epoch; 'now' is fixed for the whole statement.
        Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
        // The statement's transaction start.
        Backend::Postgres => "CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT)",
    }
}

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 4)
}

fn corrupt(detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        name: "instance lease".into(),
        detail: detail.into(),
    }
}

fn get<'r, T>(row: &'r AnyRow, column: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(column)
        .map_err(|_| corrupt(format!("column {column} does not decode")))
}

fn lease_from_row(row: &AnyRow) -> Result<Lease> {
    let instance: String = get(row, "instance")?;
    let pid: i64 = get(row, "pid")?;
    Ok(Lease {
        instance: InstanceName::new(&instance)
            .map_err(|_| corrupt("column instance is not an instance name"))?,
        holder: LeaseHolder {
            id: get(row, "holder")?,
            host: get(row, "host")?,
            pid: u32::try_from(pid).map_err(|_| corrupt("column pid is out of range"))?,
        },
        acquired_at: get(row, "acquired_at")?,
        renewed_at: get(row, "renewed_at")?,
        expires_at: get(row, "expires_at")?,
        now: get(row, "now")?,
    })
}

impl SqlStore {
    pub(super) async fn read_instance(&self) -> Result<Option<InstanceName>> {
        let row = sqlx::query("SELECT name FROM instance WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| query_err("read the instance", e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let name: String = row.try_get("name").map_err(|_| StoreError::Corrupt {
            name: "instance".into(),
            detail: "column name does not decode".into(),
        })?;
        InstanceName::new(&name)
            .map(Some)
            .map_err(|_| StoreError::Corrupt {
                name: "instance".into(),
                detail: "column name is not an instance name".into(),
            })
    }

    pub(super) async fn insert_instance(&self, proposed: &InstanceName) -> Result<InstanceName> {
        let sql = format!(
            "INSERT INTO instance (id, name, created_at) VALUES (1, $1, {}) \
             ON CONFLICT (id) DO NOTHING",
            now_ms(self.backend)
        );
        self.write(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(proposed.as_str().to_owned()))
            .await
            .map_err(|e| write_err("record the instance", e))?;
        self.read_instance().await?.ok_or_else(|| {
            StoreError::Query("record the instance: the row is missing after writing it".into())
        })
    }

    pub(super) async fn select_lease(&self, instance: &InstanceName) -> Result<Option<Lease>> {
        let sql = format!(
            "SELECT instance, holder, host, pid, acquired_at, renewed_at, expires_at, \
             {} AS now FROM instance_lease WHERE instance = $1",
            now_ms(self.backend)
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(instance.as_str().to_owned())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| query_err("read the lease", e))?;
        row.as_ref().map(lease_from_row).transpose()
    }

    pub(super) async fn upsert_lease(
        &self,
        instance: &InstanceName,
        holder: &LeaseHolder,
        ttl: Duration,
    ) -> Result<LeaseOutcome> {
        let now = now_ms(self.backend);
        // Taken when absent (the INSERT), expired or already ours (the guarded UPDATE); a
        // holder renewing through here keeps its acquired_at.
        let sql = format!(
            "INSERT INTO instance_lease \
             (instance, holder, host, pid, acquired_at, renewed_at, expires_at) \
             VALUES ($1, $2, $3, $4, {now}, {now}, {now} + $5) \
             ON CONFLICT (instance) DO UPDATE SET holder = excluded.holder, \
             host = excluded.host, pid = excluded.pid, \
             acquired_at = CASE WHEN instance_lease.holder = excluded.holder \
             THEN instance_lease.acquired_at ELSE excluded.acquired_at END, \
             renewed_at = excluded.renewed_at, expires_at = excluded.expires_at \
             WHERE instance_lease.holder = excluded.holder OR instance_lease.expires_at <= {now}"
        );
        let query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(instance.as_str().to_owned())
            .bind(holder.id.clone())
            .bind(holder.host.clone())
            .bind(i64::from(holder.pid))
            .bind(ttl_ms(ttl));
        let taken = self
            .write(query)
            .await
            .map_err(|e| write_err("acquire the lease", e))?;
        let lease = self.select_lease(instance).await?.ok_or_else(|| {
            StoreError::Query("acquire the lease: the row is missing after writing it".into())
        })?;
        // A holder that took it and lost it again before the read (a TTL shorter than a
        // round trip) holds nothing.
        Ok(if taken > 0 && lease.holder.id == holder.id {
            LeaseOutcome::Acquired(lease)
        } else {
            LeaseOutcome::Held(lease)
        })
    }

    pub(super) async fn extend_lease(
        &self,
        instance: &InstanceName,
        holder: &LeaseHolder,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        let now = now_ms(self.backend);
        let sql = format!(
            "UPDATE instance_lease SET renewed_at = {now}, expires_at = {now} + $3 \
             WHERE instance = $1 AND holder = $2"
        );
        let query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(instance.as_str().to_owned())
            .bind(holder.id.clone())
            .bind(ttl_ms(ttl));
        let renewed = self
            .write(query)
            .await
            .map_err(|e| write_err("renew the lease", e))?;
        if renewed == 0 {
            return Ok(None);
        }
        Ok(self
            .select_lease(instance)
            .await?
            .filter(|l| l.holder.id == holder.id))
    }

    pub(super) async fn delete_lease(
        &self,
        instance: &InstanceName,
        holder: &LeaseHolder,
    ) -> Result<()> {
        let query = sqlx::query("DELETE FROM instance_lease WHERE instance = $1 AND holder = $2")
            .bind(instance.as_str().to_owned())
            .bind(holder.id.clone());
        self.write(query)
            .await
            .map_err(|e| write_err("release the lease", e))?;
        Ok(())
    }
}
