//! What callers do with a network's pinset: add, remove, get and list pins.
//!
//! Owns [`AddPin`] and its checks (a CID, a name of at most [`MAX_NAME_CHARS`] characters,
//! `meta` of at most [`MAX_META_BYTES`] bytes as JSON — the store's limits —, origins as
//! multiaddrs), [`PinQuery`],
//! [`PinView`], the request ids (128 random bits, hex) and creation times (unique per daemon, so
//! `before`/`after` paging never skips a pin). Writes the store, then wakes the pinset loop; a
//! bad request changes nothing. It must not call nodes (the loop does).

use std::collections::BTreeMap;

use super::super::error::{invalid, OrchestratorError, Result};
use super::super::handle::{now_ms, Orchestrator};
use super::super::request::parse_name;
use crate::cid::Cid;
use crate::node::NetworkName;
use crate::pinsink::PinChange;
use crate::store::{
    check_meta, check_name, Allocation, PinCounts, PinFilter, PinRecord, PinStatus,
};

pub use crate::store::{MAX_META_BYTES, MAX_NAME_CHARS};
/// Most origins a pin may carry.
const MAX_ORIGINS: usize = 20;

/// A pin to add.
#[derive(Clone, Debug, Default)]
pub struct AddPin {
    pub cid: String,
    pub name: Option<String>,
    pub meta: BTreeMap<String, String>,
    pub origins: Vec<String>,
    /// Who asks (a token's user; empty: the operator).
    pub owner: String,
}

/// Which pins to list (the store's filter, from outside).
pub type PinQuery = PinFilter;

/// A pin as callers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinView {
    pub request_id: String,
    pub cid: String,
    pub name: Option<String>,
    pub meta: BTreeMap<String, String>,
    pub origins: Vec<String>,
    pub owner: String,
    pub created_at: i64,
    pub status: PinStatus,
    pub reason: Option<String>,
    pub allocations: Vec<Allocation>,
}

impl From<PinRecord> for PinView {
    fn from(p: PinRecord) -> Self {
        Self {
            request_id: p.request_id,
            cid: p.cid.to_string(),
            name: p.name,
            meta: p.meta,
            origins: p.origins,
            owner: p.owner,
            created_at: p.created_at,
            status: p.status,
            reason: p.reason,
            allocations: p.allocations,
        }
    }
}

impl AddPin {
    /// The pin's CID, checked with everything else.
    fn check(&self) -> Result<Cid> {
        let cid = Cid::parse(self.cid.trim()).map_err(invalid)?;
        if let Some(name) = &self.name {
            check_name(name).map_err(invalid)?;
        }
        check_meta(&self.meta).map_err(invalid)?;
        if self.origins.len() > MAX_ORIGINS {
            return Err(invalid(format!(
                "origins: {} given, at most {MAX_ORIGINS} allowed",
                self.origins.len()
            )));
        }
        for o in &self.origins {
            check_origin(o).map_err(|e| invalid(format!("origins: {e}")))?;
        }
        Ok(cid)
    }
}

/// Longest origin multiaddr.
const MAX_ORIGIN_BYTES: usize = 1024;

/// An origin: a multiaddr in text form, of any transport a client may give (kubo's own
/// `pin remote add` sends its node's addresses: TCP, QUIC, WebTransport, IPv6, relays, each
/// ending in `/p2p/<id>`). Checked for form only (a `/`-path of non-empty segments of printable
/// characters, starting with an address or `/p2p/`); nexus does not dial origins.
fn check_origin(o: &str) -> std::result::Result<(), String> {
    let bad = || {
        format!(
            "`{}` is not a multiaddr",
            o.chars().take(120).collect::<String>()
        )
    };
    if o.len() > MAX_ORIGIN_BYTES {
        return Err(format!(
            "a multiaddr of {} bytes, at most {MAX_ORIGIN_BYTES} allowed",
            o.len()
        ));
    }
    let Some(rest) = o.strip_prefix('/') else {
        return Err(bad());
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let known = [
        "ip4", "ip6", "dns", "dns4", "dns6", "dnsaddr", "p2p", "ipfs",
    ];
    if parts.len() < 2
        || !known.contains(&parts[0])
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(bad());
    }
    Ok(())
}

