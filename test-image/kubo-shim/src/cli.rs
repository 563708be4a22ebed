//! Owns the offline CLI commands: `ipfs version`, `ipfs init`, `ipfs config …`, plus the tiny
//! HTTP client used by `ipfs id`, `ipfs diag healthy`, `ipfs swarm peers`, `ipfs shutdown`.

use crate::{api, config, libkubo, repo};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::Path;

pub struct Globals {
    pub api: Option<String>,
}

pub fn version(args: &[String]) -> Result<(), String> {
    let has = |f: &str| {
        args.iter()
            .any(|a| a == f || a.starts_with(&format!("{f}=")))
    };
    if has("--number") || has("-n") {
        println!("{}", api::claimed_version());
    } else if has("--all") {
        println!("Kubo version: {}", api::claimed_version());
        println!("Repo version: {}", repo::repo_version());
        println!("System version: amd64/linux");
        println!("Golang version: {}", api::GOLANG);
    } else {
        println!("ipfs version {}", api::claimed_version());
    }
    Ok(())
}

/// An ed25519 identity as kubo writes it: (PeerID, base64 protobuf private key).
pub fn new_identity() -> (String, String) {
    use base64::Engine;
    let kp = libp2p_identity::Keypair::generate_ed25519();
    let peer = kp.public().to_peer_id().to_base58();
    let priv_b64 = kp
        .to_protobuf_encoding()
        .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
        .unwrap_or_default();
    (peer, priv_b64)
}

/// Create a repo: libkubo's CreateRepo (datastore, keystore, version), then a config shaped
/// like kubo 0.42's `ipfs init` (ed25519 identity, `Bootstrap: ["auto"]`, no deprecated
/// Provider/Reprovider sections), the optional user config file, then profiles.
pub fn init_repo(repo: &Path, profiles: &str, config_file: Option<&str>) -> Result<Value, String> {
    if config::config_file(repo).exists() {
        return Err(
            "ipfs configuration file already exists!\nReinitializing would overwrite your keys"
                .into(),
        );
    }
    let user_cfg = match config_file {
        Some(f) => {
            let text = std::fs::read_to_string(f).map_err(|e| format!("open {f}: {e}"))?;
            Some(config::parse(&text).map_err(|e| format!("invalid config file {f}: {e}"))?)
        }
        None => None,
    };
    // Validate profiles before touching the disk.
    let profile_list: Vec<&str> = profiles
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let mut probe = Value::Object(Default::default());
    for p in &profile_list {
        config::apply_profile(&mut probe, p)?;
    }
    std::fs::create_dir_all(repo).map_err(|e| format!("mkdir {}: {e}", repo.display()))?;
    let lib = libkubo::get()?;
    lib.create_repo(repo)?;
    // The repo version this binary claims (libkubo writes its own, 14).
    crate::repo::migrate(repo, crate::repo::repo_version())?;
    let mut cfg = config::load(repo)?;

    let user_identity = user_cfg
        .as_ref()
        .and_then(|c| c.pointer("/Identity/PrivKey"))
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty());
    if let Some(user) = user_cfg {
        let spec = cfg.pointer("/Datastore/Spec").cloned();
        let generated_id = cfg.get("Identity").cloned();
        cfg = user;
        if let Some(spec) = spec {
            config::set(&mut cfg, "Datastore.Spec", spec)?;
        }
        if !user_identity {
            if let Some(id) = generated_id {
                config::set(&mut cfg, "Identity", id)?;
            }
        }
    } else {
        config::set(&mut cfg, "Bootstrap", Value::from(vec!["auto"]))?;
        if let Value::Object(m) = &mut cfg {
            m.remove("Provider");
            m.remove("Reprovider");
        }
    }
    if !user_identity {
        println!("generating ED25519 keypair...done");
        let (peer, key) = new_identity();
        config::set(&mut cfg, "Identity.PeerID", Value::String(peer))?;
        config::set(&mut cfg, "Identity.PrivKey", Value::String(key))?;
    }
    if let Some(id) = cfg.pointer("/Identity/PeerID").and_then(Value::as_str) {
        println!("peer identity: {id}");
    }
    for p in &profile_list {
        config::apply_profile(&mut cfg, p)?;
    }
    config::save(repo, &cfg)?;
    println!("initializing IPFS node at {}", repo.display());
    Ok(cfg)
}

