//! Logs, Prometheus metrics and the health endpoints on port 8080.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
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
    /// What the operator last read of each cluster it drives.
    pub clusters: Arc<ClusterGauges>,
    /// 1 while this process runs the controllers (it leads, or leader
    /// election is off).
    pub leader: Gauge,
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
        let leader = Gauge::default();
        registry.register(
            "redis_operator_leader",
            "1 while this process runs the controllers (it holds the leader lease, or election is off)",
            leader.clone(),
        );
        let clusters = Arc::new(ClusterGauges::default());
        registry.register_collector(Box::new(clusters.clone()));
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
            clusters,
            leader,
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

/// What the operator reads of one cluster that Redis's own exporter cannot
/// know, as the last topology step saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ClusterReading {
    pub slots_covered: u32,
    pub shards_desired: u32,
    /// Desired shards with a primary that answered and owns slots (a
    /// fresh node that replaced a lost primary is a primary with none).
    pub shards_with_primary: u32,
    /// Replicas the spec asks for, over all desired shards.
    pub replicas_desired: u32,
    /// Replicas with their link to the primary up and no sync under way.
    pub replicas_in_sync: u32,
    /// Nodes that answered with `cluster_state:ok`, and nodes asked.
    pub nodes_ok: u32,
    pub nodes: u32,
    /// Slots still to move to reach an even spread.
    pub slots_to_move: u32,
    /// `spec.replicas`, and what the autoscaler's last reading recommends
    /// (before cooldowns and bounds).
    pub replicas: i32,
    pub recommended_replicas: Option<i32>,
    /// When the nodes' TLS certificate expires (Unix seconds); `None`
    /// without `spec.tls`.
    pub tls_not_after: Option<i64>,
}

impl ClusterReading {
    /// The reading of a cluster of `shape` from a topology step's
    /// `readings`.
    pub fn of(
        readings: &crate::topology::Readings,
        shape: crate::shape::ClusterShape,
        slots_to_move: u32,
        recommended_replicas: Option<i32>,
    ) -> ClusterReading {
        let answered = || readings.nodes.iter().filter(|n| n.answered);
        let with_primary: std::collections::BTreeSet<u32> = answered()
            .filter(|n| n.primary && n.slots > 0 && shape.has_shard(n.shard))
            .map(|n| n.shard)
            .collect();
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let slots = u32::from(crate::topology::model::SLOTS);
        ClusterReading {
            slots_covered: slots.saturating_sub(readings.uncovered_slots),
            shards_desired: shape.shards.get(),
            shards_with_primary: count(with_primary.len()),
            replicas_desired: shape
                .shards
                .get()
                .saturating_mul(shape.nodes_per_shard.get() - 1),
            replicas_in_sync: count(
                answered()
                    .filter(|n| !n.primary && n.link_up && shape.has_shard(n.shard))
                    .count(),
            ),
            nodes_ok: count(answered().filter(|n| n.state_ok).count()),
            nodes: count(readings.nodes.len()),
            slots_to_move,
            replicas: shape.replicas(),
            recommended_replicas,
            tls_not_after: None,
        }
    }
}

/// The per-cluster gauges, rendered at scrape time from one map: a cluster
/// that is deleted, or not read (its topology not managed), has no series.
#[derive(Debug, Default)]
pub struct ClusterGauges(Mutex<ByNamespace>);

/// Readings by namespace, then cluster name: an update looks its cluster up
/// by `&str`, without allocating.
type ByNamespace = BTreeMap<String, BTreeMap<String, ClusterReading>>;

/// Name, help and value of each per-cluster gauge.
type GaugeDef = (
    &'static str,
    &'static str,
    fn(&ClusterReading) -> Option<i64>,
);

const CLUSTER_GAUGES: [GaugeDef; 11] = [
    (
        "redis_operator_cluster_slots_covered",
        "Hash slots (of 16384) that some node serves",
        |r| Some(i64::from(r.slots_covered)),
    ),
    (
        "redis_operator_cluster_shards_desired",
        "Shards the spec asks for",
        |r| Some(i64::from(r.shards_desired)),
    ),
    (
        "redis_operator_cluster_shards_with_primary",
        "Desired shards whose primary answered and owns slots",
        |r| Some(i64::from(r.shards_with_primary)),
    ),
    (
        "redis_operator_cluster_replicas_desired",
        "Replicas the spec asks for, over all shards",
        |r| Some(i64::from(r.replicas_desired)),
    ),
    (
        "redis_operator_cluster_replicas_in_sync",
        "Replicas linked to their primary with no sync under way",
        |r| Some(i64::from(r.replicas_in_sync)),
    ),
    (
        "redis_operator_cluster_nodes",
        "Redis nodes the operator asked",
        |r| Some(i64::from(r.nodes)),
    ),
    (
        "redis_operator_cluster_nodes_ok",
        "Redis nodes that answered with cluster_state:ok",
        |r| Some(i64::from(r.nodes_ok)),
    ),
    (
        "redis_operator_cluster_slots_to_move",
        "Hash slots still to move to spread them evenly (a migration is under way while above 0)",
        |r| Some(i64::from(r.slots_to_move)),
    ),
    (
        "redis_operator_cluster_replicas",
        "Redis nodes per shard, as spec.replicas says",
        |r| Some(i64::from(r.replicas)),
    ),
    (
        "redis_operator_autoscaler_recommended_replicas",
        "Nodes per shard that the last CPU reading calls for, before cooldowns and bounds",
        |r| r.recommended_replicas.map(i64::from),
    ),
    (
        "redis_operator_cluster_tls_cert_expiry_timestamp_seconds",
        "When the certificate the Redis nodes serve expires (clusters with spec.tls)",
        |r| r.tls_not_after,
    ),
];

