//! The operator end to end against real Redis: kwok simulates the kubelet,
//! and every Redis pod gets a real `redis-server` on its loopback pod IP
//! (`harness::pod_redis`). Scaling shards and replicas through the
//! RedisCluster must keep every key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use harness::pod_redis::PodRedis;
use harness::redis::{cluster_check, cluster_info, open_slots, slot_counts};
use harness::stack::{Stack, StackOptions};
use harness::{Cluster, ClusterOptions, wait_for};
use redis::AsyncCommands;

const NAME: &str = "shop";

async fn pod_addrs(c: &Cluster) -> Result<Vec<SocketAddr>> {
    let out = c
        .kubectl_ok([
            "get",
            "pods",
            "-l",
            &format!("redis.example.com/cluster={NAME}"),
            "-o",
            "jsonpath={range .items[*]}{.status.podIP}{\"\\n\"}{end}",
        ])
        .await?;
    Ok(out
        .lines()
        .filter(|l| !l.is_empty())
        .filter_map(|ip| format!("{ip}:6379").parse().ok())
        .collect())
}

async fn status(c: &Cluster) -> Result<serde_json::Value> {
    let s = c
        .kubectl_ok(["get", "rediscluster", NAME, "-o", "jsonpath={.status}"])
        .await?;
    Ok(serde_json::from_str(if s.is_empty() { "{}" } else { &s })?)
}

/// Waits until the operator reports the desired size Ready (the topology
/// step converged) and the StatefulSets match.
async fn wait_ready(c: &Cluster, shards: usize, replicas: i64, timeout: Duration) -> Result<()> {
    wait_for(
        &format!("{shards} shards of {replicas} Ready"),
        timeout,
        || async {
            let st = status(c).await?;
            let sts = c
                .kubectl_ok([
                    "get",
                    "statefulsets",
                    "-l",
                    &format!("redis.example.com/cluster={NAME}"),
                    "-o",
                    "jsonpath={range .items[*]}{.spec.replicas}{\"\\n\"}{end}",
                ])
                .await?;
            let sizes: Vec<&str> = sts.lines().filter(|l| !l.is_empty()).collect();
            let ok = st["phase"] == "Ready"
                && st["ready_replicas"] == replicas
                && st["observed_generation"]
                    == serde_json::from_str::<serde_json::Value>(
                        &c.kubectl_ok([
                            "get",
                            "rediscluster",
                            NAME,
                            "-o",
                            "jsonpath={.metadata.generation}",
                        ])
                        .await?,
                    )?
                && sizes.len() == shards
                && sizes.iter().all(|s| *s == replicas.to_string());
            Ok(ok.then_some(()))
        },
    )
    .await
}

async fn cluster_conn(seeds: &[SocketAddr]) -> Result<redis::cluster_async::ClusterConnection> {
    let client = redis::cluster::ClusterClientBuilder::new(
        seeds
            .iter()
            .map(|a| format!("redis://{a}"))
            .collect::<Vec<_>>(),
    )
    .connection_timeout(Duration::from_secs(2))
    .response_timeout(Duration::from_secs(5))
    .retries(10)
    .build()?;
    Ok(client.get_async_connection().await?)
}

const KEYS: usize = 20_000;

async fn write_keys(seeds: &[SocketAddr], version: u32) -> Result<()> {
    let mut conn = cluster_conn(seeds).await?;
    for i in 0..KEYS {
        let _: () = conn
            .set(format!("key:{i}"), format!("{i}:{version}"))
            .await?;
    }
    Ok(())
}

async fn check_keys(seeds: &[SocketAddr], version: u32) -> Result<()> {
    let mut conn = cluster_conn(seeds).await?;
    let mut missing = 0usize;
    for i in 0..KEYS {
        let v: Option<String> = conn.get(format!("key:{i}")).await?;
        if v.as_deref() != Some(&format!("{i}:{version}")) {
            missing += 1;
        }
    }
    ensure!(missing == 0, "{missing} of {KEYS} keys missing or stale");
    Ok(())
}

