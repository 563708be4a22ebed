//! Client commands: each builds a request from flags, calls the daemon, and prints the answer.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nexus::api::pb;
use nexus::client::dynamic::{embedded_schema, typed_to_json};
use nexus::client::{self, Connection};
use nexus::node::SwarmKey;

use super::render;
use super::settings::{self, parse_cpus, parse_size};
use super::{CreateFlags, Global, NetworkCmd, ResourceFlags, SecretsCmd, SwarmKeyCmd, UpdateFlags};

/// Prints a typed answer as one JSON document (proto3 JSON, proto field names).
pub(super) fn print_json<M: prost::Message>(full_name: &str, msg: &M) -> Result<()> {
    let schema = embedded_schema()?;
    println!(
        "{}",
        serde_json::to_string_pretty(&typed_to_json(&schema, full_name, msg))?
    );
    Ok(())
}

pub(super) async fn connect(global: &Global) -> Result<Connection> {
    let cfg = settings::client_config(global)?;
    Ok(client::connect(&cfg).await?)
}

/// A gRPC failure as an error whose text is the daemon's message.
pub(super) fn status(e: tonic::Status) -> anyhow::Error {
    let code = format!("{:?}", e.code());
    anyhow::anyhow!("{} ({code})", e.message())
}

pub fn swarm_key(cmd: SwarmKeyCmd) -> Result<()> {
    match cmd {
        SwarmKeyCmd::Generate => print!("{}", SwarmKey::generate()?.to_file_contents()),
        SwarmKeyCmd::Check { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            SwarmKey::parse(&text)?;
            eprintln!("{}: valid swarm key", file.display());
        }
    }
    Ok(())
}

pub async fn version(global: &Global) -> Result<()> {
    let cli = env!("CARGO_PKG_VERSION");
    let daemon = match connect(global).await {
        Ok(conn) => conn
            .client()
            .version(pb::VersionRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(status),
        Err(e) => Err(e),
    };
    if global.json {
        let d = daemon.as_ref().ok();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "cli": cli,
                "daemon": d.map(|d| &d.version),
                "api": d.map(|d| &d.api),
                "node_image": d.map(|d| &d.node_image),
                "daemon_error": daemon.as_ref().err().map(|e| e.to_string()),
            }))?
        );
        return Ok(());
    }
    println!("nexus {cli}");
    match daemon {
        Ok(d) => println!(
            "daemon {} (api {}, node image {})",
            d.version, d.api, d.node_image
        ),
        Err(e) => println!("daemon: unreachable ({e})"),
    }
    Ok(())
}

/// Shows progress on stderr while `fut` runs, when stderr is a terminal and output is for
/// people: elapsed time and the network's latest event.
async fn with_progress<T>(
    global: &Global,
    conn: &Connection,
    network: &str,
    what: &str,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    if global.json || !std::io::stderr().is_terminal() {
        return fut.await;
    }
    let mut client = conn.client();
    let watch = client
        .watch_events(pb::WatchEventsRequest {
            network: network.to_string(),
        })
        .await
        .ok()
        .map(|r| r.into_inner());
    let started = Instant::now();
    let what = what.to_string();
    let ticker = tokio::spawn(async move {
        let frames = ['|', '/', '-', '\\'];
        let mut last = String::new();
        let mut nodes_started = 0u32;
        let mut watch = watch;
        let mut tick = tokio::time::interval(Duration::from_millis(120));
        let mut i = 0usize;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                ev = async {
                    match watch.as_mut() {
                        Some(w) => w.message().await.ok().flatten(),
                        None => std::future::pending().await,
                    }
                } => {
                    if let Some(ev) = ev {
                        if ev.kind == "node_start" { nodes_started += 1; }
                        last = match ev.node_index {
                            Some(n) => format!("node {n}: {}", ev.kind.replace('_', " ")),
                            None => format!("{} {}", ev.status, ev.message),
                        };
                    }
                }
            }
            i += 1;
            let started_text = if nodes_started > 0 {
                format!(", {nodes_started} node start(s)")
            } else {
                String::new()
            };
            eprint!(
                "\r\x1b[2K{} {what} ({}s{started_text}) {last}",
                frames[i % frames.len()],
                started.elapsed().as_secs()
            );
        }
    });
    let out = fut.await;
    ticker.abort();
    eprint!("\r\x1b[2K");
    out
}

