//! The agent's `fail` line (CONTRACT §11) end to end: redelivery with backoff, the
//! sender's later messages held behind a failed one, the dead letters after 5 failures
//! (durably counted across kill -9) or at once with `retry: false`, `queue requeue`;
//! and `agent exec`, which fails what its command did not handle.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn entry(config: &std::path::Path, id: &str) -> Option<serde_json::Value> {
    queue_list(config).into_iter().find(|e| e["id"] == id)
}

const A: &str = "+15557654321";
const B: &str = "+15557650002";

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_message_comes_back_after_the_backoff_and_holds_its_senders_later_ones() {
    let (t, _twilio, config, gw) = gateway_with(OPEN, &[("SMSGATE_AGENT_RETRY_MS", "1000")]);
    let mut agent = TestAgent::connect(&t.agent_sock());
    let m1 = "SMa1000000000000000000000000000001";
    assert_eq!(gw.admit(m1, A, "first").await, 200);
    assert_eq!(agent.next_of("message")["id"], m1);
    agent.send(json!({"type": "fail", "id": m1, "error": "model down", "retry": true}));
    let failed_at = Instant::now();
    gw.assert_log_soon("failure 1 of 5", Duration::from_secs(5));
    // The same sender's next text waits behind the failed one; another sender's does not.
    let m2 = "SMa1000000000000000000000000000002";
    let m3 = "SMa1000000000000000000000000000003";
    assert_eq!(gw.admit(m2, A, "second").await, 200);
    assert_eq!(gw.admit(m3, B, "other").await, 200);
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let m = agent.next_of("message");
        let id = m["id"].as_str().unwrap().to_string();
        if id == m1 {
            assert!(
                failed_at.elapsed() >= Duration::from_millis(1000),
                "redelivered after {:?}, before the backoff",
                failed_at.elapsed()
            );
            assert_eq!(m["text"], "first", "the same message, same id");
            assert!(!seen.contains(&m2.to_string()), "m2 overtook m1: {seen:?}");
        }
        agent.send(json!({"type": "ack", "id": id}));
        seen.push(id);
    }
    let pos = |id: &str| seen.iter().position(|s| s == id).unwrap();
    assert!(pos(m1) < pos(m2), "order per sender kept: {seen:?}");
    assert!(gw.wait_quiet(&config, Duration::from_secs(10)));
    assert!(
        queue_list(&config).is_empty(),
        "acked after the retry: nothing dead"
    );
    assert_eq!(gw.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn five_failures_across_kill_9_end_in_the_dead_letters_and_requeue_delivers_again() {
    let (t, _twilio, config) = configured(OPEN);
    let env = [("SMSGATE_AGENT_RETRY_MS", "100")];
    let gw = Gateway::start_with(&config, &env);
    let m1 = "SMa2000000000000000000000000000001";
    let m2 = "SMa2000000000000000000000000000002";
    assert_eq!(gw.admit(m1, A, "doomed").await, 200);
    let mut agent = TestAgent::connect(&t.agent_sock());
    for n in 1..=2 {
        assert_eq!(agent.next_of("message")["id"], m1);
        agent.send(json!({"type": "fail", "id": m1, "error": format!("try {n}")}));
        let line = format!("failure {n} of 5");
        gw.assert_log_soon(&line, Duration::from_secs(5));
    }
    // The count is on disk (the log line follows the fsync): kill -9 keeps it.
    gw.kill9();
    drop(agent);
    let gw = Gateway::start_with(&config, &env);
    let mut agent = TestAgent::connect(&t.agent_sock());
    for n in 3..=5 {
        let m = agent.next_of("message");
        assert_eq!(m["id"], m1, "m2 waits behind m1 while m1 is retried");
        agent.send(json!({"type": "fail", "id": m1, "error": format!("try {n}"), "retry": true}));
        if n == 3 {
            // Admitted while m1 waits for its next delivery: it waits behind m1. (A
            // message already delivered while m1 was in flight stays with the agent.)
            gw.assert_log_soon("failure 3 of 5", Duration::from_secs(5));
            assert_eq!(gw.admit(m2, A, "after").await, 200);
        }
    }
    gw.assert_log_soon(
        "moved to the dead letters after 5 failures",
        Duration::from_secs(5),
    );
    // Dead: the sender's later message goes on, m1 is not delivered again.
    assert_eq!(agent.next_of("message")["id"], m2);
    agent.send(json!({"type": "ack", "id": m2}));
    let e = entry(&config, m1).expect("m1 in queue list");
    assert_eq!(e["state"], "agent-failed", "{e}");
    assert_eq!(e["error"], "try 5");
    assert_eq!(e["attempts"], 5);
    assert_eq!(e["kind"], "deadLetter");
    let text = stdout(&cli(&config, &["queue", "list"]));
    assert!(
        text.contains("agent-failed") && text.contains("try 5"),
        "{text}"
    );
    // Requeue: delivered again, with all its tries back.
    assert!(cli(&config, &["queue", "requeue", m1]).status.success());
    assert_eq!(agent.next_of("message")["id"], m1);
    agent.send(json!({"type": "fail", "id": m1, "error": "still", "retry": true}));
    gw.assert_log_soon("failure 1 of 5", Duration::from_secs(5));
    assert_eq!(agent.next_of("message")["id"], m1);
    // retry: false ends it at once.
    agent.send(json!({"type": "fail", "id": m1, "error": "cannot parse", "retry": false}));
    gw.assert_log_soon("retry: false", Duration::from_secs(5));
    let e = entry(&config, m1).expect("m1 dead again");
    assert_eq!(
        (e["state"].as_str(), e["attempts"].as_u64()),
        (Some("agent-failed"), Some(2))
    );
    agent.assert_no_more(
        &gw,
        &config,
        "a message the agent ended is not delivered again",
    );
    // A fail for a message that is not in flight here is refused, nothing changes.
    agent.send(json!({"type": "fail", "id": m2}));
    let err = agent.next_of("error");
    assert_eq!(err["id"], m2);
    assert_eq!(gw.stop().code(), Some(0));
}

#[test]
fn agent_exec_refuses_a_command_that_cannot_run() {
    let (t, _twilio, config) = configured(OPEN);
    let plain = t.path().join("not-executable.sh");
    std::fs::write(&plain, "#!/bin/sh\necho hi\n").unwrap();
    for (cmd, needle) in [
        ("/nonexistent", "cannot run \"/nonexistent\": no such file"),
        ("surely-no-such-command-xyz", "not found in PATH"),
        (plain.to_str().unwrap(), "not executable"),
    ] {
        let out = std::process::Command::new(bin())
            .args(["agent", "exec", "--config"])
            .arg(&config)
            .args(["--", cmd])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{cmd}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{cmd}: {}", stderr(&out));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn texts_waiting_for_an_agent_are_visible_in_queue_list_status_and_the_log() {
    let (t, _twilio, config, gw) = gateway_with(OPEN, &[("SMSGATE_AGENT_RETRY_MS", "600000")]);
    let m1 = "SMa3000000000000000000000000000001";
    assert_eq!(gw.admit(m1, A, "anyone there?").await, 200);
    // No agent: the log says so (at once, then once a minute), the CLI shows it.
    assert!(
        gw.wait_log(
            "1 text(s) waiting for an agent (the oldest for",
            Duration::from_secs(10)
        ),
        "{}",
        gw.log()
    );
    assert!(gw.log().contains("no agent is connected"));
    let e = entry(&config, m1).expect("the waiting text is listed");
    assert_eq!(e["state"], "waiting", "{e}");
    assert_eq!(e["kind"], "message");
    assert_eq!(e["attempts"], 0);
    assert!(e["ageSecs"].as_u64().is_some(), "{e}");
    // And for people: the state says how long it has waited and how often it failed.
    let out = cli(&config, &["queue", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let line = text.lines().find(|l| l.starts_with(m1)).unwrap_or_default();
    assert!(
        line.contains("  waiting ")
            && line.contains(" for an agent, 0 failed deliveries  from +15557654321"),
        "{text}"
    );
    let status = gw.status(&config);
    assert_eq!(status["agents"], 0);
    assert_eq!(status["waiting"], 1);
    assert!(status["oldestWaitingSecs"].as_u64().is_some(), "{status}");
    let text = stdout(&cli(&config, &["channels", "status"]));
    assert!(
        text.contains("agent: NONE connected; 1 text(s) waiting, the oldest for"),
        "{text}"
    );
    // Delivered and failed once: still waiting, with its attempt, error and next try.
    let mut agent = TestAgent::connect(&t.agent_sock());
    assert_eq!(agent.next_of("message")["id"], m1);
    agent.send(json!({"type": "fail", "id": m1, "error": "model down"}));
    gw.assert_log_soon("failure 1 of 5", Duration::from_secs(5));
    let e = entry(&config, m1).expect("still listed");
    assert_eq!(
        (
            e["state"].as_str(),
            e["attempts"].as_u64(),
            e["error"].as_str()
        ),
        (Some("waiting"), Some(1), Some("model down")),
        "{e}"
    );
    assert!(e["nextAttempt"].as_str().is_some(), "{e}");
    let out = cli(&config, &["queue", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(" for an agent, 1 failed delivery  from +15557654321")
            && text.contains("(model down)  next delivery at "),
        "{text}"
    );
    let text = stdout(&cli(&config, &["channels", "status"]));
    assert!(
        text.contains("agent: connected; 1 text(s) waiting"),
        "{text}"
    );
    assert_eq!(gw.stop().code(), Some(0));
}
