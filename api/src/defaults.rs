//! Defaulting: the JSONPatch that fills in what a spec leaves out.
//!
//! Only `add` operations, only for absent fields, so applying the patch and
//! defaulting again yields an empty patch. `min_replicas` and `max_replicas`
//! are never defaulted: absent, they follow the admin policy.

use serde_json::{Map, Value, json};

use crate::bounds;
use crate::policy::Policy;
use crate::types::default_resources;

/// Every defaulted spec field with its value under `policy`. Numeric
/// defaults are moved into the policy's range, so a defaulted spec is
/// always admissible.
pub fn spec_defaults(policy: &Policy) -> Vec<(&'static str, Value)> {
    vec![
        (
            "replicas",
            json!(policy.replicas.clamp(bounds::DEFAULT_REPLICAS)),
        ),
        (
            "shard_count",
            json!(policy.shard_count.clamp(bounds::DEFAULT_SHARD_COUNT)),
        ),
        (
            "scaling_threshold",
            json!(
                policy
                    .scaling_threshold
                    .clamp(bounds::DEFAULT_SCALING_THRESHOLD)
            ),
        ),
        (
            "scale_down_stabilization_seconds",
            json!(bounds::DEFAULT_SCALE_DOWN_STABILIZATION_SECONDS),
        ),
        (
            "scale_up_cooldown_seconds",
            json!(bounds::DEFAULT_SCALE_UP_COOLDOWN_SECONDS),
        ),
        (
            "autoscaling_paused",
            json!(bounds::DEFAULT_AUTOSCALING_PAUSED),
        ),
        ("image", json!(bounds::DEFAULT_IMAGE)),
        (
            "resources",
            serde_json::to_value(default_resources()).unwrap_or(Value::Null),
        ),
    ]
}

/// The JSONPatch operations (as JSON) that default `object`, a whole
/// RedisCluster. An object whose `spec` is not an object gets no patch:
/// validation reports it.
pub fn default_patch(object: &Value, policy: &Policy) -> Vec<Value> {
    let defaults = spec_defaults(policy);
    match object.get("spec") {
        None | Some(Value::Null) => {
            let spec: Map<String, Value> = defaults
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            vec![json!({"op": "add", "path": "/spec", "value": spec})]
        }
        Some(Value::Object(spec)) => defaults
            .into_iter()
            .filter(|(k, _)| spec.get(*k).is_none_or(Value::is_null))
            .map(|(k, v)| json!({"op": "add", "path": format!("/spec/{k}"), "value": v}))
            .collect(),
        Some(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(object: &Value, ops: &[Value]) -> Value {
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops.to_vec())).unwrap();
        let mut out = object.clone();
        json_patch::patch(&mut out, &patch).unwrap();
        out
    }

    #[test]
    fn fills_every_missing_field_and_nothing_else() {
        let obj = json!({"metadata": {"name": "x"}, "spec": {"replicas": 3}});
        let ops = default_patch(&obj, &Policy::default());
        assert!(ops.iter().all(|op| op["op"] == "add"));
        assert!(!ops.iter().any(|op| op["path"] == "/spec/replicas"));
        let out = apply(&obj, &ops);
        assert_eq!(out["spec"]["replicas"], 3);
        assert_eq!(out["spec"]["shard_count"], 1);
        assert_eq!(out["spec"]["scaling_threshold"], 70.0);
        assert_eq!(out["spec"]["scale_down_stabilization_seconds"], 300);
        assert_eq!(out["spec"]["scale_up_cooldown_seconds"], 60);
        assert_eq!(out["spec"]["autoscaling_paused"], false);
        assert_eq!(out["spec"]["image"], bounds::DEFAULT_IMAGE);
        assert_eq!(out["spec"]["resources"]["requests"]["cpu"], "100m");
        assert!(out["spec"].get("min_replicas").is_none());
        assert!(out["spec"].get("max_replicas").is_none());
        assert!(out["spec"].get("storage").is_none());
    }

    #[test]
    fn is_idempotent() {
        for obj in [
            json!({}),
            json!({"spec": null}),
            json!({"spec": {}}),
            json!({"spec": {"replicas": 2, "image": "redis:7"}}),
        ] {
            let once = apply(&obj, &default_patch(&obj, &Policy::default()));
            assert!(default_patch(&once, &Policy::default()).is_empty(), "{obj}");
        }
    }

    #[test]
    fn defaulted_spec_is_valid_under_a_tight_policy() {
        let p = Policy::from_yaml(
            "replicas: {min: 2, max: 4}\nshard_count: {min: 3}\nscaling_threshold: {max: 50}",
        )
        .unwrap();
        let out = apply(&json!({}), &default_patch(&json!({}), &p));
        assert_eq!(out["spec"]["replicas"], 2);
        assert_eq!(out["spec"]["shard_count"], 3);
        assert_eq!(out["spec"]["scaling_threshold"], 50.0);
        assert!(crate::policy::validate_spec(out.get("spec"), &p).is_empty());
    }

    #[test]
    fn non_object_spec_gets_no_patch() {
        assert!(default_patch(&json!({"spec": 3}), &Policy::default()).is_empty());
    }

    #[test]
    fn defaulted_spec_deserializes_to_the_rust_defaults() {
        let out = apply(&json!({}), &default_patch(&json!({}), &Policy::default()));
        let spec: crate::RedisClusterSpec = serde_json::from_value(out["spec"].clone()).unwrap();
        assert_eq!(spec, crate::RedisClusterSpec::default());
    }
}
