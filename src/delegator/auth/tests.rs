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
        include_str!("../testdata/rsa-test-only.key.pem").to_owned(),
        include_str!("../testdata/rsa-test-only.pub.pem").to_owned(),
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
