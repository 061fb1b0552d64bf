//! The `redis.example.com/v1alpha1` `RedisCluster` custom resource.
//!
//! Field names are snake_case on the wire: the original tutorial's manifests
//! (`replicas`, `shard_count`, `scaling_threshold`) must apply unchanged, and
//! the fields added since follow the same style.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::bounds::{self, REPLICAS, SCALING_THRESHOLD, SHARD_COUNT, WINDOW_SECONDS};

/// Desired state of a Redis Cluster deployment.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "redis.example.com",
    version = "v1alpha1",
    kind = "RedisCluster",
    plural = "redisclusters",
    singular = "rediscluster",
    shortname = "rdc",
    category = "redis",
    namespaced,
    status = "RedisClusterStatus",
    derive = "PartialEq",
    doc = "A Redis Cluster deployment, run and autoscaled by redis-operator",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn = r#"{"name": "Shards", "type": "integer", "jsonPath": ".spec.shard_count"}"#,
    printcolumn = r#"{"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"}"#,
    printcolumn = r#"{"name": "Ready", "type": "integer", "jsonPath": ".status.ready_replicas"}"#,
    printcolumn = r#"{"name": "CPU", "type": "number", "jsonPath": ".status.current_cpu"}"#,
    printcolumn = r#"{"name": "Threshold", "type": "number", "jsonPath": ".spec.scaling_threshold"}"#,
    printcolumn = r#"{"name": "Phase", "type": "string", "jsonPath": ".status.phase"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#,
    // Kept in step with bounds::MAX_NAME_LEN and NAME_PATTERN (a test checks).
    validation = Rule::new("self.metadata.name.size() <= 44")
        .message("metadata.name must be at most 44 characters: the StatefulSets' pods carry it in a 63-character label")
        .reason(Reason::FieldValueInvalid),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must be a DNS-1035 label (lower-case letters, digits and '-', starting with a letter): it names Services")
        .reason(Reason::FieldValueInvalid)
)]
#[x_kube(
    validation = Rule::new("!has(self.min_replicas) || !has(self.max_replicas) || self.min_replicas <= self.max_replicas")
        .message("spec.min_replicas must be less than or equal to spec.max_replicas")
        .field_path(".min_replicas")
        .reason(Reason::FieldValueInvalid),
    validation = Rule::new("!has(self.min_replicas) || !has(self.replicas) || self.replicas >= self.min_replicas")
        .message("spec.replicas must be greater than or equal to spec.min_replicas")
        .field_path(".replicas")
        .reason(Reason::FieldValueInvalid),
    validation = Rule::new("!has(self.max_replicas) || !has(self.replicas) || self.replicas <= self.max_replicas")
        .message("spec.replicas must be less than or equal to spec.max_replicas")
        .field_path(".replicas")
        .reason(Reason::FieldValueInvalid),
    // Storage can only grow (the operator expands the claims and re-creates
    // the StatefulSets around their pods). Adding or removing it, or another
    // class, would be new volumes. See the README, "Changing storage".
    validation = Rule::new("has(self.storage) == has(oldSelf.storage)")
        .message("spec.storage cannot be added or removed once the cluster exists: create a new RedisCluster and move the data, see the README, 'Changing storage'")
        .field_path(".storage")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.storage) || !has(oldSelf.storage) || (has(self.storage.storage_class_name) ? self.storage.storage_class_name : '') == (has(oldSelf.storage.storage_class_name) ? oldSelf.storage.storage_class_name : '')")
        .message("spec.storage.storage_class_name cannot change once the cluster exists: the volumes stay in their class; see the README, 'Changing storage'")
        .field_path(".storage.storage_class_name")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.storage) || !has(oldSelf.storage) || !isQuantity(string(self.storage.size)) || !isQuantity(string(oldSelf.storage.size)) || quantity(string(self.storage.size)).compareTo(quantity(string(oldSelf.storage.size))) >= 0")
        .message("spec.storage.size cannot shrink: a volume can only grow; see the README, 'Changing storage'")
        .field_path(".storage.size")
        .reason(Reason::FieldValueForbidden),
    // Nodes speaking TLS cannot talk to nodes that do not (the cluster bus
    // too), so TLS is chosen when the cluster is made. See the README, "TLS".
    validation = Rule::new("has(self.tls) == has(oldSelf.tls)")
        .message("spec.tls cannot be added or removed once the cluster exists: TLS and plain nodes cannot talk to each other; create a new RedisCluster and move the data, see the README, 'TLS'")
        .field_path(".tls")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.tls) || !has(oldSelf.tls) || (has(self.tls.secret_name) ? self.tls.secret_name : '') == (has(oldSelf.tls.secret_name) ? oldSelf.tls.secret_name : '')")
        .message("spec.tls.secret_name cannot change once the cluster exists: the nodes would stop trusting each other half-way; renew the certificate in the same Secret instead, see the README, 'TLS'")
        .field_path(".tls.secret_name")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.tls) || !has(oldSelf.tls) || has(self.tls.issuer_ref) == has(oldSelf.tls.issuer_ref) && (!has(self.tls.issuer_ref) || self.tls.issuer_ref == oldSelf.tls.issuer_ref)")
        .message("spec.tls.issuer_ref cannot be added, removed or changed once the cluster exists: another CA would leave the nodes distrusting each other half-way; see the README, 'TLS'")
        .field_path(".tls.issuer_ref")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.tls) || !has(self.tls.secret_name) || !has(self.tls.issuer_ref)")
        .message("spec.tls.secret_name and spec.tls.issuer_ref are exclusive: name the Secret you keep issued, or the cert-manager issuer that issues it")
        .field_path(".tls")
        .reason(Reason::FieldValueInvalid)
)]
pub struct RedisClusterSpec {
    /// Redis nodes per shard: one primary plus `replicas - 1` replicas.
    /// Left out, it is the admin policy's default: 1, or the policy's
    /// minimum when that is higher.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = REPLICAS.min, max = REPLICAS.max))]
    pub replicas: i32,

