//! Bounded polling.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

/// Marks an error returned by a [`wait_for`] check as final.
#[derive(Debug)]
struct Fatal;

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("unrecoverable")
    }
}

/// Wraps `e` so that [`wait_for`] stops polling and returns it at once
/// (e.g. the process being waited for has exited).
pub fn fatal(e: anyhow::Error) -> anyhow::Error {
    e.context(Fatal)
}

/// Default pause between two checks.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Polls `check` every [`POLL_INTERVAL`] until it returns `Ok(Some(v))`, and
/// returns `v`. `Ok(None)` means "not yet"; an `Err` is treated as "not yet"
/// too (components are expected to be briefly unreachable) but is reported if
/// the `timeout` passes, unless it was made with [`fatal`], which ends the
/// wait at once. A single check is cut off at the deadline as well.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    wait_for_every(what, timeout, POLL_INTERVAL, check).await
}

/// [`wait_for`] with an explicit polling interval.
pub async fn wait_for_every<T, F, Fut>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut check: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    let deadline = start + timeout;
    let mut last_err = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, check()).await {
            Ok(Ok(Some(v))) => return Ok(v),
            Ok(Ok(None)) => last_err = None,
            Ok(Err(e)) if e.downcast_ref::<Fatal>().is_some() => {
                return Err(e.context(format!("gave up waiting for {what}")));
            }
            Ok(Err(e)) => last_err = Some(e),
            Err(_) => {}
        }
        if Instant::now() + interval > deadline {
            let msg = format!("timed out after {timeout:?} waiting for {what}");
            return Err(match last_err {
                Some(e) => e.context(msg),
                None => anyhow!(msg),
            });
        }
        tokio::time::sleep(interval).await;
    }
}
