//! The product on the real node, installed the way users install it: the
//! chart with helm, the operator and the webhook as pods under the chart's
//! ServiceAccounts, in namespaces that enforce the restricted Pod Security
//! Standard. Used by `tests/tests/e2e_real.rs` and `make demo`.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use crate::cluster::{Cluster, ClusterOptions};
use crate::real_node::Images;
use crate::stack::{NAMESPACE, RELEASE, chart_dir};
use crate::wait::wait_for;
use crate::writer::{Limits as WriteLimits, Summary, Writer, lost_writes};

/// Where the RedisClusters and the client pods go.
pub const APPS: &str = "apps";

/// A hard bound on any client pod's run time (`activeDeadlineSeconds`), so
/// a load generator cannot outlive what started it by much.
pub const CLIENT_POD_DEADLINE: Duration = Duration::from_secs(900);

pub fn restricted_namespace(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:\n    pod-security.kubernetes.io/enforce: restricted\n    pod-security.kubernetes.io/enforce-version: latest\n"
    )
}

/// The values that differ from the chart's defaults: the images only.
pub fn image_values(images: &Images) -> Vec<String> {
    let (repo, tag) = Images::split(&images.product);
    let (trepo, ttag) = Images::split(&images.curl);
    let (erepo, etag) = Images::split(&images.exporter);
    [
        format!("image.repository={repo}"),
        format!("image.tag={tag}"),
        format!("tests.image.repository={trepo}"),
        format!("tests.image.tag={ttag}"),
        format!("redisExporter.image.repository={erepo}"),
        format!("redisExporter.image.tag={etag}"),
    ]
    .into_iter()
    .flat_map(|v| ["--set".to_string(), v])
    .collect()
}

/// Starts a real node (with metrics-server if asked), runs `scenario` on
/// it with the start time, and tears it down; on failure its files are kept
/// for the post-mortem (the path is printed).
pub async fn on_real_node<F>(metrics_server: bool, scenario: F) -> Result<()>
where
    F: AsyncFnOnce(&Cluster, Instant) -> Result<()>,
{
    crate::product::init_crypto();
    let t0 = Instant::now();
    let mut c = Cluster::start(ClusterOptions {
        real_node: true,
        metrics_server,
        start_timeout: Duration::from_secs(300),
        ..Default::default()
    })
    .await?;
    let result = scenario(&c, t0).await;
    if result.is_err() {
        c.keep_tmp();
    }
    c.stop();
    eprintln!(
        "harness: real node torn down at {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    result
}

/// `helm install --wait` of the chart into [`NAMESPACE`], with the image
/// values and `extra` (`key=value` each); both namespaces are created
/// restricted first.
pub async fn helm_install(c: &Cluster, images: &Images, extra: &[&str]) -> Result<()> {
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
    for v in extra {
        install.extend(["--set".to_string(), v.to_string()]);
    }
    c.helm_ok(&install).await.context("helm install")?;
    // Ready webhook pods can still be unreachable through their Service
    // for a moment (kube-proxy programs the rules after the endpoints):
    // wait until a server-side dry run passes through the webhook.
    let probe = c.tmp_dir().join("webhook-probe.yaml");
    std::fs::write(
        &probe,
        redis_cluster("webhook-probe", "probe:1", "  replicas: 2\n"),
    )
    .with_context(|| format!("writing {}", probe.display()))?;
    let probe = probe.display().to_string();
    wait_for(
        "the webhook to answer through its Service",
        Duration::from_secs(60),
        || async {
            let out = c
                .kubectl(["create", "--dry-run=server", "-f", probe.as_str()])
                .await?;
            Ok(out.status.success().then_some(()))
        },
    )
    .await?;
    Ok(())
}

/// A RedisCluster in [`APPS`]; `spec` is indented YAML under `spec:`.
pub fn redis_cluster(name: &str, image: &str, spec: &str) -> String {
    format!(
        "apiVersion: redis.example.com/v1alpha1\nkind: RedisCluster\nmetadata:\n  name: {name}\n  namespace: {APPS}\nspec:\n  image: {image}\n{spec}"
    )
}

/// A restricted-compliant pod in [`APPS`] running `script` in the test
/// Redis image, ended by the kubelet after [`CLIENT_POD_DEADLINE`]. With
/// `cluster`, it gets that RedisCluster's password from its Secret as an
/// application would, in `REDISCLI_AUTH` (which `redis-cli` reads), and
/// waits until the cluster lets it in before `script` runs.
pub fn client_pod(name: &str, image: &str, cluster: Option<&str>, script: &str) -> String {
    client_pod_with(name, image, cluster, None, script)
}

/// [`client_pod`], with the `ca.crt` of the TLS Secret `ca_secret` at
/// `/ca/ca.crt`, as an application of a cluster with `spec.tls` has it.
pub fn client_pod_with(
    name: &str,
    image: &str,
    cluster: Option<&str>,
    ca_secret: Option<&str>,
    script: &str,
) -> String {
    pod_in(APPS, name, image, cluster, ca_secret, script)
}

/// A client pod like [`client_pod`] in `namespace`, with no credentials.
pub fn client_pod_in(namespace: &str, name: &str, image: &str, script: &str) -> String {
    pod_in(namespace, name, image, None, None, script)
}

fn pod_in(
    namespace: &str,
    name: &str,
    image: &str,
    cluster: Option<&str>,
    ca_secret: Option<&str>,
    script: &str,
) -> String {
    let script = match cluster {
        Some(cluster) => admitted(cluster, ca_secret.is_some()) + script,
        None => script.to_string(),
    };
    let script = serde_json::to_string(&script).unwrap_or_default();
    let (mounts, volumes) = match ca_secret {
        Some(secret) => (
            "    volumeMounts:\n    - {name: ca, mountPath: /ca, readOnly: true}\n".to_string(),
            format!(
                "  volumes:\n  - name: ca\n    secret: {{secretName: {secret}, items: [{{key: ca.crt, path: ca.crt}}]}}\n"
            ),
        ),
        None => (String::new(), String::new()),
    };
    let deadline = CLIENT_POD_DEADLINE.as_secs();
    let env = match cluster {
        Some(cluster) => format!(
            "    env:\n    - name: REDISCLI_AUTH\n      valueFrom:\n        secretKeyRef: {{name: {cluster}-auth, key: password}}\n"
        ),
        None => String::new(),
    };
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {namespace}
spec:
  restartPolicy: Never
  activeDeadlineSeconds: {deadline}
  automountServiceAccountToken: false
  securityContext:
    runAsNonRoot: true
    runAsUser: 999
    runAsGroup: 999
    seccompProfile: {{type: RuntimeDefault}}
  containers:
  - name: client
    image: {image}
    imagePullPolicy: Never
    command: ["sh", "-c", {script}]
{env}{mounts}    resources:
      requests: {{cpu: 50m, memory: 32Mi}}
    securityContext:
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities: {{drop: [ALL]}}
{volumes}"#
    )
}

