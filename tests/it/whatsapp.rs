//! WhatsApp through the same Twilio account (CONTRACT §12), end to end: the real
//! daemon, a test agent on its socket, the recording fake Twilio.

use crate::common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use serde_json::json;

/// The Twilio Sandbox's shared WhatsApp sender.
const WA_FROM: &str = "+14155238886";
const PERSON: &str = "+15557654321";

fn agent_sock(t: &TestDir) -> PathBuf {
    t.state().join("agent.sock")
}

fn wa(number: &str) -> String {
    format!("whatsapp:{number}")
}

/// A signed WhatsApp webhook as Twilio sends it: `whatsapp:` on From and To,
/// ProfileName and WaId.
async fn admit_wa(gw: &Gateway, sid: &str, from: &str, body: &str) -> u16 {
    let (from, to) = (wa(from), wa(WA_FROM));
    let wa_id = from.trim_start_matches("whatsapp:+").to_string();
    let params = [
        ("MessageSid", sid),
        ("SmsSid", sid),
        ("AccountSid", SID),
        ("From", from.as_str()),
        ("To", to.as_str()),
        ("Body", body),
        ("NumMedia", "0"),
        ("SmsStatus", "received"),
        ("ApiVersion", "2010-04-01"),
        ("ProfileName", "Ann Example"),
        ("WaId", wa_id.as_str()),
    ];
    post_signed(gw, "/webhooks/sms", &params).await.0
}

