//! Issue 23, CONTRACT §10: media the agent makes, end to end with the real daemon, a
//! test agent on the socket and the fake Twilio fetching each `MediaUrl` it is given
//! from the gateway's media route, as Twilio would.

use crate::common;

use std::time::Duration;

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// A small PNG-shaped file: PNG's signature, then bytes that are not all one value.
fn png(len: usize) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    v.extend((0..len).map(|i| (i * 7 % 251) as u8));
    v
}

fn answer(agent: &mut TestAgent, r: &str) -> Value {
    loop {
        let v = agent.next();
        if (v["type"] == "sent" || v["type"] == "error") && v["ref"] == r {
            return v;
        }
    }
}

/// The bytes an agent sends are the bytes served at the URL given to Twilio, with the
/// type from the bytes and their length; the text goes in the same message, a long
/// text's media on the first part only; HEAD answers the same headers; an unknown
/// token or a wrong filename is 404.
#[tokio::test(flavor = "multi_thread")]
async fn bytes_sent_are_bytes_served() {
    let (t, twilio, _, gw) = gateway(r#"defaultTo: "+15557654321""#);
    twilio.fetch_media_via(&format!("http://{}", gw.addr));
    let mut agent = TestAgent::connect(&t.agent_sock());
    let image = png(300_000);
    agent.send(
        json!({"type": "send", "text": "Here is the chart", "ref": "r1",
        "media": [{"data": b64(&image), "contentType": "image/png", "filename": "chart.png"}]}),
    );
    let sent = answer(&mut agent, "r1");
    assert_eq!(sent["type"], "sent", "{sent}");
    let sends = twilio.sends();
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].field("Body"), Some("Here is the chart"));
    let url = sends[0].field("MediaUrl").expect("a MediaUrl").to_string();
    assert!(
        url.starts_with("https://sms.example.test/media/") && url.ends_with("/chart.png"),
        "{url}"
    );
    let fetched = twilio.wait_fetched(1, Duration::from_secs(20));
    assert_eq!(fetched.len(), 1);
    assert_eq!(fetched[0].status, 200);
    assert_eq!(fetched[0].content_type.as_deref(), Some("image/png"));
    assert_eq!(
        fetched[0].content_length.as_deref(),
        Some(image.len().to_string().as_str())
    );
    assert!(
        fetched[0].bytes == image,
        "the bytes served are the bytes sent"
    );

    let path = reqwest::Url::parse(&url).unwrap().path().to_string();
    let head = client().head(gw.url(&path)).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"].to_str().unwrap(),
        image.len().to_string()
    );
    let token = path.split('/').nth(2).unwrap();
    assert_eq!(
        gw.get_status(&format!("/media/{token}/other.png")).await,
        404
    );
    assert_eq!(
        gw.get_status("/media/0123456789abcdef0123456789abcdef/chart.png")
            .await,
        404
    );
    assert_eq!(gw.get_status("/media/").await, 404);

    // A long text: chunked as ever, the media on the first part only.
    let long: String = (0..400).map(|i| format!("word{i} ")).collect();
    agent.send(json!({"type": "send", "text": long, "ref": "r2",
        "media": [{"data": b64(&png(100)), "filename": "a.png"}]}));
    let sent = answer(&mut agent, "r2");
    assert_eq!(sent["type"], "sent", "{sent}");
    let parts = &twilio.sends()[1..];
    assert!(parts.len() >= 2);
    assert!(parts[0].field("MediaUrl").is_some());
    assert!(parts[1..].iter().all(|p| p.field("MediaUrl").is_none()));
    assert_eq!(gw.stop().code(), Some(0));
}

