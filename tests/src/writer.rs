//! A concurrent writer that records every acknowledged write, for tests
//! that act on Redis nodes (rolls, lost pods, failovers) and must prove that
//! no acknowledged write was lost.
//!
//! It writes `<prefix>:<i>` = `<i>` for i = 0, 1, 2... through a cluster
//! client, and records `i` only when the SET was acknowledged. A failed write
//! is not retried under the same index. The loop is bounded in writes and
//! in time. When writes keep failing (every pod replaced, so every address
//! the client knew is gone), it rebuilds its client from the seeds the test
//! last gave it ([`Writer::set_seeds`]).
//!
//! [`Writer::run`] is a plain future: run it wherever the addresses are
//! reachable (inside a real node's network namespace, for instance). It
//! ends when stopped, at a limit, or once the test has dropped every other
//! handle (a test that failed half-way must not leave it writing).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// How long writes may keep failing before the client is rebuilt from the
/// current seeds.
const REBUILD_AFTER: Duration = Duration::from_secs(2);
/// Pause after a failed connect, so a cluster that is down is not spun on.
const CONNECT_BACKOFF: Duration = Duration::from_millis(200);

/// Bounds on one writer run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_writes: u64,
    pub max_time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_writes: 2_000_000,
            max_time: Duration::from_secs(900),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    acked: Vec<u64>,
    attempted: u64,
    failed: u64,
    rebuilds: u64,
    /// When the last write was acknowledged, and the longest time between
    /// two acknowledged writes (how long the cluster did not take writes).
    last_ack: Option<Instant>,
    longest_gap: Duration,
}

/// A writer's shared handle: the test keeps one, [`Writer::run`] another.
#[derive(Clone)]
pub struct Writer {
    prefix: Arc<str>,
    stop: Arc<AtomicBool>,
    seeds: Arc<Mutex<Vec<String>>>,
    /// Set by [`Writer::reconnect`]: drop the client before the next write.
    reconnect: Arc<AtomicBool>,
    state: Arc<Mutex<State>>,
}

/// What a finished run did.
#[derive(Debug, Clone)]
pub struct Summary {
    pub acked: Vec<u64>,
    pub attempted: u64,
    pub failed: u64,
    pub rebuilds: u64,
    pub longest_gap: Duration,
}

impl Writer {
    /// A writer of `<prefix>:<i>` keys that first connects to `seeds`
    /// (`redis://host:port` URLs).
    pub fn new(prefix: &str, seeds: Vec<String>) -> Self {
        Writer {
            prefix: prefix.into(),
            stop: Arc::new(AtomicBool::new(false)),
            seeds: Arc::new(Mutex::new(seeds)),
            reconnect: Arc::default(),
            state: Arc::default(),
        }
    }

    /// The addresses to reconnect to when every known one failed.
    pub fn set_seeds(&self, seeds: Vec<String>) {
        *lock(&self.seeds) = seeds;
    }

    /// Connects anew to `seeds` before the next write, as an application
    /// does that picked up a new password: the old connections go.
    pub fn reconnect(&self, seeds: Vec<String>) {
        self.set_seeds(seeds);
        self.reconnect.store(true, Ordering::Relaxed);
    }

    /// Acknowledged writes so far.
    pub fn acked_count(&self) -> usize {
        lock(&self.state).acked.len()
    }

