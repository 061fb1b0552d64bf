//! The generic index the watches feed: a map by [`Key`] per kind, shared
//! between the watch that writes it and the reconciles that read it.

use std::collections::HashMap;
use std::collections::hash_map::{Entry, RandomState};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, RwLock};

use kube::runtime::watcher;

/// The key of an object in a [`Lookup`]: a 128-bit hash of its namespace
/// and name.
///
/// A hash rather than a copy of the two: at tens of thousands of objects
/// the copies were a good part of the index, a lookup need not build a
/// string, and a reconcile can remember its children by key. The hash keys
/// are random per process, so names cannot be chosen to collide; by chance,
/// two of a million objects collide with odds of about 10^-27.
pub type Key = u128;

/// The hashing behind [`Key`]s. Lookups made with the same `Keys` share
/// keys, so one key finds an object's entry in each of them.
#[derive(Clone)]
pub struct Keys(Arc<(RandomState, RandomState)>);

impl Default for Keys {
    fn default() -> Self {
        Keys(Arc::new((RandomState::new(), RandomState::new())))
    }
}

impl Keys {
    pub fn of(&self, ns: &str, name: &str) -> Key {
        let half = |state: &RandomState| {
            let mut h = state.build_hasher();
            ns.hash(&mut h);
            name.hash(&mut h);
            h.finish()
        };
        (u128::from(half(&self.0.0)) << 64) | u128::from(half(&self.0.1))
    }

    /// The key of a watched object.
    pub fn of_object<K: kube::Resource>(&self, o: &K) -> Key {
        self.of(
            o.meta().namespace.as_deref().unwrap_or_default(),
            o.meta().name.as_deref().unwrap_or_default(),
        )
    }
}

struct Shared<V> {
    keys: Keys,
    map: RwLock<HashMap<Key, V>>,
}

type Index<V> = Arc<Shared<V>>;

impl<V> Shared<V> {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Key, V>> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// Keeps a [`Lookup`]'s index up to date from a watch stream, like a reflector
/// keeps its store, for when a value per object is all that is needed.
pub struct Follow<V> {
    index: Index<V>,
    /// A relist in progress: swapped in whole at its end, so objects
    /// deleted while the watch was down disappear.
    relist: Option<HashMap<Key, V>>,
}

impl<V: PartialEq> Follow<V> {
    /// Objects in the index (a relist in progress not yet counted).
    pub fn len(&self) -> usize {
        self.index.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the object `ns`/`name` is in the index.
    pub fn contains(&self, ns: &str, name: &str) -> bool {
        self.index
            .read()
            .contains_key(&self.index.keys.of(ns, name))
    }

    /// Applies a watch event; `true` when it gives an object a value other
    /// than the one the index held (or it had none), as the index was
    /// before a relist in progress.
    pub fn apply<K: kube::Resource>(
        &mut self,
        event: &watcher::Event<K>,
        value: impl Fn(&K) -> V,
    ) -> bool {
        let index = &self.index;
        let write = || index.map.write().unwrap_or_else(|e| e.into_inner());
        match event {
            watcher::Event::Init => {
                self.relist = Some(HashMap::new());
                false
            }
            watcher::Event::InitApply(o) => {
                let (key, v) = (index.keys.of_object(o), value(o));
                let changed = index.read().get(&key) != Some(&v);
                self.relist.get_or_insert_with(HashMap::new).insert(key, v);
                changed
            }
            watcher::Event::InitDone => {
                let fresh = self.relist.take().unwrap_or_default();
                *write() = fresh;
                false
            }
            watcher::Event::Apply(o) => {
                let v = value(o);
                match write().entry(index.keys.of_object(o)) {
                    Entry::Occupied(mut held) if *held.get() != v => {
                        held.insert(v);
                        true
                    }
                    Entry::Occupied(_) => false,
                    Entry::Vacant(slot) => {
                        slot.insert(v);
                        true
                    }
                }
            }
            watcher::Event::Delete(o) => {
                write().remove(&index.keys.of_object(o));
                false
            }
        }
    }
}

/// One value per object of a kind, by namespace and name: what a
/// reconcile reads of its children, in a map entry instead of a cached
/// object.
pub struct Lookup<V>(Index<V>);

impl<V> Clone for Lookup<V> {
    fn clone(&self) -> Self {
        Lookup(self.0.clone())
    }
}

impl<V: Clone> Lookup<V> {
    /// An index keyed with `keys` and the follower that fills it from a
    /// watch stream.
    pub fn follow(keys: &Keys) -> (Lookup<V>, Follow<V>) {
        let index = Arc::new(Shared {
            keys: keys.clone(),
            map: RwLock::default(),
        });
        (
            Lookup(index.clone()),
            Follow {
                index,
                relist: None,
            },
        )
    }

