//! One reconcile: observe (the caches, the topology step, utilisation),
//! [`decide`](super::decide::decide), [`act`](super::act::act).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use api::RedisCluster;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::Instrument;

use super::decide::{self, Inputs, Remembered, Topology};
use super::memory::ClusterMemory;
use super::stores::LiveChildren;
use super::sync::Synced;
use super::{Context, Error, act, credentials, node_config};
use crate::cache;
use crate::desired;
use crate::names;
use crate::roll;
use crate::shape::ClusterShape;
use crate::telemetry::{ClusterReading, Metrics};
use crate::topology;
use crate::utilization::{self, Reading, ReadyPod, Unavailable};
use crate::volumes;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, ListParams};

/// Name of the debug span around our reconcile code alone: kube-runtime's
/// `reconciling object` span also covers handing the requeue back to its
/// scheduler. The benchmark probe times this one.
pub const RECONCILE_SPAN: &str = "reconcile";

/// How long one reconcile waits for the child caches' first list.
const CACHE_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) async fn reconcile(
    cluster: Arc<cache::Cluster>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let timer = std::time::Instant::now();
    let result = async {
        let rc = cluster
            .to_api(&ctx.settings.policy)
            .map_err(|source| Error::Spec {
                name: format!(
                    "{}/{}",
                    cluster.namespace().unwrap_or_default(),
                    cluster.name_any()
                ),
                source,
            })?;
        with_memory(&rc, &ctx).await
    }
    .instrument(tracing::debug_span!(RECONCILE_SPAN))
    .await;
    ctx.metrics
        .reconcile_duration
        .observe(timer.elapsed().as_secs_f64());
    result
}

/// Checks the cluster's memory out for the reconcile, and back in.
async fn with_memory(rc: &RedisCluster, ctx: &Context) -> Result<Action, Error> {
    let name = rc.name_any();
    let ns = rc
        .namespace()
        .ok_or_else(|| Error::NoNamespace(name.clone()))?;
    if rc.meta().deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove the children.
        return Ok(Action::await_change());
    }
    let key = ctx.keys.of(&ns, &name);
    let uid = rc.meta().uid.as_deref().map(|uid| ctx.keys.of("", uid));
    let mut mem = ctx.memory.checkout(key, uid, &ctx.priors);
    let result = reconcile_cluster(rc, ctx, &ns, &name, &mut mem).await;
    ctx.memory.checkin(key, mem, result.is_ok());
    result
}

async fn reconcile_cluster(
    rc: &RedisCluster,
    ctx: &Context,
    ns: &str,
    name: &str,
    mem: &mut ClusterMemory,
) -> Result<Action, Error> {
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
    let (sets, pods) = ctx.stores.children_of(ns, name);
    let current: BTreeMap<u32, i32> = sets
        .iter()
        .filter_map(|s| Some((s.ownership.shard?, s.replicas.unwrap_or(1))))
        .collect();
    let redis = observe_redis(rc, ctx, (ns, name), shape, (&sets, &pods), &current, mem).await?;
    let (report, roll) = (redis.report, redis.roll);
    let now = Timestamp::now();
    let utilization = utilization(ctx, mem, ns, name, &pods, now).await;
    let tls_not_after = mem.tls.as_deref().and_then(|t| t.not_after);
    record_cluster(
        ctx,
        rc,
        (ns, name),
        shape,
        (&report, tls_not_after),
        &utilization,
    );
    let prior = ctx.priors.get(ns, name).flatten();
    let claims = list_claims(rc, ctx, (ns, name), &sets, prior.as_deref()).await?;

    // Decide.
    let topology = match &report {
        None if !ctx.settings.manage_topology => Topology::Unmanaged,
        None => Topology::Waiting,
        Some(Ok(r)) => Topology::Stepped(r),
        Some(Err(e)) => Topology::Failed(&e.error, &e.report),
    };
    let inputs = Inputs {
        rc,
        name,
        shape,
        sets: &sets,
        current: &current,
        topology,
        utilization: &utilization,
        prior: prior.as_deref(),
        range: ctx.settings.policy.autoscaling_range(&rc.spec),
        metrics_interval: ctx.settings.metrics_interval,
        now,
        roll: Some(&roll),
        auth: redis.auth.as_ref(),
        platform: &ctx.settings.platform,
        claims: claims.as_deref(),
        expansion_refused: mem.expansion_refused.as_deref(),
    };
    let remembered = Remembered {
        rendered: mem.rendered.as_ref(),
        autoscale: mem.autoscale,
        roll_blocked: mem.roll_blocked,
    };
    let live = LiveChildren {
        stores: &ctx.stores,
        keys: &ctx.keys,
        ns,
    };
    let intent = decide::decide(&inputs, remembered, &live);

    // Act.
    act::act(&ctx.writer, rc, ns, intent, mem).await
}

