//! Asking an image what kubo it runs, before any node runs on it: a throw-away container of
//! the image runs its own `ipfs version --all` (kubo's, which needs no repo) with no network,
//! no capabilities, no privilege gain, a read-only root, tmpfs for `/tmp` and the repo path (so
//! the image's `VOLUME` makes no volume), small limits and a deadline; its output is read and
//! the container removed whatever happened. Must not touch any node object, nor run the image's
//! entrypoint (it would init a repo).

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountType};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptions, RemoveContainerOptions, WaitContainerOptions,
};
use futures_util::StreamExt;

use super::client::docker_err;
use super::{DockerRuntime, REPO_PATH};
use crate::node::kubo_config::{NODE_GID, NODE_UID};
use crate::node::kubo_version::KuboVersion;
use crate::node::labels;
use crate::node::runtime::{Result, RuntimeError};

/// The label that marks a probe container (never a node: listing skips it).
pub(super) const PROBE: &str = "io.nexus.probe";

/// How long the image may take to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

impl DockerRuntime {
    /// Runs `image`'s `ipfs version --all` in a throw-away container and parses the answer.
    pub(super) async fn probe(&self, image: &str) -> Result<KuboVersion> {
        self.ensure_image(image).await?;
        let mut nonce = [0u8; 6];
        // A clash is only a refused name (409): the caller may ask again.
        let _ = getrandom::fill(&mut nonce);
        let name = format!("nexus-probe-{}", hex::encode(nonce));
        let mut l = HashMap::from([
            (labels::MANAGED.to_string(), "true".to_string()),
            (PROBE.to_string(), "true".to_string()),
        ]);
        l = self.stamp(l);
        let tmpfs = |target: &str| Mount {
            target: Some(target.into()),
            typ: Some(MountType::TMPFS),
            tmpfs_options: Some(bollard::models::MountTmpfsOptions {
                size_bytes: Some(16 << 20),
                mode: Some(0o1777),
                ..Default::default()
            }),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            // The binary itself, not the image's entrypoint (which would init a repo first).
            entrypoint: Some(vec!["ipfs".into()]),
            cmd: Some(vec!["version".into(), "--all".into()]),
            user: Some(format!("{NODE_UID}:{NODE_GID}")),
            labels: Some(l),
            network_disabled: Some(true),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec!["no-new-privileges:true".into()]),
                readonly_rootfs: Some(true),
                nano_cpus: Some(1_000_000_000),
                memory: Some(256 << 20),
                memory_swap: Some(256 << 20),
                pids_limit: Some(256),
                mounts: Some(vec![tmpfs("/tmp"), tmpfs(REPO_PATH)]),
                log_config: Some(HostConfigLogConfig {
                    typ: Some("json-file".into()),
                    config: Some(HashMap::from([("max-size".into(), "1m".into())])),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        let id = self
            .docker
            .create_container(Some(opts), body)
            .await
            .map_err(docker_err)?
            .id;
        let result = self.run_probe(image, &id).await;
        let remove = RemoveContainerOptions {
            force: true,
            v: true,
            link: false,
        };
        if let Err(e) = self.docker.remove_container(&id, Some(remove)).await {
            tracing::error!(container = %name, error = %e, "probe container not removed");
        }
        result
    }

    async fn run_probe(&self, image: &str, id: &str) -> Result<KuboVersion> {
        let failed = |detail: String| RuntimeError::ImageProbe {
            image: image.to_owned(),
            detail,
        };
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| failed(format!("it did not start: {e}")))?;
        let mut wait = self.docker.wait_container(id, None::<WaitContainerOptions>);
        let code = match tokio::time::timeout(PROBE_TIMEOUT, wait.next()).await {
            Err(_) => return Err(failed(format!("no answer within {PROBE_TIMEOUT:?}"))),
            Ok(Some(Ok(r))) => r.status_code,
            // bollard reports a non-zero exit as an error carrying the code.
            Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => code,
            Ok(Some(Err(e))) => return Err(docker_err(e)),
            Ok(None) => -1,
        };
        let (stdout, stderr) = self.probe_output(id).await;
        if code != 0 {
            let said = if stderr.trim().is_empty() {
                &stdout
            } else {
                &stderr
            };
            return Err(failed(format!(
                "`ipfs version --all` exited with code {code}: {}",
                said.trim().chars().take(400).collect::<String>()
            )));
        }
        KuboVersion::parse_all(&stdout).map_err(|e| failed(e.to_string()))
    }

    /// The probe's stdout and stderr, each at most 16 KiB.
    async fn probe_output(&self, id: &str) -> (String, String) {
        let opts = LogsOptions {
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        let (mut out, mut err) = (String::new(), String::new());
        let mut stream = self.docker.logs(id, Some(opts));
        while let Some(Ok(chunk)) = stream.next().await {
            match chunk {
                bollard::container::LogOutput::StdOut { message } => {
                    out.push_str(&String::from_utf8_lossy(&message))
                }
                other => err.push_str(&other.to_string()),
            }
            if out.len() + err.len() > 32 * 1024 {
                break;
            }
        }
        (out, err)
    }
}
