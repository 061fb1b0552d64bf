//! Real Redis for simulated pods. kwok runs no containers, so this gives
//! every Redis pod of the operator a real `redis-server` bound to the pod's
//! (loopback) IP, started when the pod runs and stopped when it goes away.
//! The operator then talks RESP to real Redis end to end; only the kubelet
//! is simulated.
//!
//! It behaves like a kubelet where it matters for data safety:
//! - A process belongs to a pod **UID**, not to its name: a StatefulSet
//!   recreates a deleted pod under the same name (often at the same IP), and
//!   the replacement must be a new process, not the old one carrying on.
//! - Data lives where the pod's volume would: an emptyDir dies with its pod,
//!   so a new UID starts on an empty directory; a PersistentVolumeClaim
//!   (`data-<pod>`) outlives it, so the replacement gets the directory of
//!   the volume the claim is bound to back, `nodes.conf` and AOF included.
//!   A claim deleted and made again under the same name binds another
//!   volume, and starts empty, as on real storage.
//! - Stopping is graceful (SIGTERM, then SIGKILL after a grace period), and a
//!   replacement starts no sooner than [`RESTART_GAP`] after its predecessor
//!   stopped, so clients and peers see a real restart.
//! - A crashed server is restarted on the same directory, as a kubelet
//!   restarts a container in the same pod.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::task::JoinHandle;

use crate::cluster::Cluster;
use crate::redis::{RedisNode, redis_binary};

/// The least time between a pod's old process stopping and its
/// replacement's starting (a kubelet needs about as long to tear down a
/// sandbox and start the next one).
pub const RESTART_GAP: Duration = Duration::from_secs(1);
/// How long a stopping server gets after SIGTERM (a pod's grace period).
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The StatefulSet volume (and claim template) that holds Redis data.
const DATA_VOLUME: &str = "data";
/// The pod volume with the internal auth Secret.
const AUTH_VOLUME: &str = "auth";

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

/// A Running Redis pod as the supervisor needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningPod {
    /// `namespace/name`.
    pub key: String,
    pub uid: String,
    pub ip: Ipv4Addr,
    /// The PersistentVolumeClaim behind the data volume, if any.
    pub claim: Option<String>,
    /// What holds that claim's data: its bound PersistentVolume (the
    /// claim's UID while unbound), filled in once the claims are listed.
    pub volume: Option<String>,
    /// The Secret mounted as the pod's `auth` volume (ACL users and the
    /// replication login), if any.
    pub auth_secret: Option<String>,
}

impl RunningPod {
    /// Where this pod's data lives: its claim's directory, which outlives
    /// the pod, or one of its own, which dies with it.
    fn data_dir(&self, base: &Path) -> PathBuf {
        match &self.volume {
            Some(volume) => base.join("volumes").join(volume),
            None => base.join("pods").join(&self.uid),
        }
    }
}

/// What runs for a pod UID now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub key: String,
    pub ip: Ipv4Addr,
}

/// One pass of supervision.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// UIDs whose process must stop: the pod is gone, being deleted, or its
    /// IP changed.
    pub stop: BTreeSet<String>,
    /// UIDs whose process must start now.
    pub start: BTreeSet<String>,
}

/// Decides which processes stop and start. `stopped_at` is when the last
/// process of each pod name stopped; a replacement waits out [`RESTART_GAP`]
/// from then, and never starts while another process still holds its IP.
pub fn plan(
    pods: &HashMap<String, RunningPod>,
    running: &HashMap<String, Running>,
    stopped_at: &HashMap<String, Instant>,
    now: Instant,
) -> Plan {
    let stop: BTreeSet<String> = running
        .iter()
        .filter(|(uid, r)| pods.get(*uid).is_none_or(|p| p.ip != r.ip))
        .map(|(uid, _)| uid.clone())
        .collect();
    let busy_ips: BTreeSet<Ipv4Addr> = running
        .iter()
        .filter(|(uid, _)| !stop.contains(*uid))
        .map(|(_, r)| r.ip)
        .collect();
    let start = pods
        .iter()
        // A UID already running (even one stopping now for an IP change)
        // starts in a later pass, after the gap.
        .filter(|(uid, _)| !running.contains_key(*uid))
        // Nor while a predecessor of the same name still runs or stops now.
        .filter(|(_, p)| running.values().all(|r| r.key != p.key))
        .filter(|(_, p)| {
            stopped_at
                .get(&p.key)
                .is_none_or(|t| now.saturating_duration_since(*t) >= RESTART_GAP)
        })
        .filter(|(_, p)| !busy_ips.contains(&p.ip))
        .map(|(uid, _)| uid.clone())
        .collect();
    Plan { stop, start }
}

