//! The names and labels of a cluster's children: how the operator finds
//! what it owns, and what users select on.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// The field manager of every write, and the `managed-by` label.
pub const MANAGER: &str = "redis-operator";
/// Annotation carrying a hash of what the operator last applied; equal
/// hashes mean there is nothing to write.
pub const SPEC_HASH: &str = "redis.example.com/spec-hash";
pub const CLUSTER_LABEL: &str = "redis.example.com/cluster";
pub const SHARD_LABEL: &str = "redis.example.com/shard";

pub fn statefulset_name(cluster: &str, shard: u32) -> String {
    format!("{cluster}-shard-{shard}")
}
pub fn headless_service_name(cluster: &str) -> String {
    format!("{cluster}-headless")
}
pub fn config_name(cluster: &str) -> String {
    format!("{cluster}-config")
}

/// Labels on every child and pod of a cluster.
pub fn cluster_labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "redis".into()),
        ("app.kubernetes.io/instance".into(), cluster.into()),
        ("app.kubernetes.io/managed-by".into(), MANAGER.into()),
        (CLUSTER_LABEL.into(), cluster.into()),
    ])
}

/// The label selector of one shard's pods and claims.
pub fn shard_selector_string(cluster: &str, shard: u32) -> String {
    format!("{CLUSTER_LABEL}={cluster},{SHARD_LABEL}={shard}")
}

/// The label selector of a cluster's pods, as `status.selector` shows it.
pub fn selector_string(cluster: &str) -> String {
    format!("{CLUSTER_LABEL}={cluster}")
}

pub fn shard_labels(cluster: &str, shard: u32) -> BTreeMap<String, String> {
    let mut l = cluster_labels(cluster);
    l.insert(SHARD_LABEL.into(), shard.to_string());
    l.insert("app.kubernetes.io/component".into(), "shard".into());
    l
}

pub fn shard_selector(cluster: &str, shard: u32) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([
            (CLUSTER_LABEL.into(), cluster.into()),
            (SHARD_LABEL.into(), shard.to_string()),
        ])),
        ..Default::default()
    }
}
