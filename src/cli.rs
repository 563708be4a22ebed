//! Command-line parsing and output for the `nexus` binary.
//!
//! Owns the clap definitions, parsing of human sizes and CPU amounts, and rendering (tables
//! for people, `--json` for programs). It calls the node runtime and must not re-implement
//! anything the runtime does.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use nexus::node::{
    plan_network, DockerRuntime, DockerRuntimeConfig, NetworkName, NodeRecord, NodeRef,
    NodeRuntime, NodeState, Resources, SwarmKey,
};

/// The official kubo image nexus runs by default (pinned).
pub const DEFAULT_IMAGE: &str = "ipfs/kubo:v0.43.1";

#[derive(Parser, Debug)]
#[command(
    name = "nexus",
    version,
    about = "Run private IPFS (kubo) networks on a Docker host"
)]
pub struct Args {
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create, list, start, stop and remove private networks.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Inspect single nodes.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Follow start/die/oom events of nexus's node containers until interrupted.
    Events,
    /// Swarm key tools.
    #[command(subcommand)]
    SwarmKey(SwarmKeyCmd),
}

#[derive(Subcommand, Debug)]
enum NetworkCmd {
    /// Create a private network: N kubo nodes sharing one new swarm key, fully meshed.
    Up {
        /// Network name: lowercase letters, digits and `-` (a DNS label).
        name: String,
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: u16,
        /// Node image (the official kubo image, or the offline test image).
        #[arg(long, env = "NEXUS_NODE_IMAGE", default_value = DEFAULT_IMAGE)]
        image: String,
        /// CPU cores per node (e.g. 0.5).
        #[arg(long, default_value = "1")]
        cpus: String,
        /// Memory per node (e.g. 512MiB, 2GiB).
        #[arg(long, default_value = "1GiB")]
        memory: String,
        /// Repo size limit per node (e.g. 10GiB).
        #[arg(long, default_value = "10GiB")]
        disk: String,
        /// Use the swarm key in this file; if the file does not exist, write the new key there
        /// (mode 0600) so outside nodes can join.
        #[arg(long)]
        swarm_key_file: Option<PathBuf>,
        /// Pull the image first if it is missing.
        #[arg(long)]
        pull: bool,
        /// How long each node may take to become ready, in seconds.
        #[arg(long, default_value_t = 60)]
        ready_timeout: u64,
    },
    /// List every node nexus runs on this host (rebuilt from Docker labels).
    Ls,
    /// Stop a network's nodes (data is kept).
    Stop { name: String },
    /// Start a stopped network's nodes and wait until they are ready.
    Start { name: String },
    /// Remove a network: containers, data volumes and its Docker network.
    Rm { name: String },
}

#[derive(Subcommand, Debug)]
enum NodeCmd {
    /// CPU, memory, network, disk, uptime and peers of one node.
    Stats { network: String, index: u16 },
}

#[derive(Subcommand, Debug)]
enum SwarmKeyCmd {
    /// Print a new random swarm key (kubo's swarm.key format).
    Generate,
    /// Check that a swarm.key file is valid.
    Check { file: PathBuf },
}

/// Parses `512MiB`, `2GiB`, `10GB`, `1024` (bytes).
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .with_context(|| format!("`{s}` is not a size: use e.g. 512MiB, 2GiB or 10GB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => bail!(
            "unknown size unit `{other}` in `{s}`: use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB"
        ),
    };
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        bail!("size `{s}` is out of range");
    }
    Ok(bytes as u64)
}

