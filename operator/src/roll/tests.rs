//! One table row per rule of the roll decision.

use super::*;

/// A 3-shard cluster of `n` nodes per shard: ordinal 0 primary, the rest
/// synced replicas, every pod outdated.
struct Fixture {
    pods: Vec<RollPod>,
    readings: Readings,
    converged: bool,
    persistent: bool,
    allow_data_loss: bool,
}

fn fixture(n: u32) -> Fixture {
    let mut pods = Vec::new();
    let mut nodes = Vec::new();
    for shard in 0..3 {
        for ordinal in 0..n {
            pods.push(RollPod {
                name: format!("c-shard-{shard}-{ordinal}"),
                shard,
                ordinal,
                updated: false,
                running: true,
                ready: true,
            });
            nodes.push(NodeReading {
                shard,
                ordinal,
                answered: true,
                primary: ordinal == 0,
                slots: if ordinal == 0 { 5461 } else { 0 },
                link_up: ordinal != 0,
                offset: 1000,
                state_ok: true,
            });
        }
    }
    Fixture {
        pods,
        readings: Readings {
            nodes,
            uncovered_slots: 0,
            open_slots: false,
        },
        converged: true,
        persistent: false,
        allow_data_loss: false,
    }
}

impl Fixture {
    fn decide(&self) -> Decision {
        decide(&Inputs {
            pods: &self.pods,
            readings: Some(&self.readings),
            converged: self.converged,
            persistent: self.persistent,
            allow_data_loss: self.allow_data_loss,
        })
    }
    fn pod(&mut self, shard: u32, ordinal: u32) -> &mut RollPod {
        let i = self
            .pods
            .iter()
            .position(|p| (p.shard, p.ordinal) == (shard, ordinal))
            .unwrap();
        &mut self.pods[i]
    }
    fn node(&mut self, shard: u32, ordinal: u32) -> &mut NodeReading {
        let i = self
            .readings
            .nodes
            .iter()
            .position(|n| (n.shard, n.ordinal) == (shard, ordinal))
            .unwrap();
        &mut self.readings.nodes[i]
    }
    /// Shard `s` failed over: `to` is the primary now.
    fn failed_over(&mut self, s: u32, from: u32, to: u32) {
        *self.node(s, from) = NodeReading {
            primary: false,
            slots: 0,
            link_up: true,
            ..self.node(s, from).clone()
        };
        *self.node(s, to) = NodeReading {
            primary: true,
            slots: 5461,
            link_up: false,
            ..self.node(s, to).clone()
        };
    }
    fn update_all(&mut self, shard: u32) {
        self.pods
            .iter_mut()
            .filter(|p| p.shard == shard)
            .for_each(|p| p.updated = true);
    }
}

fn delete(pod: &str, shard: u32, primary: bool) -> Step {
    Step::Delete {
        pod: pod.into(),
        shard,
        primary,
    }
}

fn waits(d: &Decision, why: &str) {
    match &d.step {
        Step::Wait(w) => assert!(w.contains(why), "{w:?} should say {why:?}"),
        other => panic!("expected a wait for {why:?}, got {other:?}"),
    }
}

#[test]
fn nothing_to_do_when_every_pod_is_updated() {
    let mut f = fixture(2);
    (0..3).for_each(|s| f.update_all(s));
    let d = f.decide();
    assert_eq!((d.step.clone(), d.left, d.total), (Step::Done, 0, 6));
    // Done even while unhealthy: there is nothing to roll.
    f.readings.uncovered_slots = 7;
    assert_eq!(f.decide().step, Step::Done);
}

#[test]
fn replicas_go_before_the_primary() {
    let f = fixture(3);
    let d = f.decide();
    assert_eq!(d.step, delete("c-shard-0-1", 0, false));
    assert_eq!((d.left, d.total), (9, 9));
    assert_eq!(
        d.to_string(),
        "shard 0: replacing replica c-shard-0-1; 9 of 9 pods left to update"
    );
}

#[test]
fn the_next_replica_waits_for_the_replacement_to_sync() {
    let mut f = fixture(3);
    f.pod(0, 1).updated = true;
    // The replacement joined but its full sync is still running.
    f.node(0, 1).link_up = false;
    waits(&f.decide(), "replica c-shard-0-1 has not synced");
    // Link up, but still far behind its primary.
    f.node(0, 1).link_up = true;
    f.node(0, 0).offset = 10 << 20;
    waits(&f.decide(), "replica c-shard-0-1 is");
    // Caught up (within the lag allowed between two readings).
    f.node(0, 1).offset = (10 << 20) - 500;
    f.node(0, 2).offset = 10 << 20;
    assert_eq!(f.decide().step, delete("c-shard-0-2", 0, false));
}

