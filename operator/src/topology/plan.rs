//! The planner: observed cluster + desired shape in, the next safe batch of
//! actions out. Pure (no I/O), so every topology we worry about — fresh
//! nodes, half-bootstrapped clusters, slots left open by a crash, failed-over
//! primaries, scale-out, scale-in — is a unit test, not a hope.
//!
//! Phases run in a fixed order and the first one with work wins, so the
//! cluster is only ever changed from a state that the earlier phases
//! certified (everyone knows everyone, no open slot, every slot covered...):
//!
//! 1. **join**: fresh desired nodes are MEET from the anchor; stale ones
//!    (slotless and empty, or replicas) are reset first. A node that holds
//!    slots or keys outside the cluster is never touched. Members whose pod
//!    IP changed are MEET at their new address.
//! 2. **settle**: every cluster node must know every other (strangers are
//!    introduced with a MEET rather than left to slow gossip).
//! 3. **lost nodes** (storage that dies with the pod only, and only when
//!    every member answered): a node no member answers to is gone with its
//!    data. Slotless ones are forgotten; a lost primary's best replica takes
//!    over (`FAILOVER TAKEOVER`, when Redis has not failed over already);
//!    a lost primary without a replica is forgotten everywhere and its slots
//!    go to its shard's new empty node (reported as data lost), unless the
//!    policy says to wait for a human. With persistent storage a lost node
//!    is waited for: it comes back with its id, maybe at a new address.
//! 4. **open slots**: finish interrupted moves towards the importing node
//!    (the source is authoritative until the move is closed).
//! 5. **uncovered slots**: ADDSLOTSRANGE, only for slots no node claims in any
//!    view (bootstrap is the case where none is claimed); a slot whose keys
//!    survive on some primary goes back to it.
//! 6. **replicate**: every other desired member of a shard replicates the
//!    shard's primary (ordinal 0 at bootstrap; afterwards whichever member
//!    holds the shard's slots). A replica of a vanished primary that still
//!    owns slots is left alone: it may hold the only copy.
//! 7. **failover**: a primary whose ordinal is being scaled away hands over
//!    to an in-sync replica (coordinated `CLUSTER FAILOVER`, no data loss),
//!    once every node sees that replica under its primary.
//! 8. **balance**: move the fewest slots so each desired primary holds 16384/S
//!    (±1, the extra slot staying where it already is); nodes of removed
//!    shards hold none. Only while every node has `cluster_state:ok` and
//!    every primary agrees on the slot map.
//! 9. **remove**: drained extra nodes are forgotten everywhere, then reset;
//!    failed, slotless nodes that are no member are forgotten.
//! 10. **converged** check.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;

use super::model::{ClusterInfo, NodeLine, ReplInfo, SLOTS, fmt_ranges, to_ranges};
use super::{Desired, Member};

/// What one reachable node reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    pub id: String,
    /// `CLUSTER NODES`: the node's view, including its own (`myself`) line.
    pub view: Vec<NodeLine>,
    pub info: ClusterInfo,
    pub dbsize: u64,
    pub repl: ReplInfo,
}

impl NodeState {
    pub fn myself(&self) -> Option<&NodeLine> {
        self.view.iter().find(|l| l.flags.myself)
    }
}

/// One member and what it said, or why it could not be asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeObs {
    pub member: Member,
    pub state: Result<NodeState, String>,
}

/// Everything the planner needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    pub nodes: Vec<NodeObs>,
    /// For slots that no node claims: which primaries still hold keys in
    /// them (`CLUSTER COUNTKEYSINSLOT`). Only filled when it matters.
    pub uncovered_keys: BTreeMap<u16, Vec<(String, u64)>>,
    /// Counting those keys failed on some primary: assigning uncovered
    /// slots must wait, or a slot could go to a node without its keys.
    pub keys_unknown: bool,
}

/// A node to send a command to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeRef {
    pub id: String,
    pub addr: SocketAddr,
}

/// One step of work. Every action is safe to repeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `CLUSTER MEET peer` sent to `on`.
    Meet { on: NodeRef, peer: SocketAddr },
    /// `CLUSTER RESET HARD`: only planned for nodes without slots that hold
    /// no keys or are replicas (whose data is a copy).
    Reset { node: NodeRef },
    /// `CLUSTER ADDSLOTSRANGE` for slots nobody claims.
    AddSlots {
        node: NodeRef,
        ranges: Vec<(u16, u16)>,
    },
    /// `CLUSTER REPLICATE primary` on `node`.
    Replicate { node: NodeRef, primary: NodeRef },
    /// Coordinated `CLUSTER FAILOVER` on a replica.
    Failover { replica: NodeRef },
    /// `CLUSTER FAILOVER TAKEOVER` on a replica whose primary is gone for
    /// good (its pod was replaced and its storage went with it): no vote,
    /// no primary to agree with.
    Takeover { replica: NodeRef },
    /// Move `slots` from `source` to `target`: IMPORTING on the target,
    /// MIGRATING on the source, MIGRATE every key, then SETSLOT NODE on the
    /// target, the source and `others` (the remaining primaries).
    MoveSlots {
        source: NodeRef,
        target: NodeRef,
        slots: Vec<u16>,
        others: Vec<NodeRef>,
    },
    /// `CLUSTER SETSLOT slot NODE owner` on each of `on`, in order.
    SetSlotOwner {
        slot: u16,
        owner: NodeRef,
        on: Vec<NodeRef>,
    },
    /// `CLUSTER SETSLOT slot STABLE`: clears a marker that cannot be finished.
    SetSlotStable { slot: u16, on: NodeRef },
    /// `CLUSTER FORGET id` on each of `on`.
    Forget { id: String, on: Vec<NodeRef> },
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Meet { on, peer } => write!(f, "MEET {peer} from {}", on.addr),
            Action::Reset { node } => write!(f, "RESET HARD {}", node.addr),
            Action::AddSlots { node, ranges } => {
                write!(f, "ADDSLOTSRANGE {} on {}", fmt_ranges(ranges), node.addr)
            }
            Action::Replicate { node, primary } => {
                write!(f, "REPLICATE {} -> primary {}", node.addr, primary.addr)
            }
            Action::Failover { replica } => write!(f, "FAILOVER to {}", replica.addr),
            Action::Takeover { replica } => write!(f, "FAILOVER TAKEOVER to {}", replica.addr),
            Action::MoveSlots {
                source,
                target,
                slots,
                ..
            } => write!(
                f,
                "MOVE slots {} {} -> {}",
                fmt_ranges(&to_ranges(slots)),
                source.addr,
                target.addr
            ),
            Action::SetSlotOwner { slot, owner, on } => {
                write!(
                    f,
                    "SETSLOT {slot} NODE {} on {} nodes",
                    owner.addr,
                    on.len()
                )
            }
            Action::SetSlotStable { slot, on } => write!(f, "SETSLOT {slot} STABLE on {}", on.addr),
            Action::Forget { id, on } => write!(f, "FORGET {id} on {} nodes", on.len()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Execute `actions`, then plan again.
    Act,
    /// Nothing to do but wait a moment (gossip, replica sync, failover).
    Settling,
    /// Waiting on something outside our control (a pod, an unreachable
    /// node, a state that needs a human). Retry on the next reconcile.
    Pending,
    Converged,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub outcome: Outcome,
    pub actions: Vec<Action>,
    pub message: String,
    pub slots_left_to_move: u32,
    pub removable_shards: Vec<u32>,
    pub replicas_removable: bool,
    pub health: Health,
    /// Lost shards whose slots this plan gives to an empty node.
    pub data_lost: Vec<LostShard>,
}

