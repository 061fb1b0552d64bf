//! The single source of truth for every bound and default of the API.
//!
//! The CRD schema, the webhook's default policy and the chart's
//! `values.schema.json` (checked by a test) are all derived from these.

/// Inclusive bounds of a numeric field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds<T> {
    pub min: T,
    pub max: T,
}

/// Redis nodes per shard (one primary plus `replicas - 1` replicas).
pub const REPLICAS: Bounds<i32> = Bounds { min: 1, max: 10 };
/// Redis Cluster shards (primaries).
pub const SHARD_COUNT: Bounds<i32> = Bounds { min: 1, max: 5 };
/// Target average CPU utilisation, in % of requested CPU.
pub const SCALING_THRESHOLD: Bounds<f64> = Bounds {
    min: 0.0,
    max: 100.0,
};
/// Scale-down stabilisation window and scale-up cooldown, in seconds.
pub const WINDOW_SECONDS: Bounds<i32> = Bounds { min: 0, max: 3600 };

pub const DEFAULT_REPLICAS: i32 = 1;
pub const DEFAULT_SHARD_COUNT: i32 = 1;
pub const DEFAULT_SCALING_THRESHOLD: f64 = 70.0;
pub const DEFAULT_SCALE_DOWN_STABILIZATION_SECONDS: i32 = 300;
pub const DEFAULT_SCALE_UP_COOLDOWN_SECONDS: i32 = 60;
pub const DEFAULT_AUTOSCALING_PAUSED: bool = false;
pub const DEFAULT_IMAGE: &str = "redis:7.2";
/// CPU and memory requested by each Redis container when `resources` is
/// omitted. A CPU request is needed: utilisation is measured against it.
pub const DEFAULT_CPU_REQUEST: &str = "100m";
pub const DEFAULT_MEMORY_REQUEST: &str = "128Mi";