    /// Redis Cluster shards (primaries); the 16384 hash slots are spread
    /// evenly over them.
    #[serde(default = "default_shard_count")]
    #[schemars(range(min = SHARD_COUNT.min, max = SHARD_COUNT.max))]
    pub shard_count: i32,

    /// Target average CPU utilisation, in % of requested CPU, over the
    /// cluster's Redis pods.
    #[serde(default = "default_scaling_threshold")]
    #[schemars(range(min = SCALING_THRESHOLD.min, max = SCALING_THRESHOLD.max))]
    pub scaling_threshold: f64,

    /// Lower autoscaling bound for `replicas`. Absent means the admin
    /// policy's minimum (no schema default, so a tightened policy never
    /// invalidates a spec that leaves it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = REPLICAS.min, max = REPLICAS.max))]
    pub min_replicas: Option<i32>,

    /// Upper autoscaling bound for `replicas`. Absent means the admin
    /// policy's maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = REPLICAS.min, max = REPLICAS.max))]
    pub max_replicas: Option<i32>,

    /// Seconds the recommendation must stay below `replicas` before scaling
    /// down by one.
    #[serde(default = "default_scale_down_stabilization_seconds")]
    #[schemars(range(min = WINDOW_SECONDS.min, max = WINDOW_SECONDS.max))]
    pub scale_down_stabilization_seconds: i32,

    /// Minimum seconds between two scale-ups.
    #[serde(default = "default_scale_up_cooldown_seconds")]
    #[schemars(range(min = WINDOW_SECONDS.min, max = WINDOW_SECONDS.max))]
    pub scale_up_cooldown_seconds: i32,

    /// Stops the operator from changing `replicas` on its own.
    #[serde(default = "default_autoscaling_paused")]
    pub autoscaling_paused: bool,

    /// Redis container image.
    #[serde(default = "default_image")]
    #[schemars(length(min = 1))]
    pub image: String,

    /// Resources of each Redis container. The CPU request is the base of the
    /// utilisation that drives autoscaling.
    #[serde(default = "default_resources")]
    pub resources: ResourceRequirements,

    /// Persistent storage for each Redis node; absent means an emptyDir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,

    /// What the operator does when a shard's only copy is lost (no replica,
    /// no `storage`, its pod gone): `RecoverEmpty` gives the shard's slots to
    /// its new, empty node, so the cluster serves again, and reports the
    /// loss; `Wait` leaves the slots unserved for a human to decide. Absent
    /// means `RecoverEmpty`. With `storage` the operator always waits for
    /// the node to come back with its data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_data_loss: Option<OnDataLoss>,

