//! What smsgate keeps and says per message (issue 20 item 6): the spending limits'
//! memory is not rebuilt from every send of the day at start, and the default log
//! level writes one line per message.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::json;

const BUILT: &str = "spending window built from the sent log";

/// The agent sends `n` texts and waits for each `sent`.
fn send_texts(t: &TestDir, n: usize, tag: &str) {
    let mut agent = TestAgent::connect(&t.agent_sock());
    for i in 0..n {
        agent.send(json!({"type": "send", "to": format!("+155576500{:02}", i % 7), "text": format!("{tag} {i}"), "ref": format!("{tag}{i}")}));
        assert_eq!(agent.next_of("sent")["ref"], format!("{tag}{i}"));
    }
}

/// With every limit 0 a restart reads nothing of the day's sends into memory (and
/// such sends are not logged: sled keeps a page-table entry in memory for every page
/// of the store); with a limit set the window is built once, from the sent log, as
/// per-minute entries (a handful here), not one entry per send; and it still counts
/// the sends made under a limit before the restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_does_not_rebuild_per_send_state() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let debug = [("SMSGATE_LOG", "debug")];
    let limited = |per_hour: u32| {
        t.config(
            &twilio,
            &format!(
                "outboundLimits: {{ perHour: {per_hour}, perDay: 0, perRecipientPerHour: 0 }}, allowTo: [\"+1555765*\"]"
            ),
        )
    };
    // 30 sends under a generous limit: logged.
    let gw = Gateway::start_with(&limited(1000), &debug);
    send_texts(&t, 30, "a");
    gw.stop_and_log();

    // Restart with every limit 0: one more send, nothing read for the limits, nothing
    // logged.
    let gw = Gateway::start_with(&limited(0), &debug);
    send_texts(&t, 1, "b");
    let log = gw.stop_and_log();
    assert!(!log.contains(BUILT), "{log}");

    // A limit set again: the first send builds the window from the log, once; it
    // counts the 30, so 3 more fill an hour of 33 and the next is held.
    let gw = Gateway::start_with(&limited(33), &debug);
    send_texts(&t, 3, "c");
    let mut agent = TestAgent::connect(&t.agent_sock());
    agent.send(json!({"type": "send", "to": "+15557650001", "text": "over", "ref": "over"}));
    let held = agent.next_of("error");
    assert_eq!(held["ref"], "over", "{held}");
    let log = gw.stop_and_log();
    let built: Vec<&str> = log.lines().filter(|l| l.contains(BUILT)).collect();
    assert_eq!(built.len(), 1, "{built:#?}");
    assert!(built[0].contains(": 30 segment(s)"), "{}", built[0]);
    // The test's sends span a minute or two.
    let entries: usize = built[0]
        .split("kept as ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(entries <= 3, "{}", built[0]);
    assert_eq!(twilio.sends().len(), 34);
}

/// One admitted webhook, the agent's reply and its `sent` and `delivered` callbacks:
/// two INFO lines at the default level, one per message (the text in, the reply
/// out); the rest (admission, queueing, statuses) at DEBUG.
#[tokio::test(flavor = "multi_thread")]
async fn one_info_line_per_message() {
    let (t, _twilio, _, gw) = gateway(OPEN);
    let mut agent = TestAgent::connect(&t.agent_sock());
    assert!(gw.wait_log("agent connected", Duration::from_secs(10)));
    let before = gw.log().len();
    let sid = "SM6a000000000000000000000000000001";
    assert_eq!(gw.admit(sid, "+15557650001", "hello").await, 200);
    let m = agent.next_of("message");
    agent.send(json!({"type": "reply", "id": m["id"], "text": "hi there"}));
    let sent = agent.next_of("sent");
    let msid = sent["sids"][0].as_str().unwrap().to_string();
    for status in ["sent", "delivered"] {
        let cb = [
            ("MessageSid", msid.as_str()),
            ("MessageStatus", status),
            ("AccountSid", SID),
            ("From", FROM),
            ("To", "+15557650001"),
        ];
        assert_eq!(post_signed(&gw, "/webhooks/sms", &cb).await.0, 200);
    }
    assert_eq!(agent.next_of("status")["status"], "sent");
    assert_eq!(agent.next_of("status")["status"], "delivered");
    // The same again as a duplicate (Twilio's retry): no INFO line either.
    assert_eq!(gw.admit(sid, "+15557650001", "hello").await, 200);
    let log = gw.stop_and_log();
    let flow = &log[before..];
    // Up to the line that says the stop began.
    let end = flow
        .find("SIGTERM received")
        .and_then(|at| flow[..at].rfind('\n'))
        .unwrap_or(flow.len());
    let flow = &flow[..end];
    let info: Vec<&str> = flow.lines().filter(|l| l.contains(" INFO ")).collect();
    assert_eq!(info.len(), 2, "{info:#?}\n{flow}");
    assert!(
        info[0].contains("message queued for the agent"),
        "{info:#?}"
    );
    assert!(info[1].contains("sent"), "{info:#?}");
    assert!(!flow.contains("+15557650001"), "numbers redacted: {flow}");
}
