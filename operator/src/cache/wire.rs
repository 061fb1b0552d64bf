//! The slim decoders: each watched kind straight into the few fields a
//! reconcile reads.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::names::{CLUSTER_LABEL, SHARD_LABEL, SPEC_HASH};
use crate::status::Prior;
use crate::utilization::{CONTAINER, parse_cpu, unix_seconds};

/// The label the StatefulSet controller puts the pod's revision in.
const REVISION_LABEL: &str = "controller-revision-hash";

/// Our labels and annotation on a child.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ownership {
    pub cluster: Option<String>,
    pub shard: Option<u32>,
    /// The `spec-hash` annotation, read as the hex number we write there.
    pub spec_hash: Option<u64>,
}

/// A cached child of a RedisCluster.
pub trait Child {
    fn ownership(&self) -> &Ownership;
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct MetaWire {
    name: Option<String>,
    namespace: Option<String>,
    resource_version: Option<String>,
    deletion_timestamp: Option<Time>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
}

/// An object as listed or watched: only the parts a cache type reads.
#[derive(Deserialize)]
#[serde(bound(
    deserialize = "Spec: Deserialize<'de> + Default, Status: Deserialize<'de> + Default"
))]
struct Wire<Spec, Status> {
    #[serde(default)]
    metadata: MetaWire,
    #[serde(default)]
    spec: Spec,
    #[serde(default)]
    status: Status,
}

impl MetaWire {
    /// Name, namespace, deletion mark and resourceVersion (the watcher
    /// reads it).
    fn split(self) -> (ObjectMeta, Ownership) {
        let mut labels = self.labels.unwrap_or_default();
        let ownership = Ownership {
            cluster: labels.remove(CLUSTER_LABEL),
            shard: labels.get(SHARD_LABEL).and_then(|s| s.parse().ok()),
            spec_hash: self
                .annotations
                .and_then(|a| u64::from_str_radix(a.get(SPEC_HASH)?, 16).ok()),
        };
        let meta = ObjectMeta {
            name: self.name,
            namespace: self.namespace,
            resource_version: self.resource_version,
            deletion_timestamp: self.deletion_timestamp,
            ..Default::default()
        };
        (meta, ownership)
    }
}

/// Implements the k8s-openapi traits (and so `kube::Resource`) for a
/// decoded type, with the kind of the object it stands for, and [`Child`]
/// with the path to its [`Ownership`].
macro_rules! resource {
    ($t:ident $(<$p:ident>)?, $kind:ty, $($ownership:ident).+) => {
        impl$(<$p: k8s_openapi::Resource>)? k8s_openapi::Resource for $t$(<$p>)? {
            const API_VERSION: &'static str = <$kind>::API_VERSION;
            const GROUP: &'static str = <$kind>::GROUP;
            const KIND: &'static str = <$kind>::KIND;
            const VERSION: &'static str = <$kind>::VERSION;
            const URL_PATH_SEGMENT: &'static str = <$kind>::URL_PATH_SEGMENT;
            type Scope = k8s_openapi::NamespaceResourceScope;
        }
        impl$(<$p: k8s_openapi::Resource>)? k8s_openapi::Metadata for $t$(<$p>)? {
            type Ty = ObjectMeta;
            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
        impl$(<$p: k8s_openapi::Resource>)? Child for $t$(<$p>)? {
            fn ownership(&self) -> &Ownership {
                &self.$($ownership).+
            }
        }
    };
}

/// A child whose content we never read back (Service, ConfigMap,
/// PodDisruptionBudget): only whether it exists, and its spec hash.
#[derive(Clone, Debug, Default)]
pub struct Meta<K> {
    pub metadata: ObjectMeta,
    pub ownership: Ownership,
    kind: PhantomData<fn() -> K>,
}

impl<'de, K> Deserialize<'de> for Meta<K> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(default)]
            metadata: MetaWire,
        }
        let (metadata, ownership) = Wire::deserialize(d)?.metadata.split();
        Ok(Meta {
            metadata,
            ownership,
            kind: PhantomData,
        })
    }
}
resource!(Meta<K>, K, ownership);

/// A StatefulSet as decoded from the API.
#[derive(Clone, Debug, Default)]
pub struct StatefulSet {
    pub metadata: ObjectMeta,
    pub state: SetState,
}

