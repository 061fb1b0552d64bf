//! The shape a RedisCluster asks for, validated once where the spec enters
//! the reconcile, so the pure modules never clamp a count of their own.

use std::num::NonZeroU32;

use api::RedisClusterSpec;

use crate::topology;

/// `shards` primaries, each with `nodes_per_shard - 1` replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterShape {
    pub shards: NonZeroU32,
    pub nodes_per_shard: NonZeroU32,
}

/// A spec whose counts cannot make a cluster. The CRD schema already
/// refuses these; this is the guard for an object written around it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("spec.shard_count is {0}; it must be at least 1")]
    Shards(i32),
    #[error("spec.replicas is {0}; it must be at least 1")]
    NodesPerShard(i32),
}

impl ClusterShape {
    pub fn of(spec: &RedisClusterSpec) -> Result<Self, ShapeError> {
        let positive = |n: i32| u32::try_from(n).ok().and_then(NonZeroU32::new);
        Ok(ClusterShape {
            shards: positive(spec.shard_count).ok_or(ShapeError::Shards(spec.shard_count))?,
            nodes_per_shard: positive(spec.replicas)
                .ok_or(ShapeError::NodesPerShard(spec.replicas))?,
        })
    }

    /// Nodes per shard in the `i32` that Kubernetes counts replicas in.
    pub fn replicas(self) -> i32 {
        i32::try_from(self.nodes_per_shard.get()).unwrap_or(i32::MAX)
    }

    /// Whether StatefulSet index `shard` is one of the desired shards.
    pub fn has_shard(self, shard: u32) -> bool {
        shard < self.shards.get()
    }
}

impl From<ClusterShape> for topology::Desired {
    fn from(shape: ClusterShape) -> Self {
        topology::Desired {
            shards: shape.shards.get(),
            nodes_per_shard: shape.nodes_per_shard.get(),
            loss: topology::LossPolicy::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(shard_count: i32, replicas: i32) -> RedisClusterSpec {
        RedisClusterSpec {
            shard_count,
            replicas,
            ..Default::default()
        }
    }

    #[test]
    fn a_valid_spec_gives_its_shape() {
        let shape = ClusterShape::of(&spec(3, 2)).unwrap();
        assert_eq!((shape.shards.get(), shape.replicas()), (3, 2));
        assert!(shape.has_shard(2) && !shape.has_shard(3));
        assert_eq!(
            topology::Desired::from(shape),
            topology::Desired {
                shards: 3,
                nodes_per_shard: 2,
                loss: topology::LossPolicy::default(),
            }
        );
    }

    #[test]
    fn zero_or_negative_counts_are_refused_by_field() {
        assert_eq!(ClusterShape::of(&spec(0, 2)), Err(ShapeError::Shards(0)));
        assert_eq!(
            ClusterShape::of(&spec(1, -1)),
            Err(ShapeError::NodesPerShard(-1))
        );
        assert_eq!(
            ShapeError::Shards(0).to_string(),
            "spec.shard_count is 0; it must be at least 1"
        );
    }
}
