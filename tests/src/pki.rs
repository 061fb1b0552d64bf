//! Certificates for the test control plane.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Paths of the PEM files written by [`Pki::generate`].
#[derive(Debug, Clone)]
pub struct Pki {
    /// Cluster CA: signs the serving cert and client certs.
    pub ca_cert: PathBuf,
    /// Serving cert for kube-apiserver, kwok and metrics-server
    /// (SANs 127.0.0.1, localhost).
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    /// Client cert for user `admin` in group `system:masters`.
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    /// CA that aggregated API servers trust for proxied requests.
    pub front_proxy_ca_cert: PathBuf,
    /// Client cert the apiserver presents to aggregated API servers.
    pub front_proxy_client_cert: PathBuf,
    pub front_proxy_client_key: PathBuf,
    /// Service-account token signing key pair.
    pub sa_key: PathBuf,
    pub sa_pub: PathBuf,
    /// Kubelet client certs (`system:node:<name>` in `system:nodes`, for the
    /// Node authorizer), one per name given to [`Pki::generate_for`].
    pub nodes: Vec<(PathBuf, PathBuf)>,
}

/// CN of the front-proxy client cert (`--requestheader-allowed-names`).
pub const FRONT_PROXY_CLIENT_CN: &str = "front-proxy-client";

impl Pki {
    /// Generates all key pairs and certs into `dir`.
    pub fn generate(dir: &Path) -> Result<Self> {
        Self::generate_for(dir, &[], &[])
    }

    /// [`Pki::generate`], with more IP SANs on the serving cert (a real
    /// node's address, the `kubernetes` Service's ClusterIP) and a kubelet
    /// client cert for each node name.
    pub fn generate_for(
        dir: &Path,
        extra_ips: &[std::net::IpAddr],
        nodes: &[&str],
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let write = |name: &str, pem: String| -> Result<PathBuf> {
            let p = dir.join(name);
            std::fs::write(&p, pem).with_context(|| format!("writing {}", p.display()))?;
            Ok(p)
        };

        let (ca_key, ca_params) = new_ca("redis-operator-test-ca")?;
        let ca_cert = ca_params.self_signed(&ca_key).context("signing CA")?;
        let ca = Issuer::new(ca_params, ca_key);

        let (fp_key, fp_params) = new_ca("redis-operator-test-front-proxy-ca")?;
        let fp_cert = fp_params
            .self_signed(&fp_key)
            .context("signing front-proxy CA")?;
        let fp = Issuer::new(fp_params, fp_key);

        let mut serving = leaf("kube-apiserver", None, ExtendedKeyUsagePurpose::ServerAuth)?;
        serving.subject_alt_names = vec![
            rcgen::SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
            rcgen::SanType::DnsName("localhost".try_into().context("SAN localhost")?),
        ];
        for ip in extra_ips {
            serving
                .subject_alt_names
                .push(rcgen::SanType::IpAddress(*ip));
        }
        for dns in [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ] {
            serving
                .subject_alt_names
                .push(rcgen::SanType::DnsName(dns.try_into().context("SAN")?));
        }
        let serving_key = KeyPair::generate().context("serving key")?;
        let serving_cert = serving
            .signed_by(&serving_key, &ca)
            .context("signing serving cert")?;

        let admin = leaf(
            "admin",
            Some("system:masters"),
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let admin_key = KeyPair::generate().context("admin key")?;
        let admin_cert = admin
            .signed_by(&admin_key, &ca)
            .context("signing admin cert")?;

        let fpc = leaf(
            FRONT_PROXY_CLIENT_CN,
            None,
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let fpc_key = KeyPair::generate().context("front-proxy client key")?;
        let fpc_cert = fpc
            .signed_by(&fpc_key, &fp)
            .context("signing front-proxy client cert")?;

        // ECDSA P-256: kube-apiserver accepts ES256 service-account keys.
        let sa = KeyPair::generate().context("service-account key")?;

        let mut node_files = Vec::new();
        for node in nodes {
            let p = leaf(
                &format!("system:node:{node}"),
                Some("system:nodes"),
                ExtendedKeyUsagePurpose::ClientAuth,
            )?;
            let key = KeyPair::generate().context("node key")?;
            let cert = p.signed_by(&key, &ca).context("signing node cert")?;
            node_files.push((
                write(&format!("node-{node}.crt"), cert.pem())?,
                write(&format!("node-{node}.key"), key.serialize_pem())?,
            ));
        }

        Ok(Self {
            nodes: node_files,
            ca_cert: write("ca.crt", ca_cert.pem())?,
            serving_cert: write("serving.crt", serving_cert.pem())?,
            serving_key: write("serving.key", serving_key.serialize_pem())?,
            admin_cert: write("admin.crt", admin_cert.pem())?,
            admin_key: write("admin.key", admin_key.serialize_pem())?,
            front_proxy_ca_cert: write("front-proxy-ca.crt", fp_cert.pem())?,
            front_proxy_client_cert: write("front-proxy-client.crt", fpc_cert.pem())?,
            front_proxy_client_key: write("front-proxy-client.key", fpc_key.serialize_pem())?,
            sa_key: write("sa.key", sa.serialize_pem())?,
            sa_pub: write("sa.pub", sa.public_key_pem())?,
        })
    }
}

fn new_ca(cn: &str) -> Result<(KeyPair, CertificateParams)> {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok((KeyPair::generate().context("CA key")?, p))
}

// rcgen keeps one value per DN attribute, so at most one organization (group).
fn leaf(cn: &str, org: Option<&str>, eku: ExtendedKeyUsagePurpose) -> Result<CertificateParams> {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    if let Some(o) = org {
        p.distinguished_name.push(DnType::OrganizationName, o);
    }
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![eku];
    p.use_authority_key_identifier_extension = true;
    Ok(p)
}