/// What is kept of a StatefulSet: the replicas it is asked for, has and
/// has ready.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SetState {
    pub ownership: Ownership,
    pub replicas: Option<i32>,
    pub current: i32,
    pub ready: i32,
    /// `status.updateRevision`, as its `revision` hash: the revision
    /// every pod is rolled to.
    pub update_revision: Option<u64>,
    /// The size its `data` claim template asks for, in bytes.
    pub claim_bytes: Option<u64>,
    /// Marked for deletion.
    pub deleting: bool,
}

/// A revision name (`controller-revision-hash`, `updateRevision`) as a
/// number: only ever compared, and a plain field keeps the caches small.
pub fn revision(name: &str) -> u64 {
    crate::stable_hash::of_str(name)
}

impl<'de> Deserialize<'de> for StatefulSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize, Default)]
        #[serde(default, rename_all = "camelCase")]
        struct Spec {
            replicas: Option<i32>,
            volume_claim_templates: Vec<Claim>,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Claim {
            metadata: ClaimMeta,
            spec: ClaimSpec,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct ClaimMeta {
            name: String,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct ClaimSpec {
            resources: Requests,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Requests {
            requests: BTreeMap<String, String>,
        }
        #[derive(Deserialize, Default)]
        #[serde(default, rename_all = "camelCase")]
        struct Status {
            replicas: i32,
            ready_replicas: Option<i32>,
            update_revision: Option<String>,
        }
        let w = Wire::<Spec, Status>::deserialize(d)?;
        let (metadata, ownership) = w.metadata.split();
        let deleting = metadata.deletion_timestamp.is_some();
        Ok(StatefulSet {
            metadata,
            state: SetState {
                ownership,
                replicas: w.spec.replicas,
                current: w.status.replicas,
                ready: w.status.ready_replicas.unwrap_or(0),
                update_revision: w.status.update_revision.as_deref().map(revision),
                claim_bytes: (w.spec.volume_claim_templates.iter())
                    .find(|c| c.metadata.name == crate::desired::DATA_VOLUME)
                    .and_then(|c| c.spec.resources.requests.get("storage"))
                    .and_then(|q| api::quantity::bytes(q)),
                deleting,
            },
        })
    }
}
resource!(
    StatefulSet,
    k8s_openapi::api::apps::v1::StatefulSet,
    state.ownership
);

/// A pod as decoded from the API.
#[derive(Clone, Debug, Default)]
pub struct Pod {
    pub metadata: ObjectMeta,
    pub state: PodState,
}

/// What is kept of a pod: what utilisation and the topology read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodState {
    pub ownership: Ownership,
    /// Marked for deletion.
    pub deleting: bool,
    /// In phase `Running`.
    pub running: bool,
    /// The pod IP, when it is one.
    pub ip: Option<IpAddr>,
    /// Set when the pod is Ready: since when, in Unix seconds (0 when the
    /// condition carries no time).
    pub ready_since: Option<f64>,
    /// The Redis container's CPU request in cores, when it parses.
    pub cpu_request: Option<f64>,
    /// Its `controller-revision-hash` label, as a `revision` hash.
    pub revision: Option<u64>,
}

impl<'de> Deserialize<'de> for Pod {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Resources {
            requests: BTreeMap<String, String>,
        }
        #[derive(Deserialize)]
        struct Container {
            name: String,
            #[serde(default)]
            resources: Resources,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Spec {
            containers: Vec<Container>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Condition {
            #[serde(rename = "type")]
            type_: String,
            status: String,
            #[serde(default)]
            last_transition_time: Option<Time>,
        }
        #[derive(Deserialize, Default)]
        #[serde(default, rename_all = "camelCase")]
        struct Status {
            phase: Option<String>,
            #[serde(rename = "podIP")]
            pod_ip: Option<String>,
            conditions: Vec<Condition>,
        }
        let w = Wire::<Spec, Status>::deserialize(d)?;
        let rev = w
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(REVISION_LABEL))
            .map(|r| revision(r));
        let (metadata, ownership) = w.metadata.split();
        let state = PodState {
            revision: rev,
            ownership,
            deleting: metadata.deletion_timestamp.is_some(),
            running: w.status.phase.as_deref() == Some("Running"),
            ip: w.status.pod_ip.and_then(|ip| ip.parse().ok()),
            ready_since: w
                .status
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready" && c.status == "True")
                .map(|c| {
                    c.last_transition_time
                        .map(|t| unix_seconds(t.0))
                        .unwrap_or(0.0)
                }),
            cpu_request: w
                .spec
                .containers
                .into_iter()
                .find(|c| c.name == CONTAINER)
                .and_then(|mut c| c.resources.requests.remove("cpu"))
                .and_then(|q| parse_cpu(&q)),
        };
        Ok(Pod { metadata, state })
    }
}
resource!(Pod, k8s_openapi::api::core::v1::Pod, state.ownership);

/// The value [`Hashes`](super::Hashes) keeps of a child.
pub fn spec_hash<K: Child>(obj: &K) -> Option<u64> {
    obj.ownership().spec_hash
}

/// A RedisCluster as cached: the metadata a reconcile reads, and the spec
/// as the API server sent it (compact JSON), decoded by each reconcile
/// ([`Cluster::to_api`]).
///
/// A decoded `RedisCluster` is 750 bytes before its strings, and its
/// resource requests, a map, take one 544-byte tree node; the raw spec is
/// one allocation of about 200 bytes, and decoding it costs a reconcile a
/// microsecond or two. A spec our types cannot read then fails that
/// cluster's reconciles, with an event, rather than the whole watch; a
/// status they cannot read counts as none, and the next reconcile writes
/// it whole.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    pub metadata: ObjectMeta,
    spec: Option<Box<RawValue>>,
    /// What a reconcile needs of the status, for the watch to take
    /// (see `controller::Priors`); never kept in the cache.
    pub prior: Option<Box<Prior>>,
}

