//! The SQL of the revocation list (`revoked_tokens`, migration 5): token ids the delegator
//! refuses and until when. Times are unix seconds given by the caller (the token's own clock
//! domain, `exp`). It must not decide what is revoked nor for how long (the API and the
//! delegator's token rules do).

use sqlx::Row as _;

use super::{query_err, write_err, SqlStore};
use crate::store::{Result, RevokedToken, StoreError};

impl SqlStore {
    pub(super) async fn insert_revoked(
        &self,
        jti: &str,
        revoked_at: i64,
        forget_at: i64,
    ) -> Result<()> {
        let query = sqlx::query(
            "INSERT INTO revoked_tokens (jti, revoked_at, forget_at) VALUES ($1, $2, $3) \
             ON CONFLICT (jti) DO UPDATE SET forget_at = CASE \
             WHEN excluded.forget_at > revoked_tokens.forget_at \
             THEN excluded.forget_at ELSE revoked_tokens.forget_at END",
        )
        .bind(jti.to_owned())
        .bind(revoked_at)
        .bind(forget_at);
        self.write(query)
            .await
            .map_err(|e| write_err("revoke a token", e))?;
        Ok(())
    }

    pub(super) async fn select_revoked(&self, now: i64) -> Result<Vec<RevokedToken>> {
        let rows = sqlx::query(
            "SELECT jti, revoked_at, forget_at FROM revoked_tokens WHERE forget_at > $1 \
             ORDER BY jti",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| query_err("read the revoked tokens", e))?;
        rows.iter()
            .map(|r| {
                let corrupt = |c: &str| StoreError::Corrupt {
                    name: "revoked token".into(),
                    detail: format!("column {c} does not decode"),
                };
                Ok(RevokedToken {
                    jti: r.try_get("jti").map_err(|_| corrupt("jti"))?,
                    revoked_at: r.try_get("revoked_at").map_err(|_| corrupt("revoked_at"))?,
                    forget_at: r.try_get("forget_at").map_err(|_| corrupt("forget_at"))?,
                })
            })
            .collect()
    }

    pub(super) async fn delete_revoked(&self, now: i64) -> Result<u64> {
        let query = sqlx::query("DELETE FROM revoked_tokens WHERE forget_at <= $1").bind(now);
        self.write(query)
            .await
            .map_err(|e| write_err("forget expired revocations", e))
    }
}
