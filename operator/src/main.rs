//! `redis-operator`: runs and autoscales Redis Cluster on Kubernetes.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use operator::{cli::Args, run};

fn main() -> anyhow::Result<()> {
    // Pin the crypto provider before the Kubernetes client builds TLS.
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    let args = Args::parse();
    run::init_logging(args.log_format);
    // One thread: a reconcile is tens of microseconds of CPU and the rest
    // is waiting on the API server. Worker threads would each bring their
    // own heap arena, and the multi-thread scheduler its code.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(run::run(args))
}
