//! Issue 22 item 1, CONTRACT §9 `allowTo`: whom the agent may text on its own, end to
//! end with the real daemon, a test agent on the socket and the recording fake Twilio;
//! and the E.164 rule (8 to 15 digits, never the gateway's own number) for every send.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// The agent's `send` to `to` (`None`: no `to`), and the answer line for it.
fn send(agent: &mut TestAgent, to: Option<&str>, r: &str) -> Value {
    let mut line = json!({"type": "send", "text": format!("text {r}"), "ref": r});
    if let Some(to) = to {
        line["to"] = json!(to);
    }
    agent.send(line);
    loop {
        let v = agent.next();
        if (v["type"] == "sent" || v["type"] == "error") && v["ref"] == r {
            return v;
        }
    }
}

fn assert_not_allowed(v: &Value, what: &str) {
    assert_eq!(v["type"], "error", "{what}: {v}");
    assert_eq!(v["code"], "not-allowed", "{what}: {v}");
    let m = v["message"].as_str().unwrap_or_default();
    assert!(
        m.contains("allowTo"),
        "{what}: the message names allowTo: {m}"
    );
}

/// An error that is not an allowTo refusal: the number itself is wrong.
fn assert_bad_number(v: &Value, needle: &str, what: &str) {
    assert_eq!(v["type"], "error", "{what}: {v}");
    assert_ne!(
        v["code"], "not-allowed",
        "{what}: not an allowTo matter: {v}"
    );
    let m = v["message"].as_str().unwrap_or_default();
    assert!(m.contains(needle), "{what}: wanted {needle:?} in {m}");
}

/// Nothing was stored for `to`: no outbound record of any state names it.
fn nothing_stored_for(t: &TestDir, numbers: &[&str]) {
    let store = t.store();
    for r in store.outbound().unwrap() {
        assert!(
            !numbers.contains(&r.to.as_str()),
            "a refused send was stored: {}",
            r.to
        );
    }
}

