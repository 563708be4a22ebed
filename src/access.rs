//! Who may use a network through the delegator, and what they may call: [`Access`].
//!
//! Owns the access settings of one network (its users, whether its gateway is public and serves
//! `/ipns/` DNS names, its CORS origins, its RPC allow/deny additions), their validation, and the one rule for what a kubo
//! RPC command path looks like ([`is_command_path`]), which both a network's settings and the
//! delegator's request check use. A leaf: every layer (API, orchestrator, store, registry,
//! delegator) imports it; it imports nothing of nexus and does no I/O. It must not decide
//! whether a request is allowed (the delegator's policy does).

/// Longest kubo RPC command path nexus accepts, in a network's settings or in a request
/// (kubo's longest command is well under half of it).
pub const MAX_COMMAND_LEN: usize = 64;

/// Most entries in `api_allow` or `api_deny`.
pub const MAX_COMMANDS: usize = 256;

/// What a user may do on a network, lowest first: `reader` < `writer` < `admin`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// The gateway and read-only RPC.
    Reader,
    /// Reader plus adding and pinning content.
    #[default]
    Writer,
    /// Writer plus removing shared data, publishing the node's name, statistics.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }

    /// `reader`, `writer` or `admin` (exactly, lower case).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "reader" => Some(Role::Reader),
            "writer" => Some(Role::Writer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A network's access settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// Users allowed through the delegator, each `id` (a writer) or `id:role` (see
    /// [`split_user`]).
    pub users: Vec<String>,
    /// Whether the gateway is served without a token.
    pub gateway_public: bool,
    /// Whether a public gateway serves `/ipns/<name>` for names that need DNS (DNSLink), which
    /// makes the node look names up for anonymous clients. Off: refused on a public gateway (a
    /// gateway that needs a token serves them to members either way).
    pub ipns_dns: bool,
    /// CORS origins allowed on the delegator for this network.
    pub allowed_origins: Vec<String>,
    /// kubo RPC commands tenants may call beyond the delegator's default allow-list.
    pub api_allow: Vec<String>,
    /// kubo RPC commands tenants may not call, on top of the default deny-list.
    pub api_deny: Vec<String>,
}

/// Changes to a network's [`Access`]; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessUpdate {
    pub users: Option<Vec<String>>,
    pub gateway_public: Option<bool>,
    pub ipns_dns: Option<bool>,
    pub allowed_origins: Option<Vec<String>>,
    pub api_allow: Option<Vec<String>>,
    pub api_deny: Option<Vec<String>>,
}

/// Why access settings are refused; the message says what is allowed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("user `{0}` is not allowed: write ID or ID:ROLE (ROLE reader, writer or admin); an id is 1–128 printable characters, no commas or colons")]
    User(String),
    #[error("user `{0}` is listed twice")]
    DuplicateUser(String),
    #[error("CORS origin `{0}` must be `*` or start with http:// or https://")]
    Origin(String),
    #[error("{field}: at most {MAX_COMMANDS} commands")]
    TooManyCommands { field: &'static str },
    #[error("{field}: `{command}` is not a kubo RPC command path; write it like `pin/ls` or `key` (no /api/v0/ prefix)")]
    Command {
        field: &'static str,
        command: String,
    },
}

impl Access {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), AccessError> {
        check_users(&self.users)?;
        check_origins(&self.allowed_origins)?;
        check_commands("api_allow", &self.api_allow)?;
        check_commands("api_deny", &self.api_deny)
    }

    /// Applies `changes`, which the caller has checked ([`AccessUpdate::validate`]) before
    /// changing anything.
    pub fn apply(&mut self, changes: AccessUpdate) {
        let AccessUpdate {
            users,
            gateway_public,
            ipns_dns,
            allowed_origins,
            api_allow,
            api_deny,
        } = changes;
        if let Some(u) = users {
            self.users = u;
        }
        if let Some(g) = gateway_public {
            self.gateway_public = g;
        }
        if let Some(d) = ipns_dns {
            self.ipns_dns = d;
        }
        if let Some(o) = allowed_origins {
            self.allowed_origins = o;
        }
        if let Some(c) = api_allow {
            self.api_allow = c;
        }
        if let Some(c) = api_deny {
            self.api_deny = c;
        }
    }
}