/// Slot ownership and cluster state as observed, for the `Degraded`
/// condition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Slots that no node claims, or whose owner is not a reachable primary.
    pub unowned: Vec<UnownedSlots>,
    /// Reachable nodes that serve (own slots, or replicate) and report
    /// `cluster_state:fail`.
    pub failing: Vec<SocketAddr>,
    /// Lost shards left alone: the policy says to wait for a human.
    pub awaiting_recovery: Vec<LostShard>,
}

/// Slots without a live owner, and what is known of where they belong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnownedSlots {
    /// The node id that claims them, if any.
    pub owner: Option<String>,
    /// The desired shard they belong to, when the cluster says (a member of
    /// the shard is, or replicates, the owner; or a shard holds no slots).
    pub shard: Option<u32>,
    pub ranges: Vec<(u16, u16)>,
}

/// A shard whose only copy of some slots was lost with its pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostShard {
    pub shard: u32,
    /// The lost node's id.
    pub node_id: String,
    pub ranges: Vec<(u16, u16)>,
}

/// How much one plan may ask for, and what the caller asks of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Slots moved (or repaired) per plan.
    pub max_slots: u32,
    /// Slots per MoveSlots action (one pipelined batch).
    pub slots_per_batch: u32,
    /// A primary to step down (a rolling update), as one being scaled away.
    pub hand_over: Option<HandOver>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_slots: 512,
            slots_per_batch: 64,
            hand_over: None,
        }
    }
}

/// The primary at `from` in `shard` hands over to its replica at `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandOver {
    pub shard: u32,
    pub from: u32,
    pub to: u32,
}

/// A reachable member that answered with a `myself` line.
struct Node<'a> {
    member: &'a Member,
    state: &'a NodeState,
    /// Its own (`myself`) line of `CLUSTER NODES`.
    myself: &'a NodeLine,
}

impl Node<'_> {
    fn node_ref(&self) -> NodeRef {
        NodeRef {
            id: self.state.id.clone(),
            addr: self.member.addr,
        }
    }
    /// Knows `id` as a real (non-handshake) node.
    fn knows(&self, id: &str) -> bool {
        self.state
            .view
            .iter()
            .any(|l| l.id == id && !l.flags.handshake)
    }
    fn is_master(&self) -> bool {
        self.myself.flags.master
    }
    fn slots(&self) -> u32 {
        self.myself.slot_count()
    }
}

/// The primary chosen for a desired shard.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ShardPrimary {
    Node(usize),
    /// The shard has no primary yet and its ordinal 0 is a replica of
    /// someone else: reset it so it can come back as an empty primary.
    ResetFirst(usize),
    Missing(String),
}

struct ObservedCluster<'a> {
    desired: &'a Desired,
    nodes: Vec<Node<'a>>,
    down: Vec<(&'a Member, String)>,
    anchor: usize,
    in_cluster: Vec<bool>,
    /// Consensus slot owner (highest config epoch claim over cluster views).
    owner: Vec<Option<&'a str>>,
    uncovered_keys: &'a BTreeMap<u16, Vec<(String, u64)>>,
    keys_unknown: bool,
}

