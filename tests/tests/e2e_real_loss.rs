//! Lost pods on a real node, under a writer that records every acknowledged
//! write (issue 13, "lost pods"). One cluster, three scenarios in turn:
//!
//! 1. 3 shards x 1, emptyDir (the defaults): the only pod of a shard is
//!    deleted. Availability comes back, a `DataLost` event names the shard
//!    and its slots, `redis_operator_data_loss_total` counts it, `Degraded`
//!    is true while the slots have no live owner and false after; exactly
//!    the keys of those slots are lost.
//! 2. The same cluster with `on_data_loss: Wait`: nothing is reassigned,
//!    `Degraded` says a human must decide, nothing is counted. Switching to
//!    `RecoverEmpty` (the README's way out) then recovers as in 1.
//! 3. 3 shards x 2 with persistent storage (static hostPath volumes) and
//!    persistence settings in the spec, which every node reports. Under the
//!    writer, the settings change and reach every node without a restart;
//!    then every pod is deleted at once, as after a node restart. The pods
//!    come back (new IPs) with the changed settings from their config file,
//!    and the cluster returns with every acknowledged key.
//! 4. The same cluster's volumes grow from 1Gi to 2Gi under a writer: every
//!    claim grows, every StatefulSet is re-created around its running pods,
//!    status shows the progress; no pod restarts and no write is lost.
//!
//! Needs root, `make deps`, `make cluster-tools` and `make test-images`
//! (`make e2e-real` does all of it). A missing prerequisite fails the test.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use harness::in_cluster::{
    APPS, cluster_objects, condition, events, helm_install, is_ready, lost_of, on_real_node,
    operator_counter, pod_ips, rc_field, redis_cluster, redis_query, seeds, start_writer,
    stop_writer, use_client_password, wait_ready,
};
use harness::redis::key_slot;
use harness::writer::Summary;
use harness::{Cluster, wait_for};
use operator::topology::model::fmt_ranges;

/// The emptyDir cluster of scenarios 1 and 2.
const LOSE: &str = "lose";
/// The cluster with storage of scenario 3.
const KEEP: &str = "keep";
const DATA_LOSS: &str = "redis_operator_data_loss_total";
const STORAGE_CLASS: &str = "loss-static";
/// How long a lost shard may take to serve again.
const RECOVERY: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_pods_on_a_real_node() -> Result<()> {
    on_real_node(false, scenarios).await
}

async fn scenarios(c: &Cluster, t0: Instant) -> Result<()> {
    let images = c.with_real(|r| Ok(r.images.clone()))?;
    let step = |what: &str| {
        eprintln!(
            "e2e-real-loss: {what} at {:.1}s",
            t0.elapsed().as_secs_f64()
        )
    };
    helm_install(c, &images, &[]).await?;
    step("helm install done");

    // --- 1 and 2: the only copy of a shard lost ------------------------------
    c.kubectl_apply(&redis_cluster(
        LOSE,
        &images.redis,
        "  shard_count: 3\n  replicas: 1\n  autoscaling_paused: true\n",
    ))
    .await?;
    wait_ready(c, LOSE, 1, Duration::from_secs(240)).await?;
    use_client_password(c, APPS, LOSE).await?;
    step("3x1 Ready");
    only_copy_lost(c, 1, "a", false)
        .await
        .context("scenario 1: RecoverEmpty")?;
    step("scenario 1 (RecoverEmpty) passed");
    only_copy_lost(c, 2, "b", true)
        .await
        .context("scenario 2: Wait")?;
    step("scenario 2 (Wait, then RecoverEmpty) passed");
    c.kubectl_ok(["delete", "rediscluster", LOSE, "-n", APPS, "--wait=true"])
        .await?;

    // --- 3: every pod of a 3x2 cluster with storage deleted at once ----------
    c.kubectl_apply(&static_volumes(c.tmp_dir(), 6)?).await?;
    c.kubectl_apply(&redis_cluster(
        KEEP,
        &images.redis,
        &format!(
            "  shard_count: 3\n  replicas: 2\n  autoscaling_paused: true\n  storage:\n    size: 1Gi\n    storage_class_name: {STORAGE_CLASS}\n{FIRST_PERSISTENCE}"
        ),
    ))
    .await?;
    wait_ready(c, KEEP, 2, Duration::from_secs(240)).await?;
    use_client_password(c, APPS, KEEP).await?;
    let seen = persistence_of(c, KEEP).await?;
    ensure!(
        seen == BTreeSet::from([FIRST_SEEN.map(String::from).to_vec()]),
        "the nodes' persistence settings are {seen:?}"
    );
    step("3x2 with storage Ready, its persistence settings on every node");
    every_pod_restarted(c).await.context("scenario 3")?;
    step("scenario 3 (every pod with storage deleted) passed");

    // --- 4: the volumes grow under the writer, no pod restarted -------------
    volumes_grow(c).await.context("scenario 4")?;
    step("scenario 4 (volumes grown, no pod restarted) passed");
    Ok(())
}

