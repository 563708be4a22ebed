//! The gate on every host: one global service running `nexus gate` from `swarm.gate_image`,
//! its credentials as swarm secrets, the host directory bind-mounted at its root, its port
//! published in host mode; and, through it, the node directories on a host (made before a node
//! starts there, removed with the node). Must not forward traffic itself (the gate does, see
//! [`crate::gate`]) nor touch node services.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum,
    EndpointSpec, EndpointSpecModeEnum, Limit, Mount, MountType, SecretSpec, ServiceSpec,
    ServiceSpecMode, TaskSpec, TaskSpecContainerSpec, TaskSpecContainerSpecFile,
    TaskSpecContainerSpecSecrets, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum,
};
use bollard::query_parameters::UpdateServiceOptions;

use super::hosts::Host;
use super::objects::{short_hash, Ref, GATE_LABEL};
use super::SwarmRuntime;
use crate::gate::{GateSocket, Request};
use crate::node::docker::{docker_err, is_status};
use crate::node::endpoint::{Endpoint, GateTarget, NodeEndpoints};
use crate::node::kubo_config::{NODE_GID, NODE_UID};
use crate::node::labels;
use crate::node::runtime::{Result, RuntimeError};

/// Where the gate sees the host directory.
const GATE_ROOT: &str = "/run/nexus";
/// How long a gate request may take (TLS, preamble, answer).
const GATE_TIMEOUT: Duration = Duration::from_secs(5);

impl SwarmRuntime {
    /// The gate service's name (one per instance).
    fn gate_service(&self) -> String {
        format!("nexus-gate-{}", self.cfg.instance)
    }