/// Slots that no cluster node claims in any view.
pub fn uncovered_slots(obs: &Observation, d: &Desired) -> Vec<u16> {
    match ObservedCluster::new(obs, d) {
        Ok(observed) => (0..SLOTS)
            .filter(|&s| observed.owner[s as usize].is_none())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Plans the next batch. See the module docs for the phase order.
pub fn plan(obs: &Observation, d: &Desired, limits: &Limits) -> Plan {
    let observed = match ObservedCluster::new(obs, d) {
        Ok(observed) => observed,
        Err(msg) => {
            return Plan {
                outcome: Outcome::Pending,
                actions: Vec::new(),
                message: msg,
                slots_left_to_move: 0,
                removable_shards: Vec::new(),
                replicas_removable: false,
                health: Health::default(),
                data_lost: Vec::new(),
            };
        }
    };
    let primaries = observed.primaries();
    let moves = observed.balance_moves(&primaries);
    let loss = observed.losses();
    let mut p = Plan {
        outcome: Outcome::Pending,
        actions: Vec::new(),
        message: String::new(),
        slots_left_to_move: moves.as_ref().map_or(0, |m| m.len() as u32),
        removable_shards: observed.removable_shards(),
        replicas_removable: observed.replicas_removable(),
        health: Health {
            awaiting_recovery: loss.waiting.clone(),
            ..observed.health()
        },
        data_lost: Vec::new(),
    };
    let mut notes: Vec<String> = Vec::new();
    let phases: [Phase<'_>; 9] = [
        &|n| observed.join(n),
        &|_| observed.settle(),
        &|n| observed.lost(&loss, n),
        &|n| observed.open_slots(limits, n),
        &|n| observed.uncovered(&primaries, n),
        &|n| observed.replicate(&primaries, n),
        &|n| observed.failover(&primaries, limits.hand_over, n),
        &|n| observed.balance(&primaries, moves.as_deref(), limits, n),
        &|n| observed.remove(&primaries, n),
    ];
    for (k, phase) in phases.into_iter().enumerate() {
        if let Some(step) = phase(&mut notes) {
            if k == LOST_PHASE && step.outcome == Outcome::Act {
                p.data_lost = loss.recovered.clone();
            }
            p.outcome = step.outcome;
            p.actions = step.actions;
            p.message = with_notes(step.message, &notes);
            return p;
        }
    }
    let step = observed.converged(&primaries, &notes);
    p.outcome = step.outcome;
    p.message = with_notes(step.message, &notes);
    p
}

/// What to do about nodes whose pods are gone with their data.
#[derive(Debug, Default)]
struct Losses {
    actions: Vec<Action>,
    /// Shards whose only copy is lost and whose slots `actions` reassign.
    recovered: Vec<LostShard>,
    /// Shards whose only copy is lost, left alone by policy.
    waiting: Vec<LostShard>,
    notes: Vec<String>,
    forgotten: usize,
    takeovers: usize,
}

/// Index of [`ObservedCluster::lost`] among the phases.
const LOST_PHASE: usize = 2;

/// One planning phase: `None` hands over to the next one.
type Phase<'p> = &'p dyn Fn(&mut Vec<String>) -> Option<Step>;

struct Step {
    outcome: Outcome,
    actions: Vec<Action>,
    message: String,
}

impl Step {
    fn act(actions: Vec<Action>, message: impl Into<String>) -> Option<Step> {
        Some(Step {
            outcome: Outcome::Act,
            actions,
            message: message.into(),
        })
    }
    fn settling(message: impl Into<String>) -> Option<Step> {
        Some(Step {
            outcome: Outcome::Settling,
            actions: Vec::new(),
            message: message.into(),
        })
    }
    fn pending(message: impl Into<String>) -> Option<Step> {
        Some(Step {
            outcome: Outcome::Pending,
            actions: Vec::new(),
            message: message.into(),
        })
    }
}

fn with_notes(message: String, notes: &[String]) -> String {
    let mut notes: Vec<&String> = notes.iter().filter(|n| **n != message).collect();
    notes.dedup();
    if notes.is_empty() {
        message
    } else if message.is_empty() {
        notes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    } else {
        let rest: Vec<&str> = notes.iter().map(|s| s.as_str()).collect();
        format!("{message} (also: {})", rest.join("; "))
    }
}

impl<'a> ObservedCluster<'a> {
    fn new(obs: &'a Observation, d: &'a Desired) -> Result<Self, String> {
        let mut nodes = Vec::new();
        let mut down = Vec::new();
        for o in &obs.nodes {
            match &o.state {
                Ok(state) => match state.myself() {
                    Some(myself) => nodes.push(Node {
                        member: &o.member,
                        state,
                        myself,
                    }),
                    None => down.push((&o.member, "CLUSTER NODES has no myself line".into())),
                },
                Err(e) => down.push((&o.member, e.clone())),
            }
        }
        let desired = |m: &Member| m.shard < d.shards && m.ordinal < d.nodes_per_shard;
        // The anchor defines "the cluster": the slot holder that knows the
        // most nodes or, before any slot is assigned, the first desired node.
        let anchor = nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.is_master() && n.slots() > 0)
            .max_by_key(|(_, n)| {
                (
                    n.state.view.iter().filter(|l| !l.flags.handshake).count(),
                    desired(n.member),
                    Reverse((n.member.shard, n.member.ordinal)),
                )
            })
            .or_else(|| {
                nodes
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| desired(n.member))
                    .min_by_key(|(_, n)| (n.member.shard, n.member.ordinal))
            })
            .map(|(i, _)| i)
            .ok_or_else(|| {
                let why: Vec<String> = down
                    .iter()
                    .map(|(m, e)| format!("{}: {e}", m.addr))
                    .collect();
                format!(
                    "no desired Redis node is reachable yet{}",
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", why.join("; "))
                    }
                )
            })?;
        let a = &nodes[anchor];
        let in_cluster: Vec<bool> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| i == anchor || a.knows(&n.state.id))
            .collect();
        let mut observed = ObservedCluster {
            desired: d,
            nodes,
            down,
            anchor,
            in_cluster,
            owner: Vec::new(),
            uncovered_keys: &obs.uncovered_keys,
            keys_unknown: obs.keys_unknown,
        };
        observed.owner = consensus_owner(observed.cluster().map(|n| n.state));
        Ok(observed)
    }

    fn is_desired(&self, m: &Member) -> bool {
        m.shard < self.desired.shards && m.ordinal < self.desired.nodes_per_shard
    }

    fn cluster(&self) -> impl Iterator<Item = &Node<'a>> {
        self.nodes
            .iter()
            .zip(&self.in_cluster)
            .filter(|(_, c)| **c)
            .map(|(n, _)| n)
    }

    fn cluster_idx(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.in_cluster[i])
    }

    fn anchor(&self) -> &Node<'a> {
        &self.nodes[self.anchor]
    }

    /// A reachable cluster node by id.
    fn by_id(&self, id: &str) -> Option<usize> {
        self.cluster_idx().find(|&i| self.nodes[i].state.id == id)
    }

    fn masters_except(&self, skip: &[usize]) -> Vec<NodeRef> {
        self.cluster_idx()
            .filter(|i| !skip.contains(i) && self.nodes[*i].is_master())
            .map(|i| self.nodes[i].node_ref())
            .collect()
    }

    // ---- phase 1: join ----------------------------------------------------

    fn join(&self, notes: &mut Vec<String>) -> Option<Step> {
        let a = self.anchor();
        let mut actions = Vec::new();
        let mut handshaking = false;
        let mut blocked = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if self.in_cluster[i] {
                continue;
            }
            if n.slots() > 0 {
                // Slots outside the cluster: another cluster, or a split.
                // Never merge or reset it; a human must look.
                if self.is_desired(n.member) || n.member.shard < self.desired.shards {
                    blocked.push(format!(
                        "{} holds {} slots but is not part of the cluster seen from {}; refusing to touch it",
                        n.member.addr,
                        n.slots(),
                        a.member.addr
                    ));
                }
                continue;
            }
            if !self.is_desired(n.member) {
                continue; // extra members are never (re)joined
            }
            let in_handshake = a
                .state
                .view
                .iter()
                .any(|l| l.flags.handshake && l.addr == Some(n.member.addr));
            if in_handshake {
                handshaking = true;
            } else if n.knows(&a.state.id) {
                // It knows us but we do not know it (a half-done handshake, or
                // we forgot it): meeting again completes the handshake.
                actions.push(Action::Meet {
                    on: a.node_ref(),
                    peer: n.member.addr,
                });
            } else if n.state.view.len() == 1 {
                if n.state.dbsize > 0 {
                    blocked.push(format!(
                        "{} holds {} keys but belongs to no cluster; refusing to touch it",
                        n.member.addr, n.state.dbsize
                    ));
                } else {
                    actions.push(Action::Meet {
                        on: a.node_ref(),
                        peer: n.member.addr,
                    });
                }
            } else if n.myself.flags.replica || n.state.dbsize == 0 {
                // A stale config (it was removed, or knows another cluster):
                // no slots, nothing of its own to lose, so start it afresh.
                actions.push(Action::Reset { node: n.node_ref() });
            } else {
                blocked.push(format!(
                    "{} is a primary with {} keys outside the cluster; refusing to reset it",
                    n.member.addr, n.state.dbsize
                ));
            }
        }
        // Members whose address changed (pods restarted with new IPs): a MEET
        // to the new address makes the node that knows the old one update it.
        for a in self.cluster() {
            for b in self.cluster() {
                let stale = a.state.id != b.state.id
                    && a.state.view.iter().any(|l| {
                        l.id == b.state.id && !l.flags.handshake && l.addr != Some(b.member.addr)
                    })
                    && !a
                        .state
                        .view
                        .iter()
                        .any(|l| l.flags.handshake && l.addr == Some(b.member.addr));
                if stale {
                    actions.push(Action::Meet {
                        on: a.node_ref(),
                        peer: b.member.addr,
                    });
                }
            }
        }
        if !actions.is_empty() {
            notes.extend(blocked);
            return Step::act(actions, "joining nodes to the cluster");
        }
        if handshaking {
            notes.extend(blocked);
            return Step::settling("waiting for the cluster handshake with new nodes");
        }
        if !blocked.is_empty() {
            return Step::pending(blocked.join("; "));
        }
        None
    }

    // ---- phase 2: settle --------------------------------------------------

    /// Every cluster node must know every other before slots are touched.
    /// Gossip gets there on its own, but slowly (a few nodes per ping), so
    /// pairs that are still strangers are introduced with a direct MEET;
    /// both are already in the cluster, so this merges nothing new.
    fn settle(&self) -> Option<Step> {
        let mut actions = Vec::new();
        let mut waiting = None;
        for a in self.cluster() {
            for b in self.cluster() {
                if a.state.id == b.state.id || a.knows(&b.state.id) {
                    continue;
                }
                let in_handshake = a
                    .state
                    .view
                    .iter()
                    .any(|l| l.flags.handshake && l.addr == Some(b.member.addr));
                if in_handshake {
                    waiting.get_or_insert_with(|| {
                        format!(
                            "waiting for gossip: {} does not know {} yet",
                            a.member.addr, b.member.addr
                        )
                    });
                } else {
                    actions.push(Action::Meet {
                        on: a.node_ref(),
                        peer: b.member.addr,
                    });
                }
            }
        }
        if !actions.is_empty() {
            return Step::act(
                actions,
                "introducing nodes that gossip has not connected yet",
            );
        }
        waiting.and_then(Step::settling)
    }

    // ---- phase 3: lost nodes -----------------------------------------------

    /// Acts on nodes whose pods are gone with their data (see [`Losses`]).
    fn lost(&self, loss: &Losses, notes: &mut Vec<String>) -> Option<Step> {
        notes.extend(loss.notes.iter().cloned());
        if !loss.actions.is_empty() {
            let mut what = Vec::new();
            if loss.forgotten > 0 {
                what.push(format!("forgetting {} lost node(s)", loss.forgotten));
            }
            if loss.takeovers > 0 {
                what.push(format!(
                    "promoting the replica of {} lost primary(ies)",
                    loss.takeovers
                ));
            }
            what.extend(loss.recovered.iter().map(|l| {
                format!(
                    "shard {} lost its only copy: slots {} are served again, empty",
                    l.shard,
                    fmt_ranges(&l.ranges)
                )
            }));
            return Step::act(loss.actions.clone(), what.join("; "));
        }
        if !loss.waiting.is_empty() {
            let what: Vec<String> = loss
                .waiting
                .iter()
                .map(|l| format!("shard {} (slots {})", l.shard, fmt_ranges(&l.ranges)))
                .collect();
            return Step::pending(format!(
                "the only copy of {} was lost; on_data_loss is Wait, so nothing is reassigned until a human acts",
                what.join(", ")
            ));
        }
        None
    }

    /// Nodes the cluster knows that no member answers to. Only with storage
    /// that dies with the pod, and only when every member answered: such a
    /// node is then none of the pods, and its data went with its pod.
    /// Slotless ones are forgotten; a lost primary's best replica takes over;
    /// a lost primary without a replica has its slots given to the empty
    /// primary of a shard that holds none (or, by policy, waits).
    fn losses(&self) -> Losses {
        let mut out = Losses::default();
        if self.desired.loss.persistent || !self.down.is_empty() {
            return out;
        }
        let member_ids: BTreeSet<&str> = self.nodes.iter().map(|n| n.state.id.as_str()).collect();
        let mut empty = self.empty_primaries().into_iter();
        let anchor = self.anchor();
        let ghosts = anchor
            .state
            .view
            .iter()
            .filter(|l| !l.flags.handshake && !member_ids.contains(l.id.as_str()));
        for l in ghosts {
            let id = l.id.as_str();
            let owned: Vec<u16> = (0..SLOTS)
                .filter(|&s| self.owner[s as usize] == Some(id))
                .collect();
            if owned.is_empty() {
                out.actions.push(Action::Forget {
                    id: l.id.clone(),
                    on: self.forget_on(id),
                });
                out.forgotten += 1;
                continue;
            }
            // A node that still answers the cluster bus is not gone. One
            // whose address now answers with another id (`noaddr`: its pod's
            // IP went to a new pod) is not pinged any more, so it is never
            // flagged failing: it is gone as surely.
            if !(l.flags.pfail || l.flags.fail || l.flags.noaddr) {
                out.notes.push(format!(
                    "waiting for {} to see lost node {id} as failing",
                    anchor.member.addr
                ));
                continue;
            }
            let replica = self
                .cluster()
                .filter(|n| n.myself.flags.replica && n.myself.master_id.as_deref() == Some(id))
                .max_by_key(|n| {
                    (
                        n.state.repl.offset,
                        Reverse((n.member.shard, n.member.ordinal)),
                    )
                });
            if let Some(r) = replica {
                out.actions.push(Action::Takeover {
                    replica: r.node_ref(),
                });
                out.takeovers += 1;
                continue;
            }
            let Some(y) = empty.next() else {
                out.notes.push(format!(
                    "node {id} and the only copy of slots {} are lost; waiting for an empty node of its shard",
                    fmt_ranges(&to_ranges(&owned))
                ));
                continue;
            };
            let y = &self.nodes[y];
            let lost = LostShard {
                shard: y.member.shard,
                node_id: l.id.clone(),
                ranges: to_ranges(&owned),
            };
            if !self.desired.loss.recover_empty {
                out.waiting.push(lost);
                continue;
            }
            // Every view must drop the dead claim before anyone may add
            // these slots: FORGET removes the node and its slots.
            out.actions.push(Action::Forget {
                id: l.id.clone(),
                on: self.forget_on(id),
            });
            out.actions.push(Action::AddSlots {
                node: y.node_ref(),
                ranges: lost.ranges.clone(),
            });
            out.recovered.push(lost);
        }
        out
    }

    /// Every cluster node but the replicas of `id` (a replica cannot forget
    /// its own primary).
    fn forget_on(&self, id: &str) -> Vec<NodeRef> {
        self.cluster()
            .filter(|n| n.state.id != id && n.myself.master_id.as_deref() != Some(id))
            .map(|n| n.node_ref())
            .collect()
    }

    /// Desired shards in which no member holds slots, in shard order.
    fn holderless_shards(&self) -> Vec<u32> {
        (0..self.desired.shards)
            .filter(|&s| {
                !self
                    .cluster()
                    .any(|n| n.member.shard == s && n.is_master() && n.slots() > 0)
            })
            .collect()
    }

    /// For each shard that holds no slots, its empty primary (lowest
    /// ordinal): the node that can take a lost shard's slots.
    fn empty_primaries(&self) -> Vec<usize> {
        self.holderless_shards()
            .into_iter()
            .filter_map(|s| {
                self.cluster_idx()
                    .filter(|&i| {
                        let n = &self.nodes[i];
                        n.member.shard == s
                            && self.is_desired(n.member)
                            && n.is_master()
                            && n.slots() == 0
                            && n.state.dbsize == 0
                    })
                    .min_by_key(|&i| self.nodes[i].member.ordinal)
            })
            .collect()
    }

    /// Slots without a live owner, and nodes whose cluster is failing. Empty
    /// before any slot is assigned: a cluster being formed is not degraded.
    fn health(&self) -> Health {
        if self.owner.iter().all(Option::is_none) {
            return Health::default();
        }
        let live = |id: &str| self.by_id(id).is_some_and(|i| self.nodes[i].is_master());
        let mut groups: BTreeMap<Option<&str>, Vec<u16>> = BTreeMap::new();
        for (s, o) in self.owner.iter().enumerate() {
            if o.is_none_or(|id| !live(id)) {
                groups.entry(*o).or_default().push(s as u16);
            }
        }
        let mut spare = self.holderless_shards().into_iter();
        let unowned = groups
            .into_iter()
            .map(|(owner, slots)| UnownedSlots {
                shard: owner
                    .and_then(|id| self.shard_of(id))
                    .or_else(|| spare.next()),
                owner: owner.map(str::to_owned),
                ranges: to_ranges(&slots),
            })
            .collect();
        let failing = self
            .cluster()
            .filter(|n| n.slots() > 0 || n.myself.flags.replica)
            .filter(|n| !n.state.info.state_ok)
            .map(|n| n.member.addr)
            .collect();
        Health {
            unowned,
            failing,
            awaiting_recovery: Vec::new(),
        }
    }

    /// The shard of node `id`: a down member at its address, or the shard of
    /// a member replicating it.
    fn shard_of(&self, id: &str) -> Option<u32> {
        let line = self.anchor().state.view.iter().find(|l| l.id == id);
        let at_addr = line.and_then(|l| {
            self.down
                .iter()
                .find(|(m, _)| Some(m.addr) == l.addr)
                .map(|(m, _)| m.shard)
        });
        at_addr.or_else(|| {
            self.cluster()
                .find(|n| n.myself.master_id.as_deref() == Some(id))
                .map(|n| n.member.shard)
        })
    }

    // ---- phase 3: open slots ----------------------------------------------

    fn open_slots(&self, limits: &Limits, notes: &mut Vec<String>) -> Option<Step> {
        let mut importing: BTreeMap<u16, Vec<(usize, &str)>> = BTreeMap::new();
        let mut migrating: BTreeMap<u16, Vec<(usize, &str)>> = BTreeMap::new();
        for i in self.cluster_idx() {
            let myself = self.nodes[i].myself;
            for (s, from) in &myself.importing {
                importing.entry(*s).or_default().push((i, from));
            }
            for (s, to) in &myself.migrating {
                migrating.entry(*s).or_default().push((i, to));
            }
        }
        let open: BTreeSet<u16> = importing.keys().chain(migrating.keys()).copied().collect();
        if open.is_empty() {
            return None;
        }
        let master = |id: &str| self.by_id(id).filter(|&i| self.nodes[i].is_master());
        let mut moves: Vec<(usize, usize, u16)> = Vec::new();
        let mut actions = Vec::new();
        let mut stuck = Vec::new();
        for &s in open.iter().take(limits.max_slots.max(1) as usize) {
            let owner = self.owner[s as usize];
            let imp = importing.get(&s).map(Vec::as_slice).unwrap_or(&[]);
            let mig = migrating.get(&s).map(Vec::as_slice).unwrap_or(&[]);
            match imp {
                // The standard repair: finish the move into the importing node.
                [(t, _)] => {
                    let t = *t;
                    let tn = &self.nodes[t];
                    match owner {
                        Some(o) if o == tn.state.id => {
                            let mut on = vec![tn.node_ref()];
                            on.extend(self.masters_except(&[t]));
                            actions.push(Action::SetSlotOwner {
                                slot: s,
                                owner: tn.node_ref(),
                                on,
                            });
                        }
                        Some(o) => match master(o) {
                            Some(src) => moves.push((src, t, s)),
                            None => stuck.push(format!(
                                "slot {s}: its owner {o} is not reachable to finish the move"
                            )),
                        },
                        None => {
                            // Nobody else claims it: the importing node keeps it.
                            let mut on = vec![tn.node_ref()];
                            on.extend(self.masters_except(&[t]));
                            actions.push(Action::SetSlotOwner {
                                slot: s,
                                owner: tn.node_ref(),
                                on,
                            });
                        }
                    }
                }
                [] => {
                    for &(n, to) in mig {
                        let nn = &self.nodes[n];
                        if owner == Some(nn.state.id.as_str()) {
                            // Source still owns it, target lost its marker:
                            // move forward again (keys already there are
                            // overwritten by the source's authoritative copy).
                            if let Some(t) = master(to) {
                                moves.push((n, t, s));
                            } else if !self.anchor().state.view.iter().any(|l| l.id == to) {
                                // The target left the cluster: nothing to finish.
                                actions.push(Action::SetSlotStable {
                                    slot: s,
                                    on: nn.node_ref(),
                                });
                            } else {
                                stuck.push(format!(
                                    "slot {s}: migration target {to} is not reachable"
                                ));
                            }
                        } else {
                            // The move was closed on the target but not here:
                            // send whatever keys are left to the owner and close.
                            match owner.and_then(master) {
                                Some(o) => moves.push((n, o, s)),
                                None => stuck
                                    .push(format!("slot {s}: owner of the slot is not reachable")),
                            }
                        }
                    }
                }
                _ => stuck.push(format!(
                    "slot {s} is importing on {} nodes; needs manual repair",
                    imp.len()
                )),
            }
        }
        let repaired = moves.len() + actions.len();
        actions.extend(self.group_moves(&moves, limits));
        if !actions.is_empty() {
            notes.extend(stuck);
            return Step::act(
                actions,
                format!("repairing {repaired} open slot(s) left by an interrupted move"),
            );
        }
        Step::pending(stuck.join("; "))
    }

    /// Groups (source, target, slot) moves into batches.
    fn group_moves(&self, moves: &[(usize, usize, u16)], limits: &Limits) -> Vec<Action> {
        let mut groups: Vec<((usize, usize), Vec<u16>)> = Vec::new();
        for &(src, tgt, s) in moves {
            match groups.last_mut() {
                Some((k, v))
                    if *k == (src, tgt) && v.len() < limits.slots_per_batch.max(1) as usize =>
                {
                    v.push(s)
                }
                _ => groups.push(((src, tgt), vec![s])),
            }
        }
        groups
            .into_iter()
            .map(|((src, tgt), slots)| Action::MoveSlots {
                source: self.nodes[src].node_ref(),
                target: self.nodes[tgt].node_ref(),
                slots,
                others: self.masters_except(&[src, tgt]),
            })
            .collect()
    }

    // ---- primaries --------------------------------------------------------

    /// The primary of each desired shard: the member holding its slots, else
    /// (a shard that holds none yet) ordinal 0.
    fn primaries(&self) -> Vec<ShardPrimary> {
        (0..self.desired.shards)
            .map(|s| {
                let members: Vec<usize> = self
                    .cluster_idx()
                    .filter(|&i| self.nodes[i].member.shard == s)
                    .collect();
                let holder = members
                    .iter()
                    .copied()
                    .filter(|&i| self.nodes[i].is_master() && self.nodes[i].slots() > 0)
                    .max_by_key(|&i| (self.nodes[i].slots(), Reverse(self.nodes[i].member.ordinal)));
                if let Some(h) = holder {
                    return ShardPrimary::Node(h);
                }
                // Its primary is gone but still owns slots: Redis promotes the
                // replica; until then the replica may hold the only copy.
                if let Some(&i) = members.iter().find(|&&i| self.sole_copy(&self.nodes[i])) {
                    return ShardPrimary::Missing(format!(
                        "the primary of shard {s} is not reachable; waiting for replica {} to take over",
                        self.nodes[i].member.addr
                    ));
                }
                // A down member whose slots others still list: Redis itself
                // fails over; we must not hand its slots elsewhere.
                for (m, _) in self.down.iter().filter(|(m, _)| m.shard == s) {
                    let holds =
                        self.anchor().state.view.iter().any(|l| {
                            l.addr == Some(m.addr) && l.flags.master && l.slot_count() > 0
                        });
                    if holds {
                        return ShardPrimary::Missing(format!(
                            "the primary of shard {s} ({}) is not reachable",
                            m.addr
                        ));
                    }
                }
                match members
                    .iter()
                    .copied()
                    .find(|&i| self.nodes[i].member.ordinal == 0)
                {
                    Some(i) if self.nodes[i].is_master() => ShardPrimary::Node(i),
                    Some(i) => ShardPrimary::ResetFirst(i),
                    None => ShardPrimary::Missing(format!(
                        "waiting for shard {s} ordinal 0 to join before it gets slots"
                    )),
                }
            })
            .collect()
    }

    // ---- phase 4: uncovered slots -----------------------------------------

    fn uncovered(&self, primaries: &[ShardPrimary], notes: &mut Vec<String>) -> Option<Step> {
        let uncovered: Vec<u16> = (0..SLOTS)
            .filter(|&s| self.owner[s as usize].is_none())
            .collect();
        if uncovered.is_empty() {
            return None;
        }
        if self.keys_unknown {
            return Step::pending(format!(
                "{} slots are unassigned and their keys could not be counted on every primary",
                uncovered.len()
            ));
        }
        let mut prim_idx = Vec::new();
        for p in primaries {
            match p {
                ShardPrimary::Node(i) => prim_idx.push(*i),
                ShardPrimary::ResetFirst(i) => {
                    return Step::act(
                        vec![Action::Reset {
                            node: self.nodes[*i].node_ref(),
                        }],
                        format!(
                            "{} slots are unassigned; resetting replica {} so it can become its shard's primary",
                            uncovered.len(),
                            self.nodes[*i].member.addr
                        ),
                    );
                }
                ShardPrimary::Missing(msg) => {
                    notes.push(msg.clone());
                    return Step::pending(format!(
                        "{} slots are unassigned; waiting for every shard's primary",
                        uncovered.len()
                    ));
                }
            }
        }
        let mut assign: BTreeMap<usize, Vec<u16>> = BTreeMap::new();
        let mut rest = Vec::new();
        for &s in &uncovered {
            // A slot that still has keys somewhere goes to the primary holding
            // the most of them, so nothing is orphaned.
            let holder = self.uncovered_keys.get(&s).and_then(|v| {
                v.iter()
                    .filter(|(_, c)| *c > 0)
                    .filter_map(|(id, c)| {
                        self.by_id(id)
                            .filter(|&i| self.nodes[i].is_master())
                            .map(|i| (c, i))
                    })
                    .max()
                    .map(|(_, i)| i)
            });
            match holder {
                Some(i) => assign.entry(i).or_default().push(s),
                None => rest.push(s),
            }
        }
        // The rest fills each primary up to its balanced share, in shard order.
        let counts: Vec<u32> = prim_idx
            .iter()
            .map(|&i| {
                self.owned_by(&self.nodes[i].state.id)
                    + assign.get(&i).map_or(0, |v| v.len() as u32)
            })
            .collect();
        let targets = targets(&counts);
        let mut it = rest.into_iter();
        for (k, &i) in prim_idx.iter().enumerate() {
            let want = targets[k].saturating_sub(counts[k]);
            let got: Vec<u16> = it.by_ref().take(want as usize).collect();
            if !got.is_empty() {
                assign.entry(i).or_default().extend(got);
            }
        }
        // More uncovered than deficits cannot happen (shares sum to 16384),
        // but never leave a slot behind: the first primary takes it.
        let left: Vec<u16> = it.collect();
        if !left.is_empty() {
            assign.entry(prim_idx[0]).or_default().extend(left);
        }
        let actions = assign
            .into_iter()
            .map(|(i, mut slots)| {
                slots.sort_unstable();
                Action::AddSlots {
                    node: self.nodes[i].node_ref(),
                    ranges: to_ranges(&slots),
                }
            })
            .collect();
        Step::act(
            actions,
            format!("assigning {} unassigned slots", uncovered.len()),
        )
    }

    /// A replica whose primary owns slots but is not a reachable cluster
    /// node: it may hold the only copy of those slots' keys, so it is never
    /// re-pointed, reset or forgotten.
    fn sole_copy(&self, n: &Node<'_>) -> bool {
        let Some(m) = n
            .myself
            .master_id
            .as_deref()
            .filter(|_| n.myself.flags.replica)
        else {
            return false;
        };
        let healthy = self.by_id(m).is_some_and(|i| self.nodes[i].is_master());
        !healthy && self.owner.contains(&Some(m))
    }

    fn owned_by(&self, id: &str) -> u32 {
        self.owner.iter().filter(|o| **o == Some(id)).count() as u32
    }

    // ---- phase 5: replicate -----------------------------------------------

    fn replicate(&self, primaries: &[ShardPrimary], notes: &mut Vec<String>) -> Option<Step> {
        let mut actions = Vec::new();
        for p in primaries {
            let p = match p {
                ShardPrimary::Node(p) => *p,
                ShardPrimary::ResetFirst(i) => {
                    actions.push(Action::Reset {
                        node: self.nodes[*i].node_ref(),
                    });
                    continue;
                }
                ShardPrimary::Missing(msg) => {
                    notes.push(msg.clone());
                    continue;
                }
            };
            let pn = &self.nodes[p];
            for i in self.cluster_idx() {
                let n = &self.nodes[i];
                if i == p || n.member.shard != pn.member.shard || !self.is_desired(n.member) {
                    continue;
                }
                if n.is_master() {
                    if n.slots() > 0 {
                        continue; // drained by the balance phase first
                    }
                    if n.state.dbsize > 0 {
                        notes.push(format!(
                            "{} is a primary without slots that holds {} keys; not turning it into a replica",
                            n.member.addr, n.state.dbsize
                        ));
                        continue;
                    }
                } else if n.myself.master_id.as_deref() == Some(pn.state.id.as_str()) {
                    continue;
                } else if self.sole_copy(n) {
                    notes.push(format!(
                        "{} replicates an unreachable primary that owns slots; not moving it",
                        n.member.addr
                    ));
                    continue;
                }
                actions.push(Action::Replicate {
                    node: n.node_ref(),
                    primary: pn.node_ref(),
                });
            }
        }
        if actions.is_empty() {
            None
        } else {
            Step::act(actions, "attaching replicas to their shard's primary")
        }
    }

    // ---- phase 6: failover ------------------------------------------------

    fn failover(
        &self,
        primaries: &[ShardPrimary],
        hand_over: Option<HandOver>,
        notes: &mut Vec<String>,
    ) -> Option<Step> {
        let mut actions = Vec::new();
        let mut waiting = Vec::new();
        for p in primaries {
            let ShardPrimary::Node(p) = *p else { continue };
            let pn = &self.nodes[p];
            // A rolling update names the primary to step down and its heir.
            let heir = hand_over
                .filter(|h| (h.shard, h.from) == (pn.member.shard, pn.member.ordinal))
                .map(|h| h.to);
            if pn.member.ordinal < self.desired.nodes_per_shard && heir.is_none() {
                continue;
            }
            let candidate = self
                .cluster()
                .filter(|n| {
                    n.member.shard == pn.member.shard
                        && n.member.ordinal < self.desired.nodes_per_shard
                        && heir.is_none_or(|o| n.member.ordinal == o)
                        && n.myself.flags.replica
                        && n.myself.master_id.as_deref() == Some(pn.state.id.as_str())
                        && n.state.repl.link_up
                        && n.state.view.iter().any(|l| {
                            l.id == pn.state.id
                                && l.link_connected
                                && !l.flags.pfail
                                && !l.flags.fail
                        })
                })
                .min_by_key(|n| n.member.ordinal);
            match candidate {
                Some(c) => actions.push(Action::Failover { replica: c.node_ref() }),
                None => waiting.push(format!(
                    "shard {}: primary {} (ordinal {}) must hand over, waiting for an in-sync replica with ordinal < {}",
                    pn.member.shard, pn.member.addr, pn.member.ordinal, self.desired.nodes_per_shard
                )),
            }
        }
        if !actions.is_empty() {
            if let Some(n) = self.cluster().find(|n| !n.state.info.state_ok) {
                return Step::settling(format!(
                    "waiting for cluster_state:ok on {} before a failover",
                    n.member.addr
                ));
            }
            // The election needs the votes of the other primaries, and a
            // primary with a stale view (say, of a failover a moment ago)
            // refuses its vote; a failed election then blocks the replica
            // for 4 x cluster-node-timeout. So wait until every node sees the
            // replica under its primary.
            for a in &actions {
                let Action::Failover { replica } = a else {
                    continue;
                };
                let Some(primary) = self
                    .by_id(&replica.id)
                    .and_then(|i| self.nodes[i].myself.master_id.as_deref())
                else {
                    continue;
                };
                if let Some(n) = self
                    .cluster()
                    .find(|n| !sees_replica_of(n.state, &replica.id, primary))
                {
                    return Step::settling(format!(
                        "waiting for {} to see {} as a replica before the failover",
                        n.member.addr, replica.addr
                    ));
                }
            }
            notes.extend(waiting);
            return Step::act(actions, "failing over primaries that are being scaled away");
        }
        if !waiting.is_empty() {
            return Step::settling(waiting.join("; "));
        }
        None
    }

    // ---- phase 7: balance -------------------------------------------------

    /// The slot moves that reach the balanced layout, in execution order:
    /// `(source node index, target node index, slot)`. `None` while some
    /// desired shard has no usable primary, or a slot owner is unreachable.
    fn balance_moves(&self, primaries: &[ShardPrimary]) -> Option<Vec<(usize, usize, u16)>> {
        let prim_idx: Vec<usize> = primaries
            .iter()
            .map(|p| match p {
                ShardPrimary::Node(i) => Some(*i),
                _ => None,
            })
            .collect::<Option<_>>()?;
        let mut held: HashMap<&str, Vec<u16>> = HashMap::new();
        for (s, o) in self.owner.iter().enumerate() {
            if let Some(o) = o {
                held.entry(o).or_default().push(s as u16);
            }
        }
        let counts: Vec<u32> = prim_idx
            .iter()
            .map(|&i| {
                held.get(self.nodes[i].state.id.as_str())
                    .map_or(0, |v| v.len() as u32)
            })
            .collect();
        let targets = targets(&counts);
        // Donors: every slot of a node that is no desired primary, then the
        // highest slots of primaries above their share.
        let prim_ids: Vec<&str> = prim_idx
            .iter()
            .map(|&i| self.nodes[i].state.id.as_str())
            .collect();
        let mut foreign: Vec<(&str, &Vec<u16>)> = held
            .iter()
            .filter(|(id, _)| !prim_ids.contains(id))
            .map(|(id, v)| (*id, v))
            .collect();
        foreign.sort_by_key(|(_, v)| v[0]);
        let mut donors: Vec<(usize, Vec<u16>)> = Vec::new();
        for (id, slots) in foreign {
            let i = self.by_id(id).filter(|&i| self.nodes[i].is_master())?;
            donors.push((i, slots.clone()));
        }
        for (k, &i) in prim_idx.iter().enumerate() {
            if counts[k] > targets[k] {
                let mine = &held[prim_ids[k]];
                let give = (counts[k] - targets[k]) as usize;
                donors.push((i, mine[mine.len() - give..].to_vec()));
            }
        }
        let mut moves = Vec::new();
        let mut pool = donors
            .into_iter()
            .flat_map(|(i, slots)| slots.into_iter().map(move |s| (i, s)));
        for (k, &t) in prim_idx.iter().enumerate() {
            for _ in counts[k]..targets[k] {
                let (src, s) = pool.next()?;
                moves.push((src, t, s));
            }
        }
        Some(moves)
    }

    fn balance(
        &self,
        primaries: &[ShardPrimary],
        moves: Option<&[(usize, usize, u16)]>,
        limits: &Limits,
        notes: &mut Vec<String>,
    ) -> Option<Step> {
        let Some(moves) = moves else {
            let why: Vec<String> = primaries
                .iter()
                .filter_map(|p| match p {
                    ShardPrimary::Missing(m) => Some(m.clone()),
                    _ => None,
                })
                .collect();
            let why = if why.is_empty() {
                "a slot owner is not reachable".to_string()
            } else {
                why.join("; ")
            };
            notes.retain(|n| !why.contains(n.as_str()));
            return Step::pending(format!("cannot balance slots: {why}"));
        };
        if moves.is_empty() {
            return None;
        }
        // Migrating only when every node agrees: a target that has not yet
        // seen cluster_state:ok answers CLUSTERDOWN halfway through a slot.
        if let Some(n) = self.cluster().find(|n| !n.state.info.state_ok) {
            return Step::settling(format!(
                "waiting for cluster_state:ok on {} before moving slots",
                n.member.addr
            ));
        }
        if let Some(n) = self
            .cluster()
            .filter(|n| n.is_master())
            .find(|n| view_owner(n.state) != self.owner)
        {
            return Step::settling(format!(
                "waiting for {} to agree on the slot map before moving slots",
                n.member.addr
            ));
        }
        let batch: Vec<(usize, usize, u16)> = moves
            .iter()
            .take(limits.max_slots.max(1) as usize)
            .copied()
            .collect();
        let n = batch.len();
        Step::act(
            self.group_moves(&batch, limits),
            format!("moving {n} of {} slots to balance the shards", moves.len()),
        )
    }

    // ---- phase 8: remove --------------------------------------------------

    fn remove(&self, primaries: &[ShardPrimary], notes: &mut Vec<String>) -> Option<Step> {
        let prim_set: Vec<usize> = primaries
            .iter()
            .filter_map(|p| match p {
                ShardPrimary::Node(i) => Some(*i),
                _ => None,
            })
            .collect();
        let mut going: Vec<usize> = Vec::new();
        for i in self.cluster_idx() {
            let n = &self.nodes[i];
            if self.is_desired(n.member) || prim_set.contains(&i) || n.slots() > 0 {
                continue;
            }
            if n.is_master() && n.state.dbsize > 0 {
                notes.push(format!(
                    "{} has no slots but holds {} keys; not removing it",
                    n.member.addr, n.state.dbsize
                ));
                continue;
            }
            if self.sole_copy(n) {
                notes.push(format!(
                    "{} replicates an unreachable primary that owns slots; not removing it",
                    n.member.addr
                ));
                continue;
            }
            going.push(i);
        }
        // Nodes the cluster knows that are no member: leftovers of deleted
        // pods, or of members that were reset. Only failed, slotless ones.
        let member_ids: BTreeSet<&str> = self.nodes.iter().map(|n| n.state.id.as_str()).collect();
        let mut ghosts: Vec<&NodeLine> = Vec::new();
        for l in &self.anchor().state.view {
            if l.flags.handshake || member_ids.contains(l.id.as_str()) {
                continue;
            }
            let down_member = self
                .down
                .iter()
                .find(|(m, _)| Some(m.addr) == l.addr)
                .map(|(m, _)| *m);
            let stale_addr = l
                .addr
                .is_some_and(|a| self.nodes.iter().any(|n| n.member.addr == a));
            match down_member {
                Some(m) if self.is_desired(m) => continue, // a member that is down: keep it
                Some(_) if l.slot_count() == 0 => ghosts.push(l),
                _ if l.slot_count() > 0 => notes.push(format!(
                    "node {} ({}) holds slots but is no member",
                    l.id,
                    l.addr.map_or("no address".into(), |a| a.to_string())
                )),
                // A member that did not answer may be this node at a new IP.
                _ if !self.down.is_empty() => notes.push(format!(
                    "not forgetting node {} while a member does not answer",
                    l.id
                )),
                _ if l.flags.fail || l.flags.noaddr || stale_addr => ghosts.push(l),
                _ => notes.push(format!(
                    "waiting for unknown node {} to fail before forgetting it",
                    l.id
                )),
            }
        }
        if going.is_empty() && ghosts.is_empty() {
            return None;
        }
        let stay: Vec<usize> = self.cluster_idx().filter(|i| !going.contains(i)).collect();
        let forget_on = |id: &str| -> Vec<NodeRef> {
            stay.iter()
                .map(|&i| &self.nodes[i])
                // A replica cannot forget its own primary.
                .filter(|n| n.myself.master_id.as_deref() != Some(id))
                .map(|n| n.node_ref())
                .collect()
        };
        let mut actions = Vec::new();
        for &i in &going {
            let n = &self.nodes[i];
            actions.push(Action::Forget {
                id: n.state.id.clone(),
                on: forget_on(&n.state.id),
            });
        }
        for l in &ghosts {
            actions.push(Action::Forget {
                id: l.id.clone(),
                on: forget_on(&l.id),
            });
        }
        // Reset after every FORGET, so a removed node can neither gossip its
        // way back nor rejoin with a stale view if its pod comes back.
        for &i in &going {
            actions.push(Action::Reset {
                node: self.nodes[i].node_ref(),
            });
        }
        Step::act(
            actions,
            format!(
                "removing {} drained node(s) and {} stale node(s) from the cluster",
                going.len(),
                ghosts.len()
            ),
        )
    }

    // ---- phase 9: converged? ----------------------------------------------

    fn converged(&self, primaries: &[ShardPrimary], notes: &[String]) -> Step {
        let pending = |m: String| Step {
            outcome: Outcome::Pending,
            actions: Vec::new(),
            message: m,
        };
        let settling = |m: String| Step {
            outcome: Outcome::Settling,
            actions: Vec::new(),
            message: m,
        };
        if !notes.is_empty() {
            return pending(String::new());
        }
        for s in 0..self.desired.shards {
            for o in 0..self.desired.nodes_per_shard {
                let reachable = self
                    .nodes
                    .iter()
                    .position(|n| n.member.shard == s && n.member.ordinal == o);
                match reachable {
                    Some(i) if self.in_cluster[i] => {}
                    Some(i) => {
                        return settling(format!(
                            "{} has not joined yet",
                            self.nodes[i].member.addr
                        ));
                    }
                    None => {
                        return pending(
                            match self
                                .down
                                .iter()
                                .find(|(m, _)| m.shard == s && m.ordinal == o)
                            {
                                Some((m, e)) => format!("{} is not reachable: {e}", m.addr),
                                None => format!("waiting for the pod of shard {s} ordinal {o}"),
                            },
                        );
                    }
                }
            }
        }
        for p in primaries {
            let ShardPrimary::Node(p) = *p else {
                return pending("a shard has no primary".into());
            };
            let pn = &self.nodes[p];
            for n in self.cluster() {
                if n.member.shard == pn.member.shard
                    && n.state.id != pn.state.id
                    && self.is_desired(n.member)
                {
                    if n.myself.master_id.as_deref() != Some(pn.state.id.as_str()) {
                        return settling(format!(
                            "{} is not yet a replica of {}",
                            n.member.addr, pn.member.addr
                        ));
                    }
                    if !n.state.repl.link_up {
                        return settling(format!("waiting for replica {} to sync", n.member.addr));
                    }
                }
            }
        }
        if let Some(n) = self.cluster().find(|n| !n.state.info.state_ok) {
            return settling(format!("waiting for cluster_state:ok on {}", n.member.addr));
        }
        if let Some(n) = self.cluster().find(|n| view_owner(n.state) != self.owner) {
            return settling(format!(
                "waiting for {} to learn the slot map",
                n.member.addr
            ));
        }
        let ids: BTreeSet<&str> = self.cluster().map(|n| n.state.id.as_str()).collect();
        for n in self.cluster() {
            if let Some(l) = n.state.view.iter().find(|l| !ids.contains(l.id.as_str())) {
                return settling(format!("{} still lists node {}", n.member.addr, l.id));
            }
        }
        Step {
            outcome: Outcome::Converged,
            actions: Vec::new(),
            message: format!(
                "converged: {} shards x {} nodes, slots balanced",
                self.desired.shards, self.desired.nodes_per_shard
            ),
        }
    }

    // ---- what the operator may delete ---------------------------------------

    /// The member answered, no cluster node lists it (by id or address),
    /// and it holds neither slots nor keys of its own. A member that did not
    /// answer is never detached: it may be a node that owns slots and came
    /// back at a new address, still loading its data.
    fn detached(&self, m: &Member) -> bool {
        let Some(i) = self.nodes.iter().position(|n| n.member == m) else {
            return false;
        };
        let n = &self.nodes[i];
        let id = n.state.id.as_str();
        let known = self.cluster().any(|c| {
            c.state.id != id
                && c.state
                    .view
                    .iter()
                    .any(|l| l.id == id || l.addr == Some(m.addr))
        });
        !known
            && !self.in_cluster[i]
            && n.slots() == 0
            && !self.owner.contains(&Some(id))
            && (n.state.dbsize == 0 || n.myself.flags.replica)
    }

    fn removable_shards(&self) -> Vec<u32> {
        let mut shards: BTreeMap<u32, bool> = BTreeMap::new();
        let all = self
            .nodes
            .iter()
            .map(|n| n.member)
            .chain(self.down.iter().map(|(m, _)| *m));
        for m in all {
            if m.shard >= self.desired.shards {
                let ok = self.detached(m);
                shards.entry(m.shard).and_modify(|v| *v &= ok).or_insert(ok);
            }
        }
        shards
            .into_iter()
            .filter(|(_, ok)| *ok)
            .map(|(s, _)| s)
            .collect()
    }

    fn replicas_removable(&self) -> bool {
        self.nodes
            .iter()
            .map(|n| n.member)
            .chain(self.down.iter().map(|(m, _)| *m))
            .filter(|m| m.shard < self.desired.shards && m.ordinal >= self.desired.nodes_per_shard)
            .all(|m| self.detached(m))
    }
}

