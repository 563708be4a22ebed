//! Which instance this daemon is, and that it is the only live daemon acting for it.
//!
//! Owns two decisions taken at start, before anything talks to Docker:
//! - **the effective instance** ([`resolve`]): the configured `docker.instance`, else the one
//!   recorded in the store, which is generated (`n-<12 hex>`) on the store's first open, so two
//!   daemons with different stores never share one; a configured instance is recorded too and
//!   must match what the store recorded (a store's nodes carry its instance as their owner
//!   label: a daemon under another name would not see them and would re-create them);
//! - **the lease** ([`LeaseKeeper`]): a row in the store naming the live daemon that acts for
//!   the instance (holder id, host, pid, since when, until when), taken atomically at start
//!   (refused while another live daemon holds it), renewed by a heartbeat every third of its
//!   TTL, given up at a clean stop; a crashed daemon's lease expires after the TTL. A daemon
//!   that cannot renew (another took it, or the store did not answer for two thirds of the TTL)
//!   is told through [`LeaseKeeper::lost`] and must stop acting on Docker at once.
//!
//! It must not touch Docker, nor decide anything about networks; the store only keeps the
//! records ([`crate::store::lease`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::names::InstanceName;
use crate::store::{Lease, LeaseHolder, LeaseOutcome, Store, StoreError};

/// The lease's TTL when the configuration gives none (`store.lease_ttl`).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

/// Why the daemon may not act for an instance.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "this store belongs to instance `{recorded}` (recorded on its first start; its nodes carry \
         that owner label), but docker.instance is `{configured}`: set docker.instance to \
         `{recorded}` or leave it empty to use the store's, or give instance `{configured}` a \
         store of its own (store.url or daemon.data_dir)"
    )]
    Mismatch {
        recorded: InstanceName,
        configured: InstanceName,
    },
    #[error(
        "another live daemon acts for instance `{instance}`: {lease}. Stop it first (or wait until \
         its lease expires if it was killed), or give this daemon a data directory or store of \
         its own"
    )]
    Held {
        instance: InstanceName,
        lease: Box<Lease>,
    },
    #[error("lost the lease of instance `{instance}`: {why}; stopped acting on Docker")]
    Lost { instance: InstanceName, why: String },
}

/// Where the effective instance came from (for the start-up log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceSource {
    /// `docker.instance`, now recorded in (or matching) the store.
    Configured,
    /// The store's, recorded on an earlier start.
    Recorded,
    /// Generated now, on the store's first open.
    Generated,
    /// `default`: a store written before instances were recorded, whose nodes carry that label.
    Legacy,
}

impl InstanceSource {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Configured => "configured",
            Self::Recorded => "recorded in the store",
            Self::Generated => "generated on the store's first open",
            Self::Legacy => "the former default, kept for this store's existing nodes",
        }
    }
}

/// The instance this daemon acts for, resolved against `store` (see the module comment).
/// `configured`: `docker.instance` when set.
pub async fn resolve(
    store: &dyn Store,
    configured: Option<&InstanceName>,
) -> Result<(InstanceName, InstanceSource), InstanceError> {
    if let Some(configured) = configured {
        let recorded = store.claim_instance(configured).await?;
        if &recorded != configured {
            return Err(InstanceError::Mismatch {
                recorded,
                configured: configured.clone(),
            });
        }
        return Ok((recorded, InstanceSource::Configured));
    }
    if let Some(recorded) = store.instance().await? {
        return Ok((recorded, InstanceSource::Recorded));
    }
    // A store that already holds networks was written by a nexus that labelled every node
    // `default`: keep that, or recovery would not find them.
    let (proposed, source) = if store.list_networks().await?.is_empty() {
        (InstanceName::generate(), InstanceSource::Generated)
    } else {
        match InstanceName::new(InstanceName::LEGACY) {
            Ok(legacy) => (legacy, InstanceSource::Legacy),
            Err(_) => (InstanceName::generate(), InstanceSource::Generated),
        }
    };
    let recorded = store.claim_instance(&proposed).await?;
    let source = if recorded == proposed {
        source
    } else {
        // Another daemon recorded one first.
        InstanceSource::Recorded
    };
    Ok((recorded, source))
}