#[test]
fn a_replacement_that_joined_as_an_empty_primary_is_waited_for() {
    let mut f = fixture(2);
    f.pod(0, 1).updated = true;
    *f.node(0, 1) = NodeReading {
        primary: true,
        slots: 0,
        link_up: false,
        ..f.node(0, 1).clone()
    };
    waits(&f.decide(), "replica c-shard-0-1 has not synced");
}

#[test]
fn the_primary_fails_over_to_an_updated_synced_replica_before_it_is_deleted() {
    let mut f = fixture(3);
    f.pod(0, 1).updated = true;
    f.pod(0, 2).updated = true;
    let d = f.decide();
    assert_eq!(
        d.step,
        Step::HandOver {
            shard: 0,
            from: 0,
            to: 1
        }
    );
    assert_eq!(d.left, 7);
    // The failover happened: the old primary is now an outdated replica,
    // and goes once the new primary's other replicas are in sync.
    f.failed_over(0, 0, 1);
    assert_eq!(f.decide().step, delete("c-shard-0-0", 0, false));
    // Never while the old primary is not yet a synced replica.
    f.node(0, 0).link_up = false;
    waits(&f.decide(), "replica c-shard-0-0 has not synced");
}

#[test]
fn one_shard_at_a_time() {
    let mut f = fixture(2);
    // Shard 1 is half done (a previous leader started it): it goes first,
    // even though shard 0 is lower.
    f.pod(1, 1).updated = true;
    assert_eq!(
        f.decide().step,
        Step::HandOver {
            shard: 1,
            from: 0,
            to: 1
        }
    );
    // Shard 1 done: then shard 0.
    f.update_all(1);
    f.failed_over(1, 0, 1);
    f.node(1, 1).link_up = false;
    f.node(1, 0).link_up = true;
    assert_eq!(f.decide().step, delete("c-shard-0-1", 0, false));
    // A replica syncing in another shard holds every shard.
    f.node(1, 0).link_up = false;
    f.converged = false;
    waits(&f.decide(), "converging");
}

#[test]
fn nothing_is_deleted_while_the_cluster_is_unhealthy() {
    type Case = (&'static str, fn(&mut Fixture));
    let cases: [Case; 7] = [
        ("slots have no owner", |f| f.readings.uncovered_slots = 100),
        ("cluster_state:fail", |f| f.node(2, 0).state_ok = false),
        ("migration", |f| f.readings.open_slots = true),
        ("converging", |f| f.converged = false),
        ("did not answer", |f| f.node(2, 1).answered = false),
        ("not running", |f| f.pod(1, 1).running = false),
        // Synced in Redis, but its probe has not said so yet: the next pod
        // would make two shards short at once for Kubernetes and its PDBs.
        ("not Ready", |f| f.pod(0, 1).ready = false),
    ];
    for (why, break_it) in cases {
        let mut f = fixture(2);
        break_it(&mut f);
        waits(&f.decide(), why);
    }
    let f = fixture(2);
    let d = decide(&Inputs {
        readings: None,
        ..Inputs {
            pods: &f.pods,
            readings: Some(&f.readings),
            converged: true,
            persistent: false,
            allow_data_loss: false,
        }
    });
    waits(&d, "no Redis observation");
}

#[test]
fn a_shard_without_a_copy_is_refused_unless_storage_or_opt_in() {
    let mut f = fixture(1);
    let d = f.decide();
    match &d.step {
        Step::Blocked(why) => assert!(
            why.contains("shard 0 has no replica and no persistent storage")
                && why.contains("spec.allow_data_loss_on_update"),
            "{why}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    f.persistent = true;
    assert_eq!(f.decide().step, delete("c-shard-0-0", 0, true));
    f.persistent = false;
    f.allow_data_loss = true;
    assert_eq!(f.decide().step, delete("c-shard-0-0", 0, true));
}

#[test]
fn a_shard_whose_replicas_are_unsynced_is_not_handed_over() {
    let mut f = fixture(2);
    f.pod(0, 1).updated = true;
    f.node(0, 1).link_up = false;
    // Even opted in: a replica exists, so its sync is awaited.
    f.allow_data_loss = true;
    waits(&f.decide(), "has not synced");
}

#[test]
fn a_shard_with_two_slot_holders_is_waited_for() {
    let mut f = fixture(2);
    f.node(0, 1).primary = true;
    f.node(0, 1).slots = 3;
    waits(&f.decide(), "shard 0 has 2 primaries");
}
