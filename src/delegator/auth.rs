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
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    /// A token with `claims`, plus `"aud": "nexus"` unless `aud` is given.
    fn hs(mut claims: serde_json::Value, secret: &[u8]) -> String {
        if claims.get("aud").is_none() {
            claims["aud"] = json!(DEFAULT_AUDIENCE);
        }
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    fn hs_verifier() -> Verifier {
        JwtConfig::hs256(SECRET).unwrap().verifier().unwrap()
    }

    #[test]
    fn remembered_tokens_still_expire_and_never_vouch_for_other_bytes() {
        let v = JwtConfig::hs256(SECRET)
            .unwrap()
            .with_leeway(Duration::from_secs(5))
            .verifier()
            .unwrap();
        let t0 = now();
        let t = hs(json!({"sub": "alice", "exp": t0 + 60, "nbf": t0}), SECRET);
        assert_eq!(
            v.check_at(&t, t0).map(|i| i.user.clone()),
            Ok("alice".into())
        );
        assert_eq!(
            v.verified.lock().unwrap().len(),
            1,
            "verified token remembered"
        );
        // Remembered: still answered within its window (leeway included)…
        assert_eq!(
            v.check_at(&t, t0 + 65).map(|i| i.user.clone()),
            Ok("alice".into())
        );
        // …and refused after it, and forgotten.
        assert_eq!(
            v.check_at(&t, t0 + 66).map(|i| i.user.clone()),
            Err(AuthError::Expired)
        );
        assert!(v.verified.lock().unwrap().is_empty());
        // A remembered token vouches only for its exact bytes.
        assert_eq!(
            v.check_at(&t, t0).map(|i| i.user.clone()),
            Ok("alice".into())
        );
        // One character inside the signature changed (not the last: its low bits are padding,
        // so a change there can make the encoding itself invalid instead of the signature).
        let mut forged = t.clone().into_bytes();
        let i = forged.len() - 5;
        forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert_eq!(
            v.check_at(&forged, t0).map(|i| i.user.clone()),
            Err(AuthError::BadSignature)
        );
        let other = hs(
            json!({"sub": "mallory", "exp": t0 + 60}),
            b"another-secret-another-secret-xx",
        );
        assert_eq!(
            v.check_at(&other, t0).map(|i| i.user.clone()),
            Err(AuthError::BadSignature)
        );
        // Not yet valid: never remembered early.
        let later = hs(
            json!({"sub": "bob", "exp": t0 + 600, "nbf": t0 + 300}),
            SECRET,
        );
        assert_eq!(v.check(&later), Err(AuthError::NotYetValid));
        // A verifier for another key shares nothing.
        let w = hs_verifier();
        assert!(w.verified.lock().unwrap().is_empty());
        // Bounded.
        for i in 0..(VERIFIED_CAPACITY + 10) {
            let t = hs(json!({"sub": format!("u{i}"), "exp": t0 + 60}), SECRET);
            assert!(v.check_at(&t, t0).map(|i| i.user.clone()).is_ok());
        }
        assert!(v.verified.lock().unwrap().len() <= VERIFIED_CAPACITY);
    }

    #[test]
    fn hs256_happy_path_and_id_claim() {
        let v = hs_verifier();
        let t = hs(json!({"sub": "alice", "exp": now() + 60}), SECRET);
        assert_eq!(v.check(&t), Ok("alice".into()));
        let header = format!("bearer {t}");
        assert_eq!(v.check_header(Some(header.as_bytes())), Ok("alice".into()));
        // The Go original's `id` claim.
        let t = hs(
            json!({"id": "bob", "exp": now() + 60, "orig_iat": now()}),
            SECRET,
        );
        assert_eq!(v.check(&t), Ok("bob".into()));
        // Minted tokens verify.
        let cfg = JwtConfig::hs256(SECRET).unwrap();
        let t = mint_token(&cfg, "carol", Duration::from_secs(60)).unwrap();
        assert_eq!(v.check(&t), Ok("carol".into()));
    }

    #[test]
    fn refusals() {
        let v = hs_verifier();
        assert_eq!(v.check_header(None), Err(AuthError::Missing));
        assert_eq!(v.check_header(Some(b"Basic abc")), Err(AuthError::Missing));
        assert_eq!(v.check_header(Some(b"Bearer")), Err(AuthError::Missing));
        assert_eq!(v.check("not.a.jwt"), Err(AuthError::Malformed));
        // Expired (beyond the leeway), not yet valid, missing exp, missing user.
        let t = hs(json!({"sub": "a", "exp": now() - 3600}), SECRET);
        assert_eq!(v.check(&t), Err(AuthError::Expired));
        let t = hs(
            json!({"sub": "a", "exp": now() + 7200, "nbf": now() + 3600}),
            SECRET,
        );
        assert_eq!(v.check(&t), Err(AuthError::NotYetValid));
        let t = hs(json!({"sub": "a"}), SECRET);
        assert_eq!(v.check(&t), Err(AuthError::NoExpiry));
        let t = hs(json!({"exp": now() + 60}), SECRET);
        assert_eq!(v.check(&t), Err(AuthError::NoSubject));
        let t = hs(json!({"sub": "", "exp": now() + 60}), SECRET);
        assert_eq!(v.check(&t), Err(AuthError::BadSubject));
        let t = hs(json!({"sub": 7, "exp": now() + 60}), SECRET);
        assert_eq!(v.check(&t), Err(AuthError::BadSubject));
        // Wrong signature.
        let t = hs(
            json!({"sub": "a", "exp": now() + 60}),
            b"another secret, 32 bytes long!!!",
        );
        assert_eq!(v.check(&t), Err(AuthError::BadSignature));
        // Within the leeway.
        let t = hs(json!({"sub": "a", "exp": now() - 5}), SECRET);
        assert_eq!(v.check(&t), Ok("a".into()));
    }

    /// A present but invalid `sub` is refused; it never falls back to `id`.
    #[test]
    fn a_bad_sub_never_falls_back_to_id() {
        let v = hs_verifier();
        for sub in [
            json!(123),
            json!(""),
            json!(null),
            json!(["alice"]),
            json!({"u": 1}),
        ] {
            let t = hs(
                json!({"sub": sub, "id": "alice", "exp": now() + 60}),
                SECRET,
            );
            // jsonwebtoken itself refuses a `sub` of the wrong JSON type (malformed): either
            // way a 401, never alice.
            let r = v.check(&t);
            assert!(
                matches!(r, Err(AuthError::BadSubject | AuthError::Malformed)),
                "sub = {sub}: {r:?}"
            );
        }
        let t = hs(json!({"id": 5, "exp": now() + 60}), SECRET);
        assert_eq!(v.check(&t), Err(AuthError::BadSubject));
        let long = "a".repeat(257);
        let t = hs(
            json!({"sub": long, "id": "alice", "exp": now() + 60}),
            SECRET,
        );
        assert_eq!(v.check(&t), Err(AuthError::BadSubject));
    }

    /// Issue 15, observation 2: tokens are bound to this server (`aud` required by default) and
    /// to a lifetime; `jti`, `net` and `role` are checked and handed on.
    #[test]
    fn tokens_are_bound_to_an_audience_a_lifetime_and_their_claims() {
        let v = hs_verifier();
        let raw = |claims: serde_json::Value| {
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(SECRET),
            )
            .unwrap()
        };
        let n = now();
        // Another application's token (same key), and one with no audience at all.
        let billing = raw(json!({"sub": "alice", "exp": n + 60, "aud": "billing-app"}));
        assert_eq!(v.check(&billing), Err(AuthError::BadAudience));
        let none = raw(json!({"sub": "alice", "exp": n + 60}));
        assert_eq!(v.check(&none), Err(AuthError::BadAudience));
        // Turned off explicitly, it is accepted.
        let open = JwtConfig::hs256(SECRET)
            .unwrap()
            .without_audience()
            .verifier()
            .unwrap();
        assert_eq!(open.check(&none), Ok("alice".into()));
        // The lifetime: at most 30 days from iat (or from now without iat); iat not in the
        // future.
        let day = 86_400;
        let t = hs(json!({"sub": "a", "iat": n, "exp": n + 30 * day}), SECRET);
        assert!(v.check(&t).is_ok());
        let t = hs(
            json!({"sub": "a", "iat": n, "exp": n + 30 * day + 1}),
            SECRET,
        );
        assert_eq!(v.check(&t), Err(AuthError::TooLong));
        let t = hs(json!({"sub": "a", "exp": n + 3650 * day}), SECRET);
        assert_eq!(v.check(&t), Err(AuthError::TooLong));
        let t = hs(
            json!({"sub": "a", "iat": n + 3600, "exp": n + 7200}),
            SECRET,
        );
        assert_eq!(v.check(&t), Err(AuthError::BadClaim("iat")));
        let short = JwtConfig::hs256(SECRET)
            .unwrap()
            .with_max_ttl(Duration::from_secs(60))
            .verifier()
            .unwrap();
        let t = hs(json!({"sub": "a", "iat": n, "exp": n + 600}), SECRET);
        assert_eq!(short.check(&t), Err(AuthError::TooLong));
        // jti, net, role.
        let t = hs(
            json!({"sub": "a", "exp": n + 60, "jti": "j-1", "net": ["acme", "beta"], "role": "reader"}),
            SECRET,
        );
        let id = v.identify(&t).unwrap();
        assert_eq!(id.jti.as_deref(), Some("j-1"));
        assert!(id.allows_network("acme") && id.allows_network("beta"));
        assert!(!id.allows_network("gamma"));
        assert_eq!(id.role, Some(crate::access::Role::Reader));
        let t = hs(json!({"sub": "a", "exp": n + 60, "net": "acme"}), SECRET);
        assert!(v.identify(&t).unwrap().allows_network("acme"));
        for (claim, bad) in [
            ("jti", json!(7)),
            ("jti", json!("")),
            ("jti", json!("x".repeat(129))),
            ("net", json!([])),
            ("net", json!(["Not A Name"])),
            ("net", json!(5)),
            ("role", json!("root")),
            ("role", json!(1)),
        ] {
            let mut c = json!({"sub": "a", "exp": n + 60});
            c[claim] = bad.clone();
            assert_eq!(
                v.check(&hs(c, SECRET)),
                Err(AuthError::BadClaim(claim)),
                "{claim} = {bad}"
            );
        }
        // Minted tokens carry all of it.
        let cfg = JwtConfig::hs256(SECRET).unwrap();
        let m = mint(
            &cfg,
            &TokenRequest {
                user: "carol".into(),
                ttl: Duration::from_secs(3600),
                networks: vec!["acme".into()],
                role: Some(crate::access::Role::Reader),
            },
        )
        .unwrap();
        let id = v.identify(&m.token).unwrap();
        assert_eq!(id.user, "carol");
        assert_eq!(id.jti.as_deref(), Some(m.jti.as_str()));
        assert_eq!(id.exp, m.expires_at);
        assert_eq!(id.networks, Some(vec!["acme".to_string()]));
        assert_eq!(id.role, Some(crate::access::Role::Reader));
        assert!(!format!("{m:?}").contains(&m.token));
        let two = mint_token(&cfg, "carol", Duration::from_secs(60)).unwrap();
        assert_ne!(
            v.identify(&two).unwrap().jti,
            id.jti,
            "a fresh jti per token"
        );
        assert!(mint(
            &cfg,
            &TokenRequest {
                user: "c".into(),
                ttl: Duration::from_secs(60),
                networks: vec!["Bad Name".into()],
                role: None,
            }
        )
        .is_err());
    }

    #[test]
    fn alg_none_is_refused() {
        let v = hs_verifier();
        let head = B64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = B64.encode(json!({"sub": "a", "exp": now() + 60}).to_string());
        for t in [format!("{head}.{body}."), format!("{head}.{body}")] {
            assert!(v.check(&t).is_err(), "{t}");
        }
    }

    /// A throwaway RSA pair made for these tests only (`openssl genpkey`); it protects nothing.
    fn rsa_pair() -> (String, String) {
        (
            include_str!("testdata/rsa-test-only.key.pem").to_owned(),
            include_str!("testdata/rsa-test-only.pub.pem").to_owned(),
        )
    }

    fn ed_pair() -> (String, String) {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        (kp.serialize_pem(), kp.public_key_pem())
    }

    #[test]
    fn eddsa_and_algorithm_confusion() {
        let (private, public) = ed_pair();
        let cfg = JwtConfig::from_public_key_pem(PublicKeyAlg::EdDsa, &public).unwrap();
        let v = cfg.verifier().unwrap();
        let claims = json!({"sub": "erin", "exp": now() + 60, "aud": "nexus"});
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::EdDSA),
            &claims,
            &EncodingKey::from_ed_pem(private.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(v.check(&t), Ok("erin".into()));
        // HS256 signed with the public key's bytes (the classic confusion) is refused.
        let forged = hs(claims.clone(), public.as_bytes());
        assert_eq!(v.check(&forged), Err(AuthError::WrongAlgorithm));
        // An HS256 verifier refuses an EdDSA token.
        assert_eq!(hs_verifier().check(&t), Err(AuthError::WrongAlgorithm));
        assert!(JwtConfig::from_public_key_pem(PublicKeyAlg::EdDsa, "junk").is_err());
        assert!(JwtConfig::from_public_key_pem(PublicKeyAlg::Rs256, &public).is_err());
    }

    #[test]
    fn rs256_and_confusion() {
        let (private, public) = rsa_pair();
        let v = JwtConfig::from_public_key_pem(PublicKeyAlg::Rs256, &public)
            .unwrap()
            .verifier()
            .unwrap();
        let claims = json!({"sub": "rita", "exp": now() + 60, "aud": "nexus"});
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &claims,
            &EncodingKey::from_rsa_pem(private.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(v.check(&t), Ok("rita".into()));
        assert_eq!(
            v.check(&hs(claims, public.as_bytes())),
            Err(AuthError::WrongAlgorithm)
        );
    }

    #[test]
    fn audience_and_issuer() {
        let cfg = JwtConfig::hs256(SECRET)
            .unwrap()
            .with_audience("nexus")
            .with_issuer("temporal");
        let v = cfg.verifier().unwrap();
        let good = json!({"sub": "a", "exp": now() + 60, "aud": "nexus", "iss": "temporal"});
        assert_eq!(v.check(&hs(good, SECRET)), Ok("a".into()));
        let t = hs(
            json!({"sub": "a", "exp": now() + 60, "aud": "x", "iss": "temporal"}),
            SECRET,
        );
        assert_eq!(v.check(&t), Err(AuthError::BadAudience));
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "a", "exp": now() + 60, "iss": "temporal"}),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(v.check(&t), Err(AuthError::BadAudience));
        let t = hs(
            json!({"sub": "a", "exp": now() + 60, "aud": "nexus", "iss": "x"}),
            SECRET,
        );
        assert_eq!(v.check(&t), Err(AuthError::BadIssuer));
        let t = mint_token(&cfg, "m", Duration::from_secs(60)).unwrap();
        assert_eq!(v.check(&t), Ok("m".into()));
    }

    #[test]
    fn config_errors_and_debug_hide_secrets() {
        assert!(matches!(
            JwtConfig::hs256(b"short".to_vec()),
            Err(JwtConfigError::SecretTooShort(5))
        ));
        let cfg = JwtConfig::hs256(SECRET).unwrap();
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("0123456789abcdef"), "{dbg}");
        assert!(mint_token(&cfg, "", Duration::from_secs(60)).is_err());
        assert!(mint_token(&cfg, "a", Duration::ZERO).is_err());
        assert!(matches!(
            mint_token(&cfg, "a", DEFAULT_MAX_TTL + Duration::from_secs(1)),
            Err(JwtConfigError::BadTtl(_))
        ));
        let (_, public) = ed_pair();
        let ed = JwtConfig::from_public_key_pem(PublicKeyAlg::EdDsa, &public).unwrap();
        assert!(matches!(
            mint_token(&ed, "a", Duration::from_secs(60)),
            Err(JwtConfigError::CannotMint("EdDSA"))
        ));
        assert_eq!(
            "rs256".parse::<PublicKeyAlg>().unwrap(),
            PublicKeyAlg::Rs256
        );
        assert!("HS512".parse::<PublicKeyAlg>().is_err());
    }
}
