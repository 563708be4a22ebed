//! Answers that are not forwards: [`ProxyError`] (each refusal's status and message) rendered
//! as JSON with the request id (or, on the Pinning Service API, in the spec's `Failure` shape),
//! the Pinning Service API's answers, and the status feature's JSON (what a tenant may know: no
//! users, ports or keys). Must not put a token or a secret in an answer.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Response, StatusCode};

use super::quota::QuotaError;
use super::ProxyBody;
use crate::delegator::auth::AuthError;
use crate::delegator::policy::PolicyError;
use crate::delegator::route::RouteError;
use crate::orchestrator::registry::NetworkEntry;

/// Every answer that is not a forward: a status and a message, rendered as JSON.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Ambiguous(#[from] super::AmbiguousHost),
    #[error("unknown network `{0}`")]
    UnknownNetwork(String),
    #[error("network `{0}` has no ready node right now")]
    NoReadyNode(String),
    #[error("{0}")]
    Unauthorized(#[from] AuthError),
    #[error("user is not a member of network `{0}`")]
    NotMember(String),
    #[error("this token is limited to other networks than `{0}`")]
    TokenNetwork(String),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("the gateway serves only /ipfs/… and /ipns/… paths")]
    GatewayPath,
    #[error("method {0} is not allowed here")]
    Method(Method),
    #[error("origin not allowed for network `{0}`")]
    Origin(String),
    #[error("request body larger than the configured limit of {0} bytes")]
    TooLarge(u64),
    #[error(transparent)]
    Disk(#[from] QuotaError),
    #[error("the network's nodes could not be reached")]
    BadGateway,
    #[error("the node did not answer in time")]
    Timeout,
    #[error(transparent)]
    Limited(#[from] super::LimitError),
    /// A refusal of the Pinning Service API, already in its own terms.
    #[error(transparent)]
    PinApi(#[from] crate::delegator::pinsvc::Failure),
    #[error("/ipns/ names that need DNS are not resolved on this public gateway: use /ipns/<key> or /ipfs/<cid> (the operator can allow them: nexus network update <net> --ipns-dns true)")]
    IpnsDns,
}

impl ProxyError {
    pub(super) fn status(&self) -> StatusCode {
        let code = match self {
            ProxyError::Route(e) => e.status(),
            ProxyError::Ambiguous(_) => 400,
            ProxyError::UnknownNetwork(_) => 404,
            ProxyError::NoReadyNode(_) => 503,
            ProxyError::Unauthorized(_) => 401,
            ProxyError::NotMember(_)
            | ProxyError::TokenNetwork(_)
            | ProxyError::Policy(_)
            | ProxyError::Origin(_) => 403,
            ProxyError::GatewayPath => 404,
            ProxyError::Method(_) => 405,
            ProxyError::TooLarge(_) => 413,
            ProxyError::Disk(e) => e.status().as_u16(),
            ProxyError::BadGateway => 502,
            ProxyError::Timeout => 504,
            ProxyError::Limited(_) => 429,
            ProxyError::IpnsDns => 403,
            ProxyError::PinApi(f) => f.status,
        };
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The refusal's reason label for `nexus_delegator_refusals_total`, for the refusals an
    /// operator watches for abuse; `None` for the rest.
    pub(super) fn refusal_reason(&self) -> Option<&'static str> {
        match self {
            ProxyError::Ambiguous(_) => Some("ambiguous_host"),
            ProxyError::Limited(e) => Some(e.reason()),
            ProxyError::IpnsDns => Some("ipns_dns"),
            ProxyError::Unauthorized(AuthError::Revoked) => Some("revoked"),
            ProxyError::Unauthorized(_) => Some("token"),
            ProxyError::NotMember(_) | ProxyError::TokenNetwork(_) => Some("membership"),
            ProxyError::Policy(PolicyError::Role { .. } | PolicyError::OutsideOwnDir(_)) => {
                Some("role")
            }
            ProxyError::Policy(_) => Some("policy"),
            ProxyError::PinApi(f) if f.status == 403 => Some("role"),
            _ => None,
        }
    }

    /// The answer: `{"error": …, "status": …, "request_id": …}`, or on the Pinning Service
    /// API (`failure_shape`) the spec's `{"error": {"reason": …, "details": …}}`.
    pub(super) fn response(&self, request_id: &str, failure_shape: bool) -> Response<ProxyBody> {
        let body = if failure_shape {
            match self {
                ProxyError::PinApi(f) => f.body(),
                e => crate::delegator::pinsvc::Failure::new(e.status().as_u16(), e.to_string())
                    .body(),
            }
        } else {
            let mut body = serde_json::json!({
                "error": self.to_string(),
                "status": self.status().as_u16(),
                "request_id": request_id,
            });
            // A 507 also gives its numbers: the limit and the use.
            if let (ProxyError::Disk(e), Some(obj)) = (self, body.as_object_mut()) {
                if let Some(serde_json::Value::Object(fields)) = e.fields() {
                    obj.extend(fields);
                }
            }
            body
        };
        let mut resp = json_response(self.status(), &body);
        if let ProxyError::Unauthorized(_) = self {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let ProxyError::Limited(e) = self {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(super::limit::retry_after(e.retry_after())),
            );
        }
        resp
    }
}

fn json_response(status: StatusCode, v: &serde_json::Value) -> Response<ProxyBody> {
    let mut resp = Response::new(full(Bytes::from(v.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A Pinning Service API answer: `status` with its JSON body, or none (202 on delete).
pub(super) fn answer(status: u16, body: Option<&serde_json::Value>) -> Response<ProxyBody> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match body {
        Some(v) => json_response(status, v),
        None => {
            let mut resp = Response::new(full(Bytes::new()));
            *resp.status_mut() = status;
            resp
        }
    }
}

pub(super) fn full(b: Bytes) -> ProxyBody {
    Full::new(b).map_err(|never| match never {}).boxed_unsync()
}

/// The status feature: what a tenant may know about the network (no users, ports or keys).
pub(super) fn status_response(entry: &NetworkEntry) -> Response<ProxyBody> {
    let nodes: Vec<_> = entry
        .nodes
        .iter()
        .map(|n| serde_json::json!({"index": n.index, "peer_id": n.peer_id}))
        .collect();
    json_response(
        StatusCode::OK,
        &serde_json::json!({
            "network": entry.name.as_str(),
            "ready_nodes": entry.nodes.len(),
            "gateway_public": entry.access.gateway_public,
            "nodes": nodes,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delegator::auth::AuthError;

    #[test]
    fn errors_are_json_without_secrets() {
        let e = ProxyError::Unauthorized(AuthError::Expired);
        let r = e.response("rid1", false);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(ProxyError::Timeout.status(), StatusCode::GATEWAY_TIMEOUT);
        // On the Pinning Service API every refusal has the spec's Failure shape.
        let r = e.response("rid1", true);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
        // The rate limiter's 429 keeps its Retry-After there.
        let r =
            ProxyError::Limited(super::super::LimitError::Rate("user", 3)).response("rid2", true);
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "3");
        let f = crate::delegator::pinsvc::Failure::new(429, "x");
        assert_eq!(f.reason, "RATE_LIMITED");
        assert_eq!(
            ProxyError::Route(RouteError::BadPath("x")).status(),
            StatusCode::BAD_REQUEST
        );
    }
}
