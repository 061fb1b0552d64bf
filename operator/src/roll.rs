//! Operator-driven updates: which pod to replace next, or why to wait.
//!
//! The StatefulSets use `updateStrategy: OnDelete`, so a pod-template change
//! (image, resources, an operator upgrade) replaces no pod by itself. Each
//! reconcile asks [`decide`] for the next step, from the pods (revision,
//! phase) and the Redis readings of the last topology observation. Pure, so
//! each rule is a table test.
//!
//! Rules, in order; the first that applies wins:
//! 1. nothing left to update: done;
//! 2. a pod is being deleted, not running, not Ready (its probe lags the
//!    Redis readings by up to a period), or did not answer: wait;
//! 3. a slot is uncovered, a node reports `cluster_state:fail`, a slot is
//!    open (migration) or the topology has not converged: wait;
//! 4. one shard at a time: a shard already partly updated goes first, else
//!    the lowest shard with an outdated pod;
//! 5. in that shard every replica must be synced (`master_link_status:up`,
//!    offset within [`MAX_LAG`] of the primary's) before any pod goes;
//! 6. outdated replicas go first, one per step;
//! 7. then the primary hands over to a synced, updated replica with a
//!    coordinated `CLUSTER FAILOVER` (the topology step carries it out),
//!    and is deleted as the outdated replica it has become;
//! 8. a shard without replicas: with persistent storage its primary is
//!    deleted (its data comes back from the volume); without, only when
//!    the spec opts in to losing the shard's data.

use std::fmt;

use crate::cache::{PodState, SetState};
use crate::topology::{NodeReading, Readings};

/// A replica whose offset is within this many bytes of its primary's
/// streams normally: the two readings are taken a moment apart, so under
/// writes exact equality is rare. A replica still loading or far behind is
/// not counted as synced. (The failover itself waits for the exact offset.)
pub const MAX_LAG: u64 = 1 << 20;

/// One Redis pod of the cluster, as the caches hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollPod {
    pub name: String,
    pub shard: u32,
    pub ordinal: u32,
    /// Its revision is its StatefulSet's update revision.
    pub updated: bool,
    /// Running, with an IP, and not being deleted.
    pub running: bool,
    /// Its readiness probe passes (it serves, or is a synced replica).
    pub ready: bool,
}

/// Everything a roll decision is made from.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub pods: &'a [RollPod],
    /// The last topology observation; `None` when no step ran.
    pub readings: Option<&'a Readings>,
    /// The topology step reached the desired shape, every replica synced.
    pub converged: bool,
    /// `spec.storage` is set: a deleted pod comes back with its data.
    pub persistent: bool,
    /// The spec accepts losing a shard's data when no copy of it exists.
    pub allow_data_loss: bool,
}

/// The next step of an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Every pod runs the current revision.
    Done,
    /// Delete this pod: its StatefulSet creates it again, updated.
    Delete {
        pod: String,
        shard: u32,
        primary: bool,
    },
    /// Coordinated failover in `shard` from the primary at ordinal `from`
    /// to the updated, synced replica at ordinal `to`.
    HandOver { shard: u32, from: u32, to: u32 },
    /// Waiting for the cluster to settle; resumes by itself.
    Wait(String),
    /// Cannot go on without a change to the spec or a human.
    Blocked(String),
}

/// A roll decision: the step and the pods still to update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub step: Step,
    pub left: u32,
    pub total: u32,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let left = format!("{} of {} pods left to update", self.left, self.total);
        match &self.step {
            Step::Done => write!(f, "all {} pods run the current revision", self.total),
            Step::Delete {
                pod,
                shard,
                primary,
            } => {
                let role = if *primary { "primary" } else { "replica" };
                write!(f, "shard {shard}: replacing {role} {pod}; {left}")
            }
            Step::HandOver { shard, from, to } => write!(
                f,
                "shard {shard}: failing over from ordinal {from} to updated replica ordinal {to}; {left}"
            ),
            Step::Wait(why) => write!(f, "waiting: {why}; {left}"),
            Step::Blocked(why) => write!(f, "blocked: {why}; {left}"),
        }
    }
}

/// Decides the next step of an update. See the module docs for the rules.
pub fn decide(i: &Inputs<'_>) -> Decision {
    let total = u32::try_from(i.pods.len()).unwrap_or(u32::MAX);
    let left = u32::try_from(i.pods.iter().filter(|p| !p.updated).count()).unwrap_or(u32::MAX);
    let decision = |step| Decision { step, left, total };
    if left == 0 {
        return decision(Step::Done);
    }
    let step = ready_to_roll(i).and_then(|r| next_in_shard(i, r));
    decision(match step {
        Ok(step) | Err(step) => step,
    })
}

