//! Observed state in, `RedisClusterStatus` out: pure, so every condition and
//! phase can be tested without a cluster.

use api::{MigrationStatus, RedisClusterStatus, VolumeExpansionStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::shape::ClusterShape;
use crate::topology::Health;
use crate::topology::model::fmt_ranges;
use crate::utilization::{Reading, Unavailable};

pub const READY: &str = "Ready";
pub const SCALING: &str = "Scaling";
pub const DEGRADED: &str = "Degraded";
pub const METRICS_AVAILABLE: &str = "MetricsAvailable";
pub const UPDATING: &str = "Updating";
pub const EXPANDING_VOLUMES: &str = "ExpandingVolumes";

/// The conditions we write, in the order we write them.
const CONDITIONS: [&str; 6] = [
    READY,
    SCALING,
    DEGRADED,
    METRICS_AVAILABLE,
    UPDATING,
    EXPANDING_VOLUMES,
];

/// What a new status takes over from the one on the object, kept in place
/// of that status (see `cache`): with thousands of clusters, four
/// conditions' strings are a good part of a cached RedisCluster.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Prior {
    /// [`fingerprint`] of the whole status: a reconcile writes only when
    /// the status it builds has another.
    pub fingerprint: u64,
    /// Each of [`CONDITIONS`]: whether it was True, and since when.
    conditions: [Option<(bool, Time)>; 6],
    pub last_scale_time: Option<Time>,
    pub migration: Option<MigrationStatus>,
    /// Kept until the next listing of the claims (only while expanding).
    pub volume_expansion: Option<Box<VolumeExpansionStatus>>,
}

impl Prior {
    pub fn of(status: &RedisClusterStatus) -> Prior {
        let mut conditions: [Option<(bool, Time)>; 6] = Default::default();
        for c in &status.conditions {
            if let Some(i) = CONDITIONS.iter().position(|t| *t == c.type_) {
                conditions[i] = Some((c.status == "True", c.last_transition_time.clone()));
            }
        }
        Prior {
            fingerprint: fingerprint(status),
            conditions,
            last_scale_time: status.last_scale_time.clone(),
            migration: status.migration.clone(),
            volume_expansion: status.volume_expansion.clone().map(Box::new),
        }
    }

    /// Whether the condition `type_` was True; None when it was not set.
    pub fn is_true(&self, type_: &str) -> Option<bool> {
        let i = CONDITIONS.iter().position(|t| *t == type_)?;
        self.conditions[i].as_ref().map(|(status, _)| *status)
    }

    /// Since when the condition `type_` had `status`, if it had it.
    fn since(&self, type_: &str, status: bool) -> Option<Time> {
        let i = CONDITIONS.iter().position(|t| *t == type_)?;
        match &self.conditions[i] {
            Some((was, at)) if *was == status => Some(at.clone()),
            _ => None,
        }
    }
}

/// A hash of the status as it is written (its JSON): two statuses with the
/// same fingerprint are taken as equal, as children are by their spec hash.
pub fn fingerprint(status: &RedisClusterStatus) -> u64 {
    use std::hash::{Hash, Hasher};
    let text = serde_json::to_string(status).unwrap_or_default();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// One shard's StatefulSet as observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShardObservation {
    /// Pods that exist (`status.replicas`).
    pub replicas: i32,
    pub ready: i32,
    /// `spec.replicas` of the StatefulSet.
    pub target: i32,
}

/// The Redis side, as the topology step last reported it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RedisState {
    /// Not checked yet (pods not running).
    #[default]
    Unknown,
    /// The operator was told not to manage Redis (`--manage-topology=false`).
    Unmanaged,
    Converged,
    Converging(String),
    Error(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Observed<'a> {
    pub generation: Option<i64>,
    pub shape: ClusterShape,
    /// The shape's shards in order; missing ones count as empty.
    pub shards: &'a [ShardObservation],
    /// Shards beyond the shape's still being drained.
    pub draining_shards: usize,
    pub utilization: Result<Reading, Unavailable>,
    pub redis: &'a RedisState,
    /// Slot ownership and cluster state from the last topology step.
    pub health: Option<&'a Health>,
    pub selector: String,
    pub last_scale_time: Option<Time>,
    pub migration: Option<MigrationStatus>,
    pub auth: Option<api::AuthStatus>,
}

