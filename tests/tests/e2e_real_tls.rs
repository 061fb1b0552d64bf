//! `spec.tls` on a real node: the chart installed, a 3 x 2 RedisCluster with
//! TLS on and the operator's own certificate, then:
//! - the certificate's Secrets: the CA key in one no pod mounts;
//! - a plain client refused, a TLS client trusting `ca.crt` served;
//! - the readiness probe and the exporter sidecar working over TLS;
//! - the operator's gauge of the certificate's expiry;
//! - an application pod connecting through the Service by name with
//!   `redis-cli --tls --cacert`;
//! - 3 -> 4 shards under the writer that records every acknowledged write
//!   (over TLS), then a renewed certificate loaded by every node in place,
//!   with none lost.
//!
//!
//! Then a second cluster whose certificate a cert-manager issuer signs
//! (`spec.tls.issuer_ref`): the operator says the Certificate API is
//! missing until cert-manager's CRDs (from its Go module) are installed,
//! then writes a `Certificate` the real CRD accepts, and says the Secret
//! is not issued yet. cert-manager's controller cannot be built here (the
//! module proxy serves no version of its cmd/controller module), so the
//! test plays its CA issuer: it signs what the Certificate asks for and
//! writes the Secret as cert-manager does. The cluster then forms over TLS
//! and serves an application pod trusting that CA.
//!
//! Needs root and `make test-images` (as e2e_real). Its own test binary:
//! the harness's Redis helpers speak TLS for the whole process.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use harness::in_cluster::{
    APPS, client_pod_with, cluster_objects, events, helm_install, none_lost, on_real_node,
    operator_counter, pod_ips, pod_result, primaries, redis_cluster, reshard, seeds, start_writer,
    stop_writer, use_client_password, wait_ready,
};
use harness::{Cluster, wait_for};

const NAME: &str = "secure";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_serves_only_tls_and_reshards_losing_nothing() -> Result<()> {
    on_real_node(false, scenario).await
}

/// A key of a Secret in [`APPS`], decoded.
async fn secret_key(c: &Cluster, secret: &str, key: &str) -> Result<String> {
    c.kubectl_ok([
        "get",
        "secret",
        "-n",
        APPS,
        secret,
        "-o",
        &format!("go-template={{{{index .data \"{key}\" | base64decode}}}}"),
    ])
    .await
}

/// A PING over plain TCP to `ip:6379`, from inside the node's netns.
async fn plain_ping(c: &Cluster, ip: Ipv4Addr) -> Result<redis::RedisResult<String>> {
    c.netns_handle()?
        .run_async(move || async move {
            let client = redis::Client::open(format!("redis://{ip}:6379"))?;
            let ping = async {
                let mut con = client.get_multiplexed_async_connection().await?;
                redis::cmd("PING").query_async::<String>(&mut con).await
            };
            Ok(tokio::time::timeout(Duration::from_secs(10), ping)
                .await
                .unwrap_or_else(|_| {
                    Err(redis::RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no answer in 10 s",
                    )))
                }))
        })
        .await
}

/// The certificates the nodes at `ips` serve, by a TLS handshake from
/// inside the node's netns that trusts `ca`.
async fn served(c: &Cluster, ips: Vec<Ipv4Addr>, ca: String) -> Result<Vec<Vec<u8>>> {
    let name = format!("{NAME}.{APPS}.svc");
    c.netns_handle()?
        .run_async(move || async move {
            let mut out = Vec::new();
            for ip in ips {
                let addr = SocketAddr::new(ip.into(), 6379);
                out.push(harness::redis::served_certificate(addr, &ca, &name).await?);
            }
            anyhow::Ok(out)
        })
        .await
}

