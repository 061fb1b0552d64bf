//! Decision tables: each case is the observed world of one reconcile and
//! the exact intent expected of it.

use super::*;
use crate::controller::fixtures::*;

/// The parts of an intent a case states, all of them exactly.
#[derive(Debug, PartialEq)]
struct Summary {
    events: Vec<Note>,
    apply: Vec<(ChildKind, String)>,
    remembers: bool,
    drop_shards: Vec<u32>,
    created: Option<Note>,
    /// The phase of the status to write, if one is written.
    status: Option<String>,
    scale: Option<Step>,
    requeue: Duration,
}

fn summary(intent: &Intent) -> Summary {
    Summary {
        events: intent.events.clone(),
        apply: intent
            .apply
            .iter()
            .map(|c| (c.kind(), c.name.clone()))
            .collect(),
        remembers: intent.rendered.is_some(),
        drop_shards: intent.drop_shards.clone(),
        created: intent.created.clone(),
        status: intent.status.as_ref().and_then(|s| s.phase.clone()),
        scale: intent.scale,
        requeue: intent.requeue,
    }
}

fn names(kinds_names: &[(ChildKind, &str)]) -> Vec<(ChildKind, String)> {
    kinds_names
        .iter()
        .map(|(k, n)| (*k, n.to_string()))
        .collect()
}

use ChildKind::{ConfigMap as Cm, Pdb, Service as Svc, StatefulSet as Sts};

/// The children of a 2-shard cluster, in apply order.
fn two_shards() -> Vec<(ChildKind, String)> {
    names(&[
        (Cm, "cache-config"),
        (Svc, "cache-headless"),
        (Svc, "cache"),
        (Sts, "cache-shard-0"),
        (Sts, "cache-shard-1"),
        (Pdb, "cache-shard-0"),
        (Pdb, "cache-shard-1"),
    ])
}

fn quiet(requeue: Duration) -> Summary {
    Summary {
        events: vec![],
        apply: vec![],
        remembers: false,
        drop_shards: vec![],
        created: None,
        status: None,
        scale: None,
        requeue,
    }
}

#[test]
fn a_new_cluster_creates_every_child_and_announces_it() {
    let mut world = World::new(rc(2, 2), vec![]);
    world.report = None;
    world.utilization = Err(Unavailable::NoReadyPods);
    let intent = world.decide();
    assert_eq!(
        summary(&intent),
        Summary {
            apply: two_shards(),
            remembers: true,
            created: Some(Note::Created {
                statefulsets: 2,
                nodes: 2
            }),
            status: Some("Pending".into()),
            ..quiet(BUSY_REQUEUE)
        }
    );
    let sts = intent.apply.iter().find_map(|c| match &c.object {
        ChildObject::StatefulSet(s) => Some(s),
        _ => None,
    });
    let replicas = sts.and_then(|s| s.spec.as_ref()?.replicas);
    assert_eq!(replicas, Some(2));
}

#[test]
fn a_settled_cluster_is_a_no_op() {
    let world = settled();
    assert_eq!(summary(&world.decide()), quiet(INTERVAL));
}

#[test]
fn a_child_changed_behind_our_back_alone_is_applied_again() {
    let mut world = settled();
    let key = world.live.key("cache-shard-1");
    world.live.hashes.insert((Sts, key), 7);
    assert_eq!(
        summary(&world.decide()),
        Summary {
            apply: names(&[(Sts, "cache-shard-1")]),
            remembers: true,
            ..quiet(INTERVAL)
        }
    );
}

#[test]
fn a_spec_change_renders_again_and_applies_what_changed() {
    let mut world = settled();
    world.rc.metadata.generation = Some(GENERATION + 1);
    world.rc.spec.image = "redis:7.4".into();
    let intent = world.decide();
    assert_eq!(
        summary(&intent).apply,
        names(&[(Sts, "cache-shard-0"), (Sts, "cache-shard-1")])
    );
    // A new generation with the same children writes nothing.
    let mut world = settled();
    world.rc.metadata.generation = Some(GENERATION + 1);
    let s = summary(&world.decide());
    assert_eq!((s.apply, s.remembers), (vec![], true));
}