/// The migration progress after a topology step: totals accumulate across
/// steps (and operator restarts, since they live in status).
pub fn migration_progress(
    prev: Option<&MigrationStatus>,
    step: &str,
    slots_left: u32,
    slots_moved: u32,
    keys_moved: u64,
) -> MigrationStatus {
    let prev = prev.cloned().unwrap_or_default();
    MigrationStatus {
        step: step.to_string(),
        slots_left,
        slots_moved: prev.slots_moved.saturating_add(u64::from(slots_moved)),
        keys_moved: prev.keys_moved.saturating_add(keys_moved),
    }
}

/// The one-word state in `status.phase`, typed until it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Scaling,
    Ready,
    Degraded,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Scaling => "Scaling",
            Phase::Ready => "Ready",
            Phase::Degraded => "Degraded",
        }
    }
}

/// A status as built, with its phase still typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Built {
    pub status: RedisClusterStatus,
    pub phase: Phase,
}

/// Builds the status; conditions keep their `lastTransitionTime` while their
/// status does not change, so an unchanged cluster yields an equal status
/// and the controller writes nothing.
pub fn build(prev: Option<&Prior>, o: &Observed<'_>, now: Time) -> Built {
    let f = Facts::of(o);
    let c = Conditions {
        prev,
        now,
        generation: o.generation,
    };
    let ready_cond = ready_condition(&c, &f, o);
    let scaling_cond = scaling_condition(&c, &f, o);
    let degraded_cond = degraded_condition(&c, &f, o);
    let metrics_cond = metrics_condition(&c, o);
    let phase = if degraded_cond.status == "True" {
        Phase::Degraded
    } else if ready_cond.status == "True" && scaling_cond.status == "False" {
        Phase::Ready
    } else if f.replicas == 0 && f.ready == 0 {
        Phase::Pending
    } else {
        Phase::Scaling
    };
    let status = RedisClusterStatus {
        replicas: f.replicas,
        ready_replicas: f.ready,
        // Rounded so sub-0.1 % jitter does not cause status writes.
        current_cpu: o
            .utilization
            .as_ref()
            .ok()
            .map(|r| (r.percent * 10.0).round() / 10.0),
        observed_generation: o.generation,
        conditions: vec![ready_cond, scaling_cond, degraded_cond, metrics_cond],
        phase: Some(phase.as_str().into()),
        last_scale_time: o.last_scale_time.clone(),
        selector: Some(o.selector.clone()),
        auth: o.auth.clone(),
        volume_expansion: None,
        migration: o.migration.clone(),
    };
    Built { status, phase }
}

/// What the conditions are decided on, from the shards' counts.
struct Facts {
    spec_replicas: i32,
    desired_shards: usize,
    /// Pods, and ready pods, in the least complete shard.
    replicas: i32,
    ready: i32,
    all_ready: bool,
    /// A shard is not (yet) at the spec's size, or one is being drained.
    resizing: bool,
    /// Some pods of a shard that serves are not ready.
    some_down: bool,
}

impl Facts {
    fn of(o: &Observed<'_>) -> Facts {
        let spec_replicas = o.shape.replicas();
        let desired_shards = usize::try_from(o.shape.shards.get()).unwrap_or(usize::MAX);
        let shard = |i: usize| o.shards.get(i).copied().unwrap_or_default();
        let least = |f: fn(ShardObservation) -> i32| {
            (0..desired_shards).map(|i| f(shard(i))).min().unwrap_or(0)
        };
        let ready = least(|s| s.ready);
        Facts {
            spec_replicas,
            desired_shards,
            replicas: least(|s| s.replicas),
            ready,
            all_ready: ready >= spec_replicas && desired_shards > 0,
            resizing: (0..desired_shards).any(|i| {
                let s = shard(i);
                s.target != spec_replicas || s.replicas != spec_replicas
            }) || o.draining_shards > 0,
            some_down: (0..desired_shards)
                .any(|i| shard(i).ready < shard(i).replicas.min(spec_replicas))
                && (0..desired_shards).any(|i| shard(i).ready > 0),
        }
    }
}

