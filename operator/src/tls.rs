//! TLS for Redis nodes (`spec.tls`): where the certificate lives, the names
//! it must carry, and when the operator issues a new one. Pure; the Secrets
//! are read and written by [`crate::controller`].
//!
//! With no `secret_name` the operator keeps two Secrets per cluster:
//! - `<name>-tls-ca`: the cluster's CA, certificate and private key. No pod
//!   mounts it.
//! - `<name>-tls`: the nodes' certificate and key, and `ca.crt`, which the
//!   pods mount at [`MOUNT`].
//!
//! The nodes' certificate is renewed from the same CA well before it
//! expires, and every node reloads it with `CONFIG SET` (see
//! [`reload_settings`]), so nothing restarts and trust never changes. The
//! CA is made once, for [`CA_DAYS`], and is not replaced on its own: a new
//! CA would have to reach every node before any node presents a
//! certificate it signed.

use certs::CertInfo;
use time::{Duration, OffsetDateTime};

/// Where the pods mount the nodes' Secret.
pub const MOUNT: &str = "/tls";
/// The pod volume of that Secret.
pub const VOLUME: &str = "tls";
/// Keys of a `kubernetes.io/tls` Secret as cert-manager writes it.
pub const CERT_KEY: &str = "tls.crt";
pub const KEY_KEY: &str = "tls.key";
pub const CA_KEY: &str = "ca.crt";
/// The CA's private key, in the CA Secret only.
pub const CA_PRIVATE_KEY: &str = "ca.key";

/// Lifetime of the cluster's CA.
pub const CA_DAYS: i64 = 10 * 365;
/// Lifetime of the nodes' certificate.
pub const LEAF_DAYS: i64 = 365;
/// The nodes' certificate is renewed with less than this part of its life
/// left (about four months of a year).
pub const RENEW_FRACTION: f64 = 1.0 / 3.0;

/// The Secret the pods mount: the one the spec names, or `<name>-tls`
/// (the operator's, or cert-manager's with `issuer_ref`).
pub fn secret_name(cluster: &str, spec: &api::TlsSpec) -> String {
    spec.secret_name
        .clone()
        .unwrap_or_else(|| format!("{cluster}-tls"))
}

/// The operator's CA Secret of a cluster.
pub fn ca_secret_name(cluster: &str) -> String {
    format!("{cluster}-tls-ca")
}

/// The name the operator checks the nodes' certificate against, whatever
/// address it dials (a node is reached by its pod IP).
pub fn server_name(cluster: &str, ns: &str) -> String {
    format!("{cluster}.{ns}.svc")
}

/// The names the operator puts in the nodes' certificate: the client
/// Service's, and `localhost` for what runs beside Redis in the pod (the
/// exporter, the probe).
pub fn sans(cluster: &str, ns: &str) -> Vec<String> {
    vec![
        server_name(cluster, ns),
        format!("{}.cluster.local", server_name(cluster, ns)),
        format!("{cluster}.{ns}"),
        cluster.to_string(),
        LOCAL_NAME.into(),
        "127.0.0.1".into(),
    ]
}

/// The cert-manager API the operator requests certificates from.
pub const CERTIFICATE_GROUP: &str = "cert-manager.io";
pub const CERTIFICATE_VERSION: &str = "v1";
pub const CERTIFICATE_KIND: &str = "Certificate";
pub const CERTIFICATE_PLURAL: &str = "certificates";

/// The spec of the cert-manager `Certificate` the operator writes for a
/// cluster with `spec.tls.issuer_ref`: the names of [`sans`], for server
/// and client use (the nodes present it to each other), written into the
/// nodes' Secret, with a new key at each renewal. Lifetime and renewal are
/// the issuer's defaults.
pub fn certificate_spec(cluster: &str, ns: &str, issuer: &api::IssuerRef) -> serde_json::Value {
    let (ips, names): (Vec<String>, Vec<String>) = sans(cluster, ns)
        .into_iter()
        .partition(|s| s.parse::<std::net::IpAddr>().is_ok());
    serde_json::json!({
        "secretName": secret_name(cluster, &api::TlsSpec::default()),
        "dnsNames": names,
        "ipAddresses": ips,
        "usages": ["digital signature", "key encipherment", "server auth", "client auth"],
        "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
        "issuerRef": {"name": issuer.name, "kind": issuer.kind, "group": issuer.group},
    })
}