/// The cluster's claims, listed only while its volumes are to grow.
async fn list_claims(
    rc: &RedisCluster,
    ctx: &Context,
    (ns, name): (&str, &str),
    sets: &[cache::SetState],
    prior: Option<&crate::status::Prior>,
) -> Result<Option<Vec<volumes::Claim>>, Error> {
    let Some(size) = (rc.spec.storage.as_ref())
        .and_then(|s| Some((api::quantity::bytes(&s.size.0)?, &s.size.0)))
    else {
        return Ok(None);
    };
    let last = prior.and_then(|p| p.volume_expansion.as_deref());
    if !volumes::needs_claims(size.1, size.0, sets, last) {
        return Ok(None);
    }
    let list = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default().labels(&names::selector_string(name)))
        .await
        .map_err(super::kube_err(
            "listing the claims of",
            "RedisCluster",
            &format!("{ns}/{name}"),
        ))?;
    Ok(Some(list.items.iter().map(claim_of).collect()))
}

fn claim_of(pvc: &PersistentVolumeClaim) -> volumes::Claim {
    let bytes = |q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
        q.and_then(|q| api::quantity::bytes(&q.0))
    };
    let status = pvc.status.as_ref();
    volumes::Claim {
        name: pvc.name_any(),
        requested: bytes(
            (pvc.spec.as_ref())
                .and_then(|s| s.resources.as_ref())
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage")),
        ),
        capacity: bytes(
            status
                .and_then(|s| s.capacity.as_ref())
                .and_then(|c| c.get("storage")),
        ),
        fs_pending: (status.and_then(|s| s.conditions.as_ref())).is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "FileSystemResizePending" && c.status == "True")
        }),
    }
}

/// What this reconcile saw and did on the Redis side.
struct RedisSide {
    /// The topology step's report; `None` when no step was taken.
    report: Option<Result<topology::Report, topology::StepError>>,
    roll: roll::Decision,
    auth: Option<crate::auth::AuthView>,
}

/// The Redis side: the credentials (Secrets, and each node's ACL users),
/// then the topology step that forms and reshapes the cluster over RESP,
/// and the rolling update's next step. Not managing the topology, the
/// operator does not talk to Redis at all.
async fn observe_redis(
    rc: &RedisCluster,
    ctx: &Context,
    (ns, name): (&str, &str),
    shape: ClusterShape,
    (sets, pods): (&[cache::SetState], &[(String, cache::PodState)]),
    current: &BTreeMap<u32, i32>,
    mem: &mut ClusterMemory,
) -> Result<RedisSide, Error> {
    let manage = ctx.settings.manage_topology;
    let creds = credentials::reconcile(
        &ctx.client,
        rc,
        (ns, name),
        &mut mem.credentials,
        manage.then_some(ctx.settings.metrics_interval),
    )
    .await?;
    let tls = super::tls::reconcile(&ctx.client, rc, (ns, name), &mut mem.tls).await?;
    let access = Access {
        login: creds.login,
        tls,
    };
    if manage {
        configure_nodes(rc, ctx, (ns, name), pods, &access, mem).await;
    }
    let mut report = if manage {
        let opts = step_options(ctx, None, &access);
        redis_step(shape, loss_policy(&rc.spec), pods, current, &opts).await
    } else {
        None
    };
    let roll = roll_step(
        rc,
        ctx,
        shape,
        (sets, pods),
        (current, &access),
        &mut report,
    )
    .await;
    ctx.metrics.set_pending_update(ns, name, roll.left);
    // A failed step still counts what it did before the error.
    match &report {
        Some(Ok(r)) => record_topology(&ctx.metrics, ns, name, r),
        Some(Err(e)) => record_topology(&ctx.metrics, ns, name, &e.report),
        None => {}
    }
    Ok(RedisSide {
        report,
        roll,
        auth: creds.view,
    })
}

