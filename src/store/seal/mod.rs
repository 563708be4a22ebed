//! Sealing: the store's secrets encrypted at rest.
//!
//! Owns the key-encryption keys ([`SealKey`], 32 bytes from the OS CSPRNG), the [`Keyring`]
//! (the current key, which seals, and previous keys, which only open: a rotation in progress),
//! the AEAD (XChaCha20-Poly1305, a random 24-byte nonce per value) and the sealed text format:
//!
//! ```text
//! sealed:v1:<key id>:<base64url(nonce || ciphertext || tag)>
//! ```
//!
//! The key id is the first 4 bytes of SHA-256 over a fixed label and the key, in hex: it names
//! a key in messages and picks it on open without revealing it. Every value is bound to its
//! place by associated data (e.g. `networks.swarm_key/acme`), so a sealed value copied into
//! another row or column does not open. [`keyfile`] reads and writes the file the keys live in
//! when the configuration gives none.
//!
//! It must not know SQL, rows or records (the SQL store decides what is sealed and where), nor
//! print a key or a plaintext: keys have no `Display` and a redacted `Debug`, plaintexts are
//! handed back in [`Zeroizing`] buffers, errors name key ids and places, never values.

pub mod keyfile;

use std::fmt;

use base64::Engine;
use chacha20poly1305::aead::Aead;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use sha2::Digest;
use zeroize::{Zeroize, Zeroizing};

pub use keyfile::{KeyFile, KeySource};

/// The prefix of every sealed value of format version 1.
pub const SEALED_V1: &str = "sealed:v1:";
/// Bytes of a key.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// What went wrong sealing or opening. Names key ids, places and files; never a key or a
/// plaintext.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("cannot draw random bytes from the operating system: {0}")]
    Random(String),
    #[error(
        "a seal key must be {KEY_LEN} random bytes as base64 (e.g. `openssl rand -base64 32`), not {0}"
    )]
    BadKey(String),
    #[error("two keys of the keyring have the same id {0}: give each key once")]
    DuplicateKey(String),
    #[error(
        "the value is not sealed (plain text): restart the daemon to seal it, or restore the row"
    )]
    NotSealed,
    #[error("the value is sealed in an unknown format (`{0}`): this nexus reads sealed:v1 only; upgrade nexus or restore the row")]
    UnknownFormat(String),
    #[error("the sealed value is damaged: {0}")]
    Malformed(&'static str),
    #[error(
        "the value is sealed under key {id}, which is not in the keyring (it has {known}): configure that key \
         (as store.seal_key, store.seal_previous_keys, or a line of the seal key file) and restart; \
         without it this secret is lost"
    )]
    UnknownKey { id: String, known: String },
    #[error(
        "the value does not open under key {id}: it was altered, or moved from another row (each value is \
         bound to its row); restore the row from a backup"
    )]
    Forged { id: String },
    #[error("cannot be sealed: the AEAD refused it")]
    Seal,
    #[error("{}: {source}", .path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} can be read or written by other users (mode {mode:04o}): run `chmod 600 {}`",
        .path.display(), .path.display()
    )]
    Permissions { path: std::path::PathBuf, mode: u32 },
    #[error("{}: {detail}", .path.display())]
    KeyFile {
        path: std::path::PathBuf,
        detail: String,
    },
    #[error("{0}")]
    NotRotatable(String),
}

/// A key-encryption key: 32 bytes. Never printed (redacted `Debug`, no `Display`); zeroed when
/// dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct SealKey {
    bytes: [u8; KEY_LEN],
    id: String,
}

impl Drop for SealKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealKey({}, <redacted>)", self.id)
    }
}

