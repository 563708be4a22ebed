//! Host and path routing: `(Host, path)` → network, feature and the exact path to forward.
//!
//! Owns the parsing of `<network>.<feature>.<domain>` hosts (features: `api`, `gateway`,
//! `status`, `pins`) and of the path form
//! `/network/<network>/<feature>/…`, and the normalisation that refuses path tricks (`..`,
//! `//`, percent-encoded slashes, dots or backslashes). Pure functions, no I/O. It must not
//! look at the registry, tokens or policy: it only says *where* a request claims to go.

use crate::names::is_dns_name;
use crate::node::NetworkName;

/// What a request asks for on a network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Feature {
    /// The kubo RPC API (`/api/v0/…`).
    Api,
    /// The kubo gateway (`/ipfs/…`, `/ipns/…`).
    Gateway,
    /// The delegator's own JSON status of the network.
    Status,
    /// The IPFS Pinning Service API on the network's pinset (`/pins`, `/pins/{requestid}`).
    Pins,
}

impl Feature {
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::Api => "api",
            Feature::Gateway => "gateway",
            Feature::Status => "status",
            Feature::Pins => "pins",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "api" => Some(Feature::Api),
            "gateway" => Some(Feature::Gateway),
            "status" => Some(Feature::Status),
            "pins" => Some(Feature::Pins),
            _ => None,
        }
    }
}

impl std::fmt::Display for Feature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which routing form matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    Host,
    Path,
}

/// A routed request. `path` is normalised and is exactly what will be forwarded (without the
/// query, which is forwarded unchanged).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub network: NetworkName,
    pub feature: Feature,
    pub path: String,
    pub form: Form,
}

/// Why a request cannot be routed. Every variant is answered with a JSON error, never a forward.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("unknown host: this server answers only for its configured domain")]
    UnknownHost,
    #[error("no such route: use <network>.<api|gateway|status|pins>.<domain> or /network/<network>/<api|gateway|status|pins>/…")]
    NoRoute,
    #[error("`{0}` is not a valid network name")]
    BadNetwork(String),
    #[error("unsupported feature `{0}`: use api, gateway, status or pins")]
    BadFeature(String),
    #[error("malformed path: {0}")]
    BadPath(&'static str),
}

impl RouteError {
    /// 404 for everything that does not name a route, 400 for a malformed path.
    pub fn status(&self) -> u16 {
        match self {
            RouteError::BadPath(_) => 400,
            _ => 404,
        }
    }
}

/// Normalises a configured domain: lowercase, no trailing dot, DNS characters only.
pub fn normalise_domain(domain: &str) -> Option<String> {
    let d = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    is_dns_name(&d).then_some(d)
}

/// The host part of a `Host` header (port removed, lowercase, no trailing dot), or `None` when
/// it is not a plain DNS name (IPv6 literals, junk, a non-numeric port).
pub fn host_name(host: &str) -> Option<String> {
    let host = host.trim();
    if host.starts_with('[') {
        return None;
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) => {
            if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            name
        }
        None => host,
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty()
        || name.len() > 253
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return None;
    }
    Some(name.to_ascii_lowercase())
}

/// Checks a request path and returns it unchanged when it is safe to forward: it starts with
/// `/`, has no empty (`//`), `.` or `..` segment, no backslash or control character, and no
/// percent-encoded `/`, `\`, `.`, NUL or malformed escape.
pub fn check_path(path: &str) -> Result<&str, RouteError> {
    if !path.starts_with('/') {
        return Err(RouteError::BadPath("the path must start with /"));
    }
    let bytes = path.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b < 0x20 || b == 0x7f || b == b'\\' || !b.is_ascii() {
            return Err(RouteError::BadPath("forbidden character in path"));
        }
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) else {
                return Err(RouteError::BadPath("malformed percent-encoding"));
            };
            if matches!(v, b'/' | b'\\' | b'.' | 0) || v < 0x20 {
                return Err(RouteError::BadPath(
                    "percent-encoded slash, dot, backslash or control character",
                ));
            }
        }
    }
    // Segments between slashes; a single trailing slash is allowed ("/ipfs/cid/").
    let inner = &path[1..];
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    if !inner.is_empty() {
        for seg in inner.split('/') {
            match seg {
                "" => return Err(RouteError::BadPath("empty path segment (//)")),
                "." | ".." => return Err(RouteError::BadPath("dot segment in path")),
                _ => {}
            }
        }
    } else if path.len() > 1 {
        return Err(RouteError::BadPath("empty path segment (//)"));
    }
    Ok(path)
}

