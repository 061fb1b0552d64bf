//! Real `redis-server` processes in cluster mode, for proving the topology
//! module against the real thing rather than a model of it.
//!
//! Each node binds its own loopback IP (`127.B.C.x`, port 6379, bus 16379),
//! announces it and sends from it (`cluster-announce-ip`, `bind-source-addr`:
//! without them nodes learn each other as 127.0.0.1 and the cluster never
//! forms), and keeps its `nodes.conf` and AOF in its own directory so that it
//! can be killed and restarted as the same node. Processes are
//! [`ManagedChild`]ren: killed on drop, and by the kernel if the test dies.
//!
//! Also here: key/slot helpers, a bulk loader and checker, `redis-cli
//! --cluster check`, and [`converge`], the bounded loop that drives
//! `operator::topology::step` the way the reconcile loop does.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use operator::topology::{self, Desired, Member, Report, StepOptions};
use redis::aio::MultiplexedConnection;
use redis::{IntoConnectionInfo, Value};

use crate::process::{ManagedChild, log_tail};

/// `cluster-node-timeout` of test nodes, in ms. Nothing in the tests waits
/// for failure detection, and a longer timeout keeps a loaded CI machine
/// from failing nodes over behind the tests' back.
pub const NODE_TIMEOUT_MS: u32 = 5000;
/// Keep node directories after the test (for debugging).
pub const KEEP_ENV: &str = "REDIS_TEST_KEEP";

/// Path of a Redis binary; fails loudly (never skips) when it is missing.
pub fn redis_binary(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!(
                "{name} not found on PATH: install Redis with `make deps` \
                 (apt-get install -y redis-server redis-tools)"
            )
        })
}

/// One redis-server process in cluster mode.
#[derive(Debug)]
pub struct RedisNode {
    pub addr: SocketAddr,
    dir: PathBuf,
    child: Option<ManagedChild>,
    starts: u32,
    extra_conf: String,
}

impl RedisNode {
    /// Writes `redis.conf` in `dir` and starts the server.
    /// `extra_conf` is appended to the generated redis.conf.
    pub fn start(ip: Ipv4Addr, dir: &Path, extra_conf: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut node = Self {
            addr: SocketAddr::new(ip.into(), 6379),
            dir: dir.to_owned(),
            child: None,
            starts: 0,
            extra_conf: extra_conf.to_owned(),
        };
        node.write_conf()?;
        node.spawn()?;
        Ok(node)
    }

    fn write_conf(&self) -> Result<()> {
        let ip = self.addr.ip();
        // repl-diskless-sync-delay 0: a replica syncs at once instead of after
        // the default 5 s wait for more replicas. Only speeds the tests up;
        // the topology logic does not depend on it.
        let conf = format!(
            "bind {ip}\nport 6379\nprotected-mode no\ndaemonize no\n\
             cluster-enabled yes\ncluster-config-file nodes.conf\n\
             cluster-node-timeout {NODE_TIMEOUT_MS}\n\
             cluster-announce-ip {ip}\nbind-source-addr {ip}\n\
             appendonly yes\nsave \"\"\nrepl-diskless-sync-delay 0\n\
             dir {}\nloglevel notice\n{}\n",
            self.dir.display(),
            self.extra_conf
        );
        std::fs::write(self.dir.join("redis.conf"), conf).context("writing redis.conf")
    }

    /// Starts the same node (same directory: same nodes.conf and data) on
    /// another IP, like a pod rescheduled with a new pod IP.
    pub fn restart_on(&mut self, ip: Ipv4Addr) -> Result<()> {
        self.kill();
        self.addr = SocketAddr::new(ip.into(), 6379);
        self.write_conf()?;
        self.spawn()
    }

    fn spawn(&mut self) -> Result<()> {
        let bin = redis_binary("redis-server")?;
        self.starts += 1;
        let log = self.dir.join(format!("redis.{}.log", self.starts));
        let conf = self.dir.join("redis.conf");
        let child = ManagedChild::spawn(
            &format!("redis-server {}", self.addr),
            &bin,
            &[conf.display().to_string()],
            &log,
        )?;
        self.child = Some(child);
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Errors when the server process has exited (or was never started).
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.as_mut() {
            Some(c) => c.check_running(),
            None => Err(anyhow!("redis-server {} is not running", self.addr)),
        }
    }

