//! A real node for the test cluster: containerd, a kubelet and kube-proxy,
//! with the control plane, all inside one network namespace that the run
//! creates and that has no link to the host's.
//!
//! [`crate::Cluster`] starts one when [`crate::ClusterOptions::real_node`] is
//! set; this module holds what is specific to it:
//! - [`NodeNetns`]: the namespace (held by an `unshare --net` process, so it
//!   has no mount and vanishes with its last process), a veth pair with both
//!   ends inside it as the node's "NIC", and ways to run commands and Rust
//!   code inside it;
//! - the configuration of containerd, the CNI bridge, the kubelet and
//!   kube-proxy;
//! - [`Images`]: the image tarballs `make image` builds, imported with `ctr`;
//! - a small DNS responder for `<service>.<namespace>.svc.cluster.local`
//!   (there is no CoreDNS image here);
//! - teardown that leaves nothing behind: pods first, then (after the
//!   processes stop) leftover shims, cgroups, mounts, and the kernel sysctls
//!   the kubelet rewrites.
//!
//! Everything needs root; a missing prerequisite is an error that says how to
//! get it, never a skip.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
// Commands run in a process group of their own (`process_group(0)`), so a
// terminal's Ctrl-C meant for `make demo` cannot cut a set-up or teardown
// step short; the caller decides how to stop.
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::process::ManagedChild;

/// The node's name (also its `kubernetes.io/hostname`).
pub const NODE_NAME: &str = "real-node-0";
/// The node's address, on one end of the veth pair inside the namespace. The
/// apiserver, the kubelet and metrics-server listen here.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 250, 1);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 250, 2);
/// Pod addresses (the CNI bridge's host-local range).
pub const POD_SUBNET: &str = "10.244.0.0/24";
const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// ClusterIPs; routable inside the namespace, unlike a loopback range, which
/// would land on each pod's own loopback.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// ClusterIP of the `kubernetes` Service (the first of [`SERVICE_CIDR`]).
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
/// The apiserver's port on [`NODE_IP`]. The namespace is new, so fixed ports
/// never collide.
pub const API_PORT: u16 = 6443;
const KUBELET_PORT: u16 = 10250;
pub const METRICS_SERVER_PORT: u16 = 4443;
pub const ETCD_PORT: u16 = 2379;
pub const ETCD_PEER_PORT: u16 = 2380;
const CLUSTER_DOMAIN: &str = "cluster.local";
/// How long the DNS responder remembers an answer (a missing Service too).
const DNS_CACHE: Duration = Duration::from_secs(5);
/// libcni's cache directory (fixed in containerd 1.6's CRI plugin).
const CNI_CACHE: &str = "/var/lib/cni";
/// Where the kubelet links container logs (fixed in the kubelet).
const CONTAINER_LOG_LINKS: &str = "/var/log/containers";

/// Environment variable naming the directory of image tarballs (default
/// `target/images`, where `make image` writes them).
pub const IMAGES_ENV: &str = "REAL_NODE_IMAGES";

/// The kernel sysctls the kubelet sets when `protectKernelDefaults` is false
/// (pkg/kubelet/cm/container_manager_linux.go, setupKernelTunables). They are
/// global, not per network namespace: saved before the kubelet starts and
/// written back on teardown.
const KUBELET_SYSCTLS: &[&str] = &[
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

/// System programs a real node needs, with the Debian package that has each.
const HOST_PROGRAMS: &[(&str, &str)] = &[
    ("/usr/bin/containerd", "containerd"),
    ("/usr/bin/ctr", "containerd"),
    ("/usr/sbin/runc", "runc"),
    ("/usr/lib/cni/bridge", "containernetworking-plugins"),
    ("/usr/lib/cni/host-local", "containernetworking-plugins"),
    ("/usr/lib/cni/loopback", "containernetworking-plugins"),
    ("/usr/sbin/iptables", "iptables"),
    ("/usr/sbin/ipset", "ipset"),
    ("/usr/sbin/ip", "iproute2"),
    ("/usr/bin/nsenter", "util-linux"),
    ("/usr/bin/unshare", "util-linux"),
    ("/usr/sbin/conntrack", "conntrack"),
];

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Fails, naming the package to install, if a real node cannot run here.
pub fn check_prerequisites() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("a real node needs root (network namespace, containerd, kubelet)");
    }
    let missing: Vec<String> = HOST_PROGRAMS
        .iter()
        .filter(|(p, _)| !Path::new(p).exists())
        .map(|(p, pkg)| format!("{p} (Debian package {pkg})"))
        .collect();
    if !missing.is_empty() {
        bail!("a real node needs {}: run `make deps`", missing.join(", "));
    }
    Ok(())
}

