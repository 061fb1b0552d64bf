//! The operator end to end on a real control plane: children and status,
//! printer columns, the scale subresource, garbage collection, autoscaling on
//! real metrics (metrics-server fed by kwok), leader election and a restart
//! in the middle of a scale. Every assertion is on what the apiserver (or the
//! operator's own /metrics) returns.
//!
//! The topology module is not wired in yet, so the operator runs with
//! `--manage-topology=false`: StatefulSets follow the spec directly and the
//! status treats Redis as unmanaged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use harness::stack::{LEASE, NAMESPACE, ORIGINAL_MANIFEST, Stack, StackOptions, manifest};
use harness::wait::wait_for_every;
use harness::{Cluster, ClusterOptions, fatal, wait_for};
use serde_json::Value;
use tokio::sync::watch;

/// Tests here each start a control plane; one at a time fits 2 cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const NS: &str = "default";
const CLUSTER_LABEL: &str = "redis.example.com/cluster";
/// kwok reports this much CPU for every container of an annotated pod.
const USAGE_CPU: &str = "kwok.x-k8s.io/usage-cpu";
const POLL: Duration = Duration::from_millis(500);

fn operator_args(extra: &[&str]) -> Vec<String> {
    ["--manage-topology=false", "--metrics-interval=5s"]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
}

async fn start(
    metrics_server: bool,
    operators: usize,
    extra_args: &[&str],
) -> Result<(Arc<Cluster>, Stack)> {
    harness::product::init_crypto();
    let c = Cluster::start(ClusterOptions {
        metrics_server,
        ..Default::default()
    })
    .await?;
    let stack = Stack::install(
        &c,
        StackOptions {
            operators,
            operator_args: operator_args(extra_args),
            ..Default::default()
        },
    )
    .await?;
    Ok((Arc::new(c), stack))
}

/// Stops the operators and webhook, then the control plane.
fn finish(c: Arc<Cluster>, stack: Stack) {
    drop(stack);
    match Arc::try_unwrap(c) {
        Ok(c) => c.stop(),
        Err(c) => drop(c),
    }
}

// ---------------------------------------------------------------- reading

async fn get_json(c: &Cluster, args: &[&str]) -> Result<Value> {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = c.kubectl_ok(&all).await?;
    serde_json::from_str(&out).with_context(|| format!("parsing `kubectl {}`", args.join(" ")))
}

async fn rc(c: &Cluster, name: &str) -> Result<Value> {
    get_json(c, &["get", "rediscluster", name, "-n", NS]).await
}

/// Objects of `kind` labelled as children of cluster `name`.
async fn children(c: &Cluster, kind: &str, name: &str) -> Result<Vec<Value>> {
    let v = get_json(
        c,
        &[
            "get",
            kind,
            "-n",
            NS,
            "-l",
            &format!("{CLUSTER_LABEL}={name}"),
        ],
    )
    .await?;
    Ok(v["items"].as_array().cloned().unwrap_or_default())
}

fn names(items: &[Value]) -> Vec<String> {
    let mut n: Vec<String> = items
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    n.sort();
    n
}

fn spec_replicas(rc: &Value) -> i64 {
    rc["spec"]["replicas"].as_i64().unwrap_or(-1)
}

fn condition<'a>(rc: &'a Value, type_: &str) -> Option<&'a Value> {
    rc["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn condition_is(rc: &Value, type_: &str, status: &str) -> bool {
    condition(rc, type_).is_some_and(|c| c["status"] == status)
}

/// Every shard fully up at `replicas` and the phase Ready.
fn ready_at(rc: &Value, replicas: i64) -> bool {
    let s = &rc["status"];
    spec_replicas(rc) == replicas
        && s["replicas"] == replicas
        && s["ready_replicas"] == replicas
        && s["phase"] == "Ready"
        && condition_is(rc, "Ready", "True")
        && s["observed_generation"] == rc["metadata"]["generation"]
}

/// Polls RedisCluster `name` until `done` says so; `done` may record what
/// it sees on the way. Bounded by `timeout`.
async fn watch_rc<T>(
    c: &Cluster,
    name: &str,
    what: &str,
    timeout: Duration,
    mut done: impl FnMut(&Value) -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match rc(c, name).await {
            Ok(v) => {
                if let Some(t) = done(&v)? {
                    return Ok(t);
                }
            }
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => {}
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn wait_ready(c: &Cluster, name: &str, replicas: i64, timeout: Duration) -> Result<Value> {
    wait_for(
        &format!("RedisCluster {name} Ready with {replicas} nodes per shard"),
        timeout,
        || async {
            let v = rc(c, name).await?;
            Ok(ready_at(&v, replicas).then_some(v))
        },
    )
    .await
}

/// `events.k8s.io` Events about RedisCluster `name` with `reason`.
async fn events(c: &Cluster, name: &str, reason: &str) -> Result<Vec<Value>> {
    let v = get_json(c, &["get", "events.events.k8s.io", "-n", NS]).await?;
    Ok(v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["regarding"]["kind"] == "RedisCluster"
                && e["regarding"]["name"] == name
                && e["reason"] == reason
        })
        .cloned()
        .collect())
}

