//! `spec.tls` against real redis-server processes: nodes configured with
//! the operator's own TLS lines (`operator::tls::conf_lines`), a cluster
//! formed, grown and shrunk by `operator::topology` speaking TLS, a
//! renewed certificate taken in with `CONFIG SET`, all under the writer
//! that records every acknowledged write; plain and untrusted clients
//! refused.
//!
//! Its own test binary: the harness's Redis helpers speak TLS for the
//! whole process once `set_tls` is called.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use harness::redis::{self as rh, RedisFleet};
use harness::wait::wait_for;
use harness::writer::{Limits, Writer, lost_writes};
use operator::topology::{self, Desired, StepOptions, TlsClient};
use time::OffsetDateTime;

const CONVERGE: Duration = Duration::from_secs(150);
/// The name the operator checks the nodes' certificate against.
const SERVER_NAME: &str = "rc.ns.svc";

fn desired(shards: u32) -> Desired {
    Desired {
        shards,
        nodes_per_shard: 2,
        loss: Default::default(),
    }
}

/// A CA and a node certificate (server and client) in `dir`, as the
/// operator would put them in the nodes' Secret; returns the CA's PEM.
fn write_certs(dir: &Path, ca: &certs::KeyMaterial) -> Result<()> {
    let sans = operator::tls::sans("rc", "ns");
    let leaf = certs::issue::issue_peer(
        ca,
        &sans,
        time::Duration::days(365),
        OffsetDateTime::now_utc(),
    )?;
    // Written aside and renamed, as the kubelet swaps a Secret volume.
    for (name, pem) in [
        ("ca.crt", &ca.cert_pem),
        ("tls.crt", &leaf.cert_pem),
        ("tls.key", &leaf.key_pem),
    ] {
        let tmp = dir.join(format!(".{name}"));
        std::fs::write(&tmp, pem).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, dir.join(name))?;
    }
    Ok(())
}

/// A path under the pods' mount, moved into `dir`.
fn in_dir(text: &str, dir: &Path) -> String {
    let mount = format!("{}/", operator::tls::MOUNT);
    text.replace(&mount, &format!("{}/", dir.display()))
}

