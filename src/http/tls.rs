//! TLS for the listener: rustls with TLS 1.2 and 1.3 only, ALPN h2 and http/1.1. The
//! certificate sits behind a resolver that can be swapped while running, so a renewed
//! certificate (SIGHUP, or the files changing on disk) is served to the next handshake
//! without dropping connections.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

pub type TlsAcceptor = tokio_rustls::TlsAcceptor;

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
pub fn load_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|error| TlsError::Read {
            path: p.display().to_string(),
            error,
        })
    };
    let cert_pem = read(cert_file)?;
    let key_pem = read(key_file)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCert {
            path: cert_file.display().to_string(),
        });
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| TlsError::NoKey {
            path: key_file.display().to_string(),
        })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let certified = CertifiedKey::new(certs, signing);
    certified
        .keys_match()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    Ok(certified)
}

/// The current certificate, swappable.
#[derive(Debug)]
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
    cert_file: PathBuf,
    key_file: PathBuf,
    seen: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl CertResolver {
    pub fn new(cert_file: &Path, key_file: &Path) -> Result<Self, TlsError> {
        let seen = (mtime(cert_file), mtime(key_file));
        Ok(Self {
            current: RwLock::new(Arc::new(load_key(cert_file, key_file)?)),
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            seen: Mutex::new(seen),
        })
    }

    /// Loads the files again; on error the old certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let seen = (mtime(&self.cert_file), mtime(&self.key_file));
        let key = load_key(&self.cert_file, &self.key_file)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = seen;
        Ok(())
    }

    /// Reloads when either file changed since the last load. `Ok(true)` when it did.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = (mtime(&self.cert_file), mtime(&self.key_file));
        if *self.seen.lock().unwrap_or_else(|p| p.into_inner()) == now {
            return Ok(false);
        }
        self.reload().map(|()| true)
    }

    pub fn files(&self) -> (&Path, &Path) {
        (&self.cert_file, &self.key_file)
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

pub fn acceptor(resolver: Arc<CertResolver>) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
