//! Tenant tokens: the JWT configuration and verification (minting is [`super::mint`]'s).
//!
//! Owns the key material for checking `Authorization: Bearer <JWT>` and the claim rules:
//! algorithm pinned to the configured key (HS256 secret, RS256 or EdDSA public key), `exp`
//! required, `aud` required (`nexus` unless configured otherwise or turned off), optional
//! `iss`, a lifetime (`exp - iat`) of at most `max_ttl`, a small leeway, `nbf` checked when
//! present; the user is a valid `sub`, or the Go original's `id` claim when there is no `sub`;
//! the optional `jti` (revocation), `net` (the networks the token is limited to) and `role` (a
//! role it lowers the user to) are checked and handed on as an [`Identity`]. It must not decide
//! network membership, revocation or RPC policy, and it never puts a token or a secret in an
//! error, a log line or `Debug` output.
//!
//! A token whose signature and claims were verified is remembered (exact bytes → user and time
//! window) so that a client's next requests skip the signature check; its `exp` and `nbf` are
//! still checked on every request. The memory is per verifier, so a new key starts empty.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

// Minting moved to its own file; these names stay reachable as `auth::…`.
pub use super::mint::{mint, mint_token, Minted, TokenRequest};

/// The smallest HS256 secret accepted (RFC 7518 §3.2: at least the hash size).
pub const MIN_HS256_SECRET: usize = 32;

/// Leeway applied to `exp` and `nbf` unless configured otherwise.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// The `aud` tokens must carry unless configured otherwise (`delegator.jwt_audience`).
pub const DEFAULT_AUDIENCE: &str = "nexus";

/// The longest lifetime (`exp - iat`) accepted and minted unless configured otherwise.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(30 * 86_400);

/// The longest `max_ttl` that may be configured.
pub const MAX_MAX_TTL: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Longest `jti` accepted.
pub const MAX_JTI: usize = 128;

/// Most networks a `net` claim may list.
pub const MAX_TOKEN_NETWORKS: usize = 64;

/// The key tokens are checked against. Exactly one algorithm is accepted per key.
#[derive(Clone)]
pub enum JwtKey {
    /// HS256 with a shared secret (also used by `nexus token issue`).
    Hs256(Vec<u8>),
    /// RS256 with an RSA public key (PEM, SPKI or PKCS#1).
    Rs256(String),
    /// EdDSA (Ed25519) with a public key (PEM, SPKI).
    EdDsa(String),
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtKey::Hs256(s) => write!(f, "Hs256(<{} byte secret>)", s.len()),
            JwtKey::Rs256(_) => f.write_str("Rs256(<public key>)"),
            JwtKey::EdDsa(_) => f.write_str("EdDsa(<public key>)"),
        }
    }
}

impl JwtKey {
    fn algorithm(&self) -> Algorithm {
        match self {
            JwtKey::Hs256(_) => Algorithm::HS256,
            JwtKey::Rs256(_) => Algorithm::RS256,
            JwtKey::EdDsa(_) => Algorithm::EdDSA,
        }
    }
}

/// Asymmetric algorithms accepted by [`JwtConfig::from_public_key_pem`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublicKeyAlg {
    Rs256,
    EdDsa,
}

impl PublicKeyAlg {
    /// The JWT `alg` name: `RS256` or `EdDSA`.
    pub fn as_str(&self) -> &'static str {
        match self {
            PublicKeyAlg::Rs256 => "RS256",
            PublicKeyAlg::EdDsa => "EdDSA",
        }
    }
}

impl std::str::FromStr for PublicKeyAlg {
    type Err = JwtConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "RS256" => Ok(PublicKeyAlg::Rs256),
            "EDDSA" | "ED25519" => Ok(PublicKeyAlg::EdDsa),
            _ => Err(JwtConfigError::UnsupportedAlgorithm(
                s.chars().take(16).collect(),
            )),
        }
    }
}

/// A JWT configuration error (never contains key material).
#[derive(Debug, thiserror::Error)]
pub enum JwtConfigError {
    #[error("the HS256 secret must be at least {MIN_HS256_SECRET} bytes (got {0})")]
    SecretTooShort(usize),
    #[error("invalid {alg} public key PEM: {reason}")]
    BadPublicKey { alg: &'static str, reason: String },
    #[error("unsupported JWT algorithm `{0}`: use HS256, RS256 or EdDSA")]
    UnsupportedAlgorithm(String),
    #[error(
        "minting tokens needs an HS256 secret; with {0} keys, tokens come from the key's owner"
    )]
    CannotMint(&'static str),
    #[error("the token lifetime must be between 1 second and {}s (delegator.max_ttl)", .0.as_secs())]
    BadTtl(Duration),
    #[error("`{0}` is not a network name a token can be limited to")]
    BadNetwork(String),
    #[error("the user id must be 1..=256 characters")]
    BadUser,
    #[error("could not sign the token: {0}")]
    Sign(String),
}

