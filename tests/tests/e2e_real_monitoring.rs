//! The chart's monitoring against a real Prometheus on a real node (issue
//! 15): Prometheus, built from its Go module, runs in the node's network
//! namespace, scrapes the Redis exporter sidecars, the operator and the
//! webhook (the targets the chart's PodMonitor and ServiceMonitors select),
//! and evaluates the chart's alert rules.
//!
//! 1. Two clusters run: `watch` (3 shards x 2, with keys written and read)
//!    and `down` (3 x 1, `on_data_loss: Wait`). Every query of the
//!    dashboard returns data.
//! 2. The only pod of a shard of `down` is deleted: `RedisClusterDown`
//!    fires for `down` (after its `for:`), never for `watch`.
//! 3. `down` is told to recover (`on_data_loss: RecoverEmpty`): the alert
//!    resolves.
//!
//! Needs root, `make deps`, `make cluster-tools` and `make test-images`
//! (`make e2e-real` does all of it). A missing prerequisite fails the test.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use harness::in_cluster::{
    APPS, helm_install, on_real_node, pod_ips, redis_cluster, release_pods, seeds,
    use_client_password, wait_ready,
};
use harness::prometheus::{Prometheus, Target, chart_rules, dashboard};
use harness::stack::NAMESPACE;
use harness::wait::fatal;
use harness::writer::{Limits, Writer, lost_writes};
use harness::{Cluster, wait_for};

const WATCH: &str = "watch";
const DOWN: &str = "down";
const ALERT: &str = "RedisClusterDown";
/// Prometheus scrapes and evaluates this often (seconds).
const INTERVAL: u32 = 5;
const PATIENCE: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sees_every_panel_and_the_down_alert_fires_and_resolves() -> Result<()> {
    on_real_node(true, scenario).await
}

