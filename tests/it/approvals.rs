//! Issue 22 items 2, 4, 5, CONTRACT §9 `execApprovals`: the agent's `ask`, the approval
//! SMS to each approver, their answers as signed webhooks, the `answer` line back;
//! end to end with the real daemon, a test agent on the socket and the recording fake
//! Twilio; and the attacker's cases (a guess, a replay, a non-approver, a spoofed
//! From, answered twice, after close, a flood of asks, a hostile detail).

use crate::common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const APPROVER: &str = "+15557654321";
const APPROVER2: &str = "+15557652222";
/// In allowFrom (may talk to the agent) but not an approver.
const FRIEND: &str = "+15557653333";

const T: Duration = Duration::from_secs(10);

static SID: AtomicU32 = AtomicU32::new(1);

fn next_sid() -> String {
    format!(
        "SM2200000000000000000000{:010}",
        SID.fetch_add(1, Ordering::Relaxed)
    )
}

fn config(t: &TestDir, twilio: &FakeTwilio, extra: &str) -> std::path::PathBuf {
    t.config(
        twilio,
        &format!(
            r#"allowFrom: ["{APPROVER}", "{FRIEND}"],
    execApprovals: {{ approvers: ["{APPROVER}", "{APPROVER2}"] }},
    {extra}"#
        ),
    )
}

/// The code in an approval text ("… YES ABC234 …": the last "YES ", the detail may
/// hold a fake one).
fn approval_code(body: &str) -> String {
    body.rsplit("YES ")
        .next()
        .unwrap_or_else(|| panic!("no code in {body:?}"))
        .chars()
        .take(6)
        .collect()
}

/// The next `answer` line (skipping others).
fn answer(agent: &mut TestAgent) -> Value {
    agent.next_of("answer")
}

/// Sends an ask; waits for its texts (`n` more sends than `before`) and returns the code.
fn ask(agent: &mut TestAgent, twilio: &FakeTwilio, line: Value, before: usize, n: usize) -> String {
    agent.send(line);
    let sends = twilio.wait_sends(before + n, T);
    assert_eq!(sends.len(), before + n, "{sends:?}");
    let bodies: Vec<&str> = sends[before..]
        .iter()
        .map(|r| r.field("Body").unwrap_or_default())
        .collect();
    let code = approval_code(bodies[0]);
    assert!(bodies.iter().all(|b| b.contains(&code)));
    code
}

fn last_body_to(twilio: &FakeTwilio, to: &str) -> String {
    twilio
        .sends_to(to)
        .last()
        .and_then(|r| r.field("Body").map(String::from))
        .unwrap_or_default()
}

/// Waits for the `n`-th send overall and returns its body and recipient.
fn nth_send(twilio: &FakeTwilio, n: usize) -> (String, String) {
    let sends = twilio.wait_sends(n, T);
    assert!(sends.len() >= n, "{sends:?}");
    let r = &sends[n - 1];
    (
        r.field("To").unwrap_or_default().to_string(),
        r.field("Body").unwrap_or_default().to_string(),
    )
}

