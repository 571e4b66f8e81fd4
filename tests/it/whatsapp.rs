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
    let mut agent = TestAgent::connect(&t.agent_sock());

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
    let mut agent = TestAgent::connect(&t.agent_sock());
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
    let mut agent = TestAgent::connect(&t.agent_sock());
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
    let mut agent = TestAgent::connect(&t.agent_sock());
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

// ---- the 24-hour window (CONTRACT §12) ------------------------------------------------

const HX: &str = "HX0123456789abcdef0123456789abcdef";
/// The window the tests run with: short, so "more than the window later" is a wait
/// of seconds on the clock, not a day.
const WINDOW_SECS: u64 = 2;

fn window_env() -> [(&'static str, &'static str); 1] {
    [("SMSGATE_WHATSAPP_WINDOW_SECS", "2")]
}

fn template_config(t: &TestDir, twilio: &FakeTwilio, template: bool) -> PathBuf {
    let templates = if template {
        format!(r#", templates: {{ reengage: "{HX}" }}"#)
    } else {
        String::new()
    };
    t.config(
        twilio,
        &format!(
            r#"dmPolicy: "open", allowFrom: ["*"], allowTo: ["*"], whatsapp: {{ enabled: true, from: "{WA_FROM}"{templates} }}"#
        ),
    )
}

/// Waits, on the clock, until the window since `since` has passed (a condition on
/// time, not a sleep standing in for "nothing happened").
fn wait_past_window(since: std::time::Instant) {
    let past = since + Duration::from_millis(WINDOW_SECS * 1000 + 200);
    assert!(wait_until(Duration::from_secs(WINDOW_SECS + 5), || {
        std::time::Instant::now() >= past
    }));
}

/// The person wrote, then was silent longer than the window; the agent answers.
async fn message_then_silence(gw: &Gateway, agent: &mut TestAgent, n: u32) -> serde_json::Value {
    let at = std::time::Instant::now();
    assert_eq!(admit_wa(gw, &sid(n), PERSON, "hello").await, 200);
    let m = agent.next_of("message");
    wait_past_window(at);
    m
}

fn bodies_to(twilio: &FakeTwilio, to: &str) -> Vec<Option<String>> {
    twilio
        .sends_to(to)
        .iter()
        .map(|r| r.field("Body").map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn outside_the_window_the_template_goes_and_the_text_waits_for_the_answer() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let cfg = template_config(&t, &twilio, true);
    let gw = Gateway::start_with(&cfg, &window_env());
    let mut agent = TestAgent::connect(&t.agent_sock());
    let m = message_then_silence(&gw, &mut agent, 50).await;

    let text = format!("**Your report** is ready: {}", "x".repeat(200));
    agent.send(json!({"type": "reply", "id": m["id"], "text": text}));
    let e = agent.next_of("error");
    assert_eq!(e["id"], m["id"]);
    assert!(e["message"].as_str().unwrap().contains("held"), "{e}");
    let sends = twilio.wait_sends(1, Duration::from_secs(10));
    let tpl = &sends[0];
    assert_eq!(tpl.field("To"), Some(wa(PERSON).as_str()));
    assert_eq!(tpl.field("From"), Some(wa(WA_FROM).as_str()));
    assert_eq!(tpl.field("ContentSid"), Some(HX));
    let vars: serde_json::Value =
        serde_json::from_str(tpl.field("ContentVariables").unwrap()).unwrap();
    let held_body = format!("*Your report* is ready: {}", "x".repeat(200));
    assert_eq!(
        vars["1"].as_str().unwrap(),
        held_body.chars().take(100).collect::<String>()
    );
    assert_eq!(tpl.field("Body"), None, "a template goes without Body");
    assert!(tpl.fields("MediaUrl").is_empty());

    // A second text while the first is held: held behind it, no second template.
    agent.send(json!({"type": "send", "to": wa(PERSON), "text": "and one more", "ref": "s2"}));
    let e = agent.next_of("error");
    assert_eq!(e["ref"], "s2");
    agent.assert_no_more(&gw, &cfg, "nothing else while held");
    assert_eq!(twilio.sends().len(), 1, "one template for one silence");
    let held: Vec<_> = queue_list(&cfg)
        .into_iter()
        .filter(|e| e["state"] == "awaiting-reply")
        .collect();
    assert_eq!(held.len(), 2, "queue list shows the held texts: {held:?}");

    // The person answers: both held texts go, once, in order.
    assert_eq!(admit_wa(&gw, &sid(51), PERSON, "ok, send it").await, 200);
    let again = agent.next_of("message");
    assert_eq!(again["text"], "ok, send it");
    agent.send(json!({"type": "ack", "id": again["id"]}));
    twilio.wait_sends(3, Duration::from_secs(10));
    agent.assert_no_more(
        &gw,
        &cfg,
        "the held texts are sent without a word to the agent",
    );
    assert_eq!(
        bodies_to(&twilio, &wa(PERSON)),
        [None, Some(held_body), Some("and one more".to_string())]
    );
    // A duplicate of the answer (Twilio retries) releases nothing twice.
    assert_eq!(admit_wa(&gw, &sid(51), PERSON, "ok, send it").await, 200);
    assert!(gw.wait_quiet(&cfg, Duration::from_secs(10)));
    assert_eq!(twilio.sends().len(), 3);
}

/// Texts held outside the window count against `outboundLimits.maxHeld`: an agent
/// writing to someone who never answers cannot fill the store.
#[tokio::test(flavor = "multi_thread")]
async fn held_whatsapp_texts_count_against_max_held() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let cfg = t.config(
        &twilio,
        &format!(
            r#"dmPolicy: "open", allowFrom: ["*"], allowTo: ["*"], outboundLimits: {{ maxHeld: 2 }}, whatsapp: {{ enabled: true, from: "{WA_FROM}", templates: {{ reengage: "{HX}" }} }}"#
        ),
    );
    let gw = Gateway::start_with(&cfg, &window_env());
    let mut agent = TestAgent::connect(&t.agent_sock());
    let m = message_then_silence(&gw, &mut agent, 55).await;
    agent.send(json!({"type": "ack", "id": m["id"]}));
    for r in ["h1", "h2", "h3"] {
        agent.send(json!({"type": "send", "to": wa(PERSON), "text": r, "ref": r}));
        let e = agent.next_of("error");
        assert_eq!(e["ref"], r, "{e}");
        let message = e["message"].as_str().unwrap();
        if r == "h3" {
            assert!(
                message.contains("outboundLimits.maxHeld = 2")
                    && message.contains("nothing was stored"),
                "{e}"
            );
        } else {
            assert!(message.starts_with("held"), "{e}");
        }
    }
    assert!(gw.wait_quiet(&cfg, Duration::from_secs(10)));
    let held: Vec<_> = queue_list(&cfg)
        .into_iter()
        .filter(|e| e["state"] == "awaiting-reply")
        .collect();
    assert_eq!(held.len(), 2, "the third is not stored: {held:?}");
    assert_eq!(twilio.sends().len(), 1, "one template");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_text_survives_kill_9_and_is_sent_exactly_once() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let cfg = template_config(&t, &twilio, true);
    let gw = Gateway::start_with(&cfg, &window_env());
    let mut agent = TestAgent::connect(&t.agent_sock());
    let m = message_then_silence(&gw, &mut agent, 60).await;
    agent.send(json!({"type": "reply", "id": m["id"], "text": "held across a crash"}));
    agent.next_of("error");
    twilio.wait_sends(1, Duration::from_secs(10));
    drop(agent);
    gw.kill9();

    let gw = Gateway::start_with(&cfg, &window_env());
    let mut agent = TestAgent::connect(&t.agent_sock());
    assert!(gw.wait_quiet(&cfg, Duration::from_secs(10)));
    assert_eq!(twilio.sends().len(), 1, "held, not sent, after the restart");
    assert_eq!(admit_wa(&gw, &sid(61), PERSON, "back").await, 200);
    let back = agent.next_of("message");
    agent.send(json!({"type": "ack", "id": back["id"]}));
    twilio.wait_sends(2, Duration::from_secs(10));
    assert!(gw.wait_quiet(&cfg, Duration::from_secs(10)));
    drop(agent);
    gw.kill9();

    // Killed again once it went: it does not go twice, nor is it held again.
    let gw = Gateway::start_with(&cfg, &window_env());
    assert!(gw.wait_quiet(&cfg, Duration::from_secs(10)));
    assert_eq!(
        bodies_to(&twilio, &wa(PERSON)),
        [None, Some("held across a crash".to_string())]
    );
    drop(gw);
    let store = smsgate::store::Store::open(&t.state()).unwrap();
    let person = smsgate::phone::E164::parse_address(&wa(PERSON)).unwrap();
    assert!(store.whatsapp_held("default", &person).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_template_the_agent_gets_63016_and_its_hint() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let cfg = template_config(&t, &twilio, false);
    let gw = Gateway::start_with(&cfg, &window_env());
    let mut agent = TestAgent::connect(&t.agent_sock());
    let m = message_then_silence(&gw, &mut agent, 70).await;
    agent.send(json!({"type": "reply", "id": m["id"], "text": "too late"}));
    let e = agent.next_of("error");
    assert_eq!(e["id"], m["id"]);
    assert_eq!(e["code"], 63016, "{e}");
    assert!(e["hint"].as_str().unwrap().contains("template"), "{e}");
    // Never sent to a number nobody has heard from either.
    agent.send(json!({"type": "send", "to": "+15550009999", "channel": "whatsapp", "text": "cold", "ref": "c"}));
    let e = agent.next_of("error");
    assert_eq!(
        (e["ref"].as_str(), e["code"].as_u64()),
        (Some("c"), Some(63016)),
        "{e}"
    );
    agent.assert_no_more(&gw, &cfg, "nothing more");
    assert!(
        twilio.sends().is_empty(),
        "nothing attempted outside the window"
    );
    // SMS to the same number is not affected.
    agent.send(json!({"type": "send", "to": PERSON, "text": "by sms", "ref": "s"}));
    assert_eq!(agent.next_of("sent")["ref"], "s");
}

#[tokio::test(flavor = "multi_thread")]
async fn twilios_own_63016_is_handled_like_ours() {
    // With a template: Twilio refuses the text (its clock says the window closed), so
    // the template goes and the text waits for the answer.
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let cfg = template_config(&t, &twilio, true);
    let gw = Gateway::start(&cfg);
    let mut agent = TestAgent::connect(&t.agent_sock());
    assert_eq!(admit_wa(&gw, &sid(80), PERSON, "hi").await, 200);
    let m = agent.next_of("message");
    twilio.push(twilio_error(63016, 400));
    agent.send(json!({"type": "reply", "id": m["id"], "text": "refused by twilio"}));
    assert!(agent.next_of("error")["message"]
        .as_str()
        .unwrap()
        .contains("held"));
    let sends = twilio.wait_sends(2, Duration::from_secs(10));
    assert_eq!(sends[0].field("Body"), Some("refused by twilio"));
    assert_eq!(sends[1].field("ContentSid"), Some(HX));
    assert_eq!(sends[1].field("Body"), None);
    assert_eq!(admit_wa(&gw, &sid(81), PERSON, "answer").await, 200);
    let sends = twilio.wait_sends(3, Duration::from_secs(10));
    assert_eq!(sends[2].field("Body"), Some("refused by twilio"));
    drop(gw);

    // Without one: the agent gets 63016 with its hint.
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let cfg = template_config(&t, &twilio, false);
    let gw = Gateway::start(&cfg);
    let mut agent = TestAgent::connect(&t.agent_sock());
    assert_eq!(admit_wa(&gw, &sid(82), PERSON, "hi").await, 200);
    let m = agent.next_of("message");
    twilio.push(twilio_error(63016, 400));
    agent.send(json!({"type": "reply", "id": m["id"], "text": "refused"}));
    let e = agent.next_of("error");
    assert_eq!(e["code"], 63016, "{e}");
    assert!(e["hint"].as_str().is_some(), "{e}");
    agent.assert_no_more(&gw, &cfg, "one error");
    assert_eq!(twilio.sends().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn read_ranks_after_delivered_and_never_regresses() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let cfg = template_config(&t, &twilio, false);
    let gw = Gateway::start(&cfg);
    let mut agent = TestAgent::connect(&t.agent_sock());
    assert_eq!(admit_wa(&gw, &sid(90), PERSON, "hi").await, 200);
    let m = agent.next_of("message");
    agent.send(json!({"type": "reply", "id": m["id"], "text": "read me"}));
    let sent = agent.next_of("sent");
    let msid = sent["sids"][0].as_str().unwrap().to_string();
    let (from, to) = (wa(WA_FROM), wa(PERSON));
    for status in ["sent", "delivered", "read", "delivered", "sent"] {
        let params = [
            ("MessageSid", msid.as_str()),
            ("MessageStatus", status),
            ("AccountSid", SID),
            ("From", from.as_str()),
            ("To", to.as_str()),
        ];
        assert_eq!(post_signed(&gw, "/webhooks/sms", &params).await.0, 200);
    }
    let seen: Vec<String> = (0..3)
        .map(|_| {
            agent.next_of("status")["status"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(seen, ["sent", "delivered", "read"]);
    agent.assert_no_more(&gw, &cfg, "a late delivered or sent after read");
    drop(gw);
    let store = smsgate::store::Store::open(&t.state()).unwrap();
    assert_eq!(
        store.delivery_status(&msid).unwrap().as_deref(),
        Some("read")
    );
}

// ---- probe and setup (CONTRACT §12) ----------------------------------------------------

const PN: &str = "PN0123456789abcdef0123456789abcdef";

fn probe_twilio(sms_url: &str, messages: serde_json::Value) -> FakeTwilio {
    let twilio = FakeTwilio::start();
    twilio.serve_account(messages);
    twilio.route("GET", &format!("/2010-04-01/Accounts/{SID}/IncomingPhoneNumbers.json"), 200, json!({
        "incoming_phone_numbers": [{"sid": PN, "phone_number": FROM, "sms_url": sms_url, "sms_method": "POST", "sms_application_sid": ""}]
    }));
    twilio.route(
        "POST",
        &format!("/2010-04-01/Accounts/{SID}/IncomingPhoneNumbers/{PN}.json"),
        200,
        json!({ "sid": PN }),
    );
    twilio
}

fn probe_json(cfg: &std::path::Path) -> serde_json::Value {
    let out = cli(cfg, &["channels", "status", "--probe", "--json"]);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}\n{}", stdout(&out), stderr(&out)))
}

fn whatsapp_check(v: &serde_json::Value) -> serde_json::Value {
    v["accounts"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "whatsapp")
        .cloned()
        .unwrap_or_else(|| panic!("no whatsapp check: {v}"))
}

#[test]
fn probe_and_setup_check_and_set_the_whatsapp_sender() {
    // The Sandbox: set in the Console, said so, and not failed.
    let t = TestDir::new();
    let twilio = probe_twilio(PUBLIC, json!([]));
    let cfg = t.config(
        &twilio,
        &format!(r#"whatsapp: {{ enabled: true, from: "{WA_FROM}" }}"#),
    );
    let c = whatsapp_check(&probe_json(&cfg));
    assert_eq!(c["status"], "skipped", "{c}");
    assert!(c["detail"].as_str().unwrap().contains("Sandbox"), "{c}");
    let out = cli(&cfg, &["channels", "setup", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Sandbox"), "{}", stdout(&out));

    // The SMS number is the WhatsApp sender too: its webhook covers both.
    let t = TestDir::new();
    let cfg = t.config(&twilio, "whatsapp: { enabled: true }");
    let c = whatsapp_check(&probe_json(&cfg));
    assert_eq!(c["status"], "ok", "{c}");
    assert!(c["detail"].as_str().unwrap().contains("SMS number"), "{c}");

    // A WhatsApp number of its own: its webhook is checked and set, and our recent
    // WhatsApp failures are counted by code.
    let own = "+15550002222";
    let failed = |code: u32| json!({"status": "failed", "error_code": code, "direction": "outbound-api", "to": "whatsapp:+15557654321"});
    let twilio = probe_twilio(
        "https://old.example.com/sms",
        json!([failed(63016), failed(63016), {"status": "failed", "error_code": 30007, "direction": "outbound-api", "to": "+15557654321"}]),
    );
    let t = TestDir::new();
    let cfg = t.config(
        &twilio,
        &format!(r#"whatsapp: {{ enabled: true, from: "{own}" }}"#),
    );
    let v = probe_json(&cfg);
    let c = whatsapp_check(&v);
    assert_eq!(c["status"], "mismatch", "{c}");
    assert!(twilio.requests().iter().any(|r| r
        .query
        .as_deref()
        .is_some_and(|q| q.contains("PhoneNumber=%2B15550002222"))));
    let out = cli(&cfg, &["channels", "setup", "--dry-run"]);
    let text = stdout(&out);
    assert!(
        text.contains(&format!("WhatsApp sender: number {own}")),
        "{text}"
    );
    assert!(
        text.contains(
            "SmsUrl: https://old.example.com/sms -> https://sms.example.test/webhooks/sms"
        ),
        "{text}"
    );
    let out = cli(&cfg, &["channels", "setup"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let posts: Vec<_> = twilio
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 2, "the SMS number and the WhatsApp number");
    assert!(posts.iter().all(|p| p.field("SmsUrl") == Some(PUBLIC)));

    // Its webhook right, its recent 63016s show with their hint.
    let twilio = probe_twilio(PUBLIC, json!([failed(63016), failed(63016)]));
    let t = TestDir::new();
    let cfg = t.config(
        &twilio,
        &format!(r#"whatsapp: {{ enabled: true, from: "{own}" }}"#),
    );
    let v = probe_json(&cfg);
    let c = whatsapp_check(&v);
    assert_eq!(c["status"], "error", "{c}");
    assert_eq!(c["code"], 63016, "{c}");
    let hints = v["accounts"][0]["hints"].to_string();
    assert!(hints.contains("Error 63016"), "{hints}");
}