impl AccessUpdate {
    /// Checks the fields that are set.
    pub fn validate(&self) -> Result<(), AccessError> {
        if let Some(u) = &self.users {
            check_users(u)?;
        }
        if let Some(o) = &self.allowed_origins {
            check_origins(o)?;
        }
        if let Some(c) = &self.api_allow {
            check_commands("api_allow", c)?;
        }
        if let Some(c) = &self.api_deny {
            check_commands("api_deny", c)?;
        }
        Ok(())
    }
}

/// The first `n` characters of `s`, for an error message.
fn clip(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// A users entry as `(id, role)`: `alice:admin` → (`alice`, admin); `alice` → (`alice`,
/// writer). Lenient for records written before roles existed: a suffix after the last `:` that
/// is not a role name is part of the id (new entries are checked strictly by [`Access::validate`]).
pub fn split_user(entry: &str) -> (&str, Role) {
    match entry.rsplit_once(':') {
        Some((id, role)) => match Role::parse(role) {
            Some(r) => (id, r),
            None => (entry, Role::default()),
        },
        None => (entry, Role::default()),
    }
}

impl Access {
    /// Whether a gateway request for `/ipns/<name>` whose name needs DNS is refused: only on a
    /// public gateway that has not enabled them ([`Access::ipns_dns`]).
    pub fn refuses_ipns_dns(&self) -> bool {
        self.gateway_public && !self.ipns_dns
    }

    /// The role of `user` on this network, or `None` when it is not a user of it.
    pub fn role_of(&self, user: &str) -> Option<Role> {
        self.users.iter().find_map(|e| {
            let (id, role) = split_user(e);
            (id == user).then_some(role)
        })
    }
}

fn check_users(users: &[String]) -> Result<(), AccessError> {
    let mut seen = std::collections::HashSet::new();
    for u in users {
        let id = match u.split_once(':') {
            Some((id, role)) if Role::parse(role).is_some() => id,
            Some(_) => return Err(AccessError::User(clip(u, 40))),
            None => u.as_str(),
        };
        if id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control() || c == ',') {
            return Err(AccessError::User(clip(u, 40)));
        }
        if !seen.insert(id) {
            return Err(AccessError::DuplicateUser(clip(id, 40)));
        }
    }
    Ok(())
}

fn check_origins(origins: &[String]) -> Result<(), AccessError> {
    for o in origins {
        let ok = o == "*"
            || ((o.starts_with("http://") || o.starts_with("https://"))
                && !o.contains(char::is_whitespace)
                && o.len() <= 255);
        if !ok {
            return Err(AccessError::Origin(clip(o, 60)));
        }
    }
    Ok(())
}

fn check_commands(field: &'static str, commands: &[String]) -> Result<(), AccessError> {
    if commands.len() > MAX_COMMANDS {
        return Err(AccessError::TooManyCommands { field });
    }
    match commands.iter().find(|c| !is_command_path(c)) {
        Some(c) => Err(AccessError::Command {
            field,
            command: clip(c, 60),
        }),
        None => Ok(()),
    }
}

