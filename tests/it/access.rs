//! Who gets through: pairing (daemon up and down), the cap, policies, STOP/START, and
//! the outbound queue that carries pairing texts.

use crate::common;

use std::time::Duration;

use common::*;

fn json(o: &std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "command failed: {}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn pairing_flow_with_daemon_up() {
    let (t, twilio, config, gw) = gateway("");
    let stranger = "+15557654321";
    let sends = admit_and_wait_sends(
        &gw,
        &twilio,
        ("SM60000000000000000000000000000001", stranger, "hi"),
        1,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(sends.len(), 1);
    let code = code_in(sends[0].field("Body").unwrap());
    assert_eq!(sends[0].field("From"), Some(FROM));
    assert_eq!(
        sends[0].authorization.as_deref(),
        Some(format!("Basic {}", base64_of(&format!("{SID}:{TOKEN}"))).as_str())
    );

    // Repeats while pending: no new code.
    assert_eq!(
        gw.admit("SM60000000000000000000000000000002", stranger, "hello?")
            .await,
        200
    );
    assert!(gw.wait_log("still pending", Duration::from_secs(5)));

    let list = json(&cli(&config, &["pairing", "list", "sms", "--json"]));
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["code"], code.as_str());
    assert_eq!(list[0]["sender"], stranger);
    assert_eq!(list[0]["account"], "default");
    for key in ["createdAt", "expiresAt"] {
        let v = list[0][key].as_str().unwrap();
        assert!(
            time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339).is_ok(),
            "{key}: {v}"
        );
    }
    // Codes are case-insensitive.
    let out = cli(
        &config,
        &["pairing", "approve", "sms", &code.to_lowercase()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let sends = twilio.wait_sends(2, Duration::from_secs(10));
    assert_eq!(sends.len(), 2);
    assert_eq!(sends[1].field("To"), Some(stranger));
    assert!(sends[1].field("Body").unwrap().contains("approved"));
    assert!(json(&cli(&config, &["pairing", "list", "--json"]))
        .as_array()
        .unwrap()
        .is_empty());
    let senders = json(&cli(&config, &["senders", "list", "--json"]));
    assert_eq!(senders[0]["sender"], stranger);

    // Now the message gets through.
    assert_eq!(
        gw.admit("SM60000000000000000000000000000003", stranger, "let me in")
            .await,
        200
    );
    assert!(gw.wait_log("queued for the agent", Duration::from_secs(5)));
    // An unknown code is an error on stderr, exit 1.
    let out = cli(&config, &["pairing", "approve", "ZZZZZZZZ"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no pending pairing request"));
    // Revoke: the sender is a stranger again.
    assert!(cli(&config, &["senders", "revoke", stranger])
        .status
        .success());
    assert!(json(&cli(&config, &["senders", "list", "--json"]))
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(
        gw.admit("SM60000000000000000000000000000004", stranger, "again")
            .await,
        200
    );
    twilio.wait_sends(3, Duration::from_secs(10));
    assert_eq!(gw.stop().code(), Some(0));
    assert_eq!(t.inbox_ids(), ["SM60000000000000000000000000000003"]);
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test(flavor = "multi_thread")]
async fn pairing_approved_while_daemon_down_texts_when_it_runs_again() {
    let (_t, twilio, config, gw) = gateway("");
    let stranger = "+15557650001";
    assert_eq!(
        gw.admit("SM61000000000000000000000000000001", stranger, "hi")
            .await,
        200
    );
    let code = code_in(
        twilio.wait_sends(1, Duration::from_secs(10))[0]
            .field("Body")
            .unwrap(),
    );
    assert_eq!(gw.stop().code(), Some(0));

    // Daemon down: the CLI works on the store itself.
    let list = json(&cli(&config, &["pairing", "list", "--json"]));
    assert_eq!(list[0]["code"], code.as_str());
    let out = cli(&config, &["pairing", "approve", &code]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        twilio.sends().len(),
        1,
        "nothing is sent while the daemon is down"
    );

    let gw = Gateway::start(&config);
    let sends = twilio.wait_sends(2, Duration::from_secs(10));
    assert!(sends[1].field("Body").unwrap().contains("approved"));
    assert_eq!(
        gw.admit("SM61000000000000000000000000000002", stranger, "in")
            .await,
        200
    );
    assert!(gw.wait_log("queued for the agent", Duration::from_secs(5)));

    // Reject works daemon-down too.
    let other = "+15557650002";
    assert_eq!(
        gw.admit("SM61000000000000000000000000000003", other, "hi")
            .await,
        200
    );
    let code2 = code_in(
        twilio.wait_sends(3, Duration::from_secs(10))[2]
            .field("Body")
            .unwrap(),
    );
    assert_eq!(gw.stop().code(), Some(0));
    assert!(cli(&config, &["pairing", "reject", "sms", &code2])
        .status
        .success());
    assert!(json(&cli(&config, &["pairing", "list", "--json"]))
        .as_array()
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn at_most_three_pending_and_no_sms_beyond() {
    let (_t, twilio, config, gw) = gateway("");
    for i in 1..=5 {
        let sid = format!("SM6200000000000000000000000000000{i}");
        let from = format!("+1555765100{i}");
        assert_eq!(gw.admit(&sid, &from, "hi").await, 200);
    }
    assert!(gw.wait_log(
        "pairing requests are already pending",
        Duration::from_secs(5)
    ));
    twilio.wait_sends(3, Duration::from_secs(10));
    // Quiescence, not a sleep: nothing waits for the agent or to be sent.
    assert!(gw.wait_quiet(&config, Duration::from_secs(10)));
    assert_eq!(twilio.sends().len(), 3, "only three codes are texted");
    assert_eq!(
        json(&cli(&config, &["pairing", "list", "--json"]))
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(gw.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn allowlist_disabled_and_open_policies() {
    let twilio = FakeTwilio::start();
    let cases = [
        (
            r#"dmPolicy: "allowlist", allowFrom: ["+15557652001"]"#,
            vec!["SM63000000000000000000000000000001"],
        ),
        (
            r#"dmPolicy: "disabled", allowFrom: ["+15557652001"]"#,
            vec![],
        ),
        (
            r#"dmPolicy: "open", allowFrom: ["*"]"#,
            vec![
                "SM63000000000000000000000000000001",
                "SM63000000000000000000000000000002",
            ],
        ),
        (
            r#"dmPolicy: "pairing", allowFrom: ["sms:+15557652001"]"#,
            vec!["SM63000000000000000000000000000001"],
        ),
    ];
    for (extra, want) in cases {
        let t = TestDir::new();
        let gw = Gateway::start(&t.config(&twilio, extra));
        let before = twilio.sends().len();
        assert_eq!(
            gw.admit(
                "SM63000000000000000000000000000001",
                "+15557652001",
                "listed"
            )
            .await,
            200
        );
        assert_eq!(
            gw.admit(
                "SM63000000000000000000000000000002",
                "+15557652002",
                "stranger"
            )
            .await,
            200
        );
        let pairing = extra.contains("pairing");
        if pairing {
            twilio.wait_sends(before + 1, Duration::from_secs(10));
        }
        assert_eq!(gw.stop().code(), Some(0));
        assert_eq!(t.inbox_ids(), want, "{extra}");
        assert_eq!(
            twilio.sends().len(),
            before + usize::from(pairing),
            "{extra}: only pairing texts strangers"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_means_no_sms_and_start_allows_it_again() {
    let (t, twilio, config, gw) = gateway("");
    let who = "+15557653001";
    assert_eq!(
        gw.admit("SM64000000000000000000000000000001", who, " Stop ")
            .await,
        200
    );
    assert!(gw.wait_log("opted out", Duration::from_secs(5)));
    assert_eq!(
        gw.admit("SM64000000000000000000000000000002", who, "hi")
            .await,
        200
    );
    assert!(gw.wait_log("no pairing code texted", Duration::from_secs(5)));
    // Approving an opted-out sender sends no approval text either.
    let list = json(&cli(&config, &["pairing", "list", "--json"]));
    let code = list[0]["code"].as_str().unwrap().to_string();
    let approved = json(&cli(&config, &["pairing", "approve", &code, "--json"]));
    assert_eq!(approved["texted"], false);
    // Quiescence, not a sleep: nothing waits for the agent or to be sent.
    assert!(gw.wait_quiet(&config, Duration::from_secs(10)));
    assert!(
        twilio.sends().is_empty(),
        "nothing is sent to an opted-out number"
    );

    assert!(cli(&config, &["senders", "revoke", who]).status.success());
    assert_eq!(
        gw.admit("SM64000000000000000000000000000003", who, "START")
            .await,
        200
    );
    assert!(gw.wait_log("opted back in", Duration::from_secs(5)));
    let sends = admit_and_wait_sends(
        &gw,
        &twilio,
        ("SM64000000000000000000000000000004", who, "hi again"),
        1,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].field("To"), Some(who));
    assert_eq!(gw.stop().code(), Some(0));
    // The keywords themselves never reach the agent.
    assert!(t.inbox_ids().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn sends_retry_on_429_and_5xx_and_stop_on_21610() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    twilio.push(Canned::Json(500, "oops".into(), None));
    twilio.push(Canned::Json(
        429,
        r#"{"code":20429,"message":"Too Many Requests"}"#.into(),
        Some(1),
    ));
    let config = t.config(&twilio, "");
    let gw = Gateway::start(&config);
    let sends = admit_and_wait_sends(
        &gw,
        &twilio,
        ("SM65000000000000000000000000000001", "+15557654001", "hi"),
        3,
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(sends.len(), 3);
    assert!(
        sends[1].at - sends[0].at < Duration::from_secs(2),
        "first retry within 2 s"
    );
    assert!(
        sends[2].at - sends[1].at >= Duration::from_millis(950),
        "Retry-After honoured"
    );
    assert_eq!(sends[0].field("Body"), sends[2].field("Body"));

    // 21610: the recipient is marked opted out; nothing more is sent to them.
    twilio.push(twilio_error(21610, 400));
    let who = "+15557654002";
    assert_eq!(
        gw.admit("SM65000000000000000000000000000002", who, "hi")
            .await,
        200
    );
    twilio.wait_sends(4, Duration::from_secs(10));
    assert!(gw.wait_log("opted out at Twilio (21610)", Duration::from_secs(5)));
    let log = gw.log();
    assert!(
        log.contains("error 21610"),
        "Twilio's error code is logged:\n{log}"
    );
    assert!(
        !log.contains(who) && !log.contains("+15557654321"),
        "numbers are redacted in logs"
    );

    // A request that times out after being sent is not retried: outcome unknown.
    twilio.push(Canned::Hang);
    assert_eq!(
        gw.admit("SM65000000000000000000000000000003", "+15557654003", "hi")
            .await,
        200
    );
    assert!(gw.wait_log("outcome unknown", Duration::from_secs(10)));
    // Quiescence, not a sleep: nothing waits for the agent or to be sent.
    assert!(gw.wait_quiet(&config, Duration::from_secs(10)));
    assert_eq!(twilio.sends_to("+15557654003").len(), 1, "never sent twice");
    assert_eq!(gw.stop().code(), Some(0));
    let store = t.store();
    assert!(store
        .is_opted_out("default", &smsgate::phone::E164::parse(who).unwrap())
        .unwrap());
    let states: Vec<_> = store
        .outbound()
        .unwrap()
        .into_iter()
        .map(|r| r.state)
        .collect();
    use smsgate::store::OutboundState::*;
    assert_eq!(states, [Failed, Unknown]);
}

/// Issue 9, finding 10: `Stop.`, full-width `ＳＴＯＰ` and `STOP` + a zero-width space opt
/// the sender out and never reach the agent.
#[tokio::test(flavor = "multi_thread")]
async fn stop_variants_opt_out_and_are_not_forwarded() {
    let (t, twilio, _, gw) = gateway(OPEN);
    let mut agent = TestAgent::connect(&t.state().join("agent.sock"));
    let variants = [
        ("+15557653101", "Stop."),
        ("+15557653102", "ＳＴＯＰ"),
        ("+15557653103", "STOP\u{200B}"),
        ("+15557653104", "\u{FEFF}“unsubscribe”"),
    ];
    for (i, (who, body)) in variants.iter().enumerate() {
        let sid = format!("SM66{i:030}");
        assert_eq!(gw.admit(&sid, who, body).await, 200);
    }
    // Messages are processed oldest first: the next one the agent sees is this.
    let after = inbound(
        "SM67000000000000000000000000000001",
        "+15557653199",
        "after",
    );
    assert_eq!(post_signed(&gw, "/webhooks/sms", &after).await.0, 200);
    assert_eq!(agent.next_of("message")["text"], "after");
    assert!(twilio.sends().is_empty(), "smsgate never answers STOP");
    assert_eq!(gw.stop().code(), Some(0));
    assert_eq!(t.inbox_ids(), ["SM67000000000000000000000000000001"]);
    let store = t.store();
    for (who, body) in variants {
        let n = smsgate::phone::E164::parse(who).unwrap();
        assert!(store.is_opted_out("default", &n).unwrap(), "{body:?}");
    }
}

/// CONTRACT §8: Twilio's Advanced Opt-Out `OptOutType` is authoritative, custom keywords
/// included: STOP opts out, START clears it, HELP is not forwarded; an unknown value is
/// logged and the message handled as if it had none. smsgate answers none of them.
#[tokio::test(flavor = "multi_thread")]
async fn opt_out_type_stop_start_help_with_custom_keywords() {
    let (t, twilio, _, gw) = gateway(OPEN);
    let mut agent = TestAgent::connect(&t.state().join("agent.sock"));
    let stays_out = "+15557653201";
    let comes_back = "+15557653202";
    let helped = "+15557653203";
    let odd = "+15557653204";
    let steps: [(&str, &str, &str, Option<&str>); 5] = [
        (
            "SM68000000000000000000000000000001",
            stays_out,
            "ARRET",
            Some("STOP"),
        ),
        (
            "SM68000000000000000000000000000002",
            comes_back,
            "ARRET",
            Some("STOP"),
        ),
        (
            "SM68000000000000000000000000000003",
            comes_back,
            "REPRENDRE",
            Some("START"),
        ),
        (
            "SM68000000000000000000000000000004",
            helped,
            "AIDE",
            Some("HELP"),
        ),
        (
            "SM68000000000000000000000000000005",
            odd,
            "bonjour",
            Some("MAYBE"),
        ),
    ];
    for (sid, who, body, opt) in steps {
        let mut p = inbound(sid, who, body);
        if let Some(opt) = opt {
            p.push(("OptOutType", opt));
        }
        assert_eq!(post_signed(&gw, "/webhooks/sms", &p).await.0, 200);
    }
    let after = inbound("SM68000000000000000000000000000006", odd, "after");
    assert_eq!(post_signed(&gw, "/webhooks/sms", &after).await.0, 200);
    // Only the message with an unknown OptOutType and the one after it get through.
    assert_eq!(agent.next_of("message")["text"], "bonjour");
    assert_eq!(agent.next_of("message")["text"], "after");
    assert!(gw.wait_log("unknown OptOutType", Duration::from_secs(5)));
    assert!(gw.wait_log("Twilio marked it HELP", Duration::from_secs(5)));
    assert!(twilio.sends().is_empty(), "smsgate never answers a keyword");
    assert_eq!(gw.stop().code(), Some(0));
    let store = t.store();
    let opted = |who: &str| {
        store
            .is_opted_out("default", &smsgate::phone::E164::parse(who).unwrap())
            .unwrap()
    };
    assert!(opted(stays_out));
    assert!(!opted(comes_back));
    assert!(!opted(helped));
    assert!(!opted(odd));
}

#[tokio::test(flavor = "multi_thread")]
async fn each_built_in_language_reaches_the_stranger_and_a_custom_text_wins() {
    let cases = [
        ("en", "Your pairing code is"),
        ("hi", "पेयरिंग कोड"),
        ("zh", "配对码"),
        ("ja", "ペアリングコード"),
        ("ko", "페어링 코드"),
    ];
    for (i, (lang, marker)) in cases.iter().enumerate() {
        let (_t, twilio, config, gw) = gateway(&format!(r#"language: "{lang}""#));
        let stranger = format!("+1555767{i:04}");
        assert_eq!(gw.admit(&format!("SMe{i:031}"), &stranger, "hi").await, 200);
        let sent = twilio.wait_sends(1, Duration::from_secs(10));
        let body = sent[0].field("Body").unwrap();
        assert!(body.contains(marker), "{lang}: {body}");
        let list: serde_json::Value =
            serde_json::from_slice(&cli(&config, &["pairing", "list", "--json"]).stdout).unwrap();
        assert!(
            body.contains(list[0]["code"].as_str().unwrap()),
            "{lang}: {body}"
        );
    }
    // A custom text overrides the language's, for the approval too.
    let (_t, twilio, config, gw) = gateway(
        r#"language: "ja", texts: { pairingCode: "Code: {code}", approved: "Welcome aboard." }"#,
    );
    assert_eq!(
        gw.admit("SMe1000000000000000000000000000009", "+15557670099", "hi")
            .await,
        200
    );
    let sent = twilio.wait_sends(1, Duration::from_secs(10));
    let code = sent[0]
        .field("Body")
        .unwrap()
        .strip_prefix("Code: ")
        .unwrap()
        .to_string();
    assert!(cli(&config, &["pairing", "approve", &code])
        .status
        .success());
    let sent = twilio.wait_sends(2, Duration::from_secs(10));
    assert_eq!(sent[1].field("Body"), Some("Welcome aboard."));
}
