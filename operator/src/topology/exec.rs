//! Executes planned actions over RESP, one connection per node (plain, or
//! TLS with `spec.tls`).
//!
//! Every action is idempotent: the server errors that only mean "already
//! done" (already the owner, unknown node on FORGET...) are accepted, so a
//! step interrupted anywhere and run again converges. Anything else is an
//! error naming the node and the command; the next step re-observes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::future::join_all;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Pipeline, Value};

use super::bounded;
use super::error::TopologyError;
use super::plan::{Action, NodeRef};
use super::{Fence, Login, StepOptions, TlsClient};

/// Upper bound on GETKEYSINSLOT/MIGRATE rounds for one batch of slots
/// (each round moves up to `keys_per_migrate` keys of every slot).
const MAX_DRAIN_ROUNDS: u32 = 1_000_000;
/// Upper bound on waiting for a manual failover to complete.
const FAILOVER_WAIT: Duration = Duration::from_secs(10);
/// How long a failover request may go unanswered before it is repeated.
const FAILOVER_RETRY: Duration = Duration::from_secs(2);

/// Open connections, by node address.
pub(crate) struct Conns {
    map: HashMap<SocketAddr, MultiplexedConnection>,
    pub(crate) connect_timeout: Duration,
    pub(crate) command_timeout: Duration,
    pub(crate) login: Option<Login>,
    pub(crate) tls: Option<TlsClient>,
    fence: Fence,
}

impl Conns {
    pub(crate) fn new(opts: &StepOptions) -> Self {
        Self {
            map: HashMap::new(),
            connect_timeout: opts.connect_timeout,
            command_timeout: opts.command_timeout,
            login: opts.login.clone(),
            tls: opts.tls.clone(),
            fence: opts.fence.clone(),
        }
    }

    pub(crate) fn cached(&self, addr: SocketAddr) -> Option<MultiplexedConnection> {
        self.map.get(&addr).cloned()
    }

    pub(crate) fn insert(&mut self, addr: SocketAddr, c: MultiplexedConnection) {
        self.map.insert(addr, c);
    }

    /// Drops a connection after a transport error, so the next use reconnects.
    pub(crate) fn invalidate(&mut self, addr: SocketAddr) {
        self.map.remove(&addr);
    }

    pub(crate) async fn get(
        &mut self,
        addr: SocketAddr,
    ) -> Result<MultiplexedConnection, TopologyError> {
        if let Some(c) = self.cached(addr) {
            return Ok(c);
        }
        let c = connect(
            addr,
            self.connect_timeout,
            self.login.as_ref(),
            self.tls.as_ref(),
        )
        .await
        .map_err(|source| TopologyError::Connect { addr, source })?;
        self.map.insert(addr, c.clone());
        Ok(c)
    }

    /// Runs a pipeline whose per-command server errors come back as
    /// `Value::ServerError` items (transport errors are `Err`).
    pub(crate) async fn pipe(
        &mut self,
        addr: SocketAddr,
        p: &Pipeline,
        label: &str,
        timeout: Duration,
    ) -> Result<Vec<Value>, TopologyError> {
        self.fenced(addr, label)?;
        let con = self.get(addr).await?;
        let r = run_pipe(con, addr, p, label, timeout).await;
        if r.is_err() {
            self.invalidate(addr);
        }
        r
    }

    /// Refuses to go on once the fence has closed. Every command of an
    /// action passes here (or, for the last SETSLOT of a move, right after
    /// a command that did), so a fenced leader stops within one command.
    pub(crate) fn fenced(&self, addr: SocketAddr, command: &str) -> Result<(), TopologyError> {
        if self.fence.allows(Instant::now()) {
            Ok(())
        } else {
            Err(TopologyError::Fenced {
                addr,
                command: command.to_owned(),
            })
        }
    }

