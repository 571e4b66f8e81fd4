//! Faults on every side: Twilio misbehaving, agents misbehaving, the disk filling up.
//! Each is handled with the right retry or a clear error, nothing is lost, and memory
//! stays bounded.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const RSS_BOUND_KIB: u64 = 64 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn twilio_resets_and_malformed_answers() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let gw = Gateway::start(&t.config(&twilio, r#"defaultTo: "+15557650000""#));
    let mut agent = TestAgent::connect(&t.state().join("agent.sock"));
    // A reset after the request was sent: Twilio may have it, so it is not retried.
    twilio.push(Canned::Reset);
    agent.send(json!({"type": "send", "text": "reset", "ref": "f1"}));
    let e = agent.next_of("error");
    assert_eq!(e["ref"], "f1");
    assert!(
        e["message"].as_str().unwrap().contains("outcome unknown"),
        "{e}"
    );
    // 201 with a body that is not JSON: accepted, so not retried either.
    twilio.push(Canned::Json(201, "<html>oops".into(), None));
    agent.send(json!({"type": "send", "text": "malformed", "ref": "f2"}));
    let s = agent.next_of("sent");
    assert_eq!(s["ref"], "f2");
    assert_eq!(s["sids"], json!([]));
    // 500, 500, then fine: retried.
    twilio.push(Canned::Json(500, "{}".into(), None));
    twilio.push(Canned::Json(503, "{}".into(), None));
    agent.send(json!({"type": "send", "text": "flaky", "ref": "f3"}));
    assert_eq!(agent.next_of("sent")["ref"], "f3");
    let bodies: Vec<String> = twilio
        .sends()
        .iter()
        .map(|r| r.field("Body").unwrap().to_string())
        .collect();
    assert_eq!(bodies, ["reset", "malformed", "flaky", "flaky", "flaky"]);
    assert!(rss_kib(gw.child.id()) < RSS_BOUND_KIB);
    assert_eq!(gw.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_that_vanish_mid_line_or_stop_reading() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let gw = Gateway::start(&t.config(&twilio, r#"dmPolicy: "open", allowFrom: ["*"]"#));
    let sock = t.state().join("agent.sock");
    // Half a line, then gone.
    {
        let mut a = TestAgent::connect(&sock);
        assert_eq!(
            post_signed(
                &gw,
                "/webhooks/sms",
                &inbound("SMa0000000000000000000000000000001", "+15557650001", "one")
            )
            .await
            .0,
            200
        );
        let m = a.next_of("message");
        a.send_raw_partial(&format!(
            r#"{{"type":"ack","id":"{}"#,
            m["id"].as_str().unwrap()
        ));
    }
    // A stuck agent that never reads, holding what it was given.
    let stuck = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let mut good = TestAgent::connect(&sock);
    for i in 0..60 {
        let sid = format!("SMa1{i:030}");
        let from = format!("+1555766{i:04}");
        let (status, _) = post_signed(&gw, "/webhooks/sms", &inbound(&sid, &from, "flood")).await;
        assert_eq!(
            status, 200,
            "webhooks keep being answered while an agent is stuck"
        );
    }
    let mut seen = std::collections::HashSet::new();
    let collect =
        |good: &mut TestAgent, seen: &mut std::collections::HashSet<String>, until: Duration| {
            let deadline = std::time::Instant::now() + until;
            while std::time::Instant::now() < deadline {
                match good.next_within(Duration::from_millis(200)) {
                    Some(m) if m["type"] == "message" => {
                        seen.insert(m["id"].as_str().unwrap().to_string());
                        good.send(json!({"type": "ack", "id": m["id"]}));
                    }
                    _ => {}
                }
                if seen.len() == 61 {
                    break;
                }
            }
        };
    collect(&mut good, &mut seen, Duration::from_secs(3));
    assert!(seen.len() < 61, "the stuck agent holds some messages");
    drop(stuck);
    collect(&mut good, &mut seen, Duration::from_secs(10));
    assert_eq!(
        seen.len(),
        61,
        "everything the stuck agent held was redelivered"
    );
    assert!(rss_kib(gw.child.id()) < RSS_BOUND_KIB);
    assert_eq!(gw.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_is_a_503_and_nothing_acknowledged_is_lost() {
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "prlimit (util-linux) is needed"
        );
        return;
    }
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let config = t.config(&twilio, r#"dmPolicy: "open", allowFrom: ["*"]"#);
    // The store may not grow past 3 MB: RLIMIT_FSIZE stands in for a full disk.
    let gw = Gateway::start_wrapped(&config, &["prlimit", "--fsize=3000000", "--"]);
    let big = "x".repeat(20_000);
    let mut acked = Vec::new();
    let mut refused = 0;
    for i in 0..400 {
        let sid = format!("SMb{i:031}");
        match post_signed(&gw, "/webhooks/sms", &inbound(&sid, "+15557654321", &big))
            .await
            .0
        {
            200 => acked.push(sid),
            503 => refused += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        refused > 0 && !acked.is_empty(),
        "acked {} refused {refused}",
        acked.len()
    );
    assert!(gw.log().contains("File too large"), "the reason is logged");
    assert_eq!(
        client()
            .get(gw.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200,
        "still serving"
    );
    gw.kill9();
    // Room again: everything that got a 200 is there.
    let gw = Gateway::start(&config);
    let mut agent = TestAgent::connect(&t.state().join("agent.sock"));
    let mut got = std::collections::HashSet::new();
    while let Some(m) = agent.next_within(Duration::from_secs(3)) {
        if m["type"] == "message" {
            got.insert(m["id"].as_str().unwrap().to_string());
            agent.send(json!({"type": "ack", "id": m["id"]}));
        }
    }
    for sid in &acked {
        assert!(got.contains(sid), "{sid} got a 200 but was lost");
    }
    assert_eq!(gw.stop().code(), Some(0));
}
