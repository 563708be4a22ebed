//! The pin handles, kept on the runtime that handed them over.
//!
//! The delegator serves on threads of its own, each with its own runtime, but the pin handles
//! are the orchestrator's: their work (store queries, tasks they spawn) belongs on the daemon's
//! runtime, where its connections and tasks live, not on a serving thread whose runtime ends
//! with the delegator. Owns the two wrappers that move each call there. Must not add, drop or
//! change a call: a call the client gave up on still runs to its end there.

use std::future::Future;
use std::sync::Arc;

use tokio::runtime::Handle;

use crate::node::NetworkName;
use crate::pinsink::{PinChange, PinEntry, PinRequest, PinService, PinServiceError, PinSink};
use crate::store::PinFilter;

/// A handle whose calls run on `home`.
struct Homed<T: ?Sized> {
    inner: Arc<T>,
    home: Handle,
}

/// `sink`, called on the current runtime (as it is, outside one).
pub(super) fn sink(sink: Arc<dyn PinSink>) -> Arc<dyn PinSink> {
    match Handle::try_current() {
        Ok(home) => Arc::new(Homed { inner: sink, home }),
        Err(_) => sink,
    }
}

/// `service`, run on the current runtime (as it is, outside one).
pub(super) fn service(service: Arc<dyn PinService>) -> Arc<dyn PinService> {
    match Handle::try_current() {
        Ok(home) => Arc::new(Homed {
            inner: service,
            home,
        }),
        Err(_) => service,
    }
}

impl PinSink for Homed<dyn PinSink> {
    fn record(&self, network: &NetworkName, user: &str, change: PinChange, cids: Vec<String>) {
        // What the sink spawns is spawned at home.
        let _home = self.home.enter();
        self.inner.record(network, user, change, cids);
    }
}

impl Homed<dyn PinService> {
    /// Runs `work` at home and waits for it.
    async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, PinServiceError>> + Send + 'static,
    ) -> Result<T, PinServiceError> {
        self.home.spawn(work).await.unwrap_or_else(|e| {
            Err(PinServiceError::Internal(format!(
                "the pinset operation did not finish: {e}"
            )))
        })
    }
}

#[async_trait::async_trait]
impl PinService for Homed<dyn PinService> {
    async fn add(
        &self,
        network: &NetworkName,
        pin: PinRequest,
    ) -> Result<PinEntry, PinServiceError> {
        let (inner, network) = (self.inner.clone(), network.clone());
        self.run(async move { inner.add(&network, pin).await })
            .await
    }

    async fn get(
        &self,
        network: &NetworkName,
        request_id: &str,
    ) -> Result<PinEntry, PinServiceError> {
        let (inner, network, id) = (self.inner.clone(), network.clone(), request_id.to_owned());
        self.run(async move { inner.get(&network, &id).await })
            .await
    }

    async fn list(
        &self,
        network: &NetworkName,
        filter: &PinFilter,
    ) -> Result<(u64, Vec<PinEntry>), PinServiceError> {
        let (inner, network, filter) = (self.inner.clone(), network.clone(), filter.clone());
        self.run(async move { inner.list(&network, &filter).await })
            .await
    }

    async fn replace(
        &self,
        network: &NetworkName,
        request_id: &str,
        pin: PinRequest,
    ) -> Result<PinEntry, PinServiceError> {
        let (inner, network, id) = (self.inner.clone(), network.clone(), request_id.to_owned());
        self.run(async move { inner.replace(&network, &id, pin).await })
            .await
    }

    async fn remove(&self, network: &NetworkName, request_id: &str) -> Result<(), PinServiceError> {
        let (inner, network, id) = (self.inner.clone(), network.clone(), request_id.to_owned());
        self.run(async move { inner.remove(&network, &id).await })
            .await
    }

    async fn delegates(&self, network: &NetworkName) -> Result<Vec<String>, PinServiceError> {
        let (inner, network) = (self.inner.clone(), network.clone());
        self.run(async move { inner.delegates(&network).await })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records the name of the thread each call's work ran on.
    #[derive(Default)]
    struct Where(Arc<Mutex<Vec<String>>>);

    fn note(to: &Mutex<Vec<String>>, what: &str) {
        let name = std::thread::current().name().unwrap_or("?").to_owned();
        to.lock().unwrap().push(format!("{what} on {name}"));
    }

    impl Where {
        fn note(&self) {
            note(&self.0, "service");
        }
    }

    impl PinSink for Where {
        fn record(&self, _: &NetworkName, _: &str, _: PinChange, _: Vec<String>) {
            // As the orchestrator's sink does: the work is spawned, and the call returns.
            let to = self.0.clone();
            tokio::spawn(async move { note(&to, "sink") });
        }
    }

    #[async_trait::async_trait]
    impl PinService for Where {
        async fn add(&self, _: &NetworkName, _: PinRequest) -> Result<PinEntry, PinServiceError> {
            self.note();
            Err(PinServiceError::Conflict("noted".into()))
        }
        async fn get(&self, _: &NetworkName, _: &str) -> Result<PinEntry, PinServiceError> {
            unreachable!()
        }
        async fn list(
            &self,
            _: &NetworkName,
            _: &PinFilter,
        ) -> Result<(u64, Vec<PinEntry>), PinServiceError> {
            unreachable!()
        }
        async fn replace(
            &self,
            _: &NetworkName,
            _: &str,
            _: PinRequest,
        ) -> Result<PinEntry, PinServiceError> {
            unreachable!()
        }
        async fn remove(&self, _: &NetworkName, _: &str) -> Result<(), PinServiceError> {
            unreachable!()
        }
        async fn delegates(&self, _: &NetworkName) -> Result<Vec<String>, PinServiceError> {
            unreachable!()
        }
    }

    /// Calls made on a serving thread's own runtime run on the runtime that set the handles.
    #[test]
    fn calls_from_another_runtime_run_at_home() {
        let home = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("home")
            .enable_all()
            .build()
            .unwrap();
        let seen = Arc::new(Where::default());
        let (sink, service) = home.block_on(async {
            (
                super::sink(seen.clone() as Arc<dyn PinSink>),
                super::service(seen.clone() as Arc<dyn PinService>),
            )
        });
        let net = NetworkName::new("homed").unwrap();
        std::thread::Builder::new()
            .name("serving".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    sink.record(&net, "u", PinChange::Pinned, vec![]);
                    let e = service.add(&net, PinRequest::default()).await;
                    assert_eq!(e, Err(PinServiceError::Conflict("noted".into())));
                });
            })
            .unwrap()
            .join()
            .unwrap();
        // What the sink spawns runs at home (the call itself returns at once, where the
        // request is); so does the service's work.
        let mut noted = Vec::new();
        for _ in 0..100 {
            noted = seen.0.lock().unwrap().clone();
            if noted.len() == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        noted.sort();
        assert_eq!(noted, ["service on home", "sink on home"]);
    }
}
