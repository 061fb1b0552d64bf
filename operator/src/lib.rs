//! The redis-operator: reconciles `RedisCluster` objects into Redis
//! workloads, forms and reshapes the Redis Cluster, and autoscales it.
#![forbid(unsafe_code)]

pub mod topology;
