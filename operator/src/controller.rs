//! The reconcile loop: watches RedisClusters and their children, applies the
//! desired children with Server-Side Apply, drives the topology step,
//! autoscales, and writes status. Everything decided here comes from the
//! pure modules; this file only reads caches and talks to the API.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::{Policy, RedisCluster, RedisClusterStatus};
use futures::{StreamExt, TryStreamExt, future};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::autoscale::{self, Decision};
use crate::cache::{self, Child};
use crate::desired::{self, MANAGER};
use crate::metrics_source::{self, Reading, ReadyPod, Unavailable};
use crate::shape::{ClusterShape, ShapeError};
use crate::status::Phase;
use crate::status::{self, RedisState, ShardObservation};
use crate::telemetry::{DirectionLabels, Metrics, ReasonLabels};
use crate::topology;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} {kind} {name}: {source}")]
    Kube {
        action: &'static str,
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("RedisCluster {0} has no namespace")]
    NoNamespace(String),
    #[error("reading the spec of RedisCluster {name}: {source}")]
    Spec {
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the caches of the child objects are not synced yet")]
    CachesNotSynced,
    #[error("RedisCluster {name}: {source}")]
    Shape {
        name: String,
        #[source]
        source: ShapeError,
    },
}

impl Error {
    fn reason(&self) -> &'static str {
        match self {
            Error::Kube { action, .. } => action,
            Error::NoNamespace(_) => "no_namespace",
            Error::Spec { .. } => "reading_spec",
            Error::CachesNotSynced => "caches_not_synced",
            Error::Shape { .. } => "invalid_shape",
        }
    }
}

fn kube_err(
    action: &'static str,
    kind: &'static str,
    name: &str,
) -> impl FnOnce(kube::Error) -> Error {
    let name = name.to_string();
    move |source| Error::Kube {
        action,
        kind,
        name,
        source,
    }
}

/// Tunables of the controller.
#[derive(Debug, Clone)]
pub struct Settings {
    pub policy: Policy,
    /// How often PodMetrics are read and the autoscaler decides.
    pub metrics_interval: Duration,
    /// Reconciles running at once.
    pub concurrency: u16,
    /// Drive the Redis Cluster topology (slots, replicas) over RESP.
    pub manage_topology: bool,
}

/// What is kept of the children (only our objects), by namespace and name.
#[derive(Clone)]
struct Stores {
    statefulsets: cache::Lookup<cache::SetState>,
    pods: cache::Lookup<cache::PodState>,
    services: cache::Hashes,
    configmaps: cache::Hashes,
    pdbs: cache::Hashes,
}

impl Stores {
    /// The spec hash on the cached copy of a child, if cached and hashed.
    fn live_hash(&self, kind: ChildKind, key: cache::Key) -> Option<u64> {
        match kind {
            ChildKind::ConfigMap => self.configmaps.by_key(key).flatten(),
            ChildKind::Service => self.services.by_key(key).flatten(),
            ChildKind::Pdb => self.pdbs.by_key(key).flatten(),
            ChildKind::StatefulSet => self
                .statefulsets
                .by_key(key)
                .and_then(|s| s.ownership.spec_hash),
        }
    }