#[test]
fn load_above_the_threshold_scales_up_one_step_and_records_it() {
    let mut world = settled();
    world.utilization = cpu(90.0);
    let intent = world.decide();
    let step = Step {
        from: 2,
        to: 3,
        cpu: Some(90.0),
        threshold: 70.0,
    };
    assert_eq!(
        summary(&intent),
        Summary {
            status: Some("Ready".into()),
            scale: Some(step),
            ..quiet(INTERVAL)
        }
    );
    let status = intent.status.as_ref().unwrap();
    assert_eq!(status.last_scale_time, Some(Time(t(10_000))));
    assert_eq!(intent.autoscale.pending_generation, Some(GENERATION));
    // The next reconcile on the same (stale) copy takes no second step.
    let again = world.after(&intent).decide();
    assert_eq!(summary(&again), quiet(SETTLING_REQUEUE));
}

#[test]
fn drained_shards_are_dropped_once_the_topology_says_so() {
    let sets = vec![set(0, 2, 2), set(1, 2, 2), set(2, 2, 2)];
    let mut world = World::new(rc(2, 2), sets);
    world.report = Some(Report {
        converged: false,
        message: "moving slots".into(),
        ..Default::default()
    });
    let keep = summary(&world.decide());
    assert_eq!(keep.drop_shards, vec![] as Vec<u32>);
    assert_eq!(keep.status.as_deref(), Some("Scaling"));
    assert!(keep.apply.contains(&(Sts, "cache-shard-2".into())));

    world.report = Some(Report {
        removable_shards: vec![2],
        ..converged()
    });
    let drop = summary(&world.decide());
    assert_eq!(drop.drop_shards, [2]);
    assert_eq!(drop.apply, two_shards());
}

#[test]
fn without_topology_management_a_shard_scale_in_is_refused() {
    // The operator cannot know whether shard 2 still owns slots, so it
    // keeps it and says why; replicas still follow the spec.
    let sets = vec![set(0, 3, 3), set(1, 3, 3), set(2, 3, 3)];
    let mut world = World::new(rc(2, 2), sets);
    world.unmanaged = true;
    let intent = world.decide();
    assert_eq!(intent.drop_shards, [] as [u32; 0]);
    let replicas: Vec<_> = intent
        .apply
        .iter()
        .filter_map(|c| match &c.object {
            ChildObject::StatefulSet(s) => Some((c.name.as_str(), s.spec.as_ref()?.replicas?)),
            _ => None,
        })
        .collect();
    assert_eq!(
        replicas,
        [
            ("cache-shard-0", 2),
            ("cache-shard-1", 2),
            ("cache-shard-2", 3)
        ]
    );
    let status = intent.status.as_ref().unwrap();
    let scaling = status.conditions.iter().find(|c| c.type_ == "Scaling");
    assert_eq!(scaling.map(|c| c.reason.as_str()), Some("ScaleInRefused"));
    assert!(
        scaling.is_some_and(|c| c.message.contains("--manage-topology=false")),
        "{scaling:?}"
    );
}

#[test]
fn surplus_replicas_stay_until_the_topology_releases_them() {
    let mut world = World::new(rc(1, 2), vec![set(0, 3, 3)]);
    world.report = Some(Report {
        replicas_removable: false,
        ..converged()
    });
    let replicas_of = |intent: &Intent| {
        intent.apply.iter().find_map(|c| match &c.object {
            ChildObject::StatefulSet(s) => s.spec.as_ref()?.replicas,
            _ => None,
        })
    };
    assert_eq!(replicas_of(&world.decide()), Some(3));
    world.report = Some(converged());
    assert_eq!(replicas_of(&world.decide()), Some(2));
}