impl<'de> Deserialize<'de> for Cluster {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Not `MetaWire`: a cluster's labels and annotations (kubectl's
        // last-applied copy among them) are never read, its uid is.
        #[derive(Deserialize, Default)]
        #[serde(default, rename_all = "camelCase")]
        struct Meta {
            name: Option<String>,
            namespace: Option<String>,
            uid: Option<String>,
            generation: Option<i64>,
            resource_version: Option<String>,
            deletion_timestamp: Option<Time>,
        }
        #[derive(Deserialize)]
        struct Wire {
            #[serde(default)]
            metadata: Meta,
            #[serde(default)]
            spec: Option<Box<RawValue>>,
            #[serde(default)]
            status: Option<Box<RawValue>>,
        }
        let w = Wire::deserialize(d)?;
        let m = w.metadata;
        Ok(Cluster {
            metadata: ObjectMeta {
                name: m.name,
                namespace: m.namespace,
                uid: m.uid,
                generation: m.generation,
                resource_version: m.resource_version,
                deletion_timestamp: m.deletion_timestamp,
                ..Default::default()
            },
            spec: w.spec,
            prior: w
                .status
                .and_then(|s| serde_json::from_str::<api::RedisClusterStatus>(s.get()).ok())
                .map(|s| Box::new(Prior::of(&s))),
        })
    }
}

impl kube::Resource for Cluster {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        api::RedisCluster::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        api::RedisCluster::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        api::RedisCluster::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        api::RedisCluster::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl Cluster {
    /// The RedisCluster this stands for, without its status; a field the
    /// policy owns and the spec leaves out reads as the policy's default.
    pub fn to_api(&self, policy: &api::Policy) -> Result<api::RedisCluster, serde_json::Error> {
        let spec = self.spec.as_deref().map_or("{}", RawValue::get);
        Ok(api::RedisCluster {
            metadata: self.metadata.clone(),
            spec: api::defaults::read_spec(spec, policy)?,
            status: None,
        })
    }