/// The Redis side agrees: state ok everywhere, all slots covered and
/// balanced over `shards` primaries within one slot, nothing left open.
async fn check_redis(c: &Cluster, shards: usize) -> Result<()> {
    let addrs = pod_addrs(c).await?;
    for a in &addrs {
        let info = cluster_info(*a).await?;
        ensure!(
            info.get("cluster_state").map(String::as_str) == Some("ok"),
            "{a}: {info:?}"
        );
        ensure!(
            info.get("cluster_slots_assigned").map(String::as_str) == Some("16384"),
            "{a}: {info:?}"
        );
    }
    let counts: BTreeMap<SocketAddr, usize> = slot_counts(addrs[0]).await?;
    ensure!(
        counts.len() == shards,
        "{} slot owners, want {shards}: {counts:?}",
        counts.len()
    );
    let (lo, hi) = (
        counts.values().min().copied().unwrap_or(0),
        counts.values().max().copied().unwrap_or(0),
    );
    ensure!(hi - lo <= 1, "unbalanced: {counts:?}");
    ensure!(open_slots(&addrs).await?.is_empty(), "open slots left");
    let report = cluster_check(addrs[0])?;
    ensure!(
        !report.contains("[ERR]"),
        "redis-cli --cluster check: {report}"
    );
    Ok(())
}

async fn patch(c: &Cluster, spec: &str) -> Result<()> {
    c.kubectl_ok([
        "patch",
        "rediscluster",
        NAME,
        "--type=merge",
        "-p",
        &format!("{{\"spec\":{spec}}}"),
    ])
    .await?;
    Ok(())
}

#[tokio::test]
async fn operator_forms_and_reshapes_real_redis_without_losing_keys() -> Result<()> {
    harness::product::init_crypto();
    let c = Cluster::start(ClusterOptions {
        nodes: 3,
        ..ClusterOptions::default()
    })
    .await?;
    let _redis = PodRedis::start(&c)?;
    let _stack = Stack::install(
        &c,
        StackOptions {
            operators: 1,
            operator_args: vec!["--metrics-interval".into(), "5s".into()],
            ..StackOptions::default()
        },
    )
    .await?;
    let long = Duration::from_secs(240);

    c.kubectl_apply(&format!(
        "apiVersion: redis.example.com/v1alpha1\nkind: RedisCluster\nmetadata:\n  name: {NAME}\n  namespace: default\nspec:\n  replicas: 2\n  shard_count: 3\n  autoscaling_paused: true\n"
    ))
    .await?;
    wait_ready(&c, 3, 2, long)
        .await
        .context("bootstrap 3 x 2")?;
    check_redis(&c, 3).await?;
    let seeds = pod_addrs(&c).await?;
    write_keys(&seeds, 1).await?;

    // Shard scale-out: new shards join and slots move to them.
    patch(&c, r#"{"shard_count":4}"#).await?;
    wait_ready(&c, 4, 2, long)
        .await
        .context("scale out to 4 shards")?;
    check_redis(&c, 4).await?;
    check_keys(&pod_addrs(&c).await?, 1)
        .await
        .context("after 3 -> 4 shards")?;
    // The progress is in status: slots and keys moved, none left.
    let m = status(&c).await?["migration"].clone();
    ensure!(m["slots_left"] == 0, "status.migration: {m}");
    ensure!(
        m["slots_moved"].as_u64().unwrap_or(0) >= 4095,
        "3 -> 4 shards moves a quarter of the slots: {m}"
    );
    ensure!(
        m["keys_moved"].as_u64().unwrap_or(0) > 0,
        "status.migration: {m}"
    );

    // Shard scale-in: slots leave shards 2 and 3 before their StatefulSets go.
    patch(&c, r#"{"shard_count":2}"#).await?;
    wait_ready(&c, 2, 2, long)
        .await
        .context("scale in to 2 shards")?;
    check_redis(&c, 2).await?;
    check_keys(&pod_addrs(&c).await?, 1)
        .await
        .context("after 4 -> 2 shards")?;

    // Replica scale-down: each shard keeps its primary.
    patch(&c, r#"{"replicas":1}"#).await?;
    wait_ready(&c, 2, 1, long)
        .await
        .context("replicas 2 -> 1")?;
    check_redis(&c, 2).await?;
    check_keys(&pod_addrs(&c).await?, 1)
        .await
        .context("after replicas 2 -> 1")?;
    let events = c
        .kubectl_ok([
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={NAME}"),
            "-o",
            "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}",
        ])
        .await?;
    ensure!(
        events.contains("ShardRemoved"),
        "no ShardRemoved event: {events}"
    );
    ensure!(
        events.contains("TopologyChanged"),
        "no TopologyChanged event: {events}"
    );
    c.stop();
    Ok(())
}