/// Routes a request by its (already chosen) host and its raw path (no query).
///
/// - `<network>.<feature>.<domain>`: the path is forwarded as is (after [`check_path`]).
/// - `<domain>` itself: the path form. `/network/<net>/api/v0/…` forwards `/api/v0/…` (the
///   `/network/<net>` prefix is stripped, so the API path reads as on the host form);
///   `/network/<net>/gateway/ipfs/…` forwards `/ipfs/…`; `/network/<net>/status[/]`;
///   `/network/<net>/pins[/…]` is `/pins[/…]` (the Pinning Service API, answered here).
/// - Any other host → [`RouteError::UnknownHost`].
pub fn route(host: &str, path: &str, domain: &str) -> Result<Route, RouteError> {
    let name = host_name(host).ok_or(RouteError::UnknownHost)?;
    if name == domain {
        return route_path(path);
    }
    let prefix = name
        .strip_suffix(domain)
        .and_then(|p| p.strip_suffix('.'))
        .ok_or(RouteError::UnknownHost)?;
    let (net, feature) = prefix.split_once('.').ok_or(RouteError::NoRoute)?;
    if feature.contains('.') {
        return Err(RouteError::NoRoute);
    }
    let network = network(net)?;
    let feature = Feature::parse(feature).ok_or_else(|| RouteError::BadFeature(short(feature)))?;
    let path = check_path(path)?.to_owned();
    Ok(Route {
        network,
        feature,
        path,
        form: Form::Host,
    })
}

