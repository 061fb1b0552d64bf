//! Leader election on a `coordination.k8s.io` Lease: only the holder runs
//! the controllers. A standby takes over once the holder stops renewing,
//! within the lease duration.
//!
//! On a lost lease, `run` cancels the controllers, waits for the reconciles
//! in flight to finish, and exits. The lease library only logs a failed
//! renewal, so nothing here yet stops a Redis action mid-way when the lease
//! expires: gating each action on a still-valid lease is issue 13's work.

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;

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
}

impl Leadership {
    pub async fn start(client: Client, cfg: &LeaseConfig) -> Result<Self, LeaseManagerError> {
        let manager = LeaseManagerBuilder::new(client, &cfg.name)
            .with_namespace(&cfg.namespace)
            .with_identity(&cfg.identity)
            .with_duration(cfg.duration_secs)
            .with_grace(cfg.grace_secs)
            .with_field_manager(format!("redis-operator-{}", cfg.identity))
            .build()
            .await?;
        let (rx, task) = manager.watch().await;
        Ok(Leadership { rx, task })
    }

    /// Waits until this process leads. `false` if the election stopped.
    pub async fn acquired(&mut self) -> bool {
        self.rx.wait_for(|leader| *leader).await.is_ok()
    }

    /// Waits until leadership is lost (or the election stops).
    pub async fn lost(&mut self) {
        let _ = self.rx.wait_for(|leader| !*leader).await;
    }

    /// Gives the Lease up so a standby can take over at once.
    pub async fn release(self) {
        drop(self.rx);
        match self.task.await {
            Ok(Ok(_)) => tracing::info!("lease released"),
            Ok(Err(e)) => tracing::warn!(error = %e, "releasing the lease failed"),
            Err(e) => tracing::warn!(error = %e, "lease task failed"),
        }
    }
}
