//! Command line of `redis-operator`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

pub use edge::LogFormat;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "redis-operator",
    version,
    about = "Runs and autoscales Redis Cluster on Kubernetes"
)]
pub struct Args {
    /// HTTP address for /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_bind: SocketAddr,
    /// Admin policy file (YAML, shared with the webhook); the autoscaler
    /// never leaves its replica bounds. Without it: the CRD bounds.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Namespaces to watch, comma-separated; all namespaces when absent.
    #[arg(long, value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// How often PodMetrics are read for autoscaling (e.g. 15s, 1m).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub metrics_interval: Duration,
    /// Reconciles running at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: u16,
    /// Form and reshape the Redis Cluster over RESP (slots, replicas). Turning
    /// it off leaves Redis alone and lets scale-downs happen without draining.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub manage_topology: bool,
    /// Namespace of the leader-election Lease; no election when absent.
    #[arg(long, requires = "lease_name")]
    pub leader_election_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long)]
    pub lease_name: Option<String>,
    /// Identity in the Lease; defaults to the pod name, else the host name.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Seconds a leader may go without renewing before a standby takes over.
    #[arg(long, default_value_t = 15)]
    pub lease_duration_seconds: u64,
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Give each RedisCluster a NetworkPolicy that lets in, on the client
    /// port, its own namespace and the operator, and on the bus port its
    /// own pods. Needs the operator's namespace.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub network_policies: bool,
    /// The operator's namespace, which the NetworkPolicies let in.
    #[arg(long, env = "POD_NAMESPACE")]
    pub operator_namespace: Option<String>,
    /// Labels of the operator's pods (`key=value`, comma-separated), which
    /// the NetworkPolicies let in.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "app.kubernetes.io/name=redis-operator,app.kubernetes.io/component=operator"
    )]
    pub operator_pod_labels: Vec<String>,
    /// Run the RedisCluster controllers. `false` runs only what else is
    /// asked (the webhook's certificate keeper), e.g. beside a webhook run
    /// outside the cluster.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub controllers: bool,
    #[command(flatten)]
    pub webhook_certs: WebhookCertArgs,
    /// Run this Redis exporter image (oliver006/redis_exporter) beside each
    /// Redis node, serving `/metrics` on port 9121; absent or empty: none.
    #[arg(long, env = "REDIS_EXPORTER_IMAGE")]
    pub exporter_image: Option<String>,
    /// The exporter's resources, as a Kubernetes ResourceRequirements in
    /// JSON; absent: 10m CPU and 32Mi memory requested, a 64Mi limit.
    #[arg(long, env = "REDIS_EXPORTER_RESOURCES")]
    pub exporter_resources: Option<String>,
}

/// The admission webhook's self-managed certificates, which the leader
/// keeps so that the webhook pods never hold the CA's key.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct WebhookCertArgs {
    /// Keep the webhook's serving certificate in this Secret of the
    /// operator's namespace (`tls.crt`, `tls.key`, `ca.crt`), its CA in the
    /// Secret `<name>-ca`, and the CA bundle in the webhook configurations.
    /// Absent: the operator leaves webhook certificates alone.
    #[arg(long, requires_all = ["validating_webhook", "mutating_webhook"])]
    pub webhook_cert_secret: Option<String>,
    /// The webhook's Service, whose DNS names the certificate covers.
    #[arg(long)]
    pub webhook_service: Option<String>,
    /// More names or addresses for the certificate, e.g. 127.0.0.1 for a
    /// webhook run outside the cluster (repeatable).
    #[arg(long = "webhook-extra-san")]
    pub webhook_extra_sans: Vec<String>,
    /// The ValidatingWebhookConfiguration to inject the CA into.
    #[arg(long)]
    pub validating_webhook: Option<String>,
    /// The MutatingWebhookConfiguration to inject the CA into.
    #[arg(long)]
    pub mutating_webhook: Option<String>,
    /// How often the webhook's certificates are checked, in seconds.
    #[arg(long, default_value_t = 10)]
    pub webhook_cert_check_seconds: u64,
    /// Seconds a new webhook CA sits in the injected bundle before it signs.
    #[arg(long, default_value_t = 30)]
    pub webhook_ca_propagation_seconds: i64,
}

