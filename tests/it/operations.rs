//! Running it for real: status probes and setup against the fake Twilio, reload on
//! SIGHUP and on certificate renewal, graceful stop, metrics, key rotation.

use crate::common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;
use serde_json::json;

fn number_route(twilio: &FakeTwilio, sms_url: &str, method: &str) {
    twilio.route("GET", &format!("/2010-04-01/Accounts/{SID}/IncomingPhoneNumbers.json"), 200, json!({
        "incoming_phone_numbers": [{"sid": "PN0123456789abcdef0123456789abcdef", "phone_number": FROM, "sms_url": sms_url, "sms_method": method, "sms_application_sid": ""}]
    }));
}

fn healthy_twilio() -> FakeTwilio {
    let twilio = FakeTwilio::start();
    twilio.serve_account(json!([{"sid": "SM1", "error_code": null, "from": "+15557654321"}]));
    number_route(&twilio, PUBLIC, "POST");
    twilio
}

fn probe(config: &std::path::Path) -> (i32, serde_json::Value) {
    let out = cli(
        config,
        &[
            "channels",
            "status",
            "--channel",
            "sms",
            "--probe",
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}\n{}", stdout(&out), stderr(&out)));
    (out.status.code().unwrap(), v)
}

fn check<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v["accounts"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
}

#[test]
fn probe_matching_mismatched_get_and_11200() {
    let t = TestDir::new();
    let twilio = healthy_twilio();
    let config = t.config(&twilio, "");
    let (code, v) = probe(&config);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["accounts"][0]["account"], "default");
    assert_eq!(v["accounts"][0]["ok"], true);
    for name in ["credentials", "webhook", "recentErrors"] {
        assert_eq!(check(&v, name)["status"], "ok", "{name}: {v}");
    }
    assert_eq!(check(&v, "webhook")["twilioUrl"], PUBLIC);
    let text = v.to_string();
    assert!(!text.contains(TOKEN), "no secrets");
    assert!(!text.contains("+15557654321"), "no other party's number");

    number_route(&twilio, "https://old.example.test/sms", "POST");
    let (code, v) = probe(&config);
    assert_eq!(code, 1);
    assert_eq!(check(&v, "webhook")["status"], "mismatch");
    assert_eq!(check(&v, "webhook")["configuredUrl"], PUBLIC);
    assert_eq!(
        check(&v, "webhook")["twilioUrl"],
        "https://old.example.test/sms"
    );
    assert!(v["accounts"][0]["hints"]
        .to_string()
        .contains("byte for byte"));

    number_route(&twilio, PUBLIC, "GET");
    let (code, v) = probe(&config);
    assert_eq!(code, 1);
    assert_eq!(check(&v, "webhook")["status"], "mismatch");
    assert!(check(&v, "webhook")["detail"]
        .as_str()
        .unwrap()
        .contains("POST"));

    number_route(&twilio, PUBLIC, "POST");
    twilio.route(
        "GET",
        &format!("/2010-04-01/Accounts/{SID}/Messages.json"),
        200,
        json!({"messages": [{"sid": "SM2", "error_code": 11200}]}),
    );
    let (code, v) = probe(&config);
    assert_eq!(code, 1);
    assert_eq!(check(&v, "recentErrors")["status"], "error");
    assert_eq!(check(&v, "recentErrors")["code"], 11200);
    assert!(v["accounts"][0]["hints"].to_string().contains("11200"));
    // The Messages lookup asked for our number and three messages.
    let asked: Vec<String> = twilio
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/Messages.json") && r.method == "GET")
        .filter_map(|r| r.query)
        .collect();
    assert!(
        asked
            .iter()
            .any(|q| q.contains("PageSize=3") && q.contains("To=%2B15550001111")),
        "{asked:?}"
    );

    // Bad credentials: error, the rest skipped.
    twilio.route(
        "GET",
        &format!("/2010-04-01/Accounts/{SID}.json"),
        401,
        json!({"code": 20003, "message": "Authenticate", "status": 401}),
    );
    let (code, v) = probe(&config);
    assert_eq!(code, 1);
    assert_eq!(check(&v, "credentials")["status"], "error");
    assert_eq!(check(&v, "webhook")["status"], "skipped");

    // Human output too.
    let out = cli(&config, &["channels", "status"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("account default: configured"));
}

#[test]
fn probe_messaging_service_and_tailscale_hint() {
    let t = TestDir::new();
    let twilio = healthy_twilio();
    let public = "https://box.tail1234.ts.net/webhooks/sms";
    let config = t.write_config(&format!(
        r#"{{ gateway: {{ listen: "127.0.0.1:8789", stateDir: "{}" }}, channels: {{ sms: {{ accountSid: "{SID}", authToken: "{TOKEN}",
        messagingServiceSid: "MG0123456789abcdef0123456789abcdef", publicWebhookUrl: "{public}", apiBaseUrl: "{api}", messagingApiBaseUrl: "{api}" }} }} }}"#,
        t.state().display(),
        api = twilio.base_url()
    ));
    twilio.route("GET", "/v1/Services/MG0123456789abcdef0123456789abcdef", 200, json!({"sid": "MG0123456789abcdef0123456789abcdef", "inbound_request_url": public, "inbound_method": "POST", "use_inbound_webhook_on_number": false}));
    let (code, v) = probe(&config);
    assert_eq!(code, 0, "{v}");
    assert_eq!(check(&v, "webhook")["status"], "ok");
    // A service's own sends are read back too (none failed here).
    assert_eq!(check(&v, "recentErrors")["status"], "ok");
    let hints = v["accounts"][0]["hints"].to_string();
    assert!(
        hints.contains(
            "tailscale funnel --bg --set-path /webhooks/sms http://127.0.0.1:8789/webhooks/sms"
        ),
        "{hints}"
    );

    twilio.route("GET", "/v1/Services/MG0123456789abcdef0123456789abcdef", 200, json!({"inbound_request_url": public, "inbound_method": "POST", "use_inbound_webhook_on_number": true}));
    let (code, v) = probe(&config);
    assert_eq!(code, 1);
    assert_eq!(check(&v, "webhook")["status"], "mismatch");

    // Setup for a service.
    twilio.route("GET", "/v1/Services/MG0123456789abcdef0123456789abcdef", 200, json!({"inbound_request_url": "", "inbound_method": "GET", "use_inbound_webhook_on_number": false}));
    twilio.route(
        "POST",
        "/v1/Services/MG0123456789abcdef0123456789abcdef",
        200,
        json!({"sid": "MG0123456789abcdef0123456789abcdef"}),
    );
    let out = cli(&config, &["channels", "setup"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let post = twilio
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path.starts_with("/v1/Services/"))
        .unwrap();
    assert_eq!(post.field("InboundRequestUrl"), Some(public));
    assert_eq!(post.field("InboundMethod"), Some("POST"));
}

