//! The edges both binaries share, so each `main.rs` only wires: the
//! runtime and crypto start-up, logging and its format, shutdown signals,
//! loading the admin policy, the `/metrics` and health router, serving
//! HTTP with limits ([`http`]), and the
//! error that names the Kubernetes call and object that failed.
#![forbid(unsafe_code)]

pub mod http;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use api::Policy;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

/// Errors of the start-up steps.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("a rustls crypto provider was already installed")]
    CryptoProvider,
    #[error("starting the tokio runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("reading policy file {path}: {source}")]
    PolicyRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("policy file {path}: {source}")]
    Policy {
        path: PathBuf,
        #[source]
        source: api::policy::PolicyError,
    },
}

/// Pins the ring crypto provider, before the Kubernetes client or a server
/// builds a TLS configuration.
pub fn install_crypto() -> Result<(), StartError> {
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| StartError::CryptoProvider)
}

/// Runs `main` on one thread. A binary's work is a little CPU between
/// waits on the network; worker threads would each bring their own heap
/// arena, and the multi-thread scheduler its code and libm.
pub fn block_on<T>(main: impl Future<Output = T>) -> Result<T, StartError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    Ok(runtime.block_on(main))
}

/// The format of the logs.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logs to stdout, filtered by `RUST_LOG` (`info` when unset).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the process");
            let _ = ctrl_c.await;
        }
    }
}

/// The admin policy from `path`, or the default (the CRD bounds).
pub fn load_policy(path: Option<&Path>) -> Result<Policy, StartError> {
    let Some(path) = path else {
        return Ok(Policy::default());
    };
    let text = std::fs::read_to_string(path).map_err(|source| StartError::PolicyRead {
        path: path.to_path_buf(),
        source,
    })?;
    Policy::from_yaml(&text).map_err(|source| StartError::Policy {
        path: path.to_path_buf(),
        source,
    })
}

/// What the plain-HTTP endpoints report.
pub trait Health: Send + Sync + 'static {
    /// The Prometheus text of every metric.
    fn metrics(&self) -> Result<String, std::fmt::Error>;
    /// `Err` with the reason while not ready.
    fn ready(&self) -> Result<(), &'static str>;
}

/// `/healthz`, `/readyz` and `/metrics` (OpenMetrics text).
pub fn health_router<H: Health>(health: Arc<H>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(h): State<Arc<H>>| async move {
                match h.ready() {
                    Ok(()) => (StatusCode::OK, "ok"),
                    Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(h): State<Arc<H>>| async move {
                match h.metrics() {
                    Ok(text) => (
                        StatusCode::OK,
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                        .into_response(),
                    Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
                }
            }),
        )
        .with_state(health)
}

/// A Kubernetes API call that failed: what was done to which object.
#[derive(Debug, thiserror::Error)]
#[error("{action} {kind} {name}: {source}")]
pub struct KubeError {
    pub action: &'static str,
    pub kind: &'static str,
    /// `namespace/name`, or the name of a cluster-scoped object.
    pub name: String,
    #[source]
    pub source: kube::Error,
}

impl KubeError {
    /// Wraps the error of `action` on the `kind` object `name`, for
    /// `map_err`.
    pub fn on(
        action: &'static str,
        kind: &'static str,
        name: &str,
    ) -> impl FnOnce(kube::Error) -> KubeError + use<> {
        let name = name.to_string();
        move |source| KubeError {
            action,
            kind,
            name,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_policy_file_is_named() {
        let err = load_policy(Some(Path::new("/nonexistent/policy.yaml"))).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("reading policy file /nonexistent/policy.yaml: "),
            "{err}"
        );
        assert_eq!(load_policy(None).unwrap(), Policy::default());
    }

    #[test]
    fn a_kube_error_names_the_call_and_the_object() {
        let source = kube::Error::LinesCodecMaxLineLengthExceeded;
        let err = KubeError::on("applying", "StatefulSet", "team-a/cache-shard-0")(source);
        assert_eq!(
            err.to_string(),
            format!(
                "applying StatefulSet team-a/cache-shard-0: {}",
                kube::Error::LinesCodecMaxLineLengthExceeded
            )
        );
    }
}