    /// SIGKILL, like a crashed pod; nodes.conf and the AOF stay.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.wait_or_kill(Duration::ZERO);
        }
    }

    /// SIGTERM, then SIGKILL after `grace`, as a kubelet stops a container:
    /// Redis flushes its AOF on the way out.
    pub fn stop(&mut self, grace: Duration) {
        if let Some(mut c) = self.child.take() {
            c.terminate();
            c.wait_or_kill(grace);
        }
    }

    /// Starts the same node again (same IP, same directory).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }

    /// Waits until the server answers PING (and has loaded its data).
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.child.as_mut() {
                c.check_running()?;
            }
            let pong = async {
                let mut c = connect(self.addr).await?;
                let r: String = redis::cmd("PING").query_async(&mut c).await?;
                anyhow::Ok(r)
            };
            match tokio::time::timeout(Duration::from_secs(2), pong).await {
                Ok(Ok(r)) if r == "PONG" => return Ok(()),
                _ if Instant::now() > deadline => {
                    bail!(
                        "{} not ready after {timeout:?}; log:\n{}",
                        self.addr,
                        self.log_tail(30)
                    )
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    pub fn log_tail(&self, n: usize) -> String {
        log_tail(&self.dir.join(format!("redis.{}.log", self.starts)), n)
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        // Straight to SIGKILL: a graceful shutdown only slows the tests down.
        self.kill();
    }
}

/// A set of nodes laid out like the operator's pods: `(shard, ordinal)` on
/// `127.B.C.(8*shard + ordinal + 1)` (+128 once rescheduled), where
/// `127.B.C.0/24` is private to this fleet (so concurrent tests and test runs
/// never collide).
pub struct RedisFleet {
    base: PathBuf,
    net: (u8, u8),
    nodes: BTreeMap<(u32, u32), RedisNode>,
    generation: u32,
    extra_conf: String,
}

impl RedisFleet {
    pub fn new(name: &str) -> Result<Self> {
        redis_binary("redis-server")?;
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let b = 64 + (std::process::id() % 64) as u8;
        let mut net = None;
        for _ in 0..250 {
            let c = (SEQ.fetch_add(1, Ordering::Relaxed) % 250 + 1) as u8;
            // Free if nothing listens on the first addresses of the block.
            let probe = [1u8, 2, 9, 10, 129, 130].iter().all(|&d| {
                let ip = Ipv4Addr::new(127, b, c, d);
                TcpListener::bind((ip, 6379)).is_ok() && TcpListener::bind((ip, 16379)).is_ok()
            });
            if probe {
                net = Some((b, c));
                break;
            }
        }
        let net = net.ok_or_else(|| anyhow!("no free 127.{b}.x.0/24 block for redis nodes"))?;
        let base = std::env::temp_dir().join(format!(
            "redis-topology-{name}-{}-{}-{}",
            std::process::id(),
            net.0,
            net.1
        ));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
        Ok(Self {
            base,
            net,
            nodes: BTreeMap::new(),
            generation: 0,
            extra_conf: String::new(),
        })
    }

    /// Extra redis.conf lines for the nodes started from now on.
    pub fn set_extra_conf(&mut self, conf: &str) {
        self.extra_conf = conf.to_owned();
    }

    /// The first address of `(shard, ordinal)`.
    pub fn ip(&self, shard: u32, ordinal: u32) -> Ipv4Addr {
        Ipv4Addr::new(127, self.net.0, self.net.1, (8 * shard + ordinal + 1) as u8)
    }

    /// Restarts a node on its other address (same data, new pod IP).
    pub fn reschedule(&mut self, shard: u32, ordinal: u32) -> Result<SocketAddr> {
        let first = self.ip(shard, ordinal);
        let node = self.node(shard, ordinal)?;
        let ip = if node.addr.ip() == first {
            let o = first.octets();
            Ipv4Addr::new(127, o[1], o[2], o[3] + 128)
        } else {
            first
        };
        node.restart_on(ip)?;
        Ok(node.addr)
    }

    /// Starts a fresh node for `(shard, ordinal)` (a new pod: new directory).
    pub async fn start(&mut self, shard: u32, ordinal: u32) -> Result<Member> {
        ensure!(
            shard < 15 && ordinal < 8,
            "fleet layout holds 15 shards x 8 nodes"
        );
        ensure!(
            !self.nodes.contains_key(&(shard, ordinal)),
            "node {shard}/{ordinal} already runs"
        );
        self.generation += 1;
        let dir = self
            .base
            .join(format!("s{shard}-o{ordinal}-g{}", self.generation));
        let mut node = RedisNode::start(self.ip(shard, ordinal), &dir, &self.extra_conf)?;
        node.wait_ready(Duration::from_secs(20)).await?;
        let m = Member {
            shard,
            ordinal,
            addr: node.addr,
        };
        self.nodes.insert((shard, ordinal), node);
        Ok(m)
    }

    /// Starts `shards` x `per_shard` nodes.
    pub async fn start_grid(&mut self, shards: std::ops::Range<u32>, per_shard: u32) -> Result<()> {
        for s in shards {
            for o in 0..per_shard {
                self.start(s, o).await?;
            }
        }
        Ok(())
    }

    pub fn members(&self) -> Vec<Member> {
        self.nodes
            .iter()
            .map(|(&(shard, ordinal), n)| Member {
                shard,
                ordinal,
                addr: n.addr,
            })
            .collect()
    }

    /// Current address of `(shard, ordinal)` (its first one if not running).
    pub fn addr(&self, shard: u32, ordinal: u32) -> SocketAddr {
        match self.nodes.get(&(shard, ordinal)) {
            Some(n) => n.addr,
            None => SocketAddr::new(self.ip(shard, ordinal).into(), 6379),
        }
    }

    pub fn node(&mut self, shard: u32, ordinal: u32) -> Result<&mut RedisNode> {
        self.nodes
            .get_mut(&(shard, ordinal))
            .ok_or_else(|| anyhow!("no node {shard}/{ordinal}"))
    }

    /// Kills and forgets a node (the operator deleted its pod).
    pub fn remove(&mut self, shard: u32, ordinal: u32) {
        self.nodes.remove(&(shard, ordinal));
    }

    /// Last log lines of every node, for failure messages.
    pub fn logs(&self, lines: usize) -> String {
        self.nodes
            .values()
            .map(|n| format!("--- {}:\n{}", n.addr, n.log_tail(lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for RedisFleet {
    fn drop(&mut self) {
        self.nodes.clear();
        if std::env::var_os(KEEP_ENV).is_none() {
            let _ = std::fs::remove_dir_all(&self.base);
        } else {
            eprintln!("redis fleet kept in {}", self.base.display());
        }
    }
}

// ---- talking to nodes ---------------------------------------------------------

/// The clients' password the helpers below log in with (as `default`);
/// `None` for nodes without authentication. One per test process: a test
/// sets it for the cluster it made (tests that make clusters with auth run
/// one at a time).
static PASSWORD: std::sync::RwLock<Option<String>> = std::sync::RwLock::new(None);

/// Sets the password the helpers log in with (one per test process: a
/// test sets it for the cluster it made).
pub fn set_password(password: Option<String>) {
    *PASSWORD.write().unwrap_or_else(|e| e.into_inner()) = password;
}

fn password() -> Option<String> {
    PASSWORD.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The nodes speak TLS: the CA that signed their certificate, and a file
/// that holds it (for `redis-cli`).
#[derive(Debug, Clone)]
pub struct Tls {
    pub ca_pem: String,
    pub ca_file: PathBuf,
}

/// With TLS, like [`PASSWORD`]: one per test process.
static TLS: std::sync::RwLock<Option<Tls>> = std::sync::RwLock::new(None);

/// Makes the helpers (and the [`crate::writer`]) speak TLS, trusting the CA
/// in `tls`; `None`: plain TCP.
pub fn set_tls(tls: Option<Tls>) {
    *TLS.write().unwrap_or_else(|e| e.into_inner()) = tls;
}

pub fn tls() -> Option<Tls> {
    TLS.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// A `redis://` URL for `addr` that logs in with [`set_password`]'s
/// (`rediss://` after [`set_tls`]).
pub fn url(addr: SocketAddr) -> String {
    url_with(addr, password().as_deref())
}

/// A `redis://` URL for `addr`, logged in as `default` with `password`
/// (`rediss://` after [`set_tls`]).
pub fn url_with(addr: SocketAddr, password: Option<&str>) -> String {
    let scheme = if tls().is_some() { "rediss" } else { "redis" };
    match password {
        Some(p) => format!("{scheme}://:{p}@{addr}"),
        None => format!("{scheme}://{addr}"),
    }
}

/// A connection to one node, for looking at it. With TLS it checks no
/// certificate: what is checked is the operator's and the writer's way in.
pub async fn connect(addr: SocketAddr) -> Result<MultiplexedConnection> {
    let (host, port) = (addr.ip().to_string(), addr.port());
    let node = match tls() {
        Some(_) => redis::ConnectionAddr::TcpTls {
            host,
            port,
            insecure: true,
            tls_params: None,
        },
        None => redis::ConnectionAddr::Tcp(host, port),
    };
    let mut info = node.into_connection_info()?;
    if let Some(p) = password() {
        let settings = info.redis_settings().clone().set_password(p);
        info = info.set_redis_settings(settings);
    }
    let client = redis::Client::open(info)?;
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(30)));
    client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
        .with_context(|| format!("connecting to {addr}"))
}

/// The certificate (DER) a TLS node at `addr` presents to a client that
/// trusts the CAs of `ca_pem` and checks `server_name`.
pub async fn served_certificate(
    addr: SocketAddr,
    ca_pem: &str,
    server_name: &str,
) -> Result<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string())?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS to {addr}"))?;
    let certs = tls.get_ref().1.peer_certificates().unwrap_or_default();
    Ok(certs.first().map(|c| c.to_vec()).unwrap_or_default())
}

/// Runs one command on one node.
pub async fn query<T: redis::FromRedisValue>(addr: SocketAddr, args: &[&str]) -> Result<T> {
    let mut c = connect(addr).await?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(&mut c)
        .await
        .with_context(|| format!("{addr}: {}", args.join(" ")))
}

/// `CLUSTER INFO` as a map.
pub async fn cluster_info(addr: SocketAddr) -> Result<BTreeMap<String, String>> {
    let s: String = query(addr, &["CLUSTER", "INFO"]).await?;
    Ok(s.lines()
        .filter_map(|l| l.trim().split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// The `myself` line of `CLUSTER NODES`, split into fields.
pub async fn myself(addr: SocketAddr) -> Result<Vec<String>> {
    let s: String = query(addr, &["CLUSTER", "NODES"]).await?;
    s.lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|f| f.get(2).is_some_and(|fl| fl.contains("myself")))
        .ok_or_else(|| anyhow!("{addr}: no myself line in CLUSTER NODES"))
}

/// Slots currently marked importing/migrating on any of `addrs`.
pub async fn open_slots(addrs: &[SocketAddr]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for &a in addrs {
        for f in myself(a).await?.iter().skip(8) {
            if f.starts_with('[') {
                out.push(format!("{a} {f}"));
            }
        }
    }
    Ok(out)
}

/// Primary address of every slot, from `CLUSTER SLOTS` on `addr`.
pub async fn slot_owners(addr: SocketAddr) -> Result<Vec<Option<SocketAddr>>> {
    let v: Value = query(addr, &["CLUSTER", "SLOTS"]).await?;
    let mut owners = vec![None; 16384];
    let Value::Array(ranges) = v else {
        bail!("CLUSTER SLOTS: unexpected reply {v:?}")
    };
    for r in ranges {
        let Value::Array(r) = r else { continue };
        let (Some(Value::Int(a)), Some(Value::Int(b)), Some(Value::Array(node))) =
            (r.first(), r.get(1), r.get(2))
        else {
            bail!("CLUSTER SLOTS: bad range {r:?}")
        };
        let (Some(Value::BulkString(ip)), Some(Value::Int(port))) = (node.first(), node.get(1))
        else {
            bail!("CLUSTER SLOTS: bad node {node:?}")
        };
        let ip: std::net::IpAddr = String::from_utf8_lossy(ip).parse()?;
        for s in *a..=*b {
            owners[s as usize] = Some(SocketAddr::new(ip, *port as u16));
        }
    }
    Ok(owners)
}

/// Slots per primary, from `CLUSTER SLOTS`.
pub async fn slot_counts(addr: SocketAddr) -> Result<BTreeMap<SocketAddr, usize>> {
    let mut c = BTreeMap::new();
    for o in slot_owners(addr).await?.into_iter().flatten() {
        *c.entry(o).or_default() += 1;
    }
    Ok(c)
}

/// `redis-cli --cluster check`: exit 0, no `[ERR]`, no open slot.
pub fn cluster_check(addr: SocketAddr) -> Result<String> {
    let mut cmd = Command::new(redis_binary("redis-cli")?);
    if let Some(p) = password() {
        cmd.env("REDISCLI_AUTH", p);
    }
    if let Some(tls) = tls() {
        cmd.arg("--tls").arg("--cacert").arg(&tls.ca_file);
    }
    let out = cmd
        .args(["--cluster", "check", &addr.to_string()])
        .output()
        .context("running redis-cli --cluster check")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success(),
        "redis-cli --cluster check failed:\n{text}"
    );
    ensure!(
        !text.contains("[ERR]"),
        "redis-cli --cluster check reports errors:\n{text}"
    );
    // Open slots are reported as "[WARNING] ... importing/migrating state".
    ensure!(
        !text.contains("[WARNING]"),
        "redis-cli --cluster check warns:\n{text}"
    );
    ensure!(
        text.contains("[OK] All 16384 slots covered"),
        "redis-cli --cluster check: slots not covered:\n{text}"
    );
    Ok(text)
}

// ---- keys ------------------------------------------------------------------------

/// Redis Cluster hash slot of a key (CRC16/XMODEM, with `{hash tags}`).
pub fn key_slot(key: &[u8]) -> u16 {
    let k = match key.iter().position(|&b| b == b'{') {
        Some(s) => match key[s + 1..].iter().position(|&b| b == b'}') {
            Some(e) if e > 0 => &key[s + 1..s + 1 + e],
            _ => key,
        },
        None => key,
    };
    let mut crc: u16 = 0;
    for &b in k {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

pub fn key_name(i: usize) -> String {
    format!("key:{i}")
}

pub fn value_of(i: usize, version: u32) -> String {
    format!("v{version}:{i}")
}

/// Writes `key:i = v<version>:i` for every `i` with `versions[i] > 0`, by
/// pipelines to each slot's owner.
pub async fn load(seed: SocketAddr, versions: &[u32]) -> Result<()> {
    let owners = slot_owners(seed).await?;
    let mut by_node: BTreeMap<SocketAddr, Vec<usize>> = BTreeMap::new();
    for (i, &v) in versions.iter().enumerate() {
        if v > 0 {
            let s = key_slot(key_name(i).as_bytes());
            let o = owners[s as usize].ok_or_else(|| anyhow!("slot {s} has no owner"))?;
            by_node.entry(o).or_default().push(i);
        }
    }
    let jobs = by_node.into_iter().map(|(addr, keys)| async move {
        let mut c = connect(addr).await?;
        for chunk in keys.chunks(1000) {
            let mut p = redis::pipe();
            for &i in chunk {
                p.cmd("SET")
                    .arg(key_name(i))
                    .arg(value_of(i, versions[i]))
                    .ignore();
            }
            p.query_async::<()>(&mut c)
                .await
                .with_context(|| format!("loading keys into {addr}"))?;
        }
        anyhow::Ok(())
    });
    for r in futures::future::join_all(jobs).await {
        r?;
    }
    Ok(())
}

/// Reads every key from its slot's owner (no redirections allowed: the
/// cluster must be settled) and compares with `versions` (0 = absent).
/// Returns the number of keys checked.
pub async fn verify(seed: SocketAddr, versions: &[u32]) -> Result<usize> {
    let owners = slot_owners(seed).await?;
    let mut by_node: BTreeMap<SocketAddr, Vec<usize>> = BTreeMap::new();
    for i in 0..versions.len() {
        let s = key_slot(key_name(i).as_bytes());
        let o = owners[s as usize].ok_or_else(|| anyhow!("slot {s} has no owner"))?;
        by_node.entry(o).or_default().push(i);
    }
    let jobs = by_node.into_iter().map(|(addr, keys)| async move {
        let mut c = connect(addr).await?;
        let mut bad = Vec::new();
        for chunk in keys.chunks(1000) {
            let mut p = redis::pipe();
            for &i in chunk {
                p.cmd("GET").arg(key_name(i));
            }
            let got: Vec<Option<String>> = p
                .query_async(&mut c)
                .await
                .with_context(|| format!("reading keys from {addr}"))?;
            for (&i, g) in chunk.iter().zip(got) {
                let want = (versions[i] > 0).then(|| value_of(i, versions[i]));
                if g != want && bad.len() < 10 {
                    bad.push(format!(
                        "{} on {addr}: got {g:?}, want {want:?}",
                        key_name(i)
                    ));
                }
            }
        }
        anyhow::Ok((keys.len(), bad))
    });
    let mut checked = 0;
    let mut bad = Vec::new();
    for r in futures::future::join_all(jobs).await {
        let (n, b) = r?;
        checked += n;
        bad.extend(b);
    }
    ensure!(bad.is_empty(), "keys lost or stale:\n{}", bad.join("\n"));
    Ok(checked)
}

// ---- driving the topology module ----------------------------------------------

/// Totals over the `step` calls of one [`converge`].
#[derive(Debug, Default, Clone)]
pub struct Converged {
    pub calls: u32,
    pub errors: Vec<String>,
    pub slots_moved: u64,
    pub keys_moved: u64,
    pub migration_time: Duration,
    pub elapsed: Duration,
    pub actions: Vec<String>,
    /// Every loss the steps reported.
    pub data_lost: Vec<topology::LostShard>,
    pub last: Report,
}

/// Calls `step` until it reports converged, like the reconcile loop does:
/// bounded by `timeout` and a call count; a few transient errors are
/// tolerated (and returned), more fail the test.
pub async fn converge(
    members: &[Member],
    desired: Desired,
    opts: &StepOptions,
    timeout: Duration,
) -> Result<Converged> {
    let start = Instant::now();
    let mut c = Converged::default();
    const MAX_CALLS: u32 = 5_000;
    const MAX_ERRORS: usize = 5;
    while c.calls < MAX_CALLS {
        ensure!(
            start.elapsed() < timeout,
            "not converged after {timeout:?} ({} calls); last: {:?}; errors: {:?}",
            c.calls,
            c.last.message,
            c.errors
        );
        c.calls += 1;
        match topology::step(members, &desired, opts).await {
            Ok(r) => {
                c.slots_moved += u64::from(r.slots_moved);
                c.keys_moved += r.keys_moved;
                c.migration_time += r.migration_time;
                c.actions.extend(r.actions_taken.iter().cloned());
                c.data_lost.extend(r.data_lost.iter().cloned());
                let done = r.converged;
                let idle = r.actions_taken.is_empty();
                c.last = r;
                if done {
                    c.elapsed = start.elapsed();
                    return Ok(c);
                }
                if idle {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Err(e) => {
                // What the failed step did still happened.
                c.actions.extend(e.report.actions_taken.iter().cloned());
                c.data_lost.extend(e.report.data_lost.iter().cloned());
                eprintln!("step error (retrying): {e}");
                c.errors.push(e.to_string());
                ensure!(
                    c.errors.len() <= MAX_ERRORS,
                    "too many step errors: {:?}",
                    c.errors
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    bail!("not converged after {MAX_CALLS} calls: {}", c.last.message)
}
