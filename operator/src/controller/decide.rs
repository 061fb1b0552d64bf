//! The reconcile's decision: what was observed in, an [`Intent`] out. No
//! client and no clock here, so every rule is a table test away.

use std::collections::BTreeMap;
use std::time::Duration;

use api::{Range, RedisCluster, RedisClusterStatus};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};

use crate::auth::AuthView;
use crate::autoscale::{self, Decision};
use crate::cache::{self, Key};
use crate::desired::{self, ShardPlan};
use crate::names;
use crate::roll;
use crate::shape::ClusterShape;
use crate::status::{self, Phase, Prior, RedisState, ShardObservation};
use crate::topology::{Report, TopologyError};
use crate::utilization::{self, Reading, Unavailable};
use crate::volumes;

/// The kinds of child a cluster has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChildKind {
    ConfigMap,
    Service,
    StatefulSet,
    Pdb,
    NetworkPolicy,
}

impl ChildKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChildKind::ConfigMap => "ConfigMap",
            ChildKind::Service => "Service",
            ChildKind::StatefulSet => "StatefulSet",
            ChildKind::Pdb => "PodDisruptionBudget",
            ChildKind::NetworkPolicy => "NetworkPolicy",
        }
    }
}

/// A rendered child, stamped with its hash.
// Unboxed: each is built once, moved into the intent's list and applied.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ChildObject {
    ConfigMap(ConfigMap),
    Service(Service),
    StatefulSet(StatefulSet),
    Pdb(PodDisruptionBudget),
    NetworkPolicy(NetworkPolicy),
}

/// A child whose live copy does not carry its hash: it is to be applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ToApply {
    pub name: String,
    pub object: ChildObject,
}

impl ToApply {
    pub fn kind(&self) -> ChildKind {
        match self.object {
            ChildObject::ConfigMap(_) => ChildKind::ConfigMap,
            ChildObject::Service(_) => ChildKind::Service,
            ChildObject::StatefulSet(_) => ChildKind::StatefulSet,
            ChildObject::Pdb(_) => ChildKind::Pdb,
            ChildObject::NetworkPolicy(_) => ChildKind::NetworkPolicy,
        }
    }
}

/// One child as last rendered, by its key in the child lookups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderedChild {
    pub kind: ChildKind,
    pub key: Key,
    pub hash: u64,
}

/// What the children were last rendered from. While the spec (generation)
/// and the shard plan stay the same and every child still carries its
/// hash, a reconcile need not render and hash them again: a no-op
/// reconcile is then a few map lookups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub generation: Option<i64>,
    pub plan: Vec<i32>,
    pub children: Vec<RenderedChild>,
}

/// The live children as the caches hold them.
pub trait Live {
    /// The key of the child `name` in the cluster's namespace.
    fn key(&self, name: &str) -> Key;
    /// The spec hash on the cached copy of a child, if cached and hashed.
    fn hash(&self, kind: ChildKind, key: Key) -> Option<u64>;
}

/// Where the Redis side stands, from this reconcile's topology step.
#[derive(Debug, Clone, Copy)]
pub enum Topology<'a> {
    /// `--manage-topology=false`: the objects simply follow the spec.
    Unmanaged,
    /// Not every expected pod runs yet: no step was taken.
    Waiting,
    Stepped(&'a Report),
    /// The step failed; the report says what it did before the error.
    Failed(&'a TopologyError, &'a Report),
}

/// Everything a decision is made from.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub rc: &'a RedisCluster,
    pub name: &'a str,
    pub shape: ClusterShape,
    /// The cluster's StatefulSets, as cached.
    pub sets: &'a [cache::SetState],
    /// Pods per existing StatefulSet, by shard.
    pub current: &'a BTreeMap<u32, i32>,
    pub topology: Topology<'a>,
    pub utilization: &'a Result<Reading, Unavailable>,
    /// The status as last written, from the watch.
    pub prior: Option<&'a Prior>,
    /// The replicas the policy lets the autoscaler choose from.
    pub range: Range<i32>,
    pub metrics_interval: Duration,
    pub now: Timestamp,
    /// The rolling update's next step, when the pods were looked at.
    pub roll: Option<&'a roll::Decision>,
    /// How clients log in, when authentication is on.
    pub auth: Option<&'a AuthView>,
    /// What the installation adds to each cluster (NetworkPolicies, the
    /// exporter).
    pub platform: &'a desired::Platform,
    /// The cluster's claims, listed while its volumes are to grow.
    pub claims: Option<&'a [volumes::Claim]>,
    /// The API refused the last claim expansion: its words.
    pub expansion_refused: Option<&'a str>,
}