    /// Makes the gate service exist with this daemon's credentials and settings: created if
    /// absent, updated in place if its secrets, image, port or directory differ.
    pub(super) async fn ensure_gate(&self) -> Result<()> {
        let name = self.gate_service();
        let existing = match self.docker.inspect_service(&name, None).await {
            Ok(s)
                if s.spec
                    .as_ref()
                    .and_then(|s| s.labels.as_ref())
                    .is_some_and(|l| self.ours(l)) =>
            {
                Some(s)
            }
            Ok(_) => return Err(RuntimeError::NameTaken { name }),
            Err(e) if is_status(&e, 404) => None,
            Err(e) => return Err(docker_err(e)),
        };
        let secrets = self.gate_secrets().await?;
        let spec = self.gate_spec(&name, &secrets);
        match existing {
            None => {
                self.docker
                    .create_service(spec, None)
                    .await
                    .map_err(docker_err)?;
                tracing::info!(service = %name, port = self.cfg.gate_port, "gate service created");
            }
            Some(s) => {
                let current = s.spec.clone().unwrap_or_default();
                let wanted_hash = spec
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(GATE_LABEL).cloned())
                    .unwrap_or_default();
                let have_hash = current
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(GATE_LABEL).cloned())
                    .unwrap_or_default();
                if have_hash != wanted_hash {
                    let version = s.version.and_then(|v| v.index).unwrap_or(0);
                    self.docker
                        .update_service(
                            &name,
                            spec,
                            UpdateServiceOptions {
                                version: i32::try_from(version).unwrap_or(i32::MAX),
                                ..Default::default()
                            },
                            None,
                        )
                        .await
                        .map_err(docker_err)?;
                    tracing::info!(service = %name, "gate service updated");
                }
            }
        }
        Ok(())
    }

    /// The gate's three secrets (token, certificate, key), created unless present.
    async fn gate_secrets(&self) -> Result<Vec<Ref>> {
        let files = [
            ("token", self.gate.token_file()),
            ("cert.pem", self.gate.cert_pem()),
            ("key.pem", self.gate.key_pem()),
        ];
        let inst = short_hash(self.cfg.instance.as_str(), 12);
        let mut out = Vec::new();
        for (file, contents) in files {
            let bytes = contents.expose().as_bytes();
            let name = format!(
                "nx-gate-{inst}-{}-{}",
                file.replace('.', "-"),
                short_hash(bytes, 12)
            );
            let spec = SecretSpec {
                name: Some(name.clone()),
                labels: Some(self.stamp(HashMap::from([
                    (labels::MANAGED.into(), "true".into()),
                    (GATE_LABEL.into(), "secret".into()),
                ]))),
                data: Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
                ..Default::default()
            };
            out.push(self.secret(spec, file).await?);
        }
        Ok(out)
    }

    fn gate_spec(&self, name: &str, secrets: &[Ref]) -> ServiceSpec {
        let file = |f: &str| format!("/run/secrets/{f}");
        let mut spec = ServiceSpec {
            name: Some(name.to_owned()),
            labels: Some(self.stamp(HashMap::from([(labels::MANAGED.into(), "true".into())]))),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(self.cfg.gate_image.clone()),
                    args: Some(vec![
                        "--listen".into(),
                        format!("0.0.0.0:{}", self.cfg.gate_port),
                        "--root".into(),
                        GATE_ROOT.into(),
                        "--token-file".into(),
                        file("token"),
                        "--cert-file".into(),
                        file("cert.pem"),
                        "--key-file".into(),
                        file("key.pem"),
                    ]),
                    user: Some(format!("{NODE_UID}:{NODE_GID}")),
                    read_only: Some(true),
                    capability_drop: Some(vec!["ALL".into()]),
                    mounts: Some(vec![Mount {
                        target: Some(GATE_ROOT.into()),
                        source: Some(self.cfg.host_dir.display().to_string()),
                        typ: Some(MountType::BIND),
                        ..Default::default()
                    }]),
                    secrets: Some(
                        secrets
                            .iter()
                            .map(|r| TaskSpecContainerSpecSecrets {
                                file: Some(TaskSpecContainerSpecFile {
                                    name: Some(r.file.clone()),
                                    uid: Some(NODE_UID.to_string()),
                                    gid: Some(NODE_GID.to_string()),
                                    mode: Some(0o400),
                                }),
                                secret_name: Some(r.name.clone()),
                                secret_id: Some(r.id.clone()),
                            })
                            .collect(),
                    ),
                    ..Default::default()
                }),
                resources: Some(TaskSpecResources {
                    limits: Some(Limit {
                        memory_bytes: Some(128 << 20),
                        pids: Some(256),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                restart_policy: Some(TaskSpecRestartPolicy {
                    condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                    delay: Some(1_000_000_000),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            mode: Some(ServiceSpecMode {
                global: Some(HashMap::new()),
                ..Default::default()
            }),
            endpoint_spec: Some(EndpointSpec {
                mode: Some(EndpointSpecModeEnum::DNSRR),
                ports: Some(vec![EndpointPortConfig {
                    protocol: Some(EndpointPortConfigProtocolEnum::TCP),
                    target_port: Some(i64::from(self.cfg.gate_port)),
                    published_port: Some(i64::from(self.cfg.gate_port)),
                    publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        };
        // What should make a running gate change (labels' order is not stable, so not a
        // hash of the whole spec).
        let hash = short_hash(
            format!(
                "{}|{}|{}|{:?}",
                self.cfg.gate_image,
                self.cfg.gate_port,
                self.cfg.host_dir.display(),
                secrets.iter().map(|r| &r.name).collect::<Vec<_>>()
            ),
            16,
        );
        if let Some(l) = spec.labels.as_mut() {
            l.insert(GATE_LABEL.into(), hash);
        }
        spec
    }

    /// Where the daemon reaches `host`'s gate.
    pub(super) fn gate_addr(&self, host: &Host) -> SocketAddr {
        SocketAddr::new(host.addr, self.cfg.gate_port)
    }

    /// The node's endpoints through `host`'s gate.
    pub(super) fn endpoints(&self, host: &Host, run_dir: &str) -> NodeEndpoints {
        let target = |socket| {
            Endpoint::Gate(GateTarget {
                gate: self.gate_addr(host),
                dir: run_dir.to_owned(),
                socket,
            })
        };
        NodeEndpoints {
            api: target(GateSocket::Api),
            gateway: target(GateSocket::Gateway),
        }
    }

    /// Creates directories on `host` through its gate, waiting for the gate to answer (it may
    /// be starting, on a host that just joined) up to `wait`.
    pub(super) async fn prepare_dirs(
        &self,
        host: &Host,
        dirs: &[String],
        wait: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + wait;
        for dir in dirs {
            let req = Request::Prepare { dir: dir.clone() };
            loop {
                match crate::gate::request(self.gate_addr(host), &self.gate, &req, GATE_TIMEOUT)
                    .await
                {
                    Ok(()) => break,
                    Err(e) if Instant::now() < deadline => {
                        tracing::debug!(host = %host.name, error = %e, "gate not answering yet");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err(e) => {
                        return Err(RuntimeError::Bundle(format!(
                            "the gate on host {} ({}) did not prepare the node's directory: {e}. \
                             Check that the `{}` service runs there and that {} exists on the host",
                            host.name,
                            self.gate_addr(host),
                            self.gate_service(),
                            self.cfg.host_dir.display()
                        )))
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes directories on `host` through its gate. Best effort for hosts that are down.
    pub(super) async fn remove_dirs(&self, host: &Host, dirs: &[String]) -> Result<()> {
        for dir in dirs {
            let req = Request::Remove { dir: dir.clone() };
            crate::gate::request(self.gate_addr(host), &self.gate, &req, GATE_TIMEOUT)
                .await
                .map_err(|e| {
                    RuntimeError::Bundle(format!(
                        "the gate on host {} did not remove {dir}: {e}",
                        host.name
                    ))
                })?;
        }
        Ok(())
    }
}
