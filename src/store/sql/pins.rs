//! The SQL of the pinset (`pins`, `pin_allocations`, migration 9): each network's pins and
//! their allocations to nodes, written and read as [`PinRecord`]s. Name and `meta` filters are
//! applied in memory ([`PinFilter::keeps`]) so both backends match alike; the rest of a filter is
//! SQL. It must not decide where or when a pin goes (the orchestrator's pinset does).

use std::collections::{BTreeMap, HashMap};

use sqlx::any::AnyRow;
use sqlx::Row as _;

use super::{is_foreign_key_violation, query_err, write_err, SqlStore, WriteError};
use crate::cid::Cid;
use crate::node::NetworkName;
use crate::store::pins::{
    Allocation, AllocationStatus, PinCounts, PinFilter, PinPage, PinRecord, PinStatus,
};
use crate::store::{Result, StoreError};

const PIN_COLUMNS: &str = "network, request_id, cid, name, meta, origins, owner, created_at, \
                           status, reason, updated_at, removed_at";
const ALLOCATION_COLUMNS: &str = "request_id, idx, status, reason, attempts, updated_at";

fn corrupt(network: &NetworkName, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        name: network.to_string(),
        detail: detail.into(),
    }
}

fn get<'r, T>(row: &'r AnyRow, network: &NetworkName, column: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get::<T, _>(column).map_err(|_| {
        corrupt(
            network,
            format!("pin column `{column}` is missing or has an unexpected type"),
        )
    })
}

fn pin_from_row(row: &AnyRow, network: &NetworkName) -> Result<PinRecord> {
    let request_id: String = get(row, network, "request_id")?;
    let bad = |what: &str| corrupt(network, format!("pin {request_id}: {what}"));
    let cid_text: String = get(row, network, "cid")?;
    let cid = Cid::parse(&cid_text).map_err(|_| bad("`cid` is not a CID"))?;
    let meta_text: String = get(row, network, "meta")?;
    let meta: BTreeMap<String, String> =
        serde_json::from_str(&meta_text).map_err(|_| bad("`meta` is not a JSON object"))?;
    let origins_text: String = get(row, network, "origins")?;
    let origins: Vec<String> =
        serde_json::from_str(&origins_text).map_err(|_| bad("`origins` is not a JSON list"))?;
    let status_text: String = get(row, network, "status")?;
    let status = PinStatus::parse(&status_text).ok_or_else(|| bad("unknown `status`"))?;
    Ok(PinRecord {
        network: network.clone(),
        cid,
        name: get(row, network, "name")?,
        meta,
        origins,
        owner: get(row, network, "owner")?,
        created_at: get(row, network, "created_at")?,
        status,
        reason: get(row, network, "reason")?,
        updated_at: get(row, network, "updated_at")?,
        removed_at: get(row, network, "removed_at")?,
        allocations: Vec::new(),
        request_id,
    })
}

fn allocation_from_row(row: &AnyRow, network: &NetworkName) -> Result<(String, Allocation)> {
    let request_id: String = get(row, network, "request_id")?;
    let bad = |what: &str| corrupt(network, format!("pin {request_id}: allocation {what}"));
    let idx: i64 = get(row, network, "idx")?;
    let node = u16::try_from(idx).map_err(|_| bad("`idx` is out of range"))?;
    let status_text: String = get(row, network, "status")?;
    let status = AllocationStatus::parse(&status_text).ok_or_else(|| bad("unknown `status`"))?;
    let attempts: i64 = get(row, network, "attempts")?;
    Ok((
        request_id.clone(),
        Allocation {
            node,
            status,
            reason: get(row, network, "reason")?,
            attempts: u32::try_from(attempts).map_err(|_| bad("`attempts` is out of range"))?,
            updated_at: get(row, network, "updated_at")?,
        },
    ))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Query(format!("cannot encode a pin: {e}")))
}