/// The image tarballs built by `make image` and the names they carry.
#[derive(Debug, Clone)]
pub struct Images {
    pub dir: PathBuf,
    /// `localhost/redis-operator:<appVersion>`: both of our binaries.
    pub product: String,
    /// The sandbox (pause) image.
    pub pause: String,
    /// Test-only Redis image from Debian's redis-server (with `sh`).
    pub redis: String,
    /// Test-only curl image (with `sh`), for `helm test`.
    pub curl: String,
    /// Test-only Redis exporter image, built from its Go module.
    pub exporter: String,
}

impl Images {
    /// Reads `images.env` in [`IMAGES_ENV`] or `target/images`.
    pub fn from_env() -> Result<Self> {
        let dir = std::env::var_os(IMAGES_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::product::target_dir().join("images"));
        let env = dir.join("images.env");
        let text = std::fs::read_to_string(&env).with_context(|| {
            format!(
                "reading {}: build the images with `make image` (or set {IMAGES_ENV})",
                env.display()
            )
        })?;
        let vars: BTreeMap<&str, &str> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        let get = |k: &str| {
            vars.get(k)
                .map(|v| v.to_string())
                .with_context(|| format!("{k} missing in {}", env.display()))
        };
        let images = Self {
            product: get("PRODUCT_IMAGE")?,
            pause: get("PAUSE_IMAGE")?,
            redis: get("REDIS_IMAGE")?,
            curl: get("CURL_IMAGE")?,
            exporter: get("EXPORTER_IMAGE")?,
            dir,
        };
        for t in images.tarballs() {
            if !t.is_file() {
                bail!("{} is missing: run `make image`", t.display());
            }
        }
        Ok(images)
    }

    fn tarballs(&self) -> Vec<PathBuf> {
        [
            "redis-operator",
            "pause",
            "redis-debian",
            "curl-debian",
            "redis-exporter",
        ]
        .iter()
        .map(|n| self.dir.join(format!("{n}.tar")))
        .collect()
    }

    /// `(repository, tag)` of an image reference.
    pub fn split(reference: &str) -> (&str, &str) {
        match reference.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, tag),
            _ => (reference, "latest"),
        }
    }
}

/// A network namespace created for this run, held open by an
/// `unshare --net` process (no bind mount to clean up: it disappears with
/// the last process inside it).
pub struct NodeNetns {
    holder: ManagedChild,
    handle: NetnsHandle,
}

