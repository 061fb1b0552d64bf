//! The chart's RBAC, as the API server sees it: what each ServiceAccount may
//! do (`kubectl auth can-i --list`) in the release namespace and in a
//! workload namespace must equal the committed expectation in
//! `tests/rbac/<account>.txt`, so that any added or lost right is a reviewed
//! change. The other suites run both binaries under these accounts, so a
//! right the code needs but the chart lacks fails them.
//!
//! After an intended change: `RBAC_UPDATE=1 cargo test --test rbac`, then
//! review the diff.

use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use harness::stack::{NAMESPACE, OPERATOR_SA, Stack, StackOptions, WEBHOOK_SA};
use harness::{Cluster, ClusterOptions};

/// `kubectl auth can-i --list` for `sa` in `ns`, one rule a line with the
/// table's column padding collapsed, in sorted order under the header.
async fn rights(c: &Cluster, sa: &str, ns: &str) -> Result<String> {
    let out = c
        .kubectl_ok([
            "auth",
            "can-i",
            "--list",
            &format!("--as=system:serviceaccount:{NAMESPACE}:{sa}"),
            "-n",
            ns,
        ])
        .await?;
    let mut lines: Vec<String> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect();
    let header = if lines.is_empty() {
        None
    } else {
        Some(lines.remove(0))
    };
    lines.sort();
    lines.dedup();
    Ok(header
        .into_iter()
        .chain(lines)
        .collect::<Vec<_>>()
        .join("\n"))
}

fn expectation(sa: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("rbac")
        .join(format!("{sa}.txt"))
}

#[tokio::test]
async fn each_service_account_has_exactly_the_expected_rights() -> Result<()> {
    let c = Cluster::start(ClusterOptions::default()).await?;
    let _stack = Stack::install(
        &c,
        StackOptions {
            start_webhook: false,
            ..StackOptions::default()
        },
    )
    .await?;
    let mut mismatches = Vec::new();
    for sa in [OPERATOR_SA, WEBHOOK_SA] {
        let mut got = String::new();
        for ns in [NAMESPACE, "default"] {
            got.push_str(&format!(
                "# namespace {ns}\n{}\n",
                rights(&c, sa, ns).await?
            ));
        }
        let path = expectation(sa);
        if std::env::var_os("RBAC_UPDATE").is_some() {
            std::fs::write(&path, &got).with_context(|| format!("writing {}", path.display()))?;
            continue;
        }
        let want = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} (RBAC_UPDATE=1 writes it)", path.display()))?;
        if got != want {
            mismatches.push(format!(
                "{sa}: rights differ from {}\n--- expected\n{want}--- actual\n{got}",
                path.display()
            ));
        }
    }
    ensure!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    c.stop();
    Ok(())
}
