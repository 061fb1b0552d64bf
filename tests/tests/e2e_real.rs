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
use harness::in_cluster::{
    APPS, client_pod, cluster_objects, events, helm_install, image_values, load_pod, lost_of,
    on_real_node, pod_ips, pod_phase, pod_result, rc_field, redis_cluster, redis_query, seeds,
    start_writer, stop_writer, use_client_password, wait_ready,
};
use harness::stack::{CLUSTER_SCOPED_KINDS, CRD, NAMESPACE, RELEASE, chart_dir, release_objects};
use harness::{Cluster, wait_for};

const REDIS: &str = "ten";

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
    on_real_node(true, scenario).await
}

async fn scenario(c: &Cluster, t0: Instant) -> Result<()> {
    let images = c.with_real(|r| Ok(r.images.clone()))?;
    let step = |what: &str| eprintln!("e2e-real: {what} at {:.1}s", t0.elapsed().as_secs_f64());
    step("cluster up");

    // --- helm install, only the image values changed -----------------------
    helm_install(c, &images, &[]).await?;
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
    // Authentication is on: nothing is served without the password.
    harness::redis::set_password(None);
    let refused = redis_query::<String>(c, seed, &["CLUSTER", "INFO"]).await;
    ensure!(
        refused
            .as_ref()
            .is_err_and(|e| format!("{e:#}").contains("NOAUTH")),
        "served without a password: {refused:?}"
    );
    use_client_password(c, APPS, REDIS).await?;
    step("a client without the password is refused");
    let info: String = c
        .netns_handle()?
        .run_async(move || async move {
            harness::redis::query(SocketAddr::new(seed.into(), 6379), &["CLUSTER", "INFO"]).await
        })
        .await?;
    ensure!(info.contains("cluster_state:ok"), "{info}");
    ensure!(info.contains("cluster_slots_assigned:16384"), "{info}");
    // The Redis container is hardened: a read-only root, no API token, no
    // Service environment variables.
    let probe = c
        .kubectl([
            "exec",
            "-n",
            APPS,
            &pods[0].0,
            "-c",
            "redis",
            "--",
            "sh",
            "-c",
            "touch /probe 2>&1; ls /var/run/secrets/kubernetes.io/serviceaccount 2>&1; env | grep _SERVICE_HOST= | grep -vc ^KUBERNETES_",
        ])
        .await?;
    let out = String::from_utf8_lossy(&probe.stdout);
    ensure!(
        out.contains("Read-only file system"),
        "root is writable: {out}"
    );
    ensure!(
        out.contains("No such file or directory"),
        "a token is mounted: {out}"
    );
    ensure!(
        out.trim_end().ends_with('0'),
        "Service links are set: {out}"
    );
    step("Redis pods are hardened");
    // Each pod's exporter sidecar logs in as its own user and reads its
    // node: up, in a cluster that is ok, with its memory bound.
    let metrics = c.netns_handle()?.http_get((seed, 9121), "/metrics")?;
    for line in ["redis_up 1", "redis_cluster_state 1"] {
        ensure!(
            metrics.lines().any(|l| l == line),
            "{line} not in the exporter's metrics:\n{}",
            &metrics[..metrics.len().min(3000)]
        );
    }
    for metric in [
        "redis_memory_used_bytes ",
        "redis_memory_max_bytes ",
        "redis_connected_clients ",
        "redis_commands_processed_total ",
    ] {
        ensure!(
            metrics.lines().any(|l| l.starts_with(metric)),
            "no {metric}in the exporter's metrics"
        );
    }
    let sidecar = c
        .kubectl_ok([
            "get",
            "pod",
            "-n",
            APPS,
            &pods[0].0,
            "-o",
            "jsonpath={.spec.initContainers[0].name} {.spec.initContainers[0].restartPolicy} {.status.initContainerStatuses[0].started}",
        ])
        .await?;
    ensure!(
        sidecar == "exporter Always true",
        "the exporter sidecar: {sidecar}"
    );
    step("the exporter sidecar serves the node's metrics");

    // A client pod writes and reads through the client Service by name
    // (DNS), following the cluster's redirects (-c).
    let host = format!("{REDIS}.{APPS}.svc.cluster.local");
    let script = format!(
        "set -e\nfor i in $(seq 1 300); do r=$(redis-cli -c -h {host} set key:$i val:$i); [ \"$r\" = OK ] || {{ echo \"set key:$i: $r\"; exit 1; }}; done\n\
         n=0; for i in $(seq 1 300); do v=$(redis-cli -c -h {host} get key:$i); [ \"$v\" = \"val:$i\" ] && n=$((n+1)); done\n\
         echo \"read back $n of 300\""
    );
    c.kubectl_apply(&client_pod("client", &images.redis, Some(REDIS), &script))
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
    let (writer, running) = start_writer(c, "w", seeds(&pods), 200).await?;
    let acks = || writer.acked_count();
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
    let summary = stop_writer(&writer, running).await?;
    let total = summary.acked.len();
    let lost = lost_of(c, seeds(&pod_ips(c, REDIS).await?), "w", &summary.acked).await?;
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

// --- CPU autoscaling on real CPU ------------------------------------------

const HOT: &str = "hot";
const MAX_REPLICAS: u32 = 3;
/// Low, so that a pipelined redis-benchmark crosses it by far and an idle
/// Redis (a few millicores of its 100m request) stays well below it.
const THRESHOLD: f64 = 30.0;

/// One look at the RedisCluster: what the autoscaler wrote and what status says.
#[derive(Debug, Clone, PartialEq)]
struct Obs {
    spec: u32,
    status: Option<u32>,
    ready: Option<u32>,
    cpu: Option<f64>,
    ready_cond: bool,
}

async fn observe(c: &Cluster, name: &str) -> Result<Obs> {
    let raw = rc_field(
        c,
        name,
        r#"{.spec.replicas}|{.status.replicas}|{.status.ready_replicas}|{.status.current_cpu}|{.status.conditions[?(@.type=="Ready")].status}"#,
    )
    .await?;
    let f: Vec<&str> = raw.split('|').collect();
    ensure!(f.len() == 5, "unexpected RedisCluster fields {raw:?}");
    Ok(Obs {
        spec: f[0]
            .parse()
            .with_context(|| format!("spec.replicas {raw:?}"))?,
        status: f[1].parse().ok(),
        ready: f[2].parse().ok(),
        cpu: f[3].parse().ok(),
        ready_cond: f[4] == "True",
    })
}

/// Readings of `status.current_cpu` as they change, with when they were seen.
#[derive(Default)]
struct Log(std::sync::Mutex<Vec<(f64, u32, Option<f64>)>>);

impl Log {
    fn record(&self, t0: Instant, o: &Obs) {
        if let Ok(mut v) = self.0.lock()
            && v.last().is_none_or(|l| (l.1, l.2) != (o.spec, o.cpu))
        {
            v.push((t0.elapsed().as_secs_f64(), o.spec, o.cpu));
        }
    }
    fn render(&self) -> String {
        self.0
            .lock()
            .map(|v| {
                v.iter()
                    .map(|(t, r, cpu)| match cpu {
                        Some(cpu) => format!("{t:.0}s: {r} replicas, {cpu:.0}%"),
                        None => format!("{t:.0}s: {r} replicas, no reading"),
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default()
    }
}

/// `INFO replication` of a pod, as `role` and (for a replica) its primary
/// and link state.
async fn replication(c: &Cluster, ip: Ipv4Addr) -> Result<(String, Option<(Ipv4Addr, bool)>)> {
    let info: String = redis_query(c, ip, &["INFO", "replication"]).await?;
    let field = |k: &str| {
        info.lines()
            .find_map(|l| l.trim().strip_prefix(k)?.strip_prefix(':'))
            .map(str::to_owned)
    };
    let role = field("role").context("no role in INFO replication")?;
    let primary = match (field("master_host"), field("master_link_status")) {
        (Some(h), Some(link)) => Some((h.parse()?, link == "up")),
        _ => None,
    };
    Ok((role, primary))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_autoscaling_on_a_real_node() -> Result<()> {
    on_real_node(true, autoscaling).await
}

async fn autoscaling(c: &Cluster, t0: Instant) -> Result<()> {
    let images = c.with_real(|r| Ok(r.images.clone()))?;
    let step = |what: &str| {
        eprintln!(
            "e2e-real autoscaling: {what} at {:.1}s",
            t0.elapsed().as_secs_f64()
        )
    };
    step("cluster up");
    // The operator reads PodMetrics every 5 s (a chart value), so the waits
    // below measure the kubelet, metrics-server and the scaling rules.
    helm_install(c, &images, &["operator.metricsInterval=5s"]).await?;
    step("helm install done");

    // One shard, so the load lands on one primary and the new pods can only
    // be its replicas. Short cooldown and window keep the test short.
    c.kubectl_apply(&redis_cluster(
        HOT,
        &images.redis,
        &format!(
            "  shard_count: 1\n  replicas: 1\n  min_replicas: 1\n  max_replicas: {MAX_REPLICAS}\n  scaling_threshold: {THRESHOLD}\n  scale_up_cooldown_seconds: 10\n  scale_down_stabilization_seconds: 30\n  resources:\n    requests: {{cpu: 100m, memory: 64Mi}}\n"
        ),
    ))
    .await?;
    wait_ready(c, HOT, 1, Duration::from_secs(240)).await?;
    use_client_password(c, APPS, HOT).await?;
    step("RedisCluster 1x1 Ready");

    // Idle: a reading from the kubelet, below the threshold, and no step.
    let log = Log::default();
    let idle = wait_for("an idle CPU reading", Duration::from_secs(120), || async {
        let o = observe(c, HOT).await?;
        log.record(t0, &o);
        Ok(o.cpu.map(|cpu| (cpu, o.spec)))
    })
    .await?;
    ensure!(
        idle.0 < THRESHOLD && idle.1 == 1,
        "idle: {idle:?}; readings: {}",
        log.render()
    );
    step(&format!("idle reading {:.1}%", idle.0));

    // --- load: replicas grow to the maximum, never past it ------------------
    // Straight at the primary: its pod IP, since the client Service also
    // leads to replicas, which would only answer MOVED.
    let primary = pod_ips(c, HOT).await?;
    ensure!(primary.len() == 1, "{primary:?}");
    c.kubectl_apply(&load_pod(
        "load",
        &images.redis,
        HOT,
        &format!("-h {}", primary[0].1),
        2000,
        Duration::from_secs(600),
    ))
    .await?;
    let load_started = Instant::now();
    let load_failed = || async {
        if pod_phase(c, "load").await? == "Failed" {
            let l = c.kubectl_ok(["logs", "load", "-n", APPS]).await?;
            return Err(harness::fatal(anyhow::anyhow!("the load pod failed:\n{l}")));
        }
        Ok(())
    };
    let first_step = wait_for(
        "spec.replicas to grow under load",
        Duration::from_secs(240),
        || async {
            load_failed().await?;
            let o = observe(c, HOT).await?;
            log.record(t0, &o);
            Ok((o.spec >= 2).then_some(load_started.elapsed()))
        },
    )
    .await
    .with_context(|| format!("readings: {}", log.render()))?;
    step(&format!(
        "replicas grew after {:.0}s of load",
        first_step.as_secs_f64()
    ));
    let at_max = wait_for(
        "the maximum, every pod ready, under load",
        Duration::from_secs(300),
        || async {
            load_failed().await?;
            let o = observe(c, HOT).await?;
            log.record(t0, &o);
            if o.spec > MAX_REPLICAS {
                return Err(harness::fatal(anyhow::anyhow!(
                    "scaled past max_replicas: {o:?}"
                )));
            }
            Ok((o.spec == MAX_REPLICAS
                && o.status == Some(MAX_REPLICAS)
                && o.ready == Some(MAX_REPLICAS)
                && o.ready_cond)
                .then_some(load_started.elapsed()))
        },
    )
    .await
    .with_context(|| format!("readings: {}", log.render()))?;
    step(&format!(
        "{MAX_REPLICAS} replicas ready after {:.0}s of load",
        at_max.as_secs_f64()
    ));

    // The new pods joined as replicas of the one primary, in sync.
    let pods = pod_ips(c, HOT).await?;
    ensure!(pods.len() == MAX_REPLICAS as usize, "{pods:?}");
    wait_for(
        "one primary and in-sync replicas",
        Duration::from_secs(60),
        || async {
            let mut primaries = Vec::new();
            let mut replicas = Vec::new();
            for (_, ip) in &pods {
                match replication(c, *ip).await? {
                    (role, _) if role == "master" => primaries.push(*ip),
                    (role, Some((of, up))) if role == "slave" => replicas.push((of, up)),
                    other => bail!("{ip}: unexpected {other:?}"),
                }
            }
            Ok((primaries.len() == 1
                && replicas.len() == pods.len() - 1
                && replicas.iter().all(|(of, up)| *of == primaries[0] && *up))
            .then_some(()))
        },
    )
    .await?;
    let nodes: String = redis_query(c, pods[0].1, &["CLUSTER", "NODES"]).await?;
    let slaves = nodes.lines().filter(|l| l.contains("slave")).count();
    ensure!(
        slaves == MAX_REPLICAS as usize - 1,
        "CLUSTER NODES:\n{nodes}"
    );
    let sts = cluster_objects(c, "statefulsets", HOT, "jsonpath={.items[*].spec.replicas}").await?;
    ensure!(
        sts == MAX_REPLICAS.to_string(),
        "StatefulSet replicas {sts}"
    );
    step("the new pods are replicas of the primary");

    // --- load stops: back down to the minimum -------------------------------
    c.kubectl_ok(["delete", "pod", "load", "-n", APPS, "--grace-period=1"])
        .await?;
    let load_stopped = Instant::now();
    step("load stopped");
    let down = wait_for(
        "spec.replicas back to 1 without load",
        Duration::from_secs(360),
        || async {
            let o = observe(c, HOT).await?;
            log.record(t0, &o);
            let pods = pod_ips(c, HOT).await?;
            Ok((o.spec == 1
                && o.status == Some(1)
                && o.ready == Some(1)
                && o.ready_cond
                && pods.len() == 1)
                .then_some(load_stopped.elapsed()))
        },
    )
    .await
    .with_context(|| format!("readings: {}", log.render()))?;
    step(&format!(
        "back to 1 replica {:.0}s after the load stopped",
        down.as_secs_f64()
    ));
    let last = pod_ips(c, HOT).await?;
    let ip = last.first().map(|p| p.1).context("no pod left")?;
    let (role, _) = replication(c, ip).await?;
    ensure!(role == "master", "the last pod is a {role}");
    // The removed replicas are forgotten, and the slots are all served.
    wait_for(
        "CLUSTER NODES to list only the last pod",
        Duration::from_secs(60),
        || async {
            let nodes: String = redis_query(c, ip, &["CLUSTER", "NODES"]).await?;
            let info: String = redis_query(c, ip, &["CLUSTER", "INFO"]).await?;
            Ok((nodes.lines().count() == 1
                && info.contains("cluster_state:ok")
                && info.contains("cluster_slots_assigned:16384"))
            .then_some(()))
        },
    )
    .await?;
    let ups = events(c, HOT, "ScaledUp").await?;
    let downs = events(c, HOT, "ScaledDown").await?;
    let steps = MAX_REPLICAS as usize - 1;
    ensure!(
        ups.len() == steps && downs.len() == steps,
        "events: ScaledUp {ups:?}, ScaledDown {downs:?}, want {steps} each"
    );
    eprintln!("e2e-real autoscaling: readings: {}", log.render());
    step("scaled up and down on real CPU");
    Ok(())
}
