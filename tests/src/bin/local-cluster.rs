//! Starts a local control plane (with metrics-server) and keeps it up until
//! Ctrl-C or SIGTERM, then tears it down.
//!
//! ```text
//! CLUSTER_TOOLS_BIN=$(bash tests/cluster/build-tools.sh | tail -1) \
//!   cargo run -p redis-operator-harness --bin local-cluster -- --kubeconfig-out /tmp/kc-path
//! ```

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use harness::{Cluster, ClusterOptions};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser, Debug)]
#[command(about = "Run a local Kubernetes control plane for the redis-operator tests")]
struct Args {
    /// Number of simulated (kwok) nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Do not start metrics-server.
    #[arg(long)]
    no_metrics_server: bool,
    /// Write the kubeconfig path (one line) to this file once the cluster is ready.
    #[arg(long, value_name = "PATH")]
    kubeconfig_out: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    // Install the handlers before starting, so a signal during start-up also
    // tears down cleanly instead of killing us with children running.
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;

    let opts = ClusterOptions {
        nodes: args.nodes,
        metrics_server: !args.no_metrics_server,
        ..ClusterOptions::default()
    };
    let cluster = tokio::select! {
        c = Cluster::start(opts) => c?,
        _ = sigint.recv() => return Ok(()),
        _ = sigterm.recv() => return Ok(()),
    };
    let kubeconfig = cluster.kubeconfig_path().display().to_string();
    if let Some(out) = &args.kubeconfig_out {
        // Write then rename, so a script polling for the file never reads half of it.
        let tmp = out.with_extension("tmp");
        std::fs::write(&tmp, format!("{kubeconfig}\n"))
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
    }
    println!("export KUBECONFIG={kubeconfig}");
    println!(
        "# logs: {}/logs; Ctrl-C to stop",
        cluster.tmp_dir().display()
    );

    let mut health = tokio::time::interval(Duration::from_secs(2));
    let result = loop {
        tokio::select! {
            _ = sigint.recv() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
            _ = health.tick() => {
                if let Err(e) = cluster.check_alive() {
                    break Err(e);
                }
            }
        }
    };
    eprintln!("local-cluster: stopping");
    cluster.stop();
    if let Some(out) = &args.kubeconfig_out {
        let _ = std::fs::remove_file(out);
    }
    result
}
