//! Readiness: is the store reachable, Docker reachable and the reconciler running?
//!
//! Each check is timeboxed ([`CHECK_TIMEOUT`]) and the result cached for [`CACHE_FOR`], so a hung
//! Docker or database never hangs `/readyz` and a busy scraper does not hammer them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::names;
use crate::node::NodeRuntime;
use crate::orchestrator::Orchestrator;
use crate::store::Store;

/// The longest one check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a result is reused.
pub const CACHE_FOR: Duration = Duration::from_secs(1);

/// One check's outcome.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CheckResult {
    pub name: &'static str,
    pub ok: bool,
    /// Why it failed (no secrets: driver and Docker messages only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What `/readyz` answers.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ReadinessReport {
    pub ready: bool,
    pub checks: Vec<CheckResult>,
}

impl ReadinessReport {
    /// Names of the failed checks.
    pub fn failed(&self) -> Vec<&'static str> {
        self.checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.name)
            .collect()
    }
}

/// The readiness checks of one daemon. Cheap to clone.
#[derive(Clone)]
pub struct Readiness {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    runtime: Arc<dyn NodeRuntime>,
    orch: Orchestrator,
    cache: tokio::sync::Mutex<Option<(Instant, ReadinessReport)>>,
}

async fn timed<E: std::fmt::Display>(
    name: &'static str,
    f: impl std::future::Future<Output = Result<(), E>>,
) -> CheckResult {
    let error = match tokio::time::timeout(CHECK_TIMEOUT, f).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no answer within {CHECK_TIMEOUT:?}")),
    };
    CheckResult {
        name,
        ok: error.is_none(),
        error,
    }
}

impl Readiness {
    pub fn new(store: Arc<dyn Store>, runtime: Arc<dyn NodeRuntime>, orch: Orchestrator) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                runtime,
                orch,
                cache: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// The current readiness (at most [`CACHE_FOR`] old); also sets the readiness gauges.
    pub async fn check(&self) -> ReadinessReport {
        let mut cache = self.inner.cache.lock().await;
        if let Some((at, report)) = cache.as_ref() {
            if at.elapsed() < CACHE_FOR {
                return report.clone();
            }
        }
        let inner = &self.inner;
        let (store, docker) = tokio::join!(
            timed("store", inner.store.ping()),
            timed("docker", inner.runtime.ping()),
        );
        let reconciler = CheckResult {
            name: "reconciler",
            ok: inner.orch.reconciler_alive(),
            error: (!inner.orch.reconciler_alive())
                .then(|| "the reconciler loop is not running (yet)".to_string()),
        };
        let checks = vec![store, docker, reconciler];
        let report = ReadinessReport {
            ready: checks.iter().all(|c| c.ok),
            checks,
        };
        for c in &report.checks {
            metrics::gauge!(names::READINESS_CHECK, "check" => c.name)
                .set(f64::from(u8::from(c.ok)));
        }
        metrics::gauge!(names::READY).set(f64::from(u8::from(report.ready)));
        *cache = Some((Instant::now(), report.clone()));
        report
    }

    /// Checks every `every` and publishes readiness to `tx` (each change is logged once).
    /// Runs until aborted.
    pub async fn watch(self, every: Duration, tx: tokio::sync::watch::Sender<bool>) {
        let mut last: Option<ReadinessReport> = None;
        loop {
            let report = self.check().await;
            let changed = last.as_ref().map(|l| l.failed()) != Some(report.failed());
            if changed {
                if report.ready {
                    tracing::info!("ready");
                } else {
                    let why: Vec<String> = report
                        .checks
                        .iter()
                        .filter(|c| !c.ok)
                        .map(|c| format!("{}: {}", c.name, c.error.as_deref().unwrap_or("failed")))
                        .collect();
                    tracing::warn!(failed = %why.join("; "), "not ready");
                }
            }
            tx.send_if_modified(|r| std::mem::replace(r, report.ready) != report.ready);
            last = Some(report);
            tokio::time::sleep(every).await;
        }
    }
}
