//! Answers that are not forwards: [`ProxyError`] (each refusal's status and message) rendered
//! as JSON with the request id, and the status feature's JSON (what a tenant may know: no
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
            _ => None,
        }
    }

    pub(super) fn response(&self, request_id: &str) -> Response<ProxyBody> {
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
        let r = e.response("rid1");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(ProxyError::Timeout.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            ProxyError::Route(RouteError::BadPath("x")).status(),
            StatusCode::BAD_REQUEST
        );
    }
}