    /// One command; a server error is returned as `Ok(Err(message))`.
    async fn one(
        &mut self,
        addr: SocketAddr,
        args: &[&str],
    ) -> Result<Result<Value, String>, TopologyError> {
        let mut p = redis::pipe();
        p.ignore_errors();
        let c = p.cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        let label = args.join(" ");
        let timeout = self.command_timeout;
        let mut v = self.pipe(addr, &p, &label, timeout).await?;
        let v = v.pop().ok_or_else(|| TopologyError::Reply {
            addr,
            command: label.clone(),
            detail: "empty reply".into(),
        })?;
        Ok(match server_error(&v) {
            Some(e) => Err(e),
            None => Ok(v),
        })
    }

    /// One command that must succeed, except for server errors containing
    /// one of `tolerated`.
    async fn expect_ok(
        &mut self,
        addr: SocketAddr,
        args: &[&str],
        tolerated: &[&str],
    ) -> Result<(), TopologyError> {
        match self.one(addr, args).await? {
            Ok(_) => Ok(()),
            Err(e) if tolerated.iter().any(|t| e.contains(t)) => Ok(()),
            Err(message) => Err(TopologyError::Refused {
                addr,
                command: args.join(" "),
                message,
            }),
        }
    }
}

/// Connects to `addr`, logged in as `login`. A node that refuses the login
/// but serves without one has no ACL yet (it started before authentication
/// was turned on): that connection is used, so that the operator can give
/// the node its users.
pub(crate) async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    login: Option<&Login>,
    tls: Option<&TlsClient>,
) -> Result<MultiplexedConnection, redis::RedisError> {
    let Some(login) = login else {
        return connect_as(addr, timeout, None, tls).await;
    };
    match connect_as(addr, timeout, Some(login), tls).await {
        Err(e) if e.kind() == redis::ErrorKind::AuthenticationFailed => {
            let mut open = connect_as(addr, timeout, None, tls)
                .await
                .map_err(|_| e.clone())?;
            let ping = redis::cmd("PING");
            match tokio::time::timeout(timeout, ping.query_async::<String>(&mut open)).await {
                Ok(Ok(_)) => Ok(open),
                _ => Err(e),
            }
        }
        r => r,
    }
}

async fn connect_as(
    addr: SocketAddr,
    timeout: Duration,
    login: Option<&Login>,
    tls: Option<&TlsClient>,
) -> Result<MultiplexedConnection, redis::RedisError> {
    let mut settings = redis::RedisConnectionInfo::default();
    if let Some(login) = login {
        settings = settings
            .set_username(&login.user)
            .set_password(&login.password);
    }
    let cfg = AsyncConnectionConfig::new().set_response_timeout(None);
    let timed_out = || {
        redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connect timed out",
        ))
    };
    let tcp = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| timed_out())??;
    tcp.set_nodelay(true)?;
    match tls {
        None => handshake(tcp, &settings, cfg, timeout).await,
        Some(tls) => {
            let stream = tokio::time::timeout(timeout, tls.connect(tcp))
                .await
                .map_err(|_| timed_out())??;
            handshake(stream, &settings, cfg, timeout).await
        }
    }
}

/// The RESP handshake (the login) on a connected stream, bounded in time
/// like the connect, with each reply bounded in size.
async fn handshake<S>(
    stream: S,
    settings: &redis::RedisConnectionInfo,
    cfg: AsyncConnectionConfig,
    timeout: Duration,
) -> Result<MultiplexedConnection, redis::RedisError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Sync + Unpin + 'static,
{
    let stream = bounded::Bounded::new(stream, bounded::MAX_REPLY_BYTES);
    let (con, driver) = tokio::time::timeout(
        timeout + Duration::from_secs(1),
        MultiplexedConnection::new_with_config(settings, stream, cfg),
    )
    .await
    .map_err(|_| {
        redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "login timed out",
        ))
    })??;
    // The driver reads and writes the socket; it ends when the connection
    // is dropped.
    tokio::spawn(driver);
    Ok(con)
}

