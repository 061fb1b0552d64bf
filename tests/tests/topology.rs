//! `operator::topology` against real redis-server processes: bootstrap,
//! resharding 3 -> 5 -> 2 -> 4 under a live writer with 200k keys, recovery
//! from an interrupted slot move (open slots, a BUSYKEY leftover, dropped
//! step futures), replica scale-down after a failover, and node restarts.
//!
//! Each test drives `step` the way the reconcile loop does (call until
//! converged, bounded) and then checks the cluster from the outside: every
//! key with its last value, slot balance, `cluster_state:ok` on every node,
//! and `redis-cli --cluster check`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use harness::redis::{self as rh, RedisFleet};
use operator::topology::{self, Desired, StepOptions};

const CONVERGE: Duration = Duration::from_secs(150);

fn opts() -> StepOptions {
    StepOptions {
        time_budget: Duration::from_secs(5),
        ..StepOptions::default()
    }
}

fn desired(shards: u32, nodes_per_shard: u32) -> Desired {
    Desired {
        shards,
        nodes_per_shard,
        loss: Default::default(),
    }
}

/// Every member reports cluster_state:ok and all 16384 slots ok.
async fn assert_healthy(addrs: &[SocketAddr], nodes: usize) -> Result<()> {
    for &a in addrs {
        let info = rh::cluster_info(a).await?;
        let get = |k: &str| info.get(k).map(String::as_str).unwrap_or("?");
        ensure!(
            get("cluster_state") == "ok",
            "{a}: cluster_state {}",
            get("cluster_state")
        );
        ensure!(get("cluster_slots_assigned") == "16384", "{a}: {info:?}");
        ensure!(get("cluster_slots_ok") == "16384", "{a}: {info:?}");
        ensure!(
            get("cluster_known_nodes") == nodes.to_string(),
            "{a}: knows {} nodes, expected {nodes}",
            get("cluster_known_nodes")
        );
    }
    ensure!(
        rh::open_slots(addrs).await?.is_empty(),
        "open slots: {:?}",
        rh::open_slots(addrs).await?
    );
    Ok(())
}

/// `shards` primaries, each within one slot of the others.
async fn assert_balanced(seed: SocketAddr, shards: usize) -> Result<BTreeMap<SocketAddr, usize>> {
    let counts = rh::slot_counts(seed).await?;
    ensure!(counts.len() == shards, "slot owners: {counts:?}");
    let (min, max) = (
        counts.values().min().copied().unwrap_or(0),
        counts.values().max().copied().unwrap_or(0),
    );
    ensure!(max - min <= 1, "unbalanced: {counts:?}");
    Ok(counts)
}

/// Whether `addr` is a replica of `primary` (by `CLUSTER NODES`).
async fn replica_of(addr: SocketAddr, primary: SocketAddr) -> Result<bool> {
    let me = rh::myself(addr).await?;
    let p = rh::myself(primary).await?;
    Ok(me[2].contains("slave") && me[3] == p[0])
}

fn addrs(fleet: &RedisFleet) -> Vec<SocketAddr> {
    fleet.members().iter().map(|m| m.addr).collect()
}

