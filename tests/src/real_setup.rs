//! Setup shared by the real-node suites: the restricted namespaces, the
//! chart installed with the images `make test-images` built, RedisClusters
//! and their status.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::real_node::Images;
use crate::stack::{NAMESPACE, RELEASE, chart_dir};
use crate::{Cluster, wait_for};

/// The namespace the RedisClusters of the real-node suites live in.
pub const APPS: &str = "apps";

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

/// Creates the namespaces and installs the chart, waiting for it.
pub async fn install_chart(c: &Cluster) -> Result<()> {
    let images = c.with_real(|r| Ok(r.images.clone()))?;
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
    install.extend(image_values(&images));
    c.helm_ok(&install).await.context("helm install")?;
    Ok(())
}

pub fn redis_cluster(name: &str, image: &str, spec: &str) -> String {
    format!(
        "apiVersion: redis.example.com/v1alpha1\nkind: RedisCluster\nmetadata:\n  name: {name}\n  namespace: {APPS}\nspec:\n  image: {image}\n{spec}"
    )
}

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

/// Whether the RedisCluster has `replicas` ready per shard and is Ready.
pub async fn is_ready(c: &Cluster, name: &str, replicas: u32) -> Result<bool> {
    let ready = rc_field(c, name, "{.status.ready_replicas}").await?;
    let cond = rc_field(
        c,
        name,
        r#"{.status.conditions[?(@.type=="Ready")].status}"#,
    )
    .await?;
    Ok(ready == replicas.to_string() && cond == "True")
}

pub async fn wait_ready(c: &Cluster, name: &str, replicas: u32, timeout: Duration) -> Result<()> {
    wait_for(&format!("RedisCluster {name} Ready"), timeout, || async {
        Ok(is_ready(c, name, replicas).await?.then_some(()))
    })
    .await
}

/// `pod name -> (uid, pod IP)` for a RedisCluster's pods.
pub async fn pods_of(c: &Cluster, name: &str) -> Result<Vec<(String, String, Option<Ipv4Addr>)>> {
    let out = c
        .kubectl_ok([
            "get",
            "pods",
            "-n",
            APPS,
            "-l",
            &format!("redis.example.com/cluster={name}"),
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name} {.metadata.uid} {.status.podIP}{"\n"}{end}"#,
        ])
        .await?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (n, u) = (f.next()?, f.next()?);
            Some((
                n.to_owned(),
                u.to_owned(),
                f.next().and_then(|ip| ip.parse().ok()),
            ))
        })
        .collect())
}
