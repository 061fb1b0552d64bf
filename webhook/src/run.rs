//! Wiring of the two subcommands: this is where files, the API and the
//! listeners meet the pure parts.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use certs::ReloadingResolver;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::{GenerateArgs, ServeArgs};
use crate::metrics::Metrics;
use crate::server::{self, AppState};

pub fn generate_certs(args: &GenerateArgs) -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc();
    let validity = time::Duration::days(args.days);
    let ca = certs::issue::new_ca("redis-webhook development CA", validity * 10, now)?;
    let serving = certs::issue::issue_serving(&ca, &args.sans, validity, now)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    for (name, content) in [
        ("ca.crt", &ca.cert_pem),
        ("tls.crt", &serving.cert_pem),
        ("tls.key", &serving.key_pem),
    ] {
        let path = args.out.join(name);
        write_atomically(&path, content).with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "wrote ca.crt, tls.crt and tls.key to {} (SANs: {})",
        args.out.display(),
        args.sans.join(", ")
    );
    Ok(())
}

/// Writes next to the target and renames, so a reader never sees half a file.
fn write_atomically(path: &std::path::Path, content: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, path)
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let policy = edge::load_policy(args.policy.as_deref())?;
    tracing::info!(?policy, "admission policy");

    let resolver = ReloadingResolver::new();
    let shutdown = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();

    match &args.cert_secret {
        Some(secret) => {
            let namespace = args
                .namespace
                .clone()
                .context("--namespace (or POD_NAMESPACE) is required with --cert-secret")?;
            let client = kube::Client::try_default()
                .await
                .context("connecting to the Kubernetes API to read the serving certificate")?;
            tracing::info!(secret = %secret, namespace = %namespace, "serving the certificate the operator keeps");
            let follow = certs::store::follow_serving_secret(
                client,
                namespace,
                secret.clone(),
                resolver.clone(),
                Duration::from_secs(args.cert_check_seconds.max(1)),
            );
            let stop = shutdown.clone();
            tasks.spawn(async move {
                tokio::select! {
                    _ = follow => {},
                    _ = stop.cancelled() => {},
                }
            });
        }
        None => {
            let dir = args.cert_dir.clone();
            if let Err(e) = resolver.load_dir(&dir) {
                // Not fatal: a Secret volume may fill in shortly; /readyz says so.
                tracing::warn!(error = %e, "no serving certificate yet");
            }
            let r = resolver.clone();
            let stop = shutdown.clone();
            tasks.spawn(async move {
                tokio::select! {
                    _ = certs::resolver::watch_dir(r, dir, Duration::from_secs(2)) => {},
                    _ = stop.cancelled() => {},
                }
            });
        }
    }

    let classes: Arc<dyn crate::classes::StorageClasses> = if args.watch_storage_classes {
        let client = kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API to watch StorageClasses")?;
        let (watched, run) = crate::classes::watch(client);
        let stop = shutdown.clone();
        tasks.spawn(async move {
            tokio::select! {
                _ = run => {},
                _ = stop.cancelled() => {},
            }
        });
        Arc::new(watched)
    } else {
        Arc::new(crate::classes::NotWatched)
    };
    let state = AppState {
        policy: Arc::new(policy),
        classes,
        metrics: Metrics::new(Some(resolver.clone())),
        resolver: resolver.clone(),
    };
    let tls_listener = TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("binding HTTPS on {}", args.bind))?;
    let ops_listener = TcpListener::bind(args.metrics_bind)
        .await
        .with_context(|| format!("binding HTTP on {}", args.metrics_bind))?;
    tracing::info!(https = %args.bind, http = %args.metrics_bind, "serving");

    let tls = server::tls_config(resolver).context("building the TLS configuration")?;
    tasks.spawn(server::serve_tls(
        tls_listener,
        args.max_connections as usize,
        server::admission_router(state.clone()),
        tls,
        shutdown.clone(),
    ));
    tasks.spawn(edge::http::serve_plain(
        ops_listener,
        args.max_connections as usize,
        edge::health_router(Arc::new(state)),
        shutdown.clone(),
    ));

    edge::shutdown_signal().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    Ok(())
}
