//! Leader election on a `coordination.k8s.io` Lease: only the holder runs
//! the controllers. A standby takes over once the holder stops renewing,
//! within the lease duration.
//!
//! The lease library only logs a failed renewal: a leader cut off from the
//! API server would go on believing it leads while a standby takes over.
//! So this module also watches the Lease itself and keeps a deadline: the
//! last renewal it saw by this process, plus the lease duration, minus a
//! margin. Every Redis command of a topology step checks it (a
//! [`Fence`]), and `run` exits the moment it passes or the lease is lost,
//! without waiting for the reconciles in flight (as controller-runtime
//! does): a standby can take over only after the lease duration, by which
//! time this process no longer acts.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::watcher;
use kube::{Api, Client};
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;

use crate::topology::Fence;

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration_secs: u64,
    pub grace_secs: u64,
}

/// A handle on leadership: `changed` resolves when it is gained or lost.
pub struct Leadership {
    rx: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
    deadline: watch::Sender<Option<Instant>>,
    observer: tokio::task::JoinHandle<()>,
    duration: Duration,
    margin: Duration,
}

/// Until when a holder may act, from its Lease as last seen: the renewal
/// time plus the duration, less `margin` (for clock drift and the time a
/// command takes). `None` when `identity` does not hold it, or the lease
/// says nothing of its renewal or duration. `now`/`now_wall` are the same
/// moment on the monotonic and the wall clock; the holder wrote
/// `renewTime` with this machine's clock.
pub fn valid_until(
    lease: &LeaseSpec,
    identity: &str,
    margin: Duration,
    now: Instant,
    now_wall: Timestamp,
) -> Option<Instant> {
    if lease.holder_identity.as_deref() != Some(identity) {
        return None;
    }
    let renewed = lease.renew_time.as_ref()?.0;
    let duration = Duration::from_secs(u64::try_from(lease.lease_duration_seconds?).ok()?);
    let age = now_wall
        .duration_since(renewed)
        .try_into()
        .unwrap_or(Duration::ZERO);
    let left = duration.checked_sub(age)?.checked_sub(margin)?;
    (!left.is_zero()).then(|| now + left)
}

impl Leadership {
    pub async fn start(client: Client, cfg: &LeaseConfig) -> Result<Self, LeaseManagerError> {
        let manager = LeaseManagerBuilder::new(client.clone(), &cfg.name)
            .with_namespace(&cfg.namespace)
            .with_identity(&cfg.identity)
            .with_duration(cfg.duration_secs)
            .with_grace(cfg.grace_secs)
            .with_field_manager(format!("redis-operator-{}", cfg.identity))
            .build()
            .await?;
        let (rx, task) = manager.watch().await;
        let (deadline, _) = watch::channel(None);
        // The library renews `grace` before expiry; the deadline falls half
        // of that later, leaving the renewal time to be seen.
        let margin = Duration::from_secs(cfg.grace_secs) / 2;
        let observer = tokio::spawn(observe_lease(
            Api::namespaced(client, &cfg.namespace),
            cfg.name.clone(),
            cfg.identity.clone(),
            margin,
            deadline.clone(),
        ));
        Ok(Leadership {
            rx,
            task,
            deadline,
            observer,
            duration: Duration::from_secs(cfg.duration_secs),
            margin,
        })
    }

    /// The fence Redis actions check while this process leads.
    pub fn fence(&self) -> Fence {
        Fence::new(self.deadline.subscribe())
    }

    /// Waits until this process leads. `false` if the election stopped.
    pub async fn acquired(&mut self) -> bool {
        let leading = self.rx.wait_for(|leader| *leader).await.is_ok();
        if leading {
            // Just renewed; the observer confirms (or shortens) it when it
            // sees the Lease.
            let until = Instant::now() + self.duration.saturating_sub(self.margin);
            if self.deadline.borrow().is_none() {
                self.deadline.send_replace(Some(until));
            }
        }
        leading
    }

    /// Waits until leadership is lost (or the election stops), or until no
    /// renewal was seen in time, whichever comes first; says which.
    pub async fn lost(&mut self) -> &'static str {
        let mut deadline = self.deadline.subscribe();
        let expired = async move {
            loop {
                let until = *deadline.borrow_and_update();
                let Some(until) = until else { return };
                if Instant::now() >= until {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(until.into()) => {}
                    changed = deadline.changed() => if changed.is_err() { return },
                }
            }
        };
        tokio::select! {
            _ = self.rx.wait_for(|leader| !*leader) => "the lease was taken or released",
            _ = expired => "no renewal of the lease was confirmed within its duration",
        }
    }

    /// Stops the election without touching the Lease (after losing it).
    pub fn abandon(self) {
        self.observer.abort();
        self.task.abort();
    }

    /// Gives the Lease up so a standby can take over at once.
    pub async fn release(self) {
        self.observer.abort();
        drop(self.rx);
        match self.task.await {
            Ok(Ok(_)) => tracing::info!("lease released"),
            Ok(Err(e)) => tracing::warn!(error = %e, "releasing the lease failed"),
            Err(e) => tracing::warn!(error = %e, "lease task failed"),
        }
    }
}

/// Watches the Lease and publishes this holder's deadline on each change.
async fn observe_lease(
    api: Api<Lease>,
    name: String,
    identity: String,
    margin: Duration,
    deadline: watch::Sender<Option<Instant>>,
) {
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = std::pin::pin!(watcher(api, cfg));
    while let Some(event) = events.next().await {
        let lease = match event {
            Ok(watcher::Event::Apply(l) | watcher::Event::InitApply(l)) => l,
            Ok(watcher::Event::Delete(_)) => {
                deadline.send_replace(None);
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                // The watcher retries; until it sees a renewal the deadline
                // stands and then passes.
                tracing::warn!(lease = %name, error = %e, "watching the leader Lease");
                continue;
            }
        };
        let spec = lease.spec.unwrap_or_default();
        let until = valid_until(&spec, &identity, margin, Instant::now(), Timestamp::now());
        deadline.send_replace(until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn lease(holder: &str, renewed: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            lease_duration_seconds: Some(duration),
            ..Default::default()
        }
    }

    #[test]
    fn a_fresh_renewal_allows_the_rest_of_the_duration_less_the_margin() {
        let now = Instant::now();
        let wall = Timestamp::from_second(1_000).unwrap();
        let m = Duration::from_secs(5);
        assert_eq!(
            valid_until(&lease("me", 996, 15), "me", m, now, wall),
            Some(now + Duration::from_secs(6))
        );
        // A renewal stamped in the future (clock step) counts as now.
        assert_eq!(
            valid_until(&lease("me", 1_003, 15), "me", m, now, wall),
            Some(now + Duration::from_secs(10))
        );
    }

    #[test]
    fn no_time_left_another_holder_or_no_renewal_gives_none() {
        let now = Instant::now();
        let wall = Timestamp::from_second(1_000).unwrap();
        let m = Duration::from_secs(5);
        assert_eq!(valid_until(&lease("me", 990, 15), "me", m, now, wall), None);
        assert_eq!(
            valid_until(&lease("other", 999, 15), "me", m, now, wall),
            None
        );
        let mut l = lease("me", 999, 15);
        l.renew_time = None;
        assert_eq!(valid_until(&l, "me", m, now, wall), None);
    }
}
