//! The operator end to end against real Redis: kwok simulates the kubelet,
//! and every Redis pod gets a real `redis-server` on its loopback pod IP
//! (`harness::pod_redis`). Scaling shards and replicas through the
//! RedisCluster must keep every key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use harness::pod_redis::PodRedis;
use harness::proxy::TcpProxy;
use harness::redis::{cluster_check, cluster_info, open_slots, slot_counts};
use harness::stack::{LEASE, NAMESPACE, Stack, StackOptions};
use harness::wait::wait_for_every;
use harness::writer::{Limits, Writer, lost_writes};
use harness::{Cluster, ClusterOptions, wait_for};
use redis::AsyncCommands;

const NAME: &str = "shop";

/// One control plane at a time: each test runs its own.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

/// Logs the harness's Redis helpers in with the clients' password the
/// operator generated, after checking that a client without it is refused.
async fn login(c: &Cluster) -> Result<()> {
    harness::redis::set_password(None);
    let addrs = pod_addrs(c).await?;
    for a in &addrs {
        let err = harness::redis::query::<Option<String>>(*a, &["GET", "k"])
            .await
            .err()
            .with_context(|| format!("{a} served GET without a password"))?;
        ensure!(
            format!("{err:#}").contains("NOAUTH"),
            "{a}: want NOAUTH, got {err:#}"
        );
    }
    harness::in_cluster::use_client_password(c, "default", NAME).await?;
    Ok(())
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
            .map(|a| harness::redis::url(*a))
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

/// A control plane of 3 kwok nodes, a redis-server per Redis pod, and the
/// chart with `operators` local operator processes (`--metrics-interval 5s`
/// and `extra` flags).
async fn start(operators: usize, extra: &[&str]) -> Result<(Cluster, PodRedis, Stack)> {
    harness::product::init_crypto();
    let c = Cluster::start(ClusterOptions {
        nodes: 3,
        ..ClusterOptions::default()
    })
    .await?;
    let redis = PodRedis::start(&c)?;
    let mut operator_args = vec!["--metrics-interval".to_string(), "5s".into()];
    operator_args.extend(extra.iter().map(|a| a.to_string()));
    let stack = Stack::install(
        &c,
        StackOptions {
            operators,
            operator_args,
            ..StackOptions::default()
        },
    )
    .await?;
    Ok((c, redis, stack))
}

#[tokio::test]
async fn operator_forms_and_reshapes_real_redis_without_losing_keys() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let (c, _redis, stack) = start(1, &[]).await?;
    let long = Duration::from_secs(240);

    c.kubectl_apply(&format!(
        "apiVersion: redis.example.com/v1alpha1\nkind: RedisCluster\nmetadata:\n  name: {NAME}\n  namespace: default\nspec:\n  replicas: 2\n  shard_count: 3\n  autoscaling_paused: true\n"
    ))
    .await?;
    wait_ready(&c, 3, 2, long)
        .await
        .context("bootstrap 3 x 2")?;
    login(&c).await?;
    check_redis(&c, 3).await?;
    // The operator's per-cluster gauges say the same as Redis.
    let healthy = [
        ("slots_covered", 16384.0),
        ("shards_desired", 3.0),
        ("shards_with_primary", 3.0),
        ("replicas_desired", 3.0),
        ("replicas_in_sync", 3.0),
        ("nodes", 6.0),
        ("nodes_ok", 6.0),
        ("slots_to_move", 0.0),
        ("replicas", 2.0),
    ];
    let want: BTreeMap<String, f64> = healthy.map(|(k, v)| (k.to_string(), v)).into();
    let last = std::cell::RefCell::new(BTreeMap::new());
    wait_for(
        "the cluster gauges of a healthy 3 x 2 cluster",
        long,
        || async {
            let seen = cluster_gauges(&stack).await?;
            let done = seen == want;
            *last.borrow_mut() = seen;
            Ok(done.then_some(()))
        },
    )
    .await
    .with_context(|| format!("last seen: {:?}", last.borrow()))?;
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
    // A deleted cluster's series go with it.
    c.kubectl_ok(["delete", "rediscluster", NAME, "--wait=true"])
        .await?;
    wait_for("the deleted cluster's gauges to go", long, || async {
        Ok(cluster_gauges(&stack).await?.is_empty().then_some(()))
    })
    .await?;
    c.stop();
    Ok(())
}

