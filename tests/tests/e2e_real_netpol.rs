//! NetworkPolicies enforced on a real node. Every real node of the harness
//! runs kube-router's network policy controller (iptables and ipsets in
//! the node's namespace; see `harness::real_node`), as a production CNI
//! would. Here, with the chart's own policies on as well:
//! - a client in the cluster's namespace is served on the client port and
//!   refused on the cluster bus port;
//! - a client in another namespace is refused, through the Service and by
//!   pod IP; the exporter's port stays open to it, the operator's metrics
//!   port (opened to the cluster's namespace only) does not;
//! - `spec.network_policy.allowed_clients` lets that namespace in on the
//!   client port only;
//! - the operator, in its own namespace, still reshards 3 -> 4 under the
//!   writer that records every acknowledged write, and none is lost.
//!
//! kube-router is v2.1.0, the only version the module proxy serves, and
//! security flaws are reported against that version. So it stays test-only
//! and contained: only its policy controller runs, with its health and
//! metrics ports off, inside a network namespace this run created that has
//! no route out.
//!
//! Needs root and `make test-images` (as e2e_real).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use harness::in_cluster::{
    APPS, client_pod, client_pod_in, helm_install, none_lost, on_real_node, pod_ips, pod_result,
    pod_result_in, pods_of, redis_cluster, release_pods, reshard, restricted_namespace, seeds,
    service_host, start_writer, stop_writer, use_client_password, wait_ready,
};
use harness::stack::NAMESPACE;
use harness::{Cluster, wait_for};

const NAME: &str = "guarded";
/// A namespace the cluster's policy does not name.
const ELSEWHERE: &str = "elsewhere";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_policies_keep_other_namespaces_out_and_the_operator_in() -> Result<()> {
    on_real_node(false, scenario).await
}

/// Waits until kube-router has put each of `pods` in `namespace` behind
/// its policy: their REJECT rule is in the node's filter table.
async fn wait_enforced(c: &Cluster, namespace: &str, pods: &[String]) -> Result<()> {
    let netns = c.netns_handle()?;
    wait_for(
        &format!("kube-router enforcing policies on {pods:?}"),
        Duration::from_secs(60),
        || async {
            let rules = netns.run_ok("/usr/sbin/iptables-save", &["-t", "filter"])?;
            Ok(pods
                .iter()
                .all(|p| {
                    rules.contains(&format!("destined for POD name:{p} namespace: {namespace}"))
                })
                .then_some(()))
        },
    )
    .await
}

/// `redis-cli <args> ping` once, as a shell line that prints
/// `<label>: <reply>`.
fn ping(label: &str, args: &str) -> String {
    format!("echo \"{label}: $(redis-cli {args} ping 2>&1)\"\n")
}

/// `command` as shell lines that retry it (up to 120 times, a second
/// apart) until its output matches the `case` pattern `until`, then print
/// `<label>: <last output>`. kube-router adds a new pod's address to the
/// policies' sets a moment after the pod starts; until then the pod is
/// refused like a stranger, so an allowed connection is retried.
fn retried(label: &str, command: &str, until: &str) -> String {
    format!(
        "i=0\nwhile [ $i -lt 120 ]; do\n\
         \x20 r=$({command} 2>&1)\n\
         \x20 case \"$r\" in {until}) break;; esac\n\
         \x20 i=$((i+1)); sleep 1\n\
         done\n\
         echo \"{label}: $r\"\n"
    )
}

/// `curl` of `url` as a shell command whose output is `HTTP <code>`, or
/// curl's error.
fn get(url: &str) -> String {
    format!("curl -sS -m 5 -o /dev/null -w 'HTTP %{{http_code}}' {url}")
}

fn expect(log: &str, line: &str) -> Result<()> {
    ensure!(
        log.lines().any(|l| l == line),
        "expected the line {line:?} in:\n{log}"
    );
    Ok(())
}

