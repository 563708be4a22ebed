//! The disk limit on writes: a network's `disk`, enforced per node by the delegator.
//!
//! Owns the one list of write commands ([`WRITES`]), each node's accounting (its repo's size as
//! the node last reported it, plus the bytes of request bodies in flight to it), the refusal
//! ([`QuotaError`], HTTP 507) and the two bodies that enforce it: a request body that ends with
//! an error once the node would pass its limit (so kubo aborts the write), and a response body
//! that keeps the request's share counted until the answer ends. A node is asked for its use by
//! [`repo_size`] only.
//!
//! It must not touch a request that is not a write (reads never wait for a measurement), buffer
//! a body, or choose the node a write goes to beyond skipping nodes whose use cannot be read.
//! kubo's own `Datastore.StorageMax` (a GC watermark) stays the second line.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};

use super::forward::ReplayBody;
use super::response::full;
use super::{BoxError, ProxyBody, Shared};
use crate::delegator::policy;
use crate::node::endpoint::Endpoint;
use crate::orchestrator::registry::{NetworkEntry, ReadyNode};
use crate::sync::lock;
use crate::telemetry::names;

/// RPC commands that store data in the node's repo, as rules (a rule matches the command and
/// its subcommands, whole segments, as in the allow-list). Read from kubo's RPC reference:
/// everything that imports bytes (`add`, `block/put`, `dag/put`, `dag/import`, `files/write`,
/// `tar/add`, `object/put`, `object/patch/append-data`, `object/patch/set-data`), fetches and
/// keeps content from elsewhere (`pin/add`, `pin/update`, `files/cp`, `urlstore/add`), or makes
/// new nodes (`files/mkdir`, `object/new`, `object/patch`). Only some are in the default
/// allow-list; the rest apply when a network's `api_allow` opens them. Commands that write only
/// small records (`name/publish`, `key/gen`, `files/mv`, `files/rm`) are not limited.
pub(crate) const WRITES: &[&str] = &[
    "add",
    "block/put",
    "dag/put",
    "dag/import",
    "pin/add",
    "pin/update",
    "files/write",
    "files/cp",
    "files/mkdir",
    "urlstore/add",
    "tar/add",
    "object/put",
    "object/new",
    "object/patch",
];

/// Whether a (checked) RPC command is a write the disk limit applies to.
pub(crate) fn is_write(command: &str) -> bool {
    WRITES.iter().any(|rule| policy::matches(rule, command))
}

/// How long a node's reported repo size is believed (a completed write makes it stale at once).
const FRESH: Duration = Duration::from_secs(1);
/// The longest a measurement may take (connect, answer and body).
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest `repo/stat` answer read.
const READ_MAX_BYTES: usize = 16 * 1024;
/// How long the rest of a cut body is still read (and dropped), so that a client still sending
/// it gets the 507 rather than a reset connection.
const LINGER: Duration = Duration::from_secs(10);
/// Above this many nodes remembered, nodes idle for [`PRUNE_IDLE`] are forgotten.
const PRUNE_ABOVE: usize = 1024;
const PRUNE_IDLE: Duration = Duration::from_secs(600);

/// Why a write is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum QuotaError {
    /// 507: the node's use plus this write would pass its limit.
    #[error(
        "disk limit reached on node {node} of network `{network}`: limit {limit} bytes, in use \
         {} bytes ({repo} in the repo, {in_flight} in flight){}",
        .repo.saturating_add(*.in_flight),
        write_text(.write)
    )]
    Full {
        network: String,
        node: u16,
        limit: u64,
        repo: u64,
        in_flight: u64,
        write: WriteSize,
    },
    /// 502: no node's use could be read, so no write is let through.
    #[error("the disk use of network `{0}`'s nodes could not be read; no write is let through")]
    Unmeasured(String),
}

/// What was known of the refused write's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteSize {
    /// Its `Content-Length`.
    Declared(u64),
    /// A streamed body, cut after this many bytes had been forwarded.
    Streamed(u64),
    /// A streamed body (or none) refused before any byte: the node is full.
    Unknown,
}

fn write_text(w: &WriteSize) -> String {
    match w {
        WriteSize::Declared(n) => format!("; this write of {n} bytes would pass it"),
        WriteSize::Streamed(n) => format!("; this write's body passed it after {n} bytes"),
        WriteSize::Unknown => "; the node is full".to_owned(),
    }
}

