//! The redis-operator: reconciles `RedisCluster` objects into Redis
//! workloads, forms and reshapes the Redis Cluster, and autoscales it.
//!
//! Pure decisions ([`desired`], [`autoscale`], [`status`], the topology
//! plan) take data and return data; [`controller`], [`metrics_source`] and
//! the topology executor are the thin I/O edges.
#![forbid(unsafe_code)]

pub mod autoscale;
pub mod cache;
pub mod cli;
pub mod controller;
pub mod desired;
pub mod leader;
pub mod metrics_source;
pub mod run;
pub mod shape;
pub mod stable_hash;
pub mod status;
pub mod telemetry;
pub mod topology;
