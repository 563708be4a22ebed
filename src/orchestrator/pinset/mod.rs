//! The pinset room: each network's pins held on as many ready nodes as its replication factor.
//!
//! Rooms: [`plan`] (pure: a network's pinset and what its ready nodes hold → steps),
//! `worker` (the level-triggered loop: observe each ready node's `pin/ls`, plan, write the
//! store, run `pin/add`/`pin/rm` in the background with bounded concurrency per node and a
//! timeout; a pass after every change and every `interval`), `ops` (what callers do: add,
//! remove, get, list, replace pins, with their checks), `service` ([`PinApi`]: the
//! delegator's [`crate::pinsink::PinService`] over `ops`), `drain` (a scale-down's removals
//! wait until what the leaving nodes hold is on the remaining nodes, or a timeout). Owns
//! [`PinsetConfig`] and the state the loop keeps between passes ([`PinState`]: calls in flight,
//! per-node turns, under-replication seen, since when a pin is short of a copy, drains under
//! way).
//! Node calls go through the runtime's connector ([`crate::node::rpc::KuboRpc`]) to the
//! endpoints the registry lists. It must not create or remove nodes (the reconciler does) nor
//! serve traffic.

mod drain;
mod ops;
pub mod plan;
mod service;
mod worker;

pub(crate) use drain::Gate;
pub use ops::{AddPin, PinQuery, PinView, MAX_META_BYTES, MAX_NAME_CHARS};
pub use service::PinApi;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::node::rpc::KuboRpc;
use crate::node::NetworkName;

/// Settings of the pinset.
#[derive(Clone, Debug)]
pub struct PinsetConfig {
    /// Longest one `pin/add` may take.
    pub pin_timeout: Duration,
    /// A pin no node holds this long after it was added ends `failed`.
    pub fail_after: Duration,
    /// How often every network's pinset is compared with its nodes without a trigger.
    pub interval: Duration,
    /// Most node calls in flight to one node.
    pub per_node: usize,
    /// First retry delay after a failed attempt (doubles up to `backoff_max`).
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// Longest a scale-down waits for the pins of the nodes it removes to be copied to the
    /// remaining nodes (zero: it does not wait).
    pub drain_timeout: Duration,
}

impl Default for PinsetConfig {
    fn default() -> Self {
        Self {
            pin_timeout: Duration::from_secs(60),
            fail_after: Duration::from_secs(300),
            interval: Duration::from_secs(5),
            per_node: 4,
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(120),
        }
    }
}

impl PinsetConfig {
    fn timers(&self) -> plan::PinTimers {
        plan::PinTimers {
            fail_after: self.fail_after,
            backoff: self.backoff,
            backoff_max: self.backoff_max,
        }
    }
}

/// A node of a network (its index).
type NodeKey = (NetworkName, u16);

/// What the pinset keeps between passes. In memory only: after a restart, allocations still
/// `pinning` are simply asked again (pinning is idempotent).
pub(crate) struct PinState {
    /// (network, request id, node) of node calls running now.
    in_flight: Mutex<HashSet<(NetworkName, String, u16)>>,
    /// Turns per node ([`PinsetConfig::per_node`]).
    turns: Mutex<HashMap<NodeKey, Arc<tokio::sync::Semaphore>>>,
    /// Pins held on fewer nodes than wanted, per network, as the last pass saw.
    under_replicated: Mutex<HashMap<NetworkName, u64>>,
    /// When each `pinned` pin (network, request id) was last seen short of a copy.
    short_since: Mutex<HashMap<(NetworkName, String), std::time::Instant>>,
    /// Scale-downs waiting for their leaving nodes' pins to be copied, per network.
    drains: Mutex<HashMap<NetworkName, drain::Drain>>,
    /// Wakes the loop for a pass now (a pin added or removed, a node call finished).
    wake: tokio::sync::Notify,
    /// `pin/add` (up to `pin_timeout`) and the short calls (`pin/ls`, `pin/rm`, `repo/stat`).
    slow: KuboRpc,
    quick: KuboRpc,
}

impl PinState {
    pub(crate) fn new(cfg: &PinsetConfig) -> Self {
        Self {
            in_flight: Mutex::default(),
            turns: Mutex::default(),
            under_replicated: Mutex::default(),
            drains: Mutex::default(),
            short_since: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            slow: KuboRpc::new(cfg.pin_timeout),
            quick: KuboRpc::new(Duration::from_secs(15)),
        }
    }
}
