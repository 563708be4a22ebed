//! The files a node container gets before it starts, and the init script that installs them.
//!
//! Owns the `/container-init.d/` script ([`init_script`]: swarm key, the whole configuration or
//! key by key, the identity check), where a runtime puts the secret files ([`Bundle`]) and the
//! list of files with their modes ([`bundle`]). What goes into the configuration is the
//! parent's ([`super::settings`], [`super::rendered_config`]); like it, this renders only and
//! must not talk to Docker or the file system.

use super::{
    rendered_config, settings, API_SOCKET_NAME, DEFAULT_DATASTORE_SPEC, GATEWAY_SOCKET_NAME,
    INIT_SCRIPT_NAME, RUN_DIR, SECRET_FILES,
};
use crate::node::identity::IdentityError;
use crate::node::spec::{NodeSecrets, NodeSpec};

/// The `/container-init.d/` script. It holds no secret (those are files in [`RUN_DIR`],
/// which it removes once installed) and is idempotent: it runs before every daemon start,
/// and installs only what a (re-)created container was given.
pub fn init_script(spec: &NodeSpec) -> String {
    init_script_for(spec, &Bundle::RUN_DIR)
}

/// Where a container finds its secret files, and whether the script removes them once
/// installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bundle {
    /// The directory holding [`SECRET_FILES`].
    pub dir: &'static str,
    /// Whether the files can (and must) be deleted once installed: files in [`RUN_DIR`] can;
    /// secrets an engine mounts read-only (Docker Swarm's `/run/secrets`) cannot, and are
    /// installed again at every start.
    pub removable: bool,
}

impl Bundle {
    /// The Docker runtime's: files in [`RUN_DIR`], removed once installed.
    pub const RUN_DIR: Bundle = Bundle {
        dir: RUN_DIR,
        removable: true,
    };
    /// An engine's read-only secrets directory (Docker Swarm).
    pub const ENGINE_SECRETS: Bundle = Bundle {
        dir: "/run/secrets",
        removable: false,
    };
}