    /// What Redis does once its data reaches `maxmemory` (three quarters of
    /// the container's memory limit): `noeviction` (absent) refuses writes
    /// and keeps every key; the others evict keys, as Redis names them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxmemory_policy: Option<MaxmemoryPolicy>,
    /// Lets a rolling update replace the only pod of a shard that has no
    /// replica and no persistent storage, which loses that shard's data.
    /// Left out (false), such a shard is not rolled and the `Updating`
    /// condition says why.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_data_loss_on_update: bool,

    /// Who may talk to Redis. Absent means on: clients authenticate as
    /// `default` with the password in the Secret `<name>-auth` (key
    /// `password`), which the operator generates if it does not exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,

    /// Who may connect over the network. Absent means a NetworkPolicy that
    /// lets in, on the client port, only pods of the cluster's namespace and
    /// the operator, and on the cluster bus port only the cluster's own pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySpec>,

    /// How each node keeps its data on disk. Absent means an append-only
    /// file written on every write and forced to disk every second, plus
    /// Redis's default snapshots. Changes apply to running nodes without a
    /// restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence: Option<PersistenceSpec>,

    /// TLS for every connection: clients, replication and the cluster bus.
    /// Absent means plain TCP. Chosen when the cluster is made: it cannot be
    /// added or removed later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
}

/// See [`RedisClusterSpec::tls`]. The README, "TLS", says how clients
/// connect.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct TlsSpec {
    /// A Secret in the cluster's namespace with `tls.crt`, `tls.key` and
    /// `ca.crt`, as a cert-manager Certificate writes it. The certificate
    /// must name `<name>.<namespace>.svc` (and `localhost` for the exporter
    /// sidecar), and serve as both server and client (the nodes present it
    /// to each other).
    /// Absent means the operator issues it into `<name>-tls` from a CA of
    /// the cluster's own (`<name>-tls-ca`, mounted nowhere) and renews it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
    /// A cert-manager issuer for the nodes' certificate. The operator
    /// writes a cert-manager `Certificate` `<name>-tls` (the names above,
    /// server and client use) and uses the Secret `<name>-tls` that
    /// cert-manager keeps issued and renewed. Needs cert-manager, and the
    /// chart value `operator.certManager: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,
}

/// A cert-manager issuer, as a `Certificate`'s `issuerRef` names it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct IssuerRef {
    /// The issuer's name; an `Issuer` must be in the cluster's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// `Issuer`, `ClusterIssuer`, or an external issuer's kind.
    #[serde(default = "default_issuer_kind")]
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,
    /// The issuer's API group: `cert-manager.io`, or an external issuer's.
    #[serde(default = "default_issuer_group")]
    #[schemars(length(min = 1, max = 253))]
    pub group: String,
}

fn default_issuer_kind() -> String {
    "Issuer".into()
}

fn default_issuer_group() -> String {
    "cert-manager.io".into()
}

/// See [`RedisClusterSpec::persistence`]. The README, "Persistence", says
/// what each choice guarantees.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct PersistenceSpec {
    /// The append-only file (AOF): each write reaches the file before it is
    /// acknowledged, so a restarted node comes back with every
    /// acknowledged write. False: a restarted node has only its last
    /// snapshot, or nothing.
    #[serde(default = "default_true")]
    pub append_only: bool,
    /// When the AOF is forced to disk: `everysec` (absent) can lose about a
    /// second of writes if the machine itself fails, `always` loses none
    /// at a cost in throughput, `no` leaves it to the kernel.
    #[serde(default)]
    pub append_fsync: AppendFsync,
    /// RDB snapshots: one is taken when at least `changes` writes happened
    /// in `seconds`. Absent means Redis's defaults (3600 s/1, 300 s/100,
    /// 60 s/10000); empty means no snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub rdb_save: Option<Vec<SavePoint>>,
}

impl Default for PersistenceSpec {
    fn default() -> Self {
        Self {
            append_only: true,
            append_fsync: AppendFsync::default(),
            rdb_save: None,
        }
    }
}

