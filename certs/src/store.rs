//! Self-managed mode's I/O edge. The keeper (the operator's leader) holds
//! the webhook's CA in a Secret of its own, issues the serving certificate
//! into a second Secret (`tls.crt`, `tls.key`, `ca.crt`), and injects the CA
//! bundle into both webhook configurations. The webhook only reads the
//! serving Secret ([`follow_serving_secret`]), so a compromised webhook pod
//! holds a certificate that expires, never the key that could mint more.
//! Writes carry the resourceVersion they read; a writer that loses a race
//! reads again on its next pass.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::issue::{CertInfo, KeyMaterial, issue_serving, new_ca};
use crate::resolver::ReloadingResolver;
use crate::rotation::{Action, Observed, RotationPolicy, decide, pruned_bundle};

/// Annotate the CA Secret with this (any value) to rotate the CA now.
pub const FORCE_ROTATION_ANNOTATION: &str = "redis.example.com/rotate-ca";
const STAGED_AT_ANNOTATION: &str = "redis.example.com/ca-staged-at";
const OUR_ANNOTATIONS: [&str; 2] = [STAGED_AT_ANNOTATION, FORCE_ROTATION_ANNOTATION];
const FIELD_MANAGER: &str = "redis-operator-webhook-certs";

const TLS_CRT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";
const CA_BUNDLE: &str = "ca.crt";
const SIGNER_CRT: &str = "ca-signer.crt";
const SIGNER_KEY: &str = "ca-signer.key";
const NEXT_CRT: &str = "ca-next.crt";
const NEXT_KEY: &str = "ca-next.key";
/// What the CA Secret holds; the bundle is in both.
const CA_KEYS: [&str; 5] = [SIGNER_CRT, SIGNER_KEY, NEXT_CRT, NEXT_KEY, CA_BUNDLE];
/// What the serving Secret holds: all the webhook needs, and no CA key.
const SERVING_KEYS: [&str; 3] = [TLS_CRT, TLS_KEY, CA_BUNDLE];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Kube(#[from] edge::KubeError),
    #[error("certificate material in Secret {0}: {1}")]
    Cert(String, #[source] crate::Error),
}

/// Where the self-managed certificates live and what they must cover.
#[derive(Debug, Clone)]
pub struct SelfManagedConfig {
    pub namespace: String,
    /// The serving Secret, the only one the webhook reads.
    pub serving_secret: String,
    /// The CA Secret, which no webhook pod can read.
    pub ca_secret: String,
    pub sans: Vec<String>,
    pub validating_webhook: String,
    pub mutating_webhook: String,
    pub policy: RotationPolicy,
}

/// The CA Secret's name for a serving Secret, as the chart names it.
pub fn ca_secret_name(serving_secret: &str) -> String {
    format!("{serving_secret}-ca")
}

/// The DNS names by which the apiserver reaches a webhook Service.
pub fn service_sans(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// The certificate keeper of self-managed mode.
pub struct SelfManaged {
    client: Client,
    cfg: SelfManagedConfig,
}

/// What one pass did, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub action: Action,
    /// A Secret write lost a race; the next pass reads again.
    pub conflict: bool,
    /// The CA moved out of a serving Secret written before the split.
    pub adopted: bool,
    pub injected: bool,
}

/// Both Secrets' contents as one map (the CA keys and the serving pair),
/// which the rotation steps edit as a whole.
type SecretData = BTreeMap<String, ByteString>;

/// The part of `merged` that `keys` names.
fn part(merged: &SecretData, keys: &[&str]) -> SecretData {
    merged
        .iter()
        .filter(|(k, _)| keys.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl SelfManaged {
    pub fn new(client: Client, cfg: SelfManagedConfig) -> Self {
        SelfManaged { client, cfg }
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.cfg.namespace)
    }

    fn kube_err(
        &self,
        action: &'static str,
        kind: &'static str,
        name: &str,
    ) -> impl FnOnce(kube::Error) -> StoreError {
        let wrap = edge::KubeError::on(action, kind, &format!("{}/{}", self.cfg.namespace, name));
        move |source| StoreError::Kube(wrap(source))
    }

    /// Runs passes forever, every `interval` (sooner after a conflict).
    pub async fn run(self, interval: Duration) {
        loop {
            let wait = match self.reconcile_once().await {
                Ok(o) if o.conflict => Duration::from_millis(500),
                Ok(o) => {
                    if o.adopted {
                        tracing::info!(from = %self.cfg.serving_secret, to = %self.cfg.ca_secret, "webhook CA moved to its own Secret");
                    }
                    if o.action != Action::Keep {
                        tracing::info!(action = ?o.action, secret = %self.cfg.serving_secret, "webhook certificates updated");
                    }
                    interval
                }
                Err(e) => {
                    tracing::warn!(error = %e, "webhook certificates: pass failed; retrying");
                    Duration::from_secs(2).min(interval)
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    async fn read(&self, name: &str) -> Result<Option<Secret>, StoreError> {
        self.secrets()
            .get_opt(name)
            .await
            .map_err(self.kube_err("reading", "Secret", name))
    }

    /// One pass: read both Secrets, decide, write the CA Secret and then the
    /// serving Secret if needed, and inject the bundle.
    pub async fn reconcile_once(&self) -> Result<Outcome, StoreError> {
        let ca_name = self.cfg.ca_secret.clone();
        let serving_name = self.cfg.serving_secret.clone();
        let ca_secret = self.read(&ca_name).await?;
        let serving_secret = self.read(&serving_name).await?;
        let data_of =
            |s: &Option<Secret>| s.as_ref().and_then(|s| s.data.clone()).unwrap_or_default();
        let annotations_of = |s: &Option<Secret>| {
            s.as_ref()
                .and_then(|s| s.metadata.annotations.clone())
                .unwrap_or_default()
        };
        let serving_data = data_of(&serving_secret);
        let serving_annotations = annotations_of(&serving_secret);
        // Before the split the webhook kept its CA in the serving Secret:
        // adopt that CA, so nothing that trusts it breaks on upgrade.
        let adopting = ca_secret.is_none() && serving_data.contains_key(SIGNER_KEY);
        let (ca_data, mut annotations) = if adopting {
            (part(&serving_data, &CA_KEYS), serving_annotations.clone())
        } else {
            (data_of(&ca_secret), annotations_of(&ca_secret))
        };
        annotations.retain(|k, _| OUR_ANNOTATIONS.contains(&k.as_str()));
        // A rotation asked for on the serving Secret (where it used to go)
        // is honoured too.
        if serving_annotations.contains_key(FORCE_ROTATION_ANNOTATION) {
            annotations.insert(FORCE_ROTATION_ANNOTATION.to_string(), "now".to_string());
        }
        let mut merged = ca_data;
        merged.extend(part(&serving_data, &[TLS_CRT, TLS_KEY]));

        let now = OffsetDateTime::now_utc();
        let text = |k: &str| {
            merged
                .get(k)
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
                .filter(|s| !s.trim().is_empty())
        };
        let bundle_pem = text(CA_BUNDLE).unwrap_or_default();
        // Read once a pass: the decision and the injection both use it.
        let configured = self.webhook_bundles().await?;
        let injected = bundle_injected(&configured, bundle_pem.as_bytes());
        let obs = Observed {
            signer: text(SIGNER_KEY)
                .and(text(SIGNER_CRT))
                .and_then(|p| CertInfo::parse(&p, SIGNER_CRT).ok()),
            next: text(NEXT_KEY)
                .and(text(NEXT_CRT))
                .and_then(|p| CertInfo::parse(&p, NEXT_CRT).ok())
                .map(|c| {
                    let at = annotations
                        .get(STAGED_AT_ANNOTATION)
                        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
                        .unwrap_or(now);
                    (c, at)
                }),
            bundle: CertInfo::parse_bundle(&bundle_pem, CA_BUNDLE).unwrap_or_default(),
            serving: text(TLS_KEY)
                .and(text(TLS_CRT))
                .and_then(|p| CertInfo::parse(&p, TLS_CRT).ok()),
            force: annotations.contains_key(FORCE_ROTATION_ANNOTATION),
            bundle_injected: injected,
        };
        let action = decide(&obs, &self.cfg.sans, &self.cfg.policy, now);
        let mut outcome = Outcome {
            action,
            conflict: false,
            adopted: false,
            injected: false,
        };
        let (merged, annotations) = if action == Action::Keep {
            (merged, annotations)
        } else {
            self.next_contents(action, &merged, annotations, &obs, now)
                .map_err(|e| StoreError::Cert(ca_name.clone(), e))?
        };

        // The CA first: a serving certificate must never exist whose CA
        // is not kept.
        let want_ca = part(&merged, &CA_KEYS);
        let ca_changed = ca_secret.as_ref().is_none_or(|s| {
            let mut ours = s.metadata.annotations.clone().unwrap_or_default();
            ours.retain(|k, _| OUR_ANNOTATIONS.contains(&k.as_str()));
            s.data.clone().unwrap_or_default() != want_ca || ours != annotations
        });
        if ca_changed {
            let written = self
                .write(
                    &ca_name,
                    "Opaque",
                    ca_secret.as_ref(),
                    &want_ca,
                    &annotations,
                )
                .await?;
            if !written {
                outcome.conflict = true;
                return Ok(outcome);
            }
            outcome.adopted = adopting;
        }
        let want_serving = part(&merged, &SERVING_KEYS);
        let serving_changed = serving_data != want_serving
            || OUR_ANNOTATIONS
                .iter()
                .any(|k| serving_annotations.contains_key(*k));
        if serving_changed {
            let written = self
                .write(
                    &serving_name,
                    "kubernetes.io/tls",
                    serving_secret.as_ref(),
                    &want_serving,
                    &BTreeMap::new(),
                )
                .await?;
            if !written {
                outcome.conflict = true;
                return Ok(outcome);
            }
        }
        let bundle = merged
            .get(CA_BUNDLE)
            .map(|b| b.0.clone())
            .unwrap_or_default();
        outcome.injected = self.inject(&bundle, &configured).await?;
        Ok(outcome)
    }

    /// Both Secrets' contents after `action`.
    fn next_contents(
        &self,
        action: Action,
        data: &SecretData,
        mut annotations: BTreeMap<String, String>,
        obs: &Observed,
        now: OffsetDateTime,
    ) -> Result<(SecretData, BTreeMap<String, String>), crate::Error> {
        let p = &self.cfg.policy;
        let mut data = data.clone();
        let pem = |data: &SecretData, k: &str| {
            data.get(k)
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
                .unwrap_or_default()
        };
        let put = |data: &mut SecretData, k: &str, v: &str| {
            data.insert(k.to_string(), ByteString(v.as_bytes().to_vec()));
        };
        let ca_name = format!("redis-webhook-ca-{}", now.unix_timestamp());
        let bundle_pem =
            |certs: &[CertInfo]| -> String { certs.iter().map(|c| der_to_pem(&c.der)).collect() };
        match action {
            Action::Keep => {}
            Action::Create => {
                let ca = new_ca(&ca_name, p.ca_validity, now)?;
                let serving = issue_serving(&ca, &self.cfg.sans, p.serving_validity, now)?;
                data.clear();
                put(&mut data, SIGNER_CRT, &ca.cert_pem);
                put(&mut data, SIGNER_KEY, &ca.key_pem);
                // Keep still-valid CAs a previous incarnation published, so
                // replicas serving an older certificate stay trusted.
                let ca_info = CertInfo::parse(&ca.cert_pem, SIGNER_CRT)?;
                let bundle = pruned_bundle(&obs.bundle, &ca_info, None, now);
                put(&mut data, CA_BUNDLE, &bundle_pem(&bundle));
                put(&mut data, TLS_CRT, &serving.cert_pem);
                put(&mut data, TLS_KEY, &serving.key_pem);
                annotations.remove(STAGED_AT_ANNOTATION);
                annotations.remove(FORCE_ROTATION_ANNOTATION);
            }
            Action::StageCa => {
                let next = new_ca(&ca_name, p.ca_validity, now)?;
                let next_info = CertInfo::parse(&next.cert_pem, NEXT_CRT)?;
                if let Some(signer) = &obs.signer {
                    let bundle = pruned_bundle(&obs.bundle, signer, Some(&next_info), now);
                    put(&mut data, CA_BUNDLE, &bundle_pem(&bundle));
                }
                put(&mut data, NEXT_CRT, &next.cert_pem);
                put(&mut data, NEXT_KEY, &next.key_pem);
                annotations.insert(
                    STAGED_AT_ANNOTATION.to_string(),
                    now.format(&Rfc3339).unwrap_or_default(),
                );
                annotations.remove(FORCE_ROTATION_ANNOTATION);
            }
            Action::PromoteCa => {
                let next = KeyMaterial {
                    cert_pem: pem(&data, NEXT_CRT),
                    key_pem: pem(&data, NEXT_KEY),
                };
                let serving = issue_serving(&next, &self.cfg.sans, p.serving_validity, now)?;
                put(&mut data, SIGNER_CRT, &next.cert_pem);
                put(&mut data, SIGNER_KEY, &next.key_pem);
                put(&mut data, TLS_CRT, &serving.cert_pem);
                put(&mut data, TLS_KEY, &serving.key_pem);
                data.remove(NEXT_CRT);
                data.remove(NEXT_KEY);
                annotations.remove(STAGED_AT_ANNOTATION);
            }
            Action::IssueServing => {
                let signer = KeyMaterial {
                    cert_pem: pem(&data, SIGNER_CRT),
                    key_pem: pem(&data, SIGNER_KEY),
                };
                let serving = issue_serving(&signer, &self.cfg.sans, p.serving_validity, now)?;
                put(&mut data, TLS_CRT, &serving.cert_pem);
                put(&mut data, TLS_KEY, &serving.key_pem);
            }
            Action::RewriteBundle => {
                if let Some(signer) = &obs.signer {
                    let next = obs.next.as_ref().map(|(c, _)| c);
                    let bundle = pruned_bundle(&obs.bundle, signer, next, now);
                    put(&mut data, CA_BUNDLE, &bundle_pem(&bundle));
                }
            }
        }
        Ok((data, annotations))
    }

    /// Creates `name`, or makes it hold exactly `data` and `annotations`
    /// (ours; others' annotations stay). A merge patch carrying the
    /// resourceVersion read, so it fails on a concurrent change; `false`
    /// means another writer won.
    async fn write(
        &self,
        name: &str,
        type_: &str,
        current: Option<&Secret>,
        data: &SecretData,
        annotations: &BTreeMap<String, String>,
    ) -> Result<bool, StoreError> {
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..Default::default()
        };
        let result = match current {
            None => {
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(name.to_string()),
                        namespace: Some(self.cfg.namespace.clone()),
                        labels: Some(BTreeMap::from([(
                            "app.kubernetes.io/managed-by".to_string(),
                            "redis-operator".to_string(),
                        )])),
                        annotations: Some(annotations.clone()),
                        ..Default::default()
                    },
                    type_: Some(type_.to_string()),
                    data: Some(data.clone()),
                    ..Default::default()
                };
                self.secrets().create(&pp, &secret).await.map(|_| ())
            }
            Some(current) => {
                let patch = merge_patch(current, data, annotations);
                let pp = PatchParams {
                    field_manager: Some(FIELD_MANAGER.to_string()),
                    ..Default::default()
                };
                self.secrets()
                    .patch(name, &pp, &Patch::Merge(patch))
                    .await
                    .map(|_| ())
            }
        };
        match result {
            Ok(()) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(self.kube_err("writing", "Secret", name)(e)),
        }
    }

    /// The caBundle of every webhook of both configurations, by name.
    async fn webhook_bundles(&self) -> Result<(Bundles, Bundles), StoreError> {
        let vname = &self.cfg.validating_webhook;
        let mname = &self.cfg.mutating_webhook;
        let v: ValidatingWebhookConfiguration = Api::all(self.client.clone())
            .get(vname)
            .await
            .map_err(self.kube_err("reading", "ValidatingWebhookConfiguration", vname))?;
        let m: MutatingWebhookConfiguration = Api::all(self.client.clone())
            .get(mname)
            .await
            .map_err(self.kube_err("reading", "MutatingWebhookConfiguration", mname))?;
        let vb = v
            .webhooks
            .unwrap_or_default()
            .into_iter()
            .map(|w| {
                (
                    w.name,
                    w.client_config.ca_bundle.map(|b| b.0).unwrap_or_default(),
                )
            })
            .collect();
        let mb = m
            .webhooks
            .unwrap_or_default()
            .into_iter()
            .map(|w| {
                (
                    w.name,
                    w.client_config.ca_bundle.map(|b| b.0).unwrap_or_default(),
                )
            })
            .collect();
        Ok((vb, mb))
    }

    /// Writes `bundle` into every webhook entry that lacks it. Returns
    /// whether anything was patched.
    async fn inject(&self, bundle: &[u8], (v, m): &(Bundles, Bundles)) -> Result<bool, StoreError> {
        if bundle.is_empty() {
            return Ok(false);
        }
        let encoded = serde_json::to_value(ByteString(bundle.to_vec())).unwrap_or_default();
        let patch_for = |entries: &Bundles| {
            let stale: Vec<_> = entries
                .iter()
                .filter(|(_, b)| b != bundle)
                .map(|(n, _)| json!({"name": n, "clientConfig": {"caBundle": encoded}}))
                .collect();
            (!stale.is_empty()).then(|| json!({ "webhooks": stale }))
        };
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..Default::default()
        };
        let mut patched = false;
        if let Some(p) = patch_for(v) {
            let name = &self.cfg.validating_webhook;
            Api::<ValidatingWebhookConfiguration>::all(self.client.clone())
                .patch(name, &pp, &Patch::Strategic(p))
                .await
                .map_err(self.kube_err(
                    "injecting caBundle into",
                    "ValidatingWebhookConfiguration",
                    name,
                ))?;
            patched = true;
        }
        if let Some(p) = patch_for(m) {
            let name = &self.cfg.mutating_webhook;
            Api::<MutatingWebhookConfiguration>::all(self.client.clone())
                .patch(name, &pp, &Patch::Strategic(p))
                .await
                .map_err(self.kube_err(
                    "injecting caBundle into",
                    "MutatingWebhookConfiguration",
                    name,
                ))?;
            patched = true;
        }
        Ok(patched)
    }
}

type Bundles = Vec<(String, Vec<u8>)>;

/// Whether every webhook of both configurations trusts exactly `bundle`.
fn bundle_injected((v, m): &(Bundles, Bundles), bundle: &[u8]) -> bool {
    !bundle.is_empty() && v.iter().chain(m.iter()).all(|(_, b)| b == bundle)
}

/// A merge patch that turns `current` into exactly `data`, with our
/// annotations as in `annotations` (others untouched), guarded by
/// `current`'s resourceVersion.
fn merge_patch(
    current: &Secret,
    data: &SecretData,
    annotations: &BTreeMap<String, String>,
) -> serde_json::Value {
    let mut d = serde_json::Map::new();
    for k in current.data.iter().flat_map(|m| m.keys()) {
        if !data.contains_key(k) {
            d.insert(k.clone(), serde_json::Value::Null);
        }
    }
    for (k, v) in data {
        d.insert(k.clone(), serde_json::to_value(v).unwrap_or_default());
    }
    let mut a = serde_json::Map::new();
    for k in OUR_ANNOTATIONS {
        a.insert(k.to_string(), serde_json::Value::Null);
    }
    for (k, v) in annotations {
        a.insert(k.clone(), json!(v));
    }
    json!({
        "metadata": {
            "resourceVersion": current.metadata.resource_version,
            "annotations": a,
        },
        "data": d,
    })
}

/// The webhook's side: reads the serving Secret by name (never lists or
/// watches) every `interval`, every second until a certificate is loaded,
/// and serves what it holds. Errors keep the current certificate.
pub async fn follow_serving_secret(
    client: Client,
    namespace: String,
    name: String,
    resolver: Arc<ReloadingResolver>,
    interval: Duration,
) {
    let secrets: Api<Secret> = Api::namespaced(client, &namespace);
    let mut last_error = String::new();
    loop {
        let result = match secrets.get_opt(&name).await {
            Ok(Some(secret)) => {
                let data = secret.data.unwrap_or_default();
                let text = |k: &str| {
                    data.get(k)
                        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                        .unwrap_or_default()
                };
                resolver
                    .set_pem(&text(TLS_CRT), &text(TLS_KEY))
                    .map(|changed| {
                        if changed {
                            tracing::info!(secret = %format_args!("{namespace}/{name}"), "loaded serving certificate");
                        }
                    })
                    .map_err(|e| format!("serving certificate in Secret {namespace}/{name}: {e}"))
            }
            Ok(None) => Err(format!(
                "Secret {namespace}/{name} does not exist yet (the operator's leader creates it)"
            )),
            Err(e) => Err(format!("reading Secret {namespace}/{name}: {e}")),
        };
        match result {
            Ok(()) => last_error.clear(),
            Err(msg) if msg != last_error => {
                tracing::warn!(error = %msg, "serving certificate not (re)loaded; keeping the previous one");
                last_error = msg;
            }
            Err(_) => {}
        }
        let wait = if resolver.is_loaded() {
            interval
        } else {
            Duration::from_secs(1).min(interval)
        };
        tokio::time::sleep(wait).await;
    }
}

fn der_to_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(s: &str) -> ByteString {
        ByteString(s.as_bytes().to_vec())
    }

    #[test]
    fn parts_split_the_ca_from_the_serving_pair() {
        let merged: SecretData = [SIGNER_CRT, SIGNER_KEY, CA_BUNDLE, TLS_CRT, TLS_KEY]
            .iter()
            .map(|k| (k.to_string(), bytes(k)))
            .collect();
        let serving = part(&merged, &SERVING_KEYS);
        assert_eq!(
            serving.keys().collect::<Vec<_>>(),
            [CA_BUNDLE, TLS_CRT, TLS_KEY]
        );
        let ca = part(&merged, &CA_KEYS);
        assert_eq!(
            ca.keys().collect::<Vec<_>>(),
            [SIGNER_CRT, SIGNER_KEY, CA_BUNDLE]
        );
    }

    #[test]
    fn the_merge_patch_removes_what_is_gone_and_guards_the_version() {
        let current = Secret {
            metadata: ObjectMeta {
                resource_version: Some("42".into()),
                annotations: Some(BTreeMap::from([
                    (FORCE_ROTATION_ANNOTATION.to_string(), "now".to_string()),
                    ("kept.example.com/x".to_string(), "y".to_string()),
                ])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                (SIGNER_KEY.to_string(), bytes("old key")),
                (TLS_CRT.to_string(), bytes("old")),
            ])),
            ..Default::default()
        };
        let data = BTreeMap::from([(TLS_CRT.to_string(), bytes("new"))]);
        let patch = merge_patch(&current, &data, &BTreeMap::new());
        assert_eq!(
            patch,
            json!({
                "metadata": {
                    "resourceVersion": "42",
                    "annotations": {
                        STAGED_AT_ANNOTATION: null,
                        FORCE_ROTATION_ANNOTATION: null,
                    },
                },
                "data": {SIGNER_KEY: null, TLS_CRT: "bmV3"},
            })
        );
    }
}
