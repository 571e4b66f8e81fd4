//! Shared by tests/it/bridges_*.rs: a bridge process (`smsgate agent acp|openai`) with its
//! log captured, and the ACP test agent's event file.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{
    bin, gateway_with, inbound, post_signed, queue_list, wait_until, FakeTwilio, Gateway, TestDir,
    OPEN,
};

static SEQ: AtomicU32 = AtomicU32::new(1);

/// Texts `body` from `from` (a fresh MessageSid each time), asserting the 200.
pub async fn text(gw: &Gateway, from: &str, body: &str) {
    let sid = format!("SM{:032x}", SEQ.fetch_add(1, Ordering::Relaxed));
    let (status, _) = post_signed(gw, "/webhooks/sms", &inbound(&sid, from, body)).await;
    assert_eq!(status, 200);
}

/// Waits for the `n`th SMS to `to` and returns its body.
pub fn nth_sms(twilio: &FakeTwilio, to: &str, n: usize, timeout: Duration) -> String {
    assert!(
        wait_until(timeout, || twilio.sends_to(to).len() >= n),
        "no SMS #{n} to {to} within {timeout:?}; sends: {:?}",
        twilio
            .sends()
            .iter()
            .map(|r| (
                r.field("To").map(String::from),
                r.field("Body").map(String::from)
            ))
            .collect::<Vec<_>>()
    );
    twilio.sends_to(to)[n - 1]
        .field("Body")
        .unwrap()
        .to_string()
}

/// A bridge test's daemon: the directory, the fake Twilio, the running gateway and its
/// config. Each bridge's test file adds the method that starts its bridge on it.
pub struct Setup {
    pub t: TestDir,
    pub twilio: FakeTwilio,
    pub gw: Gateway,
    pub config: PathBuf,
}

/// A daemon open to everyone (`dmPolicy: "open"`).
pub fn setup() -> Setup {
    setup_with(&[])
}

/// With the daemon's environment (`SMSGATE_AGENT_RETRY_MS` shortens the backoff
/// after a `fail`).
pub fn setup_with(env: &[(&str, &str)]) -> Setup {
    Setup::new(OPEN, env)
}

impl Setup {
    /// A daemon with `sms_extra` in `channels.sms`, started with `env`.
    pub fn new(sms_extra: &str, env: &[(&str, &str)]) -> Self {
        let (t, twilio, config, gw) = gateway_with(sms_extra, env);
        Self {
            t,
            twilio,
            gw,
            config,
        }
    }

    /// Texts `body` from `from` to this daemon (see [`text`]).
    pub async fn text(&self, from: &str, body: &str) {
        text(&self.gw, from, body).await;
    }

    /// The `n`th SMS to `to`, waited for up to 20 s (a turn goes through the bridge and
    /// its agent; see [`nth_sms`]).
    pub fn sms(&self, to: &str, n: usize) -> String {
        nth_sms(&self.twilio, to, n, Duration::from_secs(20))
    }

    /// Waits up to 30 s for a text to land in the dead letters (`agent-failed`), failing
    /// with `bridge`'s log; returns the queue list then.
    pub fn wait_dead_letter(&self, bridge: &Bridge) -> Vec<serde_json::Value> {
        let dead = wait_until(Duration::from_secs(30), || {
            queue_list(&self.config)
                .iter()
                .any(|e| e["state"] == "agent-failed")
        });
        assert!(dead, "no dead letter; bridge log:\n{}", bridge.log());
        queue_list(&self.config)
    }

    /// `smsgate agent <kind>` on this daemon's agent socket, with its state in the
    /// test's directory; the bridge's own flags follow.
    pub fn bridge_args(&self, kind: &str) -> Vec<String> {
        vec![
            kind.into(),
            "--socket".into(),
            s(&self.t.agent_sock()),
            "--state-dir".into(),
            s(&self.t.path().join("bridge-state")),
        ]
    }
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `node` and the ACP SDK, or a failing test that says how to get them.
pub fn acp_agent_command() -> Vec<String> {
    let sdk = repo().join(".tools/node/node_modules/@agentclientprotocol/sdk/package.json");
    assert!(
        sdk.exists(),
        "the ACP tests need @agentclientprotocol/sdk: run scripts/install-test-tools"
    );
    vec![
        "node".into(),
        repo()
            .join("tests/support/acp_agent.mjs")
            .display()
            .to_string(),
    ]
}

pub struct Bridge {
    pub child: Child,
    pub log: Arc<Mutex<String>>,
}

impl Bridge {
    /// `smsgate agent <args…>` with `env`; stderr is captured.
    pub fn start(args: &[String], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(bin());
        cmd.arg("agent")
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("SMSGATE_LOG")
            .env_remove("STATE_DIRECTORY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut l = l.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Self { child, log }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log().contains(needle))
    }

    /// Waits up to `timeout` for `needle` in the log; fails the test with the log when
    /// it does not come.
    pub fn assert_log_soon(&self, needle: &str, timeout: Duration) {
        assert!(self.wait_log(needle, timeout), "{}", self.log());
    }

    /// Fails the test, with the log, unless the log already holds `needle`.
    pub fn assert_log_has(&self, needle: &str) {
        assert!(self.log().contains(needle), "{}", self.log());
    }

    /// SIGTERM; the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "bridge did not stop within 15 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The ACP test agent's events (tests/support/acp_agent.mjs).
pub struct Events(pub PathBuf);

impl Events {
    pub fn all(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.0)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn of(&self, ev: &str) -> Vec<serde_json::Value> {
        self.all().into_iter().filter(|e| e["ev"] == ev).collect()
    }

    /// Waits for the `n`th event of kind `ev` and returns it.
    pub fn wait(&self, ev: &str, n: usize, timeout: Duration) -> serde_json::Value {
        assert!(
            wait_until(timeout, || self.of(ev).len() >= n),
            "no {n} {ev:?} events within {timeout:?}; events: {:?}",
            self.all()
        );
        self.of(ev)[n - 1].clone()
    }
}

pub fn s(p: &Path) -> String {
    p.display().to_string()
}