/// How many times the events happened (a repeated event is one object with
/// a `series`).
fn occurrences(events: &[Value]) -> i64 {
    events
        .iter()
        .map(|e| e["series"]["count"].as_i64().unwrap_or(1))
        .sum()
}

fn event_time(e: &Value) -> Result<f64> {
    timestamp(&e["eventTime"]).context("eventTime of an event")
}

/// An RFC 3339 time from the API, in Unix seconds.
fn timestamp(v: &Value) -> Result<f64> {
    let t = v
        .as_str()
        .with_context(|| format!("{v} is not a timestamp"))?;
    let t: k8s_openapi::jiff::Timestamp =
        t.parse().map_err(|e| anyhow::anyhow!("parsing {t}: {e}"))?;
    Ok(t.as_millisecond() as f64 / 1000.0)
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// The value of one sample line (`name{labels}`) of a Prometheus text page.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

async fn operator_sample(stack: &Stack, i: usize, series: &str) -> Result<f64> {
    let text = stack.operator_metrics(i).await?;
    sample(&text, series).with_context(|| format!("no sample {series} in:\n{text}"))
}

const SCALED_UP: &str = "redis_operator_scaling_events_total{direction=\"up\"}";
const SCALED_DOWN: &str = "redis_operator_scaling_events_total{direction=\"down\"}";
const RECONCILES: &str = "redis_operator_reconcile_duration_seconds_count";
const MANAGED: &str = "redis_operator_managed_clusters";

async fn lease_holder(c: &Cluster) -> Result<String> {
    c.kubectl_ok([
        "get",
        "lease",
        LEASE,
        "-n",
        NAMESPACE,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])
    .await
}

/// Waits until operator `i` answers /readyz with 200 (a leader once its
/// caches are synced, or a standby).
async fn wait_operator_ready(stack: &Stack, i: usize, timeout: Duration) -> Result<()> {
    let op = stack.operators.get(i).context("no such operator")?;
    let url = format!("http://127.0.0.1:{}/readyz", op.metrics_port);
    wait_for(&format!("{} to be ready", op.identity), timeout, || async {
        Ok(harness::stack::http_ok(&url).await.then_some(()))
    })
    .await
}

fn alive(stack: &mut Stack) -> Result<()> {
    stack.check_webhook()?;
    for op in &mut stack.operators {
        op.child.check_running()?;
    }
    Ok(())
}

/// Keeps every pod of cluster `name` annotated with the CPU usage in `cpu`
/// (new pods too), every 2 s, for at most 15 minutes.
fn keep_loaded(
    c: Arc<Cluster>,
    name: &str,
    mut cpu: watch::Receiver<String>,
) -> tokio::task::JoinHandle<()> {
    let selector = format!("{CLUSTER_LABEL}={name}");
    tokio::spawn(async move {
        for _ in 0..450 {
            let value = cpu.borrow_and_update().clone();
            let annotation = format!("{USAGE_CPU}={value}");
            if let Err(e) = c
                .kubectl_ok([
                    "annotate",
                    "pods",
                    "-n",
                    NS,
                    "-l",
                    &selector,
                    &annotation,
                    "--overwrite",
                ])
                .await
            {
                eprintln!("annotating pods: {e:#}");
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), cpu.changed()).await;
        }
    })
}

/// The cells of `row` under each header of `kubectl get` table output.
fn table_row(output: &str, first_cell: &str) -> Result<Vec<(String, String)>> {
    let mut lines = output.lines();
    let header = lines.next().context("no header")?;
    let mut starts = Vec::new();
    let mut prev_space = true;
    for (i, ch) in header.char_indices() {
        if !ch.is_whitespace() && prev_space {
            starts.push(i);
        }
        prev_space = ch.is_whitespace();
    }
    let row = lines
        .find(|l| l.split_whitespace().next() == Some(first_cell))
        .with_context(|| format!("no row {first_cell} in:\n{output}"))?;
    let cell = |s: &str, from: usize, to: Option<usize>| -> String {
        let end = to.unwrap_or(s.len()).min(s.len());
        s.get(from.min(end)..end).unwrap_or("").trim().to_string()
    };
    Ok(starts
        .iter()
        .enumerate()
        .map(|(i, &from)| {
            let to = starts.get(i + 1).copied();
            (cell(header, from, to), cell(row, from, to))
        })
        .collect())
}

