//! The real `redis-webhook` binary over TLS, with real AdmissionReview JSON:
//! allowed, denied with every field named, defaulted and idempotent,
//! malformed input, body limits, TLS versions, concurrency, policy files and
//! certificate reload.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use harness::process::ManagedChild;
use harness::product::{binary, init_crypto};
use harness::wait_for;
use serde_json::{Value, json};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "redis-webhook-test-{}-{name}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn generate(dir: &Path, sans: &[&str]) {
    let mut args = vec![
        "certs".to_string(),
        "generate".into(),
        "--out".into(),
        dir.display().to_string(),
    ];
    for s in sans {
        args.push("--san".into());
        args.push((*s).into());
    }
    let out = std::process::Command::new(binary("redis-webhook").unwrap())
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["ca.crt", "tls.crt", "tls.key"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
}

struct Webhook {
    _child: ManagedChild,
    https: u16,
    http: u16,
    dir: PathBuf,
}

async fn start(cert_dir: &Path, policy: Option<&str>) -> Result<Webhook> {
    start_with(cert_dir, policy, &[]).await
}

/// [`start`] with more command-line arguments.
async fn start_with(cert_dir: &Path, policy: Option<&str>, extra: &[&str]) -> Result<Webhook> {
    let dir = tmp("run");
    let (https, http) = (free_port(), free_port());
    let mut args = vec![
        "serve".to_string(),
        "--cert-dir".into(),
        cert_dir.display().to_string(),
        "--bind".into(),
        format!("127.0.0.1:{https}"),
        "--metrics-bind".into(),
        format!("127.0.0.1:{http}"),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    if let Some(p) = policy {
        let f = dir.join("policy.yaml");
        std::fs::write(&f, p)?;
        args.push("--policy".into());
        args.push(f.display().to_string());
    }
    let mut child = ManagedChild::spawn(
        "redis-webhook",
        &binary("redis-webhook")?,
        &args,
        &dir.join("webhook.log"),
    )?;
    let client = reqwest::Client::new();
    wait_for("the webhook's /healthz", Duration::from_secs(20), || {
        let url = format!("http://127.0.0.1:{http}/healthz");
        let client = client.clone();
        let alive = child.check_running();
        async move {
            alive.map_err(harness::fatal)?;
            Ok(client
                .get(url)
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ()))
        }
    })
    .await?;
    Ok(Webhook {
        _child: child,
        https,
        http,
        dir,
    })
}

fn tls_client(
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(cfg)
        .pool_max_idle_per_host(64)
        .build()
        .unwrap()
}

fn client_for(cert_dir: &Path) -> reqwest::Client {
    let ca = std::fs::read_to_string(cert_dir.join("ca.crt")).unwrap();
    tls_client(&ca, &[&rustls::version::TLS13, &rustls::version::TLS12])
}

fn review(uid: &str, operation: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "redis.example.com", "version": "v1alpha1", "kind": "RedisCluster"},
            "resource": {"group": "redis.example.com", "version": "v1alpha1", "resource": "redisclusters"},
            "name": "cache", "namespace": "team-a", "operation": operation,
            "userInfo": {"username": "alice"},
            "object": {"apiVersion": "redis.example.com/v1alpha1", "kind": "RedisCluster",
                       "metadata": {"name": "cache", "namespace": "team-a"}, "spec": spec},
            "oldObject": null, "dryRun": false
        }
    })
}

async fn post(c: &reqwest::Client, w: &Webhook, path: &str, body: &Value) -> (u16, Value) {
    let r = c
        .post(format!("https://127.0.0.1:{}{path}", w.https))
        .json(body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// kube encodes `patch` as a byte array; the apiserver also reads base64.
fn patch_bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::Array(_) => serde_json::from_value(v.clone()).unwrap(),
        Value::String(_) => {
            serde_json::from_value::<k8s_openapi::ByteString>(v.clone())
                .unwrap()
                .0
        }
        other => panic!("no patch: {other}"),
    }
}

