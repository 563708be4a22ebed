//! The pinset's records: each network's pins and, per pin, the nodes it is allocated to.
//!
//! Owns [`PinRecord`], [`PinStatus`], [`Allocation`], [`AllocationStatus`], the listing filter
//! [`PinFilter`] (with [`NameMatch`]) and its in-memory half ([`PinFilter::keeps`]: name and
//! `meta` matching, which SQL cannot do the same way on both backends), [`PinCounts`], and the
//! limits of a pin's free-form fields ([`check_name`], [`check_meta`]: one check for pins and
//! for listing filters alike). Records only: it must not decide where a pin goes nor when (the orchestrator's pinset does).

use std::collections::BTreeMap;

use crate::cid::Cid;
use crate::node::NetworkName;

/// Longest pin name, in characters (the Pinning Service API's limit).
pub const MAX_NAME_CHARS: usize = 255;
/// Largest `meta`, as JSON.
pub const MAX_META_BYTES: usize = 4096;

/// A pin name (or a name to match) within [`MAX_NAME_CHARS`]; the error says by how much.
pub fn check_name(name: &str) -> Result<(), String> {
    let n = name.chars().count();
    if n > MAX_NAME_CHARS {
        return Err(format!(
            "name: {n} characters, at most {MAX_NAME_CHARS} allowed"
        ));
    }
    Ok(())
}

/// A pin's `meta` (or pairs to match) within [`MAX_META_BYTES`] as JSON.
pub fn check_meta(meta: &BTreeMap<String, String>) -> Result<(), String> {
    let len = serde_json::to_string(meta).map_or(usize::MAX, |t| t.len());
    if len > MAX_META_BYTES {
        return Err(format!(
            "meta: {len} bytes as JSON, at most {MAX_META_BYTES} allowed"
        ));
    }
    Ok(())
}

/// Where a pin stands, as the Pinning Service API names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PinStatus {
    /// Recorded; no node holds it yet.
    Queued,
    /// At least one allocated node is pinning it.
    Pinning,
    /// Held on as many nodes as wanted (or every ready node of an under-replicated network).
    Pinned,
    /// No node could fetch it before the timeout; the reason says why.
    Failed,
}

impl PinStatus {
    pub const ALL: [PinStatus; 4] = [Self::Queued, Self::Pinning, Self::Pinned, Self::Failed];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Pinning => "pinning",
            Self::Pinned => "pinned",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// One node's part in holding a pin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocationStatus {
    /// Asked to pin; not confirmed yet.
    Pinning,
    /// The node's `pin/ls` shows it.
    Pinned,
    /// The node could not pin it (timeout, error); retried with backoff.
    Failed,
    /// No longer wanted on this node: unpin, then forget the allocation.
    Unpinning,
}

impl AllocationStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pinning => "pinning",
            Self::Pinned => "pinned",
            Self::Failed => "failed",
            Self::Unpinning => "unpinning",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pinning, Self::Pinned, Self::Failed, Self::Unpinning]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

/// A pin's allocation to one node of its network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// The node's index in the network.
    pub node: u16,
    pub status: AllocationStatus,
    /// Why it failed (or the last error while pinning).
    pub reason: Option<String>,
    /// How many attempts failed in a row (drives the backoff).
    pub attempts: u32,
    /// Unix milliseconds of the last change.
    pub updated_at: i64,
}

/// One pin of a network's pinset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinRecord {
    pub network: NetworkName,
    /// The pin's own id (not the CID: two users pinning one CID hold two pins).
    pub request_id: String,
    pub cid: Cid,
    pub name: Option<String>,
    /// Free-form string pairs (the Pinning Service API's `meta`).
    pub meta: BTreeMap<String, String>,
    /// Multiaddrs of peers that hold the content, as the client gave them.
    pub origins: Vec<String>,
    /// The user who asked (a token's `sub`), or the operator (`""`, the gRPC API).
    pub owner: String,
    /// Unix milliseconds.
    pub created_at: i64,
    pub status: PinStatus,
    /// Why the status is what it is (e.g. why it failed).
    pub reason: Option<String>,
    pub updated_at: i64,
    /// When it was removed from the set; such a pin is unpinned from its nodes, then deleted,
    /// and no listing shows it.
    pub removed_at: Option<i64>,
    /// The nodes it is allocated to, ordered by node index.
    pub allocations: Vec<Allocation>,
}

/// How `name` matches in a listing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NameMatch {
    #[default]
    Exact,
    IExact,
    Partial,
    IPartial,
}

impl NameMatch {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "exact" => Self::Exact,
            "iexact" => Self::IExact,
            "partial" => Self::Partial,
            "ipartial" => Self::IPartial,
            _ => return None,
        })
    }
}

/// Which pins a listing returns: newest first, at most `limit`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinFilter {
    /// Any of these CIDs (empty: any).
    pub cids: Vec<String>,
    pub name: Option<String>,
    pub name_match: NameMatch,
    /// Any of these statuses (empty: any).
    pub statuses: Vec<PinStatus>,
    /// Created strictly before / after (unix milliseconds).
    pub before: Option<i64>,
    pub after: Option<i64>,
    /// Every pair must be in the pin's meta.
    pub meta: BTreeMap<String, String>,
    /// At most this many (0: no limit).
    pub limit: usize,
}

impl PinFilter {
    /// The part of the filter applied in memory: name and meta.
    pub fn keeps(&self, pin: &PinRecord) -> bool {
        if let Some(want) = &self.name {
            let Some(have) = &pin.name else {
                return false;
            };
            let ok = match self.name_match {
                NameMatch::Exact => have == want,
                NameMatch::IExact => have.to_lowercase() == want.to_lowercase(),
                NameMatch::Partial => have.contains(want.as_str()),
                NameMatch::IPartial => have.to_lowercase().contains(&want.to_lowercase()),
            };
            if !ok {
                return false;
            }
        }
        self.meta
            .iter()
            .all(|(k, v)| pin.meta.get(k).is_some_and(|have| have == v))
    }
}

/// A page of a listing: `count` pins matched in all, `pins` the first `limit` of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinPage {
    pub count: u64,
    pub pins: Vec<PinRecord>,
}

/// How many pins of a network are in each status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PinCounts {
    pub queued: u64,
    pub pinning: u64,
    pub pinned: u64,
    pub failed: u64,
}

impl PinCounts {
    pub fn add(&mut self, status: PinStatus, n: u64) {
        match status {
            PinStatus::Queued => self.queued += n,
            PinStatus::Pinning => self.pinning += n,
            PinStatus::Pinned => self.pinned += n,
            PinStatus::Failed => self.failed += n,
        }
    }

    pub fn total(&self) -> u64 {
        self.queued + self.pinning + self.pinned + self.failed
    }
}
