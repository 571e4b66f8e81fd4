//! The Python agent in docs/agent-protocol.md, run for real against the daemon.

use crate::common;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn the_documented_python_agent_works() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/agent-protocol.md"
    ))
    .unwrap();
    let block = doc
        .split("<!-- agent.py begin -->")
        .nth(1)
        .unwrap()
        .split("<!-- agent.py end -->")
        .next()
        .unwrap();
    let code = block
        .trim()
        .trim_start_matches("```python")
        .trim_end_matches("```");
    let t = TestDir::new();
    let script = t.path().join("agent.py");
    std::fs::write(&script, code).unwrap();
    let twilio = FakeTwilio::start();
    let gw = Gateway::start(&t.config(&twilio, OPEN));
    let sock = t.state().join("agent.sock");
    let mut py = std::process::Command::new("python3")
        .arg(&script)
        .arg(&sock)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(
        gw.admit("SMd0000000000000000000000000000001", "+15557654321", "ping")
            .await,
        200
    );
    let sends = twilio.wait_sends(1, std::time::Duration::from_secs(10));
    assert_eq!(
        sends[0].field("Body"),
        Some("Got it: 'ping' (0 attachment(s))")
    );
    assert_eq!(sends[0].field("To"), Some("+15557654321"));
    py.kill().unwrap();
    let _ = py.wait();
    assert_eq!(gw.stop().code(), Some(0));
}
