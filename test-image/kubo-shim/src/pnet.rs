//! Owns private-network (swarm.key) handling: parsing the key like go-libp2p's `DecodeV1PSK`,
//! kubo's key fingerprint, and the start-up rules kubo >= 0.37 treats as fatal.

use serde_json::Value;

pub const AUTOCONF_DEFAULT_URL: &str = "https://conf.ipfs-mainnet.org/autoconf.json";

/// A 32-byte pre-shared key.
pub type Psk = [u8; 32];

/// Parse `/key/swarm/psk/1.0.0/\n/base16/\n<64 hex>` (also `/base64/` and `/bin/`, as go-libp2p).
pub fn parse_swarm_key(data: &[u8]) -> Result<Psk, String> {
    let mut rest = data;
    let next_line = |rest: &mut &[u8]| -> Option<Vec<u8>> {
        if rest.is_empty() {
            return None;
        }
        let end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
        let line = rest[..end].to_vec();
        *rest = if end < rest.len() {
            &rest[end + 1..]
        } else {
            &[]
        };
        Some(line)
    };
    let header = next_line(&mut rest).ok_or("swarm key is empty")?;
    if trim(&header) != b"/key/swarm/psk/1.0.0/" {
        return Err("expected header /key/swarm/psk/1.0.0/".into());
    }
    let enc = next_line(&mut rest).ok_or("swarm key has no encoding line")?;
    match trim(&enc) {
        b"/base16/" => {
            let line = next_line(&mut rest).ok_or("swarm key has no key line")?;
            let hex = trim(&line);
            if hex.len() != 64 {
                return Err(format!(
                    "expected 64 hex characters (32 bytes) in swarm key, got {}",
                    hex.len()
                ));
            }
            let mut out = [0u8; 32];
            for (i, chunk) in hex.chunks(2).enumerate() {
                let s = std::str::from_utf8(chunk).map_err(|_| "swarm key is not valid hex")?;
                out[i] = u8::from_str_radix(s, 16).map_err(|_| "swarm key is not valid hex")?;
            }
            trailing_ok(rest)?;
            Ok(out)
        }
        b"/base64/" => {
            use base64::Engine;
            let line = next_line(&mut rest).ok_or("swarm key has no key line")?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(trim(&line))
                .map_err(|e| format!("swarm key is not valid base64: {e}"))?;
            trailing_ok(rest)?;
            bytes
                .try_into()
                .map_err(|_| "expected 32 bytes in swarm key".to_string())
        }
        b"/bin/" => rest
            .get(..32)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| "expected 32 bytes in swarm key".to_string()),
        other => Err(format!(
            "unknown encoding: {}",
            String::from_utf8_lossy(other)
        )),
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let s = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let e = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(s, |e| e + 1);
    &b[s..e.max(s)]
}

fn trailing_ok(rest: &[u8]) -> Result<(), String> {
    if trim(rest).is_empty() {
        Ok(())
    } else {
        Err("unexpected data after the key in swarm key".into())
    }
}

/// kubo's `pnetFingerprint`: Salsa20 keystream (nonce "finprint") over 64 zero bytes, then
/// SHAKE-128 to 16 bytes; printed as lowercase hex.
pub fn fingerprint(psk: &Psk) -> String {
    use salsa20::cipher::{KeyIvInit, StreamCipher};
    use sha3::digest::{ExtendableOutput, Update, XofReader};
    let mut enc = [0u8; 64];
    let mut cipher = salsa20::Salsa20::new(psk.into(), b"finprint".into());
    cipher.apply_keystream(&mut enc);
    let mut h = sha3::Shake128::default();
    h.update(&enc);
    let mut out = [0u8; 16];
    h.finalize_xof().read(&mut out);
    out.iter().map(|b| format!("{b:02x}")).collect()
}

fn explicit_bool(cfg: &Value, ptr: &str) -> Option<bool> {
    cfg.pointer(ptr).and_then(Value::as_bool)
}

/// What the start-up checks read besides the config.
#[derive(Debug, Default, Clone)]
pub struct StartEnv {
    /// `LIBP2P_FORCE_PNET=1`.
    pub force_pnet: bool,
    /// `IPFS_REUSEPORT` set to anything non-empty.
    pub reuseport: bool,
    /// `daemon --routing=…`, if given.
    pub routing: Option<String>,
}

/// How kubo reports a failed start: `Error: <msg>` (a returned error), or a go-log
/// `logger.Fatal` line (groups.go's relay checks).
#[derive(Debug, PartialEq, Eq)]
pub enum StartupError {
    Error(String),
    Fatal(String),
}

