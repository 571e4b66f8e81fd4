//! Faults on every side: Twilio misbehaving, agents misbehaving, the disk filling up.
//! Each is handled with the right retry or a clear error, nothing is lost, and memory
//! stays bounded.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::json;

const RSS_BOUND_KIB: u64 = 64 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn twilio_resets_and_malformed_answers() {
    let (t, twilio, _, gw) = gateway(r#"defaultTo: "+15557650000""#);
    let mut agent = TestAgent::connect(&t.state().join("agent.sock"));
    // A reset after the request was sent: Twilio may have it, so it is not retried
    // blind; it waits for a lookup (tests/it/unknown_sends.rs), and nobody hears of it yet.
    twilio.push(Canned::Reset);
    agent.send(json!({"type": "send", "text": "reset", "ref": "f1"}));
    gw.assert_log_soon("send outcome unknown", Duration::from_secs(10));
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
    let (t, _twilio, _, gw) = gateway(OPEN);
    let sock = t.state().join("agent.sock");
    // Half a line, then gone.
    {
        let mut a = TestAgent::connect(&sock);
        assert_eq!(
            gw.admit("SMa0000000000000000000000000000001", "+15557650001", "one")
                .await,
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
#[ignore = "needs prlimit (util-linux) to stand in for a full disk; CI runs it with --include-ignored"]
async fn a_full_disk_is_a_503_not_ready_and_recovers_without_a_restart() {
    let has_prlimit = std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_ok();
    assert!(has_prlimit, "prlimit (util-linux) is needed");
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    // One sender floods on purpose here: no inbound pacing, so all reach the agent now.
    let config = t.config(
        &twilio,
        r#"dmPolicy: "open", allowFrom: ["*"], inboundLimits: { perSenderPerMinute: 0 }"#,
    );
    // The store may not grow past 3 MB: RLIMIT_FSIZE (the soft limit, which the
    // process's owner may raise again) stands in for a full disk.
    let gw = Gateway::start_wrapped(&config, &["prlimit", "--fsize=3000000:unlimited", "--"]);
    let big = "x".repeat(20_000);
    let mut acked = Vec::new();
    let mut refused = 0;
    for i in 0..400 {
        let sid = format!("SMb{i:031}");
        match gw.admit(&sid, "+15557654321", &big).await {
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
    assert_eq!(gw.get_status("/healthz").await, 200, "still serving");
    assert_eq!(
        gw.get_status("/readyz").await,
        503,
        "not ready while the store cannot write"
    );
    let health = cli(&config, &["health"]);
    assert_ne!(health.status.code(), Some(0), "`smsgate health` fails too");
    // Room again, without a restart: the writer recovers by itself.
    let pid = gw.child.id().to_string();
    let raised = std::process::Command::new("prlimit")
        .args(["--pid", &pid, "--fsize=unlimited:unlimited"])
        .status()
        .unwrap();
    assert!(raised.success());
    let mut ready = false;
    for _ in 0..100 {
        if gw.get_status("/readyz").await == 200 {
            ready = true;
            break;
        }
        // The poll interval of a condition wait (`/readyz` answers 200, 10 s at most).
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "ready again once writes work: {}", gw.log());
    gw.assert_log_has("can write again");
    let late = "SMf9999999999999999999999999999999".to_string();
    assert_eq!(gw.admit(&late, "+15557654322", "after").await, 200);
    acked.push(late);
    // Everything that got a 200 reaches the agent, from the same process.
    let mut agent = TestAgent::connect(&t.state().join("agent.sock"));
    let mut got = std::collections::HashSet::new();
    while got.len() < acked.len() {
        let Some(m) = agent.next_within(Duration::from_secs(10)) else {
            break;
        };
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

#[tokio::test(flavor = "multi_thread")]
async fn a_never_reading_agent_hands_its_messages_to_a_healthy_one_within_45_s() {
    let (t, _twilio, config, gw) = gateway(OPEN);
    let sock = t.state().join("agent.sock");
    // Connects, never reads, never closes.
    let stuck = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let mut sids = Vec::new();
    for i in 0..5 {
        let sid = format!("SMc{i:031}");
        assert_eq!(gw.admit(&sid, &format!("+1555767{i:04}"), "hi").await, 200);
        sids.push(sid);
    }
    assert!(
        wait_until(Duration::from_secs(10), || gw.status(&config)["inFlight"]
            == 5),
        "all five went to the only agent: {}",
        gw.status(&config)
    );
    let started = std::time::Instant::now();
    let mut good = TestAgent::connect(&sock);
    let mut got = std::collections::HashSet::new();
    while got.len() < sids.len() && started.elapsed() < Duration::from_secs(45) {
        if let Some(m) = good.next_within(Duration::from_secs(1)) {
            if m["type"] == "message" {
                got.insert(m["id"].as_str().unwrap().to_string());
                good.send(json!({"type": "ack", "id": m["id"]}));
            }
        }
    }
    assert_eq!(got.len(), sids.len(), "{}", gw.log());
    assert!(started.elapsed() < Duration::from_secs(45));
    assert!(
        gw.log().contains("not reading its socket"),
        "the disconnect is logged: {}",
        gw.log()
    );
    assert!(gw.wait_quiet(&config, Duration::from_secs(10)));
    drop(stuck);
    assert_eq!(gw.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_agent_lines_are_answered_but_their_log_is_rate_limited() {
    let (t, _twilio, _, gw) = gateway("");
    let sock = t.state().join("agent.sock");
    let s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let reader = s.try_clone().unwrap();
    // Reads the error replies as they come, so the agent counts as reading.
    let counted = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut n = 0;
        for line in std::io::BufReader::new(reader).lines() {
            if line.is_err() {
                break;
            }
            n += 1;
            if n == 5000 {
                break;
            }
        }
        n
    });
    {
        use std::io::Write;
        let mut w = &s;
        for _ in 0..5000 {
            w.write_all(b"{not json\n").unwrap();
        }
    }
    assert_eq!(counted.join().unwrap(), 5000, "every bad line is answered");
    let log = gw.log();
    let lines = log.matches("agent sent a bad line").count();
    assert!(lines <= 200, "{lines} log lines for 5000 bad lines");
    assert!(
        wait_until(Duration::from_secs(3), || {
            std::os::unix::net::UnixStream::connect(&sock)
                .map(|mut c| {
                    use std::io::Write;
                    c.write_all(b"{not json\n").is_ok()
                })
                .unwrap_or(false)
                && gw.log().contains("similar lines suppressed")
        }),
        "the count of suppressed lines is reported: {}",
        gw.log()
    );
    drop(s);
    assert_eq!(gw.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_database_is_owner_only_whatever_the_state_dir_mode() {
    use std::os::unix::fs::PermissionsExt;
    let (t, _twilio, config) = configured(OPEN);
    // A directory made by hand (or a bind mount), open to everyone.
    std::fs::create_dir_all(t.state()).unwrap();
    std::fs::set_permissions(t.state(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let gw = Gateway::start(&config);
    assert_eq!(
        gw.admit(&format!("SMd{:031}", 1), "+15557654321", "secret")
            .await,
        200
    );
    assert!(
        gw.log().contains("mode 755"),
        "a warning names the mode: {}",
        gw.log()
    );
    assert_eq!(gw.stop().code(), Some(0));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let db = t.state().join("db");
    assert_eq!(mode(&db), 0o700);
    let mut files = 0;
    let mut dirs = vec![db];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                assert_eq!(mode(&e.path()), 0o700, "{}", e.path().display());
                dirs.push(e.path());
            } else {
                assert_eq!(mode(&e.path()), 0o600, "{}", e.path().display());
                files += 1;
            }
        }
    }
    assert!(files > 0);
}
