//! `admission.k8s.io/v1` AdmissionReview in, AdmissionReview out.
//!
//! Pure: a request body, the policy and the known StorageClasses go in, an
//! HTTP status and a review come out, so every path of the v1 contract is
//! unit-tested without a server. Every answer carries `apiVersion`, `kind` and the request's uid
//! when one could be read.

use api::Policy;
use api::expansion;
use api::policy::{Violation, describe, validate_name, validate_scale, validate_spec, warnings};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::Value;

use crate::classes::StorageClasses;

/// Which webhook path was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Validate,
    Mutate,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Validate => "validate",
            Endpoint::Mutate => "mutate",
        }
    }
}

/// How a review ended, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Patched,
    Denied,
    /// The request itself was unusable.
    BadRequest,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Patched => "patched",
            Outcome::Denied => "denied",
            Outcome::BadRequest => "bad_request",
        }
    }
}

/// The answer to one call: HTTP status, body, and outcome.
#[derive(Debug)]
pub struct Answer {
    pub http_status: u16,
    pub body: Value,
    pub outcome: Outcome,
}

/// Status code in the review of a policy denial: the object is invalid.
pub const DENIED_CODE: u16 = 422;

/// Handles one AdmissionReview body.
pub fn review(
    body: &[u8],
    endpoint: Endpoint,
    policy: &Policy,
    classes: &dyn StorageClasses,
) -> Answer {
    let raw: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return bad_request(None, format!("malformed AdmissionReview JSON: {e}")),
    };
    let uid = raw
        .pointer("/request/uid")
        .and_then(Value::as_str)
        .map(str::to_string);
    if raw.get("request").is_none_or(Value::is_null) {
        return bad_request(uid, "AdmissionReview has no request".into());
    }
    let Some(uid) = uid else {
        return bad_request(None, "AdmissionReview request has no uid".into());
    };
    let request: AdmissionRequest<DynamicObject> = match serde_json::from_value::<
        AdmissionReview<DynamicObject>,
    >(raw)
    .map_err(|e| e.to_string())
    .and_then(|r| {
        r.try_into()
            .map_err(|e: kube::core::admission::ConvertAdmissionReviewError| e.to_string())
    }) {
        Ok(r) => r,
        // The request is readable enough to answer by uid: deny it in
        // the review rather than failing the HTTP call.
        Err(e) => return deny_unreadable(uid, format!("unreadable AdmissionReview request: {e}")),
    };

    let response = match endpoint {
        Endpoint::Validate => validate(&request, policy, classes),
        Endpoint::Mutate => mutate(&request, policy),
    };
    let outcome = if !response.allowed {
        Outcome::Denied
    } else if response.patch.is_some() {
        Outcome::Patched
    } else {
        Outcome::Allowed
    };
    Answer {
        http_status: 200,
        body: to_json(response),
        outcome,
    }
}

fn to_json(response: AdmissionResponse) -> Value {
    serde_json::to_value(response.into_review()).unwrap_or(Value::Null)
}

fn bad_request(uid: Option<String>, message: String) -> Answer {
    let mut response = AdmissionResponse::invalid(&message);
    response.uid = uid.unwrap_or_default();
    response.result.code = 400;
    Answer {
        http_status: 400,
        body: to_json(response),
        outcome: Outcome::BadRequest,
    }
}

fn deny_unreadable(uid: String, message: String) -> Answer {
    let mut response = AdmissionResponse::invalid(&message);
    response.uid = uid;
    response.result.code = 400;
    Answer {
        http_status: 200,
        body: to_json(response),
        outcome: Outcome::Denied,
    }
}

fn object_name(req: &AdmissionRequest<DynamicObject>) -> String {
    match req.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{}", req.name),
        _ => req.name.clone(),
    }
}

fn is_scale(req: &AdmissionRequest<DynamicObject>) -> bool {
    req.sub_resource.as_deref() == Some("scale")
}

fn spec_of(req: &AdmissionRequest<DynamicObject>) -> Option<&Value> {
    req.object.as_ref().and_then(|o| o.data.get("spec"))
}