impl QuotaError {
    pub(super) fn status(&self) -> StatusCode {
        match self {
            QuotaError::Full { .. } => StatusCode::INSUFFICIENT_STORAGE,
            QuotaError::Unmeasured(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// The numbers of a 507, for the JSON error's own fields.
    pub(super) fn fields(&self) -> Option<serde_json::Value> {
        match self {
            QuotaError::Full {
                node,
                limit,
                repo,
                in_flight,
                ..
            } => Some(serde_json::json!({
                "node": node,
                "limit_bytes": limit,
                "used_bytes": repo.saturating_add(*in_flight),
            })),
            QuotaError::Unmeasured(_) => None,
        }
    }
}

/// Every node's accounting, by peer id (a node keeps its repo across restarts and new ports).
#[derive(Debug, Default)]
pub(crate) struct Quotas {
    nodes: Mutex<HashMap<String, Arc<NodeUse>>>,
}

/// One node: its use, and a lock so that one measurement at a time reaches it.
#[derive(Debug)]
struct NodeUse {
    state: Mutex<Use>,
    reading: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct Use {
    /// The repo's size as the node last reported it, plus the bytes of writes completed since.
    repo: u64,
    /// When `repo` was read; `None`: read it again before the next write.
    read_at: Option<Instant>,
    /// Bytes of request bodies forwarded (or, with a `Content-Length`, admitted) to the node
    /// whose answer has not ended.
    in_flight: u64,
    /// Writes completed so far: a reading that began before one completed is not believed.
    completed: u64,
    touched: Instant,
}

impl NodeUse {
    fn new() -> Self {
        Self {
            state: Mutex::new(Use {
                repo: 0,
                read_at: None,
                in_flight: 0,
                completed: 0,
                touched: Instant::now(),
            }),
            reading: tokio::sync::Mutex::new(()),
        }
    }

    fn fresh(&self) -> bool {
        lock(&self.state)
            .read_at
            .is_some_and(|t| t.elapsed() < FRESH)
    }

    /// Records a reading that began when `completed` writes had completed.
    fn observe(&self, size: u64, completed: u64) {
        let mut s = lock(&self.state);
        if s.completed == completed {
            s.repo = size;
            s.read_at = Some(Instant::now());
        } else {
            // A write ended meanwhile: its bytes may be missing from the reading.
            s.repo = s.repo.max(size);
            s.read_at = None;
        }
        s.touched = Instant::now();
    }

    /// Counts `n` more bytes in flight unless the repo plus everything in flight plus `n` would
    /// pass `limit` (a write needs at least one byte of room: a full node takes none). On
    /// refusal, returns the repo and in-flight bytes it saw.
    fn reserve(&self, n: u64, limit: u64) -> Result<(), (u64, u64)> {
        let mut s = lock(&self.state);
        s.touched = Instant::now();
        let used = s.repo.saturating_add(s.in_flight);
        if used.saturating_add(n.max(1)) > limit {
            return Err((s.repo, s.in_flight));
        }
        s.in_flight += n;
        Ok(())
    }

    /// A write of `n` bytes ended (answered, failed or cancelled): its bytes move from in
    /// flight to the repo's estimate, and the next write reads the repo again.
    fn complete(&self, n: u64) {
        let mut s = lock(&self.state);
        s.in_flight = s.in_flight.saturating_sub(n);
        s.repo = s.repo.saturating_add(n);
        s.read_at = None;
        s.completed += 1;
        s.touched = Instant::now();
    }
}

/// One admitted write's part of its node's in-flight bytes. Held by the request body and the
/// response body; released when the last of them is dropped (the answer ended, the forward
/// failed, or the client went away).
#[derive(Debug)]
struct Share {
    node: Arc<NodeUse>,
    network: String,
    index: u16,
    limit: u64,
    bytes: Mutex<u64>,
    cut: Mutex<Option<QuotaError>>,
}

impl Share {
    /// Counts `n` more bytes of the body, or cuts the write (remembering why).
    fn take(&self, n: u64) -> Result<(), QuotaError> {
        match self.node.reserve(n, self.limit) {
            Ok(()) => {
                *lock(&self.bytes) += n;
                Ok(())
            }
            Err((repo, in_flight)) => {
                let e = QuotaError::Full {
                    network: self.network.clone(),
                    node: self.index,
                    limit: self.limit,
                    repo,
                    in_flight,
                    write: WriteSize::Streamed(*lock(&self.bytes)),
                };
                refused(&self.network, "streaming");
                *lock(&self.cut) = Some(e.clone());
                Err(e)
            }
        }
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let n = *lock(&self.bytes);
        self.node.complete(n);
    }
}

/// A write let through: the body to forward, how many of the network's first nodes to skip
/// (their use could not be read), and the ticket that keeps the write counted.
pub(super) struct Admitted {
    pub(super) body: ProxyBody,
    pub(super) skip: usize,
    pub(super) ticket: Option<Ticket>,
}

/// Keeps an admitted write counted; says whether its body was cut.
pub(super) struct Ticket(Arc<Share>);

impl Ticket {
    /// The refusal, when the body was cut at the limit (the client gets it as a 507 if the
    /// answer has not started).
    pub(super) fn cut(&self) -> Option<QuotaError> {
        lock(&self.0.cut).clone()
    }

    /// The response body, holding the ticket until it ends. If the body was cut after the
    /// node's answer had started, the answer ends with the error instead of cleanly.
    pub(super) fn hold(self, body: ProxyBody) -> ProxyBody {
        Held {
            inner: body,
            ticket: Some(self),
        }
        .boxed_unsync()
    }
}

impl Quotas {
    /// Admits a write to `entry`'s network through the delegator's upstream client.
    pub(super) async fn admit(
        &self,
        shared: &Shared,
        entry: &NetworkEntry,
        declared: Option<u64>,
        body: ProxyBody,
    ) -> Result<Admitted, QuotaError> {
        self.admit_with(entry, declared, body, |n| {
            let api = n.api.clone();
            async move { repo_size(shared, &api).await }
        })
        .await
    }

    /// Admits a write: measures the first node whose use can be read (`read`), refuses it up
    /// front when the node is full or its `declared` length would pass the limit, and otherwise
    /// counts the body as it streams. A network without a limit is not measured.
    async fn admit_with<F, Fut>(
        &self,
        entry: &NetworkEntry,
        declared: Option<u64>,
        body: ProxyBody,
        read: F,
    ) -> Result<Admitted, QuotaError>
    where
        F: Fn(&ReadyNode) -> Fut,
        Fut: Future<Output = Result<u64, ReadError>>,
    {
        let Some(limit) = entry.disk_bytes else {
            return Ok(Admitted {
                body,
                skip: 0,
                ticket: None,
            });
        };
        let (skip, node) = self.measured(entry, read).await?;
        let index = entry.nodes.get(skip).map(|n| n.index).unwrap_or_default();
        let network = entry.name.to_string();
        let prepaid = declared.unwrap_or(0);
        if let Err((repo, in_flight)) = node.reserve(prepaid, limit) {
            refused(&network, "before");
            return Err(QuotaError::Full {
                network,
                node: index,
                limit,
                repo,
                in_flight,
                write: declared.map_or(WriteSize::Unknown, WriteSize::Declared),
            });
        }
        let share = Arc::new(Share {
            node,
            network,
            index,
            limit,
            bytes: Mutex::new(prepaid),
            cut: Mutex::new(None),
        });
        let body = Counting {
            inner: body,
            share: share.clone(),
            prepaid,
            done: false,
        }
        .boxed_unsync();
        Ok(Admitted {
            body,
            skip,
            ticket: Some(Ticket(share)),
        })
    }

    /// The first of the network's nodes whose use is known (fresh, or read now), with its
    /// position. One reading at a time per node; writes that wait for it share its result.
    async fn measured<F, Fut>(
        &self,
        entry: &NetworkEntry,
        read: F,
    ) -> Result<(usize, Arc<NodeUse>), QuotaError>
    where
        F: Fn(&ReadyNode) -> Fut,
        Fut: Future<Output = Result<u64, ReadError>>,
    {
        for (i, n) in entry.nodes.iter().enumerate() {
            let node = self.node(&n.peer_id);
            if node.fresh() {
                return Ok((i, node));
            }
            let read_ok = {
                let _reading = node.reading.lock().await;
                if node.fresh() {
                    true
                } else {
                    let completed = lock(&node.state).completed;
                    match read(n).await {
                        Ok(size) => {
                            node.observe(size, completed);
                            true
                        }
                        Err(e) => {
                            tracing::warn!(network = %entry.name, node = n.index, error = %e,
                                "could not read the node's disk use; no write goes to it");
                            false
                        }
                    }
                }
            };
            if read_ok {
                return Ok((i, node));
            }
        }
        Err(QuotaError::Unmeasured(entry.name.to_string()))
    }

    fn node(&self, peer_id: &str) -> Arc<NodeUse> {
        let mut map = lock(&self.nodes);
        if map.len() > PRUNE_ABOVE && !map.contains_key(peer_id) {
            map.retain(|_, n| {
                Arc::strong_count(n) > 1 || lock(&n.state).touched.elapsed() < PRUNE_IDLE
            });
        }
        map.entry(peer_id.to_owned())
            .or_insert_with(|| Arc::new(NodeUse::new()))
            .clone()
    }
}

fn refused(network: &str, when: &'static str) {
    metrics::counter!(
        names::DELEGATOR_DISK_REFUSALS,
        "network" => network.to_owned(),
        "when" => when
    )
    .increment(1);
}

/// Whether an upstream failure is a body this module cut at the limit.
pub(super) fn cut_at_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if c.downcast_ref::<QuotaError>().is_some() {
            return true;
        }
        cur = c.source();
    }
    false
}

/// Why a node's use could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadError {
    #[error("repo/stat request failed: {0}")]
    Request(#[from] hyper_util::client::legacy::Error),
    #[error("repo/stat answered {0}")]
    Status(StatusCode),
    #[error("repo/stat body: {0}")]
    Body(BoxError),
    #[error("repo/stat answer without RepoSize: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("repo/stat did not answer within {0:?}")]
    Timeout(Duration),
}

/// The node's repo size as kubo reports it (`RepoSize` of `repo/stat?size-only=true`, which
/// skips counting objects), asked through the delegator's upstream client. The one call the
/// disk limit makes to a node; it takes the node's API address as the registry gives it.
async fn repo_size(shared: &Shared, api: &Endpoint) -> Result<u64, ReadError> {
    let mut req = Request::new(ReplayBody::new(full(Bytes::new())));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = api
        .uri("/api/v0/repo/stat?size-only=true")
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| ReadError::Body(Box::new(e)))?;
    if let Ok(h) = HeaderValue::from_str(&api.host_header()) {
        req.headers_mut().insert(header::HOST, h);
    }
    let call = async {
        let resp = shared.client.request(req).await?;
        if resp.status() != StatusCode::OK {
            return Err(ReadError::Status(resp.status()));
        }
        let body = Limited::new(resp.into_body(), READ_MAX_BYTES)
            .collect()
            .await
            .map_err(ReadError::Body)?
            .to_bytes();
        parse_repo_size(&body)
    };
    tokio::time::timeout(READ_TIMEOUT, call)
        .await
        .map_err(|_| ReadError::Timeout(READ_TIMEOUT))?
}

fn parse_repo_size(body: &[u8]) -> Result<u64, ReadError> {
    #[derive(serde::Deserialize)]
    struct Stat {
        #[serde(rename = "RepoSize")]
        repo_size: u64,
    }
    Ok(serde_json::from_slice::<Stat>(body)?.repo_size)
}

/// The request body of an admitted write: counts each data frame against the node's limit
/// (after the bytes admitted up front by `Content-Length`) and ends with an error instead of
/// forwarding the frame that would pass it.
struct Counting {
    inner: ProxyBody,
    share: Arc<Share>,
    prepaid: u64,
    done: bool,
}

impl Body for Counting {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            other => return Poll::Ready(other),
        };
        if let Some(data) = frame.data_ref() {
            let n = data.len() as u64;
            let paid = n.min(this.prepaid);
            this.prepaid -= paid;
            if n > paid {
                if let Err(e) = this.share.take(n - paid) {
                    this.done = true;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counting {
    /// A cut body: the client may still be sending it. Its rest is read and dropped for a
    /// while, so that the 507 reaches the client instead of a reset connection.
    fn drop(&mut self) {
        if !self.done {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut rest = std::mem::replace(&mut self.inner, full(Bytes::new()));
        rt.spawn(async move {
            let drain = async { while let Some(Ok(_)) = rest.frame().await {} };
            let _ = tokio::time::timeout(LINGER, drain).await;
        });
    }
}

/// The response body of an admitted write: keeps the write counted until the answer ends.
struct Held {
    inner: ProxyBody,
    ticket: Option<Ticket>,
}

impl Body for Held {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            None => match this.ticket.take().and_then(|t| t.cut()) {
                // Cut after the answer started: the client must not see a clean end.
                Some(e) => Poll::Ready(Some(Err(Box::new(e)))),
                None => Poll::Ready(None),
            },
            Some(Err(e)) => {
                this.ticket = None;
                Poll::Ready(Some(Err(e)))
            }
            Some(Ok(frame)) => Poll::Ready(Some(Ok(frame))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream() && self.ticket.as_ref().is_none_or(|t| t.cut().is_none())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests;
