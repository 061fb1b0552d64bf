//! A real Prometheus (built from its Go module by build-tools.sh) inside
//! the real node's network namespace, where it reaches the pods. It scrapes
//! what the chart's monitors select, as file-based targets the test keeps
//! up to date (there is no Prometheus Operator here to translate them), and
//! evaluates the chart's alert rules.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::Cluster;
use crate::real_node::NetnsHandle;

/// Where Prometheus listens, inside the namespace.
const LISTEN: (Ipv4Addr, u16) = (Ipv4Addr::LOCALHOST, 9090);

/// One scrape target: its address and the labels a PodMonitor or
/// ServiceMonitor would give it.
pub struct Target {
    pub addr: (Ipv4Addr, u16),
    pub namespace: String,
    pub pod: String,
}

pub struct Prometheus {
    dir: PathBuf,
    netns: NetnsHandle,
}

impl Prometheus {
    /// Starts Prometheus on cluster `c`'s node with `rules` (a rule file) and
    /// one file-based job per `(name, honor_labels)` in `jobs`, scraping and
    /// evaluating every `interval` seconds. It stops with the cluster.
    pub fn start(c: &Cluster, rules: &str, jobs: &[(&str, bool)], interval: u32) -> Result<Self> {
        let dir = c.tmp_dir().join("prometheus");
        std::fs::create_dir_all(dir.join("data"))?;
        std::fs::write(dir.join("alerts.rules.yaml"), rules)?;
        let mut config = format!(
            "global:\n  scrape_interval: {interval}s\n  scrape_timeout: {interval}s\n  evaluation_interval: {interval}s\nrule_files:\n  - {}\nscrape_configs:\n",
            dir.join("alerts.rules.yaml").display()
        );
        for (job, honor_labels) in jobs {
            let targets = dir.join(format!("{job}.json"));
            std::fs::write(&targets, "[]")?;
            config.push_str(&format!(
                "  - job_name: {job}\n    honor_labels: {honor_labels}\n    file_sd_configs:\n      - files: ['{}']\n        refresh_interval: {interval}s\n",
                targets.display()
            ));
        }
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, config)?;
        let program = c.tools().path("prometheus")?;
        let args = vec![
            format!("--config.file={}", file.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address={}:{}", LISTEN.0, LISTEN.1),
        ];
        c.spawn_in_node("prometheus", &program, args)?;
        Ok(Prometheus {
            dir,
            netns: c.netns_handle()?,
        })
    }

    /// Replaces the targets of `job` (written whole, then renamed, so that
    /// Prometheus never reads half a file).
    pub fn set_targets(&self, job: &str, targets: &[Target]) -> Result<()> {
        let list: Vec<Value> = targets
            .iter()
            .map(|t| {
                serde_json::json!({
                    "targets": [format!("{}:{}", t.addr.0, t.addr.1)],
                    "labels": {"namespace": t.namespace, "pod": t.pod},
                })
            })
            .collect();
        let tmp = self.dir.join(format!("{job}.json.tmp"));
        std::fs::write(&tmp, serde_json::to_vec(&list)?)?;
        std::fs::rename(&tmp, self.dir.join(format!("{job}.json")))?;
        Ok(())
    }

    /// `GET path?params` against the API, from inside the namespace; the
    /// `data` of a successful answer.
    async fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value> {
        let url = reqwest::Url::parse_with_params(
            &format!("http://{}:{}{path}", LISTEN.0, LISTEN.1),
            params,
        )?;
        let text = self
            .netns
            .run_async(move || async move { crate::stack::http_get(url.as_str()).await })
            .await?;
        let v: Value = serde_json::from_str(&text).with_context(|| format!("{path}: {text}"))?;
        if v["status"] != "success" {
            bail!("{path}: {text}");
        }
        Ok(v["data"].clone())
    }

    /// Whether Prometheus answers.
    pub async fn ready(&self) -> bool {
        self.api("/api/v1/status/buildinfo", &[]).await.is_ok()
    }

    /// The result of an instant query: one entry per series.
    pub async fn query(&self, expr: &str) -> Result<Vec<Value>> {
        let data = self.api("/api/v1/query", &[("query", expr)]).await?;
        ensure!(data["resultType"] == "vector", "{expr}: {data}");
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// The alerts named `name` that are firing, with their labels.
    pub async fn firing(&self, name: &str) -> Result<Vec<Value>> {
        let data = self.api("/api/v1/alerts", &[]).await?;
        Ok(data["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["labels"]["alertname"] == name && a["state"] == "firing")
            .map(|a| a["labels"].clone())
            .collect())
    }
}

/// The chart's objects of `kind`, as `helm template` renders them with
/// `values` (a values file of `charts/redis-operator/ci`).
pub fn chart_objects(tools: &crate::tools::Tools, values: &str, kind: &str) -> Result<Vec<Value>> {
    let chart = crate::stack::chart_dir();
    let values = chart.join("ci").join(values);
    let out = std::process::Command::new(tools.path("helm")?)
        .args(["template", "t"])
        .arg(&chart)
        .args(["-n", "redis-operator", "-f"])
        .arg(&values)
        .output()
        .context("running helm template")?;
    ensure!(
        out.status.success(),
        "helm template -f {}: {}",
        values.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8_lossy(&out.stdout);
    let mut objects = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&yaml) {
        let v: Value = serde::Deserialize::deserialize(doc)?;
        if v["kind"] == kind {
            objects.push(v);
        }
    }
    Ok(objects)
}

/// The chart's alert rules (the PrometheusRule's spec) as a rule file.
pub fn chart_rules(tools: &crate::tools::Tools) -> Result<(String, Value)> {
    let rules = chart_objects(tools, "monitoring-values.yaml", "PrometheusRule")?;
    ensure!(rules.len() == 1, "{} PrometheusRules rendered", rules.len());
    let spec = rules[0]["spec"].clone();
    Ok((serde_yaml::to_string(&spec)?, spec))
}

/// The chart's dashboard: each query with its panel's title, Grafana's
/// variables replaced by what they stand for (every namespace and cluster,
/// a 1m rate window), and the titles of its rows.
pub struct Dashboard {
    pub queries: Vec<(String, String)>,
    pub rows: Vec<String>,
}

/// The dashboard the chart renders with its toggle on.
pub fn dashboard(tools: &crate::tools::Tools) -> Result<Dashboard> {
    let maps = chart_objects(tools, "monitoring-values.yaml", "ConfigMap")?;
    let map = maps
        .iter()
        .find(|m| m["metadata"]["name"] == "t-redis-operator-dashboard")
        .context("no dashboard ConfigMap rendered")?;
    let json = map["data"]["redis-operator.json"]
        .as_str()
        .context("no redis-operator.json in the dashboard ConfigMap")?;
    let dashboard: Value = serde_json::from_str(json)?;
    let (mut queries, mut rows) = (Vec::new(), Vec::new());
    for panel in dashboard["panels"].as_array().context("no panels")? {
        let title = panel["title"].as_str().unwrap_or_default().to_string();
        if panel["type"] == "row" {
            rows.push(title);
            continue;
        }
        let targets = panel["targets"]
            .as_array()
            .context("a panel without targets")?;
        ensure!(!targets.is_empty(), "panel {title} has no query");
        for t in targets {
            let expr = t["expr"].as_str().context("a target without expr")?;
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$namespace", ".*")
                .replace("$cluster", ".*");
            queries.push((title.clone(), expr));
        }
    }
    Ok(Dashboard { queries, rows })
}