/// This process as a lease holder: a random id (8 bytes, hex), the host name and the pid.
pub fn this_process() -> LeaseHolder {
    let mut b = [0u8; 8];
    let id = match getrandom::fill(&mut b) {
        Ok(()) => hex::encode(b),
        // The id only tells holders apart; host and pid still do on one host.
        Err(_) => format!("pid{}", std::process::id()),
    };
    LeaseHolder {
        id,
        host: host_name(),
        pid: std::process::id(),
    }
}

/// The host name (`/proc/sys/kernel/hostname`, `/etc/hostname`, `$HOSTNAME`), else `unknown`.
pub fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .chain(std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .find(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// How often the heartbeat renews: a third of the TTL.
pub fn heartbeat_interval(ttl: Duration) -> Duration {
    ttl / 3
}

/// After how long without a successful renewal a holder gives up: two thirds of the TTL, so it
/// stops before its lease can expire and another daemon take it.
pub fn give_up_after(ttl: Duration) -> Duration {
    ttl * 2 / 3
}

/// This daemon's lease of its instance and the heartbeat renewing it; see the module comment.
pub struct LeaseKeeper {
    store: Arc<dyn Store>,
    instance: InstanceName,
    holder: LeaseHolder,
    lease: Lease,
    heartbeat: tokio::task::JoinHandle<()>,
    lost: watch::Receiver<Option<String>>,
}

impl LeaseKeeper {
    /// Takes `instance`'s lease for this process and starts the heartbeat; refused
    /// ([`InstanceError::Held`]) while another live daemon holds it.
    pub async fn acquire(
        store: Arc<dyn Store>,
        instance: InstanceName,
        ttl: Duration,
    ) -> Result<Self, InstanceError> {
        let holder = this_process();
        let started = Instant::now();
        let lease = match store.acquire_lease(&instance, &holder, ttl).await? {
            LeaseOutcome::Acquired(lease) => lease,
            LeaseOutcome::Held(lease) => {
                return Err(InstanceError::Held {
                    instance,
                    lease: Box::new(lease),
                })
            }
        };
        let (lost_tx, lost) = watch::channel(None);
        let heartbeat = tokio::spawn(heartbeat(
            store.clone(),
            instance.clone(),
            holder.clone(),
            ttl,
            started,
            lost_tx,
        ));
        Ok(Self {
            store,
            instance,
            holder,
            lease,
            heartbeat,
            lost,
        })
    }

    /// The lease as taken.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Resolves once the lease is lost, with the reason ([`InstanceError::Lost`]); never while
    /// it is held.
    pub fn lost(&self) -> impl std::future::Future<Output = InstanceError> + Send + 'static {
        let mut rx = self.lost.clone();
        let instance = self.instance.clone();
        async move {
            let why = rx
                .wait_for(Option::is_some)
                .await
                .map(|why| why.clone().unwrap_or_default());
            match why {
                Ok(why) => InstanceError::Lost { instance, why },
                // The keeper is gone (released): never lost.
                Err(_) => std::future::pending().await,
            }
        }
    }

    /// Whether the lease was lost.
    pub fn is_lost(&self) -> bool {
        self.lost.borrow().is_some()
    }

    /// Stops the heartbeat and gives the lease up (a clean stop: the next daemon need not wait
    /// for it to expire). Nothing if it was lost.
    pub async fn release(self) {
        self.heartbeat.abort();
        if self.is_lost() {
            return;
        }
        match self.store.release_lease(&self.instance, &self.holder).await {
            Ok(()) => tracing::info!(instance = %self.instance, "lease released"),
            Err(e) => tracing::warn!(instance = %self.instance, error = %e,
                "could not release the lease; it expires on its own"),
        }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

/// Renews every [`heartbeat_interval`] until the lease is lost: another holder has it (the
/// renewal changes nothing), or no renewal succeeded for [`give_up_after`].
async fn heartbeat(
    store: Arc<dyn Store>,
    instance: InstanceName,
    holder: LeaseHolder,
    ttl: Duration,
    mut last_ok: Instant,
    lost: watch::Sender<Option<String>>,
) {
    let every = heartbeat_interval(ttl);
    let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let started = Instant::now();
        let why = match tokio::time::timeout(every, store.renew_lease(&instance, &holder, ttl))
            .await
        {
            Ok(Ok(Some(_))) => {
                last_ok = started;
                tracing::trace!(%instance, "lease renewed");
                continue;
            }
            Ok(Ok(None)) => Some("another daemon holds it now (it expired while this one was stalled, or was removed)".to_owned()),
            Ok(Err(e)) => {
                tracing::warn!(%instance, error = %e, "could not renew the lease");
                None
            }
            Err(_) => {
                tracing::warn!(%instance, timeout = ?every, "renewing the lease timed out");
                None
            }
        };
        let why = why.or_else(|| {
            (started.duration_since(last_ok) >= give_up_after(ttl)).then(|| {
                format!(
                    "not renewed for {:?} (the store did not answer); it may expire and be taken",
                    started.duration_since(last_ok)
                )
            })
        });
        if let Some(why) = why {
            let _ = lost.send(Some(why));
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqlStore;

    async fn store() -> Arc<dyn Store> {
        let keys = crate::store::seal::Keyring::generate().unwrap();
        Arc::new(SqlStore::connect("sqlite::memory:", keys).await.unwrap())
    }

    #[tokio::test]
    async fn a_fresh_store_gets_a_generated_instance_and_keeps_it() {
        let s = store().await;
        let (first, source) = resolve(s.as_ref(), None).await.unwrap();
        assert_eq!(source, InstanceSource::Generated);
        assert!(first.as_str().starts_with("n-"), "{first}");
        let (again, source) = resolve(s.as_ref(), None).await.unwrap();
        assert_eq!((again, source), (first.clone(), InstanceSource::Recorded));
        // Configuring the recorded one is fine; another is refused with both names.
        let (same, source) = resolve(s.as_ref(), Some(&first)).await.unwrap();
        assert_eq!((same, source), (first.clone(), InstanceSource::Configured));
        let other = InstanceName::new("prod-1").unwrap();
        let err = resolve(s.as_ref(), Some(&other)).await.unwrap_err();
        let shown = err.to_string();
        assert!(matches!(err, InstanceError::Mismatch { .. }), "{shown}");
        assert!(
            shown.contains(first.as_str()) && shown.contains("prod-1"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn a_configured_instance_is_recorded() {
        let s = store().await;
        let prod = InstanceName::new("prod-1").unwrap();
        assert_eq!(
            resolve(s.as_ref(), Some(&prod)).await.unwrap(),
            (prod.clone(), InstanceSource::Configured)
        );
        assert_eq!(
            resolve(s.as_ref(), None).await.unwrap(),
            (prod, InstanceSource::Recorded)
        );
    }

    #[test]
    fn heartbeat_timing() {
        let ttl = Duration::from_secs(30);
        assert_eq!(heartbeat_interval(ttl), Duration::from_secs(10));
        assert_eq!(give_up_after(ttl), Duration::from_secs(20));
        assert!(give_up_after(ttl) < ttl);
    }

    #[tokio::test]
    async fn a_held_lease_refuses_and_names_its_holder_then_is_lost_when_taken() {
        let s = store().await;
        let inst = InstanceName::new("t-lease").unwrap();
        let ttl = Duration::from_millis(600);
        let first = LeaseKeeper::acquire(s.clone(), inst.clone(), ttl)
            .await
            .unwrap();
        let err = match LeaseKeeper::acquire(s.clone(), inst.clone(), ttl).await {
            Err(e) => e,
            Ok(_) => panic!("a second holder was let in"),
        };
        let shown = err.to_string();
        assert!(matches!(err, InstanceError::Held { .. }), "{shown}");
        assert!(
            shown.contains(&format!("pid {}", std::process::id())),
            "{shown}"
        );
        assert!(shown.contains(&host_name()), "{shown}");

        // Someone removes the row and another holder takes it: the first learns it lost it.
        let lost = first.lost();
        let thief = LeaseHolder {
            id: "thief".into(),
            host: "elsewhere".into(),
            pid: 1,
        };
        s.release_lease(&inst, &first.holder).await.unwrap();
        assert!(matches!(
            s.acquire_lease(&inst, &thief, ttl).await.unwrap(),
            LeaseOutcome::Acquired(_)
        ));
        let err = tokio::time::timeout(Duration::from_secs(5), lost)
            .await
            .expect("the heartbeat noticed");
        assert!(matches!(err, InstanceError::Lost { .. }), "{err}");
        assert!(first.is_lost());
        // Releasing a lost lease leaves the new holder's alone.
        first.release().await;
        let lease = s.get_lease(&inst).await.unwrap().unwrap();
        assert_eq!(lease.holder, thief);
    }
}
