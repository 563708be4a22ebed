//! Names checked once: the DNS-label rule every name nexus derives host names, Docker names
//! or labels from must follow, and [`InstanceName`], the owner label of an installation (and
//! how a fresh one is generated; which one a daemon uses is [`crate::instance`]'s).
//!
//! A leaf every layer may import (configuration, the node spec, the delegator's routes), so the
//! rule is written once. It must not depend on any other module of nexus.

use std::fmt;

/// Longest DNS label (RFC 1035).
pub const MAX_DNS_LABEL: usize = 63;
/// Longest DNS name (RFC 1035).
pub const MAX_DNS_NAME: usize = 253;

/// Whether `l` is a DNS label in any case: 1–63 letters, digits and hyphens, not starting or
/// ending with a hyphen. The one label check; the others build on it.
pub fn is_dns_label_any_case(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= MAX_DNS_LABEL
        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

/// Whether `s` is a lower-case DNS label (`default`, `prod-1`).
pub fn is_dns_label(s: &str) -> bool {
    is_dns_label_any_case(s) && !s.bytes().any(|b| b.is_ascii_uppercase())
}

/// Whether `s` is a DNS name: dot-separated labels ([`is_dns_label_any_case`]), 253 characters
/// at most (`localhost`, `nexus.example.com`).
pub fn is_dns_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_DNS_NAME && s.split('.').all(is_dns_label_any_case)
}

/// At most 40 characters of user input, for messages.
pub fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    out
}

/// The name of a nexus installation (`io.nexus.instance`): a lower-case DNS label, so several
/// installations (or test runs) can share a Docker host. Checked once, where it is read.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InstanceName(String);

/// A name that is not a lower-case DNS label; holds the (clipped) input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a valid instance name")]
pub struct BadInstanceName(pub String);

impl InstanceName {
    pub fn new(s: &str) -> Result<Self, BadInstanceName> {
        if is_dns_label(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(BadInstanceName(clip(s)))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl InstanceName {
    /// The instance of stores written before instances were recorded (nexus defaulted to it):
    /// their nodes carry this label. Never generated.
    pub const LEGACY: &'static str = "default";

    /// A fresh instance id, `n-` and 12 hex digits (48 bits from the OS CSPRNG), so two
    /// installations that configure none never share one. Should the OS have no random source,
    /// the bits come from the process id, the time and std's randomly keyed hasher (still
    /// distinct per process and call; it is an owner label, not a secret).
    pub fn generate() -> Self {
        let mut b = [0u8; 6];
        if getrandom::fill(&mut b).is_err() {
            use std::hash::{BuildHasher, Hasher};
            static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            h.write_u64(CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
                h.write_u128(t.as_nanos());
            }
            b.copy_from_slice(&h.finish().to_be_bytes()[..6]);
        }
        Self(format!("n-{}", hex::encode(b)))
    }
}

impl fmt::Display for InstanceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<InstanceName> for String {
    fn from(n: InstanceName) -> Self {
        n.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        assert!(is_dns_name("localhost"));
        assert!(is_dns_name("nexus.example.com"));
        assert!(is_dns_name("A-1.b"));
        for bad in ["", "a..b", "-a.b", "a-.b", "a_b.c", "a b", &"x".repeat(64)] {
            assert!(!is_dns_name(bad), "{bad}");
        }
        assert!(is_dns_label("prod-1"));
        assert!(!is_dns_label("Prod"));
        assert!(!is_dns_label("a.b"));
    }

    #[test]
    fn instance_names() {
        assert_eq!(InstanceName::new("prod-1").unwrap().as_str(), "prod-1");
        for bad in ["", "Prod", "-a", "a-", "a.b", &"x".repeat(64)] {
            assert!(InstanceName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn generated_instances_are_valid_and_distinct() {
        let a = InstanceName::generate();
        let b = InstanceName::generate();
        assert_ne!(a, b);
        for g in [&a, &b] {
            assert!(is_dns_label(g.as_str()), "{g}");
            let hex = g.as_str().strip_prefix("n-").expect("n- prefix");
            assert_eq!(hex.len(), 12, "{g}");
            assert!(hex.bytes().all(|c| c.is_ascii_hexdigit()), "{g}");
            assert_eq!(InstanceName::new(g.as_str()).as_ref(), Ok(g));
        }
        assert_ne!(a.as_str(), InstanceName::LEGACY);
    }
}