/// The resource flags given, parsed: CPU in millicores, memory and disk in bytes.
fn parsed_resources(flags: &ResourceFlags) -> Result<(Option<u32>, Option<u64>, Option<u64>)> {
    let ResourceFlags { cpus, memory, disk } = flags;
    let cpu = cpus
        .as_deref()
        .map(parse_cpus)
        .transpose()
        .context("--cpus")?;
    let mem = memory
        .as_deref()
        .map(parse_size)
        .transpose()
        .context("--memory")?;
    let disk = disk
        .as_deref()
        .map(parse_size)
        .transpose()
        .context("--disk")?;
    Ok((cpu, mem, disk))
}

/// The resources of a new network; `None` when no flag is given (the daemon's defaults), 0 for
/// a field left out (its default).
fn resources(flags: &ResourceFlags) -> Result<Option<pb::Resources>> {
    Ok(match parsed_resources(flags)? {
        (None, None, None) => None,
        (cpu, mem, disk) => Some(pb::Resources {
            cpu_millis: cpu.unwrap_or(0),
            memory_bytes: mem.unwrap_or(0),
            disk_bytes: disk.unwrap_or(0),
        }),
    })
}

fn create_request(f: CreateFlags) -> Result<pb::CreateNetworkRequest> {
    let swarm_key = match &f.swarm_key_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--swarm-key-file: cannot read {}", path.display()))?;
            SwarmKey::parse(&text)
                .with_context(|| format!("--swarm-key-file {}", path.display()))?;
            text
        }
        None => String::new(),
    };
    Ok(pb::CreateNetworkRequest {
        resources: resources(&f.resources)?,
        name: f.name,
        replicas: f.replicas,
        users: f.users,
        gateway_public: f.gateway_public,
        ipns_dns: f.ipns_dns,
        allowed_origins: f.allowed_origins,
        swarm_key,
        bootstrap_peers: f.bootstrap,
        api_allow: f.api_allow,
        api_deny: f.api_deny,
        start: f.start,
        image: f.image.unwrap_or_default(),
        replication: f.replication.as_deref().map(replication_flag).transpose()?,
    })
}

/// `--replication`: checked here for its form (the daemon checks it against the replicas).
fn replication_flag(text: &str) -> Result<String> {
    let r = nexus::replication::Replication::parse(text).map_err(|e| anyhow::anyhow!("--{e}"))?;
    Ok(r.to_string())
}

fn list_change(values: Vec<String>, clear: bool) -> Option<pb::StringList> {
    if clear {
        Some(pb::StringList { values: vec![] })
    } else if values.is_empty() {
        None
    } else {
        Some(pb::StringList { values })
    }
}

fn update_request(f: UpdateFlags) -> Result<pb::UpdateNetworkRequest> {
    let (cpu_millis, memory_bytes, disk_bytes) = parsed_resources(&f.resources)?;
    let req = pb::UpdateNetworkRequest {
        name: f.name,
        replicas: f.replicas,
        cpu_millis,
        memory_bytes,
        disk_bytes,
        users: list_change(f.users, f.clear_users),
        gateway_public: f.gateway_public,
        ipns_dns: f.ipns_dns,
        allowed_origins: list_change(f.allowed_origins, f.clear_allowed_origins),
        api_allow: list_change(f.api_allow, f.clear_api_allow),
        api_deny: list_change(f.api_deny, f.clear_api_deny),
        image: f.image,
        replication: f.replication.as_deref().map(replication_flag).transpose()?,
    };
    let nothing = req.replicas.is_none()
        && req.replication.is_none()
        && req.cpu_millis.is_none()
        && req.memory_bytes.is_none()
        && req.disk_bytes.is_none()
        && req.users.is_none()
        && req.gateway_public.is_none()
        && req.ipns_dns.is_none()
        && req.allowed_origins.is_none()
        && req.api_allow.is_none()
        && req.api_deny.is_none()
        && req.image.is_none();
    if nothing {
        bail!("nothing to change: give at least one flag (see `nexus network update --help`)");
    }
    Ok(req)
}

