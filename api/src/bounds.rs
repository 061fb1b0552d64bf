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

/// Longest RedisCluster name whose children are all valid. The tightest is
/// the pod label `controller-revision-hash`: `<cluster>-shard-<N>-<10-char
/// hash>` must fit a 63-character label value, and N has as many digits as
/// the largest shard index.
pub const MAX_NAME_LEN: usize =
    63 - "-0123456789".len() - "-shard-".len() - digits(SHARD_COUNT.max - 1);
/// RedisCluster names must be DNS-1035 labels: they name Services.
pub const NAME_PATTERN: &str = "^[a-z]([-a-z0-9]*[a-z0-9])?$";

const fn digits(mut n: i32) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

pub const DEFAULT_REPLICAS: i32 = 1;
pub const DEFAULT_SHARD_COUNT: i32 = 1;
pub const DEFAULT_SCALING_THRESHOLD: f64 = 70.0;
pub const DEFAULT_SCALE_DOWN_STABILIZATION_SECONDS: i32 = 300;
pub const DEFAULT_SCALE_UP_COOLDOWN_SECONDS: i32 = 60;
pub const DEFAULT_AUTOSCALING_PAUSED: bool = false;
/// Pinned to a patch release: 7.2.11 fixes CVE-2025-49844 (a Lua
/// use-after-free reachable by any client that may run scripts).
pub const DEFAULT_IMAGE: &str = "redis:7.2.11";
/// Seconds both the old and the new password work after a change.
pub const DEFAULT_ROTATION_OVERLAP_SECONDS: i32 = 300;
/// CPU and memory requested by each Redis container when `resources` is
/// omitted. A CPU request is needed: utilisation is measured against it.
pub const DEFAULT_CPU_REQUEST: &str = "100m";
pub const DEFAULT_MEMORY_REQUEST: &str = "128Mi";
/// The default memory limit: Redis gets `maxmemory` from it, so a node that
/// fills up refuses writes (or evicts, per `maxmemory_policy`) instead of
/// being OOM-killed.
pub const DEFAULT_MEMORY_LIMIT: &str = "512Mi";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_name_fits_every_child() {
        assert_eq!(MAX_NAME_LEN, 44);
        let name = "a".repeat(MAX_NAME_LEN);
        let sts = format!("{name}-shard-{}", SHARD_COUNT.max - 1);
        // controller-revision-hash = <statefulset>-<10-char hash>
        assert_eq!(format!("{sts}-0123456789").len(), 63);
        assert!(format!("{name}-headless").len() <= 63);
    }
}
