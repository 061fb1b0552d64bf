//! `redis-webhook`: validates and defaults RedisCluster objects over TLS.
#![forbid(unsafe_code)]

mod admission;
mod cli;
mod metrics;
mod run;
mod server;

use anyhow::Context;
use clap::Parser;

use cli::{CertsCommand, Cli, Command};

fn main() -> anyhow::Result<()> {
    // Pin the crypto provider before anything builds a TLS config.
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    let cli = Cli::parse();
    match cli.command {
        Command::Certs {
            command: CertsCommand::Generate(args),
        } => run::generate_certs(&args),
        Command::Serve(args) => {
            run::init_logging(args.log_format);
            // One thread: the chart gives the webhook half a core, and one
            // core serves about 20,000 reviews/s. Without the multi-thread
            // scheduler the process is a thread, a heap arena and libm
            // (the scheduler's only user of `pow`) smaller.
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?
                .block_on(run::serve(*args))
        }
    }
}
