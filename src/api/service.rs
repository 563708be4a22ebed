//! The `nexus.v1.Nexus` service: turns RPCs into orchestrator calls and results into messages.
//!
//! Owns the wire mapping: request fields → orchestrator requests (validation itself is the
//! orchestrator's), views → messages, errors → gRPC status codes with messages that say what
//! to do. Only `GetJoinKit` returns a secret (the swarm key); nothing returns a node's private
//! key. It must not decide anything about networks or talk to the runtime or the store; the one
//! store operation it reaches, `RotateSecrets`, goes through the [`SealRotator`] the daemon
//! gives it.

use std::pin::Pin;

use futures_util::Stream;
use tokio::sync::broadcast;
use tonic::{Request, Response, Status};

use super::pb;
use super::pins::{add_pin_request, pin_counts_message, pin_message, pin_query};
use crate::access::{Access, AccessUpdate};
use crate::node::{NetworkName, NodeState, Resources};
pub use crate::orchestrator::view::swarm_multiaddr;
use crate::orchestrator::{
    CreateNetwork, ErrorKind, Event, NetworkView, NodeDiagnosis, Orchestrator, OrchestratorError,
    UpdateNetwork,
};
use crate::replication::Replication;
use crate::store::seal::SealError;
use crate::store::sql::SealRotator;
use crate::store::StoreError;

/// What the service needs besides the orchestrator.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Host (IPv4, IPv6 or DNS name) outside kubo nodes dial to reach this host's swarm ports.
    pub public_address: String,
    /// The node image new networks run (reported by `Version`).
    pub node_image: String,
}

/// The service implementation; cheap to clone.
#[derive(Clone)]
pub struct NexusService {
    orch: Orchestrator,
    cfg: ServiceConfig,
    /// Becomes `true` when the daemon shuts down: open event streams end then, so graceful
    /// shutdown does not wait for watchers forever.
    stopping: tokio::sync::watch::Receiver<bool>,
    /// Rotates the store's seal key (`RotateSecrets`); `None`: the call is refused.
    rotator: Option<SealRotator>,
}

impl NexusService {
    pub fn new(
        orch: Orchestrator,
        cfg: ServiceConfig,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            orch,
            cfg,
            stopping,
            rotator: None,
        }
    }

    /// Lets `RotateSecrets` rotate the store's seal key with `rotator`.
    pub fn with_seal_rotator(mut self, rotator: SealRotator) -> Self {
        self.rotator = Some(rotator);
        self
    }
}

/// A failed rotation as a status whose message says what to do next.
fn rotation_status(e: StoreError) -> Status {
    match &e {
        StoreError::Sealed {
            cause: SealError::NotRotatable(_),
            ..
        } => Status::failed_precondition(e.to_string()),
        StoreError::Open { .. } | StoreError::Query(_) => Status::unavailable(format!(
            "{e}. Every secret still opens (the seal key file keeps the old and the new key): \
             run `nexus secrets rotate` again once the database answers"
        )),
        _ => Status::internal(format!(
            "{e}. No key was lost: the seal key file keeps every key a secret is still sealed \
             under. Fix the cause, then run `nexus secrets rotate` again"
        )),
    }
}

/// Maps an orchestrator error to a status whose message says what to do next.
pub fn to_status(e: OrchestratorError) -> Status {
    let msg = e.to_string();
    match e.kind() {
        ErrorKind::Invalid => Status::invalid_argument(msg),
        ErrorKind::NotFound if matches!(e, OrchestratorError::PinNotFound { .. }) => {
            Status::not_found(msg)
        }
        ErrorKind::NotFound => Status::not_found(format!(
            "{msg}: `nexus network list` shows the networks that exist"
        )),
        ErrorKind::AlreadyExists => Status::already_exists(format!(
            "{msg}: choose another name, or update the existing network"
        )),
        ErrorKind::FailedPrecondition => Status::failed_precondition(msg),
        ErrorKind::Exhausted => Status::resource_exhausted(msg),
        ErrorKind::Failed => {
            let name = match &e {
                OrchestratorError::Failed { name, .. } => name.as_str(),
                _ => "<network>",
            };
            Status::failed_precondition(format!(
                "{msg}. `nexus network diagnostics {name}` shows each node's logs; fix the \
                 cause, then start it again"
            ))
        }
        ErrorKind::Timeout => Status::deadline_exceeded(msg),
        ErrorKind::RuntimeUnavailable => Status::unavailable(msg),
        ErrorKind::StoreUnavailable => {
            Status::unavailable(format!("{msg}. Is the store's database reachable?"))
        }
        ErrorKind::Internal => Status::internal(msg),
    }
}