/// How tenant tokens are checked. Build it with [`JwtConfig::hs256`] or
/// [`JwtConfig::from_public_key_pem`], then adjust the optional claims.
#[derive(Clone, Debug)]
pub struct JwtConfig {
    pub key: JwtKey,
    /// Required `aud` value, when set.
    pub audience: Option<String>,
    /// Required `iss` value, when set.
    pub issuer: Option<String>,
    /// Clock-skew leeway for `exp` and `nbf`.
    pub leeway: Duration,
    /// Longest lifetime accepted (`exp - iat`, or `exp - now` without `iat`) and minted.
    pub max_ttl: Duration,
}

impl JwtConfig {
    /// HS256 with a shared secret of at least [`MIN_HS256_SECRET`] bytes.
    pub fn hs256(secret: impl Into<Vec<u8>>) -> Result<Self, JwtConfigError> {
        let secret = secret.into();
        if secret.len() < MIN_HS256_SECRET {
            return Err(JwtConfigError::SecretTooShort(secret.len()));
        }
        Ok(Self::with_key(JwtKey::Hs256(secret)))
    }

    /// RS256 or EdDSA with a PEM public key (checked now).
    pub fn from_public_key_pem(alg: PublicKeyAlg, pem: &str) -> Result<Self, JwtConfigError> {
        let key = match alg {
            PublicKeyAlg::Rs256 => JwtKey::Rs256(pem.to_owned()),
            PublicKeyAlg::EdDsa => JwtKey::EdDsa(pem.to_owned()),
        };
        let cfg = Self::with_key(key);
        cfg.verifier()?;
        Ok(cfg)
    }

    fn with_key(key: JwtKey) -> Self {
        Self {
            key,
            audience: Some(DEFAULT_AUDIENCE.to_owned()),
            issuer: None,
            leeway: DEFAULT_LEEWAY,
            max_ttl: DEFAULT_MAX_TTL,
        }
    }

    /// Accepts tokens without checking `aud` (not recommended: a token the same key signed for
    /// another application is then accepted).
    pub fn without_audience(mut self) -> Self {
        self.audience = None;
        self
    }

    pub fn with_max_ttl(mut self, max_ttl: Duration) -> Self {
        self.max_ttl = max_ttl;
        self
    }

    pub fn with_audience(mut self, aud: impl Into<String>) -> Self {
        self.audience = Some(aud.into());
        self
    }

    pub fn with_issuer(mut self, iss: impl Into<String>) -> Self {
        self.issuer = Some(iss.into());
        self
    }

    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The prepared verifier (decoding key and validation rules).
    pub fn verifier(&self) -> Result<Verifier, JwtConfigError> {
        let alg = self.key.algorithm();
        let key = match &self.key {
            JwtKey::Hs256(s) => {
                if s.len() < MIN_HS256_SECRET {
                    return Err(JwtConfigError::SecretTooShort(s.len()));
                }
                DecodingKey::from_secret(s)
            }
            JwtKey::Rs256(pem) => DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| {
                JwtConfigError::BadPublicKey {
                    alg: "RS256",
                    reason: e.to_string(),
                }
            })?,
            JwtKey::EdDsa(pem) => DecodingKey::from_ed_pem(pem.as_bytes()).map_err(|e| {
                JwtConfigError::BadPublicKey {
                    alg: "EdDSA",
                    reason: e.to_string(),
                }
            })?,
        };
        let mut v = Validation::new(alg);
        v.algorithms = vec![alg];
        v.set_required_spec_claims(&["exp"]);
        v.validate_exp = true;
        v.validate_nbf = true;
        v.leeway = self.leeway.as_secs();
        match &self.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                v.required_spec_claims.insert("aud".into());
            }
            None => v.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            v.required_spec_claims.insert("iss".into());
        }
        Ok(Verifier {
            key,
            validation: v,
            leeway: self.leeway.as_secs(),
            max_ttl: self.max_ttl.as_secs(),
            verified: Arc::default(),
        })
    }
}

