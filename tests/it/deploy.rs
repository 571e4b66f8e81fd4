//! The deployment files: the systemd unit (hardening score, syntax, agreement with
//! config/systemd.json5) and the Dockerfile (hadolint, agreement with
//! config/docker.json5); and `smsgate reload`, the unit's `ExecReload=`, against a
//! running gateway. The units booted under systemd itself: scripts/test-systemd.
//!
//! External tools (systemd-analyze, .tools/py/bin/hadolint from scripts/install-test-tools)
//! are skipped with a message when missing, except under CI (`CI` set), where a missing
//! tool fails the test.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// The highest `systemd-analyze security` exposure the unit may have (0 = best, 10 = worst).
const MAX_EXPOSURE: f64 = 1.5;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn unit_path() -> PathBuf {
    root().join("systemd/smsgate.service")
}

fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// A tool is missing: fine on a developer's machine, a failure in CI.
fn missing(what: &str) {
    assert!(!in_ci(), "{what} (CI is set, so this is a failure)");
    eprintln!("SKIPPED: {what}");
}

/// Runs a command; `None` when the program does not exist.
fn run(cmd: &mut Command) -> Option<Output> {
    match cmd.output() {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("cannot run {cmd:?}: {e}"),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn systemd_analyze() -> Command {
    let mut cmd = Command::new("systemd-analyze");
    cmd.arg("--no-pager").env("SYSTEMD_COLORS", "0");
    cmd
}

/// An older systemd-analyze that lacks an option we use.
fn unsupported(out: &Output) -> bool {
    let err = text(&out.stderr);
    err.contains("unrecognized option") || err.contains("Unknown option")
}

/// `[Service]` (or any section) of a unit file as (key, value) pairs in order.
fn unit_entries(section: &str) -> Vec<(String, String)> {
    let unit = std::fs::read_to_string(unit_path()).unwrap();
    let mut current = String::new();
    let mut entries = Vec::new();
    for line in unit.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') {
            current = line[1..line.len() - 1].to_string();
            continue;
        }
        assert!(
            !line.ends_with('\\'),
            "keep the unit free of continuation lines so this test can read it: {line}"
        );
        if current == section {
            let (k, v) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("not key=value: {line}"));
            entries.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    entries
}

fn service_values(entries: &[(String, String)], key: &str) -> Vec<String> {
    entries
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .collect()
}

fn service_value(entries: &[(String, String)], key: &str) -> String {
    let values = service_values(entries, key);
    assert_eq!(
        values.len(),
        1,
        "{key}= should appear once in the unit: {values:?}"
    );
    values[0].clone()
}

/// The command of an Exec*= line without systemd's prefixes (`-`, `@`, `+`, `!`, `:`).
fn exec_words(value: &str) -> Vec<String> {
    value
        .trim_start_matches(['-', '@', '+', '!', ':'])
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn json5_file(rel: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(root().join(rel)).unwrap();
    json5::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn str_at<'a>(v: &'a serde_json::Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(serde_json::Value::as_str)
}

#[test]
fn unit_exposure_level_is_low() {
    let unit = unit_path();
    let Some(out) = run(systemd_analyze()
        .args(["security", "--offline=yes"])
        .arg(&unit))
    else {
        return missing("systemd-analyze not found; cannot rate the unit's hardening");
    };
    if unsupported(&out) {
        return missing(&format!(
            "this systemd-analyze cannot rate unit files offline (needs systemd 250+): {}",
            text(&out.stderr)
        ));
    }
    let stdout = text(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no \"Overall exposure level\" line:\n{stdout}\n{}",
                text(&out.stderr)
            )
        });
    // "→ Overall exposure level for smsgate.service: 1.4 OK 🙂"
    let level: f64 = line
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the level from {line:?}"));
    let worse: Vec<&str> = stdout.lines().filter(|l| l.starts_with('✗')).collect();
    assert!(
        level <= MAX_EXPOSURE,
        "exposure {level} > {MAX_EXPOSURE}; findings:\n{}",
        worse.join("\n")
    );
    eprintln!("systemd-analyze security: {}", line.trim());
}

