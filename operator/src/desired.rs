//! What a RedisCluster should run: a pure function from the resource to its
//! child objects. No client here; the controller applies the result.
//!
//! Shape: one StatefulSet per shard (`<name>-shard-<i>`), each with
//! `spec.replicas` pods; a headless Service for pod DNS and a client Service;
//! a ConfigMap with `redis.conf` in cluster mode; a PodDisruptionBudget per
//! shard allowing one pod down.

use std::collections::BTreeMap;

use api::RedisCluster;
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort,
    EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction, ObjectFieldSelector,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec,
    TCPSocketAction, Volume, VolumeMount, VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::auth;
use crate::names::{
    CLUSTER_LABEL, SPEC_HASH, cluster_labels, config_name, headless_service_name, shard_labels,
    shard_selector, statefulset_name,
};
use crate::shape::ClusterShape;
use crate::tls;

pub const REDIS_PORT: i32 = 6379;
pub const BUS_PORT: i32 = 16379;
const REDIS_UID: i64 = 999;
/// The pod volume of the internal Secret.
const AUTH_VOLUME: &str = "auth";
/// The Redis data volume: an emptyDir, or the claim template of `spec.storage`.
pub const DATA_VOLUME: &str = "data";

/// Everything the operator applies for one cluster.
#[derive(Debug, Clone)]
pub struct Children {
    pub config: ConfigMap,
    pub headless: Service,
    pub client: Service,
    pub statefulsets: Vec<StatefulSet>,
    pub pdbs: Vec<PodDisruptionBudget>,
    pub network_policy: Option<NetworkPolicy>,
}

/// Where the operator runs, for the NetworkPolicies to let it in: its
/// namespace and its pods' labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorPeer {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

/// The metrics exporter that runs beside each Redis node.
#[derive(Debug, Clone, PartialEq)]
pub struct Exporter {
    pub image: String,
    pub resources: ResourceRequirements,
}

impl Exporter {
    /// What an exporter of one node needs: little CPU, and a memory limit
    /// (its memory grows with the number of metrics, not with the data).
    pub fn default_resources() -> ResourceRequirements {
        ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), Quantity("10m".into())),
                ("memory".into(), Quantity("32Mi".into())),
            ])),
            limits: Some(BTreeMap::from([("memory".into(), Quantity("64Mi".into()))])),
            ..Default::default()
        }
    }
}

/// The port the exporter serves `/metrics` on.
pub const EXPORTER_PORT: i32 = 9121;

/// What the operator's installation adds to every cluster: the
/// NetworkPolicies' way in for the operator, and the exporter sidecar.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Platform {
    pub operator: Option<OperatorPeer>,
    pub exporter: Option<Exporter>,
}

/// How many pods each existing or desired shard should run now. The
/// controller keeps more than `spec.replicas` (or extra shards) until the
/// topology step says the surplus holds no data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPlan {
    /// Pods per StatefulSet, indexed by shard.
    pub replicas: Vec<i32>,
}

impl ShardPlan {
    /// The shards that keep a StatefulSet, with their pods: a shard
    /// planned at zero was drained and loses its objects.
    pub fn kept(&self) -> impl Iterator<Item = (u32, i32)> + '_ {
        self.replicas
            .iter()
            .enumerate()
            .filter(|&(_, &replicas)| replicas != 0)
            .map(|(shard, &replicas)| (u32::try_from(shard).unwrap_or(u32::MAX), replicas))
    }
}

/// Voluntary evictions (drains) a shard allows at once: one while another
/// copy of its data exists, none while its only pod holds the only copy
/// (an evicted emptyDir pod comes back empty, and its slots with it).
/// Such a drain waits until the shard gets a replica or the pod is deleted
/// by hand.
pub fn max_unavailable(nodes_in_shard: i32) -> i32 {
    if nodes_in_shard <= 1 { 0 } else { 1 }
}

/// Pods per shard: scale up at once; scale down only when `surplus_removable`.
/// Shards beyond the shape stay (at their current size) until removed.
pub fn shard_plan(
    shape: ClusterShape,
    current: &BTreeMap<u32, i32>,
    surplus_removable: bool,
    removable_shards: &[u32],
) -> ShardPlan {
    let replicas = shape.replicas();
    let highest_current = current.keys().next_back().map(|s| s + 1).unwrap_or(0);
    let count = shape.shards.get().max(highest_current);
    let replicas = (0..count)
        .map(|shard| {
            let now = current.get(&shard).copied();
            if !shape.has_shard(shard) {
                // Draining shard: keep its pods until the topology empties it.
                if removable_shards.contains(&shard) {
                    0
                } else {
                    now.unwrap_or(replicas)
                }
            } else {
                match now {
                    Some(n) if n > replicas && !surplus_removable => n,
                    _ => replicas,
                }
            }
        })
        .collect();
    ShardPlan { replicas }
}

fn owner_ref(rc: &RedisCluster) -> Option<OwnerReference> {
    rc.controller_owner_ref(&())
}

fn meta(rc: &RedisCluster, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: rc.namespace(),
        labels: Some(labels),
        owner_references: owner_ref(rc).map(|o| vec![o]),
        ..Default::default()
    }
}

/// Redis's own snapshot schedule, written out so that a node's config says
/// what it does.
const REDIS_DEFAULT_SAVE: &str = "3600 1 300 100 60 10000";