fn print_network(n: &pb::Network) {
    let res = n.resources.unwrap_or_default();
    let rows = [
        ("name", n.name.clone()),
        ("status", n.status.clone()),
        ("desired", n.desired.clone()),
        ("reason", render::or_dash(&n.status_reason)),
        ("replicas", n.replicas.to_string()),
        ("image", n.image.clone()),
        ("replication", {
            let mut r = n.replication.clone();
            if n.under_replicated {
                r.push_str(" (under-replicated: fewer ready nodes than copies wanted)");
            }
            r
        }),
        (
            "resources",
            format!(
                "{} CPU, {} memory, {} disk per node",
                render::cpus(res.cpu_millis),
                render::bytes(res.memory_bytes),
                render::bytes(res.disk_bytes)
            ),
        ),
        ("users", render::list(&n.users)),
        (
            "gateway",
            if n.gateway_public { "public" } else { "token" }.into(),
        ),
        ("ipns dns", ipns_dns(n).into()),
        ("origins", render::list(&n.allowed_origins)),
        ("api allow", render::list(&n.api_allow)),
        ("api deny", render::list(&n.api_deny)),
        ("bootstrap", render::list(&n.bootstrap_peers)),
        (
            "subnet",
            if n.subnet.is_empty() {
                "docker default".into()
            } else {
                n.subnet.clone()
            },
        ),
        ("created", render::time(n.created_at_ms)),
        ("running since", render::time(n.activated_at_ms)),
    ];
    let pins = n.pins.map(|p| {
        (
            "pins",
            format!(
                "{} pinned, {} pinning, {} queued, {} failed; {} under-replicated",
                p.pinned, p.pinning, p.queued, p.failed, n.under_replicated_pins
            ),
        )
    });
    let rows = rows.into_iter().chain(pins);
    for (k, v) in rows {
        println!("{k:<14} {v}");
    }
    if n.nodes.is_empty() {
        return;
    }
    println!();
    // A HOST column only when nodes span hosts (a swarm).
    let hosts = n.nodes.iter().any(|node| !node.host.is_empty());
    let mut head: Vec<String> = vec!["NODE".into(), "PEER ID".into(), "STATE".into()];
    if hosts {
        head.push("HOST".into());
    }
    head.extend(["SWARM PORT".into(), "LAST ERROR".into()]);
    let mut t = vec![head];
    for node in &n.nodes {
        let state = match node.state.as_str() {
            "" => "-".into(),
            "exited" => format!("exited({})", node.exit_code),
            s => s.into(),
        };
        let mut row = vec![node.index.to_string(), node.peer_id.clone(), state];
        if hosts {
            row.push(match (node.host.as_str(), node.host_up) {
                ("", _) => "-".into(),
                (h, true) => h.to_owned(),
                (h, false) => format!("{h} (down)"),
            });
        }
        row.extend([
            render::port(node.swarm_port),
            render::or_dash(node.last_error.lines().next().unwrap_or("")),
        ]);
        t.push(row);
    }
    render::table(&t);
}

/// What the gateway does with `/ipns/` names that need DNS.
fn ipns_dns(n: &pb::Network) -> &'static str {
    match (n.ipns_dns, n.gateway_public) {
        (true, _) => "served",
        (false, true) => "refused (public gateway)",
        (false, false) => "members only",
    }
}