async fn scenario(c: &Cluster, t0: Instant) -> Result<()> {
    let step = |what: &str| {
        eprintln!(
            "e2e-real-netpol: {what} at {:.1}s",
            t0.elapsed().as_secs_f64()
        )
    };
    let images = c.with_real(|r| Ok(r.images.clone()))?;
    c.kubectl_apply(&restricted_namespace(ELSEWHERE)).await?;
    // The chart's policies too, the metrics ports opened to APPS only.
    helm_install(
        c,
        &images,
        &[
            "networkPolicy.enabled=true",
            &format!(
                r"networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.kubernetes\.io/metadata\.name={APPS}"
            ),
        ],
    )
    .await?;
    step("helm install done, with the chart's NetworkPolicies");
    c.kubectl_apply(&redis_cluster(
        NAME,
        &images.redis,
        "  shard_count: 3\n  replicas: 2\n  autoscaling_paused: true\n",
    ))
    .await?;
    wait_ready(c, NAME, 2, Duration::from_secs(300)).await?;
    use_client_password(c, APPS, NAME).await?;
    let names: Vec<String> = pods_of(c, NAME).await?.into_iter().map(|p| p.0).collect();
    wait_enforced(c, APPS, &names).await?;
    let operators = release_pods(c, "app.kubernetes.io/component=operator").await?;
    let (operator, operator_ip) = operators.first().context("no operator pod")?.clone();
    wait_enforced(c, NAMESPACE, std::slice::from_ref(&operator)).await?;
    step("RedisCluster 3x2 Ready, its pods and the operator's behind their policies");

    let pods = pod_ips(c, NAME).await?;
    let ip = pods.first().context("no Redis pod")?.1;
    let host = service_host(NAME);
    let operator_metrics = format!("http://{operator_ip}:8080/metrics");
    let exporter_metrics = format!("http://{ip}:9121/metrics");
    let refused = |to: &str| format!("Could not connect to Redis at {to}: Connection refused");

    // The cluster's namespace: the client port, not the bus.
    // Served first, so that the refusal after it is the policy's.
    let script = retried("service", &format!("redis-cli -h {host} ping"), "PONG")
        + &ping("bus", &format!("-h {ip} -p 16379"));
    c.kubectl_apply(&client_pod("inside", &images.redis, Some(NAME), &script))
        .await?;
    let log = pod_result(c, "inside", Duration::from_secs(120)).await?;
    expect(&log, "service: PONG")?;
    expect(&log, &format!("bus: {}", refused(&format!("{ip}:16379"))))?;
    let script = retried("operator", &get(&operator_metrics), "*200")
        + &retried("exporter", &get(&exporter_metrics), "*200");
    c.kubectl_apply(&client_pod("inside-http", &images.curl, None, &script))
        .await?;
    let log = pod_result(c, "inside-http", Duration::from_secs(120)).await?;
    expect(&log, "operator: HTTP 200")?;
    expect(&log, "exporter: HTTP 200")?;
    step("the cluster's namespace: client port served, bus refused, metrics served");

    // Another namespace: refused, but for the exporter.
    let script = ping("service", &format!("-h {host}")) + &ping("pod", &format!("-h {ip}"));
    c.kubectl_apply(&client_pod_in(ELSEWHERE, "outside", &images.redis, &script))
        .await?;
    let log = pod_result_in(c, ELSEWHERE, "outside", Duration::from_secs(120)).await?;
    expect(
        &log,
        &format!("service: {}", refused(&format!("{host}:6379"))),
    )?;
    expect(&log, &format!("pod: {}", refused(&format!("{ip}:6379"))))?;
    // The exporter first: once it answers, this pod is known to kube-router.
    let script = retried("exporter", &get(&exporter_metrics), "*200")
        + &format!("echo \"operator: $({} 2>&1)\"\n", get(&operator_metrics));
    c.kubectl_apply(&client_pod_in(
        ELSEWHERE,
        "outside-http",
        &images.curl,
        &script,
    ))
    .await?;
    let log = pod_result_in(c, ELSEWHERE, "outside-http", Duration::from_secs(120)).await?;
    ensure!(
        log.lines()
            .any(|l| l.starts_with("operator: curl: (7) Failed to connect")),
        "the operator's metrics answered another namespace:\n{log}"
    );
    expect(&log, "exporter: HTTP 200")?;
    step("another namespace: refused through the Service and by pod IP; the exporter open");

    // Widened to that namespace: the client port answers (and asks for the
    // password), the bus stays closed.
    c.kubectl_ok([
        "patch",
        "rediscluster",
        NAME,
        "-n",
        APPS,
        "--type=merge",
        "-p",
        &format!(
            r#"{{"spec":{{"network_policy":{{"allowed_clients":[{{"namespaceSelector":{{"matchLabels":{{"kubernetes.io/metadata.name":"{ELSEWHERE}"}}}}}}]}}}}}}"#
        ),
    ])
    .await?;
    // The reply is the event waited for: kube-router applies the change
    // within seconds of the operator's update of the NetworkPolicy.
    let script = retried("pod", &format!("redis-cli -h {ip} ping"), "NOAUTH*")
        + &ping("bus", &format!("-h {ip} -p 16379"));
    c.kubectl_apply(&client_pod_in(ELSEWHERE, "widened", &images.redis, &script))
        .await?;
    let log = pod_result_in(c, ELSEWHERE, "widened", Duration::from_secs(180)).await?;
    expect(&log, "pod: NOAUTH Authentication required.")?;
    expect(&log, &format!("bus: {}", refused(&format!("{ip}:16379"))))?;
    step("allowed_clients let the other namespace in on the client port only");

    // The operator, from its own namespace, reshards under the writer.
    let (writer, running) = start_writer(c, "np", seeds(&pods), 300).await?;
    let grown = reshard(c, NAME, 4, 2, &writer).await;
    let summary = stop_writer(&writer, running).await?;
    grown?;
    step("4 shards, Ready");
    none_lost(c, "e2e-real-netpol: writer", NAME, "np", &summary).await?;
    let names: Vec<String> = pod_ips(c, NAME).await?.into_iter().map(|p| p.0).collect();
    wait_enforced(c, APPS, &names).await?;
    Ok(())
}
