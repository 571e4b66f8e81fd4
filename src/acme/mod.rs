//! Automatic HTTPS (`gateway.tls.acme`): obtain a certificate from an ACME CA (Let's
//! Encrypt by default), keep it and the account key in `<stateDir>/acme/`, and renew it
//! in the background when a third of its lifetime is left.
//!
//! The decisions (is renewal due, how long to back off, is the cached certificate
//! usable) are pure functions with table tests; [`client`] talks to the CA and
//! [`http01`] answers HTTP-01 challenges. TLS-ALPN-01 is answered by the HTTPS
//! listener's own resolver ([`crate::http::tls::CertResolver`]).

pub(crate) mod client;
pub(crate) mod http01;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::sign::CertifiedKey;

use crate::config::AcmeSettings;
use crate::http::tls::CertResolver;
use crate::shutdown::Shutdown;

/// Retry delay after the first failure; doubles per failure up to [`BACKOFF_MAX`].
pub const BACKOFF_BASE: Duration = Duration::from_secs(30);
pub const BACKOFF_MAX: Duration = Duration::from_secs(6 * 3600);
/// After the CA says "rate limited", wait at least this long.
pub const RATE_LIMIT_BACKOFF: Duration = Duration::from_secs(3600);
/// Longest single sleep, so a suspended machine or a clock jump is noticed.
const MAX_SLEEP: Duration = Duration::from_secs(3600);
/// Least time between two orders, should a CA issue certificates due at once.
const MIN_ORDER_GAP: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("cannot read or write {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path} is not a usable certificate: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("the ACME directory {url} is unreachable or failed: {detail}; check the network, DNS and gateway.tls.acme.directoryUrl")]
    Directory { url: String, detail: String },
    #[error("the CA is rate limiting us: {0}; retrying later")]
    RateLimited(String),
    #[error("the CA rejected the challenge for {domain}: {detail}; check that {domain} resolves to this host and that {how}")]
    Challenge {
        domain: String,
        detail: String,
        how: String,
    },
    #[error("ACME: {0}")]
    Protocol(String),
}

impl AcmeError {
    /// How long to wait before trying again after `failures` consecutive failures.
    pub fn retry_after(&self, failures: u32) -> Duration {
        let b = backoff(failures);
        match self {
            AcmeError::RateLimited(_) => b.max(RATE_LIMIT_BACKOFF),
            _ => b,
        }
    }
}

/// What the status command and the log say about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub domains: Vec<String>,
    pub issuer: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

impl CertInfo {
    pub fn days_left(&self, now: i64) -> i64 {
        (self.not_after - now).div_euclid(86_400)
    }

    pub fn json(&self, now: i64) -> serde_json::Value {
        serde_json::json!({
            "domains": self.domains,
            "issuer": self.issuer,
            "notBefore": rfc3339(self.not_before),
            "notAfter": rfc3339(self.not_after),
            "expiresInSeconds": self.not_after - now,
            "renewAt": rfc3339(renew_at(self.not_before, self.not_after)),
        })
    }
}

pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

pub use crate::clock::now_unix;

/// When renewal is due: a third of the lifetime before expiry (day 60 of 90).
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    not_after - (not_after - not_before).max(0) / 3
}

pub fn renewal_due(not_before: i64, not_after: i64, now: i64) -> bool {
    now >= renew_at(not_before, not_after)
}

/// Exponential backoff: [`BACKOFF_BASE`] after the first failure, doubling, capped.
pub fn backoff(failures: u32) -> Duration {
    const SCHEDULE: crate::backoff::Backoff = crate::backoff::Backoff {
        first: BACKOFF_BASE,
        factor: 2,
        cap: BACKOFF_MAX,
        jitter: crate::backoff::Jitter::None,
        retry_after: crate::backoff::RetryAfter::Ignore,
    };
    SCHEDULE.delay(failures)
}

/// Whether a cached certificate can be served for the configured domains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheVerdict {
    /// Serve it; renew when due.
    Use,
    /// Names changed: obtain a new one, serving this one meanwhile if still valid.
    DomainsChanged,
    /// Expired: obtain a new one, serve nothing meanwhile.
    Expired,
}

pub fn judge_cached(info: &CertInfo, wanted: &[String], now: i64) -> CacheVerdict {
    if now >= info.not_after {
        return CacheVerdict::Expired;
    }
    let mut have: Vec<String> = info
        .domains
        .iter()
        .map(|d| d.to_ascii_lowercase())
        .collect();
    let mut want: Vec<String> = wanted.iter().map(|d| d.to_ascii_lowercase()).collect();
    have.sort();
    have.dedup();
    want.sort();
    want.dedup();
    if have == want {
        CacheVerdict::Use
    } else {
        CacheVerdict::DomainsChanged
    }
}