async fn run_pipe(
    mut con: MultiplexedConnection,
    addr: SocketAddr,
    p: &Pipeline,
    label: &str,
    timeout: Duration,
) -> Result<Vec<Value>, TopologyError> {
    match tokio::time::timeout(timeout, p.query_async::<Vec<Value>>(&mut con)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(TopologyError::Command {
            addr,
            command: label.to_owned(),
            source,
        }),
        Err(_) => Err(TopologyError::Timeout {
            addr,
            command: label.to_owned(),
            after: timeout,
        }),
    }
}

pub(crate) fn server_error(v: &Value) -> Option<String> {
    match v {
        Value::ServerError(e) => Some(match e.details() {
            Some(d) => format!("{} {d}", e.code()),
            None => e.code().to_owned(),
        }),
        _ => None,
    }
}

/// Work done and work allowed in one step.
pub(crate) struct Budget {
    pub(crate) deadline: Instant,
    max_keys: Option<u64>,
    max_slots: u32,
    pub(crate) keys_moved: u64,
    pub(crate) slots_moved: u32,
}

impl Budget {
    pub(crate) fn new(deadline: Instant, opts: &StepOptions) -> Self {
        Self {
            deadline,
            max_keys: opts.max_keys_per_step,
            max_slots: opts.max_slots_per_step,
            keys_moved: 0,
            slots_moved: 0,
        }
    }

    pub(crate) fn exhausted(&self) -> bool {
        Instant::now() >= self.deadline
            || self.max_keys.is_some_and(|m| self.keys_moved >= m)
            || self.slots_moved >= self.max_slots
    }
}

