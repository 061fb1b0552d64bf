//! The `RedisCluster` API: types, bounds, the admission policy and the
//! defaulting rules.
//!
//! Everything here is pure data and functions over data: no Kubernetes
//! client and no I/O, so the webhook, the operator and the CRD generator all
//! derive their behaviour from one place and it can be unit-tested directly.
#![forbid(unsafe_code)]

pub mod bounds;
pub mod crd;
pub mod defaults;
pub mod expansion;
pub mod policy;
pub mod quantity;
pub mod types;

pub use policy::{Policy, Range, Violation};
pub use types::{
    AppendFsync, AuthSpec, AuthStatus, IssuerRef, MaxmemoryPolicy, MigrationStatus,
    NetworkPolicySpec, OnDataLoss, PersistenceSpec, RedisCluster, RedisClusterSpec,
    RedisClusterStatus, SavePoint, StorageSpec, TlsSpec, VolumeExpansionStatus,
};