/// A text file dressed as a PNG, 6 MB of image, 11 items, and bad base64 are refused
/// with an error naming the item and the rule; nothing is sent or stored.
#[tokio::test(flavor = "multi_thread")]
async fn refusals_name_the_item_and_the_rule() {
    let (t, twilio, config, gw) = gateway(r#"defaultTo: "+15557654321""#);
    let mut agent = TestAgent::connect(&t.agent_sock());
    let cases: Vec<(Value, &str)> = vec![
        (
            json!([{"data": b64(&png(10)), "filename": "ok.png"},
                   {"data": b64(b"just some text, honestly"), "contentType": "image/png", "filename": "chart.png"}]),
            "media item 2 (chart.png) is not a type Twilio accepts for MMS: its bytes are plain text",
        ),
        (
            json!([{"data": b64(&png(6_000_000)), "filename": "big.png"}]),
            "media item 1 (big.png) makes the message's media",
        ),
        (
            json!((0..11).map(|_| json!({"data": b64(&png(10))})).collect::<Vec<_>>()),
            "at most 10 media items",
        ),
        (json!([{"data": "%%%"}]), "media item 1: \"data\" is not base64"),
    ];
    for (i, (media, needle)) in cases.into_iter().enumerate() {
        let r = format!("bad{i}");
        agent.send(json!({"type": "send", "text": "x", "ref": r, "media": media}));
        let v = answer(&mut agent, &r);
        assert_eq!(v["type"], "error", "{v}");
        let m = v["message"].as_str().unwrap();
        assert!(m.contains(needle), "wanted {needle:?} in {m}");
    }
    agent.assert_no_more(&gw, &config, "a refused send's outcome");
    assert!(twilio.sends().is_empty());
    assert_eq!(gw.stop().code(), Some(0));
    let store = t.store();
    assert!(store.outbound().unwrap().is_empty());
    assert!(store.media_list().unwrap().is_empty());
}

/// Media needs an https publicWebhookUrl (Twilio fetches from it): an http one refuses
/// the send and says so.
#[tokio::test(flavor = "multi_thread")]
async fn an_http_public_url_refuses_media() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let config = t.write_config(&format!(
        r#"{{
  gateway: {{ listen: "127.0.0.1:0", stateDir: "{state}" }},
  channels: {{ sms: {{
    accountSid: "{SID}", authToken: "{TOKEN}", fromNumber: "{FROM}",
    publicWebhookUrl: "http://sms.example.test/webhooks/sms", apiBaseUrl: "{api}",
    defaultTo: "+15557654321",
  }} }},
}}"#,
        state = t.state().display(),
        api = twilio.base_url(),
    ));
    let gw = Gateway::start(&config);
    let mut agent = TestAgent::connect(&t.agent_sock());
    agent.send(json!({"type": "send", "text": "x", "ref": "h1",
        "media": [{"data": b64(&png(10)), "filename": "a.png"}]}));
    let v = answer(&mut agent, "h1");
    assert_eq!(v["type"], "error", "{v}");
    let m = v["message"].as_str().unwrap();
    assert!(m.contains("https publicWebhookUrl"), "{m}");
    assert!(twilio.sends().is_empty());
    assert_eq!(gw.stop().code(), Some(0));
}

/// A kill -9 after the agent's line, before Twilio took the send: the media is in the
/// store with the send, and after the restart it goes out once with the same bytes.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_after_the_line_still_sends_the_media_once() {
    let (t, twilio, config) = configured(r#"defaultTo: "+15557654321""#);
    // Twilio is down: the send stays queued, retried.
    twilio.route(
        "POST",
        &FakeTwilio::messages_path(),
        503,
        json!({"code": 20500, "message": "down", "status": 503}),
    );
    let gw = Gateway::start(&config);
    let mut agent = TestAgent::connect(&t.agent_sock());
    let image = png(50_000);
    agent.send(
        json!({"type": "send", "text": "after the crash", "ref": "k1",
        "media": [{"data": b64(&image), "filename": "pic.png"}]}),
    );
    twilio.wait_sends(1, Duration::from_secs(20));
    gw.kill9();
    twilio.unroute("POST", &FakeTwilio::messages_path());
    let gw = Gateway::start(&config);
    twilio.fetch_media_via(&format!("http://{}", gw.addr));
    assert!(
        wait_until(Duration::from_secs(30), || !twilio.fetched().is_empty()),
        "the send went out after the restart"
    );
    assert!(gw.wait_quiet(&config, Duration::from_secs(20)));
    let fetched = twilio.fetched();
    assert_eq!(fetched.len(), 1, "sent once");
    assert_eq!(fetched[0].status, 200);
    assert!(fetched[0].bytes == image);
    assert_eq!(gw.stop().code(), Some(0));
}

/// Once its time is over (shortened here with SMSGATE_MEDIA_TTL_SECS) a token is 404,
/// and the prune deletes the bytes from the store.
#[tokio::test(flavor = "multi_thread")]
async fn an_expired_token_is_404_and_deleted() {
    let (t, twilio, _, gw) = gateway_with(
        r#"defaultTo: "+15557654321""#,
        &[("SMSGATE_MEDIA_TTL_SECS", "2")],
    );
    twilio.fetch_media_via(&format!("http://{}", gw.addr));
    let mut agent = TestAgent::connect(&t.agent_sock());
    agent.send(json!({"type": "send", "text": "", "ref": "e1",
        "media": [{"data": b64(&png(1000)), "filename": "e.png"}]}));
    assert_eq!(answer(&mut agent, "e1")["type"], "sent");
    assert_eq!(
        twilio.wait_fetched(1, Duration::from_secs(20))[0].status,
        200
    );
    let url = twilio.sends()[0].field("MediaUrl").unwrap().to_string();
    let path = reqwest::Url::parse(&url).unwrap().path().to_string();
    // The delivered status is final: the hour (here 2 s) is all it gets.
    let sid = twilio.sends()[0].created.clone().unwrap();
    let status = [
        ("MessageSid", sid.as_str()),
        ("MessageStatus", "delivered"),
        ("AccountSid", SID),
        ("From", FROM),
        ("To", "+15557654321"),
    ];
    assert_eq!(post_signed(&gw, "/webhooks/sms", &status).await.0, 200);
    let mut last = 0;
    let gone = wait_until(Duration::from_secs(20), || {
        last = futures_block(gw.get_status(&path));
        last == 404
    });
    assert!(gone, "still {last}");
    assert!(gw.wait_log("deleted 1 media item", Duration::from_secs(20)));
    assert_eq!(gw.stop().code(), Some(0));
    let store = t.store();
    assert!(store.media_list().unwrap().is_empty());
}

fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// `message send --media FILE`: the CLI reads the file and the daemon serves its bytes
/// to Twilio; a text file is refused naming it; without the daemon `--media` says it
/// needs it.
#[tokio::test(flavor = "multi_thread")]
async fn message_send_attaches_a_file() {
    let (t, twilio, config) = configured("");
    let image = png(20_000);
    let file = t.path().join("photo.png");
    std::fs::write(&file, &image).unwrap();
    let text = t.path().join("notes.png");
    std::fs::write(&text, "not a picture at all").unwrap();
    let no_daemon = cli(
        &config,
        &[
            "message",
            "send",
            "--target",
            "+15557654321",
            "--media",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(no_daemon.status.code(), Some(1));
    assert!(
        stderr(&no_daemon).contains("--media needs the running gateway"),
        "{}",
        stderr(&no_daemon)
    );

    let gw = Gateway::start(&config);
    twilio.fetch_media_via(&format!("http://{}", gw.addr));
    let out = tokio::task::spawn_blocking({
        let (config, file) = (config.clone(), file.clone());
        move || {
            cli(
                &config,
                &[
                    "message",
                    "send",
                    "--target",
                    "+15557654321",
                    "--message",
                    "look",
                    "--media",
                    file.to_str().unwrap(),
                    "--json",
                ],
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let sends = twilio.sends();
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].field("Body"), Some("look"));
    assert!(sends[0].field("MediaUrl").unwrap().ends_with("/photo.png"));
    assert!(twilio.wait_fetched(1, Duration::from_secs(20))[0].bytes == image);

    let out = tokio::task::spawn_blocking({
        let (config, text) = (config.clone(), text.clone());
        move || {
            cli(
                &config,
                &[
                    "message",
                    "send",
                    "--target",
                    "+15557654321",
                    "--media",
                    text.to_str().unwrap(),
                ],
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("media item 1 (notes.png) is not a type Twilio accepts"),
        "{}",
        stderr(&out)
    );
    assert_eq!(twilio.sends().len(), 1);
    assert_eq!(gw.stop().code(), Some(0));
}

/// `agent exec` attaches the files its command leaves in `$SMS_OUTBOX` (fresh for each
/// run, removed after), text and media in one message.
#[tokio::test(flavor = "multi_thread")]
async fn agent_exec_attaches_its_outbox() {
    let (t, twilio, config, gw) = gateway(OPEN);
    twilio.fetch_media_via(&format!("http://{}", gw.addr));
    let image = png(10_000);
    let src = t.path().join("src.png");
    std::fs::write(&src, &image).unwrap();
    let seen = t.path().join("outbox-was");
    let script = t.path().join("agent.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\ncat >/dev/null\n[ -z \"$(ls -A \"$SMS_OUTBOX\")\" ] || exit 9\ncp \"$SRC\" \"$SMS_OUTBOX/plot.png\"\nln -s /etc/passwd \"$SMS_OUTBOX/link.png\"\necho \"$SMS_OUTBOX\" > \"$SEEN\"\necho here is the plot\n",
    )
    .unwrap();
    let mut agent = std::process::Command::new(bin())
        .args(["agent", "exec", "--config"])
        .arg(&config)
        .args(["--", "sh"])
        .arg(&script)
        .env("SRC", &src)
        .env("SEEN", &seen)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let params = inbound(
        "SMf0000000000000000000000000000001",
        "+15557654321",
        "plot it",
    );
    assert_eq!(post_signed(&gw, "/webhooks/sms", &params).await.0, 200);
    let sends = twilio.wait_sends(1, Duration::from_secs(20));
    assert_eq!(sends[0].field("Body"), Some("here is the plot"));
    let urls = sends[0].fields("MediaUrl");
    assert_eq!(urls.len(), 1, "the symlink is not attached: {urls:?}");
    assert!(urls[0].ends_with("/plot.png"));
    assert!(twilio.wait_fetched(1, Duration::from_secs(20))[0].bytes == image);
    let dir = std::fs::read_to_string(&seen).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || !std::path::Path::new(dir.trim())
            .exists()),
        "the outbox is removed after the run"
    );
    let _ = agent.kill();
    let _ = agent.wait();
    assert_eq!(gw.stop().code(), Some(0));
}
