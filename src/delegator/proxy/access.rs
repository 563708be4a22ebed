//! The service function and what it records: every outcome becomes a response, then one
//! request counter, one latency sample and one access line, outside the request's span. Must
//! not log tokens or bodies, nor decide anything about the request (the pipeline does).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response};
use tracing::Instrument;

use super::headers::{confine_shared_origin, request_id, X_REQUEST_ID};
use super::response::ProxyError;
use super::{proxy, ConnInfo, ProxyBody, Shared};
use crate::delegator::route::{Feature, Form};
use crate::node::endpoint::Endpoint;
use crate::telemetry::{access_log, names};

/// The access line's `tracing` target (the log filter turns it on and off).
const ACCESS_TARGET: &str = "nexus::delegator::access";

/// What the access log line says about a request, filled in as it is handled.
#[derive(Default)]
pub(super) struct Trace {
    pub(super) network: Option<String>,
    pub(super) feature: Option<Feature>,
    pub(super) user: Option<String>,
    pub(super) node: Option<Endpoint>,
    /// The network is one the registry lists (only then is it a metric label).
    pub(super) known: bool,
    /// Which routing form matched (the path form is the shared origin).
    pub(super) form: Option<Form>,
}

/// The service function: never fails, every outcome is a response.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let start = Instant::now();
    let request_id = request_id(&shared.cfg, conn, req.headers());
    // DEBUG: at the default INFO filter the span is never created (the access line carries the
    // request id); with `debug` the warnings inside the request carry it too.
    let span = tracing::debug_span!("request", request_id = %request_id);
    let method = req.method().clone();
    let path: String = req.uri().path().chars().take(256).collect();
    let mut trace = Trace::default();
    let mut refusal = None;
    let resp = async {
        let mut resp = match proxy(&shared, conn, req, &request_id, &mut trace).await {
            Ok(r) => r,
            Err(e) => {
                if matches!(e, ProxyError::BadGateway | ProxyError::Timeout) {
                    tracing::warn!(error = %e, request_id = %request_id, "upstream failure");
                }
                refusal = e.refusal_reason();
                e.response(&request_id, trace.feature == Some(Feature::Pins))
            }
        };
        if trace.form == Some(Form::Path) {
            confine_shared_origin(resp.headers_mut());
        }
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            resp.headers_mut().insert(X_REQUEST_ID, v);
        }
        resp
    }
    .instrument(span)
    .await;
    // Metrics and the access line, outside the request's span: the line carries the request id
    // itself, and a JSON log does not have to serialise the span again for every request.
    let network = match (&trace.network, trace.known) {
        (Some(n), true) => n.clone(),
        _ => "-".to_owned(),
    };
    let feature = trace.feature.map(Feature::as_str).unwrap_or("-");
    metrics::counter!(
        names::DELEGATOR_REQUESTS,
        "network" => network.clone(),
        "feature" => feature,
        "status" => status_label(resp.status())
    )
    .increment(1);
    if let Some(reason) = refusal {
        metrics::counter!(
            names::DELEGATOR_REFUSALS,
            "network" => network.clone(),
            "reason" => reason
        )
        .increment(1);
    }
    metrics::histogram!(names::DELEGATOR_DURATION, "network" => network, "feature" => feature)
        .record(start.elapsed().as_secs_f64());
    if tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO) {
        let line = Line {
            request_id: &request_id,
            trace: &trace,
            method: method.as_str(),
            path: &path,
            status: resp.status().as_u16(),
            latency_ms: start.elapsed().as_secs_f64() * 1000.0,
            peer: conn.peer_text.as_str(),
        };
        line.log();
    }
    Ok(resp)
}

/// A status code as a metric label: the common ones without formatting or allocating.
fn status_label(status: hyper::StatusCode) -> metrics::SharedString {
    let s = match status.as_u16() {
        200 => "200",
        201 => "201",
        204 => "204",
        206 => "206",
        301 => "301",
        302 => "302",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        413 => "413",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        507 => "507",
        other => return metrics::SharedString::from_owned(other.to_string()),
    };
    metrics::SharedString::const_str(s)
}

/// One access line: what [`handle`] knows about a request once it has answered.
struct Line<'a> {
    request_id: &'a str,
    trace: &'a Trace,
    method: &'a str,
    path: &'a str,
    status: u16,
    latency_ms: f64,
    peer: &'a str,
}

