//! Wiring: policy, client, HTTP endpoints, leader election, controllers and
//! signals. Nothing here decides anything.

use std::sync::Arc;

use anyhow::Context as _;
use kube::Client;
use tokio_util::sync::CancellationToken;

use crate::cli::Args;
use crate::controller::{self, Settings};
use crate::leader::{Leadership, LeaseConfig};
use crate::telemetry::Metrics;

pub async fn run(args: Args) -> anyhow::Result<()> {
    let policy = edge::load_policy(args.policy.as_deref())?;
    tracing::info!(?policy, namespaces = ?args.namespaces, "starting");
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let metrics = Metrics::new();
    let shutdown = CancellationToken::new();

    let listener = tokio::net::TcpListener::bind(args.metrics_bind)
        .await
        .with_context(|| format!("binding HTTP on {}", args.metrics_bind))?;
    let http = tokio::spawn(edge::http::serve_plain(
        listener,
        edge::http::MAX_CONNECTIONS as usize,
        edge::health_router(metrics.clone()),
        shutdown.clone(),
    ));
    let signal_stop = shutdown.clone();
    tokio::spawn(async move {
        edge::shutdown_signal().await;
        tracing::info!("shutting down");
        signal_stop.cancel();
    });

    let mut settings = Settings {
        policy,
        metrics_interval: args.metrics_interval,
        concurrency: args.concurrency.max(1),
        manage_topology: args.manage_topology,
        fence: Default::default(),
        platform: crate::desired::Platform {
            operator: args.operator_peer()?,
            exporter: args.exporter()?,
        },
    };
    let webhook_certs = args.webhook_certs()?;
    if let Some(cfg) = &webhook_certs {
        tracing::info!(secret = %cfg.serving_secret, ca = %cfg.ca_secret, namespace = %cfg.namespace, sans = ?cfg.sans, "keeping the webhook's certificates while leading");
    }
    let work = LeaderWork {
        client: client.clone(),
        controllers: args.controllers,
        webhook_certs,
        webhook_cert_interval: std::time::Duration::from_secs(
            args.webhook_certs.webhook_cert_check_seconds.max(1),
        ),
    };
    let scopes: Vec<Option<String>> = if args.namespaces.is_empty() {
        vec![None]
    } else {
        args.namespaces.iter().cloned().map(Some).collect()
    };

    let result = match (&args.leader_election_namespace, &args.lease_name) {
        (Some(namespace), Some(name)) => {
            let identity = args
                .identity
                .clone()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .unwrap_or_else(|| format!("redis-operator-{}", std::process::id()));
            let cfg = LeaseConfig {
                namespace: namespace.clone(),
                name: name.clone(),
                identity: identity.clone(),
                duration_secs: args.lease_duration_seconds.max(2),
                // Renewed at half the duration; Redis actions stop at three
                // quarters without a renewal seen (leader.rs), a quarter
                // before a standby can take over.
                grace_secs: (args.lease_duration_seconds / 2).max(1),
            };
            let mut leadership = Leadership::start(client.clone(), &cfg)
                .await
                .with_context(|| format!("joining the election on Lease {namespace}/{name}"))?;
            // A standby is healthy and ready: it must not block rollouts.
            metrics.set_ready(true);
            tracing::info!(%identity, lease = %name, "waiting for leadership");
            let leading = tokio::select! {
                acquired = leadership.acquired() => acquired,
                _ = shutdown.cancelled() => false,
            };
            let outcome = if leading {
                tracing::info!(%identity, "leading");
                metrics.set_ready(false);
                metrics.leader.set(1);
                settings.fence = leadership.fence();
                let controllers = work.run(&scopes, &settings, &metrics, shutdown.child_token());
                tokio::select! {
                    _ = controllers => Ok(()),
                    // Dropping the controllers abandons the reconciles in
                    // flight at once: a standby may lead soon, and every
                    // topology step can stop between any two commands.
                    why = leadership.lost() => {
                        // Exit now, as controller-runtime does: unwinding the
                        // runtime (drains, connection pools) took seconds
                        // here, and a standby may lead soon.
                        tracing::error!(lease = %format_args!("{namespace}/{name}"), %why, "lost the leader lease; exiting at once so a fresh process stands by");
                        eprintln!("Error: lost the leader lease {namespace}/{name}: {why}; exiting at once so a fresh process stands by");
                        std::process::exit(1)
                    }
                }
            } else {
                Ok(())
            };
            if outcome.is_ok() {
                leadership.release().await;
            } else {
                // Not ours any more, and the API server may be out of reach.
                leadership.abandon();
            }
            outcome
        }
        _ => {
            metrics.leader.set(1);
            work.run(&scopes, &settings, &metrics, shutdown.clone())
                .await;
            Ok(())
        }
    };
    shutdown.cancel();
    let _ = http.await;
    result
}

/// What the leader runs: the controllers and the webhook's certificate
/// keeper, each if asked for, until `stop`.
struct LeaderWork {
    client: Client,
    controllers: bool,
    webhook_certs: Option<certs::store::SelfManagedConfig>,
    webhook_cert_interval: std::time::Duration,
}

impl LeaderWork {
    async fn run(
        &self,
        scopes: &[Option<String>],
        settings: &Settings,
        metrics: &Arc<Metrics>,
        stop: CancellationToken,
    ) {
        let controllers = async {
            if self.controllers {
                run_controllers(&self.client, scopes, settings, metrics, stop.clone()).await;
            } else {
                stop.cancelled().await;
            }
        };
        match &self.webhook_certs {
            Some(cfg) => {
                let keeper = certs::store::SelfManaged::new(self.client.clone(), cfg.clone())
                    .run(self.webhook_cert_interval);
                // The keeper never returns; the controllers end on `stop`.
                tokio::select! {
                    _ = controllers => {},
                    _ = keeper => {},
                }
            }
            None => controllers.await,
        }
    }
}

async fn run_controllers(
    client: &Client,
    scopes: &[Option<String>],
    settings: &Settings,
    metrics: &Arc<Metrics>,
    stop: CancellationToken,
) {
    let runs = scopes.iter().map(|ns| {
        controller::run(
            client.clone(),
            ns.clone(),
            settings.clone(),
            metrics.clone(),
            stop.clone(),
        )
    });
    futures::future::join_all(runs).await;
}
