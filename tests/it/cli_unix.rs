//! Issue 20 item 12, issue 24 items 7–11: the CLI behaves like a good Unix tool (socket
//! paths that are not ours, closed pipes, Ctrl-C in the demo, help, version, colour).

use std::io::Read;
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

/// Runs `smsgate ARGS` with its stdout a pipe whose reader is already gone, so the first
/// write fails (a `| head` that stopped reading): exit 0 and nothing on stderr about it.
fn with_stdout_closed(config: &Path, args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (child.wait().unwrap(), err)
}

fn demo_dir_in(stderr: &str) -> std::path::PathBuf {
    let line = stderr
        .lines()
        .find(|l| l.contains("working in"))
        .unwrap_or_else(|| panic!("no working dir named: {stderr}"));
    let path = line.split("working in ").nth(1).unwrap();
    std::path::PathBuf::from(path.split(" (removed").next().unwrap())
}

#[test]
fn a_closed_stdout_ends_every_printing_verb_quietly() {
    let (_t, _twilio, config) = configured("");
    let verbs: &[&[&str]] = &[
        &["--help"],
        &["--version"],
        &["completions", "bash"],
        &["completions", "zsh"],
        &["man"],
        &["channels", "capabilities"],
        &["channels", "capabilities", "--json"],
        &["channels", "status"],
        &["config", "show"],
        &["config", "show", "--json"],
        &["config", "validate"],
        &["pairing", "list"],
        &["pairing", "list", "--json"],
        &["senders", "list"],
        &["queue", "list"],
        &["queue", "list", "--json"],
        &["demo"],
    ];
    for args in verbs {
        let (status, err) = with_stdout_closed(&config, args);
        assert_eq!(status.code(), Some(0), "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
        if args[0] == "demo" {
            let dir = demo_dir_in(&err);
            assert!(!dir.exists(), "the demo left {}", dir.display());
        }
    }
}

#[test]
fn demo_piped_into_head_ends_quietly_and_cleans_up() {
    // `smsgate demo | head -2`: two lines read, then the reader goes.
    let mut child = Command::new(bin())
        .arg("demo")
        .env_remove("RUST_LOG")
        .env_remove("SMSGATE_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    for _ in 0..2 {
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    }
    drop(out);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!demo_dir_in(&err).exists(), "{err}");
}