#[test]
fn lost_metrics_are_announced_once_and_hold_the_size() {
    let mut world = settled();
    world.utilization = Err(Unavailable::Stale("cache-shard-0-0".into()));
    let intent = world.decide();
    assert_eq!(
        summary(&intent),
        Summary {
            events: vec![Note::MetricsUnavailable(Unavailable::Stale(
                "cache-shard-0-0".into()
            ))],
            status: Some("Ready".into()),
            ..quiet(INTERVAL)
        }
    );
    let again = world.after(&intent).decide();
    assert_eq!(summary(&again), quiet(INTERVAL));
}

#[test]
fn a_topology_error_degrades_the_cluster_and_retries_soon() {
    let mut world = settled();
    world.topology_error = Some(TopologyError::Refused {
        addr: "10.0.0.1:6379".parse().unwrap(),
        command: "CLUSTER NODES".into(),
        message: "NOAUTH".into(),
    });
    let intent = world.decide();
    assert_eq!(
        summary(&intent),
        Summary {
            status: Some("Degraded".into()),
            ..quiet(BUSY_REQUEUE)
        }
    );
    let degraded = intent.status.as_ref().unwrap().conditions.iter();
    let reasons: Vec<_> = degraded.map(|c| c.reason.as_str()).collect();
    assert_eq!(
        reasons,
        ["TopologyNotReady", "Stable", "RedisError", "MetricsRead"]
    );
}

#[test]
fn topology_actions_are_counted_past_the_log_cap() {
    let mut world = settled();
    let logged: Vec<String> = (0..7).map(|i| format!("action {i}")).collect();
    world.report = Some(Report {
        actions_taken: logged.clone(),
        actions: 250,
        ..converged()
    });
    let intent = world.decide();
    assert_eq!(
        intent.events,
        [Note::TopologyChanged {
            shown: logged[..5].to_vec(),
            taken: 250
        }]
    );
}

#[test]
fn a_shard_without_a_live_owner_is_degraded() {
    let intent = lost_shard().decide();
    let status = intent.status.as_ref().expect("a status to write");
    assert_eq!(status.phase.as_deref(), Some("Degraded"));
    let degraded = status
        .conditions
        .iter()
        .find(|c| c.type_ == status::DEGRADED)
        .unwrap();
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "SlotsUnowned")
    );
    assert!(
        degraded.message.contains("shard 1 (slots 5462-10922)"),
        "{}",
        degraded.message
    );
}

/// The step forgot the lost node, then failed before the slots were
/// given to the new node: the loss happened, and is announced now (the
/// next step only sees uncovered slots and would not).
#[test]
fn a_loss_is_announced_even_when_its_step_failed_afterwards() {
    let mut world = lost_shard();
    let lost = crate::topology::LostShard {
        shard: 1,
        node_id: "a".repeat(40),
        ranges: vec![(5462, 10922)],
    };
    world.report = Some(Report {
        data_lost: vec![lost.clone()],
        ..Report::default()
    });
    world.topology_error = Some(TopologyError::Refused {
        addr: "10.0.0.2:6379".parse().unwrap(),
        command: "CLUSTER ADDSLOTSRANGE 5462 10922".into(),
        message: "NOPERM".into(),
    });
    let intent = world.decide();
    assert_eq!(intent.events, [Note::DataLost(lost)]);
}

#[test]
fn a_recovered_loss_is_announced_as_a_warning_naming_shard_and_slots() {
    let mut world = lost_shard();
    let lost = crate::topology::LostShard {
        shard: 1,
        node_id: "a".repeat(40),
        ranges: vec![(5462, 10922)],
    };
    world.report = Some(Report {
        data_lost: vec![lost.clone()],
        ..converged()
    });
    let intent = world.decide();
    assert_eq!(intent.events, [Note::DataLost(lost.clone())]);
    assert_eq!(
        crate::controller::events::render(&Note::DataLost(lost)),
        format!(
            "shard 1 lost its only copy (node {}): slots 5462-10922 serve again, empty; their keys are gone",
            "a".repeat(40)
        )
    );
}