    /// The cluster's StatefulSets and their pods, looked up by the names
    /// they must have instead of scanning the caches, so a reconcile costs
    /// the same beside ten clusters or ten thousand.
    fn children_of(
        &self,
        ns: &str,
        cluster: &str,
    ) -> (Vec<cache::SetState>, Vec<(String, cache::PodState)>) {
        let ours = |o: &cache::Ownership| o.cluster.as_deref() == Some(cluster);
        let mut sets = Vec::new();
        let mut pods = Vec::new();
        for shard in 0..u32::try_from(api::bounds::SHARD_COUNT.max).unwrap_or(0) {
            let sts_name = desired::statefulset_name(cluster, shard);
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

/// Objects per list request when a cache (re)fills.
const LIST_PAGE_SIZE: u32 = 100;

/// How long one reconcile waits for the child caches' first list.
const CACHE_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Which caches hold their first full list, marked by their watch streams.
///
/// Not `Store::wait_until_ready`: its signal is a oneshot that remembers
/// only the latest waker, so of several tasks waiting at once (reconciles,
/// the readiness probe, the Controller itself on the RedisCluster store)
/// only one is woken. A watch channel wakes every waiter.
#[derive(Clone)]
struct Synced(tokio::sync::watch::Receiver<u8>);

/// The marking side of [`Synced`], held by the watch streams.
#[derive(Clone)]
struct SyncMarks(Arc<tokio::sync::watch::Sender<u8>>);

impl Synced {
    const CLUSTERS: u8 = 1;
    const STATEFULSETS: u8 = 1 << 1;
    const PODS: u8 = 1 << 2;
    const SERVICES: u8 = 1 << 3;
    const CONFIGMAPS: u8 = 1 << 4;
    const PDBS: u8 = 1 << 5;
    const CHILDREN: u8 =
        Self::STATEFULSETS | Self::PODS | Self::SERVICES | Self::CONFIGMAPS | Self::PDBS;
    const ALL: u8 = Self::CLUSTERS | Self::CHILDREN;

    fn new() -> (SyncMarks, Synced) {
        let (tx, rx) = tokio::sync::watch::channel(0);
        (SyncMarks(Arc::new(tx)), Synced(rx))
    }

    /// Resolves once every cache in `caches` is synced; `false` when the
    /// watch streams are gone first (the controller stopped).
    async fn wait(&self, caches: u8) -> bool {
        let mut rx = self.0.clone();
        rx.wait_for(|m| m & caches == caches).await.is_ok()
    }
}

impl SyncMarks {
    /// Marks `cache` synced at the end of its watch's initial list (the
    /// event has been applied to the store by then).
    fn marker<K>(&self, cache: u8) -> impl FnMut(&watcher::Event<K>) + use<K> {
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

/// The kinds of child a cluster has, for looking up their live hashes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum ChildKind {
    ConfigMap,
    Service,
    StatefulSet,
    Pdb,
}

impl ChildKind {
    fn as_str(self) -> &'static str {
        match self {
            ChildKind::ConfigMap => "ConfigMap",
            ChildKind::Service => "Service",
            ChildKind::StatefulSet => "StatefulSet",
            ChildKind::Pdb => "PodDisruptionBudget",
        }
    }
}

/// One child as last applied (or found already applied), by its key in
/// the child lookups.
struct Applied {
    kind: ChildKind,
    key: cache::Key,
    hash: u64,
    wrote: bool,
}

/// What the children were last rendered from. While the spec (generation)
/// and the shard plan stay the same and every child still carries its
/// hash, a reconcile need not render and hash them again: a no-op
/// reconcile is then a few map lookups.
struct Rendered {
    generation: Option<i64>,
    plan: Vec<i32>,
    children: Vec<Applied>,
}

/// The status of each watched cluster, as the [`status::Prior`] a
/// reconcile needs of it (the cached RedisClusters keep no status); it
/// also keeps `redis_operator_managed_clusters` at the number of clusters
/// this scope watches, as counting the store would scan it. Each scope adds
/// its own count, so the gauge is their sum.
struct Priors {
    gauge: prometheus_client::metrics::gauge::Gauge,
    follow: cache::Follow<Option<Box<status::Prior>>>,
}

impl Priors {
    fn new(
        gauge: prometheus_client::metrics::gauge::Gauge,
        keys: &cache::Keys,
    ) -> (Self, cache::Lookup<Option<Box<status::Prior>>>) {
        let (lookup, follow) = cache::Lookup::follow(keys);
        (Priors { gauge, follow }, lookup)
    }

    fn apply(&mut self, event: &watcher::Event<cache::Cluster>) {
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

#[derive(Default)]
struct ClusterMemory {
    /// The object this memory is about (its uid's key): a cluster deleted
    /// and created again under the same name starts afresh.
    uid: Option<cache::Key>,
    autoscale: autoscale::State,
    /// Last utilisation read and when (Unix seconds).
    last_read: Option<(f64, Result<Reading, String>)>,
    failures: u32,
    rendered: Option<Rendered>,
}

pub struct Context {
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    recorder: Recorder,
    /// The keys of every lookup, and of `memory`.
    keys: cache::Keys,
    stores: Stores,
    synced: Synced,
    /// What the reconciles need of each watched cluster's status.
    priors: cache::Lookup<Option<Box<status::Prior>>>,
    memory: Mutex<Memory>,
}

/// What the operator remembers per cluster between reconciles.
#[derive(Default)]
struct Memory {
    /// Boxed: the table keeps a quarter of its slots empty or more, and a
    /// slot is then a pointer rather than 200 bytes.
    clusters: HashMap<cache::Key, Box<ClusterMemory>>,
    /// Size at which entries of deleted clusters are next looked for.
    prune_at: usize,
}

impl Memory {
    /// Drops entries of clusters no longer watched (not in `watched`). The
    /// scan runs only each time the map has doubled, so a reconcile does not
    /// pay for every other cluster.
    fn forget_deleted<V: Clone>(&mut self, keep: cache::Key, watched: &cache::Lookup<V>) {
        if self.clusters.len() < self.prune_at {
            return;
        }
        self.clusters
            .retain(|&k, _| k == keep || watched.contains(k));
        self.prune_at = (self.clusters.len() * 2).max(64);
    }

    fn get(&self, key: cache::Key) -> Option<&ClusterMemory> {
        self.clusters.get(&key).map(|m| &**m)
    }

    fn get_mut(&mut self, key: cache::Key) -> Option<&mut ClusterMemory> {
        self.clusters.get_mut(&key).map(|m| &mut **m)
    }

    /// The cluster's memory, empty if it has none yet.
    fn entry(&mut self, key: cache::Key) -> &mut ClusterMemory {
        self.clusters.entry(key).or_default()
    }
}

fn now_secs() -> f64 {
    metrics_source::unix_seconds(k8s_openapi::jiff::Timestamp::now())
}

/// The RedisCluster a child belongs to, from its cluster label.
fn cluster_of<K: Resource + Child>(child: K) -> Option<ObjectRef<cache::Cluster>> {
    let ns = child.meta().namespace.as_deref()?;
    let cluster = child.ownership().cluster.as_deref()?;
    Some(ObjectRef::new(cluster).within(ns))
}

/// Runs the controller for one scope (a namespace, or all) until `shutdown`.
pub async fn run(
    client: Client,
    namespace: Option<String>,
    settings: Settings,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    fn api<K>(client: &Client, ns: &Option<String>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    // Small list pages: each page's body is buffered whole before it is
    // decoded, and at 500 pods a page that buffer set the process's peak.
    let listing = watcher::Config::default().page_size(LIST_PAGE_SIZE);
    let ours = listing
        .clone()
        .labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));

    let keys = cache::Keys::default();
    let (marks, synced) = Synced::new();
    let (rc_store, rc_writer) = reflector::store::<cache::Cluster>();
    let (mut priors, prior_lookup) = Priors::new(metrics.managed_clusters.clone(), &keys);
    // Status writes (ours) do not bump the generation: only a new
    // generation (or a new object) triggers a reconcile. A lookup rather
    // than kube-runtime's predicate filter, whose cache keeps a copy of
    // each name and forgets no deleted object.
    let (_, mut generations) = cache::Lookup::<Option<i64>>::follow(&keys);
    let clusters = watcher(api::<cache::Cluster>(&client, &namespace), listing)
        .default_backoff()
        // The status goes to `priors` before the store gets the object.
        .inspect_ok(move |event| priors.apply(event))
        .modify(cache::Cluster::strip)
        .reflect(rc_writer)
        .inspect_ok(marks.marker(Synced::CLUSTERS))
        .try_filter_map(move |event| {
            let fresh = generations.apply(&event, |rc| rc.meta().generation);
            future::ready(Ok(match event {
                watcher::Event::Apply(rc) | watcher::Event::InitApply(rc) if fresh => Some(rc),
                _ => None,
            }))
        });

    // Each child watch fills a lookup with the value it keeps of an object
    // and passes the object on to the Controller, which maps it to its
    // cluster and drops it.
    macro_rules! child_stream {
        ($k:ty, $bit:expr, $value:expr) => {{
            let (lookup, mut follow) = cache::Lookup::follow(&keys);
            let stream = watcher(api::<$k>(&client, &namespace), ours.clone())
                .default_backoff()
                .inspect_ok(move |event| {
                    follow.apply(event, $value);
                })
                .inspect_ok(marks.marker($bit))
                .touched_objects();
            (lookup, stream)
        }};
    }
    let (sts_store, statefulsets) = child_stream!(
        cache::StatefulSet,
        Synced::STATEFULSETS,
        |s: &cache::StatefulSet| s.state.clone()
    );
    let (pod_store, pods) =
        child_stream!(cache::Pod, Synced::PODS, |p: &cache::Pod| p.state.clone());
    let (svc_store, services) =
        child_stream!(cache::Meta<Service>, Synced::SERVICES, cache::spec_hash);
    let (cm_store, configmaps) =
        child_stream!(cache::Meta<ConfigMap>, Synced::CONFIGMAPS, cache::spec_hash);
    let (pdb_store, pdbs) = child_stream!(
        cache::Meta<PodDisruptionBudget>,
        Synced::PDBS,
        cache::spec_hash
    );
    // Only the streams mark: once they are dropped, waiters give up.
    drop(marks);

    let stores = Stores {
        statefulsets: sts_store,
        pods: pod_store,
        services: svc_store,
        configmaps: cm_store,
        pdbs: pdb_store,
    };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter()),
        client,
        settings: settings.clone(),
        metrics: metrics.clone(),
        keys,
        stores,
        synced,
        priors: prior_lookup,
        memory: Mutex::new(Memory::default()),
    });

    let ready_metrics = metrics.clone();
    let ready = ctx.synced.clone();
    tokio::spawn(async move {
        if ready.wait(Synced::ALL).await {
            tracing::info!("caches synced");
            ready_metrics.set_ready(true);
        }
    });

    let stop = shutdown.clone();
    Controller::for_stream(clusters, rc_store)
        .with_config(kube::runtime::controller::Config::default().concurrency(settings.concurrency))
        // By label rather than owner reference: the caches keep no owner
        // references, and pods have none pointing at the cluster.
        .watches_stream(statefulsets, cluster_of)
        .watches_stream(services, cluster_of)
        .watches_stream(configmaps, cluster_of)
        .watches_stream(pdbs, cluster_of)
        .watches_stream(pods, cluster_of)
        .graceful_shutdown_on(async move { stop.cancelled().await })
        .run(reconcile, error_policy, ctx)
        .for_each(|res| {
            if let Err(e) = res {
                tracing::debug!(error = %e, "reconcile failed");
            }
            future::ready(())
        })
        .await;
}

fn error_policy(rc: Arc<cache::Cluster>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ReasonLabels {
            reason: err.reason(),
        })
        .inc();
    tracing::warn!(cluster = %ObjectRef::from_obj(&*rc), error = %err, "reconcile failed");
    let failures = {
        let mut mem = ctx.memory.lock().unwrap_or_else(|e| e.into_inner());
        let m = mem.entry(ctx.keys.of_object(&*rc));
        m.failures = m.failures.saturating_add(1);
        m.failures
    };
    let ctx2 = ctx.clone();
    let message = err.to_string();
    tokio::spawn(async move {
        publish(&ctx2, &*rc, EventType::Warning, "ReconcileError", message).await;
    });
    // 2 s, 4 s, ... up to 5 min.
    Action::requeue(Duration::from_secs(
        2u64.saturating_pow(failures.min(8)).min(300),
    ))
}

