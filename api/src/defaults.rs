//! Defaulting: the one list of defaults, who applies each, and the
//! JSONPatch that fills in what a spec leaves out.
//!
//! The apiserver applies the CRD schema's defaults while it decodes a
//! request, before any mutating webhook runs. A field the admin policy
//! bounds (`replicas`, `shard_count`, `scaling_threshold`) therefore has no
//! schema default: the apiserver would fill in the built-in value, and with
//! a tightened policy (say `replicas.min: 2`) a manifest that leaves the
//! field out would arrive as `replicas: 1` and be denied. Those fields are
//! [`Owner::Policy`]: the mutating webhook fills in the default moved into
//! the policy's range, and the operator reads a missing one the same way
//! (when the webhook was skipped). Every other default is
//! [`Owner::Schema`], so it holds even when the webhook is down.
//!
//! The patch has only `add` operations, only for absent fields, so applying
//! it and defaulting again yields an empty patch. `min_replicas` and
//! `max_replicas` are never defaulted: absent, they follow the policy.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value, json};

use crate::bounds;
use crate::policy::Policy;
use crate::types::{RedisClusterSpec, default_resources};

/// Who fills in a field that a manifest leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The CRD schema's default, applied by the apiserver.
    Schema,
    /// The admin policy: the mutating webhook, or the operator.
    Policy,
}

/// One defaulted spec field.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecDefault {
    pub field: &'static str,
    pub owner: Owner,
    pub value: Value,
}

/// Every defaulted spec field with its value under `policy`. Numeric
/// defaults are moved into the policy's range, so a defaulted spec is
/// always admissible.
pub fn spec_defaults(policy: &Policy) -> [SpecDefault; 8] {
    let d = |field, owner, value| SpecDefault {
        field,
        owner,
        value,
    };
    let threshold = policy
        .scaling_threshold
        .clamp(bounds::DEFAULT_SCALING_THRESHOLD);
    [
        d(
            "replicas",
            Owner::Policy,
            json!(policy.replicas.clamp(bounds::DEFAULT_REPLICAS)),
        ),
        d(
            "shard_count",
            Owner::Policy,
            json!(policy.shard_count.clamp(bounds::DEFAULT_SHARD_COUNT)),
        ),
        d("scaling_threshold", Owner::Policy, json!(threshold)),
        d(
            "scale_down_stabilization_seconds",
            Owner::Schema,
            json!(bounds::DEFAULT_SCALE_DOWN_STABILIZATION_SECONDS),
        ),
        d(
            "scale_up_cooldown_seconds",
            Owner::Schema,
            json!(bounds::DEFAULT_SCALE_UP_COOLDOWN_SECONDS),
        ),
        d(
            "autoscaling_paused",
            Owner::Schema,
            json!(bounds::DEFAULT_AUTOSCALING_PAUSED),
        ),
        d("image", Owner::Schema, json!(bounds::DEFAULT_IMAGE)),
        d(
            "resources",
            Owner::Schema,
            serde_json::to_value(default_resources()).unwrap_or(Value::Null),
        ),
    ]
}

/// The fields whose default the policy owns: no schema default for them.
pub fn policy_owned() -> impl Iterator<Item = &'static str> {
    spec_defaults(&Policy::default())
        .into_iter()
        .filter(|d| d.owner == Owner::Policy)
        .map(|d| d.field)
}

/// The JSONPatch that defaults `object`, a whole RedisCluster: every
/// default whose field is absent, whoever owns it (a request that left out
/// `spec` altogether got no schema defaults either). An object whose `spec`
/// is not an object gets no patch: validation reports it.
pub fn default_patch(object: &Value, policy: &Policy) -> Patch {
    let add = |path: PointerBuf, value| PatchOperation::Add(AddOperation { path, value });
    let defaults = spec_defaults(policy);
    Patch(match object.get("spec") {
        None | Some(Value::Null) => {
            let spec: Map<String, Value> = defaults
                .into_iter()
                .map(|d| (d.field.to_string(), d.value))
                .collect();
            vec![add(PointerBuf::from_tokens(["spec"]), Value::Object(spec))]
        }
        Some(Value::Object(spec)) => defaults
            .into_iter()
            .filter(|d| spec.get(d.field).is_none_or(Value::is_null))
            .map(|d| add(PointerBuf::from_tokens(["spec", d.field]), d.value))
            .collect(),
        Some(_) => Vec::new(),
    })
}

