//! `make demo-sim`: a local control plane with the chart installed (the webhook
//! and the operator run as local processes), a RedisCluster reconciled, and
//! then scaled up when its simulated CPU rises. Every Redis pod runs a real
//! redis-server on its pod IP, so the Redis Cluster really forms and
//! reshapes. Stays up until Ctrl-C.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use harness::stack::{Stack, StackOptions};
use harness::{Cluster, ClusterOptions};
use tokio::signal::unix::{SignalKind, signal};

const EXAMPLE: &str = r#"apiVersion: redis.example.com/v1alpha1
kind: RedisCluster
metadata:
  name: demo
  namespace: default
spec:
  replicas: 1
  shard_count: 3
  scaling_threshold: 70.0
  min_replicas: 1
  max_replicas: 3
  scale_up_cooldown_seconds: 15
  scale_down_stabilization_seconds: 60
"#;

async fn show(c: &Cluster) {
    match c.kubectl_ok(["get", "redisclusters", "-A"]).await {
        Ok(out) => println!("{out}"),
        Err(e) => eprintln!("kubectl get failed: {e:#}"),
    }
}

/// Sets the simulated CPU of every demo pod (kwok reports it to metrics-server).
async fn set_cpu(c: &Cluster, cpu: &str) -> Result<()> {
    c.kubectl_ok([
        "annotate",
        "pods",
        "-l",
        "redis.example.com/cluster=demo",
        &format!("kwok.x-k8s.io/usage-cpu={cpu}"),
        "--overwrite",
    ])
    .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    harness::product::init_crypto();
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;

    println!("== starting a local control plane (etcd, kube-apiserver, kwok, metrics-server)");
    let cluster = Cluster::start(ClusterOptions {
        nodes: 3,
        metrics_server: true,
        ..ClusterOptions::default()
    })
    .await?;
    // kwok simulates the kubelet; each Redis pod gets a real redis-server on its pod IP.
    let redis = harness::pod_redis::PodRedis::start(&cluster)?;
    println!("== helm install charts/redis-operator (webhook and operator run as local processes)");
    let stack = Stack::install(
        &cluster,
        StackOptions {
            operators: 1,
            operator_args: vec!["--metrics-interval".into(), "5s".into()],
            ..StackOptions::default()
        },
    )
    .await?;
    println!("== kubectl apply a RedisCluster:\n{EXAMPLE}");
    cluster.kubectl_apply(EXAMPLE).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    show(&cluster).await;
    println!(
        "{}",
        cluster
            .kubectl_ok([
                "get",
                "statefulsets,services,poddisruptionbudgets",
                "-l",
                "redis.example.com/cluster=demo"
            ])
            .await?
    );

    println!("== raising the simulated CPU to 250m per pod (250 % of the 100m request)");
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    let kubeconfig = cluster.kubeconfig_path().display().to_string();
    let mut announced = false;
    let result = loop {
        tokio::select! {
            _ = sigint.recv() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
            _ = tick.tick() => {
                if let Err(e) = cluster.check_alive() {
                    break Err(e);
                }
                // New pods need the annotation too; stop after a while so
                // the scale-down can be watched as well.
                let cpu = if start.elapsed() < Duration::from_secs(150) { "250m" } else { "10m" };
                if let Err(e) = set_cpu(&cluster, cpu).await {
                    eprintln!("annotating pods: {e:#}");
                }
                show(&cluster).await;
                if !announced && start.elapsed() > Duration::from_secs(60) {
                    announced = true;
                    if let Ok(ev) = cluster.kubectl_ok(["get", "events", "--field-selector", "involvedObject.kind=RedisCluster"]).await {
                        println!("{ev}");
                    }
                    println!("== the cluster stays up; in another shell:\n   export KUBECONFIG={kubeconfig}\n   kubectl get redisclusters -w\n== operator metrics: http://127.0.0.1:{}/metrics ; logs: {}\n== Ctrl-C to stop",
                        stack.operators[0].metrics_port, stack.dir().display());
                }
            }
        }
    };
    drop(stack);
    // Before the apiserver goes, or its pod watch logs connection errors.
    drop(redis);
    cluster.stop();
    result
}