impl SealKey {
    /// A new key from the OS CSPRNG.
    pub fn generate() -> Result<Self, SealError> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::fill(bytes.as_mut()).map_err(|e| SealError::Random(e.to_string()))?;
        Ok(Self::from_bytes(*bytes))
    }

    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        let mut h = sha2::Sha256::new();
        h.update(b"nexus seal key id v1\0");
        h.update(bytes);
        let digest = h.finalize();
        Self {
            bytes,
            id: hex::encode(&digest[..4]),
        }
    }

    /// Parses base64 of 32 bytes: standard or URL-safe alphabet, padded or not (what
    /// `openssl rand -base64 32` and [`SealKey::to_base64`] print). The error never quotes the
    /// text.
    pub fn parse(text: &str) -> Result<Self, SealError> {
        let t: Zeroizing<String> = Zeroizing::new(
            text.trim()
                .trim_end_matches('=')
                .chars()
                .map(|c| match c {
                    '+' => '-',
                    '/' => '_',
                    c => c,
                })
                .collect(),
        );
        let raw = Zeroizing::new(
            B64.decode(t.as_bytes())
                .map_err(|_| SealError::BadKey("text that is not base64".into()))?,
        );
        let bytes: [u8; KEY_LEN] = raw
            .as_slice()
            .try_into()
            .map_err(|_| SealError::BadKey(format!("{} bytes", raw.len())))?;
        Ok(Self::from_bytes(bytes))
    }

    /// URL-safe base64 without padding (43 characters). A secret: write it only to the key
    /// file.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(B64.encode(self.bytes))
    }

    /// The key's id (8 hex digits), safe to show.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        // A 32-byte slice is always a valid key.
        XChaCha20Poly1305::new(&self.bytes.into())
    }
}

/// The keys that open, the first of which seals. Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyring {
    current: SealKey,
    previous: Vec<SealKey>,
}

impl Keyring {
    /// `current` seals; `previous` only open. Refuses two keys with one id (the same key twice).
    pub fn new(current: SealKey, previous: Vec<SealKey>) -> Result<Self, SealError> {
        let mut ids = vec![current.id.clone()];
        for k in &previous {
            if ids.contains(&k.id) {
                return Err(SealError::DuplicateKey(k.id.clone()));
            }
            ids.push(k.id.clone());
        }
        Ok(Self { current, previous })
    }

    /// A keyring of one fresh key (tests, `sqlite::memory:` stores).
    pub fn generate() -> Result<Self, SealError> {
        Ok(Self {
            current: SealKey::generate()?,
            previous: Vec::new(),
        })
    }

    pub fn current(&self) -> &SealKey {
        &self.current
    }

    pub fn previous(&self) -> &[SealKey] {
        &self.previous
    }

    /// Every key, the current one first.
    pub fn keys(&self) -> impl Iterator<Item = &SealKey> {
        std::iter::once(&self.current).chain(&self.previous)
    }

    /// This keyring with `new` as the current key and every key of this one as previous.
    pub fn rotated_to(&self, new: SealKey) -> Result<Self, SealError> {
        Self::new(new, self.keys().cloned().collect())
    }

    /// This keyring without its previous keys.
    pub fn current_only(&self) -> Self {
        Self {
            current: self.current.clone(),
            previous: Vec::new(),
        }
    }

    fn ids(&self) -> String {
        self.keys()
            .map(|k| k.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Seals `plaintext` for the place `ad` under the current key.
    pub fn seal(&self, plaintext: &[u8], ad: &str) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| SealError::Random(e.to_string()))?;
        let ciphertext = self
            .current
            .cipher()
            .encrypt(
                &XNonce::from(nonce),
                chacha20poly1305::aead::Payload {
                    msg: plaintext,
                    aad: ad.as_bytes(),
                },
            )
            .map_err(|_| SealError::Seal)?;
        let mut body = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        body.extend_from_slice(&nonce);
        body.extend_from_slice(&ciphertext);
        Ok(format!(
            "{SEALED_V1}{}:{}",
            self.current.id,
            B64.encode(body)
        ))
    }

    /// Opens a value sealed for the place `ad` under any key of the keyring.
    pub fn open(&self, sealed: &str, ad: &str) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let parsed = Sealed::parse(sealed)?;
        let key =
            self.keys()
                .find(|k| k.id == parsed.key_id)
                .ok_or_else(|| SealError::UnknownKey {
                    id: parsed.key_id.to_string(),
                    known: self.ids(),
                })?;
        let (nonce, ciphertext) = parsed.body.split_at(NONCE_LEN);
        let mut nonce_arr = [0u8; NONCE_LEN];
        nonce_arr.copy_from_slice(nonce);
        key.cipher()
            .decrypt(
                &XNonce::from(nonce_arr),
                chacha20poly1305::aead::Payload {
                    msg: ciphertext,
                    aad: ad.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::Forged { id: key.id.clone() })
    }