fn log_converged(what: &str, c: &rh::Converged) {
    let secs = c.migration_time.as_secs_f64();
    eprintln!(
        "{what}: converged in {:.1?} ({} calls, {} actions), {} slots and {} keys moved in {:.1?} ({:.0} keys/s), errors: {:?}",
        c.elapsed,
        c.calls,
        c.actions.len(),
        c.slots_moved,
        c.keys_moved,
        c.migration_time,
        if secs > 0.0 {
            c.keys_moved as f64 / secs
        } else {
            0.0
        },
        c.errors
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_three_shards_with_replicas() -> Result<()> {
    let mut fleet = RedisFleet::new("bootstrap")?;
    fleet.start_grid(0..3, 2).await?;
    let d = desired(3, 2);
    let c = rh::converge(&fleet.members(), d, &opts(), CONVERGE)
        .await
        .with_context(|| fleet.logs(20))?;
    log_converged("bootstrap 3x2", &c);
    ensure!(c.errors.is_empty(), "step errors: {:?}", c.errors);

    assert_healthy(&addrs(&fleet), 6).await?;
    let counts = assert_balanced(fleet.addr(0, 0), 3).await?;
    for s in 0..3 {
        // Ordinal 0 is the primary at bootstrap, ordinal 1 its replica.
        ensure!(
            counts.contains_key(&fleet.addr(s, 0)),
            "shard {s}: {counts:?}"
        );
        ensure!(
            replica_of(fleet.addr(s, 1), fleet.addr(s, 0)).await?,
            "shard {s}: ordinal 1 does not replicate ordinal 0"
        );
        let repl: String = rh::query(fleet.addr(s, 1), &["INFO", "replication"]).await?;
        ensure!(repl.contains("master_link_status:up"), "{repl}");
    }
    rh::cluster_check(fleet.addr(1, 0))?;

    // Converged means nothing left to do.
    let r = topology::step(&fleet.members(), &d, &opts()).await?;
    ensure!(r.converged && r.actions_taken.is_empty(), "{r:?}");

    // The test's own slot function agrees with the server.
    for k in [
        "key:0",
        "key:199999",
        "{user1000}.following",
        "foo{}{bar}",
        "a",
    ] {
        let s: u16 = rh::query(fleet.addr(0, 0), &["CLUSTER", "KEYSLOT", k]).await?;
        ensure!(s == rh::key_slot(k.as_bytes()), "slot of {k}");
    }
    Ok(())
}

// ---- resharding under load -------------------------------------------------------

const KEYS: usize = 200_000;
const WORKERS: usize = 4;

#[derive(Default, Debug)]
struct LoadStats {
    writes: u64,
    reads: u64,
    retries: u64,
    mismatches: Vec<String>,
}

/// A tiny deterministic PRNG (xorshift64*), so a failure can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

async fn cluster_conn(
    seeds: &Mutex<Vec<SocketAddr>>,
) -> Result<redis::cluster_async::ClusterConnection> {
    let nodes: Vec<String> = seeds
        .lock()
        .map_err(|_| anyhow!("seed lock poisoned"))?
        .iter()
        .map(|a| format!("redis://{a}"))
        .collect();
    let client = redis::cluster::ClusterClientBuilder::new(nodes)
        .connection_timeout(Duration::from_secs(1))
        .response_timeout(Duration::from_secs(5))
        .retries(10)
        .build()?;
    Ok(client.get_async_connection().await?)
}

/// One writer/reader over keys `i % WORKERS == w`: SET a new version of a
/// random key, then GET another random key and compare it with the last
/// acknowledged version. Sequential per worker, so there is no ambiguity.
async fn worker(
    w: usize,
    seeds: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    deadline: Instant,
) -> Result<(Vec<u32>, LoadStats)> {
    let n = KEYS.div_ceil(WORKERS);
    let mut versions: Vec<u32> = vec![1; n];
    let mut st = LoadStats::default();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (w as u64 + 1));
    let mut conn = cluster_conn(&seeds).await?;
    const MAX_OPS: u64 = 2_000_000;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && st.writes < MAX_OPS {
        let k = rng.next(n);
        let i = w + k * WORKERS;
        if i >= KEYS {
            continue;
        }
        let v = versions[k] + 1;
        let mut attempt = 0u32;
        loop {
            let r: redis::RedisResult<()> = redis::cmd("SET")
                .arg(rh::key_name(i))
                .arg(rh::value_of(i, v))
                .query_async(&mut conn)
                .await;
            match r {
                Ok(()) => break,
                Err(e) => {
                    attempt += 1;
                    st.retries += 1;
                    ensure!(attempt < 100, "SET {} keeps failing: {e}", rh::key_name(i));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if attempt.is_multiple_of(5) {
                        // The client may hold a stale map pointing at removed
                        // nodes: start over from the current members.
                        conn = cluster_conn(&seeds).await?;
                    }
                }
            }
        }
        versions[k] = v;
        st.writes += 1;

        let k = rng.next(n);
        let i = w + k * WORKERS;
        if i >= KEYS {
            continue;
        }
        let mut attempt = 0u32;
        let got: Option<String> = loop {
            match redis::cmd("GET")
                .arg(rh::key_name(i))
                .query_async(&mut conn)
                .await
            {
                Ok(g) => break g,
                Err(e) => {
                    attempt += 1;
                    st.retries += 1;
                    ensure!(attempt < 100, "GET {} keeps failing: {e}", rh::key_name(i));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if attempt.is_multiple_of(5) {
                        conn = cluster_conn(&seeds).await?;
                    }
                }
            }
        };
        st.reads += 1;
        let want = rh::value_of(i, versions[k]);
        if got.as_deref() != Some(want.as_str()) && st.mismatches.len() < 20 {
            st.mismatches
                .push(format!("{}: got {got:?}, want {want}", rh::key_name(i)));
        }
    }
    Ok((versions, st))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reshard_3_5_2_4_under_load_loses_no_key() -> Result<()> {
    let t0 = Instant::now();
    let mut fleet = RedisFleet::new("reshard")?;
    fleet.start_grid(0..3, 2).await?;
    let c = rh::converge(&fleet.members(), desired(3, 2), &opts(), CONVERGE).await?;
    log_converged("bootstrap 3x2", &c);

    let initial = vec![1u32; KEYS];
    let t = Instant::now();
    rh::load(fleet.addr(0, 0), &initial).await?;
    eprintln!("loaded {KEYS} keys in {:.1?}", t.elapsed());

    let seeds = Arc::new(Mutex::new(addrs(&fleet)));
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(600);
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| tokio::spawn(worker(w, seeds.clone(), stop.clone(), deadline)))
        .collect();

    let mut shards = 3u32;
    let mut total_keys_moved = 0u64;
    let mut phase_result: Result<()> = Ok(());
    for next in [5u32, 2, 4] {
        let phase = async {
            for s in shards..next {
                fleet.start(s, 0).await?;
                fleet.start(s, 1).await?;
            }
            let d = desired(next, 2);
            let c = rh::converge(&fleet.members(), d, &opts(), CONVERGE)
                .await
                .with_context(|| format!("{shards} -> {next} shards"))?;
            log_converged(&format!("{shards} -> {next} shards"), &c);
            total_keys_moved += c.keys_moved;
            if next < shards {
                let expect: Vec<u32> = (next..shards).collect();
                ensure!(
                    c.last.removable_shards == expect,
                    "removable shards {:?}, expected {expect:?}",
                    c.last.removable_shards
                );
                // The operator deletes the StatefulSets of removed shards.
                for s in next..shards {
                    fleet.remove(s, 0);
                    fleet.remove(s, 1);
                }
            }
            *seeds.lock().map_err(|_| anyhow!("seed lock poisoned"))? = addrs(&fleet);
            assert_healthy(&addrs(&fleet), (next * 2) as usize).await?;
            assert_balanced(fleet.addr(0, 0), next as usize).await?;
            shards = next;
            anyhow::Ok(())
        };
        if let Err(e) = phase.await {
            phase_result = Err(e);
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut versions = vec![1u32; KEYS];
    let mut stats = LoadStats::default();
    for (w, h) in workers.into_iter().enumerate() {
        let (v, st) = h.await.context("writer task panicked")??;
        for (k, ver) in v.into_iter().enumerate() {
            let i = w + k * WORKERS;
            if i < KEYS {
                versions[i] = ver;
            }
        }
        stats.writes += st.writes;
        stats.reads += st.reads;
        stats.retries += st.retries;
        stats.mismatches.extend(st.mismatches);
    }
    phase_result.with_context(|| fleet.logs(15))?;
    eprintln!(
        "load during resharding: {} writes, {} reads, {} retried commands, {} keys moved in total",
        stats.writes, stats.reads, stats.retries, total_keys_moved
    );
    ensure!(
        stats.mismatches.is_empty(),
        "reads saw lost or stale values: {:?}",
        stats.mismatches
    );
    ensure!(
        stats.writes > 0 && stats.reads > 0,
        "the writer did not run"
    );

    let n = rh::verify(fleet.addr(0, 0), &versions).await?;
    ensure!(n == KEYS);
    let total: u64 = {
        let mut t = 0;
        for m in fleet.members() {
            if rh::myself(m.addr).await?[2].contains("master") {
                t += rh::query::<u64>(m.addr, &["DBSIZE"]).await?;
            }
        }
        t
    };
    ensure!(
        total == KEYS as u64,
        "primaries hold {total} keys, expected {KEYS}"
    );
    rh::cluster_check(fleet.addr(0, 0))?;
    eprintln!("reshard test took {:.1?}", t0.elapsed());
    Ok(())
}

// ---- interrupted migration ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_slot_move_is_finished_without_losing_keys() -> Result<()> {
    const N: usize = 30_000;
    let mut fleet = RedisFleet::new("interrupt")?;
    fleet.start_grid(0..2, 1).await?;
    rh::converge(&fleet.members(), desired(2, 1), &opts(), CONVERGE).await?;
    let versions = vec![1u32; N];
    rh::load(fleet.addr(0, 0), &versions).await?;
    // A slot with many keys, to move by hand.
    let tag = "{interrupt}";
    let slot = rh::key_slot(tag.as_bytes());
    let extra: Vec<String> = (0..20).map(|j| format!("{tag}:{j}")).collect();
    let owners = rh::slot_owners(fleet.addr(0, 0)).await?;
    let src = owners[slot as usize].ok_or_else(|| anyhow!("slot {slot} unowned"))?;
    for (j, k) in extra.iter().enumerate() {
        let _: () = rh::query(src, &["SET", k, &format!("real{j}")]).await?;
    }

    // A new shard joins; we open slot `slot` towards it by hand, the way a
    // crashed operator would leave it: IMPORTING and MIGRATING set, two keys
    // moved, and a third copied to the target without being deleted from
    // the source (a MIGRATE cut off mid-way) — with a stale value.
    let new = fleet.start(2, 0).await?;
    let _: () = rh::query(
        src,
        &["CLUSTER", "MEET", &new.addr.ip().to_string(), "6379"],
    )
    .await?;
    let src_id: String = rh::query(src, &["CLUSTER", "MYID"]).await?;
    let dst_id: String = rh::query(new.addr, &["CLUSTER", "MYID"]).await?;
    harness::wait_for(
        "new node to learn the cluster",
        Duration::from_secs(20),
        || async {
            // Knowing every node is not enough: until it has seen every
            // slot covered, the target answers CLUSTERDOWN to MIGRATE.
            let known: String = rh::query(new.addr, &["CLUSTER", "NODES"]).await?;
            let info = rh::cluster_info(new.addr).await?;
            let ok = info.get("cluster_state").map(String::as_str) == Some("ok");
            let n = known.lines().filter(|l| !l.contains("handshake")).count();
            Ok((ok && n == 3).then_some(()))
        },
    )
    .await?;
    let s = slot.to_string();
    let _: () = rh::query(new.addr, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &src_id]).await?;
    let _: () = rh::query(src, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &dst_id]).await?;
    let ip = new.addr.ip().to_string();
    let _: () = rh::query(
        src,
        &[
            "MIGRATE", &ip, "6379", "", "0", "5000", "KEYS", &extra[0], &extra[1],
        ],
    )
    .await?;
    {
        let mut c = rh::connect(new.addr).await?;
        let _: ((), ()) = redis::pipe()
            .cmd("ASKING")
            .cmd("SET")
            .arg(&extra[2])
            .arg("stale")
            .query_async(&mut c)
            .await?;
    }
    ensure!(!rh::open_slots(&addrs(&fleet)).await?.is_empty());

    // Step with a tiny key budget and one key per MIGRATE: it stops in the
    // middle of a batch, leaving slots open.
    let members = fleet.members();
    let d = desired(3, 1);
    let mut small = opts();
    small.max_keys_per_step = Some(300);
    small.keys_per_migrate = 1;
    let mut moved = 0;
    for _ in 0..100 {
        let r = topology::step(&members, &d, &small).await?;
        moved += r.keys_moved;
        if moved >= 600 {
            break;
        }
    }
    ensure!(moved >= 600, "migration did not start");
    let open = rh::open_slots(&addrs(&fleet)).await?;
    ensure!(!open.is_empty(), "the key budget should leave a slot open");
    eprintln!(
        "left open by the key budget: {} markers, e.g. {:?}",
        open.len(),
        open.first()
    );

    // The operator is killed mid-step several times: drop the future.
    let mut dropped = 0;
    for ms in [5u64, 20, 50, 100, 200, 300] {
        if tokio::time::timeout(
            Duration::from_millis(ms),
            topology::step(&members, &d, &small),
        )
        .await
        .is_err()
        {
            dropped += 1;
        }
    }
    eprintln!("dropped {dropped} step futures mid-flight");

    let c = rh::converge(&members, d, &opts(), CONVERGE)
        .await
        .with_context(|| fleet.logs(20))?;
    log_converged("after interruptions", &c);
    assert_healthy(&addrs(&fleet), 3).await?;
    assert_balanced(fleet.addr(0, 0), 3).await?;
    rh::verify(fleet.addr(0, 0), &versions).await?;
    // The source's values won: the stale copy was overwritten (BUSYKEY ->
    // REPLACE), nothing was lost.
    let mut cc = cluster_conn(&Mutex::new(addrs(&fleet))).await?;
    for (j, k) in extra.iter().enumerate() {
        let v: Option<String> = redis::cmd("GET").arg(k).query_async(&mut cc).await?;
        ensure!(
            v.as_deref() == Some(format!("real{j}").as_str()),
            "{k} = {v:?}"
        );
    }
    rh::cluster_check(fleet.addr(2, 0))?;
    Ok(())
}

