//! The `nexus` command line: clap definitions and dispatch.
//!
//! Owns parsing (flags → requests, with errors that name the flag), choosing between the
//! daemon and the client commands, and output (tables for people, one JSON document for
//! programs with `--json`, progress on a terminal while an operation waits). Every client
//! command is a gRPC call; it must not hold logic the daemon or the orchestrator owns.

mod commands;
mod ctl;
mod flags;
mod pins;
mod render;
mod settings;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args as ClapArgs, Parser, Subcommand};

pub use flags::DaemonFlags;

#[derive(Parser, Debug)]
#[command(
    name = "nexus",
    version,
    about = "Run private IPFS (kubo) networks on a Docker host",
    after_help = "Start with `nexus daemon`, then `nexus network create demo --replicas 3 --start`."
)]
pub struct Args {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(ClapArgs, Debug, Clone)]
pub struct Global {
    /// Configuration file (default: $XDG_CONFIG_HOME/nexus/nexus.toml, then /etc/nexus/nexus.toml).
    #[arg(long, global = true, env = "NEXUS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print one JSON document (or JSON lines for streams) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Daemon address, e.g. http://127.0.0.1:7700 (default: from the configuration).
    #[arg(long, global = true)]
    pub address: Option<String>,
    /// API key (default: from the configuration or the daemon's data directory).
    #[arg(long, global = true, hide_env_values = true)]
    pub api_key: Option<String>,
    /// PEM CA certificate that signed the daemon's TLS certificate.
    #[arg(long, global = true)]
    pub tls_ca: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Write a commented configuration file with fresh secrets (mode 0600).
    Init {
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Run the daemon: the gRPC API, the orchestrator and the delegator.
    Daemon(DaemonFlags),
    /// Print the CLI's and the daemon's versions.
    Version,
    /// Create, start, change, stop and remove private networks.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// A network's pinset: CIDs the daemon keeps on `replication` of its nodes.
    #[command(subcommand)]
    Pin(PinCmd),
    /// Follow network and node events until interrupted.
    Events {
        /// Only this network's events.
        #[arg(long)]
        network: Option<String>,
    },
    /// Delegator tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Call any RPC by name: `nexus ctl CreateNetwork name=demo replicas=3`; `nexus ctl help`.
    Ctl {
        /// An RPC name, or `help` [RPC].
        method: String,
        /// Request fields as Field=Value (a.b=V for nested fields, a,b,c for lists).
        fields: Vec<String>,
        /// Indent the JSON output.
        #[arg(long)]
        pretty: bool,
    },
    /// Swarm key tools (offline).
    #[command(subcommand)]
    SwarmKey(SwarmKeyCmd),
    /// The store's sealed secrets (swarm keys and node private keys).
    #[command(subcommand)]
    Secrets(SecretsCmd),
    /// Run a gate: the per-host forwarder to node sockets (the nexus-gate image's entrypoint).
    #[command(hide = true)]
    Gate(GateFlags),
}

/// `nexus gate`: where it listens, what it serves, its credentials (files, e.g. swarm secrets).
#[derive(ClapArgs, Debug, Clone)]
pub struct GateFlags {
    /// Address to listen on, e.g. 0.0.0.0:7790.
    #[arg(long)]
    pub listen: std::net::SocketAddr,
    /// The directory holding the node directories.
    #[arg(long, default_value = "/run/nexus")]
    pub root: PathBuf,
    /// File with the token (64 hex digits).
    #[arg(long)]
    pub token_file: PathBuf,
    /// The gate's certificate, PEM.
    #[arg(long)]
    pub cert_file: PathBuf,
    /// The gate's private key, PEM.
    #[arg(long)]
    pub key_file: PathBuf,
    /// Connections served at once; more are closed.
    #[arg(long, default_value_t = nexus::gate::server::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Log format: json or text.
    #[arg(long, default_value = "json", value_parser = ["json", "text"])]
    pub log_format: String,
}

#[derive(Subcommand, Debug)]
pub enum SecretsCmd {
    /// Seal every swarm key and node private key again under a new key, with no downtime
    /// (the daemon rewrites its seal key file).
    Rotate,
}

#[derive(Subcommand, Debug)]
pub enum NetworkCmd {
    /// Record a new network (add --start to start it and wait until it is ready).
    Create(CreateFlags),
    /// Start a network and wait until every node is ready and meshed.
    Start { name: String },
    /// Change a network; a running one converges node by node.
    Update(UpdateFlags),
    /// Stop a network's nodes, keeping data and identities.
    Stop { name: String },
    /// Remove a network and its data.
    #[command(alias = "rm")]
    Remove {
        name: String,
        /// Remove even if it is running.
        #[arg(long)]
        force: bool,
    },
    /// Show one network and its nodes.
    Get { name: String },
    /// List networks.
    #[command(alias = "ls")]
    List,
    /// Live resource use of a network's nodes.
    Stats { name: String },
    /// Each node's state, last logs, peers and config (without private key).
    Diagnostics { name: String },
    /// What an outside kubo needs to join: the swarm key and bootstrap addresses.
    JoinKit {
        name: String,
        /// Write the swarm key to this file (mode 0600) instead of printing it.
        #[arg(long)]
        swarm_key_out: Option<PathBuf>,
    },
}

#[derive(ClapArgs, Debug, Clone)]
pub struct CreateFlags {
    /// Network name: lowercase letters, digits and `-` (a DNS label, at most 40 characters).
    pub name: String,
    /// Number of nodes.
    #[arg(long, default_value_t = 1)]
    pub replicas: u32,
    #[command(flatten)]
    pub resources: ResourceFlags,
    /// A user (JWT `sub`) allowed through the delegator, as ID or ID:ROLE (reader, writer or
    /// admin; default writer); repeat for several.
    #[arg(long = "user")]
    pub users: Vec<String>,
    /// Serve the gateway without a token.
    #[arg(long)]
    pub gateway_public: bool,
    /// Let a public gateway serve /ipns/ names that need DNS (DNSLink): the node then looks
    /// names up for anonymous clients (refused there by default).
    #[arg(long)]
    pub ipns_dns: bool,
    /// A CORS origin allowed by the delegator; repeat for several.
    #[arg(long = "allowed-origin")]
    pub allowed_origins: Vec<String>,
    /// Use the swarm key in this file (kubo's swarm.key format) instead of a new one.
    #[arg(long)]
    pub swarm_key_file: Option<PathBuf>,
    /// An extra bootstrap peer (/ip4/…/tcp/…/p2p/…); repeat for several.
    #[arg(long = "bootstrap")]
    pub bootstrap: Vec<String>,
    /// An RPC command tenants may call beyond the defaults (e.g. pin/remote); repeatable.
    #[arg(long = "api-allow")]
    pub api_allow: Vec<String>,
    /// An RPC command tenants may not call (e.g. pin/rm); repeatable.
    #[arg(long = "api-deny")]
    pub api_deny: Vec<String>,
    /// On how many nodes each pinned CID is kept: a number up to --replicas, or `all`
    /// (default: 2, or 1 on a 1-node network).
    #[arg(long)]
    pub replication: Option<String>,
    /// Start the network after creating it, and wait until it is ready.
    #[arg(long)]
    pub start: bool,
    /// The node image (kubo 0.37 or later, present on the daemon's Docker host); default: the
    /// daemon's node.image.
    #[arg(long)]
    pub image: Option<String>,
}

/// Per-node resources of `network create` and `network update`.
#[derive(ClapArgs, Debug, Clone)]
pub struct ResourceFlags {
    /// CPU cores per node (e.g. 0.5); unset: the daemon's default on create, unchanged on
    /// update.
    #[arg(long)]
    pub cpus: Option<String>,
    /// Memory per node (e.g. 512MiB).
    #[arg(long)]
    pub memory: Option<String>,
    /// Datastore size per node (e.g. 10GiB).
    #[arg(long)]
    pub disk: Option<String>,
}

#[derive(ClapArgs, Debug, Clone)]
pub struct UpdateFlags {
    pub name: String,
    #[arg(long)]
    pub replicas: Option<u32>,
    /// On how many nodes each pinned CID is kept: a number up to the replicas, or `all`.
    #[arg(long)]
    pub replication: Option<String>,
    #[command(flatten)]
    pub resources: ResourceFlags,
    /// Replace the users with these, as ID or ID:ROLE (reader, writer, admin; default writer);
    /// repeat; see --clear-users.
    #[arg(long = "user")]
    pub users: Vec<String>,
    /// Remove every user.
    #[arg(long, conflicts_with = "users")]
    pub clear_users: bool,
    /// true or false.
    #[arg(long)]
    pub gateway_public: Option<bool>,
    /// true or false: whether a public gateway serves /ipns/ names that need DNS (DNSLink).
    #[arg(long)]
    pub ipns_dns: Option<bool>,
    /// Replace the allowed origins with these (repeat).
    #[arg(long = "allowed-origin")]
    pub allowed_origins: Vec<String>,
    #[arg(long, conflicts_with = "allowed_origins")]
    pub clear_allowed_origins: bool,
    /// Replace the extra allowed RPC commands with these (repeat).
    #[arg(long = "api-allow")]
    pub api_allow: Vec<String>,
    #[arg(long, conflicts_with = "api_allow")]
    pub clear_api_allow: bool,
    /// Replace the extra denied RPC commands with these (repeat).
    #[arg(long = "api-deny")]
    pub api_deny: Vec<String>,
    #[arg(long, conflicts_with = "api_deny")]
    pub clear_api_deny: bool,
    /// Move the nodes to this image (kubo 0.37 or later): checked first, then running nodes
    /// are re-created on it one at a time, each ready before the next; a first node that does
    /// not come up on it is put back on the old image and the others are left alone.
    #[arg(long)]
    pub image: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum PinCmd {
    /// Add a CID to a network's pinset; it is held on `replication` of its nodes.
    Add {
        network: String,
        cid: String,
        /// A name for the pin (at most 255 characters).
        #[arg(long)]
        name: Option<String>,
        /// A KEY=VALUE pair of metadata; repeat for several.
        #[arg(long = "meta")]
        meta: Vec<String>,
    },
    /// List a network's pins, newest first.
    #[command(alias = "list")]
    Ls {
        network: String,
        /// Only this CID (repeat for several).
        #[arg(long = "cid")]
        cids: Vec<String>,
        /// Only pins with this name (see --match).
        #[arg(long)]
        name: Option<String>,
        /// How --name matches: exact, iexact, partial, ipartial.
        #[arg(long = "match")]
        name_match: Option<String>,
        /// Only pins in this status: queued, pinning, pinned, failed (repeat for several).
        #[arg(long = "status")]
        statuses: Vec<String>,
        /// Only pins with this KEY=VALUE in their metadata (repeat: all must match).
        #[arg(long = "meta")]
        meta: Vec<String>,
        /// At most this many (1-1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Show one pin and the nodes that hold it.
    Get { network: String, request_id: String },
    /// Remove a pin: it is unpinned from every node that holds it for no other pin.
    #[command(alias = "remove")]
    Rm { network: String, request_id: String },
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Mint a delegator token (JWT) for a user with the configured HS256 secret; prints the
    /// token (with --json: the token, its id for `token revoke`, and when it expires).
    Issue {
        /// The user (`sub` claim); must be in a network's users to reach it.
        #[arg(long)]
        user: String,
        /// Lifetime, e.g. 1h, 30m, 7d (at most delegator.max_ttl).
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Limit the token to this network (repeat for several; `net` claim).
        #[arg(long = "net")]
        networks: Vec<String>,
        /// Lower the user's role for this token: reader, writer or admin (`role` claim).
        #[arg(long)]
        role: Option<String>,
    },
    /// Revoke a token by its id (`jti`, as `token issue --json` prints it): the daemon's
    /// delegator refuses it from now on, across restarts, until it would have expired anyway.
    Revoke {
        /// The token id.
        jti: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum SwarmKeyCmd {
    /// Print a new random swarm key (kubo's swarm.key format).
    Generate,
    /// Check that a swarm.key file is valid.
    Check { file: PathBuf },
}

/// Runs a parsed command line. Logging is set up here: the daemon from its configuration,
/// client commands quietly (warnings only, `NEXUS_LOG` to change).
pub async fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Init { force } => settings::init(&args.global, force),
        Command::Daemon(flags) => settings::daemon(&args.global, &flags).await,
        Command::Gate(flags) => gate(flags).await,
        Command::SwarmKey(cmd) => {
            init_client_logging();
            commands::swarm_key(cmd)
        }
        Command::Token(TokenCmd::Issue {
            user,
            ttl,
            networks,
            role,
        }) => {
            init_client_logging();
            settings::issue_token(&args.global, &user, &ttl, networks, role.as_deref())
        }
        Command::Token(TokenCmd::Revoke { jti }) => {
            init_client_logging();
            commands::revoke_token(&args.global, jti).await
        }
        Command::Version => {
            init_client_logging();
            commands::version(&args.global).await
        }
        Command::Network(cmd) => {
            init_client_logging();
            commands::network(&args.global, cmd).await
        }
        Command::Secrets(cmd) => {
            init_client_logging();
            commands::secrets(&args.global, cmd).await
        }
        Command::Pin(cmd) => {
            init_client_logging();
            pins::pin(&args.global, cmd).await
        }
        Command::Events { network } => {
            init_client_logging();
            commands::events(&args.global, network).await
        }
        Command::Ctl {
            method,
            fields,
            pretty,
        } => {
            init_client_logging();
            ctl::run(&args.global, &method, &fields, pretty).await
        }
    }
}

/// Runs a gate with its own logging (`NEXUS_LOG` filter, default `info`); needs no
/// configuration file.
async fn gate(flags: GateFlags) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NEXUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if flags.log_format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    nexus::gate::server::run(nexus::gate::server::GateArgs {
        listen: flags.listen,
        root: flags.root,
        token_file: flags.token_file,
        cert_file: flags.cert_file,
        key_file: flags.key_file,
        max_connections: flags.max_connections,
    })
    .await?;
    Ok(())
}

fn init_client_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NEXUS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn flags_parse() {
        let a = Args::try_parse_from([
            "nexus",
            "--json",
            "network",
            "create",
            "n1",
            "--replicas",
            "3",
            "--user",
            "a",
            "--user",
            "b",
            "--start",
        ])
        .unwrap();
        assert!(a.global.json);
        let Command::Network(NetworkCmd::Create(c)) = a.command else {
            panic!("not create")
        };
        assert_eq!(c.users, vec!["a", "b"]);
        assert!(c.start);
        assert!(Args::try_parse_from([
            "nexus",
            "network",
            "update",
            "n",
            "--user",
            "a",
            "--clear-users"
        ])
        .is_err());
    }

    #[test]
    fn gate_flags_parse_and_stay_out_of_the_help() {
        let a = Args::try_parse_from([
            "nexus",
            "gate",
            "--listen",
            "0.0.0.0:7790",
            "--token-file",
            "/run/secrets/t",
            "--cert-file",
            "/run/secrets/c",
            "--key-file",
            "/run/secrets/k",
        ])
        .unwrap();
        let Command::Gate(g) = a.command else {
            panic!("not gate")
        };
        assert_eq!(g.root, PathBuf::from("/run/nexus"));
        assert_eq!(g.log_format, "json");
        assert!(Args::try_parse_from(["nexus", "gate", "--listen", "x:1"]).is_err());
        let help = Args::command().render_help().to_string();
        assert!(!help.contains("gate"), "{help}");
    }
}