fn reporter() -> Reporter {
    Reporter {
        controller: MANAGER.into(),
        instance: std::env::var("POD_NAME").ok(),
    }
}

/// Publishes an event; repeats (same reason, within minutes) become one
/// Event with a growing `series.count`, keeping the first note.
async fn publish<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    rc: &K,
    type_: EventType,
    reason: &str,
    note: String,
) {
    publish_with(&ctx.recorder, rc, type_, reason, note).await;
}

/// Publishes an event as an Event of its own, for events whose note matters
/// each time (a scaling step, a shard removed): the recorder would fold a
/// second "ScaledUp" into the first, keeping only "replicas 1 -> 2".
async fn publish_distinct(
    ctx: &Context,
    rc: &RedisCluster,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let recorder = Recorder::new(ctx.client.clone(), reporter());
    publish_with(&recorder, rc, type_, reason, note).await;
}

async fn publish_with<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    rc: &K,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &rc.object_ref(&())).await {
        tracing::debug!(error = %e, "event not published");
    }
}

/// Name of the debug span around our reconcile code alone: kube-runtime's
/// `reconciling object` span also covers handing the requeue back to its
/// scheduler. The benchmark probe times this one.
pub const RECONCILE_SPAN: &str = "reconcile";

async fn reconcile(cluster: Arc<cache::Cluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let timer = std::time::Instant::now();
    let result = async {
        let rc = cluster.to_api().map_err(|source| Error::Spec {
            name: format!(
                "{}/{}",
                cluster.namespace().unwrap_or_default(),
                cluster.name_any()
            ),
            source,
        })?;
        reconcile_inner(&rc, &ctx).await
    }
    .instrument(tracing::debug_span!(RECONCILE_SPAN))
    .await;
    ctx.metrics
        .reconcile_duration
        .observe(timer.elapsed().as_secs_f64());
    if result.is_ok() {
        let mut mem = ctx.memory.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = mem.get_mut(ctx.keys.of_object(&*cluster)) {
            m.failures = 0;
        }
    }
    result
}