impl SqlStore {
    pub(super) async fn insert_pin(&self, pin: &PinRecord) -> Result<()> {
        let sql = format!(
            "INSERT INTO pins ({PIN_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        );
        let query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(pin.network.to_string())
            .bind(pin.request_id.clone())
            .bind(pin.cid.to_string())
            .bind(pin.name.clone())
            .bind(to_json(&pin.meta)?)
            .bind(to_json(&pin.origins)?)
            .bind(pin.owner.clone())
            .bind(pin.created_at)
            .bind(pin.status.as_str().to_string())
            .bind(pin.reason.clone())
            .bind(pin.updated_at)
            .bind(pin.removed_at);
        match self.write(query).await {
            Ok(_) => {}
            Err(WriteError::Sql(e)) if is_foreign_key_violation(&e) => {
                return Err(StoreError::NotFound(pin.network.to_string()))
            }
            Err(e) => return Err(write_err("add a pin", e)),
        }
        for a in &pin.allocations {
            self.upsert_allocation(&pin.network, &pin.request_id, a)
                .await?;
        }
        Ok(())
    }

    /// The allocations of `network`'s pins (all, or those of `ids`), by request id.
    async fn allocations(
        &self,
        network: &NetworkName,
        ids: Option<&[&str]>,
    ) -> Result<HashMap<String, Vec<Allocation>>> {
        let mut sql =
            format!("SELECT {ALLOCATION_COLUMNS} FROM pin_allocations WHERE network = $1");
        if let Some(ids) = ids {
            if ids.is_empty() {
                return Ok(HashMap::new());
            }
            let marks: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 2)).collect();
            sql.push_str(&format!(" AND request_id IN ({})", marks.join(", ")));
        }
        sql.push_str(" ORDER BY request_id, idx");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(network.to_string());
        for id in ids.unwrap_or_default() {
            query = query.bind(id.to_string());
        }
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(|e| query_err("read pin allocations", e))?;
        let mut out: HashMap<String, Vec<Allocation>> = HashMap::new();
        for r in &rows {
            let (id, a) = allocation_from_row(r, network)?;
            out.entry(id).or_default().push(a);
        }
        for list in out.values_mut() {
            list.sort_by_key(|a| a.node);
        }
        Ok(out)
    }

    pub(super) async fn select_pin(
        &self,
        network: &NetworkName,
        request_id: &str,
    ) -> Result<Option<PinRecord>> {
        let sql = format!("SELECT {PIN_COLUMNS} FROM pins WHERE network = $1 AND request_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(network.to_string())
            .bind(request_id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| query_err("read a pin", e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut pin = pin_from_row(&row, network)?;
        pin.allocations = self
            .allocations(network, Some(&[request_id]))
            .await?
            .remove(request_id)
            .unwrap_or_default();
        Ok(Some(pin))
    }

    pub(super) async fn select_pins(
        &self,
        network: &NetworkName,
        filter: &PinFilter,
    ) -> Result<PinPage> {
        let mut sql =
            format!("SELECT {PIN_COLUMNS} FROM pins WHERE network = $1 AND removed_at IS NULL");
        let mut n = 1;
        let mut mark = || {
            n += 1;
            format!("${n}")
        };
        if !filter.cids.is_empty() {
            let marks: Vec<String> = filter.cids.iter().map(|_| mark()).collect();
            sql.push_str(&format!(" AND cid IN ({})", marks.join(", ")));
        }
        if !filter.statuses.is_empty() {
            let marks: Vec<String> = filter.statuses.iter().map(|_| mark()).collect();
            sql.push_str(&format!(" AND status IN ({})", marks.join(", ")));
        }
        if filter.before.is_some() {
            sql.push_str(&format!(" AND created_at < {}", mark()));
        }
        if filter.after.is_some() {
            sql.push_str(&format!(" AND created_at > {}", mark()));
        }
        sql.push_str(" ORDER BY created_at DESC, request_id DESC");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(network.to_string());
        for c in &filter.cids {
            query = query.bind(c.clone());
        }
        for s in &filter.statuses {
            query = query.bind(s.as_str().to_string());
        }
        if let Some(b) = filter.before {
            query = query.bind(b);
        }
        if let Some(a) = filter.after {
            query = query.bind(a);
        }
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(|e| query_err("list pins", e))?;
        let mut pins = Vec::new();
        let mut count = 0u64;
        for r in &rows {
            let pin = pin_from_row(r, network)?;
            if !filter.keeps(&pin) {
                continue;
            }
            count += 1;
            if filter.limit == 0 || pins.len() < filter.limit {
                pins.push(pin);
            }
        }
        let ids: Vec<&str> = pins.iter().map(|p| p.request_id.as_str()).collect();
        let mut allocations = self.allocations(network, Some(&ids)).await?;
        for p in &mut pins {
            p.allocations = allocations.remove(&p.request_id).unwrap_or_default();
        }
        Ok(PinPage { count, pins })
    }

    pub(super) async fn select_pinset(&self, network: &NetworkName) -> Result<Vec<PinRecord>> {
        let sql = format!(
            "SELECT {PIN_COLUMNS} FROM pins WHERE network = $1 ORDER BY created_at, request_id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(network.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(|e| query_err("read the pinset", e))?;
        let mut allocations = self.allocations(network, None).await?;
        rows.iter()
            .map(|r| {
                let mut pin = pin_from_row(r, network)?;
                pin.allocations = allocations.remove(&pin.request_id).unwrap_or_default();
                Ok(pin)
            })
            .collect()
    }

    pub(super) async fn update_pin_status(
        &self,
        network: &NetworkName,
        request_id: &str,
        status: PinStatus,
        reason: Option<&str>,
        at: i64,
    ) -> Result<bool> {
        let query = sqlx::query(
            "UPDATE pins SET status = $3, reason = $4, updated_at = $5 \
             WHERE network = $1 AND request_id = $2",
        )
        .bind(network.to_string())
        .bind(request_id.to_string())
        .bind(status.as_str().to_string())
        .bind(reason.map(str::to_string))
        .bind(at);
        let n = self
            .write(query)
            .await
            .map_err(|e| write_err("set a pin's status", e))?;
        Ok(n > 0)
    }

    pub(super) async fn mark_pin_removed(
        &self,
        network: &NetworkName,
        request_id: &str,
        at: i64,
    ) -> Result<bool> {
        let query = sqlx::query(
            "UPDATE pins SET removed_at = $3, updated_at = $3 \
             WHERE network = $1 AND request_id = $2 AND removed_at IS NULL",
        )
        .bind(network.to_string())
        .bind(request_id.to_string())
        .bind(at);
        let n = self
            .write(query)
            .await
            .map_err(|e| write_err("remove a pin", e))?;
        Ok(n > 0)
    }

    pub(super) async fn erase_pin(&self, network: &NetworkName, request_id: &str) -> Result<()> {
        // Allocations first: SQLite enforces the cascade only with foreign keys on, which this
        // store sets, but the explicit order keeps both backends alike whatever the pragma.
        let allocations =
            sqlx::query("DELETE FROM pin_allocations WHERE network = $1 AND request_id = $2")
                .bind(network.to_string())
                .bind(request_id.to_string());
        self.write(allocations)
            .await
            .map_err(|e| write_err("delete a pin's allocations", e))?;
        let pin = sqlx::query("DELETE FROM pins WHERE network = $1 AND request_id = $2")
            .bind(network.to_string())
            .bind(request_id.to_string());
        self.write(pin)
            .await
            .map_err(|e| write_err("delete a pin", e))?;
        Ok(())
    }

    pub(super) async fn upsert_allocation(
        &self,
        network: &NetworkName,
        request_id: &str,
        a: &Allocation,
    ) -> Result<()> {
        let query = sqlx::query(
            "INSERT INTO pin_allocations (network, request_id, idx, status, reason, attempts, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (network, request_id, idx) DO UPDATE SET status = excluded.status, \
             reason = excluded.reason, attempts = excluded.attempts, \
             updated_at = excluded.updated_at",
        )
        .bind(network.to_string())
        .bind(request_id.to_string())
        .bind(i64::from(a.node))
        .bind(a.status.as_str().to_string())
        .bind(a.reason.clone())
        .bind(i64::from(a.attempts))
        .bind(a.updated_at);
        match self.write(query).await {
            Ok(_) => Ok(()),
            Err(WriteError::Sql(e)) if is_foreign_key_violation(&e) => {
                Err(StoreError::NotFound(format!("{network}: pin {request_id}")))
            }
            Err(e) => Err(write_err("allocate a pin", e)),
        }
    }

    pub(super) async fn erase_allocation(
        &self,
        network: &NetworkName,
        request_id: &str,
        node: u16,
    ) -> Result<()> {
        let query = sqlx::query(
            "DELETE FROM pin_allocations WHERE network = $1 AND request_id = $2 AND idx = $3",
        )
        .bind(network.to_string())
        .bind(request_id.to_string())
        .bind(i64::from(node));
        self.write(query)
            .await
            .map_err(|e| write_err("delete a pin allocation", e))?;
        Ok(())
    }

    pub(super) async fn count_pins(&self, network: &NetworkName) -> Result<PinCounts> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM pins WHERE network = $1 AND removed_at IS NULL \
             GROUP BY status",
        )
        .bind(network.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| query_err("count pins", e))?;
        let mut counts = PinCounts::default();
        for r in &rows {
            let status: String = get(r, network, "status")?;
            let n: i64 = get(r, network, "n")?;
            let status = PinStatus::parse(&status)
                .ok_or_else(|| corrupt(network, "a pin has an unknown `status`"))?;
            counts.add(status, u64::try_from(n).unwrap_or(0));
        }
        Ok(counts)
    }
}