/// Makes conditions that keep their transition time from the prior status.
struct Conditions<'a> {
    prev: Option<&'a Prior>,
    now: Time,
    generation: Option<i64>,
}

impl Conditions<'_> {
    fn make(&self, type_: &str, status: bool, reason: &str, message: String) -> Condition {
        let since = self
            .prev
            .and_then(|p| p.since(type_, status))
            .unwrap_or_else(|| self.now.clone());
        Condition {
            type_: type_.into(),
            status: if status { "True" } else { "False" }.into(),
            reason: reason.into(),
            message,
            observed_generation: self.generation,
            last_transition_time: since,
        }
    }
}

fn ready_condition(c: &Conditions<'_>, f: &Facts, o: &Observed<'_>) -> Condition {
    let redis_ok = matches!(o.redis, RedisState::Converged | RedisState::Unmanaged);
    if f.all_ready && redis_ok {
        c.make(
            READY,
            true,
            "AllShardsReady",
            format!(
                "{} shards with {} ready nodes each",
                f.desired_shards, f.ready
            ),
        )
    } else if !f.all_ready {
        c.make(
            READY,
            false,
            "NodesNotReady",
            format!(
                "{} of {} nodes ready in the least ready shard",
                f.ready, f.spec_replicas
            ),
        )
    } else {
        let why = match o.redis {
            RedisState::Converging(m) | RedisState::Error(m) => m.clone(),
            _ => "waiting for the Redis Cluster to form".into(),
        };
        c.make(READY, false, "TopologyNotReady", why)
    }
}

fn scaling_condition(c: &Conditions<'_>, f: &Facts, o: &Observed<'_>) -> Condition {
    let refused_scale_in = o.draining_shards > 0 && matches!(o.redis, RedisState::Unmanaged);
    if refused_scale_in {
        c.make(
            SCALING,
            true,
            "ScaleInRefused",
            format!(
                "{} shards beyond shard_count {} are kept: with \
                 --manage-topology=false the operator cannot drain their slots; \
                 restore shard_count, or drain them and delete their StatefulSets by hand",
                o.draining_shards, f.desired_shards
            ),
        )
    } else if f.resizing {
        c.make(
            SCALING,
            true,
            "Resizing",
            format!(
                "moving to {} shards of {} nodes",
                f.desired_shards, f.spec_replicas
            ),
        )
    } else if let RedisState::Converging(m) = o.redis {
        c.make(SCALING, true, "Resharding", m.clone())
    } else {
        c.make(SCALING, false, "Stable", "at the desired size".into())
    }
}

fn degraded_condition(c: &Conditions<'_>, f: &Facts, o: &Observed<'_>) -> Condition {
    match (o.redis, o.health.and_then(redis_fault)) {
        (RedisState::Error(m), _) => c.make(DEGRADED, true, "RedisError", m.clone()),
        (_, Some((reason, message))) => c.make(DEGRADED, true, reason, message),
        _ if f.some_down => c.make(
            DEGRADED,
            true,
            "NodesDown",
            "some nodes of a running shard are not ready".into(),
        ),
        _ => c.make(DEGRADED, false, "Healthy", "no fault observed".into()),
    }
}

fn metrics_condition(c: &Conditions<'_>, o: &Observed<'_>) -> Condition {
    match &o.utilization {
        Ok(r) => c.make(
            METRICS_AVAILABLE,
            true,
            "MetricsRead",
            format!(
                "average CPU {:.1}% of requests over {} of {} ready pods",
                r.percent, r.measured, r.ready
            ),
        ),
        Err(why) => c.make(
            METRICS_AVAILABLE,
            false,
            "MetricsUnavailable",
            why.to_string(),
        ),
    }
}