#[cfg(test)]
impl StartupError {
    pub fn message(&self) -> &str {
        match self {
            StartupError::Error(m) | StartupError::Fatal(m) => m,
        }
    }
}

/// A `*Optional…` value that is set (not absent, not null).
fn is_set(cfg: &Value, ptr: &str) -> bool {
    !matches!(cfg.pointer(ptr), None | Some(Value::Null))
}

/// The checks kubo 0.43 runs before starting, in the order kubo reaches them in
/// cmd/ipfs/kubo/daemon.go and node construction. `swarm_key` is the raw key file, if present.
/// Returns the parsed key on success.
pub fn check_startup(
    cfg: &Value,
    swarm_key: Option<&[u8]>,
    env: &StartEnv,
) -> Result<Option<Psk>, StartupError> {
    use StartupError::{Error, Fatal};
    let construct = |m: String| {
        Error(format!(
            "constructing the node (see log for full detail): {m}"
        ))
    };
    let psk = match swarm_key {
        Some(raw) => Some(
            parse_swarm_key(raw)
                .map_err(|e| Error(format!("failed to configure private network: {e}")))?,
        ),
        None => None,
    };
    let private = psk.is_some() || env.force_pnet;

    // AutoConf (config/autoconf_client.go ValidateAutoConfWithRepo, daemon.go:402-405).
    let autoconf_enabled = explicit_bool(cfg, "/AutoConf/Enabled").unwrap_or(true);
    if autoconf_enabled {
        let url = cfg
            .pointer("/AutoConf/URL")
            .and_then(Value::as_str)
            .unwrap_or(AUTOCONF_DEFAULT_URL);
        if url.is_empty() {
            return Err(Error(
                "AutoConf is enabled but AutoConf.URL is empty - please provide a URL".into(),
            ));
        }
        if private && url == AUTOCONF_DEFAULT_URL {
            return Err(Error(format!("AutoConf cannot use the default mainnet URL ({AUTOCONF_DEFAULT_URL}) on a private network (swarm.key or LIBP2P_FORCE_PNET detected). Either disable AutoConf by setting AutoConf.Enabled=false, or configure AutoConf.URL to point to a configuration service specific to your private swarm")));
        }
    } else {
        let bootstrap = cfg.get("Bootstrap").and_then(Value::as_array);
        if let Some(b) = bootstrap {
            if b.len() == 1 && b[0].as_str() == Some("auto") {
                return Err(Error("no usable bootstrap peers: AutoConf is disabled (AutoConf.Enabled=false) but 'auto' placeholder is used in Bootstrap config. Either set AutoConf.Enabled=true to enable automatic configuration, or replace 'auto' with specific Bootstrap peer addresses".into()));
            }
        }
    }

    // Routing option (daemon.go:456-470): --routing, else Routing.Type, else "auto"; under
    // pnet "auto" is switched to "dht" (an error log, not fatal).
    let mut routing = env
        .routing
        .clone()
        .filter(|r| !r.is_empty() && r != "default")
        .or_else(|| {
            cfg.pointer("/Routing/Type")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "auto".into());
    if private {
        if routing == "auto" {
            eprintln!("ERROR\tcmd/ipfs\tPrivate networking (swarm.key / LIBP2P_FORCE_PNET) does not work with public HTTP IPNIs enabled by Routing.Type=auto. Kubo will use Routing.Type=dht instead. Update config to remove this message.");
            routing = "dht".into();
        }
        // daemon.go:476-479: only an explicit true is fatal.
        if explicit_bool(cfg, "/AutoTLS/Enabled") == Some(true) {
            return Err(Error("private networking (swarm.key / LIBP2P_FORCE_PNET) does not work with AutoTLS.Enabled=true, update config to remove this message".into()));
        }
    }

    // validateDaemonConfig (daemon.go:960-991).
    if private && (routing == "auto" || routing == "autoclient") {
        return Err(Error("private network does not work with Routing.Type=auto. Update your config to Routing.Type=dht (or none, and do manual peering)".into()));
    }
    if is_set(cfg, "/Provider/Enabled")
        || is_set(cfg, "/Provider/Strategy")
        || is_set(cfg, "/Provider/WorkerCount")
    {
        return Err(Error("deprecated configuration detected. Manually migrate 'Provider' fields to 'Provide' and remove 'Provider' from your config. Documentation: https://github.com/ipfs/kubo/blob/master/docs/config.md#provide".into()));
    }
    if is_set(cfg, "/Reprovider/Interval") || is_set(cfg, "/Reprovider/Strategy") {
        return Err(Error("deprecated configuration detected. Manually migrate 'Reprovider' fields to 'Provide': Reprovider.Strategy -> Provide.Strategy, Reprovider.Interval -> Provide.DHT.Interval. Remove 'Reprovider' from your config. Documentation: https://github.com/ipfs/kubo/blob/master/docs/config.md#provide".into()));
    }
    if cfg.pointer("/Provide/Strategy").and_then(Value::as_str) == Some("flat") {
        return Err(Error("Provide.Strategy='flat' is no longer supported. Use 'all' instead. Documentation: https://github.com/ipfs/kubo/blob/master/docs/config.md#providestrategy".into()));
    }
    if explicit_bool(cfg, "/Experimental/StrategicProviding") == Some(true) {
        return Err(Error("Experimental.StrategicProviding was removed. Remove it from your config. Documentation: https://github.com/ipfs/kubo/blob/master/docs/experimental-features.md#strategic-providing".into()));
    }
    let sweep = explicit_bool(cfg, "/Provide/DHT/SweepEnabled").unwrap_or(true);
    let max_workers = cfg
        .pointer("/Provide/DHT/MaxWorkers")
        .and_then(Value::as_i64)
        .unwrap_or(16);
    if sweep && max_workers == 0 {
        return Err(Error("invalid configuration: Provide.DHT.MaxWorkers cannot be 0 when Provide.DHT.SweepEnabled=true. Set Provide.DHT.MaxWorkers to a positive value (e.g., 16) to control resource usage. Documentation: https://github.com/ipfs/kubo/blob/master/docs/config.md#providedhtmaxworkers".into()));
    }
    let provide = explicit_bool(cfg, "/Provide/Enabled").unwrap_or(true);
    if routing == "delegated" && provide {
        return Err(Error("Routing.Type=delegated does not support content providing. Set Provide.Enabled=false in your config".into()));
    }

    // validateDaemonEnvironment (daemon.go:993-998).
    if env.reuseport {
        return Err(Error(
            "support for IPFS_REUSEPORT was removed. Use LIBP2P_TCP_REUSEPORT instead".into(),
        ));
    }

    // Node construction (core/node/groups.go, libp2p/transport.go, libp2p/relay.go).
    if env.force_pnet && psk.is_none() {
        return Err(construct(
            "private network was not configured but is enforced by the environment".into(),
        ));
    }
    if private {
        for t in ["QUIC", "WebTransport", "WebRTCDirect"] {
            if explicit_bool(cfg, &format!("/Swarm/Transports/Network/{t}")) == Some(true) {
                return Err(construct(format!("{t} transport does not support private networks, please disable Swarm.Transports.Network.{t}")));
            }
        }
    }
    // groups.go:116-133: relay service/client default to the relay transport's setting;
    // enabled without the transport is a logger.Fatal.
    let relay_transport = explicit_bool(cfg, "/Swarm/Transports/Network/Relay").unwrap_or(true);
    let relay_service =
        explicit_bool(cfg, "/Swarm/RelayService/Enabled").unwrap_or(relay_transport);
    let relay_client = explicit_bool(cfg, "/Swarm/RelayClient/Enabled").unwrap_or(relay_transport);
    if !relay_transport {
        if relay_service {
            return Err(Fatal("Failed to enable `Swarm.RelayService`, it requires `Swarm.Transports.Network.Relay` to be true.".into()));
        }
        if relay_client {
            return Err(Fatal("Failed to enable `Swarm.RelayClient`, it requires `Swarm.Transports.Network.Relay` to be true.".into()));
        }
    }
    // relay.go:111-116 (0.43): hole punching explicitly on with the relay client off.
    if explicit_bool(cfg, "/Swarm/EnableHolePunching") == Some(true) && !relay_client {
        return Err(construct("failed to enable Swarm.EnableHolePunching: it requires Swarm.RelayClient.Enabled to be true".into()));
    }
    Ok(psk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: &str = "/key/swarm/psk/1.0.0/\n/base16/\n000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";

    fn chk(cfg: &Value, key: Option<&[u8]>, force_pnet: bool) -> Result<Option<Psk>, String> {
        let env = StartEnv {
            force_pnet,
            ..StartEnv::default()
        };
        check_startup(cfg, key, &env).map_err(|e| e.message().to_string())
    }

    fn with(mut c: Value, key: &str, v: Value) -> Value {
        crate::config::set(&mut c, key, v).unwrap();
        c
    }

    #[test]
    fn hole_punching_on_with_relay_client_off_is_fatal() {
        let c = with(pnet_ok(), "Swarm.EnableHolePunching", json!(true));
        assert!(chk(&c, None, false).is_ok(), "relay client defaults to on");
        let c = with(c, "Swarm.RelayClient.Enabled", json!(false));
        assert_eq!(
            chk(&c, None, false).unwrap_err(),
            "constructing the node (see log for full detail): failed to enable Swarm.EnableHolePunching: it requires Swarm.RelayClient.Enabled to be true"
        );
        // Unset hole punching with the client off is only logged.
        let c = with(pnet_ok(), "Swarm.RelayClient.Enabled", json!(false));
        assert!(chk(&c, None, false).is_ok());
    }

    #[test]
    fn autoclient_routing_under_a_swarm_key_is_fatal() {
        let key = Some(KEY.as_bytes());
        let c = with(pnet_ok(), "Routing.Type", json!("autoclient"));
        assert_eq!(
            chk(&c, key, false).unwrap_err(),
            "private network does not work with Routing.Type=auto. Update your config to Routing.Type=dht (or none, and do manual peering)"
        );
        assert!(chk(&c, None, false).is_ok());
        // auto is switched to dht under pnet, not fatal; --routing overrides the config.
        let c = with(pnet_ok(), "Routing.Type", json!("auto"));
        assert!(chk(&c, key, false).is_ok());
        let env = StartEnv {
            routing: Some("autoclient".into()),
            ..StartEnv::default()
        };
        assert!(check_startup(&pnet_ok(), key, &env).is_err());
        let c = with(pnet_ok(), "Routing.Type", json!("delegated"));
        assert!(chk(&c, None, false)
            .unwrap_err()
            .contains("Routing.Type=delegated"));
    }

    #[test]
    fn deprecated_provider_and_reprovider_keys_are_fatal() {
        for (k, v) in [
            ("Provider.Enabled", json!(true)),
            ("Provider.Strategy", json!("all")),
            ("Provider.WorkerCount", json!(4)),
        ] {
            let e = chk(&with(pnet_ok(), k, v), None, false).unwrap_err();
            assert!(
                e.starts_with("deprecated configuration detected. Manually migrate 'Provider'"),
                "{k}: {e}"
            );
        }
        for (k, v) in [
            ("Reprovider.Interval", json!("12h")),
            ("Reprovider.Strategy", json!("all")),
        ] {
            let e = chk(&with(pnet_ok(), k, v), None, false).unwrap_err();
            assert!(
                e.contains("Manually migrate 'Reprovider' fields"),
                "{k}: {e}"
            );
        }
        // Empty sections and nulls are the default: fine.
        let c = with(pnet_ok(), "Provider", json!({"Strategy": null}));
        assert!(chk(&with(c, "Reprovider", json!({})), None, false).is_ok());
        assert!(chk(
            &with(pnet_ok(), "Provide.Strategy", json!("flat")),
            None,
            false
        )
        .is_err());
        let c = with(pnet_ok(), "Provide.DHT.MaxWorkers", json!(0));
        assert!(chk(&c, None, false)
            .unwrap_err()
            .contains("MaxWorkers cannot be 0"));
        assert!(chk(
            &with(c, "Provide.DHT.SweepEnabled", json!(false)),
            None,
            false
        )
        .is_ok());
    }

    #[test]
    fn relay_service_or_client_without_relay_transport_is_a_logger_fatal() {
        let c = with(pnet_ok(), "Swarm.Transports.Network.Relay", json!(false));
        // Both default to the transport's setting: off too, so fine.
        assert!(chk(&c, None, false).is_ok());
        let svc = with(c.clone(), "Swarm.RelayService.Enabled", json!(true));
        assert_eq!(
            check_startup(&svc, None, &StartEnv::default()).unwrap_err(),
            StartupError::Fatal("Failed to enable `Swarm.RelayService`, it requires `Swarm.Transports.Network.Relay` to be true.".into())
        );
        let cli = with(c, "Swarm.RelayClient.Enabled", json!(true));
        assert!(chk(&cli, None, false)
            .unwrap_err()
            .contains("Swarm.RelayClient"));
    }

    #[test]
    fn ipfs_reuseport_is_fatal() {
        let env = StartEnv {
            reuseport: true,
            ..StartEnv::default()
        };
        assert_eq!(
            check_startup(&pnet_ok(), None, &env).unwrap_err(),
            StartupError::Error(
                "support for IPFS_REUSEPORT was removed. Use LIBP2P_TCP_REUSEPORT instead".into()
            )
        );
    }

    #[test]
    fn nexus_settings_pass_every_check() {
        let mut c = pnet_ok();
        for (k, v) in [
            ("Routing.Type", json!("dht")),
            ("Swarm.Transports.Network.QUIC", json!(false)),
            ("Swarm.Transports.Network.WebTransport", json!(false)),
            ("Swarm.Transports.Network.WebRTCDirect", json!(false)),
            ("Swarm.Transports.Network.Websocket", json!(false)),
            ("Swarm.RelayClient.Enabled", json!(false)),
            ("Swarm.RelayService.Enabled", json!(false)),
            ("Swarm.EnableHolePunching", json!(false)),
            ("AutoTLS.Enabled", json!(false)),
            ("Provide.Enabled", json!(true)),
            ("Provide.DHT.SweepEnabled", json!(false)),
        ] {
            c = with(c, k, v);
        }
        assert!(chk(&c, Some(KEY.as_bytes()), true).unwrap().is_some());
    }

    fn pnet_ok() -> Value {
        json!({"AutoConf": {"Enabled": false}, "Bootstrap": []})
    }

    #[test]
    fn parses_key_with_and_without_newline() {
        let k = parse_swarm_key(KEY.as_bytes()).unwrap();
        assert_eq!(k[1], 1);
        assert_eq!(k[31], 0x1f);
        assert_eq!(parse_swarm_key(KEY.trim_end().as_bytes()).unwrap(), k);
    }

    #[test]
    fn rejects_malformed_keys() {
        assert!(parse_swarm_key(b"").is_err());
        assert!(parse_swarm_key(b"/key/swarm/psk/1.0.0/\n/base16/\nabcd\n").is_err());
        assert!(parse_swarm_key(b"/key/swarm/psk/2.0.0/\n/base16/\n").is_err());
        let bad_hex = KEY.replace("1f\n", "zz\n");
        assert!(parse_swarm_key(bad_hex.as_bytes()).is_err());
        let trailing = format!("{KEY}garbage\n");
        assert!(parse_swarm_key(trailing.as_bytes()).is_err());
        let err = chk(&pnet_ok(), Some(b"nonsense"), false).unwrap_err();
        assert!(err.contains("private network"), "{err}");
    }

    #[test]
    fn fingerprint_is_stable_hex() {
        let k = parse_swarm_key(KEY.as_bytes()).unwrap();
        let f = fingerprint(&k);
        assert_eq!(f.len(), 32);
        assert_eq!(f, fingerprint(&k));
        assert_ne!(f, fingerprint(&[0u8; 32]));
    }

    #[test]
    fn force_pnet_without_key_is_fatal() {
        let err = chk(&pnet_ok(), None, true).unwrap_err();
        assert!(
            err.contains("private network was not configured but is enforced by the environment")
        );
        assert!(chk(&pnet_ok(), Some(KEY.as_bytes()), true).is_ok());
    }

    #[test]
    fn autoconf_with_key_is_fatal_unless_disabled() {
        let key = Some(KEY.as_bytes());
        assert!(chk(&json!({}), key, false)
            .unwrap_err()
            .contains("AutoConf cannot use the default mainnet URL"));
        assert!(chk(&json!({"AutoConf": {"Enabled": true}}), key, false).is_err());
        assert!(chk(&pnet_ok(), key, false).unwrap().is_some());
        // Without a key, AutoConf on is fine.
        assert!(chk(&json!({}), None, false).unwrap().is_none());
    }

    #[test]
    fn transports_and_autotls_explicitly_on_are_fatal_under_pnet() {
        let key = Some(KEY.as_bytes());
        for t in ["QUIC", "WebTransport", "WebRTCDirect"] {
            let mut c = pnet_ok();
            crate::config::set(
                &mut c,
                &format!("Swarm.Transports.Network.{t}"),
                json!(true),
            )
            .unwrap();
            assert!(chk(&c, key, false).unwrap_err().contains(t));
            assert!(chk(&c, None, false).is_ok());
            crate::config::set(
                &mut c,
                &format!("Swarm.Transports.Network.{t}"),
                json!(false),
            )
            .unwrap();
            assert!(chk(&c, key, false).is_ok());
        }
        let mut c = pnet_ok();
        crate::config::set(&mut c, "AutoTLS.Enabled", json!(true)).unwrap();
        assert!(chk(&c, key, false).unwrap_err().contains("AutoTLS"));
    }

    #[test]
    fn sole_auto_bootstrap_with_autoconf_off_is_fatal() {
        let c = json!({"AutoConf": {"Enabled": false}, "Bootstrap": ["auto"]});
        assert!(chk(&c, None, false)
            .unwrap_err()
            .contains("no usable bootstrap peers"));
        let c = json!({"AutoConf": {"Enabled": false}, "Bootstrap": ["auto", "/ip4/1.2.3.4/tcp/4001/p2p/QmX"]});
        assert!(chk(&c, None, false).is_ok());
    }
}
