//! Issuing a CA and serving certificates, and reading certificates back.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::Error;

/// A certificate and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyMaterial {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for KeyMaterial {
    // Never print a private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// Backdating absorbs clock skew between the issuer and the apiserver.
const BACKDATE: Duration = Duration::minutes(5);

/// A new self-signed CA, valid from now for `validity`.
pub fn new_ca(
    common_name: &str,
    validity: Duration,
    now: OffsetDateTime,
) -> Result<KeyMaterial, Error> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - BACKDATE;
    params.not_after = now + validity;
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(KeyMaterial {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A serving certificate for `sans` (DNS names or IP addresses), signed by `ca`.
pub fn issue_serving(
    ca: &KeyMaterial,
    sans: &[String],
    validity: Duration,
    now: OffsetDateTime,
) -> Result<KeyMaterial, Error> {
    issue(
        ca,
        sans,
        validity,
        now,
        &[ExtendedKeyUsagePurpose::ServerAuth],
    )
}

/// A certificate for `sans` that serves and also identifies its holder as
/// a client: for peers that connect to each other, as Redis nodes do on
/// the cluster bus and for replication (OpenSSL checks the client usage).
pub fn issue_peer(
    ca: &KeyMaterial,
    sans: &[String],
    validity: Duration,
    now: OffsetDateTime,
) -> Result<KeyMaterial, Error> {
    issue(
        ca,
        sans,
        validity,
        now,
        &[
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    )
}

fn issue(
    ca: &KeyMaterial,
    sans: &[String],
    validity: Duration,
    now: OffsetDateTime,
    usages: &[ExtendedKeyUsagePurpose],
) -> Result<KeyMaterial, Error> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        sans.first().map(String::as_str).unwrap_or("redis-webhook"),
    );
    params.distinguished_name = dn;
    params.subject_alt_names = sans
        .iter()
        .map(|s| match s.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(s.clone().try_into()?)),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = usages.to_vec();
    params.not_before = now - BACKDATE;
    params.not_after = now + validity;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(KeyMaterial {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// What rotation needs to know about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub subject: String,
    pub issuer: String,
    /// DNS names and IP addresses, as strings.
    pub sans: Vec<String>,
    pub is_ca: bool,
    pub der: Vec<u8>,
}

impl CertInfo {
    /// Parses every certificate in a PEM bundle, in order.
    pub fn parse_bundle(pem: &str, what: &str) -> Result<Vec<CertInfo>, Error> {
        let err = |reason: String| Error::Parse {
            what: what.to_string(),
            reason,
        };
        let mut out = Vec::new();
        for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
            let block = block.map_err(|e| err(e.to_string()))?;
            if block.label != "CERTIFICATE" {
                continue;
            }
            let (_, cert) = x509_parser::parse_x509_certificate(&block.contents)
                .map_err(|e| err(e.to_string()))?;
            let sans = cert
                .subject_alternative_name()
                .map_err(|e| err(e.to_string()))?
                .map(|ext| {
                    ext.value
                        .general_names
                        .iter()
                        .filter_map(|n| match n {
                            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                            x509_parser::extensions::GeneralName::IPAddress(b) => ip_string(b),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(CertInfo {
                not_before: cert.validity().not_before.to_datetime(),
                not_after: cert.validity().not_after.to_datetime(),
                subject: cert.subject().to_string(),
                issuer: cert.issuer().to_string(),
                sans,
                is_ca: cert.is_ca(),
                der: block.contents.clone(),
            });
        }
        if out.is_empty() {
            return Err(err("no certificate in PEM".into()));
        }
        Ok(out)
    }

    /// Parses the first certificate of a PEM text.
    pub fn parse(pem: &str, what: &str) -> Result<CertInfo, Error> {
        let mut all = Self::parse_bundle(pem, what)?;
        Ok(all.swap_remove(0))
    }

    /// Whether `self` was signed by `ca`: the issuer name matches and the
    /// signature verifies with the CA's key.
    pub fn signed_by(&self, ca: &CertInfo) -> bool {
        let (Ok((_, cert)), Ok((_, ca_cert))) = (
            x509_parser::parse_x509_certificate(&self.der),
            x509_parser::parse_x509_certificate(&ca.der),
        ) else {
            return false;
        };
        cert.issuer() == ca_cert.subject()
            && cert.verify_signature(Some(ca_cert.public_key())).is_ok()
    }

    /// Fraction of the validity period still ahead at `now` (0 when expired).
    pub fn remaining_fraction(&self, now: OffsetDateTime) -> f64 {
        let total = (self.not_after - self.not_before).as_seconds_f64();
        if total <= 0.0 {
            return 0.0;
        }
        ((self.not_after - now).as_seconds_f64() / total).clamp(0.0, 1.0)
    }
}

fn ip_string(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|b| IpAddr::from(b).to_string()),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|b| IpAddr::from(b).to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    #[test]
    fn serving_certificate_has_the_sans_and_chains_to_the_ca() {
        let ca = new_ca("test-ca", Duration::days(365), now()).unwrap();
        let sans = vec![
            "svc.ns.svc".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        let leaf = issue_serving(&ca, &sans, Duration::days(30), now()).unwrap();
        let ca_info = CertInfo::parse(&ca.cert_pem, "ca").unwrap();
        let info = CertInfo::parse(&leaf.cert_pem, "leaf").unwrap();
        assert_eq!(info.sans, sans);
        assert!(ca_info.is_ca);
        assert!(!info.is_ca);
        assert!(info.signed_by(&ca_info));
        let other = new_ca("other", Duration::days(365), now()).unwrap();
        assert!(!info.signed_by(&CertInfo::parse(&other.cert_pem, "other").unwrap()));
        let days = (info.not_after - now()).whole_days();
        assert!((29..=30).contains(&days), "{days}");
    }

    /// (server auth, client auth) of a PEM certificate.
    fn usages(pem: &str) -> (bool, bool) {
        let info = CertInfo::parse(pem, "leaf").unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&info.der).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        (eku.server_auth, eku.client_auth)
    }

    #[test]
    fn a_peer_certificate_serves_and_identifies_a_client() {
        let ca = new_ca("test-ca", Duration::days(365), now()).unwrap();
        let sans = vec!["rc.ns.svc".to_string(), "localhost".to_string()];
        let peer = issue_peer(&ca, &sans, Duration::days(30), now()).unwrap();
        assert_eq!(usages(&peer.cert_pem), (true, true));
        let serving = issue_serving(&ca, &sans, Duration::days(30), now()).unwrap();
        assert_eq!(usages(&serving.cert_pem), (true, false));
        let info = CertInfo::parse(&peer.cert_pem, "peer").unwrap();
        assert!(info.signed_by(&CertInfo::parse(&ca.cert_pem, "ca").unwrap()));
        assert_eq!(info.sans, sans);
    }

    #[test]
    fn bundle_parsing_keeps_order_and_rejects_garbage() {
        let a = new_ca("a", Duration::days(1), now()).unwrap();
        let b = new_ca("b", Duration::days(2), now()).unwrap();
        let bundle = format!("{}{}", a.cert_pem, b.cert_pem);
        let infos = CertInfo::parse_bundle(&bundle, "bundle").unwrap();
        assert_eq!(infos.len(), 2);
        assert!(infos[0].subject.contains("CN=a"));
        assert!(infos[1].subject.contains("CN=b"));
        let err = CertInfo::parse("not a pem", "ca.crt")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ca.crt"), "{err}");
    }

    #[test]
    fn remaining_fraction_moves_with_the_clock() {
        let start = now();
        let ca = new_ca("a", Duration::days(100), start).unwrap();
        let info = CertInfo::parse(&ca.cert_pem, "ca").unwrap();
        assert!(info.remaining_fraction(start) > 0.99);
        let later = start + Duration::days(70);
        let f = info.remaining_fraction(later);
        assert!((0.29..0.31).contains(&f), "{f}");
        assert_eq!(info.remaining_fraction(start + Duration::days(200)), 0.0);
    }

    #[test]
    fn debug_never_shows_the_key() {
        let ca = new_ca("a", Duration::days(1), now()).unwrap();
        assert!(!format!("{ca:?}").contains("PRIVATE KEY"));
    }
}