async fn ping(addr: SocketAddr, opts: &StepOptions) -> Result<(), topology::TopologyError> {
    let mut p = redis::pipe();
    p.ignore_errors();
    p.cmd("PING");
    topology::run_pipeline(addr, &p, "PING", opts).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_reshapes_and_renews_its_certificate_under_writes() -> Result<()> {
    harness::product::init_crypto();
    let t0 = Instant::now();
    let mut fleet = RedisFleet::new("tls")?;
    // Removed when the test ends, failed or not.
    let certs_dir = tempfile::tempdir()?;
    let dir = certs_dir.path().to_path_buf();
    let now = OffsetDateTime::now_utc();
    let ca = certs::issue::new_ca("test CA", time::Duration::days(3650), now)?;
    write_certs(&dir, &ca)?;
    rh::set_tls(Some(rh::Tls {
        ca_pem: ca.cert_pem.clone(),
        ca_file: dir.join("ca.crt"),
    }));
    let conf: Vec<String> = operator::tls::conf_lines()
        .iter()
        .map(|l| in_dir(l, &dir))
        .collect();
    fleet.set_extra_conf(&conf.join("\n"));
    fleet.start_grid(0..3, 2).await?;

    let opts = StepOptions {
        time_budget: Duration::from_secs(5),
        tls: Some(TlsClient::new(&ca.cert_pem, SERVER_NAME)?),
        ..StepOptions::default()
    };
    let c = rh::converge(&fleet.members(), desired(3), &opts, CONVERGE)
        .await
        .with_context(|| fleet.logs(20))?;
    ensure!(c.errors.is_empty(), "step errors: {:?}", c.errors);
    let addrs = |f: &RedisFleet| f.members().iter().map(|m| m.addr).collect::<Vec<_>>();
    for a in addrs(&fleet) {
        let info = rh::cluster_info(a).await?;
        ensure!(
            info.get("cluster_state").map(String::as_str) == Some("ok"),
            "{a}: {info:?}"
        );
    }

    // Refused: a plain client, a client that does not trust the CA, and
    // one that checks for another name.
    let plain = async {
        let client = redis::Client::open(format!("redis://{}", fleet.addr(0, 0)))?;
        let mut con = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut con).await
    };
    let plain = tokio::time::timeout(Duration::from_secs(10), plain).await;
    ensure!(
        matches!(plain, Ok(Err(_))),
        "a plain client got an answer: {plain:?}"
    );
    let other_ca = certs::issue::new_ca("other", time::Duration::days(1), now)?;
    for (opts_bad, want) in [
        (
            TlsClient::new(&other_ca.cert_pem, SERVER_NAME)?,
            "invalid peer certificate: UnknownIssuer",
        ),
        (
            TlsClient::new(&ca.cert_pem, "other.ns.svc")?,
            "certificate not valid for name \"other.ns.svc\"",
        ),
    ] {
        let bad = StepOptions {
            tls: Some(opts_bad),
            ..StepOptions::default()
        };
        let err = ping(fleet.addr(0, 0), &bad)
            .await
            .err()
            .context("an untrusted connection was accepted")?;
        ensure!(err.to_string().contains(want), "{err}");
    }

    // The writer, then 3 -> 4 -> 2 shards under it.
    let seeds = |f: &RedisFleet| addrs(f).into_iter().map(rh::url).collect::<Vec<_>>();
    let writer = Writer::new("tls", seeds(&fleet));
    let running = tokio::spawn(writer.clone().run(Limits {
        max_writes: 2_000_000,
        max_time: Duration::from_secs(600),
    }));
    let acked = |w: &Writer, n: usize| {
        let w = w.clone();
        async move {
            wait_for(
                &format!("{n} acknowledged writes"),
                Duration::from_secs(60),
                || {
                    let w = w.clone();
                    async move { Ok((w.acked_count() >= n).then_some(())) }
                },
            )
            .await
        }
    };
    let result = async {
        acked(&writer, 500).await?;
        fleet.start(3, 0).await?;
        fleet.start(3, 1).await?;
        writer.set_seeds(seeds(&fleet));
        let c = rh::converge(&fleet.members(), desired(4), &opts, CONVERGE).await?;
        eprintln!(
            "3 -> 4 shards over TLS: {} slots, {} keys moved",
            c.slots_moved, c.keys_moved
        );
        ensure!(c.keys_moved > 0, "no key moved to the new shard");
        let c = rh::converge(&fleet.members(), desired(2), &opts, CONVERGE).await?;
        eprintln!(
            "4 -> 2 shards over TLS: {} slots, {} keys moved",
            c.slots_moved, c.keys_moved
        );
        ensure!(
            c.last.removable_shards == vec![2, 3],
            "{:?}",
            c.last.removable_shards
        );
        for s in 2..4 {
            fleet.remove(s, 0);
            fleet.remove(s, 1);
        }
        writer.set_seeds(seeds(&fleet));

        // A renewed certificate: new files, then the CONFIG SET the
        // operator sends every node; each then serves the new one.
        let before = rh::served_certificate(fleet.addr(0, 0), &ca.cert_pem, SERVER_NAME).await?;
        write_certs(&dir, &ca)?;
        let written = std::fs::read_to_string(dir.join("tls.crt"))?;
        let new_der = certs::CertInfo::parse(&written, "tls.crt")?.der;
        ensure!(before != new_der, "the test did not renew the certificate");
        let mut reload = redis::pipe();
        reload.ignore_errors();
        let set = reload.cmd("CONFIG").arg("SET");
        for (k, v) in operator::tls::reload_settings() {
            set.arg(k).arg(in_dir(&v, &dir));
        }
        for a in addrs(&fleet) {
            topology::run_pipeline(a, &reload, "CONFIG SET tls-*", &opts).await?;
            ensure!(
                rh::served_certificate(a, &ca.cert_pem, SERVER_NAME).await? == new_der,
                "{a} still serves the old certificate"
            );
        }
        let after = writer.acked_count();
        acked(&writer, after + 500).await?;
        // Replication and the bus still work on the new certificate.
        let c = rh::converge(&fleet.members(), desired(2), &opts, CONVERGE).await?;
        ensure!(c.last.converged, "{:?}", c.last.message);
        for s in 0..2 {
            let repl: String = rh::query(fleet.addr(s, 1), &["INFO", "replication"]).await?;
            ensure!(repl.contains("master_link_status:up"), "{repl}");
        }
        anyhow::Ok(())
    }
    .await;
    writer.stop();
    running.await.context("joining the writer")??;
    result.with_context(|| fleet.logs(20))?;
    let summary = writer.summary();
    let lost = lost_writes(seeds(&fleet), "tls", &summary.acked).await?;
    eprintln!(
        "writer over TLS: {} acknowledged, {} failed, {} lost, longest gap {:.1?}; test took {:.1?}",
        summary.acked.len(),
        summary.failed,
        lost.len(),
        summary.longest_gap,
        t0.elapsed()
    );
    ensure!(
        lost.is_empty(),
        "acknowledged writes lost: {:?}",
        &lost[..lost.len().min(20)]
    );
    rh::cluster_check(fleet.addr(0, 0))?;
    Ok(())
}
