//! The RPC allow-list: which kubo RPC commands a tenant token may call, and which gateway paths
//! are served.
//!
//! Owns the default allow and deny lists, the command-path parsing of `/api/v0/<command>` and
//! the decision rule. Pure functions, no I/O. It must not authenticate anyone or look at the
//! registry; the caller passes the network's own `api_allow` / `api_deny`.
//!
//! # The rule
//!
//! A request path is first reduced to a *command path*: it must be `/api/v0/<command>` with an
//! optional single trailing slash, where `<command>` is one or more segments of lowercase ASCII
//! letters, digits and `-` joined by `/` (kubo's command names; the one rule is
//! [`crate::access::is_command_path`], which also checks each network's lists). Anything else (other prefixes
//! such as `/debug/…`, `/webui`, `/logs`, upper case, percent-encoding, empty segments) is
//! denied outright. The forwarded path is then exactly `/api/v0/<command>`.
//!
//! A rule `r` *matches* a command `c` when `c == r` or `c` starts with `r/` (a rule names a
//! command and all its subcommands). Every matching rule from four lists is ranked by
//! (number of segments, tier), tiers from lowest to highest: default allow, default deny,
//! network `api_allow`, network `api_deny`. The highest-ranked rule decides: the most specific
//! rule wins, and on equal specificity the network beats the defaults and deny beats allow.
//! Two extra constraints: no matching rule → deny; and if any network `api_deny` rule matches,
//! a default-allow winner is overridden to deny (the network's deny always beats the defaults'
//! allow).
//!
//! So `api_allow = ["key/list"]` opens `key/list` while `key/export` stays denied by default;
//! `api_allow = ["key"]` opens `key/gen` and `key/list`, but not `key/export`, `key/import` or
//! `key/rm`, which are more specific default denies; `api_allow = ["key/export"]` does open it
//! (equal specificity, the network wins); `api_deny = ["pin"]` closes every `pin/*` command.

//!
//! # Roles
//!
//! On top of the allow-list, each user has a role on the network ([`Role`]): [`ROLES`] says
//! the least role each command needs (most specific rule wins; a command no rule names —
//! anything a network's `api_allow` opens beyond the defaults — needs `admin`). A writer's MFS
//! writes (`files/*` but `ls`, `read`, `stat`) must stay under `/<user>` ([`Scope::OwnDir`]).
//! No role lifts a default deny: roles only ever narrow what the allow-list lets through.
//! [`PIN_ROLES`] is the same table for the Pinning Service API's endpoints.

use crate::access::{is_command_path, Role};

/// Where a role's permission for a command applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Wherever the command's arguments point.
    Anywhere,
    /// For a writer, only MFS paths under `/<user>` (an admin: anywhere).
    OwnDir,
}

/// The least role each command needs, and where (a rule covers its subcommands; the most
/// specific rule wins). Commands no rule names need `admin`. The table of docs/delegator.md.
pub const ROLES: &[(&str, Role, Scope)] = &[
    // reader: the content and the node's identity, read-only.
    ("cat", Role::Reader, Scope::Anywhere),
    ("get", Role::Reader, Scope::Anywhere),
    ("ls", Role::Reader, Scope::Anywhere),
    ("id", Role::Reader, Scope::Anywhere),
    ("version", Role::Reader, Scope::Anywhere),
    ("dag/get", Role::Reader, Scope::Anywhere),
    ("dag/stat", Role::Reader, Scope::Anywhere),
    ("dag/resolve", Role::Reader, Scope::Anywhere),
    ("dag/export", Role::Reader, Scope::Anywhere),
    ("block/get", Role::Reader, Scope::Anywhere),
    ("block/stat", Role::Reader, Scope::Anywhere),
    ("object/stat", Role::Reader, Scope::Anywhere),
    ("resolve", Role::Reader, Scope::Anywhere),
    ("name/resolve", Role::Reader, Scope::Anywhere),
    ("pin/ls", Role::Reader, Scope::Anywhere),
    ("files/ls", Role::Reader, Scope::Anywhere),
    ("files/read", Role::Reader, Scope::Anywhere),
    ("files/stat", Role::Reader, Scope::Anywhere),
    ("swarm/peers", Role::Reader, Scope::Anywhere),
    ("repo/stat", Role::Reader, Scope::Anywhere),
    // writer: adding and pinning content; the MFS under /<user>.
    ("add", Role::Writer, Scope::Anywhere),
    ("pin/add", Role::Writer, Scope::Anywhere),
    ("pin/update", Role::Writer, Scope::Anywhere),
    ("dag/put", Role::Writer, Scope::Anywhere),
    ("dag/import", Role::Writer, Scope::Anywhere),
    ("block/put", Role::Writer, Scope::Anywhere),
    ("files", Role::Writer, Scope::OwnDir),
    // admin: removing shared data, the node's name, what others fetch.
    ("pin/rm", Role::Admin, Scope::Anywhere),
    ("block/rm", Role::Admin, Scope::Anywhere),
    ("name/publish", Role::Admin, Scope::Anywhere),
    ("stats", Role::Admin, Scope::Anywhere),
];

