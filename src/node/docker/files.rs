//! A node's directory on the host: how its init script and secrets reach the container, and
//! where its RPC API and gateway listen.
//!
//! Owns the layout under `<node_dir>` (the daemon's `<data_dir>/nodes`, mode 0700, so no other
//! local account can enter it):
//!
//! ```text
//! <node_dir>/<16 hex of sha256(container name)>/   0700, the daemon's user
//!     init/00-nexus.sh   0555   bind-mounted read-only at /container-init.d
//!     run/               0700, the image's node user (uid 1000), bind-mounted at /nexus
//!         swarm.key, config.json,   0400, removed by the init script once installed
//!         identity.sed
//!         api.sock, gateway.sock    kubo's RPC API and gateway (no TCP listener at all)
//! ```
//!
//! The directory name is a hash because a unix socket path holds at most 107 bytes. It must not
//! talk to Docker, and it never writes a secret anywhere but `run/` (0400, inside 0700 dirs).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::node::endpoint::{Endpoint, MAX_SOCKET_PATH};
use crate::node::kubo_config::{self, BundleFile, Placement, NODE_GID, NODE_UID};
use crate::node::spec::{NodeRef, NodeSecrets, NodeSpec};

/// Length of the longest socket file name below a node's directory (`/run/gateway.sock`).
const LONGEST_TAIL: usize = 1 + 16 + "/run/".len() + "gateway.sock".len();

/// The longest `node_dir` whose sockets still fit a unix socket address.
pub const MAX_NODE_DIR: usize = MAX_SOCKET_PATH - LONGEST_TAIL;

/// One node's directory on the host.
#[derive(Clone, Debug)]
pub(super) struct NodeDir {
    root: PathBuf,
}

impl NodeDir {
    pub(super) fn new(node_dir: &Path, node: &NodeRef) -> Self {
        let digest = Sha256::digest(node.container_name().as_bytes());
        Self {
            root: node_dir.join(hex::encode(&digest[..8])),
        }
    }

    pub(super) fn init_dir(&self) -> PathBuf {
        self.root.join("init")
    }

    pub(super) fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    pub(super) fn api(&self) -> Endpoint {
        Endpoint::Unix(self.run_dir().join(kubo_config::API_SOCKET_NAME))
    }

    pub(super) fn gateway(&self) -> Endpoint {
        Endpoint::Unix(self.run_dir().join(kubo_config::GATEWAY_SOCKET_NAME))
    }

    /// Writes the init script and the secret files for a (re-)created container. Stale
    /// sockets and secret files of an earlier container are replaced.
    pub(super) fn prepare(
        &self,
        node_dir: &Path,
        spec: &NodeSpec,
        secrets: &NodeSecrets,
    ) -> io::Result<()> {
        let files = kubo_config::bundle(spec, secrets).map_err(io::Error::other)?;
        private_dir(node_dir, 0o700)?;
        private_dir(&self.root, 0o700)?;
        private_dir(&self.init_dir(), 0o755)?;
        private_dir(&self.run_dir(), 0o700)?;
        give_to_node_user(&self.run_dir())?;
        for f in &files {
            let dir = match f.placement {
                Placement::Init => self.init_dir(),
                Placement::Run => self.run_dir(),
            };
            write_file(&dir.join(f.name), f)?;
        }
        Ok(())
    }

    /// Removes the secret files (the init script removes them too, once installed).
    pub(super) fn remove_secrets(&self) -> io::Result<()> {
        for name in kubo_config::SECRET_FILES {
            match fs::remove_file(self.run_dir().join(name)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Removes the whole directory (the node is gone).
    pub(super) fn remove(&self) -> io::Result<()> {
        match fs::remove_dir_all(&self.root) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    #[cfg(test)]
    fn root(&self) -> &Path {
        &self.root
    }
}

/// Creates `dir` with `mode` (and fixes the mode of an existing one).
fn private_dir(dir: &Path, mode: u32) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
}

/// kubo in the container runs as the image's node user: it must create its sockets in `run/`
/// and remove the secret files once installed. Needs the daemon to run as root.
fn give_to_node_user(path: &Path) -> io::Result<()> {
    std::os::unix::fs::chown(path, Some(NODE_UID), Some(NODE_GID)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot give {} to the node user (uid {NODE_UID}): {e}. The daemon must run as \
                 root (it controls Docker, which is root-equivalent anyway)",
                path.display()
            ),
        )
    })
}

fn write_file(path: &Path, f: &BundleFile) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(f.mode)
        .open(path)?;
    file.write_all(&f.contents)?;
    file.sync_all()?;
    if f.placement == Placement::Run {
        give_to_node_user(path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::spec::{NetworkName, MAX_NETWORK_NAME, MAX_NODES};

    #[test]
    fn socket_paths_fit_for_the_longest_names() {
        let net = NetworkName::new(&"a".repeat(MAX_NETWORK_NAME)).unwrap();
        let node = NodeRef::new(net, MAX_NODES - 1).unwrap();
        let base = PathBuf::from(format!("/{}", "d".repeat(MAX_NODE_DIR - 1)));
        let dir = NodeDir::new(&base, &node);
        for e in [dir.api(), dir.gateway()] {
            let len = e.socket_path().unwrap().as_os_str().len();
            assert!(len <= MAX_SOCKET_PATH, "{len}");
        }
        assert_eq!(
            dir.gateway().socket_path().unwrap().as_os_str().len(),
            MAX_SOCKET_PATH
        );
        let other = NodeDir::new(
            &base,
            &NodeRef::new(NetworkName::new("b").unwrap(), 0).unwrap(),
        );
        assert_ne!(dir.root(), other.root());
    }
}
