//! A reconcile's world in memory, for the tests of `decide` and `act`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use api::{RedisCluster, RedisClusterSpec};
use k8s_openapi::jiff::Timestamp;

use super::decide::{ChildKind, Inputs, Intent, Live, Remembered, Rendered, Topology, decide};
use crate::autoscale;
use crate::cache::{Key, Keys, Ownership, SetState};
use crate::shape::ClusterShape;
use crate::status::Prior;
use crate::topology::{Report, TopologyError};

/// No NetworkPolicies and no exporter, as a bare installation.
static NO_PLATFORM: crate::desired::Platform = crate::desired::Platform {
    operator: None,
    exporter: None,
};
use crate::utilization::{Reading, Unavailable};

pub const INTERVAL: Duration = Duration::from_secs(30);
pub const GENERATION: i64 = 4;

/// The caches' live children: what was applied, by key.
#[derive(Default)]
pub struct FakeLive {
    pub keys: Keys,
    pub hashes: HashMap<(ChildKind, Key), u64>,
}

impl Live for FakeLive {
    fn key(&self, name: &str) -> Key {
        self.keys.of("team-a", name)
    }
    fn hash(&self, kind: ChildKind, key: Key) -> Option<u64> {
        self.hashes.get(&(kind, key)).copied()
    }
}

impl FakeLive {
    /// The caches after `intent` was carried out.
    pub fn apply(&mut self, intent: &Intent) {
        for c in intent.rendered.iter().flat_map(|r| &r.children) {
            self.hashes.insert((c.kind, c.key), c.hash);
        }
    }
}

pub fn rc(shards: i32, replicas: i32) -> RedisCluster {
    let mut rc = RedisCluster::new(
        "cache",
        RedisClusterSpec {
            shard_count: shards,
            replicas,
            ..Default::default()
        },
    );
    rc.metadata.namespace = Some("team-a".into());
    rc.metadata.uid = Some("uid-1".into());
    rc.metadata.generation = Some(GENERATION);
    rc
}

/// A StatefulSet of `shard` with `pods` pods, `ready` of them ready.
pub fn set(shard: u32, pods: i32, ready: i32) -> SetState {
    SetState {
        ownership: Ownership {
            cluster: Some("cache".into()),
            shard: Some(shard),
            spec_hash: None,
        },
        replicas: Some(pods),
        current: pods,
        ready,
        ..Default::default()
    }
}

pub fn converged() -> Report {
    Report {
        converged: true,
        message: "converged".into(),
        replicas_removable: true,
        ..Default::default()
    }
}

pub fn cpu(percent: f64) -> Result<Reading, Unavailable> {
    Ok(Reading {
        percent,
        measured: 2,
        ready: 2,
    })
}

pub fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).unwrap()
}

/// One reconcile's world.
pub struct World {
    pub rc: RedisCluster,
    pub sets: Vec<SetState>,
    pub report: Option<Report>,
    pub topology_error: Option<TopologyError>,
    pub unmanaged: bool,
    pub utilization: Result<Reading, Unavailable>,
    pub prior: Option<Prior>,
    pub rendered: Option<Rendered>,
    pub autoscale: autoscale::State,
    pub live: FakeLive,
    pub roll: Option<crate::roll::Decision>,
    pub roll_blocked: bool,
    pub claims: Option<Vec<crate::volumes::Claim>>,
    pub expansion_refused: Option<String>,
}

impl World {
    pub fn new(rc: RedisCluster, sets: Vec<SetState>) -> Self {
        World {
            rc,
            sets,
            report: Some(converged()),
            topology_error: None,
            unmanaged: false,
            utilization: cpu(70.0),
            prior: None,
            rendered: None,
            autoscale: autoscale::State::default(),
            live: FakeLive::default(),
            roll: None,
            roll_blocked: false,
            claims: None,
            expansion_refused: None,
        }
    }

    pub fn decide(&self) -> Intent {
        let current: BTreeMap<u32, i32> = self
            .sets
            .iter()
            .filter_map(|s| Some((s.ownership.shard?, s.replicas.unwrap_or(1))))
            .collect();
        let nothing_done = Report::default();
        let topology = match (&self.report, &self.topology_error) {
            _ if self.unmanaged => Topology::Unmanaged,
            // `report` is then what the failed step did before the error.
            (r, Some(e)) => Topology::Failed(e, r.as_ref().unwrap_or(&nothing_done)),
            (Some(r), None) => Topology::Stepped(r),
            (None, None) => Topology::Waiting,
        };
        let inputs = Inputs {
            rc: &self.rc,
            name: "cache",
            shape: ClusterShape::of(&self.rc.spec).unwrap(),
            sets: &self.sets,
            current: &current,
            topology,
            utilization: &self.utilization,
            prior: self.prior.as_ref(),
            range: api::Policy::default().autoscaling_range(&self.rc.spec),
            metrics_interval: INTERVAL,
            now: t(10_000),
            roll: self.roll.as_ref(),
            auth: None,
            platform: &NO_PLATFORM,
            claims: self.claims.as_deref(),
            expansion_refused: self.expansion_refused.as_deref(),
        };
        let mem = Remembered {
            rendered: self.rendered.as_ref(),
            autoscale: self.autoscale,
            roll_blocked: self.roll_blocked,
        };
        decide(&inputs, mem, &self.live)
    }

    /// The world after `intent` was carried out, the cluster unchanged.
    pub fn after(mut self, intent: &Intent) -> Self {
        self.live.apply(intent);
        if let Some(r) = &intent.rendered {
            self.rendered = Some(r.clone());
        }
        if let Some(s) = &intent.status {
            self.prior = Some(Prior::of(s));
        }
        self.autoscale = intent.autoscale;
        self
    }
}

/// A running 2x2 cluster, converged and at its target load, with the
/// children and status that its last reconcile wrote.
pub fn settled() -> World {
    let world = World::new(rc(2, 2), vec![set(0, 2, 2), set(1, 2, 2)]);
    let first = world.decide();
    world.after(&first)
}

/// 3 shards x 1 on emptyDir after the pod of shard 1 was replaced: every
/// StatefulSet is ready, but shard 1's slots have no live owner.
pub fn lost_shard() -> World {
    let world = World::new(rc(3, 1), vec![set(0, 1, 1), set(1, 1, 1), set(2, 1, 1)]);
    let first = world.decide();
    let mut world = world.after(&first);
    world.report = Some(Report {
        converged: false,
        message: "cannot balance slots: a slot owner is not reachable".into(),
        health: crate::topology::Health {
            unowned: vec![crate::topology::plan::UnownedSlots {
                owner: Some("a".repeat(40)),
                shard: Some(1),
                ranges: vec![(5462, 10922)],
            }],
            failing: vec!["10.0.0.1:6379".parse().unwrap()],
            awaiting_recovery: Vec::new(),
        },
        ..converged()
    });
    world
}
