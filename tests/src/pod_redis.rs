//! Real Redis for simulated pods. kwok runs no containers, so this gives
//! every Redis pod of the operator a real `redis-server` bound to the pod's
//! (loopback) IP, started when the pod runs and stopped when it goes away.
//! The operator then talks RESP to real Redis end to end; only the kubelet
//! is simulated.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::task::JoinHandle;

use crate::cluster::Cluster;
use crate::redis::{RedisNode, redis_binary};

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
    server: RedisNode,
}

impl PodRedis {
    /// Starts supervising the pods the operator manages in `cluster`.
    pub fn start(cluster: &Cluster) -> Result<PodRedis> {
        redis_binary("redis-server")?;
        let kubectl = cluster.tools().path("kubectl")?;
        let kubeconfig = cluster.kubeconfig_path().to_path_buf();
        let base = cluster.tmp_dir().join("pod-redis");
        std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
        let task = tokio::spawn(async move {
            let mut nodes: HashMap<String, Node> = HashMap::new();
            loop {
                match running_pods(&kubectl, &kubeconfig).await {
                    Ok(pods) => reconcile(&base, &pods, &mut nodes),
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

fn reconcile(base: &Path, pods: &HashMap<String, String>, nodes: &mut HashMap<String, Node>) {
    // Gone, or moved to another IP: stop (dropping the node stops it). An
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
        let Ok(addr) = ip.parse::<Ipv4Addr>() else {
            continue;
        };
        let dir = base.join(key.replace('/', "_"));
        match RedisNode::start(addr, &dir, "") {
            Ok(server) => {
                nodes.insert(
                    key.clone(),
                    Node {
                        ip: ip.clone(),
                        server,
                    },
                );
            }
            Err(e) => eprintln!("pod-redis: starting redis for {key} on {ip}: {e:#}"),
        }
    }
    // A crashed server is restarted on its data, as a kubelet restarts a
    // container in the same pod.
    nodes.retain(|key, node| match node.server.check_running() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("pod-redis: {key}: {e:#}; restarting");
            false
        }
    });
}
