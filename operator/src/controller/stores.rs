//! What the reconciles read of the watched objects: the children's
//! lookups and each cluster's prior status.

use std::sync::Arc;

use kube::Resource;
use kube::runtime::watcher;

use super::decide::{ChildKind, Live};
use crate::cache::{self, Key};
use crate::telemetry::Metrics;
use crate::{names, status};

/// What is kept of the children (only our objects), by namespace and name.
#[derive(Clone)]
pub(super) struct Stores {
    pub(super) statefulsets: cache::Lookup<cache::SetState>,
    pub(super) pods: cache::Lookup<cache::PodState>,
    pub(super) services: cache::Hashes,
    pub(super) configmaps: cache::Hashes,
    pub(super) pdbs: cache::Hashes,
    pub(super) network_policies: cache::Hashes,
}

impl Stores {
    /// The spec hash on the cached copy of a child, if cached and hashed.
    pub(super) fn live_hash(&self, kind: ChildKind, key: cache::Key) -> Option<u64> {
        match kind {
            ChildKind::ConfigMap => self.configmaps.by_key(key).flatten(),
            ChildKind::Service => self.services.by_key(key).flatten(),
            ChildKind::Pdb => self.pdbs.by_key(key).flatten(),
            ChildKind::NetworkPolicy => self.network_policies.by_key(key).flatten(),
            ChildKind::StatefulSet => self
                .statefulsets
                .by_key(key)
                .and_then(|s| s.ownership.spec_hash),
        }
    }

    /// The cluster's StatefulSets and their pods, looked up by the names
    /// they must have instead of scanning the caches, so a reconcile costs
    /// the same beside ten clusters or ten thousand.
    pub(super) fn children_of(
        &self,
        ns: &str,
        cluster: &str,
    ) -> (Vec<cache::SetState>, Vec<(String, cache::PodState)>) {
        let ours = |o: &cache::Ownership| o.cluster.as_deref() == Some(cluster);
        let mut sets = Vec::new();
        let mut pods = Vec::new();
        for shard in 0..u32::try_from(api::bounds::SHARD_COUNT.max).unwrap_or(0) {
            let sts_name = names::statefulset_name(cluster, shard);
            let Some(sts) = self
                .statefulsets
                .get(ns, &sts_name)
                .filter(|s| ours(&s.ownership))
            else {
                continue;
            };
            // Pods beyond the current size may still be terminating.
            let ordinals = [
                api::bounds::REPLICAS.max,
                sts.replicas.unwrap_or(0),
                sts.current,
            ]
            .into_iter()
            .max()
            .unwrap_or(0);
            for ordinal in 0..ordinals {
                let pod = format!("{sts_name}-{ordinal}");
                if let Some(p) = self.pods.get(ns, &pod).filter(|p| ours(&p.ownership)) {
                    pods.push((pod, p));
                }
            }
            sets.push(sts);
        }
        (sets, pods)
    }
}

/// The status of each watched cluster, as the [`status::Prior`] a
/// reconcile needs of it (the cached RedisClusters keep no status); it
/// also keeps `redis_operator_managed_clusters` at the number of clusters
/// this scope watches, as counting the store would scan it. Each scope adds
/// its own count, so the gauge is their sum.
pub(super) struct Priors {
    /// Also where a deleted cluster's series are dropped.
    metrics: Arc<Metrics>,
    follow: cache::Follow<Option<Box<status::Prior>>>,
    /// The namespace this scope watches (`None`: all).
    scope: Option<String>,
}

impl Priors {
    pub(super) fn new(
        metrics: Arc<Metrics>,
        scope: Option<String>,
        keys: &cache::Keys,
    ) -> (Self, cache::Lookup<Option<Box<status::Prior>>>) {
        let (lookup, follow) = cache::Lookup::follow(keys);
        let priors = Priors {
            metrics,
            follow,
            scope,
        };
        (priors, lookup)
    }

    pub(super) fn apply(&mut self, event: &watcher::Event<cache::Cluster>) {
        let before = self.follow.len();
        self.follow.apply(event, |rc| rc.prior.clone());
        match event {
            watcher::Event::Delete(rc) => {
                let meta = rc.meta();
                let ns = meta.namespace.as_deref().unwrap_or_default();
                let name = meta.name.as_deref().unwrap_or_default();
                self.metrics.clusters.forget(ns, name);
                self.metrics.set_pending_update(ns, name, 0);
            }
            // A relist reports no deletions: keep what it found.
            watcher::Event::InitDone => {
                let (follow, scope) = (&self.follow, self.scope.as_deref());
                self.metrics
                    .clusters
                    .retain(|ns, name| scope.is_some_and(|s| s != ns) || follow.contains(ns, name));
            }
            _ => {}
        }
        let delta = i64::try_from(self.follow.len()).unwrap_or(i64::MAX)
            - i64::try_from(before).unwrap_or(i64::MAX);
        self.metrics.managed_clusters.inc_by(delta);
    }
}

impl Drop for Priors {
    fn drop(&mut self) {
        self.metrics
            .managed_clusters
            .dec_by(i64::try_from(self.follow.len()).unwrap_or(i64::MAX));
    }
}

/// The live children of one namespace, as the decision sees them.
pub(super) struct LiveChildren<'a> {
    pub(super) stores: &'a Stores,
    pub(super) keys: &'a cache::Keys,
    pub(super) ns: &'a str,
}

impl Live for LiveChildren<'_> {
    fn key(&self, name: &str) -> Key {
        self.keys.of(self.ns, name)
    }

    fn hash(&self, kind: ChildKind, key: Key) -> Option<u64> {
        self.stores.live_hash(kind, key)
    }
}