struct Node {
    pod: RunningPod,
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
            let mut supervisor = Supervisor {
                base,
                kubectl: kubectl.clone(),
                kubeconfig: kubeconfig.clone(),
                nodes: HashMap::new(),
                stopped_at: HashMap::new(),
            };
            loop {
                match running_pods(&kubectl, &kubeconfig).await {
                    Ok(pods) => supervisor.reconcile(&pods).await,
                    Err(e) => eprintln!("pod-redis: listing pods: {e:#}"),
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Ok(PodRedis { task })
    }
}

/// Running pods by UID: Redis pods that are Running, not being deleted, and
/// on a loopback IP.
async fn running_pods(kubectl: &Path, kubeconfig: &Path) -> Result<HashMap<String, RunningPod>> {
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
    let mut pods: HashMap<String, RunningPod> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(running_pod)
        .map(|p| (p.uid.clone(), p))
        .collect();
    if pods.values().any(|p| p.claim.is_some()) {
        let volumes = claim_volumes(kubectl, kubeconfig).await?;
        // A pod whose claim is not listed yet waits for the next pass.
        pods.retain(|_, p| match &p.claim {
            None => true,
            Some(claim) => {
                let ns = p.key.split('/').next().unwrap_or_default();
                p.volume = volumes.get(&format!("{ns}/{claim}")).cloned();
                p.volume.is_some()
            }
        });
    }
    Ok(pods)
}

/// The volume each claim (`namespace/name`) is bound to, or its UID.
async fn claim_volumes(kubectl: &Path, kubeconfig: &Path) -> Result<HashMap<String, String>> {
    let out = tokio::process::Command::new(kubectl)
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(["get", "pvc", "-A", "-o", "json"])
        .output()
        .await
        .context("running kubectl")?;
    if !out.status.success() {
        bail!("kubectl get pvc: {}", String::from_utf8_lossy(&out.stderr));
    }
    let list: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing claim list")?;
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let meta = &c["metadata"];
            let key = format!("{}/{}", meta["namespace"].as_str()?, meta["name"].as_str()?);
            let volume = c["spec"]["volumeName"]
                .as_str()
                .filter(|v| !v.is_empty())
                .or(meta["uid"].as_str())?;
            Some((key, volume.to_owned()))
        })
        .collect())
}

/// The pod as a [`RunningPod`], if it is Running, not being deleted, and on
/// a loopback IP (the only addresses that may be bound here).
pub fn running_pod(p: &serde_json::Value) -> Option<RunningPod> {
    let meta = &p["metadata"];
    if p["status"]["phase"] != "Running" || !meta["deletionTimestamp"].is_null() {
        return None;
    }
    let ip: Ipv4Addr = p["status"]["podIP"].as_str()?.parse().ok()?;
    if !ip.is_loopback() {
        return None;
    }
    let volumes = p["spec"]["volumes"].as_array();
    let claim = volumes
        .into_iter()
        .flatten()
        .find(|v| v["name"] == DATA_VOLUME)
        .and_then(|v| v["persistentVolumeClaim"]["claimName"].as_str())
        .map(str::to_owned);
    let auth_secret = volumes
        .into_iter()
        .flatten()
        .find(|v| v["name"] == AUTH_VOLUME)
        .and_then(|v| v["secret"]["secretName"].as_str())
        .map(str::to_owned);
    Some(RunningPod {
        key: format!("{}/{}", meta["namespace"].as_str()?, meta["name"].as_str()?),
        uid: meta["uid"].as_str()?.to_owned(),
        ip,
        claim,
        volume: None,
        auth_secret,
    })
}

struct Supervisor {
    base: PathBuf,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
    /// By pod UID.
    nodes: HashMap<String, Node>,
    /// By pod `namespace/name`.
    stopped_at: HashMap<String, Instant>,
}

