//! The private network's pre-shared key (libp2p "pnet" PSK v1).
//!
//! Owns generating, parsing and validating swarm keys and rendering them in the file format kubo
//! reads (`swarm.key`). It must never print the key: `Debug` is redacted and there is no
//! `Display`; the only way out is [`SwarmKey::to_file_contents`], used to hand the key to a
//! container as a file.

use base64::Engine as _;

const HEADER: &str = "/key/swarm/psk/1.0.0/";
const KEY_LEN: usize = 32;

/// A 32-byte pre-shared key shared by every node of one private network.
#[derive(Clone, PartialEq, Eq)]
pub struct SwarmKey([u8; KEY_LEN]);

/// Why a supplied swarm key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SwarmKeyError {
    #[error("swarm key is empty: expected `{HEADER}`, then `/base16/`, then 64 hex digits")]
    Empty,
    #[error("swarm key must start with the line `{HEADER}` (found `{0}`)")]
    BadHeader(String),
    #[error("swarm key encoding `{0}` is not supported: use `/base16/` (or `/base64/`)")]
    UnsupportedEncoding(String),
    #[error("swarm key has no key line after the encoding line")]
    MissingKey,
    #[error("swarm key must be 32 bytes (64 hex digits); this one decodes to {0} bytes")]
    WrongLength(usize),
    #[error("swarm key is not valid {0}: {1}")]
    BadEncoding(&'static str, String),
    #[error("swarm key has unexpected text after the key line")]
    TrailingData,
    #[error("the operating system's random number generator failed: {0}")]
    Rng(String),
}

impl SwarmKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, SwarmKeyError> {
        let mut bytes = [0u8; KEY_LEN];
        getrandom::fill(&mut bytes).map_err(|e| SwarmKeyError::Rng(e.to_string()))?;
        Ok(Self(bytes))
    }

    /// Parses a key in kubo's `swarm.key` format. Accepts `\n` or `\r\n` line ends, surrounding
    /// whitespace on each line, a trailing newline, and the `/base16/` or `/base64/` encodings.
    pub fn parse(text: &str) -> Result<Self, SwarmKeyError> {
        let mut lines = text.lines().map(str::trim).skip_while(|l| l.is_empty());
        let header = lines.next().ok_or(SwarmKeyError::Empty)?;
        if header != HEADER {
            return Err(SwarmKeyError::BadHeader(truncate(header)));
        }
        let encoding = lines.next().ok_or(SwarmKeyError::MissingKey)?;
        let key_line = lines.next().ok_or(SwarmKeyError::MissingKey)?;
        if lines.any(|l| !l.is_empty()) {
            return Err(SwarmKeyError::TrailingData);
        }
        let bytes = match encoding {
            "/base16/" => hex::decode(key_line)
                .map_err(|e| SwarmKeyError::BadEncoding("hex", e.to_string()))?,
            "/base64/" => base64::engine::general_purpose::STANDARD
                .decode(key_line)
                .map_err(|e| SwarmKeyError::BadEncoding("base64", e.to_string()))?,
            other => return Err(SwarmKeyError::UnsupportedEncoding(truncate(other))),
        };
        let arr: [u8; KEY_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| SwarmKeyError::WrongLength(bytes.len()))?;
        Ok(Self(arr))
    }

    /// The key as kubo's `swarm.key` file: header, `/base16/`, 64 lowercase hex digits, newline.
    pub fn to_file_contents(&self) -> String {
        format!("{HEADER}\n/base16/\n{}\n", hex::encode(self.0))
    }
}

impl std::fmt::Debug for SwarmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SwarmKey(<redacted>)")
    }
}

/// Error messages quote at most a short prefix of what the user gave us.
fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD_HEX: &str = "9f1e3c5a7b2d4e6f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7";

    fn key_text(hex: &str) -> String {
        format!("/key/swarm/psk/1.0.0/\n/base16/\n{hex}")
    }

    #[test]
    fn generated_keys_round_trip_and_differ() {
        let a = SwarmKey::generate().unwrap();
        let b = SwarmKey::generate().unwrap();
        assert_ne!(a, b);
        let text = a.to_file_contents();
        assert_eq!(text.len(), 21 + 1 + 8 + 1 + 64 + 1);
        assert!(text.starts_with("/key/swarm/psk/1.0.0/\n/base16/\n"));
        assert_eq!(SwarmKey::parse(&text).unwrap(), a);
    }

    #[test]
    fn accepts_kubo_variants() {
        let canonical = SwarmKey::parse(&key_text(GOOD_HEX)).unwrap();
        // Trailing newline, CRLF, upper-case hex, blank leading line.
        for text in [
            format!("{}\n", key_text(GOOD_HEX)),
            key_text(GOOD_HEX).replace('\n', "\r\n"),
            key_text(&GOOD_HEX.to_uppercase()),
            format!("\n{}", key_text(GOOD_HEX)),
        ] {
            assert_eq!(SwarmKey::parse(&text).unwrap(), canonical, "{text:?}");
        }
        let b64 = base64::engine::general_purpose::STANDARD.encode(hex::decode(GOOD_HEX).unwrap());
        let text = format!("/key/swarm/psk/1.0.0/\n/base64/\n{b64}\n");
        assert_eq!(SwarmKey::parse(&text).unwrap(), canonical);
    }

    #[test]
    fn rejects_bad_keys_with_clear_errors() {
        assert_eq!(SwarmKey::parse(""), Err(SwarmKeyError::Empty));
        assert_eq!(SwarmKey::parse("\n\n"), Err(SwarmKeyError::Empty));
        assert!(matches!(
            SwarmKey::parse(&key_text(GOOD_HEX).replace("1.0.0", "2.0.0")),
            Err(SwarmKeyError::BadHeader(_))
        ));
        assert!(matches!(
            SwarmKey::parse(&key_text(GOOD_HEX).replace("/base16/", "/bin/")),
            Err(SwarmKeyError::UnsupportedEncoding(e)) if e == "/bin/"
        ));
        assert_eq!(
            SwarmKey::parse("/key/swarm/psk/1.0.0/\n/base16/"),
            Err(SwarmKeyError::MissingKey)
        );
        assert_eq!(
            SwarmKey::parse(&key_text(&GOOD_HEX[..62])),
            Err(SwarmKeyError::WrongLength(31))
        );
        assert!(matches!(
            SwarmKey::parse(&key_text(&format!("{}zz", &GOOD_HEX[..62]))),
            Err(SwarmKeyError::BadEncoding("hex", _))
        ));
        assert_eq!(
            SwarmKey::parse(&format!("{}\nextra", key_text(GOOD_HEX))),
            Err(SwarmKeyError::TrailingData)
        );
        // A key of another protocol or a bare hex string is refused.
        assert!(matches!(
            SwarmKey::parse(GOOD_HEX),
            Err(SwarmKeyError::BadHeader(_))
        ));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = SwarmKey::parse(&key_text(GOOD_HEX)).unwrap();
        let dbg = format!("{key:?}");
        assert!(!dbg.contains(&GOOD_HEX[..8]));
        assert!(dbg.contains("redacted"));
        // Error messages quote the bad header, never a key line.
        let err = SwarmKey::parse(&format!("{GOOD_HEX}\n/base16/\n{GOOD_HEX}")).unwrap_err();
        assert!(!err.to_string().contains(GOOD_HEX));
    }
}