/// The least role each Pinning Service API endpoint needs (`<net>.pins.<domain>`). Replacing or
/// removing a pin another user added needs [`OTHERS_PINS`] besides. The table of
/// docs/pinning.md.
pub const PIN_ROLES: &[(&str, &str, Role)] = &[
    ("GET", "/pins", Role::Reader),
    ("GET", "/pins/{requestid}", Role::Reader),
    ("POST", "/pins", Role::Writer),
    ("POST", "/pins/{requestid}", Role::Writer),
    ("DELETE", "/pins/{requestid}", Role::Writer),
];

/// The role that may replace or remove pins other users added.
pub const OTHERS_PINS: Role = Role::Admin;

/// The least role of a Pinning Service API call (`item`: on `/pins/{requestid}`); `None`: no
/// such endpoint.
pub fn pin_role(method: &str, item: bool) -> Option<Role> {
    let path = if item { "/pins/{requestid}" } else { "/pins" };
    PIN_ROLES
        .iter()
        .find(|(m, p, _)| *m == method && *p == path)
        .map(|&(_, _, role)| role)
}

/// The least role `command` needs and where, by [`ROLES`] (unnamed commands: admin).
pub fn required_role(command: &str) -> (Role, Scope) {
    ROLES
        .iter()
        .filter(|(rule, _, _)| matches(rule, command))
        .max_by_key(|(rule, _, _)| rule.split('/').count())
        .map(|&(_, role, scope)| (role, scope))
        .unwrap_or((Role::Admin, Scope::Anywhere))
}

/// Checks that `role` may call `command` with `query` (the raw query string) as `user`.
pub fn check_role(
    command: &str,
    query: Option<&str>,
    user: &str,
    role: Role,
) -> Result<(), PolicyError> {
    let (needed, scope) = required_role(command);
    if role < needed {
        return Err(PolicyError::Role {
            command: command.to_owned(),
            needed,
            role,
        });
    }
    if scope == Scope::OwnDir && role < Role::Admin {
        let args = query_args(query.unwrap_or(""))?;
        // `files/cp` reads its sources from anywhere; only the destination is written.
        let written: &[String] = match (command, args.split_last()) {
            ("files/cp", Some((dest, _))) => std::slice::from_ref(dest),
            _ => &args,
        };
        if written.is_empty() || !written.iter().all(|p| under_own_dir(p, user)) {
            return Err(PolicyError::OutsideOwnDir(user.to_owned()));
        }
    }
    Ok(())
}

/// Whether `path` is `/<user>` or below it, with no `.`/`..`/empty segment.
fn under_own_dir(path: &str, user: &str) -> bool {
    if user.contains('/') {
        return false;
    }
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let segments: Vec<&str> = rest.split('/').collect();
    segments[0] == user
        && segments.iter().enumerate().skip(1).all(|(i, s)| {
            let last = i + 1 == segments.len();
            !(*s == "." || *s == ".." || (s.is_empty() && !last))
        })
}

