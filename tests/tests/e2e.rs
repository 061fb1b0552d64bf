//! End to end on a real control plane: the chart through helm, admission
//! through the apiserver, certificates, and the operator (see also
//! `e2e_operator.rs`). Every assertion is on what the apiserver returns.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use harness::stack::{
    CLUSTER_SCOPED_KINDS, CRD, NAMESPACE, ORIGINAL_MANIFEST, RELEASE, Stack, StackOptions,
    TLS_CA_SECRET, TLS_SECRET, WEBHOOK_CONFIG, WEBHOOK_SA, chart_dir, manifest, release_objects,
};
use harness::{Cluster, ClusterOptions, wait_for};

/// Tests here each start a control plane; one at a time fits 2 cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn cluster() -> Result<Cluster> {
    Cluster::start(ClusterOptions::default()).await
}

/// `kubectl apply`; Err(stderr) when the apiserver refuses.
async fn apply(c: &Cluster, yaml: &str) -> Result<std::result::Result<(), String>> {
    match c.kubectl_apply(yaml).await {
        Ok(_) => Ok(Ok(())),
        Err(e) => Ok(Err(format!("{e:#}"))),
    }
}

async fn refused(c: &Cluster, yaml: &str) -> Result<String> {
    match apply(c, yaml).await? {
        Ok(()) => bail!("the apiserver accepted an invalid spec:\n{yaml}"),
        Err(msg) => Ok(msg),
    }
}

fn must_contain(msg: &str, parts: &[&str]) -> Result<()> {
    for p in parts {
        ensure!(msg.contains(p), "expected {p:?} in:\n{msg}");
    }
    Ok(())
}

/// The invalid specs of the suite, with what our webhook says about each.
fn invalid_cases() -> Vec<(&'static str, String, Vec<&'static str>)> {
    vec![
        (
            "zero",
            manifest("zero", "  replicas: 0\n"),
            vec!["spec.replicas: 0 is below the minimum 1"],
        ),
        (
            "eleven",
            manifest("eleven", "  replicas: 11\n"),
            vec!["spec.replicas: 11 is above the maximum 10"],
        ),
        (
            "shards",
            manifest("shards", "  shard_count: 6\n"),
            vec!["spec.shard_count: 6 is above the maximum 5"],
        ),
        (
            "hot",
            manifest("hot", "  scaling_threshold: 150\n"),
            vec!["spec.scaling_threshold: 150 is above the maximum 100"],
        ),
        (
            "bounds",
            manifest(
                "bounds",
                "  replicas: 3\n  min_replicas: 5\n  max_replicas: 3\n",
            ),
            vec!["spec.min_replicas: 5 is greater than spec.max_replicas 3"],
        ),
        (
            // 50 characters: a StatefulSet's pods could not carry it.
            "cache-for-the-checkout-service-of-team-payments-eu",
            manifest(
                "cache-for-the-checkout-service-of-team-payments-eu",
                "  replicas: 1\n",
            ),
            vec![
                "metadata.name: \"cache-for-the-checkout-service-of-team-payments-eu\" is 50 characters, allowed at most 44",
            ],
        ),
        (
            "cache.v2",
            manifest("cache.v2", "  replicas: 1\n"),
            vec!["metadata.name: \"cache.v2\" must be a DNS-1035 label"],
        ),
        (
            "many",
            manifest(
                "many",
                "  replicas: 11\n  shard_count: 6\n  scaling_threshold: 150\n",
            ),
            vec![
                "spec.replicas: 11 is above the maximum 10",
                "spec.shard_count: 6 is above the maximum 5",
                "spec.scaling_threshold: 150 is above the maximum 100",
            ],
        ),
    ]
}

