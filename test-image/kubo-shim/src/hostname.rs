//! The gateway's host handling, as boxo's `gateway/hostname.go` (`NewHostnameHandler`) does it
//! for a path-form request: the host is `X-Forwarded-Host` when a request carries one, else
//! `Host`; on a *known gateway* (kubo's implicit `localhost`, plus `Gateway.PublicGateways`,
//! where `null` removes one) that uses subdomains, a request under one of its paths is answered
//! with the content and `301` + `Location: <scheme>://<cid>.ipfs.<host>/<rest>` (a CIDv0 as a
//! base32 CIDv1, as `toSubdomainURL` does). Owns only that decision; it serves nothing itself.
//! Not mirrored: wildcard hosts, DNSLink on unknown hosts, inlined DNSLink names, subdomain
//! requests (`<cid>.ipfs.localhost` as the host).

use crate::unixfs;
use axum::http::HeaderMap;
use serde_json::Value;
use std::collections::BTreeMap;

/// One known gateway host (`Gateway.PublicGateways.<host>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownGateway {
    pub host: String,
    pub paths: Vec<String>,
    pub use_subdomains: bool,
}

/// kubo's known gateways for a config (`core/corehttp/gateway.go`): the implicit
/// `localhost` subdomain gateway (paths `/ipfs/`, `/ipns/`), then every
/// `Gateway.PublicGateways` entry, `null` removing a host.
pub fn known_gateways(cfg: &Value) -> Vec<KnownGateway> {
    let mut map: BTreeMap<String, Option<KnownGateway>> = BTreeMap::new();
    map.insert(
        "localhost".into(),
        Some(KnownGateway {
            host: "localhost".into(),
            paths: vec!["/ipfs/".into(), "/ipns/".into()],
            use_subdomains: true,
        }),
    );
    if let Some(Value::Object(m)) = cfg.pointer("/Gateway/PublicGateways") {
        for (host, spec) in m {
            let gw = spec.as_object().map(|o| KnownGateway {
                host: host.clone(),
                paths: o
                    .get("Paths")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|p| p.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                use_subdomains: o
                    .get("UseSubdomains")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            });
            map.insert(host.clone(), gw);
        }
    }
    map.into_values().flatten().collect()
}

/// The host boxo reads: `X-Forwarded-Host` when present and not empty, else `Host`.
pub fn request_host(headers: &HeaderMap) -> Option<String> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    get("x-forwarded-host").or_else(|| get("host"))
}

/// `isKnownHostname`: the host as given, then without its port.
fn known<'a>(gateways: &'a [KnownGateway], host: &str) -> Option<&'a KnownGateway> {
    let bare = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    gateways
        .iter()
        .find(|g| g.host == host)
        .or_else(|| gateways.iter().find(|g| g.host == bare))
}

/// Where boxo redirects a path-form request (`toSubdomainURL`), or `None` when it serves it
/// as it is.
pub fn subdomain_redirect(
    gateways: &[KnownGateway],
    headers: &HeaderMap,
    path: &str,
    query: Option<&str>,
) -> Option<String> {
    let host = request_host(headers)?;
    let gw = known(gateways, &host)?;
    if !gw.use_subdomains || !gw.paths.iter().any(|p| path.starts_with(p.as_str())) {
        return None;
    }
    let mut parts = path.splitn(4, '/');
    let (_, ns, root) = (parts.next()?, parts.next()?, parts.next()?);
    let rest = parts.next().unwrap_or("");
    if root.is_empty() || !(ns == "ipfs" || ns == "ipns") {
        return None;
    }
    let root = if ns == "ipfs" {
        unixfs::cid_v1_base32(root).unwrap_or_else(|| root.to_string())
    } else {
        root.to_string()
    };
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    let scheme = if https { "https" } else { "http" };
    let query = query
        .filter(|q| !q.is_empty())
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    Some(format!("{scheme}://{root}.{ns}.{host}/{rest}{query}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    const V0: &str = "QmPZ9gcCEpqKTo6aq61g2nXGUhM4iCL3ewB6LDXZCtioEB";
    const V1: &str = "bafybeiasb5vpmaounyilfuxbd3lryvosl4yefqrfahsb2esg46q6tu6y5q";

    #[test]
    fn localhost_is_a_subdomain_gateway_unless_the_config_removes_it() {
        let default = known_gateways(&json!({}));
        assert_eq!(default.len(), 1);
        assert!(default[0].use_subdomains && default[0].host == "localhost");
        // nexus's node settings: no implicit localhost gateway.
        let nexus = known_gateways(&json!({"Gateway": {"PublicGateways": {"localhost": null}}}));
        assert!(nexus.is_empty());
        let other = known_gateways(
            &json!({"Gateway": {"PublicGateways": {"gw.example": {"Paths": ["/ipfs"], "UseSubdomains": false}}}}),
        );
        assert_eq!(other.len(), 2);
    }

    #[test]
    fn x_forwarded_host_wins_over_host_as_in_boxo() {
        let gws = known_gateways(&json!({}));
        let path = format!("/ipfs/{V0}");
        // Host alone: an address is not a known gateway; the content is served.
        let h = headers(&[("host", "127.0.0.1:8080")]);
        assert_eq!(subdomain_redirect(&gws, &h, &path, None), None);
        // X-Forwarded-Host: localhost → redirected to the subdomain, the CID as base32 v1.
        let h = headers(&[
            ("host", "127.0.0.1:8080"),
            ("x-forwarded-host", "localhost"),
        ]);
        assert_eq!(
            subdomain_redirect(&gws, &h, &format!("{path}/a/b"), Some("x=1")),
            Some(format!("http://{V1}.ipfs.localhost/a/b?x=1"))
        );
        // With a port (matched without it), and https from X-Forwarded-Proto.
        let h = headers(&[
            ("x-forwarded-host", "localhost:8080"),
            ("x-forwarded-proto", "https"),
        ]);
        assert_eq!(
            subdomain_redirect(&gws, &h, &path, None),
            Some(format!("https://{V1}.ipfs.localhost:8080/"))
        );
        // The node's settings from nexus: nothing is known, nothing redirects.
        let none = known_gateways(&json!({"Gateway": {"PublicGateways": {"localhost": null}}}));
        assert_eq!(subdomain_redirect(&none, &h, &path, None), None);
        // Paths outside the gateway's own are served as they are.
        let h = headers(&[("x-forwarded-host", "localhost")]);
        assert_eq!(subdomain_redirect(&gws, &h, "/api/v0/id", None), None);
    }
}