impl Supervisor {
    async fn reconcile(&mut self, pods: &HashMap<String, RunningPod>) {
        // A crashed server is restarted on its data by the next pass.
        let crashed: Vec<String> = self
            .nodes
            .iter_mut()
            .filter_map(|(uid, node)| match node.server.check_running() {
                Ok(()) => None,
                Err(e) => {
                    eprintln!("pod-redis: {}: {e:#}; restarting", node.pod.key);
                    Some(uid.clone())
                }
            })
            .collect();
        for uid in crashed {
            if let Some(node) = self.nodes.remove(&uid) {
                self.stopped_at.insert(node.pod.key, Instant::now());
            }
        }

        let running = self
            .nodes
            .iter()
            .map(|(uid, n)| {
                let r = Running {
                    key: n.pod.key.clone(),
                    ip: n.pod.ip,
                };
                (uid.clone(), r)
            })
            .collect();
        let plan = plan(pods, &running, &self.stopped_at, Instant::now());
        for uid in &plan.stop {
            if let Some(node) = self.nodes.remove(uid) {
                self.stop(node).await;
            }
        }
        for uid in &plan.start {
            let Some(pod) = pods.get(uid) else { continue };
            let dir = pod.data_dir(&self.base);
            // As a kubelet, the pod starts once its Secret volume can be
            // mounted, with the Secret's content at that moment.
            let extra = match &pod.auth_secret {
                None => String::new(),
                Some(secret) => match self.mount_auth(pod, secret).await {
                    Ok(conf) => conf,
                    Err(e) => {
                        eprintln!("pod-redis: {}: mounting {secret}: {e:#}", pod.key);
                        continue;
                    }
                },
            };
            match RedisNode::start(pod.ip, &dir, &extra) {
                Ok(server) => {
                    let pod = pod.clone();
                    self.nodes.insert(uid.clone(), Node { pod, server });
                }
                Err(e) => eprintln!(
                    "pod-redis: starting redis for {} on {}: {e:#}",
                    pod.key, pod.ip
                ),
            }
        }
    }

