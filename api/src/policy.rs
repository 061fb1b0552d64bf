//! The admin policy and spec validation.
//!
//! The policy narrows the CRD bounds (for example `replicas.max: 6`); it can
//! never widen them. Validation works on the raw JSON of the object, so a
//! field of the wrong type is reported by name instead of failing the whole
//! decode, and every violation is reported at once.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::bounds::{self, Bounds, REPLICAS, SCALING_THRESHOLD, SHARD_COUNT, WINDOW_SECONDS};
use crate::types::RedisClusterSpec;

/// Inclusive range allowed by the policy for one field.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range<T> {
    pub min: T,
    pub max: T,
}

impl<T: PartialOrd + Copy> Range<T> {
    pub fn contains(&self, v: T) -> bool {
        self.min <= v && v <= self.max
    }

    /// `v` moved into the range.
    pub fn clamp(&self, v: T) -> T {
        if v < self.min {
            self.min
        } else if v > self.max {
            self.max
        } else {
            v
        }
    }
}

impl<T: Copy> From<Bounds<T>> for Range<T> {
    fn from(b: Bounds<T>) -> Self {
        Range {
            min: b.min,
            max: b.max,
        }
    }
}

/// The bounds an admin enforces, shared by the webhook and the operator.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    pub replicas: Range<i32>,
    pub shard_count: Range<i32>,
    pub scaling_threshold: Range<f64>,
    /// Image repositories `spec.image` may come from (normalised, see
    /// [`image_repository`]); empty means any. An entry ending in `/*`
    /// allows everything under that path.
    pub allowed_repositories: Vec<String>,
}

impl Default for Policy {
    /// The CRD bounds themselves.
    fn default() -> Self {
        Policy {
            replicas: REPLICAS.into(),
            shard_count: SHARD_COUNT.into(),
            scaling_threshold: SCALING_THRESHOLD.into(),
            allowed_repositories: Vec::new(),
        }
    }
}

/// The repository of an image reference, the way a container runtime
/// resolves it: without tag or digest, with Docker Hub's implicit
/// `docker.io/` and `library/` made explicit (`redis:7.2` is
/// `docker.io/library/redis`).
pub fn image_repository(image: &str) -> String {
    let without_digest = image.split('@').next().unwrap_or(image);
    // A tag is after the last ':' that follows the last '/' (a registry
    // port comes before a '/').
    let last_slash = without_digest.rfind('/').map_or(0, |i| i + 1);
    let name = match without_digest[last_slash..].find(':') {
        Some(i) => &without_digest[..last_slash + i],
        None => without_digest,
    };
    let mut parts = name.splitn(2, '/');
    let first = parts.next().unwrap_or_default();
    match parts.next() {
        None => format!("docker.io/library/{first}"),
        Some(rest) if first.contains('.') || first.contains(':') || first == "localhost" => {
            format!("{first}/{rest}")
        }
        Some(rest) => format!("docker.io/{first}/{rest}"),
    }
}