pub fn init(args: &[String]) -> Result<(), String> {
    let mut profiles = Vec::new();
    let mut file = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(v) = a
            .strip_prefix("--profile=")
            .or_else(|| a.strip_prefix("-p="))
        {
            profiles.push(v.to_string());
        } else if a == "--profile" || a == "-p" {
            profiles.push(
                it.next()
                    .cloned()
                    .ok_or("missing argument for option \"profile\"")?,
            );
        } else if a.starts_with("--algorithm") || a.starts_with("--bits") || a == "-a" || a == "-b"
        {
            if !a.contains('=') {
                it.next();
            }
        } else if a == "--empty-repo" || a == "-e" || a.starts_with("--empty-repo=") {
        } else if a.starts_with('-') {
            return Err(format!("unknown option \"{}\"", a.trim_start_matches('-')));
        } else if file.is_none() {
            file = Some(a.clone());
        } else {
            return Err(format!("unexpected argument {a:?}"));
        }
    }
    init_repo(&config::repo_path(), &profiles.join(","), file.as_deref()).map(|_| ())
}

fn print_value(v: &Value) {
    match v {
        Value::String(s) => println!("{s}"),
        other => println!("{}", config::to_go_json(other)),
    }
}

/// Percent-encode a query value (RFC 3986 unreserved characters pass).
fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// kubo's CLI sends `ipfs config` to a running daemon when `$IPFS_PATH/api` names one
/// (cmd/ipfs/kubo/start.go:290-331), and runs it locally (opening the repo) otherwise or when
/// the daemon does not answer. Returns None when the command must run locally.
fn config_remote(
    g: &Globals,
    pos: &[String],
    json: bool,
    boolean: bool,
) -> Option<Result<(), String>> {
    let repo = config::repo_path();
    if g.api.is_none() && !repo.join("api").exists() {
        return None;
    }
    let path = match pos.first().map(String::as_str) {
        Some("show") => "/api/v0/config/show".to_string(),
        Some("replace") | Some("profile") => {
            return Some(Err(
                "kubo-shim: `config replace` and `config profile apply` are not sent to a running daemon; stop it first"
                    .into(),
            ))
        }
        Some(_) => {
            let mut q = String::from("/api/v0/config?");
            q.push_str(
                &pos.iter()
                    .map(|a| format!("arg={}", query_escape(a)))
                    .collect::<Vec<_>>()
                    .join("&"),
            );
            if json {
                q.push_str("&json=true");
            }
            if boolean {
                q.push_str("&bool=true");
            }
            q
        }
        None => return None,
    };
    match post(g, &path) {
        // Connection refused: a stale api file; kubo falls back to running locally.
        Err(_) if g.api.is_none() => None,
        Err(e) => Some(Err(e)),
        Ok((200, body)) => {
            if pos.len() == 1 {
                let v: Value = match serde_json::from_slice(&body) {
                    Ok(v) => v,
                    Err(e) => return Some(Err(e.to_string())),
                };
                if pos[0] == "show" {
                    println!("{}", config::to_go_json(&v));
                } else {
                    print_value(v.get("Value").unwrap_or(&Value::Null));
                }
            }
            Some(Ok(()))
        }
        Ok((status, body)) => Some(Err(api_error(status, &body))),
    }
}