/// The persistence parameters of `spec`, as `CONFIG SET` takes them and as
/// `redis.conf` holds them (with an empty value quoted): the one place
/// both are rendered from.
pub fn persistence_settings(spec: &api::RedisClusterSpec) -> [(&'static str, String); 3] {
    let p = spec.persistence.clone().unwrap_or_default();
    let save = match &p.rdb_save {
        None => REDIS_DEFAULT_SAVE.to_string(),
        Some(points) => points
            .iter()
            .map(|s| format!("{} {}", s.seconds, s.changes))
            .collect::<Vec<_>>()
            .join(" "),
    };
    [
        (
            "appendonly",
            if p.append_only { "yes" } else { "no" }.into(),
        ),
        ("appendfsync", p.append_fsync.as_redis().into()),
        ("save", save),
    ]
}

/// `redis.conf` for every node of the cluster. With auth, the users and
/// the replication login come from the mounted internal Secret (see
/// [`crate::auth`]).
pub fn redis_conf(spec: &api::RedisClusterSpec) -> String {
    let mut lines = vec!["# Managed by redis-operator.".to_string()];
    // With TLS the client port speaks TLS only: no plain port.
    match spec.tls {
        Some(_) => lines.extend(tls::conf_lines()),
        None => lines.push(format!("port {REDIS_PORT}")),
    }
    lines.extend(
        [
            "bind * -::*",
            "protected-mode no",
            "cluster-enabled yes",
            "cluster-config-file /data/nodes.conf",
            "cluster-node-timeout 5000",
            "cluster-allow-replica-migration no",
            // Replicas attach without waiting for more replicas to batch with.
            "repl-diskless-sync-delay 0",
            "dir /data",
        ]
        .map(String::from),
    );
    // Scaling never relies on persistence: slots move with MIGRATE, which
    // is synchronous.
    for (name, value) in persistence_settings(spec) {
        lines.push(if value.is_empty() {
            format!("{name} \"\"")
        } else {
            format!("{name} {value}")
        });
    }
    if auth::enabled(spec) {
        lines.push(format!("aclfile {}/{}", auth::MOUNT, auth::ACL_FILE));
        lines.push(format!("include {}/{}", auth::MOUNT, auth::CONF_FILE));
    }
    lines.push(String::new());
    lines.join("\n")
}

/// `maxmemory` for a container limited to `limit` bytes: three quarters,
/// leaving room for client and replication buffers, fragmentation, and the
/// pages a background save's fork copies.
pub fn maxmemory(limit: u64) -> u64 {
    limit / 4 * 3
}

/// How the Redis container starts: the shared config, the pod IP to
/// announce (other nodes and clients must reach the node by it), and the
/// memory bound and eviction policy of this cluster's spec.
fn server_command(spec: &api::RedisClusterSpec) -> String {
    let limit = spec
        .resources
        .limits
        .as_ref()
        .and_then(|l| l.get("memory"))
        .and_then(|q| api::quantity::bytes(&q.0));
    let policy = spec.maxmemory_policy.unwrap_or_default().as_redis();
    let mut cmd =
        String::from("exec redis-server /etc/redis/redis.conf --cluster-announce-ip \"$POD_IP\"");
    if let Some(limit) = limit {
        cmd.push_str(&format!(" --maxmemory {}", maxmemory(limit)));
    }
    cmd.push_str(&format!(" --maxmemory-policy {policy}"));
    cmd
}

/// Whether the cluster is to have a NetworkPolicy: the operator renders
/// them (it knows where it runs) and the spec does not switch it off.
pub fn wants_network_policy(rc: &RedisCluster, operator: Option<&OperatorPeer>) -> bool {
    operator.is_some() && rc.spec.network_policy.as_ref().is_none_or(|n| n.enabled)
}

/// The cluster's NetworkPolicy: on the client port, pods of its own
/// namespace, the operator and the spec's `allowed_clients`; on the bus
/// port, the cluster's own pods. `None` when the spec switches it off.
pub fn network_policy(
    rc: &RedisCluster,
    operator: &OperatorPeer,
    exporter: bool,
) -> Option<NetworkPolicy> {
    let spec = rc.spec.network_policy.clone().unwrap_or_default();
    if !spec.enabled {
        return None;
    }
    let name = rc.name_any();
    let own_pods = LabelSelector {
        match_labels: Some(BTreeMap::from([(CLUSTER_LABEL.to_string(), name.clone())])),
        ..Default::default()
    };
    let port = |p: i32| {
        Some(vec![NetworkPolicyPort {
            port: Some(IntOrString::Int(p)),
            protocol: Some("TCP".into()),
            ..Default::default()
        }])
    };
    let mut clients = vec![
        // No namespace selector: this namespace only.
        NetworkPolicyPeer {
            pod_selector: Some(LabelSelector::default()),
            ..Default::default()
        },
        NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_string(),
                    operator.namespace.clone(),
                )])),
                ..Default::default()
            }),
            pod_selector: Some(LabelSelector {
                match_labels: Some(operator.labels.clone()),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    clients.extend(spec.allowed_clients);
    Some(NetworkPolicy {
        metadata: meta(rc, name.clone(), cluster_labels(&name)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(own_pods.clone()),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(
                vec![
                    NetworkPolicyIngressRule {
                        from: Some(clients),
                        ports: port(REDIS_PORT),
                    },
                    NetworkPolicyIngressRule {
                        from: Some(vec![NetworkPolicyPeer {
                            pod_selector: Some(own_pods),
                            ..Default::default()
                        }]),
                        ports: port(BUS_PORT),
                    },
                ]
                .into_iter()
                // Metrics hold no key or value: any scraper may read them.
                .chain(exporter.then(|| NetworkPolicyIngressRule {
                    from: None,
                    ports: port(EXPORTER_PORT),
                }))
                .collect(),
            ),
            ..Default::default()
        }),
    })
}

