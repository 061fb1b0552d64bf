//! `redis-webhook`: validates and defaults RedisCluster objects over TLS.
#![forbid(unsafe_code)]

mod admission;
mod classes;
mod cli;
mod metrics;
mod run;
mod server;

use clap::Parser;

use cli::{CertsCommand, Cli, Command};

fn main() -> anyhow::Result<()> {
    edge::install_crypto()?;
    let cli = Cli::parse();
    match cli.command {
        Command::Certs {
            command: CertsCommand::Generate(args),
        } => run::generate_certs(&args),
        Command::Serve(args) => {
            edge::init_logging(args.log_format);
            // One thread: the chart gives the webhook half a core, and one
            // core serves about 20,000 reviews/s.
            edge::block_on(run::serve(*args))?
        }
    }
}
