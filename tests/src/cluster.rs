//! A real local Kubernetes control plane: etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, kwok (simulated nodes and
//! kubelets) and optionally metrics-server, all on 127.0.0.1.
//!
//! With [`ClusterOptions::real_node`], the nodes are not simulated: the same
//! control plane runs with containerd, a kubelet and kube-proxy inside a
//! network namespace of its own (see [`crate::real_node`]), and kubectl and
//! helm run inside that namespace too.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::pki::{FRONT_PROXY_CLIENT_CN, Pki};
use crate::process::{ManagedChild, log_tail, stop_all};
use crate::real_node::{self, NODE_IP, RealNode};
use crate::tools::{Tools, go_module_dir, pinned_version};
use crate::wait::{fatal, wait_for};

/// How long a single kubectl or helm call may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Set to `1` to keep a cluster's temp dir (certs, logs, etcd data) after
/// a clean stop. It is always kept when the cluster is dropped while panicking
/// or when start fails.
pub const KEEP_TMP_ENV: &str = "CLUSTER_KEEP_TMP";

/// Options for [`Cluster::start`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Number of simulated (kwok) nodes, named `kwok-node-0`, `kwok-node-1`, ...
    pub nodes: usize,
    /// Start metrics-server and register `v1beta1.metrics.k8s.io`.
    pub metrics_server: bool,
    /// Pod IP range handed out by kwok. Must be loopback: tests may bind real
    /// servers to pod IPs, and nothing else may ever be dialled.
    pub pod_cidr: String,
    /// Upper bound for the whole start-up, readiness waits included.
    pub start_timeout: Duration,
    /// One real node (containerd, kubelet, kube-proxy) instead of kwok
    /// nodes; `nodes` and `pod_cidr` are then ignored. Needs root and
    /// `make deps image`.
    pub real_node: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            nodes: 1,
            metrics_server: false,
            pod_cidr: "127.1.0.0/16".into(),
            start_timeout: Duration::from_secs(180),
            real_node: false,
        }
    }
}

/// A running control plane. Dropping it stops every process it started.
pub struct Cluster {
    tools: Tools,
    tmp: PathBuf,
    kubeconfig: PathBuf,
    server_url: String,
    pki: Pki,
    nodes: Vec<String>,
    pod_cidr: String,
    children: Mutex<Vec<ManagedChild>>,
    keep_tmp: bool,
    startup: Duration,
    /// The real node, when there is one (torn down after the processes).
    real: Mutex<Option<RealNode>>,
    /// Its network namespace: every process and command runs inside it.
    netns: Option<PathBuf>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("server_url", &self.server_url)
            .field("tmp", &self.tmp)
            .finish_non_exhaustive()
    }
}

/// A free loopback port below the kernel's ephemeral range (32768 and up),
/// so that no outgoing connection takes it before the component binds it
/// (seen once: kube-apiserver refused to start on a port taken meanwhile);
/// the small race with other test processes picking ports is accepted.
pub(crate) fn free_port() -> Result<u16> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let seed = std::process::id().wrapping_mul(7_919);
    for _ in 0..SPAN {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let port = LOW + (seed.wrapping_add(n.wrapping_mul(2_654_435_761)) % SPAN);
        let port = u16::try_from(port).context("port arithmetic")?;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free loopback port in {LOW}..{}", LOW + SPAN)
}

