//! The local control plane is real: a real apiserver at the pinned version,
//! StatefulSets reconciled into Running pods with loopback IPs, and the
//! metrics.k8s.io API fed by kwok through metrics-server.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use harness::{Cluster, ClusterOptions, wait_for};
use serde_json::Value;

const NS: &str = "cp-test";

const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: cp-test
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
  namespace: cp-test
spec:
  serviceName: web
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: registry.invalid/never-pulled:1
---
apiVersion: v1
kind: Pod
metadata:
  name: busy
  namespace: cp-test
  annotations:
    kwok.x-k8s.io/usage-cpu: "300m"
spec:
  containers:
  - name: busy
    image: registry.invalid/never-pulled:1
"#;

/// CPU quantity as reported by metrics-server (`123456789n`, `300m`, `1`) in millicores.
fn millicores(q: &str) -> Option<f64> {
    let (num, scale) = match q.char_indices().last()? {
        (i, 'n') => (&q[..i], 1e-6),
        (i, 'u') => (&q[..i], 1e-3),
        (i, 'm') => (&q[..i], 1.0),
        _ => (q, 1000.0),
    };
    Some(num.parse::<f64>().ok()? * scale)
}

fn in_loopback_pod_range(ip: &str) -> bool {
    // ClusterOptions::default().pod_cidr is 127.1.0.0/16.
    ip.parse::<Ipv4Addr>()
        .is_ok_and(|ip| ip.octets()[0] == 127 && ip.octets()[1] == 1)
}

async fn lease_renew_time(cluster: &Cluster) -> Result<String> {
    let lease = format!("lease/{}", cluster.node_names()[0]);
    cluster
        .kubectl_ok([
            "get",
            &lease,
            "-n",
            "kube-node-lease",
            "-o",
            "jsonpath={.spec.renewTime}",
        ])
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_runs_statefulsets_and_serves_metrics() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        nodes: 2,
        metrics_server: true,
        ..ClusterOptions::default()
    })
    .await?;
    eprintln!("startup took {:?}", cluster.startup_time());
    assert_eq!(cluster.node_names().len(), 2);

    // The apiserver is the pinned build, with version ldflags applied.
    let version: Value =
        serde_json::from_str(&cluster.kubectl_ok(["version", "-o", "json"]).await?)?;
    assert_eq!(
        version["serverVersion"]["gitVersion"], "v1.36.3",
        "{version}"
    );

    // kwok heartbeats through node Leases; without renewals the controller
    // manager would mark the nodes NotReady after 50s. Checked at the end.
    let first_renew = lease_renew_time(&cluster).await?;

    // Service ClusterIPs are loopback too, so nothing can route off the host.
    let cluster_ip = cluster
        .kubectl_ok([
            "get",
            "service",
            "kubernetes",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])
        .await?;
    assert!(
        cluster_ip.starts_with("127."),
        "kubernetes ClusterIP {cluster_ip}"
    );

    // helm talks to the same cluster, with its state under the cluster's temp dir.
    let releases = cluster
        .helm_ok(["list", "--all-namespaces", "-o", "json"])
        .await?;
    assert_eq!(releases.trim(), "[]");

    let applied_at = Instant::now();
    cluster.kubectl_apply(MANIFEST).await?;

    // Controller-manager creates the pods, the scheduler binds them, kwok
    // marks them Running and Ready with IPs from the loopback pod range.
    let pods = wait_for(
        "2 StatefulSet pods Running and Ready",
        Duration::from_secs(60),
        || async {
            let out = cluster
                .kubectl_ok(["get", "pods", "-n", NS, "-l", "app=web", "-o", "json"])
                .await?;
            let list: Value = serde_json::from_str(&out)?;
            let items = list["items"].as_array().cloned().unwrap_or_default();
            let ready = items.iter().filter(|p| {
                p["status"]["phase"] == "Running"
                    && p["status"]["conditions"].as_array().is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
            });
            Ok((ready.count() == 2).then_some(items))
        },
    )
    .await?;
    eprintln!("statefulset pods ready after {:?}", applied_at.elapsed());
    let mut ips = Vec::new();
    for p in &pods {
        let name = p["metadata"]["name"].as_str().unwrap_or_default();
        let ip = p["status"]["podIP"].as_str().unwrap_or_default().to_owned();
        assert!(
            in_loopback_pod_range(&ip),
            "pod {name} has IP {ip:?}, want 127.1.0.0/16"
        );
        assert!(
            cluster
                .node_names()
                .iter()
                .any(|n| p["spec"]["nodeName"] == n.as_str()),
            "pod {name} not scheduled on a kwok node: {}",
            p["spec"]["nodeName"]
        );
        ips.push(ip);
    }
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 2, "pod IPs must be distinct: {ips:?}");
    // The StatefulSet controller sees them too (its status lags the pods).
    wait_for(
        "StatefulSet readyReplicas=2",
        Duration::from_secs(30),
        || async {
            let ready = cluster
                .kubectl_ok([
                    "get",
                    "statefulset",
                    "web",
                    "-n",
                    NS,
                    "-o",
                    "jsonpath={.status.readyReplicas}",
                ])
                .await?;
            Ok((ready.trim() == "2").then_some(()))
        },
    )
    .await?;

    // metrics.k8s.io reports the CPU kwok derives from the annotation.
    let cpu = wait_for(
        "PodMetrics for cp-test/busy",
        Duration::from_secs(120),
        || async {
            let out = cluster
                .kubectl_ok([
                    "get",
                    "--raw",
                    &format!("/apis/metrics.k8s.io/v1beta1/namespaces/{NS}/pods"),
                ])
                .await?;
            let list: Value = serde_json::from_str(&out)?;
            let busy = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["metadata"]["name"] == "busy");
            Ok(busy.and_then(|m| {
                m["containers"][0]["usage"]["cpu"]
                    .as_str()
                    .map(str::to_owned)
            }))
        },
    )
    .await?;
    eprintln!("metrics for busy ({cpu}) after {:?}", applied_at.elapsed());
    let m = millicores(&cpu).with_context(|| format!("parsing cpu {cpu:?}"))?;
    assert!(
        (270.0..=330.0).contains(&m),
        "busy reports {cpu} ({m}m), want ~300m"
    );

    wait_for("node lease renewal", Duration::from_secs(30), || async {
        Ok((lease_renew_time(&cluster).await? != first_renew).then_some(()))
    })
    .await?;

    // Stopping leaves no process and no files behind.
    let procs = cluster.processes();
    let tmp = cluster.tmp_dir().to_owned();
    cluster.stop();
    for (name, pid) in procs {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "{name} (pid {pid}) still running after stop"
        );
    }
    assert!(!tmp.exists(), "{} not removed", tmp.display());
    Ok(())
}

#[test]
fn cpu_quantities_parse() {
    assert_eq!(millicores("300m"), Some(300.0));
    assert!(millicores("299876543n").is_some_and(|m| (m - 299.876543).abs() < 1e-6));
    assert_eq!(millicores("1"), Some(1000.0));
    assert_eq!(millicores("x"), None);
}