/// `systemd-analyze verify` checks that every Exec*= binary exists, so it runs against a
/// scratch root holding the unit, stubs for its binaries and a copy of the host's own
/// units (for the targets it orders itself after). It prints parse warnings (unknown
/// keys, bad values) but still exits 0, so its output must mention nothing of ours.
#[test]
fn unit_passes_systemd_analyze_verify() {
    let host_units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("multi-user.target").exists());
    let Some(version) = run(systemd_analyze().arg("--version")) else {
        return missing("systemd-analyze not found; cannot verify the unit");
    };
    assert!(version.status.success());
    let Some(host_units) = host_units else {
        return missing("no systemd unit directory with multi-user.target on this machine");
    };

    let scratch = tempfile::tempdir().unwrap();
    let sysroot = scratch.path();
    let lib = sysroot.join("usr/lib/systemd");
    std::fs::create_dir_all(&lib).unwrap();
    // Merged /usr, so that absolute /lib/... symlinks among the copied units resolve.
    std::os::unix::fs::symlink("usr/lib", sysroot.join("lib")).unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(host_units)
        .arg(lib.join("system"))
        .status()
        .unwrap();
    assert!(status.success(), "copying {} failed", host_units.display());
    let etc = sysroot.join("etc/systemd/system");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::copy(unit_path(), etc.join("smsgate.service")).unwrap();

    let entries = unit_entries("Service");
    for (key, value) in &entries {
        if !key.starts_with("Exec") {
            continue;
        }
        let program = exec_words(value).into_iter().next().unwrap();
        assert!(
            program.starts_with('/'),
            "{key}={value}: use an absolute path"
        );
        let stub = sysroot.join(program.trim_start_matches('/'));
        std::fs::create_dir_all(stub.parent().unwrap()).unwrap();
        std::fs::write(&stub, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    let out = run(systemd_analyze()
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", sysroot.display()))
        .arg("smsgate.service"))
    .unwrap();
    if unsupported(&out) {
        return missing(&format!(
            "this systemd-analyze cannot verify under --root: {}",
            text(&out.stderr)
        ));
    }
    let output = format!("{}{}", text(&out.stdout), text(&out.stderr));
    let ours: Vec<&str> = output.lines().filter(|l| l.contains("smsgate")).collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify (exit {:?}):\n{output}",
        out.status.code()
    );
    if !output.trim().is_empty() {
        eprintln!("systemd-analyze verify, about other units:\n{output}");
    }
}