    pub fn get(&self, ns: &str, name: &str) -> Option<V> {
        self.by_key(self.0.keys.of(ns, name))
    }

    pub fn by_key(&self, key: Key) -> Option<V> {
        self.0.read().get(&key).cloned()
    }

    pub fn contains(&self, key: Key) -> bool {
        self.0.read().contains_key(&key)
    }
}

/// The spec hashes of Services, ConfigMaps or PDBs: all a reconcile needs
/// of them (`Some(None)`: the object exists without a hash).
pub type Hashes = Lookup<Option<u64>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{Meta, spec_hash};
    use crate::names::SPEC_HASH;
    use serde_json::json;

    #[test]
    fn hashes_follow_the_watch_and_relists_drop_the_gone() {
        use k8s_openapi::api::core::v1::Service;
        let svc = |name: &str, hash: Option<&str>| -> Meta<Service> {
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "ns",
                             "annotations": hash.map(|h| json!({SPEC_HASH: h}))}
            }))
            .unwrap()
        };
        let (index, mut follow) = Hashes::follow(&Keys::default());
        let mut apply = |e: watcher::Event<Meta<Service>>| follow.apply(&e, spec_hash);
        assert!(apply(watcher::Event::Apply(svc(
            "a",
            Some("00000000000000ff")
        ))));
        assert!(apply(watcher::Event::Apply(svc("b", None))));
        assert!(!apply(watcher::Event::Apply(svc("b", None))), "same value");
        assert_eq!(index.get("ns", "a"), Some(Some(0xff)));
        assert_eq!(index.get("ns", "b"), Some(None));
        assert_eq!(index.get("other", "a"), None);
        apply(watcher::Event::Delete(svc("b", None)));
        assert_eq!(index.get("ns", "b"), None);
        apply(watcher::Event::Apply(svc("d", None)));
        // A relist: until it is done the old view stays; then only what it
        // listed. Values are compared with the old view.
        apply(watcher::Event::Init);
        assert!(apply(watcher::Event::InitApply(svc("c", Some("1")))));
        assert!(!apply(watcher::Event::InitApply(svc("a", Some("ff")))));
        assert_eq!(index.get("ns", "c"), None);
        apply(watcher::Event::InitDone);
        assert_eq!(index.get("ns", "a"), Some(Some(0xff)));
        assert_eq!(index.get("ns", "c"), Some(Some(1)));
        assert_eq!(index.get("ns", "d"), None, "gone while the watch was down");
        assert!(apply(watcher::Event::Apply(svc("a", Some("fe")))));
        assert_eq!(follow.len(), 2);
    }

    #[test]
    fn keys_tell_namespace_from_name() {
        let keys = Keys::default();
        assert_ne!(keys.of("a", "bc"), keys.of("ab", "c"));
        assert_eq!(keys.of("ns", "x"), keys.clone().of("ns", "x"));
        // Other keys hash differently.
        assert_ne!(keys.of("ns", "x"), Keys::default().of("ns", "x"));
    }
}