impl NodeNetns {
    /// Creates the namespace and its network: loopback, a veth pair with
    /// both ends inside (the node's address on one end), a default route on
    /// it so that ClusterIPs route (kube-proxy rewrites them), forwarding on.
    pub fn create(log: &Path) -> Result<Self> {
        let mut holder = ManagedChild::spawn(
            "netns-holder",
            Path::new("/usr/bin/unshare"),
            &[
                "--net".into(),
                "--".into(),
                "sleep".into(),
                "infinity".into(),
            ],
            log,
        )?;
        let path = PathBuf::from(format!("/proc/{}/ns/net", holder.pid()));
        // unshare(2) has run once the holder's namespace differs from ours.
        let ours = std::fs::read_link("/proc/self/ns/net").context("reading our netns")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            holder.check_running()?;
            if std::fs::read_link(&path).is_ok_and(|l| l != ours) {
                break;
            }
            if Instant::now() > deadline {
                bail!("unshare --net did not create a namespace within 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let netns = Self {
            holder,
            handle: NetnsHandle::new(path),
        };
        let node = format!("{NODE_IP}/24");
        let peer = format!("{PEER_IP}/24");
        for args in [
            vec!["link", "set", "lo", "up"],
            vec![
                "link",
                "add",
                "node0",
                "type",
                "veth",
                "peer",
                "name",
                "node0-peer",
            ],
            vec!["addr", "add", &node, "dev", "node0"],
            vec!["addr", "add", &peer, "dev", "node0-peer"],
            vec!["link", "set", "node0", "up"],
            vec!["link", "set", "node0-peer", "up"],
            vec!["route", "add", "default", "dev", "node0"],
        ] {
            netns.handle.run_ok("/usr/sbin/ip", &args)?;
        }
        netns
            .handle
            .run_ok("/usr/sbin/sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        Ok(netns)
    }

    /// `/proc/<holder>/ns/net`.
    pub fn path(&self) -> &Path {
        &self.handle.path
    }

    pub fn handle(&self) -> &NetnsHandle {
        &self.handle
    }

    pub fn check_running(&mut self) -> Result<()> {
        self.holder.check_running()
    }
}

/// The path of the node's network namespace, with ways to run commands and
/// Rust code inside it. Cheap to clone and send to other threads.
#[derive(Debug, Clone)]
pub struct NetnsHandle {
    path: PathBuf,
}

impl NetnsHandle {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The arguments that run `program args...` inside the namespace:
    /// `nsenter --net=<path> -- program args...` (not `ip netns exec`, which
    /// also remounts /sys and hides the cgroup mounts from runc).
    pub fn wrap(&self, program: &Path, args: &[String]) -> (PathBuf, Vec<String>) {
        let mut all = vec![format!("--net={}", s(&self.path)), "--".into(), s(program)];
        all.extend(args.iter().cloned());
        (PathBuf::from("/usr/bin/nsenter"), all)
    }

    /// Runs a command inside the namespace; errors with its output if it fails.
    pub fn run_ok(&self, program: &str, args: &[&str]) -> Result<String> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let (p, a) = self.wrap(Path::new(program), &args);
        let out = Command::new(&p)
            .process_group(0)
            .args(&a)
            .output()
            .with_context(|| format!("running {program} in the node's netns"))?;
        if !out.status.success() {
            bail!(
                "{program} {} failed in the node's netns ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `f` on a new thread that has joined the namespace, so that the
    /// sockets it opens live there. Blocks until `f` returns.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let file = File::open(&self.path).with_context(|| format!("opening {}", s(&self.path)))?;
        std::thread::scope(|scope| {
            scope
                .spawn(move || -> Result<T> {
                    // SAFETY: setns on a valid namespace fd only affects
                    // this thread, which ends with `f`.
                    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        return Err(std::io::Error::last_os_error()).context("setns");
                    }
                    Ok(f())
                })
                .join()
                .map_err(|_| anyhow::anyhow!("the thread in the node's netns panicked"))?
        })
    }

    /// Runs an async block on its own runtime, on a thread inside the
    /// namespace, without blocking the caller's runtime.
    pub async fn run_async<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            me.run(move || -> Result<T> {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("building a runtime")?
                    .block_on(f())
            })?
        })
        .await
        .context("joining the netns thread")?
    }

    /// Plain HTTP/1.0 GET inside the namespace (etcd's /health).
    pub fn http_get(&self, addr: (Ipv4Addr, u16), path: &str) -> Result<String> {
        self.run(move || -> Result<String> {
            let mut stream = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(2))
                .with_context(|| format!("connecting to {}:{}", addr.0, addr.1))?;
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .context("setting a timeout")?;
            write!(stream, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", addr.0)
                .context("sending request")?;
            let mut body = String::new();
            stream
                .read_to_string(&mut body)
                .context("reading response")?;
            Ok(body)
        })?
    }
}

/// What a real node leaves on the host, and puts back on teardown.
pub struct RealNode {
    netns: NodeNetns,
    dir: PathBuf,
    cgroup_name: String,
    saved_sysctls: Vec<(PathBuf, String)>,
    pub images: Images,
    dns: Option<DnsResponder>,
    /// Whether /run/containerd existed before (containerd's shims put their
    /// sockets in /run/containerd/s whatever the configured state dir).
    had_run_containerd: bool,
    /// Whether /var/log/containers existed before: the kubelet links each
    /// container's log there whatever `podLogsDir` says.
    had_container_logs: bool,
    /// Whether /var/lib/cni existed before: libcni caches each attachment's
    /// result there whatever containerd's configuration says.
    had_cni_cache: bool,
    /// Held while this node exists: a real node uses host-wide paths
    /// (/run/containerd, /var/lib/cni, sysctls), so two runs on one machine
    /// would tear down each other's state. Released when dropped.
    _host_lock: std::fs::File,
}

