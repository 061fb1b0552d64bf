//! What the reconciles read of the watched objects: the children's
//! lookups and each cluster's prior status.

use kube::runtime::watcher;

use super::decide::{ChildKind, Live};
use crate::cache::{self, Key};
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
    gauge: prometheus_client::metrics::gauge::Gauge,
    follow: cache::Follow<Option<Box<status::Prior>>>,
}

impl Priors {
    pub(super) fn new(
        gauge: prometheus_client::metrics::gauge::Gauge,
        keys: &cache::Keys,
    ) -> (Self, cache::Lookup<Option<Box<status::Prior>>>) {
        let (lookup, follow) = cache::Lookup::follow(keys);
        (Priors { gauge, follow }, lookup)
    }

    pub(super) fn apply(&mut self, event: &watcher::Event<cache::Cluster>) {
        let before = self.follow.len();
        self.follow.apply(event, |rc| rc.prior.clone());
        let delta = i64::try_from(self.follow.len()).unwrap_or(i64::MAX)
            - i64::try_from(before).unwrap_or(i64::MAX);
        self.gauge.inc_by(delta);
    }
}

impl Drop for Priors {
    fn drop(&mut self) {
        self.gauge
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
