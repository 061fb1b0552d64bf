//! The I/O side of [`crate::tls`]: the nodes' Secret (and, when the
//! operator issues the certificate, the CA Secret beside it; with
//! `issuer_ref`, the cert-manager `Certificate` that keeps it issued), read
//! by name at most once per [`POLL`], and the TLS client the operator talks
//! to the nodes with.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use api::RedisCluster;
use certs::{CertInfo, KeyMaterial};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use time::OffsetDateTime;

use super::credentials::{apply_secret, secret_meta, text};
use super::{Error, kube_err};
use crate::names::MANAGER;
use crate::tls::{self, NodeSecret, Plan};
use crate::topology::TlsClient;

/// How often the Secrets are read again: renewal has months of margin, and
/// a CA seldom changes.
const POLL: Duration = Duration::from_secs(300);

/// What the operator keeps of a cluster's TLS between reconciles.
pub(super) struct TlsState {
    client: TlsClient,
    /// The nodes' certificate, as a fingerprint: a new one is given to the
    /// nodes at once (see `node_config`).
    pub(super) cert_fingerprint: u64,
    /// When it expires (Unix seconds), for the expiry gauge.
    pub(super) not_after: Option<i64>,
    read_at: Instant,
}

/// The TLS client for the cluster's nodes; `None` without `spec.tls`.
/// Issues or renews the operator's certificate when due.
pub(super) async fn reconcile(
    client: &Client,
    rc: &RedisCluster,
    (ns, name): (&str, &str),
    slot: &mut Option<Box<TlsState>>,
) -> Result<Option<TlsClient>, Error> {
    let Some(spec) = rc.spec.tls.as_ref() else {
        *slot = None;
        return Ok(None);
    };
    if let Some(state) = slot.as_ref().filter(|s| s.read_at.elapsed() < POLL) {
        return Ok(Some(state.client.clone()));
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret_name = tls::secret_name(name, spec);
    let full = format!("{ns}/{secret_name}");
    let now = OffsetDateTime::now_utc();
    let (ca_pem, cert_pem) = match (&spec.secret_name, &spec.issuer_ref) {
        (Some(_), _) => {
            let absent = || "does not exist (spec.tls.secret_name names it)".to_string();
            given(&secrets, (ns, name), &secret_name, now, absent).await?
        }
        (None, Some(issuer)) => {
            let not_ready = requested(client, rc, (ns, name), issuer).await?;
            let absent = || match &not_ready {
                Some(why) => format!("is not issued yet; cert-manager says: {why}"),
                None => "is not issued yet by cert-manager".to_string(),
            };
            given(&secrets, (ns, name), &secret_name, now, absent).await?
        }
        (None, None) => issued(&secrets, rc, (ns, name), now).await?,
    };
    let client = TlsClient::new(&ca_pem, &tls::server_name(name, ns)).map_err(|e| Error::Tls {
        secret: full,
        why: format!("cannot be used: {e}"),
    })?;
    *slot = Some(Box::new(TlsState {
        client: client.clone(),
        cert_fingerprint: crate::stable_hash::of_str(&cert_pem),
        not_after: CertInfo::parse(&cert_pem, tls::CERT_KEY)
            .ok()
            .map(|c| c.not_after.unix_timestamp()),
        read_at: Instant::now(),
    }));
    Ok(Some(client))
}

/// A certificate kept in a Secret by someone else (a name in the spec, or
/// cert-manager), checked: (its CA's PEM, its certificate PEM). `absent`
/// says why the Secret is missing.
async fn given(
    secrets: &Api<Secret>,
    (ns, name): (&str, &str),
    secret_name: &str,
    now: OffsetDateTime,
    absent: impl FnOnce() -> String,
) -> Result<(String, String), Error> {
    let full = format!("{ns}/{secret_name}");
    let secret = get(secrets, &full, secret_name)
        .await?
        .ok_or_else(|| Error::Tls {
            secret: full.clone(),
            why: absent(),
        })?;
    let node = node_secret(&secret);
    let warning =
        tls::check_given(&node, &tls::server_name(name, ns), now).map_err(|why| Error::Tls {
            secret: full.clone(),
            why,
        })?;
    if let Some(warning) = warning {
        tracing::warn!(cluster = %format_args!("{ns}/{name}"), secret = %full, "the TLS Secret {warning}");
    }
    Ok((field(&secret, tls::CA_KEY), field(&secret, tls::CERT_KEY)))
}

/// Applies the cert-manager `Certificate` for the nodes' Secret; returns
/// cert-manager's reason while it is not ready.
async fn requested(
    client: &Client,
    rc: &RedisCluster,
    (ns, name): (&str, &str),
    issuer: &api::IssuerRef,
) -> Result<Option<String>, Error> {
    let resource = ApiResource {
        group: tls::CERTIFICATE_GROUP.into(),
        version: tls::CERTIFICATE_VERSION.into(),
        api_version: format!("{}/{}", tls::CERTIFICATE_GROUP, tls::CERTIFICATE_VERSION),
        kind: tls::CERTIFICATE_KIND.into(),
        plural: tls::CERTIFICATE_PLURAL.into(),
    };
    let certificates: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
    let cert_name = tls::secret_name(name, &api::TlsSpec::default());
    let full = format!("{ns}/{cert_name}");
    let mut certificate = DynamicObject::new(&cert_name, &resource)
        .data(serde_json::json!({"spec": tls::certificate_spec(name, ns, issuer)}));
    certificate.metadata = secret_meta(rc, name, &cert_name);
    let refused = |why: String| Error::Tls {
        secret: full.clone(),
        why,
    };
    let params = PatchParams::apply(MANAGER).force();
    match certificates
        .patch(&cert_name, &params, &Patch::Apply(&certificate))
        .await
    {
        Ok(applied) => Ok(tls::certificate_not_ready(&applied.data)),
        Err(kube::Error::Api(e)) if e.code == 404 => Err(refused(format!(
            "cannot be requested: cert-manager's Certificate API ({}) is not installed",
            resource.api_version
        ))),
        Err(kube::Error::Api(e)) if e.code == 403 => Err(refused(format!(
            "cannot be requested: the operator may not write cert-manager Certificates (the chart value operator.certManager: true grants it): {}",
            e.message
        ))),
        Err(e) => Err(kube_err("applying", "Certificate", &full)(e)),
    }
}

async fn get(secrets: &Api<Secret>, full: &str, name: &str) -> Result<Option<Secret>, Error> {
    secrets
        .get_opt(name)
        .await
        .map_err(kube_err("reading", "Secret", full))
}

fn field(s: &Secret, key: &str) -> String {
    text(s, key).unwrap_or_default()
}

/// The certificate (only with its key) and the CAs of a nodes' Secret.
fn node_secret(s: &Secret) -> NodeSecret {
    let has_key = text(s, tls::KEY_KEY).is_some_and(|k| !k.is_empty());
    NodeSecret {
        cert: has_key
            .then(|| CertInfo::parse(&field(s, tls::CERT_KEY), tls::CERT_KEY).ok())
            .flatten(),
        trusted: CertInfo::parse_bundle(&field(s, tls::CA_KEY), tls::CA_KEY).unwrap_or_default(),
    }
}

/// The operator's CA and nodes' certificate, made or renewed as
/// [`tls::plan`] says: (the CA's PEM, the nodes' certificate PEM).
async fn issued(
    secrets: &Api<Secret>,
    rc: &RedisCluster,
    (ns, name): (&str, &str),
    now: OffsetDateTime,
) -> Result<(String, String), Error> {
    let ca_name = tls::ca_secret_name(name);
    let ca_full = format!("{ns}/{ca_name}");
    let node_name = tls::secret_name(name, &api::TlsSpec::default());
    let node_full = format!("{ns}/{node_name}");
    let ca_secret = get(secrets, &ca_full, &ca_name).await?;
    let ca = ca_secret.as_ref().and_then(|s| {
        let m = KeyMaterial {
            cert_pem: field(s, tls::CA_KEY),
            key_pem: field(s, tls::CA_PRIVATE_KEY),
        };
        let info = CertInfo::parse(&m.cert_pem, tls::CA_KEY).ok()?;
        (!m.key_pem.is_empty()).then_some((m, info))
    });
    let node = get(secrets, &node_full, &node_name).await?;
    let wanted = tls::sans(name, ns);
    let plan = tls::plan(
        ca.as_ref().map(|(_, info)| info),
        node.as_ref().map(node_secret).as_ref(),
        &wanted,
        now,
    );
    let failed = |full: &str| {
        let full = full.to_string();
        move |e: certs::Error| Error::Tls {
            secret: full,
            why: format!("cannot be issued: {e}"),
        }
    };
    let ca = match (plan.clone(), ca) {
        (Plan::Stuck(why), _) => {
            return Err(Error::Tls {
                secret: node_full,
                why,
            });
        }
        (Plan::CreateCa, _) | (_, None) => {
            let ca =
                certs::issue::new_ca(&format!("{ns}/{name} Redis CA"), tls::ca_validity(), now)
                    .map_err(failed(&ca_full))?;
            let data = [
                (tls::CA_KEY, &ca.cert_pem),
                (tls::CA_PRIVATE_KEY, &ca.key_pem),
            ];
            let secret = Secret {
                metadata: secret_meta(rc, name, &ca_name),
                data: Some(bytes(&data)),
                ..Default::default()
            };
            // Created, never overwritten: a CA in use is never replaced.
            secrets
                .create(&PostParams::default(), &secret)
                .await
                .map_err(kube_err("creating", "Secret", &ca_full))?;
            tracing::info!(cluster = %format_args!("{ns}/{name}"), secret = %ca_full, "made the cluster's TLS CA");
            ca
        }
        (_, Some((ca, _))) => ca,
    };
    let Plan::Keep = plan else {
        let leaf = certs::issue::issue_peer(&ca, &wanted, tls::leaf_validity(), now)
            .map_err(failed(&node_full))?;
        write_node_secret(secrets, rc, name, &ca, &leaf).await?;
        tracing::info!(cluster = %format_args!("{ns}/{name}"), secret = %node_full, reason = ?plan, "issued the nodes' TLS certificate");
        return Ok((ca.cert_pem, leaf.cert_pem));
    };
    let cert = node
        .as_ref()
        .map(|s| field(s, tls::CERT_KEY))
        .unwrap_or_default();
    Ok((ca.cert_pem, cert))
}

fn bytes(data: &[(&str, &String)]) -> BTreeMap<String, ByteString> {
    (data.iter())
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect()
}

/// Applies the nodes' Secret (`kubernetes.io/tls`, with `ca.crt`).
async fn write_node_secret(
    secrets: &Api<Secret>,
    rc: &RedisCluster,
    name: &str,
    ca: &KeyMaterial,
    leaf: &KeyMaterial,
) -> Result<(), Error> {
    let secret_name = tls::secret_name(name, &api::TlsSpec::default());
    let data = [
        (tls::CERT_KEY, &leaf.cert_pem),
        (tls::KEY_KEY, &leaf.key_pem),
        (tls::CA_KEY, &ca.cert_pem),
    ];
    let secret = Secret {
        metadata: secret_meta(rc, name, &secret_name),
        type_: Some("kubernetes.io/tls".into()),
        data: Some(bytes(&data)),
        ..Default::default()
    };
    apply_secret(secrets, &secret).await
}