async fn scenario(c: &Cluster, t0: Instant) -> Result<()> {
    let images = c.with_real(|r| Ok(r.images.clone()))?;
    let step = |what: &str| {
        eprintln!(
            "e2e-real-monitoring: {what} at {:.1}s",
            t0.elapsed().as_secs_f64()
        )
    };
    helm_install(c, &images, &[]).await?;
    step("helm install done");
    c.kubectl_apply(&redis_cluster(
        WATCH,
        &images.redis,
        "  shard_count: 3\n  replicas: 2\n  autoscaling_paused: true\n",
    ))
    .await?;
    c.kubectl_apply(&redis_cluster(
        DOWN,
        &images.redis,
        "  shard_count: 3\n  replicas: 1\n  autoscaling_paused: true\n  on_data_loss: Wait\n",
    ))
    .await?;
    wait_ready(c, WATCH, 2, Duration::from_secs(240)).await?;
    wait_ready(c, DOWN, 1, Duration::from_secs(240)).await?;
    step("both clusters Ready");

    let (rules, _) = chart_rules(c.tools())?;
    // As the chart's monitors say: the ServiceMonitors honour the series'
    // own labels (the operator's carry each RedisCluster's namespace).
    let jobs = [("redis", false), ("redis-operator", true)];
    let prometheus = Prometheus::start(c, &rules, &jobs, INTERVAL)?;
    wait_for("Prometheus to answer", Duration::from_secs(60), || async {
        Ok(prometheus.ready().await.then_some(()))
    })
    .await?;
    set_targets(c, &prometheus).await?;
    step("Prometheus scrapes the exporters, the operator and the webhook");

    // Keys written, then read back while the panels are looked at: the
    // keyspace, command and hit-ratio panels show a cluster in use.
    use_client_password(c, APPS, WATCH).await?;
    let written = write_keys(c).await?;
    step("keys written to watch");

    let queries = dashboard(c.tools())?.queries;
    let empty = RefCell::new(Vec::new());
    wait_for("every dashboard query to return data", PATIENCE, || async {
        read_back(c, &written).await?;
        let mut missing = Vec::new();
        for (panel, expr) in &queries {
            if prometheus.query(expr).await?.is_empty() {
                missing.push(format!("{panel}: {expr}"));
            }
        }
        let done = missing.is_empty();
        *empty.borrow_mut() = missing;
        Ok(done.then_some(()))
    })
    .await
    .with_context(|| format!("queries without data: {:#?}", empty.borrow()))?;
    step(&format!(
        "all {} dashboard queries return data",
        queries.len()
    ));
    ensure!(
        prometheus.firing(ALERT).await?.is_empty(),
        "{ALERT} fires on healthy clusters"
    );

    // 2: the only copy of a shard lost, and the cluster told to wait.
    c.kubectl_ok([
        "delete",
        "pod",
        "-n",
        APPS,
        &format!("{DOWN}-shard-1-0"),
        "--wait=false",
    ])
    .await?;
    let deleted = Instant::now();
    let fired = wait_for(&format!("{ALERT} to fire for {DOWN}"), PATIENCE, || async {
        let firing = prometheus.firing(ALERT).await?;
        if firing.iter().any(|a| a["cluster"] == WATCH) {
            return Err(fatal(anyhow!("{ALERT} fired for {WATCH}: {firing:?}")));
        }
        Ok(firing.into_iter().find(|a| a["cluster"] == DOWN))
    })
    .await?;
    ensure!(
        fired["namespace"] == APPS && fired["severity"] == "critical",
        "{fired}"
    );
    step(&format!(
        "{ALERT} fired for {DOWN} {:.0}s after its pod was deleted",
        deleted.elapsed().as_secs_f64()
    ));

    // 3: recovery.
    c.kubectl_ok([
        "patch",
        "rediscluster",
        DOWN,
        "-n",
        APPS,
        "--type=merge",
        "-p",
        r#"{"spec":{"on_data_loss":"RecoverEmpty"}}"#,
    ])
    .await?;
    let told = Instant::now();
    wait_for(
        &format!("{ALERT} to resolve for {DOWN}"),
        PATIENCE,
        || async {
            let firing = prometheus.firing(ALERT).await?;
            Ok((!firing.iter().any(|a| a["cluster"] == DOWN)).then_some(()))
        },
    )
    .await?;
    wait_ready(c, DOWN, 1, Duration::from_secs(120)).await?;
    step(&format!(
        "{ALERT} resolved {:.0}s after the cluster was told to recover",
        told.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// What the chart's monitors select: every Redis pod's exporter (the
/// PodMonitor: port `metrics`, 9121) and the operator's and webhook's pods
/// (the ServiceMonitors: port `metrics`, 8080).
async fn set_targets(c: &Cluster, prometheus: &Prometheus) -> Result<()> {
    let mut redis = Vec::new();
    for cluster in [WATCH, DOWN] {
        for (pod, ip) in pod_ips(c, cluster).await? {
            redis.push(Target {
                addr: (ip, 9121),
                namespace: APPS.into(),
                pod,
            });
        }
    }
    prometheus.set_targets("redis", &redis)?;
    let ours: Vec<Target> = release_pods(c, "app.kubernetes.io/name=redis-operator")
        .await?
        .into_iter()
        .map(|(pod, ip)| Target {
            addr: (ip, 8080),
            namespace: NAMESPACE.into(),
            pod,
        })
        .collect();
    ensure!(
        ours.len() >= 2,
        "{} operator and webhook pods with an IP",
        ours.len()
    );
    prometheus.set_targets("redis-operator", &ours)
}

/// Writes keys to `watch`; the acknowledged ones.
async fn write_keys(c: &Cluster) -> Result<Vec<u64>> {
    let pods = pod_ips(c, WATCH).await?;
    let writer = Writer::new("m", seeds(&pods));
    let w = writer.clone();
    let limits = Limits {
        max_writes: 2_000,
        max_time: Duration::from_secs(120),
    };
    c.netns_handle()?
        .run_async(move || async move { w.run(limits).await })
        .await?;
    let summary = writer.summary();
    ensure!(
        summary.acked.len() >= 1_000,
        "only {} writes acknowledged",
        summary.acked.len()
    );
    Ok(summary.acked)
}

/// Reads every acknowledged key of `watch` back (a `GET` each): none lost.
async fn read_back(c: &Cluster, acked: &[u64]) -> Result<()> {
    let pods = pod_ips(c, WATCH).await?;
    let acked = acked.to_vec();
    let lost = c
        .netns_handle()?
        .run_async(move || async move { lost_writes(seeds(&pods), "m", &acked).await })
        .await?;
    ensure!(lost.is_empty(), "{} writes lost", lost.len());
    Ok(())
}