/// The whole path: every approver is texted once with the title, the detail, the
/// chat (redacted), a code and the expiry; a non-approver's "YES <code>" is an ordinary
/// text for the agent; the first approver's answer decides and is confirmed; the
/// second is told "already decided"; a replayed webhook, a guessed code and an
/// unsigned (spoofed) answer decide nothing; no answer ever reaches the agent.
#[tokio::test(flavor = "multi_thread")]
async fn an_ask_is_decided_by_the_first_approver_answer() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let config = config(&t, &twilio, "");
    let gw = Gateway::start(&config);
    let mut agent = TestAgent::connect(&t.agent_sock());

    // The friend's conversation, so the ask can name it.
    assert_eq!(gw.admit(&next_sid(), FRIEND, "please build").await, 200);
    let msg = agent.next_of("message");
    let conversation = msg["conversation"].as_str().unwrap().to_string();
    agent.send(json!({"type": "ack", "id": msg["id"]}));

    let code = ask(
        &mut agent,
        &twilio,
        json!({"type": "ask", "ref": "a1", "conversation": conversation,
               "title": "Run a shell command", "detail": "rm -rf build/"}),
        0,
        2,
    );
    let mut to: Vec<String> = twilio
        .sends()
        .iter()
        .map(|r| r.field("To").unwrap_or_default().to_string())
        .collect();
    to.sort();
    assert_eq!(to, [APPROVER2, APPROVER]);
    let body = last_body_to(&twilio, APPROVER);
    for needle in [
        "\"Run a shell command\"",
        "\"rm -rf build/\"",
        "***3333",
        &format!("YES {code}"),
        &format!("ALWAYS {code}"),
        &format!("NO {code}"),
        "UTC",
    ] {
        assert!(body.contains(needle), "{needle:?} in {body}");
    }
    assert!(
        !body.contains(FRIEND),
        "the chat's number is redacted: {body}"
    );

    // A spoofed From without Twilio's signature: 403, nothing decided.
    let sid = next_sid();
    let yes = format!("YES {code}");
    let params = inbound(&sid, APPROVER, &yes);
    assert_eq!(
        post(&gw, "/webhooks/sms", &params, Some("bad")).await.0,
        403
    );

    // A non-approver's approval-shaped text is an ordinary text for the agent.
    assert_eq!(gw.admit(&next_sid(), FRIEND, &yes).await, 200);
    let m = agent.next();
    assert_eq!(m["type"], "message", "{m}");
    assert_eq!(m["text"], yes.as_str());
    agent.send(json!({"type": "ack", "id": m["id"]}));

    // The first approver's answer (lower case, with a stray full stop) decides.
    let sid = next_sid();
    assert_eq!(
        gw.admit(&sid, APPROVER, &format!("no {}.", code.to_lowercase()))
            .await,
        200
    );
    let a = answer(&mut agent);
    assert_eq!(
        a,
        json!({"type": "answer", "ref": "a1", "decision": "deny", "by": "+1•••4321"})
    );
    let (to, body) = nth_send(&twilio, 3);
    assert_eq!(to, APPROVER);
    assert_eq!(body, format!("{code}: denied."));

    // The same webhook again (Twilio's retry, or a replay): deduplicated, no text.
    assert_eq!(gw.admit(&sid, APPROVER, &format!("no {code}")).await, 200);
    // The second approver, too late.
    assert_eq!(
        gw.admit(
            &next_sid(),
            APPROVER2,
            &format!("/approve {code} allow-once")
        )
        .await,
        200
    );
    let (to, body) = nth_send(&twilio, 4);
    assert_eq!(to, APPROVER2);
    assert!(body.contains("already decided"), "{body}");
    // A guess.
    assert_eq!(gw.admit(&next_sid(), APPROVER, "YES ABC234").await, 200);
    let (_, body) = nth_send(&twilio, 5);
    assert!(body.contains("No pending approval"), "{body}");

    agent.assert_no_more(&gw, &config, "no answer reaches the agent");
    assert_eq!(twilio.sends().len(), 5);

    // The audit, through the running daemon.
    let out = cli(&config, &["approvals", "list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pending"], json!([]));
    let d = &v["decided"][0];
    assert_eq!(v["decided"].as_array().unwrap().len(), 1, "{v}");
    for (k, want) in [
        ("code", json!(code)),
        ("account", json!("default")),
        ("ref", json!("a1")),
        ("conversation", json!(conversation)),
        ("title", json!("Run a shell command")),
        ("detail", json!("rm -rf build/")),
        ("decision", json!("deny")),
        ("by", json!(APPROVER)),
    ] {
        assert_eq!(d[k], want, "{k}: {d}");
    }
    assert!(d["decidedAt"].as_str().unwrap().ends_with('Z'), "{d}");
    let out = cli(&config, &["approvals", "list"]);
    let text = stdout(&out);
    assert!(text.contains("No pending asks."), "{text}");
    assert!(
        text.contains(&format!("{code}  account default  deny by {APPROVER}")),
        "{text}"
    );
    let log = gw.log();
    assert_eq!(log.matches("approval decided: deny").count(), 1, "{log}");
    assert!(!log.contains(APPROVER), "numbers are redacted in the log");
}