#[tokio::test]
async fn chart_installs_with_defaults_upgrades_and_uninstalls() -> Result<()> {
    let _serial = SERIAL.lock().await;
    harness::product::init_crypto();
    let c = cluster().await?;
    c.helm_ok(["lint", "--strict", &chart_dir().display().to_string()])
        .await?;
    // Default values: the in-cluster Deployments (kwok runs their pods).
    c.helm_ok([
        "install",
        RELEASE,
        &chart_dir().display().to_string(),
        "-n",
        NAMESPACE,
        "--create-namespace",
    ])
    .await?;
    c.kubectl_ok([
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        &format!("crd/{CRD}"),
    ])
    .await?;
    for (kind, name) in [
        ("deployment", "redis-operator-operator"),
        ("deployment", "redis-operator-webhook"),
        ("service", "redis-operator-webhook"),
        ("configmap", "redis-operator-policy"),
        ("poddisruptionbudget", "redis-operator-webhook"),
        ("serviceaccount", "redis-operator-webhook"),
    ] {
        c.kubectl_ok(["get", kind, name, "-n", NAMESPACE])
            .await
            .with_context(|| format!("{kind}/{name} after install"))?;
    }
    let replicas = c
        .kubectl_ok([
            "get",
            "deployment",
            "redis-operator-webhook",
            "-n",
            NAMESPACE,
            "-o",
            "jsonpath={.spec.replicas}",
        ])
        .await?;
    assert_eq!(replicas, "2");
    let vwc = c
        .kubectl_ok([
            "get",
            "validatingwebhookconfiguration",
            WEBHOOK_CONFIG,
            "-o",
            "json",
        ])
        .await?;
    let vwc: serde_json::Value = serde_json::from_str(&vwc)?;
    let hook = &vwc["webhooks"][0];
    assert_eq!(hook["sideEffects"], "None");
    assert_eq!(hook["failurePolicy"], "Fail");
    assert!(hook["timeoutSeconds"].as_i64().unwrap_or(99) <= 5);
    assert!(
        !hook["rules"][0]["operations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o == "DELETE")
    );
    let excluded = hook["namespaceSelector"].to_string();
    assert!(
        excluded.contains(NAMESPACE) && excluded.contains("kube-system"),
        "{excluded}"
    );

    c.helm_ok(["uninstall", RELEASE, "-n", NAMESPACE, "--wait"])
        .await?;
    // Everything the chart made is gone, except the CRD it keeps on purpose
    // (deleting it would delete every RedisCluster and its data).
    let left = release_objects(
        &c,
        "deployments,services,configmaps,serviceaccounts,roles,rolebindings,poddisruptionbudgets",
        Some(NAMESPACE),
    )
    .await?;
    assert_eq!(left, "", "left after uninstall: {left}");
    let cluster_left = release_objects(&c, CLUSTER_SCOPED_KINDS, None).await?;
    assert_eq!(cluster_left, "", "left after uninstall: {cluster_left}");
    c.kubectl_ok(["get", "crd", CRD])
        .await
        .context("the CRD is kept (helm.sh/resource-policy: keep)")?;
    c.stop();
    Ok(())
}

#[tokio::test]
async fn admission_through_the_apiserver() -> Result<()> {
    let _serial = SERIAL.lock().await;
    harness::product::init_crypto();
    let c = cluster().await?;
    let mut stack = Stack::install(&c, StackOptions::default()).await?;

    // Self-managed certificates: the operator keeps the CA in a Secret of
    // its own, and the serving Secret, the only one the webhook can read,
    // holds no CA key.
    assert_eq!(
        secret_keys(&c, TLS_SECRET).await?,
        ["ca.crt", "tls.crt", "tls.key"]
    );
    assert_eq!(
        secret_keys(&c, TLS_CA_SECRET).await?,
        ["ca-signer.crt", "ca-signer.key", "ca.crt"]
    );
    for (secret, allowed) in [(TLS_SECRET, "yes"), (TLS_CA_SECRET, "no")] {
        let out = c
            .kubectl([
                "auth",
                "can-i",
                "get",
                &format!("secret/{secret}"),
                "-n",
                NAMESPACE,
                &format!("--as=system:serviceaccount:{NAMESPACE}:{WEBHOOK_SA}"),
            ])
            .await?;
        let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(said, allowed, "may the webhook read {secret}?");
    }
    let bundles = stack.ca_bundles(&c).await?;
    assert_eq!(bundles.len(), 2, "{bundles:?}");

    // The original tutorial's manifest applies unchanged.
    apply(&c, ORIGINAL_MANIFEST)
        .await?
        .map_err(anyhow::Error::msg)?;
    let spec = c
        .kubectl_ok([
            "get",
            "rediscluster",
            "redis-cluster",
            "-o",
            "jsonpath={.spec}",
        ])
        .await?;
    let spec: serde_json::Value = serde_json::from_str(&spec)?;
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["scaling_threshold"], 70.0);

    // Only replicas given: the rest comes back defaulted.
    apply(&c, &manifest("only-replicas", "  replicas: 2\n"))
        .await?
        .map_err(anyhow::Error::msg)?;
    let spec = c
        .kubectl_ok([
            "get",
            "rediscluster",
            "only-replicas",
            "-o",
            "jsonpath={.spec}",
        ])
        .await?;
    let spec: serde_json::Value = serde_json::from_str(&spec)?;
    assert_eq!(spec["replicas"], 2);
    assert_eq!(spec["shard_count"], 1);
    assert_eq!(spec["scaling_threshold"], 70.0);
    assert_eq!(spec["scale_down_stabilization_seconds"], 300);
    assert_eq!(spec["scale_up_cooldown_seconds"], 60);
    assert_eq!(spec["autoscaling_paused"], false);
    assert_eq!(spec["resources"]["requests"]["cpu"], "100m");
    assert!(
        spec.get("min_replicas").is_none() && spec.get("max_replicas").is_none(),
        "{spec}"
    );

    // Invalid specs: our webhook names every bad field.
    for (name, yaml, parts) in invalid_cases() {
        let msg = refused(&c, &yaml).await?;
        must_contain(&msg, &["denied the request"]).with_context(|| format!("case {name}"))?;
        must_contain(&msg, &parts).with_context(|| format!("case {name}"))?;
    }
    // kubectl scale works, and past the CRD bounds the schema refuses it.
    c.kubectl_ok(["scale", "rediscluster/redis-cluster", "--replicas=3"])
        .await?;
    let replicas = c
        .kubectl_ok([
            "get",
            "rediscluster",
            "redis-cluster",
            "-o",
            "jsonpath={.spec.replicas}",
        ])
        .await?;
    assert_eq!(replicas, "3");
    let out = c
        .kubectl(["scale", "rediscluster/redis-cluster", "--replicas=11"])
        .await?;
    ensure!(!out.status.success(), "scale to 11 was accepted");

    // helm upgrade with no change: same caBundle, admission still works.
    let mut up = vec![
        "upgrade".to_string(),
        RELEASE.into(),
        chart_dir().display().to_string(),
        "-n".into(),
        NAMESPACE.into(),
    ];
    up.extend(stack.local_values());
    c.helm_ok(&up).await?;
    assert_eq!(
        stack.ca_bundles(&c).await?,
        bundles,
        "helm upgrade changed the caBundle"
    );
    apply(&c, &manifest("after-upgrade", "  replicas: 3\n"))
        .await?
        .map_err(anyhow::Error::msg)?;
    refused(&c, &manifest("after-upgrade-bad", "  replicas: 12\n")).await?;

    // A tightened policy: replicas 7 is refused with a message naming 6.
    let mut tight = up.clone();
    tight.extend(["--set".into(), "webhook.policy.replicas.max=6".into()]);
    c.helm_ok(&tight).await?;
    // In a cluster the policy checksum rolls the pods; here, restart the process.
    stack.start_webhook(&c).await?;
    let msg = refused(&c, &manifest("seven", "  replicas: 7\n")).await?;
    must_contain(
        &msg,
        &["spec.replicas: 7 is above the maximum 6 (allowed range 1 to 6)"],
    )?;
    apply(&c, &manifest("six", "  replicas: 6\n"))
        .await?
        .map_err(anyhow::Error::msg)?;
    // The webhook also guards the scale subresource: past the policy is denied.
    let out = c
        .kubectl(["scale", "rediscluster/six", "--replicas=7"])
        .await?;
    ensure!(
        !out.status.success(),
        "kubectl scale past the policy was accepted"
    );
    must_contain(
        &String::from_utf8_lossy(&out.stderr),
        &[
            "denied the request",
            "spec.replicas: 7 is above the maximum 6",
        ],
    )?;

    // Tightening the minimum never rejects a manifest that leaves replicas
    // out: the webhook, not the schema, fills it in, inside the policy.
    let mut min2 = up.clone();
    min2.extend(["--set".into(), "webhook.policy.replicas.min=2".into()]);
    c.helm_ok(&min2).await?;
    stack.start_webhook(&c).await?;
    apply(&c, &manifest("omitted", "  shard_count: 1\n"))
        .await?
        .map_err(anyhow::Error::msg)?;
    let spec = c
        .kubectl_ok(["get", "rediscluster", "omitted", "-o", "jsonpath={.spec}"])
        .await?;
    let spec: serde_json::Value = serde_json::from_str(&spec)?;
    assert_eq!(spec["replicas"], 2, "{spec}");
    assert_eq!(spec["scaling_threshold"], 70.0, "{spec}");
    // Given, a value below the new minimum is still refused.
    let msg = refused(&c, &manifest("one", "  replicas: 1\n")).await?;
    must_contain(&msg, &["spec.replicas: 1 is below the minimum 2"])?;

    // An admin may restrict where Redis images come from; a left-out image
    // (the default, docker.io/library/redis) passes when allowed.
    let mut repos = min2.clone();
    repos.extend([
        "--set".into(),
        "webhook.policy.images.allowedRepositories={redis,registry.example.com/redis/*}".into(),
    ]);
    c.helm_ok(&repos).await?;
    stack.start_webhook(&c).await?;
    let msg = refused(
        &c,
        &manifest(
            "elsewhere",
            "  image: evil.example/redis:7.2.11
",
        ),
    )
    .await?;
    must_contain(
        &msg,
        &[
            "spec.image: evil.example/redis:7.2.11 is not from an allowed repository (docker.io/library/redis, registry.example.com/redis/*)",
        ],
    )?;
    apply(
        &c,
        &manifest(
            "mirrored",
            "  image: registry.example.com/redis/redis:7.2.11
",
        ),
    )
    .await?
    .map_err(anyhow::Error::msg)?;
    apply(
        &c,
        &manifest(
            "default-image",
            "  shard_count: 1
",
        ),
    )
    .await?
    .map_err(anyhow::Error::msg)?;

    storage_changes(&c).await?;
    tls_changes(&c).await?;

    // Defence in depth: without the webhook, the schema and CEL rules still refuse.
    let mut off = up.clone();
    off.extend(["--set".into(), "webhook.enabled=false".into()]);
    c.helm_ok(&off).await?;
    stack.stop_webhook();
    wait_for(
        "the webhook configurations to go",
        Duration::from_secs(30),
        || async {
            let out = c
                .kubectl(["get", "validatingwebhookconfiguration", WEBHOOK_CONFIG])
                .await?;
            Ok((!out.status.success()).then_some(()))
        },
    )
    .await?;
    let schema_says = [
        ("zero", "spec.replicas: Invalid value: 0"),
        ("eleven", "spec.replicas: Invalid value: 11"),
        ("shards", "spec.shard_count: Invalid value: 6"),
        ("hot", "spec.scaling_threshold: Invalid value: 150"),
        (
            "bounds",
            "spec.min_replicas must be less than or equal to spec.max_replicas",
        ),
        ("many", "spec.shard_count: Invalid value: 6"),
        (
            "cache-for-the-checkout-service-of-team-payments-eu",
            "metadata.name must be at most 44 characters",
        ),
        ("cache.v2", "metadata.name must be a DNS-1035 label"),
    ];
    for (name, yaml, _) in invalid_cases() {
        let msg = refused(&c, &yaml)
            .await
            .with_context(|| format!("case {name} without the webhook"))?;
        let expect = schema_says
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| *m)
            .unwrap_or("Invalid value");
        must_contain(&msg, &[expect])
            .with_context(|| format!("case {name} without the webhook"))?;
        ensure!(
            !msg.contains("denied the request"),
            "the webhook answered while removed: {msg}"
        );
    }
    c.stop();
    Ok(())
}

