//! Our Messages API requests against Twilio's own OpenAPI spec, served by Stoplight
//! Prism (which rejects requests that do not match the schema with 422).

use crate::common;

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
        content: None,
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
    // WhatsApp (CONTRACT §12): `whatsapp:` on From and To, and the re-engagement
    // template with ContentSid and ContentVariables instead of Body.
    let whatsapp = Sender::Number(E164::parse_address("whatsapp:+14155238886").unwrap());
    let mut wa_text = request(port, whatsapp.clone(), vec![], None);
    wa_text.to = E164::parse_address("whatsapp:+15557654321").unwrap();
    let mut wa_template = wa_text.clone();
    wa_template.body = String::new();
    wa_template.content = Some(smsgate::twilio::Content {
        sid: "HX0123456789abcdef0123456789abcdef".into(),
        variables: Some(r#"{"1":"Your report is ready"}"#.into()),
    });
    let form = smsgate::twilio::create_form(&wa_template);
    assert!(
        form.iter().any(|(k, _)| *k == "ContentSid") && !form.iter().any(|(k, _)| *k == "Body"),
        "{form:?}"
    );
    let mut cases = cases.to_vec();
    cases.extend([wa_text, wa_template]);
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

/// The probe's list calls (account, number, our inbound and our sent messages) and
/// `channels setup`'s update with a fallback URL and a retry override, against Twilio's
/// spec: Prism answers 422 to any request that does not match it.
#[test]
fn probe_lists_and_setup_update_match_twilios_spec() {
    let Some((_prism, port)) = start_prism("twilio_api_v2010.trimmed.json") else {
        return;
    };
    // Also with a WhatsApp sender of its own (CONTRACT §12): its number's lookup, its
    // recent sends and its update go through the same resources.
    for whatsapp in ["", r#", whatsapp: { enabled: true, from: "+15550002222" }"#] {
        probe_and_setup_against_prism(port, whatsapp);
    }
}

fn probe_and_setup_against_prism(port: u16, whatsapp: &str) {
    let t = common::TestDir::new();
    let config = t.write_config(&format!(
        r#"{{ gateway: {{ listen: "127.0.0.1:8789", stateDir: "{}" }}, channels: {{ sms: {{ accountSid: "{}", authToken: "token",
        fromNumber: "{}", publicWebhookUrl: "{}", apiBaseUrl: "http://127.0.0.1:{port}"{whatsapp} }} }} }}"#,
        t.state().display(),
        common::SID,
        common::FROM,
        common::PUBLIC
    ));
    let out = common::cli(&config, &["channels", "status", "--probe", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}\n{}", common::stdout(&out), common::stderr(&out)));
    let checks = v["accounts"][0]["checks"].as_array().unwrap();
    let status = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["status"].clone())
    };
    // Every call was made (nothing skipped) and understood.
    assert_eq!(status("credentials"), Some("ok".into()), "{v}");
    assert_eq!(status("recentErrors"), Some("ok".into()), "{v}");
    if !whatsapp.is_empty() {
        assert!(status("whatsapp").is_some(), "{v}");
    }
    for c in checks {
        let detail = c["detail"].as_str().unwrap_or_default();
        assert!(
            !detail.contains("422") && c["status"] != "unavailable",
            "Prism refused the {} call: {c}",
            c["name"]
        );
    }
    let out = common::setup_with_fallback(&config, "2");
    assert!(
        out.status.success(),
        "Prism refused the update: {}\n{}",
        common::stdout(&out),
        common::stderr(&out)
    );
}

/// The lookup that resolves a send of unknown outcome (`Messages.json?To=…&From=…&
/// DateSent>=…`), for a number and for a Messaging Service, against Twilio's spec.
#[tokio::test(flavor = "multi_thread")]
async fn unknown_send_lookup_matches_twilios_spec() {
    let Some((_prism, port)) = start_prism("twilio_api_v2010.trimmed.json") else {
        return;
    };
    let client = HttpTwilio::new().unwrap();
    let number = Sender::Number(E164::parse(common::FROM).unwrap());
    let service = Sender::MessagingService("MG0123456789abcdef0123456789abcdef".into());
    for sender in [number, service] {
        let req = request(port, sender.clone(), vec![], None);
        let listed = client.list_sent(&req, 1_796_126_400_000).await;
        let listed =
            listed.unwrap_or_else(|e| panic!("Prism refused the lookup for {sender:?}: {e}"));
        // Prism answers with the spec's example page; it parses.
        assert!(
            listed
                .iter()
                .all(|m| m.sid.starts_with("SM") || m.sid.starts_with("MM")),
            "{listed:?}"
        );
    }
}
