//! The ACME conversation (RFC 8555) through `instant-acme`, over the reqwest client the
//! rest of the daemon already uses (rustls with ring; no second TLS stack). The account
//! key is created once and kept in `<stateDir>/acme/account.json` (0600).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    HttpClient, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};

use super::{cert_info, write_file, AcmeError, CertInfo, Paths};
use crate::config::AcmeSettings;
use crate::http::tls::CertResolver;

const RATE_LIMITED: &str = "urn:ietf:params:acme:error:rateLimited";
/// How long the CA may take to validate and to issue.
const POLL: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(250))
    .backoff(1.5)
    .timeout(Duration::from_secs(120));

/// `account.json`: the credentials, and the directory they belong to.
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// Sends instant-acme's requests with reqwest.
struct Http(reqwest::Client);

impl HttpClient for Http {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.0.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = match body.collect().await {
                Ok(c) => c.to_bytes(),
                Err(never) => match never {},
            };
            let rsp = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let mut head = http::Response::new(());
            *head.status_mut() = rsp.status();
            *head.headers_mut() = rsp.headers().clone();
            let bytes = rsp
                .bytes()
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let (parts, ()) = head.into_parts();
            Ok(BytesResponse {
                parts,
                body: Box::new(bytes),
            })
        })
    }
}

/// The error and its causes on one line (reqwest hides "connection refused" in them).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = c.source();
    }
    s
}

fn classify(e: instant_acme::Error, directory: &str) -> AcmeError {
    match e {
        instant_acme::Error::Api(p) if p.r#type.as_deref() == Some(RATE_LIMITED) => {
            AcmeError::RateLimited(p.to_string())
        }
        instant_acme::Error::Api(p) => AcmeError::Protocol(p.to_string()),
        e @ (instant_acme::Error::Other(_) | instant_acme::Error::Http(_)) => {
            AcmeError::Directory {
                url: directory.to_string(),
                detail: chain(&e),
            }
        }
        e => AcmeError::Protocol(chain(&e)),
    }
}

/// Errors while fetching the directory or the account: anything but a problem document
/// means the directory is not what it should be.
fn directory_error(e: instant_acme::Error, directory: &str) -> AcmeError {
    match classify(e, directory) {
        AcmeError::Protocol(detail) => AcmeError::Directory {
            url: directory.to_string(),
            detail,
        },
        other => other,
    }
}

/// A logged-in ACME account.
pub(crate) struct Client {
    account: Account,
    directory: String,
}