/// Every `arg` of a query string, decoded as kubo decodes it (Go's `url.ParseQuery`: `+` is a
/// space, `%XX` a byte). A malformed escape or non-UTF-8 refuses the request.
fn query_args(query: &str) -> Result<Vec<String>, PolicyError> {
    let mut out = Vec::new();
    for pair in query.split(['&', ';']) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if decode(k)? == "arg" {
            out.push(decode(v)?);
        }
    }
    Ok(out)
}

fn decode(s: &str) -> Result<String, PolicyError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or(PolicyError::BadQuery)?;
                out.push(hex);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| PolicyError::BadQuery)
}

/// Commands a tenant may call unless the network says otherwise: working with content.
pub const DEFAULT_ALLOW: &[&str] = &[
    "add",
    "cat",
    "get",
    "ls",
    "dag",
    "block",
    "pin",
    "files",
    "name",
    "id",
    "version",
    "swarm/peers",
    "stats",
    "repo/stat",
];

/// Commands that take a node over or leak its secrets. (`pin/remote/service` stores third-party
/// credentials in the node's config, so it is denied as well.)
pub const DEFAULT_DENY: &[&str] = &[
    "config",
    "shutdown",
    "key/export",
    "key/import",
    "key/rm",
    "swarm/connect",
    "swarm/disconnect",
    "bootstrap/add",
    "bootstrap/rm",
    "p2p",
    "log",
    "repo/gc",
    "diag/profile",
    "pin/remote/service",
];

/// RPC commands that only read, so a request that failed before an answer may be retried on
/// another replica (see the proxy's fail-over).
const READ_ONLY: &[&str] = &[
    "id",
    "version",
    "cat",
    "get",
    "ls",
    "swarm/peers",
    "stats",
    "repo/stat",
    "pin/ls",
    "block/get",
    "block/stat",
    "dag/get",
    "dag/stat",
    "files/ls",
    "files/read",
    "files/stat",
    "name/resolve",
];

/// Why an RPC path is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("only kubo RPC commands under /api/v0/ are served")]
    NotRpc,
    #[error("RPC command `{0}` is not allowed for tenant tokens on this network")]
    Denied(String),
    #[error("RPC command `{command}` needs the {needed} role; this token's is {role}")]
    Role {
        command: String,
        needed: Role,
        role: Role,
    },
    #[error("a writer changes the MFS only under /{0}")]
    OutsideOwnDir(String),
    #[error("malformed query string")]
    BadQuery,
}

/// Extracts the command of `/api/v0/<command>[/]`, or `None` when the path is not a plain
/// kubo command path.
pub fn rpc_command(path: &str) -> Option<&str> {
    let c = path.strip_prefix("/api/v0/")?;
    let c = c.strip_suffix('/').unwrap_or(c);
    is_command_path(c).then_some(c)
}

/// Whether `rule` names `command` or one of its parents (whole segments).
pub(crate) fn matches(rule: &str, command: &str) -> bool {
    command
        .strip_prefix(rule)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The decision for one command (see the module comment for the rule).
pub fn command_allowed(command: &str, net_allow: &[String], net_deny: &[String]) -> bool {
    // (segments, tier, allow?) of the best matching rule.
    let mut best: Option<(usize, u8, bool)> = None;
    let mut net_deny_matched = false;
    let mut consider = |rule: &str, tier: u8, allow: bool| {
        if matches(rule, command) {
            let key = (rule.split('/').count(), tier, allow);
            if best.is_none_or(|b| (key.0, key.1) > (b.0, b.1)) {
                best = Some(key);
            }
        }
    };
    for r in DEFAULT_ALLOW {
        consider(r, 0, true);
    }
    for r in DEFAULT_DENY {
        consider(r, 1, false);
    }
    for r in net_allow {
        consider(r, 2, true);
    }
    for r in net_deny {
        if matches(r, command) {
            net_deny_matched = true;
        }
        consider(r, 3, false);
    }
    match best {
        None => false,
        Some((_, 0, true)) if net_deny_matched => false,
        Some((_, _, allow)) => allow,
    }
}

/// Checks an RPC request path; returns the command when it may be forwarded.
pub fn check_rpc<'a>(
    path: &'a str,
    net_allow: &[String],
    net_deny: &[String],
) -> Result<&'a str, PolicyError> {
    let command = rpc_command(path).ok_or(PolicyError::NotRpc)?;
    if command_allowed(command, net_allow, net_deny) {
        Ok(command)
    } else {
        Err(PolicyError::Denied(command.to_owned()))
    }
}