/// Everything wrong with a RedisCluster: its name (what its children need),
/// then its spec.
fn object_violations(req: &AdmissionRequest<DynamicObject>, policy: &Policy) -> Vec<Violation> {
    let name = req
        .object
        .as_ref()
        .and_then(|o| o.metadata.name.as_deref())
        .unwrap_or(&req.name);
    let mut v = validate_name(name);
    v.extend(validate_spec(spec_of(req), policy));
    v
}

fn validate(
    req: &AdmissionRequest<DynamicObject>,
    policy: &Policy,
    classes: &dyn StorageClasses,
) -> AdmissionResponse {
    let response = AdmissionResponse::from(req);
    if matches!(req.operation, Operation::Delete | Operation::Connect) {
        return response;
    }
    if req.object.is_none() {
        return deny(
            response,
            400,
            format!("{} request without an object", op(req)),
        );
    }
    let (what, violations) = if is_scale(req) {
        (
            "scale of RedisCluster",
            validate_scale(spec_of(req), policy),
        )
    } else {
        ("RedisCluster", object_violations(req, policy))
    };
    if violations.is_empty() {
        let mut w = if is_scale(req) {
            Vec::new()
        } else {
            warnings(spec_of(req))
        };
        let old_spec = req.old_object.as_ref().and_then(|o| o.data.get("spec"));
        if let Some(growth) = expansion::growth(old_spec, spec_of(req)).filter(|_| !is_scale(req)) {
            match classes.classes() {
                Ok(known) => {
                    if let Some(why) = expansion::refusal(&growth, &known) {
                        let message = format!("{what} {} is invalid: {why}", object_name(req));
                        return deny(response, DENIED_CODE, message);
                    }
                }
                Err(why) => w.push(format!(
                    "could not check that the volumes can expand ({why}); status.volume_expansion says if they cannot"
                )),
            }
        }
        let mut response = response;
        if !w.is_empty() {
            response.warnings = Some(w);
        }
        return response;
    }
    deny(
        response,
        DENIED_CODE,
        format!(
            "{what} {} is invalid: {}",
            object_name(req),
            describe(&violations)
        ),
    )
}

/// Defaulting. An invalid spec is denied here with the full list of
/// violations: mutating admission runs before the apiserver's schema and CEL
/// checks, so this is where the user gets one complete message from us.
fn mutate(req: &AdmissionRequest<DynamicObject>, policy: &Policy) -> AdmissionResponse {
    let response = AdmissionResponse::from(req);
    if matches!(req.operation, Operation::Delete | Operation::Connect) || is_scale(req) {
        return response;
    }
    let Some(object) = req.object.as_ref() else {
        return response;
    };
    let violations = object_violations(req, policy);
    if !violations.is_empty() {
        return deny(
            response,
            DENIED_CODE,
            format!(
                "RedisCluster {} is invalid: {}",
                object_name(req),
                describe(&violations)
            ),
        );
    }
    let patch = api::defaults::default_patch(&object.data, policy);
    if patch.is_empty() {
        return response;
    }
    // Encoding typed operations of JSON values cannot fail; were it to, the
    // object is admitted as it is (the schema defaults hold) and says so.
    match response.clone().with_patch(patch) {
        Ok(r) => r,
        Err(e) => {
            let mut response = response;
            response.warnings = Some(vec![format!("defaults not applied: {e}")]);
            response
        }
    }
}

fn op(req: &AdmissionRequest<DynamicObject>) -> &'static str {
    match req.operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

