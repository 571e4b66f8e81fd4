//! Automatic HTTPS against Pebble, Let's Encrypt's ACME test server: issuance over
//! TLS-ALPN-01 and HTTP-01, reuse across restarts, renewal of short-lived
//! certificates, a corrupt stored certificate, a rejected challenge and an unreachable
//! directory. Pebble resolves every name to 127.0.0.1 through pebble-challtestsrv.
//!
//! Skipped (with a message) when `pebble` is not installed, unless `CI` is set.

use crate::common;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;

const DOMAIN: &str = "sms.example.com";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Whether Pebble can run here; without it the test is skipped, or fails under CI.
/// The ACME tests are `#[ignore]`d (they need Pebble); run with `--include-ignored`,
/// as scripts/test does. Without Pebble they fail: nothing reports "ok" unrun.
fn require_pebble() {
    assert!(
        have("pebble") && have("pebble-challtestsrv"),
        "pebble is not installed (apt-get install -y pebble)"
    );
}

struct Pebble {
    children: Vec<Child>,
    directory: String,
    /// The CA of Pebble's own HTTPS (directory and management).
    ca_file: PathBuf,
    management: u16,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Pebble {
    fn stop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Pebble validating TLS-ALPN-01 on `tls_port` and HTTP-01 on `http_port`;
    /// `validity` in seconds for short-lived certificates.
    fn start(dir: &Path, tls_port: u16, http_port: u16, validity: Option<u64>) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "pebble listener test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let ca_file = dir.join("pebble-ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        std::fs::write(dir.join("pebble-cert.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.join("pebble-key.pem"), key.serialize_pem()).unwrap();
        let (listen, management, dns, chall_mgmt) =
            (free_port(), free_port(), free_port(), free_port());
        let mut config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.join("pebble-cert.pem"),
            "privateKey": dir.join("pebble-key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        if let Some(v) = validity {
            config["pebble"]["certificateValidityPeriod"] = v.into();
        }
        let config_file = dir.join("pebble.json");
        std::fs::write(&config_file, config.to_string()).unwrap();
        let log = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
        let dns_server = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{chall_mgmt}")])
            .stdout(log("challtestsrv.log"))
            .stderr(log("challtestsrv.err"))
            .spawn()
            .unwrap();
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(&config_file)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .unwrap();
        let p = Pebble {
            children: vec![dns_server, pebble],
            directory: format!("https://127.0.0.1:{listen}/dir"),
            ca_file,
            management,
        };
        let ready = wait_until(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", listen)).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", management)).is_ok()
        });
        assert!(
            ready,
            "pebble did not start: {}",
            std::fs::read_to_string(dir.join("pebble.log")).unwrap_or_default()
        );
        p
    }

    /// Pebble's issuing root, which clients of the gateway must trust.
    async fn root(&self) -> String {
        let ca = std::fs::read(&self.ca_file).unwrap();
        let c = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .build()
            .unwrap();
        get_text(&c, format!("https://127.0.0.1:{}/roots/0", self.management)).await
    }
}

fn acme_config(t: &TestDir, port: u16, acme: &str) -> PathBuf {
    t.write_config(&format!(
        r#"{{ gateway: {{ listen: "127.0.0.1:{port}", stateDir: "{state}", metricsListen: "127.0.0.1:0",
             tls: {{ acme: {{ domains: ["{DOMAIN}"], email: "ops@example.com", {acme} }} }} }},
           channels: {{ sms: {{ accountSid: "{SID}", authToken: "{TOKEN}", fromNumber: "{FROM}", publicWebhookUrl: "{PUBLIC}" }} }} }}"#,
        state = t.state().display(),
    ))
}

/// A client that trusts only `root` and checks the name `DOMAIN`.
fn client_trusting(root: &str, addr: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(root.as_bytes()).unwrap())
        .resolve(DOMAIN, addr)
        .build()
        .unwrap()
}

async fn healthz(root: &str, gw: &Gateway) -> Result<u16, reqwest::Error> {
    client_trusting(root, gw.addr)
        .get(format!("https://{DOMAIN}:{}/healthz", gw.addr.port()))
        .send()
        .await
        .map(|r| r.status().as_u16())
}