impl ClusterGauges {
    fn map(&self) -> std::sync::MutexGuard<'_, ByNamespace> {
        // Each update is one insert or remove: a panic cannot leave half.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set(&self, namespace: &str, cluster: &str, reading: ClusterReading) {
        let mut map = self.map();
        let clusters = match map.get_mut(namespace) {
            Some(c) => c,
            None => map.entry(namespace.to_string()).or_default(),
        };
        match clusters.get_mut(cluster) {
            Some(r) => *r = reading,
            None => {
                clusters.insert(cluster.to_string(), reading);
            }
        }
    }

    pub fn forget(&self, namespace: &str, cluster: &str) {
        let mut map = self.map();
        if let Some(clusters) = map.get_mut(namespace) {
            clusters.remove(cluster);
            if clusters.is_empty() {
                map.remove(namespace);
            }
        }
    }

    /// Keeps the clusters for which `keep(namespace, name)` holds (after a
    /// relist, which reports no deletions).
    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        let mut map = self.map();
        for (ns, clusters) in map.iter_mut() {
            clusters.retain(|name, _| keep(ns, name));
        }
        map.retain(|_, clusters| !clusters.is_empty());
    }
}

impl Collector for ClusterGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let map = self.map();
        if map.is_empty() {
            return Ok(());
        }
        for (name, help, value) in CLUSTER_GAUGES {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            let all = map
                .iter()
                .flat_map(|(ns, c)| c.iter().map(move |(n, r)| (ns, n, r)));
            for (namespace, cluster, reading) in all {
                let Some(v) = value(reading) else { continue };
                let labels = [
                    ("namespace", namespace.as_str()),
                    ("cluster", cluster.as_str()),
                ];
                ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_counts_live_primaries_and_synced_replicas_of_desired_shards() {
        use crate::topology::{NodeReading, Readings};
        let node = |shard, primary, link_up| NodeReading {
            shard,
            answered: true,
            primary,
            slots: if primary { 100 } else { 0 },
            link_up,
            state_ok: true,
            ..Default::default()
        };
        let readings = Readings {
            nodes: vec![
                node(0, true, false),
                node(0, false, true),
                // Shard 1: its primary did not answer, its replica lost the link.
                NodeReading {
                    answered: false,
                    ..node(1, true, false)
                },
                node(1, false, false),
                // Shard 2 is being drained: not counted.
                node(2, true, false),
                // Shard 1's lost primary replaced by a fresh node: a
                // primary of no slot, which serves nothing.
                NodeReading {
                    slots: 0,
                    ..node(1, true, false)
                },
            ],
            uncovered_slots: 100,
            open_slots: false,
        };
        let shape = crate::shape::ClusterShape {
            shards: std::num::NonZeroU32::new(2).unwrap(),
            nodes_per_shard: std::num::NonZeroU32::new(2).unwrap(),
        };
        let r = ClusterReading::of(&readings, shape, 7, Some(3));
        assert_eq!(
            r,
            ClusterReading {
                slots_covered: 16284,
                shards_desired: 2,
                shards_with_primary: 1,
                replicas_desired: 2,
                replicas_in_sync: 1,
                nodes_ok: 5,
                nodes: 6,
                slots_to_move: 7,
                replicas: 2,
                recommended_replicas: Some(3),
                tls_not_after: None,
            }
        );
    }

    #[test]
    fn each_cluster_gets_its_gauges_until_it_is_forgotten() {
        let m = Metrics::new();
        assert!(!m.render().unwrap().contains("redis_operator_cluster_"));
        let reading = ClusterReading {
            slots_covered: 16384,
            shards_desired: 3,
            shards_with_primary: 3,
            replicas: 2,
            ..Default::default()
        };
        m.clusters.set("apps", "cache", reading);
        let tls = ClusterReading {
            tls_not_after: Some(1_900_000_000),
            ..reading
        };
        m.clusters.set("apps", "other", tls);
        let text = m.render().unwrap();
        for line in [
            "# TYPE redis_operator_cluster_slots_covered gauge",
            "redis_operator_cluster_slots_covered{namespace=\"apps\",cluster=\"cache\"} 16384",
            "redis_operator_cluster_shards_with_primary{namespace=\"apps\",cluster=\"other\"} 3",
            "redis_operator_cluster_replicas_in_sync{namespace=\"apps\",cluster=\"cache\"} 0",
            "redis_operator_cluster_tls_cert_expiry_timestamp_seconds{namespace=\"apps\",cluster=\"other\"} 1900000000",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        // Without TLS, no expiry.
        assert!(
            !text.contains("expiry_timestamp_seconds{namespace=\"apps\",cluster=\"cache\"}"),
            "{text}"
        );
        // No reading, no recommendation.
        assert!(
            !text.contains("redis_operator_autoscaler_recommended_replicas{"),
            "{text}"
        );
        m.clusters.forget("apps", "cache");
        m.clusters.retain(|_, name| name != "other");
        assert!(!m.render().unwrap().contains("redis_operator_cluster_"));
    }
}
