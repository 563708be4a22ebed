//! The gate's one-line preamble: parsing, formatting and the strict check of a node directory.
//!
//! Owns the wire text (`NEXUS-GATE/1 <token-hex> <VERB> <arg>\n`, answers `OK\n` or
//! `ERR <reason>\n`), [`Request`], [`GateSocket`] and [`validate_dir`]. Pure: no I/O. It must
//! not compare tokens (the server does, in constant time) nor ever put a token into an error.

use std::fmt;

use zeroize::Zeroizing;

/// The protocol's name and version, the preamble's first word.
pub const MAGIC: &str = "NEXUS-GATE/1";
/// Bytes of a token.
pub const TOKEN_LEN: usize = 32;
/// Longest preamble line, newline included: magic, 64 hex digits, a verb and a socket path
/// fit with room to spare.
pub const MAX_PREAMBLE: usize = 256;
/// Longest answer line, newline included.
pub const MAX_ANSWER: usize = 128;
/// Longest node directory name.
pub const MAX_DIR: usize = 80;

/// Which of a node's two sockets a `CONNECT` reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GateSocket {
    /// The RPC API, `<dir>/api.sock`.
    Api,
    /// The gateway, `<dir>/gateway.sock`.
    Gateway,
}

impl GateSocket {
    /// The socket's file name in the node's directory.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::Api => "api.sock",
            Self::Gateway => "gateway.sock",
        }
    }

    fn from_file_name(s: &str) -> Option<Self> {
        match s {
            "api.sock" => Some(Self::Api),
            "gateway.sock" => Some(Self::Gateway),
            _ => None,
        }
    }
}

/// What a client asks the gate to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Connect a node's socket and splice bytes both ways.
    Connect { dir: String, socket: GateSocket },
    /// Create `<root>/<dir>` (mode 0700); already there is fine.
    Prepare { dir: String },
    /// Remove `<root>/<dir>` and what it holds; absent is fine.
    Remove { dir: String },
}

impl Request {
    /// The node directory the request names.
    pub fn dir(&self) -> &str {
        match self {
            Self::Connect { dir, .. } | Self::Prepare { dir } | Self::Remove { dir } => dir,
        }
    }

    /// The verb, for logs.
    pub fn verb(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "CONNECT",
            Self::Prepare { .. } => "PREPARE",
            Self::Remove { .. } => "REMOVE",
        }
    }

    fn arg(&self) -> String {
        match self {
            Self::Connect { dir, socket } => format!("{dir}/{}", socket.file_name()),
            Self::Prepare { dir } | Self::Remove { dir } => dir.clone(),
        }
    }
}

/// A parsed preamble. `Debug` leaves the token out.
pub struct Preamble {
    pub token: Zeroizing<[u8; TOKEN_LEN]>,
    pub request: Request,
}

impl fmt::Debug for Preamble {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Preamble")
            .field("token", &"<redacted>")
            .field("request", &self.request)
            .finish()
    }
}

/// Why a preamble was refused. Never holds the token; an offending argument is quoted
/// shortened and escaped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreambleError {
    #[error("the preamble is longer than {MAX_PREAMBLE} bytes")]
    TooLong,
    #[error("the preamble is not one line of UTF-8 text")]
    NotText,
    #[error("not a {MAGIC} preamble")]
    BadMagic,
    #[error("the preamble must have 4 fields separated by single spaces")]
    BadShape,
    #[error("the token is not {} hex digits", TOKEN_LEN * 2)]
    BadToken,
    #[error("unknown verb {0:?}")]
    BadVerb(String),
    #[error("bad node directory {0:?}: 1 to {MAX_DIR} of a-z, 0-9 and -")]
    BadDir(String),
    #[error("bad socket {0:?}: <dir>/api.sock or <dir>/gateway.sock")]
    BadSocket(String),
}

/// Shortens and escapes text from the wire for an error or a log line.
fn quoted(s: &str) -> String {
    s.chars().take(MAX_DIR + 20).collect::<String>()
}

/// Checks a node directory name: `[a-z0-9-]{1,80}` (so no `.`, `/`, NUL or space).
pub fn validate_dir(dir: &str) -> Result<(), PreambleError> {
    let ok = !dir.is_empty()
        && dir.len() <= MAX_DIR
        && dir
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(PreambleError::BadDir(quoted(dir)))
    }
}

/// Parses one preamble line (with or without its trailing `\n`).
pub fn parse_preamble(line: &[u8]) -> Result<Preamble, PreambleError> {
    if line.len() > MAX_PREAMBLE {
        return Err(PreambleError::TooLong);
    }
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let text = std::str::from_utf8(line).map_err(|_| PreambleError::NotText)?;
    if text.contains(['\n', '\r', '\0']) {
        return Err(PreambleError::NotText);
    }
    let fields: Vec<&str> = text.split(' ').collect();
    if fields.first() != Some(&MAGIC) {
        return Err(PreambleError::BadMagic);
    }
    let [_, token_hex, verb, arg] = fields[..] else {
        return Err(PreambleError::BadShape);
    };
    let mut token = Zeroizing::new([0u8; TOKEN_LEN]);
    if token_hex.len() != TOKEN_LEN * 2 || hex::decode_to_slice(token_hex, token.as_mut()).is_err()
    {
        return Err(PreambleError::BadToken);
    }
    let request = match verb {
        "CONNECT" => {
            let (dir, file) = arg
                .split_once('/')
                .ok_or_else(|| PreambleError::BadSocket(quoted(arg)))?;
            validate_dir(dir)?;
            let socket = GateSocket::from_file_name(file)
                .ok_or_else(|| PreambleError::BadSocket(quoted(arg)))?;
            Request::Connect {
                dir: dir.to_owned(),
                socket,
            }
        }
        "PREPARE" => {
            validate_dir(arg)?;
            Request::Prepare {
                dir: arg.to_owned(),
            }
        }
        "REMOVE" => {
            validate_dir(arg)?;
            Request::Remove {
                dir: arg.to_owned(),
            }
        }
        other => return Err(PreambleError::BadVerb(quoted(other))),
    };
    Ok(Preamble { token, request })
}

