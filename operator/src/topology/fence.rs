//! A fence on Redis actions: a topology step acts only while the fence
//! allows it. The operator's leader election holds the other end and moves
//! the fence's deadline forward each time the lease is confirmed renewed;
//! a leader cut off from the API server stops acting on Redis once its
//! lease may have expired, even before it learns that it lost.

use std::time::Instant;

use tokio::sync::watch;

/// Where Redis actions are allowed until. `Fence::default()` never closes
/// (a process that runs without leader election).
#[derive(Debug, Clone, Default)]
pub struct Fence(Option<watch::Receiver<Option<Instant>>>);

impl Fence {
    /// A fence that opens until the instant last sent on the channel
    /// (`None`: closed).
    pub fn new(deadline: watch::Receiver<Option<Instant>>) -> Self {
        Fence(Some(deadline))
    }

    /// Whether an action may start now.
    pub fn allows(&self, now: Instant) -> bool {
        match &self.0 {
            None => true,
            Some(rx) => rx.borrow().is_some_and(|until| now < until),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn unfenced_always_allows() {
        assert!(Fence::default().allows(Instant::now()));
    }

    #[test]
    fn allows_only_before_the_last_deadline() {
        let now = Instant::now();
        let (tx, rx) = watch::channel(None);
        let fence = Fence::new(rx);
        assert!(!fence.allows(now), "closed until a renewal is seen");
        tx.send_replace(Some(now + Duration::from_secs(5)));
        assert!(fence.allows(now));
        assert!(!fence.allows(now + Duration::from_secs(5)));
        tx.send_replace(None);
        assert!(!fence.allows(now), "closed again when leadership is lost");
    }
}