// ---- the operator's ACL user --------------------------------------------------------

/// The operator logged in as its own ACL user (`operator::auth`), limited
/// to the commands it needs, forms a cluster, reshards it both ways with
/// keys in it (MIGRATE passes the login on to the target) and fails a
/// primary over; replicas log in as the replication user. The clients'
/// `default` user is left open here, so that the checks below need no
/// password; the rights under test are the operator's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_acl_user_can_do_all_the_topology_work_and_no_more() -> Result<()> {
    use operator::auth;
    const N: usize = 5_000;
    let internal = auth::Internal {
        operator: "operator-secret".into(),
        replication: "replication-secret".into(),
        probe: "probe-secret".into(),
        exporter: "exporter-secret".into(),
    };
    let client = auth::ClientAcl {
        user: "default".into(),
        hashes: vec![auth::sha256_hex("unused")],
        rotation_started: None,
    };
    let acl: String = auth::acl_file(&client, &internal)
        .lines()
        .map(|l| {
            if l.starts_with("user default ") {
                "user default on nopass ~* &* +@all\n".to_string()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("redis-topology-acl-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("users.acl"), acl)?;
    std::fs::write(dir.join("auth.conf"), auth::conf_file(&internal))?;
    let mut fleet = RedisFleet::new("acl")?;
    fleet.set_extra_conf(&format!(
        "aclfile {}/users.acl\ninclude {}/auth.conf",
        dir.display(),
        dir.display()
    ));
    let opts = StepOptions {
        login: Some(topology::Login {
            user: auth::OPERATOR_USER.into(),
            password: internal.operator.clone(),
        }),
        ..opts()
    };
    let result = async {
        fleet.start_grid(0..2, 2).await?;
        rh::converge(&fleet.members(), desired(2, 2), &opts, CONVERGE)
            .await
            .with_context(|| fleet.logs(20))?;
        for s in 0..2 {
            let repl: String = rh::query(fleet.addr(s, 1), &["INFO", "replication"]).await?;
            ensure!(repl.contains("master_link_status:up"), "shard {s}: {repl}");
        }
        let versions = vec![1u32; N];
        rh::load(fleet.addr(0, 0), &versions).await?;

        fleet.start(2, 0).await?;
        fleet.start(2, 1).await?;
        let out = rh::converge(&fleet.members(), desired(3, 2), &opts, CONVERGE)
            .await
            .with_context(|| fleet.logs(20))?;
        ensure!(
            out.keys_moved > 0 && out.errors.is_empty(),
            "2 -> 3: {out:?}"
        );
        let back = rh::converge(&fleet.members(), desired(2, 2), &opts, CONVERGE)
            .await
            .with_context(|| fleet.logs(20))?;
        ensure!(
            back.last.removable_shards.contains(&2),
            "3 -> 2: {:?}",
            back.last
        );
        fleet.remove(2, 0);
        fleet.remove(2, 1);
        rh::verify(fleet.addr(0, 0), &versions).await?;

        // A hand-over, as a rolling update asks for it.
        let hand_over = topology::HandOver {
            shard: 0,
            from: 0,
            to: 1,
        };
        let roll = StepOptions {
            hand_over: Some(hand_over),
            ..opts.clone()
        };
        rh::converge(&fleet.members(), desired(2, 2), &roll, CONVERGE).await?;
        ensure!(
            rh::myself(fleet.addr(0, 1)).await?[2].contains("master"),
            "ordinal 1 did not take over"
        );

        // No more than that: the operator's login cannot touch data.
        let node = fleet.addr(0, 1);
        let mut c = logged_in(node, auth::OPERATOR_USER, &internal.operator).await?;
        refused(
            &mut c,
            "the operator's user",
            &[&["FLUSHALL"], &["GET", "key:0"], &["CONFIG", "GET", "*"]],
        )
        .await?;
        // The exporter's login reads INFO and CLUSTER INFO, and nothing
        // that holds a key, a value or a password.
        let mut e = logged_in(node, auth::EXPORTER_USER, &internal.exporter).await?;
        let info: String = redis::cmd("INFO").arg("ALL").query_async(&mut e).await?;
        ensure!(info.contains("used_memory:"), "{info}");
        let cluster: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async(&mut e)
            .await?;
        ensure!(cluster.contains("cluster_state:ok"), "{cluster}");
        refused(
            &mut e,
            "the exporter's user",
            &[
                &["GET", "key:0"],
                &["SCAN", "0"],
                &["CONFIG", "GET", "masterauth"],
                &["CLIENT", "LIST"],
                &["FLUSHALL"],
            ],
        )
        .await?;
        rh::verify(node, &versions).await?;
        Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// A connection to `node` logged in as `user`.
async fn logged_in(
    node: SocketAddr,
    user: &str,
    password: &str,
) -> Result<redis::aio::MultiplexedConnection> {
    let mut c = redis::Client::open(rh::url_with(node, None))?
        .get_multiplexed_async_connection()
        .await?;
    let _: () = redis::cmd("AUTH")
        .arg(user)
        .arg(password)
        .query_async(&mut c)
        .await?;
    Ok(c)
}

/// Checks that each of `commands` is refused to `who` with NOPERM.
async fn refused(
    c: &mut redis::aio::MultiplexedConnection,
    who: &str,
    commands: &[&[&str]],
) -> Result<()> {
    for cmd in commands {
        let err = redis::cmd(cmd[0])
            .arg(&cmd[1..])
            .query_async::<redis::Value>(c)
            .await
            .err()
            .with_context(|| format!("{cmd:?} was allowed to {who}"))?;
        ensure!(
            err.to_string().to_lowercase().contains("noperm"),
            "{cmd:?}: {err}"
        );
    }
    Ok(())
}

// ---- replica scale-down after a failover ------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_scale_down_fails_over_back_first() -> Result<()> {
    const N: usize = 20_000;
    let mut fleet = RedisFleet::new("replicas")?;
    fleet.start_grid(0..2, 2).await?;
    rh::converge(&fleet.members(), desired(2, 2), &opts(), CONVERGE).await?;
    let versions = vec![1u32; N];
    rh::load(fleet.addr(0, 0), &versions).await?;

    // The highest ordinal of shard 0 becomes primary.
    let (p, r) = (fleet.addr(0, 0), fleet.addr(0, 1));
    let _: () = rh::query(r, &["CLUSTER", "FAILOVER"]).await?;
    harness::wait_for(
        "ordinal 1 to take over",
        Duration::from_secs(30),
        || async { Ok(replica_of(p, r).await?.then_some(())) },
    )
    .await?;

    let c = rh::converge(&fleet.members(), desired(2, 1), &opts(), CONVERGE)
        .await
        .with_context(|| fleet.logs(20))?;
    log_converged("replicas 2 -> 1", &c);
    ensure!(c.last.replicas_removable, "{:?}", c.last);
    ensure!(
        c.actions
            .iter()
            .any(|a| a.starts_with(&format!("FAILOVER to {p}"))),
        "no failover back: {:?}",
        c.actions
    );
    ensure!(
        rh::myself(p).await?[2].contains("master"),
        "ordinal 0 is not primary"
    );
    // Nothing was moved between shards.
    ensure!(c.slots_moved == 0, "{c:?}");

    // The operator shrinks the StatefulSets.
    fleet.remove(0, 1);
    fleet.remove(1, 1);
    let left = addrs(&fleet);
    assert_healthy(&left, 2).await?;
    rh::verify(p, &versions).await?;
    let r = topology::step(&fleet.members(), &desired(2, 1), &opts()).await?;
    ensure!(r.converged && r.actions_taken.is_empty(), "{r:?}");
    rh::cluster_check(p)?;
    Ok(())
}

// ---- restarts --------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_nodes_rejoin_without_rebootstrap() -> Result<()> {
    const N: usize = 20_000;
    let mut fleet = RedisFleet::new("restart")?;
    // This test SIGKILLs primaries. With the default `appendfsync everysec`
    // a loaded machine may postpone AOF writes for up to 2 s while already
    // acknowledging them, and a primary killed in that window comes back
    // without them (and its replica resyncs from it): Redis's durability
    // trade-off, not the topology's. Fsync every write so that the test
    // checks the topology alone.
    fleet.set_extra_conf("appendfsync always");
    fleet.start_grid(0..3, 2).await?;
    let d = desired(3, 2);
    rh::converge(&fleet.members(), d, &opts(), CONVERGE).await?;
    let versions = vec![1u32; N];
    rh::load(fleet.addr(0, 0), &versions).await?;

    for (s, o) in [(1u32, 0u32), (2, 1)] {
        let a = fleet.addr(s, o);
        let before = rh::myself(a).await?;
        fleet.node(s, o)?.kill();
        // The operator reconciles while the pod is down: it must wait, and
        // change nothing.
        let mut quick = opts();
        quick.time_budget = Duration::from_millis(500);
        let r = topology::step(&fleet.members(), &d, &quick).await?;
        ensure!(!r.converged, "converged with {a} down: {r:?}");
        ensure!(
            r.actions_taken.is_empty(),
            "acted while {a} was down: {:?}",
            r.actions_taken
        );

        fleet.node(s, o)?.restart()?;
        fleet
            .node(s, o)?
            .wait_ready(Duration::from_secs(20))
            .await?;
        let c = rh::converge(&fleet.members(), d, &opts(), CONVERGE)
            .await
            .with_context(|| fleet.logs(20))?;
        log_converged(&format!("restart of {a}"), &c);
        ensure!(c.actions.is_empty(), "acted on a restart: {:?}", c.actions);
        let after = rh::myself(a).await?;
        ensure!(
            after[0] == before[0],
            "node id changed: {} -> {}",
            before[0],
            after[0]
        );
        ensure!(
            after[2] == before[2],
            "role changed: {} -> {}",
            before[2],
            after[2]
        );
        ensure!(
            after[8..] == before[8..],
            "slots changed: {:?} -> {:?}",
            &before[8..],
            &after[8..]
        );
    }
    assert_healthy(&addrs(&fleet), 6).await?;

    // The whole cluster restarts and every pod gets a new IP: nodes.conf
    // only knows the old ones, so nothing connects until the nodes are told.
    let before: BTreeMap<(u32, u32), Vec<String>> = {
        let mut b = BTreeMap::new();
        for m in fleet.members() {
            b.insert((m.shard, m.ordinal), rh::myself(m.addr).await?);
        }
        b
    };
    for m in fleet.members() {
        fleet.node(m.shard, m.ordinal)?.kill();
    }
    for m in fleet.members() {
        fleet.reschedule(m.shard, m.ordinal)?;
    }
    for m in fleet.members() {
        fleet
            .node(m.shard, m.ordinal)?
            .wait_ready(Duration::from_secs(20))
            .await?;
    }
    let c = rh::converge(&fleet.members(), d, &opts(), CONVERGE)
        .await
        .with_context(|| fleet.logs(20))?;
    log_converged("restart with new IPs", &c);
    ensure!(
        c.actions.iter().all(|a| a.starts_with("MEET")),
        "only MEETs expected: {:?}",
        c.actions
    );
    for m in fleet.members() {
        let after = rh::myself(m.addr).await?;
        let b = &before[&(m.shard, m.ordinal)];
        ensure!(after[0] == b[0], "{}: node id changed", m.addr);
        ensure!(after[8..] == b[8..], "{}: slots changed", m.addr);
    }
    assert_healthy(&addrs(&fleet), 6).await?;
    rh::verify(fleet.addr(0, 0), &versions).await?;
    rh::cluster_check(fleet.addr(0, 0))?;
    Ok(())
}

/// The only node of a shard dies with its data, and the step that forgets
/// it fails before it can give the slots to the shard's new node (here the
/// new node refuses ADDSLOTSRANGE through an ACL). The loss must still be
/// reported, and only once: the next steps see the slots merely uncovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_failing_after_forgetting_a_lost_node_still_reports_the_loss_once() -> Result<()> {
    let mut fleet = RedisFleet::new("lossreport")?;
    fleet.start_grid(0..3, 1).await?;
    let d = Desired {
        shards: 3,
        nodes_per_shard: 1,
        loss: topology::LossPolicy {
            persistent: false,
            recover_empty: true,
        },
    };
    rh::converge(&fleet.members(), d, &opts(), CONVERGE).await?;
    rh::load(fleet.addr(0, 0), &vec![1u32; 2_000]).await?;

    // A new, empty pod at the same address.
    fleet.node(1, 0)?.kill();
    fleet.remove(1, 0);
    let fresh = fleet.start(1, 0).await?.addr;
    let _: String = rh::query(
        fresh,
        &["ACL", "SETUSER", "default", "-cluster|addslotsrange"],
    )
    .await?;

    let mut reported = Vec::new();
    let mut failed = None;
    let start = Instant::now();
    while failed.is_none() {
        ensure!(
            start.elapsed() < CONVERGE,
            "no step failed on the refused ADDSLOTSRANGE; reported {reported:?}"
        );
        match topology::step(&fleet.members(), &d, &opts()).await {
            Ok(r) => reported.extend(r.data_lost),
            Err(e) => {
                reported.extend(e.report.data_lost.iter().cloned());
                failed = Some(e.to_string());
            }
        }
    }
    let failed = failed.unwrap_or_default();
    ensure!(
        failed.contains("ADDSLOTSRANGE"),
        "unexpected failure: {failed}"
    );

    let _: String = rh::query(fresh, &["ACL", "SETUSER", "default", "+@all"]).await?;
    let c = rh::converge(&fleet.members(), d, &opts(), CONVERGE)
        .await
        .with_context(|| fleet.logs(20))?;
    reported.extend(c.data_lost);
    ensure!(
        reported.len() == 1 && reported[0].shard == 1,
        "the loss of shard 1 must be reported once, got {reported:?} (step error: {failed})"
    );
    assert_healthy(&addrs(&fleet), 3).await?;
    Ok(())
}

/// Bad input is an error naming the problem, never a panic or a guess.
#[tokio::test]
async fn invalid_desired_is_rejected() -> Result<()> {
    let m = vec![operator::topology::Member {
        shard: 0,
        ordinal: 0,
        addr: "127.0.0.1:1".parse()?,
    }];
    for d in [desired(0, 1), desired(1, 0), desired(20_000, 1)] {
        match topology::step(&m, &d, &opts()).await {
            Err(e) if matches!(e.error, topology::TopologyError::InvalidDesired(_)) => {}
            other => bail!("{d:?}: {other:?}"),
        }
    }
    let dup = vec![m[0].clone(), m[0].clone()];
    match topology::step(&dup, &desired(1, 1), &opts()).await {
        Err(topology::StepError {
            error: topology::TopologyError::InvalidDesired(why),
            ..
        }) => ensure!(
            why == format!("address {} is listed for two members", m[0].addr),
            "{why}"
        ),
        other => bail!("two members at one address: {other:?}"),
    }
    Ok(())
}