/// Scenario 4: `spec.storage.size` 1Gi -> 2Gi under a writer. The operator
/// grows every claim, then re-creates each StatefulSet (the claim template
/// is immutable) while its pods keep running, and reports progress. These
/// static hostPath volumes have no resizer, so the test plays the storage
/// driver's part (PV and claim capacity), as external-resizer would for a
/// CSI driver; its images cannot be built here (see the README).
async fn volumes_grow(c: &Cluster) -> Result<()> {
    let pod_runs = "jsonpath={range .items[*]}{.metadata.name} {.metadata.uid} {.status.containerStatuses[*].restartCount}{\"\\n\"}{end}";
    let runs_before = cluster_objects(c, "pods", KEEP, pod_runs).await?;
    let set_uids = "jsonpath={.items[*].metadata.uid}";
    let sets_before = cluster_objects(c, "statefulsets", KEEP, set_uids).await?;
    let pods = pod_ips(c, KEEP).await?;
    let (writer, running) = start_writer(c, "g", seeds(&pods), 500).await?;
    let acks = || writer.acked_count();
    let started = Instant::now();
    c.kubectl_ok([
        "patch",
        "rediscluster",
        KEEP,
        "-n",
        APPS,
        "--type=merge",
        "-p",
        r#"{"spec":{"storage":{"size":"2Gi"}}}"#,
    ])
    .await?;
    let sizes = |kind: &'static str, path: &'static str| async move {
        let out = cluster_objects(c, kind, KEEP, &format!("jsonpath={{{path}}}")).await?;
        anyhow::Ok(out.split_whitespace().map(String::from).collect::<Vec<_>>())
    };
    wait_for(
        "every claim asking for 2Gi and every StatefulSet re-created with a 2Gi template",
        Duration::from_secs(180),
        || async {
            let claims = sizes("pvc", ".items[*].spec.resources.requests.storage").await?;
            let templates = sizes(
                "statefulsets",
                ".items[*].spec.volumeClaimTemplates[0].spec.resources.requests.storage",
            )
            .await?;
            let uids = cluster_objects(c, "statefulsets", KEEP, set_uids).await?;
            let fresh = uids.split_whitespace().all(|u| !sets_before.contains(u));
            Ok((claims == ["2Gi"; 6] && templates == ["2Gi"; 3] && fresh).then_some(()))
        },
    )
    .await?;
    let took = started.elapsed();
    let waiting = "0 of 6 volumes have 2Gi; the rest wait for the storage driver";
    wait_for(
        "status to say the driver is waited for",
        Duration::from_secs(60),
        || async {
            let (status, reason, message) = condition(c, KEEP, "ExpandingVolumes").await?;
            Ok((status == "True" && reason == "Expanding" && message == waiting).then_some(()))
        },
    )
    .await?;
    // The storage driver's part: each volume, then each claim, has 2Gi.
    for i in 0..6 {
        c.kubectl_ok([
            "patch",
            "pv",
            &format!("{STORAGE_CLASS}-{i}"),
            "--type=merge",
            "-p",
            r#"{"spec":{"capacity":{"storage":"2Gi"}}}"#,
        ])
        .await?;
    }
    let claims = cluster_objects(c, "pvc", KEEP, "jsonpath={.items[*].metadata.name}").await?;
    for claim in claims.split_whitespace() {
        c.kubectl_ok([
            "patch",
            "pvc",
            claim,
            "-n",
            APPS,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"capacity":{"storage":"2Gi"}}}"#,
        ])
        .await?;
    }
    wait_for(
        "status to say every volume has 2Gi",
        Duration::from_secs(60),
        || async {
            let (status, reason, message) = condition(c, KEEP, "ExpandingVolumes").await?;
            Ok(
                (status == "False" && reason == "Expanded" && message == "all 6 volumes have 2Gi")
                    .then_some(()),
            )
        },
    )
    .await?;
    let expanded = rc_field(c, KEEP, "{.status.volume_expansion}").await?;
    let expanded: serde_json::Value = serde_json::from_str(&expanded)?;
    ensure!(
        expanded
            == serde_json::json!({"size": "2Gi", "volumes": 6, "expanded": 6, "statefulsets_left": 0, "message": "all 6 volumes have 2Gi"}),
        "status.volume_expansion is {expanded}"
    );
    let from = acks();
    wait_for(
        "500 more acknowledged writes",
        Duration::from_secs(60),
        || async { Ok((acks() >= from + 500).then_some(())) },
    )
    .await?;
    let summary = stop_writer(&writer, running).await?;
    let lost = lost_of(c, seeds(&pod_ips(c, KEEP).await?), "g", &summary.acked).await?;
    let timing = format!(
        "every claim grown and every StatefulSet re-created {:.1}s after the change",
        took.as_secs_f64()
    );
    report("volumes grown 1Gi -> 2Gi", &summary, lost.len(), timing);
    none_lost(&lost)?;
    ensure!(
        summary.failed == 0,
        "{} writes failed while the volumes grew",
        summary.failed
    );
    // The same pods, never restarted, now owned by the new StatefulSets.
    let runs_after = cluster_objects(c, "pods", KEEP, pod_runs).await?;
    ensure!(
        runs_after == runs_before,
        "pods replaced or restarted:\nbefore\n{runs_before}\nafter\n{runs_after}"
    );
    let owners = cluster_objects(
        c,
        "pods",
        KEEP,
        "jsonpath={.items[*].metadata.ownerReferences[0].uid}",
    )
    .await?;
    let sets_after = cluster_objects(c, "statefulsets", KEEP, set_uids).await?;
    ensure!(
        owners.split_whitespace().count() == 6
            && owners.split_whitespace().all(|o| sets_after.contains(o)),
        "pods owned by {owners}, the StatefulSets are {sets_after}"
    );
    Ok(())
}

