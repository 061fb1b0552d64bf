//! The command line: `certs generate` and `serve`. These names are part of
//! the product contract.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "redis-webhook",
    version,
    about = "Admission webhook for RedisCluster"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Development certificates.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Serve /validate and /mutate over HTTPS, and health and metrics over HTTP.
    Serve(Box<ServeArgs>),
}

#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Write a fresh CA (ca.crt) and a serving certificate signed by it
    /// (tls.crt, tls.key) into a directory.
    Generate(GenerateArgs),
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Directory to write ca.crt, tls.crt and tls.key into (created if absent).
    #[arg(long)]
    pub out: PathBuf,
    /// A DNS name or IP address the serving certificate is valid for (repeatable).
    #[arg(long = "san", required = true)]
    pub sans: Vec<String>,
    /// Validity of the serving certificate, in days (the CA lives 10 times longer).
    #[arg(long, default_value_t = 365)]
    pub days: i64,
}

pub use edge::LogFormat;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Directory holding tls.crt and tls.key; changed files are picked up
    /// without a restart. Unused with `--cert-secret`.
    #[arg(long, default_value = "/tls")]
    pub cert_dir: PathBuf,
    /// HTTPS address for /validate and /mutate.
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub bind: SocketAddr,
    /// Plain HTTP address for /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_bind: SocketAddr,
    /// Policy file (YAML); without it the bounds equal the CRD bounds.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Open connections per listener; further clients wait in the backlog.
    #[arg(long, default_value_t = edge::http::MAX_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_connections: u32,

    /// Self-managed certificates: serve the certificate in this Secret
    /// (`tls.crt`, `tls.key`), which the operator keeps; read by name
    /// through the API, instead of files in `--cert-dir`.
    #[arg(long, requires = "namespace")]
    pub cert_secret: Option<String>,
    /// Namespace of the Secret.
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
    /// How often the Secret is read, in seconds.
    #[arg(long, default_value_t = 10)]
    pub cert_check_seconds: u64,
    /// Watch StorageClasses, so that growing `spec.storage.size` on a class
    /// that cannot expand volumes is refused at admission.
    #[arg(long)]
    pub watch_storage_classes: bool,
}
