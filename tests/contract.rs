//! Our Messages API requests against Twilio's own OpenAPI spec, served by Stoplight
//! Prism (which rejects requests that do not match the schema with 422).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use smsgate::config::Sender;
use smsgate::phone::E164;
use smsgate::secret::Secret;
use smsgate::twilio::{Creds, HttpTwilio, MessagesApi, SendError, SendRequest};

struct Prism(Child);

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_prism(spec: &str) -> Option<(Prism, u16)> {
    let prism = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/.tools/node/node_modules/.bin/prism"
    );
    assert!(
        std::path::Path::new(prism).exists(),
        "Prism is not installed: run scripts/install-test-tools"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spec = format!("{}/tests/contract/{spec}", env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(prism)
        .args(["mock", "-h", "127.0.0.1", "-p", &port.to_string(), &spec])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains("Prism is listening") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("Prism did not start");
    Some((Prism(child), port))
}

fn request(port: u16, sender: Sender, media: Vec<String>, callback: Option<String>) -> SendRequest {
    SendRequest {
        creds: Creds {
            api_base_url: format!("http://127.0.0.1:{port}").parse().unwrap(),
            messaging_api_base_url: format!("http://127.0.0.1:{port}").parse().unwrap(),
            account_sid: common::SID.to_string(),
            auth_token: Secret::new("token"),
        },
        to: E164::parse("+15557654321").unwrap(),
        sender,
        body: "Hello from smsgate ✓".into(),
        media_urls: media,
        status_callback: callback,
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Prism (scripts/install-test-tools); scripts/test runs it with --include-ignored"]
async fn messages_create_requests_match_twilios_spec() {
    let Some((_prism, port)) = start_prism("twilio_api_v2010.trimmed.json") else {
        return;
    };
    let client = HttpTwilio::new().unwrap();
    let number = Sender::Number(E164::parse(common::FROM).unwrap());
    let service = Sender::MessagingService("MG0123456789abcdef0123456789abcdef".into());
    let cases = [
        request(port, number.clone(), vec![], None),
        request(port, service, vec![], None),
        request(
            port,
            number.clone(),
            vec![
                "https://example.com/a.png".into(),
                "https://example.com/b.png".into(),
            ],
            Some("https://sms.example.test/webhooks/sms".into()),
        ),
    ];
    for (i, req) in cases.iter().enumerate() {
        let sent = client.send(req).await;
        assert!(
            sent.is_ok(),
            "case {i}: Prism rejected our request: {sent:?}"
        );
    }
    // Prism does check: a malformed callback URL is refused with 422.
    let bad = request(port, number, vec![], Some("not a uri".into()));
    match client.send(&bad).await {
        Err(SendError::Rejected(e)) => assert_eq!(e.http_status, 422),
        other => panic!("Prism accepted an invalid request: {other:?}"),
    }
}
