//! Slot-migration rate on loopback: a 3-shard cluster holding `KEYS` keys
//! grows to 4 shards, once moved by `operator::topology` and once by
//! `redis-cli --cluster add-node` + `rebalance` (Redis's own tool, the
//! baseline), on identical fresh fleets. Both figures are keys moved over
//! the whole growth (join, wait for agreement, moves). Prints keys/s:
//! median, min and max.
//!
//! `cargo run --release -p redis-operator-slot-bench` (part of
//! `make bench`). SLOT_BENCH_KEYS and SLOT_BENCH_RUNS override the sizes;
//! SLOT_BENCH_OUT names a JSON file for the samples.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use harness::redis::{RedisFleet, converge, query, redis_binary};
use operator::topology::{Desired, StepOptions};
use redis::AsyncCommands;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A converged 3 x 1 fleet holding `keys` keys.
async fn loaded_fleet(name: &str, keys: usize) -> Result<RedisFleet> {
    let mut fleet = RedisFleet::new(name)?;
    fleet.start_grid(0..3, 1).await?;
    let opts = StepOptions::default();
    let d = Desired {
        shards: 3,
        nodes_per_shard: 1,
        loss: Default::default(),
    };
    converge(&fleet.members(), d, &opts, Duration::from_secs(120)).await?;
    let seeds: Vec<String> = (0..3)
        .map(|s| format!("redis://{}", fleet.addr(s, 0)))
        .collect();
    let client = redis::cluster::ClusterClientBuilder::new(seeds).build()?;
    let mut tasks = tokio::task::JoinSet::new();
    const WRITERS: usize = 8;
    for w in 0..WRITERS {
        let client = client.clone();
        tasks.spawn(async move {
            let mut conn = client.get_async_connection().await?;
            for i in (w..keys).step_by(WRITERS) {
                let _: () = conn.set(format!("key:{i}"), "x".repeat(64)).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(fleet)
}

async fn keys_on(fleet: &RedisFleet, shard: u32) -> Result<u64> {
    query(fleet.addr(shard, 0), &["DBSIZE"]).await
}

/// keys/s moving to a fourth shard with our topology step.
async fn ours(run: usize, keys: usize) -> Result<f64> {
    let mut fleet = loaded_fleet(&format!("slotbench-ours-{run}"), keys).await?;
    fleet.start(3, 0).await?;
    let d = Desired {
        shards: 4,
        nodes_per_shard: 1,
        loss: Default::default(),
    };
    let c = converge(
        &fleet.members(),
        d,
        &StepOptions::default(),
        Duration::from_secs(600),
    )
    .await?;
    ensure!(c.keys_moved > 0, "nothing moved");
    ensure!(
        keys_on(&fleet, 3).await? == c.keys_moved,
        "moved keys and DBSIZE disagree"
    );
    // Whole convergence (join, wait for agreement, moves), as the baseline.
    Ok(c.keys_moved as f64 / c.elapsed.as_secs_f64())
}

/// keys/s of `redis-cli --cluster add-node` + `rebalance` for the same growth.
async fn baseline(run: usize, keys: usize) -> Result<f64> {
    let mut fleet = loaded_fleet(&format!("slotbench-cli-{run}"), keys).await?;
    fleet.start(3, 0).await?;
    let cli = redis_binary("redis-cli")?;
    let (new, old) = (fleet.addr(3, 0).to_string(), fleet.addr(0, 0).to_string());
    let run_cli = |args: Vec<String>| {
        let cli = cli.clone();
        async move {
            let out = tokio::process::Command::new(cli)
                .args(&args)
                .output()
                .await?;
            ensure!(
                out.status.success(),
                "redis-cli {args:?}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            anyhow::Ok(())
        }
    };
    let start = Instant::now();
    run_cli(vec![
        "--cluster".into(),
        "add-node".into(),
        new.clone(),
        old.clone(),
    ])
    .await?;
    // Rebalancing fails until every node knows the new one (redis-cli sets
    // each slot's owner on all of them) and the new node sees the cluster
    // ok: wait for exactly that, as the operator waits for agreement.
    let joined = fleet.addr(3, 0);
    let id: String = query(joined, &["CLUSTER", "MYID"]).await?;
    let members = fleet.members();
    harness::wait_for(
        "every node to know the added one",
        Duration::from_secs(60),
        || async {
            for m in &members {
                let nodes: String = query(m.addr, &["CLUSTER", "NODES"]).await?;
                if !nodes.contains(&id) {
                    return Ok(None);
                }
            }
            let info: String = query(joined, &["CLUSTER", "INFO"]).await?;
            Ok(info.contains("cluster_state:ok").then_some(()))
        },
    )
    .await?;
    run_cli(vec![
        "--cluster".into(),
        "rebalance".into(),
        old,
        "--cluster-use-empty-masters".into(),
        "--cluster-yes".into(),
    ])
    .await?;
    let secs = start.elapsed().as_secs_f64();
    let moved = keys_on(&fleet, 3).await?;
    ensure!(moved > 0, "rebalance moved nothing");
    Ok(moved as f64 / secs)
}

fn summary(xs: &mut [f64]) -> (f64, f64, f64) {
    xs.sort_by(|a, b| a.total_cmp(b));
    (xs[xs.len() / 2], xs[0], xs[xs.len() - 1])
}

#[tokio::main]
async fn main() -> Result<()> {
    let keys = env_or("SLOT_BENCH_KEYS", 100_000);
    let runs = env_or("SLOT_BENCH_RUNS", 3).max(1);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for run in 0..runs {
        a.push(ours(run, keys).await.context("operator::topology run")?);
        b.push(
            baseline(run, keys)
                .await
                .context("redis-cli rebalance run")?,
        );
    }
    if let Ok(path) = std::env::var("SLOT_BENCH_OUT") {
        // For bench/bench.py, which puts the figures in the results JSON.
        let doc = serde_json::json!({
            "keys": keys, "runs": runs, "shards": [3, 4],
            "ours_keys_per_s": a, "baseline_keys_per_s": b,
        });
        std::fs::write(&path, doc.to_string()).with_context(|| format!("writing {path}"))?;
    }
    let (am, amin, amax) = summary(&mut a);
    let (bm, bmin, bmax) = summary(&mut b);
    println!(
        "slot migration, 3 -> 4 shards, {keys} keys of 64 B, {runs} runs (keys/s: median [min, max])"
    );
    println!("  operator::topology        {am:>10.0}  [{amin:.0}, {amax:.0}]");
    println!("  redis-cli --cluster rebalance {bm:>6.0}  [{bmin:.0}, {bmax:.0}]");
    println!("  ratio ours/baseline       {:>10.2}", am / bm);
    Ok(())
}
