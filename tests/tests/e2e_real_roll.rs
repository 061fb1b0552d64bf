//! A rolling update on a real node, under a writer: a 3 x 2 RedisCluster
//! holding enough data that a replica's full sync outlasts its start, its
//! `spec.resources` changed, and the operator SIGKILLed mid-roll. Every pod
//! must be replaced exactly once and no acknowledged write lost.
//!
//! Needs root and `make test-images` (as e2e_real).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use harness::in_cluster::{
    APPS, cluster_objects, helm_install, is_ready, lost_of, on_real_node, pods_of, rc_field,
    redis_cluster, start_writer, stop_writer, use_client_password, wait_ready,
};
use harness::stack::NAMESPACE;
use harness::{Cluster, fatal, wait_for};

const NAME: &str = "roll";
/// Bulk data: keys and value size (about 20 MB per shard).
const BULK_KEYS: u64 = 60_000;
const VALUE_BYTES: usize = 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resources_change_rolls_one_pod_at_a_time_and_loses_nothing() -> Result<()> {
    on_real_node(false, scenario).await
}

/// Writes `BULK_KEYS` keys of `VALUE_BYTES` through a cluster client.
async fn load(seeds: Vec<String>) -> Result<()> {
    let client = redis::cluster::ClusterClient::new(seeds)?;
    let mut con = client.get_async_connection().await?;
    let value = vec![b'x'; VALUE_BYTES];
    for chunk in 0..BULK_KEYS / 500 {
        let sets = (chunk * 500..(chunk + 1) * 500).map(|i| {
            let mut con = con.clone();
            let value = value.clone();
            async move {
                redis::cmd("SET")
                    .arg(format!("bulk:{i}"))
                    .arg(value)
                    .query_async::<()>(&mut con)
                    .await
            }
        });
        for r in futures::future::join_all(sets).await {
            r.context("loading bulk data")?;
        }
    }
    let _: () = redis::cmd("PING").query_async(&mut con).await?;
    Ok(())
}

/// Keys held by the primaries (their DBSIZE summed).
async fn keys_held(c: &Cluster, ips: Vec<String>) -> Result<i64> {
    let mut total = 0;
    for ip in ips {
        let addr: SocketAddr = format!("{ip}:6379").parse()?;
        let role: String = c
            .netns_handle()?
            .run_async(move || async move {
                harness::redis::query(addr, &["INFO", "replication"]).await
            })
            .await?;
        if role.contains("role:master") {
            let n: i64 = c
                .netns_handle()?
                .run_async(move || async move { harness::redis::query(addr, &["DBSIZE"]).await })
                .await?;
            total += n;
        }
    }
    Ok(total)
}

async fn scenario(c: &Cluster, t0: Instant) -> Result<()> {
    let step = |what: &str| {
        eprintln!(
            "e2e-real-roll: {what} at {:.1}s",
            t0.elapsed().as_secs_f64()
        )
    };
    let images = c.with_real(|r| Ok(r.images.clone()))?;
    helm_install(c, &images, &[]).await?;
    step("helm install done");
    c.kubectl_apply(&redis_cluster(
        NAME,
        &images.redis,
        "  shard_count: 3\n  replicas: 2\n  autoscaling_paused: true\n  resources:\n    requests: {cpu: 50m, memory: 64Mi}\n",
    ))
    .await?;
    wait_ready(c, NAME, 2, Duration::from_secs(300)).await?;
    use_client_password(c, APPS, NAME).await?;
    step("RedisCluster 3x2 Ready");
    let before = pods_of(c, NAME).await?;
    ensure!(before.len() == 6, "{before:?}");
    let seeds: Vec<String> = before
        .iter()
        .filter_map(|(_, _, ip)| Some(harness::redis::url(SocketAddr::new((*ip)?.into(), 6379))))
        .collect();
    let s = seeds.clone();
    c.netns_handle()?
        .run_async(move || async move { load(s).await })
        .await?;
    let ips: Vec<String> = before
        .iter()
        .filter_map(|(_, _, ip)| Some((*ip)?.to_string()))
        .collect();
    let loaded = keys_held(c, ips).await?;
    ensure!(
        loaded == BULK_KEYS as i64,
        "{loaded} keys after loading {BULK_KEYS}"
    );
    step(&format!("{BULK_KEYS} keys of {VALUE_BYTES} bytes loaded"));

    let (writer, running) = start_writer(c, "w", seeds, 200).await?;

    // The change: a pod-template field, so every pod must be replaced.
    let roll_start = Instant::now();
    c.kubectl_ok([
        "patch",
        "rediscluster",
        NAME,
        "-n",
        APPS,
        "--type=merge",
        "-p",
        r#"{"spec":{"resources":{"requests":{"cpu":"60m","memory":"64Mi"}}}}"#,
    ])
    .await?;
    step("spec.resources changed");

    // Every UID seen per pod name, polled through the roll.
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (n, u, _) in &before {
        seen.entry(n.clone()).or_default().insert(u.clone());
    }
    let old: BTreeSet<String> = before.iter().map(|(_, u, _)| u.clone()).collect();
    let mut killed = false;
    let mut updating_seen = false;
    wait_for_roll(c, &mut seen, &old, &mut killed, &mut updating_seen).await?;
    let roll_time = roll_start.elapsed();
    step("roll finished");
    ensure!(killed, "the operator was not killed mid-roll");
    ensure!(
        updating_seen,
        "the Updating condition never showed the roll"
    );
    for (name, uids) in &seen {
        ensure!(
            uids.len() == 2,
            "pod {name} had {} incarnations: {uids:?}",
            uids.len()
        );
    }

    let summary = stop_writer(&writer, running).await?;
    let after = pods_of(c, NAME).await?;
    let seeds: Vec<String> = after
        .iter()
        .filter_map(|(_, _, ip)| Some(harness::redis::url(SocketAddr::new((*ip)?.into(), 6379))))
        .collect();
    let total = summary.acked.len();
    let lost = lost_of(c, seeds, "w", &summary.acked).await?;
    let ips: Vec<String> = after
        .iter()
        .filter_map(|(_, _, ip)| Some((*ip)?.to_string()))
        .collect();
    let held = keys_held(c, ips).await?;
    eprintln!(
        "e2e-real-roll: roll took {:.1}s; writer: {total} acknowledged, {} failed, {} lost, longest gap between acknowledged writes {:?}; keys held {held} (bulk {BULK_KEYS})",
        roll_time.as_secs_f64(),
        summary.failed,
        lost.len(),
        summary.longest_gap
    );
    ensure!(
        lost.is_empty(),
        "acknowledged writes lost: {} of {total}",
        lost.len()
    );
    ensure!(
        held >= BULK_KEYS as i64 + total as i64,
        "bulk keys lost: {held} held"
    );
    Ok(())
}

