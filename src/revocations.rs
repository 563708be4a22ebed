//! The revocation list in memory: token ids (`jti`) the delegator refuses, each until the time
//! by which every token carrying it has expired anyway ([`Revocations`]).
//!
//! A leaf, like the registry's snapshot: the orchestrator writes it (the store's list at start,
//! each revocation as soon as it is stored, expired ids dropped), the delegator reads it on
//! every request that carries a `jti`. It does no I/O, knows no SQL or HTTP, and must not
//! decide what is revoked or for how long.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// Revoked token ids → forget time (unix seconds). Cheap to clone (shared).
#[derive(Clone, Debug, Default)]
pub struct Revocations {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    ids: RwLock<HashMap<String, i64>>,
    /// Whether any id is listed: a request skips the lock while nothing is revoked.
    any: AtomicBool,
}

impl Revocations {
    /// Refuses `jti` until `forget_at` (a later time wins).
    pub fn insert(&self, jti: &str, forget_at: i64) {
        let mut ids = crate::sync::write(&self.inner.ids);
        let at = ids.entry(jti.to_owned()).or_insert(forget_at);
        *at = (*at).max(forget_at);
        self.inner.any.store(true, Ordering::Release);
    }

    /// Replaces the whole list (the store's, at start).
    pub fn replace(&self, list: impl IntoIterator<Item = (String, i64)>) {
        let mut ids = crate::sync::write(&self.inner.ids);
        ids.clear();
        ids.extend(list);
        self.inner.any.store(!ids.is_empty(), Ordering::Release);
    }

    /// Whether `jti` is refused at `now` (unix seconds).
    pub fn is_revoked(&self, jti: &str, now: i64) -> bool {
        if !self.inner.any.load(Ordering::Acquire) {
            return false;
        }
        crate::sync::read(&self.inner.ids)
            .get(jti)
            .is_some_and(|&at| at > now)
    }

    /// Drops the ids whose forget time has passed; returns how many.
    pub fn forget(&self, now: i64) -> usize {
        let mut ids = crate::sync::write(&self.inner.ids);
        let before = ids.len();
        ids.retain(|_, at| *at > now);
        self.inner.any.store(!ids.is_empty(), Ordering::Release);
        before - ids.len()
    }

    /// How many ids are listed.
    pub fn len(&self) -> usize {
        crate::sync::read(&self.inner.ids).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoked_until_forgotten_and_shared_between_clones() {
        let r = Revocations::default();
        assert!(!r.is_revoked("a", 0));
        let seen = r.clone();
        r.insert("a", 100);
        r.insert("a", 50);
        assert!(seen.is_revoked("a", 99));
        assert!(!seen.is_revoked("a", 100), "past its forget time");
        assert!(!seen.is_revoked("b", 0));
        r.insert("b", 10);
        assert_eq!(r.forget(10), 1);
        assert_eq!(r.len(), 1);
        r.replace(vec![("c".to_owned(), 5)]);
        assert!(!r.is_revoked("a", 0) && r.is_revoked("c", 4));
        assert_eq!(r.forget(5), 1);
        assert!(r.is_empty() && !r.is_revoked("c", 0));
    }
}
