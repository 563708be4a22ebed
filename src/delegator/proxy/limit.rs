//! Limits per client: a token-bucket request rate and a cap on requests in flight, per client
//! address and per user, answered with 429 and `Retry-After`. Owns the buckets and counters
//! (bounded maps: idle entries are dropped when full) and the body wrapper that keeps a request
//! counted until its answer has streamed. Must not decide who a client is (the pipeline passes
//! the address and the user) nor touch the network's nodes.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};

use super::{BoxError, ProxyBody};
use crate::sync::lock;

/// A request rate: `per_second` on average, bursts of `burst`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

/// Why a request was refused with 429.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LimitError {
    #[error("too many requests from this {0}: slow down (see Retry-After)")]
    Rate(&'static str, u64),
    #[error("too many requests in flight from this {0}: wait for some to finish")]
    Concurrency(&'static str),
}

impl LimitError {
    /// Seconds for `Retry-After`.
    pub(crate) fn retry_after(&self) -> u64 {
        match self {
            LimitError::Rate(_, s) => *s,
            LimitError::Concurrency(_) => 1,
        }
    }

    pub(crate) fn reason(&self) -> &'static str {
        match self {
            LimitError::Rate(..) => "rate",
            LimitError::Concurrency(_) => "concurrency",
        }
    }
}

/// Most keys remembered per map; when full, idle keys are dropped (and, if none is idle, the
/// new key is refused rather than growing without bound).
const MAX_KEYS: usize = 65_536;

struct Entry {
    tokens: f64,
    last: Instant,
    inflight: u32,
}

/// Buckets and in-flight counts by key.
struct Keyed<K> {
    what: &'static str,
    rate: Option<Rate>,
    max_inflight: Option<u32>,
    map: Mutex<HashMap<K, Entry>>,
}

impl<K: Hash + Eq + Clone + Send + 'static> Keyed<K> {
    fn new(what: &'static str, rate: Option<Rate>, max_inflight: Option<u32>) -> Self {
        Self {
            what,
            rate,
            max_inflight,
            map: Mutex::default(),
        }
    }

    fn off(&self) -> bool {
        self.rate.is_none() && self.max_inflight.is_none()
    }

    /// Takes a token and an in-flight slot for `key`, or says why not.
    fn admit(self: &Arc<Self>, key: K, now: Instant) -> Result<Option<Slot>, LimitError> {
        if self.off() {
            return Ok(None);
        }
        let mut map = lock(&self.map);
        if map.len() >= MAX_KEYS && !map.contains_key(&key) {
            let burst = self.rate.map_or(0.0, |r| f64::from(r.burst));
            map.retain(|_, e| e.inflight > 0 || refill(e, self.rate, now) < burst);
            if map.len() >= MAX_KEYS {
                return Err(LimitError::Concurrency(self.what));
            }
        }
        let e = map.entry(key.clone()).or_insert_with(|| Entry {
            tokens: self.rate.map_or(0.0, |r| f64::from(r.burst)),
            last: now,
            inflight: 0,
        });
        if let Some(max) = self.max_inflight {
            if e.inflight >= max {
                return Err(LimitError::Concurrency(self.what));
            }
        }
        if let Some(rate) = self.rate {
            e.tokens = refill(e, Some(rate), now);
            e.last = now;
            if e.tokens < 1.0 {
                let wait = ((1.0 - e.tokens) / rate.per_second).ceil().max(1.0);
                return Err(LimitError::Rate(self.what, wait as u64));
            }
            e.tokens -= 1.0;
        }
        e.inflight += 1;
        drop(map);
        let keyed = self.clone();
        Ok(Some(Slot(Box::new(move || {
            if let Some(e) = lock(&keyed.map).get_mut(&key) {
                e.inflight = e.inflight.saturating_sub(1);
            }
        }))))
    }
}

fn refill(e: &Entry, rate: Option<Rate>, now: Instant) -> f64 {
    match rate {
        Some(r) => {
            let dt = now.saturating_duration_since(e.last).as_secs_f64();
            (e.tokens + dt * r.per_second).min(f64::from(r.burst))
        }
        None => 0.0,
    }
}

/// One request's place in a limit: released when dropped.
pub(crate) struct Slot(Box<dyn FnOnce() + Send>);

impl Drop for Slot {
    fn drop(&mut self) {
        let f = std::mem::replace(&mut self.0, Box::new(|| {}));
        f();
    }
}

/// The limits per client address and per user.
pub(crate) struct Limits {
    clients: Arc<Keyed<IpAddr>>,
    users: Arc<Keyed<String>>,
}

/// How the limits are set (from `DelegatorConfig`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LimitConfig {
    pub rate_per_client: Option<Rate>,
    pub rate_per_user: Option<Rate>,
    pub concurrent_per_client: Option<u32>,
    pub concurrent_per_user: Option<u32>,
}

impl Limits {
    pub(crate) fn new(cfg: LimitConfig) -> Self {
        Self {
            clients: Arc::new(Keyed::new(
                "client address",
                cfg.rate_per_client,
                cfg.concurrent_per_client,
            )),
            users: Arc::new(Keyed::new(
                "user",
                cfg.rate_per_user,
                cfg.concurrent_per_user,
            )),
        }
    }

    pub(crate) fn client(&self, ip: IpAddr) -> Result<Option<Slot>, LimitError> {
        self.clients.admit(ip, Instant::now())
    }

    pub(crate) fn user(&self, user: &str) -> Result<Option<Slot>, LimitError> {
        self.users.admit(user.to_owned(), Instant::now())
    }
}

/// A response body that keeps its request's slots until it ends.
struct Held {
    inner: ProxyBody,
    _slots: Vec<Slot>,
}

impl Body for Held {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `body`, holding `slots` until it ends (or is dropped).
pub(crate) fn hold(body: ProxyBody, slots: Vec<Slot>) -> ProxyBody {
    if slots.is_empty() {
        return body;
    }
    Held {
        inner: body,
        _slots: slots,
    }
    .boxed_unsync()
}

/// `Retry-After` never says less than a second nor more than an hour.
pub(crate) fn retry_after(d: u64) -> u64 {
    d.clamp(1, 3600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_refuses_past_its_burst_and_refills() {
        let k = Arc::new(Keyed::<u8>::new(
            "client address",
            Some(Rate {
                per_second: 2.0,
                burst: 3,
            }),
            None,
        ));
        let t0 = Instant::now();
        let slots: Vec<_> = (0..3).map(|_| k.admit(1, t0).unwrap()).collect();
        let e = k.admit(1, t0).err().unwrap();
        assert_eq!(e, LimitError::Rate("client address", 1));
        // Another key has its own bucket.
        assert!(k.admit(2, t0).is_ok());
        // Half a second later: one token back.
        assert!(k.admit(1, t0 + Duration::from_millis(500)).is_ok());
        assert!(k.admit(1, t0 + Duration::from_millis(500)).is_err());
        drop(slots);
    }

    #[test]
    fn in_flight_requests_are_capped_until_released() {
        let k = Arc::new(Keyed::<u8>::new("user", None, Some(2)));
        let t0 = Instant::now();
        let a = k.admit(1, t0).unwrap();
        let _b = k.admit(1, t0).unwrap();
        assert_eq!(k.admit(1, t0).err(), Some(LimitError::Concurrency("user")));
        drop(a);
        assert!(k.admit(1, t0).is_ok());
        // Off: nothing is counted.
        let off = Arc::new(Keyed::<u8>::new("user", None, None));
        assert!(off.admit(1, t0).unwrap().is_none());
    }
}