/// Executes one action. Returns an optional detail for the action log.
pub(crate) async fn run(
    conns: &mut Conns,
    action: &Action,
    opts: &StepOptions,
    budget: &mut Budget,
) -> Result<Option<String>, TopologyError> {
    match action {
        Action::Meet { on, peer } => {
            let (ip, port) = (peer.ip().to_string(), peer.port().to_string());
            conns
                .expect_ok(on.addr, &["CLUSTER", "MEET", &ip, &port], &[])
                .await?;
        }
        Action::Reset { node } => {
            conns
                .expect_ok(node.addr, &["CLUSTER", "RESET", "HARD"], &[])
                .await?;
        }
        Action::AddSlots { node, ranges } => {
            let mut args = vec!["CLUSTER".to_string(), "ADDSLOTSRANGE".to_string()];
            for (a, b) in ranges {
                args.push(a.to_string());
                args.push(b.to_string());
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            conns.expect_ok(node.addr, &args, &[]).await?;
        }
        Action::Replicate { node, primary } => {
            conns
                .expect_ok(node.addr, &["CLUSTER", "REPLICATE", &primary.id], &[])
                .await?;
        }
        Action::Failover { replica } => {
            failover(conns, replica, budget).await?;
        }
        Action::Takeover { replica } => {
            takeover(conns, replica, budget).await?;
        }
        Action::MoveSlots {
            source,
            target,
            slots,
            others,
        } => {
            let keys = move_slots(conns, source, target, slots, others, opts, budget).await?;
            return Ok(Some(format!("{keys} keys")));
        }
        Action::SetSlotOwner { slot, owner, on } => {
            let slot = slot.to_string();
            for n in on {
                conns
                    .expect_ok(
                        n.addr,
                        &["CLUSTER", "SETSLOT", &slot, "NODE", &owner.id],
                        &[NOT_MASTER],
                    )
                    .await?;
            }
        }
        Action::SetSlotStable { slot, on } => {
            conns
                .expect_ok(
                    on.addr,
                    &["CLUSTER", "SETSLOT", &slot.to_string(), "STABLE"],
                    &[],
                )
                .await?;
        }
        Action::Forget { id, on } => {
            for n in on {
                conns
                    .expect_ok(
                        n.addr,
                        &["CLUSTER", "FORGET", id],
                        &[
                            "Unknown node",
                            "can't forget myself",
                            "Can't forget my master",
                        ],
                    )
                    .await?;
            }
        }
    }
    Ok(None)
}

/// `SETSLOT` sent to a node that just turned into a replica (a primary left
/// without slots follows the new owner when replica migration is allowed).
const NOT_MASTER: &str = "SETSLOT only with masters";

async fn failover(
    conns: &mut Conns,
    replica: &NodeRef,
    budget: &Budget,
) -> Result<(), TopologyError> {
    // Coordinated failover: the primary pauses writers, the replica catches
    // up to its offset, then takes over. Acknowledged writes are kept.
    // The request can get lost (a replica that just switched primaries may
    // not have its bus link yet, and Redis then times out after 5 s), so it
    // is repeated while waiting; a repeat restarts the same safe procedure.
    let until = (Instant::now() + FAILOVER_WAIT).min(budget.deadline.max(Instant::now()));
    let mut asked: Option<Instant> = None;
    while Instant::now() < until {
        if asked.is_none_or(|t| t.elapsed() >= FAILOVER_RETRY) {
            conns
                .expect_ok(
                    replica.addr,
                    &["CLUSTER", "FAILOVER"],
                    &["You should send CLUSTER FAILOVER to a replica"],
                )
                .await?;
            asked = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(Value::Array(role)) = conns.one(replica.addr, &["ROLE"]).await?
            && matches!(role.first(), Some(Value::BulkString(r)) if r == b"master")
        {
            break;
        }
    }
    Ok(())
}

/// `CLUSTER FAILOVER TAKEOVER`: the primary is gone for good, so there is
/// nobody to coordinate with; waits (bounded) until the replica is primary.
async fn takeover(
    conns: &mut Conns,
    replica: &NodeRef,
    budget: &Budget,
) -> Result<(), TopologyError> {
    conns
        .expect_ok(
            replica.addr,
            &["CLUSTER", "FAILOVER", "TAKEOVER"],
            &["You should send CLUSTER FAILOVER to a replica"],
        )
        .await?;
    let until = (Instant::now() + FAILOVER_WAIT).min(budget.deadline.max(Instant::now()));
    while Instant::now() < until {
        if let Ok(Value::Array(role)) = conns.one(replica.addr, &["ROLE"]).await?
            && matches!(role.first(), Some(Value::BulkString(r)) if r == b"master")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Moves `slots` from `source` to `target`; returns the keys moved. Stops
/// early (leaving the slots open, to be finished by the next step) when the
/// budget runs out.
async fn move_slots(
    conns: &mut Conns,
    source: &NodeRef,
    target: &NodeRef,
    slots: &[u16],
    others: &[NodeRef],
    opts: &StepOptions,
    budget: &mut Budget,
) -> Result<u64, TopologyError> {
    let t = conns.command_timeout;
    // 1. The target accepts the slot's keys (IMPORTING) before the source
    //    starts redirecting clients to it (MIGRATING).
    setslot_all(
        conns,
        target,
        slots,
        &["IMPORTING", &source.id],
        &["already the owner"],
        t,
    )
    .await?;
    setslot_all(
        conns,
        source,
        slots,
        &["MIGRATING", &target.id],
        &["not the owner"],
        t,
    )
    .await?;

    // 2. Drain: MIGRATE the source's keys in batches until none is left.
    let ip = target.addr.ip().to_string();
    let port = target.addr.port().to_string();
    let mig_ms = opts.migrate_timeout.as_millis().to_string();
    let per = opts.keys_per_migrate.max(1).to_string();
    let pipe_timeout = t + opts.migrate_timeout * 2;
    let mut pending: Vec<u16> = slots.to_vec();
    let mut moved = 0u64;
    for _ in 0..MAX_DRAIN_ROUNDS {
        let mut p = redis::pipe();
        p.ignore_errors();
        for s in &pending {
            p.cmd("CLUSTER").arg("GETKEYSINSLOT").arg(*s).arg(&per);
        }
        let replies = conns
            .pipe(source.addr, &p, "CLUSTER GETKEYSINSLOT", pipe_timeout)
            .await?;
        let mut batches: Vec<(u16, Vec<Vec<u8>>)> = Vec::new();
        for (s, v) in pending.iter().zip(replies) {
            let keys: Vec<Vec<u8>> = match server_error(&v) {
                Some(message) => {
                    return Err(TopologyError::Refused {
                        addr: source.addr,
                        command: format!("CLUSTER GETKEYSINSLOT {s} {per}"),
                        message,
                    });
                }
                None => redis::from_redis_value(v).map_err(|e| TopologyError::Reply {
                    addr: source.addr,
                    command: format!("CLUSTER GETKEYSINSLOT {s} {per}"),
                    detail: e.to_string(),
                })?,
            };
            if !keys.is_empty() {
                batches.push((*s, keys));
            }
        }
        if batches.is_empty() {
            break;
        }
        let busy = migrate(
            conns,
            source,
            &batches,
            false,
            (&ip, &port, &mig_ms),
            pipe_timeout,
            &mut moved,
        )
        .await?;
        if !busy.is_empty() {
            // BUSYKEY: the target already has a copy, from a MIGRATE that was
            // cut off after the target stored the key but before the source
            // deleted it. While the slot is MIGRATING the source serves every
            // key it still holds, so its copy is the latest: overwrite.
            let retry: Vec<(u16, Vec<Vec<u8>>)> = batches
                .iter()
                .filter(|(s, _)| busy.contains(s))
                .cloned()
                .collect();
            // With REPLACE a BUSYKEY cannot happen; any error is returned.
            migrate(
                conns,
                source,
                &retry,
                true,
                (&ip, &port, &mig_ms),
                pipe_timeout,
                &mut moved,
            )
            .await?;
        }
        budget.keys_moved = budget.keys_moved.saturating_add(moved);
        moved = 0;
        pending = batches.into_iter().map(|(s, _)| s).collect();
        if budget.exhausted() {
            return Ok(budget.keys_moved);
        }
    }
    budget.keys_moved = budget.keys_moved.saturating_add(moved);

    // 3. Close: the target first (it takes ownership and bumps its epoch),
    //    then the source (it stops redirecting with ASK), then the rest.
    setslot_all(conns, target, slots, &["NODE", &target.id], &[], t).await?;
    setslot_all(
        conns,
        source,
        slots,
        &["NODE", &target.id],
        &[NOT_MASTER],
        t,
    )
    .await?;
    // The other primaries only need to learn the new owner: concurrently.
    let mut cons = Vec::with_capacity(others.len());
    for o in others {
        cons.push((o.addr, conns.get(o.addr).await?));
    }
    let tail = ["NODE", target.id.as_str()];
    let p = &setslot_pipe(slots, &tail);
    let label = &format!("CLUSTER SETSLOT <{} slots> NODE {}", slots.len(), target.id);
    let replies = join_all(
        cons.into_iter()
            .map(|(addr, con)| async move { (addr, run_pipe(con, addr, p, label, t).await) }),
    )
    .await;
    for (addr, r) in replies {
        if r.is_err() {
            conns.invalidate(addr);
        }
        check_setslot(addr, slots, &tail, &[NOT_MASTER], &r?)?;
    }
    budget.slots_moved = budget.slots_moved.saturating_add(slots.len() as u32);
    Ok(budget.keys_moved)
}

/// `CLUSTER SETSLOT <slot> <tail...>` for every slot, pipelined.
async fn setslot_all(
    conns: &mut Conns,
    node: &NodeRef,
    slots: &[u16],
    tail: &[&str],
    tolerated: &[&str],
    timeout: Duration,
) -> Result<(), TopologyError> {
    let p = setslot_pipe(slots, tail);
    let label = format!("CLUSTER SETSLOT <{} slots> {}", slots.len(), tail.join(" "));
    let replies = conns.pipe(node.addr, &p, &label, timeout).await?;
    check_setslot(node.addr, slots, tail, tolerated, &replies)
}

fn setslot_pipe(slots: &[u16], tail: &[&str]) -> Pipeline {
    let mut p = redis::pipe();
    p.ignore_errors();
    for s in slots {
        let c = p.cmd("CLUSTER").arg("SETSLOT").arg(*s);
        for a in tail {
            c.arg(*a);
        }
    }
    p
}

fn check_setslot(
    addr: SocketAddr,
    slots: &[u16],
    tail: &[&str],
    tolerated: &[&str],
    replies: &[Value],
) -> Result<(), TopologyError> {
    if replies.len() != slots.len() {
        return Err(TopologyError::Reply {
            addr,
            command: format!("CLUSTER SETSLOT ... {}", tail.join(" ")),
            detail: format!("{} replies for {} commands", replies.len(), slots.len()),
        });
    }
    for (s, v) in slots.iter().zip(replies) {
        if let Some(message) = server_error(v)
            && !tolerated.iter().any(|t| message.contains(t))
        {
            return Err(TopologyError::Refused {
                addr,
                command: format!("CLUSTER SETSLOT {s} {}", tail.join(" ")),
                message,
            });
        }
    }
    Ok(())
}

/// One pipelined MIGRATE per slot batch. Returns the slots that hit BUSYKEY.
async fn migrate(
    conns: &mut Conns,
    source: &NodeRef,
    batches: &[(u16, Vec<Vec<u8>>)],
    replace: bool,
    (ip, port, mig_ms): (&str, &str, &str),
    timeout: Duration,
    moved: &mut u64,
) -> Result<Vec<u16>, TopologyError> {
    let mut p = redis::pipe();
    p.ignore_errors();
    for (_, keys) in batches {
        let c = p
            .cmd("MIGRATE")
            .arg(ip)
            .arg(port)
            .arg("")
            .arg(0)
            .arg(mig_ms);
        if replace {
            c.arg("REPLACE");
        }
        if let Some(login) = &conns.login {
            c.arg("AUTH2").arg(&login.user).arg(&login.password);
        }
        c.arg("KEYS");
        for k in keys {
            c.arg(k.as_slice());
        }
    }
    let replies = conns.pipe(source.addr, &p, "MIGRATE", timeout).await?;
    let mut busy = Vec::new();
    for ((s, keys), v) in batches.iter().zip(&replies) {
        match server_error(v) {
            None => {
                // OK, or NOKEY when the keys expired or were deleted meanwhile.
                if matches!(v, Value::Okay) || matches!(v, Value::SimpleString(x) if x == "OK") {
                    *moved += keys.len() as u64;
                }
            }
            Some(m) if m.contains("BUSYKEY") && !replace => busy.push(*s),
            Some(message) => {
                return Err(TopologyError::Refused {
                    addr: source.addr,
                    command: format!(
                        "MIGRATE {ip} {port} \"\" 0 {mig_ms}{} KEYS <{} keys of slot {s}>",
                        if replace { " REPLACE" } else { "" },
                        keys.len()
                    ),
                    message,
                });
            }
        }
    }
    if replies.len() < batches.len() {
        return Err(TopologyError::Reply {
            addr: source.addr,
            command: "MIGRATE".into(),
            detail: format!("{} replies for {} commands", replies.len(), batches.len()),
        });
    }
    Ok(busy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A "node" on loopback that answers the first thing it reads with a
    /// bulk string announced as 512 MB, and sends `limit` bytes of it.
    async fn oversized_node(limit: usize) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 1024];
            if s.read(&mut buf).await.unwrap_or(0) == 0 {
                return;
            }
            if s.write_all(b"$536870912\r\n").await.is_err() {
                return;
            }
            let chunk = vec![b'x'; 1 << 20];
            let mut sent = 0;
            while sent < limit {
                if s.write_all(&chunk).await.is_err() {
                    return;
                }
                sent += chunk.len();
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_node_sending_an_oversized_reply_is_dropped_not_buffered() {
        // More than the bound, and far less than the 512 MB announced.
        let addr = oversized_node(bounded::MAX_REPLY_BYTES + (4 << 20)).await;
        let login = Login {
            user: "redis-operator".into(),
            password: "secret".into(),
        };
        let err = connect_as(addr, Duration::from_secs(10), Some(&login), None)
            .await
            .expect_err("the reply is larger than the bound");
        let text = err.to_string();
        assert!(
            text.contains("the node sent more than 32 MiB in reply: connection dropped"),
            "{text}"
        );
    }
}
