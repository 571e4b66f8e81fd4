//! The agent socket end to end: a test agent, the real daemon, a recording fake Twilio.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn reply_path_and_sent_line() {
    let (t, twilio, _, gw) = gateway(OPEN);
    let mut agent = TestAgent::connect(&t.agent_sock());
    assert_eq!(
        gw.admit(
            "SMa0000000000000000000000000000001",
            "+15557654321",
            "hello agent"
        )
        .await,
        200
    );
    let m = agent.next_of("message");
    assert_eq!(m["id"], "SMa0000000000000000000000000000001");
    assert_eq!(m["account"], "default");
    assert_eq!(m["from"], "+15557654321");
    assert_eq!(m["to"], FROM);
    assert_eq!(m["text"], "hello agent");
    assert_eq!(m["media"], json!([]));
    assert!(m["receivedAt"].as_str().unwrap().ends_with('Z'));

    agent.send(json!({"type": "reply", "id": m["id"], "text": "# Hi\n\n**Hello** there, see [docs](https://example.com)."}));
    let sent = agent.next_of("sent");
    assert_eq!(sent["id"], m["id"]);
    assert_eq!(sent["sids"].as_array().unwrap().len(), 1);
    assert_eq!(sent["segments"], 1);
    let sends = twilio.sends();
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].field("To"), Some("+15557654321"));
    assert_eq!(sends[0].field("From"), Some(FROM));
    assert_eq!(
        sends[0].field("Body"),
        Some("Hi\n\nHello there, see docs (https://example.com).")
    );
    assert_eq!(sends[0].field("StatusCallback"), Some(PUBLIC));

    // A long reply is split, never inside a word, and reported as one `sent`.
    let m2_params = inbound(
        "SMa0000000000000000000000000000002",
        "+15557654321",
        "long please",
    );
    assert_eq!(post_signed(&gw, "/webhooks/sms", &m2_params).await.0, 200);
    let m2 = agent.next_of("message");
    let long: String = (0..700).map(|i| format!("word{i} ")).collect();
    agent.send(json!({"type": "reply", "id": m2["id"], "text": long}));
    let sent = agent.next_of("sent");
    let parts = sent["sids"].as_array().unwrap().len();
    assert!(parts >= 4, "{sent}");
    let bodies: Vec<String> = twilio.sends()[1..]
        .iter()
        .map(|r| r.field("Body").unwrap().to_string())
        .collect();
    assert_eq!(bodies.len(), parts);
    assert!(bodies
        .iter()
        .all(|b| b.chars().count() <= 1500 && b.starts_with("word") && !b.ends_with(' ')));
    assert_eq!(bodies.join(" "), long.trim());
    assert_eq!(gw.stop().code(), Some(0));
    // After the ack nothing of the message is left but its SID.
    let store = t.store();
    assert!(store.inbox().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_send_with_default_to_and_errors() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    // allowTo: the agent texts +15557650001 on its own (CONTRACT §9).
    let gw = Gateway::start(&t.config(
        &twilio,
        r#"defaultTo: "sms:+15557650000", allowTo: ["+15557650000", "+15557650001"]"#,
    ));
    let mut agent = TestAgent::connect(&t.agent_sock());
    agent.send(json!({"type": "send", "text": "reminder: stand-up", "ref": "r1"}));
    let sent = agent.next_of("sent");
    assert_eq!(sent["ref"], "r1");
    assert_eq!(twilio.sends()[0].field("To"), Some("+15557650000"));
    agent.send(json!({"type": "send", "to": "+15557650001", "account": "default", "text": "hi", "ref": "r2"}));
    assert_eq!(agent.next_of("sent")["ref"], "r2");
    assert_eq!(twilio.sends()[1].field("To"), Some("+15557650001"));

    // Bad input: an error line each, and the connection carries on.
    let cases = [
        (
            r#"{"type":"send","to":"555-1234","text":"x","ref":"r3"}"#,
            "E.164",
        ),
        (r#"{"type":"send","text":"   ","ref":"r4"}"#, "empty"),
        (
            r#"{"type":"send","text":"x","account":"nope","ref":"r5"}"#,
            "no account",
        ),
        ("this is not json", "not valid JSON"),
        (r#"{"type":"teleport"}"#, "unknown type"),
        (r#"{"type":"reply","text":"x"}"#, "needs \"id\""),
        (r#"{"type":"ack","id":"SMunknown"}"#, "not waiting"),
        (
            r#"{"type":"reply","id":"SMunknown","text":"x"}"#,
            "unknown message id",
        ),
    ];
    for (line, needle) in cases {
        agent.send_raw(line);
        let e = agent.next_of("error");
        assert!(
            e["message"].as_str().unwrap().contains(needle),
            "{line}: {e}"
        );
    }
    let e = {
        agent.send_raw(r#"{"type":"send","to":"555","text":"x","ref":"r3"}"#);
        agent.next_of("error")
    };
    assert_eq!(e["ref"], "r3");
    // A line over 8 MiB (the cap that fits 5 MB of media in base64).
    agent.send_raw(&format!(
        r#"{{"type":"send","text":"{}"}}"#,
        "x".repeat(9 * 1024 * 1024)
    ));
    assert!(agent.next_of("error")["message"]
        .as_str()
        .unwrap()
        .contains("longer than"));
    // A text over 1 MiB (what the line cap allowed before media) is refused itself.
    agent.send_raw(&format!(
        r#"{{"type":"send","text":"{}","ref":"r5"}}"#,
        "x".repeat(1_100_000)
    ));
    let e = agent.next_of("error");
    assert_eq!(e["ref"], "r5");
    assert!(e["message"].as_str().unwrap().contains("text"), "{e}");
    agent.send(json!({"type": "send", "text": "still here", "ref": "r6"}));
    assert_eq!(agent.next_of("sent")["ref"], "r6");
    assert_eq!(twilio.sends().len(), 3, "nothing invalid was sent");
    assert_eq!(gw.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn redelivery_after_disconnect_and_waiting_across_kill_9() {
    let (t, _twilio, config, gw) = gateway(OPEN);
    // No agent: messages wait.
    for i in 1..=3 {
        let sid = format!("SMb000000000000000000000000000000{i}");
        assert_eq!(
            post_signed(
                &gw,
                "/webhooks/sms",
                &inbound(&sid, "+15557654321", &format!("msg {i}"))
            )
            .await
            .0,
            200
        );
    }
    gw.kill9();
    let gw = Gateway::start(&config);
    let mut a = TestAgent::connect(&t.agent_sock());
    let ids: Vec<String> = (0..3)
        .map(|_| a.next_of("message")["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids,
        [
            "SMb0000000000000000000000000000001",
            "SMb0000000000000000000000000000002",
            "SMb0000000000000000000000000000003"
        ]
    );
    a.send(json!({"type": "ack", "id": ids[0]}));
    drop(a);
    // The next agent gets the unacknowledged ones again, same ids, same order.
    let mut b = TestAgent::connect(&t.agent_sock());
    assert_eq!(b.next_of("message")["id"], ids[1].as_str());
    assert_eq!(b.next_of("message")["id"], ids[2].as_str());
    b.send(json!({"type": "ack", "id": ids[1]}));
    b.send(json!({"type": "reply", "id": ids[2], "text": "done"}));
    b.next_of("sent");
    b.assert_no_more(&gw, &config, "a message redelivered a third time");
    assert_eq!(gw.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn per_sender_order_with_two_agents() {
    let (t, _twilio, _, gw) = gateway(OPEN);
    let mut a = TestAgent::connect(&t.agent_sock());
    let mut b = TestAgent::connect(&t.agent_sock());
    for i in 0..4 {
        for (s, from) in [("1", "+15557650001"), ("2", "+15557650002")] {
            let sid = format!("SMc{s}00000000000000000000000000000{i}");
            assert_eq!(
                post_signed(&gw, "/webhooks/sms", &inbound(&sid, from, &format!("{i}")))
                    .await
                    .0,
                200
            );
        }
    }
    // Each agent acks as it goes; record who got what.
    let mut got: Vec<(char, String, String)> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while got.len() < 8 && std::time::Instant::now() < deadline {
        for (name, agent) in [('a', &mut a), ('b', &mut b)] {
            if let Some(m) = agent.next_within(Duration::from_millis(50)) {
                if m["type"] == "message" {
                    got.push((
                        name,
                        m["from"].as_str().unwrap().into(),
                        m["text"].as_str().unwrap().into(),
                    ));
                    agent.send(json!({"type": "ack", "id": m["id"]}));
                }
            }
        }
    }
    assert_eq!(got.len(), 8, "{got:?}");
    for from in ["+15557650001", "+15557650002"] {
        let texts: Vec<&str> = got
            .iter()
            .filter(|g| g.1 == from)
            .map(|g| g.2.as_str())
            .collect();
        assert_eq!(texts, ["0", "1", "2", "3"], "order for {from}");
    }
    assert_eq!(gw.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn messaging_service_sender_and_opted_out_reply() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let config = t.write_config(&format!(
        r#"{{ gateway: {{ listen: "127.0.0.1:0", stateDir: "{}" }}, channels: {{ sms: {{ accountSid: "{SID}", authToken: "{TOKEN}",
        messagingServiceSid: "MG0123456789abcdef0123456789abcdef", publicWebhookUrl: "{PUBLIC}", apiBaseUrl: "{}", dmPolicy: "open", allowFrom: ["*"] }} }} }}"#,
        t.state().display(),
        twilio.base_url()
    ));
    let gw = Gateway::start(&config);
    let mut agent = TestAgent::connect(&t.agent_sock());
    let mut p = inbound(
        "SMd0000000000000000000000000000001",
        "+15557654321",
        "via service",
    );
    p.push(("MessagingServiceSid", "MG0123456789abcdef0123456789abcdef"));
    p[4] = ("To", "+15550009876");
    assert_eq!(post_signed(&gw, "/webhooks/sms", &p).await.0, 200);
    let m = agent.next_of("message");
    agent.send(json!({"type": "reply", "id": m["id"], "text": "hi"}));
    agent.next_of("sent");
    let s = &twilio.sends()[0];
    assert_eq!(
        s.field("MessagingServiceSid"),
        Some("MG0123456789abcdef0123456789abcdef")
    );
    assert_eq!(s.field("From"), None);
    // A wrong service SID is rejected.
    let mut p = inbound("SMd0000000000000000000000000000002", "+15557654321", "x");
    p.push(("MessagingServiceSid", "MG99999999999999999999999999999999"));
    assert_eq!(post_signed(&gw, "/webhooks/sms", &p).await.0, 200);
    assert!(gw.wait_log("kept as rejected", Duration::from_secs(5)));

    // STOP, then a reply to an earlier message: refused with an error, still acked.
    assert_eq!(
        gw.admit("SMd0000000000000000000000000000003", "+15557654321", "more")
            .await,
        200
    );
    let m = agent.next_of("message");
    assert_eq!(
        gw.admit("SMd0000000000000000000000000000004", "+15557654321", "STOP")
            .await,
        200
    );
    assert!(gw.wait_log("opted out", Duration::from_secs(5)));
    agent.send(json!({"type": "reply", "id": m["id"], "text": "are you there?"}));
    let e = agent.next_of("error");
    assert_eq!(e["id"], m["id"]);
    assert!(e["message"].as_str().unwrap().contains("opted out"));
    assert_eq!(twilio.sends().len(), 1);
    assert_eq!(gw.stop().code(), Some(0));
    assert!(
        t.store().inbox().unwrap().is_empty(),
        "the refused reply still acknowledged the message"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn message_send_cli_with_and_without_daemon() {
    let (_t, twilio, config, gw) = gateway("");
    let out = cli(
        &config,
        &[
            "message",
            "send",
            "--channel",
            "sms",
            "--target",
            "sms:+15557651111",
            "--message",
            "from the CLI",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sids"].as_array().unwrap().len(), 1);
    assert_eq!(twilio.sends()[0].field("To"), Some("+15557651111"));
    assert_eq!(gw.stop().code(), Some(0));
    // Daemon down: straight to Twilio.
    let out = cli(
        &config,
        &[
            "message",
            "send",
            "--target",
            "twilio-sms:+15557652222",
            "--message",
            "direct",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Sent to +15557652222"));
    assert_eq!(twilio.sends()[1].field("To"), Some("+15557652222"));
    // Errors.
    assert_eq!(
        cli(&config, &["message", "send", "--message", "x"])
            .status
            .code(),
        Some(2)
    );
    let out = cli(
        &config,
        &["message", "send", "--target", "5551234", "--message", "x"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("invalid --target"));
    assert_eq!(
        cli(
            &config,
            &[
                "message",
                "send",
                "--target",
                "+15557652222",
                "--message",
                ""
            ]
        )
        .status
        .code(),
        Some(1)
    );
    assert_eq!(
        cli(
            &config,
            &[
                "message",
                "send",
                "--channel",
                "whatsapp",
                "--target",
                "+15557652222",
                "--message",
                "x"
            ]
        )
        .status
        .code(),
        Some(1)
    );
    assert_eq!(twilio.sends().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_exec_runs_a_shell_script_per_message() {
    // Failed commands come back after 100 ms, doubling (not 30 s).
    let (t, twilio, config, gw) = gateway_with(OPEN, &[("SMSGATE_AGENT_RETRY_MS", "100")]);
    let script = t.path().join("agent.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\ntext=$(cat)\ncase \"$text\" in\n  fail) exit 3;;\n  slow) sleep 30;;\n  quiet) exit 0;;\nesac\necho \"you said: $text (from $SMS_FROM to $SMS_TO, $SMS_ACCOUNT, $SMS_MESSAGE_ID)\"\n",
    )
    .unwrap();
    let mut agent = std::process::Command::new(bin())
        .args(["agent", "exec", "--timeout", "1", "--config"])
        .arg(&config)
        .args(["--", "sh"])
        .arg(&script)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Each from its own sender: a failed message holds its sender's later ones.
    for (i, body) in ["fail", "slow", "quiet", "hello"].iter().enumerate() {
        let sid = format!("SMe000000000000000000000000000000{i}");
        assert_eq!(
            post_signed(
                &gw,
                "/webhooks/sms",
                &inbound(&sid, &format!("+1555765432{i}"), body)
            )
            .await
            .0,
            200
        );
    }
    let sends = twilio.wait_sends(1, Duration::from_secs(15));
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].field("Body"), Some("you said: hello (from +15557654323 to +15550001111, default, SMe0000000000000000000000000000003)"));
    // A command that exits non-zero or times out has not handled the message: it is
    // asked again (5 times in all), then kept in the dead letters, never acknowledged.
    let dead = |id: &str| {
        let out = cli(&config, &["queue", "list", "--json"]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        list.as_array()
            .and_then(|l| l.iter().find(|e| e["id"] == id).cloned())
            .filter(|e| e["state"] == "agent-failed")
    };
    assert!(
        wait_until(Duration::from_secs(30), || {
            dead("SMe0000000000000000000000000000000").is_some()
                && dead("SMe0000000000000000000000000000001").is_some()
        }),
        "{}",
        gw.log()
    );
    let failed = dead("SMe0000000000000000000000000000000").unwrap();
    assert_eq!(failed["attempts"], 5);
    assert!(
        failed["error"].as_str().unwrap().contains("exit status: 3"),
        "{failed}"
    );
    let slow = dead("SMe0000000000000000000000000000001").unwrap();
    assert!(
        slow["error"]
            .as_str()
            .unwrap()
            .contains("did not finish within 1 s"),
        "{slow}"
    );
    assert!(
        gw.log()
            .matches("SMe0000000000000000000000000000000")
            .count()
            >= 5
    );
    agent.kill().unwrap();
    let _ = agent.wait();
    assert_eq!(twilio.sends().len(), 1, "the reply went once");
    assert_eq!(gw.stop().code(), Some(0));
    assert!(
        t.store().inbox().unwrap().is_empty(),
        "the quiet one is acknowledged, the failed ones are dead letters"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mms_both_ways() {
    let (t, twilio, _, gw) = gateway(OPEN);
    let mut agent = TestAgent::connect(&t.agent_sock());
    let sid = "MMf0000000000000000000000000000001";
    let media_url = format!(
        "{}/2010-04-01/Accounts/{SID}/Messages/{sid}/Media/ME0000000000000000000000000000001",
        twilio.base_url()
    );
    let evil_url = "https://evil.example.com/x.jpg";
    let mut p = inbound(sid, "+15557654321", "look");
    p[6] = ("NumMedia", "2");
    p.extend([
        ("MediaUrl0", media_url.as_str()),
        ("MediaContentType0", "image/jpeg"),
        ("MediaUrl1", evil_url),
        ("MediaContentType1", "image/png"),
    ]);
    assert_eq!(post_signed(&gw, "/webhooks/sms", &p).await.0, 200);
    let m = agent.next_of("message");
    let media = m["media"].as_array().unwrap();
    assert_eq!(media.len(), 2);
    assert_eq!(media[0]["url"], media_url.as_str());
    assert_eq!(media[0]["contentType"], "image/jpeg");
    let path = media[0]["path"].as_str().expect("downloaded").to_string();
    assert_eq!(std::fs::read(&path).unwrap(), b"\xff\xd8fake-jpeg-bytes");
    assert!(
        media[1]["path"].is_null(),
        "a URL that is not this account's media is never fetched"
    );
    assert!(
        m["text"]
            .as_str()
            .unwrap()
            .contains("could not be downloaded"),
        "{m}"
    );
    let gets: Vec<_> = twilio
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect();
    assert_eq!(gets.len(), 1);
    assert!(gets[0]
        .authorization
        .as_deref()
        .unwrap()
        .starts_with("Basic "));
    agent.send(json!({"type": "reply", "id": sid, "text": "nice", "mediaUrls": ["https://example.com/a.png", "https://example.com/b.png"]}));
    agent.next_of("sent");
    assert!(
        !std::path::Path::new(&path).exists(),
        "media files are deleted after the ack"
    );
    let send = &twilio.sends()[0];
    let urls = send.fields("MediaUrl");
    assert_eq!(
        urls,
        ["https://example.com/a.png", "https://example.com/b.png"]
    );
    assert_eq!(gw.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn status_callbacks_out_of_order_reach_the_sending_agent() {
    let (t, _twilio, config, gw) = gateway(r#"defaultTo: "+15557650000""#);
    let mut agent = TestAgent::connect(&t.agent_sock());
    agent.send(json!({"type": "send", "text": "track me", "ref": "t1"}));
    let sent = agent.next_of("sent");
    let msid = sent["sids"][0].as_str().unwrap().to_string();
    let cb = |status: &'static str, code: &'static str| {
        vec![
            ("MessageSid", msid.clone()),
            ("MessageStatus", status.to_string()),
            ("ErrorCode", code.to_string()),
            ("AccountSid", SID.to_string()),
            ("From", FROM.to_string()),
            ("To", "+15557650000".to_string()),
        ]
    };
    for (status, code) in [
        ("delivered", ""),
        ("sent", ""),
        ("delivered", ""),
        ("queued", ""),
    ] {
        let params = cb(status, code);
        let refs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(post_signed(&gw, "/webhooks/sms", &refs).await.0, 200);
    }
    let st = agent.next_of("status");
    assert_eq!(st["sid"], msid.as_str());
    assert_eq!(st["status"], "delivered");
    agent.assert_no_more(
        &gw,
        &config,
        "stale and duplicate callbacks are not forwarded",
    );
    assert_eq!(gw.stop().code(), Some(0));
    let store = t.store();
    assert_eq!(
        store.delivery_status(&msid).unwrap().as_deref(),
        Some("delivered")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_outcome_waits_for_a_lookup_and_queue_commands() {
    let (t, twilio, config, gw) = gateway(r#"defaultTo: "+15557650000""#);
    let mut agent = TestAgent::connect(&t.agent_sock());
    // Twilio never answers: the outcome is unknown, so the send is neither retried
    // blind nor reported failed; Twilio is asked after the settle time (2 minutes here,
    // tests/unknown_sends.rs covers the lookups).
    twilio.push(Canned::Lost);
    agent.send(json!({"type": "send", "text": "into the void", "ref": "u1"}));
    gw.assert_log_soon("send outcome unknown", Duration::from_secs(10));
    twilio.push(twilio_error(21211, 400));
    agent.send(json!({"type": "send", "text": "bad number", "ref": "u2"}));
    let e = agent.next_of("error");
    assert_eq!(
        e["ref"], "u2",
        "no line for u1 before its outcome is known: {e}"
    );
    assert_eq!(e["code"], 21211);
    assert!(e["hint"].as_str().unwrap().contains("E.164"), "{e}");

    let list: serde_json::Value =
        serde_json::from_slice(&cli(&config, &["queue", "list", "--json"]).stdout).unwrap();
    let states: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["unknown", "failed"]);
    let unknown_id = list[0]["id"].as_str().unwrap().to_string();
    let failed_id = list[1]["id"].as_str().unwrap().to_string();
    assert!(cli(&config, &["queue", "purge", &failed_id])
        .status
        .success());
    let before = twilio.sends().len();
    assert!(cli(&config, &["queue", "requeue", &unknown_id])
        .status
        .success());
    twilio.wait_sends(before + 1, Duration::from_secs(5));
    assert_eq!(
        twilio.sends().len(),
        before + 1,
        "requeue sends it again, on the operator's say-so"
    );
    let sent = agent.next_of("sent");
    assert_eq!(sent["ref"], "u1", "whoever waited hears the outcome");
    let out = cli(&config, &["queue", "purge", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(gw.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_after_max_age_and_requeue() {
    let (t, _twilio, config) = configured(OPEN);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("stateDir:", r#"agentQueueMaxAge: "1s", stateDir:"#);
    std::fs::write(&config, text).unwrap();
    let gw = Gateway::start(&config);
    assert_eq!(
        gw.admit(
            "SMf0000000000000000000000000000001",
            "+15557654321",
            "anyone?"
        )
        .await,
        200
    );
    // The message must outlive agentQueueMaxAge (1 s): time passing is the scenario here,
    // not a readiness wait (the restart below waits for the "dead letters" line).
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(gw.stop().code(), Some(0));
    let gw = Gateway::start(&config);
    gw.assert_log_soon("dead letters", Duration::from_secs(5));
    let list: serde_json::Value =
        serde_json::from_slice(&cli(&config, &["queue", "list", "--json"]).stdout).unwrap();
    assert_eq!(list[0]["id"], "SMf0000000000000000000000000000001");
    assert_eq!(list[0]["kind"], "deadLetter");
    let mut agent = TestAgent::connect(&t.agent_sock());
    agent.assert_no_more(&gw, &config, "a dead letter is not delivered");
    assert!(cli(
        &config,
        &["queue", "requeue", "SMf0000000000000000000000000000001"]
    )
    .status
    .success());
    assert_eq!(agent.next_of("message")["text"], "anyone?");
    assert_eq!(gw.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn simulate_posts_a_signed_webhook() {
    let (t, _twilio, config, gw) = gateway(OPEN);
    // simulate reads gateway.listen: point it at the running port.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("127.0.0.1:0", &gw.addr.to_string());
    let sim_config = t.path().join("sim.json5");
    std::fs::write(&sim_config, text).unwrap();
    let mut agent = TestAgent::connect(&t.agent_sock());
    let out = cli(
        &sim_config,
        &["simulate", "--from", "+15557654321", "--body", "simulated"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(agent.next_of("message")["text"], "simulated");
    assert_eq!(gw.stop().code(), Some(0));
}

#[test]
fn demo_shows_the_whole_flow() {
    let out = std::process::Command::new(bin())
        .arg("demo")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    for needle in [
        "pairing code is",
        "pairing approve sms",
        "approved",
        "What's 2+2? Reply in one word.",
        "Done",
    ] {
        assert!(text.contains(needle), "missing {needle:?}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn conversations_are_per_sender_survive_restarts_and_slash_new_starts_afresh() {
    let (t, twilio, config, gw) =
        gateway(r#"dmPolicy: "allowlist", allowFrom: ["+15557650001", "+15557650002"]"#);
    let mut agent = TestAgent::connect(&t.agent_sock());
    let (a, b) = ("+15557650001", "+15557650002");
    let mut next = {
        let mut n = 0u32;
        move || {
            n += 1;
            format!("SMc{n:031}")
        }
    };
    let conv = |agent: &mut TestAgent| {
        let m = agent.next_of("message");
        agent.send(json!({"type": "ack", "id": m["id"]}));
        m["conversation"].as_str().unwrap().to_string()
    };
    assert_eq!(gw.admit(&next(), a, "one").await, 200);
    let a1 = conv(&mut agent);
    assert_eq!(gw.admit(&next(), a, "two").await, 200);
    assert_eq!(conv(&mut agent), a1, "stable for one sender");
    assert_eq!(gw.admit(&next(), b, "hi").await, 200);
    let b1 = conv(&mut agent);
    assert_ne!(a1, b1, "one conversation per sender");
    assert!(
        !a1.contains("555"),
        "the id says nothing of the number: {a1}"
    );

    // /new: not forwarded, one short SMS, a new id from then on (B's is untouched).
    assert_eq!(gw.admit(&next(), a, " /New ").await, 200);
    let sms = twilio.wait_sends(1, Duration::from_secs(10));
    assert_eq!(sms.len(), 1);
    assert_eq!(sms[0].field("To"), Some(a));
    assert!(sms[0].field("Body").unwrap().contains("New conversation"));
    assert!(gw.wait_quiet(&config, Duration::from_secs(10)));
    assert_eq!(
        agent.next_within(Duration::from_millis(1)),
        None,
        "/new is not forwarded"
    );
    assert_eq!(gw.admit(&next(), a, "three").await, 200);
    let a2 = conv(&mut agent);
    assert_ne!(a2, a1);
    assert_eq!(gw.admit(&next(), b, "still me").await, 200);
    assert_eq!(conv(&mut agent), b1);

    // A stranger's /new is a text like any other: refused by the allowlist, no SMS.
    assert_eq!(gw.admit(&next(), "+15557659999", "/new").await, 200);
    assert!(gw.wait_quiet(&config, Duration::from_secs(10)));
    assert_eq!(twilio.sends().len(), 1);

    // The id is stored: the same after a restart.
    drop(agent);
    assert_eq!(gw.stop().code(), Some(0));
    let gw = Gateway::start(&config);
    let mut agent = TestAgent::connect(&t.agent_sock());
    assert_eq!(gw.admit(&next(), a, "after restart").await, 200);
    assert_eq!(conv(&mut agent), a2);
}

#[tokio::test(flavor = "multi_thread")]
async fn channels_status_lists_the_connected_agents() {
    let (t, _twilio, config, gw) = gateway(OPEN);
    let mut raw = TestAgent::connect(&t.agent_sock());
    assert_eq!(
        gw.admit(
            "SMc1000000000000000000000000000001",
            "+15557650001",
            "hold me"
        )
        .await,
        200
    );
    let m = raw.next_of("message");
    // A built-in agent says what it is.
    let mut echo = std::process::Command::new(bin())
        .args(["--config"])
        .arg(&config)
        .args(["agent", "echo"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let listed = wait_until(Duration::from_secs(10), || {
        gw.status(&config)["connectedAgents"]
            .as_array()
            .is_some_and(|l| l.iter().any(|a| a["kind"] == "echo"))
    });
    let status = gw.status(&config);
    let _ = echo.kill();
    let _ = echo.wait();
    assert!(listed, "{status}");
    let agents = status["connectedAgents"].as_array().unwrap();
    let socket = agents.iter().find(|a| a["kind"] == "socket").unwrap();
    assert_eq!(socket["inFlight"], 1, "{status}");
    assert_eq!(socket["pid"], std::process::id(), "{status}");
    assert!(socket["oldestUnackedMs"].as_u64().is_some(), "{status}");
    let echo_entry = agents.iter().find(|a| a["kind"] == "echo").unwrap();
    assert_eq!(echo_entry["pid"], echo.id());
    let out = cli(&config, &["channels", "status"]);
    assert!(
        stdout(&out).contains("agent: socket (pid ")
            && stdout(&out).contains("1 message(s) in flight"),
        "{}",
        stdout(&out)
    );
    raw.send(json!({"type": "ack", "id": m["id"]}));
}

#[tokio::test(flavor = "multi_thread")]
async fn sends_over_a_spending_limit_are_held_and_released() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let to = "+15557650000";
    let bad = t.config(
        &twilio,
        r#"outboundLimits: { perHour: -1, perDay: "lots", perMinute: 3 }, releaseHeld: "sometimes""#,
    );
    let out = cli(&bad, &["config", "validate"]);
    assert_eq!(out.status.code(), Some(1));
    for want in [
        "channels.sms.outboundLimits.perHour",
        "channels.sms.outboundLimits.perDay",
        "channels.sms.outboundLimits.perMinute",
        "channels.sms.releaseHeld",
        "0 = no limit",
    ] {
        assert!(stderr(&out).contains(want), "{want}: {}", stderr(&out));
    }
    let config = t.config(
        &twilio,
        &format!(r#"defaultTo: "{to}", outboundLimits: {{ perRecipientPerHour: 2 }}"#),
    );
    let gw = Gateway::start(&config);
    let mut agent = TestAgent::connect(&t.agent_sock());
    for (i, r) in ["s1", "s2", "s3", "s4"].iter().enumerate() {
        agent.send(json!({"type": "send", "text": format!("text {i}"), "ref": r}));
        let line = if i < 2 {
            agent.next_of("sent")
        } else {
            agent.next_of("error")
        };
        assert_eq!(line["ref"], *r, "{line}");
        if i >= 2 {
            let m = line["message"].as_str().unwrap();
            assert!(
                m.contains("outboundLimits.perRecipientPerHour") && m.contains("queue release"),
                "{m}"
            );
        }
    }
    assert_eq!(
        twilio.sends_to(to).len(),
        2,
        "the third and fourth are held"
    );
    let list = queue_list(&config);
    let held: Vec<&serde_json::Value> = list.iter().filter(|r| r["state"] == "held").collect();
    assert_eq!(held.len(), 2, "{list:?}");
    assert_eq!(held[0]["limit"], "outboundLimits.perRecipientPerHour");
    let first = held[0]["id"].as_str().unwrap().to_string();
    // One by id, then the rest: each goes out once, over the limit, on the operator's word.
    let out = cli(&config, &["queue", "release", &first]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(twilio.wait_sends(3, Duration::from_secs(10)).len(), 3);
    let out = cli(&config, &["queue", "release", "--all"]);
    assert!(
        stdout(&out).contains("Released 1 held send(s)"),
        "{}",
        stdout(&out)
    );
    assert_eq!(twilio.wait_sends(4, Duration::from_secs(10)).len(), 4);
    assert!(gw.wait_quiet(&config, Duration::from_secs(10)));
    assert_eq!(twilio.sends_to(to).len(), 4);
    assert_eq!(
        cli(&config, &["queue", "release", "--all"]).status.code(),
        Some(1)
    );
    assert_eq!(gw.stop().code(), Some(0));
    // The window survives a restart: the sent log counts what already went out.
    let gw = Gateway::start(&config);
    let mut agent = TestAgent::connect(&t.agent_sock());
    agent.send(json!({"type": "send", "text": "after restart", "ref": "s5"}));
    assert_eq!(agent.next_of("error")["ref"], "s5");
    assert_eq!(gw.stop().code(), Some(0));
}

/// One phone flooding: everything is stored and answered 200, but it reaches the agent
/// no faster than inboundLimits.perSenderPerMinute; nothing is dropped.
#[tokio::test(flavor = "multi_thread")]
async fn a_flooding_sender_reaches_the_agent_no_faster_than_the_limit() {
    let (t, _twilio, config, gw) =
        gateway(r#"dmPolicy: "open", allowFrom: ["*"], inboundLimits: { perSenderPerMinute: 2 }"#);
    let mut agent = TestAgent::connect(&t.agent_sock());
    let started = std::time::Instant::now();
    for i in 1..=3u32 {
        assert_eq!(
            gw.admit(
                &format!("SMf{i:031}"),
                "+15557650001",
                &format!("flood {i}")
            )
            .await,
            200
        );
    }
    assert_eq!(
        gw.admit("SMf1000000000000000000000000000000", "+15557650002", "calm")
            .await,
        200
    );
    let mut texts = Vec::new();
    for _ in 0..3 {
        let m = agent.next_of("message");
        agent.send(json!({"type": "ack", "id": m["id"]}));
        texts.push(m["text"].as_str().unwrap().to_string());
    }
    texts.sort();
    assert_eq!(texts, ["calm", "flood 1", "flood 2"]);
    assert_eq!(
        gw.status(&config)["waiting"],
        1,
        "the third is stored and waits"
    );
    // The third goes once the first has left the minute.
    let m = agent
        .next_within(Duration::from_secs(75))
        .expect("released within the minute");
    assert_eq!(m["text"], "flood 3");
    assert!(
        started.elapsed() >= Duration::from_secs(55),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(gw.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn each_account_wide_limit_holds_across_recipients() {
    for limit in ["perHour", "perDay"] {
        let (t, twilio, config, gw) = gateway(&format!(
            r#"outboundLimits: {{ {limit}: 2, perRecipientPerHour: 0 }}, allowTo: ["+1555765*"]"#
        ));
        let mut agent = TestAgent::connect(&t.agent_sock());
        for (i, to) in ["+15557650001", "+15557650002", "+15557650003"]
            .iter()
            .enumerate()
        {
            agent.send(json!({"type": "send", "to": to, "text": "hi", "ref": format!("r{i}")}));
            let line = agent.next_of(if i < 2 { "sent" } else { "error" });
            assert_eq!(line["ref"], format!("r{i}"), "{limit}: {line}");
            if i == 2 {
                let m = line["message"].as_str().unwrap();
                assert!(m.contains(&format!("outboundLimits.{limit}")), "{m}");
            }
        }
        assert_eq!(twilio.sends().len(), 2, "{limit}");
        assert!(cli(&config, &["queue", "release", "--all"])
            .status
            .success());
        assert_eq!(twilio.wait_sends(3, Duration::from_secs(10)).len(), 3);
        assert_eq!(gw.stop().code(), Some(0));
    }
}

/// A reply to a message already acknowledged (a late reply) still reaches its sender,
/// also after a kill -9: its route is kept with the message's dedupe mark. A message
/// that never went to the agent (a stranger under pairing) has no route.
#[tokio::test(flavor = "multi_thread")]
async fn a_late_reply_finds_its_route_across_kill_9_and_a_stranger_has_none() {
    let (t, twilio, config, gw) = gateway(r#"dmPolicy: "allowlist", allowFrom: ["+15557654321"]"#);
    let mut agent = TestAgent::connect(&t.agent_sock());
    let id = "SMe0000000000000000000000000000001";
    assert_eq!(gw.admit(id, "+15557654321", "ping").await, 200);
    assert_eq!(agent.next_of("message")["id"], id);
    agent.send(json!({"type": "ack", "id": id}));
    assert!(gw.wait_quiet(&config, Duration::from_secs(10)));
    agent.send(json!({"type": "reply", "id": id, "text": "late answer"}));
    assert_eq!(agent.next_of("sent")["id"], id);
    // A stranger's message (denied by the allowlist) is stored as seen, not routed.
    let stranger = "SMe0000000000000000000000000000002";
    assert_eq!(gw.admit(stranger, "+15550001111", "hi").await, 200);
    assert!(gw.wait_quiet(&config, Duration::from_secs(10)));
    gw.kill9();
    let gw = Gateway::start(&config);
    let mut agent = TestAgent::connect(&t.agent_sock());
    agent.send(json!({"type": "reply", "id": id, "text": "later still"}));
    assert_eq!(agent.next_of("sent")["id"], id);
    agent.send(json!({"type": "reply", "id": stranger, "text": "sneaky"}));
    let e = agent.next_of("error");
    assert!(
        e["message"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown message id"),
        "{e}"
    );
    let sends = twilio.sends();
    assert_eq!(sends.len(), 2, "two late replies, nothing to the stranger");
    assert!(sends.iter().all(|s| s.field("To") == Some("+15557654321")));
    drop(gw);
}

/// A reply for a message delivered to another connection is refused and sends nothing:
/// only the agent holding a message may answer it (found by attacking the merged
/// hardening work: a second connection could answer, and so ack, the first's message).
#[tokio::test(flavor = "multi_thread")]
async fn a_reply_from_a_connection_not_holding_the_message_is_refused() {
    let (t, twilio, _, gw) = gateway(OPEN);
    let mut a = TestAgent::connect(&t.agent_sock());
    a.send(json!({"type": "hello", "kind": "holder"}));
    let sid = "SMd1000000000000000000000000000001";
    assert_eq!(gw.admit(sid, "+15557650001", "hi").await, 200);
    let m = a.next_of("message");
    assert_eq!(m["id"], sid);
    let mut b = TestAgent::connect(&t.agent_sock());
    b.send(json!({"type": "reply", "id": sid, "text": "hijack"}));
    let e = b.next_of("error");
    assert_eq!(e["id"], sid, "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("another agent"),
        "{e}"
    );
    // The holder still answers it, and only its reply goes out.
    a.send(json!({"type": "reply", "id": sid, "text": "mine"}));
    assert_eq!(a.next_of("sent")["id"], sid);
    let sends = twilio.wait_sends(1, Duration::from_secs(10));
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].field("Body"), Some("mine"));
    assert_eq!(gw.stop().code(), Some(0));
}
