//! Content identifiers (CIDs) from outside: checked before they reach the store or a node.
//!
//! Owns [`Cid`], a CID as text that has been parsed (a CIDv1 in kubo's base32 form): CIDv0 (base58btc `Qm…`, a sha2-256
//! multihash) or CIDv1 in the multibases kubo prints and accepts most (`b`/`B` base32, `z`
//! base58btc, `f`/`F` base16, `k` base36 is refused), with its version, codec and multihash
//! decoded and their lengths checked. A leaf value; it must not talk to nodes nor decide
//! anything about pins.

use std::fmt;

/// Longest CID text accepted (a sha2-512 CIDv1 in base16 is about 140 characters).
pub const MAX_CID_LEN: usize = 256;

/// A parsed CID, as text: a CIDv0 as given, a CIDv1 in base32 (kubo's form).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cid(String);

/// Why a text is not a CID. Quotes at most a prefix of the input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{shown}` is not a valid CID: {why}")]
pub struct CidError {
    shown: String,
    why: &'static str,
}

fn err(text: &str, why: &'static str) -> CidError {
    let mut shown: String = text.chars().take(64).collect();
    if text.chars().count() > 64 {
        shown.push('…');
    }
    CidError { shown, why }
}

/// An unsigned LEB128 varint at the start of `b`: (value, bytes read).
fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, byte) in b.iter().enumerate().take(9) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

impl Cid {
    pub fn parse(text: &str) -> Result<Self, CidError> {
        if text.is_empty() {
            return Err(err(text, "empty"));
        }
        if text.len() > MAX_CID_LEN {
            return Err(err(text, "too long"));
        }
        if text.len() == 46 && text.starts_with("Qm") {
            let bytes = bs58::decode(text)
                .into_vec()
                .map_err(|_| err(text, "not base58btc"))?;
            if bytes.len() != 34 || bytes[0] != 0x12 || bytes[1] != 0x20 {
                return Err(err(text, "a CIDv0 must be a sha2-256 multihash"));
            }
            return Ok(Self(text.to_string()));
        }
        let (prefix, rest) = text.split_at(1);
        let bytes = match prefix {
            "b" => data_encoding::BASE32_NOPAD.decode(rest.to_ascii_uppercase().as_bytes()),
            "B" => data_encoding::BASE32_NOPAD.decode(rest.as_bytes()),
            "f" => data_encoding::HEXLOWER.decode(rest.as_bytes()),
            "F" => data_encoding::HEXUPPER.decode(rest.as_bytes()),
            "z" => bs58::decode(rest)
                .into_vec()
                .map_err(|_| data_encoding::DecodeError {
                    position: 0,
                    kind: data_encoding::DecodeKind::Symbol,
                }),
            _ => return Err(err(text, "unknown multibase (use base32 `b…` or `Qm…`)")),
        }
        .map_err(|_| err(text, "does not decode in its multibase"))?;
        let (version, n1) = varint(&bytes).ok_or_else(|| err(text, "bad version"))?;
        if version != 1 {
            return Err(err(text, "unsupported CID version"));
        }
        let (_codec, n2) = varint(&bytes[n1..]).ok_or_else(|| err(text, "bad codec"))?;
        let mh = &bytes[n1 + n2..];
        let (_code, n3) = varint(mh).ok_or_else(|| err(text, "bad multihash code"))?;
        let (len, n4) = varint(&mh[n3..]).ok_or_else(|| err(text, "bad multihash length"))?;
        if mh.len() - n3 - n4 != usize::try_from(len).unwrap_or(usize::MAX) {
            return Err(err(text, "multihash length does not match its digest"));
        }
        // The form kubo prints a CIDv1 in (base32, lower case), so that what nodes list
        // (`pin/ls`) compares equal to what was asked for.
        let canonical = format!(
            "b{}",
            data_encoding::BASE32_NOPAD
                .encode(&bytes)
                .to_ascii_lowercase()
        );
        Ok(Self(canonical))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_kubo_prints() {
        for ok in [
            "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
            "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
            "zb2rhe5P4gXftAwvA4eXQ5HJwsER2owDyS9sKaQRRVQPn93bA",
            "f01551220b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9",
        ] {
            assert!(Cid::parse(ok).is_ok(), "{ok}: {:?}", Cid::parse(ok));
        }
    }

    #[test]
    fn refuses_what_is_not_one() {
        for bad in [
            "",
            "hello",
            "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbd0",
            "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzd",
            "bafy!",
            "k51qzi5uqu5dlvj2baxnqndepeb86cbk3ng7n3i46uzyxzyqj2xjonzllnv0v8",
        ] {
            let e = Cid::parse(bad).unwrap_err();
            assert!(e.to_string().contains("not a valid CID"), "{e}");
        }
        // A CIDv1 in another multibase becomes kubo's base32 form.
        let hex =
            Cid::parse("f01551220b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9")
                .unwrap();
        assert!(hex.as_str().starts_with("bafkrei"), "{hex}");
        assert_eq!(Cid::parse(hex.as_str()).unwrap(), hex);
        let long = "b".repeat(300);
        assert!(Cid::parse(&long).unwrap_err().to_string().contains('…'));
    }
}
