//! Logs, Prometheus metrics and the health endpoints on port 8080.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// One RedisCluster.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub namespace: String,
    pub cluster: String,
}

pub struct Metrics {
    registry: Registry,
    pub scaling_events: Family<DirectionLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub reconcile_errors: Family<ReasonLabels, Counter>,
    pub managed_clusters: Gauge,
    pub slots_migrated: Counter,
    pub keys_migrated: Counter,
    pub migration_duration: Histogram,
    pub topology_actions: Counter,
    /// Shards whose only copy was lost and whose slots were served again,
    /// empty (`redis_operator_data_loss_total`).
    pub data_loss: Counter,
    /// Pods left to update, per cluster with an update under way.
    pub pods_pending_update: Family<ClusterLabels, Gauge>,
    /// Pods deleted by rolling updates.
    pub pods_rolled: Counter,
    /// Set while this process leads and its caches are synced, or while it
    /// stands by: a standby must not hold up a rolling update.
    pub ready: AtomicBool,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::default();
        let scaling_events = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "redis_operator_scaling_events",
            "Changes of spec.replicas made by the autoscaler",
            scaling_events.clone(),
        );
        let reconcile_duration = Histogram::new([0.01, 0.05, 0.1, 0.5, 1.0, 5.0]);
        registry.register(
            "redis_operator_reconcile_duration_seconds",
            "Duration of one reconcile of a RedisCluster",
            reconcile_duration.clone(),
        );
        let reconcile_errors = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "redis_operator_reconcile_errors",
            "Failed reconciles, by reason",
            reconcile_errors.clone(),
        );
        let managed_clusters = Gauge::default();
        registry.register(
            "redis_operator_managed_clusters",
            "RedisClusters this operator manages",
            managed_clusters.clone(),
        );
        let slots_migrated = Counter::default();
        registry.register(
            "redis_operator_slots_migrated",
            "Hash slots moved between shards",
            slots_migrated.clone(),
        );
        let keys_migrated = Counter::default();
        registry.register(
            "redis_operator_keys_migrated",
            "Keys moved between shards",
            keys_migrated.clone(),
        );
        let migration_duration = Histogram::new([0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0]);
        registry.register(
            "redis_operator_migration_duration_seconds",
            "Time spent moving slots in one topology step",
            migration_duration.clone(),
        );
        let topology_actions = Counter::default();
        registry.register(
            "redis_operator_topology_actions",
            "Redis Cluster topology changes made (meet, slots, replicate, forget, failover)",
            topology_actions.clone(),
        );
        let data_loss = Counter::default();
        registry.register(
            "redis_operator_data_loss",
            "Shards whose only copy was lost (no replica, no persistent storage) and whose slots were given to an empty node",
            data_loss.clone(),
);
        let pods_pending_update = Family::<ClusterLabels, Gauge>::default();
        registry.register(
            "redis_operator_pods_pending_update",
            "Redis pods not yet at their StatefulSet's update revision (clusters with an update under way)",
            pods_pending_update.clone(),
        );
        let pods_rolled = Counter::default();
        registry.register(
            "redis_operator_pods_rolled",
            "Redis pods deleted by the operator to roll them to a new revision",
            pods_rolled.clone(),
        );
        Arc::new(Metrics {
            registry,
            scaling_events,
            reconcile_duration,
            reconcile_errors,
            managed_clusters,
            slots_migrated,
            keys_migrated,
            migration_duration,
            topology_actions,
            data_loss,
            pods_pending_update,
            pods_rolled,
            ready: AtomicBool::new(false),
        })
    }

    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// Records the pods `cluster` has left to update; a cluster with none
    /// has no series, so deleted clusters leave none behind.
    pub fn set_pending_update(&self, namespace: &str, cluster: &str, left: u32) {
        let labels = ClusterLabels {
            namespace: namespace.into(),
            cluster: cluster.into(),
        };
        if left == 0 {
            self.pods_pending_update.remove(&labels);
        } else {
            self.pods_pending_update
                .get_or_create(&labels)
                .set(i64::from(left));
        }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}

impl edge::Health for Metrics {
    fn metrics(&self) -> Result<String, std::fmt::Error> {
        self.render()
    }

    fn ready(&self) -> Result<(), &'static str> {
        if self.ready.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err("caches not synced")
        }
    }
}