/// See [`PersistenceSpec::append_fsync`]; the values are Redis's own.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AppendFsync {
    Always,
    #[default]
    Everysec,
    No,
}

impl AppendFsync {
    /// The value `appendfsync` takes.
    pub fn as_redis(self) -> &'static str {
        match self {
            AppendFsync::Always => "always",
            AppendFsync::Everysec => "everysec",
            AppendFsync::No => "no",
        }
    }
}

/// One RDB save point: a snapshot after `seconds` if at least `changes`
/// writes happened.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub struct SavePoint {
    #[schemars(range(min = 1, max = 86400))]
    pub seconds: i32,
    #[schemars(range(min = 1, max = 100_000_000))]
    pub changes: i32,
}

/// See [`RedisClusterSpec::network_policy`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct NetworkPolicySpec {
    /// False: no NetworkPolicy (any pod that can route to the pods may
    /// connect; authentication still applies).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// More clients allowed on the client port, as NetworkPolicy `from`
    /// peers (namespace and pod selectors, IP blocks), beside the cluster's
    /// own namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_clients: Vec<k8s_openapi::api::networking::v1::NetworkPolicyPeer>,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self {
            enabled: true,
            allowed_clients: Vec::new(),
        }
    }
}

/// See [`RedisClusterSpec::auth`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct AuthSpec {
    /// False turns authentication off: any pod that can reach the port can
    /// read, change or wipe every key, and break the cluster.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Secret in the cluster's namespace whose key `password` is the
    /// clients' password. Absent means `<name>-auth`, generated when
    /// missing. Changing the password rotates it without a restart: both
    /// passwords work for `rotation_overlap_seconds`, then only the new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
    /// The ACL user clients log in as; absent means `default`. With a name,
    /// the `default` user is switched off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z0-9][-_.A-Za-z0-9]*$")
    )]
    pub username: Option<String>,
    /// How long the old password keeps working after the Secret changed.
    #[serde(default = "default_rotation_overlap_seconds")]
    #[schemars(range(min = 0, max = 86400))]
    pub rotation_overlap_seconds: i32,
}

impl Default for AuthSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            secret_name: None,
            username: None,
            rotation_overlap_seconds: default_rotation_overlap_seconds(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_rotation_overlap_seconds() -> i32 {
    bounds::DEFAULT_ROTATION_OVERLAP_SECONDS
}

/// See [`RedisClusterSpec::maxmemory_policy`]; the values are Redis's own.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MaxmemoryPolicy {
    #[default]
    Noeviction,
    AllkeysLru,
    AllkeysLfu,
    AllkeysRandom,
    VolatileLru,
    VolatileLfu,
    VolatileRandom,
    VolatileTtl,
}

impl MaxmemoryPolicy {
    /// The name `redis-server --maxmemory-policy` takes.
    pub fn as_redis(self) -> &'static str {
        match self {
            MaxmemoryPolicy::Noeviction => "noeviction",
            MaxmemoryPolicy::AllkeysLru => "allkeys-lru",
            MaxmemoryPolicy::AllkeysLfu => "allkeys-lfu",
            MaxmemoryPolicy::AllkeysRandom => "allkeys-random",
            MaxmemoryPolicy::VolatileLru => "volatile-lru",
            MaxmemoryPolicy::VolatileLfu => "volatile-lfu",
            MaxmemoryPolicy::VolatileRandom => "volatile-random",
            MaxmemoryPolicy::VolatileTtl => "volatile-ttl",
        }
    }
}

/// See [`RedisClusterSpec::on_data_loss`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum OnDataLoss {
    /// Serve the lost slots again, empty, and report the loss.
    #[default]
    RecoverEmpty,
    /// Leave the lost slots unserved until a human acts.
    Wait,
}

fn is_false(b: &bool) -> bool {
    !b
}

