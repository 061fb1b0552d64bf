//! Test harness: a local control plane and real processes, started and stopped by the tests.
//!
//! The binaries come from the directory named by `CLUSTER_TOOLS_BIN`, which
//! `make cluster-tools` (tests/cluster/build-tools.sh) builds and prints.
//!
//! ```no_run
//! use harness::{Cluster, ClusterOptions, wait_for};
//! use std::time::Duration;
//!
//! # async fn example() -> anyhow::Result<()> {
//! let cluster = Cluster::start(ClusterOptions { nodes: 3, ..Default::default() }).await?;
//! cluster.kubectl_apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: t}\n").await?;
//! wait_for("namespace t", Duration::from_secs(10), || async {
//!     let out = cluster.kubectl(["get", "ns", "t"]).await?;
//!     Ok(out.status.success().then_some(()))
//! })
//! .await?;
//! cluster.stop(); // or just drop it
//! # Ok(())
//! # }
//! ```

pub mod cluster;
pub mod in_cluster;
pub mod pki;
pub mod pod_redis;
pub mod process;
pub mod product;
pub mod prometheus;
pub mod proxy;
pub mod real_node;
pub mod redis;
pub mod stack;
pub mod tools;
pub mod wait;
pub mod writer;

pub use cluster::{Cluster, ClusterOptions};
pub use wait::{fatal, wait_for};