/// The `Degraded` reason and message for what Redis itself reports: a lost
/// shard waiting for a human, slots without a live owner, or nodes in
/// `cluster_state:fail`. `None` when none of these holds.
fn redis_fault(h: &Health) -> Option<(&'static str, String)> {
    let failing = (!h.failing.is_empty()).then(|| {
        let addrs: Vec<String> = h.failing.iter().map(|a| a.to_string()).collect();
        format!("cluster_state:fail on {}", addrs.join(", "))
    });
    if !h.awaiting_recovery.is_empty() {
        let lost: Vec<String> = h
            .awaiting_recovery
            .iter()
            .map(|l| format!("shard {} (slots {})", l.shard, fmt_ranges(&l.ranges)))
            .collect();
        return Some((
            "DataLossAwaitingDecision",
            format!(
                "the only copy of {} was lost; on_data_loss is Wait: set it to RecoverEmpty to serve these slots again, empty",
                lost.join(", ")
            ),
        ));
    }
    if !h.unowned.is_empty() {
        let count: u32 = h
            .unowned
            .iter()
            .flat_map(|u| &u.ranges)
            .map(|&(a, b)| u32::from(b) - u32::from(a) + 1)
            .sum();
        let parts: Vec<String> = h
            .unowned
            .iter()
            .map(|u| match u.shard {
                Some(s) => format!("shard {s} (slots {})", fmt_ranges(&u.ranges)),
                None => format!("slots {}", fmt_ranges(&u.ranges)),
            })
            .collect();
        let mut message = format!("{count} slots have no live owner: {}", parts.join(", "));
        if let Some(f) = failing {
            message.push_str("; ");
            message.push_str(&f);
        }
        return Some(("SlotsUnowned", message));
    }
    failing.map(|f| ("ClusterStateFail", f))
}

/// The `Updating` condition: True while pods are left to update, with the
/// step or the reason it waits; False once every pod is up to date.
pub fn updating(
    prev: Option<&Prior>,
    roll: &crate::roll::Decision,
    generation: Option<i64>,
    now: Time,
) -> Condition {
    use crate::roll::Step;
    let (status, reason) = match roll.step {
        Step::Done => (false, "UpToDate"),
        Step::Delete { .. } | Step::HandOver { .. } => (true, "RollingUpdate"),
        Step::Wait(_) => (true, "UpdateWaiting"),
        Step::Blocked(_) => (true, "UpdateBlocked"),
    };
    Condition {
        type_: UPDATING.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: roll.to_string(),
        observed_generation: generation,
        last_transition_time: prev.and_then(|p| p.since(UPDATING, status)).unwrap_or(now),
    }
}