/// Timeouts, closed connections, the agent's `cancel`, and a flood of asks: at most 5
/// pending per account, the rest `deny` at once with a reason and no SMS.
#[tokio::test(flavor = "multi_thread")]
async fn timeout_close_cancel_and_flood() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let config = config(&t, &twilio, "");
    let gw = Gateway::start(&config);
    let mut agent = TestAgent::connect(&t.agent_sock());

    // Timeout: the ask's own timeoutSecs wins; a later answer is told it is closed.
    let code = ask(
        &mut agent,
        &twilio,
        json!({"type": "ask", "ref": "t1", "title": "Edit a file", "timeoutSecs": 1}),
        0,
        2,
    );
    let a = answer(&mut agent);
    assert_eq!(a["ref"], "t1");
    assert_eq!(a["decision"], "timeout");
    assert_eq!(
        gw.admit(&next_sid(), APPROVER, &format!("ALWAYS {code}"))
            .await,
        200
    );
    let (_, body) = nth_send(&twilio, 3);
    assert!(body.contains("is closed"), "{body}");

    // The agent's cancel: recorded, the approvers told.
    let code = ask(
        &mut agent,
        &twilio,
        json!({"type": "ask", "ref": "c1", "title": "Push to main"}),
        3,
        2,
    );
    agent.send(json!({"type": "cancel", "ref": "c1"}));
    let a = answer(&mut agent);
    assert_eq!(
        (a["ref"].clone(), a["decision"].clone()),
        (json!("c1"), json!("cancelled"))
    );
    let sends = twilio.wait_sends(7, T);
    assert!(sends[5..]
        .iter()
        .all(|r| r.field("Body").unwrap().contains("withdrew")));

    // A flood: 5 pending, the sixth is refused at once and texts nobody.
    for i in 0..5 {
        ask(
            &mut agent,
            &twilio,
            json!({"type": "ask", "ref": format!("f{i}"), "title": "Flood"}),
            7 + 2 * i,
            2,
        );
    }
    agent.send(json!({"type": "ask", "ref": "f5", "title": "Flood"}));
    let a = answer(&mut agent);
    assert_eq!(a["ref"], "f5");
    assert_eq!(a["decision"], "deny");
    assert!(a["reason"].as_str().unwrap().contains("too many"), "{a}");

    // The connection closes: its 5 asks end cancelled; a later answer is told so.
    let code_f0 = approval_code(twilio.sends()[7].field("Body").unwrap());
    drop(agent);
    assert!(gw.wait_log(
        "approval decided: cancelled: the asking connection closed",
        T
    ));
    let mut agent = TestAgent::connect(&t.agent_sock());
    assert_eq!(
        gw.admit(&next_sid(), APPROVER, &format!("YES {code_f0}"))
            .await,
        200
    );
    let (_, body) = nth_send(&twilio, 18);
    assert!(body.contains("is closed"), "{body}");
    assert_eq!(
        gw.admit(&next_sid(), APPROVER, &format!("YES {code}"))
            .await,
        200
    );
    let (_, body) = nth_send(&twilio, 19);
    assert!(body.contains("is closed"), "{body}");
    // Asks may be made again.
    ask(
        &mut agent,
        &twilio,
        json!({"type": "ask", "ref": "n1", "title": "Again"}),
        19,
        2,
    );
    let log = gw.log();
    assert!(
        wait_until(T, || gw
            .log()
            .matches("approval decided: cancelled")
            .count()
            == 6),
        "{log}"
    );
    agent.assert_no_more(&gw, &config, "nothing else");
}

/// No approver (none listed, no allowFrom numbers, no defaultTo): `deny` at once.
#[tokio::test(flavor = "multi_thread")]
async fn no_approver_is_deny_at_once() {
    let (t, twilio, config, gw) = gateway("");
    let mut agent = TestAgent::connect(&t.agent_sock());
    agent.send(json!({"type": "ask", "ref": "x", "title": "Run"}));
    let a = answer(&mut agent);
    assert_eq!(a["decision"], "deny");
    assert!(a["reason"].as_str().unwrap().contains("no approver"), "{a}");
    // A malformed ask is an error line, not an answer.
    agent.send(json!({"type": "ask", "ref": "y"}));
    let e = agent.next();
    assert_eq!(e["type"], "error");
    assert!(e["message"].as_str().unwrap().contains("title"), "{e}");
    agent.assert_no_more(&gw, &config, "no SMS, nothing more");
    assert!(twilio.sends().is_empty());
}

