//! The I/O side of [`crate::auth`]: the clients' Secret (generated when the
//! spec names none) and the operator's internal Secret. The users they
//! define reach each node at run time through [`super::node_config`], so
//! that a password change needs no restart.
//!
//! Secrets are read by name only (the operator has no list or watch on
//! them): the internal one once per operator lifetime, the clients' one at
//! most once per poll interval.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use api::RedisCluster;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource};

use super::{Error, kube_err};
use crate::auth::{self, AuthView, ClientAcl, Internal, Rotation};
use crate::names::{self, MANAGER};
use crate::topology::Login;

/// What the operator keeps of a cluster's credentials between reconciles.
pub(super) struct Credentials {
    internal: Internal,
    acl: ClientAcl,
    /// When the last rotation finished (Unix seconds).
    rotated_at: Option<i64>,
    /// When the clients' Secret was last read.
    read_at: Instant,
}

/// The outcome for one reconcile: how the operator logs in, and what to
/// show. Both empty when authentication is off and never was on.
pub(super) struct Outcome {
    pub login: Option<Login>,
    pub view: Option<AuthView>,
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

pub(super) fn text(s: &Secret, key: &str) -> Option<String> {
    let bytes = s.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

/// A Secret of cluster `name`: its labels, and owned by it, so that it goes
/// with the cluster.
pub(super) fn secret_meta(rc: &RedisCluster, name: &str, secret_name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(secret_name.to_string()),
        labels: Some(names::cluster_labels(name)),
        owner_references: rc.controller_owner_ref(&()).map(|o| vec![o]),
        ..Default::default()
    }
}

/// Makes sure the Secrets exist and follows a password change.
pub(super) async fn reconcile(
    client: &Client,
    rc: &RedisCluster,
    (ns, name): (&str, &str),
    slot: &mut Option<Box<Credentials>>,
    poll: Option<Duration>,
) -> Result<Outcome, Error> {
    let spec = rc.spec.auth.clone().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let enabled = auth::enabled(&rc.spec);
    if slot.is_none() {
        *slot = load(&secrets, rc, name, &spec, enabled).await?;
    }
    let Some(creds) = slot.as_mut() else {
        return Ok(Outcome {
            login: None,
            view: None,
        });
    };
    let mut overlap_until = None;
    if enabled && poll.is_some_and(|poll| creds.read_at.elapsed() >= poll) {
        let hash = client_hash(&secrets, rc, name, &spec).await?;
        creds.read_at = Instant::now();
        let now = now_unix();
        let overlap = i64::from(spec.rotation_overlap_seconds);
        let (acl, step) = auth::next(&creds.acl, auth::client_user(&spec), &hash, now, overlap);
        if acl != creds.acl {
            let rotated_at = match step {
                Rotation::Finished => Some(now),
                _ => creds.rotated_at,
            };
            write_internal(&secrets, rc, name, &creds.internal, &acl, rotated_at).await?;
            tracing::info!(cluster = %format_args!("{ns}/{name}"), ?step, "client credentials changed");
            creds.acl = acl;
            creds.rotated_at = rotated_at;
        }
        if let Rotation::Started { until } | Rotation::Overlapping { until } = step {
            overlap_until = Some(until);
        }
    } else if let Some(started) = creds.acl.rotation_started {
        overlap_until = Some(started + i64::from(spec.rotation_overlap_seconds));
    }
    let login = Login {
        user: auth::OPERATOR_USER.into(),
        password: creds.internal.operator.clone(),
    };
    let view = enabled.then(|| AuthView {
        secret_name: auth::client_secret_name(name, &spec),
        username: creds.acl.user.clone(),
        rotated_at: creds.rotated_at,
        overlap_until,
    });
    Ok(Outcome {
        login: Some(login),
        view,
    })
}

/// The operator's credentials for the cluster: from its internal Secret,
/// made (with the clients' Secret, if that is ours to make) when missing.
/// `None` when authentication is off and no internal Secret exists.
async fn load(
    secrets: &Api<Secret>,
    rc: &RedisCluster,
    name: &str,
    spec: &api::AuthSpec,
    enabled: bool,
) -> Result<Option<Box<Credentials>>, Error> {
    let internal_name = auth::internal_secret_name(name);
    let ns = secrets_ns(rc);
    let found = secrets.get_opt(&internal_name).await.map_err(kube_err(
        "reading",
        "Secret",
        &format!("{ns}/{internal_name}"),
    ))?;
    let read_at = Instant::now();
    let generate = || {
        auth::generate_password().map_err(|_| Error::Random {
            name: format!("{ns}/{name}"),
        })
    };
    if let Some(s) = found {
        let field = |key: &str| text(&s, key).unwrap_or_default();
        let mut internal = Internal {
            operator: field(auth::OPERATOR_KEY),
            replication: field(auth::REPLICATION_KEY),
            probe: field(auth::PROBE_KEY),
            exporter: field(auth::EXPORTER_KEY),
        };
        let acl = ClientAcl {
            user: text(&s, auth::CLIENT_USER_KEY).unwrap_or_else(|| "default".into()),
            hashes: auth::parse_hashes(&field(auth::CLIENT_HASHES_KEY)),
            rotation_started: field(auth::ROTATION_STARTED_KEY).trim().parse().ok(),
        };
        let rotated_at = field(auth::ROTATED_AT_KEY).trim().parse().ok();
        // Written by an operator that had no exporter user: add one, before
        // any pod that reads it is made.
        if internal.exporter.is_empty() {
            internal.exporter = generate()?;
            write_internal(secrets, rc, name, &internal, &acl, rotated_at).await?;
        }
        // Read the clients' Secret at once: it may have changed meanwhile.
        let stale = read_at
            .checked_sub(Duration::from_secs(86_400))
            .unwrap_or(read_at);
        return Ok(Some(Box::new(Credentials {
            internal,
            acl,
            rotated_at,
            read_at: stale,
        })));
    }
    if !enabled {
        return Ok(None);
    }
    let internal = Internal {
        operator: generate()?,
        replication: generate()?,
        probe: generate()?,
        exporter: generate()?,
    };
    let hash = client_hash(secrets, rc, name, spec).await?;
    let acl = ClientAcl {
        user: auth::client_user(spec).to_string(),
        hashes: vec![hash],
        rotation_started: None,
    };
    write_internal(secrets, rc, name, &internal, &acl, None).await?;
    Ok(Some(Box::new(Credentials {
        internal,
        acl,
        rotated_at: None,
        read_at,
    })))
}

fn secrets_ns(rc: &RedisCluster) -> String {
    rc.meta().namespace.clone().unwrap_or_default()
}

/// The hash of the clients' password; the Secret is generated when it is
/// ours (the spec names none) and missing.
async fn client_hash(
    secrets: &Api<Secret>,
    rc: &RedisCluster,
    name: &str,
    spec: &api::AuthSpec,
) -> Result<String, Error> {
    let secret_name = auth::client_secret_name(name, spec);
    let ns = secrets_ns(rc);
    let full = format!("{ns}/{secret_name}");
    let found = secrets
        .get_opt(&secret_name)
        .await
        .map_err(kube_err("reading", "Secret", &full))?;
    let password = match found {
        Some(s) => text(&s, auth::PASSWORD_KEY)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| Error::ClientSecret {
                secret: full.clone(),
                why: format!("has no non-empty UTF-8 key '{}'", auth::PASSWORD_KEY),
            })?,
        None if spec.secret_name.is_some() => {
            return Err(Error::ClientSecret {
                secret: full,
                why: "does not exist (spec.auth.secret_name names it)".into(),
            });
        }
        None => {
            let password =
                auth::generate_password().map_err(|_| Error::Random { name: full.clone() })?;
            let secret = Secret {
                metadata: secret_meta(rc, name, &secret_name),
                string_data: Some(BTreeMap::from([(
                    auth::PASSWORD_KEY.to_string(),
                    password.clone(),
                )])),
                ..Default::default()
            };
            secrets
                .create(&PostParams::default(), &secret)
                .await
                .map_err(kube_err("creating", "Secret", &full))?;
            password
        }
    };
    Ok(auth::sha256_hex(&password))
}

