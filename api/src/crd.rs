//! The CustomResourceDefinition, generated from the Rust types.
//!
//! `make crds` writes it into the chart; a test fails when the committed
//! file and the types drift apart.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::defaults;
use crate::types::RedisCluster;

/// Where the chart keeps the CRD, relative to the repository root.
pub const CHART_CRD_PATH: &str = "charts/redis-operator/files/redisclusters.crd.yaml";

/// The CRD, without schema defaults for the fields whose default the
/// policy owns (see [`crate::defaults`]).
pub fn crd() -> CustomResourceDefinition {
    let mut crd = RedisCluster::crd();
    for version in &mut crd.spec.versions {
        let spec = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("spec"))
            .and_then(|s| s.properties.as_mut());
        if let Some(props) = spec {
            for field in defaults::policy_owned() {
                if let Some(prop) = props.get_mut(field) {
                    prop.default = None;
                }
            }
        }
    }
    crd
}

pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let body = serde_yaml::to_string(&crd())?;
    Ok(format!(
        "# Generated from api/src/types.rs by `make crds`. Do not edit.\n{body}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounds::{REPLICAS, SCALING_THRESHOLD, SHARD_COUNT};
    use serde_json::Value;
    use std::path::PathBuf;

    fn repo_file(rel: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(rel)
    }

    fn spec_schema() -> Value {
        let crd = serde_json::to_value(crd()).unwrap();
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
    }

    #[test]
    fn committed_crd_matches_the_types() {
        let committed = std::fs::read_to_string(repo_file(CHART_CRD_PATH))
            .expect("the chart's CRD file is missing: run `make crds`");
        assert!(
            committed == crd_yaml().unwrap(),
            "{CHART_CRD_PATH} is out of date with api/src/types.rs: run `make crds`"
        );
    }

    #[test]
    fn name_rules_come_from_bounds_rs() {
        let crd = serde_json::to_value(crd()).expect("CRD serialises");
        let rules: Vec<String> =
            crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"]
                .as_array()
                .expect("root rules")
                .iter()
                .map(|r| r["rule"].as_str().unwrap_or_default().to_owned())
                .collect();
        assert_eq!(
            rules,
            [
                format!(
                    "self.metadata.name.size() <= {}",
                    crate::bounds::MAX_NAME_LEN
                ),
                format!(
                    "self.metadata.name.matches('{}')",
                    crate::bounds::NAME_PATTERN
                ),
            ]
        );
    }

    #[test]
    fn names_and_subresources() {
        let crd = serde_json::to_value(crd()).unwrap();
        assert_eq!(crd["metadata"]["name"], "redisclusters.redis.example.com");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert_eq!(
            crd["spec"]["names"]["shortNames"],
            serde_json::json!(["rdc"])
        );
        let v = &crd["spec"]["versions"][0];
        assert_eq!(v["name"], "v1alpha1");
        assert_eq!(v["subresources"]["status"], serde_json::json!({}));
        assert_eq!(
            v["subresources"]["scale"]["specReplicasPath"],
            ".spec.replicas"
        );
        assert_eq!(
            v["subresources"]["scale"]["statusReplicasPath"],
            ".status.replicas"
        );
        assert_eq!(
            v["subresources"]["scale"]["labelSelectorPath"],
            ".status.selector"
        );
        let cols: Vec<_> = v["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            cols,
            [
                "Shards",
                "Replicas",
                "Ready",
                "CPU",
                "Threshold",
                "Phase",
                "Age"
            ]
        );
    }

    #[test]
    fn schema_bounds_and_defaults_come_from_bounds_rs() {
        let s = spec_schema();
        let p = &s["properties"];
        let num = |field: &str, key: &str| p[field][key].as_f64();
        assert_eq!(num("replicas", "minimum"), Some(REPLICAS.min.into()));
        assert_eq!(num("replicas", "maximum"), Some(REPLICAS.max.into()));
        // The policy's fields have no schema default: the apiserver would
        // fill it in before the webhook could move it into the policy.
        for field in ["replicas", "shard_count", "scaling_threshold"] {
            assert_eq!(p[field].get("default"), None, "{field}");
        }
        assert_eq!(num("shard_count", "minimum"), Some(SHARD_COUNT.min.into()));
        assert_eq!(num("shard_count", "maximum"), Some(SHARD_COUNT.max.into()));
        assert_eq!(
            num("scaling_threshold", "minimum"),
            Some(SCALING_THRESHOLD.min)
        );
        assert_eq!(
            num("scaling_threshold", "maximum"),
            Some(SCALING_THRESHOLD.max)
        );
        assert_eq!(p["image"]["default"], crate::bounds::DEFAULT_IMAGE);
        assert_eq!(num("min_replicas", "minimum"), Some(REPLICAS.min.into()));
        assert_eq!(num("max_replicas", "maximum"), Some(REPLICAS.max.into()));
        // No schema default: the apiserver would fill it in before the
        // webhook could apply the admin policy.
        assert!(p["min_replicas"].get("default").is_none());
        assert!(p["max_replicas"].get("default").is_none());
        let rules: Vec<_> = s["x-kubernetes-validations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["rule"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(rules.len(), 10, "{rules:?}");
        for storage_rule in [
            "has(self.tls) == has(oldSelf.tls)",
            "self.tls.issuer_ref == oldSelf.tls.issuer_ref",
            "!has(self.tls.secret_name) || !has(self.tls.issuer_ref)",
            "(has(self.tls.secret_name) ? self.tls.secret_name : '') == (has(oldSelf.tls.secret_name)",
            "has(self.storage) == has(oldSelf.storage)",
            "self.storage.storage_class_name : '') == (has(oldSelf.storage.storage_class_name)",
            "quantity(string(self.storage.size)).compareTo(quantity(string(oldSelf.storage.size))) >= 0",
        ] {
            assert!(
                rules.iter().any(|r| r.contains(storage_rule)),
                "{storage_rule}"
            );
        }
        assert!(
            rules
                .iter()
                .any(|r| r.contains("self.min_replicas <= self.max_replicas"))
        );
    }

    /// The chart's values.schema.json must bound the policy exactly by the CRD bounds.
    #[test]
    fn chart_values_schema_matches_bounds() {
        let text = std::fs::read_to_string(repo_file("charts/redis-operator/values.schema.json"))
            .expect("charts/redis-operator/values.schema.json is missing");
        let schema: Value = serde_json::from_str(&text).unwrap();
        let policy = &schema["properties"]["webhook"]["properties"]["policy"]["properties"];
        let check = |field: &str, min: f64, max: f64| {
            for end in ["min", "max"] {
                let s = &policy[field]["properties"][end];
                assert_eq!(
                    s["minimum"].as_f64(),
                    Some(min),
                    "{field}.{end} minimum: {s}"
                );
                assert_eq!(
                    s["maximum"].as_f64(),
                    Some(max),
                    "{field}.{end} maximum: {s}"
                );
            }
        };
        check("replicas", REPLICAS.min.into(), REPLICAS.max.into());
        check(
            "shard_count",
            SHARD_COUNT.min.into(),
            SHARD_COUNT.max.into(),
        );
        check(
            "scaling_threshold",
            SCALING_THRESHOLD.min,
            SCALING_THRESHOLD.max,
        );
    }
}
