//! `gateway.tls.acme`: automatic certificates.

use std::path::PathBuf;

use url::Url;

use super::super::raw::RawAcme;
use super::super::{AcmeSettings, LETSENCRYPT_PRODUCTION, LETSENCRYPT_STAGING};
use super::errors::{parse_listen, take, Problems};

/// `gateway.tls.acme`.
pub(super) fn acme(a: &RawAcme, p: &mut Problems) -> Option<AcmeSettings> {
    const P: &str = "gateway.tls.acme";
    let mut ok = true;
    let mut domains = Vec::new();
    match take(
        &a.domains,
        &format!("{P}.domains"),
        "a list of domain names",
        p,
    ) {
        None => {
            p.add(
                format!("{P}.domains"),
                "missing; list the names the certificate is for, e.g. [\"sms.example.com\"]",
            );
            ok = false;
        }
        Some(list) if list.is_empty() => {
            p.add(
                format!("{P}.domains"),
                "is empty; list the names the certificate is for, e.g. [\"sms.example.com\"]",
            );
            ok = false;
        }
        Some(list) => {
            for (i, d) in list.iter().enumerate() {
                let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
                if is_domain_name(&d) {
                    if !domains.contains(&d) {
                        domains.push(d);
                    }
                } else {
                    p.add(format!("{P}.domains[{i}]"), format!("{d:?} is not a domain name; use a fully qualified name such as \"sms.example.com\" (no wildcards, IP addresses, ports or URLs)"));
                    ok = false;
                }
            }
        }
    }
    let email = take(&a.email, &format!("{P}.email"), "an email address", p).cloned();
    if let Some(e) = &email {
        if !e.contains('@') || e.contains(char::is_whitespace) || e.starts_with("mailto:") {
            p.add(format!("{P}.email"), format!("{e:?} is not an email address; write e.g. \"you@example.com\" (the CA sends expiry warnings there)"));
            ok = false;
        }
    }
    let staging = take(&a.staging, &format!("{P}.staging"), "true or false", p).copied();
    let directory_url = match take(&a.directory_url, &format!("{P}.directoryUrl"), "a URL", p) {
        Some(u) => {
            if staging == Some(true) {
                p.add(
                    format!("{P}.staging"),
                    "cannot be combined with directoryUrl: remove one of them",
                );
                ok = false;
            }
            match Url::parse(u) {
                Ok(url) if url.scheme() == "https" => Some(url),
                _ => {
                    p.add(format!("{P}.directoryUrl"), format!("{u:?} is not an https:// URL; use the ACME directory URL, e.g. {LETSENCRYPT_STAGING:?}, or remove it for Let's Encrypt"));
                    ok = false;
                    None
                }
            }
        }
        None => Url::parse(if staging == Some(true) {
            LETSENCRYPT_STAGING
        } else {
            LETSENCRYPT_PRODUCTION
        })
        .ok(),
    };
    let http01_listen = match take(
        &a.http01_listen,
        &format!("{P}.http01Listen"),
        "a host:port string",
        p,
    ) {
        None => None,
        Some(s) => match parse_listen(s) {
            Some(addr) => Some(addr),
            None => {
                p.add(
                    format!("{P}.http01Listen"),
                    format!("{s:?} is not a host:port address; use e.g. \"0.0.0.0:80\""),
                );
                ok = false;
                None
            }
        },
    };
    let directory_ca_file = take(
        &a.directory_ca_file,
        &format!("{P}.directoryCaFile"),
        "a file path",
        p,
    )
    .map(PathBuf::from);
    if let Some(f) = &directory_ca_file {
        if let Err(e) = std::fs::metadata(f) {
            p.add(format!("{P}.directoryCaFile"), format!("cannot read {f:?}: {e}; point it at the PEM CA certificate of a test ACME server, or remove it"));
            ok = false;
        }
    }
    if !ok {
        return None;
    }
    Some(AcmeSettings {
        domains,
        email,
        directory_url: directory_url?,
        http01_listen,
        directory_ca_file,
    })
}

