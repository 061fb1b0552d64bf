//! Serving HTTP/1.1 with the limits every server of ours keeps: a
//! header-read (and idle) timeout, a bounded read buffer and a cap on open
//! connections, and a graceful drain on shutdown. The webhook adds TLS in
//! front; the `/metrics` and health endpoints of both binaries use
//! [`serve_plain`] as it is.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

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
pub async fn accept_loop<F>(
    listener: TcpListener,
    max_connections: usize,
    shutdown: &CancellationToken,
    mut serve: F,
) where
    F: FnMut(TcpStream, SocketAddr, OwnedSemaphorePermit),
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
pub async fn serve_connection<I>(io: I, router: Router, watcher: Watcher, peer: SocketAddr)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router);
    let conn = http1_builder().serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Waits for open connections to finish, at most 10 s.
pub async fn drain(graceful: GracefulShutdown) {
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout; closing them");
    }
}

/// Serves `router` over plain HTTP/1.1 until `shutdown`, with the same
/// limits as the webhook's TLS listener, then drains connections.
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