#[tokio::test]
async fn admission_over_tls_end_to_end() -> Result<()> {
    init_crypto();
    let certs = tmp("certs");
    generate(&certs, &["127.0.0.1", "localhost"]);
    let w = start(&certs, None).await?;
    let c = client_for(&certs);

    // Allowed, uid echoed, envelope set, a warning for replicas 1.
    let (code, body) = post(
        &c,
        &w,
        "/validate",
        &review(
            "u-1",
            "CREATE",
            json!({"replicas": 1, "shard_count": 1, "scaling_threshold": 70.0}),
        ),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(body["kind"], "AdmissionReview");
    assert_eq!(body["response"]["uid"], "u-1");
    assert_eq!(body["response"]["allowed"], true);
    assert!(
        body["response"]["warnings"][0]
            .as_str()
            .unwrap_or_default()
            .contains("spec.replicas is 1")
    );

    // Denied, every field named with its value and range.
    let (code, body) = post(
        &c,
        &w,
        "/validate",
        &review(
            "u-2",
            "CREATE",
            json!({"replicas": 11, "shard_count": 6, "scaling_threshold": 150, "min_replicas": 0}),
        ),
    )
    .await;
    assert_eq!(code, 200);
    let r = &body["response"];
    assert_eq!(r["uid"], "u-2");
    assert_eq!(r["allowed"], false);
    assert_eq!(r["status"]["code"], 422);
    let msg = r["status"]["message"].as_str().unwrap();
    for part in [
        "spec.replicas: 11 is above the maximum 10 (allowed range 1 to 10)",
        "spec.shard_count: 6 is above the maximum 5 (allowed range 1 to 5)",
        "spec.scaling_threshold: 150 is above the maximum 100 (allowed range 0 to 100)",
        "spec.min_replicas: 0 is below the minimum 1 (allowed range 1 to 10)",
    ] {
        assert!(msg.contains(part), "missing {part:?} in {msg}");
    }

    // Wrong type: a denial naming the field, never a 500.
    let (code, body) = post(
        &c,
        &w,
        "/validate",
        &review("u-3", "CREATE", json!({"replicas": "3"})),
    )
    .await;
    assert_eq!(code, 200);
    assert!(
        body["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("spec.replicas: \"3\" must be an integer")
    );

    // DELETE with a null object is allowed.
    let mut del = review("u-4", "DELETE", json!({}));
    del["request"]["object"] = Value::Null;
    let (_, body) = post(&c, &w, "/validate", &del).await;
    assert_eq!(body["response"]["allowed"], true);

    // Defaulting: add operations only, and a second pass is empty.
    let (code, body) = post(
        &c,
        &w,
        "/mutate",
        &review("u-5", "CREATE", json!({"replicas": 3})),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(body["response"]["uid"], "u-5");
    assert_eq!(body["response"]["patchType"], "JSONPatch");
    let ops: Value = serde_json::from_slice(&patch_bytes(&body["response"]["patch"]))?;
    let ops = ops.as_array().context("patch is a list")?.clone();
    assert!(ops.iter().all(|o| o["op"] == "add"), "{ops:?}");
    let paths: Vec<_> = ops
        .iter()
        .map(|o| o["path"].as_str().unwrap().to_string())
        .collect();
    assert!(
        paths.contains(&"/spec/shard_count".to_string()),
        "{paths:?}"
    );
    assert!(!paths.contains(&"/spec/replicas".to_string()), "{paths:?}");
    let mut spec = json!({"replicas": 3});
    for o in &ops {
        let key = o["path"].as_str().unwrap().trim_start_matches("/spec/");
        spec[key] = o["value"].clone();
    }
    let (_, again) = post(&c, &w, "/mutate", &review("u-6", "CREATE", spec)).await;
    assert_eq!(again["response"]["allowed"], true);
    assert!(again["response"].get("patch").is_none(), "{again}");

    // Malformed input: 4xx with an envelope; the server keeps serving.
    let raw = |body: &'static str| {
        let c = c.clone();
        let url = format!("https://127.0.0.1:{}/validate", w.https);
        async move {
            let r = c
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (code, body) = raw("{not json").await;
    assert_eq!(code, 400);
    assert_eq!(body["kind"], "AdmissionReview");
    let (code, _) = raw(r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#).await;
    assert_eq!(code, 400);
    let big = vec![b' '; 2 * 1024 * 1024];
    let r = c
        .post(format!("https://127.0.0.1:{}/validate", w.https))
        .body(big)
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 413);

    // Hundreds of concurrent reviews, each answered correctly (bounded).
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..300u32 {
        let c = c.clone();
        let url = format!("https://127.0.0.1:{}/validate", w.https);
        tasks.spawn(async move {
            let replicas = if i % 2 == 0 { 3 } else { 11 };
            let r = c
                .post(url)
                .json(&review(
                    &format!("c-{i}"),
                    "CREATE",
                    json!({"replicas": replicas}),
                ))
                .send()
                .await?;
            let v: Value = r.json().await?;
            anyhow::ensure!(
                v["response"]["uid"] == format!("c-{i}"),
                "uid mismatch: {v}"
            );
            anyhow::ensure!(
                v["response"]["allowed"] == (replicas == 3),
                "wrong answer for {i}: {v}"
            );
            Ok(())
        });
    }
    let all = tokio::time::timeout(Duration::from_secs(60), async {
        let mut n = 0;
        while let Some(r) = tasks.join_next().await {
            r??;
            n += 1;
        }
        anyhow::Ok(n)
    })
    .await??;
    assert_eq!(all, 300);

    // Metrics count what happened.
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", w.http))
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains(
            "redis_webhook_admission_requests_total{endpoint=\"validate\",outcome=\"denied\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("redis_webhook_admission_duration_seconds_bucket"),
        "{metrics}"
    );
    let _ = std::fs::remove_dir_all(&w.dir);
    Ok(())
}

#[tokio::test]
async fn only_tls12_and_tls13_are_offered() -> Result<()> {
    init_crypto();
    let certs = tmp("tlsv");
    generate(&certs, &["127.0.0.1"]);
    let w = start(&certs, None).await?;
    let ca = std::fs::read_to_string(certs.join("ca.crt"))?;
    for v in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let c = tls_client(&ca, &[v]);
        let (code, _) = post(&c, &w, "/validate", &review("v", "CREATE", json!({}))).await;
        assert_eq!(code, 200);
    }
    // rustls cannot speak TLS 1.1; openssl can, and must be refused.
    let out = tokio::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{}", w.https),
            "-tls1_1",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .context("running openssl (Debian package openssl)")?;
    assert!(
        !out.status.success(),
        "TLS 1.1 handshake succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}

#[tokio::test]
async fn replaced_certificate_files_are_served_without_restart() -> Result<()> {
    init_crypto();
    let certs = tmp("reload");
    generate(&certs, &["127.0.0.1"]);
    let w = start(&certs, None).await?;
    let old = client_for(&certs);
    let (code, _) = post(&old, &w, "/validate", &review("r", "CREATE", json!({}))).await;
    assert_eq!(code, 200);

    // A new CA and pair, renamed into place the way a writer should.
    let fresh = tmp("fresh");
    generate(&fresh, &["127.0.0.1"]);
    for f in ["tls.key", "tls.crt"] {
        std::fs::copy(fresh.join(f), certs.join(format!("{f}.new")))?;
        std::fs::rename(certs.join(format!("{f}.new")), certs.join(f))?;
    }
    // New connections (a new client, no pooled connection) see the new certificate.
    wait_for(
        "the new certificate to be served",
        Duration::from_secs(15),
        || {
            let fresh = fresh.clone();
            let url = format!("https://127.0.0.1:{}/validate", w.https);
            async move {
                let c = client_for(&fresh);
                Ok(c.post(url)
                    .json(&review("n", "CREATE", json!({})))
                    .send()
                    .await
                    .ok()
                    .map(|_| ()))
            }
        },
    )
    .await?;
    let err = reqwest::Client::builder()
        .tls_backend_preconfigured({
            let ca = std::fs::read_to_string(certs.join("ca.crt"))?; // the OLD CA
            let mut roots = rustls::RootCertStore::empty();
            use rustls::pki_types::{CertificateDer, pem::PemObject};
            for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(c?)?;
            }
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth()
        })
        .build()?
        .post(format!("https://127.0.0.1:{}/validate", w.https))
        .json(&review("o", "CREATE", json!({})))
        .send()
        .await;
    // Refused by certificate verification, not by anything else.
    let err = match err {
        Ok(r) => panic!("the old CA still verifies the served certificate: {r:?}"),
        Err(e) => format!("{e:?}"),
    };
    assert!(err.contains("InvalidCertificate"), "{err}");

    // Garbage in the files keeps the current certificate. Not a sleep: the
    // webhook logs each refused reload, so wait for that line.
    // (A reload between the two renames above may have been refused too.)
    let log = w.dir.join("webhook.log");
    let refusals = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.matches("certificate not (re)loaded").count()
    };
    let before = refusals();
    std::fs::write(certs.join("tls.key"), "garbage")?;
    wait_for(
        "the garbage key to be refused",
        Duration::from_secs(15),
        || {
            let refused = refusals() > before;
            async move { Ok(refused.then_some(())) }
        },
    )
    .await?;
    let c = client_for(&fresh);
    let (code, _) = post(&c, &w, "/validate", &review("g", "CREATE", json!({}))).await;
    assert_eq!(code, 200);
    Ok(())
}

#[tokio::test]
async fn readiness_waits_for_a_certificate() -> Result<()> {
    init_crypto();
    let empty = tmp("empty");
    let w = start(&empty, None).await?;
    let ready = || async {
        reqwest::get(format!("http://127.0.0.1:{}/readyz", w.http))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    assert_eq!(ready().await, 503);
    generate(&empty, &["127.0.0.1"]);
    wait_for("readiness", Duration::from_secs(15), || async {
        Ok((ready().await == 200).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn policy_file_tightens_and_looser_policy_is_refused() -> Result<()> {
    init_crypto();
    let certs = tmp("policy");
    generate(&certs, &["127.0.0.1"]);
    let w = start(&certs, Some("replicas: {min: 1, max: 6}\n")).await?;
    let c = client_for(&certs);
    let (_, body) = post(
        &c,
        &w,
        "/validate",
        &review("p", "CREATE", json!({"replicas": 7})),
    )
    .await;
    let msg = body["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        msg.contains("spec.replicas: 7 is above the maximum 6 (allowed range 1 to 6)"),
        "{msg}"
    );
    let (_, body) = post(
        &c,
        &w,
        "/validate",
        &review("p2", "CREATE", json!({"replicas": 6})),
    )
    .await;
    assert_eq!(body["response"]["allowed"], true);

    let dir = tmp("loose");
    std::fs::write(dir.join("policy.yaml"), "replicas: {max: 11}\n")?;
    let out = tokio::process::Command::new(binary("redis-webhook")?)
        .args([
            "serve",
            "--cert-dir",
            &certs.display().to_string(),
            "--bind",
            "127.0.0.1:0",
            "--metrics-bind",
            "127.0.0.1:0",
            "--policy",
        ])
        .arg(dir.join("policy.yaml"))
        .output()
        .await?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    if !err.contains("replicas.max 11 is outside the CRD bounds 1 to 10") {
        bail!("unclear error for a looser policy: {err}");
    }
    Ok(())
}

/// A raw TLS client (no HTTP) offering `alpn`, trusting the test CA.
fn tls_connector(cert_dir: &Path, alpn: &[&[u8]]) -> Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert_dir.join("ca.crt"))? {
        roots.add(c?)?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

async fn tls_connect(
    connector: &tokio_rustls::TlsConnector,
    port: u16,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")
        .map_err(std::io::Error::other)?
        .to_owned();
    connector.connect(name, tcp).await
}

/// Reads until the server closes the connection (EOF or reset).
async fn closed_by_server<S: tokio::io::AsyncRead + Unpin>(mut s: S) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

#[tokio::test]
async fn only_http11_is_negotiated() -> Result<()> {
    init_crypto();
    let certs = tmp("alpn");
    generate(&certs, &["127.0.0.1"]);
    let w = start(&certs, None).await?;
    // A client that speaks only HTTP/2 gets no connection at all (RFC 7301
    // no_application_protocol), so no HTTP/2 stream reaches the server.
    let h2_only = tls_connector(&certs, &[b"h2"])?;
    let err = tls_connect(&h2_only, w.https)
        .await
        .err()
        .context("an h2-only client completed the handshake")?;
    assert!(
        err.to_string().contains("NoApplicationProtocol"),
        "unexpected handshake error: {err}"
    );
    // One that offers both falls back to HTTP/1.1, as the API server does.
    let both = tls_connector(&certs, &[b"h2", b"http/1.1"])?;
    let s = tls_connect(&both, w.https).await?;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    // And reviews keep working over it.
    let c = client_for(&certs);
    let (code, body) = post(&c, &w, "/validate", &review("h1", "CREATE", json!({}))).await;
    assert_eq!((code, &body["response"]["uid"]), (200, &json!("h1")));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_idle_connections_neither_stop_service_nor_stay_open() -> Result<()> {
    init_crypto();
    let certs = tmp("idle");
    generate(&certs, &["127.0.0.1"]);
    let w = start(&certs, None).await?;
    // 300 that never start TLS, 100 that finish it and never send a
    // request, and 300 silent ones on the plain HTTP port.
    let mut raw = Vec::new();
    for _ in 0..300 {
        raw.push(tokio::net::TcpStream::connect(("127.0.0.1", w.https)).await?);
    }
    let connector = tls_connector(&certs, &[b"http/1.1"])?;
    let mut idle_tls = Vec::new();
    for _ in 0..100 {
        idle_tls.push(tls_connect(&connector, w.https).await?);
    }
    let mut plain = Vec::new();
    for _ in 0..300 {
        plain.push(tokio::net::TcpStream::connect(("127.0.0.1", w.http)).await?);
    }

    let c = client_for(&certs);
    for i in 0..50 {
        let uid = format!("idle-{i}");
        let (code, body) = post(&c, &w, "/validate", &review(&uid, "CREATE", json!({}))).await;
        assert_eq!((code, &body["response"]["uid"]), (200, &json!(uid)));
    }
    let health = reqwest::get(format!("http://127.0.0.1:{}/healthz", w.http)).await?;
    assert_eq!(health.status().as_u16(), 200);

    // The server closes them all itself: unfinished handshakes after 10 s,
    // silent HTTP connections once the header-read timeout (30 s) passes.
    let all = futures::future::join3(
        futures::future::join_all(raw.into_iter().map(closed_by_server)),
        futures::future::join_all(idle_tls.into_iter().map(closed_by_server)),
        futures::future::join_all(plain.into_iter().map(closed_by_server)),
    );
    tokio::time::timeout(Duration::from_secs(90), all)
        .await
        .context("idle connections still open after 90 s")?;
    Ok(())
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() -> Result<()> {
    init_crypto();
    let certs = tmp("cap");
    generate(&certs, &["127.0.0.1"]);
    let w = start_with(&certs, None, &["--max-connections", "20"]).await?;
    // Every slot held by a client that never starts TLS.
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(tokio::net::TcpStream::connect(("127.0.0.1", w.https)).await?);
    }
    // A review now waits in the backlog until the server drops one of them
    // (the handshake timeout): it must not be answered before that.
    let first_drop = async {
        futures::future::select_all(held.into_iter().map(|s| Box::pin(closed_by_server(s)))).await;
        std::time::Instant::now()
    };
    let answered = async {
        let c = client_for(&certs);
        let (code, body) = post(&c, &w, "/validate", &review("late", "CREATE", json!({}))).await;
        assert_eq!((code, &body["response"]["uid"]), (200, &json!("late")));
        std::time::Instant::now()
    };
    let (dropped_at, answered_at) = tokio::time::timeout(
        Duration::from_secs(60),
        futures::future::join(first_drop, answered),
    )
    .await
    .context("no answer within 60 s")?;
    assert!(
        answered_at >= dropped_at,
        "answered beyond the cap of 20 while all 20 slots were held"
    );
    Ok(())
}