    /// Asks the running loop to end after its current write.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    pub fn summary(&self) -> Summary {
        let s = lock(&self.state);
        Summary {
            acked: s.acked.clone(),
            attempted: s.attempted,
            failed: s.failed,
            rebuilds: s.rebuilds,
            longest_gap: s.longest_gap,
        }
    }

    /// Writes until stopped or a limit is reached. Errors only on a bug in
    /// the test setup (a seed that is not a URL); Redis errors are counted.
    pub async fn run(self, limits: Limits) -> Result<()> {
        let started = Instant::now();
        let mut conn = None;
        let mut failing_since: Option<Instant> = None;
        let mut i = 0u64;
        // The handles are the test's and this one: alone, nobody reads on.
        while !self.stop.load(Ordering::Relaxed)
            && Arc::strong_count(&self.stop) > 1
            && i < limits.max_writes
            && started.elapsed() < limits.max_time
        {
            if self.reconnect.swap(false, Ordering::Relaxed) {
                conn = None;
            }
            if conn.is_none() {
                conn = self.connect().await?;
                if conn.is_none() {
                    tokio::time::sleep(CONNECT_BACKOFF).await;
                    continue;
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            let r: redis::RedisResult<()> = redis::cmd("SET")
                .arg(format!("{}:{i}", self.prefix))
                .arg(i.to_string())
                .query_async(c)
                .await;
            let now = Instant::now();
            {
                let mut s = lock(&self.state);
                s.attempted += 1;
                if r.is_ok() {
                    s.acked.push(i);
                    if let Some(last) = s.last_ack {
                        s.longest_gap = s.longest_gap.max(now - last);
                    }
                    s.last_ack = Some(now);
                } else {
                    s.failed += 1;
                }
            }
            i += 1;
            match (&r, failing_since) {
                (Ok(()), _) => failing_since = None,
                (Err(_), None) => failing_since = Some(now),
                (Err(_), Some(since)) if now - since >= REBUILD_AFTER => {
                    conn = None;
                    failing_since = None;
                    lock(&self.state).rebuilds += 1;
                }
                (Err(_), Some(_)) => {}
            }
        }
        Ok(())
    }

    async fn connect(&self) -> Result<Option<redis::cluster_async::ClusterConnection>> {
        let seeds = lock(&self.seeds).clone();
        let client = cluster_client(seeds)
            .connection_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(2))
            .build()
            .with_context(|| format!("building a cluster client for {:?}", lock(&self.seeds)))?;
        Ok(client.get_async_connection().await.ok())
    }
}

/// A cluster client on `seeds`. With TLS ([`crate::redis::set_tls`]) it
/// checks each node's certificate against the CA, and not against the
/// address, as an application must: nodes are reached by pod IP, which no
/// certificate can name in advance.
fn cluster_client(seeds: Vec<String>) -> redis::cluster::ClusterClientBuilder {
    let builder = redis::cluster::ClusterClientBuilder::new(seeds);
    match crate::redis::tls() {
        Some(tls) => builder
            .certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(tls.ca_pem.into_bytes()),
            })
            .danger_accept_invalid_hostnames(true),
        None => builder,
    }
}

/// The acknowledged indexes whose `<prefix>:<i>` key does not read back its
/// value, read through a cluster client on `seeds`.
pub async fn lost_writes(seeds: Vec<String>, prefix: &str, acked: &[u64]) -> Result<Vec<u64>> {
    let client = cluster_client(seeds.clone())
        .build()
        .with_context(|| format!("building a cluster client for {seeds:?}"))?;
    let mut conn = client
        .get_async_connection()
        .await
        .with_context(|| format!("connecting to {seeds:?}"))?;
    let mut lost = Vec::new();
    for i in acked {
        let v: Option<String> = redis::cmd("GET")
            .arg(format!("{prefix}:{i}"))
            .query_async(&mut conn)
            .await
            .with_context(|| format!("reading {prefix}:{i}"))?;
        if v.as_deref() != Some(i.to_string().as_str()) {
            lost.push(*i);
        }
    }
    Ok(lost)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere leaves the data usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_writer_whose_test_dropped_it_ends() {
        // No server at this address: every connect fails fast.
        let w = Writer::new("t", vec!["redis://127.0.0.1:1".into()]);
        let running = tokio::spawn(w.clone().run(Limits::default()));
        drop(w);
        tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .expect("the writer kept running after its test let go")
            .expect("joining the writer")
            .expect("the writer's run");
    }
}
