//! The chart's alerts and dashboard, as `helm template` renders them with
//! their toggles on: `promtool check rules` accepts the PrometheusRule,
//! `promtool test rules` (tests/monitoring/alerts_test.yaml) proves each
//! alert fires on the series that mean trouble and only after its `for:`,
//! every dashboard query is valid PromQL, and each alert has a runbook line
//! in the README. Needs `make cluster-tools` (helm, promtool). The
//! real-node tier (`e2e_real_monitoring`) runs them in a real Prometheus.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use harness::prometheus::{Dashboard, chart_objects, chart_rules, dashboard};
use harness::tools::Tools;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(program: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success(),
        "{} {}: {}\n{text}",
        program.display(),
        args.join(" "),
        out.status
    );
    Ok(text)
}

#[test]
fn the_alerts_pass_promtool_and_their_unit_tests() -> Result<()> {
    let tools = Tools::from_env()?;
    let promtool = tools.path("promtool")?;
    let dir = tempfile::tempdir()?;
    let (text, spec) = chart_rules(&tools)?;
    let rules = dir.path().join("alerts.rules.yaml");
    std::fs::write(&rules, text)?;
    let checked = run(&promtool, &["check", "rules", &rules.display().to_string()])?;
    ensure!(checked.contains("SUCCESS"), "{checked}");
    // The unit test names the rule file it tests: point it at the rendered one.
    let unit = std::fs::read_to_string(repo().join("tests/monitoring/alerts_test.yaml"))?;
    let test_path = dir.path().join("alerts_test.yaml");
    std::fs::write(
        &test_path,
        unit.replace("  - RULES", &format!("  - {}", rules.display())),
    )?;
    let tested = run(
        &promtool,
        &["test", "rules", &test_path.display().to_string()],
    )?;
    ensure!(tested.contains("SUCCESS"), "{tested}");

    // Every alert is tested, and has a runbook line in the README.
    let readme = std::fs::read_to_string(repo().join("README.md"))?;
    let groups = spec["groups"].as_array().context("no groups")?;
    let mut alerts = 0;
    for rule in groups
        .iter()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
    {
        let name = rule["alert"]
            .as_str()
            .context("a rule without an alert name")?;
        alerts += 1;
        ensure!(
            unit.contains(&format!("alertname: {name}\n")),
            "{name} has no promtool unit test"
        );
        ensure!(
            readme.contains(&format!("**{name}**")),
            "{name} has no runbook line in the README"
        );
    }
    ensure!(alerts >= 10, "only {alerts} alerts rendered");
    Ok(())
}

#[test]
fn every_dashboard_query_is_valid_promql() -> Result<()> {
    let tools = Tools::from_env()?;
    let maps = chart_objects(&tools, "monitoring-values.yaml", "ConfigMap")?;
    let map = maps
        .iter()
        .find(|m| m["metadata"]["name"] == "t-redis-operator-dashboard")
        .context("no dashboard ConfigMap rendered")?;
    ensure!(
        map["metadata"]["labels"]["grafana_dashboard"] == "1"
            && map["metadata"]["namespace"] == "monitoring",
        "the dashboard's metadata: {}",
        map["metadata"]
    );
    let Dashboard { queries, rows } = dashboard(&tools)?;
    for row in [
        "Cluster state",
        "Shards",
        "Memory",
        "Commands",
        "Replication",
        "Operator and webhook",
    ] {
        ensure!(rows.iter().any(|r| r == row), "no row {row:?}: {rows:?}");
    }
    // Each query becomes a recording rule, which promtool parses.
    let rules: Vec<serde_json::Value> = queries
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": expr}))
        .collect();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("dashboard.rules.yaml");
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(&path, serde_yaml::to_string(&file)?)?;
    let checked = run(
        &tools.path("promtool")?,
        &["check", "rules", &path.display().to_string()],
    )?;
    ensure!(
        checked.contains(&format!("{} rules found", rules.len())),
        "{checked}"
    );
    Ok(())
}

#[test]
fn the_service_monitors_keep_the_clusters_namespace_label() -> Result<()> {
    let tools = Tools::from_env()?;
    let monitors = chart_objects(&tools, "servicemonitor-values.yaml", "ServiceMonitor")?;
    ensure!(monitors.len() == 2, "{} ServiceMonitors", monitors.len());
    for m in &monitors {
        ensure!(
            m["spec"]["endpoints"][0]["honorLabels"] == true,
            "{}: the operator's namespace label would become exported_namespace",
            m["metadata"]["name"]
        );
    }
    Ok(())
}

#[test]
fn the_pod_monitor_selects_the_redis_pods_metrics_port() -> Result<()> {
    let tools = Tools::from_env()?;
    let monitors = chart_objects(&tools, "monitoring-values.yaml", "PodMonitor")?;
    ensure!(monitors.len() == 1, "{} PodMonitors", monitors.len());
    let spec = &monitors[0]["spec"];
    ensure!(spec["namespaceSelector"]["any"] == true, "{spec}");
    ensure!(
        spec["selector"]["matchLabels"]
            == serde_json::json!({"app.kubernetes.io/name": "redis", "app.kubernetes.io/managed-by": "redis-operator"}),
        "{spec}"
    );
    ensure!(
        spec["podMetricsEndpoints"][0]["port"] == "metrics",
        "{spec}"
    );
    Ok(())
}