/// [`init_script`] for a bundle in `bundle.dir`.
pub fn init_script_for(spec: &NodeSpec, bundle: &Bundle) -> String {
    let [key, sed, conf] = SECRET_FILES;
    let b = bundle.dir;
    // Removing a secret file once installed, where the engine lets us.
    let rm = |files: &str| {
        if bundle.removable {
            format!("rm -f {files}")
        } else {
            ":".to_owned()
        }
    };
    let mut s = String::new();
    s.push_str("#!/bin/sh\n");
    s.push_str("# Written by nexus. Runs before every start of this node's daemon.\n");
    s.push_str("set -e\n");
    s.push_str("repo=\"${IPFS_PATH:-/data/ipfs}\"\n");
    // kubo does not remove the sockets of a killed daemon, and refuses to listen on them.
    s.push_str(&format!(
        "rm -f {RUN_DIR}/{API_SOCKET_NAME} {RUN_DIR}/{GATEWAY_SOCKET_NAME}\n"
    ));
    s.push_str(&format!(
        "if [ -f {b}/{key} ]; then\n  rm -f \"$repo/swarm.key\"\n  cat {b}/{key} > \"$repo/swarm.key\"\n  chmod 0400 \"$repo/swarm.key\"\n  {}\nfi\n",
        rm(&format!("{b}/{key}"))
    ));
    s.push_str(
        "[ -s \"$repo/swarm.key\" ] || { echo 'nexus: no swarm key installed: re-create this node' >&2; exit 1; }\n",
    );
    // The whole configuration, when the repo's datastore is the one it describes: written
    // beside the old file and renamed over it, so a crash leaves one or the other.
    s.push_str("whole=\n");
    s.push_str(&format!(
        "if [ -f {b}/{conf} ] && [ \"$(cat \"$repo/datastore_spec\" 2>/dev/null)\" = {spec_line} ]; then\n  (umask 077 && cat {b}/{conf} > \"$repo/config.nexus\")\n  mv -f \"$repo/config.nexus\" \"$repo/config\"\n  {rm}\n  whole=1\n  echo 'nexus: configuration written for {node} ({peer})'\nfi\n",
        spec_line = sh_quote(DEFAULT_DATASTORE_SPEC),
        rm = rm(&format!("{b}/{conf} {b}/{sed}")),
        node = spec.node,
        peer = spec.peer_id,
    ));
    // Any other datastore keeps its `Datastore.Spec`: key by key, through kubo.
    s.push_str(&format!(
        "if [ -f {b}/{conf} ] && [ -z \"$whole\" ]; then\n  echo 'nexus: the repo has a datastore of its own: configuring key by key'\n  {}\n  [ -f {b}/{sed} ] && sed -i -f {b}/{sed} \"$repo/config\"\n  {}\n",
        rm(&format!("{b}/{conf}")),
        rm(&format!("{b}/{sed}")),
    ));
    // kubo refuses every `ipfs config` on a repo of another version (fsrepo.go:179-192), and
    // the daemon's `--migrate` comes only after them: when the first call says the repo needs
    // a migration (a newer kubo image), migrate it first. A repo newer than the image (a
    // downgrade) still fails here, with kubo's message.
    let mut settings = settings(spec).into_iter();
    if let Some((key, value)) = settings.next() {
        let set = format!("ipfs config --json {key} {}", sh_quote(&value.to_string()));
        s.push_str(&format!(
            "  if ! out=$({set} 2>&1); then\n    case \"$out\" in\n      *'needs migration'*)\n        echo 'nexus: the repo needs a migration for this kubo: migrating before configuring'\n        ipfs repo migrate\n        {set}\n        ;;\n      *) printf '%s\\n' \"$out\" >&2; exit 1 ;;\n    esac\n  fi\n"
        ));
    }
    for (key, value) in settings {
        s.push_str(&format!(
            "  ipfs config --json {key} {}\n",
            sh_quote(&value.to_string())
        ));
    }
    s.push_str(&format!(
        "  echo 'nexus: config applied for {} ({})'\nfi\n",
        spec.node, spec.peer_id
    ));
    s.push_str(&format!(
        "grep -q {} \"$repo/config\" || {{ echo 'nexus: the node identity is not in the config' >&2; exit 1; }}\n",
        sh_quote(&format!("\"PeerID\": \"{}\"", spec.peer_id))
    ));
    s
}

/// A sed script replacing the repo's identity with the node's own. Secret (mode 0400).
/// kubo writes its config with `MarshalIndent`, one `"Key": value` per line, and
/// `PeerID`/`PrivKey` appear only under `Identity`.
pub fn identity_sed(secrets: &NodeSecrets) -> Result<String, IdentityError> {
    let peer_id = secrets.identity.peer_id().to_base58();
    let key = secrets.identity.kubo_private_key()?;
    // base58 and base64 never contain `|`, `&` or `\`, so they are safe in a sed replacement.
    Ok(format!(
        "s|\"PeerID\": \"[^\"]*\"|\"PeerID\": \"{peer_id}\"|\ns|\"PrivKey\": \"[^\"]*\"|\"PrivKey\": \"{key}\"|\n"
    ))
}

/// Which container directory a file goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// [`INIT_DIR`], read-only, readable by all (no secret).
    Init,
    /// [`RUN_DIR`], owned by the node user; secret files are 0400.
    Run,
}

/// One file a container gets before it starts.
#[derive(Debug)]
pub struct BundleFile {
    pub placement: Placement,
    pub name: &'static str,
    pub mode: u32,
    pub contents: Vec<u8>,
}