/// The message of a `Certificate`'s `Ready` condition when it is not
/// `True`: cert-manager's word on why the Secret is not issued yet.
pub fn certificate_not_ready(certificate: &serde_json::Value) -> Option<String> {
    let conditions = certificate.pointer("/status/conditions")?.as_array()?;
    let ready = conditions.iter().find(|c| c["type"] == "Ready")?;
    (ready["status"] != "True").then(|| {
        let reason = ready["reason"].as_str().unwrap_or("NotReady");
        let message = ready["message"].as_str().unwrap_or("");
        format!("{reason}: {message}")
    })
}

/// The name the exporter sidecar checks (it dials `localhost`).
pub const LOCAL_NAME: &str = "localhost";

/// The `redis.conf` lines of a TLS node: TLS on the client port (and no
/// plain port), on the cluster bus and for replication. Clients need not
/// present a certificate (they log in with a password), but one they
/// present must be valid; the nodes present theirs to each other.
pub fn conf_lines() -> Vec<String> {
    let mut lines = vec![
        "port 0".to_string(),
        format!("tls-port {}", crate::desired::REDIS_PORT),
        "tls-cluster yes".into(),
        "tls-replication yes".into(),
        "tls-auth-clients optional".into(),
    ];
    lines.extend(
        reload_settings()
            .into_iter()
            .map(|(k, v)| format!("{k} {v}")),
    );
    lines
}

/// The file settings. Given again with `CONFIG SET`, they make a running
/// node read the files anew (Redis 7.0.1 and later): how a renewed
/// certificate takes effect without a restart.
pub fn reload_settings() -> Vec<(&'static str, String)> {
    vec![
        ("tls-cert-file", format!("{MOUNT}/{CERT_KEY}")),
        ("tls-key-file", format!("{MOUNT}/{KEY_KEY}")),
        ("tls-ca-cert-file", format!("{MOUNT}/{CA_KEY}")),
    ]
}

/// The nodes' Secret as read: its certificate (when the key is there too)
/// and the CAs in its `ca.crt`.
#[derive(Debug, Clone, Default)]
pub struct NodeSecret {
    pub cert: Option<CertInfo>,
    pub trusted: Vec<CertInfo>,
}

/// What the operator does about its own certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Keep,
    /// No CA and no nodes' certificate yet: make both.
    CreateCa,
    /// Issue the nodes' certificate from the CA, for this reason.
    Issue(&'static str),
    /// The operator cannot go on by itself; the message says why and what
    /// to do.
    Stuck(String),
}

/// The next step for an operator-issued certificate. `ca` is the CA
/// Secret's certificate (when its key is there too); `node` the nodes'
/// Secret, when it exists.
pub fn plan(
    ca: Option<&CertInfo>,
    node: Option<&NodeSecret>,
    wanted: &[String],
    now: OffsetDateTime,
) -> Plan {
    let Some(ca) = ca else {
        return match node.and_then(|n| n.cert.as_ref()) {
            // Nodes run with a certificate from a CA that is gone: a new CA
            // would split the cluster (see the module doc).
            Some(cert) if cert.not_after > now => Plan::Stuck(
                "its CA Secret is missing or has no key, while the nodes still use a certificate it signed; restore the CA Secret from a backup (a new CA would make the nodes refuse each other)".into(),
            ),
            _ => Plan::CreateCa,
        };
    };
    if ca.not_after <= now {
        return Plan::Stuck(
            "its CA has expired: the nodes refuse each other's certificates; see the README, 'TLS'"
                .into(),
        );
    }
    let Some(node) = node else {
        return Plan::Issue("missing");
    };
    let Some(cert) = node.cert.as_ref() else {
        return Plan::Issue("missing");
    };
    if !node.trusted.iter().any(|t| t.der == ca.der) {
        return Plan::Issue("ca.crt lacks the CA");
    }
    if !cert.signed_by(ca) {
        return Plan::Issue("not signed by the CA");
    }
    if !wanted.iter().all(|w| cert.sans.contains(w)) {
        return Plan::Issue("names missing");
    }
    if cert.remaining_fraction(now) < RENEW_FRACTION {
        return Plan::Issue("due for renewal");
    }
    Plan::Keep
}