impl Client {
    /// Loads the stored account for this directory, or registers a new one.
    pub(crate) async fn new(settings: &AcmeSettings, paths: &Paths) -> Result<Self, AcmeError> {
        let directory = settings.directory_url.to_string();
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10));
        if let Some(ca) = &settings.directory_ca_file {
            let pem = std::fs::read(ca).map_err(|error| AcmeError::Io {
                path: ca.clone(),
                error,
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| AcmeError::Corrupt {
                path: ca.clone(),
                reason: format!("not a PEM CA certificate: {e}"),
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| AcmeError::Protocol(chain(&e)))?;
        let account_path = paths.account();
        let stored: Option<StoredAccount> = match std::fs::read(&account_path) {
            Ok(b) => match serde_json::from_slice::<StoredAccount>(&b) {
                Ok(s) if s.directory == directory => Some(s),
                Ok(_) => {
                    tracing::info!("the stored ACME account belongs to another directory; registering with {directory}");
                    None
                }
                Err(e) => {
                    tracing::warn!(
                        "{} is unreadable ({e}); registering a new ACME account",
                        account_path.display()
                    );
                    None
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => {
                return Err(AcmeError::Io {
                    path: account_path,
                    error,
                })
            }
        };
        let account = match stored {
            Some(s) => Account::builder_with_http(Box::new(Http(http)))
                .from_credentials(s.credentials)
                .await
                .map_err(|e| directory_error(e, &directory))?,
            None => {
                let contact = settings.email.as_ref().map(|e| format!("mailto:{e}"));
                let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
                let (account, credentials) = Account::builder_with_http(Box::new(Http(http)))
                    .create(
                        &NewAccount {
                            contact: &contacts,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        directory.clone(),
                        None,
                    )
                    .await
                    .map_err(|e| directory_error(e, &directory))?;
                let stored = StoredAccount {
                    directory: directory.clone(),
                    credentials,
                };
                let json = serde_json::to_vec_pretty(&stored)
                    .map_err(|e| AcmeError::Protocol(e.to_string()))?;
                write_file(&account_path, &json, 0o600)?;
                tracing::info!(account = %account.id(), "registered an ACME account with {directory}");
                account
            }
        };
        Ok(Self { account, directory })
    }

    /// One order: challenges, CSR, certificate; stores the result in `paths`.
    pub(crate) async fn obtain(
        &self,
        settings: &AcmeSettings,
        paths: &Paths,
        resolver: &CertResolver,
        http01: Option<&super::http01::Tokens>,
    ) -> Result<(CertifiedKey, CertInfo), AcmeError> {
        let ids: Vec<Identifier> = settings
            .domains
            .iter()
            .map(|d| Identifier::Dns(d.clone()))
            .collect();
        let mut order = self
            .account
            .new_order(&NewOrder::new(&ids))
            .await
            .map_err(|e| classify(e, &self.directory))?;
        tracing::info!(order = %order.url(), "ACME order placed for {}", settings.domains.join(", "));
        let kind = if http01.is_some() {
            ChallengeType::Http01
        } else {
            ChallengeType::TlsAlpn01
        };
        // Pending challenges, to withdraw whatever happens.
        let mut pending: Vec<(String, String)> = Vec::new();
        let result = async {
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz.map_err(|e| classify(e, &self.directory))?;
                if authz.status == AuthorizationStatus::Valid {
                    continue;
                }
                let domain = authz.identifier().to_string();
                let mut challenge = authz.challenge(kind.clone()).ok_or_else(|| {
                    AcmeError::Protocol(format!("the CA offers no {kind:?} challenge for {domain}"))
                })?;
                let key_auth = challenge.key_authorization();
                match http01 {
                    Some(tokens) => {
                        let token = challenge.token.clone();
                        tokens.insert(&token, key_auth.as_str());
                        pending.push((domain.clone(), token));
                    }
                    None => {
                        resolver.set_challenge(
                            &domain,
                            alpn_certificate(&domain, key_auth.digest().as_ref())?,
                        );
                        pending.push((domain.clone(), String::new()));
                    }
                }
                challenge
                    .set_ready()
                    .await
                    .map_err(|e| self.rejected(e, &domain, &kind, settings))?;
            }
            let status = order
                .poll_ready(&POLL)
                .await
                .map_err(|e| self.rejected(e, &settings.domains.join(", "), &kind, settings))?;
            if status != OrderStatus::Ready {
                return Err(self
                    .challenge_error(&mut order, kind.clone(), settings)
                    .await);
            }
            Ok(())
        }
        .await;
        for (domain, token) in &pending {
            match http01 {
                Some(tokens) => tokens.remove(token),
                None => resolver.clear_challenge(domain),
            }
        }
        result?;
        let key = rcgen::KeyPair::generate().map_err(|e| AcmeError::Protocol(e.to_string()))?;
        let mut params = rcgen::CertificateParams::new(settings.domains.clone())
            .map_err(|e| AcmeError::Protocol(e.to_string()))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params
            .serialize_request(&key)
            .map_err(|e| AcmeError::Protocol(e.to_string()))?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(|e| classify(e, &self.directory))?;
        let chain_pem = order
            .poll_certificate(&POLL)
            .await
            .map_err(|e| classify(e, &self.directory))?;
        let key_pem = key.serialize_pem();
        let (cert_path, key_path) = (paths.cert(), paths.key());
        let certified = crate::http::tls::certified_key(
            chain_pem.as_bytes(),
            key_pem.as_bytes(),
            "the issued certificate",
            "the generated key",
        )
        .map_err(|e| AcmeError::Protocol(e.to_string()))?;
        let info = cert_info(chain_pem.as_bytes(), &cert_path)?;
        // Key first: a crash between the two leaves a cert whose key does not match,
        // which is detected at start and replaced.
        write_file(&key_path, key_pem.as_bytes(), 0o600)?;
        write_file(&cert_path, chain_pem.as_bytes(), 0o644)?;
        Ok((certified, info))
    }

    /// An error while the CA validates: a problem document is a rejected challenge.
    fn rejected(
        &self,
        e: instant_acme::Error,
        domain: &str,
        kind: &ChallengeType,
        settings: &AcmeSettings,
    ) -> AcmeError {
        match e {
            instant_acme::Error::Api(p) if p.r#type.as_deref() != Some(RATE_LIMITED) => {
                AcmeError::Challenge {
                    domain: domain.to_string(),
                    detail: p.to_string(),
                    how: how(kind, settings),
                }
            }
            e => classify(e, &self.directory),
        }
    }

    /// Why an order became invalid, from its authorizations.
    async fn challenge_error(
        &self,
        order: &mut instant_acme::Order,
        kind: ChallengeType,
        settings: &AcmeSettings,
    ) -> AcmeError {
        let how = how(&kind, settings);
        let mut authorizations = order.authorizations();
        while let Some(Ok(authz)) = authorizations.next().await {
            if authz.status == AuthorizationStatus::Valid {
                continue;
            }
            let domain = authz.identifier().to_string();
            let detail = authz
                .challenges
                .iter()
                .find_map(|c| c.error.as_ref().map(ToString::to_string))
                .unwrap_or_else(|| format!("authorization {:?}", authz.status));
            return AcmeError::Challenge {
                domain,
                detail,
                how,
            };
        }
        AcmeError::Protocol("the order became invalid".into())
    }
}

/// What must hold for the challenge to pass, for error messages.
fn how(kind: &ChallengeType, settings: &AcmeSettings) -> String {
    match (kind, settings.http01_listen) {
        (ChallengeType::Http01, Some(l)) => format!("port 80 reaches the HTTP-01 listener {l}"),
        _ => "port 443 reaches this listener directly (TLS-ALPN-01 cannot pass a TLS-terminating proxy)".to_string(),
    }
}

/// The self-signed TLS-ALPN-01 certificate (RFC 8737): the domain as its only name and
/// the key authorization's SHA-256 in the critical acmeIdentifier extension.
pub(crate) fn alpn_certificate(domain: &str, digest: &[u8]) -> Result<CertifiedKey, AcmeError> {
    let err = |e: rcgen::Error| AcmeError::Protocol(format!("challenge certificate: {e}"));
    let key = rcgen::KeyPair::generate().map_err(err)?;
    let mut params = rcgen::CertificateParams::new(vec![domain.to_string()]).map_err(err)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(err)?;
    // Not through `certified_key`: its consistency check parses the certificate with
    // webpki, which refuses the critical acmeIdentifier extension.
    let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signing = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| AcmeError::Protocol(format!("challenge key: {e}")))?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signing))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(kind: &str) -> instant_acme::Error {
        let p: instant_acme::Problem = serde_json::from_value(serde_json::json!({
            "type": kind, "detail": "too many certificates already issued", "status": 429
        }))
        .unwrap();
        instant_acme::Error::Api(p)
    }

    #[test]
    fn errors_are_classified_for_the_operator() {
        let d = "https://ca.test/dir";
        let e = classify(problem(RATE_LIMITED), d);
        assert!(matches!(e, AcmeError::RateLimited(_)), "{e}");
        assert!(e.to_string().contains("too many certificates"), "{e}");
        let e = classify(problem("urn:ietf:params:acme:error:badNonce"), d);
        assert!(matches!(e, AcmeError::Protocol(_)), "{e}");
        let e = directory_error(instant_acme::Error::Str("no directory"), d);
        assert!(
            e.to_string().contains("ACME directory https://ca.test/dir"),
            "{e}"
        );
        let e = directory_error(problem(RATE_LIMITED), d);
        assert!(matches!(e, AcmeError::RateLimited(_)), "{e}");
    }

    #[test]
    fn challenge_certificates_carry_the_domain() {
        let key = alpn_certificate("sms.example.com", &[7; 32]).unwrap();
        let (_, cert) =
            x509_parser::parse_x509_certificate(key.end_entity_cert().unwrap()).unwrap();
        let acme_id = x509_parser::der_parser::oid!(1.3.6 .1 .5 .5 .7 .1 .31);
        let ext = cert.extensions().iter().find(|e| e.oid == acme_id).unwrap();
        assert!(ext.critical);
        assert!(ext.value.ends_with(&[7; 32]));
    }
}