/// The operator's `redis_operator_cluster_*` gauges of [`NAME`], by the
/// rest of their name.
async fn cluster_gauges(stack: &Stack) -> Result<BTreeMap<String, f64>> {
    let text = stack.operator_metrics(0).await?;
    let labels = format!("{{namespace=\"default\",cluster=\"{NAME}\"}} ");
    Ok(text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("redis_operator_cluster_")?;
            let (metric, value) = rest.split_once(&labels)?;
            Some((metric.to_string(), value.parse().ok()?))
        })
        .collect())
}

/// The Lease's holder and when it acquired it.
async fn lease(c: &Cluster) -> Result<(String, String)> {
    let out = c
        .kubectl_ok([
            "get",
            "lease",
            LEASE,
            "-n",
            NAMESPACE,
            "-o",
            "jsonpath={.spec.holderIdentity} {.spec.acquireTime}",
        ])
        .await?;
    let (holder, at) = out.trim().split_once(' ').unwrap_or((out.trim(), ""));
    Ok((holder.to_string(), at.to_string()))
}

/// A leader that loses the API server but still reaches Redis, in the
/// middle of a shard scale-out under a writer: it must stop acting and exit
/// before the standby can take the Lease, and the standby finishes the
/// migration with every acknowledged write kept. Without the lease fence
/// the cut-off leader never learns it lost and goes on migrating slots.
#[tokio::test]
async fn a_leader_cut_off_from_the_api_server_stops_before_a_standby_leads() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let (c, _redis, mut stack) = start(0, &["--lease-duration-seconds", "6"]).await?;
    let api: SocketAddr = c
        .server_url()
        .trim_start_matches("https://")
        .parse()
        .context("the API server's address")?;
    let proxy = TcpProxy::start(api).await?;
    let server = format!("https://{}", proxy.addr());
    let leader = stack.start_operator_via(&c, Some(&server)).await?;
    let leader_id = stack.operators[leader].identity.clone();
    wait_for(
        "the proxied operator to lead",
        Duration::from_secs(60),
        || async { Ok((lease(&c).await?.0 == leader_id).then_some(())) },
    )
    .await?;
    let standby = stack.start_operator(&c).await?;
    let standby_id = stack.operators[standby].identity.clone();
    let long = Duration::from_secs(240);

    c.kubectl_apply(&format!(
        "apiVersion: redis.example.com/v1alpha1\nkind: RedisCluster\nmetadata:\n  name: {NAME}\n  namespace: default\nspec:\n  replicas: 1\n  shard_count: 2\n  autoscaling_paused: true\n"
    ))
    .await?;
    wait_ready(&c, 2, 1, long)
        .await
        .context("bootstrap 2 x 1")?;
    login(&c).await?;
    let seeds = pod_addrs(&c).await?;
    write_keys(&seeds, 1).await?;
    let writer = Writer::new("w", seeds.iter().map(|a| harness::redis::url(*a)).collect());
    let running = tokio::spawn(writer.clone().run(Limits::default()));
    wait_for("the writer's first acknowledged writes", long, || async {
        Ok((writer.acked_count() >= 100).then_some(()))
    })
    .await?;

    // Cut the leader off while slots move to the new shard.
    patch(&c, r#"{"shard_count":3}"#).await?;
    wait_for("slots moving to shard 2", long, || async {
        let addrs = pod_addrs(&c).await?;
        Ok(
            (addrs.len() == 3 && !open_slots(&addrs).await.unwrap_or_default().is_empty())
                .then_some(()),
        )
    })
    .await?;
    proxy.cut();
    let cut = std::time::Instant::now();
    // Polled every 10 ms: the exit time is compared with the standby's
    // acquireTime below.
    wait_for_every(
        "the cut-off leader to exit",
        Duration::from_secs(30),
        Duration::from_millis(10),
        || {
            let gone = stack.operators[leader].child.check_running().is_err();
            async move { Ok(gone.then_some(())) }
        },
    )
    .await?;
    let exited = k8s_openapi::jiff::Timestamp::now();
    eprintln!("cut-off leader exited {:?} after the cut", cut.elapsed());
    wait_for("the standby to lead", Duration::from_secs(60), || async {
        Ok((lease(&c).await?.0 == standby_id).then_some(()))
    })
    .await?;
    let acquired: k8s_openapi::jiff::Timestamp = lease(&c)
        .await?
        .1
        .parse()
        .context("the Lease's acquireTime")?;
    eprintln!(
        "the old leader was gone {} ms before the standby acquired the Lease",
        (acquired - exited).get_milliseconds()
    );
    ensure!(
        exited < acquired,
        "the old leader was still running at {exited}, after the standby acquired at {acquired}"
    );
    let log = std::fs::read_to_string(stack.dir().join(format!("{leader_id}.log")))?;
    ensure!(
        log.contains("no renewal of the lease was confirmed"),
        "the old leader exited for another reason:\n{log}"
    );

    wait_ready(&c, 3, 1, long)
        .await
        .context("the standby finishing 2 -> 3 shards")?;
    check_redis(&c, 3).await?;
    writer.stop();
    running.await.context("joining the writer")??;
    let summary = writer.summary();
    let seeds: Vec<String> = pod_addrs(&c)
        .await?
        .iter()
        .map(|a| harness::redis::url(*a))
        .collect();
    let lost = lost_writes(seeds.clone(), "w", &summary.acked).await?;
    ensure!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    check_keys(&pod_addrs(&c).await?, 1).await?;
    eprintln!(
        "leader cut-off: {} writes acknowledged, 0 lost, {} failed, longest gap {:?}",
        summary.acked.len(),
        summary.failed,
        summary.longest_gap
    );
    c.stop();
    Ok(())
}