/// Shell lines that wait (up to 60 s) until RedisCluster `cluster`
/// answers through its Service. The node enforces NetworkPolicies: until
/// kube-router has a new pod's address, a second or so after the pod
/// starts, the cluster's policy refuses it like a stranger. Applications
/// retry their first connection for the same reason.
fn admitted(cluster: &str, tls: bool) -> String {
    let tls = if tls {
        "--tls --cacert /ca/ca.crt "
    } else {
        ""
    };
    format!(
        "i=0; until redis-cli {tls}-h {} ping 2>&1 | grep -q -e PONG -e NOAUTH; do\n\
         \x20 i=$((i+1)); [ $i -ge 60 ] && break; sleep 1\n\
         done\n",
        service_host(cluster)
    )
}

/// The client Service of a RedisCluster in [`APPS`], by name.
pub fn service_host(cluster: &str) -> String {
    format!("{cluster}.{APPS}.svc.cluster.local")
}

/// A client pod that loads Redis with `redis-benchmark <target> -t set,get`
/// (pipelined, 100,000 requests a round), for at most `rounds` rounds and
/// at most `duration`; deleting the pod stops it sooner. It fails if a round
/// fails. `target` is `-h <primary IP>`, or `--cluster -h <service>` for a
/// cluster of two shards or more (redis-benchmark refuses one primary).
/// It logs in with the password of RedisCluster `cluster`.
pub fn load_pod(
    name: &str,
    image: &str,
    cluster: &str,
    target: &str,
    rounds: u32,
    duration: Duration,
) -> String {
    let secs = duration.as_secs();
    let script = format!(
        "end=$(( $(date +%s) + {secs} )); i=0\n\
         while [ $i -lt {rounds} ] && [ $(date +%s) -lt $end ]; do\n\
         \x20 redis-benchmark {target} -a \"$REDISCLI_AUTH\" -p 6379 -c 16 -P 8 -n 100000 -t set,get -q >/dev/null || {{ echo \"round $i failed\"; exit 1; }}\n\
         \x20 i=$((i+1)); echo \"round $i done\"\n\
         done\n\
         echo \"load finished after $i rounds\""
    );
    client_pod(name, image, Some(cluster), &script)
}

