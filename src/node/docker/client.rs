//! Connection and ownership: connecting to the Docker Engine, mapping (and counting) its
//! errors, the node image, and what is ours (`io.nexus.managed` plus this instance's
//! `io.nexus.instance`): the owner label on what we create, the label filters on what we list,
//! the check before we touch a named object. Must not create, change or remove node objects
//! (the sibling files do, through these checks).

use std::collections::HashMap;
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;

use super::observe::labels_of;
use super::{DockerRuntime, DockerRuntimeConfig};
use crate::node::labels::{self, INSTANCE};
use crate::node::rpc::KuboRpc;
use crate::node::runtime::{Result, RuntimeError};
use crate::node::spec::{NetworkName, NodeRef};

fn status_of(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Whether Docker answered with HTTP status `code`.
pub(crate) fn is_status(e: &DockerError, code: u16) -> bool {
    status_of(e) == Some(code)
}

/// Docker's refusal of a network whose subnet overlaps another network's ("Pool overlaps with
/// other one on this address space"), as its message; `None` for any other error.
pub(crate) fn overlap_detail(e: &DockerError) -> Option<String> {
    match e {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } if (400..500).contains(status_code)
            && message.to_ascii_lowercase().contains("overlap") =>
        {
            Some(message.chars().take(200).collect())
        }
        _ => None,
    }
}

/// Docker's refusal to start a container whose published host port is bound by something
/// else ("… bind: address already in use"), as its message; `None` for any other error.
pub(crate) fn port_in_use(e: &DockerError) -> Option<String> {
    match e {
        DockerError::DockerResponseServerError { message, .. }
            if message.contains("address already in use") =>
        {
            // Docker's message names the endpoint first; the cause is its tail.
            let tail = message
                .rfind("listen ")
                .map_or(message.as_str(), |at| &message[at..]);
            Some(tail.chars().take(120).collect())
        }
        _ => None,
    }
}

/// Maps a bollard error: transport failures mean the daemon is unreachable.
/// Every failed Docker call passes here (or through `connect`), so this is where they are counted.
pub(crate) fn docker_err(e: DockerError) -> RuntimeError {
    let err = docker_err_kind(e);
    count_docker_error(&err);
    err
}

fn count_docker_error(e: &RuntimeError) {
    let kind = match e {
        RuntimeError::DockerUnavailable { .. } => "unavailable",
        _ => "api",
    };
    metrics::counter!(crate::telemetry::names::DOCKER_ERRORS, "kind" => kind).increment(1);
}

fn docker_err_kind(e: DockerError) -> RuntimeError {
    match e {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => RuntimeError::Docker(format!("HTTP {status_code}: {message}")),
        DockerError::SocketNotFoundError(_)
        | DockerError::HyperLegacyError { .. }
        | DockerError::IOError { .. }
        | DockerError::RequestTimeoutError => RuntimeError::DockerUnavailable {
            detail: e.to_string(),
        },
        other => RuntimeError::Docker(other.to_string()),
    }
}

impl DockerRuntime {
    /// Whether a Docker object's labels say it is a node object of this instance.
    pub(super) fn ours(&self, labels: &HashMap<String, String>) -> bool {
        labels::is_managed(labels)
            && labels.get(INSTANCE).map(String::as_str) == Some(self.cfg.instance.as_str())
    }

    /// Adds this instance's owner label.
    pub(super) fn stamp(&self, mut labels: HashMap<String, String>) -> HashMap<String, String> {
        labels.insert(INSTANCE.into(), self.cfg.instance.to_string());
        labels
    }

    /// Docker label filters selecting this instance's objects.
    pub(super) fn owner_labels(&self) -> Vec<String> {
        vec![
            labels::managed_filter(),
            format!("{INSTANCE}={}", self.cfg.instance),
        ]
    }

    /// Docker filter selecting one network's objects of this instance.
    pub(super) fn network_filter(&self, network: &NetworkName) -> HashMap<String, Vec<String>> {
        let mut l = self.owner_labels();
        l.push(format!("{}={network}", labels::NETWORK));
        HashMap::from([("label".to_string(), l)])
    }

    /// Connects to the Docker daemon at `cfg.endpoint` (else `DOCKER_HOST`, else the local
    /// socket) and checks it answers.
    pub async fn connect(cfg: DockerRuntimeConfig) -> Result<Self> {
        let unavailable = |e: DockerError| {
            let err = RuntimeError::DockerUnavailable {
                detail: e.to_string(),
            };
            count_docker_error(&err);
            err
        };
        let docker = match &cfg.endpoint {
            Some(host) => Docker::connect_with_host(host),
            None => Docker::connect_with_defaults(),
        }
        .map_err(unavailable)?;
        let docker = docker.negotiate_version().await.map_err(unavailable)?;
        docker.ping().await.map_err(unavailable)?;
        let rpc = KuboRpc::new(Duration::from_secs(3));
        Ok(Self {
            docker,
            rpc,
            cfg,
            network_lock: Default::default(),
        })
    }

    /// The settings this runtime was made with.
    pub fn config(&self) -> &DockerRuntimeConfig {
        &self.cfg
    }

    /// The engine connection (the swarm runtime shares its manager's).
    pub(crate) fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Fails with [`RuntimeError::ImageMissing`] unless `image` is present locally.
    pub async fn ensure_image(&self, image: &str) -> Result<()> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Err(RuntimeError::ImageMissing {
                image: image.to_owned(),
            }),
            Err(e) => Err(docker_err(e)),
        }
    }

    /// Pulls `image`, reading the progress stream to its end so the image is complete before
    /// anything uses it. `progress` receives one line per status change.
    pub async fn pull_image(&self, image: &str, mut progress: impl FnMut(&str)) -> Result<()> {
        let opts = CreateImageOptionsBuilder::default()
            .from_image(image)
            .build();
        let mut stream = self.docker.create_image(Some(opts), None, None);
        let mut last = String::new();
        while let Some(item) = stream.next().await {
            let info = item.map_err(docker_err)?;
            if let Some(status) = info.status {
                if status != last {
                    progress(&status);
                    last = status;
                }
            }
        }
        Ok(())
    }

    /// Inspects a container by name: `None` if absent, an error if it exists but is not ours.
    pub(super) async fn inspect_managed(
        &self,
        name: &str,
    ) -> Result<Option<ContainerInspectResponse>> {
        match self.docker.inspect_container(name, None).await {
            Ok(info) if self.ours(&labels_of(&info)) => Ok(Some(info)),
            Ok(_) => Err(RuntimeError::NameTaken { name: name.into() }),
            Err(e) if is_status(&e, 404) => Ok(None),
            Err(e) => Err(docker_err(e)),
        }
    }

    pub(super) async fn inspect_node(&self, node: &NodeRef) -> Result<ContainerInspectResponse> {
        self.inspect_managed(&node.container_name())
            .await?
            .ok_or_else(|| RuntimeError::NotFound { node: node.clone() })
    }
}
