//! API-key authentication for the gRPC API.
//!
//! Owns the check of `authorization: Bearer <api key>` against the configured keys (several,
//! for rotation), compared in constant time. It must not log or echo a key, and it must not
//! know what the RPCs do.

use std::sync::Arc;

use tonic::{Request, Status};

use crate::secret::Secret;

/// The set of accepted API keys; cheap to clone into every intercepted service.
#[derive(Clone, Debug)]
pub struct ApiKeys {
    keys: Arc<Vec<Secret>>,
}

/// Equal in time independent of where the inputs differ (the length of `b` may leak).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, &y) in b.iter().enumerate() {
        let x = a.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    diff == 0
}

impl ApiKeys {
    /// Keys must be non-empty; the configuration module enforces their strength.
    pub fn new<I, S>(keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Secret>,
    {
        Self {
            keys: Arc::new(
                keys.into_iter()
                    .map(Into::into)
                    .filter(|k| !k.is_empty())
                    .collect(),
            ),
        }
    }

    /// Whether `presented` is one of the keys. Every key is compared, so timing does not tell
    /// which one (or how much of one) matched.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        self.keys.iter().fold(false, |ok, key| {
            constant_time_eq(presented, key.expose().as_bytes()) | ok
        })
    }

    /// The interceptor: refuses a call without a valid bearer key.
    #[allow(clippy::result_large_err)]
    pub fn check<T>(&self, req: Request<T>) -> Result<Request<T>, Status> {
        let Some(value) = req.metadata().get("authorization") else {
            return Err(Status::unauthenticated(
                "missing API key: send `authorization: Bearer <api key>` (the CLI reads it from \
                 the configuration, NEXUS_CLIENT_API_KEY or --api-key)",
            ));
        };
        let presented = value
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .or_else(|| value.as_bytes().strip_prefix(b"bearer "));
        match presented {
            Some(key) if self.accepts(key) => Ok(req),
            Some(_) => Err(Status::unauthenticated(
                "invalid API key: check grpc.api_keys in the daemon's configuration",
            )),
            None => Err(Status::unauthenticated(
                "malformed authorization header: use `Bearer <api key>`",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(auth: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(a) = auth {
            r.metadata_mut()
                .insert("authorization", a.parse().expect("ascii"));
        }
        r
    }

    #[test]
    fn keys_are_checked_and_rotation_works() {
        let keys = ApiKeys::new([
            "old-key-0123456789abcdef0123456789",
            "new-key-0123456789abcdef0123456789",
        ]);
        assert!(keys
            .check(req(Some("Bearer old-key-0123456789abcdef0123456789")))
            .is_ok());
        assert!(keys
            .check(req(Some("Bearer new-key-0123456789abcdef0123456789")))
            .is_ok());
        for bad in [
            None,
            Some("Bearer "),
            Some("Bearer new-key"),
            Some("Bearer new-key-0123456789abcdef0123456789x"),
            Some("new-key-0123456789abcdef0123456789"),
            Some("Basic bmV3LWtleQ=="),
        ] {
            let err = keys.check(req(bad)).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{bad:?}");
            assert!(!err.message().contains("0123456789"), "key echoed");
        }
        assert!(!format!("{keys:?}").contains("key-0"));
        assert!(!ApiKeys::new([""]).accepts(b""));
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"abcd", b"abc"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