/// A fresh request id: 128 random bits as 32 hex digits.
fn request_id() -> Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| invalid(format!("no randomness for a request id: {e}")))?;
    Ok(hex::encode(b))
}

/// The creation time of a new pin: now in unix milliseconds, but always after the last one this
/// process handed out, so no two pins share a `created` and paging by `before`/`after` (strictly
/// before or after a page's last pin) never skips one. A burst of more than 1,000 pins a second
/// runs ahead of the clock by the excess, and catches up when the burst ends.
fn created_ms() -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = now_ms();
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(prev.saturating_add(1));
        match LAST.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(p) => prev = p,
        }
    }
}

/// Whether `id` has the form of a request id (anything else cannot name a pin).
fn is_request_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Orchestrator {
    fn pin_not_found(name: &NetworkName, id: &str) -> OrchestratorError {
        OrchestratorError::PinNotFound {
            network: name.to_string(),
            request_id: id.chars().take(64).collect(),
        }
    }

    /// Adds a pin to a network's pinset (`queued`); the pinset loop places it.
    #[tracing::instrument(name = "add_pin", skip_all, fields(network = %network))]
    pub async fn add_pin(&self, network: &str, req: AddPin) -> Result<PinView> {
        let name = parse_name(network)?;
        let cid = req.check()?;
        self.record(&name).await?;
        let now = created_ms();
        let pin = PinRecord {
            network: name.clone(),
            request_id: request_id()?,
            cid,
            name: req.name,
            meta: req.meta,
            origins: req.origins,
            owner: req.owner,
            created_at: now,
            status: PinStatus::Queued,
            reason: None,
            updated_at: now,
            removed_at: None,
            allocations: Vec::new(),
        };
        match self.inner.store.create_pin(&pin).await {
            Ok(()) => {}
            Err(crate::store::StoreError::NotFound(_)) => {
                return Err(OrchestratorError::NotFound(name.to_string()))
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(network = %name, request_id = %pin.request_id, cid = %pin.cid, "pin added");
        self.pin_event(&name, &pin.request_id, pin.cid.as_str(), "added", "queued")
            .await;
        self.inner.pins.wake.notify_one();
        Ok(pin.into())
    }

    /// Removes a pin from the set; the pinset loop unpins it from its nodes. Unknown ids and
    /// other networks' ids are [`OrchestratorError::PinNotFound`].
    #[tracing::instrument(name = "remove_pin", skip_all, fields(network = %network))]
    pub async fn remove_pin(&self, network: &str, request_id: &str) -> Result<PinView> {
        let name = parse_name(network)?;
        let pin = self.live_pin(&name, request_id).await?;
        if !self
            .inner
            .store
            .remove_pin(&name, request_id, now_ms())
            .await?
        {
            return Err(Self::pin_not_found(&name, request_id));
        }
        self.pin_event(&name, request_id, pin.cid.as_str(), "removed", "removed")
            .await;
        self.inner.pins.wake.notify_one();
        Ok(pin.into())
    }

    /// Replaces a pin: `req` becomes a new pin (a new request id), then the old one leaves the
    /// set. An unknown `request_id` or a refused `req` changes nothing.
    #[tracing::instrument(name = "replace_pin", skip_all, fields(network = %network))]
    pub async fn replace_pin(
        &self,
        network: &str,
        request_id: &str,
        req: AddPin,
    ) -> Result<PinView> {
        let name = parse_name(network)?;
        self.live_pin(&name, request_id).await?;
        let new = self.add_pin(network, req).await?;
        match self.remove_pin(network, request_id).await {
            // Removed meanwhile by someone else: replaced all the same.
            Ok(_) | Err(OrchestratorError::PinNotFound { .. }) => Ok(new),
            Err(e) => Err(e),
        }
    }

    /// One pin of a network, with its allocations.
    pub async fn get_pin(&self, network: &str, request_id: &str) -> Result<PinView> {
        let name = parse_name(network)?;
        Ok(self.live_pin(&name, request_id).await?.into())
    }

    /// A network's pins matching `query`, newest first: how many match, and the first
    /// `query.limit` of them.
    pub async fn list_pins(&self, network: &str, query: &PinQuery) -> Result<(u64, Vec<PinView>)> {
        let name = parse_name(network)?;
        self.record(&name).await?;
        let page = self.inner.store.list_pins(&name, query).await?;
        Ok((page.count, page.pins.into_iter().map(Into::into).collect()))
    }

    /// How many pins of a network are in each status.
    pub async fn pin_counts(&self, network: &str) -> Result<PinCounts> {
        let name = parse_name(network)?;
        Ok(self.inner.store.pin_counts(&name).await?)
    }

    async fn live_pin(&self, name: &NetworkName, request_id: &str) -> Result<PinRecord> {
        self.record(name).await?;
        if !is_request_id(request_id) {
            return Err(Self::pin_not_found(name, request_id));
        }
        match self.inner.store.get_pin(name, request_id).await? {
            Some(p) if p.removed_at.is_none() => Ok(p),
            _ => Err(Self::pin_not_found(name, request_id)),
        }
    }
}

/// Writes through the delegator join the pinset: a CID pinned by a user becomes that user's pin
/// (unless the user already has one of it); a CID unpinned (`pin/rm`, an admin's command)
/// leaves the set, whoever pinned it.
impl crate::pinsink::PinSink for Orchestrator {
    fn record(&self, network: &NetworkName, user: &str, change: PinChange, cids: Vec<String>) {
        let this = self.clone();
        let network = network.clone();
        let user = user.to_string();
        tokio::spawn(async move {
            for cid in cids {
                if let Err(e) = this.join_pinset(&network, &user, change, &cid).await {
                    tracing::warn!(network = %network, %user, %cid, error = %e, "a write through the delegator did not reach the pinset");
                }
            }
        });
    }
}

impl Orchestrator {
    async fn join_pinset(
        &self,
        network: &NetworkName,
        user: &str,
        change: PinChange,
        cid: &str,
    ) -> Result<()> {
        let Ok(cid) = Cid::parse(cid) else {
            return Ok(());
        };
        let query = PinFilter {
            cids: vec![cid.to_string()],
            ..PinFilter::default()
        };
        let same_cid = self.inner.store.list_pins(network, &query).await?.pins;
        match change {
            PinChange::Pinned if !same_cid.iter().any(|p| p.owner == user) => {
                self.add_pin(
                    network.as_str(),
                    AddPin {
                        cid: cid.to_string(),
                        owner: user.to_string(),
                        ..AddPin::default()
                    },
                )
                .await?;
            }
            PinChange::Pinned => {}
            // `pin/rm` through the delegator takes the admin role, which may remove others'
            // pins: every pin of the CID goes.
            PinChange::Unpinned => {
                for p in same_cid {
                    match self.remove_pin(network.as_str(), &p.request_id).await {
                        Ok(_) | Err(OrchestratorError::PinNotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_of_any_transport_pass_junk_does_not() {
        for ok in [
            "/ip4/203.0.113.7/tcp/4001/p2p/12D3KooWEXAMPLE",
            "/ip4/203.0.113.7/udp/4001/quic-v1/p2p/12D3KooWEXAMPLE",
            "/ip6/::1/udp/4001/quic-v1/webtransport/certhash/uEiA/p2p/12D3KooWEXAMPLE",
            "/dns4/ipfs.example.com/tcp/443/wss/p2p/12D3KooWEXAMPLE",
            "/p2p/12D3KooWEXAMPLE",
        ] {
            assert_eq!(check_origin(ok), Ok(()), "{ok}");
        }
        let long = format!("/ip4/1.2.3.4/tcp/1/{}", "x".repeat(1024));
        for bad in [
            "",
            "ip4/1.2.3.4/tcp/1",
            "/",
            "/http/x",
            "/ip4//tcp/1",
            "/ip4/a b/tcp/1",
            "not a multiaddr",
            &long,
        ] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
        let pin = AddPin {
            cid: "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy".into(),
            origins: vec!["/ip4/1.2.3.4/tcp/1".into(); MAX_ORIGINS + 1],
            ..AddPin::default()
        };
        assert!(pin.check().is_err(), "at most {MAX_ORIGINS} origins");
    }
}
