//! TLS for the listener: rustls with TLS 1.2 and 1.3 only, ALPN h2 and http/1.1. The
//! certificate sits behind a resolver that can be swapped while running, so a renewed
//! certificate (SIGHUP, or the files changing on disk) is served to the next handshake
//! without dropping connections.
//!
//! With ACME the resolver may start empty (handshakes fail until the first certificate
//! is obtained) and also answers TLS-ALPN-01 challenges: a ClientHello offering only
//! `acme-tls/1` for a name with a pending challenge gets the challenge certificate.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

pub(crate) type TlsAcceptor = tokio_rustls::TlsAcceptor;

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737).
pub(crate) const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path} holds no PEM certificate; gateway.tls.certFile must be the full chain (fullchain.pem)")]
    NoCert { path: String },
    #[error("{path} holds no PEM private key; gateway.tls.keyFile must be the key (privkey.pem)")]
    NoKey { path: String },
    #[error("the certificate and key do not work together: {0}")]
    Rustls(String),
}

/// Loads and checks a certificate chain and its key.
pub(crate) fn load_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|error| TlsError::Read {
            path: p.display().to_string(),
            error,
        })
    };
    let cert_pem = read(cert_file)?;
    let key_pem = read(key_file)?;
    certified_key(
        &cert_pem,
        &key_pem,
        &cert_file.display().to_string(),
        &key_file.display().to_string(),
    )
}

/// Parses and checks a PEM chain and key; the paths only name them in errors.
pub(crate) fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_file: &str,
    key_file: &str,
) -> Result<CertifiedKey, TlsError> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut &*cert_pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCert {
            path: cert_file.to_string(),
        });
    }
    let key = rustls_pemfile::private_key(&mut &*key_pem)
        .ok()
        .flatten()
        .ok_or_else(|| TlsError::NoKey {
            path: key_file.to_string(),
        })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let certified = CertifiedKey::new(certs, signing);
    certified
        .keys_match()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    Ok(certified)
}

/// The current certificate, swappable, plus pending TLS-ALPN-01 answers.
#[derive(Debug, Default)]
pub struct CertResolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    /// `certFile`/`keyFile` to reload from; `None` under ACME.
    files: Option<(PathBuf, PathBuf)>,
    seen: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
    /// Challenge certificates by lower-case domain name.
    challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl CertResolver {
    pub fn new(cert_file: &Path, key_file: &Path) -> Result<Self, TlsError> {
        let seen = (mtime(cert_file), mtime(key_file));
        Ok(Self {
            current: RwLock::new(Some(Arc::new(load_key(cert_file, key_file)?))),
            files: Some((cert_file.to_path_buf(), key_file.to_path_buf())),
            seen: Mutex::new(seen),
            challenges: RwLock::default(),
        })
    }

    /// No certificate yet (ACME): only challenge handshakes succeed until [`Self::set`].
    pub fn empty() -> Self {
        Self::default()
    }

    /// Serves `key` from the next handshake on.
    pub fn set(&self, key: CertifiedKey) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(key));
    }

    pub fn has_certificate(&self) -> bool {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Answers TLS-ALPN-01 for `domain` with `key` until [`Self::clear_challenge`].
    pub fn set_challenge(&self, domain: &str, key: CertifiedKey) {
        self.challenges
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(domain.to_ascii_lowercase(), Arc::new(key));
    }

    pub fn clear_challenge(&self, domain: &str) {
        self.challenges
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&domain.to_ascii_lowercase());
    }

    /// Loads the files again; on error the old certificate stays. Without files
    /// (ACME) there is nothing to reload.
    pub fn reload(&self) -> Result<(), TlsError> {
        let Some((cert_file, key_file)) = &self.files else {
            return Ok(());
        };
        let seen = (mtime(cert_file), mtime(key_file));
        let key = load_key(cert_file, key_file)?;
        self.set(key);
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = seen;
        Ok(())
    }

    /// Reloads when either file changed since the last load. `Ok(true)` when it did.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let Some((cert_file, key_file)) = &self.files else {
            return Ok(false);
        };
        let now = (mtime(cert_file), mtime(key_file));
        if *self.seen.lock().unwrap_or_else(|p| p.into_inner()) == now {
            return Ok(false);
        }
        self.reload().map(|()| true)
    }

    /// When the served certificate expires (Unix seconds), for the metrics.
    pub fn not_after(&self) -> Option<i64> {
        let current = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        let leaf = current.end_entity_cert().ok()?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
        Some(cert.validity().not_after.timestamp())
    }

    pub fn files(&self) -> Option<(&Path, &Path)> {
        self.files.as_ref().map(|(c, k)| (c.as_path(), k.as_path()))
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if acme {
            let name = hello.server_name()?.to_ascii_lowercase();
            return self
                .challenges
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&name)
                .cloned();
        }
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

pub(crate) fn acceptor(resolver: Arc<CertResolver>) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    // acme-tls/1 last: only a CA validating TLS-ALPN-01 offers it, and offers nothing else.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
