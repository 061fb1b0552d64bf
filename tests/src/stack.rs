//! The product on a local cluster, the way `make demo-sim` and the e2e suite
//! run it: the chart installed with helm in out-of-cluster mode
//! (`webhook.url`, `operator.enabled=false`), and the webhook and operator
//! running as local processes against the cluster, each under its chart
//! ServiceAccount's token (never the admin kubeconfig).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cluster::Cluster;
use crate::process::ManagedChild;
use crate::product::{binary, repo_root};
use crate::wait::{fatal, wait_for};

pub const RELEASE: &str = "redis-operator";
pub const NAMESPACE: &str = "redis-operator";
/// Names the chart gives things for release `redis-operator`.
pub const WEBHOOK_CONFIG: &str = "redis-operator";
pub const TLS_SECRET: &str = "redis-operator-webhook-tls";
/// The webhook CA's Secret, which only the operator may read.
pub const TLS_CA_SECRET: &str = "redis-operator-webhook-tls-ca";
pub const POLICY_CONFIGMAP: &str = "redis-operator-policy";
pub const LEASE: &str = "redis-operator-operator";
/// The chart's ServiceAccounts, which the local processes run as.
pub const OPERATOR_SA: &str = "redis-operator-operator";
pub const WEBHOOK_SA: &str = "redis-operator-webhook";
pub const CRD: &str = "redisclusters.redis.example.com";

use crate::cluster::free_port;

/// What to install and start.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Extra `--set` values for helm.
    pub helm_set: Vec<String>,
    pub start_webhook: bool,
    /// Operator processes to start (each with its own identity).
    pub operators: usize,
    /// Extra flags for every operator process.
    pub operator_args: Vec<String>,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            helm_set: Vec::new(),
            start_webhook: true,
            operators: 0,
            operator_args: Vec::new(),
        }
    }
}

pub struct Operator {
    pub identity: String,
    pub metrics_port: u16,
    pub child: ManagedChild,
}

pub struct Stack {
    dir: PathBuf,
    /// The operator's and the webhook's kubeconfigs: their chart
    /// ServiceAccounts' tokens, so that a missing or extra right in the
    /// chart's RBAC shows up in every suite.
    operator_kubeconfig: PathBuf,
    webhook_kubeconfig: PathBuf,
    pub webhook_port: u16,
    pub webhook_metrics_port: u16,
    webhook: Option<ManagedChild>,
    /// The operator's certificate keeper alone (`--controllers=false`),
    /// which keeps the webhook's certificates as the chart's operator does.
    cert_keeper: Option<ManagedChild>,
    pub operators: Vec<Operator>,
    operator_args: Vec<String>,
    started: usize,
}

impl Stack {
    /// `helm install`s the chart and starts the requested processes.
    pub async fn install(cluster: &Cluster, opts: StackOptions) -> Result<Stack> {
        let dir = cluster.tmp_dir().join("stack");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let webhook_port = free_port()?;
        let mut stack = Stack {
            operator_kubeconfig: dir.join("operator.kubeconfig"),
            webhook_kubeconfig: dir.join("webhook.kubeconfig"),
            dir,
            webhook_port,
            webhook_metrics_port: free_port()?,
            webhook: None,
            cert_keeper: None,
            operators: Vec::new(),
            operator_args: opts.operator_args.clone(),
            started: 0,
        };
        let mut args = vec![
            "install".to_string(),
            RELEASE.into(),
            chart_dir().display().to_string(),
            "-n".into(),
            NAMESPACE.into(),
            "--create-namespace".into(),
        ];
        args.extend(stack.local_values());
        for s in &opts.helm_set {
            args.push("--set".into());
            args.push(s.clone());
        }
        cluster.helm_ok(&args).await.context("helm install")?;
        service_account_kubeconfig(cluster, OPERATOR_SA, &stack.operator_kubeconfig).await?;
        service_account_kubeconfig(cluster, WEBHOOK_SA, &stack.webhook_kubeconfig).await?;
        cluster
            .kubectl_ok([
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                &format!("crd/{CRD}"),
            ])
            .await?;
        if opts.start_webhook {
            stack.start_webhook(cluster).await?;
        }
        for _ in 0..opts.operators {
            stack.start_operator(cluster).await?;
        }
        Ok(stack)
    }