fn print_networks(list: &[pb::Network]) {
    if list.is_empty() {
        eprintln!(
            "no networks yet: create one with `nexus network create NAME --replicas 3 --start`"
        );
        return;
    }
    let mut t = vec![vec![
        "NAME".into(),
        "STATUS".into(),
        "DESIRED".into(),
        "NODES".into(),
        "CPU".into(),
        "MEMORY".into(),
        "DISK".into(),
        "USERS".into(),
        "GATEWAY".into(),
        "IMAGE".into(),
    ]];
    for n in list {
        let res = n.resources.unwrap_or_default();
        let running = n.nodes.iter().filter(|x| x.state == "running").count();
        t.push(vec![
            n.name.clone(),
            n.status.clone(),
            n.desired.clone(),
            format!("{running}/{}", n.replicas),
            render::cpus(res.cpu_millis),
            render::bytes(res.memory_bytes),
            render::bytes(res.disk_bytes),
            n.users.len().to_string(),
            if n.gateway_public { "public" } else { "token" }.into(),
            n.image.clone(),
        ]);
    }
    render::table(&t);
}

fn print_stats(s: &pb::NetworkStatsResponse) {
    let mut t = vec![vec![
        "NODE".into(),
        "CPU%".into(),
        "MEMORY".into(),
        "NET RX".into(),
        "NET TX".into(),
        "DISK".into(),
        "PEERS".into(),
        "UPTIME".into(),
    ]];
    for n in &s.nodes {
        t.push(vec![
            n.index.to_string(),
            format!("{:.1}", n.cpu_percent),
            format!(
                "{} / {}",
                render::bytes(n.memory_bytes),
                render::bytes(n.memory_limit_bytes)
            ),
            render::bytes(n.net_rx_bytes),
            render::bytes(n.net_tx_bytes),
            n.disk_used_bytes.map_or("-".into(), render::bytes),
            n.peer_count.map_or("-".into(), |p| p.to_string()),
            n.uptime_ms.map_or("-".into(), render::duration_ms),
        ]);
    }
    render::table(&t);
    if let Some(p) = s.pins {
        println!();
        println!(
            "pins: {} pinned, {} pinning, {} queued, {} failed; {} under-replicated (replication {})",
            p.pinned, p.pinning, p.queued, p.failed, s.under_replicated_pins, s.replication
        );
        if s.under_replicated {
            println!("under-replicated: fewer ready nodes than copies wanted");
        }
    }
}

fn print_diagnostics(d: &pb::NetworkDiagnosticsResponse) {
    for n in &d.nodes {
        let state = if n.state.is_empty() {
            "no container"
        } else {
            &n.state
        };
        println!("== node {} ({}) — {state}", n.index, n.peer_id);
        if n.state == "exited" {
            println!("exit code: {}", n.exit_code);
        }
        println!("swarm port: {}", render::port(n.swarm_port));
        if !n.last_error.is_empty() {
            println!("last error: {}", n.last_error);
        }
        match &n.peers {
            Some(p) => println!("peers ({}): {}", p.values.len(), render::list(&p.values)),
            None => println!("peers: RPC API did not answer"),
        }
        if !n.logs.is_empty() {
            println!("last log lines:");
            for line in n.logs.lines() {
                println!("  {line}");
            }
        }
        println!();
    }
}

fn write_secret_file(path: &std::path::Path, contents: &str) -> Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

/// Prints a daemon's answer: one JSON document (`full_name` is its message type) with `--json`,
/// else `for_people`'s rendering.
fn answer<M: prost::Message>(
    global: &Global,
    full_name: &str,
    msg: &M,
    for_people: impl FnOnce(&M),
) -> Result<()> {
    if global.json {
        return print_json(full_name, msg);
    }
    for_people(msg);
    Ok(())
}

type Call<M> = std::result::Result<tonic::Response<M>, tonic::Status>;

