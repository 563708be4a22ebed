//! The IPFS Pinning Service API (spec v1.0.0) on each network: `<net>.pins.<domain>` and
//! `/network/<net>/pins`.
//!
//! Rooms: [`wire`] (query strings, bodies, `PinStatus` JSON, RFC 3339; pure), [`handlers`]
//! (the endpoints: method and path → role and ownership checks → the [`PinService`] call →
//! status and JSON). This file owns [`Failure`], the spec's error shape with its status codes.
//! The pipeline (`proxy`) authenticates the token (revocation, `net`, membership) and applies
//! the rate limits before a request gets here. It must not reach the orchestrator or the store:
//! every pinset operation goes through the leaf trait [`PinService`]
//! (`crate::pinsink`), which the orchestrator implements.
//!
//! [`PinService`]: crate::pinsink::PinService

pub mod handlers;
pub mod wire;

pub use handlers::{handle, Answer, Caller, MAX_BODY_BYTES};

use serde_json::{json, Value};

use crate::pinsink::PinServiceError;

/// A refusal in the spec's `Failure` shape: `{"error":{"reason":…,"details":…}}`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {details}")]
pub struct Failure {
    /// The HTTP status.
    pub status: u16,
    /// Upper-case, machine-readable (`BAD_REQUEST`, `NOT_FOUND`, …).
    pub reason: &'static str,
    /// What went wrong and what to do, for people.
    pub details: String,
}

impl Failure {
    pub fn new(status: u16, details: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason_of(status),
            details: details.into(),
        }
    }

    pub fn bad_request(details: impl Into<String>) -> Self {
        Self::new(400, details)
    }

    pub fn forbidden(details: impl Into<String>) -> Self {
        Self::new(403, details)
    }

    pub fn not_found(details: impl Into<String>) -> Self {
        Self::new(404, details)
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({"error": {"reason": self.reason, "details": self.details}})
    }
}

/// The `reason` the spec (or, where it names none, HTTP) gives a status.
pub fn reason_of(status: u16) -> &'static str {
    match status {
        400 => "BAD_REQUEST",
        401 => "UNAUTHORIZED",
        403 => "FORBIDDEN",
        404 => "NOT_FOUND",
        405 => "METHOD_NOT_ALLOWED",
        409 => "CONFLICT",
        413 => "PAYLOAD_TOO_LARGE",
        429 => "RATE_LIMITED",
        502 => "BAD_GATEWAY",
        503 => "SERVICE_UNAVAILABLE",
        504 => "GATEWAY_TIMEOUT",
        s if s >= 500 => "INTERNAL_SERVER_ERROR",
        _ => "ERROR",
    }
}

impl From<PinServiceError> for Failure {
    fn from(e: PinServiceError) -> Self {
        let status = match &e {
            PinServiceError::Invalid(_) => 400,
            PinServiceError::NotFound(_) => 404,
            PinServiceError::Conflict(_) => 409,
            PinServiceError::Unavailable(_) => 503,
            PinServiceError::Internal(_) => 500,
        };
        Self::new(status, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_have_the_spec_shape() {
        let f = Failure::from(PinServiceError::NotFound("no pin `x`".into()));
        assert_eq!(f.status, 404);
        assert_eq!(
            f.body(),
            json!({"error": {"reason": "NOT_FOUND", "details": "no pin `x`"}})
        );
        assert_eq!(
            Failure::from(PinServiceError::Invalid("x".into())).status,
            400
        );
        assert_eq!(
            Failure::from(PinServiceError::Conflict("x".into())).reason,
            "CONFLICT"
        );
        assert_eq!(reason_of(401), "UNAUTHORIZED");
        assert_eq!(reason_of(507), "INTERNAL_SERVER_ERROR");
    }
}
