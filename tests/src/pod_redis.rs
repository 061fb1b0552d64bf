//! Real Redis for simulated pods. kwok runs no containers, so this gives
//! every Redis pod of the operator a real `redis-server` bound to the pod's
//! (loopback) IP, started when the pod runs and stopped when it goes away.
//! The operator then talks RESP to real Redis end to end; only the kubelet
//! is simulated.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::task::JoinHandle;

use crate::cluster::Cluster;
use crate::process::ManagedChild;

/// Supervises one `redis-server` per running Redis pod until dropped.
pub struct PodRedis {
    task: JoinHandle<()>,
}

impl Drop for PodRedis {
    fn drop(&mut self) {
        // Aborting drops the task's map of children, which stops them all.
        self.task.abort();
    }
}

struct Node {
    ip: String,
    child: ManagedChild,
}

/// Fails loudly when the machine lacks Redis: a missing prerequisite is a
/// test failure, never a silent skip.
pub fn redis_server() -> Result<PathBuf> {
    let path = PathBuf::from("/usr/bin/redis-server");
    if !path.is_file() {
        bail!("redis-server is not installed: run `make deps` (Debian package redis-server)");
    }
    Ok(path)
}

/// Arguments of a cluster-mode node on `ip`, with its files in `dir`. The
/// node announces and dials from its own IP, as a pod would.
pub fn node_args(ip: &str, dir: &Path) -> Vec<String> {
    [
        "--bind",
        ip,
        "--port",
        "6379",
        "--protected-mode",
        "no",
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "5000",
        "--cluster-announce-ip",
        ip,
        "--bind-source-addr",
        ip,
        "--appendonly",
        "yes",
        "--save",
        "",
        "--daemonize",
        "no",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(["--dir".to_string(), dir.display().to_string()])
    .collect()
}

impl PodRedis {
    /// Starts supervising the pods the operator manages in `cluster`.
    pub fn start(cluster: &Cluster) -> Result<PodRedis> {
        let server = redis_server()?;
        let kubectl = cluster.tools().path("kubectl")?;
        let kubeconfig = cluster.kubeconfig_path().to_path_buf();
        let base = cluster.tmp_dir().join("pod-redis");
        std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
        let task = tokio::spawn(async move {
            let mut nodes: HashMap<String, Node> = HashMap::new();
            loop {
                match running_pods(&kubectl, &kubeconfig).await {
                    Ok(pods) => reconcile(&server, &base, &pods, &mut nodes),
                    Err(e) => eprintln!("pod-redis: listing pods: {e:#}"),
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Ok(PodRedis { task })
    }
}

/// `namespace/name` → pod IP, for Running Redis pods not being deleted.
async fn running_pods(kubectl: &Path, kubeconfig: &Path) -> Result<HashMap<String, String>> {
    let out = tokio::process::Command::new(kubectl)
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args([
            "get",
            "pods",
            "-A",
            "-l",
            "app.kubernetes.io/managed-by=redis-operator",
            "-o",
            "json",
        ])
        .output()
        .await
        .context("running kubectl")?;
    if !out.status.success() {
        bail!("kubectl get pods: {}", String::from_utf8_lossy(&out.stderr));
    }
    let list: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing pod list")?;
    let mut pods = HashMap::new();
    for p in list["items"].as_array().into_iter().flatten() {
        let running =
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null();
        let (Some(ns), Some(name), Some(ip)) = (
            p["metadata"]["namespace"].as_str(),
            p["metadata"]["name"].as_str(),
            p["status"]["podIP"].as_str(),
        ) else {
            continue;
        };
        // Only loopback addresses may ever be bound or dialled.
        if running && ip.starts_with("127.") {
            pods.insert(format!("{ns}/{name}"), ip.to_string());
        }
    }
    Ok(pods)
}

fn reconcile(
    server: &Path,
    base: &Path,
    pods: &HashMap<String, String>,
    nodes: &mut HashMap<String, Node>,
) {
    // Gone, or moved to another IP: stop (dropping the child stops it). An
    // emptyDir dies with its pod, so the data goes too.
    let stale: Vec<String> = nodes
        .iter()
        .filter(|(k, n)| pods.get(*k) != Some(&n.ip))
        .map(|(k, _)| k.clone())
        .collect();
    for key in stale {
        nodes.remove(&key);
        let _ = std::fs::remove_dir_all(base.join(key.replace('/', "_")));
    }
    for (key, ip) in pods {
        if nodes.contains_key(key) {
            continue;
        }
        let dir = base.join(key.replace('/', "_"));
        if let Err(e) = std::fs::create_dir_all(&dir) {
            eprintln!("pod-redis: creating {}: {e}", dir.display());
            continue;
        }
        let log = dir.join("redis.log");
        match ManagedChild::spawn(&format!("redis {key}"), server, &node_args(ip, &dir), &log) {
            Ok(child) => {
                nodes.insert(
                    key.clone(),
                    Node {
                        ip: ip.clone(),
                        child,
                    },
                );
            }
            Err(e) => eprintln!("pod-redis: starting redis for {key} on {ip}: {e:#}"),
        }
    }
    // A crashed server is restarted on its data, as a kubelet restarts a
    // container in the same pod.
    nodes.retain(|key, node| match node.child.check_running() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("pod-redis: {key}: {e:#}; restarting");
            false
        }
    });
}