// ------------------------------------------------------------ scenarios

/// Scenarios 1, 2, 4 and 5: the original manifest, a sharded cluster with
/// all its children and printer columns, `kubectl scale`, and garbage
/// collection on delete.
#[tokio::test]
async fn children_status_scale_and_garbage_collection() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let (c, mut stack) = start(false, 1, &[]).await?;

    // 1. The original tutorial's RedisCluster: one StatefulSet, one pod.
    c.kubectl_apply(ORIGINAL_MANIFEST).await?;
    let v = wait_ready(&c, "redis-cluster", 1, Duration::from_secs(90)).await?;
    let sts = children(&c, "statefulsets", "redis-cluster").await?;
    assert_eq!(names(&sts), ["redis-cluster-shard-0"]);
    assert_eq!(sts[0]["spec"]["replicas"], 1);
    assert_eq!(sts[0]["status"]["readyReplicas"], 1);
    let pods = children(&c, "pods", "redis-cluster").await?;
    assert_eq!(names(&pods), ["redis-cluster-shard-0-0"]);
    let status = &v["status"];
    assert_eq!(status["ready_replicas"], 1, "{status}");
    assert_eq!(status["replicas"], 1, "{status}");
    assert_eq!(status["phase"], "Ready", "{status}");
    assert!(status["observed_generation"].as_i64().is_some(), "{status}");
    assert_eq!(status["observed_generation"], v["metadata"]["generation"]);
    assert_eq!(
        status["selector"],
        "redis.example.com/cluster=redis-cluster"
    );
    for (t, s) in [
        ("Ready", "True"),
        ("Scaling", "False"),
        ("Degraded", "False"),
        // No metrics-server in this cluster: said so, and no CPU shown.
        ("MetricsAvailable", "False"),
    ] {
        assert!(condition_is(&v, t, s), "{t} should be {s}: {status}");
    }
    assert!(status.get("current_cpu").is_none(), "{status}");
    let created = events(&c, "redis-cluster", "Created").await?;
    assert_eq!(occurrences(&created), 1, "Created events: {created:?}");

    // 2. Three shards of two: every child, with the owner reference.
    c.kubectl_apply(&manifest(
        "sharded",
        "  replicas: 2\n  shard_count: 3\n  scaling_threshold: 70.0\n",
    ))
    .await?;
    let v = wait_ready(&c, "sharded", 2, Duration::from_secs(90)).await?;
    let uid = v["metadata"]["uid"].as_str().context("uid")?.to_string();
    let sts = children(&c, "statefulsets", "sharded").await?;
    assert_eq!(
        names(&sts),
        ["sharded-shard-0", "sharded-shard-1", "sharded-shard-2"]
    );
    for s in &sts {
        assert_eq!(s["spec"]["replicas"], 2, "{}", s["metadata"]["name"]);
        assert_eq!(s["status"]["readyReplicas"], 2, "{}", s["metadata"]["name"]);
    }
    assert_eq!(children(&c, "pods", "sharded").await?.len(), 6);
    let svcs = children(&c, "services", "sharded").await?;
    assert_eq!(names(&svcs), ["sharded", "sharded-headless"]);
    let headless = svcs
        .iter()
        .find(|s| s["metadata"]["name"] == "sharded-headless")
        .context("headless service")?;
    assert_eq!(headless["spec"]["clusterIP"], "None");
    let cms = children(&c, "configmaps", "sharded").await?;
    assert_eq!(names(&cms), ["sharded-config"]);
    let conf = cms[0]["data"]["redis.conf"].as_str().unwrap_or_default();
    assert!(
        conf.lines().any(|l| l.trim() == "cluster-enabled yes"),
        "{conf}"
    );
    let pdbs = children(&c, "poddisruptionbudgets", "sharded").await?;
    assert_eq!(
        names(&pdbs),
        ["sharded-shard-0", "sharded-shard-1", "sharded-shard-2"]
    );
    for p in &pdbs {
        assert_eq!(p["spec"]["maxUnavailable"], 1, "{}", p["metadata"]["name"]);
    }
    // The network: the client port to this namespace and the operator's
    // pods in theirs, the bus port to the cluster's own pods.
    let nps = children(&c, "networkpolicies", "sharded").await?;
    assert_eq!(names(&nps), ["sharded"]);
    let ingress = &nps[0]["spec"]["ingress"];
    assert_eq!(ingress[0]["ports"][0]["port"], 6379, "{ingress}");
    assert_eq!(
        ingress[0]["from"][0],
        serde_json::json!({"podSelector": {}})
    );
    assert_eq!(
        ingress[0]["from"][1]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        harness::stack::NAMESPACE
    );
    assert_eq!(ingress[1]["ports"][0]["port"], 16379, "{ingress}");
    assert_eq!(
        ingress[1]["from"][0]["podSelector"]["matchLabels"][CLUSTER_LABEL],
        "sharded"
    );
    // And the credentials: the clients' Secret and the internal one.
    let secrets = children(&c, "secrets", "sharded").await?;
    assert_eq!(names(&secrets), ["sharded-auth", "sharded-internal-auth"]);
    for obj in sts
        .iter()
        .chain(&svcs)
        .chain(&cms)
        .chain(&pdbs)
        .chain(&nps)
        .chain(&secrets)
    {
        let owners = &obj["metadata"]["ownerReferences"];
        ensure!(
            owners
                .as_array()
                .is_some_and(|o| o.iter().any(|r| r["uid"] == uid.as_str()
                    && r["kind"] == "RedisCluster"
                    && r["controller"] == true)),
            "{} is not owned by the RedisCluster: {owners}",
            obj["metadata"]["name"]
        );
    }

    // The printer columns, as `kubectl get redisclusters` shows them.
    let out = c.kubectl_ok(["get", "redisclusters", "-n", NS]).await?;
    let row = table_row(&out, "sharded")?;
    let headers: Vec<&str> = row.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(
        headers,
        [
            "NAME",
            "SHARDS",
            "REPLICAS",
            "READY",
            "CPU",
            "THRESHOLD",
            "PHASE",
            "AGE"
        ],
        "{out}"
    );
    let cell = |h: &str| {
        row.iter()
            .find(|(k, _)| k == h)
            .map(|(_, v)| v.as_str())
            .unwrap_or("?")
    };
    assert_eq!(cell("SHARDS"), "3", "{out}");
    assert_eq!(cell("REPLICAS"), "2", "{out}");
    assert_eq!(cell("READY"), "2", "{out}");
    // No metrics here, so status.current_cpu is absent.
    assert!(matches!(cell("CPU"), "" | "<none>"), "{out}");
    assert_eq!(cell("THRESHOLD").parse::<f64>().ok(), Some(70.0), "{out}");
    assert_eq!(cell("PHASE"), "Ready", "{out}");
    assert!(!cell("AGE").is_empty(), "{out}");
    let original = table_row(&out, "redis-cluster")?;
    assert_eq!(original[1].1, "1", "{out}");
    assert_eq!(original[2].1, "1", "{out}");

    // 4. kubectl scale goes through the scale subresource.
    c.kubectl_ok(["scale", "rediscluster/sharded", "--replicas=3", "-n", NS])
        .await?;
    assert_eq!(spec_replicas(&rc(&c, "sharded").await?), 3);
    let v = wait_ready(&c, "sharded", 3, Duration::from_secs(90)).await?;
    assert_eq!(v["status"]["replicas"], 3);
    let sts = children(&c, "statefulsets", "sharded").await?;
    assert_eq!(sts.len(), 3);
    for s in &sts {
        assert_eq!(s["spec"]["replicas"], 3, "{}", s["metadata"]["name"]);
    }
    assert_eq!(children(&c, "pods", "sharded").await?.len(), 9);
    let scale: Value = serde_json::from_str(
        &c.kubectl_ok([
            "get",
            "--raw",
            "/apis/redis.example.com/v1alpha1/namespaces/default/redisclusters/sharded/scale",
        ])
        .await?,
    )?;
    assert_eq!(scale["spec"]["replicas"], 3, "{scale}");
    assert_eq!(scale["status"]["replicas"], 3, "{scale}");
    assert_eq!(
        scale["status"]["selector"], "redis.example.com/cluster=sharded",
        "{scale}"
    );
    // Created once per cluster, however many reconciles since.
    assert_eq!(occurrences(&events(&c, "sharded", "Created").await?), 1);
    assert_eq!(
        occurrences(&events(&c, "redis-cluster", "Created").await?),
        1
    );
    alive(&mut stack)?;

    // A NetworkPolicy switched off in the spec goes.
    c.kubectl_ok([
        "patch",
        "rediscluster",
        "sharded",
        "-n",
        NS,
        "--type=merge",
        "-p",
        r#"{"spec":{"network_policy":{"enabled":false}}}"#,
    ])
    .await?;
    wait_for(
        "the NetworkPolicy switched off to be deleted",
        Duration::from_secs(60),
        || async {
            let left = children(&c, "networkpolicies", "sharded").await?;
            Ok(left.is_empty().then_some(()))
        },
    )
    .await?;

    // 5. Deleting the RedisCluster removes every child: the real garbage
    // collector follows the owner references. The other cluster stays.
    c.kubectl_ok(["delete", "rediscluster", "sharded", "-n", NS])
        .await?;
    let kinds = "statefulsets,services,configmaps,poddisruptionbudgets,pods,secrets";
    wait_for(
        "every child of sharded to be garbage-collected",
        Duration::from_secs(90),
        || async {
            let left = c
                .kubectl_ok([
                    "get",
                    kinds,
                    "-n",
                    NS,
                    "-l",
                    &format!("{CLUSTER_LABEL}=sharded"),
                    "-o",
                    "name",
                ])
                .await?;
            Ok(left.trim().is_empty().then_some(()))
        },
    )
    .await?;
    let rest = c
        .kubectl_ok([
            "get",
            kinds,
            "-n",
            NS,
            "-l",
            &format!("{CLUSTER_LABEL}=redis-cluster"),
            "-o",
            "name",
        ])
        .await?;
    for expect in [
        "statefulset.apps/redis-cluster-shard-0",
        "service/redis-cluster",
        "service/redis-cluster-headless",
        "configmap/redis-cluster-config",
        "poddisruptionbudget.policy/redis-cluster-shard-0",
        "pod/redis-cluster-shard-0-0",
    ] {
        assert!(
            rest.lines().any(|l| l == expect),
            "{expect} is gone:\n{rest}"
        );
    }
    // The operator does not bring anything of the deleted cluster back.
    // Not a sleep: wait until its watch has dropped the cluster, then until
    // it has reconciled a change to the other cluster made after that, so
    // the check below runs after the operator has acted on the deletion.
    wait_for(
        "the operator to forget the deleted cluster",
        Duration::from_secs(30),
        || async { Ok((operator_sample(&stack, 0, MANAGED).await? == 1.0).then_some(())) },
    )
    .await?;
    c.kubectl_ok([
        "patch",
        "rediscluster",
        "redis-cluster",
        "-n",
        NS,
        "--type=merge",
        "-p",
        r#"{"spec":{"autoscaling_paused":true}}"#,
    ])
    .await?;
    wait_for(
        "the operator to reconcile the other cluster's new generation",
        Duration::from_secs(30),
        || async {
            let v = rc(&c, "redis-cluster").await?;
            let seen = v["status"]["observed_generation"] == v["metadata"]["generation"];
            Ok(seen.then_some(()))
        },
    )
    .await?;
    let left = c
        .kubectl_ok([
            "get",
            kinds,
            "-n",
            NS,
            "-l",
            &format!("{CLUSTER_LABEL}=sharded"),
            "-o",
            "name",
        ])
        .await?;
    assert_eq!(left.trim(), "", "recreated after delete");
    alive(&mut stack)?;
    let errors = stack.operator_metrics(0).await?;
    ensure!(
        !errors
            .lines()
            .any(|l| l.starts_with("redis_operator_reconcile_errors_total")),
        "reconcile errors:\n{errors}"
    );
    eprintln!(
        "children_status_scale_and_garbage_collection: {:?}",
        started.elapsed()
    );
    finish(c, stack);
    Ok(())
}

