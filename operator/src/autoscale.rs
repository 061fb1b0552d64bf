//! The scaling decision: a pure function of the spec, the replica range the
//! policy allows, one utilisation sample and the clock.
//!
//! - Up one step when utilisation is above the threshold by more than the
//!   tolerance, at most once per cooldown, never past the maximum.
//! - Down one step only when `ceil(replicas * U / threshold)` has stayed
//!   below `replicas` for the whole stabilisation window since the last
//!   scaling event, never below the minimum.
//! - No metrics, stale metrics or a paused spec: hold.
//! - Our own last scaling write not yet seen in the cache: hold, so a
//!   reconcile on the stale copy cannot take the same step again.

use std::time::Duration;

use api::Range;

/// HPA's default tolerance: no change while `U / threshold` is within 10 %.
pub const TOLERANCE: f64 = 0.1;

/// Seconds since an arbitrary epoch; the controller passes wall-clock time.
pub type Instant = f64;

#[derive(Debug, Clone, PartialEq)]
pub struct Inputs {
    pub replicas: i32,
    pub range: Range<i32>,
    pub threshold: f64,
    pub paused: bool,
    /// Average utilisation in % of requests; `None` when unavailable.
    pub utilization: Option<f64>,
    pub cooldown: Duration,
    pub window: Duration,
    /// When `spec.replicas` last changed by the autoscaler.
    pub last_scale: Option<Instant>,
    pub now: Instant,
    /// `metadata.generation` of the object this decision is made on.
    pub generation: Option<i64>,
}

