//! What a rolling update needs of the last observation: per member its
//! role, sync and offset, and whether the cluster as a whole is healthy.

use super::plan::{Observation, uncovered_slots};
use super::{Desired, Member};

/// One member as it last answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeReading {
    pub shard: u32,
    pub ordinal: u32,
    /// It answered the observation.
    pub answered: bool,
    /// `role:master`.
    pub primary: bool,
    /// Slots it owns, in its own view.
    pub slots: u32,
    /// A replica with `master_link_status:up` and no sync in progress.
    pub link_up: bool,
    /// `master_repl_offset`: its replication offset.
    pub offset: u64,
    /// `cluster_state:ok`.
    pub state_ok: bool,
}

/// The cluster as the last observation of a topology step saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readings {
    pub nodes: Vec<NodeReading>,
    /// Slots no node claims in any view.
    pub uncovered_slots: u32,
    /// Some node has a slot MIGRATING or IMPORTING.
    pub open_slots: bool,
}

impl Readings {
    pub(crate) fn of(obs: &Observation, desired: &Desired) -> Readings {
        let nodes = obs
            .nodes
            .iter()
            .map(|o| {
                let Member { shard, ordinal, .. } = o.member;
                let mut r = NodeReading {
                    shard,
                    ordinal,
                    ..Default::default()
                };
                if let Ok(st) = &o.state {
                    let me = st.myself();
                    r.answered = true;
                    r.primary = st.repl.is_master;
                    r.slots = me.map_or(0, |m| m.slot_count());
                    r.link_up = st.repl.link_up;
                    r.offset = st.repl.offset;
                    r.state_ok = st.info.state_ok;
                }
                r
            })
            .collect();
        let open_slots = obs.nodes.iter().any(|o| {
            o.state.as_ref().is_ok_and(|st| {
                st.myself()
                    .is_some_and(|m| !m.migrating.is_empty() || !m.importing.is_empty())
            })
        });
        Readings {
            nodes,
            uncovered_slots: u32::try_from(uncovered_slots(obs, desired).len()).unwrap_or(u32::MAX),
            open_slots,
        }
    }
}