fn roll(step: crate::roll::Step, left: u32) -> crate::roll::Decision {
    crate::roll::Decision {
        step,
        left,
        total: 4,
    }
}

fn updating(intent: &Intent) -> (String, String, String) {
    let c = intent
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == status::UPDATING))
        .expect("an Updating condition");
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

#[test]
fn a_roll_step_deletes_one_pod_tells_and_keeps_reconciling() {
    let mut world = settled();
    world.roll = Some(roll(
        crate::roll::Step::Delete {
            pod: "cache-shard-0-1".into(),
            shard: 0,
            primary: false,
        },
        4,
    ));
    let intent = world.decide();
    assert_eq!(intent.delete_pod.as_deref(), Some("cache-shard-0-1"));
    let text = "shard 0: replacing replica cache-shard-0-1; 4 of 4 pods left to update";
    assert_eq!(intent.events, [Note::Rolling(text.into())]);
    assert_eq!(intent.requeue, Duration::from_secs(3), "busy while rolling");
    assert_eq!(
        updating(&intent),
        ("True".into(), "RollingUpdate".into(), text.into())
    );
    assert!(!intent.roll_blocked);
}

#[test]
fn a_waiting_roll_deletes_nothing_and_says_why() {
    let mut world = settled();
    let why = "replica cache-shard-0-1 has not synced with its primary (master_link_status not up)";
    world.roll = Some(roll(crate::roll::Step::Wait(why.into()), 3));
    let intent = world.decide();
    assert_eq!(intent.delete_pod, None);
    assert_eq!(intent.events, []);
    let (status, reason, message) = updating(&intent);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "UpdateWaiting")
    );
    assert_eq!(
        message,
        format!("waiting: {why}; 3 of 4 pods left to update")
    );
}

#[test]
fn a_blocked_roll_warns_once_and_says_why_in_status() {
    let mut world = settled();
    let why = "shard 0 has no replica and no persistent storage";
    world.roll = Some(roll(crate::roll::Step::Blocked(why.into()), 4));
    let intent = world.decide();
    assert_eq!(intent.delete_pod, None);
    assert_eq!(intent.events, [Note::RollBlocked(why.into())]);
    assert!(intent.roll_blocked);
    assert_eq!(updating(&intent).1, "UpdateBlocked");
    // Announced already: not again, and no fast requeue for it.
    world.roll_blocked = true;
    let intent = world.decide();
    assert_eq!(intent.events, []);
    assert_eq!(intent.requeue, INTERVAL);
}

#[test]
fn a_finished_roll_is_up_to_date() {
    let mut world = settled();
    world.roll = Some(roll(crate::roll::Step::Done, 0));
    let intent = world.decide();
    assert_eq!(intent.delete_pod, None);
    assert_eq!(updating(&intent).1, "UpToDate");
    assert_eq!(intent.requeue, INTERVAL);
}

/// A settled 2x2 cluster with 1Gi volumes whose spec now asks for 2Gi.
fn growing_to_2gi() -> World {
    const GI: u64 = 1 << 30;
    let mut world = World::new(rc(2, 2), vec![set(0, 2, 2), set(1, 2, 2)]);
    world.rc.spec.storage = Some(api::StorageSpec {
        size: k8s_openapi::apimachinery::pkg::api::resource::Quantity("1Gi".into()),
        storage_class_name: None,
    });
    for s in &mut world.sets {
        s.claim_bytes = Some(GI);
    }
    let first = world.decide();
    let mut world = world.after(&first);
    world.rc.metadata.generation = Some(GENERATION + 1);
    world.rc.spec.storage.as_mut().unwrap().size.0 = "2Gi".into();
    world.claims = Some(
        ["data-cache-shard-0-0", "data-cache-shard-0-1"]
            .map(|name| crate::volumes::Claim {
                name: name.into(),
                requested: Some(GI),
                capacity: Some(GI),
                fs_pending: false,
            })
            .to_vec(),
    );
    world
}