/// Whether `c` is a kubo RPC command path such as `pin/ls` or `key`: one or more segments of
/// lowercase ASCII letters, digits and `-` joined by `/`, at most [`MAX_COMMAND_LEN`] bytes.
pub fn is_command_path(c: &str) -> bool {
    !c.is_empty()
        && c.len() <= MAX_COMMAND_LEN
        && c.split('/').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn users_carry_roles_and_old_entries_are_writers() {
        let a = Access {
            users: strings(&["alice", "bob:reader", "carol:admin", "dave:writer"]),
            ..Access::default()
        };
        assert!(a.validate().is_ok());
        assert_eq!(a.role_of("alice"), Some(Role::Writer));
        assert_eq!(a.role_of("bob"), Some(Role::Reader));
        assert_eq!(a.role_of("carol"), Some(Role::Admin));
        assert_eq!(a.role_of("dave"), Some(Role::Writer));
        assert_eq!(a.role_of("bob:reader"), None);
        assert_eq!(a.role_of("mallory"), None);
        // A record from before roles with a colon in an id reads as that id, a writer.
        assert_eq!(split_user("x:y"), ("x:y", Role::Writer));
        for bad in [
            &["alice:root"][..],
            &["alice:"],
            &[":admin"],
            &["a:b:admin"],
            &["alice", "alice:admin"],
        ] {
            let a = Access {
                users: strings(bad),
                ..Access::default()
            };
            assert!(a.validate().is_err(), "{bad:?}");
        }
        assert!(Role::Reader < Role::Writer && Role::Writer < Role::Admin);
    }

    #[test]
    fn command_paths_are_lowercase_segments() {
        for ok in ["pin/ls", "key", "name/pubsub/subs", "repo-stat2"] {
            assert!(is_command_path(ok), "{ok}");
        }
        let long = "a".repeat(MAX_COMMAND_LEN + 1);
        for bad in [
            "", "/pin", "pin/", "pin//ls", "Pin", "pin ls", "pin%2fls", &long,
        ] {
            assert!(!is_command_path(bad), "{bad}");
        }
    }

    #[test]
    fn bad_fields_are_named_in_the_error() {
        let mut a = Access {
            api_deny: strings(&["/api/v0/pin"]),
            ..Access::default()
        };
        let e = a.validate().unwrap_err().to_string();
        assert!(e.starts_with("api_deny: `/api/v0/pin`"), "{e}");
        a.api_deny.clear();
        a.users = strings(&["a,b"]);
        assert!(matches!(a.validate(), Err(AccessError::User(_))));
        a.users.clear();
        a.allowed_origins = strings(&["ftp://x"]);
        assert!(matches!(a.validate(), Err(AccessError::Origin(_))));
        a.allowed_origins = strings(&["*", "https://app.example"]);
        assert_eq!(a.validate(), Ok(()));
        a.api_allow = vec!["id".to_string(); MAX_COMMANDS + 1];
        assert!(matches!(
            a.validate(),
            Err(AccessError::TooManyCommands { field: "api_allow" })
        ));
    }

    #[test]
    fn an_update_changes_only_what_it_sets_and_a_bad_one_is_refused() {
        let mut a = Access {
            users: strings(&["alice"]),
            ..Access::default()
        };
        let before = a.clone();
        let bad = AccessUpdate {
            gateway_public: Some(true),
            api_allow: Some(strings(&["Bad"])),
            ..AccessUpdate::default()
        };
        assert!(bad.validate().is_err());
        assert_eq!(a, before);
        let good = AccessUpdate {
            gateway_public: Some(true),
            ..AccessUpdate::default()
        };
        assert_eq!(good.validate(), Ok(()));
        a.apply(good);
        assert!(a.gateway_public);
        assert_eq!(a.users, before.users);
        // A public gateway refuses /ipns/ DNS names until the network enables them.
        assert!(a.refuses_ipns_dns());
        a.apply(AccessUpdate {
            ipns_dns: Some(true),
            ..AccessUpdate::default()
        });
        assert!(a.ipns_dns && !a.refuses_ipns_dns());
        a.apply(AccessUpdate {
            gateway_public: Some(false),
            ipns_dns: Some(false),
            ..AccessUpdate::default()
        });
        assert!(!a.refuses_ipns_dns(), "a token gateway serves members");
    }
}