/// Applies `obj` unless the live copy already carries its hash.
async fn apply<K>(ctx: &Context, ns: &str, obj: K, kind: ChildKind) -> Result<Applied, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Serialize
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let (obj, hash) = desired::with_hash(obj);
    let name = obj.name_any();
    let key = ctx.keys.of(ns, &name);
    let wrote = ctx.stores.live_hash(kind, key) != Some(hash);
    if wrote {
        Api::<K>::namespaced(ctx.client.clone(), ns)
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&obj),
            )
            .await
            .map_err(kube_err("applying", kind.as_str(), &format!("{ns}/{name}")))?;
    }
    Ok(Applied {
        kind,
        key,
        hash,
        wrote,
    })
}

async fn reconcile_inner(rc: &RedisCluster, ctx: &Context) -> Result<Action, Error> {
    let name = rc.name_any();
    let ns = rc
        .namespace()
        .ok_or_else(|| Error::NoNamespace(name.clone()))?;
    let key = ctx.keys.of(&ns, &name);
    if rc.meta().deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove the children.
        return Ok(Action::await_change());
    }
    {
        let mut mem = ctx.memory.lock().unwrap_or_else(|e| e.into_inner());
        mem.forget_deleted(key, &ctx.priors);
        let uid = rc.meta().uid.as_deref().map(|uid| ctx.keys.of("", uid));
        let m = mem.entry(key);
        if m.uid != uid {
            *m = ClusterMemory {
                uid,
                ..Default::default()
            };
        }
    }
    let client = &ctx.client;
    // The Controller holds reconciles only until the RedisCluster cache is
    // synced. Before the child caches are, existing children look missing:
    // a fresh leader would re-announce them as created, and status,
    // autoscaling and the shard plan would be computed from nothing.
    match tokio::time::timeout(CACHE_SYNC_TIMEOUT, ctx.synced.wait(Synced::CHILDREN)).await {
        Ok(true) => {}
        Ok(false) => return Ok(Action::await_change()),
        Err(_) => return Err(Error::CachesNotSynced),
    }
    let shape = ClusterShape::of(&rc.spec).map_err(|source| Error::Shape {
        name: format!("{ns}/{name}"),
        source,
    })?;

    // Observe.
    let (statefulsets, pods) = ctx.stores.children_of(&ns, &name);
    let current: BTreeMap<u32, i32> = statefulsets
        .iter()
        .filter_map(|s| Some((s.ownership.shard?, s.replicas.unwrap_or(1))))
        .collect();
    let first_time = statefulsets.is_empty();

    // The Redis side: form and reshape the cluster over RESP.
    let report = if ctx.settings.manage_topology {
        redis_step(shape, &pods, &current).await
    } else {
        None
    };
    let (replicas_removable, removable_shards, redis_state) = match &report {
        Some(Ok(r)) => {
            ctx.metrics.slots_migrated.inc_by(u64::from(r.slots_moved));
            ctx.metrics.keys_migrated.inc_by(r.keys_moved);
            ctx.metrics.topology_actions.inc_by(r.actions);
            if r.slots_moved > 0 {
                ctx.metrics
                    .migration_duration
                    .observe(r.migration_time.as_secs_f64());
            }
            for action in &r.actions_taken {
                tracing::info!(cluster = %format_args!("{ns}/{name}"), %action, "topology");
            }
            if !r.actions_taken.is_empty() {
                const SHOWN: usize = 5;
                let mut note = r.actions_taken[..r.actions_taken.len().min(SHOWN)].join("; ");
                if r.actions_taken.len() > SHOWN {
                    note.push_str(&format!(" (+{} more)", r.actions_taken.len() - SHOWN));
                }
                publish(ctx, rc, EventType::Normal, "TopologyChanged", note).await;
            }
            let state = if r.converged {
                RedisState::Converged
            } else {
                RedisState::Converging(r.message.clone())
            };
            (r.replicas_removable, r.removable_shards.clone(), state)
        }
        Some(Err(e)) => (false, Vec::new(), RedisState::Error(e.clone())),
        None if !ctx.settings.manage_topology => (false, Vec::new(), RedisState::Unmanaged),
        None => (false, Vec::new(), RedisState::Unknown),
    };
    // Without topology management nothing can be drained safely, so the
    // objects simply follow the spec; the admin chose that with the flag.
    let surplus_ok = replicas_removable || !ctx.settings.manage_topology;
    let removable: Vec<u32> = if ctx.settings.manage_topology {
        removable_shards
    } else {
        current
            .keys()
            .copied()
            .filter(|&s| !shape.has_shard(s))
            .collect()
    };

    // Apply the children.
    let plan = desired::shard_plan(shape, &current, surplus_ok, &removable);
    let mut writes = 0usize;
    let up_to_date = {
        let mem = ctx.memory.lock().unwrap_or_else(|e| e.into_inner());
        mem.get(key)
            .and_then(|m| m.rendered.as_ref())
            .is_some_and(|r| {
                r.generation == rc.meta().generation
                    && r.plan == plan.replicas
                    && r.children
                        .iter()
                        .all(|c| ctx.stores.live_hash(c.kind, c.key) == Some(c.hash))
            })
    };
    if !up_to_date {
        let children = desired::children(rc, &plan);
        let mut applied = vec![
            apply(ctx, &ns, children.config, ChildKind::ConfigMap).await?,
            apply(ctx, &ns, children.headless, ChildKind::Service).await?,
            apply(ctx, &ns, children.client, ChildKind::Service).await?,
        ];
        for sts in children.statefulsets {
            applied.push(apply(ctx, &ns, sts, ChildKind::StatefulSet).await?);
        }
        for pdb in children.pdbs {
            applied.push(apply(ctx, &ns, pdb, ChildKind::Pdb).await?);
        }
        writes = applied.iter().filter(|a| a.wrote).count();
        let mut mem = ctx.memory.lock().unwrap_or_else(|e| e.into_inner());
        mem.entry(key).rendered = Some(Rendered {
            generation: rc.meta().generation,
            plan: plan.replicas.clone(),
            children: applied,
        });
    }
    // Shards planned at zero pods were drained: remove their objects.
    for (shard, &replicas) in plan.replicas.iter().enumerate() {
        let shard = u32::try_from(shard).unwrap_or(u32::MAX);
        if replicas != 0 || !current.contains_key(&shard) {
            continue;
        }
        let obj_name = desired::statefulset_name(&name, shard);
        let dp = DeleteParams::default();
        for result in [
            Api::<StatefulSet>::namespaced(client.clone(), &ns)
                .delete(&obj_name, &dp)
                .await
                .map(|_| ()),
            Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns)
                .delete(&obj_name, &dp)
                .await
                .map(|_| ()),
        ] {
            match result {
                Ok(()) => writes += 1,
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    return Err(kube_err("deleting", "shard", &format!("{ns}/{obj_name}"))(
                        e,
                    ));
                }
            }
        }
        publish_distinct(
            ctx,
            rc,
            EventType::Normal,
            "ShardRemoved",
            format!("shard {shard} drained and removed"),
        )
        .await;
    }
    if first_time && writes > 0 {
        publish(
            ctx,
            rc,
            EventType::Normal,
            "Created",
            format!(
                "created {} StatefulSets with {} nodes each",
                plan.kept().count(),
                rc.spec.replicas
            ),
        )
        .await;
    }

    // Utilisation, read at most once per interval.
    let now = now_secs();
    let interval = ctx.settings.metrics_interval.as_secs_f64();
    let cached = {
        let mem = ctx.memory.lock().unwrap_or_else(|e| e.into_inner());
        mem.get(key).and_then(|m| m.last_read.clone())
    };
    let utilization = match cached {
        Some((at, u)) if now - at < interval => u,
        _ => match read_utilization(ctx, &ns, &name, &pods, now).await {
            Some(u) => {
                let mut mem = ctx.memory.lock().unwrap_or_else(|e| e.into_inner());
                mem.entry(key).last_read = Some((now, u.clone()));
                u
            }
            None => Err(Unavailable::NoReadyPods.to_string()),
        },
    };
    // The status as last written, from the watch (the cached copy has none).
    let prior = ctx.priors.get(&ns, &name).flatten();
    let was_available = prior
        .as_ref()
        .and_then(|p| p.is_true(status::METRICS_AVAILABLE));
    if let (Err(why), Some(true)) = (&utilization, was_available) {
        publish(
            ctx,
            rc,
            EventType::Warning,
            "MetricsUnavailable",
            why.clone(),
        )
        .await;
    }

    // Autoscale.
    let range = ctx.settings.policy.autoscaling_range(&rc.spec);
    let last_scale = prior
        .as_ref()
        .and_then(|p| p.last_scale_time.as_ref())
        .map(|t| metrics_source::unix_seconds(t.0));
    let decision = {
        let mut mem = ctx.memory.lock().unwrap_or_else(|e| e.into_inner());
        let m = mem.entry(key);
        autoscale::decide(
            &autoscale::Inputs {
                replicas: rc.spec.replicas,
                range,
                threshold: rc.spec.scaling_threshold,
                paused: rc.spec.autoscaling_paused,
                utilization: utilization.as_ref().ok().map(|r| r.percent),
                cooldown: Duration::from_secs(
                    u64::try_from(rc.spec.scale_up_cooldown_seconds).unwrap_or(0),
                ),
                window: Duration::from_secs(
                    u64::try_from(rc.spec.scale_down_stabilization_seconds).unwrap_or(0),
                ),
                last_scale,
                now,
                generation: rc.meta().generation,
            },
            &mut m.autoscale,
        )
    };
    if decision == Decision::Hold(autoscale::HoldReason::Settling) {
        // This copy predates our own scaling write (its status lacks the new
        // last_scale_time): write nothing from it. The write's watch event
        // brings the fresh copy and another reconcile.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }

    // Status.
    let shards: Vec<ShardObservation> = (0..shape.shards.get())
        .map(|shard| {
            statefulsets
                .iter()
                .find(|s| s.ownership.shard == Some(shard))
                .map(|s| ShardObservation {
                    replicas: s.current,
                    ready: s.ready,
                    target: s.replicas.unwrap_or(0),
                })
                .unwrap_or_default()
        })
        .collect();
    let draining = current.keys().filter(|&&s| !shape.has_shard(s)).count();
    let mut last_scale_time = prior.as_ref().and_then(|p| p.last_scale_time.clone());
    if let Decision::Scale { .. } = decision {
        last_scale_time = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    }
    let observed = status::Observed {
        generation: rc.meta().generation,
        shape,
        shards: &shards,
        draining_shards: draining,
        utilization: utilization.clone(),
        redis: &redis_state,
        selector: desired::selector_string(&name),
        last_scale_time,
        migration: match &report {
            Some(Ok(r)) => Some(status::migration_progress(
                prior.as_ref().and_then(|p| p.migration.as_ref()),
                &r.message,
                r.slots_left_to_move,
                r.slots_moved,
                r.keys_moved,
            )),
            _ => prior.as_ref().and_then(|p| p.migration.clone()),
        },
    };
    let status::Built {
        status: new_status,
        phase,
    } = status::build(
        prior.as_deref(),
        &observed,
        Time(k8s_openapi::jiff::Timestamp::now()),
    );
    let api: Api<RedisCluster> = Api::namespaced(client.clone(), &ns);
    // A step that could not be written must not hold the next decisions.
    let forget_step = || {
        let mut mem = ctx.memory.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = mem.get_mut(key) {
            m.autoscale.pending_generation = None;
        }
    };
    if prior.as_ref().map(|p| p.fingerprint) != Some(status::fingerprint(&new_status))
        && let Err(e) = write_status(&api, &name, &ns, &new_status).await
    {
        forget_step();
        return Err(e);
    }

    // The status write above recorded the scaling time first: if we die
    // between the two writes, the cooldown prevents a second step.
    if let Decision::Scale { from, to } = decision {
        if let Err(e) = api
            .patch_scale(
                &name,
                &PatchParams {
                    field_manager: Some(MANAGER.into()),
                    ..Default::default()
                },
                &Patch::Merge(json!({ "spec": { "replicas": to } })),
            )
            .await
        {
            forget_step();
            return Err(kube_err("scaling", "RedisCluster", &format!("{ns}/{name}"))(e));
        }
        let direction = if to > from { "up" } else { "down" };
        ctx.metrics
            .scaling_events
            .get_or_create(&DirectionLabels { direction })
            .inc();
        let u = utilization
            .as_ref()
            .map(|r| format!("{:.1}%", r.percent))
            .unwrap_or_default();
        publish_distinct(
            ctx,
            rc,
            EventType::Normal,
            if to > from { "ScaledUp" } else { "ScaledDown" },
            format!(
                "replicas {from} -> {to}: CPU {u} against a target of {}%",
                rc.spec.scaling_threshold
            ),
        )
        .await;
        tracing::info!(cluster = %format_args!("{ns}/{name}"), from, to, "scaled");
    }

    let busy = !matches!(redis_state, RedisState::Converged | RedisState::Unmanaged)
        || phase != Phase::Ready;
    Ok(if busy {
        Action::requeue(Duration::from_secs(3).min(ctx.settings.metrics_interval))
    } else {
        Action::requeue(ctx.settings.metrics_interval)
    })
}

