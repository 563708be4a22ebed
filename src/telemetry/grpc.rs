//! A tower layer for the gRPC server: counts finished calls by method and status code and
//! times them (to the end of the response stream).
//!
//! The status is read from the response headers (trailers-only responses: errors, including
//! the auth interceptor's) or from the trailers at the end of the body (successful unary and
//! streaming calls). A response stream dropped before its trailers (the client went away)
//! counts as `Cancelled`. Methods outside the served services are labelled `other`, so a
//! client cannot grow the label set.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use hyper::body::{Body, Frame, SizeHint};
use hyper::header::HeaderMap;
use hyper::{Request, Response};

use super::names;

/// Every `/package.Service/Method` path the server serves, from the descriptor sets.
pub fn known_methods(descriptor_sets: &[&[u8]]) -> HashSet<String> {
    let mut out = HashSet::new();
    for set in descriptor_sets {
        let Ok(pool) = prost_reflect::DescriptorPool::decode(*set) else {
            continue;
        };
        for service in pool.services() {
            for method in service.methods() {
                out.insert(format!("/{}/{}", service.full_name(), method.name()));
            }
        }
    }
    for reflection in ["grpc.reflection.v1", "grpc.reflection.v1alpha"] {
        out.insert(format!(
            "/{reflection}.ServerReflection/ServerReflectionInfo"
        ));
    }
    out
}

/// The layer; see the module comment.
#[derive(Clone, Debug)]
pub struct GrpcMetricsLayer {
    methods: Arc<HashSet<String>>,
}

impl GrpcMetricsLayer {
    pub fn new(methods: HashSet<String>) -> Self {
        Self {
            methods: Arc::new(methods),
        }
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            methods: self.methods.clone(),
        }
    }
}

/// The service the layer wraps around the server's routes.
#[derive(Clone, Debug)]
pub struct GrpcMetrics<S> {
    inner: S,
    methods: Arc<HashSet<String>>,
}

/// A `grpc-status` value as a label: tonic's code names (`Ok`, `NotFound`, …).
fn code_label(h: &HeaderMap) -> Option<String> {
    let v = h
        .get("grpc-status")?
        .to_str()
        .ok()?
        .trim()
        .parse::<i32>()
        .ok()?;
    Some(format!("{:?}", tonic::Code::from_i32(v)))
}

/// Records one call once.
struct Call {
    method: String,
    start: Instant,
    done: bool,
}

impl Call {
    fn finish(&mut self, code: &str) {
        if self.done {
            return;
        }
        self.done = true;
        metrics::counter!(names::GRPC_REQUESTS, "method" => self.method.clone(), "code" => code.to_owned())
            .increment(1);
        metrics::histogram!(names::GRPC_DURATION, "method" => self.method.clone())
            .record(self.start.elapsed().as_secs_f64());
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish("Cancelled");
    }
}

impl<S, ReqB, ResB> tower::Service<Request<ReqB>> for GrpcMetrics<S>
where
    S: tower::Service<Request<ReqB>, Response = Response<ResB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResB: Body + Send + 'static,
{
    type Response = Response<MeteredBody<ResB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let path = req.uri().path();
        let method = if self.methods.contains(path) {
            path.to_owned()
        } else {
            "other".to_owned()
        };
        let mut call = Call {
            method,
            start: Instant::now(),
            done: false,
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            match fut.await {
                Ok(resp) => {
                    let (parts, body) = resp.into_parts();
                    if let Some(code) = code_label(&parts.headers) {
                        call.finish(&code);
                    } else if !parts.status.is_success() {
                        call.finish("Unknown");
                    }
                    Ok(Response::from_parts(
                        parts,
                        MeteredBody {
                            inner: Box::pin(body),
                            call,
                        },
                    ))
                }
                Err(e) => {
                    call.finish("Internal");
                    Err(e)
                }
            }
        })
    }
}

/// The response body, watched for the trailers that carry the status.
pub struct MeteredBody<B> {
    inner: Pin<Box<B>>,
    call: Call,
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(code_label) {
                    this.call.finish(&code);
                }
            }
            Poll::Ready(Some(Err(_))) => this.call.finish("Unknown"),
            Poll::Ready(None) => this.call.finish("Unknown"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
