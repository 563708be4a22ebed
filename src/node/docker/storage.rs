//! What the host's Docker storage can guarantee about a node's disk, read from `docker info`
//! (storage driver and backing filesystem); and the host's memory, from the same answer, for
//! admission control.
//!
//! Docker's `local` volume driver takes a `size` option (a hard per-volume limit) only when its
//! data root is XFS mounted with project quota (`pquota`); elsewhere creating such a volume
//! fails with "quota size requested but no quota support". This module only reports which case
//! a host is likely in: it must not change how volumes are created. No hard limit is wired
//! until a host with XFS project quota can test it; until then every host gets the delegator's
//! limit on writes plus kubo's GC watermark (docs/security.md, "Disk").

use std::fmt;

use super::client::docker_err;
use super::DockerRuntime;
use crate::node::runtime::Result;

/// What a node's `disk` can rest on, on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskGuarantee {
    /// The storage is backed by XFS: the `local` driver's `size` option may hold a hard
    /// per-volume limit if the filesystem is mounted with `pquota` (not visible in `docker
    /// info`). nexus does not use it yet.
    HardLimitPossible { driver: String },
    /// No hard per-volume limit on this storage: the delegator's limit on writes and kubo's
    /// GC watermark only.
    SoftOnly {
        driver: String,
        backing: Option<String>,
    },
}

impl fmt::Display for DiskGuarantee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskGuarantee::HardLimitPossible { driver } => write!(
                f,
                "storage driver {driver} on xfs: a hard per-volume size is possible with the \
                 pquota mount option, but nexus does not set one yet; the delegator's limit on \
                 writes applies"
            ),
            DiskGuarantee::SoftOnly { driver, backing } => write!(
                f,
                "storage driver {driver} on {}: no hard per-volume size; the delegator's limit \
                 on writes applies",
                backing.as_deref().unwrap_or("an unreported filesystem")
            ),
        }
    }
}

/// The guarantee for a storage driver and its `DriverStatus` pairs (as `docker info` gives
/// them: `[["Backing Filesystem", "xfs"], …]`).
pub fn assess(driver: Option<&str>, driver_status: &[Vec<String>]) -> DiskGuarantee {
    let driver = driver.unwrap_or("unknown").to_owned();
    let backing = driver_status
        .iter()
        .find(|kv| kv.first().is_some_and(|k| k == "Backing Filesystem"))
        .and_then(|kv| kv.get(1))
        .map(|v| v.to_ascii_lowercase());
    // The `local` driver's quota control is XFS project quota only.
    if backing.as_deref() == Some("xfs") {
        DiskGuarantee::HardLimitPossible { driver }
    } else {
        DiskGuarantee::SoftOnly { driver, backing }
    }
}

impl DockerRuntime {
    /// What this host's Docker storage can guarantee about a node's disk (one `docker info`).
    pub async fn disk_guarantee(&self) -> Result<DiskGuarantee> {
        let info = self.docker.info().await.map_err(docker_err)?;
        Ok(assess(
            info.driver.as_deref(),
            info.driver_status.as_deref().unwrap_or_default(),
        ))
    }

    /// The host's memory as Docker reports it (`MemTotal` of `docker info`), for admission
    /// control.
    pub async fn memory_total(&self) -> Result<Option<u64>> {
        let info = self.docker.info().await.map_err(docker_err)?;
        Ok(info
            .mem_total
            .and_then(|m| u64::try_from(m).ok())
            .filter(|m| *m > 0))
    }

    /// The host's cores as Docker reports them (`docker info`, `NCPU`).
    pub async fn cpus_total(&self) -> Result<Option<f64>> {
        let info = self.docker.info().await.map_err(docker_err)?;
        Ok(info.ncpu.filter(|n| *n > 0).map(|n| n as f64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(pairs: &[(&str, &str)]) -> Vec<Vec<String>> {
        pairs
            .iter()
            .map(|(k, v)| vec![k.to_string(), v.to_string()])
            .collect()
    }

    #[test]
    fn hosts_and_their_guarantee() {
        // overlay2 on XFS (the case `docker volume create --opt size=` may work).
        let xfs = status(&[("Backing Filesystem", "xfs"), ("Supports d_type", "true")]);
        assert_eq!(
            assess(Some("overlay2"), &xfs),
            DiskGuarantee::HardLimitPossible {
                driver: "overlay2".into()
            }
        );
        // overlay2 on ext4: no project quota for the local driver.
        let ext4 = status(&[("Backing Filesystem", "extfs")]);
        assert_eq!(
            assess(Some("overlay2"), &ext4),
            DiskGuarantee::SoftOnly {
                driver: "overlay2".into(),
                backing: Some("extfs".into())
            }
        );
        // fuse-overlayfs (rootless, nested) reports no status at all.
        let g = assess(Some("fuse-overlayfs"), &[]);
        assert_eq!(
            g,
            DiskGuarantee::SoftOnly {
                driver: "fuse-overlayfs".into(),
                backing: None
            }
        );
        assert!(g.to_string().contains("no hard per-volume size"));
        // Malformed pairs are ignored.
        let odd = vec![vec![], vec!["Backing Filesystem".to_string()]];
        assert!(matches!(
            assess(None, &odd),
            DiskGuarantee::SoftOnly { backing: None, .. }
        ));
    }
}
