//! Nothing lost: a 200 means the message is on disk, whatever happens next.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_right_after_200_loses_nothing() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let config = t.config(
        &twilio,
        r#"dmPolicy: "allowlist", allowFrom: ["+15557654321"]"#,
    );
    let mut acked = Vec::new();
    for round in 0..3 {
        let gw = Gateway::start(&config);
        // Concurrent webhooks, then SIGKILL the moment the last 200 arrives.
        let mut tasks = Vec::new();
        for i in 0..20 {
            let sid = format!("SM8{round}{i:030}");
            let p: Vec<(String, String)> = inbound(&sid, "+15557654321", "durable")
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect();
            let refs: Vec<(&str, &str)> = p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let (url, sig, body) = (
                gw.url("/webhooks/sms"),
                sign(TOKEN, PUBLIC, &refs),
                form(&refs),
            );
            tasks.push(tokio::spawn(async move {
                let status = client()
                    .post(url)
                    .header("X-Twilio-Signature", sig)
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16();
                (sid, status)
            }));
        }
        for task in tasks {
            let (sid, status) = task.await.unwrap();
            assert_eq!(status, 200);
            acked.push(sid);
        }
        gw.kill9();
    }
    // Restart: everything admitted is processed; the store opens cleanly.
    let gw = Gateway::start(&config);
    let store_ids = || {
        let mut ids: Vec<String> = smsgate::store::Store::open(&t.state())
            .unwrap()
            .inbox()
            .unwrap()
            .into_iter()
            .map(|(_, m)| m.id)
            .collect();
        ids.sort();
        ids
    };
    assert!(gw.wait_log("smsgate ready", Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(gw.stop().code(), Some(0));
    acked.sort();
    assert_eq!(
        store_ids(),
        acked,
        "every acknowledged message reached the agent inbox exactly once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_with_a_spooled_pairing_request_texts_once_after_restart() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let config = t.config(&twilio, "");
    // Twilio is slow: the send is in flight when we kill.
    twilio.push(Canned::Hang);
    let gw = Gateway::start(&config);
    assert_eq!(
        post_signed(
            &gw,
            "/webhooks/sms",
            &inbound("SM90000000000000000000000000000001", "+15557654321", "hi")
        )
        .await
        .0,
        200
    );
    assert!(wait_until(Duration::from_secs(5), || twilio.sends().len() == 1));
    gw.kill9();
    let gw = Gateway::start(&config);
    assert!(
        gw.wait_log("outcome is unknown", Duration::from_secs(5)),
        "{}",
        gw.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        twilio.sends().len(),
        1,
        "a send that may have gone out is not repeated"
    );
    // The pairing request itself survived.
    let list: serde_json::Value =
        serde_json::from_slice(&cli(&config, &["pairing", "list", "--json"]).stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(gw.stop().code(), Some(0));
}