/// Parses a CPU amount in cores (`0.5`, `2`) into thousandths of a core.
pub fn parse_cpus(s: &str) -> Result<u32> {
    let n: f64 = s
        .trim()
        .parse()
        .with_context(|| format!("`{s}` is not a number of CPU cores (e.g. 0.5 or 2)"))?;
    if !n.is_finite() || n <= 0.0 || n > 256.0 {
        bail!("CPU cores must be between 0.01 and 256, not `{s}`");
    }
    Ok((n * 1000.0).round() as u32)
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

fn state_text(s: &NodeState) -> String {
    match s {
        NodeState::Exited { code } => format!("exited({code})"),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn port_text(p: Option<u16>) -> String {
    p.map(|p| p.to_string()).unwrap_or_else(|| "-".into())
}

fn print_table(rows: &[Vec<String>]) {
    let cols = rows.first().map(Vec::len).unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = std::io::stdout().lock();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
}

fn print_nodes(records: &[NodeRecord], json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(records)?);
        return Ok(());
    }
    if records.is_empty() {
        eprintln!("no nexus nodes on this host (create a network with `nexus network up NAME`)");
        return Ok(());
    }
    let mut rows = vec![[
        "NODE", "STATE", "PEER ID", "SWARM", "API", "GATEWAY", "CPU", "MEMORY", "DISK",
    ]
    .map(String::from)
    .to_vec()];
    for r in records {
        let res = r.spec.resources;
        rows.push(vec![
            r.spec.node.container_name(),
            state_text(&r.state),
            r.spec.peer_id.clone(),
            port_text(r.ports.swarm),
            port_text(r.ports.api),
            port_text(r.ports.gateway),
            format!("{}", res.cpu_millis as f64 / 1000.0),
            human_bytes(res.memory_bytes),
            human_bytes(res.disk_bytes),
        ]);
    }
    print_table(&rows);
    Ok(())
}

async fn connect(ready_timeout: Duration) -> Result<DockerRuntime> {
    let cfg = DockerRuntimeConfig {
        ready_timeout,
        ..Default::default()
    };
    Ok(DockerRuntime::connect(cfg).await?)
}

async fn network_nodes(rt: &DockerRuntime, name: &NetworkName) -> Result<Vec<NodeRecord>> {
    let nodes: Vec<NodeRecord> = rt
        .list_nodes()
        .await?
        .into_iter()
        .filter(|r| &r.spec.node.network == name)
        .collect();
    if nodes.is_empty() {
        bail!("no network named `{name}` on this host (see `nexus network ls`)");
    }
    Ok(nodes)
}

fn load_or_create_key(path: &Option<PathBuf>) -> Result<SwarmKey> {
    let Some(path) = path else {
        return Ok(SwarmKey::generate()?);
    };
    if path.exists() {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read swarm key file {}", path.display()))?;
        return SwarmKey::parse(&text)
            .with_context(|| format!("swarm key file {} is not valid", path.display()));
    }
    let key = SwarmKey::generate()?;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create swarm key file {}", path.display()))?;
    f.write_all(key.to_file_contents().as_bytes())?;
    eprintln!("wrote the new swarm key to {} (mode 0600)", path.display());
    Ok(key)
}

pub async fn run(args: Args) -> Result<()> {
    let json = args.json;
    match args.command {
        Command::Network(NetworkCmd::Up {
            name,
            nodes,
            image,
            cpus,
            memory,
            disk,
            swarm_key_file,
            pull,
            ready_timeout,
        }) => {
            let name = NetworkName::new(&name)?;
            let resources = Resources {
                cpu_millis: parse_cpus(&cpus)?,
                memory_bytes: parse_size(&memory)?,
                disk_bytes: parse_size(&disk)?,
            };
            let key = load_or_create_key(&swarm_key_file)?;
            let plan = plan_network(&name, nodes, &image, resources, &key)?;
            let rt = connect(Duration::from_secs(ready_timeout)).await?;
            if rt
                .list_nodes()
                .await?
                .iter()
                .any(|r| r.spec.node.network == name)
            {
                bail!("network `{name}` already exists: remove it with `nexus network rm {name}` or pick another name");
            }
            if pull && rt.ensure_image(&image).await.is_err() {
                eprintln!("pulling {image}…");
                rt.pull_image(&image, |s| eprintln!("  {s}")).await?;
            }
            rt.ensure_image(&image).await?;
            eprintln!("starting {nodes} node(s) of `{name}` in parallel…");
            let started = Instant::now();
            let results = futures_util::future::join_all(plan.iter().map(|(spec, secrets)| {
                let rt = &rt;
                async move {
                    let r = rt.create_node(spec, secrets).await;
                    if r.is_ok() {
                        eprintln!(
                            "  {} ready as {} ({:.1}s)",
                            spec.node,
                            spec.peer_id,
                            started.elapsed().as_secs_f64()
                        );
                    }
                    r
                }
            }))
            .await;
            let mut records = Vec::new();
            let mut first_err = None;
            for r in results {
                match r {
                    Ok(rec) => records.push(rec),
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_err {
                eprintln!("a node failed; removing the whole network so nothing is left half-made");
                rt.remove_network(&name).await?;
                return Err(e.into());
            }
            print_nodes(&records, json)
        }
        Command::Network(NetworkCmd::Ls) => {
            let rt = connect(Duration::from_secs(60)).await?;
            print_nodes(&rt.list_nodes().await?, json)
        }
        Command::Network(NetworkCmd::Stop { name }) => {
            let name = NetworkName::new(&name)?;
            let rt = connect(Duration::from_secs(60)).await?;
            for r in network_nodes(&rt, &name).await? {
                eprintln!("stopping {}…", r.spec.node);
                rt.stop_node(&r.spec.node).await?;
            }
            Ok(())
        }
        Command::Network(NetworkCmd::Start { name }) => {
            let name = NetworkName::new(&name)?;
            let rt = connect(Duration::from_secs(60)).await?;
            let nodes = network_nodes(&rt, &name).await?;
            eprintln!("starting {} node(s) of `{name}`…", nodes.len());
            let results =
                futures_util::future::join_all(nodes.iter().map(|r| rt.start_node(&r.spec.node)))
                    .await;
            let records = results.into_iter().collect::<Result<Vec<_>, _>>()?;
            print_nodes(&records, json)
        }
        Command::Network(NetworkCmd::Rm { name }) => {
            let name = NetworkName::new(&name)?;
            let rt = connect(Duration::from_secs(60)).await?;
            eprintln!("removing `{name}`…");
            rt.remove_network(&name).await?;
            Ok(())
        }
        Command::Node(NodeCmd::Stats { network, index }) => {
            let node = NodeRef::new(NetworkName::new(&network)?, index)?;
            let rt = connect(Duration::from_secs(60)).await?;
            let s = rt.node_stats(&node).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                let rows = vec![
                    vec!["CPU".into(), format!("{:.1}%", s.cpu_percent)],
                    vec![
                        "MEMORY".into(),
                        format!(
                            "{} / {}",
                            human_bytes(s.memory_bytes),
                            human_bytes(s.memory_limit_bytes)
                        ),
                    ],
                    vec![
                        "NET RX/TX".into(),
                        format!(
                            "{} / {}",
                            human_bytes(s.net_rx_bytes),
                            human_bytes(s.net_tx_bytes)
                        ),
                    ],
                    vec![
                        "DISK".into(),
                        s.disk_used_bytes.map(human_bytes).unwrap_or("-".into()),
                    ],
                    vec![
                        "UPTIME".into(),
                        s.uptime
                            .map(|u| {
                                humantime::format_duration(Duration::from_secs(u.as_secs()))
                                    .to_string()
                            })
                            .unwrap_or("-".into()),
                    ],
                    vec![
                        "PEERS".into(),
                        s.peer_count.map(|p| p.to_string()).unwrap_or("-".into()),
                    ],
                ];
                print_table(&rows);
            }
            Ok(())
        }
        Command::Events => {
            let rt = connect(Duration::from_secs(60)).await?;
            let mut events = rt.watch();
            eprintln!("following node events (Ctrl-C to stop)…");
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                    ev = events.next() => match ev {
                        None => return Ok(()),
                        Some(ev) => {
                            let ev = ev?;
                            if json {
                                println!("{}", serde_json::to_string(&ev)?);
                            } else {
                                println!("{} {} {:?}", ev.time, ev.node, ev.kind);
                            }
                        }
                    }
                }
            }
        }
        Command::SwarmKey(SwarmKeyCmd::Generate) => {
            print!("{}", SwarmKey::generate()?.to_file_contents());
            Ok(())
        }
        Command::SwarmKey(SwarmKeyCmd::Check { file }) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            SwarmKey::parse(&text)?;
            eprintln!("{}: valid swarm key", file.display());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("10GB").unwrap(), 10_000_000_000);
        assert_eq!(parse_size(" 1 gib ").unwrap(), 1 << 30);
        for bad in ["", "GiB", "1 parsec", "-1GiB", "0"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_cpus("1").unwrap(), 1000);
        assert_eq!(parse_cpus("0.25").unwrap(), 250);
        for bad in ["0", "-1", "lots", "1e9", "NaN"] {
            assert!(parse_cpus(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bytes_for_people() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
