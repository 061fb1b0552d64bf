//! `make demo`: the product on one real node, as a cluster admin runs it.
//! containerd, a kubelet and kube-proxy with a control plane, in a network
//! namespace of their own; the chart installed in-cluster (the operator and
//! the webhook run as pods from the locally built image); a 3-shard
//! RedisCluster in real Redis containers, loaded by `redis-benchmark` for a
//! while so that it scales up on the CPU the kubelet measures, and back down
//! when the load ends. Stays up until Ctrl-C, then removes everything.
//! Needs root. `make demo-sim` is the simulated (kwok) variant.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use harness::in_cluster::{
    APPS, helm_install, load_pod, pod_phase, rc_field, redis_cluster, release_pods, service_host,
    wait_ready,
};
use harness::stack::NAMESPACE;
use harness::{Cluster, ClusterOptions};
use tokio::signal::unix::{Signal, SignalKind, signal};

const NAME: &str = "demo";
const THRESHOLD: u32 = 50;
/// How long the demo's own load runs: long enough to reach the maximum.
const LOAD: Duration = Duration::from_secs(150);

struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }

    /// Runs `f` unless a signal comes first (`None` then).
    async fn or_stop<T>(&mut self, f: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            v = f => Some(v),
            _ = self.recv() => None,
        }
    }
}

fn spec(image: &str) -> String {
    redis_cluster(
        NAME,
        image,
        &format!(
            "  shard_count: 3\n  replicas: 1\n  scaling_threshold: {THRESHOLD}\n  min_replicas: 1\n  max_replicas: 3\n  scale_up_cooldown_seconds: 15\n  scale_down_stabilization_seconds: 60\n  resources:\n    requests: {{cpu: 100m, memory: 64Mi}}\n"
        ),
    )
}

/// One line about the RedisCluster: replicas, ready, CPU.
async fn status_line(c: &Cluster) -> Result<String> {
    let raw = rc_field(
        c,
        NAME,
        "{.spec.replicas}|{.status.ready_replicas}|{.status.current_cpu}",
    )
    .await?;
    let f: Vec<&str> = raw.split('|').collect();
    let get = |i: usize| f.get(i).copied().filter(|v| !v.is_empty()).unwrap_or("-");
    let cpu = get(2)
        .parse::<f64>()
        .map(|v| format!("CPU {v:.0}% of requests"))
        .unwrap_or_else(|_| "no CPU reading yet".into());
    Ok(format!(
        "replicas {} (ready {}), {cpu} (threshold {THRESHOLD}%)",
        get(0),
        get(1)
    ))
}

/// The scaling events seen so far, oldest first.
async fn scaling_events(c: &Cluster) -> Result<Vec<String>> {
    let out = c
        .kubectl_ok([
            "get",
            "events",
            "-n",
            APPS,
            "--field-selector",
            &format!("involvedObject.name={NAME}"),
            "--sort-by=.metadata.creationTimestamp",
            "-o",
            r#"jsonpath={range .items[*]}{.reason}: {.message}{"\n"}{end}"#,
        ])
        .await?;
    Ok(out
        .lines()
        .filter(|l| l.starts_with("Scaled"))
        .map(str::to_owned)
        .collect())
}

async fn instructions(c: &Cluster) -> Result<String> {
    let netns = c.netns_handle()?.path().display().to_string();
    let kubeconfig = c.kubeconfig_path().display().to_string();
    let tools = c.tools().path("kubectl")?;
    let tools = tools
        .parent()
        .context("kubectl has no directory")?
        .display()
        .to_string();
    let ip = c
        .kubectl_ok([
            "get",
            "service",
            NAME,
            "-n",
            APPS,
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])
        .await?;
    let operator = release_pods(c, "app.kubernetes.io/component=operator")
        .await
        .ok()
        .and_then(|pods| pods.first().map(|(_, ip)| ip.to_string()))
        .unwrap_or_default();
    Ok(format!(
        "== the cluster is up. Everything lives in the node's network namespace; in another shell, as root:\n\
         \x20  nsenter --net={netns} bash     # a shell inside it\n\
         \x20  export KUBECONFIG={kubeconfig} PATH={tools}:$PATH\n\
         \x20  kubectl get redisclusters -n {APPS} -w\n\
         \x20  kubectl get pods -A -o wide\n\
         \x20  export REDISCLI_AUTH=$(kubectl get secret {NAME}-auth -n {APPS} -o go-template='{{{{.data.password | base64decode}}}}')   # the clients' password\n\
         \x20  redis-cli -c -h {ip} set hello world     # {ip}: the client Service {NAME}.{APPS}; -c follows redirects\n\
         \x20  redis-cli -c -h {ip} get hello\n\
         \x20  redis-benchmark --cluster -h {ip} -a \"$REDISCLI_AUTH\" -t set,get -n 2000000 -P 8 -q     # more load, scales up again\n\
         \x20  kubectl logs -n {NAMESPACE} deploy/redis-operator-operator\n\
         \x20  curl -s http://{operator}:8080/metrics | grep scaling\n\
         == or one command at a time: nsenter --net={netns} redis-cli -c -h {ip} -a <password> ping\n\
         == Ctrl-C here stops everything and removes it"
    ))
}