impl Policy {
    /// Whether `image` comes from an allowed repository.
    pub fn image_allowed(&self, image: &str) -> bool {
        if self.allowed_repositories.is_empty() {
            return true;
        }
        let repo = image_repository(image);
        self.allowed_repositories
            .iter()
            .any(|allowed| match allowed.strip_suffix("/*") {
                Some(prefix) => repo.starts_with(&format!("{prefix}/")),
                None => repo == *allowed,
            })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy is not valid YAML: {0}")]
    Parse(#[from] serde_yaml::Error),
    #[error("policy is invalid: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

/// The policy file as written: every field optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    replicas: PartialRange<i32>,
    #[serde(default)]
    shard_count: PartialRange<i32>,
    #[serde(default)]
    scaling_threshold: PartialRange<f64>,
    #[serde(default)]
    images: ImagesFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImagesFile {
    #[serde(default)]
    allowed_repositories: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartialRange<T> {
    min: Option<T>,
    max: Option<T>,
}

impl<T: Copy + PartialOrd + fmt::Display> PartialRange<T> {
    fn resolve(&self, name: &str, crd: Bounds<T>, errors: &mut Vec<String>) -> Range<T> {
        let r = Range {
            min: self.min.unwrap_or(crd.min),
            max: self.max.unwrap_or(crd.max),
        };
        // NaN compares false with everything, so test "inside" rather than "outside".
        if !(crd.min <= r.min && r.min <= crd.max) {
            errors.push(format!(
                "{name}.min {} is outside the CRD bounds {} to {}",
                r.min, crd.min, crd.max
            ));
        }
        if !(crd.min <= r.max && r.max <= crd.max) {
            errors.push(format!(
                "{name}.max {} is outside the CRD bounds {} to {}",
                r.max, crd.min, crd.max
            ));
        }
        if r.min > r.max {
            errors.push(format!(
                "{name}.min {} is greater than {name}.max {}",
                r.min, r.max
            ));
        }
        r
    }
}

impl Policy {
    /// Parses a policy file. An empty document means the CRD bounds; a
    /// policy looser than the CRD bounds is refused.
    pub fn from_yaml(text: &str) -> Result<Policy, PolicyError> {
        let file: PolicyFile = if text.trim().is_empty() {
            PolicyFile::default()
        } else {
            serde_yaml::from_str::<Option<PolicyFile>>(text)?.unwrap_or_default()
        };
        let mut errors = Vec::new();
        let policy = Policy {
            replicas: file.replicas.resolve("replicas", REPLICAS, &mut errors),
            shard_count: file
                .shard_count
                .resolve("shard_count", SHARD_COUNT, &mut errors),
            scaling_threshold: file.scaling_threshold.resolve(
                "scaling_threshold",
                SCALING_THRESHOLD,
                &mut errors,
            ),
            // Written as users write images; compared normalised.
            allowed_repositories: file
                .images
                .allowed_repositories
                .iter()
                .map(|r| match r.strip_suffix("/*") {
                    Some(prefix) => format!("{}/*", normalise_prefix(prefix)),
                    None => image_repository(r),
                })
                .collect(),
        };
        for r in &file.images.allowed_repositories {
            if r.contains('@') || r.trim().is_empty() {
                errors.push(format!(
                    "images.allowed_repositories: {r:?} is not a repository (no tag or digest)"
                ));
            }
        }
        if errors.is_empty() {
            Ok(policy)
        } else {
            Err(PolicyError::Invalid(errors))
        }
    }

    /// The replica range the autoscaler may move in: the spec's own bounds
    /// (absent meaning the policy's) intersected with the policy.
    pub fn autoscaling_range(&self, spec: &RedisClusterSpec) -> Range<i32> {
        let min = self
            .replicas
            .clamp(spec.min_replicas.unwrap_or(self.replicas.min));
        let max = self
            .replicas
            .clamp(spec.max_replicas.unwrap_or(self.replicas.max));
        Range {
            min,
            max: max.max(min),
        }
    }
}

/// A repository path prefix (`registry.example.com/team`), with Docker
/// Hub's implicit parts made explicit as for [`image_repository`].
fn normalise_prefix(prefix: &str) -> String {
    let first = prefix.split('/').next().unwrap_or_default();
    if first.contains('.') || first.contains(':') || first == "localhost" {
        prefix.to_string()
    } else {
        format!("docker.io/{prefix}")
    }
}

/// One thing wrong with a spec: the field path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Joins violations into one denial message, in field order.
pub fn describe(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Reads numeric and boolean fields out of raw JSON, recording a violation
/// for each field of the wrong type.
struct Reader<'a> {
    obj: Option<&'a serde_json::Map<String, Value>>,
    prefix: &'static str,
    violations: Vec<Violation>,
}

impl<'a> Reader<'a> {
    fn field(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }

    fn raw(&self, name: &str) -> Option<&'a Value> {
        self.obj.and_then(|o| o.get(name)).filter(|v| !v.is_null())
    }

    fn wrong_type(&mut self, name: &str, v: &Value, expected: &str) {
        self.violations.push(Violation {
            field: self.field(name),
            message: format!("{v} must be {expected}"),
        });
    }

    fn int(&mut self, name: &str) -> Option<i64> {
        let v = self.raw(name)?;
        match v.as_i64() {
            Some(n) => Some(n),
            None => {
                self.wrong_type(name, v, "an integer");
                None
            }
        }
    }

    fn number(&mut self, name: &str) -> Option<f64> {
        let v = self.raw(name)?;
        match v.as_f64() {
            Some(n) => Some(n),
            None => {
                self.wrong_type(name, v, "a number");
                None
            }
        }
    }

    fn boolean(&mut self, name: &str) {
        if let Some(v) = self.raw(name).filter(|v| !v.is_boolean()) {
            self.wrong_type(name, v, "a boolean");
        }
    }

    fn string(&mut self, name: &str) -> Option<&'a str> {
        let v = self.raw(name)?;
        match v.as_str() {
            Some(s) => Some(s),
            None => {
                self.wrong_type(name, v, "a string");
                None
            }
        }
    }

    fn object(&mut self, name: &str) {
        if let Some(v) = self.raw(name).filter(|v| !v.is_object()) {
            self.wrong_type(name, v, "an object");
        }
    }

    fn check_range<T>(&mut self, name: &str, value: T, range: Range<T>)
    where
        T: PartialOrd + Copy + fmt::Display,
    {
        let message = if value < range.min {
            format!("{value} is below the minimum {}", range.min)
        } else if value > range.max {
            format!("{value} is above the maximum {}", range.max)
        } else {
            return;
        };
        self.violations.push(Violation {
            field: self.field(name),
            message: format!("{message} (allowed range {} to {})", range.min, range.max),
        });
    }

    fn int_in(&mut self, name: &str, range: Range<i32>) -> Option<i64> {
        let v = self.int(name)?;
        let wide = Range {
            min: i64::from(range.min),
            max: i64::from(range.max),
        };
        self.check_range(name, v, wide);
        Some(v)
    }
}

/// Validates a RedisCluster `spec` against the policy. `None` (no spec at
/// all) is judged as the defaults. Returns every violation found.
pub fn validate_spec(spec: Option<&Value>, policy: &Policy) -> Vec<Violation> {
    let obj = match spec {
        None | Some(Value::Null) => None,
        Some(Value::Object(o)) => Some(o),
        Some(other) => {
            return vec![Violation {
                field: "spec".into(),
                message: format!("{other} must be an object"),
            }];
        }
    };
    let mut r = Reader {
        obj,
        prefix: "spec",
        violations: Vec::new(),
    };

    let replicas = r
        .int_in("replicas", policy.replicas)
        .unwrap_or_else(|| i64::from(policy.replicas.clamp(bounds::DEFAULT_REPLICAS)));
    r.int_in("shard_count", policy.shard_count);
    if let Some(t) = r.number("scaling_threshold") {
        r.check_range("scaling_threshold", t, policy.scaling_threshold);
    }
    let min = r.int_in("min_replicas", policy.replicas);
    let max = r.int_in("max_replicas", policy.replicas);
    r.int_in("scale_down_stabilization_seconds", WINDOW_SECONDS.into());
    r.int_in("scale_up_cooldown_seconds", WINDOW_SECONDS.into());
    r.boolean("autoscaling_paused");
    r.boolean("allow_data_loss_on_update");
    match r.string("image") {
        Some(s) if s.trim().is_empty() => r.violations.push(Violation {
            field: "spec.image".into(),
            message: "must not be empty".into(),
        }),
        Some(s) if !policy.image_allowed(s) => r.violations.push(Violation {
            field: "spec.image".into(),
            message: format!(
                "{s} is not from an allowed repository ({})",
                policy.allowed_repositories.join(", ")
            ),
        }),
        _ => {}
    }
    r.object("resources");
    r.object("storage");
    r.object("auth");
    r.object("network_policy");
    r.object("persistence");
    r.object("tls");

    // Cross-field rules, only between values that are in range themselves,
    // so one mistake is reported once.
    let in_policy = |v: i64| i32::try_from(v).is_ok_and(|v| policy.replicas.contains(v));
    let min = min.filter(|&v| in_policy(v));
    let max = max.filter(|&v| in_policy(v));
    match (min, max) {
        (Some(lo), Some(hi)) if lo > hi => r.violations.push(Violation {
            field: "spec.min_replicas".into(),
            message: format!("{lo} is greater than spec.max_replicas {hi}"),
        }),
        _ if in_policy(replicas) => {
            let lo = min.unwrap_or(i64::from(policy.replicas.min));
            let hi = max.unwrap_or(i64::from(policy.replicas.max));
            let message = if replicas < lo {
                format!("{replicas} is below spec.min_replicas {lo} (allowed range {lo} to {hi})")
            } else if replicas > hi {
                format!("{replicas} is above spec.max_replicas {hi} (allowed range {lo} to {hi})")
            } else {
                String::new()
            };
            if !message.is_empty() {
                r.violations.push(Violation {
                    field: "spec.replicas".into(),
                    message,
                });
            }
        }
        _ => {}
    }
    r.violations
}

/// Validates the `spec` of an `autoscaling/v1` Scale sent for
/// `redisclusters/scale`.
pub fn validate_scale(spec: Option<&Value>, policy: &Policy) -> Vec<Violation> {
    let mut r = Reader {
        obj: spec.and_then(Value::as_object),
        prefix: "spec",
        violations: Vec::new(),
    };
    r.int_in("replicas", policy.replicas);
    r.violations
}

/// Checks a RedisCluster's name against what its children need (the same
/// rules as the CRD's CEL, [`bounds::MAX_NAME_LEN`] and
/// [`bounds::NAME_PATTERN`]). An empty name (a `generateName` create not yet
/// named) is left to the CEL rules, which see the generated one.
pub fn validate_name(name: &str) -> Vec<Violation> {
    let mut out = Vec::new();
    if name.is_empty() {
        return out;
    }
    let len = name.chars().count();
    if len > bounds::MAX_NAME_LEN {
        out.push(Violation {
            field: "metadata.name".into(),
            message: format!(
                "{name:?} is {len} characters, allowed at most {}: the StatefulSets' pods carry it in a 63-character label",
                bounds::MAX_NAME_LEN
            ),
        });
    }
    let b = name.as_bytes();
    let dns1035 = b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-';
    if !dns1035 {
        out.push(Violation {
            field: "metadata.name".into(),
            message: format!(
                "{name:?} must be a DNS-1035 label (lower-case letters, digits and '-', starting with a letter and ending with a letter or digit): it names Services"
            ),
        });
    }
    out
}

/// Advice that does not block admission.
pub fn warnings(spec: Option<&Value>) -> Vec<String> {
    let replicas = spec
        .and_then(|s| s.get("replicas"))
        .and_then(Value::as_i64)
        .unwrap_or(i64::from(bounds::DEFAULT_REPLICAS));
    let mut out = Vec::new();
    if replicas == 1 {
        out.push(
            "spec.replicas is 1: shards have no replica, so losing a node loses its shard's data"
                .to_string(),
        );
    }
    if spec
        .and_then(|s| s.get("storage"))
        .is_none_or(Value::is_null)
    {
        out.push(
            "spec.storage is not set: data lives in emptyDir volumes, so a deleted or rescheduled pod comes back empty and only replicas keep its data"
                .to_string(),
        );
    }
    let memory_limit = spec
        .and_then(|s| s.get("resources"))
        .and_then(|r| r.get("limits"))
        .and_then(|l| l.get("memory"));
    if spec.and_then(|s| s.get("resources")).is_some() && memory_limit.is_none() {
        out.push(
            "spec.resources.limits.memory is not set: Redis gets no maxmemory, so a full node is OOM-killed instead of refusing writes"
                .to_string(),
        );
    }
    if spec
        .and_then(|s| s.get("auth"))
        .and_then(|a| a.get("enabled"))
        .and_then(Value::as_bool)
        == Some(false)
    {
        out.push(
            "spec.auth.enabled is false: any pod that can reach the Redis port can read, change or wipe every key and break the cluster"
                .to_string(),
        );
    }
    if spec
        .and_then(|s| s.get("network_policy"))
        .and_then(|n| n.get("enabled"))
        .and_then(Value::as_bool)
        == Some(false)
    {
        out.push(
            "spec.network_policy.enabled is false: pods in any namespace can reach the Redis ports, including the cluster bus"
                .to_string(),
        );
    }
    let persistence = spec.and_then(|s| s.get("persistence"));
    let append_only = persistence
        .and_then(|p| p.get("append_only"))
        .and_then(Value::as_bool);
    let snapshots = persistence
        .and_then(|p| p.get("rdb_save"))
        .and_then(Value::as_array)
        .is_none_or(|s| !s.is_empty());
    if append_only == Some(false) {
        out.push(if snapshots {
            "spec.persistence.append_only is false: a restarted node comes back with its last snapshot only, and the writes since then are lost unless a replica has them"
        } else {
            "spec.persistence turns off both the AOF and snapshots: a primary that restarts comes back empty, and its replicas then copy the empty data set"
        }.to_string());
    }
    if spec
        .and_then(|s| s.get("allow_data_loss_on_update"))
        .and_then(Value::as_bool)
        == Some(true)
    {
        out.push(
            "spec.allow_data_loss_on_update is true: a rolling update replaces the only pod of a shard without replica or storage, and that shard's data is lost"
                .to_string(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: &[Violation]) -> Vec<&str> {
        v.iter().map(|v| v.field.as_str()).collect()
    }

    fn check(spec: Value) -> Vec<Violation> {
        validate_spec(Some(&spec), &Policy::default())
    }

    #[test]
    fn names_too_long_or_not_dns1035_are_refused_with_the_limit() {
        assert!(validate_name(&"a".repeat(bounds::MAX_NAME_LEN)).is_empty());
        assert!(validate_name("cache-1").is_empty());
        assert!(validate_name("").is_empty(), "generateName: left to CEL");
        let long = validate_name(&"a".repeat(50));
        assert_eq!(long.len(), 1, "{long:?}");
        assert_eq!(long[0].field, "metadata.name");
        assert!(
            long[0]
                .message
                .contains("is 50 characters, allowed at most 44"),
            "{}",
            long[0]
        );
        for bad in ["1cache", "Cache", "cache.a", "cache-", "-cache", "ca_che"] {
            let v = validate_name(bad);
            assert_eq!(v.len(), 1, "{bad}: {v:?}");
            assert!(v[0].message.contains("DNS-1035"), "{bad}: {}", v[0]);
        }
        // Both at once are both reported.
        assert_eq!(validate_name(&format!("{}.x", "a".repeat(50))).len(), 2);
    }

    #[test]
    fn original_tutorial_spec_is_valid() {
        let v = check(json!({"replicas": 1, "shard_count": 1, "scaling_threshold": 70.0}));
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn missing_spec_counts_as_defaults() {
        assert!(validate_spec(None, &Policy::default()).is_empty());
        assert!(check(json!({})).is_empty());
    }

    #[test]
    fn every_boundary_value_of_replicas() {
        for (n, ok) in [
            (0, false),
            (1, true),
            (2, true),
            (9, true),
            (10, true),
            (11, false),
        ] {
            let v = check(json!({ "replicas": n }));
            assert_eq!(v.is_empty(), ok, "replicas {n}: {v:?}");
        }
        assert_eq!(
            check(json!({"replicas": 12}))[0].to_string(),
            "spec.replicas: 12 is above the maximum 10 (allowed range 1 to 10)"
        );
        assert_eq!(
            check(json!({"replicas": 0}))[0].to_string(),
            "spec.replicas: 0 is below the minimum 1 (allowed range 1 to 10)"
        );
    }

    #[test]
    fn every_boundary_value_of_shard_count() {
        for (n, ok) in [(0, false), (1, true), (5, true), (6, false)] {
            let v = check(json!({ "shard_count": n }));
            assert_eq!(v.is_empty(), ok, "shard_count {n}: {v:?}");
        }
        assert_eq!(
            check(json!({"shard_count": 6}))[0].to_string(),
            "spec.shard_count: 6 is above the maximum 5 (allowed range 1 to 5)"
        );
    }

    #[test]
    fn every_boundary_value_of_threshold() {
        for (t, ok) in [
            (json!(-0.5), false),
            (json!(0), true),
            (json!(0.0), true),
            (json!(70.5), true),
            (json!(100), true),
            (json!(100.01), false),
            (json!(150), false),
        ] {
            let v = check(json!({ "scaling_threshold": t }));
            assert_eq!(v.is_empty(), ok, "threshold {t}: {v:?}");
        }
        assert_eq!(
            check(json!({"scaling_threshold": 150.0}))[0].to_string(),
            "spec.scaling_threshold: 150 is above the maximum 100 (allowed range 0 to 100)"
        );
    }

    #[test]
    fn windows_are_bounded() {
        assert!(check(json!({"scale_down_stabilization_seconds": 0})).is_empty());
        assert!(check(json!({"scale_up_cooldown_seconds": 3600})).is_empty());
        assert_eq!(
            fields(&check(json!({"scale_up_cooldown_seconds": -1}))),
            ["spec.scale_up_cooldown_seconds"]
        );
        assert_eq!(
            fields(&check(json!({"scale_down_stabilization_seconds": 3601}))),
            ["spec.scale_down_stabilization_seconds"]
        );
    }

    #[test]
    fn min_above_max_is_denied() {
        let v = check(json!({"replicas": 3, "min_replicas": 5, "max_replicas": 3}));
        assert_eq!(
            v.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["spec.min_replicas: 5 is greater than spec.max_replicas 3"]
        );
        assert!(check(json!({"replicas": 3, "min_replicas": 3, "max_replicas": 3})).is_empty());
    }

    #[test]
    fn replicas_must_sit_inside_its_own_bounds() {
        assert_eq!(
            check(json!({"replicas": 2, "min_replicas": 3}))[0].to_string(),
            "spec.replicas: 2 is below spec.min_replicas 3 (allowed range 3 to 10)"
        );
        assert_eq!(
            check(json!({"replicas": 7, "max_replicas": 6}))[0].to_string(),
            "spec.replicas: 7 is above spec.max_replicas 6 (allowed range 1 to 6)"
        );
        // min/max of their own outside the policy are reported once, on themselves.
        assert_eq!(
            fields(&check(
                json!({"replicas": 2, "min_replicas": 0, "max_replicas": 11})
            )),
            ["spec.min_replicas", "spec.max_replicas"]
        );
    }

    #[test]
    fn several_bad_fields_are_all_reported() {
        let v = check(json!({
            "replicas": 11, "shard_count": 6, "scaling_threshold": 150,
            "min_replicas": 0, "autoscaling_paused": "yes"
        }));
        assert_eq!(
            fields(&v),
            [
                "spec.replicas",
                "spec.shard_count",
                "spec.scaling_threshold",
                "spec.min_replicas",
                "spec.autoscaling_paused"
            ]
        );
        let msg = describe(&v);
        assert!(
            msg.contains("spec.replicas: 11 is above the maximum 10"),
            "{msg}"
        );
        assert!(
            msg.contains("spec.shard_count: 6 is above the maximum 5"),
            "{msg}"
        );
    }

    #[test]
    fn wrong_types_name_the_field() {
        let v = check(json!({"replicas": "3", "scaling_threshold": "high", "shard_count": 1.5}));
        assert_eq!(
            v.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "spec.replicas: \"3\" must be an integer",
                "spec.shard_count: 1.5 must be an integer",
                "spec.scaling_threshold: \"high\" must be a number"
            ]
        );
        assert_eq!(fields(&check(json!({"image": 5}))), ["spec.image"]);
        assert_eq!(fields(&check(json!({"image": " "}))), ["spec.image"]);
        assert_eq!(fields(&check(json!({"resources": []}))), ["spec.resources"]);
        assert_eq!(
            fields(&validate_spec(Some(&json!([1])), &Policy::default())),
            ["spec"]
        );
    }

    #[test]
    fn huge_integers_do_not_wrap() {
        let v = check(json!({"replicas": 4294967297_i64, "min_replicas": 4294967297_i64}));
        assert_eq!(fields(&v), ["spec.replicas", "spec.min_replicas"]);
    }

    fn tight() -> Policy {
        Policy::from_yaml("replicas: {max: 6}\nshard_count: {min: 2, max: 3}\n").unwrap()
    }

    #[test]
    fn tightened_policy_applies() {
        let p = tight();
        let v = validate_spec(Some(&json!({"replicas": 7, "shard_count": 2})), &p);
        assert_eq!(
            v[0].to_string(),
            "spec.replicas: 7 is above the maximum 6 (allowed range 1 to 6)"
        );
        let v = validate_spec(Some(&json!({"replicas": 6, "shard_count": 1})), &p);
        assert_eq!(fields(&v), ["spec.shard_count"]);
        let v = validate_spec(Some(&json!({"max_replicas": 8, "shard_count": 2})), &p);
        assert_eq!(fields(&v), ["spec.max_replicas"]);
    }

    #[test]
    fn tightened_policy_never_invalidates_absent_bounds() {
        let p = Policy::from_yaml("replicas: {min: 2, max: 6}").unwrap();
        assert!(validate_spec(Some(&json!({"replicas": 4})), &p).is_empty());
        assert!(validate_spec(Some(&json!({"replicas": 2})), &p).is_empty());
    }

    #[test]
    fn policy_file_parsing() {
        assert_eq!(Policy::from_yaml("").unwrap(), Policy::default());
        assert_eq!(Policy::from_yaml("{}").unwrap(), Policy::default());
        let full = "replicas: {min: 1, max: 10}\nshard_count: {min: 1, max: 5}\nscaling_threshold: {min: 0, max: 100}\n";
        assert_eq!(Policy::from_yaml(full).unwrap(), Policy::default());
        assert_eq!(tight().replicas, Range { min: 1, max: 6 });
    }

    #[test]
    fn looser_or_inverted_policy_is_refused() {
        for bad in [
            "replicas: {max: 11}",
            "replicas: {min: 0}",
            "shard_count: {max: 6}",
            "scaling_threshold: {max: 101}",
            "scaling_threshold: {min: -1}",
            "replicas: {min: 5, max: 4}",
        ] {
            let err = Policy::from_yaml(bad).unwrap_err().to_string();
            assert!(err.starts_with("policy is invalid"), "{bad}: {err}");
        }
        let err = Policy::from_yaml("replica: {max: 3}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field"), "{err}");
        let err = Policy::from_yaml("replicas: {max: six}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not valid YAML"), "{err}");
    }

    #[test]
    fn autoscaling_range_intersects_spec_and_policy() {
        let p = tight();
        let mut spec = RedisClusterSpec::default();
        assert_eq!(p.autoscaling_range(&spec), Range { min: 1, max: 6 });
        spec.min_replicas = Some(2);
        spec.max_replicas = Some(9);
        assert_eq!(p.autoscaling_range(&spec), Range { min: 2, max: 6 });
    }

    #[test]
    fn scale_subresource_is_checked_against_the_policy() {
        let p = tight();
        assert!(validate_scale(Some(&json!({"replicas": 6})), &p).is_empty());
        assert_eq!(
            validate_scale(Some(&json!({"replicas": 7})), &p)[0].to_string(),
            "spec.replicas: 7 is above the maximum 6 (allowed range 1 to 6)"
        );
    }

    #[test]
    fn single_replica_and_ephemeral_storage_warn() {
        let storage = json!({"size": "1Gi"});
        let w = warnings(Some(&json!({"replicas": 1, "storage": storage})));
        assert_eq!(w.len(), 1);
        assert!(w[0].starts_with("spec.replicas is 1"), "{w:?}");
        let w = warnings(Some(&json!({"replicas": 2})));
        assert_eq!(w.len(), 1);
        assert!(w[0].starts_with("spec.storage is not set"), "{w:?}");
        assert_eq!(warnings(Some(&json!({"replicas": 1}))).len(), 2);
        assert!(warnings(Some(&json!({"replicas": 2, "storage": storage}))).is_empty());
        let w = warnings(Some(
            &json!({"replicas": 2, "storage": storage, "allow_data_loss_on_update": true}),
        ));
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("allow_data_loss_on_update"), "{w:?}");
        let w = warnings(Some(
            &json!({"replicas": 2, "storage": storage, "auth": {"enabled": false}}),
        ));
        assert!(
            w.len() == 1 && w[0].contains("spec.auth.enabled is false"),
            "{w:?}"
        );
        let w = warnings(Some(
            &json!({"replicas": 2, "storage": storage, "network_policy": {"enabled": false}}),
        ));
        assert!(
            w.len() == 1 && w[0].contains("spec.network_policy.enabled is false"),
            "{w:?}"
        );
        let durable = json!({"append_fsync": "always", "rdb_save": []});
        assert!(
            warnings(Some(
                &json!({"replicas": 2, "storage": storage, "persistence": durable})
            ))
            .is_empty()
        );
        let w = warnings(Some(
            &json!({"replicas": 2, "storage": storage, "persistence": {"append_only": false}}),
        ));
        assert!(w.len() == 1 && w[0].contains("last snapshot only"), "{w:?}");
        let w = warnings(Some(
            &json!({"replicas": 2, "storage": storage, "persistence": {"append_only": false, "rdb_save": []}}),
        ));
        assert!(w.len() == 1 && w[0].contains("comes back empty"), "{w:?}");
    }

    #[test]
    fn image_repositories_resolve_as_a_runtime_does() {
        for (image, repo) in [
            ("redis", "docker.io/library/redis"),
            ("redis:7.2.11", "docker.io/library/redis"),
            ("bitnami/redis:7", "docker.io/bitnami/redis"),
            (
                "docker.io/library/redis@sha256:abc",
                "docker.io/library/redis",
            ),
            (
                "registry.example.com:5000/team/redis:7",
                "registry.example.com:5000/team/redis",
            ),
            (
                "localhost/redis-debian-test:7.0.15",
                "localhost/redis-debian-test",
            ),
        ] {
            assert_eq!(image_repository(image), repo, "{image}");
        }
    }

    #[test]
    fn only_allowed_repositories_pass() {
        let p = Policy::from_yaml(
            "images:\n  allowed_repositories: [redis, registry.example.com/team/*]\n",
        )
        .unwrap();
        assert_eq!(
            p.allowed_repositories,
            ["docker.io/library/redis", "registry.example.com/team/*"]
        );
        assert!(p.image_allowed("redis:7.2.11"));
        assert!(p.image_allowed("docker.io/library/redis@sha256:abc"));
        assert!(p.image_allowed("registry.example.com/team/redis:7"));
        assert!(!p.image_allowed("registry.example.com/teamx/redis:7"));
        assert!(!p.image_allowed("bitnami/redis:7"));
        assert!(!p.image_allowed("evil.example/redis:7.2.11"));
        let v = validate_spec(Some(&json!({"image": "evil.example/redis:7"})), &p);
        assert_eq!(
            describe(&v),
            "spec.image: evil.example/redis:7 is not from an allowed repository (docker.io/library/redis, registry.example.com/team/*)"
        );
        assert!(Policy::default().image_allowed("anything/at:all"));
        assert!(matches!(
            Policy::from_yaml("images:\n  allowed_repositories: [\"redis@sha256:x\"]\n"),
            Err(PolicyError::Invalid(_))
        ));
    }
}