/// A PersistentVolumeClaim template for each Redis node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct StorageSpec {
    /// Requested size, for example `1Gi`.
    pub size: Quantity,
    /// Storage class; absent means the cluster default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// Observed state, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct RedisClusterStatus {
    /// Redis pods per shard that exist (the smallest over shards).
    #[serde(default)]
    pub replicas: i32,
    /// Ready Redis pods per shard (the smallest over shards), so
    /// `ready_replicas == replicas` means every shard is fully up.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Average CPU utilisation in % of requests from the last metrics read;
    /// absent when no metrics are available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_cpu: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Scaling`, `Degraded` and `MetricsAvailable`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// One word for `kubectl get`: Pending, Ready, Scaling or Degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// When the operator last changed `spec.replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// Label selector of the Redis pods, for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Progress of the Redis-side work (slot moves, joins, failovers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationStatus>,
    /// How clients log in, when authentication is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthStatus>,
    /// Growing the volumes to a larger `spec.storage.size`: set by the
    /// first expansion, and kept once it is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_expansion: Option<VolumeExpansionStatus>,
}

/// See [`RedisClusterStatus::volume_expansion`].
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct VolumeExpansionStatus {
    /// The size every volume is grown to.
    pub size: String,
    /// The cluster's claims, and how many of them have `size`.
    pub volumes: u32,
    pub expanded: u32,
    /// StatefulSets still to re-create with the larger claim template.
    pub statefulsets_left: u32,
    /// Why the expansion does not go on, when something refused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// Where it stands, in words.
    pub message: String,
}

/// See [`RedisClusterStatus::auth`].
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct AuthStatus {
    /// The Secret whose key `password` clients use.
    pub secret_name: String,
    /// The ACL user clients log in as.
    pub username: String,
    /// When the last password change finished (the old one stopped
    /// working); absent until a first rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_at: Option<Time>,
    /// While a password change rolls in: when the old password stops
    /// working. Clients should switch to the new one before then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_password_expires_at: Option<Time>,
}

/// Where the Redis Cluster topology work stands.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct MigrationStatus {
    /// The current step, or that the topology matches the spec.
    pub step: String,
    /// Hash slots still to move to reach an even spread.
    pub slots_left: u32,
    /// Slots and keys moved for this cluster so far.
    pub slots_moved: u64,
    pub keys_moved: u64,
}

fn default_replicas() -> i32 {
    bounds::DEFAULT_REPLICAS
}
fn default_shard_count() -> i32 {
    bounds::DEFAULT_SHARD_COUNT
}
fn default_scaling_threshold() -> f64 {
    bounds::DEFAULT_SCALING_THRESHOLD
}
fn default_scale_down_stabilization_seconds() -> i32 {
    bounds::DEFAULT_SCALE_DOWN_STABILIZATION_SECONDS
}
fn default_scale_up_cooldown_seconds() -> i32 {
    bounds::DEFAULT_SCALE_UP_COOLDOWN_SECONDS
}
fn default_autoscaling_paused() -> bool {
    bounds::DEFAULT_AUTOSCALING_PAUSED
}
fn default_image() -> String {
    bounds::DEFAULT_IMAGE.to_string()
}

/// Requests only: a memory or CPU limit is a choice for the user to make.
pub fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            (
                "cpu".to_string(),
                Quantity(bounds::DEFAULT_CPU_REQUEST.to_string()),
            ),
            (
                "memory".to_string(),
                Quantity(bounds::DEFAULT_MEMORY_REQUEST.to_string()),
            ),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity(bounds::DEFAULT_MEMORY_LIMIT.to_string()),
        )])),
        ..Default::default()
    }
}

impl Default for RedisClusterSpec {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            shard_count: default_shard_count(),
            scaling_threshold: default_scaling_threshold(),
            min_replicas: None,
            max_replicas: None,
            scale_down_stabilization_seconds: default_scale_down_stabilization_seconds(),
            scale_up_cooldown_seconds: default_scale_up_cooldown_seconds(),
            autoscaling_paused: default_autoscaling_paused(),
            image: default_image(),
            resources: default_resources(),
            storage: None,
            on_data_loss: None,
            allow_data_loss_on_update: false,
            maxmemory_policy: None,
            auth: None,
            network_policy: None,
            persistence: None,
            tls: None,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn maxmemory_policies_serialise_as_redis_names_them() {
        use super::MaxmemoryPolicy::*;
        for p in [
            Noeviction,
            AllkeysLru,
            AllkeysLfu,
            AllkeysRandom,
            VolatileLru,
            VolatileLfu,
            VolatileRandom,
            VolatileTtl,
        ] {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_redis());
        }
    }
}
