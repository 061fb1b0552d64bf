//! End to end on a real node (containerd, kubelet, kube-proxy), with the
//! chart installed the way users install it: the operator and the webhook
//! run as pods, from the image `make image` builds, under the chart's
//! ServiceAccounts and RBAC, in a namespace that enforces the restricted Pod
//! Security Standard; Redis runs in real containers.
//!
//! Needs root, `make deps`, `make cluster-tools` and `make image`
//! (`make e2e-real` does all of it). A missing prerequisite fails the test.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use harness::chart::{APPS, image_values, pod_ips, rc_field, redis_cluster, wait_ready};
use harness::stack::{CLUSTER_SCOPED_KINDS, CRD, NAMESPACE, RELEASE, chart_dir, release_objects};
use harness::writer::{Limits as WriteLimits, Writer, lost_writes};
use harness::{Cluster, ClusterOptions, wait_for};

const REDIS: &str = "ten";

/// A restricted-compliant pod running `script` in the test Redis image.
fn client_pod(name: &str, image: &str, script: &str) -> String {
    let script = serde_json::to_string(script).unwrap_or_default();
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {APPS}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  securityContext:
    runAsNonRoot: true
    runAsUser: 999
    runAsGroup: 999
    seccompProfile: {{type: RuntimeDefault}}
  containers:
  - name: client
    image: {image}
    imagePullPolicy: Never
    command: ["sh", "-c", {script}]
    resources:
      requests: {{cpu: 50m, memory: 32Mi}}
    securityContext:
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities: {{drop: [ALL]}}
"#
    )
}

/// Waits for a pod to finish and returns its log; an error if it failed.
async fn pod_result(c: &Cluster, name: &str, timeout: Duration) -> Result<String> {
    let phase = wait_for(&format!("pod {name} to finish"), timeout, || async {
        let p = c
            .kubectl_ok([
                "get",
                "pod",
                name,
                "-n",
                APPS,
                "-o",
                "jsonpath={.status.phase}",
            ])
            .await?;
        Ok(matches!(p.as_str(), "Succeeded" | "Failed").then_some(p))
    })
    .await?;
    let log = c.kubectl_ok(["logs", name, "-n", APPS]).await?;
    ensure!(phase == "Succeeded", "pod {name} {phase}:\n{log}");
    Ok(log)
}

/// The primaries' addresses, from one node's CLUSTER NODES (run in the netns).
async fn primaries(c: &Cluster, seed: Ipv4Addr) -> Result<Vec<Ipv4Addr>> {
    let nodes: String = c
        .netns_handle()?
        .run_async(move || async move {
            harness::redis::query(SocketAddr::new(seed.into(), 6379), &["CLUSTER", "NODES"]).await
        })
        .await?;
    Ok(nodes
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(2)
                .is_some_and(|f| f.contains("master"))
        })
        .filter_map(|l| l.split_whitespace().nth(1)?.split(':').next()?.parse().ok())
        .collect())
}

/// Resident memory of a pod's containers from the metrics API, in MiB.
async fn pod_memory(c: &Cluster, ns: &str) -> Result<Vec<(String, String)>> {
    let raw = c
        .kubectl_ok([
            "get",
            "--raw",
            &format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods"),
        ])
        .await?;
    let v: serde_json::Value = serde_json::from_str(&raw)?;
    Ok(v["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|p| {
                    let name = p["metadata"]["name"].as_str().unwrap_or("?").to_owned();
                    let mem = p["containers"][0]["usage"]["memory"]
                        .as_str()
                        .unwrap_or("?")
                        .to_owned();
                    (name, mem)
                })
                .collect()
        })
        .unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_operator_and_redis_on_a_real_node() -> Result<()> {
    harness::product::init_crypto();
    let t0 = Instant::now();
    let mut c = Cluster::start(ClusterOptions {
        real_node: true,
        metrics_server: true,
        start_timeout: Duration::from_secs(300),
        ..Default::default()
    })
    .await?;
    let result = scenario(&c, t0).await;
    if result.is_err() {
        // Logs and certs stay for the post-mortem (the path is printed).
        c.keep_tmp();
    }
    c.stop();
    eprintln!("e2e-real: torn down at {:.1}s", t0.elapsed().as_secs_f64());
    result
}