impl Args {
    /// What the webhook's certificate keeper needs, if it is asked for.
    pub fn webhook_certs(&self) -> anyhow::Result<Option<certs::store::SelfManagedConfig>> {
        let w = &self.webhook_certs;
        let Some(secret) = w.webhook_cert_secret.clone() else {
            return Ok(None);
        };
        let namespace = self.operator_namespace.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "--webhook-cert-secret needs the operator's namespace (--operator-namespace or POD_NAMESPACE)"
            )
        })?;
        let mut sans = match &w.webhook_service {
            Some(svc) => certs::store::service_sans(svc, &namespace),
            None => Vec::new(),
        };
        sans.extend(w.webhook_extra_sans.iter().cloned());
        anyhow::ensure!(
            !sans.is_empty(),
            "--webhook-cert-secret needs --webhook-service or --webhook-extra-san"
        );
        Ok(Some(certs::store::SelfManagedConfig {
            namespace,
            ca_secret: certs::store::ca_secret_name(&secret),
            serving_secret: secret,
            sans,
            validating_webhook: w.validating_webhook.clone().unwrap_or_default(),
            mutating_webhook: w.mutating_webhook.clone().unwrap_or_default(),
            policy: certs::rotation::RotationPolicy {
                propagation: time::Duration::seconds(w.webhook_ca_propagation_seconds.max(0)),
                ..Default::default()
            },
        }))
    }

    /// The exporter sidecar to run, if an image is given.
    pub fn exporter(&self) -> anyhow::Result<Option<crate::desired::Exporter>> {
        let Some(image) = self.exporter_image.clone().filter(|i| !i.is_empty()) else {
            return Ok(None);
        };
        let resources = match self
            .exporter_resources
            .as_deref()
            .filter(|r| !r.trim().is_empty())
        {
            None => crate::desired::Exporter::default_resources(),
            Some(json) => serde_json::from_str(json).map_err(|e| {
                anyhow::anyhow!("--exporter-resources is not a ResourceRequirements in JSON: {e}")
            })?,
        };
        Ok(Some(crate::desired::Exporter { image, resources }))
    }

    /// Where the operator runs, for the NetworkPolicies; `None` when they
    /// are off, or on and the namespace is unknown (a warning says so).
    pub fn operator_peer(&self) -> anyhow::Result<Option<crate::desired::OperatorPeer>> {
        if !self.network_policies {
            return Ok(None);
        }
        let Some(namespace) = self.operator_namespace.clone() else {
            tracing::warn!(
                "no NetworkPolicies: the operator's namespace is unknown (set --operator-namespace or POD_NAMESPACE)"
            );
            return Ok(None);
        };
        let labels = self
            .operator_pod_labels
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                _ => Err(anyhow::anyhow!(
                    "--operator-pod-labels: {kv:?} is not key=value"
                )),
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Some(crate::desired::OperatorPeer { namespace, labels }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["redis-operator"];
        argv.extend_from_slice(extra);
        Args::parse_from(argv)
    }

    #[test]
    fn the_webhook_certificate_keeper_takes_its_names_from_the_flags() {
        assert!(args(&[]).webhook_certs().unwrap().is_none());
        let base = [
            "--webhook-cert-secret",
            "rel-webhook-tls",
            "--validating-webhook",
            "rel",
            "--mutating-webhook",
            "rel",
        ];
        let err = args(&base).webhook_certs().unwrap_err().to_string();
        assert!(err.contains("operator's namespace"), "{err}");
        let mut with_ns = base.to_vec();
        with_ns.extend(["--operator-namespace", "ops"]);
        let err = args(&with_ns).webhook_certs().unwrap_err().to_string();
        assert_eq!(
            err,
            "--webhook-cert-secret needs --webhook-service or --webhook-extra-san"
        );
        with_ns.extend(["--webhook-service", "rel-webhook"]);
        let cfg = args(&with_ns).webhook_certs().unwrap().unwrap();
        assert_eq!(cfg.serving_secret, "rel-webhook-tls");
        assert_eq!(cfg.ca_secret, "rel-webhook-tls-ca");
        assert_eq!(cfg.namespace, "ops");
        assert!(cfg.sans.contains(&"rel-webhook.ops.svc".to_string()));
    }

    #[test]
    fn the_exporter_takes_its_image_and_resources_from_the_flags() {
        assert!(args(&[]).exporter().unwrap().is_none());
        let e = args(&["--exporter-image", "exp:1"])
            .exporter()
            .unwrap()
            .unwrap();
        assert_eq!(e.image, "exp:1");
        assert_eq!(e.resources, crate::desired::Exporter::default_resources());
        let e = args(&[
            "--exporter-image",
            "exp:1",
            "--exporter-resources",
            r#"{"limits":{"memory":"128Mi"}}"#,
        ])
        .exporter()
        .unwrap()
        .unwrap();
        let limits = e.resources.limits.unwrap();
        assert_eq!(limits["memory"].0, "128Mi");
        let err = args(&["--exporter-image", "exp:1", "--exporter-resources", "{"])
            .exporter()
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("--exporter-resources is not a ResourceRequirements in JSON"),
            "{err}"
        );
    }
}