#[test]
fn dockerfile_passes_hadolint() {
    let hadolint = root().join(".tools/py/bin/hadolint");
    if !hadolint.exists() {
        return missing("hadolint not installed in .tools (run scripts/install-test-tools)");
    }
    let out = run(Command::new(&hadolint)
        .args(["--no-color", "--failure-threshold", "warning"])
        .arg(root().join("Dockerfile")))
    .unwrap();
    assert!(
        out.status.success(),
        "hadolint:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn unit_and_systemd_config_agree() {
    let entries = unit_entries("Service");
    assert_eq!(service_value(&entries, "Type"), "notify");
    assert_eq!(service_value(&entries, "NotifyAccess"), "main");

    let start = exec_words(&service_value(&entries, "ExecStart"));
    let pre = exec_words(&service_value(&entries, "ExecStartPre"));
    assert_eq!(
        start[0], pre[0],
        "ExecStart and ExecStartPre run different binaries"
    );
    assert_eq!(&start[1..], ["gateway"]);
    assert_eq!(&pre[1..], ["config", "validate"]);
    // `kill -HUP` would exit 0 whatever the daemon makes of the new config; `smsgate
    // reload` waits for the answer, so `systemctl reload` fails when it is refused.
    let reload = exec_words(&service_value(&entries, "ExecReload"));
    assert_eq!(reload, [start[0].as_str(), "reload"], "ExecReload");

    // ProtectKernelTunables= and ProtectControlGroups= imply MountAPIVFS=, which exempts
    // /run (and the world-writable /run/lock) from ProtectSystem=strict; the unit must
    // make it read-only itself (scripts/test-systemd checks the writes for real).
    if service_value(&entries, "ProtectSystem") == "strict"
        && ["ProtectKernelTunables", "ProtectControlGroups"]
            .iter()
            .any(|k| service_values(&entries, k).iter().any(|v| v == "yes"))
    {
        assert!(
            service_values(&entries, "ReadOnlyPaths")
                .iter()
                .any(|v| v.split_whitespace().any(|p| p == "/run")),
            "ReadOnlyPaths=/run is missing: /run and /run/lock would stay writable"
        );
    }

    let config = json5_file("config/systemd.json5");
    let config_path = service_values(&entries, "Environment")
        .iter()
        .find_map(|e| e.strip_prefix("SMSGATE_CONFIG=").map(str::to_string))
        .unwrap_or_else(|| "/etc/smsgate/smsgate.json5".to_string());
    assert_eq!(config_path, "/etc/smsgate/smsgate.json5");

    // The directories systemd creates (and, under ProtectSystem=strict, the only
    // writable ones).
    let mut writable: Vec<PathBuf> = Vec::new();
    for (key, base) in [("StateDirectory", "/var/lib"), ("RuntimeDirectory", "/run")] {
        for v in service_values(&entries, key) {
            writable.extend(v.split_whitespace().map(|d| Path::new(base).join(d)));
        }
    }
    let state_dir =
        PathBuf::from(str_at(&config, "/gateway/stateDir").unwrap_or("/var/lib/smsgate"));
    assert!(
        writable.contains(&state_dir),
        "gateway.stateDir {} is not a directory the unit provides: {writable:?}",
        state_dir.display()
    );
    for (key, default) in [("adminSocket", "admin.sock"), ("agentSocket", "agent.sock")] {
        let socket = str_at(&config, &format!("/gateway/{key}"))
            .map_or_else(|| state_dir.join(default), PathBuf::from);
        let dir = socket.parent().unwrap().to_path_buf();
        assert!(
            writable.contains(&dir),
            "gateway.{key} {} is not in a directory the unit provides: {writable:?}",
            socket.display()
        );
    }

    // LoadCredential=NAME:PATH is what a relative file SecretRef reads.
    let credentials: Vec<String> = service_values(&entries, "LoadCredential")
        .iter()
        .map(|v| {
            v.split_once(':')
                .map_or(v.as_str(), |(name, _)| name)
                .to_string()
        })
        .collect();
    let token = config
        .pointer("/channels/sms/authToken")
        .expect("authToken");
    assert_eq!(
        str_at(token, "/source"),
        Some("file"),
        "authToken should be a file SecretRef"
    );
    let id = str_at(token, "/id").unwrap();
    assert!(
        credentials.iter().any(|c| c == id),
        "authToken reads credential {id:?}, the unit loads {credentials:?}"
    );

    // A port below 1024 needs the one capability the unit grants.
    let listen = str_at(&config, "/gateway/listen").unwrap();
    let port: u16 = listen.rsplit_once(':').unwrap().1.parse().unwrap();
    if port < 1024 {
        for key in ["AmbientCapabilities", "CapabilityBoundingSet"] {
            assert_eq!(
                service_value(&entries, key),
                "CAP_NET_BIND_SERVICE",
                "{key}"
            );
        }
    }
}

#[test]
fn dockerfile_and_docker_config_agree() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let instruction = |name: &str| -> Vec<String> {
        dockerfile
            .lines()
            .filter_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .map(|r| r.trim().to_string())
            .collect()
    };
    assert!(
        instruction("COPY")
            .iter()
            .any(|c| c == "config/docker.json5 /etc/smsgate/smsgate.json5"),
        "the image should carry config/docker.json5 as /etc/smsgate/smsgate.json5"
    );
    let config = json5_file("config/docker.json5");
    let listen = str_at(&config, "/gateway/listen").unwrap();
    let (host, port) = listen.rsplit_once(':').unwrap();
    assert_eq!(
        host, "0.0.0.0",
        "inside a container the gateway must listen on all interfaces"
    );
    assert_eq!(instruction("EXPOSE"), [port]);
    let state_dir = str_at(&config, "/gateway/stateDir").unwrap();
    assert_eq!(instruction("VOLUME"), [state_dir]);
    let token = config
        .pointer("/channels/sms/authToken")
        .expect("authToken");
    assert_eq!(str_at(token, "/source"), Some("env"));
    assert_eq!(str_at(token, "/id"), Some("TWILIO_AUTH_TOKEN"));
    assert_eq!(instruction("ENTRYPOINT"), [r#"["smsgate"]"#]);
    assert_eq!(instruction("CMD"), [r#"["gateway"]"#]);
    let user = instruction("USER");
    assert!(
        user.len() == 1 && !user[0].starts_with('0') && !user[0].starts_with("root"),
        "the image should run as the unprivileged smsgate user: {user:?}"
    );
}

/// A signed webhook (number `n`) is answered 200 and reaches the agent.
async fn still_serving(agent: &mut common::TestAgent, gw: &common::Gateway, n: u32) {
    use common::*;
    let sid = format!("SMe{n:031}");
    let text = format!("message {n}");
    let (status, _) = post_signed(gw, "/webhooks/sms", &inbound(&sid, "+15557650002", &text)).await;
    assert_eq!(status, 200);
    assert_eq!(agent.next_of("message")["text"], text.as_str());
}

/// `systemctl reload` runs the unit's `ExecReload=smsgate reload`, so the verb's exit
/// status is what the operator sees: 0 once the new config is in force, 1 with the
/// reason when it is refused, whether the CLI or only the daemon can tell (a secret only
/// the daemon resolves). The gateway keeps serving with the old config throughout.
#[tokio::test(flavor = "multi_thread")]
async fn reload_verb_exits_1_with_the_reason_when_the_config_is_refused() {
    use common::*;
    let (t, _twilio, config) = configured(OPEN);
    let good = std::fs::read_to_string(&config).unwrap();
    let gw = Gateway::start(&config);
    let mut agent = TestAgent::connect(&t.state().join("agent.sock"));
    still_serving(&mut agent, &gw, 1).await;

    let out = cli(&config, &["reload"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("configuration reloaded"),
        "{}",
        stdout(&out)
    );
    let out = cli(&config, &["reload", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let data: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(data["reloaded"], true);

    // Invalid for everyone: the CLI itself names the key path; the daemon is not asked.
    std::fs::write(
        &config,
        good.replace(r#"dmPolicy: "open""#, r#"dmPolicy: "sometimes""#),
    )
    .unwrap();
    let out = cli(&config, &["reload"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("reload refused"), "{err}");
    assert!(err.contains("channels.sms.dmPolicy"), "{err}");
    still_serving(&mut agent, &gw, 2).await;

    // Invalid only where the daemon resolves secrets: its own refusal comes back.
    std::fs::write(
        &config,
        good.replace(
            &format!(r#"authToken: "{TOKEN}""#),
            r#"authToken: { source: "env", provider: "default", id: "SMSGATE_TEST_UNSET_TOKEN" }"#,
        ),
    )
    .unwrap();
    let out = cli(&config, &["reload"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("reload refused, the running configuration is kept"),
        "{err}"
    );
    assert!(err.contains("SMSGATE_TEST_UNSET_TOKEN"), "{err}");
    gw.assert_log_soon("reload refused", Duration::from_secs(5));
    assert!(!err.contains(TOKEN) && !gw.log().contains(TOKEN));
    still_serving(&mut agent, &gw, 3).await;

    // Fixed again: reloads.
    std::fs::write(&config, &good).unwrap();
    assert!(cli(&config, &["reload"]).status.success());
    assert_eq!(gw.stop().code(), Some(0));

    // No daemon: exit 1, saying so.
    let out = cli(&config, &["reload"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not running"), "{}", stderr(&out));
}