/// What the last reconciles left that this one decides on.
#[derive(Debug, Clone, Copy)]
pub struct Remembered<'a> {
    pub rendered: Option<&'a Rendered>,
    pub autoscale: autoscale::State,
    /// The last decision already reported the roll as blocked.
    pub roll_blocked: bool,
}

/// A scaling step to write through the scale subresource.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    pub from: i32,
    pub to: i32,
    /// The utilisation it was decided on, for the event.
    pub cpu: Option<f64>,
    pub threshold: f64,
}

/// An event, typed until it is published.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    /// The topology step acted: its first actions, and how many it took.
    TopologyChanged {
        shown: Vec<String>,
        taken: u64,
    },
    MetricsUnavailable(Unavailable),
    Created {
        statefulsets: usize,
        nodes: i32,
    },
    ShardRemoved(u32),
    Scaled(Step),
    /// A shard's only copy was lost; its slots serve again, empty.
    DataLost(crate::topology::LostShard),
    /// A rolling update replaces a pod; the decision's text.
    Rolling(String),
    /// A rolling update cannot go on without the user.
    RollBlocked(String),
    /// Claims grown, or a StatefulSet re-created, for a larger size.
    Expanding(String),
}

/// What a reconcile is to do, in the order `act` does it.
#[derive(Debug, Clone, PartialEq)]
pub struct Intent {
    /// Events published before anything is written.
    pub events: Vec<Note>,
    /// Children whose live copies lack their hash, in apply order.
    pub apply: Vec<ToApply>,
    /// What to remember once every child is applied; `None` keeps the
    /// memory as it is (nothing was rendered).
    pub rendered: Option<Rendered>,
    /// Drained shards whose StatefulSet and PDB are to be deleted.
    pub drop_shards: Vec<u32>,
    /// Announced when this reconcile made the first writes of a cluster.
    pub created: Option<Note>,
    /// The status to write; `None` when it would not change.
    pub status: Option<RedisClusterStatus>,
    pub scale: Option<Step>,
    /// The autoscaler's memory after this decision.
    pub autoscale: autoscale::State,
    /// A pod the rolling update replaces (deleted; its StatefulSet
    /// recreates it at the update revision).
    pub delete_pod: Option<String>,
    /// Whether the roll is blocked, to remember.
    pub roll_blocked: bool,
    /// The cluster's NetworkPolicy, to delete: it was switched off.
    pub delete_network_policy: Option<String>,
    /// Claims whose request grows to `spec.storage.size`.
    pub grow_claims: Vec<String>,
    /// A StatefulSet to delete, leaving its pods, so that the next
    /// reconcile creates it with the larger claim template.
    pub replace_set: Option<String>,
    pub requeue: Duration,
}

/// Topology actions named in an event; the rest are counted.
const SHOWN_ACTIONS: usize = 5;
/// How long a reconcile waits for its own scaling write to show.
const SETTLING_REQUEUE: Duration = Duration::from_secs(1);
/// The requeue while something is still moving.
const BUSY_REQUEUE: Duration = Duration::from_secs(3);

