//! Which child caches hold their first full list, so a reconcile never
//! decides on caches that are still filling.

use std::sync::Arc;

use kube::runtime::watcher;

/// Which caches hold their first full list, marked by their watch streams.
///
/// Not `Store::wait_until_ready`: its signal is a oneshot that remembers
/// only the latest waker, so of several tasks waiting at once (reconciles,
/// the readiness probe, the Controller itself on the RedisCluster store)
/// only one is woken. A watch channel wakes every waiter.
#[derive(Clone)]
pub(super) struct Synced(tokio::sync::watch::Receiver<u8>);

/// The marking side of [`Synced`], held by the watch streams.
#[derive(Clone)]
pub(super) struct SyncMarks(Arc<tokio::sync::watch::Sender<u8>>);

impl Synced {
    pub(super) const CLUSTERS: u8 = 1;
    pub(super) const STATEFULSETS: u8 = 1 << 1;
    pub(super) const PODS: u8 = 1 << 2;
    pub(super) const SERVICES: u8 = 1 << 3;
    pub(super) const CONFIGMAPS: u8 = 1 << 4;
    pub(super) const PDBS: u8 = 1 << 5;
    pub(super) const NETWORK_POLICIES: u8 = 1 << 6;
    pub(super) const CHILDREN: u8 = Self::STATEFULSETS
        | Self::PODS
        | Self::SERVICES
        | Self::CONFIGMAPS
        | Self::PDBS
        | Self::NETWORK_POLICIES;
    pub(super) const ALL: u8 = Self::CLUSTERS | Self::CHILDREN;

    pub(super) fn new() -> (SyncMarks, Synced) {
        let (tx, rx) = tokio::sync::watch::channel(0);
        (SyncMarks(Arc::new(tx)), Synced(rx))
    }

    /// Resolves once every cache in `caches` is synced; `false` when the
    /// watch streams are gone first (the controller stopped).
    pub(super) async fn wait(&self, caches: u8) -> bool {
        let mut rx = self.0.clone();
        rx.wait_for(|m| m & caches == caches).await.is_ok()
    }
}

impl SyncMarks {
    /// Marks `cache` synced at the end of its watch's initial list (the
    /// event has been applied to the store by then).
    pub(super) fn marker<K>(&self, cache: u8) -> impl FnMut(&watcher::Event<K>) + use<K> {
        let tx = self.0.clone();
        move |event| {
            if matches!(event, watcher::Event::InitDone) {
                tx.send_if_modified(|m| {
                    let before = *m;
                    *m |= cache;
                    *m != before
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::{ConfigMap, Service};
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use std::time::Duration;

    use crate::cache;

    fn init_done<K>(marks: &SyncMarks, cache: u8) {
        let mut mark = marks.marker::<K>(cache);
        mark(&watcher::Event::Init);
        mark(&watcher::Event::InitDone);
    }

    /// Whether a wait on `caches` would resolve now: one poll, no clock.
    fn synced_now(synced: &Synced, caches: u8) -> Option<bool> {
        synced.wait(caches).now_or_never()
    }

    /// A task waiting on `caches`, returned once it is parked in the wait,
    /// so a mark that follows must wake it.
    async fn waiter(synced: &Synced, caches: u8) -> tokio::task::JoinHandle<bool> {
        let s = synced.clone();
        let (parked, is_parked) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut wait = std::pin::pin!(s.wait(caches));
            if let std::task::Poll::Ready(done) = futures::poll!(&mut wait) {
                return done;
            }
            let _ = parked.send(());
            wait.await
        });
        let _ = is_parked.await;
        task
    }

    #[tokio::test]
    async fn every_waiter_is_woken_once_all_its_caches_are_synced() {
        let (marks, synced) = Synced::new();
        // Several reconciles and the readiness probe wait at once.
        let mut waiters = Vec::new();
        for _ in 0..4 {
            waiters.push(waiter(&synced, Synced::CHILDREN).await);
        }
        init_done::<StatefulSet>(&marks, Synced::STATEFULSETS);
        init_done::<cache::Pod>(&marks, Synced::PODS);
        init_done::<cache::Meta<Service>>(&marks, Synced::SERVICES);
        init_done::<cache::Meta<ConfigMap>>(&marks, Synced::CONFIGMAPS);
        init_done::<cache::Meta<NetworkPolicy>>(&marks, Synced::NETWORK_POLICIES);
        // Init alone (a list under way) marks nothing.
        let mut pdb = marks.marker::<cache::Meta<PodDisruptionBudget>>(Synced::PDBS);
        pdb(&watcher::Event::Init);
        assert_eq!(synced_now(&synced, Synced::CHILDREN), None);
        pdb(&watcher::Event::InitDone);
        // The timeout only bounds a failure; the waiters wake on the mark.
        for w in waiters {
            let woke = tokio::time::timeout(Duration::from_secs(10), w).await;
            assert!(matches!(woke, Ok(Ok(true))), "{woke:?}");
        }
        // The readiness probe also needs the RedisCluster cache.
        assert_eq!(synced_now(&synced, Synced::ALL), None);
        init_done::<cache::Cluster>(&marks, Synced::CLUSTERS);
        assert_eq!(synced_now(&synced, Synced::ALL), Some(true));
        // A relist does not unmark.
        let mut sts = marks.marker::<StatefulSet>(Synced::STATEFULSETS);
        sts(&watcher::Event::Init);
        assert_eq!(synced_now(&synced, Synced::ALL), Some(true));
        // Even once the streams are gone.
        drop((marks, sts, pdb));
        assert_eq!(synced_now(&synced, Synced::ALL), Some(true));
    }

    #[tokio::test]
    async fn a_stopped_controller_is_not_synced() {
        let (marks, synced) = Synced::new();
        let mut sts = marks.marker::<StatefulSet>(Synced::STATEFULSETS);
        sts(&watcher::Event::InitDone);
        let waiter = waiter(&synced, Synced::CHILDREN).await;
        // The watch streams (and their markers) are dropped on shutdown.
        drop((marks, sts));
        let woke = tokio::time::timeout(Duration::from_secs(10), waiter).await;
        assert!(matches!(woke, Ok(Ok(false))), "{woke:?}");
    }
}