/// Makes a call and prints its answer.
async fn call_and_answer<M: prost::Message>(
    global: &Global,
    call: impl std::future::Future<Output = Call<M>>,
    full_name: &str,
    for_people: impl FnOnce(&M),
) -> Result<()> {
    let msg = call.await.map_err(status)?.into_inner();
    answer(global, full_name, &msg, for_people)
}

/// Makes a call that waits for network `name` (with progress on a terminal, saying `what`)
/// and prints its answer.
async fn wait_and_answer<M: prost::Message>(
    global: &Global,
    conn: &Connection,
    (name, what): (&str, String),
    call: impl std::future::Future<Output = Call<M>>,
    full_name: &str,
    for_people: impl FnOnce(&M),
) -> Result<()> {
    let fut = async { call.await.map_err(status) };
    let msg = with_progress(global, conn, name, &what, fut)
        .await?
        .into_inner();
    answer(global, full_name, &msg, for_people)
}

pub async fn network(global: &Global, cmd: NetworkCmd) -> Result<()> {
    const NETWORK: &str = "nexus.v1.Network";
    let conn = connect(global).await?;
    let mut c = conn.client();
    match cmd {
        NetworkCmd::Create(flags) => {
            let req = create_request(flags)?;
            let name = req.name.clone();
            let what = if req.start {
                format!("creating and starting {name}")
            } else {
                format!("creating {name}")
            };
            let call = c.create_network(req);
            wait_and_answer(global, &conn, (&name, what), call, NETWORK, |n| {
                print_network(n);
                if n.status != "running" {
                    eprintln!("\nstart it with `nexus network start {name}`");
                }
            })
            .await?;
        }
        NetworkCmd::Start { name } => {
            let call = c.start_network(pb::StartNetworkRequest { name: name.clone() });
            let what = format!("starting {name}");
            wait_and_answer(global, &conn, (&name, what), call, NETWORK, print_network).await?;
        }
        NetworkCmd::Update(flags) => {
            let req = update_request(flags)?;
            let name = req.name.clone();
            let call = c.update_network(req);
            let what = format!("updating {name}");
            wait_and_answer(global, &conn, (&name, what), call, NETWORK, print_network).await?;
        }
        NetworkCmd::Stop { name } => {
            let call = c.stop_network(pb::StopNetworkRequest { name: name.clone() });
            let what = format!("stopping {name}");
            wait_and_answer(global, &conn, (&name, what), call, NETWORK, print_network).await?;
        }
        NetworkCmd::Remove { name, force } => {
            let call = c.remove_network(pb::RemoveNetworkRequest {
                name: name.clone(),
                force,
            });
            let what = format!("removing {name}");
            wait_and_answer(
                global,
                &conn,
                (&name, what),
                call,
                "nexus.v1.RemoveNetworkResponse",
                |_| eprintln!("network {name} removed"),
            )
            .await?;
        }
        NetworkCmd::Get { name } => {
            let call = c.get_network(pb::GetNetworkRequest { name });
            call_and_answer(global, call, NETWORK, print_network).await?;
        }
        NetworkCmd::List => {
            let call = c.list_networks(pb::ListNetworksRequest {});
            call_and_answer(global, call, "nexus.v1.ListNetworksResponse", |l| {
                print_networks(&l.networks)
            })
            .await?;
        }
        NetworkCmd::Stats { name } => {
            let call = c.network_stats(pb::NetworkStatsRequest { name });
            call_and_answer(global, call, "nexus.v1.NetworkStatsResponse", print_stats).await?;
        }
        NetworkCmd::Diagnostics { name } => {
            let call = c.network_diagnostics(pb::NetworkDiagnosticsRequest { name });
            let kind = "nexus.v1.NetworkDiagnosticsResponse";
            call_and_answer(global, call, kind, print_diagnostics).await?;
        }
        NetworkCmd::JoinKit {
            name,
            swarm_key_out,
        } => {
            let mut kit = c
                .get_join_kit(pb::GetJoinKitRequest { name })
                .await
                .map_err(status)?
                .into_inner();
            if let Some(path) = &swarm_key_out {
                write_secret_file(path, &kit.swarm_key)?;
                eprintln!("swarm key written to {} (mode 0600)", path.display());
                kit.swarm_key.clear();
            }
            if global.json {
                return print_json("nexus.v1.JoinKit", &kit);
            }
            if swarm_key_out.is_none() {
                println!("# swarm.key — write to $IPFS_PATH/swarm.key (keep it secret)");
                print!("{}", kit.swarm_key);
                println!();
            }
            println!("# bootstrap peers");
            for b in &kit.bootstrap {
                println!("{b}");
            }
            println!();
            println!("# to join with kubo ≥ 0.37:");
            println!(
                "#   ipfs config profile apply autoconf-off   # private networks refuse AutoConf"
            );
            println!("#   ipfs bootstrap rm --all");
            println!("#   ipfs bootstrap add <each address above>");
            println!(
                "#   LIBP2P_FORCE_PNET=1 ipfs daemon          # refuse to run without the key"
            );
        }
    }
    Ok(())
}