/// Scenarios 1 and 2: deletes the only pod of `shard` of [`LOSE`] under a
/// writer of `<prefix>:<i>` keys. With `wait_first`, the cluster is set to
/// `on_data_loss: Wait` first, checked to do nothing, and then set back.
async fn only_copy_lost(c: &Cluster, shard: u32, prefix: &str, wait_first: bool) -> Result<()> {
    let pods = pod_ips(c, LOSE).await?;
    let victim = format!("{LOSE}-shard-{shard}-0");
    let victim_ip = pods
        .iter()
        .find(|(n, _)| *n == victim)
        .map(|(_, ip)| *ip)
        .with_context(|| format!("no pod {victim} in {pods:?}"))?;
    let survivor = pods
        .iter()
        .find(|(n, _)| *n != victim)
        .map(|(_, ip)| *ip)
        .context("no other pod")?;
    let ranges = own_slots(c, victim_ip).await?;
    ensure!(!ranges.is_empty(), "{victim} owns no slot");
    let slots = fmt_ranges(&ranges);
    let counted = operator_counter(c, DATA_LOSS).await?;
    let reported = events(c, LOSE, "DataLost").await?;
    if wait_first {
        c.kubectl_ok([
            "patch",
            "rediscluster",
            LOSE,
            "-n",
            APPS,
            "--type=merge",
            "-p",
            r#"{"spec":{"on_data_loss":"Wait"}}"#,
        ])
        .await?;
    }

    let (writer, running) = start_writer(c, prefix, seeds(&pods), 500).await?;
    let acks = || writer.acked_count();
    c.kubectl_ok(["delete", "pod", &victim, "-n", APPS, "--wait=false"])
        .await?;
    let deleted = Instant::now();
    // Everything acknowledged from here may have reached the old node's
    // slots before it died or the new node's after: only what was
    // acknowledged before is certainly gone.
    let acked_before = writer.summary().acked;

    let seen_degraded = RefCell::new(BTreeSet::new());
    if wait_first {
        // The operator sees the loss and leaves it to a human.
        let (_, _, message) = wait_for(
            "Degraded to say the lost shard awaits a decision",
            RECOVERY,
            || async {
                let d = condition(c, LOSE, "Degraded").await?;
                Ok((d.0 == "True" && d.1 == "DataLossAwaitingDecision").then_some(d))
            },
        )
        .await?;
        ensure!(
            message.contains(&format!("shard {shard} (slots {slots})")),
            "Degraded does not name shard {shard} and slots {slots}: {message}"
        );
        // Nothing was reassigned: the dead node still claims the slots, the
        // cluster refuses writes, nothing was counted or announced.
        let nodes: String = redis_query(c, survivor, &["CLUSTER", "NODES"]).await?;
        let first = fmt_ranges(&ranges[..1]);
        let claim = nodes
            .lines()
            .find(|l| l.split_whitespace().skip(8).any(|r| r == first))
            .with_context(|| format!("no node claims {first}:\n{nodes}"))?;
        ensure!(
            claim.contains("fail"),
            "slots {slots} were reassigned under Wait: {claim}"
        );
        // The survivors first suspect the dead node (PFAIL, state still ok),
        // then agree it failed: from then on the cluster refuses service.
        wait_for(
            "the survivors to report cluster_state:fail",
            Duration::from_secs(60),
            || async {
                let info: String = redis_query(c, survivor, &["CLUSTER", "INFO"]).await?;
                Ok(info.contains("cluster_state:fail").then_some(()))
            },
        )
        .await?;
        ensure!(
            operator_counter(c, DATA_LOSS).await? == counted,
            "{DATA_LOSS} counted a loss under Wait"
        );
        ensure!(
            events(c, LOSE, "DataLost").await? == reported,
            "a DataLost event under Wait"
        );
        seen_degraded
            .borrow_mut()
            .insert("DataLossAwaitingDecision".to_string());
        eprintln!("e2e-real-loss: under Wait: {message}");
        c.kubectl_ok([
            "patch",
            "rediscluster",
            LOSE,
            "-n",
            APPS,
            "--type=merge",
            "-p",
            r#"{"spec":{"on_data_loss":"RecoverEmpty"}}"#,
        ])
        .await?;
    }

    // Recovered: the loss reported once, counted once, every slot served,
    // Degraded false again, and the writer is acknowledged again.
    let want_event = format!("shard {shard} lost its only copy");
    let at_recovery = Cell::new(None);
    wait_for("the lost shard to serve again", RECOVERY, || async {
        let d = condition(c, LOSE, "Degraded").await?;
        if d.0 == "True" {
            seen_degraded.borrow_mut().insert(d.1.clone());
            at_recovery.set(None);
            return Ok(None);
        }
        let new: Vec<String> = events(c, LOSE, "DataLost")
            .await?
            .into_iter()
            .filter(|e| !reported.contains(e))
            .collect();
        if new.is_empty() {
            return Ok(None);
        }
        let info: String = redis_query(c, survivor, &["CLUSTER", "INFO"]).await?;
        if !(info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")) {
            return Ok(None);
        }
        let from = at_recovery.get().unwrap_or_else(acks);
        at_recovery.set(Some(from));
        Ok((acks() >= from + 500).then_some(()))
    })
    .await?;
    let recovered_after = deleted.elapsed();
    let summary = stop_writer(&writer, running).await?;
    let seen_degraded = seen_degraded.into_inner();

    // Status and events told the truth.
    // Each of these names slots without a live owner (under Wait, the
    // reason says a human must decide).
    ensure!(
        [
            "SlotsUnowned",
            "ClusterStateFail",
            "DataLossAwaitingDecision"
        ]
        .iter()
        .any(|r| seen_degraded.contains(*r)),
        "Degraded never said the slots had no live owner (seen: {seen_degraded:?})"
    );
    let new: Vec<String> = events(c, LOSE, "DataLost")
        .await?
        .into_iter()
        .filter(|e| !reported.contains(e))
        .collect();
    ensure!(
        new.len() == 1,
        "expected one new DataLost event, got {new:?}"
    );
    ensure!(
        new[0].contains(&want_event) && new[0].contains(&format!("slots {slots} serve again")),
        "the DataLost event does not name shard {shard} and slots {slots}: {}",
        new[0]
    );
    let after = operator_counter(c, DATA_LOSS).await?;
    ensure!(
        after == counted + 1.0,
        "{DATA_LOSS} went from {counted} to {after}, expected one more"
    );
    ensure!(
        condition(c, LOSE, "Degraded").await?.0 == "False",
        "still Degraded"
    );

    // Exactly that shard's keys are lost.
    let lost = lost_of(c, seeds(&pod_ips(c, LOSE).await?), prefix, &summary.acked).await?;
    let in_lost_slots = |i: &u64| {
        let s = key_slot(format!("{prefix}:{i}").as_bytes());
        ranges.iter().any(|&(a, b)| (a..=b).contains(&s))
    };
    let stray: Vec<u64> = lost.iter().copied().filter(|i| !in_lost_slots(i)).collect();
    ensure!(
        stray.is_empty(),
        "{} acknowledged keys outside slots {slots} lost: {:?}",
        stray.len(),
        &stray[..stray.len().min(20)]
    );
    let lost_set: BTreeSet<u64> = lost.iter().copied().collect();
    let kept_in_lost_slots: Vec<u64> = acked_before
        .iter()
        .copied()
        .filter(|i| in_lost_slots(i) && !lost_set.contains(i))
        .collect();
    ensure!(
        kept_in_lost_slots.is_empty(),
        "keys of the lost shard written before its pod died survived (was the data really lost?): {:?}",
        &kept_in_lost_slots[..kept_in_lost_slots.len().min(20)]
    );
    report(
        &format!(
            "only copy of shard {shard} lost ({})",
            if wait_first {
                "Wait, then RecoverEmpty"
            } else {
                "RecoverEmpty"
            }
        ),
        &summary,
        lost.len(),
        recovered(recovered_after),
    );
    eprintln!(
        "e2e-real-loss: Degraded reasons seen: {seen_degraded:?}; event: {}",
        new[0]
    );
    Ok(())
}