/// Decides a reconcile.
pub fn decide(i: &Inputs<'_>, mem: Remembered<'_>, live: &impl Live) -> Intent {
    let redis = RedisView::of(i);
    let plan = desired::shard_plan(i.shape, i.current, redis.surplus_ok, &redis.removable);
    let (mut apply, rendered) = children(i, &plan, mem.rendered, live);
    let expansion = expansion(i, &redis.state);
    hold_sets(i.name, &expansion, &mut apply);
    let drop_shards = drained(&plan, i.current);
    let created = i.sets.is_empty().then(|| Note::Created {
        statefulsets: plan.kept().count(),
        nodes: i.rc.spec.replicas,
    });
    let mut events = observed_notes(i, redis.note);
    let (delete_pod, roll_blocked) = roll_intent(i.roll, mem.roll_blocked, &mut events);
    let replace_set = expansion_notes(i, &expansion, &mut events);
    let delete_network_policy =
        (!desired::wants_network_policy(i.rc, i.platform.operator.as_ref())
            && live
                .hash(ChildKind::NetworkPolicy, live.key(i.name))
                .is_some())
        .then(|| i.name.to_string());
    let mut autoscale = mem.autoscale;
    let decision = autoscale::decide(&autoscale_inputs(i), &mut autoscale);
    let mut intent = Intent {
        events,
        apply,
        rendered,
        drop_shards,
        created,
        status: None,
        scale: None,
        autoscale,
        delete_pod,
        roll_blocked,
        delete_network_policy,
        grow_claims: expansion.grow,
        replace_set,
        requeue: SETTLING_REQUEUE,
    };
    if decision == Decision::Hold(autoscale::HoldReason::Settling) {
        // This copy predates our own scaling write (its status lacks the new
        // last_scale_time): write nothing from it. The write's watch event
        // brings the fresh copy and another reconcile.
        return intent;
    }
    intent.scale = match decision {
        Decision::Scale { from, to } => Some(Step {
            from,
            to,
            cpu: i.utilization.as_ref().ok().map(|r| r.percent),
            threshold: i.rc.spec.scaling_threshold,
        }),
        Decision::Hold(_) => None,
    };
    let mut built = build_status(i, &redis.state, intent.scale.is_some());
    if let Some(roll) = i.roll {
        let generation = i.rc.meta().generation;
        (built.status.conditions).push(status::updating(i.prior, roll, generation, Time(i.now)));
    }
    let expanding = volume_status(i, expansion.status, &mut built.status);
    let rolling = i.roll.is_some_and(|r| r.left > 0 && !roll_blocked);
    let busy = !matches!(redis.state, RedisState::Converged | RedisState::Unmanaged)
        || built.phase != Phase::Ready
        || rolling
        || expanding;
    intent.requeue = if busy {
        BUSY_REQUEUE.min(i.metrics_interval)
    } else {
        i.metrics_interval
    };
    // A StatefulSet re-created for larger volumes is gone for a moment, and
    // its shard would look empty (not Ready): the last status stands.
    if expanding && set_gone(i) {
        return intent;
    }
    if i.prior.map(|p| p.fingerprint) != Some(status::fingerprint(&built.status)) {
        intent.status = Some(built.status);
    }
    intent
}

/// Shards the plan empties that still have a StatefulSet.
fn drained(plan: &ShardPlan, current: &BTreeMap<u32, i32>) -> Vec<u32> {
    (plan.replicas.iter().zip(0u32..))
        .filter(|&(&replicas, shard)| replicas == 0 && current.contains_key(&shard))
        .map(|(_, shard)| shard)
        .collect()
}

/// The events of what was observed: the topology step's, each loss (even
/// when the step that caused it failed later), and metrics lost.
fn observed_notes(i: &Inputs<'_>, topology: Option<Note>) -> Vec<Note> {
    let mut events: Vec<Note> = topology.into_iter().collect();
    if let Topology::Stepped(r) | Topology::Failed(_, r) = i.topology {
        events.extend(r.data_lost.iter().cloned().map(Note::DataLost));
    }
    let was_available = i.prior.and_then(|p| p.is_true(status::METRICS_AVAILABLE));
    if let (Err(why), Some(true)) = (i.utilization, was_available) {
        events.push(Note::MetricsUnavailable(why.clone()));
    }
    events
}

/// Leaves out of `apply` the StatefulSets whose claim template differs
/// from the spec: they are re-created, as the API refuses that update.
fn hold_sets(cluster: &str, expansion: &volumes::Plan, apply: &mut Vec<ToApply>) {
    let held: Vec<String> = (expansion.hold.iter())
        .map(|&shard| names::statefulset_name(cluster, shard))
        .collect();
    apply.retain(|c| c.kind() != ChildKind::StatefulSet || !held.contains(&c.name));
}

/// The events of the expansion's step, and the StatefulSet it re-creates.
fn expansion_notes(
    i: &Inputs<'_>,
    expansion: &volumes::Plan,
    events: &mut Vec<Note>,
) -> Option<String> {
    let size =
        i.rc.spec
            .storage
            .as_ref()
            .map(|s| s.size.0.as_str())
            .unwrap_or_default();
    if !expansion.grow.is_empty() && i.expansion_refused.is_none() {
        let count = expansion.grow.len();
        events.push(Note::Expanding(format!("growing {count} claims to {size}")));
    }
    let sts = names::statefulset_name(i.name, expansion.replace?);
    events.push(Note::Expanding(format!(
        "re-creating StatefulSet {sts} with {size} claims; its pods keep running"
    )));
    Some(sts)
}