/// Reads a spec as the operator must: like serde, except that a
/// policy-owned field left out (the webhook was skipped) takes the default
/// under `policy`, as the webhook would have set it.
pub fn read_spec(text: &str, policy: &Policy) -> Result<RedisClusterSpec, serde_json::Error> {
    /// Which policy-owned fields are present; reads nothing else.
    #[derive(Deserialize)]
    struct Present {
        replicas: Option<IgnoredAny>,
        shard_count: Option<IgnoredAny>,
        scaling_threshold: Option<IgnoredAny>,
    }
    let mut spec: RedisClusterSpec = serde_json::from_str(text)?;
    let present: Present = serde_json::from_str(text)?;
    if present.replicas.is_none() {
        spec.replicas = policy.replicas.clamp(bounds::DEFAULT_REPLICAS);
    }
    if present.shard_count.is_none() {
        spec.shard_count = policy.shard_count.clamp(bounds::DEFAULT_SHARD_COUNT);
    }
    if present.scaling_threshold.is_none() {
        spec.scaling_threshold = policy
            .scaling_threshold
            .clamp(bounds::DEFAULT_SCALING_THRESHOLD);
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(object: &Value, patch: &Patch) -> Value {
        let mut out = object.clone();
        json_patch::patch(&mut out, patch).unwrap();
        out
    }

    #[test]
    fn fills_every_missing_field_and_nothing_else() {
        let obj = json!({"metadata": {"name": "x"}, "spec": {"replicas": 3}});
        let ops = default_patch(&obj, &Policy::default());
        let paths: Vec<String> = ops
            .iter()
            .map(|op| match op {
                PatchOperation::Add(add) => add.path.to_string(),
                other => panic!("not an add: {other:?}"),
            })
            .collect();
        assert_eq!(
            paths,
            [
                "/spec/shard_count",
                "/spec/scaling_threshold",
                "/spec/scale_down_stabilization_seconds",
                "/spec/scale_up_cooldown_seconds",
                "/spec/autoscaling_paused",
                "/spec/image",
                "/spec/resources",
            ]
        );
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
            assert_eq!(
                default_patch(&once, &Policy::default()),
                Patch(vec![]),
                "{obj}"
            );
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
        assert_eq!(
            default_patch(&json!({"spec": 3}), &Policy::default()),
            Patch(vec![])
        );
    }

    #[test]
    fn defaulted_spec_deserializes_to_the_rust_defaults() {
        let out = apply(&json!({}), &default_patch(&json!({}), &Policy::default()));
        let spec: crate::RedisClusterSpec = serde_json::from_value(out["spec"].clone()).unwrap();
        assert_eq!(spec, crate::RedisClusterSpec::default());
    }

    #[test]
    fn the_operator_reads_a_left_out_policy_field_as_the_webhook_sets_it() {
        let tight = Policy::from_yaml("replicas: {min: 2}\nscaling_threshold: {max: 50}").unwrap();
        let spec = read_spec(r#"{"image": "redis:7"}"#, &tight).unwrap();
        assert_eq!(
            (spec.replicas, spec.shard_count, spec.scaling_threshold),
            (2, 1, 50.0)
        );
        assert_eq!(spec.image, "redis:7");
        let out = apply(&json!({}), &default_patch(&json!({}), &tight));
        let patched: RedisClusterSpec = serde_json::from_value(out["spec"].clone()).unwrap();
        assert_eq!(read_spec("{}", &tight).unwrap(), patched);
        // What a spec says is kept, even outside the policy (the webhook
        // refuses that; the operator does not rewrite it).
        let spec = read_spec(r#"{"replicas": 1}"#, &tight).unwrap();
        assert_eq!(spec.replicas, 1);
        // Not an object: the same error as serde's.
        let err = read_spec("3", &tight).unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid type: integer `3`, expected struct RedisClusterSpec at line 1 column 1"
        );
    }

    #[test]
    fn only_the_fields_the_policy_bounds_are_policy_owned() {
        let owned: Vec<_> = policy_owned().collect();
        assert_eq!(owned, ["replicas", "shard_count", "scaling_threshold"]);
    }
}