/// Why a token was refused (answered with 401). The message never quotes the token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token: send `Authorization: Bearer <JWT>`")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("token signed with an algorithm this server does not accept")]
    WrongAlgorithm,
    #[error("invalid token signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token has no `exp` claim")]
    NoExpiry,
    #[error("token has the wrong audience")]
    BadAudience,
    #[error("token has the wrong issuer")]
    BadIssuer,
    #[error("token names no user (`sub` or `id` claim)")]
    NoSubject,
    #[error("token's user claim is not a valid user id (a string of 1 to 256 characters)")]
    BadSubject,
    #[error("token's `{0}` claim is not valid")]
    BadClaim(&'static str),
    #[error("token lives longer than this server accepts (exp - iat above the maximum)")]
    TooLong,
    #[error("token has been revoked")]
    Revoked,
}

/// What a verified token says: who, and within which bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    /// The token's id, for revocation (tokens without one cannot be revoked one by one).
    pub jti: Option<String>,
    /// `exp`, seconds since the epoch.
    pub exp: u64,
    /// The networks the token is limited to (`net` claim); `None`: any of the user's.
    pub networks: Option<Vec<String>>,
    /// The role the token lowers its user to (`role` claim); never raises it.
    pub role: Option<crate::access::Role>,
}

impl Identity {
    /// Whether the token may be used on `network` (its `net` claim, when present, lists it).
    pub fn allows_network(&self, network: &str) -> bool {
        self.networks
            .as_ref()
            .is_none_or(|nets| nets.iter().any(|n| n == network))
    }
}

/// A user claim's value: a string of 1..=256 characters.
fn user_claim(v: serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) if !s.is_empty() && s.len() <= 256 => Some(s),
        _ => None,
    }
}

#[derive(Deserialize)]
struct Claims {
    /// `Some(Null)` when the claim is present as `null`: present is present.
    #[serde(default, deserialize_with = "present")]
    sub: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    id: Option<serde_json::Value>,
    #[serde(default)]
    exp: Option<serde_json::Value>,
    #[serde(default)]
    nbf: Option<serde_json::Value>,
    #[serde(default)]
    iat: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    jti: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    net: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    role: Option<serde_json::Value>,
}

/// `jti`: 1..=128 printable ASCII characters.
fn jti_claim(v: serde_json::Value) -> Result<String, AuthError> {
    match v {
        serde_json::Value::String(s) if valid_jti(&s) => Ok(s),
        _ => Err(AuthError::BadClaim("jti")),
    }
}

/// A token id nexus accepts (in a token or `nexus token revoke`): 1..=128 printable ASCII
/// characters.
pub fn valid_jti(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_JTI && s.bytes().all(|b| b.is_ascii_graphic())
}

