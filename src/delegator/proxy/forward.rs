//! The streaming forward with fail-over: the request goes to the first node that takes it, a
//! connect failure moves to the next, a read-only request that failed before any answer is
//! retried once. The body is never buffered: [`ReplayBody`] hands the untouched body to a
//! second attempt. Counts upstream errors; must not choose nodes (the pipeline does).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response};

use super::response::ProxyError;
use super::{BoxError, ProxyBody, Shared};
use crate::node::endpoint::Endpoint;
use crate::sync::lock;
use crate::telemetry::names;

/// Sends the request to the first node that takes it. A node is skipped when the connection
/// could not be made (nothing was sent), or, once per request, when the request failed before
/// any answer, its body was never read and it only reads (`retry_safe`). A timeout is never
/// retried.
#[allow(clippy::too_many_arguments)]
pub(super) async fn forward(
    shared: &Shared,
    network: &str,
    nodes: &[Endpoint],
    method: &Method,
    mut headers: HeaderMap,
    path_and_query: &str,
    body: ProxyBody,
    retry_safe: bool,
    timeout: Option<std::time::Duration>,
) -> Result<(Response<Incoming>, Endpoint), ProxyError> {
    let end = body.is_end_stream();
    let hint = body.size_hint();
    let slot = Arc::new(Mutex::new(Some(body)));
    let mut timed_out = false;
    let mut retried = false;
    for (i, node) in nodes.iter().enumerate() {
        let uri = node.uri(path_and_query);
        let mut req = Request::new(ReplayBody {
            slot: slot.clone(),
            body: None,
            end,
            hint,
        });
        *req.method_mut() = method.clone();
        *req.uri_mut() = uri.parse().map_err(|_| ProxyError::BadGateway)?;
        // The last attempt takes the headers; earlier ones copy them.
        *req.headers_mut() = if i + 1 < nodes.len() {
            headers.clone()
        } else {
            std::mem::take(&mut headers)
        };
        if let Ok(h) = HeaderValue::from_str(&node.host_header()) {
            req.headers_mut().insert(header::HOST, h);
        }
        let sent = shared.client.request(req);
        let result = match timeout {
            Some(t) => match tokio::time::timeout(t, sent).await {
                Ok(r) => r,
                Err(_) => {
                    upstream_error(network, "timeout");
                    return Err(ProxyError::Timeout);
                }
            },
            None => sent.await,
        };
        match result {
            Ok(resp) => return Ok((resp, node.clone())),
            // A body cut at the disk limit is the request's doing, not the node's: no retry,
            // no upstream error (the pipeline answers 507).
            Err(e) if super::quota::cut_at_limit(&e) => return Err(ProxyError::BadGateway),
            Err(e) => {
                let untouched = lock(&slot).is_some();
                let connect = e.is_connect();
                timed_out |= connect && is_timeout(&e);
                let more = i + 1 < nodes.len();
                upstream_error(
                    network,
                    if connect && is_timeout(&e) {
                        "timeout"
                    } else if connect {
                        "connect"
                    } else {
                        "other"
                    },
                );
                tracing::warn!(node = %node, connect, error = %error_chain(&e), "upstream request failed");
                // A request that broke a node must not break the next one as well: a
                // non-connect failure is retried once at most.
                if more && (connect || (untouched && retry_safe && !retried)) {
                    retried |= !connect;
                    continue;
                }
                return Err(if timed_out {
                    ProxyError::Timeout
                } else {
                    ProxyError::BadGateway
                });
            }
        }
    }
    Err(ProxyError::BadGateway)
}

fn upstream_error(network: &str, kind: &'static str) {
    metrics::counter!(
        names::DELEGATOR_UPSTREAM_ERRORS,
        "network" => network.to_owned(),
        "kind" => kind
    )
    .increment(1);
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        cur = c.source();
    }
    false
}

/// A request body that can be handed to a second attempt as long as the first never read it.
/// The real body waits in a shared slot and is taken on the first poll.
pub(crate) struct ReplayBody {
    slot: Arc<Mutex<Option<ProxyBody>>>,
    body: Option<ProxyBody>,
    end: bool,
    hint: SizeHint,
}

impl ReplayBody {
    /// A body for a request sent once, with no fail-over (the delegator's own calls to a node).
    pub(super) fn new(body: ProxyBody) -> Self {
        Self {
            end: body.is_end_stream(),
            hint: body.size_hint(),
            slot: Arc::new(Mutex::new(Some(body))),
            body: None,
        }
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.body.is_none() {
            this.body = lock(&this.slot).take();
        }
        match this.body.as_mut() {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(Some(Err("request body already consumed".into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.body {
            Some(b) => b.is_end_stream(),
            None => self.end,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.body {
            Some(b) => b.size_hint(),
            None => self.hint,
        }
    }
}
