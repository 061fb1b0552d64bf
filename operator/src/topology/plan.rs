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
//! 3. **open slots**: finish interrupted moves towards the importing node
//!    (the source is authoritative until the move is closed).
//! 4. **uncovered slots**: ADDSLOTSRANGE, only for slots no node claims in any
//!    view (bootstrap is the case where none is claimed); a slot whose keys
//!    survive on some primary goes back to it.
//! 5. **replicate**: every other desired member of a shard replicates the
//!    shard's primary (ordinal 0 at bootstrap; afterwards whichever member
//!    holds the shard's slots). A replica of a vanished primary that still
//!    owns slots is left alone: it may hold the only copy.
//! 6. **failover**: a primary whose ordinal is being scaled away hands over
//!    to an in-sync replica (coordinated `CLUSTER FAILOVER`, no data loss),
//!    once every node sees that replica under its primary.
//! 7. **balance**: move the fewest slots so each desired primary holds 16384/S
//!    (±1, the extra slot staying where it already is); nodes of removed
//!    shards hold none. Only while every node has `cluster_state:ok` and
//!    every primary agrees on the slot map.
//! 8. **remove**: drained extra nodes are forgotten everywhere, then reset;
//!    failed, slotless nodes that are no member are forgotten.
//! 9. **converged** check.

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
    m: &'a Member,
    st: &'a NodeState,
    me: &'a NodeLine,
}

impl Node<'_> {
    fn r(&self) -> NodeRef {
        NodeRef {
            id: self.st.id.clone(),
            addr: self.m.addr,
        }
    }
    /// Knows `id` as a real (non-handshake) node.
    fn knows(&self, id: &str) -> bool {
        self.st
            .view
            .iter()
            .any(|l| l.id == id && !l.flags.handshake)
    }
    fn is_master(&self) -> bool {
        self.me.flags.master
    }
    fn slots(&self) -> u32 {
        self.me.slot_count()
    }
}

/// The primary chosen for a desired shard.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Prim {
    Node(usize),
    /// The shard has no primary yet and its ordinal 0 is a replica of
    /// someone else: reset it so it can come back as an empty primary.
    ResetFirst(usize),
    Missing(String),
}

