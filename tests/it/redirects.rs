//! Redirects are never followed on a call that carries a credential or a person's text
//! (issue 20 item 2): the configured Twilio base answers 307 to another host, which
//! must receive nothing; the send is failed (not retried, not recorded as sent, no SID
//! from the other host), and the error names the status and the target host.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::json;

const TO: &str = "+15557650000";

/// A config whose `apiBaseUrl` (and `messagingApiBaseUrl`) is `api`.
fn config_at(t: &TestDir, twilio: &FakeTwilio, api: &str) -> std::path::PathBuf {
    let path = t.config(
        twilio,
        &format!(r#"defaultTo: "{TO}", messagingApiBaseUrl: "{api}""#),
    );
    let text = std::fs::read_to_string(&path).unwrap().replace(
        &format!(r#"apiBaseUrl: "{}""#, twilio.base_url()),
        &format!(r#"apiBaseUrl: "{api}""#),
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn a_307_to_another_host_fails_the_send_and_the_other_host_gets_nothing() {
    let t = TestDir::new();
    // The other host: a recording fake that would happily create the message.
    let elsewhere = FakeTwilio::start();
    let (redirecting, hits) = redirector(&elsewhere.base_url());
    let config = config_at(&t, &elsewhere, &redirecting);
    let gw = Gateway::start(&config);
    let mut agent = TestAgent::connect(&t.state().join("agent.sock"));
    agent.send(json!({"type": "send", "text": "a private text", "ref": "r1"}));
    let err = agent.next_of("error");
    assert_eq!(err["ref"], "r1", "{err}");
    let host = elsewhere.addr.to_string();
    let message = err["message"].as_str().unwrap();
    assert!(
        message.contains("307") && message.contains(&host) && message.contains("not followed"),
        "{message}"
    );
    assert!(gw.wait_quiet(&config, Duration::from_secs(10)));
    assert!(
        elsewhere.requests().is_empty(),
        "the other host got {:?}",
        elsewhere.requests()
    );
    assert_eq!(*hits.lock().unwrap(), 1, "asked once, not retried");
    let list = queue_list(&config);
    let sends: Vec<&serde_json::Value> = list.iter().filter(|e| e["kind"] == "send").collect();
    assert_eq!(sends.len(), 1, "{list:?}");
    assert_eq!(sends[0]["state"], "failed", "{list:?}");
    let error = sends[0]["error"].as_str().unwrap();
    assert!(error.contains("307") && error.contains(&host), "{error}");

    // The operator's `message send` through the daemon: exit 1, saying so.
    let out = cli(
        &config,
        &["message", "send", "--target", TO, "--message", "hello"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("307") && stderr(&out).contains(&host),
        "{}",
        stderr(&out)
    );
    // A probe (credentials on a GET) is not followed either.
    let out = cli(&config, &["channels", "status", "--probe", "--json"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("307"), "{text}");
    assert!(
        elsewhere.requests().is_empty(),
        "the other host got {:?}",
        elsewhere.requests()
    );
    assert_eq!(gw.stop().code(), Some(0));
}