/// A DNS name a CA can issue for: dot-separated LDH labels, at least two.
fn is_domain_name(d: &str) -> bool {
    let labels: Vec<&str> = d.split('.').collect();
    d.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && !labels.iter().all(|l| l.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod acme_tests {
    use super::super::{validate_value, Env};
    use super::*;
    use crate::config::Problem;
    use serde_json::json;
    use serde_json::Value;
    use std::net::SocketAddr;

    fn check(tls: Value) -> Result<Option<AcmeSettings>, Vec<Problem>> {
        // No SMS account: only the gateway is under test.
        let config = json!({ "gateway": { "stateDir": "/var/lib/smsgate", "tls": tls },
            "channels": { "sms": { "enabled": false } } });
        validate_value(&config, &Env::default())
            .map(|c| c.gateway.acme)
            .map_err(|e| e.0)
    }

    fn paths(r: Result<Option<AcmeSettings>, Vec<Problem>>) -> Vec<String> {
        r.unwrap_err().into_iter().map(|p| p.path).collect()
    }

    #[test]
    fn acme_defaults_to_lets_encrypt_production() {
        let a =
            check(json!({"acme": {"domains": ["SMS.example.com."], "email": "you@example.com"}}))
                .unwrap()
                .unwrap();
        assert_eq!(a.domains, vec!["sms.example.com"]);
        assert_eq!(a.directory_url.as_str(), LETSENCRYPT_PRODUCTION);
        assert_eq!(a.email.as_deref(), Some("you@example.com"));
        assert_eq!(a.http01_listen, None);
        let a = check(json!({"acme": {"domains": ["a.example.com"], "staging": true, "http01Listen": "0.0.0.0:80"}}))
            .unwrap()
            .unwrap();
        assert_eq!(a.directory_url.as_str(), LETSENCRYPT_STAGING);
        assert_eq!(a.http01_listen, Some(SocketAddr::from(([0, 0, 0, 0], 80))));
    }

    #[test]
    fn bad_acme_settings_name_their_keys() {
        let cases: Vec<(Value, Vec<&str>)> = vec![
            (json!({"acme": {}}), vec!["gateway.tls.acme.domains"]),
            (
                json!({"acme": {"domains": []}}),
                vec!["gateway.tls.acme.domains"],
            ),
            (
                json!({"acme": {"domains": ["*.example.com", "1.2.3.4", "ok.example.com"]}}),
                vec!["gateway.tls.acme.domains[0]", "gateway.tls.acme.domains[1]"],
            ),
            (
                json!({"acme": {"domains": ["a.example.com"], "email": "nope"}}),
                vec!["gateway.tls.acme.email"],
            ),
            (
                json!({"acme": {"domains": ["a.example.com"], "directoryUrl": "http://ca.test/dir"}}),
                vec!["gateway.tls.acme.directoryUrl"],
            ),
            (
                json!({"acme": {"domains": ["a.example.com"], "directoryUrl": "https://ca.test/dir", "staging": true}}),
                vec!["gateway.tls.acme.staging"],
            ),
            (
                json!({"acme": {"domains": ["a.example.com"], "http01Listen": "port 80"}}),
                vec!["gateway.tls.acme.http01Listen"],
            ),
            (
                json!({"acme": {"domains": ["a.example.com"], "directoryCaFile": "/nonexistent/ca.pem"}}),
                vec!["gateway.tls.acme.directoryCaFile"],
            ),
            (
                json!({"acme": {"domains": ["a.example.com"]}, "certFile": "/etc/ssl/c.pem", "keyFile": "/etc/ssl/k.pem"}),
                vec!["gateway.tls.acme"],
            ),
        ];
        for (tls, want) in cases {
            assert_eq!(paths(check(tls.clone())), want, "{tls}");
        }
        let both = check(json!({"acme": {"domains": ["a.example.com"]}, "certFile": "/c.pem"}))
            .unwrap_err();
        assert!(
            both[0].message.contains("remove certFile and keyFile"),
            "{both:?}"
        );
    }
}
