//! Issue 20 item 12, issue 24 items 7–11: the CLI behaves like a good Unix tool (socket
//! paths that are not ours, closed pipes, Ctrl-C in the demo, help, version, colour).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

/// A config whose agent (or admin) socket is at `socket`.
fn config_with_socket(
    t: &TestDir,
    twilio: &FakeTwilio,
    key: &str,
    socket: &Path,
) -> std::path::PathBuf {
    t.write_config(&format!(
        r#"{{
  gateway: {{ listen: "127.0.0.1:0", stateDir: "{state}", {key}: "{socket}" }},
  channels: {{ sms: {{
    accountSid: "{SID}", authToken: "{TOKEN}", fromNumber: "{FROM}",
    publicWebhookUrl: "{PUBLIC}", apiBaseUrl: "{api}",
  }} }},
}}"#,
        state = t.state().display(),
        socket = socket.display(),
        api = twilio.base_url(),
    ))
}

/// Runs the gateway expecting it to refuse to start: its output once it exits (killed
/// and reported if it is still running after 20 s, i.e. it started).
fn gateway_output(config: &Path) -> std::process::Output {
    let mut child = Command::new(bin())
        .args(["gateway", "--config"])
        .arg(config)
        .env_remove("RUST_LOG")
        .env_remove("SMSGATE_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if !wait_until(Duration::from_secs(20), || {
        child.try_wait().unwrap().is_some()
    }) {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!("the gateway started; log:\n{}", stderr(&out));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_file_at_a_socket_path_is_never_deleted_and_the_gateway_refuses_to_start() {
    let twilio = FakeTwilio::start();
    for key in ["agentSocket", "adminSocket"] {
        let t = TestDir::new();
        let path = t.path().join("precious.txt");
        let content = b"an operator's notes\n\x00\xff binary too";
        std::fs::write(&path, content).unwrap();
        let config = config_with_socket(&t, &twilio, key, &path);
        let out = gateway_output(&config);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{key}: {err}");
        assert!(
            err.contains(&format!("gateway.{key}"))
                && err.contains(&path.display().to_string())
                && err.contains("not a socket"),
            "{key}: {err}"
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            content,
            "{key}: the file changed"
        );

        // A directory and a symlink to the file are not ours either.
        let dir = t.path().join("a-dir");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("inside"), b"x").unwrap();
        let config = config_with_socket(&t, &twilio, key, &dir);
        assert_eq!(gateway_output(&config).status.code(), Some(1));
        assert!(dir.join("inside").exists());
        let link = t.path().join("link.sock");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let config = config_with_socket(&t, &twilio, key, &link);
        assert_eq!(gateway_output(&config).status.code(), Some(1));
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&path).unwrap(), content);
    }
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_one_refused() {
    let twilio = FakeTwilio::start();
    let t = TestDir::new();
    let sock = t.path().join("agent.sock");
    // Stale: bound, then its listener gone (a crashed gateway leaves this).
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let config = config_with_socket(&t, &twilio, "agentSocket", &sock);
    let gw = Gateway::start(&config);
    assert!(std::os::unix::net::UnixStream::connect(&sock).is_ok());
    // Live: a second instance (own store, same agent socket) is refused and the first
    // keeps its socket.
    let t2 = TestDir::new();
    let config2 = config_with_socket(&t2, &twilio, "agentSocket", &sock);
    let out = gateway_output(&config2);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("gateway.agentSocket") && stderr(&out).contains("in use"),
        "{}",
        stderr(&out)
    );
    assert!(std::os::unix::net::UnixStream::connect(&sock).is_ok());
    gw.stop();
}