/// Scenario 3: every pod of [`KEEP`] deleted at once.
async fn every_pod_restarted(c: &Cluster) -> Result<()> {
    let pods = pod_ips(c, KEEP).await?;
    ensure!(pods.len() == 6, "{pods:?}");
    let old: BTreeSet<Ipv4Addr> = pods.iter().map(|(_, ip)| *ip).collect();
    let (writer, running) = start_writer(c, "c", seeds(&pods), 500).await?;
    let acks = || writer.acked_count();
    persistence_changes_at_run_time(c).await?;
    c.kubectl_ok([
        "delete",
        "pods",
        "-n",
        APPS,
        "-l",
        &format!("redis.example.com/cluster={KEEP}"),
        "--wait=false",
    ])
    .await?;
    let deleted = Instant::now();
    // Back: six new pods running (the writer reconnects through their
    // addresses), Ready, and writes acknowledged again.
    let at_ready = Cell::new(None);
    wait_for(
        "every pod back and the cluster serving",
        RECOVERY,
        || async {
            let now = pod_ips(c, KEEP).await?;
            let terminating = cluster_objects(
                c,
                "pods",
                KEEP,
                "jsonpath={.items[*].metadata.deletionTimestamp}",
            )
            .await?;
            if now.len() != 6 || !terminating.trim().is_empty() {
                return Ok(None);
            }
            writer.set_seeds(seeds(&now));
            if !is_ready(c, KEEP, 2).await? {
                at_ready.set(None);
                return Ok(None);
            }
            let from = at_ready.get().unwrap_or_else(acks);
            at_ready.set(Some(from));
            Ok((acks() >= from + 500).then_some(()))
        },
    )
    .await?;
    let recovered_after = deleted.elapsed();
    let summary = stop_writer(&writer, running).await?;
    let pods = pod_ips(c, KEEP).await?;
    let new: BTreeSet<Ipv4Addr> = pods.iter().map(|(_, ip)| *ip).collect();
    eprintln!(
        "e2e-real-loss: pod IPs {} -> {} ({} changed)",
        old.len(),
        new.len(),
        new.difference(&old).count()
    );
    let lost = lost_of(c, seeds(&pods), "c", &summary.acked).await?;
    report(
        "every pod of 3x2 with storage deleted",
        &summary,
        lost.len(),
        recovered(recovered_after),
    );
    none_lost(&lost)?;
    ensure!(
        condition(c, KEEP, "Degraded").await?.0 == "False",
        "still Degraded"
    );
    ensure!(
        operator_counter(c, DATA_LOSS).await? == 2.0,
        "{DATA_LOSS} counted a loss with storage"
    );
    // The new processes started from the config file, which has the new
    // settings (the operator also gives them at run time to new nodes).
    let seen = persistence_of(c, KEEP).await?;
    ensure!(
        seen == BTreeSet::from([SECOND_SEEN.map(String::from).to_vec()]),
        "after the restart, the nodes' persistence settings are {seen:?}"
    );
    let conf = c
        .kubectl_ok([
            "get",
            "configmap",
            &format!("{KEEP}-config"),
            "-n",
            APPS,
            "-o",
            "jsonpath={.data.redis\\.conf}",
        ])
        .await?;
    for line in ["appendonly yes", "appendfsync everysec", "save \"\""] {
        ensure!(
            conf.lines().any(|l| l == line),
            "{line} not in redis.conf:\n{conf}"
        );
    }
    Ok(())
}