/// The host-wide lock that serialises real-node runs on one machine.
const HOST_LOCK: &str = "/run/lock/redis-operator-real-node.lock";

fn take_host_lock() -> Result<std::fs::File> {
    let dir = Path::new(HOST_LOCK).parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", s(dir)))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(HOST_LOCK)
        .with_context(|| format!("opening {HOST_LOCK}"))?;
    if file.try_lock().is_err() {
        eprintln!("harness: another real-node run holds {HOST_LOCK}; waiting for it to end");
        file.lock()
            .with_context(|| format!("locking {HOST_LOCK}"))?;
    }
    Ok(file)
}

impl std::fmt::Debug for RealNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealNode")
            .field("netns", &self.netns.path())
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl RealNode {
    /// Checks prerequisites, creates the namespace, saves the sysctls the
    /// kubelet will rewrite and writes every config file under `dir`.
    pub fn prepare(dir: &Path) -> Result<Self> {
        check_prerequisites()?;
        let host_lock = take_host_lock()?;
        let images = Images::from_env()?;
        std::fs::create_dir_all(dir.join("logs")).context("creating logs dir")?;
        let netns = NodeNetns::create(&dir.join("logs/netns-holder.log"))?;
        let mut saved_sysctls = Vec::new();
        for key in KUBELET_SYSCTLS {
            let p = Path::new("/proc/sys").join(key);
            let v = std::fs::read_to_string(&p).with_context(|| format!("reading {}", s(&p)))?;
            saved_sysctls.push((p, v.trim().to_owned()));
        }
        let cgroup_name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .context("cluster dir has no name")?;
        let node = Self {
            netns,
            dir: dir.to_owned(),
            cgroup_name,
            saved_sysctls,
            images,
            dns: None,
            had_run_containerd: Path::new("/run/containerd").exists(),
            had_container_logs: Path::new(CONTAINER_LOG_LINKS).exists(),
            had_cni_cache: Path::new(CNI_CACHE).exists(),
            _host_lock: host_lock,
        };
        node.write_configs()?;
        create_cgroups(&node.cgroup_name)?;
        Ok(node)
    }

    pub fn netns(&self) -> &NodeNetns {
        &self.netns
    }

    pub fn netns_mut(&mut self) -> &mut NodeNetns {
        &mut self.netns
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join("node").join(rel)
    }

    /// containerd's socket.
    pub fn containerd_socket(&self) -> PathBuf {
        self.path("containerd/containerd.sock")
    }

    fn write_configs(&self) -> Result<()> {
        for d in ["containerd", "cni/net.d", "cni/ipam", "kubelet", "runc"] {
            std::fs::create_dir_all(self.path(d)).context("creating node dirs")?;
        }
        let write = |rel: &str, text: String| -> Result<()> {
            let p = self.path(rel);
            std::fs::write(&p, text).with_context(|| format!("writing {}", s(&p)))
        };
        write(
            "containerd/config.toml",
            format!(
                r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{sock}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # Root here lacks CAP_SYS_RESOURCE: the negative oom_score_adj Kubernetes
  # asks for would make every runc create fail.
  restrict_oom_score_adj = true
  # Pod network namespaces are mounted under our state dir, not /run/netns.
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{runc}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
"#,
                root = s(&self.path("containerd/root")),
                state = s(&self.path("containerd/state")),
                sock = s(&self.containerd_socket()),
                opt = s(&self.path("containerd/opt")),
                pause = self.images.pause,
                runc = s(&self.path("runc")),
                cni = s(&self.path("cni/net.d")),
            ),
        )?;
        write(
            "cni/net.d/10-bridge.conflist",
            format!(
                r#"{{
  "cniVersion": "0.4.0",
  "name": "real-node",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "isDefaultGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {{
        "type": "host-local",
        "ranges": [[{{"subnet": "{POD_SUBNET}"}}]],
        "dataDir": "{ipam}"
      }}
    }}
  ]
}}
"#,
                ipam = s(&self.path("cni/ipam"))
            ),
        )?;
        Ok(())
    }

    /// containerd's program and arguments.
    pub fn containerd_command(&self) -> (PathBuf, Vec<String>) {
        (
            PathBuf::from("/usr/bin/containerd"),
            vec![
                format!("--config={}", s(&self.path("containerd/config.toml"))),
                "--log-level=warn".into(),
            ],
        )
    }

    /// Imports every image tarball into containerd's `k8s.io` namespace.
    pub fn import_images(&self) -> Result<()> {
        for t in self.images.tarballs() {
            let started = Instant::now();
            let out = Command::new("/usr/bin/ctr")
                .process_group(0)
                .arg(format!("--address={}", s(&self.containerd_socket())))
                .args(["-n", "k8s.io", "images", "import"])
                .arg(&t)
                .output()
                .context("running ctr images import")?;
            if !out.status.success() {
                bail!(
                    "ctr images import {} failed: {}",
                    t.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            eprintln!(
                "harness: imported {} in {:.1}s",
                t.display(),
                started.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }

    /// True once containerd answers on its socket.
    pub fn containerd_ready(&self) -> bool {
        Command::new("/usr/bin/ctr")
            .process_group(0)
            .arg(format!("--address={}", s(&self.containerd_socket())))
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Running containerd tasks (containers and sandboxes) in `k8s.io`.
    pub fn running_tasks(&self) -> Result<usize> {
        let out = Command::new("/usr/bin/ctr")
            .process_group(0)
            .arg(format!("--address={}", s(&self.containerd_socket())))
            .args(["-n", "k8s.io", "tasks", "ls", "-q"])
            .output()
            .context("running ctr tasks ls")?;
        if !out.status.success() {
            bail!("ctr tasks ls: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count())
    }

    /// The kubelet's program and arguments (its config file is written here).
    pub fn kubelet_command(
        &self,
        kubelet: &Path,
        ca: &Path,
        node_cert: &Path,
        node_key: &Path,
        server: &str,
    ) -> Result<(PathBuf, Vec<String>)> {
        let kubeconfig = self.path("kubelet/kubeconfig");
        crate::cluster::write_cert_kubeconfig(&kubeconfig, server, ca, node_cert, node_key)?;
        let config = self.path("kubelet/config.yaml");
        let text = format!(
            r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# 1.35+ refuse cgroup v1 unless told otherwise; this machine is v1 (hybrid).
failCgroupV1: false
cgroupDriver: cgroupfs
# Everything the pods get lives under this run's own cgroup.
cgroupRoot: /{cgroup}
containerRuntimeEndpoint: unix://{sock}
address: {NODE_IP}
port: {KUBELET_PORT}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization:
  mode: Webhook
clusterDomain: {CLUSTER_DOMAIN}
clusterDNS: [{NODE_IP}]
resolvConf: ""
# Container logs stay in this run's directory (default /var/log/pods).
podLogsDir: {logs}
failSwapOn: false
# Imported images cannot be pulled again: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
serializeImagePulls: false
maxPods: 110
syncFrequency: 10s
fileCheckFrequency: 10s
nodeStatusUpdateFrequency: 5s
"#,
            cgroup = self.cgroup_name,
            logs = s(&self.path("pod-logs")),
            sock = s(&self.containerd_socket()),
            ca = s(ca),
        );
        std::fs::write(&config, text).with_context(|| format!("writing {}", s(&config)))?;
        Ok((
            kubelet.to_owned(),
            vec![
                format!("--config={}", s(&config)),
                format!("--kubeconfig={}", s(&kubeconfig)),
                format!("--root-dir={}", s(&self.path("kubelet/root"))),
                format!("--cert-dir={}", s(&self.path("kubelet/pki"))),
                format!("--hostname-override={NODE_NAME}"),
                format!("--node-ip={NODE_IP}"),
                "--v=1".into(),
            ],
        ))
    }

    /// kube-proxy's program and arguments, iptables mode.
    pub fn kube_proxy_command(
        &self,
        kube_proxy: &Path,
        kubeconfig: &Path,
    ) -> Result<(PathBuf, Vec<String>)> {
        let config = self.path("kube-proxy.yaml");
        let text = format!(
            r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {kc}
mode: iptables
clusterCIDR: {CLUSTER_CIDR}
hostnameOverride: {NODE_NAME}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# Zero: write no conntrack sysctl (nf_conntrack_max is global).
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
  udpTimeout: 0s
  udpStreamTimeout: 0s
"#,
            kc = s(kubeconfig)
        );
        std::fs::write(&config, text).with_context(|| format!("writing {}", s(&config)))?;
        Ok((
            kube_proxy.to_owned(),
            vec![format!("--config={}", s(&config)), "--v=1".into()],
        ))
    }

    /// kube-router's program and arguments: its network policy controller
    /// only (no routes, no service proxy, no CNI config), so that this node
    /// enforces NetworkPolicies as a production cluster's CNI does. The
    /// bridge CNI enforces none. It programs iptables and ipsets inside the
    /// node's namespace only, and sets no sysctl.
    pub fn kube_router_command(kube_router: &Path, kubeconfig: &Path) -> (PathBuf, Vec<String>) {
        let args = [
            "--run-firewall=true",
            "--run-router=false",
            "--run-service-proxy=false",
            "--run-loadbalancer=false",
            "--enable-cni=false",
            "--enable-pod-egress=false",
            "--enable-ipv4=true",
            "--enable-ipv6=false",
            "--health-port=0",
            "--metrics-port=0",
            "--v=1",
        ];
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.extend([
            format!("--kubeconfig={}", s(kubeconfig)),
            format!("--hostname-override={NODE_NAME}"),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        ]);
        (kube_router.to_owned(), args)
    }

    /// Starts the DNS responder on [`NODE_IP`]:53 inside the namespace.
    pub fn start_dns(&mut self, kubectl: &Path, kubeconfig: &Path) -> Result<()> {
        let socket = self.netns.handle().run(|| UdpSocket::bind((NODE_IP, 53)))?;
        let socket = socket.context("binding the DNS responder")?;
        self.dns = Some(DnsResponder::start(
            socket,
            kubectl.to_owned(),
            kubeconfig.to_owned(),
            self.netns.path().to_path_buf(),
        )?);
        Ok(())
    }

    /// After every process has stopped: kills what containerd's shims left
    /// running, removes this run's cgroups, unmounts what is still mounted
    /// under the cluster dir, and writes back the saved sysctls. Each step
    /// runs even when an earlier one fails; failures are reported.
    pub fn cleanup(&mut self) {
        self.dns = None;
        let sock = s(&self.containerd_socket());
        let mut problems = Vec::new();
        // Shims outlive containerd; they carry its address on their command line.
        for pid in pids_with_arg(&sock) {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        if let Err(e) = remove_cgroups(&self.cgroup_name) {
            problems.push(format!("cgroups: {e:#}"));
        }
        if let Err(e) = unmount_under(&self.dir) {
            problems.push(format!("mounts: {e:#}"));
        }
        // The kubelet's links to our containers' logs.
        let logs = self.path("pod-logs");
        if let Ok(entries) = std::fs::read_dir(CONTAINER_LOG_LINKS) {
            for e in entries.flatten() {
                if std::fs::read_link(e.path()).is_ok_and(|t| t.starts_with(&logs))
                    && let Err(err) = std::fs::remove_file(e.path())
                {
                    problems.push(format!("removing {}: {err}", s(&e.path())));
                }
            }
        }
        if !self.had_container_logs
            && let Err(e) = std::fs::remove_dir(CONTAINER_LOG_LINKS)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            problems.push(format!("removing {CONTAINER_LOG_LINKS}: {e}"));
        }
        // libcni's cached results of our pods (they name our netns paths).
        let ours = s(&self.dir);
        let results = Path::new(CNI_CACHE).join("results");
        if let Ok(entries) = std::fs::read_dir(&results) {
            for e in entries.flatten() {
                if std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains(&ours))
                    && let Err(err) = std::fs::remove_file(e.path())
                {
                    problems.push(format!("removing {}: {err}", s(&e.path())));
                }
            }
        }
        if !self.had_cni_cache {
            for d in [results.as_path(), Path::new(CNI_CACHE)] {
                if let Err(e) = std::fs::remove_dir(d)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    problems.push(format!("removing {}: {e}", s(d)));
                }
            }
        }
        if !self.had_run_containerd {
            // Only empty directories go: a socket left there is reported.
            for d in ["/run/containerd/s", "/run/containerd"] {
                if let Err(e) = std::fs::remove_dir(d)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    problems.push(format!("removing {d}: {e}"));
                }
            }
        }
        for (p, v) in &self.saved_sysctls {
            let now = std::fs::read_to_string(p).unwrap_or_default();
            if now.trim() != v
                && let Err(e) = std::fs::write(p, v)
            {
                problems.push(format!("restoring {} to {v}: {e}", s(p)));
            }
        }
        if !problems.is_empty() {
            eprintln!("harness: real-node cleanup: {}", problems.join("; "));
        }
    }
}

/// Pids whose command line has `arg` as one argument.
fn pids_with_arg(arg: &str) -> Vec<libc::pid_t> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == arg.as_bytes()))
        })
        .collect()
}

