//! Certificates for the admission webhook and for Redis nodes with TLS.
//!
//! - [`issue`]: a CA and serving certificates, made with rcgen, and parsing
//!   what is already there.
//! - [`rotation`]: the pure decision of what to renew and when.
//! - [`resolver`]: a rustls certificate resolver that new connections read,
//!   swapped in place when the files or the Secret change.
//! - [`store`]: the self-managed mode's I/O edge: the Secret, and the
//!   `caBundle` of both webhook configurations.
#![forbid(unsafe_code)]

pub mod issue;
pub mod resolver;
pub mod rotation;
pub mod store;

pub use issue::{CertInfo, KeyMaterial};
pub use resolver::ReloadingResolver;

/// Errors of certificate issuance, parsing and loading.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("parsing certificate {what}: {reason}")]
    Parse { what: String, reason: String },
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("loading the key pair into rustls: {0}")]
    Rustls(#[from] rustls::Error),
}