/// How the operator reaches a cluster's nodes.
struct Access {
    login: Option<topology::Login>,
    tls: Option<topology::TlsClient>,
}

/// Gives each node its users and persistence settings, where they changed,
/// and with TLS has it read its certificate files again (a renewed
/// certificate: at once; otherwise at each periodic push).
async fn configure_nodes(
    rc: &RedisCluster,
    ctx: &Context,
    (ns, name): (&str, &str),
    pods: &[(String, cache::PodState)],
    access: &Access,
    mem: &mut ClusterMemory,
) {
    let enabled = crate::auth::enabled(&rc.spec);
    let mut settings = desired::persistence_settings(&rc.spec).to_vec();
    let cert = mem.tls.as_deref().map(|t| t.cert_fingerprint);
    if cert.is_some() {
        settings.extend(crate::tls::reload_settings());
    }
    let creds = mem.credentials.as_deref();
    let users = creds.map(|c| credentials::users_fingerprint(c, enabled));
    let fingerprint = crate::stable_hash::of_str(&format!("{users:?} {settings:?} {cert:?}"));
    let render = || node_config::NodeConfig {
        users: creds.map(|c| credentials::node_users(c, enabled)),
        settings,
    };
    node_config::push(
        mem.pushed.get_or_insert_default(),
        (ns, name),
        &node_addrs(pods),
        (fingerprint, render),
        &step_options(ctx, None, access),
    )
    .await;
}

/// The rolling update's next step. A hand-over is carried out here, by a
/// second topology step asked for it, whose report then stands; a pod to
/// delete is left to `act`.
async fn roll_step(
    rc: &RedisCluster,
    ctx: &Context,
    shape: ClusterShape,
    (sets, pods): (&[cache::SetState], &[(String, cache::PodState)]),
    (current, access): (&BTreeMap<u32, i32>, &Access),
    report: &mut Option<Result<topology::Report, topology::StepError>>,
) -> roll::Decision {
    let roll_pods = roll::pods_of(sets, pods);
    let stepped = match &*report {
        Some(Ok(r)) => Some(r),
        _ => None,
    };
    let decision = roll::decide(&roll::Inputs {
        pods: &roll_pods,
        readings: stepped.map(|r| &r.readings),
        converged: stepped.is_some_and(|r| r.converged),
        persistent: rc.spec.storage.is_some(),
        allow_data_loss: rc.spec.allow_data_loss_on_update,
    });
    if !ctx.settings.manage_topology && decision.left > 0 {
        let why = "the topology is not managed (--manage-topology=false): the operator cannot tell when a pod is safe to replace; delete pods by hand, one at a time";
        return roll::Decision {
            step: roll::Step::Blocked(why.into()),
            ..decision
        };
    }
    if let roll::Step::HandOver { shard, from, to } = decision.step {
        let hand_over = topology::HandOver { shard, from, to };
        let opts = step_options(ctx, Some(hand_over), access);
        if let Some(mut again) =
            redis_step(shape, loss_policy(&rc.spec), pods, current, &opts).await
        {
            // The first step's actions and losses stay reported.
            if let Some(Ok(first)) = report.take() {
                let second = match &mut again {
                    Ok(r) => r,
                    Err(e) => &mut e.report,
                };
                second.absorb(first);
            }
            *report = Some(again);
        }
    }
    decision
}

/// Sets the cluster's gauges from what the topology step read; a step that
/// read no node leaves the last ones.
fn record_cluster(
    ctx: &Context,
    rc: &RedisCluster,
    (ns, name): (&str, &str),
    shape: ClusterShape,
    (report, tls_not_after): (
        &Option<Result<topology::Report, topology::StepError>>,
        Option<i64>,
    ),
    utilization: &Result<Reading, Unavailable>,
) {
    let report = match report {
        Some(Ok(r)) => r,
        Some(Err(e)) => &e.report,
        None => return,
    };
    if report.readings.nodes.is_empty() {
        return;
    }
    let recommended = utilization.as_ref().ok().map(|u| {
        crate::autoscale::recommendation(shape.replicas(), u.percent, rc.spec.scaling_threshold)
    });
    let reading = ClusterReading {
        tls_not_after,
        ..ClusterReading::of(
            &report.readings,
            shape,
            report.slots_left_to_move,
            recommended,
        )
    };
    ctx.metrics.clusters.set(ns, name, reading);
}