/// Every cgroup hierarchy's mount point (v1 controllers and the v2 one).
fn cgroup_mounts() -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            let mount = left.split_whitespace().nth(4)?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| PathBuf::from(mount))
        })
        .collect())
}

/// Creates `/<name>` in every hierarchy: the kubelet's `cgroupRoot` must
/// exist. A new cpuset cgroup has no CPUs or memory nodes until given its
/// parent's.
fn create_cgroups(name: &str) -> Result<()> {
    for mount in cgroup_mounts()? {
        let dir = mount.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating cgroup {}", s(&dir)))?;
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let parent = mount.join(file);
            if parent.exists() && !mount.join("cgroup.subtree_control").exists() {
                let v = std::fs::read_to_string(&parent)
                    .with_context(|| format!("reading {}", s(&parent)))?;
                std::fs::write(dir.join(file), v.trim())
                    .with_context(|| format!("writing {}/{file}", s(&dir)))?;
            }
        }
    }
    Ok(())
}

/// Kills every process left in `/<name>` of each hierarchy and removes its
/// cgroups, deepest first.
fn remove_cgroups(name: &str) -> Result<()> {
    let mut dirs = Vec::new();
    for mount in cgroup_mounts()? {
        collect_dirs(&mount.join(name), &mut dirs);
    }
    // Kill first (in every hierarchy), then wait for each to empty.
    for d in &dirs {
        for pid in cgroup_pids(d) {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    let mut failed = Vec::new();
    for d in &dirs {
        let deadline = Instant::now() + Duration::from_secs(10);
        // A killed process leaves its cgroup when the kernel has reaped it.
        while !cgroup_pids(d).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Err(e) = std::fs::remove_dir(d) {
            failed.push(format!("{}: {e}", s(d)));
        }
    }
    if !failed.is_empty() {
        bail!("could not remove {}", failed.join(", "));
    }
    Ok(())
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    out.push(dir.to_owned());
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect_dirs(&e.path(), out);
        }
    }
}

