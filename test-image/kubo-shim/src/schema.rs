//! Owns kubo 0.43's config schema as far as the stand-in enforces it: which dotted keys exist
//! (kubo `config.CheckKey`, config/config.go:229-261, over the Go structs in config/*.go) and
//! which JSON types their values may have (kubo `config.FromMap` decoding into those structs,
//! with the custom decoders of config/types.go). It must not read or write files: callers pass
//! the config map in.
//!
//! The sections nexus writes (and their siblings) are modelled field by field; sections nexus
//! never touches (`Mounts`, `Pubsub`, `AutoNAT`, `Migration`, `Experimental`, `Plugins`,
//! `Pinning`, `Import`, `Internal`, `Bitswap`, `Routing.Routers`/`Methods`, the inside of
//! `Gateway.PublicGateways`) are checked by name at their top only and accept anything below.

use serde_json::Value;

/// The Go type of a config field, as far as decoding cares.
#[derive(Debug)]
pub enum Ty {
    /// A Go struct: (field name, type, Go type name for messages).
    Struct(&'static str, &'static [(&'static str, Ty)]),
    /// A Go map with string keys; any key, values of the element type.
    Map(&'static Ty),
    /// Not modelled (interface{}, json.RawMessage or an unmodelled section): anything.
    Any,
    /// config.Flag: true, false or null only.
    Flag,
    /// *config.OptionalString.
    OptStr,
    /// *config.OptionalInteger.
    OptInt,
    /// *config.OptionalDuration: a Go duration string (or null/""/"default").
    OptDur,
    /// *config.OptionalBytes: a number or a humanize size string.
    OptBytes,
    /// config.Strings: one string or a list of strings.
    Strings,
    /// []string.
    StrList,
    /// string.
    Str,
    /// bool.
    Bool,
    /// int / int64.
    Int,
    /// []peer.AddrInfo.
    AddrInfos,
}

use Ty::*;

const OPTS_RELAY_SERVICE: &[(&str, Ty)] = &[
    ("Enabled", Flag),
    ("ConnectionDurationLimit", OptDur),
    ("ConnectionDataLimit", OptInt),
    ("ReservationTTL", OptDur),
    ("MaxReservations", OptInt),
    ("MaxCircuits", OptInt),
    ("BufferSize", OptInt),
    ("MaxReservationsPerIP", OptInt),
    ("MaxReservationsPerASN", OptInt),
];

const SWARM: &[(&str, Ty)] = &[
    ("AddrFilters", StrList),
    ("DisableBandwidthMetrics", Bool),
    ("DisableNatPortMap", Bool),
    (
        "RelayClient",
        Struct(
            "RelayClient",
            &[("Enabled", Flag), ("StaticRelays", StrList)],
        ),
    ),
    ("RelayService", Struct("RelayService", OPTS_RELAY_SERVICE)),
    ("EnableHolePunching", Flag),
    (
        "Transports",
        Struct(
            "Transports",
            &[
                (
                    "Network",
                    Struct(
                        "Transports.Network",
                        &[
                            ("QUIC", Flag),
                            ("TCP", Flag),
                            ("Websocket", Flag),
                            ("Relay", Flag),
                            ("WebTransport", Flag),
                            ("WebRTCDirect", Flag),
                        ],
                    ),
                ),
                (
                    "Security",
                    Struct("Transports.Security", &[("TLS", OptInt), ("Noise", OptInt)]),
                ),
                (
                    "Multiplexers",
                    Struct("Transports.Multiplexers", &[("Yamux", OptInt)]),
                ),
            ],
        ),
    ),
    (
        "ConnMgr",
        Struct(
            "ConnMgr",
            &[
                ("Type", OptStr),
                ("LowWater", OptInt),
                ("HighWater", OptInt),
                ("GracePeriod", OptDur),
                ("SilencePeriod", OptDur),
            ],
        ),
    ),
    (
        "ResourceMgr",
        Struct(
            "ResourceMgr",
            &[
                ("Enabled", Flag),
                ("Limits", Any),
                ("MaxMemory", OptBytes),
                ("MaxFileDescriptors", OptInt),
                ("Allowlist", StrList),
            ],
        ),
    ),
];

const CONFIG: &[(&str, Ty)] = &[
    (
        "Identity",
        Struct("Identity", &[("PeerID", Str), ("PrivKey", Str)]),
    ),
    (
        "Datastore",
        Struct(
            "Datastore",
            &[
                ("StorageMax", Str),
                ("StorageGCWatermark", Int),
                ("GCPeriod", Str),
                ("Type", Str),
                ("Path", Str),
                ("NoSync", Bool),
                ("Params", Any),
                ("Spec", Map(&Any)),
                ("HashOnRead", Bool),
                ("BloomFilterSize", Int),
                ("BlockKeyCacheSize", OptInt),
                ("WriteThrough", Flag),
            ],
        ),
    ),
    (
        "Addresses",
        Struct(
            "Addresses",
            &[
                ("Swarm", StrList),
                ("Announce", StrList),
                ("AppendAnnounce", StrList),
                ("NoAnnounce", StrList),
                ("API", Strings),
                ("Gateway", Strings),
            ],
        ),
    ),
    ("Mounts", Any),
    (
        "Discovery",
        Struct(
            "Discovery",
            &[("MDNS", Struct("MDNS", &[("Enabled", Bool)]))],
        ),
    ),
    (
        "Routing",
        Struct(
            "Routing",
            &[
                ("Type", OptStr),
                ("AcceleratedDHTClient", Flag),
                ("LoopbackAddressesOnLanDHT", Flag),
                ("IgnoreProviders", StrList),
                ("DelegatedRouters", StrList),
                ("Routers", Any),
                ("Methods", Any),
            ],
        ),
    ),
    (
        "Ipns",
        Struct(
            "Ipns",
            &[
                ("RepublishPeriod", Str),
                ("RecordLifetime", Str),
                ("ResolveCacheSize", Int),
                ("MaxCacheTTL", OptDur),
                ("UsePubsub", Flag),
                ("DelegatedPublishers", StrList),
            ],
        ),
    ),
    ("Bootstrap", StrList),
    (
        "Gateway",
        Struct(
            "Gateway",
            &[
                ("HTTPHeaders", Map(&StrList)),
                ("RootRedirect", Str),
                ("NoFetch", Bool),
                ("NoDNSLink", Bool),
                ("DeserializedResponses", Flag),
                ("AllowCodecConversion", Flag),
                ("DisableHTMLErrors", Flag),
                ("PublicGateways", Map(&Any)),
                ("ExposeRoutingAPI", Flag),
                ("RetrievalTimeout", OptDur),
                ("MaxRequestDuration", OptDur),
                ("MaxConcurrentRequests", OptInt),
                ("MaxRangeRequestFileSize", OptBytes),
                ("DiagnosticServiceURL", OptStr),
            ],
        ),
    ),
    (
        "API",
        Struct(
            "API",
            &[
                ("HTTPHeaders", Map(&StrList)),
                (
                    "Authorizations",
                    Map(&Struct(
                        "RPCAuthScope",
                        &[("AuthSecret", Str), ("AllowedPaths", StrList)],
                    )),
                ),
            ],
        ),
    ),
    ("Swarm", Struct("SwarmConfig", SWARM)),
    ("AutoNAT", Any),
    (
        "AutoTLS",
        Struct(
            "AutoTLS",
            &[
                ("Enabled", Flag),
                ("AutoWSS", Flag),
                ("SkipDNSLookup", Flag),
                ("DomainSuffix", OptStr),
                ("RegistrationEndpoint", OptStr),
                ("RegistrationToken", OptStr),
                ("RegistrationDelay", OptDur),
                ("CAEndpoint", OptStr),
                ("ShortAddrs", Flag),
            ],
        ),
    ),
    ("Pubsub", Any),
    ("Peering", Struct("Peering", &[("Peers", AddrInfos)])),
    (
        "DNS",
        Struct("DNS", &[("Resolvers", Map(&Str)), ("MaxCacheTTL", OptDur)]),
    ),
    ("Migration", Any),
    (
        "AutoConf",
        Struct(
            "AutoConf",
            &[
                ("URL", OptStr),
                ("Enabled", Flag),
                ("RefreshInterval", OptDur),
                ("TLSInsecureSkipVerify", Flag),
            ],
        ),
    ),
    (
        "Provide",
        Struct(
            "Provide",
            &[
                ("Enabled", Flag),
                ("Strategy", OptStr),
                ("BloomFPRate", OptInt),
                (
                    "DHT",
                    Struct(
                        "ProvideDHT",
                        &[
                            ("Interval", OptDur),
                            ("MaxWorkers", OptInt),
                            ("SweepEnabled", Flag),
                            ("DedicatedPeriodicWorkers", OptInt),
                            ("DedicatedBurstWorkers", OptInt),
                            ("MaxProvideConnsPerWorker", OptInt),
                            ("KeystoreBatchSize", OptInt),
                            ("OfflineDelay", OptDur),
                            ("SendProviderRecordTimeout", OptDur),
                            ("ResumeEnabled", Flag),
                        ],
                    ),
                ),
            ],
        ),
    ),
    (
        "Provider",
        Struct(
            "Provider",
            &[
                ("Enabled", Flag),
                ("Strategy", OptStr),
                ("WorkerCount", OptInt),
            ],
        ),
    ),
    (
        "Reprovider",
        Struct("Reprovider", &[("Interval", OptDur), ("Strategy", OptStr)]),
    ),
    (
        "HTTPRetrieval",
        Struct(
            "HTTPRetrieval",
            &[
                ("Enabled", Flag),
                ("Allowlist", StrList),
                ("Denylist", StrList),
                ("NumWorkers", OptInt),
                ("MaxBlockSize", OptStr),
                ("TLSInsecureSkipVerify", Flag),
            ],
        ),
    ),
    ("Experimental", Any),
    ("Plugins", Any),
    ("Pinning", Any),
    ("Import", Any),
    (
        "Version",
        Struct(
            "Version",
            &[
                ("AgentSuffix", OptStr),
                ("SwarmCheckEnabled", Flag),
                ("SwarmCheckPercentThreshold", OptInt),
            ],
        ),
    ),
    ("Internal", Any),
    ("Bitswap", Any),
];

/// The whole `config.Config`.
pub const ROOT: Ty = Struct("Config", CONFIG);

/// kubo's `config.CheckKey`: every part of a dotted key must name a Go struct field
/// (case-sensitive) or a key of a map section. Messages as kubo's: `<path> not found`,
/// `<path> key is not a map`.
pub fn check_key(key: &str) -> Result<(), String> {
    let parts: Vec<&str> = key.split('.').collect();
    let mut cur = &ROOT;
    for (i, part) in parts.iter().enumerate() {
        match cur {
            Struct(_, fields) => match fields.iter().find(|(n, _)| n == part) {
                Some((_, t)) => cur = t,
                None => return Err(format!("{} not found", parts[..=i].join("."))),
            },
            Map(elem) => cur = elem,
            // A nil interface in kubo's reflection: anything below is accepted.
            Any => return Ok(()),
            _ => return Err(format!("{} key is not a map", parts[..i].join("."))),
        }
    }
    Ok(())
}

/// kubo's `config.FromMap` as far as types go: decode the whole map against the schema.
/// Unknown fields are ignored, as Go's decoder does. The error is the decoder's, without
/// kubo's `failure to decode config: ` prefix.
pub fn check_types(cfg: &Value) -> Result<(), String> {
    check(&ROOT, cfg, "Config")
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

fn mismatch(v: &Value, path: &str, go: &str) -> String {
    format!(
        "json: cannot unmarshal {} into Go struct field {path} of type {go}",
        kind(v)
    )
}

fn check(t: &Ty, v: &Value, path: &str) -> Result<(), String> {
    let ok = match (t, v) {
        (Any, _) => true,
        // Go leaves a field alone on null, except for the custom decoders below (all accept it).
        (_, Value::Null) => true,
        (Struct(_, fields), Value::Object(m)) => {
            for (name, ft) in fields.iter() {
                if let Some(fv) = m.get(*name) {
                    check(ft, fv, &format!("{path}.{name}"))?;
                }
            }
            true
        }
        (Map(elem), Value::Object(m)) => {
            for (k, fv) in m {
                check(elem, fv, &format!("{path}.{k}"))?;
            }
            true
        }
        (Flag, Value::Bool(_)) => true,
        (Flag, other) => {
            return Err(format!(
                "failed to unmarshal {:?} into a flag: must be null/undefined, true, or false",
                other.to_string()
            ))
        }
        (OptStr | Str, Value::String(_)) => true,
        (OptInt | Int, Value::Number(n)) => n.is_i64() || n.is_u64(),
        (OptDur, Value::String(s)) => {
            if !matches!(s.as_str(), "" | "null" | "default") {
                parse_go_duration(s)?;
            }
            true
        }
        (OptBytes, Value::Number(_)) => true,
        (OptBytes, Value::String(s)) => {
            crate::config::parse_bytes(s)?;
            true
        }
        (OptBytes, other) => {
            return Err(format!(
                "unable to parse byte size, expected a size string (e.g., \"5GiB\") or a number, but got {}",
                go_kind(other)
            ))
        }
        (Strings, Value::String(_)) => true,
        (Strings | StrList, Value::Array(a)) => {
            for (i, e) in a.iter().enumerate() {
                if !e.is_string() {
                    return Err(mismatch(e, &format!("{path}[{i}]"), "string"));
                }
            }
            true
        }
        (Bool, Value::Bool(_)) => true,
        (AddrInfos, Value::Array(a)) => {
            for e in a {
                check_addr_info(e)?;
            }
            true
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(mismatch(v, path, go_name(t)))
    }
}

fn go_kind(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => "bool",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
        _ => "<nil>",
    }
}

fn go_name(t: &Ty) -> &'static str {
    match t {
        Struct(n, _) => n,
        Map(_) => "map",
        Any => "interface {}",
        Flag => "config.Flag",
        OptStr => "config.OptionalString",
        OptInt => "config.OptionalInteger",
        OptDur => "config.OptionalDuration",
        OptBytes => "config.OptionalBytes",
        Strings => "config.Strings",
        StrList => "[]string",
        Str => "string",
        Bool => "bool",
        Int => "int64",
        AddrInfos => "[]peer.AddrInfo",
    }
}

/// peer.AddrInfo's decoder: `{"ID": <peer id>, "Addrs": [<multiaddr>…]}`.
fn check_addr_info(v: &Value) -> Result<(), String> {
    let Value::Object(m) = v else {
        return Err(mismatch(v, "Config.Peering.Peers", "peer.AddrInfo"));
    };
    let id = m.get("ID").and_then(Value::as_str).unwrap_or("");
    id.parse::<libp2p_identity::PeerId>()
        .map_err(|e| format!("failed to parse peer ID {id:?}: {e}"))?;
    match m.get("Addrs") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Array(a)) => {
            for addr in a {
                match addr.as_str() {
                    Some(s) if s.starts_with('/') && s.len() > 1 => {}
                    _ => {
                        return Err(format!(
                            "failed to parse multiaddr {addr}: must begin with /"
                        ))
                    }
                }
            }
            Ok(())
        }
        Some(other) => Err(mismatch(other, "AddrInfo.Addrs", "[]string")),
    }
}

/// Go's `time.ParseDuration`: "0", or a sequence of <decimal><unit> with units
/// ns, us, µs, ms, s, m, h, optionally signed.
pub fn parse_go_duration(s: &str) -> Result<(), String> {
    let err = || format!("time: invalid duration {:?}", s);
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    if body == "0" {
        return Ok(());
    }
    if body.is_empty() {
        return Err(err());
    }
    let mut rest = body;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if n == 0 || rest[..n] == *"." {
            return Err(err());
        }
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        if !matches!(&rest[..u], "ns" | "us" | "µs" | "ms" | "s" | "m" | "h") {
            return Err(if u == 0 {
                format!("time: missing unit in duration {s:?}")
            } else {
                format!("time: unknown unit {:?} in duration {s:?}", &rest[..u])
            });
        }
        rest = &rest[u..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_key_nexus_sets_exists() {
        for k in [
            "Addresses.API",
            "Addresses.Gateway",
            "Addresses.Swarm",
            "Addresses.Announce",
            "AutoConf.Enabled",
            "AutoTLS.Enabled",
            "Bootstrap",
            "Peering.Peers",
            "Routing.Type",
            "Routing.DelegatedRouters",
            "Ipns.DelegatedPublishers",
            "DNS.Resolvers",
            "Discovery.MDNS.Enabled",
            "Swarm.Transports.Network.QUIC",
            "Swarm.Transports.Network.WebTransport",
            "Swarm.Transports.Network.WebRTCDirect",
            "Swarm.Transports.Network.Websocket",
            "Swarm.RelayClient.Enabled",
            "Swarm.RelayService.Enabled",
            "Swarm.EnableHolePunching",
            "Swarm.ResourceMgr.MaxMemory",
            "Datastore.StorageMax",
            "Datastore.StorageGCWatermark",
            "Datastore.GCPeriod",
            "Gateway.ExposeRoutingAPI",
            "Gateway.DiagnosticServiceURL",
            "HTTPRetrieval.Enabled",
            "Provide.Enabled",
            "Provide.DHT.SweepEnabled",
        ] {
            assert_eq!(check_key(k), Ok(()), "{k}");
        }
    }

    #[test]
    fn unknown_misspelled_and_miscased_keys_are_refused_like_checkkey() {
        assert_eq!(check_key("Nope").unwrap_err(), "Nope not found");
        assert_eq!(
            check_key("AutoConf.Enable").unwrap_err(),
            "AutoConf.Enable not found"
        );
        assert_eq!(
            check_key("autoconf.Enabled").unwrap_err(),
            "autoconf not found"
        );
        assert_eq!(
            check_key("Swarm.Transports.Network.Quic").unwrap_err(),
            "Swarm.Transports.Network.Quic not found"
        );
        assert_eq!(
            check_key("Bootstrap.X").unwrap_err(),
            "Bootstrap key is not a map"
        );
        // Map sections take any key; unmodelled sections anything below their name.
        assert_eq!(check_key("DNS.Resolvers.eth"), Ok(()));
        // kubo splits on every dot, so a trailing one descends into the string value.
        assert!(check_key("DNS.Resolvers.eth.").is_err());
        assert_eq!(check_key("Datastore.Spec.mounts"), Ok(()));
        assert_eq!(check_key("Experimental.FilestoreEnabled"), Ok(()));
    }

    #[test]
    fn json_types_are_checked_like_frommap() {
        let ok = json!({
            "AutoConf": {"Enabled": false},
            "Swarm": {"ResourceMgr": {"MaxMemory": "536870912"}, "EnableHolePunching": null},
            "Datastore": {"StorageGCWatermark": 90, "GCPeriod": "1h", "Spec": {"type": "mount"}},
            "Addresses": {"API": "/unix/nexus/api.sock", "Swarm": ["/ip4/0.0.0.0/tcp/4001"]},
            "Peering": {"Peers": [{"ID": "12D3KooWGRUVh2HQ2ZqUzXwb5LQmU5pi2m5LEXBrMfsmGXQmLbvQ", "Addrs": ["/dns4/a/tcp/4001"]}]},
            "Unknown": {"whatever": 1}
        });
        assert_eq!(check_types(&ok), Ok(()));
        let bad = |v: Value| check_types(&v).unwrap_err();
        assert!(bad(json!({"AutoConf": {"Enabled": "false"}})).contains("into a flag"));
        assert!(bad(json!({"Swarm": {"ResourceMgr": {"MaxMemory": "lots"}}})).contains("lots"));
        assert!(bad(json!({"Datastore": {"StorageGCWatermark": "90"}}))
            .contains("Go struct field Config.Datastore.StorageGCWatermark of type int64"));
        assert!(bad(json!({"Bootstrap": "x"})).contains("of type []string"));
        assert!(bad(json!({"Bootstrap": [1]})).contains("cannot unmarshal number"));
        assert!(bad(json!({"Discovery": {"MDNS": {"Enabled": 0}}})).contains("of type bool"));
        assert!(bad(json!({"Routing": {"Type": 5}})).contains("OptionalString"));
        assert!(bad(json!({"Provide": {"DHT": {"Interval": "12 hours"}}})).contains("time:"));
        assert!(bad(json!({"Peering": {"Peers": [{"ID": "nope"}]}})).contains("peer ID"));
        assert!(bad(json!({"DNS": {"Resolvers": {".": 1}}})).contains("of type string"));
    }

    #[test]
    fn go_durations() {
        for ok in ["0", "1h", "1h30m", "1.5s", "300ms", "-2m"] {
            assert_eq!(parse_go_duration(ok), Ok(()), "{ok}");
        }
        for bad in ["", "1", "1d", "h", "1h x"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }
}
