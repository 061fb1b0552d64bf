//! The redis-operator: reconciles `RedisCluster` objects into Redis
//! workloads, forms and reshapes the Redis Cluster, and autoscales it.
//!
//! Pure decisions take data and return data: [`shape`], [`desired`],
//! [`autoscale`], [`status`], the topology plan and the reconcile's
//! `controller::decide`. The thin I/O edges around them: the controller's
//! watches, observation and `act`, [`utilization`], the topology
//! executor and [`leader`].
#![forbid(unsafe_code)]

pub mod auth;
pub mod autoscale;
pub mod cache;
pub mod cli;
pub mod controller;
pub mod desired;
pub mod leader;
pub mod names;
pub mod roll;
pub mod run;
pub mod shape;
pub mod stable_hash;
pub mod status;
pub mod telemetry;
pub mod tls;
pub mod topology;
pub mod utilization;
pub mod volumes;