#[test]
fn ctrl_c_in_the_demo_removes_its_directory() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let mut child = Command::new(bin())
            .arg("demo")
            .env_remove("RUST_LOG")
            .env_remove("SMSGATE_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut err, &mut line).unwrap();
        let dir = demo_dir_in(&line);
        // The gateway is up once its state dir exists: interrupt mid-flow.
        assert!(wait_until(Duration::from_secs(20), || dir
            .join("state")
            .exists()));
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait().unwrap();
        let mut rest = String::new();
        err.read_to_string(&mut rest).unwrap();
        // 128 + the signal: the demo stopped on it (not finished first), and cleaned up.
        assert_eq!(status.code(), Some(128 + signal), "{line}{rest}");
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

#[test]
fn version_names_the_commit() {
    let out = Command::new(bin()).arg("--version").output().unwrap();
    assert!(out.status.success());
    let v = stdout(&out);
    assert!(
        v.starts_with(&format!("smsgate {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    let commit = v
        .split("(commit ")
        .nth(1)
        .unwrap()
        .trim_end()
        .trim_end_matches(')');
    // Built in a git checkout: the commit of HEAD (build.rs reruns when HEAD moves).
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| stdout(&o).trim().to_string());
    match head {
        Some(head) => assert_eq!(commit, head, "{v}"),
        None => assert_eq!(commit, "unknown", "{v}"),
    }
}

/// The log of `agent echo` (which logs a warning while no gateway answers) on a
/// terminal (`script` gives it one), with `env` set; up to that first line.
fn log_on_a_terminal(env: &[(&str, &str)]) -> String {
    let t = TestDir::new();
    let sock = t.path().join("none.sock");
    let mut cmd = Command::new("script");
    cmd.args(["-qec"])
        .arg(format!("{} agent echo --socket {}", bin(), sock.display()))
        .arg("/dev/null")
        .env_remove("NO_COLOR")
        .env_remove("SMSGATE_LOG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .expect("`script` (util-linux) runs the command on a pty");
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut log = String::new();
    while !log.contains("cannot connect") {
        if std::io::BufRead::read_line(&mut out, &mut log).unwrap() == 0 {
            break;
        }
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    log
}

#[test]
fn no_color_turns_colour_off_on_a_terminal() {
    // On a terminal the log is coloured (so the check below can see colour at all)…
    let coloured = log_on_a_terminal(&[]);
    assert!(coloured.contains("\x1b["), "{coloured:?}");
    // …and NO_COLOR turns it off.
    let plain = log_on_a_terminal(&[("NO_COLOR", "1")]);
    assert!(plain.contains("cannot connect"), "{plain:?}");
    assert!(!plain.contains('\x1b'), "{plain:?}");
}

#[test]
fn a_locked_store_names_the_pid_that_holds_it() {
    let (t, _twilio, config) = configured("");
    // This test process holds the store; no daemon answers on the socket.
    let _held = t.store();
    let out = cli(&config, &["pairing", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let want = format!("(pid {})", std::process::id());
    assert!(stderr(&out).contains(&want), "{}", stderr(&out));
}

#[test]
fn health_keeps_the_cause() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = t.config(&twilio, "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(&config, text).unwrap();
    let out = cli(&config, &["health"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out).to_lowercase();
    assert!(err.contains("connection refused"), "{err}");
}

/// `message send` to a Twilio that refuses connections says why (the cause of reqwest's
/// "error sending request"), as `health` does.
#[test]
fn message_send_keeps_the_cause() {
    let t = TestDir::new();
    let twilio = FakeTwilio::start();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = t.config(&twilio, "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&twilio.base_url(), &format!("http://127.0.0.1:{port}"));
    std::fs::write(&config, text).unwrap();
    let out = cli(
        &config,
        &[
            "message",
            "send",
            "--target",
            "sms:+15557654321",
            "--message",
            "hi",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out).to_lowercase();
    assert!(
        err.contains("cannot connect to twilio") && err.contains("connection refused"),
        "{err}"
    );
}

/// Root bypasses file permissions, so the client runs as `nobody` (setpriv drops the
/// uid): the daemon's admin socket (0600, root's, in root's 0700 state dir) is not
/// its to use, which must read "permission denied" naming the socket, not "not running".
#[test]
fn status_as_another_user_says_permission_denied() {
    let (t, _twilio, config, gw) = gateway("");
    // `nobody` may read the config (not the state dir).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let admin = t.state().join("admin.sock");
    for args in [&["channels", "status"][..], &["queue", "list"]] {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(bin())
            .arg("--config")
            .arg(&config)
            .args(args)
            .env_remove("RUST_LOG")
            .output()
            .expect("setpriv (util-linux)");
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            all.contains("permission denied") && all.contains(&admin.display().to_string()),
            "{args:?}: {all}"
        );
        assert!(!all.contains("not running"), "{args:?}: {all}");
    }
    gw.stop();
}

#[test]
fn man_writes_a_page_per_subcommand_with_the_extra_sections() {
    let t = TestDir::new();
    let dir = t.path().join("man1");
    let out = Command::new(bin())
        .args(["man", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let main = std::fs::read_to_string(dir.join("smsgate.1")).unwrap();
    for s in ["ENVIRONMENT", "FILES", "\"EXIT STATUS\"", "EXAMPLES"] {
        assert!(main.contains(&format!(".SH {s}")), "no {s}");
    }
    for page in [
        "smsgate-gateway.1",
        "smsgate-pairing-approve.1",
        "smsgate-message-send.1",
    ] {
        assert!(dir.join(page).exists(), "no {page}");
    }
    // Without --dir, smsgate(1) on stdout, the same page.
    let out = Command::new(bin()).arg("man").output().unwrap();
    assert_eq!(stdout(&out), main);
}