/// Shards of the cluster (`<name>-shard-<i>-<ordinal>`) with fewer than two
/// pods that are Ready and not being deleted.
async fn shards_not_serving(c: &Cluster) -> Result<BTreeSet<String>> {
    let out = cluster_objects(
        c,
        "pods",
        NAME,
        r#"jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status} {.metadata.deletionTimestamp}{"\n"}{end}"#,
    )
    .await?;
    let mut serving: BTreeMap<String, u32> = (0..3).map(|s| (format!("{s}"), 0)).collect();
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let shard = f
            .first()
            .and_then(|n| n.strip_prefix(&format!("{NAME}-shard-")))
            .and_then(|rest| rest.split('-').next());
        if let (Some(shard), [_, "True"]) = (shard, f.as_slice())
            && let Some(n) = serving.get_mut(shard)
        {
            *n += 1;
        }
    }
    Ok(serving
        .into_iter()
        .filter(|(_, n)| *n < 2)
        .map(|(s, _)| s)
        .collect())
}

/// Waits, bounded, for every pod to run at a new UID with the cluster Ready
/// and the Updating condition False; kills the operator once, after the
/// second replacement.
async fn wait_for_roll(
    c: &Cluster,
    seen: &mut BTreeMap<String, BTreeSet<String>>,
    old: &BTreeSet<String>,
    killed: &mut bool,
    updating_seen: &mut bool,
) -> Result<()> {
    let state = std::sync::Mutex::new((std::mem::take(seen), false, false));
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    wait_for("the roll to finish", Duration::from_secs(1200), || async {
        let pods = pods_of(c, NAME).await?;
        let replaced = pods.iter().filter(|(_, u, _)| !old.contains(u)).count();
        let updating = rc_field(
            c,
            NAME,
            r#"{.status.conditions[?(@.type=="Updating")].status}"#,
        )
        .await?;
        // One shard at a time: count the shards with a pod missing, not
        // Ready, or being deleted. A StatefulSet RollingUpdate would roll
        // every shard at once.
        let busy = shards_not_serving(c).await?;
        if busy.len() > 1 {
            return Err(fatal(anyhow::anyhow!(
                "shards {busy:?} had pods out of service at the same time"
            )));
        }
        let kill = {
            let mut st = lock();
            for (n, u, _) in &pods {
                st.0.entry(n.clone()).or_default().insert(u.clone());
            }
            st.2 |= updating == "True";
            let kill = replaced >= 2 && !st.1;
            st.1 |= kill;
            kill
        };
        if kill {
            c.kubectl_ok([
                "delete",
                "pod",
                "-n",
                NAMESPACE,
                "-l",
                "app.kubernetes.io/component=operator",
                "--grace-period=0",
                "--force",
                "--wait=false",
            ])
            .await?;
            eprintln!("e2e-real-roll: operator killed after {replaced} replacements");
        }
        let done =
            pods.len() == 6 && replaced == 6 && updating == "False" && is_ready(c, NAME, 2).await?;
        Ok(done.then_some(()))
    })
    .await?;
    let st = state.into_inner().unwrap_or_else(|e| e.into_inner());
    (*seen, *killed, *updating_seen) = st;
    Ok(())
}
