//! The chart's alerts and dashboard, as `helm template` renders them with
//! their toggles on: `promtool check rules` accepts the PrometheusRule,
//! `promtool test rules` (tests/monitoring/alerts_test.yaml) proves each
//! alert fires on the series that mean trouble and only after its `for:`,
//! every dashboard query is valid PromQL, and each alert has a runbook line
//! in the README. Needs `make cluster-tools` (helm, promtool).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
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

/// The chart's objects of `kind` with the monitoring toggles on.
fn rendered(tools: &Tools, kind: &str) -> Result<Vec<serde_json::Value>> {
    let chart = repo().join("charts/redis-operator");
    let values = chart.join("ci/monitoring-values.yaml");
    let yaml = run(
        &tools.path("helm")?,
        &[
            "template",
            "t",
            &chart.display().to_string(),
            "-n",
            "redis-operator",
            "-f",
            &values.display().to_string(),
        ],
    )?;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&yaml) {
        let v: serde_json::Value = serde::Deserialize::deserialize(doc)?;
        if v["kind"] == kind {
            out.push(v);
        }
    }
    Ok(out)
}

/// The PrometheusRule's spec as a rule file in `dir`.
fn rule_file(tools: &Tools, dir: &Path) -> Result<(PathBuf, serde_json::Value)> {
    let rules = rendered(tools, "PrometheusRule")?;
    ensure!(rules.len() == 1, "{} PrometheusRules rendered", rules.len());
    let spec = rules[0]["spec"].clone();
    let path = dir.join("alerts.rules.yaml");
    std::fs::write(&path, serde_yaml::to_string(&spec)?)?;
    Ok((path, spec))
}

#[test]
fn the_alerts_pass_promtool_and_their_unit_tests() -> Result<()> {
    let tools = Tools::from_env()?;
    let promtool = tools.path("promtool")?;
    let dir = tempfile::tempdir()?;
    let (rules, spec) = rule_file(&tools, dir.path())?;
    let checked = run(&promtool, &["check", "rules", &rules.display().to_string()])?;
    ensure!(checked.contains("SUCCESS"), "{checked}");
    // The unit test names the rule file it tests: point it at the rendered one.
    let test = std::fs::read_to_string(repo().join("tests/monitoring/alerts_test.yaml"))?
        .replace("  - RULES", &format!("  - {}", rules.display()));
    let test_path = dir.path().join("alerts_test.yaml");
    std::fs::write(&test_path, test)?;
    let tested = run(
        &promtool,
        &["test", "rules", &test_path.display().to_string()],
    )?;
    ensure!(tested.contains("SUCCESS"), "{tested}");

    // Every alert is tested, and has a runbook line in the README.
    let readme = std::fs::read_to_string(repo().join("README.md"))?;
    let unit = std::fs::read_to_string(repo().join("tests/monitoring/alerts_test.yaml"))?;
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
    let maps = rendered(&tools, "ConfigMap")?;
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
    let json = map["data"]["redis-operator.json"]
        .as_str()
        .context("no redis-operator.json in the ConfigMap")?;
    let dashboard: serde_json::Value = serde_json::from_str(json)?;
    // Each query becomes a recording rule, which promtool parses; Grafana's
    // variables become what they stand for.
    let mut rules = Vec::new();
    let mut rows = Vec::new();
    for panel in dashboard["panels"].as_array().context("no panels")? {
        if panel["type"] == "row" {
            rows.push(panel["title"].as_str().unwrap_or_default().to_string());
            continue;
        }
        let targets = panel["targets"]
            .as_array()
            .context("a panel without targets")?;
        ensure!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for t in targets {
            let expr = t["expr"].as_str().context("a target without expr")?;
            let expr = expr
                .replace("$__rate_interval", "5m")
                .replace("$namespace", ".*")
                .replace("$cluster", ".*");
            rules.push(serde_json::json!({
                "record": format!("dashboard:panel_{}", rules.len()),
                "expr": expr,
            }));
        }
    }
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