/// The persistence settings [`KEEP`] starts with, and what its nodes then
/// report for `appendonly`, `appendfsync` and `save`.
const FIRST_PERSISTENCE: &str = "  persistence:\n    append_fsync: always\n    rdb_save:\n    - seconds: 900\n      changes: 1\n";
const FIRST_SEEN: [&str; 3] = ["yes", "always", "900 1"];
/// The settings it is changed to while it runs, and what the nodes report.
const SECOND_PERSISTENCE: &str =
    r#"{"spec":{"persistence":{"append_fsync":"everysec","rdb_save":[]}}}"#;
const SECOND_SEEN: [&str; 3] = ["yes", "everysec", ""];

/// `appendonly`, `appendfsync` and `save` as the nodes of cluster `name`
/// report them: one entry per distinct answer.
async fn persistence_of(c: &Cluster, name: &str) -> Result<BTreeSet<Vec<String>>> {
    let mut seen = BTreeSet::new();
    for (_, ip) in pod_ips(c, name).await? {
        let mut values = Vec::new();
        for param in ["appendonly", "appendfsync", "save"] {
            let pair: Vec<String> = redis_query(c, ip, &["CONFIG", "GET", param]).await?;
            ensure!(pair.len() == 2, "CONFIG GET {param} on {ip}: {pair:?}");
            values.push(pair[1].clone());
        }
        seen.insert(values);
    }
    Ok(seen)
}