/// Files under `<stateDir>/acme/`.
#[derive(Debug, Clone)]
pub struct Paths {
    pub dir: PathBuf,
}

impl Paths {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join("acme"),
        }
    }
    pub fn account(&self) -> PathBuf {
        self.dir.join("account.json")
    }
    pub fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AcmeError + '_ {
    move |error| AcmeError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Writes `data` to `path` atomically (temporary file, fsync, rename) with `mode`.
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), AcmeError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(data).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Reads the leaf of a PEM chain.
pub fn cert_info(pem: &[u8], path: &Path) -> Result<CertInfo, AcmeError> {
    let corrupt = |reason: String| AcmeError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let der = rustls_pemfile::certs(&mut &*pem)
        .next()
        .ok_or_else(|| corrupt("no PEM certificate in it".into()))?
        .map_err(|e| corrupt(format!("bad PEM: {e}")))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| corrupt(format!("bad X.509: {e}")))?;
    let mut domains = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = name {
                domains.push(d.to_string());
            }
        }
    }
    let issuer = cert
        .issuer()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map_or_else(|| cert.issuer().to_string(), str::to_string);
    Ok(CertInfo {
        domains,
        issuer,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// The certificate stored in `paths`, if any: its key for serving and what it says.
pub fn load_stored(paths: &Paths) -> Result<Option<(CertifiedKey, CertInfo)>, AcmeError> {
    let (cert_path, key_path) = (paths.cert(), paths.key());
    let cert_pem = match std::fs::read(&cert_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&cert_path)(e)),
    };
    let key_pem = match std::fs::read(&key_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(AcmeError::Corrupt {
                path: key_path,
                reason: "missing while cert.pem exists".into(),
            })
        }
        Err(e) => return Err(io_err(&key_path)(e)),
    };
    let info = cert_info(&cert_pem, &cert_path)?;
    let key = crate::http::tls::certified_key(
        &cert_pem,
        &key_pem,
        &cert_path.display().to_string(),
        &key_path.display().to_string(),
    )
    .map_err(|e| AcmeError::Corrupt {
        path: cert_path.clone(),
        reason: e.to_string(),
    })?;
    Ok(Some((key, info)))
}