fn cgroup_pids(dir: &Path) -> Vec<libc::pid_t> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Mount points under `dir` (longest first), from /proc/self/mountinfo.
pub fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        // mountinfo escapes spaces and the like as octal.
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    found.dedup();
    Ok(found)
}

fn unmount_under(dir: &Path) -> Result<()> {
    let mut failed = Vec::new();
    for m in mounts_under(dir)? {
        let c = std::ffi::CString::new(m.as_os_str().as_encoded_bytes())
            .context("mount point with a NUL")?;
        // SAFETY: c is a valid NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            failed.push(format!("{}: {}", s(&m), std::io::Error::last_os_error()));
        }
    }
    if !failed.is_empty() {
        bail!("could not unmount {}", failed.join(", "));
    }
    Ok(())
}

/// Answers A queries for `<service>.<namespace>.svc.cluster.local` with the
/// Service's ClusterIP (looked up with kubectl), NXDOMAIN for the rest. Enough
/// for pods that reach Services by name (`helm test`); there is no CoreDNS
/// image on this machine.
struct DnsResponder {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DnsResponder {
    fn start(
        socket: UdpSocket,
        kubectl: PathBuf,
        kubeconfig: PathBuf,
        netns: PathBuf,
    ) -> Result<Self> {
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .context("setting the DNS socket timeout")?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("node-dns".into())
            .spawn(move || {
                let mut buf = [0u8; 512];
                // A Service's ClusterIP never changes; a short cache spares
                // a kubectl run per query (clients ask A and AAAA each time).
                let mut cache: BTreeMap<String, (Instant, Option<Ipv4Addr>)> = BTreeMap::new();
                while !flag.load(Ordering::Relaxed) {
                    let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    let query = &buf[..n];
                    let lookup = |name: &str| {
                        if let Some((at, ip)) = cache.get(name)
                            && at.elapsed() < DNS_CACHE
                        {
                            return *ip;
                        }
                        let ip = cluster_ip(&kubectl, &kubeconfig, &netns, name);
                        cache.insert(name.to_owned(), (Instant::now(), ip));
                        ip
                    };
                    if let Some(reply) = dns_reply(query, lookup) {
                        let _ = socket.send_to(&reply, peer);
                    }
                }
            })
            .context("spawning the DNS responder")?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for DnsResponder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The ClusterIP of `<svc>.<ns>.svc.cluster.local`, if that Service exists
/// and has one.
fn cluster_ip(kubectl: &Path, kubeconfig: &Path, netns: &Path, name: &str) -> Option<Ipv4Addr> {
    let rest = name.strip_suffix(&format!(".svc.{CLUSTER_DOMAIN}"))?;
    let (svc, ns) = rest.split_once('.')?;
    if ns.contains('.') {
        return None;
    }
    let out = Command::new("/usr/bin/nsenter")
        .process_group(0)
        .arg(format!("--net={}", s(netns)))
        .arg("--")
        .arg(kubectl)
        .arg(format!("--kubeconfig={}", s(kubeconfig)))
        .args([
            "get",
            "service",
            svc,
            "-n",
            ns,
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// The reply to one DNS query, or None for what is not a plain query.
fn dns_reply(query: &[u8], mut lookup: impl FnMut(&str) -> Option<Ipv4Addr>) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 || u16::from_be_bytes([query[4], query[5]]) != 1 {
        return None;
    }
    // The question: labels, then type and class.
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        if len & 0xC0 != 0 {
            return None;
        }
        labels.push(String::from_utf8_lossy(query.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*query.get(i)?, *query.get(i + 1)?]);
    let question = query.get(12..i + 4)?;
    let name = labels.join(".");
    let ip = lookup(&name);
    let mut r = Vec::with_capacity(64);
    r.extend_from_slice(&query[0..2]);
    // QR, opcode 0, AA, RD copied, RA; rcode NXDOMAIN when the name is unknown.
    r.push(0x84 | (query[2] & 0x01));
    r.push(0x80 | if ip.is_some() { 0 } else { 3 });
    let answers: u16 = u16::from(ip.is_some() && qtype == 1);
    r.extend_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&answers.to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(question);
    if let (Some(ip), 1) = (ip, answers) {
        r.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4]);
        r.extend_from_slice(&ip.octets());
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        q
    }

    #[test]
    fn dns_answers_a_service_and_refuses_the_rest() {
        let ip = Ipv4Addr::new(10, 96, 3, 4);
        let lookup = |n: &str| (n == "web.ns.svc.cluster.local").then_some(ip);
        let r = dns_reply(&query("web.ns.svc.cluster.local", 1), lookup).unwrap();
        assert_eq!(&r[0..2], &[0x12, 0x34]);
        assert_eq!(r[3] & 0x0F, 0, "NOERROR");
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 1, "one answer");
        assert_eq!(&r[r.len() - 4..], &ip.octets());
        // AAAA for a known name: NOERROR, no answer.
        let r = dns_reply(&query("web.ns.svc.cluster.local", 28), lookup).unwrap();
        assert_eq!((r[3] & 0x0F, u16::from_be_bytes([r[6], r[7]])), (0, 0));
        // Unknown: NXDOMAIN.
        let r = dns_reply(&query("web.ns.svc.ns.svc.cluster.local", 1), lookup).unwrap();
        assert_eq!(r[3] & 0x0F, 3);
        // Truncated input: no reply, no panic.
        assert!(dns_reply(&[1, 2, 3], lookup).is_none());
    }

    #[test]
    fn image_references_split_into_repository_and_tag() {
        assert_eq!(
            Images::split("localhost/redis-operator:0.1.0"),
            ("localhost/redis-operator", "0.1.0")
        );
        assert_eq!(
            Images::split("localhost:5000/x"),
            ("localhost:5000/x", "latest")
        );
    }
}