/// Each pod of `name` with its container's restart count, to tell that
/// nothing restarted.
async fn pod_lives(c: &Cluster, name: &str) -> Result<String> {
    cluster_objects(
        c,
        "pods",
        name,
        "jsonpath={range .items[*]}{.metadata.uid}/{.status.containerStatuses[0].restartCount} {end}",
    )
    .await
}

/// Changes [`KEEP`]'s persistence settings and waits for every node to
/// report them, with no pod replaced or restarted.
async fn persistence_changes_at_run_time(c: &Cluster) -> Result<()> {
    let lives = pod_lives(c, KEEP).await?;
    c.kubectl_ok([
        "patch",
        "rediscluster",
        KEEP,
        "-n",
        APPS,
        "--type=merge",
        "-p",
        SECOND_PERSISTENCE,
    ])
    .await?;
    let want = BTreeSet::from([SECOND_SEEN.map(String::from).to_vec()]);
    wait_for(
        "every node to report the new persistence settings",
        Duration::from_secs(90),
        || async { Ok((persistence_of(c, KEEP).await? == want).then_some(())) },
    )
    .await?;
    let after = pod_lives(c, KEEP).await?;
    ensure!(
        after == lives,
        "pods were replaced or restarted: {lives} -> {after}"
    );
    Ok(())
}