fn make_tmp_dir() -> Result<PathBuf> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let base = std::env::temp_dir();
    loop {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let dir = base.join(format!(
            "redis-operator-cluster-{}-{}-{nanos:08x}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

impl Cluster {
    /// Starts a control plane and waits until it is usable: apiserver
    /// `/readyz` ok, the `default` ServiceAccount exists, all nodes are Ready
    /// and, if enabled, the metrics APIService is Available.
    ///
    /// On failure everything started so far is stopped, the temp dir is kept
    /// and the error carries the tail of the relevant log.
    pub async fn start(opts: ClusterOptions) -> Result<Cluster> {
        let tools = Tools::from_env()?;
        let started = Instant::now();
        let tmp = make_tmp_dir()?;
        let (pki, api_port, host, nodes, real) = if opts.real_node {
            for name in ["kubelet", "kube-proxy"] {
                tools.path(name)?;
            }
            let pki = Pki::generate_for(
                &tmp.join("pki"),
                &[NODE_IP.into(), real_node::KUBERNETES_SERVICE_IP.into()],
                &[real_node::NODE_NAME],
            )
            .context("generating certificates")?;
            let real = RealNode::prepare(&tmp)
                .with_context(|| format!("preparing the real node in {}", tmp.display()))?;
            let nodes = vec![real_node::NODE_NAME.to_string()];
            (
                pki,
                real_node::API_PORT,
                NODE_IP.to_string(),
                nodes,
                Some(real),
            )
        } else {
            let pki = Pki::generate(&tmp.join("pki")).context("generating certificates")?;
            let nodes = (0..opts.nodes).map(|i| format!("kwok-node-{i}")).collect();
            (pki, free_port()?, "127.0.0.1".to_string(), nodes, None)
        };
        let server_url = format!("https://{host}:{api_port}");
        let kubeconfig = tmp.join("kubeconfig");
        write_kubeconfig(&kubeconfig, &server_url, &pki)?;
        std::fs::create_dir_all(tmp.join("logs")).context("creating logs dir")?;
        let netns = real.as_ref().map(|r| r.netns().path().to_path_buf());
        let mut cluster = Cluster {
            tools,
            tmp,
            kubeconfig,
            server_url,
            pki,
            nodes,
            pod_cidr: if opts.real_node {
                real_node::POD_SUBNET.into()
            } else {
                opts.pod_cidr.clone()
            },
            children: Mutex::new(Vec::new()),
            // Kept when boot fails (below) or panics; removed when the
            // start is cancelled (`make demo` interrupted while starting).
            keep_tmp: std::env::var(KEEP_TMP_ENV).is_ok_and(|v| v == "1"),
            startup: Duration::ZERO,
            real: Mutex::new(real),
            netns,
        };
        let deadline = started + opts.start_timeout;
        match cluster.boot(&opts, api_port, deadline).await {
            Ok(()) => {
                cluster.startup = started.elapsed();
                eprintln!(
                    "harness: cluster ready in {:.1}s at {} (kubeconfig {})",
                    cluster.startup.as_secs_f64(),
                    cluster.server_url,
                    cluster.kubeconfig.display()
                );
                Ok(cluster)
            }
            Err(e) => {
                let tmp = cluster.tmp.clone();
                cluster.keep_tmp = true;
                cluster.shutdown();
                Err(e.context(format!(
                    "starting the test cluster failed; logs kept in {}",
                    tmp.join("logs").display()
                )))
            }
        }
    }

    async fn boot(&self, opts: &ClusterOptions, api_port: u16, deadline: Instant) -> Result<()> {
        let left = || deadline.saturating_duration_since(Instant::now());

        let real = self.netns.is_some();
        // Inside the node's own namespace every port is free: fixed ones.
        let port = |fixed: u16| if real { Ok(fixed) } else { free_port() };
        let host = if real {
            NODE_IP.to_string()
        } else {
            "127.0.0.1".to_string()
        };

        // etcd
        let etcd_port = port(real_node::ETCD_PORT)?;
        let peer_port = port(real_node::ETCD_PEER_PORT)?;
        let etcd_data = self.tmp.join("etcd");
        self.spawn(
            "etcd",
            vec![
                "--name=default".into(),
                format!("--data-dir={}", s(&etcd_data)),
                format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"),
                format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"),
                format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
                format!("--initial-cluster=default=http://127.0.0.1:{peer_port}"),
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
        )?;
        // containerd needs nothing else: it starts while etcd does.
        if real {
            let (program, args) = self.with_real(|r| Ok(r.containerd_command()))?;
            self.spawn_program("containerd", &program, args)?;
        }
        wait_for("etcd /health", left(), || async {
            self.check_alive()?;
            let body = if real {
                let netns = self.netns_handle()?;
                tokio::task::spawn_blocking(move || {
                    netns.http_get((std::net::Ipv4Addr::LOCALHOST, etcd_port), "/health")
                })
                .await
                .context("joining the etcd check")??
            } else {
                http_get_loopback(etcd_port, "/health").await?
            };
            Ok(body.contains(r#""health":"true""#).then_some(()))
        })
        .await
        .map_err(|e| self.with_log(e, "etcd"))?;

        // kube-apiserver
        let pki = self.pki.clone();
        let mut apiserver_mode = if real {
            let (cert, key) = (&pki.admin_cert, &pki.admin_key);
            vec![
                format!("--service-cluster-ip-range={}", real_node::SERVICE_CIDR),
                "--authorization-mode=Node,RBAC".into(),
                // `kubectl logs/exec` and metrics go to the kubelet, which
                // authenticates the apiserver by this certificate.
                format!("--kubelet-client-certificate={}", s(cert)),
                format!("--kubelet-client-key={}", s(key)),
                // There is no DNS for node names.
                "--kubelet-preferred-address-types=InternalIP".into(),
            ]
        } else {
            vec![
                // The default reconciler would publish 127.0.0.1 as the
                // `kubernetes` Service endpoint, which validation rejects.
                "--endpoint-reconciler-type=none".into(),
                // Loopback ClusterIPs: the apiserver dials a ClusterIP for
                // `service:` webhook/APIService refs, so an accidental one
                // gets "connection refused" instead of leaving the host.
                "--service-cluster-ip-range=127.2.0.0/16".into(),
                "--authorization-mode=RBAC".into(),
            ]
        };
        apiserver_mode.extend([
            format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
            format!("--bind-address={host}"),
            format!("--secure-port={api_port}"),
            format!("--advertise-address={host}"),
        ]);
        self.spawn(
            "kube-apiserver",
            [
                apiserver_mode,
                vec![
                    format!("--cert-dir={}", s(&self.tmp.join("apiserver-certs"))),
                    format!("--client-ca-file={}", s(&pki.ca_cert)),
                    format!("--tls-cert-file={}", s(&pki.serving_cert)),
                    format!("--tls-private-key-file={}", s(&pki.serving_key)),
                    format!("--service-account-issuer=https://{host}:{api_port}"),
                    format!("--service-account-key-file={}", s(&pki.sa_pub)),
                    format!("--service-account-signing-key-file={}", s(&pki.sa_key)),
                    "--allow-privileged=true".into(),
                    // Front proxy: lets the aggregator call metrics-server (and
                    // any other aggregated API) on behalf of the real user.
                    format!(
                        "--requestheader-client-ca-file={}",
                        s(&pki.front_proxy_ca_cert)
                    ),
                    format!("--requestheader-allowed-names={FRONT_PROXY_CLIENT_CN}"),
                    "--requestheader-username-headers=X-Remote-User".into(),
                    "--requestheader-group-headers=X-Remote-Group".into(),
                    "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
                    format!(
                        "--proxy-client-cert-file={}",
                        s(&pki.front_proxy_client_cert)
                    ),
                    format!("--proxy-client-key-file={}", s(&pki.front_proxy_client_key)),
                ],
            ]
            .concat(),
        )?;
        wait_for("kube-apiserver /readyz", left(), || async {
            self.check_alive()?;
            let out = self.kubectl(["get", "--raw", "/readyz"]).await?;
            Ok(
                (out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok")
                    .then_some(()),
            )
        })
        .await
        .map_err(|e| self.with_log(e, "kube-apiserver"))?;

        // Controllers, scheduler, kwok and metrics-server all talk only to the
        // apiserver, so they start together.
        let kc = s(&self.kubeconfig);
        self.spawn(
            "kube-controller-manager",
            vec![
                format!("--kubeconfig={kc}"),
                format!("--authentication-kubeconfig={kc}"),
                format!("--authorization-kubeconfig={kc}"),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", port(10257)?),
                // Needed by the serviceaccount token controller.
                format!("--service-account-private-key-file={}", s(&pki.sa_key)),
                format!("--root-ca-file={}", s(&pki.ca_cert)),
                "--controllers=*".into(),
                // The default 20 requests/s makes a StatefulSet controller
                // that needs minutes for a thousand pods; loopback etcd
                // takes far more.
                "--kube-api-qps=100".into(),
                "--kube-api-burst=200".into(),
            ],
        )?;
        self.spawn(
            "kube-scheduler",
            vec![
                format!("--kubeconfig={kc}"),
                format!("--authentication-kubeconfig={kc}"),
                format!("--authorization-kubeconfig={kc}"),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", port(10259)?),
                "--kube-api-qps=100".into(),
                "--kube-api-burst=200".into(),
            ],
        )?;
        if real {
            self.start_real_node(left()).await?;
        } else {
            self.start_kwok(opts).await?;
        }
        let metrics_port = port(real_node::METRICS_SERVER_PORT)?;
        if opts.metrics_server {
            self.spawn(
                "metrics-server",
                vec![
                    format!("--kubeconfig={kc}"),
                    format!("--authentication-kubeconfig={kc}"),
                    format!("--authorization-kubeconfig={kc}"),
                    format!("--bind-address={host}"),
                    format!("--secure-port={metrics_port}"),
                    format!("--tls-cert-file={}", s(&pki.serving_cert)),
                    format!("--tls-private-key-file={}", s(&pki.serving_key)),
                    // kwok, and a kubelet without a serving cert of ours,
                    // serve the resource-metrics endpoint with a cert that
                    // our CA does not sign.
                    "--kubelet-insecure-tls".into(),
                    "--kubelet-use-node-status-port".into(),
                    "--kubelet-preferred-address-types=InternalIP".into(),
                    // Must stay above --kubelet-request-timeout (default
                    // 10s, so metric-resolution=10s alone is rejected).
                    "--metric-resolution=10s".into(),
                    "--kubelet-request-timeout=5s".into(),
                ],
            )?;
        }

        if !real {
            self.kubectl_apply(&self.nodes_manifest())
                .await
                .context("creating nodes")?;
        }
        if opts.metrics_server {
            self.kubectl_apply(&metrics_api_manifest(&host, metrics_port))
                .await
                .context("registering metrics.k8s.io")?;
        }
        self.wait_until_usable(opts, left).await
    }

    /// kwok, which simulates every node and its kubelet.
    async fn start_kwok(&self, opts: &ClusterOptions) -> Result<()> {
        let pki = self.pki.clone();
        let kc = s(&self.kubeconfig);
        let kwok_port = free_port()?;
        let kwok_config = self.write_kwok_config()?;
        self.spawn(
            "kwok",
            vec![
                format!("--kubeconfig={kc}"),
                format!("--config={}", s(&kwok_config)),
                "--manage-all-nodes=true".into(),
                "--node-ip=127.0.0.1".into(),
                format!("--cidr={}", opts.pod_cidr),
                format!("--node-port={kwok_port}"),
                format!("--server-address=127.0.0.1:{kwok_port}"),
                format!("--tls-cert-file={}", s(&pki.serving_cert)),
                format!("--tls-private-key-file={}", s(&pki.serving_key)),
                // Without a KwokConfiguration this defaults to 0: no node
                // leases, so after node-monitor-grace-period (50s) the
                // controller-manager marks every node NotReady and taints it.
                "--node-lease-duration-seconds=40".into(),
            ],
        )?;
        Ok(())
    }

    /// The real node: images into containerd, the DNS responder, the
    /// kubelet and kube-proxy (containerd was started with etcd).
    async fn start_real_node(&self, timeout: Duration) -> Result<()> {
        wait_for("containerd", timeout, || async {
            self.check_alive()?;
            self.with_real(|r| Ok(r.containerd_ready().then_some(())))
        })
        .await
        .map_err(|e| self.with_log(e, "containerd"))?;
        self.with_real(|r| r.import_images())?;
        let kubectl = self.tools.path("kubectl")?;
        let kubeconfig = self.kubeconfig.clone();
        self.with_real(|r| r.start_dns(&kubectl, &kubeconfig))?;
        let pki = self.pki.clone();
        let (node_cert, node_key) = pki.nodes.first().context("no node certificate")?;
        let kubelet = self.tools.path("kubelet")?;
        let server = self.server_url.clone();
        let (program, args) = self.with_real(|r| {
            r.kubelet_command(&kubelet, &pki.ca_cert, node_cert, node_key, &server)
        })?;
        self.spawn_program("kubelet", &program, args)?;
        let kube_proxy = self.tools.path("kube-proxy")?;
        let (program, args) = self.with_real(|r| r.kube_proxy_command(&kube_proxy, &kubeconfig))?;
        self.spawn_program("kube-proxy", &program, args)?;
        Ok(())
    }

    /// kube-router, once the node is registered (it reads the Node at
    /// start and exits without it); waits until its firewall chains exist.
    async fn start_network_policies(&self, timeout: Duration) -> Result<()> {
        let kube_router = self.tools.path("kube-router")?;
        let (program, args) = RealNode::kube_router_command(&kube_router, &self.kubeconfig);
        self.spawn_program("kube-router", &program, args)?;
        let netns = self.netns_handle()?;
        wait_for("kube-router's firewall chains", timeout, || async {
            self.check_alive()?;
            let rules = netns.run_ok("/usr/sbin/iptables-save", &["-t", "filter"])?;
            Ok(rules.contains(":KUBE-ROUTER-FORWARD").then_some(()))
        })
        .await
        .map_err(|e| self.with_log(e, "kube-router"))
    }

    /// Waits for the default ServiceAccount, Ready nodes with leases and,
    /// when enabled, the metrics API.
    async fn wait_until_usable(
        &self,
        opts: &ClusterOptions,
        left: impl Fn() -> Duration,
    ) -> Result<()> {
        wait_for("ServiceAccount default/default", left(), || async {
            self.check_alive()?;
            let out = self
                .kubectl([
                    "get",
                    "serviceaccount",
                    "default",
                    "-n",
                    "default",
                    "-o",
                    "name",
                ])
                .await?;
            Ok(out.status.success().then_some(()))
        })
        .await
        .map_err(|e| self.with_log(e, "kube-controller-manager"))?;

        wait_for("all nodes Ready, with a heartbeat Lease", left(), || async {
            self.check_alive()?;
            let ready = self
                .kubectl_ok([
                    "get",
                    "nodes",
                    "-o",
                    r#"jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#,
                ])
                .await?;
            let ready = ready.lines().filter(|l| l.ends_with("=True")).count();
            let leases = self
                .kubectl_ok(["get", "leases", "-n", "kube-node-lease", "-o", "name"])
                .await?;
            let leases = self
                .nodes
                .iter()
                .filter(|n| leases.lines().any(|l| l == format!("lease.coordination.k8s.io/{n}")))
                .count();
            Ok((ready == self.nodes.len() && leases == self.nodes.len()).then_some(()))
        })
        .await
        .map_err(|e| self.with_log(e, if self.netns.is_some() { "kubelet" } else { "kwok" }))?;
        if self.netns.is_some() {
            self.start_network_policies(left()).await?;
        }

        if opts.metrics_server {
            wait_for(
                "APIService v1beta1.metrics.k8s.io Available",
                left(),
                || async {
                    self.check_alive()?;
                    let out = self
                        .kubectl_ok([
                            "get",
                            "apiservice",
                            "v1beta1.metrics.k8s.io",
                            "-o",
                            r#"jsonpath={.status.conditions[?(@.type=="Available")].status}"#,
                        ])
                        .await?;
                    Ok((out.trim() == "True").then_some(()))
                },
            )
            .await
            .map_err(|e| self.with_log(e, "metrics-server"))?;
        }
        Ok(())
    }

    fn spawn(&self, name: &str, args: Vec<String>) -> Result<()> {
        let bin = self.tools.path(name)?;
        self.spawn_program(name, &bin, args)
    }

    /// Spawns `program` (inside the node's namespace when there is one).
    /// Runs `program` in the real node's network namespace until the
    /// cluster stops (its log is `<name>.log`).
    pub fn spawn_in_node(&self, name: &str, program: &Path, args: Vec<String>) -> Result<()> {
        ensure!(
            self.netns.is_some(),
            "{name}: this cluster has no real node"
        );
        self.spawn_program(name, program, args)
    }

    fn spawn_program(&self, name: &str, program: &Path, args: Vec<String>) -> Result<()> {
        let (program, args) = self.in_netns(program, args);
        let log = self.log_path(name);
        let child = ManagedChild::spawn(name, &program, &args, &log)?;
        self.lock_children().push(child);
        Ok(())
    }

    /// `program args` as is, or wrapped in `nsenter --net=<node netns>`.
    fn in_netns(&self, program: &Path, args: Vec<String>) -> (PathBuf, Vec<String>) {
        match &self.netns {
            Some(ns) => {
                let mut all = vec![format!("--net={}", s(ns)), "--".into(), s(program)];
                all.extend(args);
                (PathBuf::from("/usr/bin/nsenter"), all)
            }
            None => (program.to_owned(), args),
        }
    }

    fn lock_real(&self) -> std::sync::MutexGuard<'_, Option<RealNode>> {
        self.real.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the real node; an error when this cluster has none.
    pub fn with_real<T>(&self, f: impl FnOnce(&mut RealNode) -> Result<T>) -> Result<T> {
        match self.lock_real().as_mut() {
            Some(r) => f(r),
            None => bail!("this cluster has no real node"),
        }
    }

    /// A handle on the node's network namespace, usable from any thread.
    pub fn netns_handle(&self) -> Result<real_node::NetnsHandle> {
        match &self.netns {
            Some(p) => Ok(real_node::NetnsHandle::new(p.clone())),
            None => bail!("this cluster has no real node"),
        }
    }

    fn lock_children(&self) -> std::sync::MutexGuard<'_, Vec<ManagedChild>> {
        // A panic while holding the lock leaves the list intact; keep going.
        self.children.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Name and pid of every running control-plane process.
    pub fn processes(&self) -> Vec<(String, u32)> {
        self.lock_children()
            .iter()
            .map(|c| (c.name().to_owned(), c.pid()))
            .collect()
    }

    /// Errors (with the log tail) if any control-plane process has exited.
    /// The error is [`fatal`], so a [`wait_for`] check can just use `?` on it.
    pub fn check_alive(&self) -> Result<()> {
        for c in self.lock_children().iter_mut() {
            c.check_running().map_err(fatal)?;
        }
        Ok(())
    }

    fn with_log(&self, e: anyhow::Error, component: &str) -> anyhow::Error {
        e.context(format!(
            "last lines of {}:\n{}",
            self.log_path(component).display(),
            self.log_tail(component, 40)
        ))
    }

    /// The kwok config: the upstream stages (node initialize + heartbeat with
    /// lease, pod ready/complete/delete) and resource-usage metrics, taken from
    /// the module cache copy of the pinned kwok version.
    fn write_kwok_config(&self) -> Result<PathBuf> {
        let version = pinned_version("KWOK_VERSION")?;
        let root = go_module_dir("sigs.k8s.io/kwok", &version)?.join("kustomize");
        let mut config = String::new();
        for rel in [
            "stage/node/fast/node-initialize.yaml",
            "stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
            "stage/pod/fast/pod-ready.yaml",
            "stage/pod/fast/pod-complete.yaml",
            "stage/pod/fast/pod-delete.yaml",
            "metrics/usage/usage-from-annotation.yaml",
            "metrics/resource/metrics-resource.yaml",
        ] {
            let p = root.join(rel);
            let doc =
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            let _ = write!(config, "---\n{}\n", doc.trim_end());
        }
        let path = self.tmp.join("kwok.yaml");
        std::fs::write(&path, config).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    fn nodes_manifest(&self) -> String {
        let mut m = String::new();
        for n in &self.nodes {
            let _ = write!(
                m,
                r#"---
apiVersion: v1
kind: Node
metadata:
  name: {n}
  labels:
    kubernetes.io/hostname: {n}
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
  annotations:
    node.alpha.kubernetes.io/ttl: "0"
    metrics.k8s.io/resource-metrics-path: /metrics/nodes/{n}/metrics/resource
status:
  allocatable: {{cpu: "32", memory: 256Gi, pods: "1000"}}
  capacity: {{cpu: "32", memory: 256Gi, pods: "1000"}}
"#
            );
        }
        m
    }

    /// Admin kubeconfig (client cert in group `system:masters`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// This cluster's own directory: certs (`pki/`), logs (`logs/`), etcd data.
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// PEM file of the CA that signed the apiserver's serving cert.
    pub fn ca_cert_path(&self) -> &Path {
        &self.pki.ca_cert
    }

    /// Names of the simulated nodes.
    pub fn node_names(&self) -> &[String] {
        &self.nodes
    }

    /// The loopback range pod IPs come from.
    pub fn pod_cidr(&self) -> &str {
        &self.pod_cidr
    }

    /// Time [`Cluster::start`] took.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The binaries this cluster runs.
    pub fn tools(&self) -> &Tools {
        &self.tools
    }

    /// Log file of a component (`etcd`, `kube-apiserver`, `kwok`, ...).
    pub fn log_path(&self, component: &str) -> PathBuf {
        self.tmp.join("logs").join(format!("{component}.log"))
    }

    /// The last `lines` lines of a component's log.
    pub fn log_tail(&self, component: &str, lines: usize) -> String {
        log_tail(&self.log_path(component), lines)
    }

    /// Runs kubectl against this cluster. Only fails if kubectl could not be
    /// run or timed out; check `status` for its result.
    pub async fn kubectl<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_kubectl(args, None).await
    }

    /// Runs kubectl and returns its stdout; a non-zero exit is an error that
    /// carries stderr.
    pub async fn kubectl_ok<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.run_kubectl(&args, None).await?;
        ok_stdout("kubectl", &args, out)
    }

    /// `kubectl apply -f -` with `manifest` on stdin; returns stdout.
    pub async fn kubectl_apply(&self, manifest: &str) -> Result<String> {
        let args = ["apply", "-f", "-"];
        let out = self.run_kubectl(args, Some(manifest)).await?;
        ok_stdout("kubectl", &args, out)
    }

    async fn run_kubectl<I, S>(&self, args: I, stdin: Option<&str>) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let (program, pre) = self.in_netns(&self.tools.path("kubectl")?, Vec::new());
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(pre)
            .arg(format!("--kubeconfig={}", s(&self.kubeconfig)))
            .args(args)
            // Keep kubectl's discovery cache out of $HOME.
            .env("KUBECACHEDIR", self.tmp.join("kube-cache"));
        run(cmd, stdin).await
    }

    /// Runs helm against this cluster, with helm's cache, config and data
    /// dirs inside this cluster's temp dir. Check `status` for its result.
    pub async fn helm<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let (program, pre) = self.in_netns(&self.tools.path("helm")?, Vec::new());
        let mut cmd = tokio::process::Command::new(program);
        let home = self.tmp.join("helm");
        cmd.args(pre)
            .arg(format!("--kubeconfig={}", s(&self.kubeconfig)))
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"));
        run(cmd, None).await
    }

    /// Runs helm and returns its stdout; a non-zero exit is an error that
    /// carries stderr.
    pub async fn helm_ok<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.helm(&args).await?;
        ok_stdout("helm", &args, out)
    }

    /// Keeps this cluster's temp dir (logs, certs) when it stops, e.g. after
    /// a failed check.
    pub fn keep_tmp(&mut self) {
        self.keep_tmp = true;
    }

    /// Stops every process (SIGTERM, then SIGKILL after a grace period) and
    /// removes the temp dir unless it is to be kept. Same as dropping.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let mut children = std::mem::take(&mut *self.lock_children());
        let real = self.lock_real().take();
        if children.is_empty() && real.is_none() {
            return;
        }
        if let Some(r) = &real {
            self.remove_pods(r);
        }
        stop_all(&mut children);
        if let Some(mut r) = real {
            r.cleanup();
        }
        let keep = self.keep_tmp || std::thread::panicking();
        if keep {
            eprintln!("harness: cluster files kept in {}", self.tmp.display());
        } else if let Err(e) = std::fs::remove_dir_all(&self.tmp) {
            eprintln!("harness: could not remove {}: {e}", self.tmp.display());
        }
    }
}

impl Cluster {
    /// A real node's pods, removed before its processes stop so that the
    /// kubelet tears down their containers, mounts and network: first the
    /// owners (so nothing recreates them), then the pods, then wait until
    /// containerd runs no task. Best effort, bounded; what is left is killed
    /// and removed by [`RealNode::cleanup`].
    fn remove_pods(&self, real: &RealNode) {
        let started = Instant::now();
        let kubectl = |args: &[&str]| {
            let Ok(bin) = self.tools.path("kubectl") else {
                return false;
            };
            let (program, pre) = self.in_netns(&bin, Vec::new());
            std::process::Command::new(program)
                .process_group(0)
                .args(pre)
                .arg(format!("--kubeconfig={}", s(&self.kubeconfig)))
                .arg("--request-timeout=10s")
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|st| st.success())
        };
        if !kubectl(&["get", "--raw", "/readyz"]) {
            eprintln!("harness: the apiserver is down; the real node's pods will be killed");
            return;
        }
        kubectl(&[
            "delete",
            "redisclusters.redis.example.com",
            "--all",
            "-A",
            "--wait=false",
        ]);
        kubectl(&[
            "delete",
            "deployments,statefulsets,replicasets,daemonsets,jobs",
            "--all",
            "-A",
            "--wait=false",
        ]);
        let deadline = started + Duration::from_secs(90);
        loop {
            kubectl(&[
                "delete",
                "pods",
                "--all",
                "-A",
                "--grace-period=1",
                "--wait=false",
            ]);
            match real.running_tasks() {
                Ok(0) => break,
                Ok(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(500));
                }
                Ok(n) => {
                    eprintln!("harness: {n} containers still running after 90 s; killing them");
                    break;
                }
                Err(e) => {
                    eprintln!("harness: {e:#}");
                    break;
                }
            }
        }
        eprintln!(
            "harness: real node's pods removed in {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn run(mut cmd: tokio::process::Command, stdin: Option<&str>) -> Result<Output> {
    let desc = format!("{:?}", cmd.as_std());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true)
    // Out of the terminal's process group: a Ctrl-C meant for `make demo`
    // must not kill the command mid-call; the caller decides how to stop.
    .process_group(0);
    let fut = async {
        let mut child = cmd.spawn().with_context(|| format!("running {desc}"))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())
                .await
                .with_context(|| format!("writing stdin of {desc}"))?;
        }
        child
            .wait_with_output()
            .await
            .with_context(|| format!("waiting for {desc}"))
    };
    tokio::time::timeout(COMMAND_TIMEOUT, fut)
        .await
        .with_context(|| format!("{desc} timed out after {COMMAND_TIMEOUT:?}"))?
}

