//! Texts smsgate sends on its own (pairing codes, approvals, `/new` confirmations)
//! cost money like the agent's: they count against `outboundLimits`, over a limit they
//! are dropped (not held), and a burst of `/new` gets one confirmation a minute.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_slash_new_texts_once_and_own_texts_count_against_the_limits() {
    let (t, twilio, config, gw) =
        gateway(r#"dmPolicy: "open", allowFrom: ["*"], outboundLimits: { perHour: 3 }"#);
    let mut agent = TestAgent::connect(&t.state().join("agent.sock"));
    // 120 `/new` at once from one phone: one confirmation.
    let a = "+15557650001";
    let mut tasks = Vec::new();
    for i in 0..120u32 {
        let sid = format!("SMc{i:031}");
        let params = inbound(&sid, a, "/new");
        let (url, sig, body) = (
            gw.url("/webhooks/sms"),
            sign(TOKEN, PUBLIC, &params),
            form(&params),
        );
        tasks.push(tokio::spawn(async move {
            let headers = vec![
                (
                    "content-type",
                    "application/x-www-form-urlencoded".to_string(),
                ),
                ("X-Twilio-Signature", sig),
            ];
            post_raw(url, headers, body).await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    assert!(gw.wait_quiet(&config, Duration::from_secs(20)));
    assert_eq!(twilio.sends_to(a).len(), 1, "{:?}", twilio.sends());
    // Its conversation still started afresh each time: the next text carries a new id.
    assert_eq!(gw.admit(&format!("SMc{:031}", 500), a, "hello").await, 200);
    let first = agent.next_of("message");
    agent.send(json!({"type": "ack", "id": first["id"]}));
    assert_eq!(gw.admit(&format!("SMc{:031}", 501), a, "/new").await, 200);
    assert_eq!(gw.admit(&format!("SMc{:031}", 502), a, "again").await, 200);
    let second = agent.next_of("message");
    agent.send(json!({"type": "ack", "id": second["id"]}));
    assert_ne!(first["conversation"], second["conversation"]);
    // Two more confirmations fill the hour of three; the next is dropped, not held.
    for (i, who) in ["+15557650002", "+15557650003", "+15557650004"]
        .iter()
        .enumerate()
    {
        assert_eq!(gw.admit(&format!("SMd{i:031}"), who, "/new").await, 200);
    }
    assert!(gw.wait_quiet(&config, Duration::from_secs(20)));
    assert_eq!(twilio.sends().len(), 3, "{:?}", twilio.sends());
    assert!(twilio.sends_to("+15557650004").is_empty());
    let list = queue_list(&config);
    let dropped: Vec<&serde_json::Value> =
        list.iter().filter(|e| e["to"] == "+15557650004").collect();
    assert_eq!(dropped.len(), 1, "{list:?}");
    assert_eq!(dropped[0]["state"], "failed");
    let why = dropped[0]["error"].as_str().unwrap();
    assert!(
        why.contains("outboundLimits.perHour") && why.contains("not held"),
        "{why}"
    );
    gw.assert_log_has("not held");
    // The agent's reply finds the hour already spent by those texts: held.
    assert_eq!(
        gw.admit(&format!("SMc{:031}", 600), "+15557650005", "hi")
            .await,
        200
    );
    let m = agent.next_of("message");
    agent.send(json!({"type": "reply", "id": m["id"], "text": "hello"}));
    let err = agent.next_of("error");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("outboundLimits.perHour"),
        "{err}"
    );
    assert_eq!(twilio.sends().len(), 3);
    assert_eq!(gw.stop().code(), Some(0));
}
