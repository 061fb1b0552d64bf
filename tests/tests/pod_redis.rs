//! The kwok tier's stand-in for a kubelet (`harness::pod_redis`) must
//! restart Redis the way a real node does, or every pod-loss test on this
//! tier proves nothing: a deleted pod's replacement is a new `redis-server`
//! (a new `run_id`); on an emptyDir it comes back empty with a new node id;
//! on a PersistentVolumeClaim it comes back with the same keys and the same
//! node id (`nodes.conf`), as a pod re-attaching its volume would.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use harness::pod_redis::PodRedis;
use harness::redis::{cluster_info, query};
use harness::{Cluster, ClusterOptions, wait_for};
use serde_json::Value;

const NS: &str = "pod-redis";
const KEYS: usize = 200;

/// Two one-pod StatefulSets under the label the supervisor follows: `eph`
/// on an emptyDir, `pers` with a claim template bound to a static PV.
const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: pod-redis
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: pod-redis-static
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: Immediate
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: pod-redis-pv-0
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: pod-redis-static
  # Never mounted: kwok runs no containers; the harness keeps the data.
  hostPath: {path: /nonexistent/pod-redis-pv-0}
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: eph
  namespace: pod-redis
spec:
  serviceName: eph
  replicas: 1
  selector:
    matchLabels: {app: eph}
  template:
    metadata:
      labels: {app: eph, app.kubernetes.io/managed-by: redis-operator}
    spec:
      containers:
      - name: redis
        image: registry.invalid/never-pulled:1
        volumeMounts: [{name: data, mountPath: /data}]
      volumes:
      - name: data
        emptyDir: {}
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: pers
  namespace: pod-redis
spec:
  serviceName: pers
  replicas: 1
  selector:
    matchLabels: {app: pers}
  template:
    metadata:
      labels: {app: pers, app.kubernetes.io/managed-by: redis-operator}
    spec:
      containers:
      - name: redis
        image: registry.invalid/never-pulled:1
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      storageClassName: pod-redis-static
      resources: {requests: {storage: 1Gi}}
"#;

/// What one incarnation of a pod's Redis says about itself.
#[derive(Debug, Clone)]
struct Incarnation {
    uid: String,
    addr: SocketAddr,
    run_id: String,
    node_id: String,
}

/// Waits until pod `name` runs under a UID other than `not_uid` and a Redis
/// other than the `gone` ones answers at its IP, and says which process that
/// is. (kwok may hand a deleted pod's IP to another pod at once; until the
/// old process stops, its IP still answers with the old `run_id`.) A
/// supervisor that kept an old process never gets there: the wait fails.
async fn incarnation(
    c: &Cluster,
    name: &str,
    not_uid: Option<&str>,
    gone: &[&Incarnation],
) -> Result<Incarnation> {
    wait_for(
        &format!("{NS}/{name} running with its own redis-server"),
        Duration::from_secs(90),
        || async {
            let out = c
                .kubectl_ok(["get", "pod", name, "-n", NS, "-o", "json"])
                .await?;
            let pod: Value = serde_json::from_str(&out)?;
            let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
            let ip = pod["status"]["podIP"].as_str().unwrap_or_default();
            if pod["status"]["phase"] != "Running" || Some(uid) == not_uid || ip.is_empty() {
                return Ok(None);
            }
            let addr = SocketAddr::new(ip.parse::<Ipv4Addr>()?.into(), 6379);
            let info: String = query(addr, &["INFO", "server"]).await?;
            let run_id = info
                .lines()
                .find_map(|l| l.strip_prefix("run_id:"))
                .context("INFO server has no run_id")?
                .trim()
                .to_owned();
            if gone.iter().any(|g| g.run_id == run_id) {
                return Ok(None);
            }
            let node_id: String = query(addr, &["CLUSTER", "MYID"]).await?;
            Ok(Some(Incarnation {
                uid: uid.to_owned(),
                addr,
                run_id,
                node_id,
            }))
        },
    )
    .await
}

/// Makes the node a one-node cluster that serves every slot, and writes
/// [`KEYS`] keys to it.
async fn fill(addr: SocketAddr) -> Result<()> {
    let _: String = query(addr, &["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]).await?;
    serving(addr).await?;
    for i in 0..KEYS {
        let _: String = query(addr, &["SET", &format!("k{i}"), &format!("v{i}")]).await?;
    }
    Ok(())
}

/// Waits until the node serves its slots (a restarted primary waits a
/// moment before it does).
async fn serving(addr: SocketAddr) -> Result<()> {
    wait_for(
        &format!("{addr} cluster_state:ok"),
        Duration::from_secs(30),
        || async {
            let info = cluster_info(addr).await?;
            Ok((info.get("cluster_state").map(String::as_str) == Some("ok")).then_some(()))
        },
    )
    .await
}

async fn dbsize(addr: SocketAddr) -> Result<usize> {
    query(addr, &["DBSIZE"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_pod_gets_a_fresh_redis_with_its_volumes_data() -> Result<()> {
    let c = Cluster::start(ClusterOptions::default()).await?;
    let _redis = PodRedis::start(&c)?;
    c.kubectl_apply(MANIFEST).await?;

    let eph = incarnation(&c, "eph-0", None, &[]).await?;
    let pers = incarnation(&c, "pers-0", None, &[]).await?;
    fill(eph.addr).await?;
    fill(pers.addr).await?;
    ensure!(dbsize(eph.addr).await? == KEYS);
    ensure!(dbsize(pers.addr).await? == KEYS);

    // --wait=false: the StatefulSet controller replaces them at once, under
    // the same names; kwok often hands out the same IPs again.
    c.kubectl_ok(["delete", "pod", "eph-0", "pers-0", "-n", NS, "--wait=false"])
        .await?;
    let eph2 = incarnation(&c, "eph-0", Some(&eph.uid), &[&eph, &pers]).await?;
    let pers2 = incarnation(&c, "pers-0", Some(&pers.uid), &[&eph, &pers]).await?;
    eprintln!(
        "eph-0: {} -> {}; pers-0: {} -> {}",
        eph.addr, eph2.addr, pers.addr, pers2.addr
    );

    // emptyDir: a new process on an empty directory, so a new node.
    ensure!(
        eph2.run_id != eph.run_id,
        "eph-0 kept its old process: {eph2:?}"
    );
    ensure!(
        eph2.node_id != eph.node_id,
        "eph-0 kept its node id: {eph2:?}"
    );
    let n = dbsize(eph2.addr).await?;
    ensure!(n == 0, "eph-0 came back from an emptyDir with {n} keys");

    // A claim: a new process on the claim's data, so the same node and keys.
    ensure!(
        pers2.run_id != pers.run_id,
        "pers-0 kept its old process: {pers2:?}"
    );
    ensure!(
        pers2.node_id == pers.node_id,
        "pers-0 lost its nodes.conf: {} -> {}",
        pers.node_id,
        pers2.node_id
    );
    let n = dbsize(pers2.addr).await?;
    ensure!(n == KEYS, "pers-0 came back with {n} of {KEYS} keys");
    serving(pers2.addr).await?;
    for i in [0, KEYS / 2, KEYS - 1] {
        let v: Option<String> = query(pers2.addr, &["GET", &format!("k{i}")]).await?;
        ensure!(
            v.as_deref() == Some(format!("v{i}").as_str()),
            "k{i} = {v:?}"
        );
    }
    c.stop();
    Ok(())
}
