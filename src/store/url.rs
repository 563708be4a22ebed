//! Store URLs: which database a URL names, and never showing its password.
//!
//! Owns [`Backend`] (SQLite or Postgres by scheme), the SQLite file URL that creates a missing
//! file, [`redact_url`] (the URL as it may be shown: password replaced) and scrubbing a driver
//! message of the URL's password. Pure string work; it must not open anything.

use std::borrow::Cow;

/// Which database a URL points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub(crate) fn from_url(url: &str) -> Option<Self> {
        let scheme = url.split(':').next().unwrap_or("").to_ascii_lowercase();
        match scheme.as_str() {
            "sqlite" => Some(Self::Sqlite),
            "postgres" | "postgresql" => Some(Self::Postgres),
            _ => None,
        }
    }
}

/// A SQLite file URL that creates the file if missing: adds `mode=rwc` unless a mode is given.
pub(crate) fn sqlite_create_if_missing(url: &str) -> Cow<'_, str> {
    let query = url.split_once('?').map(|(_, q)| q);
    let has_mode = query.is_some_and(|q| q.split('&').any(|p| p.starts_with("mode=")));
    match (has_mode, query) {
        (true, _) => Cow::Borrowed(url),
        (false, Some(_)) => Cow::Owned(format!("{url}&mode=rwc")),
        (false, None) => Cow::Owned(format!("{url}?mode=rwc")),
    }
}

/// `url` with the password (in the userinfo or a `password=` query parameter) replaced by
/// `<redacted>`. The user name, host and database stay, for error messages.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let (head, rest) = url.split_at(scheme_end + 3);
    // The userinfo ends at the last `@` before the query: a password may hold an unencoded `/`
    // or `@`; if the path held an `@`, we redact too much, never too little.
    let (authority, tail) = match userinfo_end(rest) {
        Some(at) => {
            let (userinfo, after) = rest.split_at(at);
            let userinfo = match userinfo.find(':') {
                Some(colon) => format!("{}:<redacted>", &userinfo[..colon]),
                None => userinfo.to_string(),
            };
            let host_end = after[1..]
                .find(['/', '?', '#'])
                .map_or(after.len(), |i| i + 1);
            (
                format!("{userinfo}{}", &after[..host_end]),
                &after[host_end..],
            )
        }
        None => {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            (rest[..end].to_string(), &rest[end..])
        }
    };
    let tail = match tail.find('?') {
        Some(q) => {
            let (path, query) = tail.split_at(q + 1);
            let (query, fragment) = match query.find('#') {
                Some(h) => query.split_at(h),
                None => (query, ""),
            };
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => {
                        format!("{k}=<redacted>")
                    }
                    _ => p.to_string(),
                })
                .collect();
            format!("{path}{}{fragment}", params.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{head}{authority}{tail}")
}

/// Where the userinfo of `rest` (the URL after `://`) ends: its last `@` before any `?`.
fn userinfo_end(rest: &str) -> Option<usize> {
    rest[..rest.find('?').unwrap_or(rest.len())].rfind('@')
}

/// Removes the URL's password from a driver message, in case a driver quotes the URL.
pub(crate) fn scrub(detail: &str, url: &str) -> String {
    let mut out = detail.replace(url, &redact_url(url));
    for secret in url_passwords(url) {
        if secret.len() >= 3 {
            out = out.replace(&secret, "<redacted>");
        }
    }
    out
}

fn url_passwords(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        if let Some(at) = userinfo_end(rest) {
            if let Some((_, pw)) = rest[..at].split_once(':') {
                found.push(pw.to_string());
            }
        }
    }
    if let Some((_, query)) = url.split_once('?') {
        for p in query.split('&') {
            if let Some((k, v)) = p.split_once('=') {
                if k.eq_ignore_ascii_case("password") {
                    found.push(v.to_string());
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_userinfo_password() {
        assert_eq!(
            redact_url("postgres://nexus:s3cret@db.example:5432/nexus"),
            "postgres://nexus:<redacted>@db.example:5432/nexus"
        );
        // `@` and `:` inside the password.
        assert_eq!(
            redact_url("postgresql://u:p@ss:w0rd@host/db?sslmode=disable"),
            "postgresql://u:<redacted>@host/db?sslmode=disable"
        );
        assert_eq!(
            redact_url("postgres://u:pw@host"),
            "postgres://u:<redacted>@host"
        );
        // Unencoded `/` and `#` in the password.
        assert_eq!(
            redact_url("postgres://u:pa/ss#x@host:5432/db"),
            "postgres://u:<redacted>@host:5432/db"
        );
        assert_eq!(
            redact_url("postgres://:onlypw@host/db"),
            "postgres://:<redacted>@host/db"
        );
    }

    #[test]
    fn redacts_password_query_parameter() {
        assert_eq!(
            redact_url("postgres://host/db?user=u&password=hunter22&sslmode=off"),
            "postgres://host/db?user=u&password=<redacted>&sslmode=off"
        );
        assert_eq!(
            redact_url("postgres://u@host/db?PASSWORD=x#frag"),
            "postgres://u@host/db?PASSWORD=<redacted>#frag"
        );
    }

    #[test]
    fn leaves_urls_without_password_alone() {
        for url in [
            "postgres://nexus@127.0.0.1:5432/postgres",
            "sqlite:///var/lib/nexus/nexus.db?mode=rwc",
            "sqlite://nexus.db",
            "sqlite::memory:",
            "not a url",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn scrub_removes_passwords_from_messages() {
        let url = "postgres://u:hunter22@host/db";
        let msg = format!("failed to connect to {url}; password hunter22 rejected");
        let out = scrub(&msg, url);
        assert!(!out.contains("hunter22"), "{out}");
        assert!(out.contains("postgres://u:<redacted>@host/db"), "{out}");
    }

    #[test]
    fn sqlite_files_are_created_unless_a_mode_is_given() {
        assert_eq!(
            sqlite_create_if_missing("sqlite:///d/n.db"),
            "sqlite:///d/n.db?mode=rwc"
        );
        assert_eq!(
            sqlite_create_if_missing("sqlite://n.db?cache=shared"),
            "sqlite://n.db?cache=shared&mode=rwc"
        );
        assert_eq!(
            sqlite_create_if_missing("sqlite://n.db?mode=ro"),
            "sqlite://n.db?mode=ro"
        );
    }

    #[test]
    fn backend_from_url() {
        assert_eq!(Backend::from_url("sqlite::memory:"), Some(Backend::Sqlite));
        assert_eq!(Backend::from_url("sqlite://x.db"), Some(Backend::Sqlite));
        assert_eq!(Backend::from_url("postgres://h/d"), Some(Backend::Postgres));
        assert_eq!(
            Backend::from_url("postgresql://h/d"),
            Some(Backend::Postgres)
        );
        assert_eq!(Backend::from_url("mysql://h/d"), None);
    }

    #[test]
    fn debug_hides_password() {
        // The Debug impl only ever sees the redacted URL; check the formatting path directly.
        let shown = format!("{:?}", redact_url("postgres://u:topsecret@h/d"));
        assert!(!shown.contains("topsecret"));
    }
}
