//! A rustls certificate resolver whose certificate can be swapped while the
//! server runs: each new TLS handshake reads the current one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::Error;

#[derive(Debug, Default)]
pub struct ReloadingResolver {
    state: RwLock<Option<Loaded>>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    cert_pem: String,
    key_pem: String,
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A poisoned lock only means a writer panicked mid-swap; the Option
        // inside is still either the old or the new key.
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.as_ref().map(|l| l.key.clone())
    }
}

impl ReloadingResolver {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Whether a certificate is loaded (the webhook is ready only then).
    pub fn is_loaded(&self) -> bool {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// The PEM certificate currently served.
    pub fn current_cert_pem(&self) -> Option<String> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.as_ref().map(|l| l.cert_pem.clone())
    }

    /// Serves `cert_pem` (a chain) with `key_pem` from the next handshake on.
    /// Returns whether anything changed. On error the old pair stays.
    pub fn set_pem(&self, cert_pem: &str, key_pem: &str) -> Result<bool, Error> {
        {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            if state
                .as_ref()
                .is_some_and(|l| l.cert_pem == cert_pem && l.key_pem == key_pem)
            {
                return Ok(false);
            }
        }
        let key = Arc::new(certified_key(cert_pem, key_pem)?);
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        *state = Some(Loaded {
            key,
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
        });
        Ok(true)
    }

    /// Loads `tls.crt` and `tls.key` from `dir`.
    pub fn load_dir(&self, dir: &Path) -> Result<bool, Error> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| Error::Io {
                path: path.display().to_string(),
                source,
            })
        };
        let cert = read("tls.crt")?;
        let key = read("tls.key")?;
        self.set_pem(&cert, &key)
    }
}

/// Parses a PEM chain and key into a rustls key, with the ring provider, and
/// checks that they belong together (a half-written pair is refused).
pub fn certified_key(cert_pem: &str, key_pem: &str) -> Result<CertifiedKey, Error> {
    let parse = |what: &str, e: rustls::pki_types::pem::Error| Error::Parse {
        what: what.to_string(),
        reason: e.to_string(),
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| parse("tls.crt", e))?;
    if chain.is_empty() {
        return Err(Error::Parse {
            what: "tls.crt".into(),
            reason: "no certificate in PEM".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| parse("tls.key", e))?;
    let signing_key = ring::default_provider()
        .key_provider
        .load_private_key(key)?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match()?;
    Ok(certified)
}

/// Polls `dir` every `interval` and swaps in changed files. Covers both an
/// atomic rename and a Secret volume's symlink swap, since it compares
/// contents. Read errors keep the old certificate.
pub async fn watch_dir(resolver: Arc<ReloadingResolver>, dir: PathBuf, interval: Duration) {
    let mut last_error = String::new();
    loop {
        match resolver.load_dir(&dir) {
            Ok(true) => {
                tracing::info!(dir = %dir.display(), "loaded serving certificate");
                last_error.clear();
            }
            Ok(false) => last_error.clear(),
            Err(e) => {
                let msg = e.to_string();
                if msg != last_error {
                    tracing::warn!(dir = %dir.display(), error = %msg, "certificate not (re)loaded; keeping the previous one");
                    last_error = msg;
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issue::{issue_serving, new_ca};
    use time::OffsetDateTime;

    fn pair() -> crate::KeyMaterial {
        let now = OffsetDateTime::now_utc();
        let ca = new_ca("ca", time::Duration::days(1), now).unwrap();
        issue_serving(&ca, &["localhost".into()], time::Duration::days(1), now).unwrap()
    }

    #[test]
    fn loads_swaps_and_refuses_mismatched_pairs() {
        let r = ReloadingResolver::new();
        assert!(!r.is_loaded());
        let a = pair();
        let b = pair();
        assert!(r.set_pem(&a.cert_pem, &a.key_pem).unwrap());
        assert!(!r.set_pem(&a.cert_pem, &a.key_pem).unwrap());
        assert!(r.is_loaded());
        // A certificate with someone else's key is refused and the old pair stays.
        let err = r.set_pem(&b.cert_pem, &a.key_pem).unwrap_err();
        assert!(
            matches!(
                err,
                crate::Error::Rustls(rustls::Error::InconsistentKeys(
                    rustls::InconsistentKeys::KeyMismatch
                ))
            ),
            "{err}"
        );
        assert_eq!(r.current_cert_pem().as_deref(), Some(a.cert_pem.as_str()));
        assert!(r.set_pem(&b.cert_pem, &b.key_pem).unwrap());
        assert_eq!(r.current_cert_pem().as_deref(), Some(b.cert_pem.as_str()));
    }

    #[test]
    fn load_dir_names_the_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = ReloadingResolver::new()
            .load_dir(dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("tls.crt"), "{err}");
        let a = pair();
        std::fs::write(dir.path().join("tls.crt"), &a.cert_pem).unwrap();
        std::fs::write(dir.path().join("tls.key"), "garbage").unwrap();
        let err = ReloadingResolver::new()
            .load_dir(dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("tls.key"), "{err}");
    }
}