/// Unset `allowTo`: the agent may text the people the account knows (allowFrom numbers,
/// defaultTo, approved senders) and nobody else; a refused send stores nothing, answers
/// `not-allowed` and is logged with the number redacted. Revoking an approval takes the
/// person off the list at once.
#[tokio::test(flavor = "multi_thread")]
async fn unset_allow_to_is_the_people_the_account_knows() {
    let (t, twilio, config, gw) =
        gateway(r#"allowFrom: ["+15557654321"], defaultTo: "+15557650000""#);
    let mut agent = TestAgent::connect(&t.agent_sock());

    // A stranger pairs and is approved: now known.
    let paired = "+15557659876";
    let sends = admit_and_wait_sends(
        &gw,
        &twilio,
        ("SM22000000000000000000000000000001", paired, "hi"),
        1,
        Duration::from_secs(10),
    )
    .await;
    let code = code_in(sends[0].field("Body").unwrap());
    let out = cli(&config, &["pairing", "approve", &code]);
    assert!(out.status.success(), "{}", stderr(&out));
    twilio.wait_sends(2, Duration::from_secs(10));

    let stranger = "+15557651111";
    assert_not_allowed(&send(&mut agent, Some(stranger), "s1"), "a stranger");
    for (to, r) in [
        (Some("+15557654321"), "k1"),
        (None, "k2"),
        (Some(paired), "k3"),
    ] {
        let v = send(&mut agent, to, r);
        assert_eq!(v["type"], "sent", "{to:?}: {v}");
    }
    let out = cli(&config, &["senders", "revoke", paired]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_not_allowed(&send(&mut agent, Some(paired), "s2"), "a revoked sender");

    let tos: Vec<String> = twilio
        .sends()
        .iter()
        .skip(2)
        .map(|r| r.field("To").unwrap_or_default().to_string())
        .collect();
    assert_eq!(tos, ["+15557654321", "+15557650000", paired]);
    assert!(twilio.sends_to(stranger).is_empty());
    assert!(gw.wait_quiet(&config, Duration::from_secs(10)));
    let log = gw.log();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("the agent's send was refused"))
        .collect();
    assert_eq!(refused.len(), 2, "{log}");
    assert!(refused[0].contains("***1111"), "{}", refused[0]);
    assert!(
        !log.contains(stranger) && !log.contains(paired),
        "numbers are redacted in the log:\n{log}"
    );
    assert_eq!(gw.stop().code(), Some(0));
    nothing_stored_for(&t, &[stranger]);
}

/// Open mode's `"*"` in `allowFrom` does not widen `allowTo`; a reply always reaches
/// the person who texted, whatever `allowTo` says.
#[tokio::test(flavor = "multi_thread")]
async fn open_mode_does_not_widen_allow_to_and_replies_are_not_limited() {
    let (t, twilio, _, gw) = gateway(r#"dmPolicy: "open", allowFrom: ["*"], allowTo: ["+4420*"]"#);
    let mut agent = TestAgent::connect(&t.agent_sock());
    let stranger = "+15557654321";
    assert_eq!(
        gw.admit("SM22000000000000000000000000000011", stranger, "hello")
            .await,
        200
    );
    let m = agent.next_of("message");
    assert_not_allowed(&send(&mut agent, Some(stranger), "o1"), "open mode");
    agent.send(json!({"type": "reply", "id": m["id"], "text": "hi back"}));
    let sent = agent.next_of("sent");
    assert_eq!(sent["id"], m["id"]);
    assert_eq!(twilio.sends_to(stranger).len(), 1);
    assert_eq!(twilio.sends().len(), 1);
    assert_eq!(gw.stop().code(), Some(0));
}

/// A set `allowTo` replaces the default list; a hostile agent tries every way around
/// it: strangers, a prefix's edges, partial numbers and short codes, the gateway's own
/// number, prefixes, case and whitespace, look-alike digits. Only the listed go out.
#[tokio::test(flavor = "multi_thread")]
async fn a_set_allow_to_holds_against_a_hostile_agent() {
    let (t, twilio, config, gw) = gateway(
        r#"allowFrom: ["+15557650001"], defaultTo: "+15557650000",
    allowTo: ["+15557654321", "+4420*", "+1666*"]"#,
    );
    // The operator is told at start that defaultTo is left out.
    gw.assert_log_soon("allowTo does not include defaultTo", Duration::from_secs(5));
    let mut agent = TestAgent::connect(&t.agent_sock());

    enum Want {
        Sent(&'static str),
        NotAllowed,
        Bad(&'static str),
    }
    use Want::*;
    let cases: Vec<(Option<&str>, Want)> = vec![
        (Some("+15557654321"), Sent("+15557654321")),
        (Some(" SMS:+15557654321 "), Sent("+15557654321")),
        (Some("twilio-sms:+442012345678"), Sent("+442012345678")),
        (Some("+16661234567"), Sent("+16661234567")),
        // A stranger; a number one digit off a listed one; a prefix's neighbour.
        (Some("+15557650999"), NotAllowed),
        (Some("+15557654320"), NotAllowed),
        (Some("+442112345678"), NotAllowed),
        (Some("+4402012345678"), NotAllowed),
        // Known people do not count once allowTo is set: allowFrom, defaultTo.
        (Some("+15557650001"), NotAllowed),
        (None, NotAllowed),
        // Numbers that match a prefix but are no numbers: refused as such.
        (Some("+4420"), Bad("only 4 digits")),
        (Some("+16661"), Bad("only 5 digits")),
        (Some("+1555"), Bad("only 4 digits")),
        (Some("12345"), Bad("short code")),
        (Some("sms:12345"), Bad("short code")),
        (Some("+44201234567890123"), Bad("at most 15")),
        // The gateway's own number.
        (Some(FROM), Bad("own numbers")),
        (Some(" sms:+15550001111"), Bad("own numbers")),
        // Spellings that must not normalise into a listed number.
        (Some("+1 555 765 4321"), Bad("E.164")),
        (Some("+1555765432１"), Bad("E.164")),
        (Some("+015557654321"), Bad("E.164")),
        // A WhatsApp address (CONTRACT §12), on an account without WhatsApp.
        (Some("whatsapp:+15557654321"), Bad("no WhatsApp")),
        (Some("whatsapp:15557654321"), Bad("E.164")),
        (Some("sms:sms:+15557654321"), Bad("E.164")),
        (Some("+15557654321\u{200b}"), Bad("E.164")),
        // Surrounding whitespace is trimmed wherever a number is read: the same number.
        (Some("+15557654321\n"), Sent("+15557654321")),
        (Some("+4420*"), Bad("E.164")),
        (Some("*"), Bad("E.164")),
    ];
    let mut want_sent = Vec::new();
    for (i, (to, want)) in cases.iter().enumerate() {
        let r = format!("h{i}");
        let v = send(&mut agent, *to, &r);
        match want {
            Sent(n) => {
                assert_eq!(v["type"], "sent", "{to:?}: {v}");
                want_sent.push(*n);
            }
            NotAllowed => assert_not_allowed(&v, &format!("{to:?}")),
            Bad(needle) => assert_bad_number(&v, needle, &format!("{to:?}")),
        }
    }
    let tos: Vec<String> = twilio
        .sends()
        .iter()
        .map(|r| r.field("To").unwrap_or_default().to_string())
        .collect();
    assert_eq!(tos, want_sent, "only the listed numbers were texted");
    assert!(gw.wait_quiet(&config, Duration::from_secs(10)));
    let log = gw.log();
    for n in ["+15557650999", "+442112345678", "+15557650001"] {
        assert!(!log.contains(n), "{n} in the log:\n{log}");
    }
    assert_eq!(gw.stop().code(), Some(0));
    nothing_stored_for(&t, &["+15557650999", "+442112345678", "+15557650001"]);
}

/// `"*"` lets the agent text anyone, still never the gateway's own number (of any
/// account) nor a partial number; a reload (SIGHUP) picks up a changed `allowTo` at
/// once, and a reload with a bad one is refused and keeps the running list.
#[tokio::test(flavor = "multi_thread")]
async fn reload_picks_up_allow_to_and_star_still_refuses_own_and_short_numbers() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let with = |allow_to: &str| {
        t.config(
            &twilio,
            &format!(
                r#"{allow_to}
    accounts: {{ b: {{ fromNumber: "+15550002222", webhookPath: "/webhooks/b",
      publicWebhookUrl: "https://sms.example.test/webhooks/b" }} }},"#
            ),
        )
    };
    let config = with(r#"allowTo: ["+15557654321"],"#);
    let gw = Gateway::start(&config);
    let pid = gw.child.id().to_string();
    let hup = |n: usize| {
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap();
        assert!(
            wait_until(Duration::from_secs(10), || {
                let log = gw.log();
                log.matches("configuration reloaded").count()
                    + log.matches("reload refused").count()
                    >= n
            }),
            "{}",
            gw.log()
        );
    };
    let mut agent = TestAgent::connect(&t.agent_sock());
    let uk = "+442012345678";
    assert_not_allowed(&send(&mut agent, Some(uk), "r1"), "before the reload");

    with(r#"allowTo: ["+15557654321", "+44*"],"#);
    hup(1);
    assert_eq!(send(&mut agent, Some(uk), "r2")["type"], "sent");

    // A bad allowTo is refused with its path; the running list stays.
    with(r#"allowTo: ["+44*", "+1555"],"#);
    hup(2);
    gw.assert_log_has("reload refused");
    gw.assert_log_has("allowTo[1]");
    assert_eq!(send(&mut agent, Some(uk), "r3")["type"], "sent");

    // Unset: the known people only (none here but defaultTo, which is unset).
    with("");
    hup(3);
    assert_not_allowed(&send(&mut agent, Some(uk), "r4"), "after unsetting");

    with(r#"allowTo: ["*"],"#);
    hup(4);
    assert_eq!(
        send(&mut agent, Some("+819012345678"), "r5")["type"],
        "sent"
    );
    for (to, needle) in [
        (FROM, "own numbers"),
        ("+15550002222", "own numbers"),
        ("+1555", "only 4 digits"),
        ("55555", "short code"),
    ] {
        assert_bad_number(&send(&mut agent, Some(to), "r6"), needle, to);
    }
    assert_eq!(twilio.sends().len(), 3);
    assert!(twilio.sends_to(FROM).is_empty());
    assert_eq!(gw.stop().code(), Some(0));
}

/// The operator's `message send` is not limited by `allowTo`, but its destination must
/// be a full E.164 number and never the gateway's own, with or without the daemon.
#[tokio::test(flavor = "multi_thread")]
async fn message_send_ignores_allow_to_but_not_the_number_rules() {
    let (t, twilio, config) = configured(r#"allowTo: []"#);
    let bad = [
        ("+1555", "only 4 digits"),
        ("sms:12345", "short code"),
        ("+15550001111", "own numbers"),
        ("SMS:+15550001111", "own numbers"),
        ("+1 555 765 4321", "E.164"),
    ];
    // No daemon: straight to Twilio, the same rules.
    for (to, needle) in bad {
        let out = cli(
            &config,
            &["message", "send", "--target", to, "--message", "x"],
        );
        assert_eq!(out.status.code(), Some(1), "{to}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{to}: {}", stderr(&out));
    }
    assert!(twilio.sends().is_empty());

    let gw = Gateway::start(&config);
    let out = cli(
        &config,
        &[
            "message",
            "send",
            "--target",
            "sms:+15559990000",
            "--message",
            "from the operator",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(twilio.sends_to("+15559990000").len(), 1);
    for (to, needle) in bad {
        let out = cli(
            &config,
            &["message", "send", "--target", to, "--message", "x"],
        );
        assert_eq!(out.status.code(), Some(1), "{to}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{to}: {}", stderr(&out));
    }
    // The agent, with allowTo: [], texts nobody on its own.
    let mut agent = TestAgent::connect(&t.agent_sock());
    assert_not_allowed(&send(&mut agent, Some("+15559990000"), "m1"), "allowTo: []");
    assert_eq!(twilio.sends().len(), 1);
    assert_eq!(gw.stop().code(), Some(0));
}

/// `config validate` names every bad `allowTo` entry and number key by path, and
/// `config show` shows the list.
#[test]
fn config_validate_names_each_bad_entry_and_show_lists_allow_to() {
    let (t, twilio, config) = configured(
        r#"allowTo: ["+1555", "44*", "+15550001111", "+44*"], defaultTo: "12345",
    allowFrom: ["+15557654321", "+1234567"]"#,
    );
    let out = cli(&config, &["config", "validate"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for needle in [
        "channels.sms.allowTo[0]: \"+1555\" is not an E.164 phone number (only 4 digits",
        "channels.sms.allowTo[1]: \"44*\" is not a prefix pattern",
        "channels.sms.allowTo[2]: this is the account's own fromNumber",
        "channels.sms.defaultTo: \"12345\" is not an E.164 phone number (it looks like a short code",
        "channels.sms.allowFrom[1]: \"+1234567\" is not an E.164 phone number (only 7 digits",
    ] {
        assert!(err.contains(needle), "wanted {needle:?} in:\n{err}");
    }
    assert!(!err.contains("allowTo[3]"), "{err}");

    let config = t.config(&twilio, r#"allowTo: ["sms:+15557654321", "+44*", "*"]"#);
    let out = cli(&config, &["config", "show", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["channels"]["sms"]["accounts"]["default"]["allowTo"],
        json!(["*", "+15557654321", "+44*"]),
        "{v}"
    );
}
