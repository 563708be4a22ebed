//! A write-through cache in front of a [`Store`], for the daemon.
//!
//! Owns an in-memory copy of the networks and node rows this process has read or written, so
//! the reconciler's reads (the record and rows of a network, several times per operation) cost
//! no database round trip. It relies on what nexus already requires: one daemon per store (the
//! port allocator makes the same assumption). Every write goes to the database first; the copy
//! changes only after the write succeeded, and a failed write forgets the network, so the next
//! read asks the database. A read that missed fills the copy only if no write happened while it
//! was reading (an epoch counter), so a slow reader can never put back an older record; writes
//! to one network that overlap (the orchestrator serialises them, but the cache does not rely
//! on it) forget that network instead of guessing which landed last.
//! Whole-store reads (`list_networks`, `all_nodes`), `ping`, the instance and lease records,
//! the revocation list and the pinset (read by the pin reconciler, which keeps what it needs)
//! always go to the database (the lease is what makes "one daemon per store" hold). It
//! must not decide anything nor hold anything the database does not.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::{
    Allocation, Lease, LeaseHolder, LeaseOutcome, NetworkRecord, NodeRow, PinCounts, PinFilter,
    PinPage, PinRecord, PinStatus, Result, Store,
};
use crate::names::InstanceName;
use crate::node::NetworkName;

#[derive(Default)]
struct Entry {
    /// `None`: not read yet (only the rows were).
    record: Option<NetworkRecord>,
    /// `None`: not read yet. Sorted by index.
    nodes: Option<Vec<NodeRow>>,
}

/// Writes under way on one network.
#[derive(Default)]
struct Flight {
    count: usize,
    /// Two writes overlapped since the count was last zero.
    overlapped: bool,
}

#[derive(Default)]
struct State {
    entries: HashMap<NetworkName, Entry>,
    in_flight: HashMap<NetworkName, Flight>,
    /// Bumped by every write, before and after it runs.
    epoch: u64,
}

/// [`Store`] with a write-through cache of per-network reads; see the module comment.
pub struct CachedStore {
    inner: Arc<dyn Store>,
    state: Mutex<State>,
}

impl CachedStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    /// Marks a write to `name` as under way: a reader that started before it will not fill
    /// the cache.
    fn begin_write(&self, name: &NetworkName) {
        let mut st = self.lock();
        st.epoch += 1;
        let flight = st.in_flight.entry(name.clone()).or_default();
        flight.count += 1;
        if flight.count > 1 {
            flight.overlapped = true;
        }
    }

    /// After a write: on success apply `f` to the entries; on failure (the write may or may
    /// not have landed) or after overlapping writes, forget the network.
    fn finish_write<T>(
        &self,
        name: &NetworkName,
        result: &Result<T>,
        f: impl FnOnce(&mut HashMap<NetworkName, Entry>),
    ) {
        let mut st = self.lock();
        st.epoch += 1;
        let overlapped = match st.in_flight.get_mut(name) {
            Some(flight) => {
                let overlapped = flight.overlapped;
                flight.count -= 1;
                if flight.count == 0 {
                    st.in_flight.remove(name);
                }
                overlapped
            }
            None => true,
        };
        if result.is_ok() && !overlapped {
            f(&mut st.entries);
        } else {
            st.entries.remove(name);
        }
    }
}

#[async_trait::async_trait]
impl Store for CachedStore {
    async fn create_network(&self, network: &NetworkRecord) -> Result<()> {
        self.begin_write(&network.name);
        let result = self.inner.create_network(network).await;
        self.finish_write(&network.name, &result, |entries| {
            // A new network has no node rows yet (deleting a network deletes its rows).
            entries.insert(
                network.name.clone(),
                Entry {
                    record: Some(network.clone()),
                    nodes: Some(Vec::new()),
                },
            );
        });
        result
    }

    async fn get_network(&self, name: &NetworkName) -> Result<Option<NetworkRecord>> {
        let epoch = {
            let st = self.lock();
            if let Some(rec) = st.entries.get(name).and_then(|e| e.record.as_ref()) {
                return Ok(Some(rec.clone()));
            }
            st.epoch
        };
        let found = self.inner.get_network(name).await?;
        let mut st = self.lock();
        if st.epoch == epoch {
            match &found {
                Some(rec) => {
                    st.entries.entry(name.clone()).or_default().record = Some(rec.clone());
                }
                None => {
                    st.entries.remove(name);
                }
            }
        }
        Ok(found)
    }

    async fn list_networks(&self) -> Result<Vec<NetworkRecord>> {
        self.inner.list_networks().await
    }

    async fn update_network(&self, network: &NetworkRecord) -> Result<()> {
        self.begin_write(&network.name);
        let result = self.inner.update_network(network).await;
        self.finish_write(&network.name, &result, |entries| {
            entries.entry(network.name.clone()).or_default().record = Some(network.clone());
        });
        result
    }

    async fn delete_network(&self, name: &NetworkName) -> Result<()> {
        self.begin_write(name);
        let result = self.inner.delete_network(name).await;
        self.finish_write(name, &result, |entries| {
            entries.remove(name);
        });
        result
    }