fn deny(response: AdmissionResponse, code: u16, message: String) -> AdmissionResponse {
    let mut response = response.deny(message);
    response.result.code = code;
    response.result.reason = if code == DENIED_CODE {
        "Invalid"
    } else {
        "BadRequest"
    }
    .into();
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn review_body(operation: &str, object: Value, sub: Option<&str>, dry_run: bool) -> Vec<u8> {
        let kind = if sub.is_some() {
            json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
        } else {
            json!({"group": "redis.example.com", "version": "v1alpha1", "kind": "RedisCluster"})
        };
        let mut request = json!({
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": kind,
            "resource": {"group": "redis.example.com", "version": "v1alpha1", "resource": "redisclusters"},
            "requestKind": kind,
            "requestResource": {"group": "redis.example.com", "version": "v1alpha1", "resource": "redisclusters"},
            "name": "demo",
            "namespace": "team-a",
            "operation": operation,
            "userInfo": {"username": "admin"},
            "object": object,
            "oldObject": null,
            "dryRun": dry_run,
        });
        if let Some(s) = sub {
            request["subResource"] = json!(s);
        }
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": request,
        }))
        .unwrap()
    }

    fn rc(spec: Value) -> Value {
        json!({
            "apiVersion": "redis.example.com/v1alpha1",
            "kind": "RedisCluster",
            "metadata": {"name": "demo", "namespace": "team-a"},
            "spec": spec,
        })
    }

    fn run(endpoint: Endpoint, body: &[u8]) -> Answer {
        review(
            body,
            endpoint,
            &Policy::default(),
            &crate::classes::NotWatched,
        )
    }

    fn response(a: &Answer) -> &Value {
        &a.body["response"]
    }

    fn assert_envelope(a: &Answer) {
        assert_eq!(a.body["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(a.body["kind"], "AdmissionReview");
    }

    #[test]
    fn valid_spec_is_allowed_and_uid_echoed() {
        let a = run(
            Endpoint::Validate,
            &review_body(
                "CREATE",
                rc(json!({"replicas": 3, "shard_count": 3})),
                None,
                false,
            ),
        );
        assert_envelope(&a);
        assert_eq!(a.http_status, 200);
        assert_eq!(response(&a)["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(response(&a)["allowed"], true);
        assert_eq!(a.outcome, Outcome::Allowed);
    }

    #[test]
    fn invalid_spec_is_denied_naming_every_field() {
        let a = run(
            Endpoint::Validate,
            &review_body(
                "CREATE",
                rc(json!({"replicas": 11, "shard_count": 6, "scaling_threshold": 150})),
                None,
                false,
            ),
        );
        assert_envelope(&a);
        let r = response(&a);
        assert_eq!(r["allowed"], false);
        assert_eq!(r["status"]["code"], 422);
        let msg = r["status"]["message"].as_str().unwrap();
        assert!(
            msg.starts_with("RedisCluster team-a/demo is invalid: "),
            "{msg}"
        );
        for part in [
            "spec.replicas: 11 is above the maximum 10 (allowed range 1 to 10)",
            "spec.shard_count: 6 is above the maximum 5 (allowed range 1 to 5)",
            "spec.scaling_threshold: 150 is above the maximum 100 (allowed range 0 to 100)",
        ] {
            assert!(msg.contains(part), "{msg}");
        }
        assert_eq!(a.outcome, Outcome::Denied);
    }

    #[test]
    fn a_name_too_long_for_the_children_is_denied_with_the_limit() {
        let name = "a".repeat(50);
        let mut obj = rc(json!({"replicas": 11}));
        obj["metadata"]["name"] = json!(name);
        for endpoint in [Endpoint::Validate, Endpoint::Mutate] {
            let a = run(endpoint, &review_body("CREATE", obj.clone(), None, false));
            let r = response(&a);
            assert_eq!(
                (r["allowed"].clone(), r["status"]["code"].clone()),
                (json!(false), json!(422))
            );
            let msg = r["status"]["message"].as_str().unwrap();
            // The name first, then the spec: every violation, in one message.
            let want = format!(
                "metadata.name: \"{name}\" is 50 characters, allowed at most 44: the StatefulSets' pods carry it in a 63-character label; spec.replicas: 11"
            );
            assert!(msg.contains(&want), "{msg}");
        }
    }

    #[test]
    fn dry_run_gets_the_same_answer() {
        let obj = rc(json!({"replicas": 0}));
        let wet = run(
            Endpoint::Validate,
            &review_body("CREATE", obj.clone(), None, false),
        );
        let dry = run(Endpoint::Validate, &review_body("CREATE", obj, None, true));
        assert_eq!(wet.body, dry.body);
    }

    #[test]
    fn delete_with_null_object_is_allowed() {
        let a = run(
            Endpoint::Validate,
            &review_body("DELETE", Value::Null, None, false),
        );
        assert_eq!(response(&a)["allowed"], true);
        let a = run(
            Endpoint::Mutate,
            &review_body("DELETE", Value::Null, None, false),
        );
        assert_eq!(response(&a)["allowed"], true);
        assert!(response(&a).get("patch").is_none());
    }

    #[test]
    fn update_is_validated_on_the_new_object() {
        let mut body: Value = serde_json::from_slice(&review_body(
            "UPDATE",
            rc(json!({"replicas": 12})),
            None,
            false,
        ))
        .unwrap();
        body["request"]["oldObject"] = rc(json!({"replicas": 2}));
        let a = run(Endpoint::Validate, &serde_json::to_vec(&body).unwrap());
        assert_eq!(response(&a)["allowed"], false);
    }

    struct Classes(Vec<api::expansion::ClassFacts>);

    impl StorageClasses for Classes {
        fn classes(&self) -> Result<Vec<api::expansion::ClassFacts>, String> {
            Ok(self.0.clone())
        }
    }

    fn grow_body(from: &str, to: &str) -> Vec<u8> {
        let storage = |size: &str| json!({"replicas": 2, "storage": {"size": size, "storage_class_name": "local"}});
        let mut body: Value =
            serde_json::from_slice(&review_body("UPDATE", rc(storage(to)), None, false)).unwrap();
        body["request"]["oldObject"] = rc(storage(from));
        serde_json::to_vec(&body).unwrap()
    }

    #[test]
    fn growing_storage_needs_a_class_that_can_expand() {
        let class = |allow_expansion| {
            Classes(vec![api::expansion::ClassFacts {
                name: "local".into(),
                default: false,
                allow_expansion,
            }])
        };
        let policy = Policy::default();
        let a = review(
            &grow_body("1Gi", "2Gi"),
            Endpoint::Validate,
            &policy,
            &class(true),
        );
        assert_eq!(response(&a)["allowed"], true);
        let a = review(
            &grow_body("1Gi", "2Gi"),
            Endpoint::Validate,
            &policy,
            &class(false),
        );
        assert_eq!(response(&a)["allowed"], false);
        assert_eq!(response(&a)["status"]["code"], 422);
        assert_eq!(
            response(&a)["status"]["message"],
            "RedisCluster team-a/demo is invalid: spec.storage.size cannot grow from 1Gi to 2Gi: StorageClass local does not allow volume expansion (allowVolumeExpansion is not true); an admin can set it if the storage driver can expand volumes"
        );
        // The same size, or classes not known: admitted, the latter with a warning.
        let a = review(
            &grow_body("2Gi", "2Gi"),
            Endpoint::Validate,
            &policy,
            &class(false),
        );
        assert_eq!(response(&a)["allowed"], true);
        let a = run(Endpoint::Validate, &grow_body("1Gi", "2Gi"));
        assert_eq!(response(&a)["allowed"], true);
        let warnings = response(&a)["warnings"].to_string();
        assert!(warnings.contains("could not check that the volumes can expand (the webhook does not watch StorageClasses"), "{warnings}");
    }

    #[test]
    fn wrong_type_is_denied_not_an_error() {
        let a = run(
            Endpoint::Validate,
            &review_body("CREATE", rc(json!({"replicas": "3"})), None, false),
        );
        assert_eq!(a.http_status, 200);
        let msg = response(&a)["status"]["message"].as_str().unwrap();
        assert!(
            msg.contains("spec.replicas: \"3\" must be an integer"),
            "{msg}"
        );
    }

    #[test]
    fn scale_subresource_is_checked() {
        let scale = |n: i64| {
            json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                   "metadata": {"name": "demo", "namespace": "team-a"},
                   "spec": {"replicas": n}})
        };
        let ok = run(
            Endpoint::Validate,
            &review_body("UPDATE", scale(4), Some("scale"), false),
        );
        assert_eq!(response(&ok)["allowed"], true);
        let bad = run(
            Endpoint::Validate,
            &review_body("UPDATE", scale(11), Some("scale"), false),
        );
        let msg = response(&bad)["status"]["message"].as_str().unwrap();
        assert!(
            msg.contains("spec.replicas: 11 is above the maximum 10"),
            "{msg}"
        );
        let tight = Policy::from_yaml("replicas: {max: 6}").unwrap();
        let a = review(
            &review_body("UPDATE", scale(7), Some("scale"), false),
            Endpoint::Validate,
            &tight,
            &crate::classes::NotWatched,
        );
        let msg = response(&a)["status"]["message"].as_str().unwrap();
        assert!(msg.contains("maximum 6"), "{msg}");
    }

    #[test]
    fn mutate_adds_defaults_as_jsonpatch_and_is_idempotent() {
        let obj = rc(json!({"replicas": 2}));
        let a = run(
            Endpoint::Mutate,
            &review_body("CREATE", obj.clone(), None, false),
        );
        let r = response(&a);
        assert_eq!(r["allowed"], true);
        assert_eq!(r["patchType"], "JSONPatch");
        let patch_bytes = patch_bytes(&r["patch"]);
        let patch: json_patch::Patch = serde_json::from_slice(&patch_bytes).unwrap();
        let ops: Value = serde_json::to_value(&patch).unwrap();
        assert!(ops.as_array().unwrap().iter().all(|o| o["op"] == "add"));
        let mut patched = obj.clone();
        json_patch::patch(&mut patched, &patch).unwrap();
        assert_eq!(patched["spec"]["replicas"], 2);
        assert_eq!(patched["spec"]["shard_count"], 1);
        let again = run(
            Endpoint::Mutate,
            &review_body("CREATE", patched, None, false),
        );
        assert!(response(&again).get("patch").is_none());
        assert_eq!(again.outcome, Outcome::Allowed);
    }

    #[test]
    fn mutate_denies_invalid_specs_with_the_full_list() {
        let a = run(
            Endpoint::Mutate,
            &review_body(
                "CREATE",
                rc(json!({"replicas": 0, "shard_count": 9})),
                None,
                false,
            ),
        );
        let r = response(&a);
        assert_eq!(r["allowed"], false);
        let msg = r["status"]["message"].as_str().unwrap();
        assert!(
            msg.contains("spec.replicas: 0 is below the minimum 1"),
            "{msg}"
        );
        assert!(
            msg.contains("spec.shard_count: 9 is above the maximum 5"),
            "{msg}"
        );
    }

    /// kube encodes the patch as an array of bytes, which the apiserver's
    /// decoder accepts as well as base64; read either.
    fn patch_bytes(v: &Value) -> Vec<u8> {
        match v {
            Value::String(_) => {
                serde_json::from_value::<k8s_openapi::ByteString>(v.clone())
                    .unwrap()
                    .0
            }
            other => serde_json::from_value(other.clone()).unwrap(),
        }
    }

    #[test]
    fn malformed_bodies_get_4xx_with_envelope() {
        for body in [
            &b"{not json"[..],
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
            b"[]",
        ] {
            let a = run(Endpoint::Validate, body);
            assert_eq!(a.http_status, 400, "{}", String::from_utf8_lossy(body));
            assert_envelope(&a);
            assert_eq!(response(&a)["allowed"], false);
            assert_eq!(response(&a)["status"]["code"], 400);
        }
    }

    #[test]
    fn unreadable_request_is_denied_by_uid() {
        let body = json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "abc", "operation": "EXPLODE"}
        });
        let a = run(Endpoint::Validate, &serde_json::to_vec(&body).unwrap());
        assert_eq!(a.http_status, 200);
        assert_eq!(response(&a)["uid"], "abc");
        assert_eq!(response(&a)["allowed"], false);
        assert_eq!(response(&a)["status"]["code"], 400);
    }
}
