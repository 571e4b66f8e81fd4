//! Spending guardrails, as the operator sees them: a burst of replies over an
//! `outboundLimits` window gives every held reply's agent an `error` line, but the log
//! line and the metric say so once per window, not once per held send.

use crate::common;

use std::collections::HashMap;

use common::*;
use serde_json::json;

const LIMIT_LINE: &str = "outbound limit reached";

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_over_the_limit_is_said_once_in_log_and_metric_and_to_every_agent() {
    let (t, twilio, config) = configured(
        r#"dmPolicy: "open", allowFrom: ["*"], outboundLimits: { perHour: 3 }, allowTo: ["+1555765*"]"#,
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("stateDir:", r#"metricsListen: "127.0.0.1:0", stateDir:"#);
    std::fs::write(&config, text).unwrap();
    let gw = Gateway::start(&config);
    let mut agent = TestAgent::connect(&t.agent_sock());
    // Two people, four texts each: eight replies against an hour of three.
    let people = ["+15557650001", "+15557650002"];
    for i in 0..8u32 {
        let sid = format!("SMb{i:031}");
        assert_eq!(gw.admit(&sid, people[(i % 2) as usize], "hi").await, 200);
    }
    let mut ids = Vec::new();
    for _ in 0..8 {
        let m = agent.next_of("message");
        ids.push(m["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        agent.send(json!({"type": "reply", "id": id, "text": format!("answer to {id}")}));
    }
    let mut outcome: HashMap<String, serde_json::Value> = HashMap::new();
    while outcome.len() < 8 {
        let line = agent.next();
        if line["type"] == "sent" || line["type"] == "error" {
            outcome.insert(line["id"].as_str().unwrap().to_string(), line);
        }
    }
    let errors: Vec<&serde_json::Value> =
        outcome.values().filter(|l| l["type"] == "error").collect();
    assert_eq!(errors.len(), 5, "three sent, five held: {outcome:?}");
    for e in &errors {
        let m = e["message"].as_str().unwrap();
        assert!(
            m.contains("outboundLimits.perHour") && m.contains("queue release"),
            "{m}"
        );
    }
    assert_eq!(twilio.sends().len(), 3);
    // Every hold was decided before its agent heard of it: the count is final.
    let metrics = gw.scrape().await;
    assert!(
        metrics.contains(
            "smsgate_outbound_limit_hits_total{account=\"default\",limit=\"perHour\"} 1\n"
        ),
        "{metrics}"
    );
    assert!(!metrics.contains("code=\"held\""), "{metrics}");
    let log = gw.stop_and_log();
    let said: Vec<&str> = log.lines().filter(|l| l.contains(LIMIT_LINE)).collect();
    assert_eq!(said.len(), 1, "{said:#?}");
    assert!(
        said[0].contains("outboundLimits.perHour") && said[0].contains("once per hour"),
        "{}",
        said[0]
    );
    assert!(
        !said[0].contains("+1555765"),
        "no phone number in it: {}",
        said[0]
    );

    // After a restart the window is still full (the sent log counts); the memory of what
    // was said is not kept, so the first hold says it once more, and only once.
    let gw = Gateway::start(&config);
    let mut agent = TestAgent::connect(&t.agent_sock());
    for i in 0..2u32 {
        agent.send(
            json!({"type": "send", "to": people[0], "text": "again", "ref": format!("r{i}")}),
        );
        assert_eq!(agent.next_of("error")["ref"], format!("r{i}"));
    }
    let metrics = gw.scrape().await;
    assert!(
        metrics.contains(
            "smsgate_outbound_limit_hits_total{account=\"default\",limit=\"perHour\"} 1\n"
        ),
        "{metrics}"
    );
    let log = gw.stop_and_log();
    assert_eq!(log.matches(LIMIT_LINE).count(), 1, "{log}");
    assert_eq!(twilio.sends().len(), 3, "nothing over the limit went out");
}

/// Limits of `-1`, a string, a fraction or more than fits are config errors naming the
/// key path (top level and per account) and the fix; nothing starts with them.
#[test]
fn bad_limits_are_config_errors_naming_the_key_path() {
    let (_t, _twilio, config) = configured(
        r#"outboundLimits: { perHour: -1, perDay: "lots", perRecipientPerHour: 1.5, maxHeld: -2 },
    inboundLimits: { perSenderPerMinute: -1 },
    accounts: { b: { webhookPath: "/webhooks/b", fromNumber: "+15550009999",
      publicWebhookUrl: "https://sms.example.test/webhooks/b",
      outboundLimits: { perDay: 99999999999 }, inboundLimits: { perSenderPerMinute: "fast" } } },"#,
    );
    let out = cli(&config, &["config", "validate"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    for want in [
        "channels.sms.outboundLimits.perHour",
        "channels.sms.outboundLimits.perDay",
        "channels.sms.outboundLimits.perRecipientPerHour",
        "channels.sms.outboundLimits.maxHeld",
        "0 = no cap",
        "channels.sms.inboundLimits.perSenderPerMinute",
        "channels.sms.accounts.b.outboundLimits.perDay",
        "channels.sms.accounts.b.inboundLimits.perSenderPerMinute",
        "0 = no limit",
        "-1",
        "\"lots\"",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
    assert!(!err.contains(TOKEN), "no secret in the error: {err}");
    // The gateway refuses to start with it, with the same words.
    let out = std::process::Command::new(bin())
        .args(["gateway", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("channels.sms.inboundLimits.perSenderPerMinute"),
        "{}",
        stderr(&out)
    );
}

/// Beyond `outboundLimits.maxHeld` held sends, a send that would be held is refused
/// with an `error` line naming the cap and nothing is stored; a text of several parts
/// is held or refused as a whole; across a restart too (issue 20 item 7). `config
/// show` shows the cap.
#[tokio::test(flavor = "multi_thread")]
async fn beyond_max_held_a_send_is_refused_and_nothing_is_stored() {
    let (t, twilio, config) = configured(
        r#"defaultTo: "+15557650000", textChunkLimit: 40, outboundLimits: { perHour: 1, maxHeld: 2 }"#,
    );
    let shown: serde_json::Value =
        serde_json::from_slice(&cli(&config, &["config", "show", "--json"]).stdout).unwrap();
    assert!(
        shown.to_string().contains(r#""maxHeld":2"#),
        "config show: {shown}"
    );
    let gw = Gateway::start(&config);
    let mut agent = TestAgent::connect(&t.agent_sock());
    let long = "words ".repeat(12);
    let texts = ["text 0", "text 1", long.trim(), "text 3", "text 4"];
    let mut outcome = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        agent.send(json!({"type": "send", "text": text, "ref": format!("r{i}")}));
        let line = loop {
            let l = agent.next();
            if l["type"] == "sent" || l["type"] == "error" {
                break l;
            }
        };
        assert_eq!(line["ref"], format!("r{i}"), "{line}");
        outcome.push(line);
    }
    assert_eq!(outcome[0]["type"], "sent");
    for i in [1, 3] {
        let m = outcome[i]["message"].as_str().unwrap();
        assert!(m.starts_with("held"), "r{i}: {m}");
    }
    // r2 has two parts: with one send held, only one more fits, so it is refused whole.
    for i in [2, 4] {
        assert_eq!(outcome[i]["type"], "error");
        let m = outcome[i]["message"].as_str().unwrap();
        assert!(
            m.contains("outboundLimits.maxHeld = 2") && m.contains("nothing was stored"),
            "r{i}: {m}"
        );
    }
    let held = |config: &std::path::Path| -> Vec<String> {
        let list: serde_json::Value =
            serde_json::from_slice(&cli(config, &["queue", "list", "--json"]).stdout).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{} {}",
                    e["state"].as_str().unwrap(),
                    e["text"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(held(&config), ["held text 1", "held text 3"]);
    assert_eq!(twilio.sends().len(), 1);
    let log = gw.stop_and_log();
    assert_eq!(
        log.matches("outboundLimits.maxHeld reached").count(),
        1,
        "{log}"
    );

    // After a restart the held sends still count.
    let gw = Gateway::start(&config);
    let mut agent = TestAgent::connect(&t.agent_sock());
    agent.send(json!({"type": "send", "text": "after the restart", "ref": "r5"}));
    let e = agent.next_of("error");
    assert_eq!(e["ref"], "r5");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("outboundLimits.maxHeld = 2"),
        "{e}"
    );
    assert_eq!(held(&config), ["held text 1", "held text 3"]);
    assert_eq!(gw.stop().code(), Some(0));
    assert_eq!(twilio.sends().len(), 1);
}