fn statefulsets_applied(intent: &Intent) -> Vec<&str> {
    (intent.apply.iter())
        .filter(|c| c.kind() == Sts)
        .map(|c| c.name.as_str())
        .collect()
}

fn expanding(intent: &Intent) -> (String, String, String) {
    let c = intent
        .status
        .as_ref()
        .and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == status::EXPANDING_VOLUMES)
        })
        .expect("an ExpandingVolumes condition");
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

#[test]
fn a_larger_size_grows_the_claims_and_holds_the_statefulsets() {
    let world = growing_to_2gi();
    let intent = world.decide();
    assert_eq!(intent.grow_claims.len(), 2);
    assert_eq!(intent.replace_set, None, "claims first");
    assert!(
        !intent.apply.iter().any(|c| c.kind() == Sts),
        "the API refuses a new claim template: {:?}",
        summary(&intent).apply
    );
    assert_eq!(
        intent.events,
        vec![Note::Expanding("growing 2 claims to 2Gi".into())]
    );
    assert_eq!(intent.requeue, BUSY_REQUEUE);
    let (status, reason, _) = expanding(&intent);
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Expanding"));
    let v = intent.status.unwrap().volume_expansion.unwrap();
    assert_eq!(
        (v.size.as_str(), v.volumes, v.expanded, v.statefulsets_left),
        ("2Gi", 2, 0, 2)
    );
}

#[test]
fn grown_claims_let_one_statefulset_be_re_created_then_the_next() {
    let mut world = growing_to_2gi();
    for c in world.claims.as_mut().unwrap() {
        c.requested = Some(2 << 30);
    }
    let intent = world.decide();
    assert!(intent.grow_claims.is_empty());
    assert_eq!(intent.replace_set.as_deref(), Some("cache-shard-0"));
    assert_eq!(
        intent.events,
        vec![Note::Expanding(
            "re-creating StatefulSet cache-shard-0 with 2Gi claims; its pods keep running".into()
        )]
    );
    // Gone and created again at 2Gi: shard 0 is applied, shard 1 is next.
    world.sets[0].claim_bytes = Some(2 << 30);
    let intent = world.decide();
    assert_eq!(intent.replace_set.as_deref(), Some("cache-shard-1"));
    assert_eq!(statefulsets_applied(&intent), ["cache-shard-0"]);
    // Not while the topology is moving.
    world.report.as_mut().unwrap().converged = false;
    assert_eq!(world.decide().replace_set, None);
}

#[test]
fn a_shard_whose_statefulset_is_being_re_created_does_not_flap_the_status() {
    let mut world = growing_to_2gi();
    for c in world.claims.as_mut().unwrap() {
        c.requested = Some(2 << 30);
    }
    let intent = world.decide();
    assert!(intent.status.is_some());
    let mut world = world.after(&intent);
    world.sets.remove(0);
    let key = world.live.key("cache-shard-0");
    world.live.hashes.remove(&(Sts, key));
    let intent = world.decide();
    assert_eq!(
        intent.status, None,
        "shard 0 is not empty, its StatefulSet is being replaced"
    );
    assert_eq!(
        statefulsets_applied(&intent),
        ["cache-shard-0"],
        "created again at once"
    );
}

#[test]
fn a_refused_expansion_says_why_in_status() {
    let mut world = growing_to_2gi();
    let why = "claim data-cache-shard-0-0: only dynamically provisioned pvc can be resized";
    world.claims.as_mut().unwrap().truncate(1);
    world.expansion_refused = Some(why.into());
    let intent = world.decide();
    assert!(
        intent.events.is_empty(),
        "the refusal is in status, not an event per retry"
    );
    assert_eq!(intent.grow_claims.len(), 1, "tried again");
    let (status, reason, message) = expanding(&intent);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "ExpansionRefused")
    );
    assert_eq!(
        message,
        format!("the API refused to grow the claims: {why}")
    );
}
