//! Command line of `redis-operator`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

pub use edge::LogFormat;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "redis-operator",
    version,
    about = "Runs and autoscales Redis Cluster on Kubernetes"
)]
pub struct Args {
    /// HTTP address for /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_bind: SocketAddr,
    /// Admin policy file (YAML, shared with the webhook); the autoscaler
    /// never leaves its replica bounds. Without it: the CRD bounds.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Namespaces to watch, comma-separated; all namespaces when absent.
    #[arg(long, value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// How often PodMetrics are read for autoscaling (e.g. 15s, 1m).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub metrics_interval: Duration,
    /// Reconciles running at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: u16,
    /// Form and reshape the Redis Cluster over RESP (slots, replicas). Turning
    /// it off leaves Redis alone and lets scale-downs happen without draining.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub manage_topology: bool,
    /// Namespace of the leader-election Lease; no election when absent.
    #[arg(long, requires = "lease_name")]
    pub leader_election_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long)]
    pub lease_name: Option<String>,
    /// Identity in the Lease; defaults to the pod name, else the host name.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Seconds a leader may go without renewing before a standby takes over.
    #[arg(long, default_value_t = 15)]
    pub lease_duration_seconds: u64,
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}