/// Everything a node container gets before it starts.
pub fn bundle(spec: &NodeSpec, secrets: &NodeSecrets) -> Result<Vec<BundleFile>, IdentityError> {
    let [key, sed, conf] = SECRET_FILES;
    let mut config = serde_json::to_vec_pretty(&rendered_config(spec, secrets)?)
        .map_err(|e| IdentityError::Encode(e.to_string()))?;
    config.push(b'\n');
    Ok(vec![
        BundleFile {
            placement: Placement::Init,
            name: INIT_SCRIPT_NAME,
            mode: 0o555,
            contents: init_script(spec).into_bytes(),
        },
        BundleFile {
            placement: Placement::Run,
            name: key,
            mode: 0o400,
            contents: secrets.swarm_key.to_file_contents().into_bytes(),
        },
        BundleFile {
            placement: Placement::Run,
            name: sed,
            mode: 0o400,
            contents: identity_sed(secrets)?.into_bytes(),
        },
        BundleFile {
            placement: Placement::Run,
            name: conf,
            mode: 0o400,
            contents: config,
        },
    ])
}

/// Single-quotes a string for POSIX sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::super::container_env;
    use super::super::tests::three_nodes;
    use super::*;

    #[test]
    fn no_secret_outside_the_secret_files() {
        let plan = three_nodes();
        let (spec, secrets) = &plan[0];
        let key_hex = secrets
            .swarm_key
            .to_file_contents()
            .lines()
            .nth(2)
            .unwrap()
            .to_string();
        let priv_key = secrets.identity.kubo_private_key().unwrap();
        let script = init_script(spec);
        let env = container_env(spec).join("\n");
        for public in [&script, &env] {
            assert!(!public.contains(&key_hex));
            assert!(!public.contains(&priv_key));
        }
        let files = bundle(spec, secrets).unwrap();
        for f in &files {
            let text = String::from_utf8(f.contents.clone()).unwrap();
            let secret = text.contains(&key_hex) || text.contains(&priv_key);
            assert_eq!(secret, f.mode == 0o400, "{}", f.name);
            assert_eq!(secret, SECRET_FILES.contains(&f.name), "{}", f.name);
            if secret {
                assert_eq!(f.placement, Placement::Run);
            }
        }
        let sed = identity_sed(secrets).unwrap();
        assert!(sed.contains(&spec.peer_id) && sed.contains(&priv_key));
    }

    #[test]
    fn init_script_sets_every_key_and_checks_identity() {
        let plan = three_nodes();
        let (spec, _) = &plan[0];
        let script = init_script(spec);
        assert!(script.starts_with("#!/bin/sh\n"));
        assert!(script.contains("set -e"));
        for (key, value) in settings(spec) {
            let line = format!("ipfs config --json {key} '{}'", value);
            assert!(script.contains(&line), "{line}");
        }
        assert!(script.contains(&format!("\"PeerID\": \"{}\"", spec.peer_id)));
        assert!(!script.contains("Identity.PrivKey"));
        // The secret files are gone once installed, and stale sockets before kubo listens.
        for f in SECRET_FILES {
            assert!(script.contains(&format!("rm -f {RUN_DIR}/{f}")), "{f}");
        }
        assert!(script.contains(&format!("rm -f {RUN_DIR}/{API_SOCKET_NAME}")));
        // A repo that needs a migration is migrated before the first `ipfs config` is retried,
        // and before every other call.
        let migrate = script.find("ipfs repo migrate").expect("migrates");
        let second_key = settings(spec)[1].0;
        assert!(
            migrate
                < script
                    .find(&format!("ipfs config --json {second_key} "))
                    .unwrap()
        );
        assert!(script.contains("*'needs migration'*)"));
    }

    #[test]
    fn the_script_writes_the_config_whole_and_calls_ipfs_only_for_another_datastore() {
        let plan = three_nodes();
        let (spec, _) = &plan[0];
        let script = init_script(spec);
        let whole = script
            .find("mv -f \"$repo/config.nexus\" \"$repo/config\"")
            .expect("writes the whole config");
        let guard = script
            .find(&sh_quote(DEFAULT_DATASTORE_SPEC))
            .expect("only over kubo's default datastore");
        assert!(guard < whole);
        // Every `ipfs` call of the script is on the other path, after the whole write.
        let first_ipfs = script.find("ipfs config").unwrap();
        let other = script
            .find("configuring key by key")
            .expect("the key-by-key path");
        assert!(whole < other && other < first_ipfs);
        assert_eq!(script.matches("ipfs ").count(), settings(spec).len() + 2);
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }
}