/// A renewal, end to end: the nodes' Secret goes and the operator restarts
/// (it reads the Secrets at start, then every 5 minutes); it issues a new
/// certificate from the same CA, the kubelet updates the pods' files, and
/// the operator has every node load them. No pod restarts.
async fn renewed(c: &Cluster, node_secret: &str) -> Result<()> {
    let ca = secret_key(c, node_secret, "ca.crt").await?;
    let old = certs::CertInfo::parse(&secret_key(c, node_secret, "tls.crt").await?, "tls.crt")?.der;
    let before = cluster_objects(c, "pods", NAME, "jsonpath={.items[*].metadata.uid}").await?;
    c.kubectl_ok(["delete", "secret", "-n", APPS, node_secret])
        .await?;
    c.kubectl_ok([
        "delete",
        "pod",
        "-n",
        harness::stack::NAMESPACE,
        "-l",
        "app.kubernetes.io/component=operator",
        "--grace-period=0",
        "--force",
        "--wait=false",
    ])
    .await?;
    let seen = std::sync::Mutex::new(String::from("nothing yet"));
    let note = |s: String| *seen.lock().unwrap_or_else(|e| e.into_inner()) = s;
    let waited = wait_for(
        "every node serving a new certificate",
        Duration::from_secs(300),
        || async {
            let Ok(pem) = secret_key(c, node_secret, "tls.crt").await else {
                note("no nodes' Secret".into());
                return Ok(None);
            };
            let new = certs::CertInfo::parse(&pem, "tls.crt")?.der;
            ensure!(new != old, "the operator wrote the old certificate back");
            let ips: Vec<Ipv4Addr> = pod_ips(c, NAME)
                .await?
                .into_iter()
                .map(|(_, ip)| ip)
                .collect();
            let served = served(c, ips, ca.clone()).await?;
            let fresh = served.iter().filter(|s| **s == new).count();
            note(format!(
                "{fresh} of {} nodes serve the new certificate",
                served.len()
            ));
            Ok((fresh == served.len()).then_some(()))
        },
    )
    .await;
    if let Err(e) = waited {
        let log = c
            .kubectl_ok([
                "logs",
                "-n",
                harness::stack::NAMESPACE,
                "-l",
                "app.kubernetes.io/component=operator",
                "--tail=40",
            ])
            .await
            .unwrap_or_else(|e| format!("(no operator log: {e:#})"));
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        return Err(e.context(format!("last seen: {seen}; the operator's log:\n{log}")));
    }
    ensure!(
        secret_key(c, node_secret, "ca.crt").await? == ca,
        "the CA changed"
    );
    let after = cluster_objects(c, "pods", NAME, "jsonpath={.items[*].metadata.uid}").await?;
    ensure!(before == after, "pods were replaced: {before} -> {after}");
    Ok(())
}

/// The cluster whose certificate "cert-manager" issues.
const ISSUED: &str = "issued";

/// Waits for a `ReconcileError` event about [`ISSUED`] that contains `text`.
async fn reconcile_error(c: &Cluster, text: &str) -> Result<String> {
    let seen = std::sync::Mutex::new(Vec::new());
    wait_for(
        &format!("a ReconcileError event saying {text:?}"),
        Duration::from_secs(120),
        || async {
            let events = events(c, ISSUED, "ReconcileError").await?;
            let found = events.iter().find(|e| e.contains(text)).cloned();
            *seen.lock().unwrap_or_else(|e| e.into_inner()) = events;
            Ok(found)
        },
    )
    .await
    .with_context(|| {
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        format!("the ReconcileError events: {seen:?}")
    })
}

