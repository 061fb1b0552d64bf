//! What the operator's caches keep of each watched child.
//!
//! With thousands of clusters the caches are most of the operator's memory.
//! A k8s-openapi `Pod` is 2.4 KB before any of its strings and maps, and
//! the list pages it is decoded from are far bigger, so children are
//! decoded straight into these small types: serde skips every other field
//! without building it. A child is known to its cluster by our labels,
//! which are kept as plain fields; owner references are not needed (the
//! Controller maps children by label).
//!
//! The decoded objects only pass through (the Controller maps them to their
//! cluster). What is kept is a [`Lookup`] per kind, by namespace and name,
//! of a plain value without the object's metadata: a [`SetState`] per
//! StatefulSet, a [`PodState`] per pod and the spec hash of the rest. An
//! `ObjectMeta` alone is 360 bytes before its strings, and a reflector's
//! store adds an `ObjectRef` key and an `Arc` per object.
//!
//! RedisClusters themselves are cached (the Controller needs a store of
//! them) as a [`Cluster`]: name, namespace, uid, generation and deletion
//! mark, and the spec as raw JSON. Their status is not cached: the watch
//! hands what reconciles need of it to a lookup as a [`Prior`](crate::status::Prior).
//!
//! `wire` holds the slim decoders; `index` the generic lookup they
//! feed.

mod index;
mod wire;

pub use index::{Follow, Hashes, Key, Keys, Lookup};
pub use wire::{Child, Cluster, Meta, Ownership, Pod, PodState, SetState, StatefulSet, spec_hash};