#[tokio::main]
async fn main() -> Result<()> {
    harness::product::init_crypto();
    let mut sig = Signals {
        int: signal(SignalKind::interrupt()).context("installing SIGINT handler")?,
        term: signal(SignalKind::terminate()).context("installing SIGTERM handler")?,
    };
    let t0 = Instant::now();
    println!(
        "== starting a real node (containerd, kubelet, kube-proxy) and a control plane \
         (etcd, kube-apiserver, controller-manager, scheduler, metrics-server), \
         in a network namespace of their own"
    );
    let start = Cluster::start(ClusterOptions {
        real_node: true,
        metrics_server: true,
        start_timeout: Duration::from_secs(300),
        ..ClusterOptions::default()
    });
    // Dropping the cluster (here, or when start-up is interrupted) tears
    // everything down.
    let Some(cluster) = sig.or_stop(start).await else {
        println!("== interrupted during start-up; removed what was started");
        return Ok(());
    };
    let cluster = cluster?;
    let result = match sig.or_stop(run(&cluster, t0)).await {
        Some(Err(e)) => Err(e),
        // Set up and watching until a signal, or interrupted while setting up.
        _ => Ok(()),
    };
    println!("== stopping: removing the pods, then every process, mount and cgroup");
    cluster.stop();
    println!("== stopped after {:.0}s", t0.elapsed().as_secs_f64());
    result
}

/// Installs, applies, loads, then reports changes until the process is
/// stopped (the caller races it against the signals).
async fn run(c: &Cluster, t0: Instant) -> Result<()> {
    let images = c.with_real(|r| Ok(r.images.clone()))?;
    println!(
        "== node ready after {:.0}s; helm install charts/redis-operator (the operator and the webhook run as pods from {})",
        t0.elapsed().as_secs_f64(),
        images.product
    );
    // The operator reads PodMetrics every 5 s instead of 15 s: a livelier demo.
    helm_install(c, &images, &["operator.metricsInterval=5s"]).await?;
    println!("{}", c.kubectl_ok(["get", "pods", "-n", NAMESPACE]).await?);
    let manifest = spec(&images.redis);
    println!("== kubectl apply a RedisCluster:\n{manifest}");
    c.kubectl_apply(&manifest).await?;
    wait_ready(c, NAME, 1, Duration::from_secs(300)).await?;
    println!(
        "{}",
        c.kubectl_ok([
            "get",
            "redisclusters,statefulsets,services,poddisruptionbudgets,pods",
            "-n",
            APPS
        ])
        .await?
    );
    println!(
        "== ready after {:.0}s; loading it with redis-benchmark from the pod {APPS}/load for {} s",
        t0.elapsed().as_secs_f64(),
        LOAD.as_secs()
    );
    c.kubectl_apply(&load_pod(
        "load",
        &images.redis,
        NAME,
        &format!("--cluster -h {}", service_host(NAME)),
        1000,
        LOAD,
    ))
    .await?;
    println!("{}", instructions(c).await?);

    let mut tick = tokio::time::interval(Duration::from_secs(10));
    let (mut last_line, mut events_seen, mut load_done) = (String::new(), 0, false);
    loop {
        tick.tick().await;
        c.check_alive()?;
        let stamp = format!("[{:>4.0}s]", t0.elapsed().as_secs_f64());
        match status_line(c).await {
            Ok(line) if line != last_line => {
                println!("{stamp} {line}");
                last_line = line;
            }
            Ok(_) => {}
            Err(e) => eprintln!("{stamp} reading the RedisCluster: {e:#}"),
        }
        if let Ok(events) = scaling_events(c).await {
            for e in events.iter().skip(events_seen) {
                println!("{stamp} event {e}");
            }
            events_seen = events_seen.max(events.len());
        }
        if !load_done
            && let Ok(phase) = pod_phase(c, "load").await
            && matches!(phase.as_str(), "Succeeded" | "Failed")
        {
            load_done = true;
            println!(
                "{stamp} the load pod ended ({phase}); scaling down follows the 60 s stabilisation window"
            );
        }
    }
}
