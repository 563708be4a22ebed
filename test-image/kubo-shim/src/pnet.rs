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

/// The checks kubo (0.37+) runs before starting, in the order kubo reaches them.
/// `swarm_key` is the raw key file, if present; `force_pnet` is `LIBP2P_FORCE_PNET=1`.
/// Returns the parsed key on success.
pub fn check_startup(
    cfg: &Value,
    swarm_key: Option<&[u8]>,
    force_pnet: bool,
) -> Result<Option<Psk>, String> {
    let psk = match swarm_key {
        Some(raw) => Some(
            parse_swarm_key(raw)
                .map_err(|e| format!("failed to configure private network: {e}"))?,
        ),
        None => None,
    };
    let private = psk.is_some() || force_pnet;

    // AutoConf (kubo config/autoconf.go ValidateAutoConfWithRepo).
    let autoconf_enabled = explicit_bool(cfg, "/AutoConf/Enabled").unwrap_or(true);
    if autoconf_enabled {
        let url = cfg
            .pointer("/AutoConf/URL")
            .and_then(Value::as_str)
            .unwrap_or(AUTOCONF_DEFAULT_URL);
        if url.is_empty() {
            return Err(
                "AutoConf is enabled but AutoConf.URL is empty - please provide a URL".into(),
            );
        }
        if private && url == AUTOCONF_DEFAULT_URL {
            return Err(format!("AutoConf cannot use the default mainnet URL ({AUTOCONF_DEFAULT_URL}) on a private network (swarm.key or LIBP2P_FORCE_PNET detected). Either disable AutoConf by setting AutoConf.Enabled=false, or configure AutoConf.URL to point to a configuration service specific to your private swarm"));
        }
    } else {
        let bootstrap = cfg.get("Bootstrap").and_then(Value::as_array);
        if let Some(b) = bootstrap {
            if b.len() == 1 && b[0].as_str() == Some("auto") {
                return Err("no usable bootstrap peers: AutoConf is disabled (AutoConf.Enabled=false) but 'auto' placeholder is used in Bootstrap config. Either set AutoConf.Enabled=true to enable automatic configuration, or replace 'auto' with specific Bootstrap peer addresses".into());
            }
        }
    }

    if force_pnet && psk.is_none() {
        return Err("constructing the node (see log for full detail): private network was not configured but is enforced by the environment".into());
    }

    if private {
        for t in ["QUIC", "WebTransport", "WebRTCDirect"] {
            if explicit_bool(cfg, &format!("/Swarm/Transports/Network/{t}")) == Some(true) {
                return Err(format!("constructing the node (see log for full detail): {t} transport does not support private networks, please disable Swarm.Transports.Network.{t}"));
            }
        }
        if explicit_bool(cfg, "/AutoTLS/Enabled") == Some(true) {
            return Err("constructing the node (see log for full detail): private networking (swarm.key / LIBP2P_FORCE_PNET) does not work with AutoTLS.Enabled=true, update config to remove this message".into());
        }
    }
    Ok(psk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: &str = "/key/swarm/psk/1.0.0/\n/base16/\n000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";

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
        let err = check_startup(&pnet_ok(), Some(b"nonsense"), false).unwrap_err();
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
        let err = check_startup(&pnet_ok(), None, true).unwrap_err();
        assert!(
            err.contains("private network was not configured but is enforced by the environment")
        );
        assert!(check_startup(&pnet_ok(), Some(KEY.as_bytes()), true).is_ok());
    }

    #[test]
    fn autoconf_with_key_is_fatal_unless_disabled() {
        let key = Some(KEY.as_bytes());
        assert!(check_startup(&json!({}), key, false)
            .unwrap_err()
            .contains("AutoConf cannot use the default mainnet URL"));
        assert!(check_startup(&json!({"AutoConf": {"Enabled": true}}), key, false).is_err());
        assert!(check_startup(&pnet_ok(), key, false).unwrap().is_some());
        // Without a key, AutoConf on is fine.
        assert!(check_startup(&json!({}), None, false).unwrap().is_none());
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
            assert!(check_startup(&c, key, false).unwrap_err().contains(t));
            assert!(check_startup(&c, None, false).is_ok());
            crate::config::set(
                &mut c,
                &format!("Swarm.Transports.Network.{t}"),
                json!(false),
            )
            .unwrap();
            assert!(check_startup(&c, key, false).is_ok());
        }
        let mut c = pnet_ok();
        crate::config::set(&mut c, "AutoTLS.Enabled", json!(true)).unwrap();
        assert!(check_startup(&c, key, false)
            .unwrap_err()
            .contains("AutoTLS"));
    }

    #[test]
    fn sole_auto_bootstrap_with_autoconf_off_is_fatal() {
        let c = json!({"AutoConf": {"Enabled": false}, "Bootstrap": ["auto"]});
        assert!(check_startup(&c, None, false)
            .unwrap_err()
            .contains("no usable bootstrap peers"));
        let c = json!({"AutoConf": {"Enabled": false}, "Bootstrap": ["auto", "/ip4/1.2.3.4/tcp/4001/p2p/QmX"]});
        assert!(check_startup(&c, None, false).is_ok());
    }
}
