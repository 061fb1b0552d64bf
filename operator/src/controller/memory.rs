//! What the operator remembers per cluster between reconciles, behind one
//! checkout at the start of a reconcile and one checkin at its end.
//!
//! kube-runtime never runs two reconciles of one object at once, so the
//! checked-out memory is the reconcile's alone and no lock is held across
//! an await. A reconcile dropped mid-way loses its cluster's memory, as a
//! restart would: that only delays a scale-down, and the next reconcile
//! renders the children again.

use std::collections::HashMap;
use std::sync::Mutex;

use super::decide::Rendered;
use crate::autoscale;
use crate::cache::{self, Key};
use crate::utilization::{Reading, Unavailable};

#[derive(Default)]
pub(super) struct ClusterMemory {
    /// The object this memory is about (its uid's key): a cluster deleted
    /// and created again under the same name starts afresh.
    uid: Option<Key>,
    pub(super) autoscale: autoscale::State,
    /// Last utilisation read and when (Unix seconds).
    pub(super) last_read: Option<(f64, Result<Reading, Unavailable>)>,
    failures: u32,
    /// The hash of the last failure's message in this run of failures
    /// (0: none yet).
    last_error: u64,
    pub(super) rendered: Option<Rendered>,
    /// The roll was last reported blocked (its event is published once).
    pub(super) roll_blocked: bool,
    /// Passwords and what each node was given; boxed, as most of the
    /// memory of a cluster is idle.
    pub(super) credentials: Option<Box<super::credentials::Credentials>>,
    /// What each node was given at run time (users, persistence); boxed
    /// likewise, and absent while the topology is not managed.
    pub(super) pushed: Option<Box<super::node_config::Pushed>>,
    /// The TLS client and certificate of a cluster with `spec.tls`.
    pub(super) tls: Option<Box<super::tls::TlsState>>,
    /// The API refused the last claim expansion: its words.
    pub(super) expansion_refused: Option<String>,
}

/// Every cluster's memory.
#[derive(Default)]
pub(super) struct Memories(Mutex<Table>);

#[derive(Default)]
struct Table {
    /// Boxed: the table keeps a quarter of its slots empty or more, and a
    /// slot is then a pointer rather than 200 bytes. Also, a checkout moves
    /// the box out and back without copying or allocating.
    clusters: HashMap<Key, Box<ClusterMemory>>,
    /// Size at which entries of deleted clusters are next looked for.
    prune_at: usize,
}

impl Memories {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic elsewhere cannot leave a table half-updated: every update
        // is a single insert, remove or field write.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the memory of the cluster `key` (whose object has `uid`) for
    /// one reconcile; empty when it has none, or had one of another object.
    /// Entries of clusters no longer in `watched` are dropped on the way.
    pub(super) fn checkout<V: Clone>(
        &self,
        key: Key,
        uid: Option<Key>,
        watched: &cache::Lookup<V>,
    ) -> Box<ClusterMemory> {
        let mut table = self.table();
        table.forget_deleted(key, watched);
        match table.clusters.remove(&key) {
            Some(m) if m.uid == uid => m,
            Some(mut m) => {
                *m = ClusterMemory {
                    uid,
                    ..Default::default()
                };
                m
            }
            None => Box::new(ClusterMemory {
                uid,
                ..Default::default()
            }),
        }
    }

    /// Puts back what [`Memories::checkout`] took, after the reconcile; an
    /// `ok` reconcile ends the run of failures.
    pub(super) fn checkin(&self, key: Key, mut memory: Box<ClusterMemory>, ok: bool) {
        if ok {
            memory.failures = 0;
            memory.last_error = 0;
        }
        self.table().clusters.insert(key, memory);
    }

    /// Counts a failed reconcile of `key` that said `message`; returns the
    /// failures in a row, and whether the message differs from the last
    /// one's (or is the first of the run).
    pub(super) fn failed(&self, key: Key, message: &str) -> (u32, bool) {
        let mut table = self.table();
        let m = table.clusters.entry(key).or_default();
        m.failures = m.failures.saturating_add(1);
        // Never 0, which means "none yet".
        let hash = crate::stable_hash::of_str(message).max(1);
        let changed = m.last_error != hash;
        m.last_error = hash;
        (m.failures, changed)
    }
}

impl Table {
    /// Drops entries of clusters no longer watched (not in `watched`). The
    /// scan runs only each time the map has doubled, so a reconcile does not
    /// pay for every other cluster.
    fn forget_deleted<V: Clone>(&mut self, keep: Key, watched: &cache::Lookup<V>) {
        if self.clusters.len() < self.prune_at {
            return;
        }
        self.clusters
            .retain(|&k, _| k == keep || watched.contains(k));
        self.prune_at = (self.clusters.len() * 2).max(64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_survives_a_checkin_and_resets_for_a_new_object() {
        let keys = cache::Keys::default();
        let (watched, _follow) = cache::Lookup::<()>::follow(&keys);
        let memories = Memories::default();
        let (key, uid) = (keys.of("ns", "c"), Some(keys.of("", "uid-1")));
        let mut m = memories.checkout(key, uid, &watched);
        m.autoscale.below_since = Some(5.0);
        memories.checkin(key, m, true);
        assert_eq!(memories.failed(key, "a"), (1, true));
        assert_eq!(memories.failed(key, "a"), (2, false));
        let m = memories.checkout(key, uid, &watched);
        assert_eq!(m.autoscale.below_since, Some(5.0));
        assert_eq!(m.failures, 2);
        memories.checkin(key, m, true);
        // A new run of failures starts afresh; a new message is news.
        assert_eq!(memories.failed(key, "a"), (1, true));
        assert_eq!(memories.failed(key, "b"), (2, true));
        let m = memories.checkout(key, uid, &watched);
        memories.checkin(key, m, true);
        // Deleted and created again under the same name: a new uid.
        let m = memories.checkout(key, Some(keys.of("", "uid-2")), &watched);
        assert_eq!((m.autoscale.below_since, m.failures), (None, 0));
    }
}