/// Counts what the topology step did, and logs each action.
fn record_topology(metrics: &Metrics, ns: &str, name: &str, r: &topology::Report) {
    metrics.slots_migrated.inc_by(u64::from(r.slots_moved));
    metrics.keys_migrated.inc_by(r.keys_moved);
    metrics.topology_actions.inc_by(r.actions);
    metrics.data_loss.inc_by(r.data_lost.len() as u64);
    for l in &r.data_lost {
        tracing::warn!(cluster = %format_args!("{ns}/{name}"), shard = l.shard, node = %l.node_id,
            slots = %topology::model::fmt_ranges(&l.ranges), "data lost: a shard's only copy is gone");
    }
    if r.slots_moved > 0 {
        metrics
            .migration_duration
            .observe(r.migration_time.as_secs_f64());
    }
    for action in &r.actions_taken {
        tracing::info!(cluster = %format_args!("{ns}/{name}"), %action, "topology");
    }
}

/// Utilisation, read at most once per interval.
async fn utilization(
    ctx: &Context,
    mem: &mut ClusterMemory,
    ns: &str,
    name: &str,
    pods: &[(String, cache::PodState)],
    now: Timestamp,
) -> Result<Reading, Unavailable> {
    let now = utilization::unix_seconds(now);
    let interval = ctx.settings.metrics_interval.as_secs_f64();
    if let Some((at, u)) = &mem.last_read
        && now - at < interval
    {
        return u.clone();
    }
    match read_utilization(ctx, ns, name, pods, now).await {
        Some(u) => {
            mem.last_read = Some((now, u.clone()));
            u
        }
        None => Err(Unavailable::NoReadyPods),
    }
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
) -> Option<Result<Reading, Unavailable>> {
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
    let usage = match utilization::fetch(&ctx.client, ns, &names::selector_string(name)).await {
        Ok(usage) => usage,
        Err(e) => return Some(Err(Unavailable::Unreadable(e.to_string()))),
    };
    // A sample older than a few scrape rounds is stale.
    let max_age = (3.0 * ctx.settings.metrics_interval.as_secs_f64()).max(90.0);
    Some(utilization::compute(&ready, &usage, now, max_age))
}

/// What the planner may do about a node gone with its pod: the spec says
/// whether data survives the pod, and what to do when no copy is left.
fn loss_policy(spec: &api::RedisClusterSpec) -> topology::LossPolicy {
    topology::LossPolicy {
        persistent: spec.storage.is_some(),
        recover_empty: spec.on_data_loss.unwrap_or_default() == api::OnDataLoss::RecoverEmpty,
    }
}

/// How a topology step runs: fenced by leadership, logged in as the
/// operator (over TLS with `spec.tls`), and with the hand-over a rolling update asks for, if any.
fn step_options(
    ctx: &Context,
    hand_over: Option<topology::HandOver>,
    access: &Access,
) -> topology::StepOptions {
    topology::StepOptions {
        fence: ctx.settings.fence.clone(),
        hand_over,
        login: access.login.clone(),
        tls: access.tls.clone(),
        ..Default::default()
    }
}

/// The Redis address of every running pod.
fn node_addrs(pods: &[(String, cache::PodState)]) -> Vec<SocketAddr> {
    pods.iter()
        .filter(|(_, p)| !p.deleting && p.running)
        .filter_map(|(_, p)| Some(SocketAddr::new(p.ip?, redis_port())))
        .collect()
}

fn redis_port() -> u16 {
    u16::try_from(desired::REDIS_PORT).unwrap_or(6379)
}

/// Runs one bounded topology step when every expected pod has an IP.
async fn redis_step(
    shape: ClusterShape,
    loss: topology::LossPolicy,
    pods: &[(String, cache::PodState)],
    current: &BTreeMap<u32, i32>,
    opts: &topology::StepOptions,
) -> Option<Result<topology::Report, topology::StepError>> {
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
                addr: SocketAddr::new(ip, redis_port()),
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
    let desired = topology::Desired {
        loss,
        ..shape.into()
    };
    Some(topology::step(&members, &desired, opts).await)
}