/// Writes the internal Secret: passwords, what the pods load at start,
/// and the rotation's state.
async fn write_internal(
    secrets: &Api<Secret>,
    rc: &RedisCluster,
    name: &str,
    internal: &Internal,
    acl: &ClientAcl,
    rotated_at: Option<i64>,
) -> Result<(), Error> {
    let secret_name = auth::internal_secret_name(name);
    let mut data = BTreeMap::from([
        (auth::OPERATOR_KEY, internal.operator.clone()),
        (auth::REPLICATION_KEY, internal.replication.clone()),
        (auth::PROBE_KEY, internal.probe.clone()),
        (auth::EXPORTER_KEY, internal.exporter.clone()),
        (auth::ACL_FILE, auth::acl_file(acl, internal)),
        (auth::CONF_FILE, auth::conf_file(internal)),
        (auth::CLIENT_HASHES_KEY, acl.hashes.join(" ")),
        (auth::CLIENT_USER_KEY, acl.user.clone()),
    ]);
    if let Some(t) = acl.rotation_started {
        data.insert(auth::ROTATION_STARTED_KEY, t.to_string());
    }
    if let Some(t) = rotated_at {
        data.insert(auth::ROTATED_AT_KEY, t.to_string());
    }
    let secret = Secret {
        metadata: secret_meta(rc, name, &secret_name),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Default::default()
    };
    apply_secret(secrets, &secret).await
}

/// Server-side applies `secret` (named in its metadata) as the operator.
pub(super) async fn apply_secret(secrets: &Api<Secret>, secret: &Secret) -> Result<(), Error> {
    let name = secret.metadata.name.as_deref().unwrap_or_default();
    let mut value = serde_json::to_value(secret).unwrap_or_default();
    if let Some(o) = value.as_object_mut() {
        o.insert("apiVersion".into(), "v1".into());
        o.insert("kind".into(), "Secret".into());
    }
    secrets
        .patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(value),
        )
        .await
        .map_err(kube_err(
            "applying",
            "Secret",
            &format!("{}/{name}", secrets.namespace().unwrap_or_default()),
        ))?;
    Ok(())
}

/// What the nodes' users follow from (the internal passwords never
/// change), so that the rules are only rendered for a node that needs them.
pub(super) fn users_fingerprint(creds: &Credentials, enabled: bool) -> u64 {
    crate::stable_hash::of_str(&format!(
        "{enabled} {} {:?}",
        creds.acl.user, creds.acl.hashes
    ))
}

/// The users every node is to have, and the replication password: the
/// cluster's, or open ones once authentication is switched off.
pub(super) fn node_users(creds: &Credentials, enabled: bool) -> super::node_config::NodeUsers {
    if enabled {
        let users = auth::users(&creds.acl, &creds.internal);
        (users, Some(creds.internal.replication.clone()))
    } else {
        (auth::open_users(), None)
    }
}