fn state_fields(state: Option<NodeState>) -> (String, i64) {
    match state {
        None => (String::new(), 0),
        Some(NodeState::Created) => ("created".into(), 0),
        Some(NodeState::Running) => ("running".into(), 0),
        Some(NodeState::Restarting) => ("restarting".into(), 0),
        Some(NodeState::Paused) => ("paused".into(), 0),
        Some(NodeState::Exited { code }) => ("exited".into(), code),
        Some(NodeState::Dead) => ("dead".into(), 0),
        Some(NodeState::Unknown) => ("unknown".into(), 0),
    }
}

fn resources(r: Resources) -> pb::Resources {
    pb::Resources {
        cpu_millis: r.cpu_millis,
        memory_bytes: r.memory_bytes,
        disk_bytes: r.disk_bytes,
    }
}

/// A view as a message.
pub fn network_message(v: NetworkView) -> pb::Network {
    pb::Network {
        name: v.name,
        replicas: u32::from(v.replicas),
        resources: Some(resources(v.resources)),
        users: v.access.users,
        gateway_public: v.access.gateway_public,
        ipns_dns: v.access.ipns_dns,
        allowed_origins: v.access.allowed_origins,
        bootstrap_peers: v.bootstrap_peers,
        api_allow: v.access.api_allow,
        api_deny: v.access.api_deny,
        desired: v.desired.as_str().into(),
        status: v.status.as_str().into(),
        status_reason: v.status_reason.unwrap_or_default(),
        created_at_ms: v.created_at,
        updated_at_ms: v.updated_at,
        activated_at_ms: v.activated_at.unwrap_or(0),
        subnet: v.subnet.map(|s| s.to_string()).unwrap_or_default(),
        image: v.image,
        replication: v.replication.to_string(),
        pins: v.pins.map(pin_counts_message),
        under_replicated_pins: v.under_replicated_pins,
        under_replicated: v.under_replicated,
        nodes: v
            .nodes
            .into_iter()
            .map(|n| {
                let (state, exit_code) = state_fields(n.state);
                pb::Node {
                    index: u32::from(n.index),
                    peer_id: n.peer_id,
                    state,
                    exit_code,
                    swarm_port: n.ports.swarm.map_or(0, u32::from),
                    last_error: n.last_error.unwrap_or_default(),
                    host_up: n.host.as_ref().is_some_and(|h| h.up),
                    host_address: n
                        .host
                        .as_ref()
                        .map(|h| h.address.clone())
                        .unwrap_or_default(),
                    host: n.host.map(|h| h.name).unwrap_or_default(),
                }
            })
            .collect(),
    }
}

fn diagnosis_message(d: NodeDiagnosis) -> pb::NodeDiagnosis {
    let rt = d.runtime.unwrap_or_default();
    let (state, exit_code) = state_fields(rt.state);
    pb::NodeDiagnosis {
        index: u32::from(d.index),
        peer_id: d.peer_id,
        state,
        exit_code,
        last_error: d.last_error.unwrap_or_default(),
        logs: rt.logs,
        peers: rt.peers.map(|values| pb::StringList { values }),
        config_json: rt
            .config
            .map(|c| serde_json::to_string_pretty(&c).unwrap_or_default())
            .unwrap_or_default(),
        swarm_port: d.ports.swarm.map_or(0, u32::from),
    }
}

/// An event as a message.
pub fn event_message(e: Event) -> pb::Event {
    pb::Event {
        time_ms: e.time_ms,
        network: e.network,
        kind: e.kind.as_str().into(),
        status: e.status.as_str().into(),
        node_index: e.node_index.map(u32::from),
        message: e.message,
    }
}

#[allow(clippy::result_large_err)]
fn replicas(n: u32, field: &str) -> Result<u16, Status> {
    u16::try_from(n).map_err(|_| {
        Status::invalid_argument(format!("{field}: {n} is not a valid number of nodes"))
    })
}

#[allow(clippy::result_large_err)]
fn replication(text: &str) -> Result<Replication, Status> {
    Replication::parse(text).map_err(|e| Status::invalid_argument(e.to_string()))
}