fn route_path(path: &str) -> Result<Route, RouteError> {
    let rest = path.strip_prefix("/network/").ok_or(RouteError::NoRoute)?;
    let (net, rest) = rest.split_once('/').unwrap_or((rest, ""));
    let network = network(net)?;
    let (feature, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let feature = Feature::parse(feature).ok_or_else(|| RouteError::BadFeature(short(feature)))?;
    let forwarded = match feature {
        // `/network/n/api/v0/id` → `/api/v0/id`.
        Feature::Api => format!("/api{tail}"),
        Feature::Gateway if tail.is_empty() => return Err(RouteError::NoRoute),
        Feature::Gateway => tail.to_owned(),
        Feature::Status if tail.is_empty() || tail == "/" => "/".to_owned(),
        Feature::Status => return Err(RouteError::NoRoute),
        // `/network/n/pins/abc` → `/pins/abc`, as on the host form.
        Feature::Pins => format!("/pins{tail}"),
    };
    check_path(&forwarded)?;
    Ok(Route {
        network,
        feature,
        path: forwarded,
        form: Form::Path,
    })
}

fn network(s: &str) -> Result<NetworkName, RouteError> {
    NetworkName::new(s).map_err(|_| RouteError::BadNetwork(short(s)))
}

fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D: &str = "nexus.example.com";

    fn ok(host: &str, path: &str) -> Route {
        route(host, path, D).unwrap_or_else(|e| panic!("{host} {path}: {e}"))
    }

    #[test]
    fn host_form() {
        let r = ok("acme.api.nexus.example.com", "/api/v0/id");
        assert_eq!(
            (r.network.as_str(), r.feature, r.path.as_str(), r.form),
            ("acme", Feature::Api, "/api/v0/id", Form::Host)
        );
        let r = ok("ACME.Gateway.NEXUS.example.com:8443", "/ipfs/Qm");
        assert_eq!((r.network.as_str(), r.feature), ("acme", Feature::Gateway));
        let r = ok("acme.status.nexus.example.com.", "/");
        assert_eq!(r.feature, Feature::Status);
    }

    #[test]
    fn path_form_strips_the_prefix() {
        let r = ok("nexus.example.com", "/network/acme/api/v0/add");
        assert_eq!((r.path.as_str(), r.form), ("/api/v0/add", Form::Path));
        let r = ok("nexus.example.com:80", "/network/acme/gateway/ipfs/Qm/");
        assert_eq!(
            (r.feature, r.path.as_str()),
            (Feature::Gateway, "/ipfs/Qm/")
        );
        assert_eq!(ok(D, "/network/acme/status").path, "/");
        assert_eq!(ok(D, "/network/acme/status/").feature, Feature::Status);
        assert_eq!(ok(D, "/network/acme/api").path, "/api");
        let r = ok(D, "/network/acme/pins");
        assert_eq!((r.feature, r.path.as_str()), (Feature::Pins, "/pins"));
        assert_eq!(ok(D, "/network/acme/pins/ab12").path, "/pins/ab12");
        let r = ok("acme.pins.nexus.example.com", "/pins/ab12");
        assert_eq!(
            (r.network.as_str(), r.feature, r.path.as_str(), r.form),
            ("acme", Feature::Pins, "/pins/ab12", Form::Host)
        );
    }

    #[test]
    fn other_hosts_and_routes_are_refused() {
        for (host, path, want) in [
            (
                "evil.com",
                "/network/acme/api/v0/id",
                RouteError::UnknownHost,
            ),
            (
                "acme.api.nexus.example.com.evil.com",
                "/",
                RouteError::UnknownHost,
            ),
            (
                "xnexus.example.com",
                "/network/a/api",
                RouteError::UnknownHost,
            ),
            ("[::1]:80", "/", RouteError::UnknownHost),
            ("acme.api.nexus.example.com:x", "/", RouteError::UnknownHost),
            ("a b.api.nexus.example.com", "/", RouteError::UnknownHost),
            ("api.nexus.example.com", "/", RouteError::NoRoute),
            ("x.acme.api.nexus.example.com", "/", RouteError::NoRoute),
            (
                "acme.swarm.nexus.example.com",
                "/",
                RouteError::BadFeature("swarm".into()),
            ),
            ("Ac_me.api.nexus.example.com", "/", RouteError::UnknownHost),
            (
                "-acme.api.nexus.example.com",
                "/",
                RouteError::BadNetwork("-acme".into()),
            ),
            (D, "/", RouteError::NoRoute),
            (D, "/network/", RouteError::BadNetwork(String::new())),
            (D, "/network/acme", RouteError::BadFeature(String::new())),
            (
                D,
                "/network/acme/swarm/x",
                RouteError::BadFeature("swarm".into()),
            ),
            (D, "/network/acme/gateway", RouteError::NoRoute),
            (D, "/network/acme/status/x", RouteError::NoRoute),
            (
                D,
                "/network/ACME/api/v0/id",
                RouteError::BadNetwork("ACME".into()),
            ),
        ] {
            assert_eq!(route(host, path, D), Err(want), "{host} {path}");
        }
    }

    #[test]
    fn path_tricks_are_refused() {
        for path in [
            "/api/v0/../../debug/pprof",
            "/api/v0/./config",
            "/api//v0/id",
            "/api/v0/config%2fshow",
            "/api/v0/config%2Fshow",
            "/api/v0/%2e%2e/x",
            "/ipfs/a%5cb",
            "/ipfs/a\\b",
            "/ipfs/%zz",
            "/ipfs/%",
            "/ipfs/a%00",
            "//",
            "relative",
        ] {
            assert!(
                matches!(
                    route("a.api.nexus.example.com", path, D),
                    Err(RouteError::BadPath(_))
                ),
                "{path}"
            );
        }
        assert!(matches!(
            route(D, "/network/acme/api/v0/../../debug", D),
            Err(RouteError::BadPath(_))
        ));
        assert!(matches!(
            route(D, "/network/acme/gateway//ipfs", D),
            Err(RouteError::BadPath(_))
        ));
        assert_eq!(check_path("/ipfs/Qm%20x/"), Ok("/ipfs/Qm%20x/"));
    }

    #[test]
    fn domains_are_normalised() {
        assert_eq!(normalise_domain("Nexus.Example.COM."), Some(D.to_owned()));
        assert_eq!(normalise_domain(""), None);
        assert_eq!(normalise_domain("a..b"), None);
        assert_eq!(normalise_domain("a_b.c"), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn never_panics_and_names_are_valid(host in "\\PC{0,40}", path in "\\PC{0,60}") {
            if let Ok(r) = route(&host, &path, D) {
                prop_assert!(NetworkName::new(r.network.as_str()).is_ok());
                prop_assert!(check_path(&r.path).is_ok());
                prop_assert!(!r.path.contains("/../") && !r.path.contains("//"));
            }
        }

        #[test]
        fn structured_inputs_never_cross_networks(
            a in "[a-z][a-z0-9]{0,6}",
            b in "[a-z][a-z0-9]{0,6}",
            feature in prop::sample::select(vec!["api", "gateway", "status", "pins", "swarm", "API", ""]),
            tail in "(/[a-zA-Z0-9.%/]{0,8}){0,4}",
            port in prop::option::of(0u32..70000),
            upper in any::<bool>(),
        ) {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let apex = if upper { D.to_ascii_uppercase() } else { D.to_owned() };
            // Path form: whatever is routed belongs to the network named in the prefix.
            let path = format!("/network/{a}/{feature}{tail}");
            if let Ok(r) = route(&format!("{apex}{port}"), &path, D) {
                prop_assert_eq!(r.network.as_str(), a.as_str());
                prop_assert_eq!(r.form, Form::Path);
            }
            // Host form: the host's network wins; a path naming another network stays a path.
            let host = format!("{b}.{feature}.{apex}{port}");
            if let Ok(r) = route(&host, &path, D) {
                prop_assert_eq!(r.network.as_str(), b.as_str());
                prop_assert_eq!(r.path, path.clone());
            }
            // A foreign domain never routes.
            let foreign = format!("{a}.api.{b}.example.org{port}");
            prop_assert_eq!(route(&foreign, &path, D), Err(RouteError::UnknownHost));
        }
    }
}