/// The `ExpandingVolumes` condition: True while volumes are left to grow
/// or something refused it, False once all have the size.
pub fn expanding_volumes(
    prev: Option<&Prior>,
    s: &VolumeExpansionStatus,
    generation: Option<i64>,
    now: Time,
) -> Condition {
    let (status, reason) = if s.refused.is_some() {
        (true, "ExpansionRefused")
    } else if crate::volumes::is_done(s) {
        (false, "Expanded")
    } else {
        (true, "Expanding")
    };
    Condition {
        type_: EXPANDING_VOLUMES.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: s.message.clone(),
        observed_generation: generation,
        last_transition_time: prev
            .and_then(|p| p.since(EXPANDING_VOLUMES, status))
            .unwrap_or(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    fn shape(shards: i32, replicas: i32) -> ClusterShape {
        ClusterShape::of(&api::RedisClusterSpec {
            shard_count: shards,
            replicas,
            ..Default::default()
        })
        .unwrap()
    }

    fn obs<'a>(shards: &'a [ShardObservation], redis: &'a RedisState) -> Observed<'a> {
        Observed {
            generation: Some(3),
            shape: shape(2, 2),
            shards,
            draining_shards: 0,
            utilization: Ok(Reading {
                percent: 42.04,
                measured: 2,
                ready: 2,
            }),
            redis,
            health: None,
            selector: "redis.example.com/cluster=c".into(),
            last_scale_time: None,
            migration: None,
            auth: None,
        }
    }

    fn get<'a>(s: &'a RedisClusterStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    const UP: ShardObservation = ShardObservation {
        replicas: 2,
        ready: 2,
        target: 2,
    };

    #[test]
    fn all_up_and_converged_is_ready() {
        let built = build(None, &obs(&[UP, UP], &RedisState::Converged), t(1));
        assert_eq!(built.phase, Phase::Ready);
        let s = built.status;
        assert_eq!(s.phase.as_deref(), Some("Ready"));
        assert_eq!((s.replicas, s.ready_replicas), (2, 2));
        assert_eq!(s.current_cpu, Some(42.0));
        assert_eq!(get(&s, READY).status, "True");
        assert_eq!(get(&s, SCALING).status, "False");
        assert_eq!(get(&s, DEGRADED).status, "False");
        assert_eq!(get(&s, METRICS_AVAILABLE).status, "True");
        assert_eq!(
            get(&s, METRICS_AVAILABLE).message,
            "average CPU 42.0% of requests over 2 of 2 ready pods"
        );
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.selector.as_deref(), Some("redis.example.com/cluster=c"));
    }

    #[test]
    fn ready_replicas_is_the_least_ready_shard() {
        let half = ShardObservation {
            replicas: 2,
            ready: 1,
            target: 2,
        };
        let s = build(None, &obs(&[UP, half], &RedisState::Converged), t(1)).status;
        assert_eq!(s.ready_replicas, 1);
        assert_eq!(get(&s, READY).status, "False");
        assert_eq!(get(&s, DEGRADED).status, "True");
        assert_eq!(s.phase.as_deref(), Some("Degraded"));
    }

    /// 3 shards x 1 on emptyDir, the pod of shard 1 lost: its replacement
    /// runs (every StatefulSet is ready), but a third of the slots has no
    /// live owner and the other nodes say cluster_state:fail.
    fn lost_shard_health() -> Health {
        Health {
            unowned: vec![crate::topology::plan::UnownedSlots {
                owner: Some("a".repeat(40)),
                shard: Some(1),
                ranges: vec![(5462, 10922)],
            }],
            failing: vec![
                "10.0.0.1:6379".parse().unwrap(),
                "10.0.0.3:6379".parse().unwrap(),
            ],
            awaiting_recovery: Vec::new(),
        }
    }

    #[test]
    fn slots_without_a_live_owner_degrade_the_cluster() {
        let up = ShardObservation {
            replicas: 1,
            ready: 1,
            target: 1,
        };
        let health = lost_shard_health();
        let redis =
            RedisState::Converging("cannot balance slots: a slot owner is not reachable".into());
        let shards = [up, up, up];
        let mut o = obs(&shards, &redis);
        o.shape = shape(3, 1);
        o.health = Some(&health);
        let built = build(None, &o, t(1));
        let d = get(&built.status, DEGRADED);
        assert_eq!(d.status, "True");
        assert_eq!(d.reason, "SlotsUnowned");
        assert_eq!(
            d.message,
            "5461 slots have no live owner: shard 1 (slots 5462-10922); cluster_state:fail on 10.0.0.1:6379, 10.0.0.3:6379"
        );
        assert_eq!(built.phase, Phase::Degraded);
    }

    #[test]
    fn cluster_state_fail_alone_degrades_the_cluster() {
        let health = Health {
            failing: vec!["10.0.0.2:6379".parse().unwrap()],
            ..Health::default()
        };
        let redis = RedisState::Converging("settling".into());
        let mut o = obs(&[UP, UP], &redis);
        o.health = Some(&health);
        let d = build(None, &o, t(1)).status;
        let d = get(&d, DEGRADED);
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", "ClusterStateFail")
        );
        assert_eq!(d.message, "cluster_state:fail on 10.0.0.2:6379");
    }

    #[test]
    fn a_loss_waiting_for_a_human_says_so() {
        let mut health = lost_shard_health();
        health.awaiting_recovery = vec![crate::topology::LostShard {
            shard: 1,
            node_id: "a".repeat(40),
            ranges: vec![(5462, 10922)],
        }];
        let redis = RedisState::Converging("waiting".into());
        let mut o = obs(&[UP, UP], &redis);
        o.health = Some(&health);
        let s = build(None, &o, t(1)).status;
        let d = get(&s, DEGRADED);
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", "DataLossAwaitingDecision")
        );
        assert!(
            d.message.starts_with(
                "the only copy of shard 1 (slots 5462-10922) was lost; on_data_loss is Wait"
            ),
            "{}",
            d.message
        );
    }

    #[test]
    fn nothing_running_is_pending() {
        let s = build(None, &obs(&[], &RedisState::Unknown), t(1)).status;
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!((s.replicas, s.ready_replicas), (0, 0));
    }

    #[test]
    fn growing_or_resharding_is_scaling() {
        let growing = ShardObservation {
            replicas: 2,
            ready: 2,
            target: 3,
        };
        let shards = [growing, growing];
        let mut o = obs(&shards, &RedisState::Converged);
        o.shape = shape(2, 3);
        let s = build(None, &o, t(1)).status;
        assert_eq!(get(&s, SCALING).status, "True");
        assert_eq!(s.phase.as_deref(), Some("Scaling"));
        let migrating = RedisState::Converging("moving slots: 100 left".into());
        let s = build(None, &obs(&[UP, UP], &migrating), t(1)).status;
        assert_eq!(get(&s, SCALING).reason, "Resharding");
        assert_eq!(get(&s, READY).reason, "TopologyNotReady");
    }

    #[test]
    fn a_refused_scale_in_says_so() {
        let mut o = obs(&[UP, UP], &RedisState::Unmanaged);
        o.draining_shards = 1;
        let s = build(None, &o, t(1)).status;
        let c = get(&s, SCALING);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "ScaleInRefused")
        );
        assert!(
            c.message
                .starts_with("1 shards beyond shard_count 2 are kept"),
            "{}",
            c.message
        );
        // With topology management the same shard is being drained.
        o.redis = &RedisState::Converged;
        assert_eq!(
            get(&build(None, &o, t(1)).status, SCALING).reason,
            "Resizing"
        );
    }

    #[test]
    fn metrics_unavailable_is_reported() {
        let mut o = obs(&[UP, UP], &RedisState::Converged);
        o.utilization = Err(Unavailable::Missing(vec!["p0".into()]));
        let s = build(None, &o, t(1)).status;
        assert_eq!(s.current_cpu, None);
        let c = get(&s, METRICS_AVAILABLE);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "MetricsUnavailable")
        );
    }

    #[test]
    fn migration_totals_accumulate() {
        let first = migration_progress(None, "moving slots", 100, 60, 1000);
        assert_eq!(
            (first.slots_moved, first.keys_moved, first.slots_left),
            (60, 1000, 100)
        );
        let next = migration_progress(Some(&first), "converged", 0, 100, 500);
        assert_eq!(
            (next.slots_moved, next.keys_moved, next.slots_left),
            (160, 1500, 0)
        );
        assert_eq!(next.step, "converged");
    }

    #[test]
    fn unchanged_state_gives_an_equal_status() {
        let first = build(None, &obs(&[UP, UP], &RedisState::Converged), t(1)).status;
        let again = build(
            Some(&Prior::of(&first)),
            &obs(&[UP, UP], &RedisState::Converged),
            t(500),
        )
        .status;
        assert_eq!(first, again);
        assert_eq!(fingerprint(&first), fingerprint(&again));
        // A flip moves only that condition's transition time.
        let mut o = obs(&[UP, UP], &RedisState::Converged);
        o.utilization = Err(Unavailable::NoReadyPods);
        let flipped = build(Some(&Prior::of(&first)), &o, t(900)).status;
        assert_ne!(fingerprint(&first), fingerprint(&flipped));
        assert_eq!(
            get(&flipped, METRICS_AVAILABLE).last_transition_time,
            t(900)
        );
        assert_eq!(get(&flipped, READY).last_transition_time, t(1));
    }

    #[test]
    fn prior_keeps_what_a_new_status_takes_over() {
        let mut o = obs(&[UP, UP], &RedisState::Converged);
        o.last_scale_time = Some(t(7));
        o.migration = Some(migration_progress(None, "moving slots", 5, 1, 2));
        let s = build(None, &o, t(1)).status;
        let p = Prior::of(&s);
        assert_eq!(p.last_scale_time, Some(t(7)));
        assert_eq!(p.migration, s.migration);
        assert_eq!(p.is_true(METRICS_AVAILABLE), Some(true));
        assert_eq!(p.is_true(DEGRADED), Some(false));
        assert_eq!(p.is_true("Unknown"), None);
        assert_eq!(p.since(READY, true), Some(t(1)));
        assert_eq!(p.since(READY, false), None);
        assert_eq!(Prior::default().is_true(READY), None);
    }
}