/// Memory across decisions: since when the recommendation has been below
/// `replicas`, and our last scaling step until the cache shows it. Kept per
/// cluster; losing it (a restart) only delays a scale-down, it never causes
/// one (a new process reads a fresh copy, with `status.last_scale_time`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct State {
    pub below_since: Option<Instant>,
    /// Set by a `Scale` decision: the generation it was decided on. Until a
    /// later generation is seen (the write of `spec.replicas` bumps it), the
    /// copy being reconciled predates the step and its status predates the
    /// new `last_scale_time`: deciding on it could take the same step again.
    /// The caller clears it when the step could not be written.
    pub pending_generation: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Hold(HoldReason),
    Scale { from: i32, to: i32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldReason {
    Paused,
    NoMetrics,
    WithinTolerance,
    AtMaximum,
    AtMinimum,
    Cooldown,
    Stabilizing,
    /// Our last step is not in the cached copy yet.
    Settling,
}

/// `ceil(replicas * U / threshold)`, or `replicas` inside the tolerance band.
pub fn recommendation(replicas: i32, utilization: f64, threshold: f64) -> i32 {
    if threshold <= 0.0 {
        // Any load is "above" a zero target; no load is at it.
        return if utilization > 0.0 {
            replicas + 1
        } else {
            replicas
        };
    }
    let ratio = utilization / threshold;
    // The epsilon keeps exact band edges (77 / 70 = 1.1000000000000001) inside.
    if (ratio - 1.0).abs() <= TOLERANCE + 1e-9 {
        return replicas;
    }
    let rec = (f64::from(replicas) * ratio).ceil();
    if rec >= f64::from(i32::MAX) {
        i32::MAX
    } else {
        rec.max(0.0) as i32
    }
}

pub fn decide(i: &Inputs, state: &mut State) -> Decision {
    if let Some(pending) = state.pending_generation {
        // Without a generation there is nothing to wait for.
        if i.generation.is_some_and(|g| g <= pending) {
            return Decision::Hold(HoldReason::Settling);
        }
        state.pending_generation = None;
    }
    let decision = decide_fresh(i, state);
    if let Decision::Scale { .. } = decision {
        state.pending_generation = i.generation;
    }
    decision
}

fn decide_fresh(i: &Inputs, state: &mut State) -> Decision {
    if i.paused {
        state.below_since = None;
        return Decision::Hold(HoldReason::Paused);
    }
    let Some(u) = i.utilization else {
        state.below_since = None;
        return Decision::Hold(HoldReason::NoMetrics);
    };
    let rec = recommendation(i.replicas, u, i.threshold);
    let since_scale = i.last_scale.map(|t| i.now - t);

    if rec > i.replicas {
        state.below_since = None;
        if i.replicas >= i.range.max {
            return Decision::Hold(HoldReason::AtMaximum);
        }
        if since_scale.is_some_and(|s| s < i.cooldown.as_secs_f64()) {
            return Decision::Hold(HoldReason::Cooldown);
        }
        return Decision::Scale {
            from: i.replicas,
            to: i.replicas + 1,
        };
    }
    if rec == i.replicas {
        state.below_since = None;
        return Decision::Hold(HoldReason::WithinTolerance);
    }
    // Below: the window starts at the later of the first low sample and the
    // last scaling event.
    let start = match (state.below_since, i.last_scale) {
        (Some(b), Some(l)) => b.max(l),
        (Some(b), None) => b,
        (None, _) => {
            state.below_since = Some(i.now);
            i.now
        }
    };
    if i.replicas <= i.range.min {
        return Decision::Hold(HoldReason::AtMinimum);
    }
    if i.now - start < i.window.as_secs_f64() {
        return Decision::Hold(HoldReason::Stabilizing);
    }
    state.below_since = None;
    Decision::Scale {
        from: i.replicas,
        to: i.replicas - 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(replicas: i32, u: Option<f64>) -> Inputs {
        Inputs {
            replicas,
            range: Range { min: 1, max: 10 },
            threshold: 70.0,
            paused: false,
            utilization: u,
            cooldown: Duration::from_secs(60),
            window: Duration::from_secs(300),
            last_scale: None,
            now: 10_000.0,
            generation: Some(7),
        }
    }

    fn once(i: &Inputs) -> Decision {
        decide(i, &mut State::default())
    }

    #[test]
    fn recommendation_and_tolerance() {
        assert_eq!(recommendation(3, 70.0, 70.0), 3);
        assert_eq!(recommendation(3, 77.0, 70.0), 3); // ratio 1.10: inside
        assert_eq!(recommendation(3, 63.0, 70.0), 3); // ratio 0.90: inside
        assert_eq!(recommendation(3, 77.7, 70.0), 4); // ratio 1.11
        assert_eq!(recommendation(3, 62.3, 70.0), 3); // ceil(2.67) = 3
        assert_eq!(recommendation(4, 35.0, 70.0), 2);
        assert_eq!(recommendation(2, 0.0, 70.0), 0);
        assert_eq!(recommendation(2, 5.0, 0.0), 3);
        assert_eq!(recommendation(2, 0.0, 0.0), 2);
    }

    #[test]
    fn scales_up_one_step_above_tolerance() {
        assert_eq!(
            once(&inputs(2, Some(78.0))),
            Decision::Scale { from: 2, to: 3 }
        );
        assert_eq!(
            once(&inputs(2, Some(300.0))),
            Decision::Scale { from: 2, to: 3 }
        );
        assert_eq!(
            once(&inputs(2, Some(76.9))),
            Decision::Hold(HoldReason::WithinTolerance)
        );
    }

    #[test]
    fn scale_up_respects_cooldown_and_maximum() {
        let mut i = inputs(2, Some(90.0));
        i.last_scale = Some(i.now - 59.0);
        assert_eq!(once(&i), Decision::Hold(HoldReason::Cooldown));
        i.last_scale = Some(i.now - 60.0);
        assert_eq!(once(&i), Decision::Scale { from: 2, to: 3 });
        let mut i = inputs(6, Some(90.0));
        i.range.max = 6;
        assert_eq!(once(&i), Decision::Hold(HoldReason::AtMaximum));
        i.replicas = 10;
        i.range.max = 10;
        assert_eq!(once(&i), Decision::Hold(HoldReason::AtMaximum));
    }

    #[test]
    fn scales_down_only_after_the_whole_window() {
        let mut state = State::default();
        let mut i = inputs(4, Some(20.0));
        let t0 = i.now;
        assert_eq!(
            decide(&i, &mut state),
            Decision::Hold(HoldReason::Stabilizing)
        );
        i.now = t0 + 299.0;
        assert_eq!(
            decide(&i, &mut state),
            Decision::Hold(HoldReason::Stabilizing)
        );
        i.now = t0 + 300.0;
        assert_eq!(decide(&i, &mut state), Decision::Scale { from: 4, to: 3 });
    }

    #[test]
    fn a_high_sample_restarts_the_window() {
        let mut state = State::default();
        let mut i = inputs(4, Some(20.0));
        let t0 = i.now;
        decide(&i, &mut state);
        i.now = t0 + 200.0;
        i.utilization = Some(70.0);
        assert_eq!(
            decide(&i, &mut state),
            Decision::Hold(HoldReason::WithinTolerance)
        );
        i.utilization = Some(20.0);
        i.now = t0 + 301.0;
        assert_eq!(
            decide(&i, &mut state),
            Decision::Hold(HoldReason::Stabilizing)
        );
        i.now = t0 + 200.0 + 301.0 + 300.0;
        assert_eq!(decide(&i, &mut state), Decision::Scale { from: 4, to: 3 });
    }

    #[test]
    fn each_step_down_waits_a_full_window_after_the_last_scale() {
        let mut state = State::default();
        let mut i = inputs(4, Some(10.0));
        let t0 = i.now;
        decide(&i, &mut state);
        i.now = t0 + 300.0;
        assert_eq!(decide(&i, &mut state), Decision::Scale { from: 4, to: 3 });
        // The next copy carries the step: new replicas, generation, status.
        i.replicas = 3;
        i.generation = Some(8);
        i.last_scale = Some(i.now);
        i.now += 100.0;
        assert_eq!(
            decide(&i, &mut state),
            Decision::Hold(HoldReason::Stabilizing)
        );
        // The window restarts at the first low sample after the scale.
        i.now = t0 + 699.0;
        assert_eq!(
            decide(&i, &mut state),
            Decision::Hold(HoldReason::Stabilizing)
        );
        i.now = t0 + 700.0;
        assert_eq!(decide(&i, &mut state), Decision::Scale { from: 3, to: 2 });
    }

    #[test]
    fn never_below_the_minimum() {
        let mut state = State::default();
        let mut i = inputs(2, Some(1.0));
        i.range.min = 2;
        i.window = Duration::ZERO;
        assert_eq!(
            decide(&i, &mut state),
            Decision::Hold(HoldReason::AtMinimum)
        );
        // One node with any load recommends one node.
        i.replicas = 1;
        i.range.min = 1;
        assert!(matches!(decide(&i, &mut state), Decision::Hold(_)));
    }

    #[test]
    fn missing_metrics_and_pause_hold_and_forget_the_window() {
        let mut state = State::default();
        let mut i = inputs(4, Some(20.0));
        decide(&i, &mut state);
        assert!(state.below_since.is_some());
        i.utilization = None;
        assert_eq!(
            decide(&i, &mut state),
            Decision::Hold(HoldReason::NoMetrics)
        );
        assert_eq!(state.below_since, None);
        i.utilization = Some(500.0);
        i.paused = true;
        assert_eq!(decide(&i, &mut state), Decision::Hold(HoldReason::Paused));
    }

    #[test]
    fn zero_window_scales_down_at_once() {
        let mut i = inputs(3, Some(10.0));
        i.window = Duration::ZERO;
        assert_eq!(once(&i), Decision::Scale { from: 3, to: 2 });
    }

    #[test]
    fn holds_until_its_own_step_is_seen() {
        let mut state = State::default();
        let mut i = inputs(1, Some(300.0));
        i.cooldown = Duration::ZERO;
        assert_eq!(decide(&i, &mut state), Decision::Scale { from: 1, to: 2 });
        assert_eq!(state.pending_generation, Some(7));
        // A reconcile on the copy from before the write: no second step.
        i.now += 5.0;
        assert_eq!(decide(&i, &mut state), Decision::Hold(HoldReason::Settling));
        // The write is seen (a newer generation): decide normally again.
        i.replicas = 2;
        i.generation = Some(8);
        assert_eq!(decide(&i, &mut state), Decision::Scale { from: 2, to: 3 });
        assert_eq!(state.pending_generation, Some(8));
        // A failed write is forgotten by the caller; the next round decides.
        state.pending_generation = None;
        assert_eq!(decide(&i, &mut state), Decision::Scale { from: 2, to: 3 });
    }

    #[test]
    fn settling_also_blocks_a_stale_scale_down() {
        let mut state = State::default();
        let mut i = inputs(3, Some(1.0));
        i.window = Duration::ZERO;
        assert_eq!(decide(&i, &mut state), Decision::Scale { from: 3, to: 2 });
        assert_eq!(decide(&i, &mut state), Decision::Hold(HoldReason::Settling));
        // Without generations nothing is held back.
        let mut state = State::default();
        i.generation = None;
        assert_eq!(decide(&i, &mut state), Decision::Scale { from: 3, to: 2 });
        assert_eq!(decide(&i, &mut state), Decision::Scale { from: 3, to: 2 });
    }
}
