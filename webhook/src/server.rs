//! HTTPS for admission (axum over tokio-rustls, TLS 1.2 and 1.3 only, the
//! certificate read per handshake from a reloading resolver) and plain HTTP
//! for health and metrics.

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
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::admission::{self, Endpoint};
use crate::metrics::{EndpointLabels, Metrics, RequestLabels};

/// Largest AdmissionReview accepted; bigger bodies get 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// A client that does not finish its TLS handshake in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// In-flight requests get this long to finish on shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// A request's headers must arrive within this time; a keep-alive
/// connection idle for as long is closed (hyper uses one timer for both).
/// controller-runtime allows 32 s for headers; the API server reuses idle
/// connections, and retries a request whose connection closed before it
/// was written.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default cap on open connections per server; further clients wait in the
/// listen backlog. Far above what the API servers and Prometheus open, and a
/// bound on the memory a flood of idle connections can take.
pub const MAX_CONNECTIONS: u32 = 1024;

#[derive(Clone)]
pub struct AppState {
    pub policy: Arc<Policy>,
    pub metrics: Arc<Metrics>,
    pub resolver: Arc<ReloadingResolver>,
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
    let answer = admission::review(&body, endpoint, &s.policy);
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

/// Largest HTTP/1 read buffer per connection (hyper's minimum).
const READ_BUFFER: usize = 8 * 1024;

/// HTTP/1.1 with a header-read (and idle) timeout and a bounded read buffer.
fn http1_builder() -> http1::Builder {
    let mut builder = http1::Builder::new();
    // hyper's read buffer starts at 8 KiB and doubles when a read leaves
    // bytes in it; held per keep-alive connection, that was 1 MiB of our
    // heap under 64 connections. Review requests have small headers, and
    // bodies stream through in chunks of this size. It also caps headers.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(READ_BUFFER);
    builder
}

/// Accepts connections until `shutdown`, at most `max_connections` at a
/// time, and hands each to `serve` with the permit it must hold.
async fn accept_loop<F>(
    listener: TcpListener,
    max_connections: usize,
    shutdown: &CancellationToken,
    mut serve: F,
) where
    F: FnMut(TcpStream, std::net::SocketAddr, OwnedSemaphorePermit),
{
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // never closed
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Without this, Nagle's algorithm holds a response's last segment
        // until the client's delayed ACK: tens of milliseconds at p99.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
        }
        serve(tcp, peer, permit);
    }
}

/// Serves one connection until it ends or the server drains.
async fn serve_connection<I>(
    io: I,
    router: Router,
    watcher: hyper_util::server::graceful::Watcher,
    peer: std::net::SocketAddr,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router);
    let conn = http1_builder().serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
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

async fn drain(graceful: GracefulShutdown) {
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout; closing them");
    }
}

/// Serves `router` over plain HTTP/1.1 until `shutdown`, with the same
/// limits as [`serve_tls`], then drains connections.
pub async fn serve_plain(
    listener: TcpListener,
    max_connections: usize,
    router: Router,
    shutdown: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    accept_loop(listener, max_connections, &shutdown, |tcp, peer, permit| {
        let router = router.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            serve_connection(tcp, router, watcher, peer).await;
        });
    })
    .await;
    drain(graceful).await;
}
