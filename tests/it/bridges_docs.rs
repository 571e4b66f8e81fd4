//! docs/agents.md and the bridge unit stay true: every recipe's command line parses,
//! bad bridge options fail with a clear message, the unit keeps the bridge away from
//! the gateway's secrets, and `agent exec` passes SMS_CONVERSATION.

use crate::bridges;
use crate::common;

use std::process::Command;
use std::time::Duration;

use bridges::*;
use clap::Parser;
use common::*;

fn agents_md() -> String {
    std::fs::read_to_string(repo().join("docs/agents.md")).unwrap()
}

/// The command lines in the doc's code blocks: `… smsgate agent …` (an environment
/// prefix such as `KEY=… ` is dropped) and unit `SMSGATE_BRIDGE=…` lines.
fn recipes() -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut in_code = false;
    let mut continued = String::new();
    for line in agents_md().lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if !in_code {
            continue;
        }
        if let Some(stripped) = line.strip_suffix('\\') {
            continued.push_str(stripped);
            continue;
        }
        let full = std::mem::take(&mut continued) + line;
        let args = if let Some(rest) = full.strip_prefix("SMSGATE_BRIDGE=") {
            format!("smsgate agent {rest}")
        } else if let Some(i) = full.find("smsgate agent ") {
            full[i..].to_string()
        } else {
            continue;
        };
        out.push(shell_words(&args));
    }
    out
}

/// Splits like a shell for the doc's simple lines: spaces, and "double quotes".
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    words.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(cur);
    }
    words
}

#[test]
fn every_recipe_in_agents_md_parses() {
    let recipes = recipes();
    let text = agents_md();
    for agent in [
        "gemini --acp",
        "claude-code-acp",
        "codex-acp",
        "opencode acp",
        "openclaw acp",
        "11434/v1",
        "llama-server",
        "18789/v1",
    ] {
        assert!(
            text.contains(agent),
            "docs/agents.md lacks a recipe for {agent}"
        );
    }
    assert!(recipes.len() >= 9, "{recipes:?}");
    for argv in &recipes {
        let parsed = smsgate::cli::Cli::try_parse_from(argv);
        assert!(parsed.is_ok(), "{argv:?}: {}", parsed.unwrap_err());
    }
    // And the real binary agrees for one of each kind (`--help` after the verb).
    for verb in ["acp", "openai"] {
        let out = Command::new(bin())
            .args(["agent", verb, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success());
        for flag in ["--coalesce", "--max-chars", "--state-dir", "--timeout"] {
            assert!(stdout(&out).contains(flag), "{verb} --help lacks {flag}");
        }
    }
}

#[test]
fn bad_bridge_options_fail_clearly() {
    let t = TestDir::new();
    let sock = s(&t.path().join("agent.sock"));
    let dir = s(&t.path().join("state"));
    let run = |args: &[&str]| {
        Command::new(bin())
            .arg("agent")
            .args(args)
            .env_remove("SMSGATE_AGENT_SOCKET")
            .env_remove("SMSGATE_TEST_MISSING_KEY")
            .output()
            .unwrap()
    };
    let base = ["--socket", &sock, "--state-dir", &dir];
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec!["openai", "--base-url", "http://127.0.0.1:1/v1"],
            2,
            "--model",
        ),
        (vec!["acp"], 2, "CMD"),
        (
            vec![
                "openai",
                "--base-url",
                "http://x/v1",
                "--model",
                "m",
                "--system",
                "a",
                "--system-file",
                "f",
            ],
            2,
            "cannot be used with",
        ),
        (
            vec![
                "openai",
                "--base-url",
                "http://127.0.0.1:1/v1",
                "--model",
                "m",
                "--api-key-env",
                "SMSGATE_TEST_MISSING_KEY",
            ],
            1,
            "SMSGATE_TEST_MISSING_KEY is not set",
        ),
        (
            vec!["openai", "--base-url", "localhost:11434", "--model", "m"],
            1,
            "--base-url",
        ),
        (
            vec!["openai", "--base-url", "ftp://x", "--model", "m"],
            1,
            "http or https",
        ),
        (
            vec![
                "openai",
                "--base-url",
                "http://x",
                "--model",
                "m",
                "--system-file",
                "/nonexistent/prompt.txt",
            ],
            1,
            "--system-file /nonexistent/prompt.txt",
        ),
        (
            vec!["acp", "--cwd", "/nonexistent/dir", "--", "true"],
            1,
            "not a directory",
        ),
        (
            vec!["acp", "--max-chars", "1", "--", "true"],
            1,
            "--max-chars",
        ),
        (
            vec!["acp", "--permissions", "maybe", "--", "true"],
            2,
            "deny",
        ),
    ];
    for (args, code, needle) in cases {
        let mut full: Vec<&str> = args[..1].to_vec();
        // Options go before `--` (after it they belong to the agent).
        full.extend(base);
        full.extend(&args[1..]);
        let out = run(&full);
        assert_eq!(out.status.code(), Some(code), "{full:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{full:?}: {}", stderr(&out));
    }
}

#[test]
fn the_unit_keeps_the_bridge_away_from_the_gateways_secrets() {
    let unit = std::fs::read_to_string(repo().join("systemd/smsgate-agent@.service")).unwrap();
    let entries: Vec<(&str, &str)> = unit
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    let has = |k: &str, v: &str| entries.iter().any(|(a, b)| *a == k && b.contains(v));
    assert!(has("User", "smsgate-agent"));
    assert!(has("SupplementaryGroups", "smsgate"));
    assert!(has("InaccessiblePaths", "/etc/smsgate "));
    assert!(has("InaccessiblePaths", "/var/lib/smsgate"));
    assert!(has("ExecStart", "agent $SMSGATE_BRIDGE"));
    assert!(has(
        "Environment",
        "SMSGATE_AGENT_SOCKET=/run/smsgate/agent.sock"
    ));
    assert!(has("StateDirectory", "smsgate-agent/%i"));
    assert!(has("EnvironmentFile", "/etc/smsgate-agent/%i.env"));
    assert!(
        !entries.iter().any(|(k, _)| *k == "MemoryDenyWriteExecute"),
        "Node agents need a JIT"
    );
    assert!(!entries.iter().any(|(k, _)| *k == "LoadCredential"));

    // systemd's own rating, on an instance of the template.
    let dir = tempfile::tempdir().unwrap();
    let inst = dir.path().join("smsgate-agent@gemini.service");
    std::fs::write(&inst, &unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&inst)
        .output()
        .expect("systemd-analyze is needed (scripts/install-test-tools installs it)");
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no rating: {text}{}", stderr(&out)));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    eprintln!("systemd-analyze security: {}", line.trim());
    assert!(score <= 2.0, "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_exec_passes_sms_conversation() {
    let (_t, twilio, config, gw) = gateway(OPEN);
    let mut agent = Command::new(bin())
        .args(["agent", "exec", "--config"])
        .arg(&config)
        .args([
            "--",
            "sh",
            "-c",
            "cat >/dev/null; echo \"conversation=$SMS_CONVERSATION\"",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (status, _) = post_signed(
        &gw,
        "/webhooks/sms",
        &inbound("SMc0000000000000000000000000000001", "+15557650009", "hi"),
    )
    .await;
    assert_eq!(status, 200);
    let sends = twilio.wait_sends(1, Duration::from_secs(20));
    let body = sends[0].field("Body").unwrap().to_string();
    agent.kill().unwrap();
    let _ = agent.wait();
    let id = body.strip_prefix("conversation=").unwrap();
    // The daemon's opaque id, or (from a daemon without conversations) the fallback.
    assert!(!id.is_empty(), "{body}");
}