/// What is wrong with a certificate given in `spec.tls.secret_name`, if
/// anything: it must be valid now, signed by a CA of its `ca.crt`, and name
/// `server` (the operator checks it). Without [`LOCAL_NAME`] only the
/// exporter sidecar fails, so that is a warning (`Ok(Some(..))`): the
/// cluster is still managed.
pub fn check_given(
    node: &NodeSecret,
    server: &str,
    now: OffsetDateTime,
) -> Result<Option<String>, String> {
    let Some(cert) = node.cert.as_ref() else {
        return Err(format!("has no {CERT_KEY} with its {KEY_KEY}"));
    };
    if node.trusted.is_empty() {
        return Err(format!("has no {CA_KEY}"));
    }
    if cert.not_after <= now || cert.not_before > now {
        return Err(format!(
            "holds a certificate valid only from {} to {}",
            cert.not_before, cert.not_after
        ));
    }
    if !node.trusted.iter().any(|ca| cert.signed_by(ca)) {
        return Err(format!(
            "holds a certificate that no CA in its {CA_KEY} signed"
        ));
    }
    let without = |name: &str| {
        format!(
            "holds a certificate without the name {name} (it has {})",
            cert.sans.join(", ")
        )
    };
    if !covers(&cert.sans, server) {
        return Err(without(server));
    }
    if !covers(&cert.sans, LOCAL_NAME) {
        return Ok(Some(format!(
            "{}: the exporter sidecar cannot check it",
            without(LOCAL_NAME)
        )));
    }
    Ok(None)
}

/// Whether `sans` covers `name`, exactly or with a wildcard first label.
fn covers(sans: &[String], name: &str) -> bool {
    sans.iter().any(|s| {
        s == name
            || s.strip_prefix("*.")
                .is_some_and(|rest| name.split_once('.').is_some_and(|(_, tail)| tail == rest))
    })
}

/// The nodes' certificate lifetime, as a [`Duration`].
pub fn leaf_validity() -> Duration {
    Duration::days(LEAF_DAYS)
}