async fn scenario(c: &Cluster, t0: Instant) -> Result<()> {
    let images = c.with_real(|r| Ok(r.images.clone()))?;
    let step = |what: &str| eprintln!("e2e-real: {what} at {:.1}s", t0.elapsed().as_secs_f64());
    step("cluster up");

    // --- helm install, only the image values changed -----------------------
    harness::chart::install(c, &images).await?;
    let chart = chart_dir().display().to_string();
    step("helm install done");

    // The pods run our image under the chart's ServiceAccounts, as 65532.
    let pods = c
        .kubectl_ok([
            "get",
            "pods",
            "-n",
            NAMESPACE,
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name} {.spec.serviceAccountName} {.spec.containers[0].image} {.status.phase}{"\n"}{end}"#,
        ])
        .await?;
    let mut seen = BTreeSet::new();
    for line in pods.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        ensure!(f.len() == 4, "unexpected pod line {line:?}");
        ensure!(f[2] == images.product, "{line}: not our image");
        ensure!(f[3] == "Running", "{line}: not running");
        seen.insert(f[1].to_owned());
    }
    let want: BTreeSet<String> = ["redis-operator-operator", "redis-operator-webhook"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    ensure!(seen == want, "ServiceAccounts {seen:?}, want {want:?}");
    let webhook_pod = pods
        .lines()
        .find(|l| l.contains("-webhook-"))
        .and_then(|l| l.split_whitespace().next())
        .context("no webhook pod")?
        .to_owned();
    // `kubectl exec` reaches the kubelet; the image has no shell, so ask
    // the kernel through the binary's own /proc view is not possible:
    // read the uid from the pod status instead.
    let uid = c
        .kubectl_ok([
            "get",
            "pod",
            &webhook_pod,
            "-n",
            NAMESPACE,
            "-o",
            "jsonpath={.spec.containers[0].securityContext.runAsUser}",
        ])
        .await?;
    ensure!(uid == "65532", "webhook runs as {uid}");
    let logs = c
        .kubectl_ok(["logs", &webhook_pod, "-n", NAMESPACE])
        .await
        .context("kubectl logs through the kubelet")?;
    ensure!(!logs.is_empty(), "the webhook pod logged nothing");

    // The webhook is reached through its Service, not a URL.
    let svc = c
        .kubectl_ok([
            "get",
            "validatingwebhookconfiguration",
            RELEASE,
            "-o",
            "jsonpath={.webhooks[0].clientConfig.service.name}",
        ])
        .await?;
    ensure!(!svc.is_empty(), "the webhook configuration uses no Service");

    // --- admission through the in-cluster webhook ---------------------------
    let bad = redis_cluster(
        "bad",
        &images.redis,
        "  replicas: 11\n  shard_count: 6\n  scaling_threshold: 150\n",
    );
    let msg = match c.kubectl_apply(&bad).await {
        Ok(_) => bail!("an invalid RedisCluster was accepted"),
        Err(e) => format!("{e:#}"),
    };
    for part in [
        "denied the request",
        "spec.replicas: 11 is above the maximum 10",
        "spec.shard_count: 6 is above the maximum 5",
        "spec.scaling_threshold: 150 is above the maximum 100",
    ] {
        ensure!(msg.contains(part), "expected {part:?} in:\n{msg}");
    }
    step("webhook denial checked");

    // --- a 3 x 2 RedisCluster in real containers -----------------------------
    c.kubectl_apply(&redis_cluster(
        REDIS,
        &images.redis,
        "  shard_count: 3\n  replicas: 2\n  autoscaling_paused: true\n",
    ))
    .await?;
    wait_ready(c, REDIS, 2, Duration::from_secs(240)).await?;
    step("RedisCluster 3x2 Ready");
    let pods = pod_ips(c, REDIS).await?;
    ensure!(pods.len() == 6, "{pods:?}");
    let seed = pods[0].1;
    let info: String = c
        .netns_handle()?
        .run_async(move || async move {
            harness::redis::query(SocketAddr::new(seed.into(), 6379), &["CLUSTER", "INFO"]).await
        })
        .await?;
    ensure!(info.contains("cluster_state:ok"), "{info}");
    ensure!(info.contains("cluster_slots_assigned:16384"), "{info}");

    // A client pod writes and reads through the client Service by name
    // (DNS), following the cluster's redirects (-c).
    let host = format!("{REDIS}.{APPS}.svc.cluster.local");
    let script = format!(
        "set -e\nfor i in $(seq 1 300); do r=$(redis-cli -c -h {host} set key:$i val:$i); [ \"$r\" = OK ] || {{ echo \"set key:$i: $r\"; exit 1; }}; done\n\
         n=0; for i in $(seq 1 300); do v=$(redis-cli -c -h {host} get key:$i); [ \"$v\" = \"val:$i\" ] && n=$((n+1)); done\n\
         echo \"read back $n of 300\""
    );
    c.kubectl_apply(&client_pod("client", &images.redis, &script))
        .await?;
    let log = pod_result(c, "client", Duration::from_secs(180)).await?;
    ensure!(log.contains("read back 300 of 300"), "{log}");
    // The keys spread over every primary, so the client was redirected.
    let prims = primaries(c, seed).await?;
    ensure!(prims.len() == 3, "{prims:?}");
    for p in &prims {
        let p = *p;
        let n: i64 = c
            .netns_handle()?
            .run_async(move || async move {
                harness::redis::query(SocketAddr::new(p.into(), 6379), &["DBSIZE"]).await
            })
            .await?;
        ensure!(n > 0, "primary {p} holds no key");
    }
    step("client pod wrote and read through the Service");

    // --- helm test ------------------------------------------------------------
    c.helm_ok(["test", RELEASE, "-n", NAMESPACE, "--timeout=180s"])
        .await
        .context("helm test")?;
    step("helm test passed");

    // --- a primary pod deleted under a writer --------------------------------
    let victim_ip = prims[0];
    let victim = pods
        .iter()
        .find(|(_, ip)| *ip == victim_ip)
        .map(|(n, _)| n.clone())
        .context("no pod has the primary's IP")?;
    let seeds: Vec<String> = pods
        .iter()
        .map(|(_, ip)| format!("redis://{ip}:6379"))
        .collect();
    let writer = Writer::new("w", seeds);
    let running = {
        let w = writer.clone();
        let netns = c.netns_handle()?;
        tokio::spawn(async move {
            netns
                .run_async(move || async move { w.run(WriteLimits::default()).await })
                .await
        })
    };
    let acks = || writer.acked_count();
    wait_for(
        "the writer's first 200 acknowledged writes",
        Duration::from_secs(60),
        || async { Ok((acks() >= 200).then_some(())) },
    )
    .await?;
    c.kubectl_ok(["delete", "pod", &victim, "-n", APPS, "--wait=false"])
        .await?;
    step("primary deleted under the writer");
    let before = acks();
    // Healed: a new primary took over the slots, the replacement pod joined,
    // and writes are acknowledged again.
    wait_for(
        "the cluster to heal after the primary's loss",
        Duration::from_secs(240),
        || async {
            let ready = rc_field(c, REDIS, "{.status.ready_replicas}").await?;
            let cond = rc_field(
                c,
                REDIS,
                r#"{.status.conditions[?(@.type=="Ready")].status}"#,
            )
            .await?;
            Ok((ready == "2" && cond == "True" && acks() >= before + 200).then_some(()))
        },
    )
    .await?;
    writer.stop();
    running.await.context("joining the writer")??;
    let summary = writer.summary();
    let new_pods = pod_ips(c, REDIS).await?;
    let seeds: Vec<String> = new_pods
        .iter()
        .map(|(_, ip)| format!("redis://{ip}:6379"))
        .collect();
    let total = summary.acked.len();
    let acked = summary.acked;
    let lost = c
        .netns_handle()?
        .run_async(move || async move { lost_writes(seeds, "w", &acked).await })
        .await?;
    ensure!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    eprintln!(
        "e2e-real: writer: {total} acknowledged, {} failed, longest gap between acknowledged writes {:?}",
        summary.failed, summary.longest_gap
    );
    step(&format!("all {total} acknowledged writes survived"));

    // RSS of our pods as the metrics API reports them (working set).
    match pod_memory(c, NAMESPACE).await {
        Ok(m) => eprintln!("e2e-real: operator/webhook pod memory (working set): {m:?}"),
        Err(e) => eprintln!("e2e-real: no pod metrics yet: {e:#}"),
    }

    // --- helm upgrade with changed values, then uninstall ---------------------
    let mut upgrade = vec![
        "upgrade".to_string(),
        RELEASE.into(),
        chart,
        "-n".into(),
        NAMESPACE.into(),
        "--wait".into(),
        "--timeout=180s".into(),
        "--set".into(),
        "webhook.policy.replicas.max=6".into(),
    ];
    upgrade.extend(image_values(&images));
    c.helm_ok(&upgrade).await.context("helm upgrade")?;
    // The rolled webhook pods enforce the new policy. Old pods may answer
    // for a moment after `--wait`: a fresh name per attempt, and what an old
    // pod let through is deleted again.
    let attempt = std::sync::atomic::AtomicUsize::new(0);
    wait_for(
        "the upgraded policy to be enforced",
        Duration::from_secs(120),
        || async {
            let name = format!("seven-{}", attempt.fetch_add(1, Ordering::Relaxed));
            match c
                .kubectl_apply(&redis_cluster(&name, &images.redis, "  replicas: 7\n"))
                .await
            {
                Ok(_) => {
                    c.kubectl_ok(["delete", "rediscluster", &name, "-n", APPS])
                        .await?;
                    Ok(None)
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    ensure!(
                        msg.contains("spec.replicas: 7 is above the maximum 6"),
                        "unexpected denial: {msg}"
                    );
                    Ok(Some(()))
                }
            }
        },
    )
    .await?;
    step("helm upgrade enforced");

    c.helm_ok([
        "uninstall",
        RELEASE,
        "-n",
        NAMESPACE,
        "--wait",
        "--timeout=120s",
    ])
    .await
    .context("helm uninstall")?;
    c.kubectl_ok(["get", "crd", CRD])
        .await
        .context("the CRD is gone")?;
    c.kubectl_ok(["get", "rediscluster", REDIS, "-n", APPS])
        .await
        .context("the RedisCluster is gone")?;
    // `helm uninstall --wait` waits for the Deployments; their pods take
    // their termination grace period.
    wait_for(
        &format!("nothing of the release left in {NAMESPACE}"),
        Duration::from_secs(120),
        || async {
            let left = release_objects(
                c,
                "all,configmaps,serviceaccounts,roles,rolebindings,poddisruptionbudgets",
                Some(NAMESPACE),
            )
            .await?;
            if left.is_empty() {
                Ok(Some(()))
            } else {
                Err(anyhow::anyhow!("left in {NAMESPACE}:\n{left}"))
            }
        },
    )
    .await?;
    // What the processes made at run time, not helm: listed, for the record.
    let runtime = c
        .kubectl_ok(["get", "secrets,leases", "-n", NAMESPACE, "-o", "name"])
        .await?;
    eprintln!("e2e-real: left in {NAMESPACE} after uninstall (made at run time): {runtime:?}");
    let cluster_wide = release_objects(c, CLUSTER_SCOPED_KINDS, None).await?;
    ensure!(
        cluster_wide.is_empty(),
        "left cluster-wide:\n{cluster_wide}"
    );
    step("helm uninstall left the CRD and the RedisCluster only");
    Ok(())
}