    /// The values that point the chart at the local processes.
    pub fn local_values(&self) -> Vec<String> {
        vec![
            "--set".into(),
            format!("webhook.url=https://127.0.0.1:{}", self.webhook_port),
            "--set".into(),
            "operator.enabled=false".into(),
        ]
    }

    /// The policy the chart rendered, written where the processes read it.
    async fn policy_file(&self, cluster: &Cluster) -> Result<PathBuf> {
        let text = cluster
            .kubectl_ok([
                "get",
                "configmap",
                POLICY_CONFIGMAP,
                "-n",
                NAMESPACE,
                "-o",
                "jsonpath={.data.policy\\.yaml}",
            ])
            .await?;
        let path = self.dir.join("policy.yaml");
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Spawns one of our binaries with its ServiceAccount's kubeconfig and
    /// waits until `url` answers 2xx (failing at once if the process exits).
    async fn spawn_and_wait(
        &self,
        bin: &str,
        args: &[String],
        log: &std::path::Path,
        url: &str,
    ) -> Result<ManagedChild> {
        let kubeconfig = if bin == "redis-operator" {
            &self.operator_kubeconfig
        } else {
            &self.webhook_kubeconfig
        };
        self.spawn_with_kubeconfig(bin, args, log, url, kubeconfig)
            .await
    }

    async fn spawn_with_kubeconfig(
        &self,
        bin: &str,
        args: &[String],
        log: &std::path::Path,
        url: &str,
        kubeconfig: &Path,
    ) -> Result<ManagedChild> {
        let env = [("KUBECONFIG", kubeconfig.as_os_str())];
        let mut child = ManagedChild::spawn_with_env(bin, &binary(bin)?, args, &env, log)?;
        wait_for(&format!("{bin} at {url}"), Duration::from_secs(60), || {
            let alive = child.check_running();
            async move {
                alive.map_err(fatal)?;
                Ok(http_ok(url).await.then_some(()))
            }
        })
        .await?;
        Ok(child)
    }

    /// Arguments of a webhook process on the given ports, serving the
    /// certificate the operator keeps.
    fn webhook_args(&self, https: u16, http: u16, policy: &std::path::Path) -> Vec<String> {
        [
            "serve",
            "--bind",
            &format!("127.0.0.1:{https}"),
            "--metrics-bind",
            &format!("127.0.0.1:{http}"),
            "--policy",
            &policy.display().to_string(),
            "--cert-secret",
            TLS_SECRET,
            "--namespace",
            NAMESPACE,
            "--cert-check-seconds",
            "2",
            "--watch-storage-classes",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Starts the operator's webhook certificate keeper (and nothing else
    /// of the operator) under the operator's account, unless it runs.
    pub async fn start_cert_keeper(&mut self) -> Result<()> {
        if self.cert_keeper.is_some() {
            return Ok(());
        }
        let metrics_port = free_port()?;
        let args: Vec<String> = [
            "--controllers=false",
            "--metrics-bind",
            &format!("127.0.0.1:{metrics_port}"),
            "--operator-namespace",
            NAMESPACE,
            "--webhook-cert-secret",
            TLS_SECRET,
            "--webhook-extra-san",
            "127.0.0.1",
            "--validating-webhook",
            WEBHOOK_CONFIG,
            "--mutating-webhook",
            WEBHOOK_CONFIG,
            "--webhook-cert-check-seconds",
            "2",
            "--webhook-ca-propagation-seconds",
            "3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let log = self.dir.join("cert-keeper.log");
        let child = self
            .spawn_and_wait(
                "redis-operator",
                &args,
                &log,
                &format!("http://127.0.0.1:{metrics_port}/healthz"),
            )
            .await?;
        self.cert_keeper = Some(child);
        Ok(())
    }

    /// Spawns a webhook process on `https`/`http` and waits for `/readyz`.
    async fn spawn_webhook(
        &self,
        cluster: &Cluster,
        https: u16,
        http: u16,
    ) -> Result<ManagedChild> {
        let policy = self.policy_file(cluster).await?;
        let args = self.webhook_args(https, http, &policy);
        let log = self.dir.join(format!("webhook-{https}.log"));
        self.spawn_and_wait(
            "redis-webhook",
            &args,
            &log,
            &format!("http://127.0.0.1:{http}/readyz"),
        )
        .await
    }

    /// A webhook replica on its own ports (the configurations keep
    /// pointing at the first), started without waiting for a certificate:
    /// returns once `/healthz` answers, with its HTTPS and HTTP ports.
    pub async fn spawn_extra_webhook(&self, cluster: &Cluster) -> Result<(ManagedChild, u16, u16)> {
        let (https, http) = (free_port()?, free_port()?);
        let policy = self.policy_file(cluster).await?;
        let args = self.webhook_args(https, http, &policy);
        let log = self.dir.join(format!("webhook-{https}.log"));
        let child = self
            .spawn_and_wait(
                "redis-webhook",
                &args,
                &log,
                &format!("http://127.0.0.1:{http}/healthz"),
            )
            .await?;
        Ok((child, https, http))
    }

    /// Starts the webhook in self-managed certificate mode (with the
    /// certificate keeper) and waits until it is ready and both
    /// configurations carry its CA.
    pub async fn start_webhook(&mut self, cluster: &Cluster) -> Result<()> {
        self.stop_webhook();
        self.start_cert_keeper().await?;
        let child = self
            .spawn_webhook(cluster, self.webhook_port, self.webhook_metrics_port)
            .await?;
        self.webhook = Some(child);
        wait_for(
            "the caBundle to be injected",
            Duration::from_secs(60),
            || async {
                Ok(self
                    .ca_bundles(cluster)
                    .await?
                    .iter()
                    .all(|b| !b.is_empty())
                    .then_some(()))
            },
        )
        .await?;
        Ok(())
    }

    pub fn stop_webhook(&mut self) {
        self.webhook = None;
    }

    /// Errors when the webhook process has died.
    pub fn check_webhook(&mut self) -> Result<()> {
        match self.webhook.as_mut() {
            Some(c) => c.check_running(),
            None => bail!("the webhook is not running"),
        }
    }

    /// The caBundle of every webhook in both configurations.
    pub async fn ca_bundles(&self, cluster: &Cluster) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for kind in [
            "validatingwebhookconfiguration",
            "mutatingwebhookconfiguration",
        ] {
            let text = cluster
                .kubectl_ok([
                    "get",
                    kind,
                    WEBHOOK_CONFIG,
                    "-o",
                    "jsonpath={range .webhooks[*]}{.clientConfig.caBundle}{\"\\n\"}{end}",
                ])
                .await?;
            out.extend(text.lines().map(str::to_string));
        }
        Ok(out)
    }

    /// Starts one more operator process (leader election on the chart's Lease).
    pub async fn start_operator(&mut self, cluster: &Cluster) -> Result<usize> {
        self.start_operator_via(cluster, None).await
    }

    /// Starts one more operator process that reaches the API server at
    /// `server` (a proxy, say) instead of directly.
    pub async fn start_operator_via(
        &mut self,
        cluster: &Cluster,
        server: Option<&str>,
    ) -> Result<usize> {
        let policy = self.policy_file(cluster).await?;
        self.started += 1;
        let identity = format!("operator-{}", self.started);
        let metrics_port = free_port()?;
        let mut args: Vec<String> = [
            "--metrics-bind",
            &format!("127.0.0.1:{metrics_port}"),
            "--policy",
            &policy.display().to_string(),
            "--leader-election-namespace",
            NAMESPACE,
            "--lease-name",
            LEASE,
            "--identity",
            &identity,
            // As the chart's pod would know it (POD_NAMESPACE): the
            // NetworkPolicies let the operator in from there.
            "--operator-namespace",
            NAMESPACE,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(self.operator_args.iter().cloned());
        let log = self.dir.join(format!("{identity}.log"));
        let kubeconfig = match server {
            None => self.operator_kubeconfig.clone(),
            Some(server) => {
                let path = self.dir.join(format!("{identity}.kubeconfig"));
                write_token_kubeconfig(cluster, OPERATOR_SA, server, &path).await?;
                path
            }
        };
        let child = self
            .spawn_with_kubeconfig(
                "redis-operator",
                &args,
                &log,
                &format!("http://127.0.0.1:{metrics_port}/healthz"),
                &kubeconfig,
            )
            .await?;
        self.operators.push(Operator {
            identity,
            metrics_port,
            child,
        });
        Ok(self.operators.len() - 1)
    }

    /// Kills operator `i` with SIGKILL, as a crash would.
    pub fn kill_operator(&mut self, i: usize) -> Result<Operator> {
        if i >= self.operators.len() {
            bail!("no operator {i}");
        }
        let mut op = self.operators.remove(i);
        op.child.kill();
        Ok(op)
    }

    /// The operator's Prometheus text.
    pub async fn operator_metrics(&self, i: usize) -> Result<String> {
        let op = self.operators.get(i).context("no such operator")?;
        http_get(&format!("http://127.0.0.1:{}/metrics", op.metrics_port)).await
    }

    pub fn dir(&self) -> &PathBuf {
        &self.dir
    }
}

/// Kinds of the chart's cluster-scoped objects.
pub const CLUSTER_SCOPED_KINDS: &str = "clusterroles,clusterrolebindings,validatingwebhookconfigurations,mutatingwebhookconfigurations";

/// Names of the objects of `kinds` (a kubectl list) that carry this
/// release's instance label, in `namespace` or cluster-wide; one a line,
/// empty when none is left.
pub async fn release_objects(
    cluster: &Cluster,
    kinds: &str,
    namespace: Option<&str>,
) -> Result<String> {
    let selector = format!("app.kubernetes.io/instance={RELEASE}");
    let mut args = vec!["get", kinds, "-l", &selector, "-o", "name"];
    if let Some(ns) = namespace {
        args.extend(["-n", ns]);
    }
    Ok(cluster.kubectl_ok(args).await?.trim().to_string())
}

/// Writes a kubeconfig at `path` that authenticates as ServiceAccount
/// `sa` of the release namespace (a token from the TokenRequest API).
pub async fn service_account_kubeconfig(cluster: &Cluster, sa: &str, path: &Path) -> Result<()> {
    write_token_kubeconfig(cluster, sa, cluster.server_url(), path).await
}

/// [`service_account_kubeconfig`] with another address for the API server.
async fn write_token_kubeconfig(
    cluster: &Cluster,
    sa: &str,
    server: &str,
    path: &Path,
) -> Result<()> {
    let token = cluster
        .kubectl_ok(["create", "token", sa, "-n", NAMESPACE, "--duration=24h"])
        .await
        .with_context(|| format!("a token for ServiceAccount {NAMESPACE}/{sa}"))?;
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {
            "server": server,
            "certificate-authority": cluster.ca_cert_path(),
        }}],
        "users": [{"name": sa, "user": {"token": token.trim()}}],
        "contexts": [{"name": sa, "context": {"cluster": "local", "user": sa}}],
        "current-context": sa,
    });
    std::fs::write(path, serde_json::to_string_pretty(&config)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// The original tutorial's manifest, which must keep applying unchanged.
pub const ORIGINAL_MANIFEST: &str = r#"
apiVersion: redis.example.com/v1alpha1
kind: RedisCluster
metadata:
  name: redis-cluster
  namespace: default
spec:
  replicas: 1
  shard_count: 1
  scaling_threshold: 70.0
"#;

/// A RedisCluster in `default`; `spec` is indented YAML lines.
pub fn manifest(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: redis.example.com/v1alpha1\nkind: RedisCluster\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n{spec}"
    )
}

pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/redis-operator")
}

/// Plain HTTP GET on loopback; `true` on a 2xx.
pub async fn http_ok(url: &str) -> bool {
    crate::product::init_crypto();
    match reqwest::get(url).await {
        Ok(r) => r.status().is_success(),
        Err(_) => false,
    }
}

pub async fn http_get(url: &str) -> Result<String> {
    crate::product::init_crypto();
    let r = reqwest::get(url)
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = r.status();
    if !status.is_success() {
        bail!("GET {url}: HTTP {status}");
    }
    r.text().await.with_context(|| format!("reading {url}"))
}