async fn write_status(
    api: &Api<RedisCluster>,
    name: &str,
    ns: &str,
    status: &RedisClusterStatus,
) -> Result<(), Error> {
    // Server-Side Apply, so fields we stop setting are removed.
    let body = json!({
        "apiVersion": "redis.example.com/v1alpha1",
        "kind": "RedisCluster",
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(kube_err(
        "writing status of",
        "RedisCluster",
        &format!("{ns}/{name}"),
    ))?;
    Ok(())
}

/// `None` while no pod is ready: PodMetrics cannot change that answer, so
/// nothing is read (one aggregated-API call fewer per new cluster) or
/// remembered, and the first pod to become ready is read at once.
async fn read_utilization(
    ctx: &Context,
    ns: &str,
    name: &str,
    pods: &[(String, cache::PodState)],
    now: f64,
) -> Option<Result<Reading, String>> {
    let ready: Vec<ReadyPod> = pods
        .iter()
        .filter(|(_, p)| !p.deleting)
        .filter_map(|(name, p)| {
            Some(ReadyPod {
                name: name.clone(),
                ready_since: p.ready_since?,
                request_cores: p.cpu_request.unwrap_or(0.0),
            })
        })
        .collect();
    if ready.is_empty() {
        return None;
    }
    let usage = match metrics_source::fetch(&ctx.client, ns, &desired::selector_string(name)).await
    {
        Ok(usage) => usage,
        Err(e) => return Some(Err(format!("reading PodMetrics: {e}"))),
    };
    // A sample older than a few scrape rounds is stale.
    let max_age = (3.0 * ctx.settings.metrics_interval.as_secs_f64()).max(90.0);
    Some(metrics_source::utilization(&ready, &usage, now, max_age).map_err(|e| e.to_string()))
}

/// Runs one bounded topology step when every expected pod has an IP.
async fn redis_step(
    shape: ClusterShape,
    pods: &[(String, cache::PodState)],
    current: &BTreeMap<u32, i32>,
) -> Option<Result<topology::Report, String>> {
    let members: Vec<topology::Member> = pods
        .iter()
        .filter(|(_, p)| !p.deleting && p.running)
        .filter_map(|(name, p)| {
            let shard = p.ownership.shard?;
            let ordinal = name.rsplit('-').next()?.parse().ok()?;
            let ip = p.ip?;
            Some(topology::Member {
                shard,
                ordinal,
                addr: SocketAddr::new(ip, u16::try_from(desired::REDIS_PORT).unwrap_or(6379)),
            })
        })
        .collect();
    // Wait until every pod of every desired shard runs: the plan needs the
    // whole picture.
    let complete = (0..shape.shards.get()).all(|shard| {
        let want = current
            .get(&shard)
            .copied()
            .unwrap_or(0)
            .max(shape.replicas());
        let have = members.iter().filter(|m| m.shard == shard).count();
        i32::try_from(have).unwrap_or(0) >= want
    });
    if !complete {
        return None;
    }
    Some(
        topology::step(&members, &shape.into(), &topology::StepOptions::default())
            .await
            .map_err(|e| e.to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init_done<K>(marks: &SyncMarks, cache: u8) {
        let mut mark = marks.marker::<K>(cache);
        mark(&watcher::Event::Init);
        mark(&watcher::Event::InitDone);
    }

    #[tokio::test]
    async fn every_waiter_is_woken_once_all_its_caches_are_synced() {
        let (marks, synced) = Synced::new();
        // Several reconciles and the readiness probe wait at once.
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let s = synced.clone();
                tokio::spawn(async move { s.wait(Synced::CHILDREN).await })
            })
            .collect();
        let all = {
            let s = synced.clone();
            tokio::spawn(async move { s.wait(Synced::ALL).await })
        };
        init_done::<StatefulSet>(&marks, Synced::STATEFULSETS);
        init_done::<cache::Pod>(&marks, Synced::PODS);
        init_done::<cache::Meta<Service>>(&marks, Synced::SERVICES);
        init_done::<cache::Meta<ConfigMap>>(&marks, Synced::CONFIGMAPS);
        // Init alone (a list under way) marks nothing.
        let mut pdb = marks.marker::<cache::Meta<PodDisruptionBudget>>(Synced::PDBS);
        pdb(&watcher::Event::Init);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(waiters.iter().all(|w| !w.is_finished()));
        pdb(&watcher::Event::InitDone);
        for w in waiters {
            let woke = tokio::time::timeout(Duration::from_secs(1), w).await;
            assert!(matches!(woke, Ok(Ok(true))), "{woke:?}");
        }
        // The readiness probe also needs the RedisCluster cache.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!all.is_finished());
        init_done::<cache::Cluster>(&marks, Synced::CLUSTERS);
        let woke = tokio::time::timeout(Duration::from_secs(1), all).await;
        assert!(matches!(woke, Ok(Ok(true))), "{woke:?}");
        // Later waiters return at once; a relist does not unmark.
        let mut sts = marks.marker::<StatefulSet>(Synced::STATEFULSETS);
        sts(&watcher::Event::Init);
        assert!(synced.wait(Synced::ALL).await);
        // Even once the streams are gone.
        drop((marks, sts, pdb));
        assert!(synced.wait(Synced::ALL).await);
    }

    #[tokio::test]
    async fn a_stopped_controller_is_not_synced() {
        let (marks, synced) = Synced::new();
        let mut sts = marks.marker::<StatefulSet>(Synced::STATEFULSETS);
        sts(&watcher::Event::InitDone);
        let waiter = tokio::spawn(async move { synced.wait(Synced::CHILDREN).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        // The watch streams (and their markers) are dropped on shutdown.
        drop((marks, sts));
        let woke = tokio::time::timeout(Duration::from_secs(1), waiter).await;
        assert!(matches!(woke, Ok(Ok(false))), "{woke:?}");
    }
}