/// Scenario 3: autoscaling on real PodMetrics, up one step per cooldown to
/// the maximum, then down one step per stabilisation window.
#[tokio::test]
async fn autoscales_on_real_metrics() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let (c, mut stack) = start(true, 1, &[]).await?;
    const COOLDOWN: f64 = 10.0;
    const WINDOW: f64 = 30.0;
    c.kubectl_apply(&manifest(
        "hot",
        "  replicas: 1\n  min_replicas: 1\n  max_replicas: 3\n  scaling_threshold: 70.0\n  \
         scale_up_cooldown_seconds: 10\n  scale_down_stabilization_seconds: 30\n",
    ))
    .await?;
    // 300m against the default 100m request: 300 %.
    let (cpu, cpu_rx) = watch::channel("300m".to_string());
    let load = keep_loaded(c.clone(), "hot", cpu_rx);

    // Up: 1 -> 2 -> 3, never a jump, never past the maximum.
    let mut seen = vec![1i64];
    let mut cpu_seen: Option<f64> = None;
    let mut metrics_seen = false;
    watch_rc(
        &c,
        "hot",
        "hot to scale up to 3",
        Duration::from_secs(240),
        |v| {
            let r = spec_replicas(v);
            if seen.last() != Some(&r) {
                eprintln!("hot: spec.replicas {r} after {:?}", started.elapsed());
                seen.push(r);
            }
            if let Some(u) = v["status"]["current_cpu"].as_f64() {
                cpu_seen = Some(cpu_seen.unwrap_or(0.0).max(u));
            }
            metrics_seen |= condition_is(v, "MetricsAvailable", "True");
            Ok((r >= 3).then_some(()))
        },
    )
    .await?;
    assert_eq!(seen, [1, 2, 3], "replicas went {seen:?}");
    let u = cpu_seen.context("status.current_cpu was never reported")?;
    assert!(u > 77.0, "current_cpu {u} not above the tolerance band");
    assert!(metrics_seen, "MetricsAvailable was never True");
    let ups = events(&c, "hot", "ScaledUp").await?;
    assert_eq!(occurrences(&ups), 2, "ScaledUp events: {ups:#?}");
    let mut ups: Vec<(f64, String)> = ups
        .iter()
        .map(|e| Ok((event_time(e)?, e["note"].as_str().unwrap_or("").to_string())))
        .collect::<Result<_>>()?;
    ups.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(ups[0].1.contains("replicas 1 -> 2"), "{ups:?}");
    assert!(ups[1].1.contains("replicas 2 -> 3"), "{ups:?}");
    assert!(
        ups[1].0 - ups[0].0 >= COOLDOWN - 0.5,
        "two scale-ups {:.1}s apart, cooldown {COOLDOWN}s",
        ups[1].0 - ups[0].0
    );

    // At the maximum it stays, through more than two cooldowns, and the
    // cluster converges to 3.
    let hold = Instant::now();
    while hold.elapsed() < Duration::from_secs(20) {
        let v = rc(&c, "hot").await?;
        assert_eq!(spec_replicas(&v), 3, "moved past max_replicas");
        tokio::time::sleep(POLL).await;
    }
    wait_ready(&c, "hot", 3, Duration::from_secs(60)).await?;
    assert_eq!(operator_sample(&stack, 0, SCALED_UP).await?, 2.0);
    assert_eq!(occurrences(&events(&c, "hot", "ScaledUp").await?), 2);
    alive(&mut stack)?;

    // Down: 5m is 5 %. Nothing moves for a whole window after the drop.
    cpu.send("5m".to_string())?;
    let dropped = Instant::now();
    let low_since = unix_now();
    while dropped.elapsed() < Duration::from_secs_f64(WINDOW - 2.0) {
        let v = rc(&c, "hot").await?;
        assert_eq!(
            spec_replicas(&v),
            3,
            "scaled down {:?} after the drop, before the {WINDOW}s window",
            dropped.elapsed()
        );
        tokio::time::sleep(POLL).await;
    }
    let mut down = vec![3i64];
    watch_rc(
        &c,
        "hot",
        "hot to scale down to 1",
        Duration::from_secs(180),
        |v| {
            let r = spec_replicas(v);
            if down.last() != Some(&r) {
                eprintln!("hot: spec.replicas {r} after {:?}", started.elapsed());
                down.push(r);
            }
            Ok((r <= 1).then_some(()))
        },
    )
    .await?;
    assert_eq!(down, [3, 2, 1], "replicas went {down:?}");
    let downs = events(&c, "hot", "ScaledDown").await?;
    assert_eq!(occurrences(&downs), 2, "ScaledDown events: {downs:#?}");
    let mut times: Vec<f64> = downs.iter().map(event_time).collect::<Result<_>>()?;
    times.sort_by(f64::total_cmp);
    assert!(
        times[0] - low_since >= WINDOW,
        "first scale-down {:.1}s after the drop, window {WINDOW}s",
        times[0] - low_since
    );
    assert!(
        times[1] - times[0] >= WINDOW - 0.5,
        "scale-downs {:.1}s apart, window {WINDOW}s",
        times[1] - times[0]
    );
    let v = wait_ready(&c, "hot", 1, Duration::from_secs(60)).await?;
    assert!(
        v["status"]["current_cpu"]
            .as_f64()
            .is_some_and(|u| u < 20.0),
        "{}",
        v["status"]
    );
    assert_eq!(children(&c, "pods", "hot").await?.len(), 1);
    assert_eq!(operator_sample(&stack, 0, SCALED_DOWN).await?, 2.0);
    assert_eq!(operator_sample(&stack, 0, SCALED_UP).await?, 2.0);
    alive(&mut stack)?;
    load.abort();
    eprintln!("autoscales_on_real_metrics: {:?}", started.elapsed());
    finish(c, stack);
    Ok(())
}