/// A StorageClass without a provisioner and `count` volumes for it.
fn static_volumes(class: &str, count: usize) -> String {
    let mut y = format!(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: {class}\nprovisioner: kubernetes.io/no-provisioner\nvolumeBindingMode: Immediate\n"
    );
    for i in 0..count {
        // Never mounted: kwok runs no containers; the harness keeps the data
        // per volume.
        y.push_str(&format!(
            "---\napiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: {class}-{i}\nspec:\n  capacity: {{storage: 1Gi}}\n  accessModes: [ReadWriteOnce]\n  storageClassName: {class}\n  hostPath: {{path: /nonexistent/{class}-{i}}}\n"
        ));
    }
    y
}

async fn claims(c: &Cluster) -> Result<Vec<String>> {
    let out = c
        .kubectl_ok([
            "get",
            "pvc",
            "-l",
            &format!("redis.example.com/cluster={NAME}"),
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}{end}",
        ])
        .await?;
    let mut names: Vec<String> = out.lines().map(str::to_owned).collect();
    names.sort();
    Ok(names)
}

/// Scaling in leaves no dataset behind for the next scale-out: a replica's
/// claim goes with it (`whenScaled: Delete`), a drained shard's claims are
/// deleted with the shard, and growing again starts those nodes empty. With
/// a stale claim the returning node would hold keys of no cluster, and the
/// operator would stop.
#[tokio::test]
async fn scaling_in_with_storage_leaves_nothing_for_the_next_scale_out() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let (c, _redis, _stack) = start(1, &[]).await?;
    let long = Duration::from_secs(240);
    // 4 claims at first, 3 new ones when growing back.
    c.kubectl_apply(&static_volumes("e2e-static", 7)).await?;
    c.kubectl_apply(&format!(
        "apiVersion: redis.example.com/v1alpha1\nkind: RedisCluster\nmetadata:\n  name: {NAME}\n  namespace: default\nspec:\n  replicas: 2\n  shard_count: 2\n  autoscaling_paused: true\n  storage:\n    size: 1Gi\n    storage_class_name: e2e-static\n"
    ))
    .await?;
    wait_ready(&c, 2, 2, long)
        .await
        .context("bootstrap 2 x 2")?;
    login(&c).await?;
    write_keys(&pod_addrs(&c).await?, 1).await?;

    patch(&c, r#"{"replicas":1}"#).await?;
    wait_ready(&c, 2, 1, long)
        .await
        .context("replicas 2 -> 1")?;
    let want = ["data-shop-shard-0-0", "data-shop-shard-1-0"];
    wait_for("the scaled-away replicas' claims to go", long, || async {
        Ok((claims(&c).await? == want).then_some(()))
    })
    .await?;

    patch(&c, r#"{"shard_count":1}"#).await?;
    wait_ready(&c, 1, 1, long).await.context("2 -> 1 shards")?;
    wait_for("the drained shard's claims to go", long, || async {
        Ok((claims(&c).await? == ["data-shop-shard-0-0"]).then_some(()))
    })
    .await?;
    check_keys(&pod_addrs(&c).await?, 1).await?;

    // Back out: every returning ordinal binds a fresh volume and joins.
    patch(&c, r#"{"shard_count":2,"replicas":2}"#).await?;
    wait_ready(&c, 2, 2, long)
        .await
        .context("back to 2 x 2 on fresh claims")?;
    check_redis(&c, 2).await?;
    check_keys(&pod_addrs(&c).await?, 1).await?;
    c.stop();
    Ok(())
}

/// The UIDs of the cluster's pods: the same ones mean no pod was replaced.
async fn pod_uids(c: &Cluster) -> Result<String> {
    c.kubectl_ok([
        "get",
        "pods",
        "-l",
        &format!("redis.example.com/cluster={NAME}"),
        "-o",
        "jsonpath={.items[*].metadata.uid}",
    ])
    .await
}

/// What `AUTH <password>` (as `default`) answers on `addr`: Ok, or the
/// server's error.
async fn auth_reply(addr: SocketAddr, password: &str) -> Result<std::result::Result<(), String>> {
    let mut c = redis::Client::open(harness::redis::url_with(addr, None))?
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    Ok(redis::cmd("AUTH")
        .arg(password)
        .query_async::<()>(&mut c)
        .await
        .map_err(|e| e.to_string()))
}

/// Whether every node of the cluster accepts `password`.
async fn all_accept(c: &Cluster, password: &str) -> Result<bool> {
    for a in pod_addrs(c).await? {
        if auth_reply(a, password).await?.is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn set_secret(c: &Cluster, name: &str, password: &str) -> Result<()> {
    c.kubectl_apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: default\nstringData:\n  password: {password}\n"
    ))
    .await?;
    Ok(())
}

/// Changing the clients' Secret rolls the new password in with no restart
/// and no failed command: both work during the overlap (status says until
/// when), a writer switches to the new one within it, then the old one is
/// refused, on running nodes and on a node started afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_rolls_in_without_a_restart_or_a_failed_command() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let (c, _redis, _stack) = start(1, &[]).await?;
    let long = Duration::from_secs(240);
    const SECRET: &str = "shop-credentials";
    let (old, new) = ("first-password-4b1d", "second-password-9e7c");
    set_secret(&c, SECRET, old).await?;
    c.kubectl_apply(&format!(
        "apiVersion: redis.example.com/v1alpha1\nkind: RedisCluster\nmetadata:\n  name: {NAME}\n  namespace: default\nspec:\n  replicas: 2\n  shard_count: 2\n  autoscaling_paused: true\n  auth:\n    secret_name: {SECRET}\n    rotation_overlap_seconds: 40\n"
    ))
    .await?;
    wait_ready(&c, 2, 2, long)
        .await
        .context("bootstrap 2 x 2")?;
    harness::redis::set_password(Some(old.into()));
    let uids_before = pod_uids(&c).await?;
    let urls = |password: &str, addrs: &[SocketAddr]| -> Vec<String> {
        addrs
            .iter()
            .map(|a| harness::redis::url_with(*a, Some(password)))
            .collect()
    };
    let addrs = pod_addrs(&c).await?;
    let writer = Writer::new("r", urls(old, &addrs));
    let running = tokio::spawn(writer.clone().run(Limits::default()));
    wait_for("the writer's first acknowledged writes", long, || async {
        Ok((writer.acked_count() >= 100).then_some(()))
    })
    .await?;

    set_secret(&c, SECRET, new).await?;
    let expires = wait_for("status to show the overlap", long, || async {
        let st = status(&c).await?;
        Ok(st["auth"]["old_password_expires_at"]
            .as_str()
            .map(str::to_string))
    })
    .await?;
    ensure!(
        all_accept(&c, new).await?,
        "the new password is not accepted everywhere"
    );
    ensure!(
        all_accept(&c, old).await?,
        "the old password stopped working before {expires}"
    );
    // The application picks the new password up and reconnects.
    writer.reconnect(urls(new, &addrs));
    let acked = writer.acked_count();
    wait_for("writes with the new password", long, || async {
        Ok((writer.acked_count() >= acked + 100).then_some(()))
    })
    .await?;

    let st = wait_for("the rotation to finish", long, || async {
        let st = status(&c).await?;
        Ok(st["auth"]["old_password_expires_at"]
            .is_null()
            .then_some(st))
    })
    .await?;
    ensure!(st["auth"]["rotated_at"].is_string(), "no rotated_at: {st}");
    ensure!(st["auth"]["secret_name"] == SECRET, "{st}");
    for a in pod_addrs(&c).await? {
        let refused = auth_reply(a, old).await?;
        ensure!(
            refused.as_ref().is_err_and(|e| e.contains("WRONGPASS")),
            "{a}: the old password after the overlap: {refused:?}"
        );
        ensure!(
            auth_reply(a, new).await?.is_ok(),
            "{a}: the new password refused"
        );
    }
    let acked = writer.acked_count();
    wait_for("writes after the rotation", long, || async {
        Ok((writer.acked_count() >= acked + 100).then_some(()))
    })
    .await?;
    writer.stop();
    running.await.context("joining the writer")??;
    let summary = writer.summary();
    let uids_after = pod_uids(&c).await?;
    ensure!(
        uids_before == uids_after,
        "pods were replaced: {uids_before} -> {uids_after}"
    );
    harness::redis::set_password(Some(new.into()));
    let lost = lost_writes(urls(new, &pod_addrs(&c).await?), "r", &summary.acked).await?;
    ensure!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    ensure!(
        summary.failed == 0,
        "{} of {} commands failed during the rotation",
        summary.failed,
        summary.attempted
    );
    eprintln!(
        "rotation: {} writes acknowledged, 0 failed, 0 lost, longest gap {:?}",
        summary.acked.len(),
        summary.longest_gap
    );

    // A node started after the rotation knows only the new password.
    let victim = format!("{NAME}-shard-0-1");
    c.kubectl_ok(["delete", "pod", &victim, "--wait=true"])
        .await?;
    wait_ready(&c, 2, 2, long)
        .await
        .context("the replaced replica")?;
    let ip = c
        .kubectl_ok(["get", "pod", &victim, "-o", "jsonpath={.status.podIP}"])
        .await?;
    let addr: SocketAddr = format!("{ip}:6379").parse()?;
    let replies = wait_for("the replaced node to answer", long, || async {
        Ok(
            match (auth_reply(addr, new).await, auth_reply(addr, old).await) {
                (Ok(n), Ok(o)) => Some((n, o)),
                _ => None,
            },
        )
    })
    .await?;
    ensure!(
        replies.0.is_ok() && replies.1.as_ref().is_err_and(|e| e.contains("WRONGPASS")),
        "a node started after the rotation: {replies:?}"
    );
    c.stop();
    Ok(())
}