/// Puts the expansion's progress (or the last one shown, when the claims
/// were not listed) into `status`; whether it is still under way.
fn volume_status(
    i: &Inputs<'_>,
    listed: Option<api::VolumeExpansionStatus>,
    status: &mut RedisClusterStatus,
) -> bool {
    let shown = listed.or_else(|| i.prior.and_then(|p| p.volume_expansion.as_deref().cloned()));
    let expanding = shown.as_ref().is_some_and(|v| !volumes::is_done(v));
    if let Some(v) = &shown {
        let generation = i.rc.meta().generation;
        let condition = status::expanding_volumes(i.prior, v, generation, Time(i.now));
        status.conditions.push(condition);
    }
    status.volume_expansion = shown;
    expanding
}

/// A shard of the shape has no StatefulSet.
fn set_gone(i: &Inputs<'_>) -> bool {
    (0..i.shape.shards.get()).any(|shard| !i.sets.iter().any(|s| s.ownership.shard == Some(shard)))
}

/// The volume expansion's next step; empty without storage.
fn expansion(i: &Inputs<'_>, redis: &RedisState) -> volumes::Plan {
    let Some(storage) = &i.rc.spec.storage else {
        return volumes::Plan::default();
    };
    let Some(size) = api::quantity::bytes(&storage.size.0) else {
        return volumes::Plan::default();
    };
    let settled = matches!(redis, RedisState::Converged | RedisState::Unmanaged)
        && i.roll.is_none_or(|r| r.left == 0);
    volumes::plan(&volumes::Inputs {
        size,
        size_text: &storage.size.0,
        sets: i.sets,
        claims: i.claims,
        settled,
        refused: i.expansion_refused,
    })
}

/// The pod to delete for the roll, and whether it is blocked; a block is
/// announced once, a replacement each time.
fn roll_intent(
    roll: Option<&roll::Decision>,
    was_blocked: bool,
    events: &mut Vec<Note>,
) -> (Option<String>, bool) {
    let Some(d) = roll else {
        return (None, was_blocked);
    };
    match &d.step {
        roll::Step::Delete { pod, .. } => {
            events.push(Note::Rolling(d.to_string()));
            (Some(pod.clone()), false)
        }
        roll::Step::Blocked(why) => {
            if !was_blocked {
                events.push(Note::RollBlocked(why.clone()));
            }
            (None, true)
        }
        _ => (None, false),
    }
}

/// The topology step's report, as the rest of the decision needs it.
struct RedisView {
    state: RedisState,
    /// Pods beyond the shape may go (their nodes were emptied and forgotten).
    surplus_ok: bool,
    /// Shards beyond the shape whose objects may go.
    removable: Vec<u32>,
    note: Option<Note>,
}

impl RedisView {
    fn of(i: &Inputs<'_>) -> RedisView {
        let nothing = |state| RedisView {
            state,
            surplus_ok: false,
            removable: Vec::new(),
            note: None,
        };
        match i.topology {
            // Without topology management nothing can be drained, so a shard
            // beyond the shape is never removed: its primary owns slots as
            // far as the operator knows (status says the scale-in is
            // refused). Replicas follow the spec, highest ordinal first; the
            // admin chose that with the flag.
            Topology::Unmanaged => RedisView {
                state: RedisState::Unmanaged,
                surplus_ok: true,
                removable: Vec::new(),
                note: None,
            },
            Topology::Waiting => nothing(RedisState::Unknown),
            Topology::Failed(why, _) => nothing(RedisState::Error(why.to_string())),
            Topology::Stepped(r) => RedisView {
                state: if r.converged {
                    RedisState::Converged
                } else {
                    RedisState::Converging(r.message.clone())
                },
                surplus_ok: r.replicas_removable,
                removable: r.removable_shards.clone(),
                note: (r.actions > 0).then(|| Note::TopologyChanged {
                    shown: r
                        .actions_taken
                        .iter()
                        .take(SHOWN_ACTIONS)
                        .cloned()
                        .collect(),
                    taken: r.actions,
                }),
            },
        }
    }
}