impl Line<'_> {
    /// Hands the line to the access-log writer (JSON formatted by hand, written off the
    /// request path), or, when there is none (text logs, tests), logs it through `tracing`.
    fn log(&self) {
        if !access_log::emit("request", |l| self.fields(l)) {
            self.log_tracing();
        }
    }

    /// The line's fields, in the order of the `tracing` event of [`Line::log_tracing`].
    fn fields(&self, l: &mut access_log::JsonLine<'_>) {
        l.str("request_id", self.request_id)
            .str("network", self.trace.network.as_deref().unwrap_or("-"))
            .str(
                "feature",
                self.trace.feature.map(Feature::as_str).unwrap_or("-"),
            )
            .str("method", self.method)
            .str("path", self.path)
            .u64("status", u64::from(self.status))
            .f64("latency_ms", self.latency_ms)
            .str("user", self.trace.user.as_deref().unwrap_or("-"));
        match &self.trace.node {
            Some(n) => l.display("node", n),
            None => l.str("node", "-"),
        };
        l.str("peer", self.peer).end(ACCESS_TARGET);
    }

    /// The same line as a `tracing` event.
    fn log_tracing(&self) {
        let network = self.trace.network.as_deref().unwrap_or("-");
        let feature = self.trace.feature.map(Feature::as_str).unwrap_or("-");
        let user = self.trace.user.as_deref().unwrap_or("-");
        tracing::info!(
            target: ACCESS_TARGET,
            request_id = %self.request_id,
            network,
            feature,
            method = %self.method,
            path = %self.path,
            status = self.status,
            latency_ms = self.latency_ms,
            user,
            node = %self.trace.node.as_ref().map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
            peer = %self.peer,
            "request"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn status_labels_are_the_codes() {
        for code in 100..=599 {
            if let Ok(s) = hyper::StatusCode::from_u16(code) {
                assert_eq!(&*status_label(s), code.to_string());
            }
        }
    }

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            crate::sync::lock(&self.0).extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Drops the timestamp (the two lines are written at different instants).
    fn without_timestamp(line: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(line).expect("valid JSON");
        assert!(
            v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{line}"
        );
        let (_, rest) = line
            .split_once("\",\"level\"")
            .expect("level after timestamp");
        rest.to_owned()
    }

    /// The hand-written line is byte for byte what `tracing`'s JSON formatter wrote for the
    /// same request (same fields, order, numbers and escaping), hostile values included.
    #[test]
    fn the_line_is_what_the_json_formatter_wrote() {
        let hostile = "a\"b\\c\n\r\t\u{0}\u{1b}[31m\u{7f}é\u{2028}}{\"x\":1";
        let traces = [
            Trace::default(),
            Trace {
                network: Some(hostile.to_owned()),
                feature: Some(Feature::Gateway),
                user: Some(hostile.to_owned()),
                node: Some(Endpoint::Unix(format!("/tmp/{hostile}").into())),
                known: true,
                form: Some(Form::Path),
            },
            Trace {
                network: Some("acme".into()),
                feature: Some(Feature::Api),
                user: Some("alice".into()),
                node: Some(Endpoint::Tcp("127.0.0.1:4001".parse().unwrap())),
                known: true,
                form: None,
            },
        ];
        for trace in &traces {
            let line = Line {
                request_id: hostile,
                trace,
                method: "GET",
                path: hostile,
                status: 502,
                latency_ms: 0.123_456_789,
                peer: "::1",
            };
            let mut ours = Vec::new();
            let mut l = access_log::JsonLine::begin(&mut ours, "INFO", "request");
            line.fields(&mut l);
            let ours = String::from_utf8(ours).expect("UTF-8");
            assert_eq!(ours.matches('\n').count(), 1, "one line: {ours}");
            assert!(ours.ends_with('\n'));

            let capture = Capture::default();
            let out = capture.clone();
            let subscriber = tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_writer(move || out.clone())
                .finish();
            tracing::subscriber::with_default(subscriber, || line.log_tracing());
            let theirs = String::from_utf8(crate::sync::lock(&capture.0).clone()).expect("UTF-8");

            let v: serde_json::Value = serde_json::from_str(&ours).expect("valid JSON");
            for key in [
                "request_id",
                "network",
                "feature",
                "method",
                "path",
                "status",
                "latency_ms",
                "user",
                "node",
                "peer",
                "message",
                "target",
                "level",
            ] {
                assert!(!v[key].is_null(), "{key} missing: {ours}");
            }
            assert_eq!(v["request_id"], hostile);
            assert_eq!(without_timestamp(&ours), without_timestamp(&theirs));
        }
    }
}