fn none_lost(lost: &[u64]) -> Result<()> {
    ensure!(
        lost.is_empty(),
        "{} acknowledged writes lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    Ok(())
}

/// The slot ranges a node owns, from its own `CLUSTER NODES` line.
async fn own_slots(c: &Cluster, ip: Ipv4Addr) -> Result<Vec<(u16, u16)>> {
    let nodes: String = redis_query(c, ip, &["CLUSTER", "NODES"]).await?;
    let me = nodes
        .lines()
        .find(|l| l.contains("myself"))
        .with_context(|| format!("{ip}: no myself line:\n{nodes}"))?;
    me.split_whitespace()
        .skip(8)
        .filter(|r| !r.starts_with('['))
        .map(|r| -> Result<(u16, u16)> {
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            Ok((a.parse()?, b.parse()?))
        })
        .collect()
}

/// A StorageClass without a provisioner and `count` hostPath volumes under
/// the run's temporary directory, owned by Redis's uid (the kubelet applies
/// no fsGroup to hostPath volumes).
fn static_volumes(tmp: &Path, count: usize) -> Result<String> {
    let mut y = format!(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: {STORAGE_CLASS}\nprovisioner: kubernetes.io/no-provisioner\nvolumeBindingMode: Immediate\nallowVolumeExpansion: true\n"
    );
    for i in 0..count {
        let dir = tmp.join(format!("pv-{i}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::os::unix::fs::chown(&dir, Some(999), Some(999))
            .with_context(|| format!("chown {}", dir.display()))?;
        y.push_str(&format!(
            "---\napiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: {STORAGE_CLASS}-{i}\nspec:\n  capacity: {{storage: 1Gi}}\n  accessModes: [ReadWriteOnce]\n  persistentVolumeReclaimPolicy: Retain\n  storageClassName: {STORAGE_CLASS}\n  hostPath: {{path: {}, type: Directory}}\n",
            dir.display()
        ));
    }
    Ok(y)
}

/// One line per scenario; `timing` says what took how long.
fn report(what: &str, s: &Summary, lost: usize, timing: String) {
    eprintln!(
        "e2e-real-loss: {what}: {} writes acknowledged ({} failed, {} client rebuilds), {lost} lost, \
         longest gap between acknowledged writes {:.1}s, {timing}",
        s.acked.len(),
        s.failed,
        s.rebuilds,
        s.longest_gap.as_secs_f64(),
    );
}

fn recovered(after_deletion: Duration) -> String {
    format!(
        "recovered {:.1}s after the deletion",
        after_deletion.as_secs_f64()
    )
}