/// Keeps the certificate current: obtains one when there is none (or it no longer
/// fits the config), renews when due, backs off on failure. Never returns an error:
/// failures are logged and retried while the old certificate (if any) is served.
pub async fn run(
    settings: AcmeSettings,
    paths: Paths,
    resolver: Arc<CertResolver>,
    http01: Option<http01::Tokens>,
    mut current: Option<CertInfo>,
    mut stop: Shutdown,
) {
    let mut failures: u32 = 0;
    let mut wait = Duration::ZERO;
    let mut client: Option<client::Client> = None;
    loop {
        if !wait.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(wait.min(MAX_SLEEP)) => {}
                () = stop.wait() => return,
            }
        }
        let now = now_unix();
        if failures == 0 {
            if let Some(info) = &current {
                if judge_cached(info, &settings.domains, now) == CacheVerdict::Use
                    && !renewal_due(info.not_before, info.not_after, now)
                {
                    if wait.is_zero() {
                        // Once, at start: says the stored certificate was judged and kept
                        // (the hourly re-checks after it stay quiet).
                        tracing::info!(
                            domains = %settings.domains.join(","),
                            "the certificate is current: renewal from {}",
                            rfc3339(renew_at(info.not_before, info.not_after))
                        );
                    }
                    let until = renew_at(info.not_before, info.not_after) - now;
                    wait = Duration::from_secs(until.max(1) as u64);
                    continue;
                }
            }
        }
        match &current {
            Some(info) => tracing::info!(
                domains = %settings.domains.join(","),
                "renewing the certificate: {} days left (expires {})",
                info.days_left(now),
                rfc3339(info.not_after)
            ),
            None => {
                tracing::info!(domains = %settings.domains.join(","), directory = %settings.directory_url, "obtaining a certificate")
            }
        }
        let attempt = async {
            if client.is_none() {
                client = Some(client::Client::new(&settings, &paths).await?);
            }
            match &client {
                Some(c) => {
                    c.obtain(&settings, &paths, &resolver, http01.as_ref())
                        .await
                }
                None => Err(AcmeError::Protocol("no ACME client".into())),
            }
        };
        let result = tokio::select! {
            r = attempt => r,
            () = stop.wait() => return,
        };
        match result {
            Ok((key, info)) => {
                resolver.set(key);
                let now = now_unix();
                tracing::info!(
                    domains = %info.domains.join(","),
                    issuer = %info.issuer,
                    "certificate obtained and now served: {} days left (expires {}), renewal from {}",
                    info.days_left(now),
                    rfc3339(info.not_after),
                    rfc3339(renew_at(info.not_before, info.not_after))
                );
                current = Some(info);
                failures = 0;
                wait = MIN_ORDER_GAP;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                wait = e.retry_after(failures);
                // A failed directory may come back with other URLs: start afresh.
                if matches!(e, AcmeError::Directory { .. }) {
                    client = None;
                }
                let now = now_unix();
                let serving = match &current {
                    Some(info) if now < info.not_after && resolver.has_certificate() => format!(
                        "still serving the current certificate ({} days left)",
                        info.days_left(now)
                    ),
                    _ => "HTTPS is not ready: no certificate to serve".to_string(),
                };
                tracing::error!(
                    failures,
                    "obtaining a certificate failed: {e}; {serving}; retrying in {}s",
                    wait.as_secs()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    #[test]
    fn renewal_is_due_with_a_third_of_the_lifetime_left() {
        // (not_before, not_after, now, due)
        let cases = [
            (0, 90 * DAY, 0, false),
            (0, 90 * DAY, 59 * DAY, false),
            (0, 90 * DAY, 60 * DAY - 1, false),
            (0, 90 * DAY, 60 * DAY, true),
            (0, 90 * DAY, 89 * DAY, true),
            (0, 90 * DAY, 91 * DAY, true),
            (0, 30, 19, false),
            (0, 30, 20, true),
            // A nonsensical certificate (ends before it starts) is due at once.
            (100, 50, 49, false),
            (100, 50, 50, true),
        ];
        for (nb, na, now, due) in cases {
            assert_eq!(renewal_due(nb, na, now), due, "{nb} {na} {now}");
        }
        assert_eq!(renew_at(0, 90 * DAY), 60 * DAY);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let cases = [
            (0, 30),
            (1, 30),
            (2, 60),
            (3, 120),
            (4, 240),
            (10, 15_360),
            (11, 6 * 3600),
            (u32::MAX, 6 * 3600),
        ];
        for (failures, secs) in cases {
            assert_eq!(backoff(failures), Duration::from_secs(secs), "{failures}");
        }
        let limited = AcmeError::RateLimited("too many".into());
        assert_eq!(limited.retry_after(1), RATE_LIMIT_BACKOFF);
        assert_eq!(limited.retry_after(30), BACKOFF_MAX);
    }

    #[test]
    fn cached_certificates_are_judged() {
        let info = |domains: &[&str], not_after| CertInfo {
            domains: domains.iter().map(|d| d.to_string()).collect(),
            issuer: "x".into(),
            not_before: 0,
            not_after,
        };
        let want = vec!["a.example.com".to_string(), "b.example.com".to_string()];
        let cases = [
            (
                info(&["a.example.com", "b.example.com"], 100),
                50,
                CacheVerdict::Use,
            ),
            (
                info(&["B.example.com", "a.example.com"], 100),
                50,
                CacheVerdict::Use,
            ),
            (
                info(&["a.example.com"], 100),
                50,
                CacheVerdict::DomainsChanged,
            ),
            (
                info(&["a.example.com", "b.example.com", "c.example.com"], 100),
                50,
                CacheVerdict::DomainsChanged,
            ),
            (
                info(&["a.example.com", "b.example.com"], 100),
                100,
                CacheVerdict::Expired,
            ),
        ];
        for (i, (c, now, verdict)) in cases.into_iter().enumerate() {
            assert_eq!(judge_cached(&c, &want, now), verdict, "case {i}");
        }
    }

    #[test]
    fn corrupt_and_missing_files_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        assert!(load_stored(&paths).unwrap().is_none());
        write_file(&paths.cert(), b"garbage", 0o644).unwrap();
        write_file(&paths.key(), b"garbage", 0o600).unwrap();
        let err = load_stored(&paths).unwrap_err();
        assert!(matches!(err, AcmeError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("cert.pem"), "{err}");
    }

    #[test]
    fn stored_certificates_load_with_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["sms.example.com".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        write_file(&paths.cert(), cert.pem().as_bytes(), 0o644).unwrap();
        write_file(&paths.key(), key.serialize_pem().as_bytes(), 0o600).unwrap();
        let (_, info) = load_stored(&paths).unwrap().unwrap();
        assert_eq!(info.domains, vec!["sms.example.com"]);
        assert!(info.not_after > info.not_before);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(paths.key()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