/// Rules 2 to 4: the readings, once every pod and the cluster are settled,
/// and the shard to work on.
fn ready_to_roll<'a>(i: &Inputs<'a>) -> Result<(&'a Readings, u32), Step> {
    if let Some(p) = i.pods.iter().find(|p| !p.running) {
        return Err(Step::Wait(format!("pod {} is not running yet", p.name)));
    }
    if let Some(p) = i.pods.iter().find(|p| !p.ready) {
        return Err(Step::Wait(format!("pod {} is not Ready yet", p.name)));
    }
    let Some(r) = i.readings else {
        return Err(Step::Wait("no Redis observation yet".into()));
    };
    for p in i.pods {
        if reading(r, p).is_none_or(|n| !n.answered) {
            return Err(Step::Wait(format!("pod {} did not answer", p.name)));
        }
    }
    if r.uncovered_slots > 0 {
        return Err(Step::Wait(format!(
            "{} slots have no owner",
            r.uncovered_slots
        )));
    }
    if let Some(n) = r.nodes.iter().find(|n| n.answered && !n.state_ok) {
        return Err(Step::Wait(format!(
            "shard {} ordinal {} reports cluster_state:fail",
            n.shard, n.ordinal
        )));
    }
    if r.open_slots {
        return Err(Step::Wait("a slot migration is in progress".into()));
    }
    if !i.converged {
        return Err(Step::Wait(
            "the Redis Cluster topology is converging".into(),
        ));
    }
    let outdated = |s: u32| i.pods.iter().any(|p| p.shard == s && !p.updated);
    let partly = i
        .pods
        .iter()
        .filter(|p| p.updated && outdated(p.shard))
        .map(|p| p.shard)
        .min();
    let shard = partly
        .or_else(|| i.pods.iter().filter(|p| !p.updated).map(|p| p.shard).min())
        .ok_or(Step::Done)?;
    Ok((r, shard))
}

/// Rules 5 to 8, within `shard`.
fn next_in_shard(i: &Inputs<'_>, (r, shard): (&Readings, u32)) -> Result<Step, Step> {
    let pods: Vec<(&RollPod, &NodeReading)> = i
        .pods
        .iter()
        .filter(|p| p.shard == shard)
        .filter_map(|p| Some((p, reading(r, p)?)))
        .collect();
    let primaries: Vec<_> = pods
        .iter()
        .filter(|(_, n)| n.primary && n.slots > 0)
        .collect();
    let [(primary, pn)] = primaries[..] else {
        return Err(Step::Wait(format!(
            "shard {shard} has {} primaries holding slots, not one",
            primaries.len()
        )));
    };
    let replicas: Vec<_> = pods
        .iter()
        .filter(|(p, _)| p.name != primary.name)
        .collect();
    for (p, n) in &replicas {
        if n.primary || !n.link_up {
            return Err(Step::Wait(format!(
                "replica {} has not synced with its primary (master_link_status not up)",
                p.name
            )));
        }
        let lag = pn.offset.saturating_sub(n.offset);
        if lag > MAX_LAG {
            return Err(Step::Wait(format!(
                "replica {} is {lag} bytes behind its primary",
                p.name
            )));
        }
    }
    if let Some((p, _)) = replicas
        .iter()
        .filter(|(p, _)| !p.updated)
        .min_by_key(|(p, _)| p.ordinal)
    {
        return Ok(Step::Delete {
            pod: p.name.clone(),
            shard,
            primary: false,
        });
    }
    if primary.updated {
        // Only reached when the readings and the pods disagree.
        return Err(Step::Wait(format!("shard {shard} is being observed again")));
    }
    if let Some((to, _)) = replicas.iter().min_by_key(|(p, _)| p.ordinal) {
        return Ok(Step::HandOver {
            shard,
            from: primary.ordinal,
            to: to.ordinal,
        });
    }
    if i.persistent || i.allow_data_loss {
        return Ok(Step::Delete {
            pod: primary.name.clone(),
            shard,
            primary: true,
        });
    }
    Err(Step::Blocked(format!(
        "shard {shard} has no replica and no persistent storage: replacing {} would lose the shard's data; add replicas, or set spec.allow_data_loss_on_update to accept the loss",
        primary.name
    )))
}

/// The cluster's pods as the roll sees them: a pod is updated when its
/// revision is its StatefulSet's update revision (or that is not known yet).
pub fn pods_of(sets: &[SetState], pods: &[(String, PodState)]) -> Vec<RollPod> {
    pods.iter()
        .filter_map(|(name, p)| {
            let shard = p.ownership.shard?;
            let ordinal = name.rsplit('-').next()?.parse().ok()?;
            let target = sets
                .iter()
                .find(|s| s.ownership.shard == Some(shard))
                .and_then(|s| s.update_revision);
            Some(RollPod {
                name: name.clone(),
                shard,
                ordinal,
                updated: target.is_none() || p.revision == target,
                running: p.running && !p.deleting && p.ip.is_some(),
                ready: p.ready_since.is_some(),
            })
        })
        .collect()
}

fn reading<'a>(r: &'a Readings, p: &RollPod) -> Option<&'a NodeReading> {
    r.nodes
        .iter()
        .find(|n| n.shard == p.shard && n.ordinal == p.ordinal)
}

#[cfg(test)]
mod tests;