/// Scenario 6: two operators, one leads; SIGKILL it and the other takes over
/// within the lease duration, without redoing anything.
#[tokio::test]
async fn standby_takes_over_when_the_leader_dies() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    const LEASE_SECONDS: u64 = 15;
    let (c, mut stack) = start(false, 2, &[]).await?;
    let ids: Vec<String> = stack.operators.iter().map(|o| o.identity.clone()).collect();
    let holder = wait_for("a leader", Duration::from_secs(30), || async {
        let h = lease_holder(&c).await?;
        Ok(ids.contains(&h).then_some(h))
    })
    .await?;
    let leader = ids.iter().position(|i| *i == holder).context("leader")?;
    let standby = 1 - leader;

    c.kubectl_apply(&manifest("before", "  replicas: 2\n"))
        .await?;
    wait_ready(&c, "before", 2, Duration::from_secs(90)).await?;
    wait_operator_ready(&stack, leader, Duration::from_secs(10)).await?;
    wait_operator_ready(&stack, standby, Duration::from_secs(10)).await?;
    // Only the leader reconciles.
    assert_eq!(operator_sample(&stack, leader, MANAGED).await?, 1.0);
    assert!(operator_sample(&stack, leader, RECONCILES).await? >= 1.0);
    assert_eq!(operator_sample(&stack, standby, RECONCILES).await?, 0.0);
    assert_eq!(operator_sample(&stack, standby, MANAGED).await?, 0.0);
    assert_eq!(lease_holder(&c).await?, holder, "the lease moved");
    assert_eq!(occurrences(&events(&c, "before", "Created").await?), 1);
    let sts_before = children(&c, "statefulsets", "before").await?;

    // Crash the leader.
    let killed_at = Instant::now();
    stack.kill_operator(leader)?;
    let new_leader = ids[standby].clone();
    wait_for(
        "the standby to take the lease",
        Duration::from_secs(LEASE_SECONDS + 10),
        || async { Ok((lease_holder(&c).await? == new_leader).then_some(())) },
    )
    .await?;
    let took = killed_at.elapsed();
    eprintln!("takeover after {took:?}");
    ensure!(
        took <= Duration::from_secs(LEASE_SECONDS + 3),
        "takeover took {took:?}, lease {LEASE_SECONDS}s"
    );
    // stack.operators now holds only the former standby, at index 0.
    c.kubectl_apply(&manifest("after", "  replicas: 2\n"))
        .await?;
    wait_ready(&c, "after", 2, Duration::from_secs(60)).await?;
    ensure!(
        killed_at.elapsed() <= Duration::from_secs(LEASE_SECONDS + 30),
        "a cluster created after the crash took {:?} to be reconciled",
        killed_at.elapsed()
    );
    assert!(operator_sample(&stack, 0, RECONCILES).await? >= 1.0);
    assert_eq!(operator_sample(&stack, 0, MANAGED).await?, 2.0);
    // The new leader reports ready once its caches are synced.
    wait_operator_ready(&stack, 0, Duration::from_secs(10)).await?;
    // Nothing done twice: one Created event per cluster, and the existing
    // cluster's StatefulSets untouched.
    let before_created = events(&c, "before", "Created").await?;
    assert_eq!(
        occurrences(&before_created),
        1,
        "the new leader created `before` again: {before_created:#?}"
    );
    assert_eq!(occurrences(&events(&c, "after", "Created").await?), 1);
    let v = rc(&c, "before").await?;
    assert!(ready_at(&v, 2), "{}", v["status"]);
    let sts_now = children(&c, "statefulsets", "before").await?;
    for (a, b) in sts_before.iter().zip(&sts_now) {
        assert_eq!(a["metadata"]["uid"], b["metadata"]["uid"]);
        assert_eq!(
            a["metadata"]["generation"], b["metadata"]["generation"],
            "{} changed after the takeover",
            a["metadata"]["name"]
        );
    }
    alive(&mut stack)?;
    eprintln!(
        "standby_takes_over_when_the_leader_dies: {:?}",
        started.elapsed()
    );
    finish(c, stack);
    Ok(())
}