#[allow(clippy::result_large_err)]
fn required_name(name: &str) -> Result<&str, Status> {
    if name.is_empty() {
        return Err(Status::invalid_argument(
            "name: required (the network's name, a DNS label such as `my-net`)",
        ));
    }
    Ok(name)
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl pb::nexus_server::Nexus for NexusService {
    async fn ping(
        &self,
        _req: Request<pb::PingRequest>,
    ) -> Result<Response<pb::PingResponse>, Status> {
        let time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Ok(Response::new(pb::PingResponse { time_ms }))
    }

    async fn version(
        &self,
        _req: Request<pb::VersionRequest>,
    ) -> Result<Response<pb::VersionResponse>, Status> {
        Ok(Response::new(pb::VersionResponse {
            version: env!("CARGO_PKG_VERSION").into(),
            api: "nexus.v1".into(),
            node_image: self.cfg.node_image.clone(),
        }))
    }

    async fn create_network(
        &self,
        req: Request<pb::CreateNetworkRequest>,
    ) -> Result<Response<pb::Network>, Status> {
        let r = req.into_inner();
        let name = required_name(&r.name)?.to_string();
        let replicas = if r.replicas == 0 {
            1
        } else {
            replicas(r.replicas, "replicas")?
        };
        // Zero fields take the daemon's defaults.
        let res = r.resources.map(|p| {
            let d = self.orch.default_resources();
            Resources {
                cpu_millis: if p.cpu_millis == 0 {
                    d.cpu_millis
                } else {
                    p.cpu_millis
                },
                memory_bytes: if p.memory_bytes == 0 {
                    d.memory_bytes
                } else {
                    p.memory_bytes
                },
                disk_bytes: if p.disk_bytes == 0 {
                    d.disk_bytes
                } else {
                    p.disk_bytes
                },
            }
        });
        let view = self
            .orch
            .create(CreateNetwork {
                name: name.clone(),
                replicas,
                resources: res,
                access: Access {
                    users: r.users,
                    gateway_public: r.gateway_public,
                    ipns_dns: r.ipns_dns,
                    allowed_origins: r.allowed_origins,
                    api_allow: r.api_allow,
                    api_deny: r.api_deny,
                },
                swarm_key: (!r.swarm_key.is_empty()).then_some(r.swarm_key),
                bootstrap_peers: r.bootstrap_peers,
                image: (!r.image.is_empty()).then_some(r.image),
                replication: r.replication.as_deref().map(replication).transpose()?,
            })
            .await
            .map_err(to_status)?;
        if !r.start {
            return Ok(Response::new(network_message(view)));
        }
        let view = self.orch.start(&name).await.map_err(to_status)?;
        Ok(Response::new(network_message(view)))
    }

    async fn start_network(
        &self,
        req: Request<pb::StartNetworkRequest>,
    ) -> Result<Response<pb::Network>, Status> {
        let r = req.into_inner();
        let view = self
            .orch
            .start(required_name(&r.name)?)
            .await
            .map_err(to_status)?;
        Ok(Response::new(network_message(view)))
    }

    async fn update_network(
        &self,
        req: Request<pb::UpdateNetworkRequest>,
    ) -> Result<Response<pb::Network>, Status> {
        let r = req.into_inner();
        let changes = UpdateNetwork {
            replicas: r.replicas.map(|n| replicas(n, "replicas")).transpose()?,
            cpu_millis: r.cpu_millis,
            memory_bytes: r.memory_bytes,
            disk_bytes: r.disk_bytes,
            access: AccessUpdate {
                users: r.users.map(|l| l.values),
                gateway_public: r.gateway_public,
                ipns_dns: r.ipns_dns,
                allowed_origins: r.allowed_origins.map(|l| l.values),
                api_allow: r.api_allow.map(|l| l.values),
                api_deny: r.api_deny.map(|l| l.values),
            },
            image: r.image,
            replication: r.replication.as_deref().map(replication).transpose()?,
        };
        let view = self
            .orch
            .update(required_name(&r.name)?, changes)
            .await
            .map_err(to_status)?;
        Ok(Response::new(network_message(view)))
    }

    async fn add_pin(&self, req: Request<pb::AddPinRequest>) -> Result<Response<pb::Pin>, Status> {
        let r = req.into_inner();
        let network = required_name(&r.network)?.to_string();
        let pin = self
            .orch
            .add_pin(&network, add_pin_request(r))
            .await
            .map_err(to_status)?;
        Ok(Response::new(pin_message(&network, pin)))
    }

    async fn get_pin(&self, req: Request<pb::GetPinRequest>) -> Result<Response<pb::Pin>, Status> {
        let r = req.into_inner();
        let network = required_name(&r.network)?;
        let pin = self
            .orch
            .get_pin(network, &r.request_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pin_message(network, pin)))
    }

    async fn list_pins(
        &self,
        req: Request<pb::ListPinsRequest>,
    ) -> Result<Response<pb::ListPinsResponse>, Status> {
        let r = req.into_inner();
        let network = required_name(&r.network)?;
        let query = pin_query(&r)?;
        let (count, pins) = self
            .orch
            .list_pins(network, &query)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListPinsResponse {
            count,
            pins: pins.into_iter().map(|p| pin_message(network, p)).collect(),
        }))
    }

    async fn remove_pin(
        &self,
        req: Request<pb::RemovePinRequest>,
    ) -> Result<Response<pb::Pin>, Status> {
        let r = req.into_inner();
        let network = required_name(&r.network)?;
        let pin = self
            .orch
            .remove_pin(network, &r.request_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pin_message(network, pin)))
    }

    async fn stop_network(
        &self,
        req: Request<pb::StopNetworkRequest>,
    ) -> Result<Response<pb::Network>, Status> {
        let r = req.into_inner();
        let view = self
            .orch
            .stop(required_name(&r.name)?)
            .await
            .map_err(to_status)?;
        Ok(Response::new(network_message(view)))
    }

    async fn remove_network(
        &self,
        req: Request<pb::RemoveNetworkRequest>,
    ) -> Result<Response<pb::RemoveNetworkResponse>, Status> {
        let r = req.into_inner();
        self.orch
            .remove(required_name(&r.name)?, r.force)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::RemoveNetworkResponse {}))
    }

    async fn get_network(
        &self,
        req: Request<pb::GetNetworkRequest>,
    ) -> Result<Response<pb::Network>, Status> {
        let r = req.into_inner();
        let view = self
            .orch
            .get(required_name(&r.name)?)
            .await
            .map_err(to_status)?;
        Ok(Response::new(network_message(view)))
    }

    async fn list_networks(
        &self,
        _req: Request<pb::ListNetworksRequest>,
    ) -> Result<Response<pb::ListNetworksResponse>, Status> {
        let views = self.orch.list().await.map_err(to_status)?;
        Ok(Response::new(pb::ListNetworksResponse {
            networks: views.into_iter().map(network_message).collect(),
        }))
    }

    async fn network_stats(
        &self,
        req: Request<pb::NetworkStatsRequest>,
    ) -> Result<Response<pb::NetworkStatsResponse>, Status> {
        let r = req.into_inner();
        let name = required_name(&r.name)?;
        let stats = self.orch.stats(name).await.map_err(to_status)?;
        let pins = self.orch.pins_of(name).await.map_err(to_status)?;
        Ok(Response::new(pb::NetworkStatsResponse {
            pins: Some(pin_counts_message(pins.counts)),
            under_replicated_pins: pins.under_replicated_pins,
            under_replicated: pins.under_replicated,
            replication: pins.replication.to_string(),
            name: r.name,
            nodes: stats
                .into_iter()
                .map(|(index, s)| pb::NodeStats {
                    index: u32::from(index),
                    cpu_percent: s.cpu_percent,
                    memory_bytes: s.memory_bytes,
                    memory_limit_bytes: s.memory_limit_bytes,
                    net_rx_bytes: s.net_rx_bytes,
                    net_tx_bytes: s.net_tx_bytes,
                    disk_used_bytes: s.disk_used_bytes,
                    uptime_ms: s.uptime.map(|u| u.as_millis() as u64),
                    peer_count: s.peer_count.map(|p| p as u32),
                })
                .collect(),
        }))
    }

    async fn network_diagnostics(
        &self,
        req: Request<pb::NetworkDiagnosticsRequest>,
    ) -> Result<Response<pb::NetworkDiagnosticsResponse>, Status> {
        let r = req.into_inner();
        let nodes = self
            .orch
            .diagnostics(required_name(&r.name)?)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::NetworkDiagnosticsResponse {
            name: r.name,
            nodes: nodes.into_iter().map(diagnosis_message).collect(),
        }))
    }

    async fn get_join_kit(
        &self,
        req: Request<pb::GetJoinKitRequest>,
    ) -> Result<Response<pb::JoinKit>, Status> {
        let r = req.into_inner();
        let name = required_name(&r.name)?;
        let view = self.orch.get(name).await.map_err(to_status)?;
        let bootstrap: Vec<String> = view
            .nodes
            .iter()
            .filter(|n| n.state == Some(NodeState::Running))
            .filter_map(|n| {
                let port = n.ports.swarm?;
                // A node on another host is dialled there.
                let address = n
                    .host
                    .as_ref()
                    .map_or(&self.cfg.public_address, |h| &h.address);
                Some(swarm_multiaddr(address, port, &n.peer_id))
            })
            .collect();
        if bootstrap.is_empty() {
            return Err(Status::failed_precondition(format!(
                "network `{name}` has no running node to bootstrap from: start it first \
                 (`nexus network start {name}`)"
            )));
        }
        let key = self.orch.swarm_key(name).await.map_err(to_status)?;
        tracing::info!(network = %name, "join kit handed out");
        Ok(Response::new(pb::JoinKit {
            name: view.name,
            swarm_key: key.to_file_contents(),
            bootstrap,
        }))
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let jti = req.into_inner().jti;
        let r = self.orch.revoke_token(&jti).await.map_err(to_status)?;
        Ok(Response::new(pb::RevokeTokenResponse {
            jti: r.jti,
            revoked_at: r.revoked_at,
            forget_at: r.forget_at,
        }))
    }

    async fn rotate_secrets(
        &self,
        _req: Request<pb::RotateSecretsRequest>,
    ) -> Result<Response<pb::RotateSecretsResponse>, Status> {
        let Some(rotator) = &self.rotator else {
            return Err(Status::unimplemented(
                "this daemon has no sealed store to rotate",
            ));
        };
        let r = rotator.rotate().await.map_err(rotation_status)?;
        Ok(Response::new(pb::RotateSecretsResponse {
            old_key_id: r.old_key_id,
            new_key_id: r.new_key_id,
            networks: r.resealed.networks,
            nodes: r.resealed.nodes,
            key_file: r.key_file.display().to_string(),
        }))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        req: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let r = req.into_inner();
        let filter = if r.network.is_empty() {
            None
        } else {
            Some(
                NetworkName::new(&r.network)
                    .map_err(|e| Status::invalid_argument(format!("network: {e}")))?
                    .to_string(),
            )
        };
        let rx = self.orch.subscribe();
        let stopping = self.stopping.clone();
        let state = (rx, filter, stopping);
        let stream =
            futures_util::stream::unfold(state, |(mut rx, filter, mut stopping)| async move {
                loop {
                    let next = tokio::select! {
                        r = rx.recv() => r,
                        _ = stopping.wait_for(|s| *s) => return None,
                    };
                    match next {
                        Ok(ev) => {
                            if filter.as_ref().is_some_and(|f| *f != ev.network) {
                                continue;
                            }
                            return Some((Ok(event_message(ev)), (rx, filter, stopping)));
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            let msg = format!(
                                "{n} event(s) dropped because this watcher fell behind; \
                             `nexus network list` shows the current state"
                            );
                            return Some((Err(Status::data_loss(msg)), (rx, filter, stopping)));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiaddrs_follow_the_address_family() {
        assert_eq!(
            swarm_multiaddr("203.0.113.7", 4001, "12D3Koo"),
            "/ip4/203.0.113.7/tcp/4001/p2p/12D3Koo"
        );
        assert_eq!(
            swarm_multiaddr("2001:db8::1", 4001, "12D3Koo"),
            "/ip6/2001:db8::1/tcp/4001/p2p/12D3Koo"
        );
        assert_eq!(
            swarm_multiaddr("ipfs.example.com", 4001, "12D3Koo"),
            "/dns/ipfs.example.com/tcp/4001/p2p/12D3Koo"
        );
    }

    #[test]
    fn errors_map_to_codes() {
        use crate::node::RuntimeError;
        use crate::store::StoreError;
        use tonic::Code;
        let cases = [
            (
                OrchestratorError::Invalid("x".into()),
                Code::InvalidArgument,
            ),
            (OrchestratorError::NotFound("x".into()), Code::NotFound),
            (
                OrchestratorError::AlreadyExists("x".into()),
                Code::AlreadyExists,
            ),
            (
                OrchestratorError::FailedPrecondition("x".into()),
                Code::FailedPrecondition,
            ),
            (
                OrchestratorError::Timeout {
                    name: "x".into(),
                    wanted: "running",
                    status: "starting",
                    after: std::time::Duration::from_secs(1),
                },
                Code::DeadlineExceeded,
            ),
            (
                OrchestratorError::Runtime(RuntimeError::DockerUnavailable { detail: "x".into() }),
                Code::Unavailable,
            ),
            (
                OrchestratorError::Store(StoreError::Query("x".into())),
                Code::Unavailable,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(to_status(e).code(), code);
        }
    }
}