    async fn put_node(&self, node: &NodeRow) -> Result<()> {
        self.begin_write(&node.network);
        let result = self.inner.put_node(node).await;
        self.finish_write(&node.network, &result, |entries| {
            if let Some(nodes) = entries
                .get_mut(&node.network)
                .and_then(|e| e.nodes.as_mut())
            {
                match nodes.binary_search_by_key(&node.index, |r| r.index) {
                    Ok(i) => nodes[i] = node.clone(),
                    Err(i) => nodes.insert(i, node.clone()),
                }
            }
        });
        result
    }

    async fn list_nodes(&self, network: &NetworkName) -> Result<Vec<NodeRow>> {
        let epoch = {
            let st = self.lock();
            if let Some(nodes) = st.entries.get(network).and_then(|e| e.nodes.as_ref()) {
                return Ok(nodes.clone());
            }
            st.epoch
        };
        let rows = self.inner.list_nodes(network).await?;
        let mut st = self.lock();
        if st.epoch == epoch {
            // The trait returns them ordered by index, as the cache keeps them.
            st.entries.entry(network.clone()).or_default().nodes = Some(rows.clone());
        }
        Ok(rows)
    }

    async fn all_nodes(&self) -> Result<Vec<NodeRow>> {
        self.inner.all_nodes().await
    }

    async fn delete_node(&self, network: &NetworkName, index: u16) -> Result<()> {
        self.begin_write(network);
        let result = self.inner.delete_node(network, index).await;
        self.finish_write(network, &result, |entries| {
            if let Some(nodes) = entries.get_mut(network).and_then(|e| e.nodes.as_mut()) {
                nodes.retain(|r| r.index != index);
            }
        });
        result
    }

    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }

    async fn instance(&self) -> Result<Option<InstanceName>> {
        self.inner.instance().await
    }

    async fn claim_instance(&self, proposed: &InstanceName) -> Result<InstanceName> {
        self.inner.claim_instance(proposed).await
    }

    async fn acquire_lease(
        &self,
        instance: &InstanceName,
        holder: &LeaseHolder,
        ttl: Duration,
    ) -> Result<LeaseOutcome> {
        self.inner.acquire_lease(instance, holder, ttl).await
    }

    async fn renew_lease(
        &self,
        instance: &InstanceName,
        holder: &LeaseHolder,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        self.inner.renew_lease(instance, holder, ttl).await
    }

    async fn release_lease(&self, instance: &InstanceName, holder: &LeaseHolder) -> Result<()> {
        self.inner.release_lease(instance, holder).await
    }

    async fn get_lease(&self, instance: &InstanceName) -> Result<Option<Lease>> {
        self.inner.get_lease(instance).await
    }

    async fn revoke_token(&self, jti: &str, revoked_at: i64, forget_at: i64) -> Result<()> {
        self.inner.revoke_token(jti, revoked_at, forget_at).await
    }

    async fn revoked_tokens(&self, now: i64) -> Result<Vec<super::RevokedToken>> {
        self.inner.revoked_tokens(now).await
    }

    async fn forget_revoked_tokens(&self, now: i64) -> Result<u64> {
        self.inner.forget_revoked_tokens(now).await
    }

    async fn create_pin(&self, pin: &PinRecord) -> Result<()> {
        self.inner.create_pin(pin).await
    }

    async fn get_pin(&self, network: &NetworkName, request_id: &str) -> Result<Option<PinRecord>> {
        self.inner.get_pin(network, request_id).await
    }

    async fn list_pins(&self, network: &NetworkName, filter: &PinFilter) -> Result<PinPage> {
        self.inner.list_pins(network, filter).await
    }

    async fn pinset(&self, network: &NetworkName) -> Result<Vec<PinRecord>> {
        self.inner.pinset(network).await
    }

    async fn set_pin_status(
        &self,
        network: &NetworkName,
        request_id: &str,
        status: PinStatus,
        reason: Option<&str>,
        at: i64,
    ) -> Result<bool> {
        self.inner
            .set_pin_status(network, request_id, status, reason, at)
            .await
    }

    async fn remove_pin(&self, network: &NetworkName, request_id: &str, at: i64) -> Result<bool> {
        self.inner.remove_pin(network, request_id, at).await
    }

    async fn delete_pin(&self, network: &NetworkName, request_id: &str) -> Result<()> {
        self.inner.delete_pin(network, request_id).await
    }

    async fn put_allocation(
        &self,
        network: &NetworkName,
        request_id: &str,
        allocation: &Allocation,
    ) -> Result<()> {
        self.inner
            .put_allocation(network, request_id, allocation)
            .await
    }

    async fn delete_allocation(
        &self,
        network: &NetworkName,
        request_id: &str,
        node: u16,
    ) -> Result<()> {
        self.inner
            .delete_allocation(network, request_id, node)
            .await
    }

    async fn pin_counts(&self, network: &NetworkName) -> Result<PinCounts> {
        self.inner.pin_counts(network).await
    }
}