pub fn config_cmd(g: &Globals, args: &[String]) -> Result<(), String> {
    let repo = config::repo_path();
    let mut json = false;
    let mut boolean = false;
    let mut pos = Vec::new();
    for a in args {
        match a.as_str() {
            "--json" => json = true,
            "--bool" => boolean = true,
            s if s.starts_with("--json=") => json = s.ends_with("=true"),
            s if s.starts_with("--bool=") => boolean = s.ends_with("=true"),
            _ => pos.push(a.clone()),
        }
    }
    if let Some(key) = pos.first() {
        if pos.len() <= 2 && config::touches_privkey(key) {
            return Err(if pos.len() > 1 {
                config::PRIVKEY_SET_ERR.into()
            } else {
                config::PRIVKEY_SHOW_ERR.into()
            });
        }
    }
    if let Some(r) = config_remote(g, &pos, json, boolean) {
        return r;
    }
    match pos.first().map(String::as_str) {
        None => Err("argument \"key\" is required".into()),
        // kubo reads the file directly for `config show` (no repo open, no lock).
        Some("show") if pos.len() == 1 => {
            let cfg = config::load(&repo)?;
            println!("{}", config::to_go_json(&config::without_privkey(&cfg)));
            Ok(())
        }
        Some("replace") if pos.len() <= 2 => {
            let file = pos.get(1).ok_or("argument \"file\" is required")?;
            let text = if file == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .map_err(|e| e.to_string())?;
                s
            } else {
                std::fs::read_to_string(file).map_err(|e| format!("open {file}: {e}"))?
            };
            let (_lock, old) = repo::open(&repo)?;
            let new = config::parse(&text).map_err(|_| "failed to decode file as config")?;
            let merged = config::replace(&old, new)?;
            config::save(&repo, &merged)
        }
        Some("profile") if pos.get(1).map(String::as_str) == Some("apply") => {
            let name = pos.get(2).ok_or("argument \"profile\" is required")?;
            let (_lock, mut cfg) = repo::open(&repo)?;
            config::apply_profile(&mut cfg, name)?;
            config::save(&repo, &cfg)
        }
        Some(key) => {
            let (_lock, mut cfg) = repo::open(&repo)?;
            match pos.get(1) {
                None => {
                    let v = config::get(&cfg, key)
                        .map_err(|e| format!("failed to get config value: {e}"))?;
                    print_value(v);
                    Ok(())
                }
                Some(raw) => {
                    let v = config::parse_cli_value(raw, json, boolean)?;
                    config::set_checked(&mut cfg, key, v)?;
                    config::save(&repo, &cfg)
                }
            }
        }
    }
}

/// `ipfs repo migrate [--to=N] [--allow-downgrade]` as kubo 0.43 (core/commands/repo.go:603-675):
/// runs locally (never on the daemon), migrates to the binary's repo version by default, and
/// refuses a downgrade without `--allow-downgrade`. The embedded migration takes the repo lock
/// and rewrites `version` (libkubo's format is the same at every version the shim claims).
pub fn repo_migrate(args: &[String]) -> Result<(), String> {
    let repo = config::repo_path();
    let mut to = repo::repo_version();
    let mut allow_downgrade = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix("--to=") {
            to = v.parse().map_err(|_| format!("invalid --to value {v:?}"))?;
        } else if a == "--to" {
            let v = it.next().ok_or("missing argument for option \"to\"")?;
            to = v.parse().map_err(|_| format!("invalid --to value {v:?}"))?;
        } else if a == "--allow-downgrade" || a == "--allow-downgrade=true" {
            allow_downgrade = true;
        } else {
            return Err(format!("unknown option {a:?}"));
        }
    }
    let current = repo::read_version(&repo)
        .map_err(|e| format!("could not get current repo version: {e}"))?;
    if current == to {
        println!("Repository is already at version {to}.");
        return Ok(());
    }
    if to < current && !allow_downgrade {
        return Err(format!(
            "downgrade from version {current} to {to} requires --allow-downgrade flag"
        ));
    }
    println!("Migrating repository from version {current} to {to}...");
    let _lock = repo::try_lock(&repo)?;
    if let Err(e) = repo::migrate(&repo, to) {
        println!("Repository migration failed:");
        println!("  {e}");
        return Err(e);
    }
    println!("Repository successfully migrated to version {to}.");
    if to < repo::repo_version() {
        println!("WARNING: After downgrading, you must use an IPFS binary compatible with this repository version.");
    }
    Ok(())
}