    /// Writes the pod's auth Secret (`users.acl`, `auth.conf`) where its
    /// server reads them, and returns the config lines that load them.
    async fn mount_auth(&self, pod: &RunningPod, secret: &str) -> Result<String> {
        let ns = pod.key.split('/').next().unwrap_or_default();
        let dir = self.base.join("auth").join(&pod.uid);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for key in ["users.acl", "auth.conf"] {
            let template = format!("--template={{{{index .data \"{key}\" | base64decode}}}}");
            let out = tokio::process::Command::new(&self.kubectl)
                .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
                .args([
                    "get",
                    "secret",
                    "-n",
                    ns,
                    secret,
                    "-o",
                    "go-template",
                    &template,
                ])
                .output()
                .await
                .context("running kubectl")?;
            if !out.status.success() {
                bail!(
                    "kubectl get secret: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::fs::write(dir.join(key), &out.stdout)
                .with_context(|| format!("writing {key} in {}", dir.display()))?;
        }
        Ok(format!(
            "aclfile {}/users.acl\ninclude {}/auth.conf",
            dir.display(),
            dir.display()
        ))
    }

    /// Stops a pod's server as a kubelet would, and drops its data unless a
    /// claim keeps it.
    async fn stop(&mut self, node: Node) {
        let Node { pod, mut server } = node;
        let dir = server.dir().to_path_buf();
        // Off the runtime: the grace period waits on the process.
        let stopped = tokio::task::spawn_blocking(move || {
            server.stop(STOP_GRACE);
        })
        .await;
        if let Err(e) = stopped {
            eprintln!("pod-redis: stopping redis for {}: {e}", pod.key);
        }
        if pod.claim.is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        self.stopped_at.insert(pod.key, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(key: &str, uid: &str, ip: [u8; 4]) -> (String, RunningPod) {
        let p = RunningPod {
            key: key.into(),
            uid: uid.into(),
            ip: Ipv4Addr::from(ip),
            claim: None,
            volume: None,
            auth_secret: None,
        };
        (uid.into(), p)
    }

    fn running(key: &str, uid: &str, ip: [u8; 4]) -> (String, Running) {
        let r = Running {
            key: key.into(),
            ip: Ipv4Addr::from(ip),
        };
        (uid.into(), r)
    }

    fn set(uids: &[&str]) -> BTreeSet<String> {
        uids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_new_pod_starts_and_a_gone_one_stops() {
        let pods = HashMap::from([pod("ns/a-0", "u1", [127, 1, 0, 1])]);
        let run = HashMap::from([running("ns/b-0", "u9", [127, 1, 0, 9])]);
        let p = plan(&pods, &run, &HashMap::new(), Instant::now());
        assert_eq!(p.stop, set(&["u9"]));
        assert_eq!(p.start, set(&["u1"]));
    }

    #[test]
    fn a_same_name_replacement_is_a_new_process_after_the_gap() {
        let now = Instant::now();
        // The old UID is gone and the new one runs at the same IP, all
        // within one poll: the old process stops, and the new one waits.
        let pods = HashMap::from([pod("ns/a-0", "new", [127, 1, 0, 1])]);
        let run = HashMap::from([running("ns/a-0", "old", [127, 1, 0, 1])]);
        let p = plan(&pods, &run, &HashMap::new(), now);
        assert_eq!(p.stop, set(&["old"]));
        assert!(p.start.is_empty(), "{p:?}");

        // Next pass, inside the gap: still nothing starts.
        let stopped = HashMap::from([("ns/a-0".to_string(), now)]);
        let p = plan(&pods, &HashMap::new(), &stopped, now + RESTART_GAP / 2);
        assert_eq!(p, Plan::default());

        // After the gap the replacement starts.
        let p = plan(&pods, &HashMap::new(), &stopped, now + RESTART_GAP);
        assert_eq!(p.start, set(&["new"]));
    }

    #[test]
    fn the_same_uid_keeps_its_process() {
        let pods = HashMap::from([pod("ns/a-0", "u1", [127, 1, 0, 1])]);
        let run = HashMap::from([running("ns/a-0", "u1", [127, 1, 0, 1])]);
        assert_eq!(
            plan(&pods, &run, &HashMap::new(), Instant::now()),
            Plan::default()
        );
    }

    #[test]
    fn an_ip_another_process_holds_is_not_bound_twice() {
        // kwok reused an IP for another pod before its old owner stopped
        // (the old pod still Running in this listing).
        let pods = HashMap::from([
            pod("ns/a-0", "u1", [127, 1, 0, 1]),
            pod("ns/b-0", "u2", [127, 1, 0, 1]),
        ]);
        let run = HashMap::from([running("ns/a-0", "u1", [127, 1, 0, 1])]);
        let p = plan(&pods, &run, &HashMap::new(), Instant::now());
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn a_pod_that_changed_ip_restarts() {
        let pods = HashMap::from([pod("ns/a-0", "u1", [127, 1, 0, 2])]);
        let run = HashMap::from([running("ns/a-0", "u1", [127, 1, 0, 1])]);
        let p = plan(&pods, &run, &HashMap::new(), Instant::now());
        assert_eq!(p.stop, set(&["u1"]));
        assert!(p.start.is_empty(), "waits the gap: {p:?}");
    }

    #[test]
    fn data_follows_the_volume_not_the_pod() {
        let base = Path::new("/b");
        let (_, mut p) = pod("ns/a-0", "u1", [127, 1, 0, 1]);
        assert_eq!(p.data_dir(base), Path::new("/b/pods/u1"));
        p.claim = Some("data-a-0".into());
        p.volume = Some("pv-7".into());
        let before = p.data_dir(base);
        p.uid = "u2".into();
        assert_eq!(p.data_dir(base), before);
        assert_eq!(before, Path::new("/b/volumes/pv-7"));
    }

    #[test]
    fn only_running_loopback_pods_count_and_the_claim_is_read() {
        let json = serde_json::json!({
            "metadata": {"namespace": "ns", "name": "a-0", "uid": "u1"},
            "spec": {"volumes": [
                {"name": "config", "configMap": {"name": "c"}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "data-a-0"}},
                {"name": "auth", "secret": {"secretName": "a-internal-auth"}}
            ]},
            "status": {"phase": "Running", "podIP": "127.1.0.4"}
        });
        let p = running_pod(&json).expect("a running pod");
        assert_eq!(p.claim.as_deref(), Some("data-a-0"));
        assert_eq!(p.auth_secret.as_deref(), Some("a-internal-auth"));
        assert_eq!(p.key, "ns/a-0");

        let mut deleting = json.clone();
        deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
        assert_eq!(running_pod(&deleting), None);
        let mut pending = json.clone();
        pending["status"]["phase"] = "Pending".into();
        assert_eq!(running_pod(&pending), None);
        let mut routable = json;
        routable["status"]["podIP"] = "10.0.0.4".into();
        assert_eq!(running_pod(&routable), None);
    }
}