fn ok_stdout<S: AsRef<OsStr>>(tool: &str, args: &[S], out: Output) -> Result<String> {
    if !out.status.success() {
        let args: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
        bail!(
            "{tool} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("{tool} printed non-UTF-8"))
}

/// Minimal HTTP/1.0 GET to a plain-HTTP loopback port (etcd's /health), so
/// the harness needs no HTTP client dependency.
async fn http_get_loopback(port: u16, path: &str) -> Result<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .context("sending request")?;
    let mut body = String::new();
    stream
        .read_to_string(&mut body)
        .await
        .context("reading response")?;
    Ok(body)
}

fn write_kubeconfig(path: &Path, server: &str, pki: &Pki) -> Result<()> {
    write_cert_kubeconfig(path, server, &pki.ca_cert, &pki.admin_cert, &pki.admin_key)
}

/// Writes a kubeconfig that authenticates with a client certificate.
pub fn write_cert_kubeconfig(
    path: &Path,
    server: &str,
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<()> {
    let text = format!(
        r#"apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: admin
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: local
  context:
    cluster: local
    user: admin
    namespace: default
current-context: local
"#,
        ca = s(ca),
        cert = s(cert),
        key = s(key),
    );
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// metrics-server runs on the host (or the real node), so the aggregator
/// reaches it through an ExternalName Service pointing at its address (no
/// endpoints needed).
fn metrics_api_manifest(host: &str, port: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: metrics-server
  namespace: kube-system
spec:
  type: ExternalName
  externalName: {host}
  ports:
  - name: https
    port: {port}
    protocol: TCP
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: v1beta1.metrics.k8s.io
spec:
  group: metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  insecureSkipTLSVerify: true
  service:
    name: metrics-server
    namespace: kube-system
    port: {port}
"#
    )
}