/// Where the CLI finds the daemon: `--api`, then `$IPFS_PATH/api`, then `Addresses.API`.
fn api_socket(g: &Globals) -> Result<config::ListenAddr, String> {
    let repo = config::repo_path();
    let ma = match &g.api {
        Some(a) => a.clone(),
        None => match std::fs::read_to_string(repo.join("api")) {
            Ok(s) => s.trim().to_string(),
            Err(_) => config::addr_list(&config::load(&repo)?, "Addresses.API")
                .into_iter()
                .next()
                .ok_or("no Addresses.API configured")?,
        },
    };
    Ok(match config::listen_addr(&ma)? {
        config::ListenAddr::Tcp(sock) => config::ListenAddr::Tcp(
            sock.replace("0.0.0.0:", "127.0.0.1:")
                .replace("[::]:", "[::1]:"),
        ),
        unix => unix,
    })
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// POST to the daemon over a plain HTTP/1.1 connection; (status, body).
pub fn post(g: &Globals, path_and_query: &str) -> Result<(u16, Vec<u8>), String> {
    let unreachable = |what: &dyn std::fmt::Display, e: std::io::Error| {
        format!("cannot connect to the api. Is the daemon running? ({what}: {e})")
    };
    let timeout = Some(std::time::Duration::from_secs(30));
    let (mut s, host): (Box<dyn ReadWrite>, String) = match api_socket(g)? {
        config::ListenAddr::Tcp(sock) => {
            let s = std::net::TcpStream::connect(&sock).map_err(|e| unreachable(&sock, e))?;
            let _ = s.set_read_timeout(timeout);
            (Box::new(s), sock)
        }
        config::ListenAddr::Unix(path) => {
            let s = std::os::unix::net::UnixStream::connect(&path)
                .map_err(|e| unreachable(&path.display(), e))?;
            let _ = s.set_read_timeout(timeout);
            (Box::new(s), "unix".to_owned())
        }
    };
    let req = format!(
        "POST {path_and_query} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    parse_response(&buf)
}

/// Split a raw HTTP/1.1 response into (status, de-chunked body).
pub fn parse_response(buf: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("malformed HTTP response")?;
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("malformed HTTP status line")?;
    let mut body = buf[end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(nl) = rest.windows(2).position(|w| w == b"\r\n") {
            let size_str = String::from_utf8_lossy(&rest[..nl]).to_string();
            let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| "bad chunk size")?;
            if size == 0 {
                break;
            }
            let start = nl + 2;
            let chunk = rest.get(start..start + size).ok_or("truncated chunk")?;
            out.extend_from_slice(chunk);
            rest = rest.get(start + size + 2..).unwrap_or(&[]);
        }
        body = out;
    }
    Ok((status, body))
}

fn api_error(status: u16, body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("Message").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| format!("{status} {}", String::from_utf8_lossy(body).trim()))
}

fn call(g: &Globals, path: &str) -> Result<Vec<u8>, String> {
    let (status, body) = post(g, path)?;
    if status == 200 {
        Ok(body)
    } else {
        Err(api_error(status, &body))
    }
}

pub fn diag_healthy(g: &Globals) -> Result<(), String> {
    let body = call(g, "/api/v0/diag/healthy")?;
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::String(s)) => println!("{s}"),
        _ => println!("{}", String::from_utf8_lossy(&body).trim()),
    }
    Ok(())
}

pub fn id(g: &Globals) -> Result<(), String> {
    let body = match post(g, "/api/v0/id") {
        Ok((200, body)) => body,
        Ok((status, body)) => return Err(api_error(status, &body)),
        // No daemon: answer from the config, as kubo's offline `ipfs id` does.
        Err(_) if g.api.is_none() => return offline_id(),
        Err(e) => return Err(e),
    };
    let v: IdJson = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    print_id(&v)
}

/// `ipfs id` output, in kubo's field order.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IdJson {
    #[serde(rename = "ID")]
    id: String,
    public_key: String,
    addresses: Option<Vec<String>>,
    agent_version: String,
    protocols: Option<Vec<String>>,
}

fn print_id(v: &IdJson) -> Result<(), String> {
    let s = serde_json::to_string_pretty(v).map_err(|e| e.to_string())?;
    println!("{s}");
    Ok(())
}

fn offline_id() -> Result<(), String> {
    let cfg = config::load(&config::repo_path())?;
    print_id(&IdJson {
        id: cfg
            .pointer("/Identity/PeerID")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        public_key: crate::daemon::public_key_from_config(&cfg),
        addresses: None,
        agent_version: api::agent_version(""),
        protocols: None,
    })
}

pub fn swarm_peers(g: &Globals) -> Result<(), String> {
    let body = call(g, "/api/v0/swarm/peers")?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    for p in v["Peers"].as_array().into_iter().flatten() {
        if let (Some(a), Some(id)) = (p["Addr"].as_str(), p["Peer"].as_str()) {
            println!("{a}/p2p/{id}");
        }
    }
    Ok(())
}

pub fn shutdown(g: &Globals) -> Result<(), String> {
    call(g, "/api/v0/shutdown").map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_ed25519() {
        let (peer, key) = new_identity();
        assert!(peer.starts_with("12D3KooW"), "{peer}");
        assert!(key.starts_with("CAES"), "{key}");
    }

    #[test]
    fn parses_chunked_response() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n";
        let (s, b) = parse_response(raw).unwrap();
        assert_eq!(s, 200);
        assert_eq!(b, b"Wikipedia");
        let raw = b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(parse_response(raw).unwrap(), (405, b"abc".to_vec()));
        assert!(parse_response(b"garbage").is_err());
    }
}
