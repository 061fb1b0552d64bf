//! The controller: watches RedisClusters and their children, and runs each
//! cluster's reconcile in three parts.
//!
//! - `reconcile` observes: it reads the caches, takes the bounded topology
//!   step over RESP and reads utilisation, at most once per interval;
//! - `decide` turns what was observed into an [`decide::Intent`], with no
//!   I/O: the children to apply, the shards to drop, the status, the
//!   scaling step, the events and the requeue;
//! - `act` carries the intent out against the API.
//!
//! Around them: `sync` (when the child caches are filled), `stores` (what
//! the caches keep), `memory` (what is kept per cluster between
//! reconciles) and `events`.

mod act;
mod credentials;
pub mod decide;
mod events;
#[cfg(test)]
mod fixtures;
mod memory;
mod node_config;
mod reconcile;
mod stores;
mod sync;
mod tls;

use std::sync::Arc;
use std::time::Duration;

use api::Policy;
use futures::{StreamExt, TryStreamExt, future};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use tokio_util::sync::CancellationToken;

use self::act::Writer;
use self::events::Events;
use self::memory::Memories;
use self::stores::{Priors, Stores};
use self::sync::Synced;
use crate::cache::{self, Child};
use crate::names::MANAGER;
use crate::shape::ShapeError;
use crate::status;
use crate::telemetry::{Metrics, ReasonLabels};

pub use self::reconcile::RECONCILE_SPAN;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] edge::KubeError),
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
    #[error("the clients' Secret {secret} {why}")]
    ClientSecret { secret: String, why: String },
    #[error("the TLS Secret {secret} {why}")]
    Tls { secret: String, why: String },
    #[error("generating a password for {name}: the system's random source failed")]
    Random { name: String },
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
            Error::Kube(e) => e.action,
            Error::NoNamespace(_) => "no_namespace",
            Error::Spec { .. } => "reading_spec",
            Error::CachesNotSynced => "caches_not_synced",
            Error::Shape { .. } => "invalid_shape",
            Error::ClientSecret { .. } => "client_secret",
            Error::Tls { .. } => "tls_secret",
            Error::Random { .. } => "random",
        }
    }
}

pub(super) fn kube_err(
    action: &'static str,
    kind: &'static str,
    name: &str,
) -> impl FnOnce(kube::Error) -> Error {
    let wrap = edge::KubeError::on(action, kind, name);
    move |source| Error::Kube(wrap(source))
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
    /// Closes Redis actions when leadership is no longer confirmed.
    pub fence: crate::topology::Fence,
    /// What every cluster gets from the installation: a NetworkPolicy that
    /// lets the operator in (when it knows where it runs), the exporter.
    pub platform: crate::desired::Platform,
}

/// Objects per list request when a cache (re)fills.
const LIST_PAGE_SIZE: u32 = 100;

pub struct Context {
    client: Client,
    writer: Writer,
    settings: Settings,
    metrics: Arc<Metrics>,
    /// The keys of every lookup, and of `memory`.
    keys: cache::Keys,
    stores: Stores,
    synced: Synced,
    /// What the reconciles need of each watched cluster's status.
    priors: cache::Lookup<Option<Box<status::Prior>>>,
    memory: Memories,
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
    let (mut priors, prior_lookup) = Priors::new(metrics.clone(), namespace.clone(), &keys);
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
    let (np_store, network_policies) = child_stream!(
        cache::Meta<NetworkPolicy>,
        Synced::NETWORK_POLICIES,
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
        network_policies: np_store,
    };
    let ctx = Arc::new(Context {
        writer: Writer {
            client: client.clone(),
            events: Events::new(client.clone(), events::reporter()),
            metrics: metrics.clone(),
        },
        client,
        settings: settings.clone(),
        metrics: metrics.clone(),
        keys,
        stores,
        synced,
        priors: prior_lookup,
        memory: Memories::default(),
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
        .watches_stream(network_policies, cluster_of)
        .watches_stream(pods, cluster_of)
        .graceful_shutdown_on(async move { stop.cancelled().await })
        .run(reconcile::reconcile, error_policy, ctx)
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
    let message = err.to_string();
    let (failures, changed) = ctx.memory.failed(ctx.keys.of_object(&*rc), &message);
    let events = ctx.writer.events.clone();
    tokio::spawn(async move {
        let reason = "ReconcileError";
        // Repeats fold into one event; a new cause gets its own, or the
        // event would keep saying what is no longer wrong.
        if changed {
            events
                .publish_fresh(&*rc, EventType::Warning, reason, message)
                .await;
        } else {
            events
                .publish(&*rc, EventType::Warning, reason, message)
                .await;
        }
    });
    // 2 s, 4 s, ... up to 5 min.
    Action::requeue(Duration::from_secs(
        2u64.saturating_pow(failures.min(8)).min(300),
    ))
}
