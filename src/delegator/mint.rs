//! Minting tenant tokens (HS256): what `nexus token issue` hands out.
//!
//! Owns the claims a minted token carries (`sub`, `iat`, `exp`, a fresh random `jti`, the
//! configuration's `aud` and `iss`, and optionally `net` and `role`) and the checks on a mint
//! request (an HS256 key, a valid user, a lifetime of at most `max_ttl`, valid network names).
//! It must not check tokens (that is [`super::auth`]'s) and never puts a token or a secret in
//! an error, a log line or `Debug` output.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::auth::{JwtConfig, JwtConfigError, JwtKey, MAX_MAX_TTL, MAX_TOKEN_NETWORKS};

#[derive(Serialize)]
struct MintClaims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    jti: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    net: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
}

/// What to mint: a user, a lifetime, and optionally networks and a role to limit it to.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub user: String,
    pub ttl: Duration,
    /// The networks the token may be used on (`net` claim); empty: any of the user's.
    pub networks: Vec<String>,
    /// The role the token lowers its user to (`role` claim).
    pub role: Option<crate::access::Role>,
}

/// A minted token and what identifies it.
pub struct Minted {
    /// The token (a secret: print it once, never log it).
    pub token: String,
    /// Its `jti`, for `nexus token revoke`.
    pub jti: String,
    /// Its `exp`, seconds since the epoch.
    pub expires_at: u64,
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minted")
            .field("jti", &self.jti)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Issues an HS256 token for `user`, valid for `ttl` (with the config's `aud`/`iss` and a fresh
/// `jti`).
pub fn mint_token(cfg: &JwtConfig, user: &str, ttl: Duration) -> Result<String, JwtConfigError> {
    mint(
        cfg,
        &TokenRequest {
            user: user.to_owned(),
            ttl,
            networks: Vec::new(),
            role: None,
        },
    )
    .map(|m| m.token)
}

/// Issues an HS256 token as `req` asks (with the config's `aud`/`iss` and a fresh `jti`); the
/// lifetime must be at most the config's `max_ttl`.
pub fn mint(cfg: &JwtConfig, req: &TokenRequest) -> Result<Minted, JwtConfigError> {
    let (user, ttl) = (req.user.as_str(), req.ttl);
    let JwtKey::Hs256(secret) = &cfg.key else {
        return Err(JwtConfigError::CannotMint(match cfg.key {
            JwtKey::Rs256(_) => "RS256",
            _ => "EdDSA",
        }));
    };
    if user.is_empty() || user.len() > 256 {
        return Err(JwtConfigError::BadUser);
    }
    if ttl < Duration::from_secs(1) || ttl > cfg.max_ttl.min(MAX_MAX_TTL) {
        return Err(JwtConfigError::BadTtl(cfg.max_ttl.min(MAX_MAX_TTL)));
    }
    if req.networks.len() > MAX_TOKEN_NETWORKS {
        return Err(JwtConfigError::BadNetwork(format!(
            "{} networks",
            req.networks.len()
        )));
    }
    if let Some(bad) = req
        .networks
        .iter()
        .find(|n| crate::node::NetworkName::new(n).is_err())
    {
        return Err(JwtConfigError::BadNetwork(bad.chars().take(64).collect()));
    }
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| JwtConfigError::Sign(e.to_string()))?;
    let jti = hex::encode(id);
    let now = jsonwebtoken::get_current_timestamp();
    let exp = now + ttl.as_secs();
    let claims = MintClaims {
        sub: user,
        iat: now,
        exp,
        jti: &jti,
        aud: cfg.audience.as_deref(),
        iss: cfg.issuer.as_deref(),
        net: &req.networks,
        role: req.role.map(crate::access::Role::as_str),
    };
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| JwtConfigError::Sign(e.to_string()))?;
    Ok(Minted {
        token,
        jti,
        expires_at: exp,
    })
}
