//! The chart on a real node, as the real-node suites use it: restricted
//! namespaces, `helm install` with our images, RedisClusters applied with
//! `kubectl`, and what a test reads back (status fields, pod IPs, the
//! operator's metrics, events).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::real_node::Images;
use crate::stack::{NAMESPACE, RELEASE, chart_dir};
use crate::{Cluster, wait_for};

/// The namespace the RedisClusters of the real-node suites live in.
pub const APPS: &str = "apps";

/// A namespace that enforces the restricted Pod Security Standard.
pub fn restricted_namespace(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:\n    pod-security.kubernetes.io/enforce: restricted\n    pod-security.kubernetes.io/enforce-version: latest\n"
    )
}

/// The values that differ from the chart's defaults: the images only.
pub fn image_values(images: &Images) -> Vec<String> {
    let (repo, tag) = Images::split(&images.product);
    let (trepo, ttag) = Images::split(&images.curl);
    [
        format!("image.repository={repo}"),
        format!("image.tag={tag}"),
        format!("tests.image.repository={trepo}"),
        format!("tests.image.tag={ttag}"),
    ]
    .into_iter()
    .flat_map(|v| ["--set".to_string(), v])
    .collect()
}

/// Makes the release's and the apps' restricted namespaces, and installs
/// the chart with only the images changed (`--wait`).
pub async fn install(c: &Cluster, images: &Images) -> Result<()> {
    c.kubectl_apply(&restricted_namespace(NAMESPACE)).await?;
    c.kubectl_apply(&restricted_namespace(APPS)).await?;
    let mut install = vec![
        "install".to_string(),
        RELEASE.into(),
        chart_dir().display().to_string(),
        "-n".into(),
        NAMESPACE.into(),
        "--wait".into(),
        "--timeout=180s".into(),
    ];
    install.extend(image_values(images));
    c.helm_ok(&install).await.context("helm install")?;
    Ok(())
}

/// A RedisCluster in [`APPS`] running `image`, with `spec` (indented YAML
/// lines under `spec:`).
pub fn redis_cluster(name: &str, image: &str, spec: &str) -> String {
    format!(
        "apiVersion: redis.example.com/v1alpha1\nkind: RedisCluster\nmetadata:\n  name: {name}\n  namespace: {APPS}\nspec:\n  image: {image}\n{spec}"
    )
}

/// A field of a RedisCluster in [`APPS`], by JSONPath.
pub async fn rc_field(c: &Cluster, name: &str, path: &str) -> Result<String> {
    c.kubectl_ok([
        "get",
        "rediscluster",
        name,
        "-n",
        APPS,
        "-o",
        &format!("jsonpath={path}"),
    ])
    .await
}

/// A condition of a RedisCluster in [`APPS`]: status, reason, message.
pub async fn condition(c: &Cluster, name: &str, kind: &str) -> Result<(String, String, String)> {
    let get = |f: &str| format!(r#"{{.status.conditions[?(@.type=="{kind}")].{f}}}"#);
    Ok((
        rc_field(c, name, &get("status")).await?,
        rc_field(c, name, &get("reason")).await?,
        rc_field(c, name, &get("message")).await?,
    ))
}

/// Waits until every shard has `replicas` ready pods and `Ready` is true.
pub async fn wait_ready(c: &Cluster, name: &str, replicas: u32, timeout: Duration) -> Result<()> {
    wait_for(&format!("RedisCluster {name} Ready"), timeout, || async {
        let ready = rc_field(c, name, "{.status.ready_replicas}").await?;
        let cond = rc_field(
            c,
            name,
            r#"{.status.conditions[?(@.type=="Ready")].status}"#,
        )
        .await?;
        Ok((ready == replicas.to_string() && cond == "True").then_some(()))
    })
    .await
}

/// `pod name -> pod IP` for a RedisCluster's pods that have an IP.
pub async fn pod_ips(c: &Cluster, name: &str) -> Result<Vec<(String, Ipv4Addr)>> {
    let out = c
        .kubectl_ok([
            "get",
            "pods",
            "-n",
            APPS,
            "-l",
            &format!("redis.example.com/cluster={name}"),
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name} {.status.podIP}{"\n"}{end}"#,
        ])
        .await?;
    let mut pods = Vec::new();
    for line in out.lines() {
        if let Some((n, ip)) = line.split_once(' ')
            && let Ok(ip) = ip.trim().parse()
        {
            pods.push((n.to_owned(), ip));
        }
    }
    pods.sort();
    Ok(pods)
}

/// `redis://ip:6379` seeds for a cluster client.
pub fn seeds(pods: &[(String, Ipv4Addr)]) -> Vec<String> {
    pods.iter()
        .map(|(_, ip)| format!("redis://{ip}:6379"))
        .collect()
}

/// One RESP command to `ip:6379`, sent from inside the node's network
/// namespace.
pub async fn query_in_node<T>(c: &Cluster, ip: Ipv4Addr, args: &[&str]) -> Result<T>
where
    T: redis::FromRedisValue + Send + 'static,
{
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    c.netns_handle()?
        .run_async(move || async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            crate::redis::query(SocketAddr::new(ip.into(), 6379), &args).await
        })
        .await
}

/// The sum of a counter over the operator's pods (only the leader counts),
/// read from their `/metrics` endpoints inside the node.
pub async fn operator_counter(c: &Cluster, metric: &str) -> Result<f64> {
    let out = c
        .kubectl_ok([
            "get",
            "pods",
            "-n",
            NAMESPACE,
            "-l",
            "app.kubernetes.io/component=operator",
            "-o",
            r#"jsonpath={range .items[*]}{.status.podIP}{"\n"}{end}"#,
        ])
        .await?;
    let netns = c.netns_handle()?;
    let mut sum = 0.0;
    let mut pods = 0;
    for ip in out
        .lines()
        .filter_map(|l| l.trim().parse::<Ipv4Addr>().ok())
    {
        let body = netns
            .http_get((ip, 8080), "/metrics")
            .with_context(|| format!("GET {ip}:8080/metrics"))?;
        pods += 1;
        sum += body
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .next()
                    .is_some_and(|name| name == metric || name.starts_with(&format!("{metric}{{")))
            })
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    anyhow::ensure!(pods > 0, "no operator pod with an IP in {NAMESPACE}");
    Ok(sum)
}

/// Messages of the events of `reason` about a RedisCluster in [`APPS`].
pub async fn events(c: &Cluster, name: &str, reason: &str) -> Result<Vec<String>> {
    let out = c
        .kubectl_ok([
            "get",
            "events",
            "-n",
            APPS,
            "--field-selector",
            &format!("involvedObject.kind=RedisCluster,involvedObject.name={name},reason={reason}"),
            "-o",
            r#"jsonpath={range .items[*]}{.message}{"\n"}{end}"#,
        ])
        .await?;
    Ok(out.lines().map(str::to_owned).collect())
}