/// The leaf certificate the gateway serves for `DOMAIN` (DER), without verification.
async fn served_leaf(addr: SocketAddr) -> Vec<u8> {
    #[derive(Debug)]
    struct AnyCert(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(DOMAIN).unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// A gateway whose certificate Pebble has just issued (validity in seconds, or
/// Pebble's default), with its temp dir and config.
fn served_by_pebble(validity: Option<u64>) -> (TestDir, Pebble, PathBuf, Gateway) {
    let t = TestDir::new();
    let port = free_port();
    let pebble = Pebble::start(t.path(), port, free_port(), validity);
    let config = acme_config(
        &t,
        port,
        &format!(
            r#"directoryUrl: "{}", directoryCaFile: "{}""#,
            pebble.directory,
            pebble.ca_file.display()
        ),
    );
    let gw = Gateway::start(&config);
    gw.assert_log_soon(
        "certificate obtained and now served",
        Duration::from_secs(60),
    );
    (t, pebble, config, gw)
}

fn metrics_url(gw: &Gateway) -> String {
    let log = gw.log();
    let rest = log.split("metrics on ").nth(1).unwrap();
    rest.split_whitespace().next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs pebble (apt-get install pebble); scripts/test runs it with --include-ignored"]
async fn tls_alpn_issues_then_restarts_reuse_and_corrupt_files_are_replaced() {
    require_pebble();
    let (t, pebble, config, gw) = served_by_pebble(None);
    gw.assert_log_has("HTTPS is not ready yet");
    let root = pebble.root().await;
    assert_eq!(healthz(&root, &gw).await.unwrap(), 200);

    // Stored in <stateDir>/acme/, the account key private.
    use std::os::unix::fs::PermissionsExt;
    let acme_dir = t.state().join("acme");
    for (file, mode) in [("account.json", 0o600), ("key.pem", 0o600)] {
        let m = std::fs::metadata(acme_dir.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(m & 0o777, mode, "{file}");
    }

    // The expiry gauge.
    let metrics = reqwest::get(metrics_url(&gw))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let expiry: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("smsgate_tls_certificate_expiry_seconds "))
        .unwrap_or_else(|| panic!("{metrics}"))
        .parse()
        .unwrap();
    assert!(expiry > smsgate::acme::now_unix() + 86_400, "{metrics}");

    // channels status, text and JSON.
    let out = cli(&config, &["channels", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let cert = &status["tls"]["certificate"];
    assert_eq!(status["tls"]["source"], "acme", "{status}");
    assert_eq!(cert["domains"], serde_json::json!([DOMAIN]), "{status}");
    assert!(
        cert["issuer"].as_str().unwrap().contains("Pebble"),
        "{status}"
    );
    assert!(cert["notAfter"].as_str().is_some(), "{status}");
    let text = stdout(&cli(&config, &["channels", "status"]));
    assert!(
        text.contains(&format!("certificate for {DOMAIN}, issuer Pebble")),
        "{text}"
    );

    // A restart reuses the stored certificate: no new order.
    assert_eq!(gw.stop().code(), Some(0));
    let gw = Gateway::start(&config);
    gw.assert_log_soon("serving the stored certificate", Duration::from_secs(10));
    assert_eq!(healthz(&root, &gw).await.unwrap(), 200);
    // The renewal task's decision, not a sleep: it logs that the certificate is current
    // (and would have logged an order before that line if it placed one).
    gw.assert_log_soon("the certificate is current", Duration::from_secs(10));
    assert!(!gw.log().contains("ACME order placed"), "{}", gw.log());
    assert!(
        !gw.log().contains("registered an ACME account"),
        "{}",
        gw.log()
    );
    assert_eq!(gw.stop().code(), Some(0));

    // A corrupt stored certificate is reported and replaced.
    std::fs::write(
        acme_dir.join("cert.pem"),
        "-----BEGIN CERTIFICATE-----\ngarbage\n",
    )
    .unwrap();
    let gw = Gateway::start(&config);
    gw.assert_log_soon(
        "certificate obtained and now served",
        Duration::from_secs(60),
    );
    gw.assert_log_has("is not a usable certificate");
    assert!(
        !gw.log().contains("registered an ACME account"),
        "the account is reused: {}",
        gw.log()
    );
    let stored = std::fs::read(acme_dir.join("cert.pem")).unwrap();
    smsgate::acme::cert_info(&stored, &acme_dir.join("cert.pem")).unwrap();
    assert_eq!(healthz(&root, &gw).await.unwrap(), 200);
    assert_eq!(gw.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs pebble (apt-get install pebble); scripts/test runs it with --include-ignored"]
async fn short_lived_certificates_are_renewed_and_swapped_in() {
    require_pebble();
    let (_t, pebble, _config, gw) = served_by_pebble(Some(24));
    let root = pebble.root().await;
    let first = served_leaf(gw.addr).await;
    // A connection kept alive across the renewal.
    let kept = client_trusting(&root, gw.addr);
    let url = format!("https://{DOMAIN}:{}/healthz", gw.addr.port());
    assert_eq!(kept.get(&url).send().await.unwrap().status().as_u16(), 200);
    assert!(
        wait_until(Duration::from_secs(40), || gw
            .log()
            .matches("certificate obtained and now served")
            .count()
            >= 2),
        "{}",
        gw.log()
    );
    gw.assert_log_has("renewing the certificate: 0 days left");
    let second = served_leaf(gw.addr).await;
    assert_ne!(first, second, "the renewed certificate is served");
    assert_eq!(healthz(&root, &gw).await.unwrap(), 200);
    assert_eq!(kept.get(&url).send().await.unwrap().status().as_u16(), 200);
    assert_eq!(gw.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs pebble (apt-get install pebble); scripts/test runs it with --include-ignored"]
async fn a_failed_renewal_keeps_serving_the_old_certificate() {
    require_pebble();
    let (_t, mut pebble, _config, mut gw) = served_by_pebble(Some(45));
    let root = pebble.root().await;
    // The CA goes away before renewal is due (after 30 of 45 seconds).
    pebble.stop();
    gw.assert_log_soon(
        "still serving the current certificate",
        Duration::from_secs(45),
    );
    gw.assert_log_has("is unreachable or failed");
    assert_eq!(healthz(&root, &gw).await.unwrap(), 200);
    assert!(
        gw.child.try_wait().unwrap().is_none(),
        "the daemon keeps running"
    );
    assert_eq!(gw.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs pebble (apt-get install pebble); scripts/test runs it with --include-ignored"]
async fn http01_issues_on_its_own_listener() {
    require_pebble();
    let t = TestDir::new();
    let (port, http_port) = (free_port(), free_port());
    let pebble = Pebble::start(t.path(), free_port(), http_port, None);
    let config = acme_config(
        &t,
        port,
        &format!(
            r#"directoryUrl: "{}", directoryCaFile: "{}", http01Listen: "127.0.0.1:{http_port}""#,
            pebble.directory,
            pebble.ca_file.display()
        ),
    );
    let gw = Gateway::start(&config);
    gw.assert_log_soon(
        "certificate obtained and now served",
        Duration::from_secs(60),
    );
    gw.assert_log_has("answering HTTP-01 challenges");
    let root = pebble.root().await;
    assert_eq!(healthz(&root, &gw).await.unwrap(), 200);
    // Anything but a pending token is a 404.
    let rsp = reqwest::get(format!(
        "http://127.0.0.1:{http_port}/.well-known/acme-challenge/nope"
    ))
    .await
    .unwrap();
    assert_eq!(rsp.status().as_u16(), 404);
    assert_eq!(gw.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs pebble (apt-get install pebble); scripts/test runs it with --include-ignored"]
async fn a_rejected_challenge_is_explained_and_retried() {
    require_pebble();
    let t = TestDir::new();
    // Pebble validates on a port nobody listens on.
    let pebble = Pebble::start(t.path(), free_port(), free_port(), None);
    let config = acme_config(
        &t,
        free_port(),
        &format!(
            r#"directoryUrl: "{}", directoryCaFile: "{}""#,
            pebble.directory,
            pebble.ca_file.display()
        ),
    );
    let mut gw = Gateway::start(&config);
    gw.assert_log_soon(
        "the CA rejected the challenge for sms.example.com",
        Duration::from_secs(60),
    );
    let log = gw.log();
    assert!(
        log.contains("HTTPS is not ready: no certificate to serve; retrying in 30s"),
        "{log}"
    );
    assert!(log.contains("port 443 reaches this listener"), "{log}");
    assert!(
        gw.child.try_wait().unwrap().is_none(),
        "the daemon keeps running"
    );
    assert_eq!(gw.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_directory_is_a_clear_error_not_a_crash() {
    // No Pebble needed: nothing listens on the directory's port.
    let t = TestDir::new();
    let closed = free_port();
    let config = acme_config(
        &t,
        free_port(),
        &format!(r#"directoryUrl: "https://127.0.0.1:{closed}/dir""#),
    );
    let mut gw = Gateway::start(&config);
    gw.assert_log_soon("is unreachable or failed", Duration::from_secs(30));
    let log = gw.log();
    assert!(
        log.contains(&format!("https://127.0.0.1:{closed}/dir")),
        "{log}"
    );
    assert!(
        log.to_lowercase().contains("connection refused") || log.contains("connect"),
        "{log}"
    );
    assert!(log.contains("retrying in 30s"), "{log}");
    assert!(
        gw.child.try_wait().unwrap().is_none(),
        "the daemon keeps running"
    );
    // Plain webhook handling is unaffected; HTTPS handshakes fail cleanly.
    let status = stdout(&cli(&config, &["channels", "status", "--json"]));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(
        status["tls"]["certificate"]["error"]
            .as_str()
            .unwrap()
            .contains("not obtained yet"),
        "{status}"
    );
    assert_eq!(gw.stop().code(), Some(0));
}
