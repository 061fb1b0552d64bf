//! Self-managed mode: the webhook keeps its own CA and serving certificate
//! in a Secret, injects the CA bundle into both webhook configurations, and
//! serves whatever the Secret holds. Several replicas may run this at once:
//! Secret writes carry the resourceVersion they read, and a replica that
//! loses a race simply reads again on its next pass.

use std::collections::BTreeMap;
use std::sync::Arc;

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

/// Annotate the Secret with this (any value) to rotate the CA now.
pub const FORCE_ROTATION_ANNOTATION: &str = "redis.example.com/rotate-ca";
const STAGED_AT_ANNOTATION: &str = "redis.example.com/ca-staged-at";
const FIELD_MANAGER: &str = "redis-webhook";

const TLS_CRT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";
const CA_BUNDLE: &str = "ca.crt";
const SIGNER_CRT: &str = "ca-signer.crt";
const SIGNER_KEY: &str = "ca-signer.key";
const NEXT_CRT: &str = "ca-next.crt";
const NEXT_KEY: &str = "ca-next.key";

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
    pub secret_name: String,
    pub sans: Vec<String>,
    pub validating_webhook: String,
    pub mutating_webhook: String,
    pub policy: RotationPolicy,
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

pub struct SelfManaged {
    client: Client,
    cfg: SelfManagedConfig,
    resolver: Arc<ReloadingResolver>,
}

/// What one pass did, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub action: Action,
    /// The Secret write lost a race; the next pass reads again.
    pub conflict: bool,
    pub injected: bool,
}

impl SelfManaged {
    pub fn new(client: Client, cfg: SelfManagedConfig, resolver: Arc<ReloadingResolver>) -> Self {
        SelfManaged {
            client,
            cfg,
            resolver,
        }
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
    pub async fn run(self, interval: std::time::Duration) {
        loop {
            let wait = match self.reconcile_once().await {
                Ok(o) if o.conflict => std::time::Duration::from_millis(500),
                Ok(o) => {
                    if o.action != Action::Keep {
                        tracing::info!(action = ?o.action, secret = %self.cfg.secret_name, "webhook certificates updated");
                    }
                    interval
                }
                Err(e) => {
                    tracing::warn!(error = %e, "self-managed certificates: pass failed; retrying");
                    std::time::Duration::from_secs(2).min(interval)
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// One pass: read, decide, write the Secret if needed, inject the bundle,
    /// and serve the Secret's serving certificate.
    pub async fn reconcile_once(&self) -> Result<Outcome, StoreError> {
        let name = self.cfg.secret_name.clone();
        let secret = self
            .secrets()
            .get_opt(&name)
            .await
            .map_err(self.kube_err("reading", "Secret", &name))?;
        let data = secret
            .as_ref()
            .and_then(|s| s.data.clone())
            .unwrap_or_default();
        let annotations = secret
            .as_ref()
            .and_then(|s| s.metadata.annotations.clone())
            .unwrap_or_default();
        let now = OffsetDateTime::now_utc();
        let text = |k: &str| {
            data.get(k)
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
                .filter(|s| !s.trim().is_empty())
        };
        let bundle_pem = text(CA_BUNDLE).unwrap_or_default();
        let injected = self.bundle_injected(bundle_pem.as_bytes()).await?;
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
            injected: false,
        };
        let data = if action == Action::Keep {
            data
        } else {
            let (new_data, new_annotations) = self
                .next_contents(action, &data, annotations, &obs, now)
                .map_err(|e| StoreError::Cert(name.clone(), e))?;
            match self
                .write(secret.as_ref(), &new_data, &new_annotations)
                .await?
            {
                Some(()) => new_data,
                None => {
                    outcome.conflict = true;
                    return Ok(outcome);
                }
            }
        };
        let get = |k: &str| {
            data.get(k)
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
                .unwrap_or_default()
        };
        outcome.injected = self.inject(get(CA_BUNDLE).as_bytes()).await?;
        self.resolver
            .set_pem(&get(TLS_CRT), &get(TLS_KEY))
            .map_err(|e| StoreError::Cert(name, e))?;
        Ok(outcome)
    }

    /// The Secret's contents after `action`.
    fn next_contents(
        &self,
        action: Action,
        data: &BTreeMap<String, ByteString>,
        mut annotations: BTreeMap<String, String>,
        obs: &Observed,
        now: OffsetDateTime,
    ) -> Result<(SecretData, BTreeMap<String, String>), crate::Error> {
        let p = &self.cfg.policy;
        let mut data = data.clone();
        let pem = |data: &BTreeMap<String, ByteString>, k: &str| {
            data.get(k)
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
                .unwrap_or_default()
        };
        let put = |data: &mut BTreeMap<String, ByteString>, k: &str, v: &str| {
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

    /// Creates or replaces the Secret. `None` means another writer won.
    async fn write(
        &self,
        current: Option<&Secret>,
        data: &BTreeMap<String, ByteString>,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Option<()>, StoreError> {
        let name = &self.cfg.secret_name;
        let mut secret = current.cloned().unwrap_or_else(|| Secret {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.cfg.namespace.clone()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_string(),
                    "redis-webhook".to_string(),
                )])),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".to_string()),
            ..Default::default()
        });
        secret.data = Some(data.clone());
        secret.metadata.annotations = Some(annotations.clone());
        secret.metadata.managed_fields = None;
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..Default::default()
        };
        let result = if current.is_some() {
            self.secrets().replace(name, &pp, &secret).await
        } else {
            self.secrets().create(&pp, &secret).await
        };
        match result {
            Ok(_) => Ok(Some(())),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
            Err(e) => Err(self.kube_err("writing", "Secret", name)(e)),
        }
    }

    /// Whether every webhook of both configurations trusts exactly `bundle`.
    async fn bundle_injected(&self, bundle: &[u8]) -> Result<bool, StoreError> {
        let (v, m) = self.webhook_bundles().await?;
        Ok(!bundle.is_empty() && v.iter().chain(m.iter()).all(|(_, b)| b == bundle))
    }

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
    async fn inject(&self, bundle: &[u8]) -> Result<bool, StoreError> {
        if bundle.is_empty() {
            return Ok(false);
        }
        let (v, m) = self.webhook_bundles().await?;
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
        if let Some(p) = patch_for(&v) {
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
        if let Some(p) = patch_for(&m) {
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
type SecretData = BTreeMap<String, ByteString>;

fn der_to_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}