fn print_rotation(r: &pb::RotateSecretsResponse) {
    let rows = [
        ("old key", r.old_key_id.clone()),
        ("new key", r.new_key_id.clone()),
        ("networks", r.networks.to_string()),
        ("nodes", r.nodes.to_string()),
        ("key file", r.key_file.clone()),
    ];
    for (k, v) in rows {
        println!("{k:<10} {v}");
    }
    eprintln!(
        "\nevery secret is sealed under key {}; the old key is gone from {}: back the file up \
         (backups of the database taken from now on need it)",
        r.new_key_id, r.key_file
    );
}

pub async fn secrets(global: &Global, cmd: SecretsCmd) -> Result<()> {
    let conn = connect(global).await?;
    let mut c = conn.client();
    match cmd {
        SecretsCmd::Rotate => {
            let call = c.rotate_secrets(pb::RotateSecretsRequest {});
            call_and_answer(
                global,
                call,
                "nexus.v1.RotateSecretsResponse",
                print_rotation,
            )
            .await
        }
    }
}

pub async fn revoke_token(global: &Global, jti: String) -> Result<()> {
    let conn = connect(global).await?;
    let mut c = conn.client();
    let call = c.revoke_token(pb::RevokeTokenRequest { jti });
    call_and_answer(
        global,
        call,
        "nexus.v1.RevokeTokenResponse",
        |r: &pb::RevokeTokenResponse| {
            println!("revoked    {}", r.jti);
            println!(
                "forgotten  {} (unix; every token with this id has expired by then)",
                r.forget_at
            );
        },
    )
    .await
}

pub async fn events(global: &Global, network: Option<String>) -> Result<()> {
    let conn = connect(global).await?;
    let mut stream = conn
        .client()
        .watch_events(pb::WatchEventsRequest {
            network: network.unwrap_or_default(),
        })
        .await
        .map_err(status)?
        .into_inner();
    let schema = embedded_schema()?;
    if !global.json {
        eprintln!("following events (Ctrl-C to stop)");
    }
    loop {
        let ev = tokio::select! {
            m = stream.message() => m.map_err(status)?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(ev) = ev else {
            bail!("the daemon ended the event stream (it is shutting down?)");
        };
        if global.json {
            println!(
                "{}",
                serde_json::to_string(&typed_to_json(&schema, "nexus.v1.Event", &ev))?
            );
        } else {
            let node = ev
                .node_index
                .map(|n| format!(" node {n}"))
                .unwrap_or_default();
            println!(
                "{}  {}{node}  {}  {}  {}",
                render::time(ev.time_ms),
                ev.network,
                ev.kind,
                ev.status,
                ev.message
            );
        }
    }
}
