//! Test harness: a local control plane and real processes, started and stopped by the tests.
//!
//! Start with [`cluster::Cluster::start`]; the binaries come from the
//! directory named by `CLUSTER_TOOLS_BIN` (built by `make cluster-tools`).

pub mod cluster;
pub mod pki;
pub mod process;
pub mod tools;
pub mod wait;

pub use cluster::{Cluster, ClusterOptions};
pub use wait::wait_for;
