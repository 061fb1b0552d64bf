//! Planner unit tests: hand-built observations for each tricky topology, and
//! a small in-memory cluster that applies the planned actions, to check that
//! whole scaling sequences converge with monotonic progress and never do
//! anything unsafe on the way.

use super::*;
use crate::topology::LossPolicy;
use crate::topology::model::Flags;

fn id(i: usize) -> String {
    format!("{:040x}", i + 1)
}

fn addr(shard: u32, ordinal: u32) -> SocketAddr {
    SocketAddr::new(
        std::net::Ipv4Addr::new(127, 1, shard as u8, ordinal as u8 + 1).into(),
        6379,
    )
}

/// One simulated node.
#[derive(Clone, Debug)]
struct N {
    member: Member,
    id: String,
    up: bool,
    joined: bool,
    master: Option<usize>,
    slots: BTreeSet<u16>,
    epoch: u64,
    mig: Vec<(u16, usize)>,
    imp: Vec<(u16, usize)>,
    /// Keys of its own (primaries); replicas report their primary's.
    keys: u64,
    link_up: bool,
    state_ok: bool,
    /// Ids of nodes it does not know (while gossip is in flight).
    unknown: Vec<usize>,
    resets: u32,
}

#[derive(Clone, Debug, Default)]
struct Fx {
    n: Vec<N>,
    epoch: u64,
}

impl Fx {
    fn add(&mut self, shard: u32, ordinal: u32, joined: bool) -> usize {
        let i = self.n.len();
        self.n.push(N {
            member: Member {
                shard,
                ordinal,
                addr: addr(shard, ordinal),
            },
            id: id(i),
            up: true,
            joined,
            master: None,
            slots: BTreeSet::new(),
            epoch: 0,
            mig: Vec::new(),
            imp: Vec::new(),
            keys: 0,
            link_up: true,
            state_ok: true,
            unknown: Vec::new(),
            resets: 0,
        });
        i
    }

    /// A healthy cluster: `shards` x `per` nodes, slots spread like a
    /// bootstrap, ordinal 0 primary.
    fn healthy(shards: u32, per: u32) -> Self {
        let mut fx = Fx::default();
        let prims: Vec<usize> = (0..shards)
            .map(|s| {
                let p = fx.add(s, 0, true);
                for o in 1..per {
                    let r = fx.add(s, o, true);
                    fx.n[r].master = Some(p);
                }
                p
            })
            .collect();
        let t = targets(&vec![0; shards as usize]);
        let mut next = 0u16;
        for (k, &p) in prims.iter().enumerate() {
            for _ in 0..t[k] {
                fx.n[p].slots.insert(next);
                next += 1;
            }
            fx.n[p].epoch = k as u64 + 1;
        }
        fx.epoch = shards as u64;
        fx.sync_keys();
        fx
    }

    fn find(&self, shard: u32, ordinal: u32) -> usize {
        self.n
            .iter()
            .position(|n| n.member.shard == shard && n.member.ordinal == ordinal)
            .unwrap()
    }

    fn by_id(&self, id: &str) -> usize {
        self.n.iter().position(|n| n.id == id).unwrap()
    }

    fn by_addr(&self, a: SocketAddr) -> usize {
        self.n.iter().position(|n| n.member.addr == a).unwrap()
    }

    /// Keys follow slots: one key per slot; replicas mirror their primary.
    fn sync_keys(&mut self) {
        for i in 0..self.n.len() {
            if self.n[i].master.is_none() && !self.n[i].slots.is_empty() {
                self.n[i].keys = self.n[i].slots.len() as u64;
            }
        }
        for i in 0..self.n.len() {
            if let Some(p) = self.n[i].master {
                self.n[i].keys = self.n[p].keys;
            }
        }
    }

