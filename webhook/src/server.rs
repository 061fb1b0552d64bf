//! HTTPS for admission (axum over tokio-rustls, TLS 1.2 and 1.3 only, the
//! certificate read per handshake from a reloading resolver), with the
//! limits of [`edge::http`] (HTTP/1.1, header-read timeout, connection cap).

use std::sync::Arc;
use std::time::{Duration, Instant};

use api::Policy;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use certs::ReloadingResolver;
use edge::http::{accept_loop, drain, serve_connection};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::admission::{self, Endpoint};
use crate::metrics::{EndpointLabels, Metrics, RequestLabels};

/// Largest AdmissionReview accepted; bigger bodies get 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// A client that does not finish its TLS handshake in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct AppState {
    pub policy: Arc<Policy>,
    pub metrics: Arc<Metrics>,
    pub resolver: Arc<ReloadingResolver>,
    /// What a volume expansion is checked against.
    pub classes: Arc<dyn crate::classes::StorageClasses>,
}

pub fn admission_router(state: AppState) -> Router {
    Router::new()
        .route(
            "/validate",
            post(|s: State<AppState>, body: Bytes| handle(s, Endpoint::Validate, body)),
        )
        .route(
            "/mutate",
            post(|s: State<AppState>, body: Bytes| handle(s, Endpoint::Mutate, body)),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn handle(State(s): State<AppState>, endpoint: Endpoint, body: Bytes) -> Response {
    let start = Instant::now();
    let answer = admission::review(&body, endpoint, &s.policy, s.classes.as_ref());
    s.metrics
        .requests
        .get_or_create(&RequestLabels {
            endpoint: endpoint.as_str(),
            outcome: answer.outcome.as_str(),
        })
        .inc();
    s.metrics
        .duration
        .get_or_create(&EndpointLabels {
            endpoint: endpoint.as_str(),
        })
        .observe(start.elapsed().as_secs_f64());
    if answer.outcome == admission::Outcome::Denied {
        tracing::info!(endpoint = endpoint.as_str(), message = %answer.body["response"]["status"]["message"], "admission denied");
    }
    let status = StatusCode::from_u16(answer.http_status).unwrap_or(StatusCode::OK);
    (status, axum::Json(answer.body)).into_response()
}

impl edge::Health for AppState {
    fn metrics(&self) -> Result<String, std::fmt::Error> {
        self.metrics.render()
    }

    fn ready(&self) -> Result<(), &'static str> {
        if self.resolver.is_loaded() {
            Ok(())
        } else {
            Err("no serving certificate loaded")
        }
    }
}

/// The rustls configuration: ring provider, TLS 1.2 and 1.3, HTTP/1.1 only
/// (as controller-runtime since the HTTP/2 rapid-reset CVE-2023-44487; the
/// API server falls back to HTTP/1.1).
pub fn tls_config(resolver: Arc<ReloadingResolver>) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Serves `router` over TLS until `shutdown`, then drains connections.
pub async fn serve_tls(
    listener: TcpListener,
    max_connections: usize,
    router: Router,
    tls: rustls::ServerConfig,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let graceful = GracefulShutdown::new();
    accept_loop(listener, max_connections, &shutdown, |tcp, peer, permit| {
        let acceptor = acceptor.clone();
        let router = router.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            serve_connection(tls, router, watcher, peer).await;
        });
    })
    .await;
    drain(graceful).await;
}