/// `spec.tls.issuer_ref`, with the test in cert-manager's place.
async fn issued_by_cert_manager(c: &Cluster, images: &harness::real_node::Images) -> Result<()> {
    c.kubectl_apply(&redis_cluster(
        ISSUED,
        &images.redis,
        "  shard_count: 3\n  replicas: 1\n  autoscaling_paused: true\n  tls:\n    issuer_ref: {name: corp-ca, kind: ClusterIssuer}\n",
    ))
    .await?;
    reconcile_error(
        c,
        "the TLS Secret apps/issued-tls cannot be requested: cert-manager's Certificate API (cert-manager.io/v1) is not installed",
    )
    .await?;
    let crds = c.tools().dir().join("cert-manager-crds");
    c.kubectl_ok(["apply", "--server-side", "-f", &crds.display().to_string()])
        .await?;
    reconcile_error(
        c,
        "the TLS Secret apps/issued-tls is not issued yet by cert-manager",
    )
    .await?;

    // What the operator asks for, as the real CRD admitted it.
    let json = c
        .kubectl_ok(["get", "certificate", "-n", APPS, "issued-tls", "-o", "json"])
        .await?;
    let cert: serde_json::Value = serde_json::from_str(&json)?;
    let spec = &cert["spec"];
    ensure!(spec["secretName"] == "issued-tls", "{spec}");
    ensure!(
        spec["issuerRef"]
            == serde_json::json!({"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}),
        "{spec}"
    );
    let usages = spec["usages"].to_string();
    ensure!(
        usages.contains("\"server auth\"") && usages.contains("\"client auth\""),
        "{usages}"
    );
    ensure!(
        cert["metadata"]["ownerReferences"][0]["kind"] == "RedisCluster",
        "{}",
        cert["metadata"]
    );
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    let mut sans = strings(&spec["dnsNames"]);
    ensure!(sans.contains(&format!("{ISSUED}.{APPS}.svc")), "{sans:?}");
    sans.extend(strings(&spec["ipAddresses"]));

    // cert-manager's CA issuer: sign it, write the Secret.
    let now = time::OffsetDateTime::now_utc();
    let ca = certs::issue::new_ca("corp-ca", time::Duration::days(30), now)?;
    let leaf = certs::issue::issue_peer(&ca, &sans, time::Duration::days(7), now)?;
    let dir = tempfile::tempdir()?;
    let file = |name: &str, pem: &str| -> Result<String> {
        let path = dir.path().join(name);
        std::fs::write(&path, pem)?;
        Ok(format!("{name}={}", path.display()))
    };
    c.kubectl_ok([
        "create",
        "secret",
        "generic",
        "issued-tls",
        "-n",
        APPS,
        "--type=kubernetes.io/tls",
        &format!("--from-file={}", file("tls.crt", &leaf.cert_pem)?),
        &format!("--from-file={}", file("tls.key", &leaf.key_pem)?),
        &format!("--from-file={}", file("ca.crt", &ca.cert_pem)?),
    ])
    .await?;
    wait_ready(c, ISSUED, 1, Duration::from_secs(300)).await?;

    // An application trusting the issuer's CA, through the Service by name.
    let host = format!("{ISSUED}.{APPS}.svc.cluster.local");
    let script = format!(
        "set -e\nc=\"redis-cli -c --tls --cacert /ca/ca.crt -h {host}\"\n\
         for i in $(seq 1 50); do r=$($c set corp:$i v$i); [ \"$r\" = OK ] || {{ echo \"set corp:$i: $r\"; exit 1; }}; done\n\
         n=0; for i in $(seq 1 50); do [ \"$($c get corp:$i)\" = v$i ] && n=$((n+1)); done\n\
         echo \"read back $n of 50\"\n"
    );
    c.kubectl_apply(&client_pod_with(
        "corp-client",
        &images.redis,
        Some(ISSUED),
        Some("issued-tls"),
        &script,
    ))
    .await?;
    let log = pod_result(c, "corp-client", Duration::from_secs(180)).await?;
    ensure!(log.contains("read back 50 of 50"), "{log}");
    Ok(())
}

async fn scenario(c: &Cluster, t0: Instant) -> Result<()> {
    let step = |what: &str| eprintln!("e2e-real-tls: {what} at {:.1}s", t0.elapsed().as_secs_f64());
    let images = c.with_real(|r| Ok(r.images.clone()))?;
    helm_install(c, &images, &["operator.certManager=true"]).await?;
    step("helm install done");
    c.kubectl_apply(&redis_cluster(
        NAME,
        &images.redis,
        "  shard_count: 3\n  replicas: 2\n  autoscaling_paused: true\n  tls: {}\n",
    ))
    .await?;
    // Ready is the probe's word, and the probe speaks TLS.
    wait_ready(c, NAME, 2, Duration::from_secs(300)).await?;
    use_client_password(c, APPS, NAME).await?;
    step("RedisCluster 3x2 with TLS Ready");

    // The Secrets: the nodes' one holds no CA key; the CA's is mounted
    // nowhere.
    let node_secret = format!("{NAME}-tls");
    let ca_secret = format!("{NAME}-tls-ca");
    let keys = c
        .kubectl_ok([
            "get",
            "secret",
            "-n",
            APPS,
            &node_secret,
            "-o",
            "go-template={{range $k, $v := .data}}{{$k}} {{end}}{{.type}}",
        ])
        .await?;
    ensure!(
        keys == "ca.crt tls.crt tls.key kubernetes.io/tls",
        "{node_secret}: {keys}"
    );
    let ca_keys = c
        .kubectl_ok([
            "get",
            "secret",
            "-n",
            APPS,
            &ca_secret,
            "-o",
            "go-template={{range $k, $v := .data}}{{$k}} {{end}}",
        ])
        .await?;
    ensure!(ca_keys == "ca.crt ca.key ", "{ca_secret}: {ca_keys}");
    let mounted = cluster_objects(
        c,
        "pods",
        NAME,
        "jsonpath={.items[*].spec.volumes[*].secret.secretName}",
    )
    .await?;
    ensure!(
        mounted.contains(&node_secret) && !mounted.contains(&ca_secret),
        "the pods mount {mounted}"
    );
    let ca_pem = secret_key(c, &node_secret, "ca.crt").await?;
    let dir = tempfile::tempdir()?;
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, &ca_pem)?;
    harness::redis::set_tls(Some(harness::redis::Tls { ca_pem, ca_file }));
    step("the CA key is in a Secret no pod mounts");

    // Plain refused, TLS served.
    let pods = pod_ips(c, NAME).await?;
    ensure!(pods.len() == 6, "{pods:?}");
    let seed = pods[0].1;
    let plain = plain_ping(c, seed).await?;
    ensure!(plain.is_err(), "a plain client was answered: {plain:?}");
    ensure!(primaries(c, seed).await? == 3, "not 3 primaries");
    let metrics = c.netns_handle()?.http_get((seed, 9121), "/metrics")?;
    ensure!(
        metrics.lines().any(|l| l == "redis_up 1"),
        "the exporter does not reach its node over TLS:\n{}",
        &metrics[..metrics.len().min(2000)]
    );
    step("plain refused; TLS clients, the probe and the exporter served");

    // The expiry gauge says when the nodes' certificate expires.
    let cert = secret_key(c, &node_secret, "tls.crt").await?;
    let not_after = certs::CertInfo::parse(&cert, "tls.crt")?
        .not_after
        .unix_timestamp();
    let series = format!(
        "redis_operator_cluster_tls_cert_expiry_timestamp_seconds{{namespace=\"{APPS}\",cluster=\"{NAME}\"}}"
    );
    wait_for(
        "the certificate expiry gauge",
        Duration::from_secs(60),
        || async {
            let v = operator_counter(c, &series).await?;
            Ok((v == not_after as f64).then_some(()))
        },
    )
    .await?;
    step("the expiry gauge matches the certificate");

    // An application pod, through the Service by name.
    let host = format!("{NAME}.{APPS}.svc.cluster.local");
    let script = format!(
        "set -e\nc=\"redis-cli -c --tls --cacert /ca/ca.crt -h {host}\"\n\
         for i in $(seq 1 100); do r=$($c set app:$i v$i); [ \"$r\" = OK ] || {{ echo \"set app:$i: $r\"; exit 1; }}; done\n\
         n=0; for i in $(seq 1 100); do [ \"$($c get app:$i)\" = v$i ] && n=$((n+1)); done\n\
         echo \"read back $n of 100\"\n\
         echo \"plain: $(redis-cli -h {host} ping 2>&1)\""
    );
    c.kubectl_apply(&client_pod_with(
        "tls-client",
        &images.redis,
        Some(NAME),
        Some(&node_secret),
        &script,
    ))
    .await?;
    let log = pod_result(c, "tls-client", Duration::from_secs(180)).await?;
    ensure!(log.contains("read back 100 of 100"), "{log}");
    // The image has no head or sed: the line is echoed whole.
    ensure!(
        log.lines().any(|l| l.starts_with("plain: ")) && !log.contains("plain: PONG"),
        "a plain client was answered, or not tried: {log}"
    );
    step("an application pod wrote and read over TLS through the Service");

    // 3 -> 4 shards under the writer.
    let (writer, running) = start_writer(c, "t", seeds(&pods), 300).await?;
    let grown = async {
        reshard(c, NAME, 4, 2, &writer).await?;
        step("4 shards, Ready");
        renewed(c, &node_secret).await?;
        step("a new certificate served by every node, none restarted");
        anyhow::Ok(())
    }
    .await;
    let summary = stop_writer(&writer, running).await?;
    grown?;
    none_lost(c, "e2e-real-tls: writer over TLS", NAME, "t", &summary).await?;
    let check = c
        .netns_handle()?
        .run_async(move || async move {
            harness::redis::cluster_check(SocketAddr::new(seed.into(), 6379))
        })
        .await
        .context("redis-cli --cluster check over TLS")?;
    ensure!(check.contains("[OK] All 16384 slots covered"), "{check}");
    step("the operator's certificate: done");

    issued_by_cert_manager(c, &images).await?;
    step("a cluster whose certificate a cert-manager issuer signed: Ready, serving TLS");
    Ok(())
}