    fn line(&self, j: usize, myself: bool) -> NodeLine {
        let n = &self.n[j];
        let slots: Vec<u16> = n.slots.iter().copied().collect();
        NodeLine {
            id: n.id.clone(),
            addr: Some(n.member.addr),
            flags: Flags {
                myself,
                master: n.master.is_none(),
                replica: n.master.is_some(),
                ..Flags::default()
            },
            master_id: n.master.map(|p| self.n[p].id.clone()),
            config_epoch: n.epoch,
            link_connected: true,
            slots: to_ranges(&slots),
            migrating: if myself {
                n.mig
                    .iter()
                    .map(|(s, t)| (*s, self.n[*t].id.clone()))
                    .collect()
            } else {
                Vec::new()
            },
            importing: if myself {
                n.imp
                    .iter()
                    .map(|(s, t)| (*s, self.n[*t].id.clone()))
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    fn obs(&self) -> Observation {
        let nodes = self
            .n
            .iter()
            .enumerate()
            .map(|(i, n)| NodeObs {
                member: n.member.clone(),
                state: if n.up {
                    let view = if n.joined {
                        (0..self.n.len())
                            .filter(|&j| j == i || (self.n[j].joined && !n.unknown.contains(&j)))
                            .map(|j| self.line(j, j == i))
                            .collect()
                    } else {
                        vec![self.line(i, true)]
                    };
                    let slots_assigned = self
                        .n
                        .iter()
                        .filter(|x| x.joined)
                        .map(|x| x.slots.len())
                        .sum::<usize>();
                    Ok(NodeState {
                        id: n.id.clone(),
                        info: ClusterInfo {
                            state_ok: n.state_ok && n.joined && slots_assigned == SLOTS as usize,
                            slots_assigned: slots_assigned as u32,
                            known_nodes: view.len() as u32,
                            current_epoch: self.epoch,
                            my_epoch: n.epoch,
                        },
                        view,
                        dbsize: n.keys,
                        repl: ReplInfo {
                            is_master: n.master.is_none(),
                            link_up: n.master.is_some() && n.link_up,
                            connected_replicas: 0,
                            offset: 0,
                        },
                    })
                } else {
                    Err("connection refused".into())
                },
            })
            .collect();
        Observation {
            nodes,
            ..Observation::default()
        }
    }

    fn members(&self) -> Vec<Member> {
        self.n.iter().map(|n| n.member.clone()).collect()
    }

    /// Applies one action the way Redis would, asserting it is safe.
    fn apply(&mut self, a: &Action) {
        match a {
            Action::Meet { on, peer } => {
                let j = self.by_addr(*peer);
                self.n[j].joined = true;
                let k = self.by_id(&on.id);
                self.n[k].joined = true;
            }
            Action::Reset { node } => {
                let j = self.by_id(&node.id);
                let n = &self.n[j];
                assert!(
                    n.slots.is_empty(),
                    "reset of {} which holds slots",
                    n.member.addr
                );
                assert!(
                    n.master.is_some() || n.keys == 0,
                    "reset of primary {} with keys",
                    n.member.addr
                );
                // A new identity; the old one is gone for everybody.
                let fresh = format!(
                    "{:040x}",
                    0xf000_0000u64
                        + self.n.len() as u64 * 1000
                        + j as u64
                        + self.n[j].resets as u64 * 100_000
                );
                let n = &mut self.n[j];
                n.id = fresh;
                n.joined = false;
                n.master = None;
                n.keys = 0;
                n.epoch = 0;
                n.mig.clear();
                n.imp.clear();
                n.resets += 1;
                for x in &mut self.n {
                    if x.master == Some(j) {
                        x.master = None;
                    }
                }
            }
            Action::AddSlots { node, ranges } => {
                let j = self.by_id(&node.id);
                for &(a, b) in ranges {
                    for s in a..=b {
                        assert!(
                            self.n.iter().all(|x| !x.slots.contains(&s)),
                            "ADDSLOTS of claimed slot {s}"
                        );
                        self.n[j].slots.insert(s);
                    }
                }
                self.sync_keys();
            }
            Action::Replicate { node, primary } => {
                let j = self.by_id(&node.id);
                let p = self.by_id(&primary.id);
                assert!(self.n[j].slots.is_empty());
                assert!(self.n[j].master.is_some() || self.n[j].keys == 0);
                self.n[j].master = Some(p);
                self.sync_keys();
            }
            Action::Failover { replica } => {
                let r = self.by_id(&replica.id);
                let p = self.n[r].master.expect("failover on a primary");
                assert!(self.n[r].link_up);
                let slots = std::mem::take(&mut self.n[p].slots);
                self.n[r].slots = slots;
                self.n[r].master = None;
                self.epoch += 1;
                self.n[r].epoch = self.epoch;
                for x in 0..self.n.len() {
                    if self.n[x].master == Some(p) || x == p {
                        self.n[x].master = Some(r);
                    }
                }
                self.n[r].master = None;
                self.sync_keys();
            }
            Action::Takeover { replica } => {
                // The primary is gone: the replica claims its slots alone.
                let r = self.by_id(&replica.id);
                let p = self.n[r].master.expect("takeover on a primary");
                let slots = std::mem::take(&mut self.n[p].slots);
                self.n[r].slots = slots;
                self.epoch += 1;
                self.n[r].epoch = self.epoch;
                for x in 0..self.n.len() {
                    if self.n[x].master == Some(p) || x == p {
                        self.n[x].master = Some(r);
                    }
                }
                self.n[r].master = None;
                self.sync_keys();
            }
            Action::MoveSlots {
                source,
                target,
                slots,
                ..
            } => {
                let s_ = self.by_id(&source.id);
                let t = self.by_id(&target.id);
                assert!(self.n[t].master.is_none(), "move into a replica");
                for &s in slots {
                    let owner = self.n.iter().position(|x| x.slots.contains(&s));
                    assert!(
                        owner == Some(s_) || owner == Some(t),
                        "slot {s} moved from {} which does not own it",
                        self.n[s_].member.addr
                    );
                    self.n[s_].slots.remove(&s);
                    self.n[t].slots.insert(s);
                    for x in &mut self.n {
                        x.mig.retain(|(z, _)| *z != s);
                        x.imp.retain(|(z, _)| *z != s);
                    }
                }
                self.epoch += 1;
                self.n[t].epoch = self.epoch;
                // A primary left without slots follows the new owner.
                if self.n[s_].slots.is_empty() && self.n[s_].master.is_none() {
                    self.n[s_].keys = 0;
                    self.n[s_].master = Some(t);
                    for x in &mut self.n {
                        if x.master == Some(s_) {
                            x.master = Some(t);
                        }
                    }
                }
                self.sync_keys();
            }
            Action::SetSlotOwner { slot, owner, .. } => {
                let o = self.by_id(&owner.id);
                for x in &mut self.n {
                    x.slots.remove(slot);
                    x.mig.retain(|(z, _)| z != slot);
                    x.imp.retain(|(z, _)| z != slot);
                }
                self.n[o].slots.insert(*slot);
            }
            Action::SetSlotStable { slot, on } => {
                let j = self.by_id(&on.id);
                self.n[j].mig.retain(|(z, _)| z != slot);
                self.n[j].imp.retain(|(z, _)| z != slot);
            }
            Action::Forget { id, on } => {
                if let Some(j) = self.n.iter().position(|n| &n.id == id) {
                    let n = &self.n[j];
                    assert!(
                        n.slots.is_empty(),
                        "forgetting {} with slots",
                        n.member.addr
                    );
                    assert!(
                        n.master.is_some() || n.keys == 0,
                        "forgetting a primary with keys"
                    );
                    for r in on {
                        let k = self.by_id(&r.id);
                        if !self.n[k].unknown.contains(&j) {
                            self.n[k].unknown.push(j);
                        }
                    }
                }
            }
        }
    }

    /// Forgotten-by-everyone nodes leave the cluster (after the Reset the
    /// plan issues they are fresh anyway).
    fn tidy(&mut self) {
        let joined: Vec<usize> = (0..self.n.len()).filter(|&i| self.n[i].joined).collect();
        for &j in &joined {
            let others: Vec<usize> = joined.iter().copied().filter(|&k| k != j).collect();
            if !others.is_empty() && others.iter().all(|&k| self.n[k].unknown.contains(&j)) {
                self.n[j].joined = false;
            }
        }
        for n in &mut self.n {
            n.unknown.clear();
        }
    }

    /// Runs plan/apply until converged; returns the number of rounds.
    fn converge(&mut self, d: Desired, max_rounds: u32) -> Plan {
        let mut last_left = u32::MAX;
        for _ in 0..max_rounds {
            let p = plan(&self.obs(), &d, &Limits::default());
            if std::env::var_os("PLAN_TRACE").is_some() {
                eprintln!("{:?} {} {:?}", p.outcome, p.message, p.actions);
            }
            match p.outcome {
                Outcome::Converged => return p,
                Outcome::Act => {
                    if p.message.starts_with("moving") {
                        assert!(p.slots_left_to_move < last_left || last_left == u32::MAX);
                        last_left = p.slots_left_to_move;
                    }
                    for a in &p.actions {
                        self.apply(a);
                    }
                    self.tidy();
                }
                Outcome::Settling | Outcome::Pending => {
                    panic!("stuck: {:?}: {}", p.outcome, p.message)
                }
            }
        }
        panic!("did not converge in {max_rounds} rounds");
    }

    fn counts(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .n
            .iter()
            .filter(|n| n.joined && n.master.is_none() && !n.slots.is_empty())
            .map(|n| n.slots.len())
            .collect();
        v.sort_unstable();
        v
    }

    fn desired_members(&self, d: Desired) -> Vec<Member> {
        self.members()
            .into_iter()
            .filter(|m| m.shard < d.shards && m.ordinal < d.nodes_per_shard)
            .collect()
    }
}

fn d(shards: u32, nodes_per_shard: u32) -> Desired {
    Desired {
        shards,
        nodes_per_shard,
        loss: LossPolicy::default(),
    }
}

fn slots_in(actions: &[Action]) -> usize {
    actions
        .iter()
        .map(|a| match a {
            Action::MoveSlots { slots, .. } => slots.len(),
            _ => 0,
        })
        .sum()
}

fn assert_balanced(fx: &Fx, shards: usize) {
    let c = fx.counts();
    assert_eq!(c.len(), shards, "primaries with slots: {c:?}");
    assert_eq!(c.iter().sum::<usize>(), SLOTS as usize);
    assert!(c[c.len() - 1] - c[0] <= 1, "unbalanced: {c:?}");
}

// ---- targets -----------------------------------------------------------------

#[test]
fn targets_are_balanced_and_favour_current_holders() {
    for n in 1..=20 {
        let t = targets(&vec![0; n]);
        assert_eq!(t.iter().sum::<u32>(), SLOTS as u32);
        assert!(t.iter().max().unwrap() - t.iter().min().unwrap() <= 1);
    }
    // 16384 = 3*5461 + 1: the extra slot stays where it already is.
    assert_eq!(targets(&[5461, 5462, 5461]), vec![5461, 5462, 5461]);
    assert_eq!(targets(&[0, 0, 0]), vec![5462, 5461, 5461]);
}

// ---- bootstrap ---------------------------------------------------------------

#[test]
fn fresh_nodes_are_met_from_the_first_node() {
    let mut fx = Fx::default();
    for s in 0..3 {
        for o in 0..2 {
            fx.add(s, o, false);
        }
    }
    let p = plan(&fx.obs(), &d(3, 2), &Limits::default());
    assert_eq!(p.outcome, Outcome::Act);
    assert_eq!(p.actions.len(), 5);
    for a in &p.actions {
        match a {
            Action::Meet { on, .. } => assert_eq!(on.addr, addr(0, 0)),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn joined_empty_nodes_get_contiguous_balanced_slots_on_ordinal_zero() {
    let mut fx = Fx::default();
    for s in 0..3 {
        for o in 0..2 {
            fx.add(s, o, true);
        }
    }
    let p = plan(&fx.obs(), &d(3, 2), &Limits::default());
    assert_eq!(p.outcome, Outcome::Act, "{}", p.message);
    let got: Vec<(SocketAddr, Vec<(u16, u16)>)> = p
        .actions
        .iter()
        .map(|a| match a {
            Action::AddSlots { node, ranges } => (node.addr, ranges.clone()),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (addr(0, 0), vec![(0, 5461)]),
            (addr(1, 0), vec![(5462, 10922)]),
            (addr(2, 0), vec![(10923, 16383)]),
        ]
    );
}

#[test]
fn bootstrap_converges_from_scratch() {
    let mut fx = Fx::default();
    for s in 0..3 {
        for o in 0..2 {
            fx.add(s, o, false);
        }
    }
    fx.converge(d(3, 2), 20);
    assert_balanced(&fx, 3);
    for s in 0..3 {
        let p = fx.find(s, 0);
        let r = fx.find(s, 1);
        assert_eq!(fx.n[r].master, Some(p), "shard {s}: ordinal 0 is primary");
    }
}

#[test]
fn bootstrap_waits_for_ordinal_zero_of_every_shard() {
    let mut fx = Fx::default();
    fx.add(0, 0, true);
    fx.add(1, 1, true); // ordinal 0 of shard 1 not running yet
    let p = plan(&fx.obs(), &d(2, 2), &Limits::default());
    assert_eq!(p.outcome, Outcome::Pending, "{:?}", p.actions);
    assert!(p.message.contains("shard 1 ordinal 0"), "{}", p.message);
}

#[test]
fn half_bootstrapped_cluster_gets_only_the_missing_slots() {
    let mut fx = Fx::default();
    let a = fx.add(0, 0, true);
    fx.add(1, 0, true);
    fx.add(2, 0, true);
    // Crashed after ADDSLOTS on the first node only.
    fx.n[a].slots = (0..5462).collect();
    fx.n[a].epoch = 1;
    let p = plan(&fx.obs(), &d(3, 1), &Limits::default());
    let adds: Vec<_> = p
        .actions
        .iter()
        .map(|x| match x {
            Action::AddSlots { node, ranges } => (node.addr, ranges.clone()),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        adds,
        vec![
            (addr(1, 0), vec![(5462, 10922)]),
            (addr(2, 0), vec![(10923, 16383)])
        ]
    );
}

#[test]
fn uncovered_slot_with_keys_goes_back_to_the_node_holding_them() {
    let mut fx = Fx::healthy(2, 1);
    let b = fx.find(1, 0);
    fx.n[b].slots.remove(&9000);
    let mut obs = fx.obs();
    obs.uncovered_keys
        .insert(9000, vec![(fx.n[b].id.clone(), 3)]);
    let p = plan(&obs, &d(2, 1), &Limits::default());
    assert_eq!(
        p.actions,
        vec![Action::AddSlots {
            node: NodeRef {
                id: fx.n[b].id.clone(),
                addr: addr(1, 0)
            },
            ranges: vec![(9000, 9000)]
        }]
    );
    obs.keys_unknown = true;
    let p = plan(&obs, &d(2, 1), &Limits::default());
    assert_eq!(p.outcome, Outcome::Pending);
}

#[test]
fn nodes_holding_data_or_slots_are_never_treated_as_fresh() {
    let mut fx = Fx::healthy(2, 1);
    // A lone node with keys but no cluster config, and a node from another
    // cluster holding slots.
    let k = fx.add(2, 0, false);
    fx.n[k].keys = 10;
    let mut fx2 = fx.clone();
    let p = plan(&fx.obs(), &d(3, 1), &Limits::default());
    assert_eq!(p.outcome, Outcome::Pending);
    assert!(p.actions.is_empty());
    assert!(p.message.contains("10 keys"), "{}", p.message);

    fx2.n[k].keys = 0;
    fx2.n[k].slots.insert(5);
    let p = plan(&fx2.obs(), &d(3, 1), &Limits::default());
    assert_eq!(p.outcome, Outcome::Pending);
    assert!(p.actions.is_empty());
    assert!(p.message.contains("refusing to touch"), "{}", p.message);
}

#[test]
fn stale_slotless_node_is_reset_before_joining() {
    let mut fx = Fx::healthy(2, 1);
    let x = fx.add(2, 0, false);
    // It remembers some other node (a stale nodes.conf) but not us.
    fx.n[x].joined = true;
    fx.n[x].unknown = (0..x).collect();
    for i in 0..x {
        fx.n[i].unknown.push(x);
    }
    // Fixture: a node "joined" with everybody unknown still lists itself
    // only; make its view bigger by faking a second known node.
    let mut obs = fx.obs();
    let st = obs.nodes[x].state.as_mut().unwrap();
    let mut ghost = st.view[0].clone();
    ghost.id = "ab".repeat(20);
    ghost.flags.myself = false;
    st.view.push(ghost);
    let p = plan(&obs, &d(3, 1), &Limits::default());
    assert_eq!(
        p.actions,
        vec![Action::Reset {
            node: NodeRef {
                id: fx.n[x].id.clone(),
                addr: addr(2, 0)
            }
        }]
    );
}

#[test]
fn strangers_are_introduced_before_anything_else() {
    let mut fx = Fx::healthy(2, 2);
    let a = fx.find(0, 1);
    let b = fx.find(1, 1);
    fx.n[a].unknown.push(b);
    let p = plan(&fx.obs(), &d(2, 2), &Limits::default());
    assert_eq!(
        p.actions,
        vec![Action::Meet {
            on: NodeRef {
                id: fx.n[a].id.clone(),
                addr: addr(0, 1)
            },
            peer: addr(1, 1)
        }]
    );
    // While that handshake runs, nothing else happens.
    let mut obs = fx.obs();
    let st = obs.nodes[a].state.as_mut().unwrap();
    let mut hs = st.view[0].clone();
    hs.id = "ee".repeat(20);
    hs.flags = Flags {
        handshake: true,
        ..Flags::default()
    };
    hs.addr = Some(addr(1, 1));
    st.view.push(hs);
    let p = plan(&obs, &d(2, 2), &Limits::default());
    assert_eq!(p.outcome, Outcome::Settling);
    assert!(p.message.contains("does not know"), "{}", p.message);
}

#[test]
fn healthy_cluster_is_converged() {
    let fx = Fx::healthy(3, 2);
    let p = plan(&fx.obs(), &d(3, 2), &Limits::default());
    assert_eq!(p.outcome, Outcome::Converged, "{}", p.message);
    assert!(p.actions.is_empty());
    assert_eq!(p.slots_left_to_move, 0);
    assert!(p.replicas_removable);
    assert!(p.removable_shards.is_empty());
}

#[test]
fn replica_still_syncing_is_not_converged() {
    let mut fx = Fx::healthy(1, 2);
    let r = fx.find(0, 1);
    fx.n[r].link_up = false;
    let p = plan(&fx.obs(), &d(1, 2), &Limits::default());
    assert_eq!(p.outcome, Outcome::Settling);
    assert!(p.message.contains("sync"), "{}", p.message);
}

// ---- scale out / in -------------------------------------------------------------

#[test]
fn scale_out_moves_the_minimum_number_of_slots() {
    let mut fx = Fx::healthy(3, 1);
    fx.add(3, 0, true);
    fx.add(4, 0, true);
    let p = plan(&fx.obs(), &d(5, 1), &Limits::default());
    assert_eq!(p.outcome, Outcome::Act);
    // 16384 - 3 * 3277 = 6553 slots must leave the three old primaries.
    assert_eq!(p.slots_left_to_move, 6553);
    assert_eq!(slots_in(&p.actions), 512);
    for a in &p.actions {
        let Action::MoveSlots {
            target,
            slots,
            others,
            ..
        } = a
        else {
            panic!("unexpected {a:?}")
        };
        assert!(target.addr == addr(3, 0) || target.addr == addr(4, 0));
        assert!(slots.len() <= 64);
        assert_eq!(others.len(), 3);
    }
    fx.converge(d(5, 1), 100);
    assert_balanced(&fx, 5);
}

#[test]
fn scale_in_drains_then_forgets_extra_shards() {
    let mut fx = Fx::healthy(5, 2);
    let p = plan(&fx.obs(), &d(2, 2), &Limits::default());
    assert_eq!(p.outcome, Outcome::Act);
    // Everything held by shards 2..5 moves.
    assert_eq!(p.slots_left_to_move, 16384 - 3277 * 2);
    assert!(p.removable_shards.is_empty());
    let last = fx.converge(d(2, 2), 100);
    assert_balanced(&fx, 2);
    assert_eq!(last.removable_shards, vec![2, 3, 4]);
    for n in &fx.n {
        if n.member.shard >= 2 {
            assert!(
                !n.joined && n.slots.is_empty() && n.keys == 0,
                "{:?}",
                n.member
            );
        }
    }
}

#[test]
fn three_five_two_four_converges_with_monotonic_progress() {
    let mut fx = Fx::healthy(3, 2);
    for s in 3..5 {
        fx.add(s, 0, false);
        fx.add(s, 1, false);
    }
    fx.converge(d(5, 2), 200);
    assert_balanced(&fx, 5);
    let last = fx.converge(d(2, 2), 200);
    assert_balanced(&fx, 2);
    assert_eq!(last.removable_shards, vec![2, 3, 4]);
    // The operator deletes shards 4 and keeps 2 and 3 for the next scale-out.
    fx.n.retain(|n| n.member.shard < 4);
    fx.converge(d(4, 2), 200);
    assert_balanced(&fx, 4);
    for s in 0..4 {
        let p = fx.find(s, 0);
        let r = fx.find(s, 1);
        assert!(fx.n[p].master.is_none() || fx.n[r].master.is_none());
    }
}

#[test]
fn balancing_waits_for_cluster_state_ok_and_slot_map_agreement() {
    let mut fx = Fx::healthy(2, 1);
    let n = fx.add(2, 0, true);
    fx.n[n].state_ok = false;
    let p = plan(&fx.obs(), &d(3, 1), &Limits::default());
    assert_eq!(p.outcome, Outcome::Settling);
    assert!(p.message.contains("cluster_state:ok"), "{}", p.message);
    assert_eq!(p.slots_left_to_move, 5461);

    // A primary with a stale slot map.
    fx.n[n].state_ok = true;
    let mut obs = fx.obs();
    let st = obs.nodes[n].state.as_mut().unwrap();
    for l in &mut st.view {
        if !l.slots.is_empty() && !l.flags.myself {
            l.slots.pop();
        }
    }
    let p = plan(&obs, &d(3, 1), &Limits::default());
    assert_eq!(p.outcome, Outcome::Settling);
    assert!(p.message.contains("agree"), "{}", p.message);
}

// ---- open slots ----------------------------------------------------------------

fn open_fixture() -> (Fx, usize, usize) {
    let fx = Fx::healthy(2, 1);
    let s = fx.find(0, 0);
    let t = fx.find(1, 0);
    (fx, s, t)
}

fn expect_move(p: &Plan, src: SocketAddr, tgt: SocketAddr, slot: u16) {
    assert_eq!(p.outcome, Outcome::Act, "{}", p.message);
    let found = p.actions.iter().any(|a| {
        matches!(a, Action::MoveSlots { source, target, slots, .. }
            if source.addr == src && target.addr == tgt && slots.contains(&slot))
    });
    assert!(found, "no move of {slot} {src}->{tgt} in {:?}", p.actions);
}

#[test]
fn open_slot_both_markers_is_finished_towards_the_importer() {
    let (mut fx, s, t) = open_fixture();
    fx.n[s].mig.push((100, t));
    fx.n[t].imp.push((100, s));
    let p = plan(&fx.obs(), &d(2, 1), &Limits::default());
    expect_move(&p, addr(0, 0), addr(1, 0), 100);
    assert_eq!(
        slots_in(&p.actions),
        1,
        "only the open slot is touched first"
    );
}

#[test]
fn open_slot_importing_only_is_finished() {
    // Crash right after SETSLOT IMPORTING on the target.
    let (mut fx, s, t) = open_fixture();
    fx.n[t].imp.push((100, s));
    let p = plan(&fx.obs(), &d(2, 1), &Limits::default());
    expect_move(&p, addr(0, 0), addr(1, 0), 100);
}

#[test]
fn open_slot_closed_on_target_only_is_closed_on_the_source() {
    // Crash after SETSLOT NODE on the target: it owns the slot with a
    // higher epoch, the source still lists it with its MIGRATING marker.
    let (mut fx, s, t) = open_fixture();
    fx.n[s].mig.push((100, t));
    fx.n[t].epoch = 10;
    let mut obs = fx.obs();
    // The target's own view already says it owns 100.
    let st = obs.nodes[t].state.as_mut().unwrap();
    for l in &mut st.view {
        if l.flags.myself {
            l.slots.push((100, 100));
            l.slots.sort_unstable();
        }
    }
    let p = plan(&obs, &d(2, 1), &Limits::default());
    expect_move(&p, addr(0, 0), addr(1, 0), 100);
}

#[test]
fn open_slot_migrating_without_importer_moves_forward() {
    let (mut fx, s, t) = open_fixture();
    fx.n[s].mig.push((100, t));
    let p = plan(&fx.obs(), &d(2, 1), &Limits::default());
    expect_move(&p, addr(0, 0), addr(1, 0), 100);
}

#[test]
fn open_slot_towards_a_vanished_node_is_rolled_back() {
    let (mut fx, s, _) = open_fixture();
    let gone = fx.add(7, 0, false);
    fx.n[gone].up = false;
    fx.n[s].mig.push((100, gone));
    let p = plan(&fx.obs(), &d(2, 1), &Limits::default());
    assert_eq!(
        p.actions,
        vec![Action::SetSlotStable {
            slot: 100,
            on: NodeRef {
                id: fx.n[s].id.clone(),
                addr: addr(0, 0)
            }
        }]
    );
}

#[test]
fn open_slot_after_the_source_failed_over_continues_from_the_new_owner() {
    let mut fx = Fx::healthy(2, 2);
    let s = fx.find(0, 0);
    let s2 = fx.find(0, 1);
    let t = fx.find(1, 0);
    fx.n[t].imp.push((100, s));
    // The source failed over to its replica, which has no marker.
    fx.apply(&Action::Failover {
        replica: NodeRef {
            id: fx.n[s2].id.clone(),
            addr: addr(0, 1),
        },
    });
    let p = plan(&fx.obs(), &d(2, 2), &Limits::default());
    expect_move(&p, addr(0, 1), addr(1, 0), 100);
}

#[test]
fn open_slots_converge_in_simulation() {
    let (mut fx, s, t) = open_fixture();
    fx.n[s].mig.push((1, t));
    fx.n[t].imp.push((1, s));
    fx.n[t].imp.push((2, s));
    fx.n[s].mig.push((3, t));
    fx.converge(d(2, 1), 20);
    assert!(fx.n.iter().all(|n| n.mig.is_empty() && n.imp.is_empty()));
    assert_balanced(&fx, 2);
}

// ---- failover / replicas -----------------------------------------------------------

#[test]
fn failed_over_primary_is_kept_when_its_ordinal_stays() {
    let mut fx = Fx::healthy(2, 2);
    let r = fx.find(0, 1);
    fx.apply(&Action::Failover {
        replica: NodeRef {
            id: fx.n[r].id.clone(),
            addr: addr(0, 1),
        },
    });
    let p = plan(&fx.obs(), &d(2, 2), &Limits::default());
    assert_eq!(
        p.outcome,
        Outcome::Converged,
        "{}: {:?}",
        p.message,
        p.actions
    );
}

#[test]
fn replica_scale_down_fails_over_back_first() {
    let mut fx = Fx::healthy(2, 2);
    let r = fx.find(0, 1);
    fx.apply(&Action::Failover {
        replica: NodeRef {
            id: fx.n[r].id.clone(),
            addr: addr(0, 1),
        },
    });
    let p = plan(&fx.obs(), &d(2, 1), &Limits::default());
    assert_eq!(
        p.actions,
        vec![Action::Failover {
            replica: NodeRef {
                id: fx.n[fx.find(0, 0)].id.clone(),
                addr: addr(0, 0)
            }
        }]
    );
    assert!(!p.replicas_removable);
    // A replica that is not in sync is not promoted.
    let mut lagging = fx.clone();
    let o0 = lagging.find(0, 0);
    lagging.n[o0].link_up = false;
    let p = plan(&lagging.obs(), &d(2, 1), &Limits::default());
    assert_eq!(p.outcome, Outcome::Settling, "{:?}", p.actions);

    let last = fx.converge(d(2, 1), 20);
    assert!(last.replicas_removable);
    assert_balanced(&fx, 2);
    for s in 0..2 {
        let o1 = fx.find(s, 1);
        assert!(!fx.n[o1].joined);
    }
}

#[test]
fn replicas_attach_to_their_shard_primary() {
    let mut fx = Fx::healthy(2, 1);
    fx.add(0, 1, true);
    fx.add(1, 1, true);
    let p = plan(&fx.obs(), &d(2, 2), &Limits::default());
    let mut got: Vec<(SocketAddr, SocketAddr)> = p
        .actions
        .iter()
        .map(|a| match a {
            Action::Replicate { node, primary } => (node.addr, primary.addr),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![(addr(0, 1), addr(0, 0)), (addr(1, 1), addr(1, 0))]
    );
}

#[test]
fn unreachable_primary_blocks_changes_but_nothing_destructive_happens() {
    let mut fx = Fx::healthy(3, 2);
    let p0 = fx.find(0, 0);
    fx.n[p0].up = false;
    for n in &mut fx.n {
        n.state_ok = false;
    }
    for scale in [d(3, 2), d(4, 2), d(2, 2), d(3, 1)] {
        let p = plan(&fx.obs(), &scale, &Limits::default());
        for a in &p.actions {
            assert!(
                !matches!(
                    a,
                    Action::Reset { .. } | Action::Forget { .. } | Action::AddSlots { .. }
                ),
                "{a:?} while a primary is down"
            );
        }
        assert_ne!(p.outcome, Outcome::Converged);
    }
    let p = plan(&fx.obs(), &d(3, 2), &Limits::default());
    assert_eq!(p.outcome, Outcome::Pending);
    assert!(p.message.contains("not reachable"), "{}", p.message);
}

#[test]
fn down_replica_is_not_forgotten() {
    let mut fx = Fx::healthy(2, 2);
    let r = fx.find(1, 1);
    fx.n[r].up = false;
    let p = plan(&fx.obs(), &d(2, 2), &Limits::default());
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.outcome, Outcome::Pending);
}

#[test]
fn failed_ghost_without_slots_is_forgotten() {
    let mut fx = Fx::healthy(2, 1);
    let g = fx.add(9, 0, true);
    fx.n[g].up = false;
    let mut obs = fx.obs();
    // The ghost is no member at all and has been marked failed.
    obs.nodes.retain(|n| n.member.shard != 9);
    for n in &mut obs.nodes {
        let st = n.state.as_mut().unwrap();
        for l in &mut st.view {
            if l.id == fx.n[g].id {
                l.flags.fail = true;
            }
        }
    }
    let p = plan(&obs, &d(2, 1), &Limits::default());
    assert!(
        matches!(&p.actions[..], [Action::Forget { id, on }] if *id == fx.n[g].id && on.len() == 2),
        "{:?}",
        p.actions
    );
}

#[test]
fn removable_and_replicas_removable_require_forgetting() {
    let mut fx = Fx::healthy(2, 2);
    let p = plan(&fx.obs(), &d(2, 1), &Limits::default());
    assert!(!p.replicas_removable);
    assert!(p.actions.iter().any(|a| matches!(a, Action::Forget { .. })));
    fx.converge(d(2, 1), 10);
    let members = fx.desired_members(d(2, 2));
    assert_eq!(members.len(), 4);
    let p = plan(&fx.obs(), &d(2, 1), &Limits::default());
    assert!(p.replicas_removable);
    assert_eq!(p.outcome, Outcome::Converged);
}

#[test]
fn empty_or_unreachable_membership_is_pending() {
    let p = plan(&Observation::default(), &d(1, 1), &Limits::default());
    assert_eq!(p.outcome, Outcome::Pending);
    let mut fx = Fx::healthy(1, 1);
    fx.n[0].up = false;
    let p = plan(&fx.obs(), &d(1, 1), &Limits::default());
    assert_eq!(p.outcome, Outcome::Pending);
    assert!(p.message.contains("connection refused"), "{}", p.message);
}

#[test]
fn replica_of_a_vanished_primary_is_left_alone_until_it_takes_over() {
    // Shard 0's primary pod came back empty with a new identity (no
    // persistence): its old id still owns the slots, and the replica holds
    // the only copy of their keys.
    let mut fx = Fx::healthy(2, 2);
    let old = fx.find(0, 0);
    let replica = fx.find(0, 1);
    fx.n[old].up = false;
    fx.n[old].member.shard = 99; // no longer a member at that address
    fx.n[old].member.addr = "127.9.9.9:6379".parse().unwrap();
    let fresh = fx.add(0, 0, true);
    let p = plan(&fx.obs(), &d(2, 2), &Limits::default());
    for a in &p.actions {
        let touches_replica = match a {
            Action::Replicate { node, .. } | Action::Reset { node } => node.id == fx.n[replica].id,
            Action::Forget { id, .. } => *id == fx.n[replica].id || *id == fx.n[old].id,
            Action::AddSlots { .. } | Action::MoveSlots { .. } => true,
            _ => false,
        };
        assert!(!touches_replica, "{a:?}");
    }
    assert_ne!(p.outcome, Outcome::Converged);
    assert!(p.message.contains("take over"), "{}", p.message);
    // Once Redis promoted the replica, the new pod becomes its replica.
    fx.apply(&Action::Failover {
        replica: NodeRef {
            id: fx.n[replica].id.clone(),
            addr: fx.n[replica].member.addr,
        },
    });
    fx.n[old].master = Some(replica);
    fx.n[old].joined = true;
    let mut obs = fx.obs();
    obs.nodes.retain(|n| n.member.shard != 99);
    for n in &mut obs.nodes {
        let st = n.state.as_mut().unwrap();
        for l in &mut st.view {
            if l.id == fx.n[old].id {
                l.flags.fail = true;
            }
        }
    }
    let p = plan(&obs, &d(2, 2), &Limits::default());
    assert_eq!(
        p.actions,
        vec![Action::Replicate {
            node: NodeRef {
                id: fx.n[fresh].id.clone(),
                addr: addr(0, 0)
            },
            primary: NodeRef {
                id: fx.n[replica].id.clone(),
                addr: addr(0, 1)
            }
        }]
    );
}

#[test]
fn new_pod_addresses_are_met_again() {
    // Every pod restarted with a new IP; nodes.conf still has the old ones.
    let fx = Fx::healthy(2, 1);
    let mut obs = fx.obs();
    let old: Vec<SocketAddr> = obs.nodes.iter().map(|n| n.member.addr).collect();
    for n in &mut obs.nodes {
        let ip = match n.member.addr.ip() {
            std::net::IpAddr::V4(v4) => v4.octets(),
            _ => unreachable!(),
        };
        n.member.addr = SocketAddr::new(
            std::net::Ipv4Addr::new(ip[0], ip[1] + 100, ip[2], ip[3]).into(),
            6379,
        );
        let st = n.state.as_mut().unwrap();
        for l in &mut st.view {
            if l.flags.myself {
                l.addr = Some(n.member.addr);
            }
        }
    }
    let p = plan(&obs, &d(2, 1), &Limits::default());
    assert_eq!(p.outcome, Outcome::Act);
    assert_eq!(p.actions.len(), 2, "{:?}", p.actions);
    for a in &p.actions {
        let Action::Meet { on, peer } = a else {
            panic!("{a:?}")
        };
        assert_ne!(on.addr, *peer);
        assert!(!old.contains(peer));
    }
}

#[test]
fn failover_waits_until_every_node_sees_the_replica_under_its_primary() {
    let mut fx = Fx::healthy(2, 2);
    let r = fx.find(0, 1);
    fx.apply(&Action::Failover {
        replica: NodeRef {
            id: fx.n[r].id.clone(),
            addr: addr(0, 1),
        },
    });
    // Shard 1's primary has not heard of that failover yet.
    let mut obs = fx.obs();
    let o0 = fx.n[fx.find(0, 0)].id.clone();
    let o1 = fx.n[r].id.clone();
    let stale = fx.find(1, 0);
    for l in &mut obs.nodes[stale].state.as_mut().unwrap().view {
        if l.id == o0 {
            l.flags.master = true;
            l.flags.replica = false;
            l.master_id = None;
        } else if l.id == o1 {
            l.flags.master = false;
            l.flags.replica = true;
            l.master_id = Some(o0.clone());
        }
    }
    let p = plan(&obs, &d(2, 1), &Limits::default());
    assert_eq!(p.outcome, Outcome::Settling, "{:?}", p.actions);
    assert!(p.message.contains("before the failover"), "{}", p.message);
    let p = plan(&fx.obs(), &d(2, 1), &Limits::default());
    assert!(
        matches!(&p.actions[..], [Action::Failover { .. }]),
        "{:?}",
        p.actions
    );
}

// ---- unknown means unsafe ------------------------------------------------------

/// The observation after member `i`'s pod was recreated at a new IP and
/// does not answer yet (loading its data): the others still list its old
/// address.
fn down_at_new_ip(fx: &Fx, i: usize) -> Observation {
    let mut obs = fx.obs();
    let ip = match fx.n[i].member.addr.ip() {
        std::net::IpAddr::V4(v4) => v4.octets(),
        std::net::IpAddr::V6(_) => unreachable!(),
    };
    obs.nodes[i].member.addr = SocketAddr::new(
        std::net::Ipv4Addr::new(ip[0], ip[1] + 100, ip[2], ip[3]).into(),
        6379,
    );
    obs.nodes[i].state = Err("LOADING Redis is loading the dataset in memory".into());
    obs
}

#[test]
fn draining_shard_whose_member_did_not_answer_is_not_removable() {
    // Shard 2 is being scaled away but still owns its slots; its pod came
    // back at a new IP and is still loading (it does not answer).
    let fx = Fx::healthy(3, 1);
    let obs = down_at_new_ip(&fx, fx.find(2, 0));
    let p = plan(&obs, &d(2, 1), &Limits::default());
    assert!(p.removable_shards.is_empty(), "{:?}", p.removable_shards);
    for a in &p.actions {
        assert!(
            !matches!(a, Action::Forget { .. } | Action::Reset { .. }),
            "{a:?}"
        );
    }
}

#[test]
fn surplus_replica_that_did_not_answer_is_not_removable() {
    let fx = Fx::healthy(1, 2);
    let obs = down_at_new_ip(&fx, fx.find(0, 1));
    let p = plan(&obs, &d(1, 1), &Limits::default());
    assert!(!p.replicas_removable);
}

#[test]
fn surplus_primary_that_did_not_answer_is_not_removable() {
    // The surplus ordinal is the shard's primary (a failover made it so):
    // it owns slots, and did not answer from its new address.
    let mut fx = Fx::healthy(1, 2);
    let r = fx.find(0, 1);
    fx.apply(&Action::Failover {
        replica: NodeRef {
            id: fx.n[r].id.clone(),
            addr: addr(0, 1),
        },
    });
    let obs = down_at_new_ip(&fx, r);
    let p = plan(&obs, &d(1, 1), &Limits::default());
    assert!(!p.replicas_removable);
    assert!(p.removable_shards.is_empty());
}

#[test]
fn drained_shard_is_removable_only_once_every_member_answered() {
    let mut fx = Fx::healthy(3, 2);
    fx.converge(d(2, 2), 200);
    let p = plan(&fx.obs(), &d(2, 2), &Limits::default());
    assert_eq!(p.removable_shards, vec![2]);
    let r = fx.find(2, 1);
    fx.n[r].up = false;
    let p = plan(&fx.obs(), &d(2, 2), &Limits::default());
    assert!(p.removable_shards.is_empty(), "{:?}", p.removable_shards);
}

// ---- lost pods -----------------------------------------------------------------

const EPHEMERAL: LossPolicy = LossPolicy {
    persistent: false,
    recover_empty: true,
};

fn with_loss(d: Desired, loss: LossPolicy) -> Desired {
    Desired { loss, ..d }
}

/// The pod of `shard`/`ordinal` was replaced: the old node is gone (no
/// member answers to its id, it is listed failing), and a fresh, empty node
/// runs in its place. Returns (old, fresh).
fn replace_pod(fx: &mut Fx, shard: u32, ordinal: u32) -> (usize, usize) {
    let old = fx.find(shard, ordinal);
    fx.n[old].up = false;
    fx.n[old].member = Member {
        shard: 99,
        ordinal: old as u32,
        addr: SocketAddr::new(std::net::Ipv4Addr::new(127, 9, 9, old as u8).into(), 6379),
    };
    let fresh = fx.add(shard, ordinal, false);
    (old, fresh)
}

/// The observation, with replaced pods' old nodes as no member and marked
/// failing in every view.
fn obs_after_loss(fx: &Fx) -> Observation {
    let gone: Vec<String> =
        fx.n.iter()
            .filter(|n| n.member.shard == 99)
            .map(|n| n.id.clone())
            .collect();
    let mut obs = fx.obs();
    obs.nodes.retain(|n| n.member.shard != 99);
    for n in &mut obs.nodes {
        if let Ok(st) = n.state.as_mut() {
            for l in &mut st.view {
                if gone.contains(&l.id) {
                    l.flags.pfail = true;
                }
            }
        }
    }
    obs
}

fn node_ref(fx: &Fx, i: usize) -> NodeRef {
    NodeRef {
        id: fx.n[i].id.clone(),
        addr: fx.n[i].member.addr,
    }
}

#[test]
fn lost_only_copy_on_ephemeral_storage_goes_to_the_new_empty_node_and_is_reported() {
    let mut fx = Fx::healthy(3, 1);
    let (old, fresh) = replace_pod(&mut fx, 1, 0);
    let lost_slots = to_ranges(&fx.n[old].slots.iter().copied().collect::<Vec<_>>());
    let want = with_loss(d(3, 1), EPHEMERAL);
    // The fresh node joins first.
    let p = plan(&obs_after_loss(&fx), &want, &Limits::default());
    assert_eq!(
        p.actions,
        vec![Action::Meet {
            on: node_ref(&fx, fx.find(0, 0)),
            peer: addr(1, 0)
        }]
    );
    fx.n[fresh].joined = true;
    let p = plan(&obs_after_loss(&fx), &want, &Limits::default());
    assert_eq!(p.outcome, Outcome::Act, "{}", p.message);
    let others: Vec<NodeRef> = [fx.find(0, 0), fresh, fx.find(2, 0)]
        .iter()
        .map(|&i| node_ref(&fx, i))
        .collect();
    let mut forget_on = match &p.actions[0] {
        Action::Forget { id, on } if *id == fx.n[old].id => on.clone(),
        a => panic!("{a:?}"),
    };
    forget_on.sort_by_key(|n| n.addr);
    let mut others_sorted = others.clone();
    others_sorted.sort_by_key(|n| n.addr);
    assert_eq!(forget_on, others_sorted, "forgotten on every node first");
    assert_eq!(
        p.actions[1..],
        [Action::AddSlots {
            node: node_ref(&fx, fresh),
            ranges: lost_slots.clone()
        }]
    );
    assert_eq!(
        p.data_lost,
        vec![LostShard {
            shard: 1,
            node_id: fx.n[old].id.clone(),
            ranges: lost_slots
        }]
    );
    assert!(
        p.message.contains("shard 1 lost its only copy"),
        "{}",
        p.message
    );
}

/// The replacement pod got the old pod's IP: the cluster pinged the old
/// node's address, the new node answered with its own id, so every view
/// marks the old node `noaddr` and stops pinging it. It is then never
/// flagged failing, and waiting for that would leave the slots unserved
/// for ever (found on real Redis).
#[test]
fn lost_only_copy_whose_address_was_reused_is_recovered_without_a_fail_flag() {
    let mut fx = Fx::healthy(3, 1);
    let (old, fresh) = replace_pod(&mut fx, 1, 0);
    fx.n[fresh].joined = true;
    let mut obs = obs_after_loss(&fx);
    for n in &mut obs.nodes {
        if let Ok(st) = n.state.as_mut() {
            for l in st.view.iter_mut().filter(|l| l.id == fx.n[old].id) {
                l.flags.pfail = false;
                l.flags.noaddr = true;
                l.addr = None;
            }
        }
    }
    let p = plan(&obs, &with_loss(d(3, 1), EPHEMERAL), &Limits::default());
    assert_eq!(p.outcome, Outcome::Act, "{}", p.message);
    assert!(
        matches!(&p.actions[0], Action::Forget { id, .. } if *id == fx.n[old].id),
        "{:?}",
        p.actions
    );
    assert_eq!(p.data_lost.len(), 1, "{:?}", p.data_lost);
    assert_eq!(p.data_lost[0].shard, 1);
}

#[test]
fn lost_only_copy_waits_for_a_human_when_the_policy_says_so() {
    let mut fx = Fx::healthy(3, 1);
    let (old, fresh) = replace_pod(&mut fx, 1, 0);
    fx.n[fresh].joined = true;
    let want = with_loss(
        d(3, 1),
        LossPolicy {
            persistent: false,
            recover_empty: false,
        },
    );
    let p = plan(&obs_after_loss(&fx), &want, &Limits::default());
    assert_eq!(p.outcome, Outcome::Pending);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert!(p.data_lost.is_empty());
    assert_eq!(p.health.awaiting_recovery.len(), 1);
    assert_eq!(p.health.awaiting_recovery[0].shard, 1);
    assert_eq!(p.health.awaiting_recovery[0].node_id, fx.n[old].id);
    assert!(p.message.contains("Wait"), "{}", p.message);
}

#[test]
fn lost_node_on_persistent_storage_is_waited_for_and_its_slots_never_reassigned() {
    let mut fx = Fx::healthy(3, 1);
    let (_, fresh) = replace_pod(&mut fx, 1, 0);
    fx.n[fresh].joined = true;
    for loss in [
        LossPolicy::default(),
        LossPolicy {
            persistent: true,
            recover_empty: true,
        },
    ] {
        let p = plan(
            &obs_after_loss(&fx),
            &with_loss(d(3, 1), loss),
            &Limits::default(),
        );
        for a in &p.actions {
            assert!(
                !matches!(
                    a,
                    Action::Forget { .. } | Action::AddSlots { .. } | Action::Takeover { .. }
                ),
                "{a:?}"
            );
        }
        assert_ne!(p.outcome, Outcome::Converged);
        assert!(p.data_lost.is_empty());
    }
}

#[test]
fn lost_primary_with_a_replica_is_rebuilt_from_the_replica() {
    let mut fx = Fx::healthy(2, 2);
    let replica = fx.find(0, 1);
    let (old, fresh) = replace_pod(&mut fx, 0, 0);
    fx.n[fresh].joined = true;
    let want = with_loss(d(2, 2), EPHEMERAL);
    let p = plan(&obs_after_loss(&fx), &want, &Limits::default());
    assert_eq!(
        p.actions,
        vec![Action::Takeover {
            replica: node_ref(&fx, replica)
        }]
    );
    assert!(p.data_lost.is_empty());
    fx.apply(&p.actions[0]);
    // The old node is now a slotless ghost: forgotten; the fresh node then
    // becomes the replica of the promoted one.
    let p = plan(&obs_after_loss(&fx), &want, &Limits::default());
    assert!(
        matches!(&p.actions[..], [Action::Forget { id, .. }] if *id == fx.n[old].id),
        "{:?}",
        p.actions
    );
    fx.n[old].joined = false;
    let p = plan(&obs_after_loss(&fx), &want, &Limits::default());
    assert_eq!(
        p.actions,
        vec![Action::Replicate {
            node: node_ref(&fx, fresh),
            primary: node_ref(&fx, replica)
        }]
    );
}

#[test]
fn lost_replica_is_forgotten_and_replaced() {
    let mut fx = Fx::healthy(2, 2);
    let (old, fresh) = replace_pod(&mut fx, 1, 1);
    fx.n[fresh].joined = true;
    let p = plan(
        &obs_after_loss(&fx),
        &with_loss(d(2, 2), EPHEMERAL),
        &Limits::default(),
    );
    assert!(
        matches!(&p.actions[..], [Action::Forget { id, on }] if *id == fx.n[old].id && on.len() == 4),
        "{:?}",
        p.actions
    );
}

#[test]
fn nothing_is_forgotten_or_reassigned_while_a_member_does_not_answer() {
    let mut fx = Fx::healthy(3, 1);
    let (_, fresh) = replace_pod(&mut fx, 1, 0);
    fx.n[fresh].joined = true;
    let other = fx.find(2, 0);
    fx.n[other].up = false;
    let p = plan(
        &obs_after_loss(&fx),
        &with_loss(d(3, 1), EPHEMERAL),
        &Limits::default(),
    );
    for a in &p.actions {
        assert!(
            !matches!(
                a,
                Action::Forget { .. } | Action::AddSlots { .. } | Action::Takeover { .. }
            ),
            "{a:?}"
        );
    }
    assert!(p.data_lost.is_empty());
}

#[test]
fn a_lost_node_not_yet_seen_failing_is_waited_for() {
    let mut fx = Fx::healthy(3, 1);
    let (_, fresh) = replace_pod(&mut fx, 1, 0);
    fx.n[fresh].joined = true;
    let mut obs = fx.obs();
    obs.nodes.retain(|n| n.member.shard != 99);
    let p = plan(&obs, &with_loss(d(3, 1), EPHEMERAL), &Limits::default());
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert!(p.message.contains("as failing"), "{}", p.message);
}

// ---- health ------------------------------------------------------------------

#[test]
fn health_names_the_slots_without_a_live_owner_and_their_shard() {
    let fx = Fx::healthy(3, 1);
    assert_eq!(
        plan(&fx.obs(), &d(3, 1), &Limits::default()).health,
        Health::default()
    );
    // 3 shards x 1, the pod of shard 1 lost: a third of the slots has no
    // live owner.
    let mut fx = Fx::healthy(3, 1);
    let (old, fresh) = replace_pod(&mut fx, 1, 0);
    fx.n[fresh].joined = true;
    for n in &mut fx.n {
        n.state_ok = false;
    }
    let lost = to_ranges(&fx.n[old].slots.iter().copied().collect::<Vec<_>>());
    let h = plan(&obs_after_loss(&fx), &d(3, 1), &Limits::default()).health;
    assert_eq!(
        h.unowned,
        vec![UnownedSlots {
            owner: Some(fx.n[old].id.clone()),
            shard: Some(1),
            ranges: lost
        }]
    );
    assert_eq!(h.failing, vec![addr(0, 0), addr(2, 0)]);
    // A primary that is down at its address: its shard is known.
    let mut fx = Fx::healthy(2, 2);
    let p = fx.find(1, 0);
    fx.n[p].up = false;
    let h = plan(&fx.obs(), &d(2, 2), &Limits::default()).health;
    assert_eq!(h.unowned.len(), 1);
    assert_eq!(h.unowned[0].shard, Some(1));
    assert!(h.failing.is_empty());
}

#[test]
fn a_cluster_being_formed_is_not_unhealthy() {
    let mut fx = Fx::default();
    for s in 0..3 {
        fx.add(s, 0, false);
    }
    let p = plan(&fx.obs(), &d(3, 1), &Limits::default());
    assert_eq!(p.health, Health::default());
}

// ---- rolling update hand-over ----------------------------------------------------

#[test]
fn a_rolling_update_hands_a_primary_over_to_the_named_replica() {
    let mut fx = Fx::healthy(2, 3);
    let hand_over = HandOver {
        shard: 1,
        from: 0,
        to: 2,
    };
    let limits = Limits {
        hand_over: Some(hand_over),
        ..Limits::default()
    };
    let p = plan(&fx.obs(), &d(2, 3), &limits);
    assert_eq!(p.outcome, Outcome::Act, "{}", p.message);
    assert_eq!(
        p.actions,
        [Action::Failover {
            replica: NodeRef {
                id: fx.n[fx.find(1, 2)].id.clone(),
                addr: addr(1, 2)
            }
        }]
    );
    for a in &p.actions {
        fx.apply(a);
    }
    // Done: the named replica is the primary; asking again changes nothing.
    assert_eq!(
        plan(&fx.obs(), &d(2, 3), &limits).outcome,
        Outcome::Converged
    );
    // Without the request, a healthy cluster has no failover to do.
    assert_eq!(
        plan(&Fx::healthy(2, 3).obs(), &d(2, 3), &Limits::default()).outcome,
        Outcome::Converged
    );
}