/// Whether a command only reads (safe to retry on another replica).
pub fn read_only(command: &str) -> bool {
    READ_ONLY.iter().any(|r| matches(r, command))
}

/// Whether a gateway path names an IPNS name that needs DNS to resolve (`/ipns/<name>` whose
/// name has a dot: DNSLink), rather than a key.
pub fn needs_dns(path: &str) -> bool {
    path.strip_prefix("/ipns/")
        .and_then(|rest| rest.split('/').next())
        .is_some_and(|name| name.contains('.'))
}

/// Gateway paths the delegator forwards: content under `/ipfs/` and `/ipns/` only (not the
/// gateway port's other handlers).
pub fn gateway_path_allowed(path: &str) -> bool {
    path.starts_with("/ipfs/") || path.starts_with("/ipns/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    fn allowed(path: &str, allow: &[&str], deny: &[&str]) -> bool {
        check_rpc(path, &v(allow), &v(deny)).is_ok()
    }

    #[test]
    fn roles_narrow_the_allow_list() {
        use Role::*;
        // Every row: its role passes, the role below is refused.
        for &(rule, role, scope) in ROLES {
            let q = (scope == Scope::OwnDir).then_some("arg=/alice/x");
            assert!(check_role(rule, q, "alice", role).is_ok(), "{rule} {role}");
            if role > Reader {
                let below = if role == Admin { Writer } else { Reader };
                assert!(
                    matches!(
                        check_role(rule, q, "alice", below),
                        Err(PolicyError::Role { .. })
                    ),
                    "{rule} as {below}"
                );
            }
        }
        // Subcommands follow their rule; unnamed commands (opened by api_allow) need admin.
        assert_eq!(required_role("stats/bitswap"), (Admin, Scope::Anywhere));
        assert_eq!(required_role("pin/ls"), (Reader, Scope::Anywhere));
        assert_eq!(required_role("pin/add"), (Writer, Scope::Anywhere));
        assert_eq!(required_role("key/list"), (Admin, Scope::Anywhere));
        assert_eq!(required_role("files/ls"), (Reader, Scope::Anywhere));
        assert_eq!(required_role("files/rm"), (Writer, Scope::OwnDir));
        // A writer's MFS: under /<user> only; an admin's: anywhere.
        for q in [
            "arg=/alice",
            "arg=/alice/",
            "arg=/alice/a/b.txt&create=true",
            "arg=%2Falice%2Fx",
        ] {
            assert!(
                check_role("files/write", Some(q), "alice", Writer).is_ok(),
                "{q}"
            );
        }
        for q in [
            "",
            "arg=/",
            "arg=/bob/x",
            "arg=/alicex/y",
            "arg=/alice/../bob",
            "arg=/alice//x",
            "arg=alice/x",
            "arg=/alice/x&arg=/bob/y",
            "arg=%zz",
        ] {
            assert!(
                check_role("files/rm", Some(q), "alice", Writer).is_err(),
                "{q}"
            );
        }
        assert!(check_role("files/rm", Some("arg=/bob/x"), "alice", Admin).is_ok());
        // files/cp: sources from anywhere, the destination under /<user>.
        let cp = "arg=/ipfs/bafy&arg=/alice/copy";
        assert!(check_role("files/cp", Some(cp), "alice", Writer).is_ok());
        let cp = "arg=/alice/copy&arg=/bob/x";
        assert!(check_role("files/cp", Some(cp), "alice", Writer).is_err());
        // A user id with a slash has no MFS directory.
        assert!(check_role("files/mkdir", Some("arg=/a/b"), "a/b", Writer).is_err());
    }

    #[test]
    fn defaults() {
        for p in [
            "/api/v0/add",
            "/api/v0/cat",
            "/api/v0/cat/",
            "/api/v0/pin/ls",
            "/api/v0/pin/add",
            "/api/v0/files/write",
            "/api/v0/dag/put",
            "/api/v0/swarm/peers",
            "/api/v0/repo/stat",
            "/api/v0/stats/bw",
            "/api/v0/id",
            "/api/v0/version",
        ] {
            assert!(allowed(p, &[], &[]), "{p}");
        }
        for p in [
            "/api/v0/config",
            "/api/v0/config/show",
            "/api/v0/config/replace",
            "/api/v0/shutdown",
            "/api/v0/key/export",
            "/api/v0/key/import",
            "/api/v0/key/rm",
            "/api/v0/key/list",
            "/api/v0/swarm/connect",
            "/api/v0/swarm/disconnect",
            "/api/v0/swarm/peering/add",
            "/api/v0/bootstrap/add",
            "/api/v0/bootstrap/rm/all",
            "/api/v0/p2p/listen",
            "/api/v0/log/level",
            "/api/v0/repo/gc",
            "/api/v0/diag/profile",
            "/api/v0/pin/remote/service/add",
            "/api/v0/addx",
            "/api/v0/",
            "/api/v0",
            "/api/v1/add",
            "/debug/pprof",
            "/debug/metrics/prometheus",
            "/webui",
            "/logs",
            "/api/v0/Config/show",
            "/api/v0/con%66ig/show",
            "/api/v0/pin//ls",
            "/api/v0/add//",
        ] {
            assert!(!allowed(p, &[], &[]), "{p}");
        }
    }

    #[test]
    fn network_rules() {
        // A specific allow opens one command; the default denies around it stay.
        assert!(allowed("/api/v0/key/list", &["key/list"], &[]));
        assert!(!allowed("/api/v0/key/export", &["key/list"], &[]));
        assert!(allowed("/api/v0/key/gen", &["key"], &[]));
        assert!(!allowed("/api/v0/key/export", &["key"], &[]));
        // Equal specificity: the network wins over the defaults.
        assert!(allowed("/api/v0/key/export", &["key/export"], &[]));
        assert!(allowed("/api/v0/config/show", &["config"], &[]));
        // Network deny beats default allow, at any specificity.
        assert!(!allowed("/api/v0/pin/ls", &[], &["pin"]));
        assert!(!allowed("/api/v0/add", &[], &["add"]));
        assert!(!allowed("/api/v0/stats/bw", &[], &["stats/bw"]));
        assert!(allowed("/api/v0/stats/repo", &[], &["stats/bw"]));
        // Network allow vs network deny: most specific wins, deny on ties.
        assert!(allowed("/api/v0/pin/ls", &["pin/ls"], &["pin"]));
        assert!(!allowed("/api/v0/pin/add", &["pin/ls"], &["pin"]));
        assert!(!allowed("/api/v0/dht/query", &["dht"], &["dht"]));
        // Rules match whole segments only.
        assert!(!allowed("/api/v0/pinx", &[], &[]));
        assert!(!allowed("/api/v0/keys", &["key"], &[]));
        assert_eq!(
            check_rpc("/api/v0/config/show", &[], &[]),
            Err(PolicyError::Denied("config/show".into()))
        );
        assert_eq!(check_rpc("/webui", &[], &[]), Err(PolicyError::NotRpc));
    }

    #[test]
    fn read_only_and_gateway() {
        assert!(read_only("cat") && read_only("pin/ls") && !read_only("pin/add"));
        assert!(!read_only("add") && !read_only("shutdown"));
        assert!(gateway_path_allowed("/ipfs/Qm"));
        assert!(!gateway_path_allowed("/api/v0/id") && !gateway_path_allowed("/ipfs"));
    }
}