/// `kubectl patch` of a RedisCluster's `spec.storage`: Ok, or the refusal.
async fn patch_storage(
    c: &Cluster,
    name: &str,
    storage: &str,
) -> Result<std::result::Result<(), String>> {
    let out = c
        .kubectl([
            "patch",
            "rediscluster",
            name,
            "--type=merge",
            "-p",
            &format!(r#"{{"spec":{{"storage":{storage}}}}}"#),
        ])
        .await?;
    Ok(if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    })
}

/// Storage can only grow, in its class, and only where the class can
/// expand volumes: the CRD's rules refuse the rest, the webhook checks the
/// class (it watches StorageClasses, so a new one is waited for).
async fn storage_changes(c: &Cluster) -> Result<()> {
    let classes = |name: &str, allow: bool| {
        format!(
            "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: {name}\nprovisioner: kubernetes.io/no-provisioner\nallowVolumeExpansion: {allow}\n"
        )
    };
    for (name, allow) in [("fixed", false), ("growable", true)] {
        c.kubectl_apply(&classes(name, allow)).await?;
    }
    for (name, storage) in [
        ("kept", "  storage:\n    size: 1Gi\n"),
        (
            "fixed",
            "  storage:\n    size: 1Gi\n    storage_class_name: fixed\n",
        ),
        (
            "growable",
            "  storage:\n    size: 1Gi\n    storage_class_name: growable\n",
        ),
    ] {
        apply(c, &manifest(name, storage))
            .await?
            .map_err(anyhow::Error::msg)?;
    }
    let refusals = [
        (
            "omitted",
            r#"{"size":"1Gi"}"#,
            "spec.storage: Forbidden: spec.storage cannot be added or removed once the cluster exists",
        ),
        (
            "growable",
            r#"{"size":"512Mi"}"#,
            "spec.storage.size: Forbidden: spec.storage.size cannot shrink: a volume can only grow",
        ),
        (
            "growable",
            r#"{"storage_class_name":"fixed"}"#,
            "spec.storage.storage_class_name: Forbidden: spec.storage.storage_class_name cannot change once the cluster exists",
        ),
        (
            "kept",
            r#"{"size":"2Gi"}"#,
            "spec.storage.size cannot grow from 1Gi to 2Gi: no StorageClass is named and none is the default, so the claims cannot expand",
        ),
        (
            "fixed",
            r#"{"size":"2Gi"}"#,
            "spec.storage.size cannot grow from 1Gi to 2Gi: StorageClass fixed does not allow volume expansion (allowVolumeExpansion is not true)",
        ),
    ];
    for (name, storage, says) in refusals {
        wait_for(
            &format!("{name}: {storage} refused with {says:?}"),
            Duration::from_secs(30),
            || async {
                match patch_storage(c, name, storage).await? {
                    Ok(()) => bail!("the storage of {name} changed to {storage}"),
                    Err(msg) => Ok(msg.contains(says).then_some(())),
                }
            },
        )
        .await?;
    }
    // A class that can expand: the size grows, once the webhook knows it.
    wait_for(
        "growable to grow to 2Gi",
        Duration::from_secs(30),
        || async {
            Ok(patch_storage(c, "growable", r#"{"size":"2Gi"}"#)
                .await?
                .ok())
        },
    )
    .await?;
    let size = c
        .kubectl_ok([
            "get",
            "rediscluster",
            "growable",
            "-o",
            "jsonpath={.spec.storage.size}",
        ])
        .await?;
    ensure!(size == "2Gi", "growable has {size}");
    Ok(())
}

/// `spec.tls` is chosen once: the CRD's rules refuse a second source of
/// certificates and any change of the issuer.
async fn tls_changes(c: &Cluster) -> Result<()> {
    let says = refused(
        c,
        &manifest(
            "both",
            "  tls:\n    secret_name: mine\n    issuer_ref: {name: corp-ca}\n",
        ),
    )
    .await?;
    ensure!(
        says.contains(
            "spec.tls: Invalid value: spec.tls.secret_name and spec.tls.issuer_ref are exclusive"
        ),
        "{says}"
    );
    apply(
        c,
        &manifest("issued", "  tls:\n    issuer_ref: {name: corp-ca}\n"),
    )
    .await?
    .map_err(anyhow::Error::msg)?;
    let kind = c
        .kubectl_ok([
            "get",
            "rediscluster",
            "issued",
            "-o",
            "jsonpath={.spec.tls.issuer_ref.kind}/{.spec.tls.issuer_ref.group}",
        ])
        .await?;
    ensure!(kind == "Issuer/cert-manager.io", "defaults: {kind}");
    for (patch, what) in [
        (r#"{"issuer_ref":{"name":"other-ca"}}"#, "another issuer"),
        (
            r#"{"issuer_ref":null,"secret_name":"mine"}"#,
            "a Secret instead",
        ),
    ] {
        let out = c
            .kubectl([
                "patch",
                "rediscluster",
                "issued",
                "--type=merge",
                "-p",
                &format!(r#"{{"spec":{{"tls":{patch}}}}}"#),
            ])
            .await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success()
                && stderr.contains("spec.tls.issuer_ref: Forbidden: spec.tls.issuer_ref cannot be added, removed or changed once the cluster exists"),
            "{what} was not refused: {stderr}"
        );
    }
    Ok(())
}

/// The keys of Secret `name` in the release namespace, sorted.
async fn secret_keys(c: &Cluster, name: &str) -> Result<Vec<String>> {
    let data = c
        .kubectl_ok([
            "get",
            "secret",
            name,
            "-n",
            NAMESPACE,
            "-o",
            "jsonpath={.data}",
        ])
        .await?;
    let data: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&data).with_context(|| format!("Secret {name}'s data: {data}"))?;
    Ok(data.keys().cloned().collect())
}

/// The base64 value of `key` in Secret `name` of the release namespace.
async fn secret_value(c: &Cluster, name: &str, key: &str) -> Result<String> {
    let path = format!("jsonpath={{.data.{}}}", key.replace('.', "\\."));
    c.kubectl_ok(["get", "secret", name, "-n", NAMESPACE, "-o", &path])
        .await
}

async fn signer(c: &Cluster) -> Result<String> {
    secret_value(c, TLS_CA_SECRET, "ca-signer.crt").await
}

#[tokio::test]
async fn forced_rotation_keeps_admission_working() -> Result<()> {
    let _serial = SERIAL.lock().await;
    harness::product::init_crypto();
    let c = cluster().await?;
    let mut stack = Stack::install(&c, StackOptions::default()).await?;
    let before = signer(&c).await?;
    let bundle_before = stack.ca_bundles(&c).await?;
    c.kubectl_ok([
        "annotate",
        "secret",
        TLS_CA_SECRET,
        "-n",
        NAMESPACE,
        "redis.example.com/rotate-ca=now",
    ])
    .await?;

    // Keep admitting (server-side dry run goes through both webhooks) until
    // the new CA signs, and count failures. Bounded in count and time.
    let started = std::time::Instant::now();
    let mut attempts = 0u32;
    let mut failures = Vec::new();
    let mut rotated = false;
    while attempts < 400 && started.elapsed() < Duration::from_secs(120) {
        attempts += 1;
        let yaml = manifest(&format!("rot-{attempts}"), "  replicas: 2\n");
        if let Err(e) = c.kubectl_apply(&yaml).await {
            failures.push(format!("{e:#}"));
        }
        if signer(&c).await? != before {
            rotated = true;
            // A few more requests on the new certificate.
            if attempts > 5 && started.elapsed() > Duration::from_secs(8) {
                break;
            }
        }
        stack.check_webhook()?;
    }
    ensure!(
        rotated,
        "the CA was not rotated within {:?}",
        started.elapsed()
    );
    ensure!(
        failures.is_empty(),
        "{} of {attempts} admissions failed during rotation: {:?}",
        failures.len(),
        failures.first()
    );
    let bundle_after = stack.ca_bundles(&c).await?;
    ensure!(bundle_after != bundle_before, "the caBundle did not change");
    // The webhook still denies what it should, on the new certificate.
    refused(&c, &manifest("after-rotation", "  replicas: 0\n")).await?;
    let annotations = c
        .kubectl_ok([
            "get",
            "secret",
            TLS_CA_SECRET,
            "-n",
            NAMESPACE,
            "-o",
            "jsonpath={.metadata.annotations}",
        ])
        .await?;
    ensure!(
        !annotations.contains("rotate-ca"),
        "the rotation request was not cleared: {annotations}"
    );
    c.stop();
    Ok(())
}

/// A TLS client that trusts the serving Secret's `ca.crt`.
async fn client_trusting_the_serving_secret(c: &Cluster) -> Result<reqwest::Client> {
    let ca = secret_value(c, TLS_SECRET, "ca.crt").await?;
    let ca: k8s_openapi::ByteString = serde_json::from_value(serde_json::Value::String(ca))?;
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    for cert in CertificateDer::pem_slice_iter(&ca.0) {
        roots.add(cert?)?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()?)
}

/// The chart installed, with no webhook or certificate keeper running.
async fn installed_without_a_webhook() -> Result<(Cluster, Stack)> {
    let c = cluster().await?;
    let stack = Stack::install(
        &c,
        StackOptions {
            start_webhook: false,
            ..StackOptions::default()
        },
    )
    .await?;
    Ok((c, stack))
}

/// The tutorial's manifest is admitted through the webhook, which is
/// still running afterwards; then the control plane stops.
async fn admits_the_tutorial(c: Cluster, stack: &mut Stack) -> Result<()> {
    apply(&c, ORIGINAL_MANIFEST)
        .await?
        .map_err(anyhow::Error::msg)?;
    stack.check_webhook()?;
    c.stop();
    Ok(())
}

/// Webhook replicas that start before the operator wait, not ready, for
/// the certificate; once the operator's keeper has made it, every replica
/// serves it.
#[tokio::test]
async fn webhook_replicas_serve_the_certificate_the_operator_keeps() -> Result<()> {
    let _serial = SERIAL.lock().await;
    harness::product::init_crypto();
    let (c, mut stack) = installed_without_a_webhook().await?;
    let (first, second) =
        tokio::join!(stack.spawn_extra_webhook(&c), stack.spawn_extra_webhook(&c));
    let (_first, first_port, first_http) = first?;
    let (_second, second_port, second_http) = second?;
    for http in [first_http, second_http] {
        let ready = harness::stack::http_ok(&format!("http://127.0.0.1:{http}/readyz")).await;
        ensure!(!ready, "a webhook without a certificate says it is ready");
    }
    stack.start_cert_keeper().await?;
    for http in [first_http, second_http] {
        let url = format!("http://127.0.0.1:{http}/readyz");
        wait_for(
            "a waiting webhook replica to load the certificate",
            Duration::from_secs(30),
            || {
                let url = url.clone();
                async move { Ok(harness::stack::http_ok(&url).await.then_some(())) }
            },
        )
        .await?;
    }
    // Both verify against the one Secret's CA.
    let client = client_trusting_the_serving_secret(&c).await?;
    for port in [first_port, second_port] {
        let r = client
            .post(format!("https://127.0.0.1:{port}/validate"))
            .body("{}")
            .send()
            .await?;
        assert_eq!(r.status().as_u16(), 400);
    }
    // A third replica joins (the one the configurations point at), and
    // admission through the apiserver works.
    stack.start_webhook(&c).await?;
    admits_the_tutorial(c, &mut stack).await
}

/// An install from before the CA had a Secret of its own kept the CA in
/// the serving Secret. The operator moves it out and keeps using it, so
/// nothing that trusted it breaks, and the serving Secret no longer holds
/// its key.
#[tokio::test]
async fn the_operator_moves_an_older_installs_ca_out_of_the_serving_secret() -> Result<()> {
    let _serial = SERIAL.lock().await;
    harness::product::init_crypto();
    let (c, mut stack) = installed_without_a_webhook().await?;
    let now = time::OffsetDateTime::now_utc();
    let ca = certs::issue::new_ca("older webhook CA", time::Duration::days(1000), now)?;
    let serving = certs::issue::issue_serving(
        &ca,
        &["127.0.0.1".to_string()],
        time::Duration::days(300),
        now,
    )?;
    let b64 = |pem: &str| serde_json::to_value(k8s_openapi::ByteString(pem.as_bytes().to_vec()));
    let legacy = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": TLS_SECRET, "namespace": NAMESPACE},
        "data": {
            "ca-signer.crt": b64(&ca.cert_pem)?,
            "ca-signer.key": b64(&ca.key_pem)?,
            "ca.crt": b64(&ca.cert_pem)?,
            "tls.crt": b64(&serving.cert_pem)?,
            "tls.key": b64(&serving.key_pem)?,
        },
    });
    c.kubectl_apply(&legacy.to_string()).await?;
    stack.start_webhook(&c).await?;
    wait_for(
        "the serving Secret to lose the CA's key",
        Duration::from_secs(30),
        || async {
            Ok(
                (secret_keys(&c, TLS_SECRET).await? == ["ca.crt", "tls.crt", "tls.key"])
                    .then_some(()),
            )
        },
    )
    .await?;
    assert_eq!(
        signer(&c).await?,
        b64(&ca.cert_pem)?.as_str().unwrap_or_default()
    );
    let served = secret_value(&c, TLS_SECRET, "tls.crt").await?;
    assert_eq!(
        served,
        b64(&serving.cert_pem)?.as_str().unwrap_or_default(),
        "the older serving certificate, still good, is kept"
    );
    admits_the_tutorial(c, &mut stack).await
}
