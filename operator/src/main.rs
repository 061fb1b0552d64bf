//! `redis-operator`: runs and autoscales Redis Cluster on Kubernetes.
#![forbid(unsafe_code)]

use clap::Parser;
use operator::{cli::Args, run};

fn main() -> anyhow::Result<()> {
    edge::install_crypto()?;
    let args = Args::parse();
    edge::init_logging(args.log_format);
    // One thread: a reconcile is tens of microseconds of CPU and the rest
    // is waiting on the API server.
    edge::block_on(run::run(args))?
}