/// `(pod name, pod IP)` of a RedisCluster's pods in [`APPS`] that have an IP, by name.
pub async fn pod_ips(c: &Cluster, name: &str) -> Result<Vec<(String, Ipv4Addr)>> {
    let mut pods: Vec<(String, Ipv4Addr)> = pods_of(c, name)
        .await?
        .into_iter()
        .filter_map(|(n, _, ip)| Some((n, ip?)))
        .collect();
    pods.sort();
    Ok(pods)
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

/// Whether every shard has `replicas` ready pods and `Ready` is True.
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

/// Waits until [`is_ready`].
pub async fn wait_ready(c: &Cluster, name: &str, replicas: u32, timeout: Duration) -> Result<()> {
    wait_for(&format!("RedisCluster {name} Ready"), timeout, || async {
        Ok(is_ready(c, name, replicas).await?.then_some(()))
    })
    .await
}

/// `kubectl get <kind> -o <output>` for the objects of RedisCluster
/// `name` in [`APPS`] (by its cluster label).
pub async fn cluster_objects(c: &Cluster, kind: &str, name: &str, output: &str) -> Result<String> {
    c.kubectl_ok([
        "get",
        kind,
        "-n",
        APPS,
        "-l",
        &format!("redis.example.com/cluster={name}"),
        "-o",
        output,
    ])
    .await
}

/// `(pod name, uid, pod IP)` of a RedisCluster's pods, IP absent until
/// assigned.
pub async fn pods_of(c: &Cluster, name: &str) -> Result<Vec<(String, String, Option<Ipv4Addr>)>> {
    let out = cluster_objects(
        c,
        "pods",
        name,
        r#"jsonpath={range .items[*]}{.metadata.name} {.metadata.uid} {.status.podIP}{"\n"}{end}"#,
    )
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

/// Runs one Redis command against `ip:6379` from inside the node's netns.
pub async fn redis_query<T>(c: &Cluster, ip: Ipv4Addr, args: &[&str]) -> Result<T>
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

/// Waits until a pod in [`APPS`] has finished and returns its log; an
/// error if it failed.
pub async fn pod_result(c: &Cluster, name: &str, timeout: Duration) -> Result<String> {
    pod_result_in(c, APPS, name, timeout).await
}

/// [`pod_result`] for a pod in `namespace`.
pub async fn pod_result_in(
    c: &Cluster,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<String> {
    let phase = wait_for(
        &format!("pod {namespace}/{name} to finish"),
        timeout,
        || async {
            let p = pod_phase_in(c, namespace, name).await?;
            Ok(matches!(p.as_str(), "Succeeded" | "Failed").then_some(p))
        },
    )
    .await?;
    let log = c.kubectl_ok(["logs", name, "-n", namespace]).await?;
    ensure!(
        phase == "Succeeded",
        "pod {namespace}/{name} {phase}:\n{log}"
    );
    Ok(log)
}

pub async fn pod_phase(c: &Cluster, name: &str) -> Result<String> {
    pod_phase_in(c, APPS, name).await
}

async fn pod_phase_in(c: &Cluster, namespace: &str, name: &str) -> Result<String> {
    c.kubectl_ok([
        "get",
        "pod",
        name,
        "-n",
        namespace,
        "-o",
        "jsonpath={.status.phase}",
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

/// `redis://ip:6379` seeds for a cluster client.
pub fn seeds(pods: &[(String, Ipv4Addr)]) -> Vec<String> {
    pods.iter()
        .map(|(_, ip)| crate::redis::url(SocketAddr::new((*ip).into(), 6379)))
        .collect()
}

/// The clients' password of RedisCluster `name` in `ns` (its Secret
/// `<name>-auth`, once the operator made it).
pub async fn client_password(c: &Cluster, ns: &str, name: &str) -> Result<String> {
    let secret = format!("{name}-auth");
    wait_for(
        &format!("Secret {ns}/{secret}"),
        Duration::from_secs(120),
        || async {
            let out = c
                .kubectl([
                    "get",
                    "secret",
                    "-n",
                    ns,
                    &secret,
                    "-o",
                    "go-template={{.data.password | base64decode}}",
                ])
                .await?;
            Ok((out.status.success() && !out.stdout.is_empty())
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
        },
    )
    .await
}

/// Makes the harness's Redis helpers log in with the clients' password of
/// RedisCluster `name` in `ns`; returns it.
pub async fn use_client_password(c: &Cluster, ns: &str, name: &str) -> Result<String> {
    let password = client_password(c, ns, name).await?;
    crate::redis::set_password(Some(password.clone()));
    Ok(password)
}

/// The chart's pods (in [`NAMESPACE`]) that match the label `selector`,
/// with their IPs; a pod without an IP yet is left out.
pub async fn release_pods(c: &Cluster, selector: &str) -> Result<Vec<(String, Ipv4Addr)>> {
    let out = c
        .kubectl_ok([
            "get",
            "pods",
            "-n",
            NAMESPACE,
            "-l",
            selector,
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name} {.status.podIP}{"\n"}{end}"#,
        ])
        .await?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let (name, ip) = l.split_once(' ')?;
            Some((name.to_string(), ip.trim().parse().ok()?))
        })
        .collect())
}

/// The sum of a counter over the operator's pods (only the leader counts),
/// read from their `/metrics` endpoints inside the node.
pub async fn operator_counter(c: &Cluster, metric: &str) -> Result<f64> {
    let operators = release_pods(c, "app.kubernetes.io/component=operator").await?;
    let netns = c.netns_handle()?;
    let mut sum = 0.0;
    let mut pods = 0;
    for (_, ip) in operators {
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

/// A writer of `<prefix>:<i>` keys through `seeds`, running inside the
/// node's network namespace, once it has `first` acknowledged writes.
pub async fn start_writer(
    c: &Cluster,
    prefix: &str,
    seeds: Vec<String>,
    first: usize,
) -> Result<(Writer, tokio::task::JoinHandle<Result<()>>)> {
    let writer = Writer::new(prefix, seeds);
    let w = writer.clone();
    let netns = c.netns_handle()?;
    let running = tokio::spawn(async move {
        netns
            .run_async(move || async move { w.run(WriteLimits::default()).await })
            .await
    });
    wait_for(
        &format!("the writer's first {first} acknowledged writes"),
        Duration::from_secs(60),
        || async { Ok((writer.acked_count() >= first).then_some(())) },
    )
    .await?;
    Ok((writer, running))
}

/// Stops `writer`, waits for it, and says what it did.
pub async fn stop_writer(
    writer: &Writer,
    running: tokio::task::JoinHandle<Result<()>>,
) -> Result<Summary> {
    writer.stop();
    running.await.context("joining the writer")??;
    Ok(writer.summary())
}

/// The acknowledged `<prefix>:<i>` keys that the cluster reached through
/// `seeds` no longer has, read from inside the node's network namespace.
pub async fn lost_of(
    c: &Cluster,
    seeds: Vec<String>,
    prefix: &str,
    acked: &[u64],
) -> Result<Vec<u64>> {
    let (prefix, acked) = (prefix.to_owned(), acked.to_vec());
    c.netns_handle()?
        .run_async(move || async move { lost_writes(seeds, &prefix, &acked).await })
        .await
}

/// Sets `spec.shard_count` of RedisCluster `name` in [`APPS`] to `shards`
/// and waits (up to 5 min) until the change is observed, every shard has
/// `replicas` ready pods, and `CLUSTER SLOTS` read from inside the node
/// names `shards` primaries; meanwhile `writer` follows the pods.
pub async fn reshard(
    c: &Cluster,
    name: &str,
    shards: usize,
    replicas: u32,
    writer: &Writer,
) -> Result<()> {
    c.kubectl_ok([
        "patch",
        "rediscluster",
        name,
        "-n",
        APPS,
        "--type=merge",
        "-p",
        &format!(r#"{{"spec":{{"shard_count":{shards}}}}}"#),
    ])
    .await?;
    wait_for(
        &format!("{name}: {shards} shards of {replicas}, Ready"),
        Duration::from_secs(300),
        || async {
            let generation = rc_field(c, name, "{.metadata.generation}").await?;
            let observed = rc_field(c, name, "{.status.observed_generation}").await?;
            if generation != observed || !is_ready(c, name, replicas).await? {
                return Ok(None);
            }
            let pods = pod_ips(c, name).await?;
            writer.set_seeds(seeds(&pods));
            let Some((_, first)) = pods.first() else {
                return Ok(None);
            };
            let pods_wanted = shards * replicas as usize;
            Ok((pods.len() == pods_wanted && primaries(c, *first).await? == shards).then_some(()))
        },
    )
    .await
}

/// The primaries that own slots, by `CLUSTER SLOTS` read from the node at
/// `ip` from inside the node's netns.
pub async fn primaries(c: &Cluster, ip: Ipv4Addr) -> Result<usize> {
    c.netns_handle()?
        .run_async(move || async move {
            let counts = crate::redis::slot_counts(SocketAddr::new(ip.into(), 6379)).await?;
            anyhow::Ok(counts.len())
        })
        .await
}

/// Reads back every write `summary` says was acknowledged (`<prefix>:<i>`)
/// from RedisCluster `name` in [`APPS`], prints the writer's record under
/// `label`, and fails if any is lost.
pub async fn none_lost(
    c: &Cluster,
    label: &str,
    name: &str,
    prefix: &str,
    summary: &Summary,
) -> Result<()> {
    let pods = pod_ips(c, name).await?;
    let lost = lost_of(c, seeds(&pods), prefix, &summary.acked).await?;
    eprintln!(
        "{label}: {} acknowledged, {} failed, {} lost, longest gap {:?}",
        summary.acked.len(),
        summary.failed,
        lost.len(),
        summary.longest_gap
    );
    ensure!(
        lost.is_empty(),
        "acknowledged writes lost: {} of {}",
        lost.len(),
        summary.acked.len()
    );
    Ok(())
}