/// The preamble line a client sends, `\n` included. Holds the token: never log it.
pub fn format_preamble(token: &[u8; TOKEN_LEN], request: &Request) -> Zeroizing<String> {
    Zeroizing::new(format!(
        "{MAGIC} {} {} {}\n",
        Zeroizing::new(hex::encode(token)).as_str(),
        request.verb(),
        request.arg()
    ))
}

/// The gate's answer, parsed by the client: `Ok(())` for `OK`, else the reason.
pub fn parse_answer(line: &[u8]) -> Result<(), String> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    match line {
        b"OK" => Ok(()),
        _ => match line.strip_prefix(b"ERR ") {
            Some(reason) => Err(String::from_utf8_lossy(reason).into_owned()),
            None => Err(format!(
                "not a gate answer: {:?}",
                String::from_utf8_lossy(&line[..line.len().min(40)])
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: [u8; TOKEN_LEN] = [0xab; TOKEN_LEN];

    #[test]
    fn preambles_round_trip() {
        for request in [
            Request::Connect {
                dir: "acme-0".into(),
                socket: GateSocket::Api,
            },
            Request::Connect {
                dir: "n".into(),
                socket: GateSocket::Gateway,
            },
            Request::Prepare {
                dir: "a-b-9".into(),
            },
            Request::Remove {
                dir: "x".repeat(MAX_DIR),
            },
        ] {
            let line = format_preamble(&TOKEN, &request);
            assert!(line.len() <= MAX_PREAMBLE, "{}", line.len());
            let p = parse_preamble(line.as_bytes()).unwrap();
            assert_eq!(*p.token, TOKEN);
            assert_eq!(p.request, request);
            assert!(!format!("{p:?}").contains("abab"), "Debug shows no token");
        }
    }

    #[test]
    fn bad_preambles_are_refused_without_echoing_the_token() {
        let t = hex::encode(TOKEN);
        let cases: Vec<(String, PreambleError)> = vec![
            (
                format!("NEXUS-GATE/2 {t} PREPARE a\n"),
                PreambleError::BadMagic,
            ),
            ("GET / HTTP/1.1\n".into(), PreambleError::BadMagic),
            (
                format!("NEXUS-GATE/1 {t} PREPARE\n"),
                PreambleError::BadShape,
            ),
            (
                format!("NEXUS-GATE/1 {t}  PREPARE a\n"),
                PreambleError::BadShape,
            ),
            (
                format!("NEXUS-GATE/1 {t} PREPARE a extra\n"),
                PreambleError::BadShape,
            ),
            (
                format!("NEXUS-GATE/1 {} PREPARE a\n", &t[..62]),
                PreambleError::BadToken,
            ),
            (
                format!("NEXUS-GATE/1 {}zz PREPARE a\n", &t[..62]),
                PreambleError::BadToken,
            ),
            (
                format!("NEXUS-GATE/1 {t} prepare a\n"),
                PreambleError::BadVerb("prepare".into()),
            ),
            (
                format!("NEXUS-GATE/1 {t} CONNECT a/other.sock\n"),
                PreambleError::BadSocket("a/other.sock".into()),
            ),
            (
                format!("NEXUS-GATE/1 {t} CONNECT a\n"),
                PreambleError::BadSocket("a".into()),
            ),
            (
                format!("NEXUS-GATE/1 {t} CONNECT ../api.sock\n"),
                PreambleError::BadDir("..".into()),
            ),
            (
                format!("NEXUS-GATE/1 {t} CONNECT a/b/api.sock\n"),
                PreambleError::BadSocket("a/b/api.sock".into()),
            ),
            (
                format!("NEXUS-GATE/1 {t} REMOVE ..\n"),
                PreambleError::BadDir("..".into()),
            ),
            (format!("NEXUS-GATE/1 {t} x y\r\n"), PreambleError::NotText),
            ("x".repeat(MAX_PREAMBLE + 1), PreambleError::TooLong),
        ];
        for (line, want) in cases {
            let err = parse_preamble(line.as_bytes()).unwrap_err();
            assert_eq!(err, want, "{line:?}");
            assert!(!err.to_string().contains(&t), "{err}");
        }
        assert_eq!(
            parse_preamble(b"NEXUS-GATE/1 \xff PREPARE a").unwrap_err(),
            PreambleError::NotText
        );
    }

    #[test]
    fn node_directories_are_checked_strictly() {
        for ok in ["a", "acme-0", "0", "-", &"z".repeat(MAX_DIR)] {
            assert!(validate_dir(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a.b",
            "a/b",
            "/a",
            "A",
            "a_b",
            "a b",
            "a\0",
            "é",
            &"z".repeat(MAX_DIR + 1),
        ] {
            assert!(
                matches!(validate_dir(bad), Err(PreambleError::BadDir(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn answers_parse() {
        assert_eq!(parse_answer(b"OK\n"), Ok(()));
        assert_eq!(
            parse_answer(b"ERR unauthorized\n"),
            Err("unauthorized".into())
        );
        assert!(parse_answer(b"HTTP/1.1 400\n")
            .unwrap_err()
            .contains("not a gate"));
    }
}