/// `net`: a network name or a non-empty list of them.
fn net_claim(v: serde_json::Value) -> Result<Vec<String>, AuthError> {
    let bad = || AuthError::BadClaim("net");
    let names = match v {
        serde_json::Value::String(s) => vec![s],
        serde_json::Value::Array(a) if !a.is_empty() && a.len() <= MAX_TOKEN_NETWORKS => a
            .into_iter()
            .map(|n| match n {
                serde_json::Value::String(s) => Ok(s),
                _ => Err(bad()),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(bad()),
    };
    if names
        .iter()
        .any(|n| crate::node::NetworkName::new(n).is_err())
    {
        return Err(bad());
    }
    Ok(names)
}

/// `role`: `reader`, `writer` or `admin`.
fn role_claim(v: serde_json::Value) -> Result<crate::access::Role, AuthError> {
    match v {
        serde_json::Value::String(s) => {
            crate::access::Role::parse(&s).ok_or(AuthError::BadClaim("role"))
        }
        _ => Err(AuthError::BadClaim("role")),
    }
}

/// A claim that is there, whatever its value (`null` included), as `Some`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

/// Most verified tokens remembered; when full, the memory starts over.
const VERIFIED_CAPACITY: usize = 4096;

/// What a verified token was found to say.
#[derive(Clone, Debug)]
struct VerifiedToken {
    identity: Arc<Identity>,
    nbf: Option<u64>,
}

/// A prepared token checker.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    leeway: u64,
    max_ttl: u64,
    /// Tokens already verified, by their exact text.
    verified: Arc<Mutex<HashMap<String, VerifiedToken>>>,
}

/// A JWT NumericDate as whole seconds (fractions cut, as jsonwebtoken compares them).
fn numeric_date(v: Option<&serde_json::Value>) -> Option<u64> {
    let v = v?;
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Checks an `Authorization` header value; returns the user.
    pub fn check_header(&self, header: Option<&[u8]>) -> Result<String, AuthError> {
        self.identify_header(header).map(|i| i.user.clone())
    }

    /// Checks an `Authorization` header value; returns what the token says.
    pub fn identify_header(&self, header: Option<&[u8]>) -> Result<Arc<Identity>, AuthError> {
        let value = header.ok_or(AuthError::Missing)?;
        let value = std::str::from_utf8(value).map_err(|_| AuthError::Malformed)?;
        let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::Missing)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Missing);
        }
        self.identify(token.trim())
    }

    /// Checks a bare token; returns the user (`sub`, else `id`).
    pub fn check(&self, token: &str) -> Result<String, AuthError> {
        self.identify(token).map(|i| i.user.clone())
    }

    /// Checks a bare token; returns what it says.
    pub fn identify(&self, token: &str) -> Result<Arc<Identity>, AuthError> {
        self.check_at(token, jsonwebtoken::get_current_timestamp())
    }

    fn check_at(&self, token: &str, now: u64) -> Result<Arc<Identity>, AuthError> {
        let mut verified = crate::sync::lock(&self.verified);
        if let Some(t) = verified.get(token) {
            // The same rules jsonwebtoken applies, with the same leeway.
            let expired = t.identity.exp.saturating_add(self.leeway) < now;
            let early = t
                .nbf
                .is_some_and(|nbf| nbf > now.saturating_add(self.leeway));
            if !expired && !early {
                return Ok(t.identity.clone());
            }
            verified.remove(token);
            return Err(if expired {
                AuthError::Expired
            } else {
                AuthError::NotYetValid
            });
        }
        drop(verified);
        let (identity, nbf) = self.verify(token, now)?;
        let identity = Arc::new(identity);
        let entry = VerifiedToken {
            identity: identity.clone(),
            nbf,
        };
        let mut verified = crate::sync::lock(&self.verified);
        if verified.len() >= VERIFIED_CAPACITY {
            verified.clear();
        }
        verified.insert(token.to_owned(), entry);
        Ok(identity)
    }

    /// The full check: signature, algorithm and claims; the identity and `nbf`.
    fn verify(&self, token: &str, now: u64) -> Result<(Identity, Option<u64>), AuthError> {
        use jsonwebtoken::errors::ErrorKind as K;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                K::InvalidAlgorithm | K::InvalidAlgorithmName | K::MissingAlgorithm => {
                    AuthError::WrongAlgorithm
                }
                K::InvalidSignature => AuthError::BadSignature,
                K::ExpiredSignature => AuthError::Expired,
                K::ImmatureSignature => AuthError::NotYetValid,
                K::MissingRequiredClaim(c) if c == "exp" => AuthError::NoExpiry,
                K::MissingRequiredClaim(c) if c == "aud" => AuthError::BadAudience,
                K::InvalidAudience => AuthError::BadAudience,
                K::MissingRequiredClaim(c) if c == "iss" => AuthError::BadIssuer,
                K::InvalidIssuer => AuthError::BadIssuer,
                _ => AuthError::Malformed,
            },
        )?;
        let mut claims = data.claims;
        // A present `sub` decides, valid or not: `id` (the Go original's claim) is read only
        // when there is no `sub` at all, so a bad `sub` never falls back to another user.
        let user = match (claims.sub.take(), claims.id.take()) {
            (Some(sub), _) => user_claim(sub).ok_or(AuthError::BadSubject)?,
            (None, Some(id)) => user_claim(id).ok_or(AuthError::BadSubject)?,
            (None, None) => return Err(AuthError::NoSubject),
        };
        let exp = numeric_date(claims.exp.as_ref()).ok_or(AuthError::NoExpiry)?;
        // The lifetime: from `iat` when given (which must not be in the future), else from now.
        let from = match claims.iat.as_ref() {
            Some(v) => {
                let iat = numeric_date(Some(v)).ok_or(AuthError::BadClaim("iat"))?;
                if iat > now.saturating_add(self.leeway) {
                    return Err(AuthError::BadClaim("iat"));
                }
                iat
            }
            None => now.saturating_sub(self.leeway),
        };
        if exp.saturating_sub(from) > self.max_ttl {
            return Err(AuthError::TooLong);
        }
        let identity = Identity {
            user,
            jti: claims.jti.take().map(jti_claim).transpose()?,
            exp,
            networks: claims.net.take().map(net_claim).transpose()?,
            role: claims.role.take().map(role_claim).transpose()?,
        };
        Ok((identity, numeric_date(claims.nbf.as_ref())))
    }
}

#[cfg(test)]
mod tests;
