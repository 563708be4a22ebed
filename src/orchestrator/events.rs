//! Orchestrator events: what happened to networks and their nodes, for `WatchEvents` and logs.
//!
//! Owns the in-process broadcast bus. The controller publishes a status event whenever a
//! network's status changes and a node event for every runtime event it handles; subscribers
//! (the gRPC API) get them in order. A slow subscriber loses the oldest events and is told how
//! many (`Lagged`), it never slows the orchestrator down. It must not decide anything, and an
//! event never carries a secret.

use tokio::sync::broadcast;

use crate::store::NetworkStatus;

/// What kind of thing happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A network was recorded.
    Created,
    /// A network's status changed.
    Status,
    /// A node's container started.
    NodeStart,
    /// A node's container exited.
    NodeDie,
    /// A node's container was killed for exceeding its memory limit.
    NodeOom,
    /// A network was removed.
    Removed,
    /// The first node moved to a new image did not come up on it: it is back on the old image,
    /// and so is the network.
    ImageRolledBack,
    /// A pin of the network's pinset was added or removed, or its status changed.
    Pin,
    /// A node whose host was lost past the grace period is re-created on another host.
    NodeRelocated,
    /// A scale-down started copying the pins of the nodes it removes to the remaining nodes,
    /// finished, or gave up waiting (`node.pin_drain_timeout`).
    PinDrain,
}

impl EventKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Status => "status",
            Self::NodeStart => "node_start",
            Self::NodeDie => "node_die",
            Self::NodeOom => "node_oom",
            Self::Removed => "removed",
            Self::ImageRolledBack => "image_rolled_back",
            Self::Pin => "pin",
            Self::NodeRelocated => "node_relocated",
            Self::PinDrain => "pin_drain",
        }
    }
}

/// One event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Unix milliseconds.
    pub time_ms: i64,
    pub network: String,
    pub kind: EventKind,
    /// The network's status after the event.
    pub status: NetworkStatus,
    pub node_index: Option<u16>,
    /// Human-readable detail: the status reason, an exit code.
    pub message: String,
}

/// Events kept for a subscriber that falls behind.
const CAPACITY: usize = 4096;

/// A cheaply cloneable broadcast bus.
#[derive(Clone, Debug)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
        }
    }
}

impl EventBus {
    /// Publishes an event (dropped when nobody listens) and logs it.
    pub fn publish(&self, event: Event) {
        match event.kind {
            EventKind::NodeDie | EventKind::NodeOom => tracing::warn!(
                network = %event.network,
                node = ?event.node_index,
                kind = event.kind.as_str(),
                status = event.status.as_str(),
                message = %event.message,
                "node event"
            ),
            _ => tracing::info!(
                network = %event.network,
                node = ?event.node_index,
                kind = event.kind.as_str(),
                status = event.status.as_str(),
                message = %event.message,
                "network event"
            ),
        }
        let _ = self.tx.send(event);
    }

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_get_events_in_order_and_lag_is_reported() {
        let bus = EventBus::default();
        let mut rx = bus.subscribe();
        for i in 0..3 {
            bus.publish(Event {
                time_ms: i,
                network: "n".into(),
                kind: EventKind::Status,
                status: NetworkStatus::Running,
                node_index: None,
                message: String::new(),
            });
        }
        for i in 0..3 {
            assert_eq!(rx.recv().await.unwrap().time_ms, i);
        }
        for i in 0..(CAPACITY as i64 + 5) {
            bus.publish(Event {
                time_ms: i,
                network: "n".into(),
                kind: EventKind::NodeStart,
                status: NetworkStatus::Running,
                node_index: Some(0),
                message: String::new(),
            });
        }
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Lagged(5))
        ));
    }
}