/// The CA lifetime, as a [`Duration`].
pub fn ca_validity() -> Duration {
    Duration::days(CA_DAYS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use certs::issue::{issue_peer, new_ca};
    use serde_json::json;

    #[test]
    fn the_certificate_asks_for_the_names_the_operator_checks() {
        let issuer = api::IssuerRef {
            name: "corp-ca".into(),
            kind: "ClusterIssuer".into(),
            group: "cert-manager.io".into(),
        };
        let spec = certificate_spec("cache", "shop", &issuer);
        assert_eq!(spec["secretName"], "cache-tls");
        assert_eq!(
            spec["dnsNames"],
            json!([
                "cache.shop.svc",
                "cache.shop.svc.cluster.local",
                "cache.shop",
                "cache",
                "localhost"
            ])
        );
        assert_eq!(spec["ipAddresses"], json!(["127.0.0.1"]));
        // The nodes present it to each other: client use too.
        let usages = spec["usages"].as_array().unwrap();
        assert!(usages.contains(&json!("server auth")) && usages.contains(&json!("client auth")));
        assert_eq!(
            spec["issuerRef"],
            json!({"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"})
        );
        // What check_given requires is what is asked for.
        let names: Vec<String> = serde_json::from_value(spec["dnsNames"].clone()).unwrap();
        assert!(
            names.contains(&server_name("cache", "shop")) && names.contains(&LOCAL_NAME.into())
        );
    }

    #[test]
    fn cert_managers_reason_is_read_from_the_ready_condition() {
        let status = |s: &str| {
            json!({"status": {"conditions": [
                {"type": "Issuing", "status": "True"},
                {"type": "Ready", "status": s, "reason": "DoesNotExist",
                 "message": "Issuing certificate as Secret does not exist"},
            ]}})
        };
        assert_eq!(
            certificate_not_ready(&status("False")).as_deref(),
            Some("DoesNotExist: Issuing certificate as Secret does not exist")
        );
        assert_eq!(certificate_not_ready(&status("True")), None);
        assert_eq!(certificate_not_ready(&json!({"spec": {}})), None);
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn info(pem: &str) -> CertInfo {
        CertInfo::parse(pem, "test").unwrap()
    }

    fn node(
        ca: &certs::KeyMaterial,
        sans: &[String],
        days: i64,
        issued: OffsetDateTime,
    ) -> NodeSecret {
        let leaf = issue_peer(ca, sans, Duration::days(days), issued).unwrap();
        NodeSecret {
            cert: Some(info(&leaf.cert_pem)),
            trusted: vec![info(&ca.cert_pem)],
        }
    }

    #[test]
    fn the_operator_issues_renews_and_never_replaces_a_ca_in_use() {
        let wanted = sans("rc", "ns");
        let ca = new_ca("rc", ca_validity(), now()).unwrap();
        let ca_info = info(&ca.cert_pem);
        assert_eq!(plan(None, None, &wanted, now()), Plan::CreateCa);
        assert_eq!(
            plan(Some(&ca_info), None, &wanted, now()),
            Plan::Issue("missing")
        );
        let fresh = node(&ca, &wanted, LEAF_DAYS, now());
        assert_eq!(
            plan(Some(&ca_info), Some(&fresh), &wanted, now()),
            Plan::Keep
        );
        // Two thirds of its life gone: renewed.
        let old = node(&ca, &wanted, LEAF_DAYS, now() - Duration::days(250));
        assert_eq!(
            plan(Some(&ca_info), Some(&old), &wanted, now()),
            Plan::Issue("due for renewal")
        );
        // A name the operator now wants.
        let narrow = node(&ca, &wanted[..1], LEAF_DAYS, now());
        assert_eq!(
            plan(Some(&ca_info), Some(&narrow), &wanted, now()),
            Plan::Issue("names missing")
        );
        // Signed by another CA, or a ca.crt without the CA.
        let other = new_ca("other", ca_validity(), now()).unwrap();
        let foreign = node(&other, &wanted, LEAF_DAYS, now());
        assert_eq!(
            plan(Some(&ca_info), Some(&foreign), &wanted, now()),
            Plan::Issue("ca.crt lacks the CA")
        );
        // The CA Secret lost while nodes use a certificate it signed.
        assert!(
            matches!(plan(None, Some(&fresh), &wanted, now()), Plan::Stuck(m) if m.contains("restore the CA Secret"))
        );
        // ... but after that certificate expired, starting over is safe.
        let expired = node(&ca, &wanted, 1, now() - Duration::days(3));
        assert_eq!(plan(None, Some(&expired), &wanted, now()), Plan::CreateCa);
    }

    #[test]
    fn a_given_certificate_must_chain_cover_the_names_and_be_valid() {
        let server = "rc.ns.svc";
        let ca = new_ca("issuer", ca_validity(), now()).unwrap();
        let good = node(&ca, &[server.into(), "localhost".into()], 90, now());
        assert_eq!(check_given(&good, server, now()), Ok(None));
        let wildcard = node(&ca, &["*.ns.svc".into(), "localhost".into()], 90, now());
        assert_eq!(check_given(&wildcard, server, now()), Ok(None));
        // Without localhost only the exporter fails: a warning.
        let narrow = node(&ca, &[server.into()], 90, now());
        assert_eq!(
            check_given(&narrow, server, now()),
            Ok(Some("holds a certificate without the name localhost (it has rc.ns.svc): the exporter sidecar cannot check it".into()))
        );
        // Without the Service's name the operator cannot connect: an error.
        let other = node(&ca, &["other.ns.svc".into(), "localhost".into()], 90, now());
        assert_eq!(
            check_given(&other, server, now()),
            Err(
                "holds a certificate without the name rc.ns.svc (it has other.ns.svc, localhost)"
                    .into()
            )
        );
        let mut unsigned = good.clone();
        unsigned.trusted = vec![info(&new_ca("x", ca_validity(), now()).unwrap().cert_pem)];
        assert_eq!(
            check_given(&unsigned, server, now()),
            Err("holds a certificate that no CA in its ca.crt signed".into())
        );
        let expired = node(&ca, &[server.into()], 1, now() - Duration::days(3));
        assert!(check_given(&expired, server, now()).is_err_and(|e| e.contains("valid only from")));
        assert_eq!(
            check_given(&NodeSecret::default(), server, now()),
            Err("has no tls.crt with its tls.key".into())
        );
    }

    #[test]
    fn a_node_listens_only_for_tls_and_reloads_from_the_mount() {
        let lines = conf_lines();
        assert_eq!(lines[0], "port 0");
        assert!(lines.contains(&"tls-port 6379".to_string()));
        assert!(lines.contains(&"tls-cluster yes".to_string()));
        assert!(lines.contains(&"tls-replication yes".to_string()));
        assert!(lines.contains(&"tls-cert-file /tls/tls.crt".to_string()));
        assert!(lines.contains(&"tls-ca-cert-file /tls/ca.crt".to_string()));
    }
}
