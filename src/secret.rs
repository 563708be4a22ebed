//! [`Secret`]: a string that must never be printed (API keys, JWT secrets, a store URL with a
//! password).
//!
//! A leaf every layer may import, so a secret stays a `Secret` from the configuration to the
//! code that uses it, and structs holding one can derive `Debug`. It must not depend on any
//! other module of nexus.

use std::fmt;

/// A secret: compares, hashes and clones like a string, but its `Debug` never shows the value
/// and it has no `Display`. Use [`Secret::expose`] where the value is needed.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself: pass it on, never print or log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("Secret(<empty>)")
        } else {
            f.write_str("Secret(<redacted>)")
        }
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2-hunter2-hunter2-hunter2-hunter2");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(format!("{:?}", Secret::default()), "Secret(<empty>)");
        assert_eq!(s.expose(), "hunter2-hunter2-hunter2-hunter2-hunter2");
    }
}