/// Scenario 7: the operator dies right after a scale-up; its successor
/// keeps the cooldown (status.last_scale_time) and converges.
#[tokio::test]
async fn restart_mid_scale_keeps_the_cooldown() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    const COOLDOWN: f64 = 120.0;
    // A short lease, so the successor leads soon after the crash.
    let (c, mut stack) = start(true, 1, &["--lease-duration-seconds=6"]).await?;
    c.kubectl_apply(&manifest(
        "steady",
        "  replicas: 1\n  max_replicas: 3\n  scale_up_cooldown_seconds: 120\n",
    ))
    .await?;
    let (_cpu, cpu_rx) = watch::channel("300m".to_string());
    let load = keep_loaded(c.clone(), "steady", cpu_rx);
    wait_for_every(
        "steady to scale to 2",
        Duration::from_secs(150),
        Duration::from_millis(200),
        || async { Ok((spec_replicas(&rc(&c, "steady").await?) >= 2).then_some(())) },
    )
    .await?;
    stack.kill_operator(0)?;
    eprintln!(
        "steady: killed the operator at 2 replicas after {:?}",
        started.elapsed()
    );
    stack.start_operator(&c).await?;
    let v = rc(&c, "steady").await?;
    assert_eq!(spec_replicas(&v), 2);
    let scaled_at = timestamp(&v["status"]["last_scale_time"])
        .context("status.last_scale_time after the scale")?;

    // The successor leads and reads full, high metrics while the cooldown
    // still runs; it must hold at 2.
    let successor = stack.operators[0].identity.clone();
    wait_for("the successor to lead", Duration::from_secs(30), || async {
        Ok((lease_holder(&c).await? == successor).then_some(()))
    })
    .await?;
    let deadline = Duration::from_secs_f64((scaled_at + COOLDOWN - 20.0 - unix_now()).max(1.0));
    let v = wait_for(
        "the successor to report fresh metrics of both pods",
        deadline,
        || async {
            let v = rc(&c, "steady").await?;
            if spec_replicas(&v) != 2 {
                return Err(fatal(anyhow!(
                    "a second step inside the cooldown: {}",
                    v["spec"]
                )));
            }
            // The second pod appeared with the scale, moments before the
            // kill, and needs two metrics-server scrapes: only the successor
            // can have measured it. (The condition's lastTransitionTime is
            // no proof: it stays put while the condition stays True.)
            let fresh = condition(&v, "MetricsAvailable").is_some_and(|m| {
                m["status"] == "True"
                    && m["message"]
                        .as_str()
                        .is_some_and(|s| s.ends_with(" over 2 of 2 ready pods"))
            });
            Ok((fresh && v["status"]["ready_replicas"] == 2).then_some(v))
        },
    )
    .await?;
    let u = v["status"]["current_cpu"].as_f64().unwrap_or(0.0);
    assert!(u > 77.0, "the successor should see high CPU, saw {u}");
    // Several metric intervals of high CPU inside the cooldown: no step.
    let hold = Instant::now();
    // At least 15 s of it, and until 40 s after the scale when the metrics
    // came back quickly.
    while (hold.elapsed() < Duration::from_secs(15) || unix_now() - scaled_at < 40.0)
        && unix_now() < scaled_at + COOLDOWN - 3.0
    {
        let v = rc(&c, "steady").await?;
        assert_eq!(spec_replicas(&v), 2, "a second step inside the cooldown");
        tokio::time::sleep(POLL).await;
    }
    let since = unix_now() - scaled_at;
    ensure!(
        since >= 40.0,
        "held only {since:.0}s after the scale (metrics too slow?)"
    );
    let v = rc(&c, "steady").await?;
    assert_eq!(spec_replicas(&v), 2);
    assert_eq!(
        timestamp(&v["status"]["last_scale_time"])?,
        scaled_at,
        "last_scale_time moved"
    );
    // The successor took no step (no sample: the counter never moved).
    let text = stack.operator_metrics(0).await?;
    assert_eq!(sample(&text, SCALED_UP).unwrap_or(0.0), 0.0, "{text}");
    wait_operator_ready(&stack, 0, Duration::from_secs(10)).await?;
    assert_eq!(occurrences(&events(&c, "steady", "ScaledUp").await?), 1);
    // Converged: both StatefulSet pods up.
    wait_ready(&c, "steady", 2, Duration::from_secs(30)).await?;
    let sts = children(&c, "statefulsets", "steady").await?;
    assert_eq!(sts.len(), 1);
    assert_eq!(sts[0]["spec"]["replicas"], 2);
    assert_eq!(sts[0]["status"]["readyReplicas"], 2);
    alive(&mut stack)?;
    load.abort();
    eprintln!(
        "restart_mid_scale_keeps_the_cooldown: {:?}",
        started.elapsed()
    );
    finish(c, stack);
    Ok(())
}

#[test]
fn table_rows_follow_the_header_columns() -> Result<()> {
    let out = "NAME      SHARDS   CPU   PHASE\nsharded   3              Ready\nx         1        12    Pending\n";
    let row = table_row(out, "sharded")?;
    assert_eq!(
        row,
        [
            ("NAME".to_string(), "sharded".to_string()),
            ("SHARDS".into(), "3".into()),
            ("CPU".into(), "".into()),
            ("PHASE".into(), "Ready".into()),
        ]
    );
    assert_eq!(table_row(out, "x")?[2].1, "12");
    let err = table_row(out, "nope").unwrap_err().to_string();
    assert_eq!(err, format!("no row nope in:\n{out}"));
    Ok(())
}

#[test]
fn samples_are_read_from_prometheus_text() {
    let text = "# TYPE x counter\nredis_operator_scaling_events_total{direction=\"up\"} 2\nredis_operator_managed_clusters 1\n";
    assert_eq!(sample(text, SCALED_UP), Some(2.0));
    assert_eq!(sample(text, MANAGED), Some(1.0));
    assert_eq!(sample(text, SCALED_DOWN), None);
}