/// Balanced shares for primaries currently holding `counts` slots: 16384/S
/// each, the remainder going to those holding the most already (fewest moves).
fn targets(counts: &[u32]) -> Vec<u32> {
    let n = counts.len() as u32;
    if n == 0 {
        return Vec::new();
    }
    let q = u32::from(SLOTS) / n;
    let r = (u32::from(SLOTS) % n) as usize;
    let mut order: Vec<usize> = (0..counts.len()).collect();
    order.sort_by_key(|&k| (Reverse(counts[k]), k));
    let mut t = vec![q; counts.len()];
    for &k in order.iter().take(r) {
        t[k] = q + 1;
    }
    t
}

/// `state` lists `replica` as a replica of `primary`, and `primary` as a
/// healthy primary.
fn sees_replica_of(state: &NodeState, replica: &str, primary: &str) -> bool {
    let r = state
        .view
        .iter()
        .any(|l| l.id == replica && l.flags.replica && l.master_id.as_deref() == Some(primary));
    let p = state
        .view
        .iter()
        .any(|l| l.id == primary && l.flags.master && !l.flags.pfail && !l.flags.fail);
    r && p
}

/// The slot map as one node sees it.
fn view_owner(state: &NodeState) -> Vec<Option<&str>> {
    let mut owner = vec![None; SLOTS as usize];
    for l in &state.view {
        for &(a, b) in &l.slots {
            for s in a..=b {
                owner[s as usize] = Some(l.id.as_str());
            }
        }
    }
    owner
}

/// The slot map the cluster converges to: for each slot, the claim with the
/// highest config epoch in any view (a node's claim about itself wins ties).
fn consensus_owner<'a>(states: impl Iterator<Item = &'a NodeState>) -> Vec<Option<&'a str>> {
    let mut best: Vec<Option<(u64, bool, &str)>> = vec![None; SLOTS as usize];
    for state in states {
        for l in &state.view {
            let key = (l.config_epoch, l.flags.myself);
            for &(a, b) in &l.slots {
                for s in a..=b {
                    let cur = &mut best[s as usize];
                    if cur.is_none_or(|(epoch, own_claim, _)| key > (epoch, own_claim)) {
                        *cur = Some((key.0, key.1, l.id.as_str()));
                    }
                }
            }
        }
    }
    best.into_iter().map(|b| b.map(|(_, _, id)| id)).collect()
}

#[cfg(test)]
mod tests;