    /// Drops what only the watch needs (the prior, taken by then, and the
    /// resourceVersion the watcher reads) before the object is cached.
    pub fn strip(&mut self) {
        self.prior = None;
        self.metadata.resource_version = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status;
    use kube::Resource;
    use serde_json::json;

    fn live_pod() -> serde_json::Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "demo-shard-0-1", "namespace": "team-a", "uid": "u",
                "resourceVersion": "42", "generateName": "demo-shard-0-",
                "labels": {
                    CLUSTER_LABEL: "demo", SHARD_LABEL: "0",
                    "controller-revision-hash": "demo-shard-0-7d9"
                },
                "annotations": {"kwok.x-k8s.io/node": "fake"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                                     "name": "demo-shard-0", "uid": "s"}],
                "managedFields": [{"manager": "kube-controller-manager"}]
            },
            "spec": {
                "nodeName": "node-1",
                "containers": [
                    {"name": "exporter", "image": "x",
                     "resources": {"requests": {"cpu": "1"}}},
                    {"name": "redis", "image": "redis:7.2",
                     "resources": {"requests": {"cpu": "250m", "memory": "128Mi"},
                                   "limits": {"cpu": "1"}},
                     "env": [{"name": "A", "value": "b"}]}
                ]
            },
            "status": {
                "phase": "Running", "podIP": "127.1.0.7", "hostIP": "10.0.0.1",
                "conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Ready", "status": "True",
                     "lastTransitionTime": "2026-11-24T05:00:00Z", "message": "m"}
                ],
                "containerStatuses": [{"name": "redis", "ready": true, "restartCount": 0,
                                       "image": "redis:7.2", "imageID": "sha256:1"}]
            }
        })
    }

    #[test]
    fn pod_keeps_what_reconciles_read() {
        let p: Pod = serde_json::from_value(live_pod()).unwrap();
        assert_eq!(p.metadata.name.as_deref(), Some("demo-shard-0-1"));
        assert_eq!(p.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(p.metadata.resource_version.as_deref(), Some("42"));
        assert!(p.metadata.labels.is_none() && p.metadata.owner_references.is_none());
        assert_eq!(
            p.state,
            PodState {
                ownership: Ownership {
                    cluster: Some("demo".into()),
                    shard: Some(0),
                    spec_hash: None
                },
                deleting: false,
                running: true,
                ip: Some("127.1.0.7".parse().unwrap()),
                // 2026-11-24T05:00:00Z
                ready_since: Some(1_795_496_400.0),
                cpu_request: Some(0.25),
                revision: Some(revision("demo-shard-0-7d9")),
            }
        );
    }

    #[test]
    fn pod_not_ready_and_minimal_pod() {
        let mut v = live_pod();
        v["status"]["conditions"][1]["status"] = json!("False");
        v["metadata"]["deletionTimestamp"] = json!("2026-11-24T06:00:00Z");
        v["status"]["podIP"] = json!("not an ip");
        let p: Pod = serde_json::from_value(v).unwrap();
        assert_eq!(p.state.ready_since, None);
        assert!(p.state.deleting);
        assert_eq!(p.state.ip, None);
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
        assert_eq!(p.state, PodState::default());
        // Ready without a transition time: ready since the epoch.
        let mut v = live_pod();
        v["status"]["conditions"][1]
            .as_object_mut()
            .unwrap()
            .remove("lastTransitionTime");
        let p: Pod = serde_json::from_value(v).unwrap();
        assert_eq!(p.state.ready_since, Some(0.0));
    }

    #[test]
    fn statefulset_keeps_replicas_and_hash() {
        let s: StatefulSet = serde_json::from_value(json!({
            "metadata": {
                "name": "demo-shard-1", "namespace": "team-a", "generation": 3,
                "labels": {CLUSTER_LABEL: "demo", SHARD_LABEL: "1",
                           "app.kubernetes.io/name": "redis"},
                "annotations": {SPEC_HASH: "abc", "other": "x"},
                "deletionTimestamp": "2026-11-24T05:00:00Z"
            },
            "spec": {"replicas": 3, "serviceName": "demo-headless",
                     "template": {"metadata": {"labels": {"a": "b"}}}},
            "status": {"replicas": 3, "readyReplicas": 2, "currentRevision": "r1",
                       "updateRevision": "demo-shard-0-7d9"}
        }))
        .unwrap();
        let st = &s.state;
        assert_eq!((st.replicas, st.current, st.ready), (Some(3), 3, 2));
        assert_eq!(st.update_revision, Some(revision("demo-shard-0-7d9")));
        assert_ne!(revision("demo-shard-0-7d9"), revision("demo-shard-0-7da"));
        assert_eq!(st.ownership.spec_hash, Some(0xabc));
        assert_eq!(st.ownership.shard, Some(1));
        assert!(s.metadata.deletion_timestamp.is_some());
        assert!(s.metadata.annotations.is_none());
    }

    #[test]
    fn meta_child_keeps_hash_and_kind() {
        use k8s_openapi::api::core::v1::ConfigMap;
        let m: Meta<ConfigMap> = serde_json::from_value(json!({
            "metadata": {"name": "demo-config", "namespace": "team-a",
                         "labels": {CLUSTER_LABEL: "demo"},
                         "annotations": {SPEC_HASH: "h1"}},
            "data": {"redis.conf": "cluster-enabled yes"}
        }))
        .unwrap();
        assert_eq!(m.ownership.spec_hash, None, "not a hash we wrote");
        assert_eq!(m.ownership.cluster.as_deref(), Some("demo"));
        assert_eq!(<Meta<ConfigMap> as kube::Resource>::kind(&()), "ConfigMap");
        assert_eq!(<StatefulSet as kube::Resource>::plural(&()), "statefulsets");
    }

    fn live_cluster() -> serde_json::Value {
        json!({
            "apiVersion": "redis.example.com/v1alpha1", "kind": "RedisCluster",
            "metadata": {
                "name": "demo", "namespace": "team-a", "uid": "u-1", "generation": 3,
                "resourceVersion": "7", "creationTimestamp": "2026-11-24T05:00:00Z",
                "labels": {"team": "a"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
                "managedFields": [{"manager": "kubectl"}]
            },
            "spec": {"replicas": 2, "shard_count": 3, "image": "redis:7.4",
                     "resources": {"requests": {"cpu": "250m", "memory": "1Gi"}}},
            "status": {"replicas": 2, "ready_replicas": 2, "phase": "Ready",
                       "conditions": [{"type": "Ready", "status": "True", "reason": "R",
                                       "message": "m",
                                       "lastTransitionTime": "2026-11-24T05:00:00Z"}]}
        })
    }

    #[test]
    fn cluster_keeps_identity_and_spec_and_hands_over_the_status() {
        let live = live_cluster();
        let mut c: Cluster = serde_json::from_value(live.clone()).unwrap();
        let full: api::RedisCluster = serde_json::from_value(live).unwrap();
        let prior = c
            .prior
            .as_deref()
            .cloned()
            .expect("a prior from the status");
        assert_eq!(prior, status::Prior::of(full.status.as_ref().unwrap()));
        assert_eq!(prior.is_true(status::READY), Some(true));
        assert_eq!(c.metadata.resource_version.as_deref(), Some("7"));
        c.strip();
        assert!(c.prior.is_none() && c.metadata.resource_version.is_none());

        let rc = c.to_api(&api::Policy::default()).unwrap();
        assert_eq!(rc.spec, full.spec, "the spec reads as the full object's");
        assert_eq!(rc.status, None);
        let m = &rc.metadata;
        assert_eq!(
            (m.name.as_deref(), m.namespace.as_deref(), m.uid.as_deref()),
            (Some("demo"), Some("team-a"), Some("u-1"))
        );
        assert_eq!(m.generation, Some(3));
        assert!(m.managed_fields.is_none() && m.annotations.is_none() && m.labels.is_none());
        assert_eq!(
            (
                <Cluster as kube::Resource>::kind(&()),
                <Cluster as kube::Resource>::api_version(&()),
                <Cluster as kube::Resource>::plural(&())
            ),
            (
                api::RedisCluster::kind(&()),
                api::RedisCluster::api_version(&()),
                api::RedisCluster::plural(&())
            )
        );
    }

    #[test]
    fn unreadable_spec_or_status_fails_no_watch() {
        let mut live = live_cluster();
        live.as_object_mut().unwrap().remove("spec");
        let c: Cluster = serde_json::from_value(live.clone()).unwrap();
        let defaults: api::RedisClusterSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(c.to_api(&api::Policy::default()).unwrap().spec, defaults);
        // A spec our types cannot read fails that cluster, not the watch.
        live["spec"] = json!({"replicas": "three"});
        let c: Cluster = serde_json::from_value(live.clone()).unwrap();
        let err = c.to_api(&api::Policy::default()).unwrap_err().to_string();
        assert_eq!(
            err,
            r#"invalid type: string "three", expected i32 at line 1 column 19"#
        );
        // So does a status, which is then rewritten whole.
        live["status"] = json!({"replicas": "two"});
        let c: Cluster = serde_json::from_value(live).unwrap();
        assert!(c.prior.is_none());
    }
}