struct World<'a> {
    d: &'a Desired,
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
    match World::new(obs, d) {
        Ok(w) => (0..SLOTS)
            .filter(|&s| w.owner[s as usize].is_none())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Plans the next batch. See the module docs for the phase order.
pub fn plan(obs: &Observation, d: &Desired, limits: &Limits) -> Plan {
    let w = match World::new(obs, d) {
        Ok(w) => w,
        Err(msg) => {
            return Plan {
                outcome: Outcome::Pending,
                actions: Vec::new(),
                message: msg,
                slots_left_to_move: 0,
                removable_shards: Vec::new(),
                replicas_removable: false,
            };
        }
    };
    let prims = w.primaries();
    let moves = w.balance_moves(&prims);
    let mut p = Plan {
        outcome: Outcome::Pending,
        actions: Vec::new(),
        message: String::new(),
        slots_left_to_move: moves.as_ref().map_or(0, |m| m.len() as u32),
        removable_shards: w.removable_shards(),
        replicas_removable: w.replicas_removable(),
    };
    let mut notes: Vec<String> = Vec::new();
    let phases: [Phase<'_>; 8] = [
        &|n| w.join(n),
        &|_| w.settle(),
        &|n| w.open_slots(limits, n),
        &|n| w.uncovered(&prims, n),
        &|n| w.replicate(&prims, n),
        &|n| w.failover(&prims, limits.hand_over, n),
        &|n| w.balance(&prims, moves.as_deref(), limits, n),
        &|n| w.remove(&prims, n),
    ];
    for phase in phases {
        if let Some(step) = phase(&mut notes) {
            p.outcome = step.outcome;
            p.actions = step.actions;
            p.message = with_notes(step.message, &notes);
            return p;
        }
    }
    let step = w.converged(&prims, &notes);
    p.outcome = step.outcome;
    p.message = with_notes(step.message, &notes);
    p
}

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

impl<'a> World<'a> {
    fn new(obs: &'a Observation, d: &'a Desired) -> Result<Self, String> {
        let mut nodes = Vec::new();
        let mut down = Vec::new();
        for o in &obs.nodes {
            match &o.state {
                Ok(st) => match st.myself() {
                    Some(me) => nodes.push(Node {
                        m: &o.member,
                        st,
                        me,
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
                    n.st.view.iter().filter(|l| !l.flags.handshake).count(),
                    desired(n.m),
                    Reverse((n.m.shard, n.m.ordinal)),
                )
            })
            .or_else(|| {
                nodes
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| desired(n.m))
                    .min_by_key(|(_, n)| (n.m.shard, n.m.ordinal))
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
            .map(|(i, n)| i == anchor || a.knows(&n.st.id))
            .collect();
        let mut w = World {
            d,
            nodes,
            down,
            anchor,
            in_cluster,
            owner: Vec::new(),
            uncovered_keys: &obs.uncovered_keys,
            keys_unknown: obs.keys_unknown,
        };
        w.owner = consensus_owner(w.cluster().map(|n| n.st));
        Ok(w)
    }

    fn is_desired(&self, m: &Member) -> bool {
        m.shard < self.d.shards && m.ordinal < self.d.nodes_per_shard
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
        self.cluster_idx().find(|&i| self.nodes[i].st.id == id)
    }

    fn masters_except(&self, skip: &[usize]) -> Vec<NodeRef> {
        self.cluster_idx()
            .filter(|i| !skip.contains(i) && self.nodes[*i].is_master())
            .map(|i| self.nodes[i].r())
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
                if self.is_desired(n.m) || n.m.shard < self.d.shards {
                    blocked.push(format!(
                        "{} holds {} slots but is not part of the cluster seen from {}; refusing to touch it",
                        n.m.addr,
                        n.slots(),
                        a.m.addr
                    ));
                }
                continue;
            }
            if !self.is_desired(n.m) {
                continue; // extra members are never (re)joined
            }
            let in_handshake =
                a.st.view
                    .iter()
                    .any(|l| l.flags.handshake && l.addr == Some(n.m.addr));
            if in_handshake {
                handshaking = true;
            } else if n.knows(&a.st.id) {
                // It knows us but we do not know it (a half-done handshake, or
                // we forgot it): meeting again completes the handshake.
                actions.push(Action::Meet {
                    on: a.r(),
                    peer: n.m.addr,
                });
            } else if n.st.view.len() == 1 {
                if n.st.dbsize > 0 {
                    blocked.push(format!(
                        "{} holds {} keys but belongs to no cluster; refusing to touch it",
                        n.m.addr, n.st.dbsize
                    ));
                } else {
                    actions.push(Action::Meet {
                        on: a.r(),
                        peer: n.m.addr,
                    });
                }
            } else if n.me.flags.replica || n.st.dbsize == 0 {
                // A stale config (it was removed, or knows another cluster):
                // no slots, nothing of its own to lose, so start it afresh.
                actions.push(Action::Reset { node: n.r() });
            } else {
                blocked.push(format!(
                    "{} is a primary with {} keys outside the cluster; refusing to reset it",
                    n.m.addr, n.st.dbsize
                ));
            }
        }
        // Members whose address changed (pods restarted with new IPs): a MEET
        // to the new address makes the node that knows the old one update it.
        for a in self.cluster() {
            for b in self.cluster() {
                let stale = a.st.id != b.st.id
                    && a.st
                        .view
                        .iter()
                        .any(|l| l.id == b.st.id && !l.flags.handshake && l.addr != Some(b.m.addr))
                    && !a
                        .st
                        .view
                        .iter()
                        .any(|l| l.flags.handshake && l.addr == Some(b.m.addr));
                if stale {
                    actions.push(Action::Meet {
                        on: a.r(),
                        peer: b.m.addr,
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
                if a.st.id == b.st.id || a.knows(&b.st.id) {
                    continue;
                }
                let in_handshake =
                    a.st.view
                        .iter()
                        .any(|l| l.flags.handshake && l.addr == Some(b.m.addr));
                if in_handshake {
                    waiting.get_or_insert_with(|| {
                        format!(
                            "waiting for gossip: {} does not know {} yet",
                            a.m.addr, b.m.addr
                        )
                    });
                } else {
                    actions.push(Action::Meet {
                        on: a.r(),
                        peer: b.m.addr,
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

    // ---- phase 3: open slots ----------------------------------------------

    fn open_slots(&self, limits: &Limits, notes: &mut Vec<String>) -> Option<Step> {
        let mut importing: BTreeMap<u16, Vec<(usize, &str)>> = BTreeMap::new();
        let mut migrating: BTreeMap<u16, Vec<(usize, &str)>> = BTreeMap::new();
        for i in self.cluster_idx() {
            let me = self.nodes[i].me;
            for (s, from) in &me.importing {
                importing.entry(*s).or_default().push((i, from));
            }
            for (s, to) in &me.migrating {
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
                        Some(o) if o == tn.st.id => {
                            let mut on = vec![tn.r()];
                            on.extend(self.masters_except(&[t]));
                            actions.push(Action::SetSlotOwner {
                                slot: s,
                                owner: tn.r(),
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
                            let mut on = vec![tn.r()];
                            on.extend(self.masters_except(&[t]));
                            actions.push(Action::SetSlotOwner {
                                slot: s,
                                owner: tn.r(),
                                on,
                            });
                        }
                    }
                }
                [] => {
                    for &(n, to) in mig {
                        let nn = &self.nodes[n];
                        if owner == Some(nn.st.id.as_str()) {
                            // Source still owns it, target lost its marker:
                            // move forward again (keys already there are
                            // overwritten by the source's authoritative copy).
                            if let Some(t) = master(to) {
                                moves.push((n, t, s));
                            } else if !self.anchor().st.view.iter().any(|l| l.id == to) {
                                // The target left the cluster: nothing to finish.
                                actions.push(Action::SetSlotStable {
                                    slot: s,
                                    on: nn.r(),
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
                source: self.nodes[src].r(),
                target: self.nodes[tgt].r(),
                slots,
                others: self.masters_except(&[src, tgt]),
            })
            .collect()
    }

    // ---- primaries --------------------------------------------------------

    /// The primary of each desired shard: the member holding its slots, else
    /// (a shard that holds none yet) ordinal 0.
    fn primaries(&self) -> Vec<Prim> {
        (0..self.d.shards)
            .map(|s| {
                let members: Vec<usize> = self
                    .cluster_idx()
                    .filter(|&i| self.nodes[i].m.shard == s)
                    .collect();
                let holder = members
                    .iter()
                    .copied()
                    .filter(|&i| self.nodes[i].is_master() && self.nodes[i].slots() > 0)
                    .max_by_key(|&i| (self.nodes[i].slots(), Reverse(self.nodes[i].m.ordinal)));
                if let Some(h) = holder {
                    return Prim::Node(h);
                }
                // Its primary is gone but still owns slots: Redis promotes the
                // replica; until then the replica may hold the only copy.
                if let Some(&i) = members.iter().find(|&&i| self.sole_copy(&self.nodes[i])) {
                    return Prim::Missing(format!(
                        "the primary of shard {s} is not reachable; waiting for replica {} to take over",
                        self.nodes[i].m.addr
                    ));
                }
                // A down member whose slots others still list: Redis itself
                // fails over; we must not hand its slots elsewhere.
                for (m, _) in self.down.iter().filter(|(m, _)| m.shard == s) {
                    let holds =
                        self.anchor().st.view.iter().any(|l| {
                            l.addr == Some(m.addr) && l.flags.master && l.slot_count() > 0
                        });
                    if holds {
                        return Prim::Missing(format!(
                            "the primary of shard {s} ({}) is not reachable",
                            m.addr
                        ));
                    }
                }
                match members
                    .iter()
                    .copied()
                    .find(|&i| self.nodes[i].m.ordinal == 0)
                {
                    Some(i) if self.nodes[i].is_master() => Prim::Node(i),
                    Some(i) => Prim::ResetFirst(i),
                    None => Prim::Missing(format!(
                        "waiting for shard {s} ordinal 0 to join before it gets slots"
                    )),
                }
            })
            .collect()
    }

    // ---- phase 4: uncovered slots -----------------------------------------

    fn uncovered(&self, prims: &[Prim], notes: &mut Vec<String>) -> Option<Step> {
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
        for p in prims {
            match p {
                Prim::Node(i) => prim_idx.push(*i),
                Prim::ResetFirst(i) => {
                    return Step::act(
                        vec![Action::Reset {
                            node: self.nodes[*i].r(),
                        }],
                        format!(
                            "{} slots are unassigned; resetting replica {} so it can become its shard's primary",
                            uncovered.len(),
                            self.nodes[*i].m.addr
                        ),
                    );
                }
                Prim::Missing(msg) => {
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
                self.owned_by(&self.nodes[i].st.id) + assign.get(&i).map_or(0, |v| v.len() as u32)
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
                    node: self.nodes[i].r(),
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
        let Some(m) = n.me.master_id.as_deref().filter(|_| n.me.flags.replica) else {
            return false;
        };
        let healthy = self.by_id(m).is_some_and(|i| self.nodes[i].is_master());
        !healthy && self.owner.contains(&Some(m))
    }

    fn owned_by(&self, id: &str) -> u32 {
        self.owner.iter().filter(|o| **o == Some(id)).count() as u32
    }

    // ---- phase 5: replicate -----------------------------------------------

    fn replicate(&self, prims: &[Prim], notes: &mut Vec<String>) -> Option<Step> {
        let mut actions = Vec::new();
        for p in prims {
            let p = match p {
                Prim::Node(p) => *p,
                Prim::ResetFirst(i) => {
                    actions.push(Action::Reset {
                        node: self.nodes[*i].r(),
                    });
                    continue;
                }
                Prim::Missing(msg) => {
                    notes.push(msg.clone());
                    continue;
                }
            };
            let pn = &self.nodes[p];
            for i in self.cluster_idx() {
                let n = &self.nodes[i];
                if i == p || n.m.shard != pn.m.shard || !self.is_desired(n.m) {
                    continue;
                }
                if n.is_master() {
                    if n.slots() > 0 {
                        continue; // drained by the balance phase first
                    }
                    if n.st.dbsize > 0 {
                        notes.push(format!(
                            "{} is a primary without slots that holds {} keys; not turning it into a replica",
                            n.m.addr, n.st.dbsize
                        ));
                        continue;
                    }
                } else if n.me.master_id.as_deref() == Some(pn.st.id.as_str()) {
                    continue;
                } else if self.sole_copy(n) {
                    notes.push(format!(
                        "{} replicates an unreachable primary that owns slots; not moving it",
                        n.m.addr
                    ));
                    continue;
                }
                actions.push(Action::Replicate {
                    node: n.r(),
                    primary: pn.r(),
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
        prims: &[Prim],
        hand_over: Option<HandOver>,
        notes: &mut Vec<String>,
    ) -> Option<Step> {
        let mut actions = Vec::new();
        let mut waiting = Vec::new();
        for p in prims {
            let Prim::Node(p) = *p else { continue };
            let pn = &self.nodes[p];
            // A rolling update names the primary to step down and its heir.
            let heir = hand_over
                .filter(|h| (h.shard, h.from) == (pn.m.shard, pn.m.ordinal))
                .map(|h| h.to);
            if pn.m.ordinal < self.d.nodes_per_shard && heir.is_none() {
                continue;
            }
            let candidate = self
                .cluster()
                .filter(|n| {
                    n.m.shard == pn.m.shard
                        && n.m.ordinal < self.d.nodes_per_shard
                        && heir.is_none_or(|o| n.m.ordinal == o)
                        && n.me.flags.replica
                        && n.me.master_id.as_deref() == Some(pn.st.id.as_str())
                        && n.st.repl.link_up
                        && n.st.view.iter().any(|l| {
                            l.id == pn.st.id && l.link_connected && !l.flags.pfail && !l.flags.fail
                        })
                })
                .min_by_key(|n| n.m.ordinal);
            match candidate {
                Some(c) => actions.push(Action::Failover { replica: c.r() }),
                None => waiting.push(format!(
                    "shard {}: primary {} (ordinal {}) must hand over, waiting for an in-sync replica with ordinal < {}",
                    pn.m.shard, pn.m.addr, pn.m.ordinal, self.d.nodes_per_shard
                )),
            }
        }
        if !actions.is_empty() {
            if let Some(n) = self.cluster().find(|n| !n.st.info.state_ok) {
                return Step::settling(format!(
                    "waiting for cluster_state:ok on {} before a failover",
                    n.m.addr
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
                    .and_then(|i| self.nodes[i].me.master_id.as_deref())
                else {
                    continue;
                };
                if let Some(n) = self
                    .cluster()
                    .find(|n| !sees_replica_of(n.st, &replica.id, primary))
                {
                    return Step::settling(format!(
                        "waiting for {} to see {} as a replica before the failover",
                        n.m.addr, replica.addr
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
    fn balance_moves(&self, prims: &[Prim]) -> Option<Vec<(usize, usize, u16)>> {
        let prim_idx: Vec<usize> = prims
            .iter()
            .map(|p| match p {
                Prim::Node(i) => Some(*i),
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
                held.get(self.nodes[i].st.id.as_str())
                    .map_or(0, |v| v.len() as u32)
            })
            .collect();
        let targets = targets(&counts);
        // Donors: every slot of a node that is no desired primary, then the
        // highest slots of primaries above their share.
        let prim_ids: Vec<&str> = prim_idx
            .iter()
            .map(|&i| self.nodes[i].st.id.as_str())
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
        prims: &[Prim],
        moves: Option<&[(usize, usize, u16)]>,
        limits: &Limits,
        notes: &mut Vec<String>,
    ) -> Option<Step> {
        let Some(moves) = moves else {
            let why: Vec<String> = prims
                .iter()
                .filter_map(|p| match p {
                    Prim::Missing(m) => Some(m.clone()),
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
        if let Some(n) = self.cluster().find(|n| !n.st.info.state_ok) {
            return Step::settling(format!(
                "waiting for cluster_state:ok on {} before moving slots",
                n.m.addr
            ));
        }
        if let Some(n) = self
            .cluster()
            .filter(|n| n.is_master())
            .find(|n| view_owner(n.st) != self.owner)
        {
            return Step::settling(format!(
                "waiting for {} to agree on the slot map before moving slots",
                n.m.addr
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

    fn remove(&self, prims: &[Prim], notes: &mut Vec<String>) -> Option<Step> {
        let prim_set: Vec<usize> = prims
            .iter()
            .filter_map(|p| match p {
                Prim::Node(i) => Some(*i),
                _ => None,
            })
            .collect();
        let mut going: Vec<usize> = Vec::new();
        for i in self.cluster_idx() {
            let n = &self.nodes[i];
            if self.is_desired(n.m) || prim_set.contains(&i) || n.slots() > 0 {
                continue;
            }
            if n.is_master() && n.st.dbsize > 0 {
                notes.push(format!(
                    "{} has no slots but holds {} keys; not removing it",
                    n.m.addr, n.st.dbsize
                ));
                continue;
            }
            if self.sole_copy(n) {
                notes.push(format!(
                    "{} replicates an unreachable primary that owns slots; not removing it",
                    n.m.addr
                ));
                continue;
            }
            going.push(i);
        }
        // Nodes the cluster knows that are no member: leftovers of deleted
        // pods, or of members that were reset. Only failed, slotless ones.
        let member_ids: BTreeSet<&str> = self.nodes.iter().map(|n| n.st.id.as_str()).collect();
        let mut ghosts: Vec<&NodeLine> = Vec::new();
        for l in &self.anchor().st.view {
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
                .is_some_and(|a| self.nodes.iter().any(|n| n.m.addr == a));
            match down_member {
                Some(m) if self.is_desired(m) => continue, // a member that is down: keep it
                Some(_) if l.slot_count() == 0 => ghosts.push(l),
                _ if l.slot_count() > 0 => notes.push(format!(
                    "node {} ({}) holds slots but is no member",
                    l.id,
                    l.addr.map_or("no address".into(), |a| a.to_string())
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
                .filter(|n| n.me.master_id.as_deref() != Some(id))
                .map(|n| n.r())
                .collect()
        };
        let mut actions = Vec::new();
        for &i in &going {
            let n = &self.nodes[i];
            actions.push(Action::Forget {
                id: n.st.id.clone(),
                on: forget_on(&n.st.id),
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
                node: self.nodes[i].r(),
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

    fn converged(&self, prims: &[Prim], notes: &[String]) -> Step {
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
        for s in 0..self.d.shards {
            for o in 0..self.d.nodes_per_shard {
                let reachable = self
                    .nodes
                    .iter()
                    .position(|n| n.m.shard == s && n.m.ordinal == o);
                match reachable {
                    Some(i) if self.in_cluster[i] => {}
                    Some(i) => {
                        return settling(format!("{} has not joined yet", self.nodes[i].m.addr));
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
        for p in prims {
            let Prim::Node(p) = *p else {
                return pending("a shard has no primary".into());
            };
            let pn = &self.nodes[p];
            for n in self.cluster() {
                if n.m.shard == pn.m.shard && n.st.id != pn.st.id && self.is_desired(n.m) {
                    if n.me.master_id.as_deref() != Some(pn.st.id.as_str()) {
                        return settling(format!(
                            "{} is not yet a replica of {}",
                            n.m.addr, pn.m.addr
                        ));
                    }
                    if !n.st.repl.link_up {
                        return settling(format!("waiting for replica {} to sync", n.m.addr));
                    }
                }
            }
        }
        if let Some(n) = self.cluster().find(|n| !n.st.info.state_ok) {
            return settling(format!("waiting for cluster_state:ok on {}", n.m.addr));
        }
        if let Some(n) = self.cluster().find(|n| view_owner(n.st) != self.owner) {
            return settling(format!("waiting for {} to learn the slot map", n.m.addr));
        }
        let ids: BTreeSet<&str> = self.cluster().map(|n| n.st.id.as_str()).collect();
        for n in self.cluster() {
            if let Some(l) = n.st.view.iter().find(|l| !ids.contains(l.id.as_str())) {
                return settling(format!("{} still lists node {}", n.m.addr, l.id));
            }
        }
        Step {
            outcome: Outcome::Converged,
            actions: Vec::new(),
            message: format!(
                "converged: {} shards x {} nodes, slots balanced",
                self.d.shards, self.d.nodes_per_shard
            ),
        }
    }

    // ---- what the operator may delete ---------------------------------------

    /// No cluster node lists this member (by id or address), and it holds
    /// neither slots nor keys of its own.
    fn detached(&self, m: &Member) -> bool {
        let pos = self.nodes.iter().position(|n| n.m == m);
        let id = pos.map(|i| self.nodes[i].st.id.as_str());
        let known = self.cluster().any(|c| {
            Some(c.st.id.as_str()) != id
                && c.st
                    .view
                    .iter()
                    .any(|l| Some(l.id.as_str()) == id || l.addr == Some(m.addr))
        });
        if known {
            return false;
        }
        match pos {
            Some(i) => {
                let n = &self.nodes[i];
                !self.in_cluster[i] && n.slots() == 0 && (n.st.dbsize == 0 || n.me.flags.replica)
            }
            None => true,
        }
    }

    fn removable_shards(&self) -> Vec<u32> {
        let mut shards: BTreeMap<u32, bool> = BTreeMap::new();
        let all = self
            .nodes
            .iter()
            .map(|n| n.m)
            .chain(self.down.iter().map(|(m, _)| *m));
        for m in all {
            if m.shard >= self.d.shards {
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
            .map(|n| n.m)
            .chain(self.down.iter().map(|(m, _)| *m))
            .filter(|m| m.shard < self.d.shards && m.ordinal >= self.d.nodes_per_shard)
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

/// `st` lists `replica` as a replica of `primary`, and `primary` as a
/// healthy primary.
fn sees_replica_of(st: &NodeState, replica: &str, primary: &str) -> bool {
    let r = st
        .view
        .iter()
        .any(|l| l.id == replica && l.flags.replica && l.master_id.as_deref() == Some(primary));
    let p = st
        .view
        .iter()
        .any(|l| l.id == primary && l.flags.master && !l.flags.pfail && !l.flags.fail);
    r && p
}

/// The slot map as one node sees it.
fn view_owner(st: &NodeState) -> Vec<Option<&str>> {
    let mut owner = vec![None; SLOTS as usize];
    for l in &st.view {
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
    for st in states {
        for l in &st.view {
            let key = (l.config_epoch, l.flags.myself);
            for &(a, b) in &l.slots {
                for s in a..=b {
                    let cur = &mut best[s as usize];
                    if cur.is_none_or(|(e, me, _)| key > (e, me)) {
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