/// The children for `rc`, with `plan.replicas[i]` pods in shard `i`
/// (shards planned at 0 pods are left out: the controller deletes them),
/// and a NetworkPolicy when the operator is told where it runs.
pub fn children(rc: &RedisCluster, plan: &ShardPlan, platform: &Platform) -> Children {
    let name = rc.name_any();
    let labels = cluster_labels(&name);
    let config = ConfigMap {
        metadata: meta(rc, config_name(&name), labels.clone()),
        data: Some(BTreeMap::from([(
            "redis.conf".to_string(),
            redis_conf(&rc.spec),
        )])),
        ..Default::default()
    };
    let ports = vec![
        ServicePort {
            name: Some("redis".into()),
            port: REDIS_PORT,
            target_port: Some(IntOrString::Int(REDIS_PORT)),
            ..Default::default()
        },
        ServicePort {
            name: Some("bus".into()),
            port: BUS_PORT,
            target_port: Some(IntOrString::Int(BUS_PORT)),
            ..Default::default()
        },
    ];
    let selector = Some(BTreeMap::from([(CLUSTER_LABEL.to_string(), name.clone())]));
    let headless = Service {
        metadata: meta(rc, headless_service_name(&name), labels.clone()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            // Nodes must find each other before they are ready.
            publish_not_ready_addresses: Some(true),
            selector: selector.clone(),
            ports: Some(ports.clone()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let client = Service {
        metadata: meta(rc, name.clone(), labels.clone()),
        spec: Some(ServiceSpec {
            selector,
            ports: Some(ports[..1].to_vec()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut statefulsets = Vec::new();
    let mut pdbs = Vec::new();
    for (shard, replicas) in plan.kept() {
        statefulsets.push(statefulset(rc, shard, replicas, platform.exporter.as_ref()));
        pdbs.push(PodDisruptionBudget {
            metadata: meta(
                rc,
                statefulset_name(&name, shard),
                shard_labels(&name, shard),
            ),
            spec: Some(PodDisruptionBudgetSpec {
                max_unavailable: Some(IntOrString::Int(max_unavailable(replicas))),
                selector: Some(shard_selector(&name, shard)),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    Children {
        config,
        headless,
        client,
        statefulsets,
        pdbs,
        network_policy: (platform.operator.as_ref())
            .and_then(|o| network_policy(rc, o, platform.exporter.is_some())),
    }
}

/// Ready means serving: `cluster_state:ok`, and for a replica a link up to
/// its primary with no sync in progress. A node that is not (yet) part of a
/// healthy cluster is not ready; the operator forms the cluster from
/// running pods, so nothing waits on this for formation.
pub const READINESS: &str = "i=$(redis-cli $LOGIN -h 127.0.0.1 cluster info) || exit 1; \
case \"$i\" in *cluster_state:ok*) ;; *) exit 1 ;; esac; \
r=$(redis-cli $LOGIN -h 127.0.0.1 info replication) || exit 1; \
case \"$r\" in *role:master*) exit 0 ;; esac; \
case \"$r\" in *master_link_status:up*) ;; *) exit 1 ;; esac; \
case \"$r\" in *master_sync_in_progress:0*) exit 0 ;; esac; \
exit 1";

/// The readiness script, logged in as the probe user when `auth` (the
/// password is read at each run, from the mounted Secret), over TLS when
/// `tls` (`redis-cli` checks the chain, not the name).
pub fn readiness(auth: bool, tls: bool) -> String {
    let tls = if tls {
        format!(" --tls --cacert {}/{}", tls::MOUNT, tls::CA_KEY)
    } else {
        String::new()
    };
    let login = if auth {
        format!(
            "export REDISCLI_AUTH=\"$(cat {}/{})\"; LOGIN='--user {}{tls}'; ",
            auth::MOUNT,
            auth::PROBE_KEY,
            auth::PROBE_USER
        )
    } else {
        format!("LOGIN='{}'; ", tls.trim_start())
    };
    format!("{login}{READINESS}")
}

/// The exporter sidecar: a native sidecar (an init container that keeps
/// running), so it starts before Redis and stops after it. It reads only
/// its own node, logged in as [`auth::EXPORTER_USER`] when auth is on.
fn exporter_container(exporter: &Exporter, cluster: &str, auth: bool, tls: bool) -> Container {
    let env_var = |name: &str, value: String| EnvVar {
        name: name.into(),
        value: Some(value),
        ..Default::default()
    };
    // With TLS, the certificate names `localhost`, which Go checks.
    let mut env = vec![if tls {
        env_var("REDIS_ADDR", format!("rediss://localhost:{REDIS_PORT}"))
    } else {
        env_var("REDIS_ADDR", format!("redis://127.0.0.1:{REDIS_PORT}"))
    }];
    if tls {
        env.push(env_var(
            "REDIS_EXPORTER_TLS_CA_CERT_FILE",
            format!("{}/{}", tls::MOUNT, tls::CA_KEY),
        ));
    }
    if auth {
        env.push(EnvVar {
            name: "REDIS_USER".into(),
            value: Some(auth::EXPORTER_USER.into()),
            ..Default::default()
        });
        env.push(EnvVar {
            name: "REDIS_PASSWORD".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: auth::internal_secret_name(cluster),
                    key: auth::EXPORTER_KEY.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    Container {
        name: "exporter".into(),
        image: Some(exporter.image.clone()),
        // CONFIG GET would show the replication password; the user may
        // not run it, so the exporter is told not to try.
        args: Some(vec![
            format!("--web.listen-address=:{EXPORTER_PORT}"),
            "--config-command=-".into(),
            "--set-client-name=false".into(),
        ]),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("metrics".into()),
            container_port: EXPORTER_PORT,
            ..Default::default()
        }]),
        restart_policy: Some("Always".into()),
        resources: Some(exporter.resources.clone()),
        volume_mounts: tls.then(|| vec![tls_mount()]),
        security_context: Some(restricted_container(REDIS_UID)),
        ..Default::default()
    }
}

/// Where a container reads the nodes' certificate (`spec.tls`).
fn tls_mount() -> VolumeMount {
    VolumeMount {
        name: tls::VOLUME.into(),
        mount_path: tls::MOUNT.into(),
        read_only: Some(true),
        ..Default::default()
    }
}

/// A container that runs as `uid`, with no privilege and a read-only root.
fn restricted_container(uid: i64) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        read_only_root_filesystem: Some(true),
        ..Default::default()
    }
}

fn statefulset(
    rc: &RedisCluster,
    shard: u32,
    replicas: i32,
    exporter: Option<&Exporter>,
) -> StatefulSet {
    let name = rc.name_any();
    let spec = &rc.spec;
    let auth = auth::enabled(spec);
    let tls = spec.tls.as_ref();
    let labels = shard_labels(&name, shard);
    let data_mount = VolumeMount {
        name: DATA_VOLUME.into(),
        mount_path: "/data".into(),
        ..Default::default()
    };
    let mut container = Container {
        name: "redis".into(),
        image: Some(spec.image.clone()),
        command: Some(vec!["sh".into(), "-c".into(), server_command(spec)]),
        env: Some(vec![EnvVar {
            name: "POD_IP".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "status.podIP".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ports: Some(vec![
            ContainerPort {
                name: Some("redis".into()),
                container_port: REDIS_PORT,
                ..Default::default()
            },
            ContainerPort {
                name: Some("bus".into()),
                container_port: BUS_PORT,
                ..Default::default()
            },
        ]),
        resources: Some(spec.resources.clone()),
        readiness_probe: Some(Probe {
            exec: Some(ExecAction {
                command: Some(vec![
                    "sh".into(),
                    "-c".into(),
                    readiness(auth, tls.is_some()),
                ]),
            }),
            period_seconds: Some(5),
            timeout_seconds: Some(2),
            ..Default::default()
        }),
        liveness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(REDIS_PORT),
                ..Default::default()
            }),
            initial_delay_seconds: Some(10),
            period_seconds: Some(10),
            failure_threshold: Some(6),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            data_mount,
            VolumeMount {
                name: "config".into(),
                mount_path: "/etc/redis".into(),
                read_only: Some(true),
                ..Default::default()
            },
        ]),
        // Redis writes only to /data (its volume).
        security_context: Some(restricted_container(REDIS_UID)),
        ..Default::default()
    };
    let mut volumes = vec![Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_name(&name),
            ..Default::default()
        }),
        ..Default::default()
    }];
    if auth {
        volumes.push(Volume {
            name: AUTH_VOLUME.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(auth::internal_secret_name(&name)),
                // Readable by the Redis group only (fsGroup).
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        });
        if let Some(mounts) = container.volume_mounts.as_mut() {
            mounts.push(VolumeMount {
                name: AUTH_VOLUME.into(),
                mount_path: auth::MOUNT.into(),
                read_only: Some(true),
                ..Default::default()
            });
        }
    }
    if let Some(tls) = tls {
        volumes.push(Volume {
            name: tls::VOLUME.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(tls::secret_name(&name, tls)),
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        });
        if let Some(mounts) = container.volume_mounts.as_mut() {
            mounts.push(tls_mount());
        }
    }
    let claims = match &spec.storage {
        Some(storage) => Some(vec![PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(DATA_VOLUME.into()),
                labels: Some(labels.clone()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                storage_class_name: storage.storage_class_name.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([("storage".into(), storage.size.clone())])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        None => {
            volumes.push(Volume {
                name: DATA_VOLUME.into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            });
            None
        }
    };
    StatefulSet {
        metadata: meta(rc, statefulset_name(&name, shard), labels.clone()),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(headless_service_name(&name)),
            selector: shard_selector(&name, shard),
            // Redis nodes join on their own; no need to start them in order.
            pod_management_policy: Some("Parallel".into()),
            // A replica scaled away has left the cluster (the topology
            // forgets it first): its claim goes, so the ordinal's next start
            // is a fresh node, not a stale dataset that belongs to no
            // cluster. Deleting the RedisCluster keeps the claims.
            persistent_volume_claim_retention_policy: rc.spec.storage.as_ref().map(|_| {
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_scaled: Some("Delete".into()),
                    when_deleted: Some("Retain".into()),
                }
            }),
            // The operator replaces pods itself, one at a time, in the order
            // that keeps every acknowledged write (see `roll`). Applied with
            // the template in one patch, so a set created with RollingUpdate
            // switches before its controller sees the new template.
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                rolling_update: None,
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    init_containers: exporter
                        .map(|e| vec![exporter_container(e, &name, auth, tls.is_some())]),
                    containers: vec![container],
                    volumes: Some(volumes),
                    affinity: Some(spread(&name, shard)),
                    security_context: Some(PodSecurityContext {
                        fs_group: Some(REDIS_UID),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    termination_grace_period_seconds: Some(30),
                    // Redis needs no API access, and no environment
                    // variables for every Service in the namespace.
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    ..Default::default()
                }),
            },
            volume_claim_templates: claims,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Prefer putting a shard's pods on different nodes, so one node failure
/// does not take a primary and its replica together.
fn spread(cluster: &str, shard: u32) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(shard_selector(cluster, shard)),
                        topology_key: "kubernetes.io/hostname".into(),
                        ..Default::default()
                    },
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Stamps `obj` with the hash of its content, so the controller can tell
/// whether the live object already matches without comparing fields the
/// apiserver defaults.
pub fn with_hash<K: Resource + serde::Serialize>(mut obj: K) -> (K, u64) {
    let text = serde_json::to_string(&obj).unwrap_or_default();
    let hash = crate::stable_hash::of_str(&text);
    obj.meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(SPEC_HASH.into(), format!("{hash:016x}"));
    (obj, hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::SHARD_LABEL;
    use api::{RedisClusterSpec, StorageSpec};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn rc(spec: RedisClusterSpec) -> RedisCluster {
        let mut rc = RedisCluster::new("cache", spec);
        rc.metadata.namespace = Some("team-a".into());
        rc.metadata.uid = Some("uid-1".into());
        rc
    }

    fn shape(rc: &RedisCluster) -> ClusterShape {
        ClusterShape::of(&rc.spec).unwrap()
    }

    /// The pod template of the first StatefulSet.
    fn first_pod(c: &Children) -> &PodSpec {
        c.statefulsets[0]
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("a StatefulSet has a pod template")
    }

    /// An installation with the exporter sidecar (image `exporter:1`).
    fn with_exporter() -> Platform {
        Platform {
            operator: None,
            exporter: Some(Exporter {
                image: "exporter:1".into(),
                resources: Exporter::default_resources(),
            }),
        }
    }

    fn spec(shards: i32, replicas: i32) -> RedisClusterSpec {
        RedisClusterSpec {
            shard_count: shards,
            replicas,
            ..Default::default()
        }
    }

    #[test]
    fn original_tutorial_gives_one_statefulset_with_one_pod() {
        let r = rc(spec(1, 1));
        let c = children(
            &r,
            &shard_plan(shape(&r), &BTreeMap::new(), false, &[]),
            &Platform::default(),
        );
        assert_eq!(c.statefulsets.len(), 1);
        let sts = &c.statefulsets[0];
        assert_eq!(sts.metadata.name.as_deref(), Some("cache-shard-0"));
        assert_eq!(sts.spec.as_ref().unwrap().replicas, Some(1));
        assert_eq!(c.pdbs.len(), 1);
        let owner = &sts.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.kind, "RedisCluster");
        assert_eq!(owner.controller, Some(true));
    }

    #[test]
    fn a_shard_without_a_replica_allows_no_voluntary_eviction() {
        let r = rc(spec(2, 1));
        let c = children(
            &r,
            &shard_plan(shape(&r), &BTreeMap::new(), false, &[]),
            &Platform::default(),
        );
        for pdb in &c.pdbs {
            assert_eq!(
                pdb.spec.as_ref().unwrap().max_unavailable,
                Some(IntOrString::Int(0))
            );
        }
        let r = rc(spec(2, 2));
        let c = children(
            &r,
            &shard_plan(shape(&r), &BTreeMap::new(), false, &[]),
            &Platform::default(),
        );
        for pdb in &c.pdbs {
            assert_eq!(
                pdb.spec.as_ref().unwrap().max_unavailable,
                Some(IntOrString::Int(1))
            );
        }
    }

    #[test]
    fn three_shards_of_two() {
        let r = rc(spec(3, 2));
        let c = children(
            &r,
            &shard_plan(shape(&r), &BTreeMap::new(), false, &[]),
            &Platform::default(),
        );
        let names: Vec<_> = c
            .statefulsets
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["cache-shard-0", "cache-shard-1", "cache-shard-2"]);
        assert!(
            c.statefulsets
                .iter()
                .all(|s| s.spec.as_ref().unwrap().replicas == Some(2))
        );
        let sel = c.statefulsets[1]
            .spec
            .as_ref()
            .unwrap()
            .selector
            .match_labels
            .clone()
            .unwrap();
        assert_eq!(sel.get(SHARD_LABEL).map(String::as_str), Some("1"));
        assert_eq!(
            c.headless.spec.as_ref().unwrap().cluster_ip.as_deref(),
            Some("None")
        );
        assert_eq!(
            c.pdbs[2].spec.as_ref().unwrap().max_unavailable,
            Some(IntOrString::Int(1))
        );
        let conf = &c.config.data.as_ref().unwrap()["redis.conf"];
        for line in [
            "cluster-enabled yes",
            "cluster-config-file /data/nodes.conf",
            "appendonly yes",
            "appendfsync everysec",
            "save 3600 1 300 100 60 10000",
            "aclfile /etc/redis-auth/users.acl",
        ] {
            assert!(conf.lines().any(|l| l == line), "{line} not in\n{conf}");
        }
    }

    #[test]
    fn persistence_settings_reach_the_config_file() {
        let mut s = spec(2, 3);
        s.persistence = Some(api::PersistenceSpec {
            append_only: false,
            append_fsync: api::AppendFsync::Always,
            rdb_save: Some(vec![
                api::SavePoint {
                    seconds: 900,
                    changes: 1,
                },
                api::SavePoint {
                    seconds: 60,
                    changes: 500,
                },
            ]),
        });
        let conf = redis_conf(&s);
        for line in ["appendonly no", "appendfsync always", "save 900 1 60 500"] {
            assert!(conf.lines().any(|l| l == line), "{line} not in\n{conf}");
        }
        // No snapshots: an empty value, quoted, as `save ""` turns them off.
        s.persistence = Some(api::PersistenceSpec {
            rdb_save: Some(Vec::new()),
            ..Default::default()
        });
        assert!(redis_conf(&s).lines().any(|l| l == "save \"\""));
        assert_eq!(persistence_settings(&s)[2], ("save", String::new()));
    }

    #[test]
    fn pod_template_carries_image_resources_probes_and_spread() {
        let mut s = spec(1, 3);
        s.image = "redis:7.0".into();
        let r = rc(s);
        let c = children(
            &r,
            &shard_plan(shape(&r), &BTreeMap::new(), false, &[]),
            &Platform::default(),
        );
        let pod = first_pod(&c);
        let ctr = &pod.containers[0];
        assert_eq!(ctr.image.as_deref(), Some("redis:7.0"));
        assert_eq!(
            ctr.resources.as_ref().unwrap().requests.as_ref().unwrap()["cpu"],
            Quantity("100m".into())
        );
        assert!(ctr.readiness_probe.is_some() && ctr.liveness_probe.is_some());
        assert!(pod.affinity.as_ref().unwrap().pod_anti_affinity.is_some());
        // Memory: three quarters of the default 512Mi limit, noeviction.
        let cmd = &ctr.command.as_ref().unwrap()[2];
        assert!(
            cmd.ends_with("--maxmemory 402653184 --maxmemory-policy noeviction"),
            "{cmd}"
        );
        // Hardened: no API token, no Service links, a read-only root.
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.enable_service_links, Some(false));
        let sc = ctr.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.run_as_non_root, Some(true));
        let strategy = c.statefulsets[0]
            .spec
            .as_ref()
            .unwrap()
            .update_strategy
            .clone();
        assert_eq!(
            strategy.and_then(|s| s.type_).as_deref(),
            Some("OnDelete"),
            "the operator rolls the pods itself"
        );
        assert!(
            pod.volumes
                .as_ref()
                .unwrap()
                .iter()
                .any(|v| v.empty_dir.is_some())
        );
    }

    #[test]
    fn maxmemory_follows_the_limit_and_the_policy_the_spec() {
        let mut s = spec(1, 1);
        s.maxmemory_policy = Some(api::MaxmemoryPolicy::AllkeysLru);
        s.resources.limits = Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity("1Gi".into()),
        )]));
        assert!(
            server_command(&s).ends_with("--maxmemory 805306368 --maxmemory-policy allkeys-lru")
        );
        // No limit, no bound: Redis's own default (unlimited).
        s.resources.limits = None;
        let cmd = server_command(&s);
        assert!(!cmd.contains("--maxmemory "), "{cmd}");
        assert!(cmd.ends_with("--maxmemory-policy allkeys-lru"), "{cmd}");
    }

    #[test]
    fn storage_becomes_a_claim_template() {
        let mut s = spec(1, 1);
        s.storage = Some(StorageSpec {
            size: Quantity("2Gi".into()),
            storage_class_name: Some("fast".into()),
        });
        let r = rc(s);
        let c = children(
            &r,
            &shard_plan(shape(&r), &BTreeMap::new(), false, &[]),
            &Platform::default(),
        );
        let sts = c.statefulsets[0].spec.as_ref().unwrap();
        let claim = &sts.volume_claim_templates.as_ref().unwrap()[0];
        assert_eq!(
            claim.spec.as_ref().unwrap().storage_class_name.as_deref(),
            Some("fast")
        );
        // A replica scaled away takes its claim; a deleted cluster keeps them.
        let retention = sts
            .persistent_volume_claim_retention_policy
            .as_ref()
            .unwrap();
        assert_eq!(retention.when_scaled.as_deref(), Some("Delete"));
        assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));
        let pod = sts.template.spec.as_ref().unwrap();
        assert!(
            !pod.volumes
                .as_ref()
                .unwrap()
                .iter()
                .any(|v| v.name == "data")
        );
    }

    #[test]
    fn scale_up_is_immediate_scale_down_waits_for_the_topology() {
        let s = spec(2, 3);
        let cur = BTreeMap::from([(0, 2), (1, 2)]);
        assert_eq!(
            shard_plan(ClusterShape::of(&s).unwrap(), &cur, false, &[]).replicas,
            [3, 3]
        );
        let s = spec(2, 1);
        assert_eq!(
            shard_plan(ClusterShape::of(&s).unwrap(), &cur, false, &[]).replicas,
            [2, 2]
        );
        assert_eq!(
            shard_plan(ClusterShape::of(&s).unwrap(), &cur, true, &[]).replicas,
            [1, 1]
        );
    }

    #[test]
    fn shard_scale_in_keeps_draining_shards_until_removable() {
        let s = spec(2, 2);
        let cur = BTreeMap::from([(0, 2), (1, 2), (2, 2), (3, 2)]);
        assert_eq!(
            shard_plan(ClusterShape::of(&s).unwrap(), &cur, false, &[]).replicas,
            [2, 2, 2, 2]
        );
        assert_eq!(
            shard_plan(ClusterShape::of(&s).unwrap(), &cur, false, &[3]).replicas,
            [2, 2, 2, 0]
        );
        let s = spec(4, 2);
        let cur = BTreeMap::from([(0, 2), (1, 2)]);
        assert_eq!(
            shard_plan(ClusterShape::of(&s).unwrap(), &cur, false, &[]).replicas,
            [2, 2, 2, 2]
        );
    }

    #[test]
    fn hash_changes_with_content_only() {
        let r = rc(spec(1, 1));
        let c1 = children(
            &r,
            &shard_plan(shape(&r), &BTreeMap::new(), false, &[]),
            &Platform::default(),
        );
        let c2 = children(
            &r,
            &shard_plan(shape(&r), &BTreeMap::new(), false, &[]),
            &Platform::default(),
        );
        let (_, h1) = with_hash(c1.statefulsets[0].clone());
        let (_, h2) = with_hash(c2.statefulsets[0].clone());
        assert_eq!(h1, h2);
        let r3 = rc(spec(1, 2));
        let c3 = children(
            &r3,
            &shard_plan(shape(&r3), &BTreeMap::new(), false, &[]),
            &Platform::default(),
        );
        let (obj, h3) = with_hash(c3.statefulsets[0].clone());
        assert_ne!(h1, h3);
        assert_eq!(obj.annotations()[SPEC_HASH], format!("{h3:016x}"));
    }

    /// Runs the readiness script against a stub `redis-cli` answering
    /// `cluster info` with `info` and `info replication` with `repl`.
    fn ready_with(info: &str, repl: &str) -> bool {
        let dir = std::env::temp_dir().join(format!(
            "readiness-{}-{}",
            std::process::id(),
            crate::stable_hash::of_str(&format!("{info}{repl}"))
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let stub = dir.join("redis-cli");
        std::fs::write(
            &stub,
            "#!/bin/sh\ncase \"$*\" in *'cluster info'*) printf '%s' \"$INFO\" ;; *) printf '%s' \"$REPL\" ;; esac\n",
        )
        .unwrap();
        std::fs::set_permissions(&stub, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let path = format!(
            "{}:{}",
            dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let status = std::process::Command::new("sh")
            .args(["-c", &readiness(false, false)])
            .env("PATH", path)
            .env("INFO", info)
            .env("REPL", repl)
            .status()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        status.success()
    }

    #[test]
    fn ready_means_serving_slots_or_a_synced_replica() {
        let ok = "cluster_enabled:1\r\ncluster_state:ok\r\ncluster_slots_assigned:16384\r\n";
        let fail = "cluster_enabled:1\r\ncluster_state:fail\r\ncluster_slots_assigned:0\r\n";
        let primary = "# Replication\r\nrole:master\r\nconnected_slaves:1\r\n";
        let synced = "role:slave\r\nmaster_link_status:up\r\nmaster_sync_in_progress:0\r\n";
        let syncing = "role:slave\r\nmaster_link_status:down\r\nmaster_sync_in_progress:1\r\n";
        let loading = "role:slave\r\nmaster_link_status:up\r\nmaster_sync_in_progress:1\r\n";
        assert!(ready_with(ok, primary));
        assert!(ready_with(ok, synced));
        assert!(!ready_with(ok, syncing), "a replacement still syncing");
        assert!(!ready_with(ok, loading));
        // A fresh node (no cluster yet, or a replacement not yet met) is not
        // ready: the operator forms the cluster from running pods.
        assert!(!ready_with(fail, primary));
        assert!(!ready_with("", ""), "no answer");
    }

    #[test]
    fn the_network_policy_lets_in_the_namespace_the_operator_and_the_cluster() {
        let operator = OperatorPeer {
            namespace: "redis-system".into(),
            labels: BTreeMap::from([("app.kubernetes.io/component".into(), "operator".into())]),
        };
        let r = rc(spec(2, 2));
        let np = network_policy(&r, &operator, false).expect("on by default");
        let v = serde_json::to_value(&np).unwrap();
        let np_spec = &v["spec"];
        assert_eq!(
            np_spec["podSelector"]["matchLabels"][CLUSTER_LABEL],
            "cache"
        );
        assert_eq!(np_spec["policyTypes"], serde_json::json!(["Ingress"]));
        let client = &np_spec["ingress"][0];
        assert_eq!(client["ports"][0]["port"], 6379);
        assert_eq!(client["from"][0], serde_json::json!({"podSelector": {}}));
        assert_eq!(
            client["from"][1]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "redis-system"
        );
        assert_eq!(
            client["from"][1]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
            "operator"
        );
        let bus = &np_spec["ingress"][1];
        assert_eq!(bus["ports"][0]["port"], 16379);
        assert_eq!(
            bus["from"][0]["podSelector"]["matchLabels"][CLUSTER_LABEL],
            "cache"
        );
        assert_eq!(bus["from"].as_array().map(Vec::len), Some(1));
        assert_eq!(np_spec["ingress"].as_array().map(Vec::len), Some(2));
        // With the exporter, its port is open to any scraper.
        let v = serde_json::to_value(network_policy(&r, &operator, true).unwrap()).unwrap();
        assert_eq!(
            v["spec"]["ingress"][2],
            serde_json::json!({"ports": [{"port": 9121, "protocol": "TCP"}]})
        );

        // Widened by the spec; or switched off.
        let mut wide = spec(2, 2);
        wide.network_policy = Some(api::NetworkPolicySpec {
            enabled: true,
            allowed_clients: vec![NetworkPolicyPeer {
                namespace_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([("team".into(), "shop".into())])),
                    ..Default::default()
                }),
                ..Default::default()
            }],
        });
        let np = network_policy(&rc(wide.clone()), &operator, false).unwrap();
        let v = serde_json::to_value(&np).unwrap();
        assert_eq!(
            v["spec"]["ingress"][0]["from"][2]["namespaceSelector"]["matchLabels"]["team"],
            "shop"
        );
        wide.network_policy = Some(api::NetworkPolicySpec {
            enabled: false,
            allowed_clients: Vec::new(),
        });
        assert!(network_policy(&rc(wide), &operator, false).is_none());
        let r = rc(spec(1, 1));
        let plan = shard_plan(shape(&r), &BTreeMap::new(), false, &[]);
        assert!(
            children(&r, &plan, &Platform::default())
                .network_policy
                .is_none()
        );
        assert!(
            children(
                &r,
                &plan,
                &Platform {
                    operator: Some(operator),
                    exporter: None,
                }
            )
            .network_policy
            .is_some()
        );
    }

    #[test]
    fn the_exporter_is_a_native_sidecar_that_logs_in_as_its_own_user() {
        let r = rc(spec(2, 1));
        let plan = shard_plan(shape(&r), &BTreeMap::new(), false, &[]);
        let platform = with_exporter();
        let pod_json = |c: &Children| serde_json::to_value(first_pod(c)).unwrap();
        let pod = pod_json(&children(&r, &plan, &platform));
        let sidecar = &pod["initContainers"][0];
        assert_eq!(sidecar["name"], "exporter");
        assert_eq!(sidecar["image"], "exporter:1");
        assert_eq!(sidecar["restartPolicy"], "Always");
        assert_eq!(sidecar["ports"][0]["containerPort"], 9121);
        assert!(
            sidecar["args"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!("--config-command=-")),
            "{sidecar}"
        );
        let env = &sidecar["env"];
        assert_eq!(
            env[1],
            serde_json::json!({"name": "REDIS_USER", "value": "exporter"})
        );
        assert_eq!(
            env[2]["valueFrom"]["secretKeyRef"],
            serde_json::json!({"name": "cache-internal-auth", "key": "exporter-password"})
        );
        assert_eq!(sidecar["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(
            sidecar["resources"],
            serde_json::json!({"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}})
        );
        // Without an exporter, no init container; without auth, no login.
        let bare = children(&r, &plan, &Platform::default());
        assert!(first_pod(&bare).init_containers.is_none());
        let mut open = spec(2, 1);
        open.auth = Some(api::AuthSpec {
            enabled: false,
            ..Default::default()
        });
        let pod = pod_json(&children(&rc(open), &plan, &platform));
        assert_eq!(
            pod["initContainers"][0]["env"].as_array().map(Vec::len),
            Some(1)
        );
    }

    #[test]
    fn with_tls_every_container_reads_the_certificate_and_speaks_only_tls() {
        let mut tls_spec = spec(2, 1);
        tls_spec.tls = Some(api::TlsSpec::default());
        let r = rc(tls_spec);
        let conf = redis_conf(&r.spec);
        assert!(!conf.lines().any(|l| l == "port 6379"), "{conf}");
        assert!(conf.lines().any(|l| l == "port 0"), "{conf}");
        assert!(conf.lines().any(|l| l == "tls-cluster yes"), "{conf}");
        let plan = shard_plan(shape(&r), &BTreeMap::new(), false, &[]);
        let platform = with_exporter();
        let pod = serde_json::to_value(first_pod(&children(&r, &plan, &platform))).unwrap();
        let volume = (pod["volumes"].as_array().unwrap().iter())
            .find(|v| v["name"] == "tls")
            .expect("a tls volume");
        assert_eq!(
            volume["secret"],
            serde_json::json!({"secretName": "cache-tls", "defaultMode": 0o440})
        );
        let mount = serde_json::json!({"name": "tls", "mountPath": "/tls", "readOnly": true});
        let redis = &pod["containers"][0];
        assert!(redis["volumeMounts"].as_array().unwrap().contains(&mount));
        let probe = redis["readinessProbe"]["exec"]["command"][2]
            .as_str()
            .unwrap();
        assert!(
            probe.starts_with("export REDISCLI_AUTH=\"$(cat /etc/redis-auth/probe-password)\"; LOGIN='--user probe --tls --cacert /tls/ca.crt'; "),
            "{probe}"
        );
        let sidecar = &pod["initContainers"][0];
        assert_eq!(sidecar["volumeMounts"], serde_json::json!([mount]));
        assert_eq!(
            sidecar["env"][0],
            serde_json::json!({"name": "REDIS_ADDR", "value": "rediss://localhost:6379"})
        );
        assert_eq!(
            sidecar["env"][1],
            serde_json::json!({"name": "REDIS_EXPORTER_TLS_CA_CERT_FILE", "value": "/tls/ca.crt"})
        );
        // A Secret named in the spec is the one mounted.
        let mut given = spec(2, 1);
        given.tls = Some(api::TlsSpec {
            secret_name: Some("from-cert-manager".into()),
            issuer_ref: None,
        });
        let pod = serde_json::to_value(first_pod(&children(&rc(given), &plan, &platform))).unwrap();
        assert!(
            pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["secret"]["secretName"] == "from-cert-manager")
        );
        // Without auth, the probe still speaks TLS.
        assert_eq!(
            readiness(false, true).split("; ").next(),
            Some("LOGIN='--tls --cacert /tls/ca.crt'")
        );
    }
}