/// A hostile detail (control characters, a bidi override, 10 KB, a fake "Reply YES"
/// line) is shown quoted, on one line, cut: the whole SMS fits two segments and still
/// ends with the real instructions.
#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_detail_cannot_fool_the_approver() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let config = config(&t, &twilio, "");
    let gw = Gateway::start(&config);
    let mut agent = TestAgent::connect(&t.agent_sock());
    let detail = format!(
        "ls\u{202E}txt.exe\u{7}\n\nReply YES to approve \"safe\"\n{}",
        "A".repeat(10_000)
    );
    let code = ask(
        &mut agent,
        &twilio,
        json!({"type": "ask", "ref": "h", "title": "Run\ncommand", "detail": detail}),
        0,
        2,
    );
    let body = last_body_to(&twilio, APPROVER);
    assert!(
        !body.contains('\n') && !body.contains('\u{202E}') && !body.contains('\u{7}'),
        "{body:?}"
    );
    assert!(
        body.contains("\"lstxt.exe Reply YES to approve 'safe' AAA"),
        "{body}"
    );
    assert!(body.contains("...\""), "cut inside its quotes: {body}");
    assert!(body.ends_with("UTC."), "{body}");
    assert!(body.contains(&format!("NO {code}")));
    assert!(
        body.chars().count() <= 306,
        "two GSM-7 segments: {}",
        body.chars().count()
    );
    drop(gw);
}

/// A restart keeps the audit; an ask still pending when the daemon stopped ends
/// `cancelled` (its connection is gone), and a later answer is told so.
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_keeps_the_audit_and_cancels_pending_asks() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let config = config(&t, &twilio, "");
    let gw = Gateway::start(&config);
    let mut agent = TestAgent::connect(&t.agent_sock());
    let first = ask(
        &mut agent,
        &twilio,
        json!({"type": "ask", "ref": "r1", "title": "One"}),
        0,
        2,
    );
    assert_eq!(
        gw.admit(&next_sid(), APPROVER2, &format!("ALWAYS {first}"))
            .await,
        200
    );
    let a = answer(&mut agent);
    assert_eq!(
        (a["decision"].clone(), a["by"].clone()),
        (json!("allow_always"), json!("+1•••2222"))
    );
    let second = ask(
        &mut agent,
        &twilio,
        json!({"type": "ask", "ref": "r2", "title": "Two"}),
        3,
        2,
    );
    gw.kill9();
    drop(agent);

    // Without the daemon the CLI reads the store itself.
    let out = cli(&config, &["approvals", "list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pending"][0]["code"], json!(second), "{v}");

    let gw = Gateway::start(&config);
    let _agent = TestAgent::connect(&t.agent_sock());
    let out = cli(&config, &["approvals", "list", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pending"], json!([]), "{v}");
    let decided: Vec<(String, String)> = v["decided"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["code"].as_str().unwrap().into(),
                d["decision"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        decided,
        [
            (second.clone(), "cancelled".into()),
            (first, "allow_always".into())
        ]
    );
    assert_eq!(
        gw.admit(&next_sid(), APPROVER, &format!("YES {second}"))
            .await,
        200
    );
    let (_, body) = nth_send(&twilio, 6);
    assert!(body.contains("is closed"), "{body}");
}

/// The approval texts are smsgate's own texts: counted by `outboundLimits`, and over a
/// limit dropped (logged), not held. A listed approver is a person the account knows
/// for the default `allowTo` (issue 22 item 1's hook).
#[tokio::test(flavor = "multi_thread")]
async fn approval_texts_count_against_outbound_limits_and_approvers_are_known() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let config = config(&t, &twilio, "outboundLimits: { perHour: 3 },");
    let gw = Gateway::start(&config);
    let mut agent = TestAgent::connect(&t.agent_sock());
    ask(
        &mut agent,
        &twilio,
        json!({"type": "ask", "ref": "l1", "title": "One"}),
        0,
        2,
    );
    agent.send(json!({"type": "ask", "ref": "l2", "title": "Two"}));
    gw.assert_log_soon("texts smsgate sends itself are dropped over a limit", T);
    assert_eq!(twilio.wait_sends(3, T).len(), 3);

    // APPROVER2 is in no allowFrom, but a listed approver: the agent may text them.
    let t2 = TestDir::new();
    let twilio2 = FakeTwilio::start();
    let config2 = self::config(&t2, &twilio2, "");
    let _gw2 = Gateway::start(&config2);
    let mut agent2 = TestAgent::connect(&t2.agent_sock());
    agent2.send(json!({"type": "send", "to": APPROVER2, "text": "hi", "ref": "s1"}));
    let v = agent2.next();
    assert_eq!(
        (v["type"].clone(), v["ref"].clone()),
        (json!("sent"), json!("s1")),
        "{v}"
    );
    agent2.send(json!({"type": "send", "to": "+15557650404", "text": "hi", "ref": "s2"}));
    let v = agent2.next();
    assert_eq!(v["code"], "not-allowed", "{v}");
    agent.assert_no_more(&gw, &config, "the ask is still pending");
}
