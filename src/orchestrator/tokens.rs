//! Revoking tenant tokens: an id goes to the store first, then to the in-memory
//! [`Revocations`](crate::revocations::Revocations) the delegator reads, so the refusal starts
//! as soon as the call returns and survives a restart ([`Orchestrator::load_revocations`]).
//! An id is kept for `revocation_horizon` (the longest a token carrying it can still be
//! accepted), then forgotten. It must not check tokens (the delegator does).

use std::time::{SystemTime, UNIX_EPOCH};

use super::error::invalid;
use super::{Orchestrator, Result};
use crate::delegator::auth::valid_jti;
use crate::store::RevokedToken;

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2))
        .unwrap_or(0)
}

impl Orchestrator {
    /// Puts `jti` on the revocation list until every token carrying it has expired; from the
    /// return on, the delegator refuses it.
    pub async fn revoke_token(&self, jti: &str) -> Result<RevokedToken> {
        if !valid_jti(jti) {
            return Err(invalid(
                "a token id (jti) is 1 to 128 printable ASCII characters, as `nexus token issue` prints it",
            ));
        }
        let now = now_secs();
        let horizon =
            i64::try_from(self.inner.cfg.revocation_horizon.as_secs()).unwrap_or(i64::MAX / 4);
        let forget_at = now.saturating_add(horizon);
        self.inner.store.revoke_token(jti, now, forget_at).await?;
        self.inner.revocations.insert(jti, forget_at);
        tracing::info!(jti, forget_at, "token revoked");
        Ok(RevokedToken {
            jti: jti.to_owned(),
            revoked_at: now,
            forget_at,
        })
    }

    /// Loads the store's revocation list into memory (at start, before the delegator serves);
    /// returns how many ids are revoked.
    pub async fn load_revocations(&self) -> Result<usize> {
        let list = self.inner.store.revoked_tokens(now_secs()).await?;
        let n = list.len();
        self.inner
            .revocations
            .replace(list.into_iter().map(|r| (r.jti, r.forget_at)));
        Ok(n)
    }

    /// Forgets the ids whose tokens have all expired, in memory and in the store.
    pub async fn forget_expired_revocations(&self) -> Result<u64> {
        let now = now_secs();
        self.inner.revocations.forget(now);
        Ok(self.inner.store.forget_revoked_tokens(now).await?)
    }
}