#[test]
fn setup_dry_run_then_for_real() {
    let t = TestDir::new();
    let twilio = healthy_twilio();
    number_route(&twilio, "https://demo.twilio.com/welcome/sms/reply", "GET");
    twilio.route("POST", &format!("/2010-04-01/Accounts/{SID}/IncomingPhoneNumbers/PN0123456789abcdef0123456789abcdef.json"), 200, json!({"sid": "PN0123456789abcdef0123456789abcdef"}));
    let config = t.config(&twilio, "");
    let out = cli(&config, &["channels", "setup", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("SmsUrl: https://demo.twilio.com/welcome/sms/reply -> https://sms.example.test/webhooks/sms"), "{text}");
    assert!(text.contains("SmsMethod: GET -> POST"), "{text}");
    assert!(
        twilio.requests().iter().all(|r| r.method != "POST"),
        "dry run changes nothing"
    );
    let out = cli(&config, &["channels", "setup", "--account", "default"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let post = twilio
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert_eq!(post.path, format!("/2010-04-01/Accounts/{SID}/IncomingPhoneNumbers/PN0123456789abcdef0123456789abcdef.json"));
    assert_eq!(post.field("SmsUrl"), Some(PUBLIC));
    assert_eq!(post.field("SmsMethod"), Some("POST"));
    number_route(&twilio, PUBLIC, "POST");
    let out = cli(&config, &["channels", "setup"]);
    assert!(stdout(&out).contains("nothing to do"));
}

#[test]
fn probe_counts_failed_replies_by_code_with_hints() {
    let t = TestDir::new();
    let twilio = healthy_twilio();
    let config = t.config(&twilio, "");
    let sent = |status: &str, code: Option<u32>| json!({"sid": "SMx", "status": status, "error_code": code, "direction": "outbound-api", "from": FROM});
    let mut list: Vec<serde_json::Value> = (0..16).map(|_| sent("delivered", None)).collect();
    list.extend((0..4).map(|_| sent("undelivered", Some(30034))));
    twilio.route(
        "GET",
        &format!("/2010-04-01/Accounts/{SID}/Messages.json"),
        200,
        json!({ "messages": list }),
    );
    let (code, v) = probe(&config);
    assert_eq!(code, 1, "{v}");
    let c = check(&v, "recentErrors");
    assert_eq!(c["status"], "error", "{c}");
    assert_eq!(c["code"], 30034);
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .contains("4 of the last 20 replies failed with 30034: this number is not registered for US A2P 10DLC"),
        "{c}"
    );
    assert!(c["hint"].as_str().unwrap().contains("messagingServiceSid"));
    assert!(v["accounts"][0]["hints"]
        .to_string()
        .contains("Error 30034: this number is not registered"));
    // Our own sends were asked for by our number.
    let asked: Vec<String> = twilio
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/Messages.json"))
        .filter_map(|r| r.query)
        .collect();
    assert!(
        asked
            .iter()
            .any(|q| q.contains("From=%2B15550001111") && q.contains("PageSize=20")),
        "{asked:?}"
    );
    // Human output says it too.
    let out = cli(&config, &["channels", "status", "--probe"]);
    assert!(stdout(&out).contains("30034"), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn setup_fallback_url_and_retries_and_a_signed_webhook_through_the_override() {
    let t = TestDir::new();
    let twilio = healthy_twilio();
    number_route(&twilio, "https://demo.twilio.com/welcome/sms/reply", "GET");
    twilio.route("POST", &format!("/2010-04-01/Accounts/{SID}/IncomingPhoneNumbers/PN0123456789abcdef0123456789abcdef.json"), 200, json!({"sid": "PN0123456789abcdef0123456789abcdef"}));
    let config = t.config(&twilio, "");
    let out = cli(&config, &["channels", "setup", "--retries", "9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("at most 5"), "{}", stderr(&out));
    let out = setup_with_fallback(&config, "3");
    assert!(out.status.success(), "{}", stderr(&out));
    let update = twilio
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    let with_override = format!("{PUBLIC}#rc=3&rp=all");
    assert_eq!(update.field("SmsUrl"), Some(with_override.as_str()));
    assert_eq!(update.field("SmsMethod"), Some("POST"));
    assert_eq!(update.field("SmsFallbackUrl"), Some(FALLBACK_URL));
    assert_eq!(update.field("SmsFallbackMethod"), Some("POST"));
    // Twilio now has the URL with the override: the probe still calls it a match.
    number_route(&twilio, &with_override, "POST");
    let (code, v) = probe(&config);
    assert_eq!(check(&v, "webhook")["status"], "ok", "{v}");
    assert_eq!(code, 0, "{v}");

    // The gateway configured with the override in its URL: Twilio signs the URL
    // without the fragment, and the signature check agrees.
    let t2 = TestDir::new();
    let config = t2.write_config(&format!(
        r#"{{ gateway: {{ listen: "127.0.0.1:0", stateDir: "{}" }}, channels: {{ sms: {{ accountSid: "{SID}", authToken: "{TOKEN}", fromNumber: "{FROM}",
        publicWebhookUrl: "{with_override}", apiBaseUrl: "{}", dmPolicy: "open", allowFrom: ["*"] }} }} }}"#,
        t2.state().display(),
        twilio.base_url()
    ));
    let gw = Gateway::start(&config);
    let params = inbound("SM0123456789abcdef0123456789abcd01", "+15557650002", "hi");
    let (status, _) = post_signed(&gw, "/webhooks/sms", &params).await;
    assert_eq!(status, 200, "{}", gw.log());
    // Signed over the URL with its fragment is not what Twilio does: refused.
    let wrong = sign(TOKEN, &with_override, &params);
    let (status, _) = post(&gw, "/webhooks/sms", &params, Some(&wrong)).await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_allow_from_and_refuses_an_invalid_config() {
    let (t, _twilio, config, gw) = gateway(r#"dmPolicy: "allowlist", allowFrom: ["+15557650001"]"#);
    let pid = gw.child.id().to_string();
    assert_eq!(
        gw.admit(
            "SMa0000000000000000000000000000001",
            "+15557650002",
            "before"
        )
        .await,
        200
    );
    assert!(gw.wait_log("not in allowFrom", Duration::from_secs(5)));
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(r#"["+15557650001"]"#, r#"["+15557650001", "+15557650002"]"#);
    std::fs::write(&config, text).unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    gw.assert_log_soon("configuration reloaded", Duration::from_secs(5));
    let mut agent = TestAgent::connect(&t.state().join("agent.sock"));
    assert_eq!(
        gw.admit(
            "SMa0000000000000000000000000000002",
            "+15557650002",
            "after"
        )
        .await,
        200
    );
    let m = agent.next_of("message");
    assert_eq!(m["text"], "after");
    agent.send(json!({"type": "ack", "id": m["id"]}));

    // An invalid config is refused and the running one kept.
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        good.replace(r#"dmPolicy: "allowlist""#, r#"dmPolicy: "sometimes""#),
    )
    .unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    gw.assert_log_soon("reload refused", Duration::from_secs(5));
    assert!(gw.log().contains("channels.sms.dmPolicy"));
    assert_eq!(
        gw.admit(
            "SMa0000000000000000000000000000003",
            "+15557650002",
            "still"
        )
        .await,
        200
    );
    let m = agent.next_of("message");
    assert_eq!(m["text"], "still");
    agent.send(json!({"type": "ack", "id": m["id"]}));

    // config patch on a running daemon applies the change.
    std::fs::write(&config, &good).unwrap();
    let patch = t.path().join("p.json5");
    std::fs::write(
        &patch,
        r#"{ channels: { sms: { allowFrom: ["+15557650001"] } } }"#,
    )
    .unwrap();
    let out = cli(
        &config,
        &["config", "patch", "--file", patch.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("reloaded"), "{}", stdout(&out));
    assert_eq!(
        gw.admit(
            "SMa0000000000000000000000000000004",
            "+15557650002",
            "locked out"
        )
        .await,
        200
    );
    agent.assert_no_more(
        &gw,
        &config,
        "a sender locked out by the reload is not forwarded",
    );
    assert_eq!(gw.stop().code(), Some(0));
}

fn write_cert(dir: &std::path::Path) -> String {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let tmp_c = dir.join("cert.pem.new");
    let tmp_k = dir.join("key.pem.new");
    std::fs::write(&tmp_c, cert.cert.pem()).unwrap();
    std::fs::write(&tmp_k, cert.key_pair.serialize_pem()).unwrap();
    std::fs::rename(&tmp_k, dir.join("key.pem")).unwrap();
    std::fs::rename(&tmp_c, dir.join("cert.pem")).unwrap();
    cert.cert.pem()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_swapped_on_disk_is_served_to_the_next_client() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let first = write_cert(t.path());
    let config = t.write_config(&format!(
        r#"{{ gateway: {{ listen: "127.0.0.1:0", stateDir: "{state}", tls: {{ certFile: "{dir}/cert.pem", keyFile: "{dir}/key.pem" }} }},
        channels: {{ sms: {{ accountSid: "{SID}", authToken: "{TOKEN}", fromNumber: "{FROM}", publicWebhookUrl: "{PUBLIC}", apiBaseUrl: "{api}" }} }} }}"#,
        state = t.state().display(),
        dir = t.path().display(),
        api = twilio.base_url()
    ));
    let gw = Gateway::start(&config);
    let client_for = |pem: &str| {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
            .use_rustls_tls()
            .resolve("localhost", gw.addr)
            .build()
            .unwrap()
    };
    let url = format!("https://localhost:{}/healthz", gw.addr.port());
    assert_eq!(
        client_for(&first)
            .get(&url)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    // An open connection survives the swap.
    let kept = client_for(&first);
    assert_eq!(kept.get(&url).send().await.unwrap().status().as_u16(), 200);
    let second = write_cert(t.path());
    gw.assert_log_soon("now serving the new one", Duration::from_secs(10));
    assert_eq!(
        client_for(&second)
            .get(&url)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200,
        "the new certificate is served"
    );
    assert!(
        client_for(&first).get(&url).send().await.is_err(),
        "the old one is not"
    );
    assert_eq!(
        kept.get(&url).send().await.unwrap().status().as_u16(),
        200,
        "the kept-alive connection was not dropped"
    );
    // A broken file keeps the old certificate.
    std::fs::write(t.path().join("cert.pem"), "garbage").unwrap();
    assert!(gw.wait_log("still serving the old certificate", Duration::from_secs(10)));
    assert_eq!(
        client_for(&second)
            .get(&url)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(gw.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_an_in_flight_webhook_finish() {
    let (t, _twilio, _, gw) = gateway(OPEN);
    let p = inbound(
        "SMb0000000000000000000000000000001",
        "+15557654321",
        "in flight",
    );
    let body = form(&p);
    let sig = sign(TOKEN, PUBLIC, &p);
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // `Expect: 100-continue`: the daemon's "100 Continue" says the webhook is in flight
    // (accepted, headers read, the handler reading the body), a condition to wait on
    // instead of a sleep.
    write!(s, "POST /webhooks/sms HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nX-Twilio-Signature: {sig}\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n", body.len()).unwrap();
    let mut continued = [0u8; 25];
    s.read_exact(&mut continued).unwrap();
    assert_eq!(&continued, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(&body.as_bytes()[..10]).unwrap();
    let pid = gw.child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    // The daemon is stopping (not a sleep): then the rest of the body comes.
    gw.assert_log_soon("SIGTERM received", Duration::from_secs(10));
    s.write_all(&body.as_bytes()[10..]).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let started = std::time::Instant::now();
    assert_eq!(gw.stop().code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(10));
    let store = t.store();
    assert_eq!(store.inbox().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_scrape_health_and_rotated_keys() {
    let (t, _twilio, config) = configured(
        r#"dmPolicy: "open", allowFrom: ["*"], previousAuthTokens: ["old-token"], webhookSigningKeys: { "webhooks_sharedkey_1": { source: "env", id: "SHARED" } }"#,
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("stateDir:", r#"metricsListen: "127.0.0.1:0", stateDir:"#);
    std::fs::write(&config, text).unwrap();
    let gw = Gateway::start_with(&config, &[("SHARED", "shared-secret")]);
    // The previous token still validates; a random one does not.
    let p = inbound(
        "SMc0000000000000000000000000000001",
        "+15557654321",
        "old token",
    );
    assert_eq!(
        post_signed_by(&gw, "/webhooks/sms", &p, "old-token", PUBLIC).await,
        200
    );
    assert_eq!(
        post_signed_by(&gw, "/webhooks/sms", &p, "nope", PUBLIC).await,
        403
    );
    // HMAC-SHA256 with a shared key, as Twilio's newer signing sends it.
    let p2 = inbound(
        "SMc0000000000000000000000000000002",
        "+15557654321",
        "shared key",
    );
    let sig = {
        use base64::Engine;
        use hmac::Mac;
        let mut data = PUBLIC.to_string();
        let mut sorted = p2.clone();
        sorted.sort();
        for (k, v) in sorted {
            data.push_str(k);
            data.push_str(v);
        }
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"shared-secret").unwrap();
        mac.update(data.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    };
    let send = |settings: &'static str, sig: String| {
        let url = gw.url("/webhooks/sms");
        let body = form(&p2);
        let headers = vec![
            ("X-Twilio-Signature", sig),
            ("X-Twilio-Webhooks-Signature-Settings", settings.to_string()),
        ];
        post_raw(url, headers, body)
    };
    assert_eq!(
        send(
            "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256",
            sig.clone()
        )
        .await,
        200
    );
    assert_eq!(
        send(
            "key=webhooks_sharedkey_9,algorithm=HMAC_SHA256",
            sig.clone()
        )
        .await,
        403
    );
    assert_eq!(
        send("key=webhooks_sharedkey_1,algorithm=HMAC_SHA1", sig).await,
        403
    );

    let body = gw.scrape().await;
    for needle in [
        "smsgate_webhooks_total{status=\"200\"} 2",
        "smsgate_webhooks_total{status=\"403\"} 3",
        "smsgate_signature_failures_total 3",
        "smsgate_agent_queue_depth 2",
        "smsgate_outbound_queue_depth 0",
        "smsgate_agent_connections 0",
        "smsgate_store_flush_seconds_count",
    ] {
        assert!(body.contains(needle), "missing {needle:?} in\n{body}");
    }
    // health: ok while running.
    let run_config = t.path().join("run.json5");
    std::fs::write(
        &run_config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace(r#"metricsListen: "127.0.0.1:0", "#, "")
            .replace("127.0.0.1:0", &gw.addr.to_string())
            .replace(r#"{ source: "env", id: "SHARED" }"#, r#""shared-secret""#),
    )
    .unwrap();
    let out = cli(&run_config, &["health"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(gw.stop().code(), Some(0));
    assert_eq!(cli(&run_config, &["health"]).status.code(), Some(1));
}

#[test]
fn completions_man_and_capabilities() {
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(bin())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("smsgate"));
    }
    let out = std::process::Command::new(bin())
        .arg("man")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(".TH smsgate"));
    let out = std::process::Command::new(bin())
        .args(["channels", "capabilities", "--channel", "sms", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["channel"], "sms");
    assert_eq!(v["capabilities"]["media"]["maxPerMessage"], 10);
    let out = std::process::Command::new(bin())
        .args(["channels", "capabilities", "--channel", "fax"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}
