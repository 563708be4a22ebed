//! CORS: whether a network allows an origin, the answer to an allowed preflight, and the
//! headers added to forwarded answers. Must not let a foreign origin reach a node (the pipeline
//! refuses it before forwarding).

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};

use super::response::full;
use super::ProxyBody;
use crate::orchestrator::registry::NetworkEntry;

pub(super) fn origin_allowed(entry: &NetworkEntry, origin: &HeaderValue) -> bool {
    let Ok(o) = origin.to_str() else {
        return false;
    };
    entry
        .access
        .allowed_origins
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(o))
}

pub(super) fn add_cors(h: &mut HeaderMap, origin: Option<&HeaderValue>) {
    if let Some(o) = origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o.clone());
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(
                "X-Request-Id, X-Stream-Output, X-Chunked-Output, X-Content-Length, X-Ipfs-Path, Etag",
            ),
        );
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// The answer to an allowed CORS preflight.
pub(super) fn preflight(origin: &HeaderValue, req: &HeaderMap) -> Response<ProxyBody> {
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, POST, DELETE, OPTIONS"),
    );
    let allow_headers = req
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or(HeaderValue::from_static("Authorization, Content-Type"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::StatusCode;

    fn entry(origins: &[&str]) -> NetworkEntry {
        NetworkEntry {
            name: crate::node::NetworkName::new("cors").unwrap(),
            disk_bytes: None,
            access: crate::access::Access {
                allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
            nodes: vec![],
        }
    }

    #[test]
    fn cors_origins_and_preflight() {
        let app = HeaderValue::from_static("https://app.example");
        assert!(origin_allowed(&entry(&["https://app.example"]), &app));
        assert!(origin_allowed(&entry(&["https://APP.example/"]), &app));
        assert!(origin_allowed(&entry(&["*"]), &app));
        assert!(!origin_allowed(&entry(&[]), &app));
        assert!(!origin_allowed(&entry(&["https://app.example.evil"]), &app));
        let mut req = HeaderMap::new();
        req.insert(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("authorization"),
        );
        let resp = preflight(&app, &req);
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            resp.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example"
        );
        assert_eq!(
            resp.headers()[header::ACCESS_CONTROL_ALLOW_HEADERS],
            "authorization"
        );
        let mut h = HeaderMap::new();
        add_cors(&mut h, Some(&app));
        assert_eq!(h[header::VARY], "Origin");
    }
}