/// The children to apply for `plan`, and what to remember of them; nothing
/// is rendered while the last rendering still holds.
fn children(
    i: &Inputs<'_>,
    plan: &ShardPlan,
    last: Option<&Rendered>,
    live: &impl Live,
) -> (Vec<ToApply>, Option<Rendered>) {
    let generation = i.rc.meta().generation;
    let up_to_date = last.is_some_and(|r| {
        r.generation == generation
            && r.plan == plan.replicas
            && r.children
                .iter()
                .all(|c| live.hash(c.kind, c.key) == Some(c.hash))
    });
    if up_to_date {
        return (Vec::new(), None);
    }
    let rendered = desired::children(i.rc, plan, i.platform);
    let stamped = [
        stamp(rendered.config, ChildObject::ConfigMap),
        stamp(rendered.headless, ChildObject::Service),
        stamp(rendered.client, ChildObject::Service),
    ]
    .into_iter()
    .chain((rendered.statefulsets.into_iter()).map(|o| stamp(o, ChildObject::StatefulSet)))
    .chain(
        rendered
            .pdbs
            .into_iter()
            .map(|o| stamp(o, ChildObject::Pdb)),
    )
    .chain((rendered.network_policy.into_iter()).map(|o| stamp(o, ChildObject::NetworkPolicy)));
    let mut apply = Vec::new();
    let mut children = Vec::new();
    for (child, hash) in stamped {
        let key = live.key(&child.name);
        let kind = child.kind();
        children.push(RenderedChild { kind, key, hash });
        if live.hash(kind, key) != Some(hash) {
            apply.push(child);
        }
    }
    let rendered = Rendered {
        generation,
        plan: plan.replicas.clone(),
        children,
    };
    (apply, Some(rendered))
}

/// `obj` with its hash annotation, to apply, and the hash.
fn stamp<K: Resource + serde::Serialize>(obj: K, wrap: fn(K) -> ChildObject) -> (ToApply, u64) {
    let (obj, hash) = desired::with_hash(obj);
    let name = obj.name_any();
    (
        ToApply {
            name,
            object: wrap(obj),
        },
        hash,
    )
}

fn autoscale_inputs(i: &Inputs<'_>) -> autoscale::Inputs {
    let spec = &i.rc.spec;
    let seconds = |s: i32| Duration::from_secs(u64::try_from(s).unwrap_or(0));
    autoscale::Inputs {
        replicas: spec.replicas,
        range: i.range,
        threshold: spec.scaling_threshold,
        paused: spec.autoscaling_paused,
        utilization: i.utilization.as_ref().ok().map(|r| r.percent),
        cooldown: seconds(spec.scale_up_cooldown_seconds),
        window: seconds(spec.scale_down_stabilization_seconds),
        last_scale: i
            .prior
            .and_then(|p| p.last_scale_time.as_ref())
            .map(|t| utilization::unix_seconds(t.0)),
        now: utilization::unix_seconds(i.now),
        generation: i.rc.meta().generation,
    }
}

fn build_status(i: &Inputs<'_>, redis: &RedisState, scaled: bool) -> status::Built {
    let shards: Vec<ShardObservation> = (0..i.shape.shards.get())
        .map(|shard| {
            i.sets
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
    let draining_shards = i.current.keys().filter(|&&s| !i.shape.has_shard(s)).count();
    let prior = i.prior;
    let last_scale_time = if scaled {
        Some(Time(i.now))
    } else {
        prior.and_then(|p| p.last_scale_time.clone())
    };
    let migration = match i.topology {
        Topology::Stepped(r) => Some(status::migration_progress(
            prior.and_then(|p| p.migration.as_ref()),
            &r.message,
            r.slots_left_to_move,
            r.slots_moved,
            r.keys_moved,
        )),
        _ => prior.and_then(|p| p.migration.clone()),
    };
    let observed = status::Observed {
        generation: i.rc.meta().generation,
        shape: i.shape,
        shards: &shards,
        draining_shards,
        utilization: i.utilization.clone(),
        redis,
        health: match i.topology {
            Topology::Stepped(r) => Some(&r.health),
            _ => None,
        },
        selector: names::selector_string(i.name),
        last_scale_time,
        migration,
        auth: i.auth.map(auth_status),
    };
    status::build(prior, &observed, Time(i.now))
}

fn auth_status(v: &AuthView) -> api::AuthStatus {
    let time = |t: i64| Timestamp::from_second(t).ok().map(Time);
    api::AuthStatus {
        secret_name: v.secret_name.clone(),
        username: v.username.clone(),
        rotated_at: v.rotated_at.and_then(time),
        old_password_expires_at: v.overlap_until.and_then(time),
    }
}

#[cfg(test)]
mod tests;