fn config(t: &TestDir, twilio: &FakeTwilio, extra: &str) -> PathBuf {
    t.config(
        twilio,
        &format!(r#"{extra}, whatsapp: {{ enabled: true, from: "{WA_FROM}" }}"#),
    )
}

fn sid(n: u32) -> String {
    format!("SMa{n:031}")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_sms_and_a_whatsapp_conversation_side_by_side_from_one_number() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let cfg = config(
        &t,
        &twilio,
        r#"dmPolicy: "open", allowFrom: ["*"], allowTo: ["*"]"#,
    );
    let gw = Gateway::start(&cfg);
    let mut agent = TestAgent::connect(&agent_sock(&t));

    assert_eq!(gw.admit(&sid(1), PERSON, "hi by sms").await, 200);
    let sms = agent.next_of("message");
    assert_eq!(admit_wa(&gw, &sid(2), PERSON, "hi by whatsapp").await, 200);
    let wam = agent.next_of("message");

    assert_eq!(sms["channel"], "sms");
    assert_eq!(sms["from"], PERSON);
    assert!(sms.get("profileName").is_none(), "{sms}");
    assert_eq!(wam["channel"], "whatsapp");
    assert_eq!(wam["from"], PERSON, "the number, the channel says which");
    assert_eq!(wam["to"], WA_FROM);
    assert_eq!(wam["profileName"], "Ann Example");
    assert_eq!(wam["text"], "hi by whatsapp");
    assert_ne!(
        sms["conversation"], wam["conversation"],
        "a conversation belongs to one channel"
    );

    // Each reply goes back on its own channel; WhatsApp keeps its formatting.
    agent.send(json!({"type": "reply", "id": wam["id"], "text": "**Hello** _there_"}));
    assert_eq!(agent.next_of("sent")["id"], wam["id"]);
    agent.send(json!({"type": "reply", "id": sms["id"], "text": "**Hello** _there_"}));
    assert_eq!(agent.next_of("sent")["id"], sms["id"]);
    let sends = twilio.wait_sends(2, Duration::from_secs(10));
    assert_eq!(sends[0].field("To"), Some(wa(PERSON).as_str()));
    assert_eq!(sends[0].field("From"), Some(wa(WA_FROM).as_str()));
    assert_eq!(sends[0].field("Body"), Some("*Hello* _there_"));
    assert_eq!(sends[1].field("To"), Some(PERSON));
    assert_eq!(sends[1].field("From"), Some(FROM));
    assert_eq!(sends[1].field("Body"), Some("Hello there"));

    // A second message on each channel stays in its own conversation.
    assert_eq!(admit_wa(&gw, &sid(3), PERSON, "again").await, 200);
    let again = agent.next_of("message");
    assert_eq!(again["conversation"], wam["conversation"]);
    agent.send(json!({"type": "ack", "id": again["id"]}));

    // `send` takes a channel, or a whatsapp: address.
    agent.send(
        json!({"type": "send", "to": PERSON, "channel": "whatsapp", "text": "one", "ref": "r1"}),
    );
    assert_eq!(agent.next_of("sent")["ref"], "r1");
    agent.send(json!({"type": "send", "to": wa(PERSON), "text": "two", "ref": "r2"}));
    assert_eq!(agent.next_of("sent")["ref"], "r2");
    agent.send(json!({"type": "send", "to": PERSON, "text": "three", "ref": "r3"}));
    assert_eq!(agent.next_of("sent")["ref"], "r3");
    agent.send(
        json!({"type": "send", "to": wa(PERSON), "channel": "sms", "text": "x", "ref": "r4"}),
    );
    let e = agent.next_of("error");
    assert_eq!(e["ref"], "r4");
    let sends = twilio.wait_sends(5, Duration::from_secs(10));
    let to: Vec<_> = sends[2..].iter().map(|r| r.field("To").unwrap()).collect();
    assert_eq!(to, [wa(PERSON).as_str(), wa(PERSON).as_str(), PERSON]);

    // A 1,600-character WhatsApp reply is one message; longer is split.
    assert_eq!(admit_wa(&gw, &sid(4), PERSON, "long").await, 200);
    let m = agent.next_of("message");
    let long: String = (0..300).map(|i| format!("w{i:03} ")).collect();
    agent.send(json!({"type": "reply", "id": m["id"], "text": long}));
    let sent = agent.next_of("sent");
    assert_eq!(sent["sids"].as_array().unwrap().len(), 1, "{sent}");
    assert_eq!(admit_wa(&gw, &sid(5), PERSON, "longer").await, 200);
    let m = agent.next_of("message");
    let longer: String = (0..400).map(|i| format!("w{i:03} ")).collect();
    agent.send(json!({"type": "reply", "id": m["id"], "text": longer}));
    let sent = agent.next_of("sent");
    assert_eq!(sent["sids"].as_array().unwrap().len(), 2, "{sent}");
    let sends = twilio.wait_sends(8, Duration::from_secs(10));
    assert!(sends[5..]
        .iter()
        .all(|r| r.field("Body").unwrap().chars().count() <= 1600));

    // The CLI sends on WhatsApp too.
    let out = cli(
        &cfg,
        &[
            "message",
            "send",
            "--target",
            &wa(PERSON),
            "--message",
            "from the cli",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sends = twilio.wait_sends(9, Duration::from_secs(10));
    assert_eq!(sends[8].field("To"), Some(wa(PERSON).as_str()));
    assert_eq!(sends[8].field("From"), Some(wa(WA_FROM).as_str()));

    // The profile name never reaches the log.
    let log = gw.stop_and_log();
    assert!(!log.contains("Ann Example"), "{log}");
    assert!(!log.contains("5557654321"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn allow_from_prefixes_allow_one_channel_and_pairing_is_per_channel() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let cfg = config(
        &t,
        &twilio,
        r#"dmPolicy: "allowlist", allowFrom: ["+15550000001", "sms:+15550000002", "whatsapp:+15550000003"]"#,
    );
    let gw = Gateway::start(&cfg);
    let mut agent = TestAgent::connect(&agent_sock(&t));
    let cases: [(&str, bool, bool); 3] = [
        // (number, SMS reaches the agent, WhatsApp reaches the agent)
        ("+15550000001", true, true),
        ("+15550000002", true, false),
        ("+15550000003", false, true),
    ];
    let mut n = 10;
    let mut want = Vec::new();
    for (number, sms, whatsapp) in cases {
        n += 1;
        assert_eq!(gw.admit(&sid(n), number, "by sms").await, 200);
        if sms {
            want.push((sid(n), "sms"));
        }
        n += 1;
        assert_eq!(admit_wa(&gw, &sid(n), number, "by whatsapp").await, 200);
        if whatsapp {
            want.push((sid(n), "whatsapp"));
        }
    }
    let mut got = Vec::new();
    for _ in 0..want.len() {
        let m = agent.next_of("message");
        agent.send(json!({"type": "ack", "id": m["id"]}));
        got.push((
            m["id"].as_str().unwrap().to_string(),
            if m["channel"] == "sms" {
                "sms"
            } else {
                "whatsapp"
            },
        ));
    }
    agent.assert_no_more(&gw, &cfg, "a sender outside its channel's allowFrom");
    got.sort();
    assert_eq!(got, want);
    drop(gw);

    // Pairing: a number approved on SMS is a stranger on WhatsApp, and gets its
    // own code there.
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let cfg = config(&t, &twilio, r#"dmPolicy: "pairing""#);
    let gw = Gateway::start(&cfg);
    let mut agent = TestAgent::connect(&agent_sock(&t));
    let sends = admit_and_wait_sends(
        &gw,
        &twilio,
        (&sid(30), PERSON, "hi"),
        1,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(sends[0].field("To"), Some(PERSON));
    let code = |body: &str| {
        body.split(|c: char| !c.is_ascii_alphanumeric())
            .find(|w| {
                w.len() == 8
                    && w.chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            })
            .unwrap()
            .to_string()
    };
    let sms_code = code(sends[0].field("Body").unwrap());
    let out = cli(&cfg, &["pairing", "approve", "sms", &sms_code]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    twilio.wait_sends(2, Duration::from_secs(10));
    assert_eq!(admit_wa(&gw, &sid(31), PERSON, "hi on whatsapp").await, 200);
    let sends = twilio.wait_sends(3, Duration::from_secs(10));
    assert_eq!(sends[2].field("To"), Some(wa(PERSON).as_str()));
    assert_eq!(sends[2].field("From"), Some(wa(WA_FROM).as_str()));
    let wa_code = code(sends[2].field("Body").unwrap());
    assert_ne!(wa_code, sms_code);
    // SMS reaches the agent; WhatsApp does not until its own code is approved.
    assert_eq!(gw.admit(&sid(32), PERSON, "sms works").await, 200);
    assert_eq!(agent.next_of("message")["channel"], "sms");
    let out = cli(&cfg, &["pairing", "approve", "whatsapp", &wa_code]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sends = twilio.wait_sends(4, Duration::from_secs(10));
    assert_eq!(
        sends[3].field("To"),
        Some(wa(PERSON).as_str()),
        "approved on WhatsApp"
    );
    assert_eq!(admit_wa(&gw, &sid(33), PERSON, "now whatsapp").await, 200);
    let m = agent.next_of("message");
    assert_eq!(
        (m["channel"].as_str(), m["text"].as_str()),
        (Some("whatsapp"), Some("now whatsapp"))
    );

    // STOP on WhatsApp opts out of WhatsApp only.
    assert_eq!(admit_wa(&gw, &sid(34), PERSON, "STOP").await, 200);
    agent.send(json!({"type": "send", "to": wa(PERSON), "text": "x", "ref": "w"}));
    let e = agent.next_of("error");
    assert_eq!(
        (e["ref"].as_str(), e["code"].as_u64()),
        (Some("w"), Some(21610)),
        "{e}"
    );
    agent.send(json!({"type": "send", "to": PERSON, "text": "y", "ref": "s"}));
    assert_eq!(agent.next_of("sent")["ref"], "s");
}

/// A WhatsApp webhook on an account without WhatsApp is kept, not processed.
#[tokio::test(flavor = "multi_thread")]
async fn whatsapp_on_an_account_without_it_is_not_processed() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let cfg = t.config(&twilio, r#"dmPolicy: "open", allowFrom: ["*"]"#);
    let gw = Gateway::start(&cfg);
    let mut agent = TestAgent::connect(&agent_sock(&t));
    assert_eq!(admit_wa(&gw, &sid(40), PERSON, "hello").await, 200);
    agent.assert_no_more(
        &gw,
        &cfg,
        "a WhatsApp message for an account without WhatsApp",
    );
    assert!(gw.log().contains("WhatsApp is not enabled"), "{}", gw.log());
    agent.send(json!({"type": "send", "to": wa(PERSON), "text": "x", "ref": "r"}));
    let e = agent.next_of("error");
    assert!(
        e["message"].as_str().unwrap().contains("no WhatsApp"),
        "{e}"
    );
    assert!(twilio.sends().is_empty());
}
