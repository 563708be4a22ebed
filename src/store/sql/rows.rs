//! Rows and records: binding a [`NetworkRecord`] to a statement, and decoding rows back into
//! [`NetworkRecord`]s and [`NodeRow`]s, checked.
//!
//! Owns the column lists and the mapping both ways. A row that does not decode is
//! [`StoreError::Corrupt`], naming the column but never its value (it may be a secret); a
//! secret that does not open is [`StoreError::Sealed`]. Secrets are sealed on the way in and
//! opened on the way out with the keyring given (see [`super::sealed`]). It must not run
//! queries.

use sqlx::any::AnyRow;
use sqlx::Row as _;

use super::sealed::{open_text, private_key_ad, seal_text, swarm_key_ad};
use super::AnyQuery;
use crate::access::Access;
use crate::node::{NetworkName, NodeIdentity, Ports, Resources, SwarmKey};
use crate::replication::Replication;
use crate::store::seal::Keyring;
use crate::store::{DesiredState, NetworkRecord, NetworkStatus, NodeRow, Result, StoreError};

fn to_i64(value: u64, what: &str) -> Result<i64> {
    i64::try_from(value)
        .map_err(|_| StoreError::Query(format!("{what} {value} does not fit in a BIGINT")))
}

fn to_json(list: &[String]) -> Result<String> {
    serde_json::to_string(list).map_err(|e| StoreError::Query(format!("cannot encode list: {e}")))
}

/// The columns of `networks`, in the order [`bind_network`] binds them.
pub(super) const NETWORK_COLUMNS: &str =
    "name, replicas, cpu_millis, memory_bytes, disk_bytes, users, \
     gateway_public, allowed_origins, swarm_key, bootstrap_peers, desired, status, status_reason, \
     created_at, updated_at, activated_at, api_allow, api_deny, subnet, image, replication, ipns_dns";

pub(super) const NODE_COLUMNS: &str = "network, idx, private_key, peer_id, swarm_port, api_port, \
     gateway_port, container_id, last_error";

/// Binds every column of `n`, the swarm key sealed under `keys`' current key.
pub(super) fn bind_network<'q>(
    query: AnyQuery<'q>,
    n: &NetworkRecord,
    keys: &Keyring,
) -> Result<AnyQuery<'q>> {
    let swarm_key = seal_text(
        keys,
        &n.swarm_key.to_file_contents(),
        &swarm_key_ad(n.name.as_str()),
    )?;
    Ok(query
        .bind(n.name.as_str().to_string())
        .bind(i64::from(n.replicas))
        .bind(i64::from(n.resources.cpu_millis))
        .bind(to_i64(n.resources.memory_bytes, "memory_bytes")?)
        .bind(to_i64(n.resources.disk_bytes, "disk_bytes")?)
        .bind(to_json(&n.access.users)?)
        .bind(i64::from(n.access.gateway_public))
        .bind(to_json(&n.access.allowed_origins)?)
        .bind(swarm_key)
        .bind(to_json(&n.bootstrap_peers)?)
        .bind(n.desired.as_str().to_string())
        .bind(n.status.as_str().to_string())
        .bind(n.status_reason.clone())
        .bind(n.created_at)
        .bind(n.updated_at)
        .bind(n.activated_at)
        .bind(to_json(&n.access.api_allow)?)
        .bind(to_json(&n.access.api_deny)?)
        .bind(n.subnet.map(|s| s.to_string()))
        .bind(n.image.clone())
        .bind(n.replication.to_stored())
        .bind(i64::from(n.access.ipns_dns)))
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

pub(super) fn network_from_row(row: &AnyRow, keys: &Keyring) -> Result<NetworkRecord> {
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
    let ipns_dns = match col::<i64>(row, n, "ipns_dns")? {
        0 => false,
        1 => true,
        v => return Err(corrupt(n, format!("`ipns_dns` is {v}, not 0 or 1"))),
    };
    let sealed: String = col(row, n, "swarm_key")?;
    let swarm_key_text = open_text(keys, &sealed, &swarm_key_ad(n), n, "swarm_key")?;
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
            ipns_dns,
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
        subnet: col::<Option<String>>(row, n, "subnet")?
            .map(|t| {
                t.parse::<ipnet::Ipv4Net>()
                    .map_err(|_| corrupt(n, format!("`subnet` is not an IPv4 CIDR (`{t}`)")))
            })
            .transpose()?,
        image: col(row, n, "image")?,
        replication: {
            let v: i64 = col(row, n, "replication")?;
            Replication::from_stored(v)
                .ok_or_else(|| corrupt(n, format!("`replication` is out of range ({v})")))?
        },
        name,
    })
}

pub(super) fn node_from_row(row: &AnyRow, keys: &Keyring) -> Result<NodeRow> {
    let raw_network: String = col(row, "?", "network")?;
    let network = NetworkName::new(&raw_network).map_err(|e| {
        corrupt(
            &raw_network.chars().take(64).collect::<String>(),
            e.to_string(),
        )
    })?;
    let n = raw_network.as_str();
    let index: u16 = int(row, n, "idx")?;
    let sealed: String = col(row, n, "private_key")?;
    let private_key = open_text(
        keys,
        &sealed,
        &private_key_ad(n, index),
        n,
        &format!("node {index}: private_key"),
    )?;
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
        // `api_port`/`gateway_port` of rows an older nexus wrote are no longer used.
        ports: Ports {
            swarm: opt_int(row, n, "swarm_port")?,
        },
        container_id: col(row, n, "container_id")?,
        last_error: col(row, n, "last_error")?,
        network,
        index,
        identity,
    })
}