    /// Whether `stored` needs sealing again: plain text, or sealed under another key than the
    /// current one. Malformed values are not (opening them reports the damage).
    pub fn needs_reseal(&self, stored: &str) -> bool {
        match Sealed::parse(stored) {
            Ok(s) => s.key_id != self.current.id,
            Err(SealError::NotSealed) => true,
            Err(_) => false,
        }
    }
}

/// Whether `stored` looks sealed (any version).
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with("sealed:")
}

/// The key id of a sealed value of format v1, if it is one.
pub fn key_id_of(stored: &str) -> Option<&str> {
    Sealed::parse(stored).ok().map(|s| s.key_id)
}

/// A sealed value, split.
struct Sealed<'a> {
    key_id: &'a str,
    body: Vec<u8>,
}

impl<'a> Sealed<'a> {
    fn parse(stored: &'a str) -> Result<Self, SealError> {
        let Some(rest) = stored.strip_prefix(SEALED_V1) else {
            if is_sealed(stored) {
                let version = stored.split(':').nth(1).unwrap_or("");
                return Err(SealError::UnknownFormat(
                    version.chars().take(8).collect::<String>(),
                ));
            }
            return Err(SealError::NotSealed);
        };
        let (key_id, body) = rest
            .split_once(':')
            .ok_or(SealError::Malformed("no key id"))?;
        if key_id.len() != 8 || !key_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SealError::Malformed("the key id is not 8 hex digits"));
        }
        let body = B64
            .decode(body.trim())
            .map_err(|_| SealError::Malformed("the sealed body is not base64url"))?;
        if body.len() < NONCE_LEN + TAG_LEN {
            return Err(SealError::Malformed("the sealed body is too short"));
        }
        Ok(Self { key_id, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AD: &str = "networks.swarm_key/acme";

    #[test]
    fn round_trip_and_format() {
        let ring = Keyring::generate().unwrap();
        let secret = b"/key/swarm/psk/1.0.0/\n/base16/\n00112233";
        let sealed = ring.seal(secret, AD).unwrap();
        assert!(sealed.starts_with(&format!("sealed:v1:{}:", ring.current().id())));
        assert_eq!(key_id_of(&sealed), Some(ring.current().id()));
        assert_eq!(ring.open(&sealed, AD).unwrap().as_slice(), secret);
        // A fresh nonce every time: the same plaintext never seals to the same text.
        assert_ne!(ring.seal(secret, AD).unwrap(), sealed);
        assert!(!sealed.contains("00112233"));
        assert!(!ring.needs_reseal(&sealed));
        assert!(ring.needs_reseal("/key/swarm/psk/1.0.0/"));
        // Empty plaintexts seal too.
        let empty = ring.seal(b"", AD).unwrap();
        assert!(ring.open(&empty, AD).unwrap().is_empty());
    }

    #[test]
    fn a_wrong_key_does_not_open() {
        let a = Keyring::generate().unwrap();
        let sealed = a.seal(b"secret", AD).unwrap();
        // Another key with the id forged to match: the tag check fails.
        let b = Keyring::generate().unwrap();
        let forged_id = sealed.replacen(a.current().id(), b.current().id(), 1);
        let err = b.open(&forged_id, AD).unwrap_err();
        assert!(matches!(err, SealError::Forged { .. }), "{err}");
    }

    #[test]
    fn tampered_ciphertext_does_not_open() {
        let ring = Keyring::generate().unwrap();
        let sealed = ring.seal(b"secret value", AD).unwrap();
        let (head, body) = sealed.rsplit_once(':').unwrap();
        let mut raw = B64.decode(body).unwrap();
        for i in [0, NONCE_LEN, raw.len() - 1] {
            raw[i] ^= 1;
            let tampered = format!("{head}:{}", B64.encode(&raw));
            let err = ring.open(&tampered, AD).unwrap_err();
            assert!(matches!(err, SealError::Forged { .. }), "byte {i}: {err}");
            raw[i] ^= 1;
        }
        let truncated = format!("{head}:{}", B64.encode(&raw[..NONCE_LEN + TAG_LEN - 1]));
        assert!(matches!(
            ring.open(&truncated, AD).unwrap_err(),
            SealError::Malformed(_)
        ));
        assert!(matches!(
            ring.open(&format!("{head}:%%%"), AD).unwrap_err(),
            SealError::Malformed(_)
        ));
    }

    #[test]
    fn swapped_associated_data_does_not_open() {
        let ring = Keyring::generate().unwrap();
        let sealed = ring.seal(b"key of acme", AD).unwrap();
        for other in [
            "networks.swarm_key/acme2",
            "networks.swarm_key/other",
            "nodes.private_key/acme/0",
            "",
        ] {
            let err = ring.open(&sealed, other).unwrap_err();
            assert!(matches!(err, SealError::Forged { .. }), "{other}: {err}");
            assert!(err.to_string().contains("moved from another row"), "{err}");
        }
    }

    #[test]
    fn an_unknown_key_id_is_named_with_what_to_do() {
        let a = Keyring::generate().unwrap();
        let b = Keyring::generate().unwrap();
        let sealed = a.seal(b"secret", AD).unwrap();
        let err = b.open(&sealed, AD).unwrap_err();
        let shown = err.to_string();
        assert!(matches!(err, SealError::UnknownKey { .. }), "{shown}");
        assert!(shown.contains(a.current().id()), "{shown}");
        assert!(shown.contains(b.current().id()), "{shown}");
        assert!(shown.contains("store.seal_previous_keys"), "{shown}");
        // Not sealed, another version, damaged.
        assert!(matches!(b.open("plain", AD), Err(SealError::NotSealed)));
        assert!(matches!(
            b.open("sealed:v9:abcd:xyz", AD),
            Err(SealError::UnknownFormat(v)) if v == "v9"
        ));
        assert!(matches!(
            b.open("sealed:v1:nothex!!:AAAA", AD),
            Err(SealError::Malformed(_))
        ));
    }

    #[test]
    fn rotation_keyring_opens_old_and_seals_new() {
        let old = Keyring::generate().unwrap();
        let before = old.seal(b"secret", AD).unwrap();
        let new_key = SealKey::generate().unwrap();
        let rotating = old.rotated_to(new_key.clone()).unwrap();
        assert_eq!(rotating.current(), &new_key);
        assert_eq!(rotating.previous(), std::slice::from_ref(old.current()));
        // Old values still open, and need re-sealing; new ones are sealed under the new key.
        assert_eq!(rotating.open(&before, AD).unwrap().as_slice(), b"secret");
        assert!(rotating.needs_reseal(&before));
        let after = rotating.seal(b"secret", AD).unwrap();
        assert_eq!(key_id_of(&after), Some(new_key.id()));
        assert!(!rotating.needs_reseal(&after));
        // Once the old key is dropped, old values no longer open; new ones do.
        let done = rotating.current_only();
        assert!(matches!(
            done.open(&before, AD),
            Err(SealError::UnknownKey { .. })
        ));
        assert_eq!(done.open(&after, AD).unwrap().as_slice(), b"secret");
        // And the old keyring alone cannot open what the new key sealed.
        assert!(matches!(
            old.open(&after, AD),
            Err(SealError::UnknownKey { .. })
        ));
        // A key twice is refused.
        assert!(matches!(
            old.rotated_to(old.current().clone()),
            Err(SealError::DuplicateKey(_))
        ));
    }

    #[test]
    fn keys_parse_in_either_base64_and_never_print() {
        let k = SealKey::generate().unwrap();
        let url = k.to_base64();
        assert_eq!(url.len(), 43);
        assert_eq!(SealKey::parse(&url).unwrap(), k);
        let standard = base64::engine::general_purpose::STANDARD.encode(k.bytes);
        assert_eq!(SealKey::parse(&format!(" {standard}\n")).unwrap(), k);
        let shown = format!("{k:?} {:?}", Keyring::new(k.clone(), vec![]).unwrap());
        assert!(!shown.contains(url.as_str()), "{shown}");
        assert!(!shown.contains(&standard), "{shown}");
        assert!(shown.contains(k.id()), "{shown}");
        for bad in ["", "short", "not base64 at all!!", &B64.encode([1u8; 31])] {
            let err = SealKey::parse(bad).unwrap_err();
            assert!(matches!(err, SealError::BadKey(_)), "{bad}: {err}");
            assert!(bad.len() < 8 || !err.to_string().contains(bad), "{err}");
        }
    }
}
